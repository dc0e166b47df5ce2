"""tdlib: the small library behind the book on gradient-descent dynamics of one attention layer.

Core modules, imported with the package: :mod:`tdlib.attention` (kernels and the layer),
:mod:`tdlib.train` (full-batch GD), :mod:`tdlib.data` (synthetic data), :mod:`tdlib.plotting`
(the book's figure style), :mod:`tdlib.checks` (input validation), :mod:`tdlib.widgets`.

Chapter modules, imported on demand (``from tdlib import theory``): :mod:`tdlib.theory`
(feature matrix, rates, PL certificates), :mod:`tdlib.counterexample` (certified Softmax local
minima), :mod:`tdlib.query` (query-only training and its certificates), :mod:`tdlib.phase`
(phase-diagram sweep, ``python -m tdlib.phase``), :mod:`tdlib.text`, :mod:`tdlib.pathfinder`,
:mod:`tdlib.transformer`, :mod:`tdlib.experiments` (``python -m tdlib.experiments``),
:mod:`tdlib.landscape`.
"""
from .attention import (
    KERNELS,
    PARAMS,
    AttentionLayer,
    gaussian_kernel,
    make_kernel,
    register_kernel,
    softmax_kernel,
)
from .data import random_data, random_inputs, teacher_data
from .plotting import KERNEL_COLORS, kernel_color, new_axes, use_style
from .train import DivergenceError, History, train

__version__ = "0.1.0"

use_style()

__all__ = [
    "KERNELS", "PARAMS", "AttentionLayer", "gaussian_kernel", "make_kernel", "register_kernel",
    "softmax_kernel", "random_data", "random_inputs", "teacher_data", "KERNEL_COLORS",
    "kernel_color", "new_axes", "use_style", "DivergenceError", "History", "train",
]
