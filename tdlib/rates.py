"""Fitted rates: how fast a sequence of losses shrinks per step.

A loss that decays *linearly* (geometrically) satisfies ``f_t ~ C q^t``; on a log scale it is a
straight line of slope ``log q``. :func:`fit_rate` fits that line by least squares and returns the
factor ``q`` per step with the quality of the fit, so that every chapter measures a rate the same
way and the prose can compare it with a theorem's guaranteed factor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checks import check_real, real_array


@dataclass(frozen=True)
class RateFit:
    """A straight line ``log(f_t - f_*) = log_c + t log(factor)`` fitted on steps ``t``."""

    factor: float
    """fitted factor per step ``q`` (below 1 for a decaying sequence)"""
    log_c: float
    """intercept of the line at ``t = 0``"""
    r2: float
    """coefficient of determination of the line on the fitted steps (1 for an exact geometric
    sequence)"""
    first: int
    """first step used"""
    steps: int
    """number of steps used"""

    def predict(self, t) -> np.ndarray:
        """The fitted geometric sequence at steps ``t``."""
        return np.exp(self.log_c) * self.factor ** np.asarray(t, dtype=float)


def fit_rate(values, *, f_star: float = 0.0, start: int | float | None = None,
             tail: int | None = None) -> RateFit:
    """Fit ``values[t] - f_star ~ C q^t`` by least squares on the log scale.

    Parameters
    ----------
    values : sequence of floats, e.g. ``History.loss``
    f_star : the limit subtracted first (the minimum loss; 0 above the zero-loss threshold)
    start  : first step used: an int, or a float in ``[0, 1)`` for a fraction of the run (``0.2``
             skips the first fifth, the transient); default 0
    tail   : use only the last ``tail`` usable entries instead (exclusive with ``start``)

    Entries with ``values[t] - f_star <= 0`` (a run that reached its limit exactly) are dropped:
    they have no logarithm. At least two usable steps are needed.
    """
    v = real_array("values", values, "a 1-d sequence of losses")
    if v.ndim != 1:
        raise ValueError(f"values: expected a 1-d sequence of losses, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("values: expected finite losses, got NaN or infinity")
    f_star = check_real("f_star", f_star)
    if isinstance(start, (bool, np.bool_)) or isinstance(tail, (bool, np.bool_)):
        raise TypeError(f"start, tail: expected an int (or a fraction for start), got "
                        f"start={start!r}, tail={tail!r}")
    if start is not None and tail is not None:
        raise ValueError(f"start and tail: give at most one, got start={start!r}, tail={tail!r}")
    t = np.arange(len(v))
    if start is not None:
        if isinstance(start, float) and 0 <= start < 1:
            first = int(len(v) * start)
        elif isinstance(start, (int, np.integer)) and 0 <= start < len(v):
            first = int(start)
        else:
            raise ValueError(f"start: expected an int step in [0, {len(v)}) or a fraction in "
                             f"[0, 1), got {start!r}")
        t = t[first:]
    excess = v[t] - f_star
    keep = excess > 0
    t, excess = t[keep], excess[keep]
    if tail is not None:
        if not isinstance(tail, (int, np.integer)) or tail < 2:
            raise ValueError(f"tail: expected an int >= 2, got {tail!r}")
        t, excess = t[-tail:], excess[-tail:]
    if len(t) < 2:
        raise ValueError(f"values: expected at least two steps with values above "
                         f"f_star={f_star}, got {len(t)}")
    y = np.log(excess)
    slope, icpt = np.polyfit(t, y, 1)
    resid = y - (slope * t + icpt)
    var = float(np.var(y))
    r2 = 1.0 - float(np.var(resid)) / var if var > 0 else 1.0
    return RateFit(factor=float(np.exp(slope)), log_c=float(icpt), r2=r2, first=int(t[0]),
                   steps=int(len(t)))
