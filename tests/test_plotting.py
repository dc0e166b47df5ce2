"""The book's figure style: kernels stay distinct for colour-blind readers, text is legible.

A figure with both kernels is rendered to pixels, a deuteranopia simulation is applied (the
severity-1 matrix of Machado, Oliveira and Fernandes, 2009, in linear RGB), and the two kernels'
lines must still differ in luminance as well as in dash pattern and marker.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tdlib  # noqa: E402
from tdlib import plotting  # noqa: E402

# Machado et al. (2009), deuteranomaly at severity 1.0 (deuteranopia), on linear RGB
DEUTERANOPIA = np.array([[0.367322, 0.860646, -0.227968],
                         [0.280085, 0.672501, 0.047413],
                         [-0.011820, 0.042940, 0.968881]])


def srgb_to_linear(c):
    c = np.asarray(c, dtype=float)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def simulate_deuteranopia(rgb):
    """sRGB in [0, 1] (..., 3) -> linear RGB as a deuteranope sees it, clipped to [0, 1]."""
    return np.clip(srgb_to_linear(rgb) @ DEUTERANOPIA.T, 0, 1)


def luminance(linear_rgb):
    return linear_rgb @ np.array([0.2126, 0.7152, 0.0722])


def _render_both_kernels():
    fig, ax = plt.subplots()
    t = np.arange(200)
    lines = {}
    for k, (q, c) in {"softmax": (0.97, 1.0), "gaussian": (0.95, 3.0)}.items():
        (lines[k],) = ax.semilogy(t, c * q ** t, **tdlib.kernel_style(k), label=k)
    ax.legend()
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3] / 255.0
    return fig, lines, img


def _line_pixels(fig, line, img):
    """Pixels of the rendered image that lie on the line (sampled along its path)."""
    xy = line.get_xydata()
    disp = line.axes.transData.transform(xy)
    h = img.shape[0]
    px = []
    for x, y in disp[5:-5:3]:
        i, j = int(round(h - y)), int(round(x))
        px.append(img[i - 1:i + 2, j - 1:j + 2].reshape(-1, 3))
    px = np.concatenate(px)
    # keep the coloured pixels (not the white background or grey grid that antialiasing mixes in)
    sat = px.max(1) - px.min(1)
    return px[sat > 0.25]


def test_kernels_distinct_under_deuteranopia():
    fig, lines, img = _render_both_kernels()
    try:
        seen = {}
        for k, line in lines.items():
            px = _line_pixels(fig, line, img)
            assert len(px) > 50, f"{k}: too few coloured pixels found on its line ({len(px)})"
            seen[k] = float(np.median(luminance(simulate_deuteranopia(px))))
        gap = abs(seen["softmax"] - seen["gaussian"])
        print(f"luminance under deuteranopia: {seen}, gap {gap:.3f}")
        assert gap > 0.15, f"kernels have nearly the same luminance for a deuteranope: {seen}"
        s, g = lines["softmax"], lines["gaussian"]
        assert s.get_marker() != g.get_marker(), "kernels share a marker"
        assert s.get_linestyle() != g.get_linestyle(), "kernels share a line style"
        assert s._dash_pattern != g._dash_pattern, "kernels share a dash pattern"
    finally:
        plt.close(fig)


def test_palette_colours_distinct_under_deuteranopia():
    """The two kernel colours themselves, and in plain grey scale (a black-and-white print)."""
    rgb = {k: np.array(matplotlib.colors.to_rgb(c)) for k, c in plotting.KERNEL_COLORS.items()}
    grey = {k: luminance(srgb_to_linear(v)) for k, v in rgb.items()}
    deut = {k: luminance(simulate_deuteranopia(v)) for k, v in rgb.items()}
    assert abs(grey["softmax"] - grey["gaussian"]) > 0.15
    assert abs(deut["softmax"] - deut["gaussian"]) > 0.15


def test_simulation_matrix_keeps_grey():
    # rows of the Machado matrices sum to 1: greys stay grey
    assert np.allclose(DEUTERANOPIA.sum(1), 1, atol=1e-5)
    # and it merges red and green: pure red and pure green end up close in hue
    r, g = simulate_deuteranopia(np.array([1.0, 0, 0])), simulate_deuteranopia(np.array([0, 1.0, 0]))
    assert np.argmax(r) == np.argmax(g)


def test_kernel_style_options():
    assert tdlib.kernel_style("unknown") == {}
    s = tdlib.kernel_style("gaussian", line=False, markevery=None)
    assert "linestyle" not in s and "markevery" not in s and s["marker"] == "o"
    assert "marker" not in tdlib.kernel_style("softmax", marker=False)


def test_default_figure_is_column_width_and_text_legible():
    fig = plt.figure()
    try:
        w_px = fig.get_figwidth() * fig.dpi
        assert abs(w_px - 688) < 2, f"default figure is {w_px:.0f} px wide, the column is 688 px"
    finally:
        plt.close(fig)
    rc = matplotlib.rcParams
    for key in ("font.size", "axes.labelsize", "xtick.labelsize", "ytick.labelsize", "legend.fontsize"):
        size = matplotlib.font_manager.FontProperties(size=rc[key]).get_size_in_points()
        assert size * rc["figure.dpi"] / 72 >= 14, f"{key} = {size} pt is below 14 px"


@pytest.mark.parametrize("draw", ["zeroloss", "query", "counterexample"])
def test_draw_functions_fit_the_column(draw):
    """The chapters' interactive figures are drawn at the column width, and their text is at
    least the small size."""
    if draw == "zeroloss":
        from tdlib import zeroloss
        fig = zeroloss.draw(steps=20)
    elif draw == "query":
        from tdlib import query
        query.draw(steps=10)
        fig = plt.gcf()
    else:
        from tdlib import counterexample
        fig = counterexample.draw(steps=20)
    try:
        assert fig.get_figwidth() * fig.dpi <= 690
        fig.canvas.draw()
        small = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]
        assert min(small) >= plotting.SMALL - 1e-9, f"text of {min(small)} pt in {draw}.draw"
    finally:
        plt.close(fig)
