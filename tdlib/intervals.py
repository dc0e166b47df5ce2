"""Interval arithmetic with controlled rounding: exact rational intervals for the sign of
``g'`` on a one-dimensional Softmax problem, and vectorised float64 boxes rounded outward
(:class:`Box`) for the certificates of the Gaussian and phase-diagram chapters.

The setting of the chapter *The Softmax local-minimum counterexample*: one scalar query
``s``, integer keys ``k_1..k_n``, value rows ``v_j`` (shape ``(n, d_out)``), weights
``p(s) = softmax(s k)``, output ``o(s) = sum_j p_j v_j`` and the per-query loss ``g(s) =
1/2 ||o(s) - y||^2`` with the target ``y = o(s_t)`` made by a target query ``s_t``.

With integer keys the weights become polynomials after a change of variable: for ``s >=
0`` put ``t = e^{-s}`` in ``(0, 1]``, so ``p_j`` is proportional to ``t^{k_max - k_j}``;
for ``s <= 0`` put ``u = e^{s}``, so ``p_j`` is proportional to ``u^{k_j - k_min}``.
Writing ``N = sum_j w_j v_j`` and ``Z = sum_j w_j`` for those polynomial weights
``w_j``,

    (o - y) . do/dx = P(x) / Z(x)^3,     P = (N - y Z) . (N' Z - N Z'),

and ``ds = -dt / t``, ``ds = du / u`` give ``sign g'(s) = -sign P(t)`` for ``s > 0`` and
``sign g'(s) = sign P(u)`` for ``s < 0``. :func:`sign_certificate` counts and brackets
the zeros of ``P`` on ``[0, 1]`` by adaptive bisection with exact rational interval
arithmetic (``fractions.Fraction`` endpoints, so there is no rounding at all): on each
piece either ``P`` has a strict sign, or ``P'`` has a strict sign and the signs of ``P``
at the two ends decide whether the piece holds exactly one zero or none. The only non-
rational number, ``e^{s_t k_j}``, is enclosed by its Taylor series with an explicit
remainder. The result is a proof, not an estimate.

:class:`Box` holds arrays ``lo <= hi`` of float64 numbers and rounds every operation outward
(one unit in the last place, ``exp`` and ``log`` widened further), so a formula evaluated on
boxes from exact float inputs encloses its exact real value: fast enough for the millions of
cubes of :func:`tdlib.separation.sublevel_certificate`, and a proof all the same.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import List, Sequence, Tuple

import numpy as np

from .checks import as_array, check_int, check_real

__all__ = ["Interval", "exp_enclosure", "sign_certificate", "SignCertificate",
           "curvature_bound", "Box", "E_BOX", "EPS", "LIBM_SLACK"]


@dataclass(frozen=True)
class Interval:
    """A closed interval ``[lo, hi]`` of rationals with exact arithmetic."""

    lo: Fraction
    hi: Fraction

    def __post_init__(self):
        if self.lo > self.hi:
            raise ValueError(f"Interval: expected lo <= hi, got [{self.lo}, {self.hi}]")

    @staticmethod
    def point(x) -> "Interval":
        """The degenerate interval ``[x, x]``."""
        x = Fraction(x)
        return Interval(x, x)

    def __add__(self, other):
        other = _iv(other)
        return Interval(self.lo + other.lo, self.hi + other.hi)

    __radd__ = __add__

    def __neg__(self):
        return Interval(-self.hi, -self.lo)

    def __sub__(self, other):
        return self + (-_iv(other))

    def __rsub__(self, other):
        return _iv(other) - self

    def __mul__(self, other):
        other = _iv(other)
        lo, hi = self.lo, self.hi
        c = (lo * other.lo, lo * other.hi, hi * other.lo, hi * other.hi)
        return Interval(min(c), max(c))

    __rmul__ = __mul__

    def inverse(self) -> "Interval":
        """``1 / x`` over the interval (which must not contain 0)."""
        if self.lo <= 0 <= self.hi:
            raise ZeroDivisionError(f"Interval: cannot invert [{self.lo}, {self.hi}]")
        return Interval(1 / self.hi, 1 / self.lo)

    def __truediv__(self, other):
        return self * _iv(other).inverse()

    @property
    def sign(self) -> int:
        """``+1`` or ``-1`` if every element has that strict sign, else ``0``."""
        return 1 if self.lo > 0 else (-1 if self.hi < 0 else 0)

    def rounded(self, bits: int = 96) -> "Interval":
        """An outward rounding to dyadic endpoints (keeps the numbers short)."""
        s = 2**bits
        lo, hi = math.floor(self.lo * s), math.ceil(self.hi * s)
        return Interval(Fraction(lo, s), Fraction(hi, s))


def _iv(x) -> Interval:
    return x if isinstance(x, Interval) else Interval.point(x)


def exp_enclosure(x, terms: int = 60) -> Interval:
    """An interval containing ``e^x`` for a rational ``x`` (Taylor series, remainder).

    For ``a = |x|`` and ``K + 2 > a``, the tail of ``sum a^k / k!`` after ``K`` terms
    is at most ``a^{K+1} / (K+1)! / (1 - a / (K+2))``; ``e^{-a}`` is the reciprocal
    interval.
    """
    if not isinstance(x, Fraction):
        x = Fraction(check_real("x", x))
    terms = check_int("terms", terms, minimum=0)
    a = abs(x)
    if not terms + 2 > 2 * a:
        raise ValueError(f"terms: expected terms + 2 > 2|x|, got terms={terms}, x={float(x)}")
    s, term = Fraction(0), Fraction(1)
    for k in range(terms + 1):
        s += term
        term = term * a / (k + 1)      # a^{k+1} / (k+1)!
    tail = term / (1 - a / (terms + 2))
    e = Interval(s, s + tail)
    return e if x >= 0 else e.inverse()


# polynomials: lists of coefficients (constant term first) whose entries are Intervals


def _padd(p, q):
    m = max(len(p), len(q))
    z = Interval.point(0)
    return [(p[i] if i < len(p) else z) + (q[i] if i < len(q) else z) for i in range(m)]


def _pmul(p, q):
    out = [Interval.point(0)] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        for j, b in enumerate(q):
            out[i + j] = out[i + j] + a * b
    return out


def _pscale(p, c):
    return [c * a for a in p]


def _pder(p):
    return [a * k for k, a in enumerate(p)][1:] or [Interval.point(0)]


def _peval(p, x: Interval) -> Interval:
    """Horner's scheme in interval arithmetic: an enclosure of ``{p(t) : t in x}``."""
    acc = p[-1]
    for a in reversed(p[:-1]):
        acc = acc * x + a
    return acc


