"""For the chapter *Gradient descent reaches zero loss* (``book/zero-loss.md``): the feature
matrix, its eigenvalues, value-only rates and least squares, and the checks, sweeps and figures
of the chapter. The joint-training chapter builds on these in :mod:`tdlib.joint`.

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

Every function works in float64 whatever the model's dtype, and returns plain floats or float64
tensors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
import torch

from .attention import KERNEL_NAMES, AttentionLayer
from .checks import (as_tensor, check_choice, check_finite, check_int, check_positive, check_rank,
                     check_seed)

F64 = torch.float64


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------

def _check_model(model) -> AttentionLayer:
    if not isinstance(model, AttentionLayer):
        raise TypeError(f"model: expected a tdlib.AttentionLayer, got {type(model).__name__}")
    return model


_NO_Y = object()   # "no targets": distinct from Y=None, which is a bad target


def _data(model, X, Y=_NO_Y):
    """Validated float64 copies of ``X`` (and ``Y``) for ``model``."""
    _check_model(model)
    if Y is _NO_Y:
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

    check_choice("kernel", kernel, KERNEL_NAMES)
    H, d = check_int("H", H), check_int("d", d)
    s = check_positive("s", s)
    X, Y = random_data(N, n, D, d_out=d_out, x_scale=x_scale, y_scale=y_scale, seed=seed, dtype=dtype)
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


def _as_matrix(name: str, B, axes: str = "(Nn, HD)") -> torch.Tensor:
    B = as_tensor(name, B, dtype=F64)
    check_rank(name, B, 2, axes)
    if 0 in B.shape:
        raise ValueError(f"{name}: expected a non-empty matrix of shape {axes}, got shape "
                         f"{tuple(B.shape)}")
    check_finite(name, B)
    return B


def _rtol(rtol):
    return None if rtol is None else check_positive("rtol", rtol)


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
    B, rtol = _as_matrix("B", B), _rtol(rtol)
    s = torch.linalg.svdvals(B)
    if float(s[0]) == 0.0:
        return 0
    tol = (rtol if rtol is not None else max(B.shape) * np.finfo(np.float64).eps) * float(s[0])
    return int((s > tol).sum())


def lambda_plus(B, rtol: float | None = None) -> float:
    """The smallest *positive* eigenvalue of ``B B^T`` (``0.0`` if ``B = 0``), rank as in :func:`rank`."""
    B, rtol = _as_matrix("B", B), _rtol(rtol)
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
    rtol = check_positive("rtol", rtol, strict=False)
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
    W = _as_matrix("W_O", W_O, "(d_v, d_out)")
    s = torch.linalg.svdvals(W)
    smax = float(s[0])
    smin = float(s[-1]) if W.shape[0] >= W.shape[1] else 0.0
    return smin, smax


def _as_output_blocks(model, W_O=None) -> torch.Tensor:
    W = _param(model, "W_O") if W_O is None else as_tensor("W_O", W_O, dtype=F64)
    check_finite("W_O", W)
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
    if lr is not None:
        lr = check_positive("lr (step size)", lr)
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
    if Y.shape[0] != B.shape[0] or Y.shape[1] == 0:
        raise ValueError(f"Y: expected {B.shape[0]} rows to match B of shape {tuple(B.shape)} "
                         f"and at least one column, got shape {tuple(Y.shape)}")
    check_finite("Y", Y)
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



def draw(D=12, H=1, N=2, n=4, kernel="gaussian", eta_L=1.0, steps=300):
    """Value-only GD (the exact recursion) on an instance of ``make_instance``, with its predicted rate.

    The figure of the interactive cell of the zero-loss chapter: the excess loss ``f_t - f_*`` on a
    log scale against ``max(|1 - eta alpha|, |1 - eta L|)^(2t) (f_0 - f_*)``, with ``eta = eta_L / L``.
    """
    import matplotlib.pyplot as plt

    from .plotting import WIDTH, kernel_style

    eta_L = check_positive("eta_L", eta_L)
    steps = check_int("steps", steps, minimum=0)
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
    # a diverging run starts low on the left and rises: its legend goes above it
    ax.legend(loc="upper left" if q > 1 else "lower left")
    return fig



# ---------------------------------------------------------------------------------------------
# Checks, sweeps, statistics and figures of the chapter (value-only training).
# Each returns plain numbers or a figure, so the chapters show the computation in a few lines.
# ---------------------------------------------------------------------------------------------

def _sequence(name: str, values, what: str) -> list:
    """``values`` as a list, or a clear error for a string, a number or None."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name}: expected a non-empty list of {what}, got {values!r}")
    return list(values)


