"""The rendered book, read in a real browser: every page of _toc.yml in Debian's Chromium.

The site built by the ``built_site`` fixture (from an empty folder, warnings as errors) is served
on 127.0.0.1 and opened with Playwright driving ``/usr/bin/chromium`` (no browser download). Any
request that leaves 127.0.0.1 is blocked and counted as a failure, so the test sees the page a
reader sees on a laptop without internet. For every page, on the light and the dark theme:

* no console errors, no uncaught page errors, no failed or 4xx/5xx requests;
* math typeset by MathJax (``mjx-container`` elements, no ``\\(``, ``\\[`` or ``$$`` left in text);
* every image loaded (``naturalWidth > 0``), theorem/proof/exercise boxes present where the source
  has them, solution toggles open and close;
* interactive cells show their figure offline (the widget output holds a rendered figure), and
  the cell before one does not show the same figure again;
* a full-page screenshot in test-artifacts/screenshots/<page>-<theme>.png.

Then, with **every** dropdown, proof, solution and hidden cell opened:

* no text outside math still holds ``$`` or a TeX command (a ``$$`` block without blank lines
  around it, for example, leaves both in the text);
* at 1280 px, no display equation is wider than its container, and every figure of a cell output
  is drawn at the width it is shown (not scaled down by more than 5%);
* at 390 px (a phone), display math neither makes the page scroll sideways nor scrolls inside
  its own box (``_ext/static/book.css`` lets it, as a last resort), and no formula that fits is
  a keyboard stop for scrolling;
* at 1280 px and at 390 px, no formula (inline or display) is cut: the right edge of every
  ``mjx-container`` stays inside the first ancestor that hides overflow (a box that scrolls keeps
  it readable), and on the phone no equation number sits on or beside a cut-off equation;
* every image has an alt text that says something (not empty, not a file name or hash); no
  table is wider than the column at 1280 px; the first proof or solution toggle, reached with
  the Tab key, shows a focus outline that no box cuts off;
* the accessibility scan of axe-core (``tests/vendor/axe-core``, injected by the test, never part
  of the site) finds no violation of impact "serious" or "critical"; each is listed with its rule
  and up to five elements.

Code and printed output wider than the text column at 1280 px (inside a dropdown, its narrower
column) are collected on the same visit and checked by
:func:`test_code_and_output_fit_the_column`, which lists every offender and fails on any.

Every link and anchor of every page is checked once, on the files, by tests/test_links.py.

If Chromium is missing the test is skipped, unless the environment variable CI is set.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from conftest import ARTIFACTS, session_dir, source_of, toc_files

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.book]

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# BOOK_PAGES="book/a book/b" restricts the test to some pages (with BOOK_HTML, for working on it).
PAGES = os.environ.get("BOOK_PAGES", "").split() or toc_files()
THEMES = ("light", "dark")
SHOTS = ARTIFACTS / "screenshots"
# Messages that are not errors of the page (Chromium's own noise in headless mode).
IGNORED_CONSOLE = ()
PHONE = {"width": 390, "height": 844}
# What test_page_in_browser measured on each page (page, theme) -> offenders, for the code test;
# also written to the session's folder, for the code test on another pytest-xdist worker.
CODE_WIDTH: dict = {}
TIMES: dict = {}
AXE_TIMES: dict = {}


def chromium_path() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser"):
        if name and (shutil.which(name) or Path(name).is_file()):
            return shutil.which(name) or name
    return None


def _need_browser():
    path = chromium_path()
    reason = "Debian's chromium is not installed (apt-get install chromium; `make chromium`)"
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(reason + " -- required when CI is set")
        pytest.skip(reason)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("the Python package playwright is not installed")
        pytest.skip("the Python package playwright is not installed")
    return path


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site_dir(request) -> Path:
    """The built HTML; BOOK_HTML=<folder> reuses an existing build (for working on this test)."""
    if os.environ.get("BOOK_HTML"):
        return Path(os.environ["BOOK_HTML"])
    return request.getfixturevalue("built_site")


@pytest.fixture(scope="module")
def site_url(site_dir):
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site_dir)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    path = _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # Playwright gives every launched browser a fresh, temporary user-data directory
        # (and each test its own context): no profile, cache or stored theme carries over.
        b = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _source_counts(page: str) -> dict:
    """What the page's source promises: math, theorem-like boxes, proofs, exercises, widgets."""
    text = source_of(page).read_text()
    prose = re.sub(r"```\{code-cell\}.*?```", "", text, flags=re.S)
    return {
        "math": bool(re.search(r"\$[^$\n]+\$|\$\$", prose)),
        "prf": len(re.findall(r"^[`:]{3,}\{prf:(?!proof)\w+\}", text, flags=re.M)),
        "proof": len(re.findall(r"^[`:]{3,}\{prf:proof\}", text, flags=re.M)),
        "exercise": len(re.findall(r"^[`:]{3,}\{exercise(?:-start)?\}", text, flags=re.M)),
        "solution": len(re.findall(r"^[`:]{3,}\{solution(?:-start)?\}", text, flags=re.M)),
        "widgets": bool(re.search(r"explorer\(|interactive_output\(|\binteract\(", text)),
    }