def _side_polynomial(keys, values, y, side):
    """``P = (N - yZ).(N'Z - NZ')`` for ``side = +1`` (in ``t``) or ``-1`` (``u``)."""
    kmax, kmin = max(keys), min(keys)
    deg = [kmax - k if side > 0 else k - kmin for k in keys]
    top = max(deg)
    zero = Interval.point(0)

    def mono(j):
        return [zero] * deg[j] + [Interval.point(1)] + [zero] * (top - deg[j])

    Z = [zero] * (top + 1)
    for j in range(len(keys)):
        Z = _padd(Z, mono(j))
    P = [zero]
    for c in range(len(y)):
        N = [zero] * (top + 1)
        for j in range(len(keys)):
            N = _padd(N, _pscale(mono(j), Interval.point(values[j][c])))
        A = _padd(N, _pscale(Z, -y[c]))
        Bp = _padd(_pmul(_pder(N), Z), _pscale(_pmul(N, _pder(Z)), Interval.point(-1)))
        P = _padd(P, _pmul(A, Bp))
    return P


@dataclass
class SignCertificate:
    """The proved sign pattern of ``g'`` on the whole real line.

    ``zeros`` lists disjoint brackets ``(lo, hi)`` in ``s`` (floats rounded outward
    by one part in ``10^12``), each holding exactly one zero of ``g'``, in increasing
    order; ``signs`` has one more entry, the strict sign of ``g'`` before the first
    zero, between consecutive zeros and after the last. ``pieces`` is the number of
    interval evaluations the proof used.
    """

    zeros: List[Tuple[float, float]]
    signs: List[int]
    pieces: int

    def minima(self) -> List[Tuple[float, float]]:
        """Brackets of the zeros where ``g'`` goes from - to + (local minima)."""
        s = self.signs
        return [z for z, a, b in zip(self.zeros, s, s[1:]) if a < 0 < b]

    def maxima(self) -> List[Tuple[float, float]]:
        """Brackets of the zeros where ``g'`` goes from + to - (local maxima)."""
        s = self.signs
        return [z for z, a, b in zip(self.zeros, s, s[1:]) if a > 0 > b]

    def __str__(self) -> str:
        # one line per interval of constant sign, so that the report fits a narrow column
        sym = {1: "+", -1: "-"}
        lines = [f"sign of g' on the real line ({len(self.zeros)} zeros; "
                 f"{self.pieces} exact interval evaluations):"]
        ends = [f"up to the zero in [{lo:.6f}, {hi:.6f}]" for lo, hi in self.zeros]
        for s, end in zip(self.signs, ends + ["up to +infinity"]):
            lines.append(f"  {sym[s]}  {end}")
        return "\n".join(lines)


