"""Lecture slides: one reveal.js deck per lecture of the teaching plan, nothing loaded from the web."""
import importlib.util
import re
import sys

from conftest import ROOT

spec = importlib.util.spec_from_file_location("make_slides", ROOT / "scripts" / "make-slides.py")
slides = importlib.util.module_from_spec(spec)
spec.loader.exec_module(slides)


def test_simplify_myst():
    md = ("See {prf:ref}`thm-a` and {eq}`eq-b`, {cite}`x2024,y`; $n = {glue:text}`nval:.1f`$.\n"
          "```{prf:theorem} Big\n:label: thm-a\n\nStatement.\n```\n"
          "`````{admonition} Proof\n:class: dropdown\n````{prf:proof}\nHidden.\n````\n`````\n"
          "$$\nx\n$$ (eq-b)")
    glued = {"nval": {"data": {"text/plain": "2.345"}}}
    out = slides.simplify(md, glued)
    assert "*thm-a*" in out and "(eq-b)" in out and "[x2024, y]" in out and "n = 2.3$" in out
    assert "**Theorem (Big).**" in out and ":label:" not in out and "Statement." in out
    assert "Hidden." not in out and "in the book" in out
    assert "$$ (eq-b)" not in out


def test_every_lecture_builds_offline(tmp_path):
    # without a book build the decks come from the chapter sources (no outputs): fast
    assert slides.main(["--out", str(tmp_path), "--build", str(tmp_path / "no-build")]) == 0
    decks = sorted(p.name for p in tmp_path.glob("lecture-*.html"))
    assert decks == [f"lecture-{n}.html" for n in sorted(slides.LECTURES)]
    for name in decks:
        html = (tmp_path / name).read_text()
        remote = re.findall(r'(?:src|href)="(https?://[^"]+)"', html)
        assert not remote, f"{name} loads {remote[:3]}"
        assert 'class="reveal"' in html and "{prf:" not in html and "{glue:" not in html
    for asset in ("reveal.js/dist/reveal.js", "require.js", "mathjax/tex-chtml.js"):
        assert (tmp_path / asset).is_file(), asset
