"""One plotting style for every figure of the book.

Figures are drawn at the width they are shown: the book's text column is about 688 px wide on a
1280 px screen, so the default figure is :data:`WIDTH` inches at :data:`DPI` dots per inch
(688 px), and every text in a figure is at least :data:`SMALL` points, which at that size is at
least as large as the small print of the page (14 px). Figures have an opaque white face so they
read the same on the light and the dark page theme; axis labels are lower case and figures carry
captions in the text rather than titles.

Each kernel has a colour *and* a line style and marker (:func:`kernel_style`), chosen so that the
two kernels stay distinct in grey scale and for colour-blind readers: Okabe and Ito's blue and
orange differ in luminance and keep their difference under a deuteranopia simulation
(``tests/test_plotting.py`` checks it on a rendered figure).
"""
from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt

from .checks import as_array, check_flag, check_instance, check_int, check_positive, check_real

#: Width of the text column in inches at :data:`DPI` (688 px).
WIDTH = 6.88
#: Dots per inch of every figure: one figure inch is 100 px on the page.
DPI = 100
#: Smallest font size (points) of any text in a figure: 10.5 pt = 14.6 px at :data:`DPI`.
SMALL = 10.5

KERNEL_STYLES = {
    "softmax": {"color": "#E69F00", "linestyle": (0, (5, 2)), "marker": "s"},
    "gaussian": {"color": "#0072B2", "linestyle": "-", "marker": "o"},
    "l2": {"color": "#009E73", "linestyle": (0, (1, 1)), "marker": "^"},
    "sigmoid-logn": {"color": "#CC79A7", "linestyle": (0, (3, 1, 1, 1)), "marker": "D"},
    "relu-n": {"color": "#D55E00", "linestyle": (0, (8, 2)), "marker": "v"},
    "linear-n": {"color": "#666666", "linestyle": "-", "marker": "x"},
}
"""Colour, line style and marker of each kernel in every figure (Okabe-Ito orange and blue)."""

KERNEL_COLORS = {k: v["color"] for k, v in KERNEL_STYLES.items()}
"""Colour of each kernel (see :data:`KERNEL_STYLES`); other kernels cycle."""

# Okabe-Ito's colour-blind-safe palette (black left out: it is the text colour)
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#666666"]

STYLE = {
    "figure.figsize": (WIDTH, 3.2),
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
    "axes.edgecolor": "#333333",
    "axes.labelcolor": "#222222",
    "xtick.color": "#333333",
    "ytick.color": "#333333",
    "text.color": "#222222",
    "axes.grid": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": mpl.cycler(color=PALETTE),
    "font.size": 11,
    "axes.labelsize": 11,
    "axes.titlesize": 11,
    "xtick.labelsize": SMALL,
    "ytick.labelsize": SMALL,
    "legend.fontsize": SMALL,
    "legend.title_fontsize": SMALL,
    "figure.titlesize": 11,
    "legend.frameon": False,
    "lines.linewidth": 1.8,
    "lines.markersize": 5,
    "image.cmap": "viridis",
    "figure.constrained_layout.use": True,
}


def use_style() -> None:
    """Apply the book's matplotlib style (called on ``import tdlib``)."""
    mpl.rcParams.update(STYLE)
    share_math_parser()


_SHARED_PARSER = None


def share_math_parser() -> None:
    """Let every Agg renderer use one math-text parser, so that its cache lasts the session.

    Matplotlib gives each new figure a new renderer and each renderer a new parser with an empty
    cache, so every redraw parses the tick labels of a log axis (``10^-5``...) again: that was
    about a third of an interactive redraw. The parser's result depends only on the text, dpi and
    font, so sharing it changes no pixel.
    """
    global _SHARED_PARSER
    from matplotlib.backends import backend_agg
    from matplotlib.mathtext import MathTextParser

    if _SHARED_PARSER is not None:
        return
    _SHARED_PARSER = MathTextParser("path")
    init = backend_agg.RendererAgg.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.mathtext_parser = _SHARED_PARSER

    backend_agg.RendererAgg.__init__ = __init__


def kernel_color(name: str) -> str | None:
    """The book's colour for a kernel name (``None`` lets matplotlib choose)."""
    check_instance("name", name, str, "a kernel name (a string)")
    return KERNEL_COLORS.get(name)


def kernel_style(name: str, *, line: bool = True, marker: bool = True, markevery=0.1) -> dict:
    """Keyword arguments for ``ax.plot`` that draw kernel ``name`` in the book's style.

    ``line=False`` leaves the line style to the caller (e.g. a dotted bound in the kernel's
    colour); ``marker=False`` drops the marker; markers sit every ``markevery`` (a fraction of
    the axes diagonal, as matplotlib reads a float) so dense curves stay legible, or at every
    point with ``markevery=None``. An unknown
    kernel gets no keywords at all (matplotlib's cycle decides).
    """
    check_instance("name", name, str, "a kernel name (a string)")
    check_flag("line", line)
    check_flag("marker", marker)
    if markevery is not None:
        if isinstance(markevery, int) and not isinstance(markevery, bool):
            check_int("markevery", markevery)
        else:
            check_positive("markevery", markevery)
    style = KERNEL_STYLES.get(name)
    if style is None:
        return {}
    out = {"color": style["color"]}
    if line:
        out["linestyle"] = style["linestyle"]
    if marker:
        out["marker"] = style["marker"]
        if markevery is not None:          # None: a marker at every point (scatter-like data)
            out["markevery"] = markevery
    return out


def new_axes(ncols: int = 1, nrows: int = 1, width: float | None = None, height: float | None = None, **kw):
    """A figure with a grid of axes, as wide as the text column; returns one axes or an array."""
    ncols, nrows = check_int("ncols", ncols), check_int("nrows", nrows)
    if width is not None:
        check_positive("width", width)
    if height is not None:
        check_positive("height", height)
    w = width or WIDTH
    h = height or STYLE["figure.figsize"][1] * (1 if nrows == 1 else 0.85 * nrows)
    _, axes = plt.subplots(nrows, ncols, figsize=(w, h), squeeze=True, **kw)
    return axes


def heatmap(ax, M, title_label: str | None = None, vmin=None, vmax=None, cmap="viridis", colorbar=True):
    """Show a matrix ``M`` (e.g. an attention matrix, shape ``(n, n)``, finite) with token
    indices on both axes."""
    from matplotlib.axes import Axes

    check_instance("ax", ax, Axes, "matplotlib axes (e.g. from new_axes())")
    M = as_array("M", M, "(n_queries, n_keys)").numpy()
    for name, v in (("vmin", vmin), ("vmax", vmax)):
        if v is not None:
            check_real(name, v)
    check_flag("colorbar", colorbar)
    im = ax.imshow(M, vmin=vmin, vmax=vmax, cmap=cmap)
    ax.grid(False)
    ax.set_xlabel("key token $j$")
    ax.set_ylabel("query token $\\ell$")
    if title_label:
        ax.set_title(title_label)
    if colorbar:
        plt.colorbar(im, ax=ax, shrink=0.8)
    return im