def _isolate(P, max_depth: int = 80):
    """Sign pattern of ``P`` on ``(0, 1]``: ``(zero brackets, signs, pieces)``."""
    dP = _pder(P)
    pieces = 0
    todo = [(Fraction(0), Fraction(1), 0)]
    out = []  # (a, b, sign at a, sign at b): equal signs, or one simple zero in between
    while todo:
        a, b, depth = todo.pop()
        x = Interval(a, b)
        pieces += 1
        s = _peval(P, x).sign
        if s:
            out.append((a, b, s, s))
            continue
        if _peval(dP, x).sign:
            sa = _peval(P, Interval.point(a)).sign
            sb = _peval(P, Interval.point(b)).sign
            pieces += 2
            if sa and sb and sa != sb:
                out.append((a, b, sa, sb))  # exactly one simple zero
                continue
        if depth >= max_depth:
            raise ArithmeticError(
                f"sign_certificate: could not decide the sign of P near "
                f"[{float(a)}, {float(b)}] "
                f"(a multiple zero, or a zero at an end of the range?)")
        m = (a + b) / 2
        todo += [(m, b, depth + 1), (a, m, depth + 1)]
    out.sort(key=lambda piece: piece[0])
    zeros, signs = [], []
    for a, b, left, right in out:
        if not signs:
            signs.append(left)
        elif signs[-1] != left:
            raise ArithmeticError(
                "sign_certificate: sign changed without a bracketed zero")
        if left != right:
            # P is monotone on [a, b]: bisection on the sign of P is exact
            while b - a > Fraction(1, 2**52):
                m = (a + b) / 2
                sm = _peval(P, Interval.point(m)).sign
                pieces += 1
                if sm == 0:
                    break
                a, b = (m, b) if sm == left else (a, m)
            zeros.append((a, b))
            signs.append(right)
    return zeros, signs, pieces