_PAGE_FACTS_JS = r"""
() => {
  const skip = "pre, code, script, style, mjx-container, .highlight, .cell_input, textarea";
  const walker = document.createTreeWalker(document.querySelector("main") || document.body, NodeFilter.SHOW_TEXT);
  const raw = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement && n.parentElement.closest(skip)) continue;
    const t = n.textContent;
    if (/\\\(|\\\[|\$\$/.test(t)) raw.push(t.trim().slice(0, 80));
  }
  const imgs = [...document.querySelectorAll("main img, article img")].map(i => ({
      src: i.getAttribute("src"), ok: i.complete && i.naturalWidth > 0}));
  return {
    mathjax: document.querySelectorAll("mjx-container").length,
    mathjaxErrors: document.querySelectorAll("mjx-merror").length,
    raw: raw,
    imgs: imgs,
    // sphinx-proof: div.proof.<kind> for theorem-like boxes, plain div.proof for proofs
    theoremBoxes: [...document.querySelectorAll("div.proof")].filter(e => [...e.classList].some(
        c => !["proof", "admonition", "dropdown", "toggle", "toggle-hidden", "toggle-shown"].includes(c))).length,
    proofs: [...document.querySelectorAll("div.proof")].filter(e => [...e.classList].every(
        c => ["proof", "admonition", "dropdown", "toggle", "toggle-hidden", "toggle-shown"].includes(c))).length,
    exercises: document.querySelectorAll("div.exercise").length,
    solutions: document.querySelectorAll("div.solution").length,
    // every widget view: rendered, a figure inside, and a static figure in the cell before it
    widgets: [...document.querySelectorAll("script[type='application/vnd.jupyter.widget-view+json']")].map(v => {
      const cell = v.closest(".cell");
      let prev = cell ? cell.previousElementSibling : null;
      while (prev && !prev.classList.contains("cell")) prev = prev.previousElementSibling;
      const loaded = root => root ? [...root.querySelectorAll("img")].filter(
          i => i.complete && i.naturalWidth > 0).length : 0;
      const out = v.parentElement;
      return {rendered: out.querySelectorAll(".jupyter-widgets").length, figures: loaded(out),
              figureBefore: prev ? loaded(prev.querySelector(".cell_output")) : 0};
    }),
  };
}
"""


_OPEN_ALL_JS = r"""
async () => {
  let opened = 0;
  for (let round = 0; round < 8; round++) {
    let n = 0;
    for (const d of document.querySelectorAll("details:not([open])")) { d.open = true; n++; }
    // sphinx-togglebutton: collapsed admonitions, dropdowns, proofs and solutions
    for (const b of document.querySelectorAll("button.toggle-button.toggle-button-hidden")) {
      b.click(); n++;
    }
    opened += n;
    if (!n) break;
    await new Promise(r => setTimeout(r, 150));
  }
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  return {opened: opened,
          stillClosed: document.querySelectorAll(
              "details:not([open]), button.toggle-button.toggle-button-hidden").length};
}
"""

# TeX source of the display equation that a MathJax container renders
_MATH_SOURCE_JS = r"""
  const sourceOf = c => {
    try {
      for (const item of MathJax.startup.document.math)
        if (item.typesetRoot === c) return item.math.trim().slice(0, 70);
    } catch (e) {}
    return (c.closest("div.math") || c).getAttribute("id") || "(display math)";
  };
"""

