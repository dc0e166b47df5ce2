"""What separates the Gaussian kernel from Softmax in query-only training.

One query ``q`` of dimension ``d`` meets ``n`` fixed keys ``K (n, d)`` and value rows
``U (n, d_out)``; its loss is ``g(q) = 1/2 ||o(q) - y||^2``.

* Gaussian: ``a_j(q) = exp(-||q - k_j||^2 / c)``, ``o(q) = U^T a(q)``. The weights vanish at
  infinity, so ``g -> 1/2 ||y||^2`` there and every sublevel set ``{g <= beta}`` with
  ``beta < 1/2 ||y||^2`` is compact. :func:`gaussian_bounds` gives the explicit global constants
  of the book's proof; :func:`sublevel_certificate` proves (by exhaustive box covering with
  those constants) that every Jacobian on a sublevel set has ``sigma_min >= sigma``;
  :func:`layer_certificate` assembles the constants of the layer theorem.
* Softmax: on the one-direction instance of :class:`SoftmaxRay` the gap to the floor obeys
  explicit ``C / (t + t0)`` bounds from both sides.
* :func:`classify` labels a loss curve at a step budget by the shape of its tail, not by a
  threshold reached within that budget; the label is a measurement at that budget.
* :func:`softmax_floor` proves a positive floor of the Softmax loss when a target lies outside
  the convex hull of its value rows (exact rational arithmetic); :func:`loss_box` and the
  eigenvalue bounds enclose exact values in :class:`tdlib.intervals.Box` arithmetic
  (outward-rounded float64 intervals), so that the certificates above control their rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from .checks import (as_array, as_tensor, check_between, check_choice, check_finite, check_int,
                     check_positive, check_real)
from .intervals import E_BOX, EPS, LIBM_SLACK, Box, _box, _dn, _up  # noqa: F401 (re-exported)
from .query import QueryProblem, jacobians, outputs, smallest_singular_values

E = math.e


# ---------------------------------------------------------------------------------------------
# Rounding control: products and eigenvalue bounds in Box arithmetic (tdlib.intervals.Box)
# ---------------------------------------------------------------------------------------------

def _data(name: str, x, axes: str) -> np.ndarray:
    """``x`` as a non-empty, finite float64 array with the axes named in ``axes`` (the data of
    a certificate, taken as exact), or an error naming ``name``."""
    return as_array(name, x, axes).numpy()


def _same(axes: str, **sizes) -> None:
    """Require the sizes ``{"name: axis": (size, expected)}`` to agree; the message names
    the argument whose axis differs."""
    for where, (got, want) in sizes.items():
        if got != want:
            name = where.split(":")[0]
            raise ValueError(f"{name}: expected {where.split(':')[1].strip()} = {want} to match "
                             f"{axes}, got {got}")


def _matrices(name: str, x, axes: str) -> np.ndarray:
    """A non-empty, finite float64 array of at least two axes (a batch of matrices)."""
    t = as_tensor(name, x, dtype=torch.float64)
    if t.ndim < 2 or t.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty array of shape {axes}, got shape "
                         f"{tuple(t.shape)}")
    check_finite(name, t)
    return t.numpy()


def _gram_box(G) -> Box:
    if not isinstance(G, Box) or G.lo.ndim < 2 or G.lo.shape[-1] != G.lo.shape[-2] \
            or G.lo.shape[-1] == 0:
        raise TypeError(f"G: expected a Box of symmetric matrices of shape (..., m, m), got "
                        f"{type(G).__name__} {getattr(getattr(G, 'lo', None), 'shape', '')}")
    return G


def matmul_box(A, B) -> Box:
    """An enclosure of the exact product ``A @ B`` of float64 arrays (inner size ``k``): the
    float product ``P`` plus or minus ``1.01 gamma_(k+1) |A| @ |B|`` (Higham's bound for a dot
    product in any summation order, ``gamma_k = k eps / (1 - k eps)``, widened for the rounding
    of the bound itself) plus ``k`` times the smallest subnormal for underflow."""
    A, B = _matrices("A", A, "(..., m, k)"), _matrices("B", B, "(..., k, p)")
    _same("A (..., m, k) @ B (..., k, p)", **{"B: its row count k": (B.shape[-2], A.shape[-1])})
    k = A.shape[-1]
    gam = 1.01 * (k + 1) * EPS / (1 - (k + 1) * EPS)
    P = A @ B
    rad = _up(_up(gam * (np.abs(A) @ np.abs(B))) + k * 5e-324)
    return Box(_dn(P - rad), _up(P + rad))


def cholesky_ok(G: Box) -> np.ndarray:
    """True where every symmetric matrix in ``G`` (shape ``(..., m, m)``, lower triangle read)
    is positive definite: the Cholesky factorisation in interval arithmetic meets only pivots
    with positive lower ends. Returns a boolean array of shape ``(...)``."""
    m = _gram_box(G).lo.shape[-1]
    ok = np.ones(G.lo.shape[:-2], dtype=bool)
    L = {}
    for j in range(m):
        s = G[..., j, j]
        for k in range(j):
            s = s - L[j, k].sq()
        ok &= s.lo > 0
        piv = Box(np.where(ok, s.lo, 1.0), np.where(ok, s.hi, 1.0)).sqrt()
        L[j, j] = piv
        for i in range(j + 1, m):
            t = G[..., i, j]
            for k in range(j):
                t = t - L[i, k] * L[j, k]
            L[i, j] = t / piv
    return ok


def lambda_min_lower(G: Box, shrink: float = 1e-7) -> np.ndarray:
    """A proved lower bound ``>= 0`` on the smallest eigenvalue of every symmetric matrix in
    ``G`` (shape ``(..., m, m)``): ``lam = (1 - shrink) lambda_min(mid G)`` (a float estimate)
    is kept where ``G - lam I`` is proved positive definite (:func:`cholesky_ok`), else 0."""
    G = _gram_box(G)
    shrink = check_between("shrink", shrink, 0.0, 1.0, what="a relative margin", hi_open=True)
    mid = 0.5 * (G.lo + G.hi)
    mid = 0.5 * (mid + np.swapaxes(mid, -1, -2))
    lam = np.linalg.eigvalsh(mid)[..., 0] * (1 - shrink)
    lam = np.where(lam > 0, lam, 0.0)
    eye = np.eye(G.lo.shape[-1])
    S = G - Box(lam[..., None, None] * eye)
    return np.where((lam > 0) & cholesky_ok(S), lam, 0.0)


def lambda_max_upper(G: Box, grow: float = 1e-7) -> np.ndarray:
    """A proved upper bound on the largest eigenvalue of every symmetric matrix in ``G``:
    ``lam = (1 + grow) lambda_max(mid G)`` (plus a tiny absolute term) where ``lam I - G`` is
    proved positive definite, else the larger bound ``max_i sum_j max |G_ij|`` (Gershgorin)."""
    G = _gram_box(G)
    grow = check_positive("grow", grow, strict=False)
    mid = 0.5 * (G.lo + G.hi)
    mid = 0.5 * (mid + np.swapaxes(mid, -1, -2))
    lam = np.linalg.eigvalsh(mid)[..., -1] * (1 + grow) + 1e-300
    eye = np.eye(G.lo.shape[-1])
    S = Box(lam[..., None, None] * eye) - G
    gersh = Box(np.maximum(np.abs(G.lo), np.abs(G.hi))).sum(-1).hi.max(-1)
    return np.where(cholesky_ok(S), lam, gersh)


def gaussian_box(Z, K, U, y, c: float):
    """Enclosures at exact float64 queries ``Z (B, d)`` of one Gaussian per-query problem
    (keys ``K (n, d)``, values ``U (n, d_out)``, target ``y (d_out,)``, width ``c``): the
    distances ``||z - k_j|| (B, n)``, the residual norm ``||o(z) - y|| (B,)`` and the Gram matrix
    ``J J^T (B, d_out, d_out)`` of the Jacobian. Returns three :class:`Box` values."""
    Z, K = _data("Z", Z, "(B, d)"), _data("K", K, "(n, d)")
    U, y = _data("U", U, "(n, d_out)"), _data("y", y, "(d_out,)")
    _same("Z (B, d), K (n, d), U (n, d_out), y (d_out,)",
          **{"K: its dimension d": (K.shape[1], Z.shape[1]),
             "U: its row count n": (U.shape[0], K.shape[0]),
             "y: its length d_out": (y.shape[0], U.shape[1])})
    c = check_positive("c", c)
    diff = Box(Z[:, None, :]) - Box(K[None])                      # (B, n, d)
    dist2 = diff.sq().sum(-1)                                     # (B, n)
    a = (-(dist2 / c)).exp()                                      # (B, n)
    o = (a[..., None] * Box(U[None])).sum(1)                      # (B, d_out)
    res = (o - Box(y)).sq().sum(-1).sqrt()                        # (B,)
    t = a[..., None] * diff                                       # (B, n, d): a_j (z - k_j)
    # J = -(2/c) sum_j u_j t_j^T; the Gram matrix of -J equals that of J
    J = (Box(U[None, :, :, None]) * t[:, :, None, :]).sum(1) * (Box(2.0) / c)   # (B, d_out, d)
    d_out = U.shape[1]
    lo = np.zeros(J.lo.shape[:1] + (d_out, d_out))
    hi = np.zeros_like(lo)
    for i in range(d_out):
        for k in range(i + 1):
            g = J[:, i].sq().sum(-1) if i == k else (J[:, i] * J[:, k]).sum(-1)
            lo[:, i, k], hi[:, i, k] = g.lo, g.hi
            lo[:, k, i], hi[:, k, i] = g.lo, g.hi
    return dist2.sqrt(), res, Box(lo, hi)


def gaussian_bounds_upper(U, y, c: float) -> Dict[str, float]:
    """Proved upper bounds on the constants of :func:`gaussian_bounds` (and ``||y||``'s
    enclosure), from the float64 data taken as exact."""
    U, y = _data("U", U, "(n, d_out)"), _data("y", y, "(d_out,)")
    _same("U (n, d_out), y (d_out,)", **{"y: its length d_out": (y.shape[0], U.shape[1])})
    c = check_positive("c", c)
    S_u = Box(U).sq().sum(-1).sqrt().sum(0)
    ny = Box(y).sq().sum(0).sqrt()
    J_max = (Box(2.0) / (Box(c) * E_BOX)).sqrt() * S_u
    two_c = Box(2.0) / c
    r_max = S_u + ny
    L_g = J_max.sq() + two_c * S_u * r_max
    return {"S_u": float(S_u.hi), "J_max": float(J_max.hi), "L_J": float((two_c * S_u).hi),
            "r_max": float(r_max.hi), "L_g": float(L_g.hi), "norm_y": (float(ny.lo), float(ny.hi))}


# ---------------------------------------------------------------------------------------------
# Gaussian: explicit global constants
# ---------------------------------------------------------------------------------------------

def gaussian_bounds(U, y, c: float) -> Dict[str, float]:
    """The explicit constants of one Gaussian per-query problem (values ``U (n, d_out)``, target
    ``y (d_out,)``, width ``c``), valid at every query ``q``:

    * ``S_u = sum_j ||u_j||``;
    * ``J_max = sqrt(2 / (c e)) S_u >= ||J(q)||_2`` (because ``||grad a_j|| <= sqrt(2/(c e))``);
    * ``L_J = (2 / c) S_u``: ``||J(q) - J(q')||_2 <= L_J ||q - q'||`` (because
      ``||Hess a_j||_2 <= 2 / c``);
    * ``r_max = S_u + ||y|| >= ||o(q) - y||``;
    * ``L_g = J_max^2 + (2 / c) S_u r_max``, a global Lipschitz constant of ``grad g``.
    """
    U, y = as_array("U", U, "(n, d_out)"), as_array("y", y, "(d_out,)")
    _same("U (n, d_out), y (d_out,)", **{"y: its length d_out": (y.shape[0], U.shape[1])})
    c = check_positive("c", c)
    S_u = float(U.norm(dim=-1).sum())
    J_max = math.sqrt(2 / (c * E)) * S_u
    r_max = S_u + float(y.norm())
    return {"S_u": S_u, "J_max": J_max, "L_J": 2 / c * S_u, "r_max": r_max,
            "L_g": J_max**2 + 2 / c * S_u * r_max}


def _sigma_min(J: torch.Tensor) -> torch.Tensor:
    return smallest_singular_values(J)


def sublevel_certificate(K, U, y, beta: float, c: float, max_boxes: int = 400_000,
                         max_depth: int = 30) -> Dict[str, object]:
    """A proof that every Jacobian on ``S = {q : g(q) <= beta}`` has ``sigma_min >= sigma``.

    Needs ``beta < 1/2 ||y||^2``. With ``m = ||y|| - sqrt(2 beta)`` every point of ``S`` has
    ``||o(q)|| >= m``, and ``||o(q)|| <= S_u max_j a_j(q)``; so ``S`` lies in the union of the
    balls ``B(k_j, rho)``, ``rho^2 = c log(S_u / m)`` (``S`` is empty if ``S_u < m``; at
    ``S_u = m`` it may hold a key). Cubes covering these balls are split until each cube ``C``
    (centre ``z``, contained in the ball ``B(z, h)``) is

    * *outside* ``S``: ``||o(z) - y|| - J_max h > sqrt(2 beta)`` (``o`` is ``J_max``-Lipschitz),
      or ``min_j ||z - k_j|| - h > rho``; or
    * *certified*: ``sigma_min(J(z)) - 2 L_J h > 0``, so ``sigma_min(J) >= sigma_min(J(z)) -
      L_J h > 0`` on ``C`` (Weyl's inequality and the Lipschitz bound on ``J``).

    Rounding is controlled: the data ``K (n, d)``, ``U (n, d_out)``, ``y (d_out,)``, ``beta``
    and ``c`` are taken as exact; every quantity of a decision is enclosed by :class:`Box`
    arithmetic (``sigma_min(J(z))^2`` by a Cholesky factorisation of ``J J^T - lam I``), the
    constants are proved upper bounds, and ``h`` includes the rounding of the computed centres.
    A cube is decided only when the lower end of its inequality's left side minus right side,
    its *margin*, is positive. Returns ``ok`` (every cube decided), ``sigma`` (the smallest
    proved lower bound, ``inf`` if ``S`` is empty), the cube counts, the constants, and
    ``min_margin`` / ``min_rel_margin``: the smallest margin of a decision, absolute and divided
    by the size of the largest term it compares (the scale at which rounding acts).
    """
    K, U, y = _data("K", K, "(n, d)"), _data("U", U, "(n, d_out)"), _data("y", y, "(d_out,)")
    max_boxes = check_int("max_boxes", max_boxes)
    max_depth = check_int("max_depth", max_depth, minimum=0)
    if K.ndim != 2 or U.ndim != 2 or y.ndim != 1 or U.shape != (K.shape[0], y.shape[0]):
        raise ValueError(f"K, U, y: expected shapes (n, d), (n, d_out), (d_out,), got "
                         f"{K.shape}, {U.shape}, {y.shape}")
    n, d = K.shape
    beta = check_positive("beta", beta, strict=False)
    c = check_positive("c", c)
    bnd = gaussian_bounds(U, y, c)
    up = gaussian_bounds_upper(U, y, c)
    ny = float(np.linalg.norm(y))
    sq_b = (Box(2.0) * beta).sqrt()                             # sqrt(2 beta), enclosed
    m_lo = float((Box(up["norm_y"][0]) - sq_b).lo)
    if not beta < 0.5 * ny**2 or not m_lo > 0:
        raise ValueError(f"beta: expected a level below 1/2 ||y||^2 = {0.5 * ny**2:.6g} "
                         f"(the loss at infinity, with room for rounding), got {beta}")
    out = {"beta": beta, "rho": 0.0, "certified": 0, "outside": 0, "undecided": 0,
           "depth": 0, "ok": True, "sigma": float("inf"), "min_margin": float("inf"),
           "min_rel_margin": float("inf"), **bnd}
    if up["S_u"] < m_lo:
        return out                                               # S is empty: S_u < m
    ratio = Box(up["S_u"]) / m_lo                                # >= S_u / m
    rho = float((Box(c) * Box(np.maximum(ratio.log().hi, 0.0))).sqrt().hi)
    out["rho"] = rho
    J_max, L_J, sq_hi = up["J_max"], up["L_J"], float(sq_b.hi)
    # every coordinate of every centre is at most M in size; each split rounds it once
    M = float(np.abs(K).max()) + 2 * rho
    centres, half = K.copy(), rho
    sigma, counts = float("inf"), {"certified": 0, "outside": 0}
    margins = []
    children = np.array(np.meshgrid(*[[-1.0, 1.0]] * d, indexing="ij")).reshape(d, -1).T
    for depth in range(max_depth + 1):
        if len(centres) == 0:
            break
        drift = 2 * (depth + 1) * EPS * M * math.sqrt(d)         # |computed - exact centre|
        h = float(_up(_up(half * math.sqrt(d) * (1 + 4 * EPS)) + drift))
        dist, res, G = gaussian_box(centres, K, U, y, c)
        m_far = (dist.min_lo(1) - h - rho).lo
        m_out = (res - J_max * h - sq_hi).lo
        s_lo = _dn(np.sqrt(lambda_min_lower(G)))
        m_cert = (Box(s_lo) - 2 * L_J * h).lo
        outside = (m_far > 0) | (m_out > 0)
        cert = (~outside) & (m_cert > 0)
        if outside.any():
            mo = np.maximum(m_far, m_out)[outside]
            scale = np.maximum(np.maximum(dist.hi.min(1), rho + h),
                               np.maximum(res.hi, J_max * h + sq_hi))[outside]
            margins.append((float(mo.min()), float((mo / scale).min())))
        if cert.any():
            mc = m_cert[cert]
            margins.append((float(mc.min()), float((mc / s_lo[cert]).min())))
            sigma = min(sigma, float((Box(s_lo[cert]) - L_J * h).lo.min()))
        counts["outside"] += int(outside.sum())
        counts["certified"] += int(cert.sum())
        rest = centres[~outside & ~cert]
        out["depth"] = depth
        if len(rest) == 0:
            centres = rest
            break
        if len(rest) * 2**d > max_boxes or depth == max_depth:
            out["ok"] = False
            out["undecided"] = len(rest)
            out["worst_centre"] = rest[0].tolist()
            break
        half /= 2
        centres = (rest[:, None, :] + half * children[None]).reshape(-1, d)
    out.update(counts)
    if margins:
        out["min_margin"] = min(a for a, _ in margins)
        out["min_rel_margin"] = min(b for _, b in margins)
    out["sigma"] = sigma if out["ok"] else 0.0
    return out


def loss_box(X, K, U, Y, W, kernel: str, c: Optional[float] = None) -> Box:
    """An enclosure of the exact query-only loss ``f(W) = 1/2 sum_ik ||o_ik - y_ik||^2`` for a
    batch of problems, all float64 data taken as exact: ``X (B, N, n, D)``, ``K (B, N, n, d)``,
    ``U, Y (B, N, n, d_out)``, ``W (B, D, d)``; a :class:`Box` of shape ``(B,)``. The Gaussian
    width ``c`` defaults to ``2 sqrt(d)`` (as a float, taken as exact)."""
    check_choice("kernel", kernel, ("softmax", "gaussian"))
    X, K = _data("X", X, "(B, N, n, D)"), _data("K", K, "(B, N, n, d)")
    U, Y = _data("U", U, "(B, N, n, d_out)"), _data("Y", Y, "(B, N, n, d_out)")
    W = _data("W", W, "(B, D, d)")
    _same("X (B, N, n, D), K (B, N, n, d), U and Y (B, N, n, d_out), W (B, D, d)",
          **{"W: its shape (B, D)": (W.shape[:2], (X.shape[0], X.shape[3])),
             "K: its shape (B, N, n, d)": (K.shape, X.shape[:3] + W.shape[2:]),
             "U: its shape (B, N, n)": (U.shape[:3], X.shape[:3]),
             "Y: its shape": (Y.shape, U.shape)})
    if c is not None:
        c = check_positive("c", c)
    d = W.shape[-1]
    Q = matmul_box(X, W[:, None])                                 # (B, N, n, d)
    if kernel == "gaussian":
        cc = 2 * math.sqrt(d) if c is None else float(c)
        diff = Q[..., :, None, :] - Box(K[..., None, :, :])      # (B, N, n_q, n_k, d)
        w = (-(diff.sq().sum(-1) / cc)).exp()                    # (B, N, n_q, n_k)
    elif kernel == "softmax":
        s = (Q[..., :, None, :] * Box(K[..., None, :, :])).sum(-1) / Box(float(d)).sqrt()
        shift = 0.5 * (s.lo + s.hi).max(-1, keepdims=True)
        e = (s - shift).exp()
        w = e / e.sum(-1)[..., None]
    else:
        raise ValueError(f"kernel: expected 'softmax' or 'gaussian', got {kernel!r}")
    o = (w[..., None] * Box(U[..., None, :, :])).sum(-2)          # (B, N, n, d_out)
    r2 = (o - Box(Y)).sq().sum(-1)
    return r2.sum(-1).sum(-1) * 0.5


def layer_certificate(problem: QueryProblem, W_Q0, **kw) -> Dict[str, object]:
    """The hypotheses and constants of the book's Gaussian layer theorem at the start ``W_Q0``,
    with rounding controlled (the float64 data of ``problem`` and ``W_Q0`` taken as exact).

    ``f0 = f(W_Q0)`` must be below ``beta_inf = min_ik 1/2 ||y_ik||^2`` (checked on enclosures:
    the upper end ``f0_hi`` of the loss against the lower end of ``beta_inf``); every query of
    every ``W`` with ``f(W) <= f0`` lies in its own sublevel set ``{g_ik <= f0_hi}``, on which
    :func:`sublevel_certificate` proves ``sigma_min(J_ik) >= sigma_J``. ``sigma_X`` is a proved
    lower bound on ``sigma_min(Xs)`` and ``||Xs||_2^2 <= Xn2`` (Cholesky factorisations in
    interval arithmetic), ``mu = sigma_X^2 sigma_J^2`` is rounded down, ``L = Xn2 max_ik
    L_g,ik`` up and ``eta = 1 / L`` down; the theorem then gives ``f_t <= (1 - eta mu)^t f0``.
    ``ok`` is False (with a ``reason``) when a hypothesis is not proved. ``min_margin`` and
    ``min_rel_margin`` are the smallest over all queries of :func:`sublevel_certificate`.
    """
    if not isinstance(problem, QueryProblem):
        raise TypeError(f"problem: expected a tdlib.query.QueryProblem, got "
                        f"{type(problem).__name__}")
    if problem.kernel != "gaussian":
        raise ValueError(f"problem.kernel: expected 'gaussian', got {problem.kernel!r}")
    W0 = problem.check_W(W_Q0, "W_Q0")
    c = problem.c if problem.c is not None else 2 * math.sqrt(problem.d)
    return layer_certificate_arrays(problem.X, problem.K, problem.U, problem.Y, W0, c, **kw)


def layer_certificate_arrays(X, K, U, Y, W, c: float, **kw) -> Dict[str, object]:
    """:func:`layer_certificate` for plain arrays: ``X (N, n, D)``, keys ``K (N, n, d)``,
    values ``U`` and targets ``Y (N, n, d_out)``, the start ``W (D, d)`` and the width ``c``;
    ``kw`` goes to :func:`sublevel_certificate`."""
    X, K = as_array("X", X, "(N, n, D)"), as_array("K", K, "(N, n, d)")
    U, Y = as_array("U", U, "(N, n, d_out)"), as_array("Y", Y, "(N, n, d_out)")
    W0 = as_array("W", W, "(D, d)")
    _same("X (N, n, D), K (N, n, d), U and Y (N, n, d_out), W (D, d)",
          **{"W: its row count D": (W0.shape[0], X.shape[2]),
             "K: its shape (N, n, d)": (tuple(K.shape), tuple(X.shape[:2]) + (W0.shape[1],)),
             "U: its shape (N, n)": (tuple(U.shape[:2]), tuple(X.shape[:2])),
             "Y: its shape": (tuple(Y.shape), tuple(U.shape))})
    N, n, D = X.shape
    c = check_positive("c", c)
    r = (X @ W0).reshape(N, n, -1)
    f0 = float(0.5 * ((outputs(r, K, U, "gaussian", c) - Y) ** 2).sum())
    f0_hi = float(loss_box(X[None], K[None], U[None], Y[None], W0[None], "gaussian", c).hi[0])
    Yn = Y.numpy()
    beta_inf_lo = float((Box(Yn).sq().sum(-1) * 0.5).lo.min())
    beta_inf = float(0.5 * (Y * Y).sum(-1).min())
    res = {"f0": f0, "f0_hi": f0_hi, "beta_inf": beta_inf, "sigma_X": 0.0, "c": c, "ok": False}
    Xs = X.reshape(N * n, D).numpy()
    if N * n > D:
        res["reason"] = "Xs is not of full row rank (D < N n)"
        return res
    G = matmul_box(Xs, Xs.T)
    lam = float(lambda_min_lower(G))
    if not lam > 0:
        res["reason"] = "Xs is not proved to be of full row rank (dependent tokens?)"
        return res
    sigma_X = float(_dn(math.sqrt(lam)))
    Xn2 = float(lambda_max_upper(G))
    res["sigma_X"] = sigma_X
    if not f0_hi < beta_inf_lo:
        res["reason"] = f"f0 = {f0:.3g} is not below min_ik 1/2 ||y_ik||^2 = {beta_inf:.3g}"
        return res
    sig, Lg, boxes = float("inf"), 0.0, 0
    margin, rel = float("inf"), float("inf")
    for i in range(N):
        for k in range(n):
            cert = sublevel_certificate(K[i], U[i], Y[i, k], f0_hi, c, **kw)
            boxes += cert["certified"] + cert["outside"]
            if not cert["ok"]:
                res["reason"] = f"query ({i}, {k}): a cube of its sublevel set was not certified"
                return res
            sig = min(sig, cert["sigma"])
            Lg = max(Lg, gaussian_bounds_upper(U[i], Y[i, k], c)["L_g"])
            margin, rel = min(margin, cert["min_margin"]), min(rel, cert["min_rel_margin"])
    L = float((Box(Xn2) * Lg).hi)
    mu = float((Box(sigma_X).sq() * Box(sig).sq()).lo)
    eta = float(Box(L).inv().lo)
    res.update({"ok": True, "sigma_J": sig, "mu": mu, "L": L, "eta": eta, "boxes": boxes,
                "rate": 1 - eta * mu, "min_margin": margin, "min_rel_margin": rel})
    return res


# ---------------------------------------------------------------------------------------------
# Softmax: a proved floor when a target lies outside the hull of its value rows
# ---------------------------------------------------------------------------------------------

def _project_rows_to_simplex(V: np.ndarray) -> np.ndarray:
    """Euclidean projection of every row of ``V (m, n)`` onto the probability simplex."""
    n = V.shape[1]
    s = -np.sort(-V, axis=1)
    css = np.cumsum(s, axis=1) - 1
    k = np.arange(1, n + 1)
    r = (s - css / k > 0).sum(1)
    tau = css[np.arange(len(V)), r - 1] / r
    return np.maximum(V - tau[:, None], 0.0)


def hull_gap(U, y, iters: int = 2000):
    """Proved lower bounds on ``dist(y, conv(rows of U))^2``, exact in rational arithmetic.

    ``U (m, n, d_out)`` holds ``m`` sets of value rows, ``y (m, d_out)`` their targets (float64
    numbers, taken as exact). Projected gradient finds a near-closest hull point ``p`` (float);
    with ``w = y - p``, every hull point ``z`` has ``w.(y - z) >= w.y - max_j w.u_j =: gap``,
    so ``dist(y, hull) >= gap / ||w||`` whenever ``gap > 0``. ``gap^2 / (w.w)`` is evaluated in
    exact fractions and rounded down to a float. Returns an array ``(m,)`` (0 where no positive
    bound was found: ``y`` inside the hull or too close to it)."""
    from fractions import Fraction

    U, y = _data("U", U, "(m, n, d_out)"), _data("y", y, "(m, d_out)")
    _same("U (m, n, d_out), y (m, d_out)",
          **{"y: its shape (m, d_out)": (y.shape, (U.shape[0], U.shape[2]))})
    iters = check_int("iters", iters)
    m, n, _ = U.shape
    lam = np.full((m, n), 1.0 / n)
    step = 1.0 / np.maximum(np.linalg.norm(U, 2, axis=(1, 2)) ** 2, 1e-12)
    for _ in range(iters):
        r = np.einsum("mn,mno->mo", lam, U) - y
        lam = _project_rows_to_simplex(lam - step[:, None] * np.einsum("mno,mo->mn", U, r))
    w = y - np.einsum("mn,mno->mo", lam, U)
    out = np.zeros(m)
    rough = np.einsum("mo,mo->m", w, y) - np.einsum("mno,mo->mn", U, w).max(1)
    for i in np.flatnonzero(rough > 0):
        wf = [Fraction(float(v)) for v in w[i]]
        dot = lambda v: sum((a * Fraction(float(b)) for a, b in zip(wf, v)), Fraction(0))
        gap = dot(y[i]) - max(dot(u) for u in U[i])
        if gap > 0:
            exact = gap * gap / sum(a * a for a in wf)
            val = float(exact)
            out[i] = val if Fraction(val) <= exact else float(_dn(val))
    return out


def softmax_floor(U, Y) -> np.ndarray:
    """A proved lower bound on the Softmax query-only loss at every ``W_Q``: ``1/2 sum_ik
    dist(y_ik, conv(rows of U_i))^2`` with each distance bounded below by :func:`hull_gap`
    (every Softmax output is a convex combination of the value rows). ``U, Y`` have shape
    ``(B, N, n, d_out)`` (or ``(N, n, d_out)``); returns ``(B,)`` (or a scalar), rounded down."""
    U = _data("U", U, "(N, n, d_out)") if np.ndim(U) == 3 else _data("U", U, "(B, N, n, d_out)")
    Y = _data("Y", Y, "(N, n, d_out)") if np.ndim(Y) == 3 else _data("Y", Y, "(B, N, n, d_out)")
    single = U.ndim == 3
    U, Y = (U[None], Y[None]) if single else (U, Y)
    if U.ndim != 4 or Y.shape != U.shape[:3] + (U.shape[3],):
        raise ValueError(f"U, Y: expected shapes (B, N, n, d_out), got {U.shape}, {Y.shape}")
    B, N, n, d_out = U.shape
    Ut = np.repeat(U[:, :, None], n, axis=2).reshape(-1, n, d_out)   # token (b, i, k) -> U_bi
    gaps = hull_gap(Ut, Y.reshape(-1, d_out)).reshape(B, N * n)
    out = np.zeros(B)
    for b in range(B):
        acc = Box(0.0)
        for v in gaps[b]:
            acc = acc + Box(v)
        out[b] = max(float((acc * 0.5).lo), 0.0)
    return out[0] if single else out


# ---------------------------------------------------------------------------------------------
# Softmax: the gap to the floor on a one-direction instance
# ---------------------------------------------------------------------------------------------

@dataclass
class SoftmaxRay:
    """One Softmax query against two keys, one output coordinate: ``d = n = 2``, ``d_out = 1``.

    Keys ``k_1, k_2``, values ``u_1 > u_2`` (scalars), target ``y = u_1 + delta`` with
    ``delta > 0`` (outside the hull ``[u_2, u_1]``). With ``w = (k_1 - k_2) / sqrt(d)`` and the
    logit difference ``chi = w^T q``, the output is ``o = u_2 + u_12 sigmoid(chi)`` (``u_12 = u_1 -
    u_2``, the property ``du``), the floor is ``1/2 delta^2`` and the gap is ``g - 1/2 delta^2 =
    delta u_12 s + 1/2 u_12^2 s^2`` with ``s = 1 - sigmoid(chi)``.
    """

    k1: Sequence[float] = (0.0, 0.0)
    k2: Sequence[float] = (0.5, 0.0)
    u1: float = 1.0
    u2: float = 0.5
    delta: float = 0.2

    def __post_init__(self):
        for name in ("k1", "k2"):
            as_array(name, getattr(self, name), "(2,)")
        check_real("u1", self.u1)
        check_real("u2", self.u2)
        if not self.u1 > self.u2:
            raise ValueError(f"u1, u2: expected u1 > u2, got {self.u1} and {self.u2}")
        check_positive("delta", self.delta)
        self.K = torch.tensor([list(self.k1), list(self.k2)], dtype=torch.float64)
        if self.K.shape != (2, 2) or float((self.K[0] - self.K[1]).norm()) == 0:
            raise ValueError(f"k1, k2: expected two distinct points of R^2, got {self.K.tolist()}")
        self.U = torch.tensor([[self.u1], [self.u2]], dtype=torch.float64)
        self.y = torch.tensor([self.u1 + self.delta], dtype=torch.float64)
        self.w = (self.K[0] - self.K[1]) / math.sqrt(2)

    @staticmethod
    def _q(name: str, q) -> torch.Tensor:
        """A query of this instance: two finite numbers."""
        q = as_array(name, q, "(2,)")
        if q.shape != (2,):
            raise ValueError(f"{name}: expected a query of shape (2,), got shape {tuple(q.shape)}")
        return q

    @property
    def du(self) -> float:
        return self.u1 - self.u2

    @property
    def floor(self) -> float:
        return 0.5 * self.delta**2

    def loss(self, q, kernel: str = "softmax") -> float:
        """The per-query loss ``g(q)`` with the given kernel."""
        r = outputs(self._q("q", q)[None], self.K, self.U, kernel)[0] - self.y
        return 0.5 * float((r * r).sum())

    def grad(self, q, kernel: str = "softmax") -> torch.Tensor:
        """The gradient of ``g`` at ``q`` with the given kernel."""
        q = self._q("q", q)[None]
        r = outputs(q, self.K, self.U, kernel)[0] - self.y
        return jacobians(q, self.K, self.U, kernel)[0].T @ r

    def L(self) -> float:
        """A global Lipschitz constant of the Softmax ``grad g``: ``||w||^2 du (delta + du) / 4 +
        ||w||^2 du^2 / 16`` (from ``|sigma'| <= 1/4``, ``|sigma''| <= 1/(6 sqrt 3) < 1/4``)."""
        w2 = float(self.w @ self.w)
        return w2 * (self.du * (self.delta + self.du) / 4 + self.du**2 / 16)

    def bounds(self, q0, eta: float, t) -> Dict[str, np.ndarray]:
        """The book's two-sided bounds on the gap at step ``t`` of GD with step ``eta``:
        ``lower = delta u_12 / (1 + E0 + a e^(a / (1 + E0)) t)`` with
        ``a = eta ||w||^2 u_12 (delta + u_12)``, ``E0 = exp(chi_0)``; and, if ``chi_0 >= 0``,
        ``upper = (delta u_12 + u_12^2 / 2) / (E0 + eta ||w||^2 u_12 delta t / 4)``.
        With ``C`` and ``t0`` as returned, ``lower = C / (t + t0)``, so the proved lower bound on
        ``t * gap`` is ``C t / (t + t0)``, which tends to ``C`` (it is not ``C`` at finite ``t``)."""
        theta0 = float(self.w @ self._q("q0", q0))
        eta = check_positive("eta", eta)
        t = as_tensor("t", t, dtype=torch.float64).numpy()
        if t.size == 0 or not (np.isfinite(t) & (t >= 0)).all():
            raise ValueError(f"t: expected non-empty finite step counts >= 0, got {t!r:.80}")
        E0 = math.exp(theta0)
        w2 = float(self.w @ self.w)
        a = eta * w2 * self.du * (self.delta + self.du)
        grow = a * math.exp(a / (1 + E0))           # the most exp(chi_t) can gain in a step
        lower = self.delta * self.du / (1 + E0 + grow * t)
        upper = ((self.delta * self.du + self.du**2 / 2) / (E0 + eta * w2 * self.du * self.delta * t / 4)
                 if theta0 >= 0 else np.full_like(t, np.nan))
        return {"lower": lower, "upper": upper, "C": self.delta * self.du / grow,
                "t0": (1 + E0) / grow}


def gd_path(loss_grad, q0, eta: float, steps: int):
    """Plain GD ``q <- q - eta grad g(q)`` for ``steps`` steps; returns the losses ``(steps+1,)``,
    gradient norms and the final query. ``loss_grad(q)`` returns ``(loss, grad)``."""
    if not callable(loss_grad):
        raise TypeError(f"loss_grad: expected a function q -> (loss, gradient), got "
                        f"{type(loss_grad).__name__}")
    eta = check_positive("eta", eta)
    steps = check_int("steps", steps, minimum=0)
    q = as_tensor("q0", q0, dtype=torch.float64).clone()
    if q.numel() == 0:
        raise ValueError(f"q0: expected a non-empty start query, got shape {tuple(q.shape)}")
    check_finite("q0", q)
    losses, gnorms = [], []
    for _ in range(steps + 1):
        f, g = loss_grad(q)
        losses.append(f)
        gnorms.append(float(g.norm()))
        q = q - eta * g
    return np.array(losses), np.array(gnorms), q


# ---------------------------------------------------------------------------------------------
# A label for a loss curve at a budget: the shape of its tail
# ---------------------------------------------------------------------------------------------

LABELS = ("converged", "linear", "power law", "stalling")


def classify(f_quarter: float, f_half: float, f_end: float, f_ref: float,
             pl_half: float, pl_end: float, zero_tol: float = 1e-10) -> str:
    """Label a monotone run at the budget ``t_max`` from its losses at steps ``t_max/4``,
    ``t_max/2``, ``t_max`` and its PL ratios ``||grad f||^2 / (2 f)`` averaged (geometric mean)
    over the windows ``[0.45 t_max, 0.5 t_max]`` (``pl_half``) and ``[0.9 t_max, t_max]``
    (``pl_end``); the averages smooth out the zig-zag of single iterates (see
    :func:`pl_windows`).

    Two scale-free numbers decide. ``kappa = pl_end / pl_half`` says whether a PL inequality
    holds along the tail: it is about 1 for a linear rate, about 1/2 for a power law
    ``f ~ t^-alpha`` and about 1/4 (or less) for a loss settling at a positive value with a
    ``1/t`` gap. ``xi_1 / xi_0``, with ``xi_0 = log(f(t_max/4) / f(t_max/2))`` and
    ``xi_1 = log(f(t_max/2) / f(t_max))``, is 2 for a geometric decay, 1 for a power law and
    about 1/2 (less for a faster gap, 0 on a plateau) for a loss settling at a positive value.
    The labels:

    * ``converged``: ``f(t_max) <= zero_tol * f_ref`` (the computed loss is numerically zero);
    * ``linear``: ``kappa >= 1/sqrt 2`` (the PL ratio is not decaying);
    * ``power law``: otherwise, if ``xi_1 >= xi_0 / sqrt 2`` (sublinear, still heading to 0);
    * ``stalling``: otherwise (the decrease dies out at a positive loss).

    For the model curves above the label is the same at every ``t_max``. A real run's label is a
    measurement at its budget, not a statement about ``t -> infinity``: the run can be caught in
    a transient (a plateau it is about to leave, a fast mode before a slow one), and its label
    at ``2 t_max`` can differ (:func:`tdlib.phase.flip_rate` measures how often).
    """
    f_quarter, f_half, f_end = (check_positive(k, v, strict=False) for k, v in
                                (("f_quarter", f_quarter), ("f_half", f_half), ("f_end", f_end)))
    f_ref = check_positive("f_ref", f_ref)
    pl_half = check_positive("pl_half", pl_half, strict=False)
    pl_end = check_positive("pl_end", pl_end, strict=False)
    zero_tol = check_positive("zero_tol", zero_tol, strict=False)
    if f_end <= zero_tol * f_ref:
        return "converged"
    if not (f_quarter > 0 and f_half > 0 and f_end > 0):
        raise ValueError(f"losses: expected positive values, got {f_quarter}, {f_half}, {f_end}")
    if not (pl_half >= 0 and pl_end >= 0):
        raise ValueError(f"PL ratios: expected non-negative values, got {pl_half}, {pl_end}")
    if pl_half > 0 and pl_end / pl_half >= 1 / math.sqrt(2):
        return "linear"
    r0 = math.log(f_quarter / f_half)
    r1 = math.log(f_half / f_end)
    return "power law" if r0 > 0 and r1 >= r0 / math.sqrt(2) else "stalling"


def pl_windows(t_max: int):
    """The step windows whose mean log PL ratio :func:`classify` compares:
    ``[0.225 t_max, 0.25 t_max]``, ``[0.45 t_max, 0.5 t_max]`` and ``[0.9 t_max, t_max]`` (the
    first two serve a run judged at half the budget)."""
    T = check_int("t_max", t_max, minimum=8)
    return [(int(0.225 * T), T // 4), (int(0.45 * T), T // 2), (int(0.9 * T), T)]


def _window_mean(pl: np.ndarray, a: int, b: int) -> float:
    x = np.asarray(pl[a:b + 1], dtype=float)
    if np.any(x <= 0):
        return 0.0
    return float(np.exp(np.mean(np.log(x))))


def classify_curve(losses, pl=None, zero_tol: float = 1e-10, f_ref: Optional[float] = None) -> str:
    """:func:`classify` on a whole curve ``losses[0..t_max]``. ``pl`` (the PL ratios along the run)
    defaults to the relative decrease ``(f_t - f_{t+1}) / f_t``, which is ``2 eta`` times the PL
    ratio to first order for constant-step gradient descent; ``f_ref`` defaults to ``losses[0]``."""
    f = as_array("losses", losses, "(t_max + 1,)").numpy()
    T = len(f) - 1
    if T < 8:
        raise ValueError(f"losses: expected at least 9 values, got {len(f)}")
    if (f < 0).any():
        raise ValueError(f"losses: expected values >= 0, got {float(f.min())} at step "
                         f"{int(np.argmin(f))}")
    zero_tol = check_positive("zero_tol", zero_tol, strict=False)
    if f_ref is not None:
        f_ref = check_positive("f_ref", f_ref)
    if pl is not None:
        pl = as_array("pl", pl, "(t_max + 1,)").numpy()
        if pl.shape != f.shape or (pl < 0).any():
            raise ValueError(f"pl: expected {len(f)} PL ratios >= 0 (one per loss), got shape "
                             f"{pl.shape} with minimum {float(pl.min())}")
    if pl is None:
        pl = np.append(np.maximum(f[:-1] - f[1:], 0) / np.where(f[:-1] > 0, f[:-1], 1), 0.0)
        windows = [(a, min(b, T - 1)) for a, b in pl_windows(T)]
    else:
        pl = np.asarray(pl, dtype=float)
        windows = pl_windows(T)
    half, end = (_window_mean(pl, a, b) for a, b in windows[1:])
    return classify(f[T // 4], f[T // 2], f[T], f[0] if f_ref is None else f_ref, half, end, zero_tol)
