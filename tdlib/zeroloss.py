"""For the chapter *Gradient descent reaches zero loss*: the feature matrix, value-only rates
and the certificates of joint training.

Notation (the book's). Data ``X`` of shape ``(N, n, D)``, targets ``Y`` of shape ``(N, n, d_out)``;
the layer ``T(X_i) = sum_h S_h(X_i) X_i W^V_h W^O_h`` with ``H`` heads; the loss
``f = 1/2 sum_i ||T(X_i) - Y_i||_F^2``. Rows are stacked sample by sample (row ``i*n + k`` is token
``k`` of sample ``i``), so the stacked targets and residual are ``(Nn, d_out)`` matrices.

* **Feature matrix.** ``B_h = [S_h(X_1) X_1; ...; S_h(X_N) X_N]`` of shape ``(Nn, D)`` and
  ``B = [B_1 ... B_H]`` of shape ``(Nn, HD)``. With one ``W^O`` shared by all heads and the value
  blocks stacked as ``V = [W^V_1; ...; W^V_H]`` of shape ``(HD, d_v)``, the stacked output is
  ``B V W^O`` and the residual is ``R = B V W^O - Y``.
* **Value-only problem** (``W^Q, W^K, W^O`` fixed): a linear least-squares problem in ``V``;
  GD gives ``R_{t+1} = R_t - eta B B^T R_t W^O^T W^O`` exactly.
* **Joint problem** (``W^Q, W^K, W^V`` trained): ``||grad f||^2 >= ||grad_V f||^2 >= 2 mu f`` with
  ``mu = lambda_min(B B^T) sigma_min(W^O)^2``; :func:`sufficient_condition` checks the hypotheses
  of the chapter's joint-training theorem with explicit constants.

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
from .checks import as_tensor, check_choice, check_finite, check_int, check_positive, check_rank

F64 = torch.float64

# Relative safety margin applied to computed norms and eigenvalues in the sufficient-condition
# check, to cover float64 rounding (the check is not an interval computation).
SAFETY = 1e-9


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------

def _check_model(model) -> AttentionLayer:
    if not isinstance(model, AttentionLayer):
        raise TypeError(f"model: expected a tdlib.AttentionLayer, got {type(model).__name__}")
    return model


def _data(model, X, Y=None):
    """Validated float64 copies of ``X`` (and ``Y``) for ``model``."""
    _check_model(model)
    if Y is None:
        return model.check_X(X).detach().to(F64)
    X, Y = model.check_XY(X, Y)
    return X.detach().to(F64), Y.detach().to(F64)


def _param(model, name) -> torch.Tensor:
    return getattr(model, name).detach().to(F64)


# ---------------------------------------------------------------------------------------------
# The chapter's regime
# ---------------------------------------------------------------------------------------------

def make_instance(kernel: str = "gaussian", N: int = 2, n: int = 3, D: int = 48, H: int = 1, d: int = 16,
                  d_out: int = 1, x_scale: float = 2.0, s: float = 1.0, y_scale: float = 1.0,
                  tied: bool = True, seed: int = 0, dtype=F64):
    """Random data and a student layer in the regime of the zero-loss chapter: ``(model, X, Y)``.

    * tokens ``X_i`` with i.i.d. ``N(0, x_scale^2/D)`` entries (norm about ``x_scale``), targets ``Y``
      with i.i.d. ``N(0, y_scale^2)`` entries, independent of ``X``;
    * ``W^Q_h`` with i.i.d. ``N(0, s^2)`` entries, *not* shrinking with ``D``, so that attention
      logits keep a ``D``-independent spread; with ``tied=True``, ``W^K_h = W^Q_h`` at
      initialization, so each query is closest to its own key and ``S_h`` starts near-diagonal
      (for the Gaussian kernel ``S_h`` is then a Gaussian Gram matrix, positive definite);
    * ``W^V = 0`` (so ``f_0 = ||Y||_F^2/2``) and one shared ``W^O = I`` (``d_v = d_out``,
      ``sigma_min(W^O) = sigma_max(W^O) = 1``).
    """
    from .data import random_data

    X, Y = random_data(N, n, D, d_out=d_out, x_scale=x_scale, y_scale=y_scale, seed=seed, dtype=dtype)
    s = check_positive("s", s)
    model = AttentionLayer(D, H=H, d=d, d_v=d_out, d_out=d_out, kernel=kernel, seed=int(seed) + 1,
                           init={"W_O": "identity", "W_V": "zeros"},
                           scale={"W_Q": s * math.sqrt(D), "W_K": s * math.sqrt(D)}, dtype=dtype)
    if tied:
        model.set_weights(W_K=model.W_Q.detach())
    return model, X, Y


# ---------------------------------------------------------------------------------------------
# The feature matrix B and its spectrum
# ---------------------------------------------------------------------------------------------

def feature_blocks(model: AttentionLayer, X) -> torch.Tensor:
    """The per-head blocks ``B_h`` stacked over heads: shape ``(H, Nn, D)``.

    ``B_h[i*n + k] = (S_h(X_i) X_i)[k]``, the feature row of token ``k`` of sample ``i``.
    """
    X = _data(model, X)
    with torch.no_grad():
        F = model.features(X.to(model.W_Q.dtype)).detach().to(F64)  # (N, H, n, D)
    N, H, n, D = F.shape
    return F.permute(1, 0, 2, 3).reshape(H, N * n, D)


def feature_matrix(model: AttentionLayer, X) -> torch.Tensor:
    """The feature matrix ``B = [B_1 ... B_H]`` of shape ``(Nn, HD)`` (columns head by head).

    With one shared ``W^O`` and ``V = W_V.reshape(H*D, d_v)``, the layer's stacked output is
    ``B @ V @ W^O``.
    """
    Bh = feature_blocks(model, X)
    H, Nn, D = Bh.shape
    return Bh.permute(1, 0, 2).reshape(Nn, H * D)


def _as_matrix(name: str, B) -> torch.Tensor:
    B = as_tensor(name, B, dtype=F64)
    check_rank(name, B, 2, "(Nn, HD)")
    check_finite(name, B)
    return B


def gram_eigenvalues(B) -> torch.Tensor:
    """Eigenvalues of ``B B^T`` (shape ``(Nn,)``, ascending), for ``B`` of shape ``(Nn, HD)``.

    Computed from the singular values of ``B`` (more accurate than forming ``B B^T``); when
    ``HD < Nn`` the missing ``Nn - HD`` eigenvalues are exactly zero.
    """
    B = _as_matrix("B", B)
    s = torch.linalg.svdvals(B)
    ev = torch.zeros(B.shape[0], dtype=F64)
    ev[: s.numel()] = s**2
    return torch.sort(ev).values


def lambda_min(B) -> float:
    """``lambda_min(B B^T)``, the smallest eigenvalue of the ``(Nn, Nn)`` Gram matrix.

    Exactly ``0.0`` when ``HD < Nn``, since then ``rank(B) <= HD < Nn``.
    """
    B = _as_matrix("B", B)
    if B.shape[1] < B.shape[0]:
        return 0.0
    return float(torch.linalg.svdvals(B)[-1] ** 2)


def lambda_max(B) -> float:
    """``lambda_max(B B^T) = ||B||_2^2``."""
    B = _as_matrix("B", B)
    return float(torch.linalg.svdvals(B)[0] ** 2)


def rank(B, rtol: float | None = None) -> int:
    """Numerical rank of ``B`` (singular values above ``rtol * s_max``; NumPy's default tolerance)."""
    B = _as_matrix("B", B)
    s = torch.linalg.svdvals(B)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return 0
    tol = (rtol if rtol is not None else max(B.shape) * np.finfo(np.float64).eps) * float(s[0])
    return int((s > tol).sum())


def lambda_plus(B, rtol: float | None = None) -> float:
    """The smallest *positive* eigenvalue of ``B B^T`` (``0.0`` if ``B = 0``), rank as in :func:`rank`."""
    B = _as_matrix("B", B)
    r = rank(B, rtol)
    if r == 0:
        return 0.0
    return float(torch.linalg.svdvals(B)[r - 1] ** 2)


# ---------------------------------------------------------------------------------------------
# The output matrix W^O
# ---------------------------------------------------------------------------------------------

def shared_output(model: AttentionLayer, rtol: float = 1e-12) -> torch.Tensor:
    """The one ``W^O`` (shape ``(d_v, d_out)``) shared by every head, or a ValueError.

    The chapter's clean statements assume ``W^O_1 = ... = W^O_H``.
    """
    _check_model(model)
    W = _param(model, "W_O")
    scale = max(float(W.abs().max()), 1e-300)
    if float((W - W[:1]).abs().max()) > rtol * scale:
        raise ValueError(
            "W_O: the chapter's statements assume one W^O shared by all heads, but the "
            f"{model.H} heads have different W_O blocks; set them equal, e.g. "
            "model.set_weights(W_O=model.W_O[0].detach().expand(model.H, -1, -1))"
        )
    return W[0]


def output_singular_values(W_O) -> tuple:
    """``(sigma_min, sigma_max)`` of ``W^O`` (shape ``(d_v, d_out)``).

    ``sigma_min`` is the ``d_out``-th singular value, so ``sigma_min^2 = lambda_min(W^O^T W^O)``;
    it is ``0.0`` unless ``W^O`` has full column rank (which needs ``d_v >= d_out``).
    """
    W = as_tensor("W_O", W_O, dtype=F64)
    check_rank("W_O", W, 2, "(d_v, d_out)")
    s = torch.linalg.svdvals(W)
    smax = float(s[0])
    smin = float(s[-1]) if W.shape[0] >= W.shape[1] else 0.0
    return smin, smax


def _as_output_blocks(model, W_O=None) -> torch.Tensor:
    W = _param(model, "W_O") if W_O is None else as_tensor("W_O", W_O, dtype=F64)
    if W.ndim == 2:
        W = W.unsqueeze(0).expand(model.H, -1, -1)
    expected = (model.H, model.d_v, model.d_out)
    if tuple(W.shape) != expected:
        raise ValueError(f"W_O: expected shape {expected} or {expected[1:]}, got {tuple(W.shape)}")
    return W


# ---------------------------------------------------------------------------------------------
# The value-only problem (result R1)
# ---------------------------------------------------------------------------------------------

def stacked_values(model: AttentionLayer) -> torch.Tensor:
    """``V = [W^V_1; ...; W^V_H]``, shape ``(HD, d_v)``."""
    _check_model(model)
    return _param(model, "W_V").reshape(model.H * model.D, model.d_v)


def residual(model: AttentionLayer, X, Y) -> torch.Tensor:
    """The stacked residual ``R = [T(X_1) - Y_1; ...; T(X_N) - Y_N]``, shape ``(Nn, d_out)``."""
    X, Y = _data(model, X, Y)
    with torch.no_grad():
        T = model(X.to(model.W_Q.dtype)).detach().to(F64)
    return (T - Y).reshape(-1, model.d_out)


def value_operator(model: AttentionLayer, X, W_O=None) -> torch.Tensor:
    """The matrix of the linear map ``R -> sum_h B_h B_h^T R W^O_h^T W^O_h``.

    Shape ``(Nn d_out, Nn d_out)``, acting on ``R.reshape(-1)`` (row-major). Value-only GD is
    ``R_{t+1} = (I - eta M) R_t``. With one shared ``W^O`` this is ``(B B^T) kron (W^O^T W^O)``,
    whose extreme eigenvalues are ``lambda_min(B B^T) sigma_min(W^O)^2`` and
    ``lambda_max(B B^T) sigma_max(W^O)^2``.
    """
    Bh = feature_blocks(model, X)
    Wo = _as_output_blocks(model, W_O)
    M = 0
    for h in range(model.H):
        M = M + torch.kron(Bh[h] @ Bh[h].T, Wo[h].T @ Wo[h])
    return M


@dataclass
class ValueRate:
    """The constants of the value-only theorem for one model and data set.

    ``alpha = lambda_min(BB^T) sigma_min(W^O)^2`` and ``L = lambda_max(BB^T) sigma_max(W^O)^2``
    (the smoothness constant of ``f`` in ``V``); ``alpha_plus`` uses the smallest *positive*
    eigenvalue of ``BB^T`` instead (the rate towards the least-squares minimum when ``HD < Nn``).
    For a step ``lr <= 1/L``: ``f_t <= rate**t * f_0`` with ``rate = (1 - lr*alpha)^2``, and
    ``f_t - f_* <= rate_plus**t (f_0 - f_*)`` with ``rate_plus = (1 - lr*alpha_plus)^2``.
    """

    lambda_min: float
    lambda_plus: float
    lambda_max: float
    sigma_min: float
    sigma_max: float
    lr: float
    full_rank: bool

    @property
    def alpha(self) -> float:
        return self.lambda_min * self.sigma_min**2

    @property
    def alpha_plus(self) -> float:
        return self.lambda_plus * self.sigma_min**2

    @property
    def L(self) -> float:
        return self.lambda_max * self.sigma_max**2

    @property
    def rate(self) -> float:
        """Per-step contraction factor of the loss, ``(1 - lr*alpha)^2``."""
        return (1.0 - self.lr * self.alpha) ** 2

    @property
    def rate_plus(self) -> float:
        return (1.0 - self.lr * self.alpha_plus) ** 2

    def bound(self, f0: float, steps: int, f_star: float = 0.0) -> np.ndarray:
        """The predicted curve ``f_* + rate_plus^t (f_0 - f_*)`` for ``t = 0..steps``.

        With ``f_star = 0`` and a full-rank ``B`` this is ``rate^t f_0``.
        """
        t = np.arange(steps + 1)
        r = self.rate if (f_star == 0.0 and self.full_rank) else self.rate_plus
        return f_star + (f0 - f_star) * r**t


def value_rate(model: AttentionLayer, X, lr: float | None = None) -> ValueRate:
    """Constants of the value-only theorem (needs one ``W^O`` shared by all heads).

    ``lr`` defaults to ``1/L``; a step above ``1/L`` is rejected because the theorem's rate
    needs ``lr <= 1/L``.
    """
    B = feature_matrix(model, X)
    smin, smax = output_singular_values(shared_output(model))
    lmax = lambda_max(B)
    L = lmax * smax**2
    if L == 0:
        raise ValueError("the feature matrix B or W_O is zero: value-only GD does not move")
    if lr is None:
        lr = 1.0 / L
    lr = check_positive("lr (step size)", lr)
    if lr > (1 + 1e-12) / L:
        raise ValueError(
            f"lr (step size): the value-only rate needs lr <= 1/L = {1 / L:.6g} "
            f"(L = lambda_max(BB^T) sigma_max(W_O)^2 = {L:.6g}), got {lr:.6g}"
        )
    Nn, HD = B.shape
    return ValueRate(lambda_min=lambda_min(B), lambda_plus=lambda_plus(B), lambda_max=lmax,
                     sigma_min=smin, sigma_max=smax, lr=lr, full_rank=HD >= Nn and rank(B) == Nn)


def value_recursion(model: AttentionLayer, X, Y, lr: float, steps: int, W_O=None):
    """Iterate the exact residual recursion of value-only GD from the model's current weights.

    ``R_{t+1} = R_t - lr * sum_h B_h B_h^T R_t W^O_h^T W^O_h`` (with one shared ``W^O``:
    ``R_t - lr B B^T R_t W^O^T W^O``). Returns ``(losses, R)``: the losses ``f_t = ||R_t||_F^2 / 2``
    for ``t = 0..steps`` (NumPy array) and the final residual, shape ``(Nn, d_out)``.
    It never touches autograd, so it is the fast way to draw value-only GD curves.
    """
    lr = check_positive("lr (step size)", lr)
    steps = check_int("steps", steps, minimum=0)
    Bh = feature_blocks(model, X)
    Wo = _as_output_blocks(model, W_O)
    # NumPy: for these small matrices it is several times faster per step than torch.
    G = [(Bh[h] @ Bh[h].T).numpy() for h in range(model.H)]          # (Nn, Nn)
    C = [(Wo[h].T @ Wo[h]).numpy() for h in range(model.H)]          # (d_out, d_out)
    if model.H > 1 and all(np.array_equal(C[0], c) for c in C[1:]):   # shared W^O: one product
        G, C = [sum(G)], [C[0]]
    R = residual(model, X, Y).numpy()
    losses = np.empty(steps + 1)
    losses[0] = 0.5 * float((R**2).sum())
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps):
            R = R - lr * sum(g @ R @ c for g, c in zip(G, C))
            losses[t + 1] = 0.5 * float((R**2).sum())
            if not math.isfinite(losses[t + 1]):
                losses[t + 1:] = np.inf
                break
    R = torch.from_numpy(R)
    return losses, R


