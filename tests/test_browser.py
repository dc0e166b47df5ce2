"""The rendered book, read in a real browser: every page of _toc.yml in Debian's Chromium.

The site built by the ``built_site`` fixture (from an empty folder, warnings as errors) is served
on 127.0.0.1 and opened with Playwright driving ``/usr/bin/chromium`` (no browser download). Any
request that leaves 127.0.0.1 is blocked and counted as a failure, so the test sees the page a
reader sees on a laptop without internet. For every page, on the light and the dark theme:

* no console errors, no uncaught page errors, no failed or 4xx/5xx requests;
* math typeset by MathJax (``mjx-container`` elements, no ``\\(``, ``\\[`` or ``$$`` left in text);
* every image loaded (``naturalWidth > 0``), theorem/proof/exercise boxes present where the source
  has them, solution toggles open and close;
* every link to a local page resolves (the file exists and so does its ``#anchor``);
* interactive cells show their static content: the widget output holds a rendered figure;
* a full-page screenshot in test-artifacts/screenshots/<page>-<theme>.png.

If Chromium is missing the test is skipped, unless the environment variable CI is set.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest

from conftest import ARTIFACTS, source_of, toc_files

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# BOOK_PAGES="book/a book/b" restricts the test to some pages (with BOOK_HTML, for working on it).
PAGES = os.environ.get("BOOK_PAGES", "").split() or toc_files()
THEMES = ("light", "dark")
SHOTS = ARTIFACTS / "screenshots"
# Messages that are not errors of the page (Chromium's own noise in headless mode).
IGNORED_CONSOLE = ()


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
              staticBefore: prev ? loaded(prev.querySelector(".cell_output")) : 0};
    }),
    links: [...document.querySelectorAll("a[href]")].map(a => a.getAttribute("href")),
  };
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


def _check_links(built_site: Path, page: str, hrefs: list[str]) -> list[str]:
    bad = []
    base = f"http://site/{page}.html"
    for href in hrefs:
        if not href or href.startswith(("http:", "https:", "mailto:", "javascript:", "data:")):
            continue
        url = urlparse(urljoin(base, href))
        target = built_site / unquote(url.path).lstrip("/") if url.path else built_site / f"{page}.html"
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            bad.append(f"{href} -> missing {target.relative_to(built_site)}")
            continue
        if url.fragment and target.suffix == ".html":
            html = target.read_text(errors="replace")
            frag = re.escape(unquote(url.fragment))
            if not re.search(rf'id="{frag}"', html) and not re.search(rf'name="{frag}"', html):
                bad.append(f"{href} -> no anchor #{url.fragment} in {target.name}")
    return bad


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


@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("page_name", PAGES)
def test_page_in_browser(browser, site_url, site_dir, page_name, theme):
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme=theme)
    context.add_init_script(f"try {{ localStorage.setItem('theme', '{theme}'); localStorage.setItem('mode', '{theme}'); }} catch (e) {{}}")
    events, external = [], []

    def route(r):
        if r.request.url.startswith(site_url):
            r.continue_()
        else:
            external.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda m: events.append(f"console {m.type}: {m.text}")
            if m.type == "error" and not any(s in m.text for s in IGNORED_CONSOLE) else None)
    page.on("pageerror", lambda e: events.append(f"page error: {e}"))
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
        # widgets: the static figure inside the interactive cell must show without a kernel,
        # and the cell before it shows the same figure as a plain image
        if want["widgets"] and not facts["widgets"]:
            problems.append("the source has an interactive cell but the page has no widget output")
        for i, w in enumerate(facts["widgets"]):
            if w["rendered"] == 0 or w["figures"] == 0:
                problems.append(f"interactive cell {i} not rendered offline "
                                f"({w['rendered']} widgets, {w['figures']} figures inside)")
            if w["staticBefore"] == 0:
                problems.append(f"interactive cell {i} is not preceded by a cell with a static figure")
        # links
        problems += [f"broken link: {b}" for b in _check_links(site_dir, page_name, facts["links"])]
        # the page as a reader first sees it (before any click)
        page.screenshot(path=str(SHOTS / f"{page_name.replace('/', '-')}-{theme}.png"), full_page=True)
        # solution toggles
        if want["solution"]:
            problems += _toggle_solutions(page)
        problems += events
        problems += [f"request to the internet (blocked): {u}" for u in external]
    finally:
        context.close()
    print(f"{page_name} [{theme}]: {time.perf_counter() - start:.1f} s, "
          f"{facts['mathjax']} math elements, {len(facts['imgs'])} images")
    assert not problems, f"{page_name} [{theme}]:\n  " + "\n  ".join(problems)
