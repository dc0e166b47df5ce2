"""Interactive cells: ipywidgets controls in front of a pure drawing function.

Every interactive cell is built the same way: a pure function ``draw(**values)`` that makes one
matplotlib figure from the knob values (fast: a redraw takes at most about 0.25 s), and
:func:`explorer`, which puts ipywidgets controls in front of it.

* **With a kernel** (Binder, Colab, a local Jupyter) the figure is redrawn whenever a control
  moves, at any value the control allows.
* **In a book build** (the variable ``TDLIB_STATIC_WIDGETS`` is set; ``_ext/book_site.py`` sets
  it) nobody is there to redraw, so :func:`explorer` draws the figure in advance on a grid of
  values of each knob (5-9 per slider, every choice of a drop-down or toggle) and lets the page
  pick the frame in the browser. The mechanism is the widget library's own: each knob becomes a
  control with an ``index`` (a ``SelectionSlider`` for a slider) linked with ``jslink`` to the
  ``selected_index`` of ``Stack`` containers nested one level per knob, with the PNG frames as
  ``Image`` widgets at the leaves. The links run in the browser from the widget state saved in
  the page, so the static site answers without a kernel.
"""
from __future__ import annotations

import io
import itertools
import json
import math
import os
import time
from typing import Callable, Iterable, Optional

from .checks import check_int

#: Set (to anything but "" or "0") by the book build: precompute frames instead of redrawing.
STATIC_ENV = "TDLIB_STATIC_WIDGETS"
#: If set to a file name, each static explorer appends one JSON line (draw, frames, seconds,
#: bytes) to it: ``benchmarks/run.py --build`` measures the frames of a real build this way.
LOG_ENV = "TDLIB_FRAMES_LOG"
#: Most frames one static explorer may hold (build time and page size grow with it).
MAX_FRAMES = 60
#: Values per slider on the static page: as many as the slider has, but between these bounds.
MIN_VALUES, MAX_VALUES = 5, 9


def static_mode() -> bool:
    """True in a book build: no reader's kernel will answer, frames are precomputed."""
    return os.environ.get(STATIC_ENV, "") not in ("", "0")


def explorer(draw: Callable[..., object], /, frames=None, alt: Optional[str] = None, **controls):
    """Controls (ipywidgets) on top of the output of ``draw(**values)``; returns the widget box.

    ``controls`` maps each keyword of ``draw`` to an ipywidgets control, e.g.
    ``D=IntSlider(value=24, min=4, max=64)``. With a kernel the figure is redrawn whenever a
    control changes. In a book build (:func:`static_mode`) only the knobs named in ``frames``
    (all of them when ``None``) move, over a grid of values with a precomputed frame each;
    ``frames`` may also map a knob to its list of values (``None``: the automatic grid). The
    other knobs stay at their value, shown disabled with "(fixed on this page)" after their
    name. At most :data:`MAX_FRAMES` frames. ``alt`` says in words what the figure shows: on the
    static page it is the alt text of every frame (kept in the explorer's ``data-spec``, set on
    the images by ``_ext/static/book.js``; the Image widget has no alt of its own).
    """
    import ipywidgets as w

    _check_draw(draw)
    if not controls:
        raise ValueError("explorer: give at least one control, e.g. D=IntSlider(...); got none")
    if alt is not None and (not isinstance(alt, str) or not alt.strip()):
        raise ValueError(f"explorer: alt must be a sentence saying what the figure shows; got {alt!r}")
    if static_mode():
        if frames is None:
            frames = list(controls)
        if not isinstance(frames, dict):
            frames = {k: None for k in frames}
        return _static_explorer(draw, controls, frames, alt)
    import matplotlib.pyplot as plt

    out = w.interactive_output(_drawer(draw, plt), controls)
    return w.VBox([w.HBox(list(controls.values()), layout=w.Layout(flex_flow="row wrap")), out])


def _check_draw(draw) -> None:
    if not callable(draw):
        raise TypeError(f"draw: expected a function draw(**values) that makes one figure, got "
                        f"{type(draw).__name__}")


def _drawer(draw, plt):
    def run(**values):
        draw(**values)
        plt.show()

    return run


