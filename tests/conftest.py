"""Shared fixtures: the list of chapters and a book built (and its chapters executed) once per
test session, in the background while the tests that do not need it run."""
from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from booktoc import is_notebook, source_of, toc_pages  # noqa: E402  (one reader of _toc.yml)

ARTIFACTS = ROOT / "test-artifacts"


def toc_files() -> list[str]:
    """Every page listed in _toc.yml (without extension), root first."""
    return toc_pages(ROOT)


@dataclass
class BookBuild:
    """One build of the whole book from an empty folder (``out``), with its exit status, log and
    wall time. Its execution of the chapters also serves the chapter tests (tests/test_chapters.py),
    so every chapter runs once per test session."""

    out: Path
    returncode: int
    log: str
    seconds: float

    @property
    def html(self) -> Path:
        return self.out / "_build" / "html"

    def executions(self) -> dict:
        """``{source path: (seconds or None, traceback or None)}`` for every notebook the build
        executed, read from the execution cache that the build leaves in ``_build``."""
        from jupyter_cache import get_cache

        folder = self.out / "_build" / ".jupyter_cache"
        if not folder.exists():
            return {}
        cache = get_cache(folder)
        out = {}
        for rec in cache.list_cache_records():
            out[str(Path(rec.uri).resolve())] = (rec.data.get("execution_seconds"), None)
        for rec in cache.list_project_records():
            if rec.traceback:
                out[str(Path(rec.uri).resolve())] = (None, rec.traceback)
        return out

    def executed_notebook(self, page: str) -> Path:
        """The executed notebook that the build wrote for ``page`` (a page of _toc.yml)."""
        return self.out / "_build" / "jupyter_execute" / f"{page}.ipynb"


# ---------------------------------------------------------------------------------------------
# The book build: started in the background as soon as the tests are collected (when a selected
# test needs it), so that the other tests run while it executes the chapters; with pytest-xdist
# (make test: -n 2) one build serves every worker.
# ---------------------------------------------------------------------------------------------

_STARTED: dict = {}   # the build process that this process started, if any
BUILD_TIMEOUT = 3600  # seconds a test waits for the book build


def chapter_pages() -> list[str]:
    """The pages of _toc.yml that are notebooks (executed by the book build)."""
    return [p for p in toc_files() if is_notebook(source_of(p))]


def _reusing_a_build() -> bool:
    return bool(os.environ.get("BOOK_HTML") or os.environ.get("BOOK_BUILD"))


def needs_book(item) -> bool:
    """Whether a collected test reads the session's book build: it asks for ``book_build`` or
    ``built_site``, or it carries the marker ``book`` (it asks for the build at run time) and no
    earlier build is reused (BOOK_HTML, BOOK_BUILD)."""
    if {"book_build", "built_site"} & set(getattr(item, "fixturenames", ())):
        return True
    return item.get_closest_marker("book") is not None and not _reusing_a_build()


def _is_chapter_test(item) -> bool:
    return getattr(item, "originalname", "") == "test_chapter_executes"


def book_build_wanted(items) -> bool:
    """Whether the selected tests need the book build: a test other than the chapter tests
    needs it, or every chapter test is selected (a few chapters alone are executed alone)."""
    chapters = sum(map(_is_chapter_test, items))
    return (any(needs_book(i) for i in items if not _is_chapter_test(i))
            or chapters >= len(chapter_pages()))


def session_dir(config) -> Path:
    """A folder of this test session shared by all its pytest-xdist workers."""
    base = config._tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def start_book_build(config) -> Path:
    """Start building the book into ``<session folder>/book`` unless this session has already
    started it (in this process or in another worker); returns that folder."""
    out = session_dir(config) / "book"
    try:
        out.mkdir()            # atomic: exactly one process of the session gets to start it
    except FileExistsError:
        return out
    _STARTED["proc"] = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "bookbuild.py"), str(out)], cwd=ROOT,
        start_new_session=True)
    return out


def _stop_book_build():
    proc = _STARTED.pop("proc", None)
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()


atexit.register(_stop_book_build)


