"""tdlib: the small library behind the book on gradient-descent dynamics of one attention layer.

Modules: :mod:`tdlib.attention` (kernels and the layer), :mod:`tdlib.train` (full-batch GD),
:mod:`tdlib.data` (synthetic data), :mod:`tdlib.plotting` (the book's figure style),
:mod:`tdlib.checks` (input validation).
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
