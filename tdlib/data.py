"""Synthetic inputs and targets for the theory chapters (random and teacher-made).

All functions return ``X`` of shape ``(N, n, D)`` and ``Y`` of shape ``(N, n, d_out)`` as float64
tensors (unless ``dtype`` says otherwise), drawn from ``seed``.
"""
from __future__ import annotations

import torch

from .attention import AttentionLayer
from .checks import check_int, check_positive, check_seed


def _check_dtype(dtype) -> torch.dtype:
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def random_inputs(N: int, n: int, D: int, scale: float = 1.0, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Tokens with i.i.d. ``N(0, scale^2 / D)`` entries, so each token has norm about ``scale``."""
    N, n, D = (check_int(k, v) for k, v in (("N", N), ("n", n), ("D", D)))
    scale = check_positive("scale", scale)
    seed = check_seed("seed", seed)
    dtype = _check_dtype(dtype)
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(N, n, D, generator=g, dtype=torch.float64).mul_(scale / D**0.5).to(dtype)


def random_data(N: int, n: int, D: int, d_out: int = 1, x_scale: float = 1.0, y_scale: float = 1.0,
                seed: int = 0, dtype=torch.float64):
    """Random inputs and independent ``N(0, y_scale^2)`` targets: ``(X, Y)``."""
    d_out = check_int("d_out", d_out)
    y_scale = check_positive("y_scale", y_scale)
    x_scale = check_positive("x_scale", x_scale)
    X = random_inputs(N, n, D, x_scale, seed, dtype)
    g = torch.Generator().manual_seed(int(seed) + 7919)
    Y = torch.randn(N, n, d_out, generator=g, dtype=torch.float64).mul_(y_scale).to(dtype)
    return X, Y


def teacher_data(N: int, n: int, D: int, kernel: str = "softmax", H: int = 1, d: int | None = None,
                 d_out: int = 1, x_scale: float = 1.0, w_scale: float = 1.0, seed: int = 0,
                 kernel_options=None, dtype=torch.float64):
    """Targets produced by a random "teacher" layer of the given kernel: ``(X, Y, teacher)``.

    Zero loss is then attainable by construction (the teacher's own weights reach it).
    """
    x_scale = check_positive("x_scale", x_scale)
    w_scale = check_positive("w_scale", w_scale)
    X = random_inputs(N, n, D, x_scale, seed, dtype)
    teacher = AttentionLayer(D, H=H, d=d, d_out=d_out, kernel=kernel, kernel_options=kernel_options,
                             scale=w_scale, seed=int(seed) + 104729, dtype=dtype)
    with torch.no_grad():
        Y = teacher(X)
    return X, Y, teacher
