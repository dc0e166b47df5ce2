"""Shared fixtures: the list of chapters and a book built once per test session."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from booktoc import is_notebook, source_of, toc_pages  # noqa: E402  (one reader of _toc.yml)

ARTIFACTS = ROOT / "test-artifacts"


def toc_files() -> list[str]:
    """Every page listed in _toc.yml (without extension), root first."""
    return toc_pages(ROOT)


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
