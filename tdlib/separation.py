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
* :func:`classify` labels a loss curve by the shape of its tail, not by a threshold reached
  within a step budget.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from .checks import as_tensor, check_int, check_positive
from .query import QueryProblem, jacobians, outputs, smallest_singular_values

E = math.e


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
    U = as_tensor("U", U, dtype=torch.float64)
    y = as_tensor("y", y, dtype=torch.float64)
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
    balls ``B(k_j, rho)``, ``rho^2 = c log(S_u / m)`` (``S`` is empty if ``S_u < m``). Cubes
    covering these balls are split until each cube ``C`` (centre ``z``, circumradius ``h``) is

    * *outside* ``S``: ``||o(z) - y|| - J_max h > sqrt(2 beta)`` (``o`` is ``J_max``-Lipschitz),
      or ``min_j ||z - k_j|| - h > rho``; or
    * *certified*: ``sigma_min(J(z)) >= 2 L_J h``, so ``sigma_min(J) >= sigma_min(J(z)) - L_J h``
      on ``C`` (Weyl's inequality and the Lipschitz bound on ``J``).

    Returns ``ok`` (every cube decided), ``sigma`` (the smallest certified lower bound, ``inf``
    if ``S`` is empty), the cube counts and the constants. Arithmetic is float64; the margins
    are far above rounding.
    """
    K = as_tensor("K", K, dtype=torch.float64)
    U = as_tensor("U", U, dtype=torch.float64)
    y = as_tensor("y", y, dtype=torch.float64)
    n, d = K.shape
    beta = check_positive("beta", beta, strict=False)
    bnd = gaussian_bounds(U, y, c)
    ny = float(y.norm())
    if not beta < 0.5 * ny**2:
        raise ValueError(f"beta: expected a level below 1/2 ||y||^2 = {0.5 * ny**2:.6g} "
                         f"(the loss at infinity), got {beta}")
    m = ny - math.sqrt(2 * beta)
    out = {"beta": beta, "rho": 0.0, "certified": 0, "outside": 0, "undecided": 0,
           "depth": 0, "ok": True, "sigma": float("inf"), **bnd}
    if bnd["S_u"] <= m:
        return out                                               # S is empty
    rho = math.sqrt(c * math.log(bnd["S_u"] / m))
    out["rho"] = rho
    # one cube of half side rho around each key covers B(k_j, rho)
    centres, half = K.clone(), rho
    sigma, counts = float("inf"), {"certified": 0, "outside": 0}
    children = torch.tensor(np.array(np.meshgrid(*[[-1.0, 1.0]] * d, indexing="ij"))
                            .reshape(d, -1).T, dtype=torch.float64)   # (2^d, d)
    sq = math.sqrt(2 * beta)
    for depth in range(max_depth + 1):
        if len(centres) == 0:
            break
        h = half * math.sqrt(d)                                  # circumradius
        Kb, Ub = K.expand(len(centres), n, d), U.expand(len(centres), *U.shape)
        r = outputs(centres[:, None, :], Kb, Ub, "gaussian", c)[:, 0, :] - y
        far = torch.cdist(centres, K).min(1).values - h > rho
        outside = (r.norm(dim=-1) - bnd["J_max"] * h > sq) | far
        J = jacobians(centres[:, None, :], Kb, Ub, "gaussian", c)[:, 0]
        s = _sigma_min(J)
        cert = (~outside) & (s >= 2 * bnd["L_J"] * h)
        counts["outside"] += int(outside.sum())
        counts["certified"] += int(cert.sum())
        if cert.any():
            sigma = min(sigma, float((s[cert] - bnd["L_J"] * h).min()))
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
    out["sigma"] = sigma if out["ok"] else 0.0
    return out


def layer_certificate(problem: QueryProblem, W_Q0, **kw) -> Dict[str, object]:
    """The constants of the book's Gaussian layer theorem at the start ``W_Q0``.

    ``f0 = f(W_Q0)`` must be below ``beta_inf = min_ik 1/2 ||y_ik||^2``; every query of every
    ``W`` with ``f(W) <= f0`` lies in its own sublevel set ``{g_ik <= f0}``, on which
    :func:`sublevel_certificate` proves ``sigma_min(J_ik) >= sigma_J``. With
    ``sigma_X = sigma_min(Xs)``, ``mu = sigma_X^2 sigma_J^2``, the global Lipschitz constant
    ``L = ||Xs||_2^2 max_ik L_g,ik`` and ``eta = 1 / L``, the theorem gives
    ``f_t <= (1 - eta mu)^t f0``. ``ok`` is False (with a ``reason``) when a hypothesis fails.
    """
    if problem.kernel != "gaussian":
        raise ValueError(f"problem.kernel: expected 'gaussian', got {problem.kernel!r}")
    W0 = problem.check_W(W_Q0)
    f0 = problem.loss(W0)
    c = problem.c if problem.c is not None else 2 * math.sqrt(problem.d)
    sx = torch.linalg.svdvals(problem.Xs)
    sigma_X = float(sx[-1]) if problem.N * problem.n <= problem.D else 0.0
    Y, K, U = problem.Y, problem.K, problem.U
    beta_inf = float(0.5 * (Y * Y).sum(-1).min())
    res = {"f0": f0, "beta_inf": beta_inf, "sigma_X": sigma_X, "c": c, "ok": False}
    if sigma_X <= 1e-12:
        res["reason"] = "Xs is not of full row rank (D < N n or dependent tokens)"
        return res
    if not f0 < beta_inf:
        res["reason"] = f"f0 = {f0:.3g} is not below min_ik 1/2 ||y_ik||^2 = {beta_inf:.3g}"
        return res
    sig, Lg, boxes = float("inf"), 0.0, 0
    for i in range(problem.N):
        for k in range(problem.n):
            cert = sublevel_certificate(K[i], U[i], Y[i, k], f0, c, **kw)
            boxes += cert["certified"] + cert["outside"]
            if not cert["ok"]:
                res["reason"] = f"query ({i}, {k}): a cube of its sublevel set was not certified"
                return res
            sig = min(sig, cert["sigma"])
            Lg = max(Lg, cert["L_g"])
    L = float(sx[0]) ** 2 * Lg
    mu = sigma_X**2 * sig**2
    res.update({"ok": True, "sigma_J": sig, "mu": mu, "L": L, "eta": 1 / L, "boxes": boxes,
                "rate": 1 - mu / L})
    return res


# ---------------------------------------------------------------------------------------------
# Softmax: the gap to the floor on a one-direction instance
# ---------------------------------------------------------------------------------------------

@dataclass
class SoftmaxRay:
    """One Softmax query against two keys, one output coordinate: ``d = n = 2``, ``d_out = 1``.

    Keys ``k_1, k_2``, values ``u_1 > u_2`` (scalars), target ``y = u_1 + delta`` with
    ``delta > 0`` (outside the hull ``[u_2, u_1]``). With ``w = (k_1 - k_2) / sqrt(d)`` and
    ``theta = w^T q``, the output is ``o = u_2 + du sigma(theta)`` (``du = u_1 - u_2``), the floor
    is ``1/2 delta^2`` and the gap is ``g - 1/2 delta^2 = delta du s + 1/2 du^2 s^2`` with
    ``s = 1 - sigma(theta)``.
    """

    k1: Sequence[float] = (0.0, 0.0)
    k2: Sequence[float] = (0.5, 0.0)
    u1: float = 1.0
    u2: float = 0.5
    delta: float = 0.2

    def __post_init__(self):
        if not self.u1 > self.u2:
            raise ValueError(f"u1, u2: expected u1 > u2, got {self.u1} and {self.u2}")
        check_positive("delta", self.delta)
        self.K = torch.tensor([list(self.k1), list(self.k2)], dtype=torch.float64)
        if self.K.shape != (2, 2) or float((self.K[0] - self.K[1]).norm()) == 0:
            raise ValueError(f"k1, k2: expected two distinct points of R^2, got {self.K.tolist()}")
        self.U = torch.tensor([[self.u1], [self.u2]], dtype=torch.float64)
        self.y = torch.tensor([self.u1 + self.delta], dtype=torch.float64)
        self.w = (self.K[0] - self.K[1]) / math.sqrt(2)

    @property
    def du(self) -> float:
        return self.u1 - self.u2

    @property
    def floor(self) -> float:
        return 0.5 * self.delta**2

    def loss(self, q, kernel: str = "softmax") -> float:
        """The per-query loss ``g(q)`` with the given kernel."""
        r = outputs(torch.as_tensor(q, dtype=torch.float64)[None], self.K, self.U, kernel)[0] - self.y
        return 0.5 * float((r * r).sum())

    def grad(self, q, kernel: str = "softmax") -> torch.Tensor:
        """The gradient of ``g`` at ``q`` with the given kernel."""
        q = torch.as_tensor(q, dtype=torch.float64)[None]
        r = outputs(q, self.K, self.U, kernel)[0] - self.y
        return jacobians(q, self.K, self.U, kernel)[0].T @ r

    def L(self) -> float:
        """A global Lipschitz constant of the Softmax ``grad g``: ``||w||^2 du (delta + du) / 4 +
        ||w||^2 du^2 / 16`` (from ``|sigma'| <= 1/4``, ``|sigma''| <= 1/(6 sqrt 3) < 1/4``)."""
        w2 = float(self.w @ self.w)
        return w2 * (self.du * (self.delta + self.du) / 4 + self.du**2 / 16)

    def bounds(self, q0, eta: float, t) -> Dict[str, np.ndarray]:
        """The book's two-sided bounds on the gap at step ``t`` of GD with step ``eta``:
        ``lower = delta du / (1 + E0 + a e^(a / (1 + E0)) t)`` with
        ``a = eta ||w||^2 du (delta + du)``, ``E0 = exp(theta_0)``; and, if ``theta_0 >= 0``,
        ``upper = (delta du + du^2 / 2) / (E0 + eta ||w||^2 du delta t / 4)``."""
        theta0 = float(self.w @ torch.as_tensor(q0, dtype=torch.float64))
        E0 = math.exp(theta0)
        w2 = float(self.w @ self.w)
        a = eta * w2 * self.du * (self.delta + self.du)
        t = np.asarray(t, dtype=float)
        grow = a * math.exp(a / (1 + E0))           # the most E_t = exp(theta_t) can gain a step
        lower = self.delta * self.du / (1 + E0 + grow * t)
        upper = ((self.delta * self.du + self.du**2 / 2) / (E0 + eta * w2 * self.du * self.delta * t / 4)
                 if theta0 >= 0 else np.full_like(t, np.nan))
        return {"lower": lower, "upper": upper, "C": self.delta * self.du / grow,
                "t0": (1 + E0) / grow}


def gd_path(loss_grad, q0, eta: float, steps: int):
    """Plain GD ``q <- q - eta grad g(q)`` for ``steps`` steps; returns the losses ``(steps+1,)``,
    gradient norms and the final query. ``loss_grad(q)`` returns ``(loss, grad)``."""
    eta = check_positive("eta", eta)
    steps = check_int("steps", steps, minimum=0)
    q = torch.as_tensor(q0, dtype=torch.float64).clone()
    losses, gnorms = [], []
    for _ in range(steps + 1):
        f, g = loss_grad(q)
        losses.append(f)
        gnorms.append(float(g.norm()))
        q = q - eta * g
    return np.array(losses), np.array(gnorms), q


# ---------------------------------------------------------------------------------------------
# A budget-independent label for a loss curve
# ---------------------------------------------------------------------------------------------

LABELS = ("converged", "linear", "power law", "stalling")


def classify(f_quarter: float, f_half: float, f_end: float, f_ref: float,
             pl_half: float, pl_end: float, zero_tol: float = 1e-10) -> str:
    """Label a monotone run from its losses at steps ``T/4``, ``T/2``, ``T`` and its PL ratios
    ``||grad f||^2 / (2 f)`` averaged (geometric mean) over the windows ``[0.45 T, 0.5 T]``
    (``pl_half``) and ``[0.9 T, T]`` (``pl_end``); the averages smooth out the zig-zag of
    single iterates (see :func:`pl_windows`).

    Two scale-free numbers decide. ``kappa = pl_end / pl_half`` says whether a PL inequality
    holds along the tail: it is about 1 for a linear rate, about 1/2 for a power law
    ``f ~ t^-alpha`` and about 1/4 (or less) for a loss settling at a positive value with a
    ``1/t`` gap. ``r1 / r0``, with ``r0 = log(f(T/4) / f(T/2))`` and ``r1 = log(f(T/2) / f(T))``,
    is 2 for a geometric decay, 1 for a power law and about 1/2 (less for a faster gap, 0 on a
    plateau) for a loss settling at a positive value. The labels:

    * ``converged``: ``f(T) <= zero_tol * f_ref`` (numerically zero);
    * ``linear``: ``kappa >= 1/sqrt 2`` (the PL ratio is not decaying);
    * ``power law``: otherwise, if ``r1 >= r0 / sqrt 2`` (sublinear, the loss still heading to 0);
    * ``stalling``: otherwise (the decrease dies out at a positive loss).

    For the model curves above the label is the same at every ``T``; a finite run can still be
    caught in a transient (for example a plateau it is about to leave).
    """
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


def pl_windows(T: int):
    """The step windows whose mean log PL ratio :func:`classify` compares: ``[0.225 T, 0.25 T]``,
    ``[0.45 T, 0.5 T]`` and ``[0.9 T, T]`` (the first two serve a run judged at half the
    budget)."""
    T = check_int("T", T, minimum=8)
    return [(int(0.225 * T), T // 4), (int(0.45 * T), T // 2), (int(0.9 * T), T)]


def _window_mean(pl: np.ndarray, a: int, b: int) -> float:
    x = np.asarray(pl[a:b + 1], dtype=float)
    if np.any(x <= 0):
        return 0.0
    return float(np.exp(np.mean(np.log(x))))


def classify_curve(losses, pl=None, zero_tol: float = 1e-10, f_ref: Optional[float] = None) -> str:
    """:func:`classify` on a whole curve ``losses[0..T]``. ``pl`` (the PL ratios along the run)
    defaults to the relative decrease ``(f_t - f_{t+1}) / f_t``, which is ``2 eta`` times the PL
    ratio to first order for constant-step gradient descent; ``f_ref`` defaults to ``losses[0]``."""
    f = np.asarray(losses, dtype=float)
    T = len(f) - 1
    if T < 8:
        raise ValueError(f"losses: expected at least 9 values, got {len(f)}")
    if pl is None:
        pl = np.append(np.maximum(f[:-1] - f[1:], 0) / np.where(f[:-1] > 0, f[:-1], 1), 0.0)
        windows = [(a, min(b, T - 1)) for a, b in pl_windows(T)]
    else:
        pl = np.asarray(pl, dtype=float)
        windows = pl_windows(T)
    half, end = (_window_mean(pl, a, b) for a, b in windows[1:])
    return classify(f[T // 4], f[T // 2], f[T], f[0] if f_ref is None else f_ref, half, end, zero_tol)
