"""Lecture slides and the course plan.

* Every deck of slides/plan.yml builds offline (nothing loads from the web), from its own slide
  file; with a book build every slide has at most 80 words, no raw label or MyST role, every
  statement slide carries the book's number of its result, and every figure is the output of a
  cell of the built book.
* A real browser (Debian's Chromium through Playwright) shows every slide of every deck at
  1280x720 and fails if the content of a slide leaves the viewport; screenshots go to
  test-artifacts/slides/.
* The plan: each lecture has at most about 3,500 words of lecture material; the teaching page
  and the list of results agree with it and with the book.

BOOK_BUILD=<folder> (a `_build` folder of `make book`) reuses an existing build instead of the
session's build from an empty folder.
"""
from __future__ import annotations

import functools
import html as htmlmod
import http.server
import importlib.util
import os
import re
import shutil
import sys
import threading
from pathlib import Path

import pytest

from conftest import ARTIFACTS, ROOT

spec = importlib.util.spec_from_file_location("make_slides", ROOT / "scripts" / "make-slides.py")
slides = importlib.util.module_from_spec(spec)
sys.modules["make_slides"] = slides   # dataclasses look their module up
spec.loader.exec_module(slides)
course = slides.course

MAX_WORDS = 80
MAX_LECTURE_WORDS = 3500
#: what a label, an unresolved role or a raw citation key looks like
RAW = re.compile(r"\{(?:prf:ref|eq|numref|doc|cite|ref|glue)[^}]*\}|\(\(|\b(?:thm|lem|prop|cor|eq|ex|fig)"
                 r"-[a-z0-9-]+\b|\b[a-z]+\d{4}[a-z]+\b")
DROPPED_NUMBER = re.compile(r"\b(Theorem|Lemma|Proposition|Corollary|Exercise)\b(?!\s+\d)")