_READING_JS = r"""
() => {
""" + _MATH_SOURCE_JS + r"""
  const root = document.querySelector("main") || document.body;
  const skip = "pre, code, script, style, mjx-container, .highlight, textarea, .cell_output, " +
               ".output, .widget-label, .jupyter-widgets, .bd-sidebar-secondary";
  const tex = [];
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (!n.parentElement || n.parentElement.closest(skip)) continue;
    const t = n.textContent;
    const m = t.match(/\$|\\[a-zA-Z]{2,}|\\[()\[\]{}]/);
    if (m) {
      const at = Math.max(0, m.index - 30);
      tex.push(t.slice(at, at + 70).replace(/\s+/g, " ").trim());
    }
  }
  const wideMath = [];
  for (const c of document.querySelectorAll('mjx-container[display="true"]')) {
    const box = c.closest("div.math") || c.parentElement;
    const inner = c.firstElementChild;
    const w = Math.max(c.scrollWidth, inner ? inner.getBoundingClientRect().width : 0);
    const room = Math.min(c.clientWidth || 1e9, box.clientWidth || 1e9);
    if (w > room + 1) wideMath.push([sourceOf(c), Math.round(w), Math.round(room)]);
  }
  const scaledFigures = [];
  for (const img of root.querySelectorAll(".cell_output img, .output img")) {
    const w = img.getBoundingClientRect().width;
    if (img.naturalWidth && w && img.naturalWidth > 1.05 * w)
      scaledFigures.push([(img.getAttribute("src") || "").split("/").pop().slice(0, 40),
                          img.naturalWidth, Math.round(w)]);
  }
  const wideCode = [];
  for (const pre of root.querySelectorAll(".cell_input pre, .cell_output pre, .output pre")) {
    if (pre.scrollWidth > pre.clientWidth + 1) {
      const kind = pre.closest(".cell_input") ? "code" : "output";
      const lines = pre.textContent.split("\n");
      const longest = lines.reduce((a, b) => (b.length > a.length ? b : a), "");
      wideCode.push([kind, pre.scrollWidth, pre.clientWidth, longest.trim().slice(0, 60),
                     longest.length]);
    }
  }
  return {tex, wideMath, scaledFigures, wideCode};
}
"""

_PHONE_JS = r"""
() => {
""" + _MATH_SOURCE_JS + r"""
  const iw = window.innerWidth;
  const math = [];
  for (const c of document.querySelectorAll('mjx-container[display="true"]')) {
    const r = c.getBoundingClientRect();
    if (r.width && r.right > iw + 1) math.push([sourceOf(c), Math.round(r.right)]);
  }
  // which other elements stick out (for the log): the outermost ones not inside a scroll box
  const others = [];
  const root = document.querySelector("main") || document.body;
  for (const el of root.querySelectorAll("*")) {
    const r = el.getBoundingClientRect();
    if (!(r.width && r.right > iw + 1)) continue;
    let p = el.parentElement, clipped = false;
    while (p && p !== document.body) {
      const ox = getComputedStyle(p).overflowX;
      if (ox === "auto" || ox === "scroll" || ox === "hidden") { clipped = true; break; }
      if (p.getBoundingClientRect().right > iw + 1) { clipped = true; break; }  // parent reported
      p = p.parentElement;
    }
    if (!clipped) others.push(el.tagName.toLowerCase() + "." + [...el.classList].slice(0, 2).join("."));
  }
  // displays that fit the screen but scroll sideways inside their own box (the visible
  // rendering, mjx-math, wider than the box; the hidden copy for screen readers not counted)
  const scrolling = [];
  for (const c of document.querySelectorAll('mjx-container[display="true"]')) {
    const shown = c.querySelector("mjx-math");
    const w = shown ? shown.getBoundingClientRect().width : 0;
    if (c.clientWidth && w > c.clientWidth + 1)
      scrolling.push([sourceOf(c), Math.round(w), c.clientWidth]);
  }
  // formulas made keyboard-focusable as scroll boxes although nothing of them is hidden
  let falseFocus = 0;
  for (const el of document.querySelectorAll("[data-scroll-focus]")) {
    const shown = el.querySelector("mjx-math");
    if (shown && el.clientWidth && shown.getBoundingClientRect().width <= el.clientWidth + 1)
      falseFocus += 1;
  }
  return {pageWidth: document.documentElement.scrollWidth, math, others, scrolling,
          falseFocus};
}
"""