def _check_kernels(kernels) -> tuple:
    kernels = tuple(_sequence("kernels", kernels, "kernel names"))
    if not kernels:
        raise ValueError("kernels: expected at least one kernel name, got none")
    for k in kernels:
        check_choice("kernels", k, KERNEL_NAMES)
    return kernels


def _check_ints(name: str, values, minimum: int = 1) -> list:
    """A non-empty list of integers ``>= minimum`` (of seeds in ``[0, 2^63)`` when ``name`` is
    ``"seeds"``), or a clear error."""
    values = _sequence(name, values, "integers")
    if not values:
        raise ValueError(f"{name}: expected a non-empty list of integers, got {values!r}")
    if name == "seeds":
        return [check_seed("seeds", v) for v in values]
    return [check_int(name, v, minimum=minimum) for v in values]


@dataclass
class ValueCheck:
    """What :func:`check_value_theorem` measured on one instance; losses are relative to ``f_0``.

    ``recursion_gap``: ``max_t |f_t(GD) - f_t(recursion)|`` (part 1); ``f_star``: the solver's
    minimum and ``f_formula``: ``1/2 ||(I - P_B) Y||^2`` (part 4); ``excess`` and ``bound``: the
    final ``f_T - f_*`` and the theorem's bound on it (parts 3 and 4, with ``f_* = 0`` when ``B``
    has full row rank); ``holds``: all of them agree with the theorem up to float64 rounding.
    """

    kernel: str
    HD: int
    Nn: int
    steps: int
    recursion_gap: float
    f_star: float
    f_formula: float
    excess: float
    bound: float
    holds: bool

    def __str__(self) -> str:
        return (f"{self.kernel:8s} HD={self.HD:2d} Nn={self.Nn}: |GD - recursion| <= "
                f"{self.recursion_gap:.1e} f_0; f_*/f_0 = {self.f_star:.3e}\n"
                f"{'':9s}(formula {self.f_formula:.3e}); after {self.steps} steps "
                f"(f_t - f_*)/f_0 = {self.excess:.2e} <= {self.bound:.2e}")


def check_value_theorem(kernel: str, D: int, seed: int, N: int = 2, n: int = 3, d_out: int = 2,
                        steps: int = 200) -> ValueCheck:
    """Check the value-only theorem on ``make_instance(kernel, N, n, D, d_out=d_out, seed=seed)``.

    Runs ``tdlib.train`` on ``W^V`` alone with ``eta = 1/L`` for ``steps`` steps, the exact
    recursion of part 1 (:func:`value_recursion`) separately, and a least-squares solver
    (:func:`value_least_squares`), and compares them with parts 1, 3 and 4.
    """
    from .train import train

    steps = check_int("steps", steps, minimum=1)
    m, X, Y = make_instance(kernel, N=N, n=n, D=D, d_out=d_out, seed=seed)
    rate = value_rate(m, X)
    rec, _ = value_recursion(m, X, Y, rate.lr, steps)
    gd = np.array(train(m, X, Y, lr=rate.lr, steps=steps, trainable=["W_V"],
                        progress=False).loss)
    rec = rec[: len(gd)]          # train stops early if the loss reaches exactly 0 in float64
    f0 = gd[0]
    f_star = value_least_squares(m, X, Y).f_star
    f_proj = projection_loss(feature_matrix(m, X), Y)
    # above the threshold the minimum is exactly 0 (part 3); the solver returns it up to rounding
    f_min = 0.0 if rate.full_rank else f_star
    bound = rate.bound(f0, len(gd) - 1, f_star=f_min)
    gap = float(np.max(np.abs(gd - rec)))
    holds = bool(gap <= 1e-12 * f0
                 and np.all(gd - f_min <= (bound - f_min) * (1 + 1e-9) + 1e-13 * f0)
                 and np.all(gd >= f_star - 1e-12 * f0)
                 and abs(f_star - f_proj) <= 1e-10 * f0)
    return ValueCheck(kernel=kernel, HD=m.H * m.D, Nn=N * n, steps=len(gd) - 1,
                      recursion_gap=gap / f0, f_star=f_star / f0, f_formula=f_proj / f0,
                      excess=(gd[-1] - f_min) / f0, bound=(bound[-1] - f_min) / f0,
                      holds=holds)


