"""Spelling: codespell over the chapters (book/), the library (tdlib/) and the README.

Words of the project that codespell would "correct" are listed in ``tests/codespell-words.txt``
(one per line): ``gausian`` is the misspelt kernel name of the bad-input demonstration in the
experiments chapter, ``te`` the test indices in ``tdlib/text.py``. Stored results (book/data)
and generated notebooks are not prose and are skipped.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

WORDS = ROOT / "tests" / "codespell-words.txt"
SKIP = "book/data,*.ipynb,*.json,*.csv,*.npz,*.bib,__pycache__"


def _codespell() -> str:
    exe = Path(sys.executable).parent / "codespell"
    if exe.exists():
        return str(exe)
    found = shutil.which("codespell")
    if not found:
        pytest.fail("codespell is not installed (it is pinned in requirements.txt: make env)")
    return found


def test_no_misspellings():
    proc = subprocess.run([_codespell(), "--ignore-words", str(WORDS), "--skip", SKIP,
                           "book", "tdlib", "README.md"],
                          capture_output=True, text=True, cwd=ROOT)
    found = proc.stdout.strip().splitlines()
    print(f"codespell: {len(found)} misspellings in book/, tdlib/, README.md")
    assert proc.returncode == 0 and not found, (
        "misspellings (fix them, or add a real project word to tests/codespell-words.txt):\n  "
        + "\n  ".join(found or [proc.stderr.strip()]))


def test_the_word_list_is_used():
    """Each listed word occurs in the checked files: the list holds no stale exceptions."""
    words = [w.strip() for w in WORDS.read_text().splitlines() if w.strip()]
    text = "\n".join(p.read_text(errors="replace").lower() for d in ("book", "tdlib")
                     for p in (ROOT / d).rglob("*") if p.suffix in (".md", ".py"))
    text += (ROOT / "README.md").read_text().lower()
    stale = [w for w in words if not re.search(rf"\b{re.escape(w)}\b", text)]
    assert not stale, f"words in {WORDS.name} that no checked file uses: {stale}"