def projection_loss(B, Y) -> float:
    """``1/2 ||(I - P_B) Y||_F^2``: half the squared distance from ``Y`` to ``range(B)``.

    ``B`` has shape ``(Nn, HD)`` and ``Y`` shape ``(Nn, d_out)`` (or ``(N, n, d_out)``); ``P_B`` is
    the orthogonal projector onto the column space of ``B`` (computed with an SVD).
    """
    B = _as_matrix("B", B)
    Y = as_tensor("Y", Y, dtype=F64)
    if Y.ndim == 3:
        Y = Y.reshape(-1, Y.shape[-1])
    check_rank("Y", Y, 2, "(Nn, d_out)")
    if Y.shape[0] != B.shape[0]:
        raise ValueError(f"Y: expected {B.shape[0]} rows to match B of shape {tuple(B.shape)}, got {tuple(Y.shape)}")
    U, s, _ = torch.linalg.svd(B, full_matrices=False)
    r = rank(B)
    U = U[:, :r]
    E = Y - U @ (U.T @ Y)
    return 0.5 * float((E**2).sum())


@dataclass
class LeastSquares:
    """The minimum of the value-only problem found by a least-squares solver.

    ``f_star`` is ``min_V f``; ``W_V`` (shape ``(H, D, d_v)``) attains it (the minimum-norm
    minimiser); ``rank`` is the rank of the solver's design matrix.
    """

    f_star: float
    W_V: torch.Tensor
    rank: int


