"""The PDF of `make pdf`: every chapter, every box, the figures and the bibliography, no "??".

Building the PDF executes and typesets the whole book (see README.md for how long it takes), so
this test reads a PDF that exists: ``_build/latex/book.pdf`` after ``make pdf``, or the file named
by ``BOOK_PDF``. Without one it is skipped, unless ``BOOK_PDF_REQUIRED=1`` (then it fails).
Text comes from ``pdftotext`` (Debian's poppler-utils, installed by ``make tex``).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, source_of, toc_files

PDF = Path(os.environ.get("BOOK_PDF", ROOT / "_build" / "latex" / "book.pdf"))


def _title(page: str) -> str:
    for line in source_of(page).read_text().splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    raise AssertionError(f"{page} has no level-1 heading")


def _words(text: str) -> str:
    """Text with MyST/LaTeX markup dropped, hyphenation undone and spaces collapsed."""
    text = re.sub(r"\$[^$]*\$", " ", text)
    text = re.sub(r"[`*_{}\\]", "", text)
    text = text.replace("\u2010", "-").replace("\u00ad", "")
    text = re.sub(r"-[ \t]*\n\s*", "", text)  # words broken at a line end
    return re.sub(r"\s+", " ", text).strip().lower()


@pytest.fixture(scope="module")
def pdf_text() -> str:
    if not PDF.is_file():
        if os.environ.get("BOOK_PDF_REQUIRED"):
            pytest.fail(f"no PDF at {PDF}: run make pdf")
        pytest.skip(f"no PDF at {PDF} (make pdf builds it)")
    if not shutil.which("pdftotext"):
        pytest.fail("pdftotext is missing: make tex installs poppler-utils")
    return subprocess.run(["pdftotext", "-layout", str(PDF), "-"], check=True,
                          capture_output=True, text=True).stdout


def test_every_chapter_heading_is_in_the_pdf(pdf_text):
    text = _words(pdf_text)
    missing = []
    for page in toc_files():
        title = _words(_title(page))
        # math in a heading is dropped on both sides; compare the words around it
        pieces = [p for p in re.split(r"\s{2,}", title) if len(p) > 3] or [title]
        if not all(p in text for p in pieces):
            missing.append(f"{page}: {_title(page)!r}")
    assert not missing, "chapter headings missing from the PDF: " + "; ".join(missing)


def test_no_unresolved_reference_in_the_pdf(pdf_text):
    hits = [line.strip() for line in pdf_text.splitlines() if "??" in line]
    assert not hits, f"unresolved references: {hits[:10]}"


def test_no_math_is_printed_as_text(pdf_text):
    """A display ``$$`` glued to a paragraph (no blank line around it) reaches LaTeX as text:
    the reader sees ``\\sqrt{1-x} \\ge`` instead of math. In the .tex file beside the PDF such
    text holds ``\\textbackslash{}`` outside inline code."""
    tex = PDF.with_suffix(".tex")
    if not tex.is_file():
        pytest.skip(f"no {tex.name} beside the PDF")
    leaks = [f"line {n}: {line.strip()[:120]}" for n, line in enumerate(tex.read_text().splitlines(), 1)
             if "\\textbackslash{}" in line and "\\sphinxupquote" not in line]
    assert not leaks, ("math printed as text (put blank lines around $$ blocks in the chapter): "
                       + "; ".join(leaks[:5]))


def test_theorems_proofs_exercises_and_bibliography_come_out(pdf_text):
    sources = "\n".join(source_of(p).read_text() for p in toc_files())
    text = _words(pdf_text)
    for kind, word in (("prf:theorem", "theorem"), ("prf:lemma", "lemma"),
                       ("prf:proposition", "proposition"), ("exercise", "exercise")):
        n = len(re.findall(rf"^(`{{3,}}|:{{3,}})\{{{kind}\}}", sources, re.M))
        shown = len(re.findall(rf"\b{word} \d+(\.\d+)*\b", text))
        assert shown >= n, f"{n} {kind} boxes in the chapters, {shown} numbered '{word} N' in the PDF"
    assert "proof" in text
    assert "unraveling the gradient descent dynamics of transformers" in text, "bibliography"


def test_figures_are_in_the_pdf():
    """As many pictures as the HTML build beside it has (or one per executed chapter at least)."""
    if not PDF.is_file() or not shutil.which("pdfimages"):
        pytest.skip("no PDF or no pdfimages")
    listing = subprocess.run(["pdfimages", "-list", str(PDF)], check=True, capture_output=True,
                             text=True).stdout.splitlines()[2:]
    images = sum(line.split()[2] == "image" for line in listing)  # not their alpha masks
    html_images = PDF.parent.parent / "html" / "_images"
    if html_images.is_dir():
        want = len([p for p in html_images.iterdir() if p.suffix in (".png", ".jpg", ".svg")])
    else:
        want = sum("{code-cell}" in source_of(p).read_text() for p in toc_files())
    assert images >= want, f"{images} images in the PDF, {want} expected"
    print(f"{images} images in the PDF")


def test_site_offers_the_pdf_in_the_download_menu(tmp_path):
    """_ext/book_site.py swaps the theme's "print this page" for a link to the book's PDF."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("book_site", ROOT / "_ext" / "book_site.py")
    site = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(site)
    html = tmp_path / "_build" / "html"
    assert site.pdf_source(html) == tmp_path / "_build" / "latex" / "book.pdf"
    buttons = [{"label": "launch-buttons", "buttons": []},
               {"label": "download-buttons", "buttons": [
                   {"label": "download-source-button", "url": "x.md"},
                   {"label": "download-pdf-button", "type": "javascript"}]}]
    assert site.add_pdf_button(buttons, "../book.pdf")
    labels = [b["label"] for b in buttons[1]["buttons"]]
    assert labels == ["download-source-button", "download-book-pdf-button"]
    assert buttons[1]["buttons"][-1]["url"] == "../book.pdf"
    assert not site.add_pdf_button([{"label": "launch-buttons", "buttons": []}], "book.pdf")


def test_built_site_links_the_pdf_it_holds():
    """After `make pdf` then `make book`, every chapter links book.pdf and the site holds it."""
    html = PDF.parent.parent / "html"
    if not (PDF.is_file() and (html / "book.pdf").is_file()):
        pytest.skip("no site built after make pdf")
    assert (html / "book.pdf").read_bytes() == PDF.read_bytes(), "the site's PDF is stale: make book"
    for page in toc_files():
        built = html / f"{page}.html"
        assert built.is_file(), f"{page} is missing from the site: make book"
        assert "download-book-pdf-button" in built.read_text(), f"{page} does not offer the PDF"
