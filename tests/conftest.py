"""Shared fixtures: the list of chapters and a book built (and its chapters executed) once per
test session."""
from __future__ import annotations

import os
import shutil
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


@pytest.fixture(scope="session")
def book_build(tmp_path_factory) -> BookBuild:
    """Build the whole book from an empty build folder with warnings as errors (once a session)."""
    out = tmp_path_factory.mktemp("book")
    start = time.perf_counter()
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "jupyter-book"), "build", str(ROOT), "--path-output", str(out),
         "-W", "-n", "--keep-going"],
        capture_output=True, text=True, cwd=ROOT,
    )
    seconds = time.perf_counter() - start
    log = proc.stdout + "\n--- stderr ---\n" + proc.stderr
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "book-build.log").write_text(log)
    print(f"\nbook built from an empty folder in {seconds:.0f} s (exit {proc.returncode})")
    return BookBuild(out, proc.returncode, log, seconds)


@pytest.fixture(scope="session")
def built_site(book_build) -> Path:
    """The HTML site of the session's book build; fails when the build failed."""
    if book_build.returncode != 0:
        tail = "\n".join(book_build.log.splitlines()[-60:])
        pytest.fail(f"jupyter-book build failed (exit {book_build.returncode}) after "
                    f"{book_build.seconds:.0f} s:\n{tail}")
    html = book_build.html
    # keep a copy of the site for people who want to look at what the tests saw
    if os.environ.get("CI"):
        shutil.copytree(html, ARTIFACTS / "html", dirs_exist_ok=True)
    return html