def value_least_squares(model: AttentionLayer, X, Y, W_O=None) -> LeastSquares:
    """Minimise ``f`` over ``W^V`` alone with a linear least-squares solver (``torch.linalg.lstsq``).

    The design matrix maps ``vec(W^V)`` (all heads, shape ``H*D*d_v``) to
    ``vec(sum_h B_h W^V_h W^O_h)`` (shape ``Nn*d_out``); it is built entry by entry, so this
    computation does not use the chapter's formula ``1/2 ||(I - P_B) Y||^2`` and checks it
    independently. Works for any ``W^O`` blocks, shared or not.
    """
    X, Y = _data(model, X, Y)
    Bh = feature_blocks(model, X)                       # (H, Nn, D)
    Wo = _as_output_blocks(model, W_O)                  # (H, d_v, d_out)
    H, Nn, D = Bh.shape
    d_v, d_out = Wo.shape[1:]
    # G[(a, o), (h, k, v)] = B_h[a, k] * W^O_h[v, o]
    G = torch.einsum("hak,hvo->aohkv", Bh, Wo).reshape(Nn * d_out, H * D * d_v)
    y = Y.reshape(Nn * d_out, 1)
    sol = torch.linalg.lstsq(G, y, driver="gelsd")
    w = sol.solution
    f_star = 0.5 * float(((G @ w - y) ** 2).sum())
    return LeastSquares(f_star=f_star, W_V=w.reshape(H, D, d_v), rank=int(sol.rank))


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
        raise ValueError("certificate_callback: pl=True needs the targets Y")

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
    return math.sqrt(sum(float(((_param(model, p) - start[p].detach().to(F64)) ** 2).sum()) for p in params))


