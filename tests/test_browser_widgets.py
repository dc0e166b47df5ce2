"""The interactive figures answer on the static site, with no kernel and no network.

In a book build :func:`tdlib.widgets.explorer` precomputes the frames of each interactive figure
and links its controls to them in the browser. On every page with an interactive cell, in
Debian's Chromium (the server, browser and network blocking of ``test_browser.py``), this test
moves every control of every explorer and checks that

* the figure shown changes after each move, and no console or page error appears;
* the frame shown at the final position is the figure that ``draw`` makes at those values: a
  fresh render (``tdlib.widgets.render_png``) matches it pixel by pixel up to a small tolerance.

BOOK_HTML=<folder> (with BOOK_PAGES="book/a ...") tests an existing build instead of building the
book; the pages must come from a build (``TDLIB_STATIC_WIDGETS`` set, as ``_ext/book_site.py``
does), not from a notebook run.
"""
from __future__ import annotations

import base64
import importlib
import io
import json
import os
import re

import numpy as np
import pytest

from conftest import source_of, toc_files
from test_browser import _wait_until_settled, browser, offline_page, site_dir, site_url  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.book]

PAGES = os.environ.get("BOOK_PAGES", "").split() or [
    p for p in toc_files() if source_of(p).suffix == ".md"
    and re.search(r"explorer\(", source_of(p).read_text())]
#: Largest mean absolute difference (0-255 scale) between a frame and a fresh render.
TOLERANCE = 1.0

_SHOWN_FRAME_JS = """
async (root) => {
  const shown = [...root.querySelectorAll("img")].filter(i => i.offsetParent !== null);
  if (shown.length !== 1) return {count: shown.length};
  const bytes = new Uint8Array(await (await fetch(shown[0].src)).arrayBuffer());
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return {count: 1, png: btoa(s)};
}
"""


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float)


def _draw_function(page: str, module: str, qualname: str):
    """The page's ``draw``: imported from tdlib, or defined by one of the page's code cells
    (run after the import lines of the cells before it)."""
    if module != "__main__":
        return getattr(importlib.import_module(module), qualname)
    import jupytext
    import matplotlib

    matplotlib.use("Agg")
    namespace: dict = {}
    for cell in jupytext.read(source_of(page)).cells:
        if cell.cell_type != "code":
            continue
        if f"def {qualname}(" in cell.source:
            code = cell.source
        else:   # only the cell's imports
            code = "\n".join(ln for ln in cell.source.splitlines() if ln.startswith(("import ", "from ")))
        exec(compile(code, f"{page} cell", "exec"), namespace)
        if qualname in namespace:
            return namespace[qualname]
    raise LookupError(f"{page}: no code cell defines {qualname}")


def _move(control, kind: str, index: int, count: int, page) -> None:
    """Set one control of the static page to option ``index`` the way a reader would."""
    if kind == "slider":
        handle = control.locator(".noUi-handle").first
        handle.focus()
        page.keyboard.press("Home")
        for _ in range(index):
            page.keyboard.press("ArrowRight")
    elif kind == "dropdown":
        control.locator("select").select_option(index=index)
    else:
        control.locator("button").nth(index).click()


def _controls(box):
    """The enabled controls of one explorer, in order, each with its kind."""
    out = []
    items = box.locator(".widget-hbox").first.locator(":scope > .lm-Widget")
    for i in range(items.count()):
        item = items.nth(i)
        classes = item.get_attribute("class") or ""
        if "widget-slider" in classes or "widget-hslider" in classes:
            kind = "slider"
        elif "widget-dropdown" in classes:
            kind = "dropdown"
        elif "widget-toggle-buttons" in classes:
            kind = "buttons"
        else:
            kind = "other"
        disabled = item.locator("[disabled], .noUi-target[disabled]").count() > 0
        out.append((item, kind, disabled))
    return out


