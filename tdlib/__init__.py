"""tdlib: the small library behind the book on gradient-descent dynamics of one attention layer.

Core modules, imported with the package: :mod:`tdlib.attention` (kernels and the layer),
:mod:`tdlib.train` (full-batch GD), :mod:`tdlib.data` (synthetic data), :mod:`tdlib.plotting`
(the book's figure style), :mod:`tdlib.checks` (input validation), :mod:`tdlib.widgets`
(interactive cells), :mod:`tdlib.book` (glued numbers and stored results).

One module per chapter, imported on demand (``from tdlib import zeroloss``):
:mod:`tdlib.zeroloss` (*Gradient descent reaches zero loss*), :mod:`tdlib.joint` (*Joint
training*), :mod:`tdlib.counterexample`
(*The Softmax local-minimum counterexample*), :mod:`tdlib.query` and :mod:`tdlib.phase`
(*Gaussian attention and query-only training*; ``python -m tdlib.phase``), and for the
experiments :mod:`tdlib.text`, :mod:`tdlib.pathfinder`, :mod:`tdlib.transformer`,
:mod:`tdlib.experiments` (``python -m tdlib.experiments``) and :mod:`tdlib.landscape`.
"""
from .attention import (
    KERNEL_NAMES,
    KERNELS,
    PARAMS,
    AttentionLayer,
    gaussian_kernel,
    make_kernel,
    register_kernel,
    softmax_kernel,
)
from .data import random_data, random_inputs, teacher_data
from .plotting import KERNEL_COLORS, KERNEL_STYLES, kernel_color, kernel_style, new_axes, use_style
from .train import DivergenceError, History, train

__version__ = "0.6.0"

use_style()

__all__ = [
    "KERNEL_NAMES", "KERNELS", "PARAMS", "AttentionLayer", "gaussian_kernel", "make_kernel", "register_kernel",
    "softmax_kernel", "random_data", "random_inputs", "teacher_data", "KERNEL_COLORS", "KERNEL_STYLES",
    "kernel_color", "kernel_style", "new_axes", "use_style", "DivergenceError", "History", "train",
]
