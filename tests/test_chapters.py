"""Every chapter in _toc.yml executes from top to bottom in a fresh kernel, in its own folder."""
from __future__ import annotations

import time

import jupytext
import pytest
from nbclient import NotebookClient

from conftest import is_notebook, source_of, toc_files

CHAPTERS = [p for p in toc_files() if is_notebook(source_of(p))]


def test_toc_has_chapters():
    assert "book/setup-and-notation" in CHAPTERS


@pytest.mark.slow
@pytest.mark.parametrize("page", CHAPTERS)
def test_chapter_executes(page):
    path = source_of(page)
    nb = jupytext.read(path)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    print(f"{page}: executed in {time.perf_counter() - start:.1f} s")