def snapshot(model: AttentionLayer) -> Dict[str, torch.Tensor]:
    """A detached float64 copy of every weight, e.g. ``theta_0`` for :func:`distance`."""
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
        """A readable report of the conditions, the constants and the verdict."""
        head = "holds" if self.holds else "does not hold"
        lines = [f"sufficient condition ({self.kernel}) {head}:",
                 f"  f_0 = {self.f0:.4g}, lambda_0 = {self.lambda0:.4g}, sigma_min(W_O) = {self.sigma_min:.4g}, "
                 f"mu = lambda_0 sigma_min^2 / 2 = {self.mu:.4g}",
                 f"  largest radius allowed by (C1): r_max = {self.r_max:.4g}"]
        c = self.constants
        if c is not None:
            lines.append(f"  at r = {c.r:.4g}: L_B = {c.L_B:.4g}, M_B = {c.M_B:.4g}, beta = {c.beta:.4g}, "
                         f"L = {c.L:.4g}; (C2) needs 2 beta sqrt(2 f_0)/mu = "
                         f"{2 * c.beta * math.sqrt(2 * self.f0) / self.mu if self.mu > 0 else float('inf'):.4g} <= r")
        if self.holds:
            lines.append(f"  step size lr <= lr_max = {self.lr_max:.4g}; guaranteed factor per step 1 - lr_max mu = {self.rate():.6f}")
        lines += [f"  - {m}" for m in self.reasons]
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

    ``theta = (W^Q, W^K, W^V)``, ``W^O`` fixed and shared. With ``xi_i = ||X_i||_2`` and, for
    Softmax, ``kappa_i(r) = max_h max(||X_i W^Q_h||_2, ||X_i W^K_h||_2) + xi_i r``:

    * Softmax: ``L_B = sqrt(sum_i xi_i^4 kappa_i^2 / (2d))``,
      ``M_B = sqrt(sum_i [xi_i^3 (2 kappa_i^2/d + 1/(2 sqrt d))]^2)``;
    * Gaussian (``S = exp(-||q-k||^2/c)``): ``L_B = 2 sqrt(n/(c e)) sqrt(sum_i xi_i^4)``,
      ``M_B = (4n/c)(1 + 2/e) sqrt(sum_i xi_i^6)`` (independent of ``r``);
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