# ---------------------------------------------------------------------------------------------
# The static page: frames on a grid, chosen in the browser
# ---------------------------------------------------------------------------------------------

def render_png(draw: Callable[..., object], values: dict) -> bytes:
    """``draw(**values)`` as a compact PNG at display size: the whole figure at its dpi, reduced
    to a 64-colour palette (a third of the size of the full-colour PNG)."""
    import inspect

    import matplotlib.pyplot as plt

    _check_draw(draw)
    if not isinstance(values, dict):
        raise TypeError(f"values: expected a dict of knob values for draw, got "
                        f"{type(values).__name__}")
    try:
        inspect.signature(draw).bind(**values)
    except TypeError as err:
        raise TypeError(f"values: expected the keywords of draw{inspect.signature(draw)}, got "
                        f"{sorted(values)} ({err})") from None
    except ValueError:  # a callable without a signature: let the call decide
        pass
    from PIL import Image

    plt.close("all")
    draw(**values)
    fig = plt.gcf()
    raw = io.BytesIO()
    fig.savefig(raw, format="png", dpi=fig.dpi)
    plt.close("all")
    img = Image.open(raw).convert("RGB").quantize(colors=64, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    img.save(out, format="png", optimize=True)
    return out.getvalue()


def grid_values(name: str, control, size: int) -> list:
    """The values of one knob that get a frame: every option of a choice; for a slider ``size``
    evenly spread values of its range (on its step): both ends and its current value."""
    import ipywidgets as w

    if not isinstance(name, str):
        raise TypeError(f"name: expected the knob's name (a string), got {name!r}")
    size = check_int("size", size, minimum=2)

    if isinstance(control, (w.IntSlider, w.FloatSlider)):
        lo, hi, step = control.min, control.max, control.step
        count = int(round((hi - lo) / step)) + 1
        current = int(round((control.value - lo) / step))
        if count <= size:
            picks = list(range(count))
        else:
            picks = sorted({int(round(i * (count - 1) / (size - 1))) for i in range(size)})
            if current not in picks:    # the current value replaces the nearest inner point
                nearest = min(range(1, len(picks) - 1), key=lambda i: abs(picks[i] - current))
                picks[nearest] = current
                picks.sort()
        cast = int if isinstance(control, w.IntSlider) else float
        return [cast(round(lo + i * step, 12)) for i in picks]
    if isinstance(control, (w.Checkbox, w.ToggleButton)):
        return [False, True]
    if hasattr(control, "options") and hasattr(control, "index"):
        return [v for _, v in _labelled(control)]
    raise TypeError(f"control: expected an IntSlider, FloatSlider, Checkbox or a selection "
                    f"control (Dropdown, ToggleButtons, ...) for knob {name!r}; got "
                    f"{type(control).__name__}")


def _labelled(control) -> list:
    """(label, value) pairs of a selection control."""
    return list(zip(control._options_labels, control._options_values))


def _label(control, value) -> str:
    fmt = getattr(control, "readout_format", None)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, fmt) if fmt and isinstance(value, (int, float)) else str(value)


def _chooser(name: str, control, values: list):
    """A control with an ``index`` trait showing ``values``, starting at the control's value."""
    import ipywidgets as w

    if hasattr(control, "options") and hasattr(control, "index"):
        return control                      # already picks by index
    current = control.value
    index = min(range(len(values)), key=lambda i: abs(float(values[i]) - float(current)))
    options = [(_label(control, v), v) for v in values]
    desc = control.description or name
    if isinstance(control, (w.Checkbox, w.ToggleButton)):
        return w.ToggleButtons(options=options, index=index, description=desc,
                               style={"button_width": "4em"})
    return w.SelectionSlider(options=options, index=index, description=desc,
                             continuous_update=True, layout=control.layout)


def _slider_size(counts: list[int], max_frames: int) -> int:
    """Values per automatic slider grid: the most (from MAX_VALUES down to MIN_VALUES) such that
    the product of ``counts`` (``None`` for an automatic slider) stays within ``max_frames``."""
    size = MAX_VALUES
    while size > MIN_VALUES and math.prod(size if c is None else c for c in counts) > max_frames:
        size -= 1
    return size


