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
        except Exception:  # pragma: no cover - message is the point
            raise TypeError(
                f"{name}: expected a tensor or array of numbers, got {type(x).__name__} "
                f"{str(x)[:60]!r}"
            ) from None
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name}: expected real numbers, got dtype {t.dtype}")
    if dtype is not None or not t.is_floating_point():
        t = t.to(dtype or torch.get_default_dtype())
    if device is not None:
        t = t.to(device)
    return t


def as_array(name: str, x, axes: str, *, dtype=torch.float64) -> torch.Tensor:
    """``x`` as a non-empty, finite floating tensor whose rank is the number of axes named in
    ``axes`` (e.g. ``"(n, d_out)"``; ``"()"`` for a number), or a clear error."""
    t = as_tensor(name, x, dtype=dtype)
    compact = axes.replace(" ", "")
    rank = 0 if compact == "()" else compact.count(",") + 1 - compact.endswith(",)")
    check_rank(name, t, rank, axes)
    if t.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty array of shape {axes}, got shape "
                         f"{_shape(t)}")
    check_finite(name, t)
    return t


def real_array(name: str, x, want: str = "an array of real numbers", *,
               bools: bool = False) -> np.ndarray:
    """``x`` (array, tensor or nested list) as a float64 NumPy array, or a ``TypeError`` that
    says ``want``: complex entries (whose imaginary part ``np.asarray(x, dtype=float)`` drops
    with a mere warning), strings, ``None`` and, unless ``bools``, booleans are refused. Shape
    and finiteness are left to the caller."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        kind = "c" if x.is_complex() else "b" if x.dtype == torch.bool else "f"
    else:
        try:
            kind = np.asarray(x).dtype.kind
        except Exception:  # ragged lists and other objects numpy cannot hold
            kind = "O"
    if kind not in "fiu" + ("b" if bools else ""):
        raise TypeError(f"{name}: expected {want}, got {type(x).__name__} {str(x)[:60]!r}")
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected {want}, got {type(x).__name__} "
                        f"{str(x)[:60]!r}") from None


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


def _number(name: str, value, want: str) -> float:
    """``value`` as a float if it is a real number (not a bool, a string or an array)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype.is_complex \
            and value.dtype != torch.bool:
        value = value.item()
    elif isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"{name}: expected {want}, got {value!r} ({type(value).__name__})")
    return float(value)


def check_real(name: str, value) -> float:
    """Require a finite real number (not a bool, a string, NaN or an infinity)."""
    v = _number(name, value, "a finite real number")
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite real number, got {value!r}")
    return v


def check_positive(name: str, value: float, *, strict: bool = True) -> float:
    """Require a (strictly) positive finite number (not a bool or a string)."""
    want = "a positive" if strict else "a non-negative"
    v = _number(name, value, f"{want} finite number")
    ok = math.isfinite(v) and (v > 0 if strict else v >= 0)
    if not ok:
        raise ValueError(f"{name}: expected {want} finite number, got {value!r}")
    return v


def check_between(name: str, value, lo: float, hi: float, *, what: str = "a number",
                  lo_open: bool = False, hi_open: bool = False) -> float:
    """Require a real number in the interval from ``lo`` to ``hi`` (ends closed unless
    ``lo_open`` / ``hi_open``), e.g. an accuracy in ``[0, 1]`` or a p-value in ``(0, 1]``."""
    span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    v = _number(name, value, f"{what} in {span}")
    ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not (math.isfinite(v) and ok):
        raise ValueError(f"{name}: expected {what} in {span}, got {value!r}")
    return v


def check_int(name: str, value, *, minimum: int = 1) -> int:
    """Require an integer at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


SEED_LIMIT = 2**63
"""Seeds are integers in ``[0, 2^63)``: torch's generators take at most 64 bits, NumPy's and
the standard library's any size; one rule keeps every seed usable by all three."""


def check_seed(name: str, value) -> int:
    """Require a seed: an integer in ``[0, 2^63)``."""
    v = check_int(name, value, minimum=0)
    if v >= SEED_LIMIT:
        raise ValueError(f"{name}: expected an integer seed in [0, 2^63), got {value}")
    return v


def check_flag(name: str, value) -> bool:
    """Require ``True`` or ``False`` (not 1, "yes" or None)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_text(name: str, value, want: str = "a non-empty string") -> str:
    """Require a non-empty string (a name, a label, a command)."""
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name}: expected {want}, got {value!r} ({type(value).__name__})")
    return value


def check_instance(name: str, value, cls, want: str):
    """Require an instance of ``cls`` (``want`` says it in words, e.g. "a torch.nn.Module")."""
    if not isinstance(value, cls):
        raise TypeError(f"{name}: expected {want}, got {type(value).__name__} "
                        f"{str(value)[:40]!r}")
    return value


def check_choice(name: str, value, choices: Sequence) -> None:
    """Require ``value`` to be one of ``choices``."""
    if value not in choices:
        known = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}: expected one of {known}, got {value!r}")
