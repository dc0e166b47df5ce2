"""Shared fixtures: the list of chapters and a book built once per test session."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


def toc_files() -> list[str]:
    """Every page listed in _toc.yml (without extension), root first."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                files.append(e["file"])
            walk(e.get("sections"))
            walk(e.get("chapters"))
            for part in e.get("parts", []) or []:
                walk(part.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


def source_of(page: str) -> Path:
    for ext in (".md", ".ipynb"):
        p = ROOT / (page + ext)
        if p.exists():
            return p
    raise FileNotFoundError(f"page {page!r} of _toc.yml has no .md or .ipynb source")


def is_notebook(path: Path) -> bool:
    text = path.read_text()
    return path.suffix == ".ipynb" or ("kernelspec:" in text and "{code-cell}" in text)


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> Path:
    """Build the whole book from an empty build folder with warnings as errors; return html dir."""
    out = tmp_path_factory.mktemp("book")
    start = time.perf_counter()
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "jupyter-book"), "build", str(ROOT), "--path-output", str(out),
         "-W", "-n", "--keep-going"],
        capture_output=True, text=True, cwd=ROOT,
    )
    seconds = time.perf_counter() - start
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "book-build.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-60:])
        pytest.fail(f"jupyter-book build failed (exit {proc.returncode}) after {seconds:.0f} s:\n{tail}")
    print(f"\nbook built from an empty folder in {seconds:.0f} s")
    html = out / "_build" / "html"
    # keep a copy of the site for people who want to look at what the tests saw
    if os.environ.get("CI"):
        shutil.copytree(html, ARTIFACTS / "html", dirs_exist_ok=True)
    return html