def _static_explorer(draw, controls: dict, frames: dict, alt: Optional[str] = None):
    import ipywidgets as w

    moving = list(frames)
    unknown = [k for k in moving if k not in controls]
    if unknown or not moving:
        raise ValueError(f"explorer: frames must name knobs that have a control {list(controls)}; "
                         f"got {moving}")
    fixed = {k: c.value for k, c in controls.items() if k not in frames}
    sliders = (w.IntSlider, w.FloatSlider)
    counts = [len(frames[k]) if frames[k] is not None else
              (None if isinstance(controls[k], sliders) else len(grid_values(k, controls[k], 2)))
              for k in moving]
    size = _slider_size(counts, MAX_FRAMES)
    grids = [list(frames[k]) if frames[k] is not None else grid_values(k, controls[k], size)
             for k in moving]
    for k, g in zip(moving, grids):
        if controls[k].value not in g:
            raise ValueError(f"explorer: the frames of knob {k!r} must include its value "
                             f"{controls[k].value!r}; got {g}")
    total = math.prod(len(g) for g in grids)
    if total > MAX_FRAMES:
        raise ValueError(f"explorer: {total} frames for the knobs {moving} (at most {MAX_FRAMES}); "
                         f"name fewer knobs or values with frames=...")
    choosers = {k: _chooser(k, controls[k], g) for k, g in zip(moving, grids)}
    start = [choosers[k].index for k in moving]

    def tree(level: int, chosen: tuple):
        if level == len(moving):
            values = dict(fixed, **dict(zip(moving, chosen)))
            return w.Image(value=render_png(draw, values), format="png")
        stack = w.Stack([tree(level + 1, chosen + (v,)) for v in grids[level]],
                        selected_index=start[level])
        w.jslink((choosers[moving[level]], "index"), (stack, "selected_index"))
        return stack

    import torch

    wall, cpu, threads = time.perf_counter(), time.process_time(), torch.get_num_threads()
    torch.set_num_threads(1)        # small problems: a second thread only waits, on a busy machine
    try:
        frames_view = tree(0, ())
    finally:
        torch.set_num_threads(threads)
    if os.environ.get(LOG_ENV):
        nbytes = sum(len(c.value) for c in _leaves(frames_view))
        with open(os.environ[LOG_ENV], "a") as f:
            f.write(json.dumps({"draw": f"{draw.__module__}.{draw.__qualname__}", "frames": total,
                                "wall_seconds": time.perf_counter() - wall,
                                "cpu_seconds": time.process_time() - cpu, "png_bytes": nbytes}) + "\n")
    shown = []
    for k, c in controls.items():
        if k in choosers:
            shown.append(choosers[k])
        else:
            c.disabled = True
            c.description = f"{c.description or k} (fixed on this page)"
            c.style.description_width = "initial"     # the whole note, not cut at 80 px
            shown.append(c)
    # what the page holds, for readers and for the browser test (a data attribute)
    spec = {"draw": [draw.__module__, draw.__qualname__], "fixed": fixed, "knobs": moving,
            "grids": grids, "labels": [[lab for lab, _ in _labelled(choosers[k])] for k in moving],
            "alt": alt}
    note = (f"{total} precomputed figures" + (f"; {', '.join(fixed)} fixed here" if fixed else "")
            + ": run the notebook to move every knob freely.")
    info = w.HTML(f"<span class='tdlib-explorer-spec' data-spec='{_attr(spec)}'>"
                  f"<small>{note}</small></span>")
    box = w.VBox([w.HBox(shown, layout=w.Layout(flex_flow="row wrap")), frames_view, info])
    box.add_class("tdlib-explorer")
    return box


def _leaves(widget) -> list:
    children = getattr(widget, "children", None)
    return [widget] if children is None else [x for c in children for x in _leaves(c)]


def _attr(obj) -> str:
    return (json.dumps(obj).replace("&", "&amp;").replace("'", "&#39;")
            .replace("<", "&lt;").replace(">", "&gt;"))