__all__ = [
    "residual_limit",
    "make_instance", "feature_blocks", "feature_matrix", "gram_eigenvalues", "lambda_min", "lambda_max", "lambda_plus",
    "rank", "shared_output", "output_singular_values", "stacked_values", "residual", "value_operator",
    "ValueRate", "value_rate", "value_recursion", "projection_loss", "LeastSquares", "value_least_squares",
    "mu", "pl_ratio", "pl_ratio_from_history", "certificate_callback", "distance", "snapshot",
    "JointConstants", "JointCondition", "joint_constants", "sufficient_condition", "draw",
]


def draw(D=12, H=1, N=2, n=4, kernel="gaussian", eta_L=1.0, steps=300):
    """Value-only GD (the exact recursion) on an instance of ``make_instance``, with its predicted rate.

    The figure of the interactive cell of the zero-loss chapter: the excess loss ``f_t - f_*`` on a
    log scale against ``max(|1 - eta alpha|, |1 - eta L|)^(2t) (f_0 - f_*)``, with ``eta = eta_L / L``.
    """
    import matplotlib.pyplot as plt

    from .plotting import WIDTH, kernel_style

    m, X, Y = make_instance(kernel, N=N, n=n, D=D, H=H, seed=0)
    rate = value_rate(m, X)                      # constants; rate.L is L
    lr = eta_L / rate.L
    losses, _ = value_recursion(m, X, Y, lr, steps)
    f_star = value_least_squares(m, X, Y).f_star
    alpha = rate.alpha if rate.full_rank else rate.alpha_plus
    q = max(abs(1 - lr * alpha), abs(1 - lr * rate.L)) ** 2
    t = np.arange(steps + 1)
    excess = np.where(np.isfinite(losses), np.maximum(losses - f_star, 1e-300), np.nan)
    predicted = (losses[0] - f_star) * q ** t.astype(float)
    fig, ax = plt.subplots(figsize=(WIDTH, 3.4), layout="none")   # fixed margins: faster redraws
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.15, top=0.95)
    ax.semilogy(t, excess, **kernel_style(kernel), label="GD: $f_t - f_*$")
    ax.semilogy(t, predicted, "k--", lw=1.2, label=f"predicted, factor {q:.4f} per step")
    low = np.nanmin(np.concatenate([excess, predicted])) / 3
    ax.set_ylim(max(low, 1e-16 * losses[0], 1e-300), 1e3 * losses[0] if q > 1 else 3 * losses[0])
    ax.set_xlabel("step $t$")
    ax.set_ylabel("$f_t - f_*$")
    ax.text(0.98, 0.97, f"HD/Nn = {H * D / (N * n):.2f}\nf_*/f_0 = {f_star / losses[0]:.3f}\n"
            f"alpha/L = {alpha / rate.L:.2e}", transform=ax.transAxes, ha="right", va="top")
    ax.legend(loc="lower left")
    return fig
