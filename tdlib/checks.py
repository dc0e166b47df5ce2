"""Input checks used at tdlib's public entry points.

Every error says what was expected and what was given, so a reader can fix the call
without reading tdlib's source.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch


def _shape(x) -> tuple:
    return tuple(getattr(x, "shape", ()))


def as_tensor(name: str, x, *, dtype=None, device=None) -> torch.Tensor:
    """Convert ``x`` (tensor, array or nested list) to a floating tensor, or explain why not."""
    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except Exception as exc:  # pragma: no cover - message is the point
            raise TypeError(
                f"{name}: expected a tensor or array of numbers, got {type(x).__name__} ({exc})"
            ) from None
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.bool)):
        raise TypeError(f"{name}: expected real numbers, got dtype {t.dtype}")
    if dtype is not None or not t.is_floating_point():
        t = t.to(dtype or torch.get_default_dtype())
    if device is not None:
        t = t.to(device)
    return t


def check_rank(name: str, x: torch.Tensor, rank: int, axes: str) -> None:
    """Require ``x.ndim == rank``; ``axes`` names the axes, e.g. ``"(N, n, D)"``."""
    if x.ndim != rank:
        raise ValueError(
            f"{name}: expected a {rank}-d array of shape {axes}, got shape {_shape(x)}"
        )


def check_finite(name: str, x: torch.Tensor) -> None:
    """Reject NaN and infinite entries, saying how many there are."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{name}: expected finite numbers, found {int(bad.sum())} NaN/Inf "
            f"entries (first at index {idx})"
        )


def check_positive(name: str, value: float, *, strict: bool = True) -> float:
    """Require a (strictly) positive finite number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a number, got {value!r}") from None
    ok = math.isfinite(v) and (v > 0 if strict else v >= 0)
    if not ok:
        want = "a positive" if strict else "a non-negative"
        raise ValueError(f"{name}: expected {want} finite number, got {value!r}")
    return v


def check_int(name: str, value, *, minimum: int = 1) -> int:
    """Require an integer at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def check_choice(name: str, value, choices: Sequence) -> None:
    """Require ``value`` to be one of ``choices``."""
    if value not in choices:
        known = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}: expected one of {known}, got {value!r}")
