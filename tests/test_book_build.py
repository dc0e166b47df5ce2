"""The whole book builds from an empty _build with warnings as errors, and every page exists."""
import pytest

from conftest import toc_files


@pytest.mark.slow
def test_book_builds_and_every_page_exists(built_site):
    for page in toc_files():
        html = built_site / (page + ".html")
        assert html.exists(), f"{page} is in _toc.yml but {html.name} was not built"
        text = html.read_text()
        assert "Traceback (most recent call last)" not in text, f"{page} shows a traceback"
        assert "{glue:" not in text, f"{page} has an unresolved glue reference"
    assert (built_site / "index.html").exists()