def visible_words(fragment: str) -> int:
    """Words a slide shows: its text without tags and notes, each formula counted as one word."""
    text = re.sub(r'<aside class="notes">.*?</aside>', " ", fragment, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", text)
    text = htmlmod.unescape(text)
    text = re.sub(r"\$\$.*?\$\$|\$[^$]+\$", " MATH ", text, flags=re.S)
    return len(text.split())


@pytest.fixture(scope="module")
def build_dir(request) -> Path:
    if os.environ.get("BOOK_BUILD"):
        return Path(os.environ["BOOK_BUILD"])
    return request.getfixturevalue("built_site").parent


@pytest.fixture(scope="module")
def decks(build_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("slides")
    assert slides.main(["--out", str(out), "--build", str(build_dir)]) == 0
    return out


def test_every_lecture_builds_offline_without_a_book(tmp_path):
    """Without a build the decks come from the recorded numbers, without figures: fast."""
    assert slides.main(["--out", str(tmp_path), "--build", str(tmp_path / "no-build")]) == 0
    names = sorted(p.name for p in tmp_path.glob("lecture-*.html"))
    assert names == [f"lecture-{n:02d}.html" for n in sorted(slides.LECTURES)]
    for name in names:
        html = (tmp_path / name).read_text()
        remote = re.findall(r'(?:src|href)="(https?://[^"]+)"', html)
        assert not remote, f"{name} loads {remote[:3]}"
        assert 'class="reveal"' in html and "{prf:" not in html and "{glue:" not in html
    for asset in ("reveal.js/dist/reveal.js", "reveal.js/plugin/notes/notes.js",
                  "mathjax/tex-chtml.js"):
        assert (tmp_path / asset).is_file(), asset


def test_slide_file_format_is_checked():
    text = ("## A\n:::{figure} zero-loss\n:cell: x\n:::\n")
    with pytest.raises(ValueError, match=":alt:"):
        slides.parse(1, text)
    two = ("## A\n:::{statement} thm-a\nx\n:::\n:::{statement} thm-b\ny\n:::\n")
    with pytest.raises(ValueError, match="one statement"):
        slides.parse(1, two)
    with pytest.raises(ValueError, match="no slide"):
        slides.parse(1, "just text\n")
    with pytest.raises(ValueError, match="no numbered result"):
        slides.statement_heading("thm-nowhere", {"labels": {}}, {})


@pytest.mark.slow
@pytest.mark.book
def test_slides_are_short_resolved_and_numbered(build_dir, decks):
    """At most 80 words per slide, no raw label, every statement with the book's number, every
    figure from the built book."""
    values, from_build = slides.read_values(build_dir)
    assert from_build, f"no book build in {build_dir}"
    results = {r.label: r for r in course.all_results(ROOT)}
    problems, counted, statements = [], 0, 0
    for n in sorted(slides.LECTURES):
        html = (decks / f"lecture-{n:02d}.html").read_text()
        sections = re.findall(r'<section data-slide="(\d+)">(.*?)</section>', html, re.S)
        assert len(sections) == len(slides.parse(n, slides.source_path(n).read_text()))
        for k, body in sections:
            where = f"lecture {n}, slide {k}"
            words = visible_words(body)
            counted += 1
            if words > MAX_WORDS:
                problems.append(f"{where}: {words} words")
            shown = re.sub(r'<aside class="notes">.*?</aside>|<[^>]+>', " ", body, flags=re.S)
            shown = re.sub(r"\$\$.*?\$\$|\$[^$]+\$", " ", htmlmod.unescape(shown), flags=re.S)
            for m in RAW.finditer(shown):
                problems.append(f"{where}: raw label or role {m.group(0)!r}")
            for m in DROPPED_NUMBER.finditer(shown):
                problems.append(f"{where}: {m.group(0)!r} without its number")
            for label in re.findall(r'data-label="([^"]+)"', body):
                entry = values["labels"][label]
                word = entry["kind"].split(":")[-1].title()
                statements += 1
                if f"{word} {entry['number']}" not in shown:
                    problems.append(f"{where}: {label} without '{word} {entry['number']}'")
            if "no-figure" in body:
                problems.append(f"{where}: a figure is missing from the build")
            for img in re.findall(r'<img src="([^"]+)"', body):
                if not (decks / img).is_file():
                    problems.append(f"{where}: {img} missing")
    print(f"checked {counted} slides, {statements} statements")
    assert statements >= 15 and not problems, "\n".join(problems)


@pytest.mark.slow
@pytest.mark.book
@pytest.mark.browser
def test_every_slide_fits_1280x720(decks):
    """Chromium shows each slide at 1280x720; no element of a slide leaves the viewport."""
    path = next((p for p in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", "chromium")
                 if p and (shutil.which(p) or Path(p).is_file())), None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is needed for the slide test")
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(Quiet, directory=str(decks)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/"
    shots = ARTIFACTS / "slides"
    shots.mkdir(parents=True, exist_ok=True)
    problems, seen = [], 0
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which(path) or path, headless=True,
                                        args=["--no-sandbox", "--disable-gpu",
                                              "--disable-background-networking",
                                              "--disable-component-update", "--disable-sync",
                                              "--no-first-run"])
            context = browser.new_context(viewport={"width": 1280, "height": 720})
            # nothing leaves the machine
            context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(base)
                          else (problems.append(f"request to {r.request.url}"), r.abort()))
            page = context.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            for n in sorted(slides.LECTURES):
                page.goto(f"{base}lecture-{n:02d}.html")
                page.wait_for_function("document.body.dataset.mathjax === 'done'", timeout=60_000)
                page.wait_for_function("window.Reveal && Reveal.isReady()")
                total = page.evaluate("Reveal.getTotalSlides()")
                for k in range(total):
                    page.evaluate(f"Reveal.slide({k}); Reveal.layout()")
                    page.wait_for_timeout(60)
                    out = page.evaluate("""() => {
                      const s = Reveal.getCurrentSlide(), W = innerWidth, H = innerHeight;
                      const bad = [];
                      for (const el of [s, ...s.querySelectorAll('*')]) {
                        if (el.closest('aside.notes, mjx-assistive-mml')) continue;  // hidden
                        const r = el.getBoundingClientRect();
                        if (r.width === 0 && r.height === 0) continue;
                        if (r.bottom > H + 1 || r.right > W + 1 || r.top < -1 || r.left < -1)
                          bad.push(el.tagName + ' ' + Math.round(r.bottom) + 'x' + Math.round(r.right));
                      }
                      const raw = s.innerText.match(/\\\\\\(|\\\\\\[|\\$\\$/);
                      const imgs = [...s.querySelectorAll('img')].filter(i => !i.complete || !i.naturalWidth);
                      return {bad: bad.slice(0, 3), raw: !!raw, broken: imgs.length};
                    }""")
                    seen += 1
                    name = f"lecture-{n:02d}-slide-{k:02d}.png"
                    page.screenshot(path=str(shots / name))
                    where = f"lecture {n} slide {k} ({name})"
                    if out["bad"]:
                        problems.append(f"{where}: content outside the 1280x720 viewport: {out['bad']}")
                    if out["raw"]:
                        problems.append(f"{where}: untypeset math")
                    if out["broken"]:
                        problems.append(f"{where}: {out['broken']} broken images")
            problems += [f"page error: {e}" for e in errors]
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    print(f"{seen} slides shown; screenshots in {shots}")
    assert seen > len(slides.LECTURES) and not problems, "\n".join(problems)


# --------------------------------------------------------------------------- the plan

def test_lectures_fit_and_cover_the_theory():
    """Each lecture has at most about 3,500 words of lecture material; every numbered result of
    the chapters belongs to exactly one lecture; long proofs are reading."""
    rows = course.lecture_summary(slides.PLAN, ROOT)
    for row in rows:
        print(f"lecture {row['lecture']:2d}: {row['words']:5d} words, {len(row['results'])} "
              f"results, reading {row['reading']}")
        assert row["words"] <= MAX_LECTURE_WORDS, row
        assert row["words"] > 0 or row["pending"], row
    assert 9 <= len(rows) <= 14     # up to a semester of fourteen weeks
    planned = [label for row in rows for label in row["results"]]
    book = [r.label for r in course.all_results(ROOT)]
    assert sorted(planned) == sorted(set(planned)), "a result in two lectures"
    assert set(book) <= set(planned), f"results in no lecture: {set(book) - set(planned)}"
    long = [r.label for r in course.all_results(ROOT) if r.proof_words > course.LONG_PROOF]
    reading = {label for row in rows for label in row["reading"]}
    assert set(long) <= reading
    for named in ("thm-ce-basins", "prop-gauss-certificate", "lem-zl-constants", "lem-gauss-bounds"):
        assert named in reading, named


def test_word_count_reads_sections_and_leaves_proofs_and_code_out(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "c.md").write_text(
        "# C\n\none two\n\n## A\n\nthree four five\n\n```{code-cell} ipython3\nx = 1 2 3\n```\n\n"
        "```{prf:theorem} T\n:label: thm-t\n\nsix seven\n```\n\n````{prf:proof}\np p p p\n````\n\n"
        "## B\n\neight\n\n## Exercises\n\nnine ten\n")
    ch = course.read_chapter("c", tmp_path)
    assert [r.label for r in ch.results] == ["thm-t"] and ch.results[0].proof_words == 4
    plan = {"lectures": {1: {"title": "x", "parts": [{"chapter": "c", "to": "Exercises"}]},
                         2: {"title": "y", "parts": [{"chapter": "c", "from": "B", "to": "Exercises"}],
                             "reading": []},
                         3: {"title": "z", "parts": [{"chapter": "c", "to": "B"}],
                             "reading": ["thm-t"]}}}
    rows = {r["lecture"]: r for r in course.lecture_summary(plan, tmp_path)}
    # C: 1 + 2, A: 3 + theorem title 1 + 2 + proof 4, B: 1
    assert rows[1]["words"] == 13 and rows[2]["words"] == 1 and rows[3]["words"] == 8
    with pytest.raises(ValueError, match="no heading"):
        course.lecture_summary({"lectures": {1: {"title": "x", "parts": [
            {"chapter": "c", "from": "Nowhere"}]}}}, tmp_path)


def test_slides_follow_the_plan_and_the_teaching_page():
    text = (ROOT / "book" / "teaching.md").read_text()
    assert "```{lecture-plan}" in text
    for n, lec in slides.PLAN["lectures"].items():
        assert slides.source_path(n).is_file(), f"lecture {n} has no slide file"
        assert re.search(rf"^## Lecture {n}: ", text, re.M), f"teaching.md has no 'Lecture {n}'"
    assert not re.search(rf"^## Lecture {len(slides.PLAN['lectures']) + 1}: ", text, re.M)
    assert slides.LECTURES == {n: [(p["chapter"], p.get("from"), p.get("to"))
                                   for p in lec["parts"]]
                               for n, lec in slides.PLAN["lectures"].items()}


def test_named_checks_exist():
    """Every test that slides/plan.yml names as checking a result is a test function."""
    for label, tests in slides.PLAN["checks"].items():
        for test in tests:
            path, _, name = test.partition("::")
            src = (ROOT / path).read_text()
            assert re.search(rf"^def {re.escape(name)}\(", src, re.M), test


@pytest.mark.slow
@pytest.mark.book
def test_results_page_lists_every_result(build_dir):
    """The list of results names every theorem, lemma, proposition and corollary of the book
    (every such prf label of the chapters) with its number, and the tests of the plan."""
    import pickle

    page = (build_dir / "html" / "book" / "results.html").read_text()
    with (build_dir / ".doctrees" / "environment.pickle").open("rb") as f:
        env = pickle.load(f)
    labels = [label for label, info in env.proof_list.items()
              if info.get("realtype", info.get("type")) in course.RESULT_KINDS]
    assert len(labels) >= 20
    sources = {r.label for r in course.all_results(ROOT)}
    assert set(labels) == sources, set(labels) ^ sources
    values, _ = slides.read_values(build_dir)
    for label in labels:
        entry = values["labels"][label]
        word = entry["kind"].split(":")[-1].title()
        assert f'#{label}"' in page, f"{label} is not linked from the list of results"
        assert f"{word} {entry['number']}<" in page, f"{word} {entry['number']} not listed"
    for tests in slides.PLAN["checks"].values():
        for test in tests:
            assert test.removeprefix("tests/") in page, test
    teaching = (build_dir / "html" / "book" / "teaching.html").read_text()
    for row in course.lecture_summary(slides.PLAN, ROOT):
        assert f"{row['words']:,}" in teaching, row["lecture"]