# Every MathJax container (inline and display) whose right edge passes the inner right edge of the
# first ancestor that cuts overflow (overflow-x hidden or clip): the end of the formula is lost.
# An ancestor that scrolls (auto, scroll) keeps it reachable and ends the search.
_CLIPPED_MATH_JS = r"""
() => {
""" + _MATH_SOURCE_JS + r"""
  const cut = [];
  for (const c of document.querySelectorAll("mjx-container")) {
    const r = c.getBoundingClientRect();
    if (!r.width || !c.offsetParent) continue;  // not shown (a closed box, another tab)
    const inner = c.firstElementChild;
    const right = Math.max(r.right, inner ? inner.getBoundingClientRect().right : 0);
    const display = c.getAttribute("display") === "true";
    let reach = right;  // the rightmost point a reader can bring into view
    for (let p = c; p && p !== document.documentElement; p = p.parentElement) {
      const ox = getComputedStyle(p).overflowX;
      if (ox === "visible") continue;
      const b = p.getBoundingClientRect();
      const edge = b.left + p.clientLeft + p.clientWidth;
      // a scroll box shows all of its content, but it may itself be cut further out
      if (ox === "auto" || ox === "scroll") { reach = Math.min(reach, b.right); continue; }
      if (reach > edge + 1) {
        cut.push([sourceOf(c), display ? "display" : "inline", Math.round(reach - edge),
                  p.tagName.toLowerCase() + "." + [...p.classList].slice(0, 2).join(".")]);
        break;
      }
    }
  }
  // an equation number must not sit on top of its equation
  const overlaps = [];
  for (const n of document.querySelectorAll("div.math span.eqno")) {
    const m = n.closest("div.math").querySelector("mjx-container");
    if (!m || !n.offsetParent) continue;
    const a = n.getBoundingClientRect(), b = m.getBoundingClientRect();
    const sx = Math.min(a.right, b.right) - Math.max(a.left, b.left);
    const sy = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
    // drawn on the equation, or beside an equation that is cut off (it scrolls)
    const scrolls = m.scrollWidth > m.clientWidth + 1;
    if (sy > 1 && (sx > 1 || scrolls))
      overlaps.push([n.textContent.trim().slice(0, 8), sourceOf(m)]);
  }
  return {cut, overlaps};
}
"""

# Every figure in the text: an alt text that says something (not empty, not a file name or
# hash). Images marked as decoration (role="presentation" or aria-hidden) are left out.
_ALT_JS = r"""
() => {
  const root = document.querySelector("main") || document.body;
  const bad = [];
  for (const img of root.querySelectorAll("img")) {
    if (img.getAttribute("role") === "presentation" || img.closest("[aria-hidden='true']")) continue;
    const alt = (img.getAttribute("alt") || "").trim();
    const src = (img.getAttribute("src") || "").split("/").pop();
    const name = /\.(png|jpe?g|svg|gif|webp)$/i.test(alt) || /^[0-9a-f]{8,}$/i.test(alt) ||
                 (src && !src.startsWith("data:") && alt === src) || /^(image|figure|img)\b\S*$/i.test(alt);
    if (alt.length < 8 || !/\s/.test(alt) || name)
      bad.push([src.startsWith("data:") ? "(inline image)" : src.slice(0, 40), alt.slice(0, 60)]);
  }
  return bad;
}
"""

# Tables wider than their box at 1280 px: their last columns hide behind a sideways scroll.
_WIDE_TABLES_JS = r"""
() => [...document.querySelectorAll("article table")].filter(
    t => t.offsetParent && t.scrollWidth > t.clientWidth + 1).map(t => [
    [...t.querySelectorAll("th")].map(h => h.textContent.trim()).join("|").slice(0, 60),
    t.scrollWidth, t.clientWidth])
"""