@dataclass
class PhaseSweep:
    """Value-only runs of :func:`phase_sweep`, one entry per run (numpy arrays of equal length).

    ``H``, ``kernel``, ``ratio`` (``HD/Nn``), ``final`` (``f_T/f_0``), ``f_star``
    (solver minimum ``/f_0``), ``cond`` (``alpha/L``); ``steps`` per run; ``seconds`` of wall time.
    """

    H: np.ndarray
    kernel: np.ndarray
    ratio: np.ndarray
    final: np.ndarray
    f_star: np.ndarray
    cond: np.ndarray
    steps: int
    seconds: float

    def mask(self, H=None, kernel=None, lo=-np.inf, hi=np.inf) -> np.ndarray:
        """Runs with the given ``H`` and ``kernel`` (None: any) and ``lo <= HD/Nn <= hi``."""
        ok = (self.ratio >= lo) & (self.ratio <= hi)
        if H is not None:
            ok &= self.H == H
        if kernel is not None:
            ok &= self.kernel == kernel
        return ok


def phase_sweep(D_grid, N: int = 4, n: int = 6, steps: int = 2000, seeds=(100, 101, 102),
                kernels=KERNEL_NAMES) -> PhaseSweep:
    """Value-only GD (exact recursion, ``eta = 1/L``) and the solver's minimum over a grid.

    ``D_grid`` maps a number of heads ``H`` to the embedding dimensions ``D`` to run; every
    ``(H, kernel, D, seed)`` gives one instance of :func:`make_instance` with random targets.
    """
    import time

    if not isinstance(D_grid, dict) or not D_grid:
        raise ValueError(f"D_grid: expected a non-empty dict {{H: [D, ...]}}, got {D_grid!r}")
    D_grid = {check_int("D_grid (a key H)", H): _check_ints("D_grid (the D of a key)", Ds)
              for H, Ds in D_grid.items()}
    N, n = check_int("N", N), check_int("n", n)
    kernels, seeds = _check_kernels(kernels), _check_ints("seeds", seeds, minimum=0)
    steps = check_int("steps", steps, minimum=1)
    t0, rows = time.perf_counter(), []
    for H, Ds in D_grid.items():
        H = check_int("H (a key of D_grid)", H)
        for kernel in kernels:
            for D in _check_ints("D", Ds):
                for s in seeds:
                    m, X, Y = make_instance(kernel, N=N, n=n, D=D, H=H, seed=s)
                    rate = value_rate(m, X)
                    losses, _ = value_recursion(m, X, Y, rate.lr, steps)
                    f_star = value_least_squares(m, X, Y).f_star
                    rows.append((H, kernel, H * D / (N * n), losses[-1] / losses[0],
                                 f_star / losses[0], rate.alpha / rate.L))
    cols = list(zip(*rows))
    return PhaseSweep(H=np.array(cols[0]), kernel=np.array(cols[1]),
                      ratio=np.array(cols[2], float), final=np.array(cols[3], float),
                      f_star=np.array(cols[4], float), cond=np.array(cols[5], float),
                      steps=steps, seconds=time.perf_counter() - t0)