def sign_certificate(keys: Sequence[int], values, target_query) -> SignCertificate:
    """Prove the sign pattern of ``g'(s)`` on all of ``R`` (see the module docstring).

    ``keys``: integers (shape ``(n,)``); ``values``: shape ``(n, d_out)``, taken exactly
    as the binary numbers given; ``target_query``: the rational ``s_t`` with
    ``y = o(s_t)`` (exact, not a rounded ``y``). Raises ``ArithmeticError`` if the sign
    cannot be decided (e.g. ``g'`` has a double zero) and ``ValueError`` for bad input.
    """
    raw = as_array("keys", keys, "(n,)").numpy()
    if not np.array_equal(raw, np.round(raw)) or len(set(raw)) != len(raw) \
            or len(raw) < 2:
        raise ValueError(f"keys: expected at least two distinct integers, got {keys}")
    keys = [int(k) for k in raw]
    values = as_array("values", values, "(n, d_out)").numpy()
    if values.shape[0] != len(keys):
        raise ValueError(f"values: expected finite numbers of shape "
                         f"({len(keys)}, d_out), got shape {values.shape}")
    V = [[Fraction(float(x)) for x in row] for row in values]
    st = target_query if isinstance(target_query, Fraction) else \
        Fraction(check_real("target_query", target_query))
    w = [exp_enclosure(st * k).rounded() for k in keys]
    Zt = sum(w[1:], w[0])
    y = []
    for c in range(values.shape[1]):
        num = sum((w[j] * V[j][c] for j in range(1, len(keys))), w[0] * V[0][c])
        y.append((num / Zt).rounded())
    zeros_s, signs_s, pieces = [], [], 0
    # s <= 0 in u = e^s (u from 0 to 1 is s from -inf to 0): sign g' = sign P
    zu, su, pu = _isolate(_side_polynomial(keys, V, y, -1))
    # s >= 0 in t = e^{-s} (t from 1 down to 0 is s from 0 to +inf): sign g' = -sign P
    zt, st_, pt = _isolate(_side_polynomial(keys, V, y, +1))
    if su[-1] != -st_[-1]:
        raise ArithmeticError("sign_certificate: the two sides disagree at s = 0")
    def pad(lo, hi):
        return lo - 1e-12 * (1 + abs(lo)), hi + 1e-12 * (1 + abs(hi))

    def log(x):
        return -math.inf if x == 0 else math.log(x)

    for a, b in zu:
        zeros_s.append(pad(log(a), log(b)))
    signs_s += su
    for a, b in reversed(zt):
        zeros_s.append(pad(-log(b), -log(a)))
    signs_s += [-s for s in reversed(st_)][1:]
    return SignCertificate(zeros_s, signs_s, pu + pt)


def curvature_bound(keys, values, target) -> float:
    """An upper bound ``ell >= sup_s |g''(s)|`` for a ``d = 1`` Softmax problem.

    With ``w = max k - min k``, ``D = max_ij ||v_i - v_j||`` and
    ``R = max_j ||v_j - y||``: ``||o'|| <= D w / (2 sqrt 2)``,
    ``||o''|| <= D w^2 / (2 sqrt 2)`` and ``||o - y|| <= R`` give
    ``ell = D^2 w^2 / 8 + R D w^2 / (2 sqrt 2)``.
    """
    k = as_array("keys", keys, "(n,)").numpy()
    V = as_array("values", values, "(n, d_out)").numpy()
    y = as_array("target", target, "(d_out,)").numpy()
    if V.shape[0] != k.shape[0] or y.shape != (V.shape[1],):
        raise ValueError(f"values, target: expected shapes ({k.shape[0]}, d_out) and (d_out,), "
                         f"got {V.shape} and {y.shape}")
    w = float(k.max() - k.min())
    D = float(np.linalg.norm(V[:, None, :] - V[None, :, :], axis=-1).max())
    R = float(np.linalg.norm(V - y, axis=-1).max())
    return (D * w) ** 2 / 8 + R * D * w**2 / (2 * math.sqrt(2))


# ---------------------------------------------------------------------------------------------
# Rounding control: float64 intervals with outward rounding
# ---------------------------------------------------------------------------------------------

EPS = 2.0**-52
"""The float64 machine epsilon (one unit in the last place at 1)."""

LIBM_SLACK = 2.0**-40
"""The relative widening of every ``exp`` and ``log`` value: about ``2^12`` units in the last
place, far above the error of the float64 ``exp`` and ``log`` of numpy and the C library (a
few units at most; the tests compare them with 50-digit values)."""