@pytest.mark.parametrize("page_name", PAGES)
def test_sliders_answer_without_kernel(browser, site_url, page_name):  # noqa: F811
    from tdlib.widgets import render_png

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    events, external = [], []
    page = offline_page(context, site_url, events, external, allow=("blob:",))
    problems, report = [], []
    try:
        page.goto(site_url + page_name + ".html", wait_until="load")
        _wait_until_settled(page)
        page.wait_for_selector(".tdlib-explorer .tdlib-explorer-spec", state="attached", timeout=30000)
        boxes = page.locator(".tdlib-explorer")
        assert boxes.count() > 0, f"{page_name}: no precomputed explorer on the page"
        for b in range(boxes.count()):
            box = boxes.nth(b)
            spec = json.loads(box.locator(".tdlib-explorer-spec").get_attribute("data-spec"))
            name = ".".join(spec["draw"])
            enabled = [(c, k) for c, k, off in _controls(box) if not off]
            if len(enabled) != len(spec["knobs"]):
                problems.append(f"{name}: {len(enabled)} enabled controls for knobs {spec['knobs']}")
                continue
            frame = page.evaluate(_SHOWN_FRAME_JS, box.element_handle())
            if frame["count"] != 1:
                problems.append(f"{name}: {frame['count']} figures shown at the start, expected 1")
                continue
            labels = spec["labels"]
            start = [labels[i].index(_label_now(c, k)) for i, (c, k) in enumerate(enabled)]
            position = list(start)
            for i, (control, kind) in enumerate(enabled):
                count = len(spec["grids"][i])
                target = count - 1 if position[i] != count - 1 else 0
                _move(control, kind, target, count, page)
                page.wait_for_timeout(200)
                now = _label_now(control, kind)
                if now != labels[i][target]:
                    problems.append(f"{name}: knob {spec['knobs'][i]} shows {now!r} after the move, "
                                    f"expected {labels[i][target]!r}")
                position[i] = target
                new = page.evaluate(_SHOWN_FRAME_JS, box.element_handle())
                if new["count"] != 1 or new.get("png") == frame.get("png"):
                    problems.append(f"{name}: the figure did not change when {spec['knobs'][i]} moved "
                                    f"to {labels[i][target]} ({new['count']} shown)")
                frame = new
            values = dict(spec["fixed"], **{k: spec["grids"][i][position[i]]
                                             for i, k in enumerate(spec["knobs"])})
            fresh = _pixels(render_png(_draw_function(page_name, *spec["draw"]), values))
            shown = _pixels(base64.b64decode(frame["png"]))
            if fresh.shape != shown.shape:
                problems.append(f"{name}{values}: frame {shown.shape} and fresh render {fresh.shape} differ in size")
            else:
                diff = float(np.abs(fresh - shown).mean())
                report.append(f"{name}: {len(spec['knobs'])} knobs moved, frame vs draw{values}: "
                              f"mean |diff| {diff:.3f}")
                if diff > TOLERANCE:
                    problems.append(f"{name}{values}: the frame differs from draw's figure "
                                    f"(mean |diff| {diff:.2f} > {TOLERANCE})")
            problems += _full_size(page, box, name)
        problems += events
        problems += [f"request to the internet (blocked): {u}" for u in external]
    finally:
        context.close()
    print("\n".join(report))
    assert not problems, f"{page_name}:\n  " + "\n  ".join(problems)


_FULL_SIZE_JS = """
(box) => {
  const shown = [...box.querySelectorAll("img")].find(i => i.offsetParent !== null);
  const big = document.querySelector("dialog.tdlib-frame-dialog[open] img");
  return {shown: shown ? shown.src : null, big: big ? big.src : null,
          alt: big ? big.alt : "", width: big ? big.naturalWidth : 0};
}
"""


def _full_size(page, box, name: str) -> list:
    """The explorer's "Open this frame full size" button shows the frame on view, with its alt
    text, in a dialog that Escape closes (for phones, where frames shrink to the column)."""
    button = box.locator(":scope > button.tdlib-full-size")
    if button.count() != 1:
        return [f"{name}: {button.count()} 'full size' buttons, expected 1"]
    button.click()
    page.wait_for_selector("dialog.tdlib-frame-dialog[open] img", timeout=5000)
    got = page.evaluate(_FULL_SIZE_JS, box.element_handle())
    problems = []
    if not got["big"] or got["big"] != got["shown"]:
        problems.append(f"{name}: the full-size dialog does not show the frame on view")
    if not got["alt"].strip() or not got["width"]:
        problems.append(f"{name}: the full-size frame has no alt text or did not load")
    page.keyboard.press("Escape")
    page.wait_for_timeout(200)
    if page.locator("dialog.tdlib-frame-dialog").count():
        problems.append(f"{name}: Escape did not close the full-size dialog")
    return problems


def _label_now(control, kind: str) -> str:
    """The option a control shows now (its readout, selected option or pressed button)."""
    if kind == "slider":
        return control.locator(".widget-readout").inner_text().strip()
    if kind == "dropdown":
        return control.locator("select").evaluate("s => s.options[s.selectedIndex].text")
    return control.locator("button.mod-active").inner_text().strip()