def phase_summary(sweep: PhaseSweep, wide: float = 1.4, narrow: float = 0.75) -> dict:
    """Medians and extremes of a :class:`PhaseSweep` that the chapter's prose quotes.

    ``solver_max``: largest solver minimum ``f_*/f_0`` with ``HD >= Nn``; for each ``H``:
    ``h{H}_gd_med``, ``h{H}_gd_max`` (final ``f_T/f_0`` with ``HD >= wide Nn``), ``h{H}_cond``
    (median ``alpha/L`` there), ``h{H}_gap_med``, ``h{H}_gap_max`` (median of ``f_T - f_*`` and
    largest ``|f_T - f_*|``, over ``f_0``, with ``HD <= narrow Nn``).
    """
    if not isinstance(sweep, PhaseSweep):
        raise TypeError(f"sweep: expected a PhaseSweep, got {type(sweep).__name__}")
    if not 0 < narrow < 1 <= wide:
        raise ValueError(f"narrow, wide: expected 0 < narrow < 1 <= wide, got {narrow}, {wide}")
    out = {"solver_max": float(sweep.f_star[sweep.mask(lo=1.0)].max())}
    for H in sorted(set(sweep.H.tolist())):
        w, b = sweep.mask(H=H, lo=wide), sweep.mask(H=H, hi=narrow)
        if not w.any() or not b.any():
            raise ValueError(f"sweep: H = {H} needs runs with HD >= {wide} Nn and HD <= {narrow} Nn")
        gap = sweep.final[b] - sweep.f_star[b]
        out.update({f"h{H}_gd_med": float(np.median(sweep.final[w])),
                    f"h{H}_gd_max": float(sweep.final[w].max()),
                    f"h{H}_cond": float(np.median(sweep.cond[w])),
                    f"h{H}_gap_med": float(np.median(gap)),
                    f"h{H}_gap_max": float(np.abs(gap).max())})
    return out


def plot_phase_sweep(sweep: PhaseSweep):
    """One panel per ``H``: final loss (dots) and solver minimum (circles) against ``HD/Nn``,
    with the expected minimum ``(1 - HD/Nn)_+`` of a full-rank ``B`` (dashed)."""
    import matplotlib.pyplot as plt

    from .plotting import WIDTH, kernel_style

    heads = sorted(set(sweep.H.tolist()))
    fig, axes = plt.subplots(1, len(heads), figsize=(WIDTH, 4.3), sharey=True, squeeze=False)
    grid = np.linspace(0, max(3.05, float(sweep.ratio.max()) + 0.05), 200)
    for ax, H in zip(axes[0], heads):
        for kernel in sorted(set(sweep.kernel.tolist())):
            k = sweep.mask(H=H, kernel=kernel)
            x = sweep.ratio[k] + (-0.02 if kernel == "softmax" else 0.02)
            mark = dict(ls="none", **kernel_style(kernel, line=False, markevery=None))
            ax.plot(x, sweep.final[k], ms=4, alpha=0.75, **mark,
                    label=f"{kernel}: GD, {sweep.steps} steps")
            ax.plot(x, sweep.f_star[k], ms=8, mfc="none", **mark,
                    label=f"{kernel}: solver minimum")
        ax.plot(grid, np.clip(1 - grid, 0, None), "k--", lw=1.2, label=r"$(1 - HD/Nn)_+$")
        ax.axvline(1.0, color="#999999", lw=0.8)
        ax.set_xlabel(r"$HD / (Nn)$")
        ax.text(0.97, 0.93, f"H = {H}", transform=ax.transAxes, ha="right")
    axes[0, 0].set_ylabel(r"final loss $f_T / f_0$")
    # below the panels, where it covers no point
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=3,
               handlelength=1.5, columnspacing=1.0)
    return fig


