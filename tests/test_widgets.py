"""tdlib.widgets.explorer: live redraws with a kernel, precomputed frames in a book build."""
from __future__ import annotations

import html
import json

import ipywidgets as w
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ipywidgets.widgets.widget_link import Link  # noqa: E402

from tdlib import widgets  # noqa: E402


def tiny_draw(a=1.0, kind="line", flip=False):
    fig, ax = plt.subplots(figsize=(1.5, 1.0), dpi=50)
    x = np.linspace(0, 1, 20)
    ax.plot(x, (-1 if flip else 1) * a * x ** 2, "o" if kind == "dots" else "-")
    ax.set_ylim(-3, 3)
    return fig


def leaves_at(view, path):
    for i in path:
        view = view.children[i]
    return view


def test_grid_values_include_the_current_value_and_the_ends():
    s = w.IntSlider(value=12, min=2, max=96)
    g = widgets.grid_values("D", s, 5)
    assert len(g) == 5 and 12 in g and g[0] == 2 and g[-1] == 96 and g == sorted(g)
    f = w.FloatSlider(value=2.0, min=0.25, max=8.0, step=0.25)
    g = widgets.grid_values("c", f, 9)
    assert len(g) == 9 and 2.0 in g and g[0] == 0.25 and g[-1] == 8.0
    assert widgets.grid_values("k", w.IntSlider(value=2, min=1, max=3), 9) == [1, 2, 3]
    assert widgets.grid_values("b", w.Checkbox(value=True), 9) == [False, True]
    assert widgets.grid_values("k", w.Dropdown(options=["x", "y"]), 9) == ["x", "y"]
    with pytest.raises(TypeError, match="knob 't'"):
        widgets.grid_values("t", w.Text(value="a"), 5)


def test_live_explorer_redraws_without_frames(monkeypatch):
    monkeypatch.delenv(widgets.STATIC_ENV, raising=False)
    box = widgets.explorer(tiny_draw, a=w.FloatSlider(value=1.0, min=0.5, max=2.0, step=0.5))
    assert isinstance(box.children[1], w.Output)
    assert "tdlib-explorer" not in box._dom_classes


def test_static_explorer_holds_one_frame_per_grid_point(monkeypatch):
    monkeypatch.setenv(widgets.STATIC_ENV, "1")
    a = w.FloatSlider(value=1.0, min=0.5, max=2.0, step=0.5, description="a")
    kind = w.Dropdown(options=["line", "dots"], value="line")
    flip = w.Checkbox(value=False)
    box = widgets.explorer(tiny_draw, frames=["a", "kind"], a=a, kind=kind, flip=flip)
    controls, view, info = box.children
    assert "tdlib-explorer" in box._dom_classes
    assert flip.disabled and controls.children[2] is flip        # fixed knob, shown disabled
    slider = controls.children[0]
    assert isinstance(slider, w.SelectionSlider) and slider.index == 1   # starts at a = 1.0
    assert isinstance(view, w.Stack) and len(view.children) == 4          # a: 0.5 .. 2.0
    assert all(len(c.children) == 2 for c in view.children)               # kind: line, dots
    assert (view.selected_index, view.children[1].selected_index) == (1, 0)
    # every frame is draw's figure at its grid point, and frames differ
    frames = {}
    for i, av in enumerate([0.5, 1.0, 1.5, 2.0]):
        for j, kv in enumerate(["line", "dots"]):
            png = leaves_at(view, (i, j)).value
            assert png == widgets.render_png(tiny_draw, {"a": av, "kind": kv, "flip": False})
            frames[(av, kv)] = png
    assert len(set(frames.values())) == 8
    # the browser links: one jslink per Stack, from the knob's control to the Stack's index
    links = [m for m in w.Widget._active_widgets.values() if isinstance(m, Link)
             and m.target[0] in [view, *view.children]]
    assert len(links) == 5
    assert {(lk.source[0], lk.source[1], lk.target[1]) for lk in links} == {
        (slider, "index", "selected_index"), (kind, "index", "selected_index")}
    assert "data-spec" in info.value and "8 precomputed figures" in info.value


def test_static_explorer_errors_name_the_problem(monkeypatch):
    monkeypatch.setenv(widgets.STATIC_ENV, "1")
    a = w.FloatSlider(value=1.0, min=0.5, max=2.0, step=0.5)
    with pytest.raises(ValueError, match="frames must name knobs"):
        widgets.explorer(tiny_draw, frames=["b"], a=a)
    with pytest.raises(ValueError, match="must include its value 1.0"):
        widgets.explorer(tiny_draw, frames={"a": [0.5, 2.0]}, a=a)
    many = {"a": [1.0] + [float(x) for x in range(2, 40)], "kind": None}
    with pytest.raises(ValueError, match="at most"):
        widgets.explorer(tiny_draw, frames=many, a=a, kind=w.Dropdown(options=["line", "dots"]))
    with pytest.raises(ValueError, match="at least one control"):
        widgets.explorer(tiny_draw)


def test_static_explorer_names_its_frames_and_marks_fixed_knobs(monkeypatch):
    monkeypatch.setenv(widgets.STATIC_ENV, "1")
    a = w.FloatSlider(value=1.0, min=0.5, max=2.0, step=0.5, description="a")
    flip = w.Checkbox(value=False, description="flip")
    box = widgets.explorer(tiny_draw, frames=["a"], alt="A line of slope a.", a=a, flip=flip)
    controls, view, info = box.children
    assert flip.disabled and flip.description == "flip (fixed on this page)"
    spec = json.loads(html.unescape(info.value.split("data-spec='")[1].split("'")[0]))
    assert spec["alt"] == "A line of slope a."
    with pytest.raises(ValueError, match="alt must be a sentence"):
        widgets.explorer(tiny_draw, alt="  ", a=a)
