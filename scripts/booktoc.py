"""The pages of the book: one reader of ``_toc.yml`` for the scripts and the tests."""
from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_pages(root: Path = ROOT) -> list[str]:
    """Every page listed in ``_toc.yml`` (paths without extension), root first, in reading
    order: parts, chapters and their sections."""
    toc = yaml.safe_load((Path(root) / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                pages.append(e["file"])
            walk(e.get("sections"))
            walk(e.get("chapters"))
            for part in e.get("parts") or []:
                walk(part.get("chapters"))

    for part in toc.get("parts") or []:
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return pages


def source_of(page: str, root: Path = ROOT) -> Path:
    """The source file (``.md`` or ``.ipynb``) of a page of ``_toc.yml``."""
    for ext in (".md", ".ipynb"):
        p = Path(root) / (page + ext)
        if p.exists():
            return p
    raise FileNotFoundError(f"page {page!r} of _toc.yml has no .md or .ipynb source")


def is_notebook(path: Path) -> bool:
    """Whether a page executes: an ``.ipynb`` file, or a MyST notebook with code cells."""
    path = Path(path)
    if path.suffix == ".ipynb":
        return True
    text = path.read_text()
    return path.suffix == ".md" and "kernelspec:" in text and "{code-cell}" in text