# Modules whose tests share a module- or session-scoped fixture that costs seconds (the Pathfinder
# cue sets, the problem sets and their grading environment, the Dask cluster): with pytest-xdist
# each worker would set up its own, so each of these modules runs whole on one worker. (The
# scheduler below does this; pytest-xdist's own ``--dist loadgroup`` does not group under pytest 9.)
GROUPED_MODULES = ("tests/test_pathfinder.py", "tests/test_problem_sets.py", "tests/test_sweep.py")


@pytest.hookimpl(optionalhook=True)     # a hook of pytest-xdist: absent under -p no:xdist
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's scheduler for ``-n N``: tests are handed out one by one in the order of
    the collection (see below), except that each module of GROUPED_MODULES goes to one worker
    as a whole."""
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            module = nodeid.split("::", 1)[0]
            return module if module in GROUPED_MODULES else nodeid

    return Scheduling(config, log)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    """Run order: first the modules that hold a slow test which does not need the book build
    (the longest work starts first), then the other tests that do not need it, and last the
    tests that read the build, so that the build runs while the others do."""
    slow_modules = {i.module for i in items
                    if i.get_closest_marker("slow") and not needs_book(i)
                    and not _is_chapter_test(i) and getattr(i, "module", None)}
    wanted = book_build_wanted(items)

    def key(item):
        late = wanted and (needs_book(item) or _is_chapter_test(item))
        return late, getattr(item, "module", None) not in slow_modules

    items.sort(key=key)


def pytest_collection_finish(session):
    if session.config.option.collectonly or not session.items:
        return
    if book_build_wanted(session.items):
        start_book_build(session.config)


def pytest_sessionfinish(session, exitstatus):
    """The build this process started: stopped when the session was interrupted, else waited
    for (another worker may still be reading it)."""
    proc = _STARTED.get("proc")
    if proc is None or proc.poll() is not None:
        return
    if exitstatus == pytest.ExitCode.INTERRUPTED or session.shouldstop or session.shouldfail:
        _stop_book_build()
    else:
        proc.wait()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture(scope="session")
def book_build(request) -> BookBuild:
    """The whole book built from an empty build folder with warnings as errors, once a session
    (started when the tests were collected; this waits for it to end)."""
    out = start_book_build(request.config)
    result = out / "result.json"
    proc = _STARTED.get("proc")
    deadline = time.monotonic() + BUILD_TIMEOUT
    while not result.exists():
        if proc is not None and proc.poll() is not None and not result.exists():
            pytest.fail(f"the book build process ended (exit {proc.returncode}) without a "
                        f"result; see {out}")
        if time.monotonic() > deadline:
            pytest.fail(f"the book build did not end within {BUILD_TIMEOUT} s; see {out}")
        time.sleep(0.5)
    info = json.loads(result.read_text())
    log = ((out / "build.out").read_text() + "\n--- stderr ---\n"
           + (out / "build.err").read_text())
    ARTIFACTS.mkdir(exist_ok=True)
    _write_atomic(ARTIFACTS / "book-build.log", log)
    build = BookBuild(out, info["returncode"], log, info["seconds"])
    # the execution time of every chapter in this build
    times = {p: build.executions().get(str(source_of(p).resolve()), (None, None))[0]
             for p in chapter_pages()}
    _write_atomic(ARTIFACTS / "chapter-times.json", json.dumps(times, indent=1) + "\n")
    print(f"\nbook built from an empty folder in {info['seconds']:.0f} s, "
          f"{info['cpu_seconds']:.0f} CPU-s (exit {info['returncode']})")
    return build


@pytest.fixture(scope="session")
def built_site(book_build, request) -> Path:
    """The HTML site of the session's book build; fails when the build failed."""
    if book_build.returncode != 0:
        tail = "\n".join(book_build.log.splitlines()[-60:])
        pytest.fail(f"jupyter-book build failed (exit {book_build.returncode}) after "
                    f"{book_build.seconds:.0f} s:\n{tail}")
    html = book_build.html
    # keep a copy of the site for people who want to look at what the tests saw (made by one
    # process of the session)
    if os.environ.get("CI"):
        try:
            (session_dir(request.config) / "site-copied").mkdir()
        except FileExistsError:
            return html
        shutil.copytree(html, ARTIFACTS / "html", dirs_exist_ok=True)
    return html
