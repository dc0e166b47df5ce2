"""Interactive cells: ipywidgets controls in front of a pure drawing function.

Every interactive cell is built the same way: a pure function ``draw(**values)`` that makes one
matplotlib figure from the knob values (fast: under a second on two cores), and
:func:`explorer`, which puts ipywidgets controls in front of it. The pure function is what the
benchmarks time, and what the page calls once at the default values to show a static figure.
"""
from __future__ import annotations

from typing import Callable


def explorer(draw: Callable[..., object], **controls):
    """Controls (ipywidgets) on top of the output of ``draw(**values)``; returns the widget box.

    ``controls`` maps each keyword of ``draw`` to an ipywidgets control, e.g.
    ``D=IntSlider(value=24, min=4, max=64)``. The figure is redrawn whenever a control changes.
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt

    out = w.interactive_output(_drawer(draw, plt), controls)
    box = w.VBox([w.HBox(list(controls.values()), layout=w.Layout(flex_flow="row wrap")), out])
    return box


def _drawer(draw, plt):
    def run(**values):
        draw(**values)
        plt.show()

    return run
