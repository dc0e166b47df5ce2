"""For the chapter *Joint training* (``book/joint-training.md``): the PL quantities along a
run, the sufficient condition of the joint-training theorem with its explicit constants, and
the checks, sweeps and figures of the chapter. The feature matrix, its eigenvalues and the
chapter's instances come from :mod:`tdlib.zeroloss`.

Notation as in :mod:`tdlib.zeroloss`. **Joint problem** (``W^Q, W^K, W^V`` trained):
``||grad f||^2 >= ||grad_V f||^2 >= 2 mu f`` with ``mu = lambda_min(B B^T) sigma_min(W^O)^2``;
:func:`sufficient_condition` checks the hypotheses of the chapter's joint-training theorem
with explicit constants.

Every function works in float64 whatever the model's dtype, and returns plain floats or float64
tensors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from .attention import KERNEL_NAMES, PARAMS, AttentionLayer, gaussian_width
from .checks import (as_tensor, check_choice, check_finite, check_int, check_positive, check_rank,
                     check_seed)
from .zeroloss import (F64, _check_ints, _check_kernels, _check_model, _data, _param,
                       feature_matrix, lambda_min, make_instance, output_singular_values,
                       residual, shared_output, stacked_values, value_rate)

# Relative safety margin applied to computed norms and eigenvalues in the sufficient-condition
# check, to cover float64 rounding (the check is not an interval computation).
SAFETY = 1e-9


# ---------------------------------------------------------------------------------------------
# PL quantities along joint training (result R2)
# ---------------------------------------------------------------------------------------------

def mu(model: AttentionLayer, X) -> float:
    """``mu = lambda_min(B B^T) sigma_min(W^O)^2``, the PL constant of the chapter at the current weights."""
    B = feature_matrix(model, X)
    smin, _ = output_singular_values(shared_output(model))
    return lambda_min(B) * smin**2


def pl_ratio(model: AttentionLayer, X, Y, params: Sequence[str] = ("W_Q", "W_K", "W_V")) -> Dict[str, float]:
    """``||grad f||^2 / (2 f)`` over ``params``, and the same ratio for each parameter alone.

    Returns ``{"pl_ratio": ..., "pl_ratio_W_Q": ..., ...}``. The chapter's PL inequality says
    ``pl_ratio >= pl_ratio_W_V >= mu`` at every point.
    """
    for p in params:
        check_choice("parameter", p, PARAMS)
    X, Y = _data(model, X, Y)
    Ws = [getattr(model, p) for p in params]
    flags = [W.requires_grad for W in Ws]
    try:
        for W in Ws:
            W.requires_grad_(True)
        loss = model.loss(X.to(model.W_Q.dtype), Y.to(model.W_Q.dtype))
        grads = torch.autograd.grad(loss, Ws)
    finally:
        for W, fl in zip(Ws, flags):
            W.requires_grad_(fl)
    f = float(loss.detach())
    sq = {p: float((g.detach().to(F64) ** 2).sum()) for p, g in zip(params, grads)}
    denom = 2 * f if f > 0 else float("nan")
    out = {"pl_ratio": sum(sq.values()) / denom}
    out.update({f"pl_ratio_{p}": v / denom for p, v in sq.items()})
    return out


def pl_ratio_from_history(history) -> np.ndarray:
    """``||grad f||^2 / (2 f)`` at every recorded iterate of a :class:`tdlib.History` (no extra cost).

    The trainer records ``||grad_p f||_F`` for each trained ``p``; this adds their squares.
    """
    from .train import History

    if not isinstance(history, History):
        raise TypeError(f"history: expected a tdlib.History (what tdlib.train returns), got "
                        f"{type(history).__name__}")
    loss = np.asarray(history.loss, dtype=float)
    sq = sum(np.asarray(v, dtype=float) ** 2 for v in history.grad_norm.values())
    with np.errstate(divide="ignore", invalid="ignore"):
        return sq / (2 * loss)


def certificate_callback(X, Y=None, every: int = 1, pl: bool = False) -> Callable:
    """A callback for ``tdlib.train(..., callback=...)`` that records the chapter's certificates.

    At every ``every``-th iterate it records ``lambda_min`` (``lambda_min(B_t B_t^T)``) and ``mu``
    (``mu_t = lambda_min sigma_min(W^O)^2``); with ``pl=True`` (needs ``Y``) also ``pl_ratio``
    (``||grad f||^2/(2f)`` over the trained parameters) and ``pl_ratio_W_V``. Skipped iterates
    record NaN so that ``history.extra[key][t]`` stays aligned with ``history.loss[t]``.
    (The PL ratio is also available for free from :func:`pl_ratio_from_history`.)
    """
    every = check_int("every", every)
    if pl and Y is None:
        raise ValueError("Y: expected the targets, got None (pl=True needs the targets Y)")
    X = as_tensor("X", X, dtype=F64)
    check_rank("X", X, 3, "(N, n, D)")
    if 0 in X.shape:
        raise ValueError(f"X: expected at least one sample, token and feature, got shape "
                         f"{tuple(X.shape)}")
    check_finite("X", X)
    if Y is not None:
        Y = as_tensor("Y", Y, dtype=F64)
        check_rank("Y", Y, 3, "(N, n, d_out)")
        if tuple(Y.shape[:2]) != tuple(X.shape[:2]):
            raise ValueError(f"Y: expected shape (N, n, d_out) with (N, n) = "
                             f"{tuple(X.shape[:2])} as in X, got {tuple(Y.shape)}")
        check_finite("Y", Y)

    def callback(model, t):
        keys = ["lambda_min", "mu"] + (["pl_ratio", "pl_ratio_W_V"] if pl else [])
        if t % every:
            return {k: float("nan") for k in keys}
        B = feature_matrix(model, X)
        lam = lambda_min(B)
        smin, _ = output_singular_values(shared_output(model))
        out = {"lambda_min": lam, "mu": lam * smin**2}
        if pl:
            trained = tuple(p for p in PARAMS if getattr(model, p).requires_grad) or ("W_Q", "W_K", "W_V")
            ratios = pl_ratio(model, X, Y, params=trained)
            out["pl_ratio"] = ratios["pl_ratio"]
            out["pl_ratio_W_V"] = ratios.get("pl_ratio_W_V", float("nan"))
        return out

    return callback


def distance(model: AttentionLayer, start: Dict[str, torch.Tensor], params: Sequence[str] = ("W_Q", "W_K", "W_V")) -> float:
    """``||theta - theta_0||_F`` over ``params``, with ``start`` a dict of the initial weights."""
    _check_model(model)
    if not isinstance(start, dict):
        raise TypeError(f"start: expected a dict of initial weights (see snapshot), got "
                        f"{type(start).__name__}")
    for p in params:
        check_choice("params", p, PARAMS)
        if p not in start or getattr(start[p], "shape", None) != getattr(model, p).shape:
            raise ValueError(f"start: expected {p} of shape {tuple(getattr(model, p).shape)}, "
                             f"got {getattr(start.get(p), 'shape', start.get(p))!r}")
    return math.sqrt(sum(float(((_param(model, p) - start[p].detach().to(F64)) ** 2).sum()) for p in params))


def snapshot(model: AttentionLayer) -> Dict[str, torch.Tensor]:
    """A detached float64 copy of every weight, e.g. ``theta_0`` for :func:`distance`."""
    _check_model(model)
    return {p: _param(model, p).clone() for p in PARAMS}


# ---------------------------------------------------------------------------------------------
# The sufficient condition of the joint-training theorem (result R2)
# ---------------------------------------------------------------------------------------------

C1_FACTOR = 1.0 - 1.0 / math.sqrt(2.0)
"""``||B_theta - B_0||_2 <= (1 - 1/sqrt 2) sqrt(lambda_0)`` keeps ``lambda_min >= lambda_0 / 2``."""


@dataclass
class JointConstants:
    """The explicit constants of the joint-training theorem on the ball of radius ``r``.

    ``L_B``: Lipschitz constant of ``(W^Q, W^K) -> B`` (Frobenius norms); ``M_B``: bound on its
    second derivative; ``beta``: bound on the Jacobian of the residual map; ``L``: bound on the
    Hessian of ``f`` (smoothness); ``nu``, ``b``, ``res``: bounds on ``||V||_2``, ``||B||_2`` and
    ``||R||_F`` over the ball.
    """

    r: float
    L_B: float
    M_B: float
    nu: float
    b: float
    beta: float
    res: float
    L: float


@dataclass
class JointCondition:
    """Result of :func:`sufficient_condition`: the hypotheses of the joint theorem, checked.

    ``holds`` is True when a radius ``r`` was found with
    (C1) ``L_B(r) r <= (1 - 1/sqrt2) sqrt(lambda_0)`` and
    (C2) ``2 beta(r) sqrt(2 f_0) / mu <= r``, where ``mu = lambda_0 sigma_min(W^O)^2 / 2``;
    then GD with any step ``lr <= lr_max = 1/L(r)`` (C3) stays in the ball, keeps
    ``lambda_min(B_t B_t^T) >= lambda_0 / 2`` and has ``f_t <= (1 - lr mu)^t f_0``.
    """

    holds: bool
    kernel: str
    f0: float
    lambda0: float
    sigma_min: float
    sigma_max: float
    mu: float
    r_max: float
    constants: Optional[JointConstants]
    reasons: List[str] = field(default_factory=list)

    @property
    def r(self) -> float:
        return self.constants.r if self.constants else float("nan")

    @property
    def lr_max(self) -> float:
        """The largest step the theorem allows, ``1/L(r)`` (NaN when the condition fails)."""
        return 1.0 / self.constants.L if (self.holds and self.constants) else float("nan")

    def rate(self, lr: float | None = None) -> float:
        """The guaranteed per-step factor ``1 - lr * mu`` (``lr`` defaults to ``lr_max``)."""
        lr = self.lr_max if lr is None else lr
        return 1.0 - lr * self.mu

    def bound(self, steps: int, lr: float | None = None) -> np.ndarray:
        """The guaranteed curve ``(1 - lr mu)^t f_0`` for ``t = 0..steps``."""
        return self.f0 * self.rate(lr) ** np.arange(steps + 1)

    def summary(self) -> str:
        """A readable report of the conditions, the constants and the verdict (lines of at most
        88 characters)."""
        import textwrap

        head = "holds" if self.holds else "does not hold"
        lines = [f"sufficient condition ({self.kernel}) {head}:",
                 f"  f_0 = {self.f0:.4g}, lambda_0 = {self.lambda0:.4g}, "
                 f"sigma_min(W_O) = {self.sigma_min:.4g}, mu = {self.mu:.4g}",
                 f"  largest radius allowed by (C1): r_max = {self.r_max:.4g}"]
        c = self.constants
        if c is not None:
            need = 2 * c.beta * math.sqrt(2 * self.f0) / self.mu if self.mu > 0 else math.inf
            lines += [f"  at r = {c.r:.4g}: L_B = {c.L_B:.4g}, M_B = {c.M_B:.4g}, "
                      f"beta = {c.beta:.4g}, L = {c.L:.4g}",
                      f"  (C2) needs 2 beta sqrt(2 f_0) / mu = {need:.4g} <= r"]
        if self.holds:
            lines.append(f"  step lr <= lr_max = {self.lr_max:.4g}; "
                         f"guaranteed factor 1 - lr_max mu = {self.rate():.6f}")
        for m in self.reasons:
            lines += textwrap.wrap(m, 88, initial_indent="  - ", subsequent_indent="    ")
        return "\n".join(lines)


def _kernel_kind(model) -> tuple:
    name = model.kernel_name
    if name not in KERNEL_NAMES:
        raise ValueError(
            f"sufficient_condition: explicit constants are derived for the 'softmax' and 'gaussian' "
            f"kernels only, got kernel {name!r}"
        )
    c = None
    if name == "gaussian":
        c = getattr(model.kernel, "c", None)
        if c is None:
            c = gaussian_width(model.d)
    return name, c


def joint_constants(model: AttentionLayer, X, Y, r: float, _pre=None) -> JointConstants:
    """The theorem's constants on the ball ``||theta - theta_0||_F <= r`` around the current weights.

    ``theta = (W^Q, W^K, W^V)``, ``W^O`` fixed and shared. With ``Gamma_i = ||X_i||_2`` and, for
    Softmax, ``Omega_i(r) = max_h max(||X_i W^Q_h||_2, ||X_i W^K_h||_2) + Gamma_i r``:

    * Softmax: ``L_B = sqrt(sum_i Gamma_i^4 Omega_i^2 / (2d))``,
      ``M_B = sqrt(sum_i [Gamma_i^3 (2 Omega_i^2/d + 1/(2 sqrt d))]^2)``;
    * Gaussian (``S = exp(-||q-k||^2/c)``): ``L_B = 2 sqrt(n/(c e)) sqrt(sum_i Gamma_i^4)``,
      ``M_B = (4n/c)(1 + 2/e) sqrt(sum_i Gamma_i^6)`` (independent of ``r``);
    * ``nu = ||V_0||_2 + r``, ``b = ||B_0||_2 + L_B r``,
      ``beta = ||W^O||_2 sqrt(L_B^2 nu^2 + b^2)``, ``res = sqrt(2 f_0) + beta r``,
      ``L = beta^2 + res ||W^O||_2 (M_B nu + L_B)``.
    """
    r = check_positive("r (radius)", r, strict=False)
    pre = _pre if _pre is not None else _precompute(model, X, Y)
    xi, kind, c, n, d = pre["xi"], pre["kind"], pre["c"], pre["n"], pre["d"]
    up = 1 + SAFETY
    if kind == "softmax":
        kappa = pre["kappa0"] + xi * r
        L_B = math.sqrt(float((xi**4 * kappa**2).sum()) / (2 * d))
        M_B = math.sqrt(float(((xi**3 * (2 * kappa**2 / d + 1 / (2 * math.sqrt(d)))) ** 2).sum()))
    else:
        L_B = 2 * math.sqrt(n / (c * math.e)) * math.sqrt(float((xi**4).sum()))
        M_B = (4 * n / c) * (1 + 2 / math.e) * math.sqrt(float((xi**6).sum()))
    L_B, M_B = L_B * up, M_B * up
    nu = pre["V0_norm"] * up + r
    b = pre["B0_norm"] * up + L_B * r
    wo = pre["sigma_max"] * up
    beta = wo * math.sqrt(L_B**2 * nu**2 + b**2)
    res = math.sqrt(2 * pre["f0"]) * up + beta * r
    L = beta**2 + res * wo * (M_B * nu + L_B)
    return JointConstants(r=r, L_B=L_B, M_B=M_B, nu=nu, b=b, beta=beta, res=res, L=L)


def _precompute(model, X, Y) -> dict:
    X, Y = _data(model, X, Y)
    kind, c = _kernel_kind(model)
    W_O = shared_output(model)
    smin, smax = output_singular_values(W_O)
    B = feature_matrix(model, X)
    xi = torch.linalg.matrix_norm(X, ord=2)                       # (N,)
    WQ, WK = _param(model, "W_Q"), _param(model, "W_K")
    Qn = torch.linalg.matrix_norm(torch.einsum("Nnd,hde->Nhne", X, WQ), ord=2)   # (N, H)
    Kn = torch.linalg.matrix_norm(torch.einsum("Nnd,hde->Nhne", X, WK), ord=2)
    kappa0 = torch.maximum(Qn, Kn).max(dim=1).values              # (N,)
    R = residual(model, X, Y)
    return dict(kind=kind, c=c, n=X.shape[1], d=model.d, xi=xi.numpy(), kappa0=kappa0.numpy(),
                f0=0.5 * float((R**2).sum()), lambda0=lambda_min(B), B0_norm=float(torch.linalg.matrix_norm(B, 2)),
                V0_norm=float(torch.linalg.matrix_norm(stacked_values(model), 2)),
                sigma_min=smin, sigma_max=smax)


def sufficient_condition(model: AttentionLayer, X, Y, grid: int = 100) -> JointCondition:
    """Check the hypotheses of the chapter's joint-training theorem at the current weights.

    ``theta = (W^Q, W^K, W^V)`` is trained, ``W^O`` stays fixed and must be shared by all heads.
    The check searches the radius ``r`` of the ball around ``theta_0`` (``grid`` points in
    ``(0, r_max]`` plus bisection on the first feasible interval) for the smallest ``r`` with

    * (C1) ``L_B(r) r <= (1 - 1/sqrt 2) sqrt(lambda_0)``: then ``lambda_min(B B^T) >= lambda_0/2``
      on the whole ball;
    * (C2) ``2 beta(r) sqrt(2 f_0) / mu <= r`` with ``mu = lambda_0 sigma_min(W^O)^2 / 2``: then GD
      never leaves the ball.

    The step-size condition (C3) is ``lr <= 1/L(r)``, reported as ``lr_max``. Constants are those
    of :func:`joint_constants`. What is rigorous: the constants are upper bounds proved in the
    chapter, evaluated in float64 with a relative safety margin of ``1e-9`` (not interval
    arithmetic).
    """
    _check_model(model)
    grid = check_int("grid", grid, minimum=2)
    pre = _precompute(model, X, Y)
    lam0 = pre["lambda0"] * (1 - SAFETY)
    smin = pre["sigma_min"] * (1 - SAFETY)
    mu_ = lam0 * smin**2 / 2
    base = dict(kernel=pre["kind"], f0=pre["f0"], lambda0=pre["lambda0"], sigma_min=pre["sigma_min"],
                sigma_max=pre["sigma_max"], mu=mu_)
    reasons: List[str] = []
    Nn = pre["n"] * len(pre["xi"])
    if model.H * model.D < Nn:
        reasons.append(f"HD = {model.H * model.D} < Nn = {Nn}: B B^T is singular (lambda_0 = 0)")
    if lam0 <= 0:
        reasons.append("lambda_0 = lambda_min(B_0 B_0^T) is zero: no PL constant")
    if smin <= 0:
        reasons.append("W_O does not have full column rank (sigma_min(W_O) = 0)")
    if reasons:
        return JointCondition(holds=False, r_max=0.0, constants=None, reasons=reasons, **base)
    if pre["f0"] == 0:
        k = joint_constants(model, X, Y, 0.0, _pre=pre)
        return JointCondition(holds=True, r_max=0.0, constants=k, reasons=["f_0 = 0: already a global minimum"], **base)

    s0 = math.sqrt(lam0)
    c1 = lambda r: joint_constants(model, X, Y, r, _pre=pre).L_B * r - C1_FACTOR * s0

    # (C1) is monotone in r: find r_max by doubling and bisection.
    hi = s0 / max(joint_constants(model, X, Y, 0.0, _pre=pre).L_B, 1e-300)
    while c1(hi) <= 0:
        hi *= 2
    lo = 0.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if c1(mid) <= 0 else (lo, mid)
    r_max = lo

    def c2(r):
        k = joint_constants(model, X, Y, r, _pre=pre)
        return r - 2 * k.beta * math.sqrt(2 * pre["f0"]) / mu_, k

    radii = r_max * np.geomspace(1e-6, 1.0, grid)
    prev = 0.0
    for r in radii:
        g, k = c2(float(r))
        if g >= 0:
            a, bb = prev, float(r)           # smallest feasible r lies in (a, bb]
            for _ in range(40):
                mid = 0.5 * (a + bb)
                if c2(mid)[0] >= 0:
                    bb = mid
                else:
                    a = mid
            k = joint_constants(model, X, Y, bb, _pre=pre)
            return JointCondition(holds=True, r_max=r_max, constants=k, reasons=[], **base)
        prev = float(r)
    g, k = c2(r_max)
    reasons.append(
        f"(C2) fails for every r <= r_max: the initial loss is too large for lambda_0 "
        f"(at r_max, 2 beta sqrt(2 f_0)/mu = {r_max - g:.3g} > r_max = {r_max:.3g})"
    )
    return JointCondition(holds=False, r_max=r_max, constants=k, reasons=reasons, **base)


def residual_limit(model: AttentionLayer, X, Y, grid: int = 400) -> float:
    """The largest initial residual ``sqrt(2 f_0) = ||R_0||_F`` allowing (C1)-(C2).

    (C1) does not involve ``Y``, and (C2) reads ``sqrt(2 f_0) <= mu r / (2 beta(r))``
    with ``beta(r)`` independent of ``Y`` too. So the condition holds at the current
    weights for every target whose initial residual norm is below
    ``max_{0 < r <= r_max} mu r / (2 beta(r))`` and for none above it; this returns that
    maximum over ``grid`` radii (``r_max`` included), a lower bound on the exact one.
    With ``W^V_0 = 0`` the residual is ``-Y``, so targets ``c Y`` pass exactly when
    ``c ||Y||_F`` is below the returned value. Returns 0 when ``lambda_0 = 0`` or (C1)
    leaves no radius.
    """
    grid = check_int("grid", grid, minimum=2)
    cond = sufficient_condition(model, X, Y)
    if cond.r_max <= 0 or cond.mu <= 0:
        return 0.0
    pre = _precompute(model, X, Y)
    best = 0.0
    for r in cond.r_max * np.geomspace(1e-6, 1.0, grid):
        k = joint_constants(model, X, Y, float(r), _pre=pre)
        best = max(best, cond.mu * float(r) / (2 * k.beta))
    return best




# ---------------------------------------------------------------------------------------------
# Checks, sweeps, statistics and figures of the chapter
# ---------------------------------------------------------------------------------------------

def perturb(model: AttentionLayer, scale: float = 0.3, seed: int = 0) -> AttentionLayer:
    """Move ``model`` away from the initialization, in place: independent
    ``N(0, scale^2)`` noise on ``W^Q`` and ``W^K`` (they are untied) and standard normal ``W^V``."""
    _check_model(model)
    scale = check_positive("scale", scale, strict=False)
    seed = check_seed("seed", seed)
    g = torch.Generator().manual_seed(int(seed))
    noise = lambda W: torch.randn(W.shape, dtype=F64, generator=g)  # noqa: E731
    model.set_weights(W_Q=_param(model, "W_Q") + scale * noise(model.W_Q),
                      W_K=_param(model, "W_K") + scale * noise(model.W_K),
                      W_V=noise(model.W_V))
    return model


def derivative_bound_ratios(model: AttentionLayer, X, Y, r: float, samples: int = 8,
                            seed: int = 0, eps: float = 1e-5) -> Dict[str, float]:
    """Largest measured value divided by its bound of :func:`joint_constants`, over ``samples``
    random points of the ball of radius ``r`` around the current weights and random unit
    directions ``u``: ``dB`` (``||DB[u]||_F / (L_B ||u_QK||)``), ``d2B`` (second difference over
    ``M_B ||u_QK||^2``), ``dR`` (``||DR[u]||_F / beta``) and ``hess`` (exact ``|u^T H u| / L``,
    by double backward). Every ratio is at most 1 when the lemma holds. Restores the weights.
    """
    r = check_positive("r (radius)", r)
    samples = check_int("samples", samples)
    X, Y = _data(model, X, Y)
    k, theta0 = joint_constants(model, X, Y, r), snapshot(model)
    eps = check_positive("eps", eps)
    names, g = ("W_Q", "W_K", "W_V"), torch.Generator().manual_seed(check_seed("seed", seed))

    def unit():
        u = {p: torch.randn(theta0[p].shape, dtype=F64, generator=g) for p in names}
        norm = math.sqrt(sum(float((v**2).sum()) for v in u.values()))
        return {p: v / norm for p, v in u.items()}

    worst = dict(dB=0.0, d2B=0.0, dR=0.0, hess=0.0)
    try:
        for _ in range(samples):
            c, u = unit(), unit()
            a = 0.9 * r * float(torch.rand((), generator=g))
            theta = {p: theta0[p] + a * c[p] for p in names}
            feats = []
            for sgn in (1, -1, 0):
                model.set_weights(**{p: theta[p] + sgn * eps * u[p] for p in names})
                feats.append((feature_matrix(model, X), residual(model, X, Y)))
            (Bp, Rp), (Bm, Rm), (B0, _) = feats
            uqk = math.sqrt(float((u["W_Q"] ** 2).sum() + (u["W_K"] ** 2).sum()))
            Ws = [getattr(model, p) for p in names]
            flags = [W.requires_grad for W in Ws]
            for W in Ws:
                W.requires_grad_(True)
            grads = torch.autograd.grad(model.loss(X, Y), Ws, create_graph=True)
            hu = torch.autograd.grad(sum((gi * u[p]).sum() for gi, p in zip(grads, names)), Ws)
            for W, fl in zip(Ws, flags):
                W.requires_grad_(fl)
            quad = abs(float(sum((hi * u[p]).sum() for hi, p in zip(hu, names))))
            dB = float(((Bp - Bm) / (2 * eps)).norm()) / (k.L_B * uqk)
            d2B = float(((Bp - 2 * B0 + Bm) / eps**2).norm()) / (k.M_B * uqk**2)
            dR = float(((Rp - Rm) / (2 * eps)).norm()) / k.beta
            for key, v in (("dB", dB), ("d2B", d2B), ("dR", dR), ("hess", quad / k.L)):
                worst[key] = max(worst[key], v)
    finally:
        model.set_weights(**theta0)
    return worst


def certified_instance(kernel: str, y_scale: float, seeds, D: int = 96, N: int = 2, n: int = 3):
    """The first instance of :func:`make_instance` over ``seeds`` on which the sufficient
    condition holds: ``(seed, model, X, Y, condition)``. Raises ``RuntimeError`` if none does."""
    check_choice("kernel", kernel, KERNEL_NAMES)
    y_scale = check_positive("y_scale", y_scale)
    D, N, n = check_int("D", D), check_int("N", N), check_int("n", n)
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise TypeError(f"seeds: expected an iterable of seeds, got {seeds!r}")
    tried = 0
    for seed in seeds:   # lazily: a generator of fresh seeds may be shared by several calls
        seed = check_seed("seeds", seed)
        tried += 1
        m, X, Y = make_instance(kernel, N=N, n=n, D=D, y_scale=y_scale, seed=seed)
        cond = sufficient_condition(m, X, Y)
        if cond.holds:
            return seed, m, X, Y, cond
    if not tried:
        raise ValueError("seeds: expected at least one seed, got none (an exhausted iterator?)")
    raise RuntimeError(f"certified_instance: the condition failed on all {tried} {kernel} "
                       f"instances (y_scale={y_scale}, D={D}); try a smaller y_scale or larger D")


@dataclass
class JointRun:
    """A joint run of :func:`joint_run` against the joint theorem's guarantees.

    ``loss`` and ``bound`` (``(1 - eta mu)^t f_0``) per step; ``lambda_ratio``:
    ``min_t lambda_min(B_t B_t^T) / lambda_0``; ``distance``: ``max_t ||theta_t - theta_0||``
    against the radius ``r``; ``measured``, ``guaranteed`` (``1 - eta mu``) and ``value_only``
    (``(1 - x)^2``, ``x = eta lambda_0 sigma_min^2``) factors per step.
    """

    kernel: str
    loss: np.ndarray
    bound: np.ndarray
    lambda_ratio: float
    distance: float
    r: float
    x: float
    measured: float
    guaranteed: float
    value_only: float

    @property
    def holds(self) -> bool:
        """The three conclusions of the theorem, measured along the run."""
        return bool(np.all(self.loss <= self.bound * (1 + 1e-9)) and self.lambda_ratio >= 0.5
                    and self.distance <= self.r)

    def __str__(self) -> str:
        T = len(self.loss) - 1
        return (f"  factor per step: measured {self.measured:.4f}, guaranteed "
                f"{self.guaranteed:.4f}, value-only {self.value_only:.4f}\n"
                f"  f_{T}/f_0 = {self.loss[-1] / self.loss[0]:.2e} <= "
                f"{self.bound[-1] / self.loss[0]:.2e}; "
                f"min lambda_min/lambda_0 = {self.lambda_ratio:.4f} >= 1/2\n"
                f"  max |theta_t - theta_0| = {self.distance:.2e} <= r = {self.r:.2e}")


def joint_run(model: AttentionLayer, X, Y, cond: JointCondition, steps: int = 40,
              tail: int = 15) -> JointRun:
    """``tdlib.train`` on ``(W^Q, W^K, W^V)`` with the theorem's step ``cond.lr_max``, recording
    ``lambda_min(B_t B_t^T)`` and ``||theta_t - theta_0||`` at every step."""
    from .rates import fit_rate
    from .train import train

    if not isinstance(cond, JointCondition) or not cond.holds:
        raise ValueError("cond: expected a JointCondition that holds (see sufficient_condition)")
    start, cert = snapshot(model), certificate_callback(X)
    hist = train(model, X, Y, lr=cond.lr_max, steps=steps, trainable=("W_Q", "W_K", "W_V"),
                 callback=lambda mm, t: {**cert(mm, t), "dist": distance(mm, start)},
                 progress=False)
    f = np.array(hist.loss)
    x = cond.lr_max * cond.lambda0 * cond.sigma_min**2
    return JointRun(kernel=cond.kernel, loss=f, bound=cond.bound(len(f) - 1),
                    lambda_ratio=min(hist.extra["lambda_min"]) / cond.lambda0,
                    distance=max(hist.extra["dist"]), r=cond.r, x=x,
                    measured=fit_rate(f, tail=min(tail, len(f))).factor,
                    guaranteed=cond.rate(), value_only=(1 - x) ** 2)


def plot_joint_runs(runs: Sequence[JointRun]):
    """``f_t/f_0`` of each run (solid) against its guarantee ``(1 - eta mu)^t`` (dotted)."""
    from .plotting import kernel_color, kernel_style, new_axes

    if not runs:
        raise ValueError("runs: expected at least one JointRun, got none")
    ax = new_axes()
    for run in runs:
        f0 = run.loss[0]
        ax.semilogy(run.loss / f0, **kernel_style(run.kernel), label=f"{run.kernel}: measured")
        ax.semilogy(run.bound / f0, ":", color=kernel_color(run.kernel), lw=1.2,
                    label=f"{run.kernel}: guaranteed $(1-\\eta\\mu)^t$")
    ax.set_xlabel("step $t$")
    ax.set_ylabel("$f_t / f_0$")
    ax.legend()
    return ax.figure


@dataclass
class ConditionSweep:
    """:func:`condition_sweep`: per kernel, ``lam[k]`` (``lambda_0``) and ``holds[k]`` of shape
    ``(len(D), len(seeds))``; ``lamX`` is ``lambda_min(X X^T)`` of the stacked tokens."""

    D: list
    lam: dict
    holds: dict
    lamX: np.ndarray
    y_scale: float
    seconds: float


def condition_sweep(D_list, seeds, y_scale: float = 0.003, N: int = 2, n: int = 3,
                    kernels=KERNEL_NAMES) -> ConditionSweep:
    """``lambda_0`` and the verdict of :func:`sufficient_condition` on fresh instances of
    :func:`make_instance` for every ``D`` in ``D_list`` and seed (the same data for each kernel)."""
    import time

    D_list, seeds = _check_ints("D_list", D_list), _check_ints("seeds", seeds, minimum=0)
    kernels, y_scale = _check_kernels(kernels), check_positive("y_scale", y_scale)
    shape, t0 = (len(D_list), len(seeds)), time.perf_counter()
    lam = {k: np.zeros(shape) for k in kernels}
    holds = {k: np.zeros(shape, dtype=bool) for k in kernels}
    lamX = np.zeros(shape)
    for kernel in kernels:
        for a, D in enumerate(D_list):
            for j, s in enumerate(seeds):
                m, X, Y = make_instance(kernel, N=N, n=n, D=D, y_scale=y_scale, seed=s)
                cond = sufficient_condition(m, X, Y)
                lam[kernel][a, j], holds[kernel][a, j] = cond.lambda0, cond.holds
                lamX[a, j] = lambda_min(X.reshape(-1, D))
    return ConditionSweep(D_list, lam, holds, lamX, y_scale, time.perf_counter() - t0)


def plot_condition_sweep(sweep: ConditionSweep, Nn: Optional[int] = None):
    """Left: median and interquartile band of ``lambda_0`` against ``D``, with
    ``lambda_min(X X^T)`` dashed; right: fraction of draws satisfying (C1)-(C2)."""
    import matplotlib.pyplot as plt

    from .plotting import WIDTH, kernel_color, kernel_style

    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.6))
    for kernel in sweep.lam:
        q25, q50, q75 = np.quantile(sweep.lam[kernel], [0.25, 0.5, 0.75], axis=1)
        style = kernel_style(kernel, markevery=None)
        axes[0].plot(sweep.D, q50, **style, label=kernel)
        axes[0].fill_between(sweep.D, q25, q75, color=kernel_color(kernel), alpha=0.2)
        axes[1].plot(sweep.D, sweep.holds[kernel].mean(1), **style, label=kernel)
    axes[0].plot(sweep.D, np.median(sweep.lamX, 1), "k--", lw=1.2, zorder=5,
                 label=r"$\lambda_{\min}(XX^\top)$")
    axes[0].set_yscale("log")
    axes[0].set_ylabel(r"$\lambda_{\min}(B_0B_0^\top)$")
    axes[1].set_ylabel("fraction satisfying (C1)-(C2)")
    axes[1].set_ylim(-0.03, 1.03)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("embedding dimension $D$")
        if Nn is not None:
            ax.axvline(Nn, color="#999999", lw=0.8)
    axes[0].legend()
    return fig


def half_pass_dimension(sweep: ConditionSweep) -> Dict[str, Optional[int]]:
    """Per kernel, the first ``D`` at which at least half of the draws satisfy the condition
    (None if there is none)."""
    return {k: next((D for D, p in zip(sweep.D, h.mean(1)) if p >= 0.5), None)
            for k, h in sweep.holds.items()}


def target_limits(D_list, seeds, N: int = 2, n: int = 3, kernels=KERNEL_NAMES) -> dict:
    """The largest target scale ``tau_max`` that passes (C1)-(C2), per kernel an array of shape
    ``(len(D_list), len(seeds))``: :func:`residual_limit` divided by ``||Y||_F / tau``
    (instances with ``tau = 1``, so the divisor is ``||Y||_F``)."""
    D_list, seeds = _check_ints("D_list", D_list), _check_ints("seeds", seeds, minimum=0)
    out = {k: np.zeros((len(D_list), len(seeds))) for k in _check_kernels(kernels)}
    for kernel, arr in out.items():
        for a, D in enumerate(D_list):
            for j, s in enumerate(seeds):
                m, X, Y = make_instance(kernel, N=N, n=n, D=D, seed=s)
                arr[a, j] = residual_limit(m, X, Y) / float(Y.norm())
    return out


def plot_target_limits(D_list, tau_max: dict, tau: Optional[float] = None):
    """Median and interquartile band of ``tau_max`` against ``D`` (log-log), with the target
    scale ``tau`` of the previous figure dashed."""
    from .plotting import kernel_color, kernel_style, new_axes

    ax = new_axes()
    for kernel, arr in tau_max.items():
        q25, q50, q75 = np.quantile(arr, [0.25, 0.5, 0.75], axis=1)
        ax.plot(D_list, q50, **kernel_style(kernel, markevery=None), label=kernel)
        ax.fill_between(D_list, q25, q75, color=kernel_color(kernel), alpha=0.2)
    if tau is not None:
        ax.axhline(tau, color="k", ls="--", lw=1.2, label=rf"$\tau$ = {tau} (figure above)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("embedding dimension $D$")
    ax.set_ylabel(r"largest target scale $\tau_{\max}$")
    ax.legend()
    return ax.figure


def pl_runs(seeds=(200, 201, 202), kernels=KERNEL_NAMES, D: int = 48, steps: int = 300,
            step_factor: float = 0.5, N: int = 2, n: int = 3) -> list:
    """Joint runs far outside the theorem (``tau = 1``), recording ``mu_t``:
    ``[(kernel, seed index, History), ...]``, with ``eta = step_factor / L`` (``L`` of the value
    block at initialization) and the stopping tolerance ``1e-24 f_0``."""
    from .train import train

    seeds, kernels = _check_ints("seeds", seeds, minimum=0), _check_kernels(kernels)
    step_factor = check_positive("step_factor", step_factor)
    runs = []
    for kernel in kernels:
        for j, s in enumerate(seeds):
            m, X, Y = make_instance(kernel, N=N, n=n, D=D, y_scale=1.0, seed=s)
            f0 = float(m.loss(X, Y).detach())
            hist = train(m, X, Y, lr=step_factor / value_rate(m, X).L, steps=steps,
                         tol=1e-24 * f0, callback=certificate_callback(X), progress=False)
            runs.append((kernel, j, hist))
    return runs


def pl_summary(runs) -> List[dict]:
    """Per run of :func:`pl_runs`: ``kernel``, ``ratio`` (``min_t`` PL ratio ``/ mu_t``, at least 1
    by the PL lemma), ``mu_drop`` (``min_t mu_t / mu_0``), ``final`` (``f_T/f_0``), ``steps``."""
    out = []
    for kernel, _, hist in runs:
        mu_t, ratio = np.asarray(hist.extra["mu"], float), pl_ratio_from_history(hist)
        out.append(dict(kernel=kernel, ratio=float(np.min(ratio / mu_t)),
                        mu_drop=float(mu_t.min() / mu_t[0]),
                        final=hist.final_loss / hist.loss[0], steps=hist.steps))
    return out


def plot_pl_runs(runs):
    """Left: PL ratio against ``mu_t`` at every iterate (the lemma puts every point above the
    diagonal); right: ``mu_t / mu_0`` per run, with ``1/2`` dashed."""
    import matplotlib.pyplot as plt

    from .plotting import KERNEL_STYLES, WIDTH, kernel_color

    if not runs:
        raise ValueError("runs: expected at least one run of pl_runs, got none")
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.6))
    lo, hi = np.inf, 0.0
    for kernel, s, hist in runs:
        mu_t, ratio = np.asarray(hist.extra["mu"], float), pl_ratio_from_history(hist)
        c, style = kernel_color(kernel), KERNEL_STYLES[kernel]
        axes[0].scatter(mu_t, ratio, s=8, color=c, marker=style["marker"], alpha=0.5,
                        label=kernel if s == 0 else None)
        # runs that stay near mu_0 coincide: staggered markers, one shape per seed
        axes[1].semilogy(mu_t / mu_t[0], color=c, ls=style["linestyle"], lw=1.2,
                         marker="o^Dsv"[s % 5], markevery=(6 * s + 3 * (kernel == "softmax"), 36),
                         ms=5, mfc="white", label=f"{kernel}, seed {s}")
        lo, hi = min(lo, mu_t.min(), ratio.min()), max(hi, mu_t.max(), ratio.max())
    grid = np.geomspace(lo / 1.5, hi * 1.5, 10)
    axes[0].plot(grid, grid, "k--", lw=1.2, label=r"$\|\nabla f\|^2/2f = \mu_t$")
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    axes[0].set_xlabel(r"$\mu_t = \lambda_{\min}(B_tB_t^\top)\,\sigma_{\min}(W^O)^2$")
    axes[0].set_ylabel(r"PL ratio $\|\nabla f(\theta_t)\|^2 / (2 f_t)$")
    axes[0].legend()
    axes[1].axhline(0.5, color="k", ls="--", lw=1.2, label=r"$\mu_t = \mu_0/2$")
    axes[1].set_xlabel("step $t$")
    axes[1].set_ylabel(r"$\mu_t / \mu_0$")
    axes[1].legend(ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.22), handlelength=2.5,
                   fontsize="small")
    return fig



__all__ = [
    "mu", "pl_ratio", "pl_ratio_from_history", "certificate_callback", "distance", "snapshot",
    "JointConstants", "JointCondition", "joint_constants", "sufficient_condition",
    "residual_limit", "perturb", "derivative_bound_ratios", "certified_instance", "JointRun",
    "joint_run", "plot_joint_runs", "ConditionSweep", "condition_sweep", "plot_condition_sweep",
    "half_pass_dimension", "target_limits", "plot_target_limits", "pl_runs", "pl_summary",
    "plot_pl_runs",
]