# Keyboard focus on the first toggle of a proof dropdown (or else of a proof or solution box):
# reached with the Tab key, it
# must draw an outline (at least 2 px) that no ancestor cuts off.
_FOCUS_JS = r"""
() => {
  const b = document.activeElement;
  if (!b || !b.matches("button.toggle-button, details > summary"))
    return "the Tab key did not reach the toggle";
  const st = getComputedStyle(b);
  const w = parseFloat(st.outlineWidth) || 0;
  if (st.outlineStyle === "none" || w < 2) return `no focus outline (${st.outlineStyle} ${w}px)`;
  const grow = w + (parseFloat(st.outlineOffset) || 0);
  const r = b.getBoundingClientRect();
  for (let p = b.parentElement; p && p !== document.body; p = p.parentElement) {
    const ov = getComputedStyle(p);
    if (ov.overflowX === "visible" && ov.overflowY === "visible") continue;
    const q = p.getBoundingClientRect();
    if (r.left - grow < q.left - 0.5 || r.right + grow > q.right + 0.5 ||
        r.top - grow < q.top - 0.5 || r.bottom + grow > q.bottom + 0.5)
      return "the focus outline is cut by " + p.tagName.toLowerCase() + "." + [...p.classList].join(".");
  }
  return "";
}
"""

# axe-core (tests/vendor/axe-core, injected by the test, never part of the site): the serious and
# critical violations of the page as it is (every toggle open), with up to five elements each.
AXE_JS_FILE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
_AXE_JS = r"""
async () => {
  const r = await axe.run(document, {resultTypes: ["violations"]});
  return r.violations.filter(v => v.impact === "serious" || v.impact === "critical").map(v => ({
    id: v.id, impact: v.impact, help: v.help, count: v.nodes.length,
    nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ") + "  " + (n.html || "").slice(0, 90))}));
}
"""

def _wait_until_settled(page):
    page.wait_for_load_state("load")
    # MathJax 3 typesets after load; wait for its promise when it is on the page.
    page.evaluate("""async () => {
        for (let i = 0; i < 100 && !(window.MathJax && MathJax.startup && MathJax.startup.promise); i++)
            await new Promise(r => setTimeout(r, 50));
        if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
    }""")
    page.wait_for_load_state("networkidle")


def _toggle_solutions(page) -> list[str]:
    """Click every collapsed solution's toggle button: it must open, then close again."""
    problems = []
    boxes = page.locator("div.solution.dropdown")
    for i in range(boxes.count()):
        box = boxes.nth(i)
        button = box.locator("button.toggle-button").first
        body = box.locator(":scope > :not(.admonition-title)").first
        if button.count() == 0 or body.count() == 0:
            problems.append(f"solution {i}: no toggle button or no content")
            continue
        states = [body.is_visible()]
        for _ in range(2):
            button.scroll_into_view_if_needed()
            button.click()
            page.wait_for_timeout(300)
            states.append(body.is_visible())
        if states != [False, True, False]:
            problems.append(f"solution {i}: visible initially / after a click / after a second click = {states}")
    return problems


def offline_page(context, site_url, events, external, allow=()):
    """A new page of ``context`` that may load only the site (and URLs starting with one of
    ``allow``): blocked requests go to ``external``, console and page errors to ``events``."""

    def route(r):
        if r.request.url.startswith((site_url, *allow)):
            r.continue_()
        else:
            external.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda m: events.append(f"console {m.type}: {m.text}")
            if m.type == "error" and not any(s in m.text for s in IGNORED_CONSOLE) else None)
    page.on("pageerror", lambda e: events.append(f"page error: {e}"))
    return page


