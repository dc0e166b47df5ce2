"""One plotting style for every figure of the book.

Figures have an opaque white face so they read the same on the light and the dark page theme;
axis labels are lower case and figures carry captions in the text rather than titles.
"""
from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt

KERNEL_COLORS = {"softmax": "#d95f02", "gaussian": "#1b9e77"}
"""Colour of each kernel in every figure (colour-blind safe pair); other kernels cycle."""

PALETTE = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]

STYLE = {
    "figure.figsize": (6.0, 3.6),
    "figure.dpi": 110,
    "savefig.dpi": 110,
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
    "font.size": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "lines.linewidth": 1.8,
    "image.cmap": "viridis",
    "figure.constrained_layout.use": True,
}


def use_style() -> None:
    """Apply the book's matplotlib style (called on ``import tdlib``)."""
    mpl.rcParams.update(STYLE)


def kernel_color(name: str) -> str | None:
    """The book's colour for a kernel name (``None`` lets matplotlib choose)."""
    return KERNEL_COLORS.get(name)


def new_axes(ncols: int = 1, nrows: int = 1, width: float | None = None, height: float | None = None, **kw):
    """A figure with a grid of axes; returns one axes or an array of them."""
    w = width or STYLE["figure.figsize"][0] * (1 if ncols == 1 else 0.55 * ncols)
    h = height or STYLE["figure.figsize"][1] * (1 if nrows == 1 else 0.8 * nrows)
    _, axes = plt.subplots(nrows, ncols, figsize=(w, h), squeeze=True, **kw)
    return axes


def heatmap(ax, M, title_label: str | None = None, vmin=None, vmax=None, cmap="viridis", colorbar=True):
    """Show a matrix (e.g. an attention matrix) with token indices on both axes."""
    import numpy as np

    M = np.asarray(M)
    im = ax.imshow(M, vmin=vmin, vmax=vmax, cmap=cmap)
    ax.grid(False)
    ax.set_xlabel("key token $j$")
    ax.set_ylabel("query token $k$")
    if title_label:
        ax.set_title(title_label, fontsize=10)
    if colorbar:
        plt.colorbar(im, ax=ax, shrink=0.8)
    return im