@dataclass
class RateRun:
    """One value-only run of :func:`rate_runs`: ``excess`` is ``f_t - f_*`` (``f_* = 0`` above
    the threshold), ``predicted`` the theorem's factor per step, ``measured`` the fitted one."""

    kernel: str
    below: bool
    excess: np.ndarray
    predicted: float
    measured: float

    def __str__(self) -> str:
        where = "HD < Nn" if self.below else "HD > Nn"
        return (f"{self.kernel:8s} {where}: factor per step measured {self.measured:.6f}, "
                f"predicted {self.predicted:.6f}")


def rate_runs(D_above: int = 72, D_below: int = 12, N: int = 4, n: int = 6, seed: int = 7,
              kernels=KERNEL_NAMES, max_steps: int = 800, tail: int = 60) -> List[RateRun]:
    """``tdlib.train`` on ``W^V`` alone with ``eta = 1/L``, above (``D_above``) and below
    (``D_below``) the threshold ``HD = Nn``; the measured factor is fitted on the last ``tail``
    steps of ``f_t - f_*`` (:func:`tdlib.rates.fit_rate`)."""
    from .rates import fit_rate
    from .train import train

    kernels = _check_kernels(kernels)
    max_steps, tail = check_int("max_steps", max_steps), check_int("tail", tail, minimum=2)
    D_above, D_below = check_int("D_above", D_above), check_int("D_below", D_below)
    N, n, seed = check_int("N", N), check_int("n", n), check_seed("seed", seed)
    runs = []
    for D, below in ((D_above, False), (D_below, True)):
        for kernel in kernels:
            m, X, Y = make_instance(kernel, N=N, n=n, D=D, seed=seed)
            rate = value_rate(m, X)
            if below == rate.full_rank:
                raise ValueError(f"D_above={D_above}, D_below={D_below}: expected B of full rank "
                                 f"at D_above and not at D_below (N n = {N * n}), got "
                                 f"full_rank={rate.full_rank} at D = {D}")
            f_star = value_least_squares(m, X, Y).f_star if below else 0.0
            q = rate.rate_plus if below else rate.rate
            steps = int(min(max_steps, math.log(1e-20) / math.log(q)))
            hist = train(m, X, Y, lr=rate.lr, steps=steps, trainable=["W_V"], progress=False)
            excess = np.array(hist.loss) - f_star
            runs.append(RateRun(kernel, below, excess, q, fit_rate(excess, tail=tail).factor))
    return runs


def plot_rate_runs(runs: Sequence[RateRun]):
    """Measured ``f_t - f_*`` (solid) against the predicted ``q^t (f_0 - f_*)`` (dotted):
    left above the threshold, right below it."""
    import matplotlib.pyplot as plt

    from .plotting import WIDTH, kernel_color, kernel_style

    if not runs:
        raise ValueError("runs: expected at least one RateRun, got none")
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.6))
    for run in runs:
        ax, t = axes[int(run.below)], np.arange(len(run.excess))
        ax.semilogy(t, run.excess, **kernel_style(run.kernel), label=f"{run.kernel}: measured")
        ax.semilogy(t, run.excess[0] * run.predicted**t, ":", color=kernel_color(run.kernel),
                    lw=1.2, label=f"{run.kernel}: predicted")
    for ax in axes:
        ax.set_xlabel("step $t$")
    axes[0].set_ylabel("$f_t$")
    axes[1].set_ylabel("$f_t - f_*$")
    axes[0].legend()
    return fig




__all__ = [
    "make_instance", "feature_blocks", "feature_matrix", "gram_eigenvalues", "lambda_min",
    "lambda_max", "lambda_plus", "rank", "shared_output", "output_singular_values",
    "stacked_values", "residual", "value_operator", "ValueRate", "value_rate", "value_recursion",
    "projection_loss", "LeastSquares", "value_least_squares", "draw", "ValueCheck",
    "check_value_theorem", "PhaseSweep", "phase_sweep", "phase_summary", "plot_phase_sweep",
    "RateRun", "rate_runs", "plot_rate_runs",
]