@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("page_name", PAGES)
def test_page_in_browser(browser, site_url, page_name, theme, request):
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme=theme)
    context.add_init_script(f"try {{ localStorage.setItem('theme', '{theme}'); localStorage.setItem('mode', '{theme}'); }} catch (e) {{}}")
    events, external = [], []
    page = offline_page(context, site_url, events, external)
    page.on("requestfailed", lambda r: events.append(f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: events.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    start = time.perf_counter()
    try:
        page.goto(site_url + page_name + ".html", wait_until="load")
        _wait_until_settled(page)
        facts = page.evaluate(_PAGE_FACTS_JS)
        want = _source_counts(page_name)
        problems = []
        html_theme = page.evaluate("document.documentElement.dataset.theme")
        if html_theme != theme:
            problems.append(f"page theme is {html_theme!r}, expected {theme!r}")
        # math
        if want["math"] and facts["mathjax"] == 0:
            problems.append("the source has math but no MathJax element was rendered")
        if facts["mathjaxErrors"]:
            problems.append(f"{facts['mathjaxErrors']} MathJax errors (mjx-merror)")
        if facts["raw"]:
            problems.append(f"raw TeX left in the text: {facts['raw'][:3]}")
        # figures
        broken = [i["src"] for i in facts["imgs"] if not i["ok"]]
        if broken:
            problems.append(f"images not loaded: {broken}")
        # boxes
        if facts["theoremBoxes"] < want["prf"]:
            problems.append(f"{want['prf']} theorem-like boxes in the source, {facts['theoremBoxes']} rendered")
        if facts["proofs"] < want["proof"]:
            problems.append(f"{want['proof']} proofs in the source, {facts['proofs']} rendered")
        if facts["exercises"] < want["exercise"]:
            problems.append(f"{want['exercise']} exercises in the source, {facts['exercises']} rendered")
        if facts["solutions"] < want["solution"]:
            problems.append(f"{want['solution']} solutions in the source, {facts['solutions']} rendered")
        # widgets: the figure inside the interactive cell must show without a kernel, and the
        # cell before it must not show the same figure a second time
        if want["widgets"] and not facts["widgets"]:
            problems.append("the source has an interactive cell but the page has no widget output")
        for i, w in enumerate(facts["widgets"]):
            if w["rendered"] == 0 or w["figures"] == 0:
                problems.append(f"interactive cell {i} not rendered offline "
                                f"({w['rendered']} widgets, {w['figures']} figures inside)")
            if w["figureBefore"]:
                problems.append(f"interactive cell {i} repeats the figure of the cell before it")
        # the page as a reader first sees it (before any click)
        page.screenshot(path=str(SHOTS / f"{page_name.replace('/', '-')}-{theme}.png"), full_page=True)
        # keyboard focus on the first proof or solution toggle is visible
        toggle = page.locator("details.sd-dropdown > summary, "
                              "div.proof.dropdown button.toggle-button, "
                              "div.solution.dropdown button.toggle-button").first
        if toggle.count():
            toggle.scroll_into_view_if_needed()
            toggle.focus()
            page.keyboard.press("Shift+Tab")
            page.keyboard.press("Tab")
            focus = page.evaluate(_FOCUS_JS)
            if focus:
                problems.append(f"keyboard focus on a proof or solution toggle: {focus}")
        # solution toggles
        if want["solution"]:
            problems += _toggle_solutions(page)
        # every dropdown, proof, solution and hidden cell open: what a thorough reader sees
        opened = page.evaluate(_OPEN_ALL_JS)
        if opened["stillClosed"]:
            problems.append(f"{opened['stillClosed']} toggles could not be opened")
        reading = page.evaluate(_READING_JS)
        problems += [f"TeX left in the text: {s!r}" for s in reading["tex"][:8]]
        problems += [f"display math wider than its box at 1280 px ({w} > {c} px): {s!r}"
                     for s, w, c in reading["wideMath"][:8]]
        problems += [f"figure drawn {n} px wide, shown at {w} px: {s}"
                     for s, n, w in reading["scaledFigures"][:8]]
        CODE_WIDTH[(page_name, theme)] = reading["wideCode"]
        _code_width_file(request, page_name, theme).write_text(json.dumps(reading["wideCode"]))
        # no formula cut at the column's edge, every figure with an alt text that says something
        clipped = page.evaluate(_CLIPPED_MATH_JS)
        problems += [f"at 1280 px {kind} math cut by {px} px at the edge of {box}: {s!r}"
                     for s, kind, px, box in clipped["cut"]]
        problems += [f"table wider than the column at 1280 px ({w} > {c} px): {h!r}"
                     for h, w, c in page.evaluate(_WIDE_TABLES_JS)]
        problems += [f"image without a meaningful alt text: {src} (alt {alt!r})"
                     for src, alt in page.evaluate(_ALT_JS)]
        # accessibility scan (axe-core, vendored): serious and critical violations fail
        t_axe = time.perf_counter()
        page.add_script_tag(path=str(AXE_JS_FILE))
        for v in page.evaluate(_AXE_JS):
            problems.append(f"axe {v['impact']} {v['id']} ({v['help']}) on {v['count']} elements: "
                            + " | ".join(v["nodes"]))
        AXE_TIMES[(page_name, theme)] = time.perf_counter() - t_axe
        # a phone: display math must not make the page scroll sideways
        page.set_viewport_size(PHONE)
        page.wait_for_timeout(300)
        phone = page.evaluate(_PHONE_JS)
        problems += [f"at 390 px display math reaches {r} px, beyond the screen: {s!r}"
                     for s, r in phone["math"][:8]]
        problems += [f"at 390 px display math scrolls sideways in its box ({w} > {c} px): {s!r}"
                     for s, w, c in phone["scrolling"][:8]]
        if phone["falseFocus"]:
            problems.append(f"at 390 px {phone['falseFocus']} formulas are keyboard stops for "
                            "scrolling although they fit their box")
        if phone["pageWidth"] > PHONE["width"] + 1 and phone["math"]:
            problems.append(f"at 390 px the page is {phone['pageWidth']} px wide")
        clipped = page.evaluate(_CLIPPED_MATH_JS)
        problems += [f"at 390 px {kind} math cut by {px} px at the edge of {box}: {s!r}"
                     for s, kind, px, box in clipped["cut"]]
        problems += [f"at 390 px equation number {n} drawn on or beside its cut-off equation {s!r}"
                     for n, s in clipped["overlaps"]]
        if phone["pageWidth"] > PHONE["width"] + 1:
            print(f"{page_name} [{theme}] at 390 px: page {phone['pageWidth']} px wide because of "
                  f"{phone['others'][:3]}")
        problems += events
        problems += [f"request to the internet (blocked): {u}" for u in external]
    finally:
        context.close()
    TIMES[(page_name, theme)] = time.perf_counter() - start
    print(f"{page_name} [{theme}]: {TIMES[(page_name, theme)]:.1f} s, "
          f"{facts['mathjax']} math elements, {len(facts['imgs'])} images, "
          f"{opened['opened']} toggles opened, accessibility scan "
          f"{AXE_TIMES.get((page_name, theme), 0):.1f} s")
    assert not problems, f"{page_name} [{theme}]:\n  " + "\n  ".join(problems)


def _code_width_file(request, page_name: str, theme: str) -> Path:
    folder = session_dir(request.config) / "code-width"
    folder.mkdir(exist_ok=True)
    return folder / f"{page_name.replace('/', '-')}-{theme}.json"


def _format_code_offenders(found: dict) -> list[str]:
    lines = []
    for (page, theme), items in sorted(found.items()):
        if theme != "light":
            continue  # the column is the same in both themes
        for kind, scroll, client, snippet, n in items:
            lines.append(f"{page}: {kind} {scroll} px in a {client} px column "
                         f"(longest line {n} chars): {snippet!r}")
    return lines


def test_code_and_output_fit_the_column(browser, site_url, request):
    """Code cells and printed output fit the text column at 1280 px (no sideways scrolling).

    Reads what :func:`test_page_in_browser` measured; pages it did not visit are opened here.
    """
    for page_name in PAGES:
        if (page_name, "light") in CODE_WIDTH:
            continue
        seen = _code_width_file(request, page_name, "light")
        if seen.is_file():     # measured by test_page_in_browser on another worker
            CODE_WIDTH[(page_name, "light")] = json.loads(seen.read_text())
            continue
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(site_url)
                      else r.abort())
        page = context.new_page()
        try:
            page.goto(site_url + page_name + ".html", wait_until="load")
            _wait_until_settled(page)
            page.evaluate(_OPEN_ALL_JS)
            CODE_WIDTH[(page_name, "light")] = page.evaluate(_READING_JS)["wideCode"]
        finally:
            context.close()
    offenders = _format_code_offenders(CODE_WIDTH)
    report = ARTIFACTS / "code-width-offenders.txt"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(offenders) + "\n")
    print(f"{len(offenders)} code or output blocks wider than the column (list in {report})")
    for line in offenders:
        print("  " + line)
    assert not offenders, "code or output wider than the column:\n  " + "\n  ".join(offenders)