def _dn(x):
    return np.nextafter(x, -np.inf)


def _up(x):
    return np.nextafter(x, np.inf)


class Box:
    """Arrays ``lo <= hi`` (float64, any shape) enclosing unknown real numbers.

    Every operation rounds its result outward by one unit in the last place, which encloses the
    exact result because IEEE 754 rounds each operation to the nearest float; ``exp`` and
    ``log`` are widened by :data:`LIBM_SLACK` as well. So a ``Box`` computed from exact inputs
    (floats are exact rationals) contains the exact value of the same formula.
    """

    __slots__ = ("lo", "hi")

    def __init__(self, lo, hi=None):
        self.lo = np.asarray(lo, dtype=np.float64)
        self.hi = self.lo if hi is None else np.asarray(hi, dtype=np.float64)

    def __getitem__(self, i):
        return Box(self.lo[i], self.hi[i])

    def __add__(self, o):
        o = _box(o)
        return Box(_dn(self.lo + o.lo), _up(self.hi + o.hi))

    __radd__ = __add__

    def __neg__(self):
        return Box(-self.hi, -self.lo)

    def __sub__(self, o):
        return self + (-_box(o))

    def __rsub__(self, o):
        return _box(o) - self

    def __mul__(self, o):
        o = _box(o)
        p = np.stack(np.broadcast_arrays(self.lo * o.lo, self.lo * o.hi,
                                         self.hi * o.lo, self.hi * o.hi))
        return Box(_dn(p.min(0)), _up(p.max(0)))

    __rmul__ = __mul__

    def inv(self):
        """``1 / x`` for boxes of positive numbers."""
        if np.any(self.lo <= 0):
            raise ZeroDivisionError("Box.inv: expected positive lower ends")
        return Box(_dn(1 / self.hi), _up(1 / self.lo))

    def __truediv__(self, o):
        return self * _box(o).inv()

    def sq(self):
        """``x^2`` (tighter than ``x * x`` when the box contains 0)."""
        a, b = np.abs(self.lo), np.abs(self.hi)
        lo = np.where((self.lo <= 0) & (self.hi >= 0), 0.0, np.minimum(a, b) ** 2)
        return Box(np.maximum(_dn(lo), 0.0), _up(np.maximum(a, b) ** 2))

    def sqrt(self):
        """``sqrt(x)`` of the non-negative part (IEEE ``sqrt`` is correctly rounded)."""
        return Box(_dn(np.sqrt(np.maximum(self.lo, 0.0))).clip(min=0.0),
                   _up(np.sqrt(np.maximum(self.hi, 0.0))))

    def exp(self):
        return Box(np.maximum(_dn(np.exp(self.lo) * (1 - LIBM_SLACK)), 0.0),
                   _up(np.exp(self.hi) * (1 + LIBM_SLACK)))

    def log(self):
        """``log(x)`` for boxes of positive numbers."""
        lo, hi = np.log(self.lo), np.log(self.hi)
        return Box(_dn(lo - np.abs(lo) * LIBM_SLACK - 1e-300),
                   _up(hi + np.abs(hi) * LIBM_SLACK + 1e-300))

    def sum(self, axis):
        """Sum along ``axis`` one term at a time, each addition rounded outward."""
        lo, hi = np.moveaxis(self.lo, axis, 0), np.moveaxis(self.hi, axis, 0)
        acc = Box(lo[0], hi[0])
        for a, b in zip(lo[1:], hi[1:]):
            acc = acc + Box(a, b)
        return acc

    def min_lo(self, axis):
        """The box of the minimum along ``axis``."""
        return Box(self.lo.min(axis), self.hi.min(axis))


def _box(x) -> Box:
    return x if isinstance(x, Box) else Box(x)


E_BOX = Box(_dn(math.e), _up(math.e))
"""An enclosure of Euler's number."""
