"""Every chapter in _toc.yml executes from top to bottom in a fresh kernel, in its own folder.

The chapters are executed once per test session, by the book build (``book_build`` in
conftest.py, with ``raise_on_error``): this test reads what that execution left in the build
folder (the execution cache and the executed notebooks) and fails, per chapter, on an error, a
cell that did not run or a chapter the build did not execute. Only when the build did not
execute a chapter cleanly is that chapter executed again on its own (nbclient, as the build
does), so that the failure names its cell. The execution times of the build are printed (and
written to ``test-artifacts/chapter-times.json`` by the ``book_build`` fixture).

When only some chapters are selected (``pytest tests/test_chapters.py -k zero-loss``) and no
other selected test needs the book build, the selected chapters are executed on their own
instead, without building the book.
"""
from __future__ import annotations

import time

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

from conftest import book_build_wanted, chapter_pages, source_of

CHAPTERS = chapter_pages()


def test_toc_has_chapters():
    assert "book/setup-and-notation" in CHAPTERS


def execute_alone(page: str) -> float:
    """Execute one chapter by itself (the diagnosis of a failure); returns its wall time."""
    path = source_of(page)
    nb = jupytext.read(path)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell, naming it
    return time.perf_counter() - start


@pytest.fixture
def build_or_none(request):
    """The session's book build, or ``None`` when executing the selected chapters alone is
    cheaper: only some of them are selected and no other selected test needs the build."""
    if not book_build_wanted(request.session.items):
        return None
    return request.getfixturevalue("book_build")


@pytest.mark.slow
@pytest.mark.parametrize("page", CHAPTERS)
def test_chapter_executes(page, build_or_none):
    book_build = build_or_none
    if book_build is None:
        print(f"{page}: executed alone in {execute_alone(page):.1f} s")
        return
    path = str(source_of(page).resolve())
    seconds, traceback = book_build.executions().get(path, (None, None))
    if traceback:
        pytest.fail(f"{page}: a cell failed when the book build executed it:\n{traceback[-3000:]}")
    notebook = book_build.executed_notebook(page)
    if seconds is None or not notebook.exists():
        # the build stopped before this chapter, or failed in it: run it alone to name the cell
        alone = execute_alone(page)
        pytest.fail(f"{page}: the book build did not execute it (exit {book_build.returncode}); "
                    f"executed alone it passed in {alone:.1f} s, so see "
                    f"test-artifacts/book-build.log")
    nb = nbformat.read(notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{page}: the executed notebook holds an error: {errors[0].get('ename')}"
    skipped = [i for i, c in enumerate(code) if c.source.strip() and c.execution_count is None]
    assert not skipped, f"{page}: code cells {skipped} were not executed by the build"
    print(f"{page}: executed in {seconds:.1f} s (by the book build)")
