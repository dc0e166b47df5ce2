"""In-context linear regression with one attention layer (chapter *In-context regression*).

A **prompt** is a sample of the book's layer with ``n`` tokens: the first ``n - 1`` carry a
labelled example ``(x_j, y_j)`` with ``y_j = w . x_j``, the last carries the query ``(x_q, 0)``
whose label ``y_q = w . x_q`` the layer must predict. Covariates are ``x ~ N(0, Sigma)`` in
``R^m`` and each prompt draws its own task ``w ~ N(0, I_m)``.

With the ``linear-n`` kernel, value weights that read only the label and query/key weights that
read only ``x``, the layer's prediction for the query token is

    y_hat = x_q^T W_QK Sigma_hat_xy,      Sigma_hat_xy = (1/n) sum_{j<n} y_j x_j,     (ICL)

with the **merged key-query matrix** ``W_QK`` (``W^{QK}`` in the chapter) (``m x m``). Its
population risk ``R(W_QK) = 1/2 E[(y_hat - y_q)^2]`` over prompts and tasks is a convex
quadratic:

    R(W_QK) = 1/2 tr(Sigma W_QK A W_QK^T) - tr(Sigma W_QK B) + 1/2 tr(Sigma),
    B = E[Sigma_hat] = (n-1)/n Sigma,
    A = E[Sigma_hat^2] = (n-1)/n^2 (n Sigma^2 + tr(Sigma) Sigma),

where ``Sigma_hat = (1/n) sum_{j<n} x_j x_j^T`` (so ``Sigma_hat_xy = Sigma_hat w``); the
chapter writes ``R`` as the script letter R, ``Sigma_hat`` as hat-Sigma and ``Sigma_hat_xy``
as hat-Sigma_xy.
"""
from __future__ import annotations

import numbers
from typing import Dict, Optional

import torch

__all__ = ["prompts", "tokens", "predict", "moments", "population_risk", "optimum"]


# ---------------------------------------------------------------------------------------------
# Prompts, the prediction (ICL) and the population risk
# ---------------------------------------------------------------------------------------------

def _count(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {low}, got {value!r} "
                        f"({type(value).__name__})")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    return int(value)


def _covariance(cov, m: int) -> torch.Tensor:
    """``cov`` as an ``m x m`` float64 symmetric positive definite tensor (identity if None)."""
    if cov is None:
        return torch.eye(m, dtype=torch.float64)
    S = torch.as_tensor(cov, dtype=torch.float64)
    if S.shape != (m, m):
        raise ValueError(f"cov must have shape ({m}, {m}), got {tuple(S.shape)}")
    tol = 1e-12 * (1 + float(S.abs().max()))
    if not torch.isfinite(S).all() or not torch.allclose(S, S.T, rtol=0, atol=tol):
        raise ValueError("cov must be a finite symmetric matrix")
    if torch.linalg.eigvalsh(S).min() <= 0:
        raise ValueError("cov must be positive definite (its smallest eigenvalue is <= 0)")
    return S


def _square(cov) -> torch.Tensor:
    """A covariance given without its size: checked by :func:`_covariance`."""
    S = torch.as_tensor(cov, dtype=torch.float64)
    if S.ndim != 2 or S.shape[0] != S.shape[1] or S.shape[0] == 0:
        raise ValueError(f"cov must be a non-empty square matrix, got shape {tuple(S.shape)}")
    return _covariance(S, S.shape[0])


def prompts(N: int, n: int, m: int, *, cov=None, seed: int = 0,
            dtype: torch.dtype = torch.float64) -> Dict[str, torch.Tensor]:
    """Draw ``N`` prompts of ``n`` tokens in dimension ``m``.

    Returns a dict with ``x`` (``N x n x m``; row ``n-1`` of each prompt is the query ``x_q``),
    ``y`` (``N x n``; ``y[:, -1]`` is the hidden label ``y_q``), ``w`` (``N x m``) and
    ``cov`` (``m x m``). ``x_j = Sigma^{1/2} g_j`` with ``g_j ~ N(0, I_m)`` and
    ``w ~ N(0, I_m)``, all from a generator seeded with ``seed``.
    """
    N, n, m = _count("N", N, 1), _count("n", n, 2), _count("m", m, 1)
    S = _covariance(cov, m)
    seed = _count("seed", seed, 0)
    if seed >= 2 ** 63:
        raise ValueError(f"seed must be below 2**63, got {seed}")
    g = torch.Generator().manual_seed(seed)
    root = torch.linalg.cholesky(S)
    x = torch.randn(N, n, m, generator=g, dtype=torch.float64) @ root.T
    w = torch.randn(N, m, generator=g, dtype=torch.float64)
    y = torch.einsum("inm,im->in", x, w)
    return {"x": x.to(dtype), "y": y.to(dtype), "w": w.to(dtype), "cov": S.to(dtype)}


def tokens(P: Dict[str, torch.Tensor]) -> torch.Tensor:
    """The layer's input ``X`` (``N x n x (m+1)``): rows ``(x_j, y_j)`` and ``(x_q, 0)`` last."""
    y = P["y"].clone()
    y[:, -1] = 0
    return torch.cat([P["x"], y[..., None]], dim=-1)


def predict(W_QK: torch.Tensor, P: Dict[str, torch.Tensor]) -> torch.Tensor:
    """The prediction (ICL) ``x_q^T W_QK Sigma_hat_xy`` for every prompt (a vector of length
    ``N``)."""
    x, y = P["x"], P["y"]
    n, m = x.shape[1], x.shape[2]
    W_QK = torch.as_tensor(W_QK, dtype=x.dtype)
    if W_QK.shape != (m, m):
        raise ValueError(f"W_QK must have shape ({m}, {m}), got {tuple(W_QK.shape)}")
    h = torch.einsum("inm,in->im", x[:, :-1], y[:, :-1]) / n
    return torch.einsum("im,mk,ik->i", x[:, -1], W_QK, h)


def moments(cov, n: int):
    """``(B, A) = (E[Sigma_hat], E[Sigma_hat^2])`` for Gaussian covariates (module docstring)."""
    n = _count("n", n, 2)
    S = _square(cov)
    B = (n - 1) / n * S
    A = (n - 1) / n ** 2 * (n * S @ S + torch.trace(S) * S)
    return B, A


def population_risk(W_QK, cov, n: int) -> torch.Tensor:
    """``R(W_QK) = 1/2 E[(y_hat - y_q)^2]`` in closed form (float64 scalar tensor)."""
    B, A = moments(cov, n)
    S = _square(cov)
    G = torch.as_tensor(W_QK, dtype=torch.float64)
    if G.shape != S.shape:
        raise ValueError(f"W_QK must have shape {tuple(S.shape)}, got {tuple(G.shape)}")
    return 0.5 * torch.trace(S @ G @ A @ G.T) - torch.trace(S @ G @ B) + 0.5 * torch.trace(S)


def optimum(cov, n: int) -> torch.Tensor:
    """The minimiser ``W_QK* = n (n Sigma + tr(Sigma) I)^{-1}`` of :func:`population_risk`."""
    n = _count("n", n, 2)
    S = _square(cov)
    m = S.shape[0]
    return n * torch.linalg.inv(n * S + torch.trace(S) * torch.eye(m, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# The optimum: one step of preconditioned gradient descent
# ---------------------------------------------------------------------------------------------

import math  # noqa: E402  (this section's own import)

def _matrix(name: str, value, m: int) -> torch.Tensor:
    """``value`` as a finite float64 ``m x m`` tensor, or an error naming ``name``."""
    if isinstance(value, (str, bool)) or value is None:
        raise TypeError(f"{name}: expected an ({m}, {m}) array of numbers, got {value!r:.60}")
    try:
        M = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name}: expected an ({m}, {m}) array of numbers, got "
                        f"{type(value).__name__}") from None
    if M.shape != (m, m):
        raise ValueError(f"{name}: expected shape ({m}, {m}), got {tuple(M.shape)}")
    if not torch.isfinite(M).all():
        raise ValueError(f"{name}: expected finite numbers, got NaN or Inf entries")
    return M


def _prompts(P) -> Dict[str, torch.Tensor]:
    """Check a dict of prompts as :func:`prompts` returns it (``x (N, n, m)``, ``y (N, n)``)."""
    if not isinstance(P, dict) or "x" not in P or "y" not in P:
        raise TypeError(f"P: expected the dict of prompts that icl.prompts returns (keys 'x', "
                        f"'y'), got {type(P).__name__}")
    x, y = P["x"], P["y"]
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.ndim == 3
            and y.shape == x.shape[:2] and x.shape[1] >= 2 and x.numel() > 0):
        raise ValueError(f"P: expected x of shape (N, n, m) and y of shape (N, n) with n >= 2, "
                         f"got {tuple(getattr(x, 'shape', ()))} and "
                         f"{tuple(getattr(y, 'shape', ()))}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("P: expected finite covariates and labels, got NaN or Inf")
    return {"x": x.to(torch.float64), "y": y.to(torch.float64)}


def random_covariance(m: int, *, seed: int = 0, low: float = 0.25,
                      high: float = 2.0) -> torch.Tensor:
    """A random ``m x m`` covariance ``Sigma = U diag(lambda) U^T`` (float64): ``U`` a random
    orthogonal matrix, eigenvalues ``lambda_i`` uniform in ``[low, high]`` (``0 < low < high``)."""
    m, seed = _count("m", m, 1), _count("seed", seed, 0)
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise TypeError(f"{name}: expected a finite number, got {v!r}")
    if not 0 < low < high:
        raise ValueError(f"low, high: expected 0 < low < high, got {low!r}, {high!r}")
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))[0]
    lam = low + (high - low) * torch.rand(m, generator=g, dtype=torch.float64)
    S = U @ torch.diag(lam) @ U.T
    return 0.5 * (S + S.T)


def linear_layer(W_QK):
    """An :class:`~tdlib.attention.AttentionLayer` whose query-token output is the prediction
    (ICL) with the merged matrix ``W_QK`` (``m x m``).

    The layer has ``D = m + 1``, one head, the ``linear-n`` kernel, ``d = m``,
    ``d_v = d_out = 1`` and the block form of the chapter: ``W^Q = [sqrt(m) W_QK; 0]``,
    ``W^K = [I_m; 0]``, ``W^V = e_{m+1}`` (it reads only the label) and ``W^O = 1``.
    """
    try:
        shape = tuple(torch.as_tensor(W_QK).shape) if not isinstance(W_QK, (str, bool)) \
            else None
    except (TypeError, ValueError, RuntimeError):
        shape = None
    if shape is None or len(shape) != 2 or shape[0] != shape[1] or shape[0] == 0:
        raise ValueError(f"W_QK: expected a square (m, m) matrix, got "
                         f"{'shape ' + str(shape) if shape is not None else repr(W_QK)[:60]}")
    m = shape[0]
    W = _matrix("W_QK", W_QK, m)
    from .attention import AttentionLayer

    model = AttentionLayer(D=m + 1, d=m, d_v=1, d_out=1, kernel="linear-n", init="zeros")
    zero_row = torch.zeros(1, m, dtype=torch.float64)
    model.set_weights(W_Q=torch.cat([math.sqrt(m) * W, zero_row]),
                      W_K=torch.cat([torch.eye(m, dtype=torch.float64), zero_row]),
                      W_V=torch.eye(m + 1, dtype=torch.float64)[:, -1:],
                      W_O=torch.ones(1, 1, dtype=torch.float64))
    return model


def merged_key_query(model) -> torch.Tensor:
    """The merged matrix ``W^{QK} = (W^V W^O)_{m+1,1} U_Q U_K^T / sqrt(d)`` (``m x m``) of a
    one-head ``linear-n`` layer of the chapter's block form: ``W^Q = [U_Q; 0]`` and
    ``W^K = [U_K; 0]`` read only ``x`` (last row zero), ``W^V`` reads only the label (its first
    ``m`` rows are zero) and ``d_out = 1``. Other layers raise ``ValueError``: their query
    output is not of the form (ICL)."""
    from .attention import AttentionLayer

    if not isinstance(model, AttentionLayer):
        raise TypeError(f"model: expected an AttentionLayer, got {type(model).__name__}")
    if model.kernel_name != "linear-n" or model.H != 1 or model.d_out != 1:
        raise ValueError(f"model: expected one head, the 'linear-n' kernel and d_out = 1, got "
                         f"H={model.H}, kernel {model.kernel_name!r}, d_out={model.d_out}")
    W_Q, W_K, W_V = (getattr(model, p).detach()[0].to(torch.float64)
                     for p in ("W_Q", "W_K", "W_V"))
    if W_Q[-1].any() or W_K[-1].any() or W_V[:-1].any():
        raise ValueError("model: expected W_Q and W_K with a zero last row (they read only x) "
                         "and W_V with zero rows but the last (it reads only the label)")
    c = float(W_V[-1] @ model.W_O.detach()[0, :, 0].to(torch.float64))
    return c * W_Q[:-1] @ W_K[:-1].T / math.sqrt(model.d)


def risk_gradient(W_QK, cov, n: int) -> torch.Tensor:
    """The gradient ``Sigma W_QK E[Sigma_hat^2] - (n-1)/n Sigma^2`` of :func:`population_risk`
    (``m x m``, float64); it vanishes exactly at :func:`optimum`."""
    B, A = moments(cov, n)
    S = _square(cov)
    G = _matrix("W_QK", W_QK, S.shape[0])
    return S @ G @ A - S @ B


def minimum_risk(cov, n: int) -> torch.Tensor:
    """``R* = 1/2 sum_i lambda_i (lambda_i + tr Sigma) / (n lambda_i + tr Sigma)`` over the
    eigenvalues ``lambda_i`` of ``Sigma`` (float64 scalar): the minimum of
    :func:`population_risk`; ``m (m + 1) / (2 (n + m))`` for ``Sigma = I_m``."""
    n = _count("n", n, 2)
    lam = torch.linalg.eigvalsh(_square(cov))
    t = lam.sum()
    return 0.5 * (lam * (lam + t) / (n * lam + t)).sum()


def hessian_eigenvalues(cov, n: int) -> torch.Tensor:
    """The ``m^2`` eigenvalues (ascending) of the Hessian ``E -> Sigma E E[Sigma_hat^2]`` of
    :func:`population_risk`: the products ``lambda_i mu_j`` of the eigenvalues of ``Sigma`` and
    of ``E[Sigma_hat^2]`` (the two matrices commute)."""
    B, A = moments(cov, n)
    lam = torch.linalg.eigvalsh(_square(cov))
    mu = torch.linalg.eigvalsh(A)
    return torch.sort((lam[:, None] * mu[None, :]).reshape(-1)).values


def preconditioned_step(P, precond, w=None) -> torch.Tensor:
    """One step ``w - precond grad L(w)`` of preconditioned gradient descent on each prompt's
    least squares ``L(w) = 1/2 (1/n) sum_{j<n} (y_j - w . x_j)^2`` (``N x m``).

    ``precond`` is ``m x m``; ``w`` (``N x m`` or ``m``) defaults to zero, where the step is
    ``precond Sigma_hat_xy`` with ``Sigma_hat_xy = (1/n) sum_{j<n} y_j x_j``.
    """
    P = _prompts(P)
    x, y = P["x"][:, :-1], P["y"][:, :-1]
    N, n, m = P["x"].shape
    G = _matrix("precond", precond, m)
    if w is None:
        w0 = torch.zeros(N, m, dtype=torch.float64)
    else:
        try:
            w0 = torch.as_tensor(w, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"w: expected an array of numbers, got {type(w).__name__}") from None
        if w0.shape not in ((m,), (N, m)) or not torch.isfinite(w0).all():
            raise ValueError(f"w: expected finite numbers of shape ({m},) or ({N}, {m}), got "
                             f"shape {tuple(w0.shape)}")
        w0 = w0.expand(N, m)
    r = torch.einsum("ijm,im->ij", x, w0) - y                   # residuals w . x_j - y_j
    grad = torch.einsum("ij,ijm->im", r, x) / n
    return w0 - grad @ G.T


def training_loss(W_QK, P) -> torch.Tensor:
    """``f(W_QK) = 1/2 sum_i (y_hat_i - y_{q,i})^2`` over the ``N`` prompts of ``P``: the
    book's loss restricted to the query token (float64 scalar)."""
    P = _prompts(P)
    return 0.5 * ((predict(W_QK, P) - P["y"][:, -1]) ** 2).sum()


def _features(P) -> torch.Tensor:
    """Rows ``vec(x_q Sigma_hat_xy^T)`` (``N x m^2``): ``y_hat = <W_QK, x_q Sigma_hat_xy^T>``."""
    x, y = P["x"], P["y"]
    h = torch.einsum("inm,in->im", x[:, :-1], y[:, :-1]) / x.shape[1]
    return torch.einsum("ia,ib->iab", x[:, -1], h).reshape(x.shape[0], -1)


def empirical_minimiser(P) -> torch.Tensor:
    """The minimiser of :func:`training_loss` (``m x m``), by least squares on the features
    ``vec(x_q Sigma_hat_xy^T)``; it is unique when those ``N`` rows span ``R^{m^2}`` (needs
    ``N >= m^2``), otherwise ``ValueError``."""
    P = _prompts(P)
    m = P["x"].shape[2]
    Z = _features(P)
    if Z.shape[0] < m * m or int(torch.linalg.matrix_rank(Z)) < m * m:
        raise ValueError(f"P: expected prompts whose features span R^(m^2) (N >= {m * m}), "
                         f"got N = {Z.shape[0]} of rank {int(torch.linalg.matrix_rank(Z))}")
    sol = torch.linalg.lstsq(Z, P["y"][:, -1:]).solution
    return sol[:, 0].reshape(m, m)


def training_hessian_eigenvalues(P) -> torch.Tensor:
    """The ``m^2`` eigenvalues (ascending) of the Hessian ``Z^T Z`` of :func:`training_loss`,
    ``Z`` (``N x m^2``) the rows ``vec(x_q Sigma_hat_xy^T)`` of the prompts ``P``."""
    Z = _features(_prompts(P))
    return torch.linalg.eigvalsh(Z.T @ Z)


def _gd(W0, m, grad, lr: float, steps: int, top: float, what: str):
    lr = float(lr) if isinstance(lr, numbers.Real) and not isinstance(lr, bool) else lr
    if not isinstance(lr, float) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr: expected a positive finite step size, got {lr!r}")
    if lr >= 2 / top:
        raise ValueError(f"lr: expected a step size below 2 / L = {2 / top:.4g} (L = {top:.4g} "
                         f"is the largest Hessian eigenvalue of {what}); got {lr}: gradient "
                         f"descent would diverge")
    steps = _count("steps", steps, 0)
    W = torch.zeros(m, m, dtype=torch.float64) if W0 is None else _matrix("W0", W0, m).clone()
    path = [W]
    for _ in range(steps):
        W = W - lr * grad(W)
        path.append(W)
    return torch.stack(path)


def population_gd(cov, n: int, *, lr: float, steps: int, W0=None) -> Dict[str, torch.Tensor]:
    """Full-batch gradient descent ``W_{t+1} = W_t - lr grad R(W_t)`` on the closed-form
    population risk, from ``W0`` (zero by default).

    Returns ``risk`` ``R(W_t)``, ``gap`` ``R(W_t) - R*`` (computed as
    ``1/2 tr(Sigma E E[Sigma_hat^2] E^T)`` with ``E = W_t - W*``, without the cancellation of a
    difference) and ``distance`` ``||W_t - W*||_F``, each of length ``steps + 1``, and the last
    iterate ``W``. A step size ``lr >= 2 / lambda_max`` of the Hessian is refused.
    """
    S = _square(cov)
    n = _count("n", n, 2)
    top = float(hessian_eigenvalues(S, n)[-1])
    path = _gd(W0, S.shape[0], lambda W: risk_gradient(W, S, n), lr, steps, top,
               "the population risk")
    B, A = moments(S, n)
    risk = 0.5 * torch.einsum("ab,tbc,cd,tad->t", S, path, A, path) \
        - torch.einsum("ab,tbc,ca->t", S, path, B) + 0.5 * torch.trace(S)
    E = path - optimum(S, n)
    gap = 0.5 * torch.einsum("ab,tbc,cd,tad->t", S, E, A, E)
    return {"risk": risk, "gap": gap, "distance": E.flatten(1).norm(dim=1), "W": path[-1]}


def training_gd(P, *, lr: float, steps: int, W0=None) -> Dict[str, torch.Tensor]:
    """Full-batch gradient descent on :func:`training_loss` of the fixed prompts ``P``, from
    ``W0`` (zero by default). Returns ``loss`` and ``distance`` ``||W_t - W_N||_F`` to
    :func:`empirical_minimiser` (each ``steps + 1``) and the last iterate ``W``. A step size
    ``lr >= 2 / lambda_max(Z^T Z)`` (``Z`` the features) is refused."""
    P = _prompts(P)
    m = P["x"].shape[2]
    Z, yq = _features(P), P["y"][:, -1]
    top = float(training_hessian_eigenvalues(P)[-1])
    path = _gd(W0, m, lambda W: (Z.T @ (Z @ W.reshape(-1) - yq)).reshape(m, m), lr, steps,
               top, "the training loss")
    loss = 0.5 * ((path.flatten(1) @ Z.T - yq) ** 2).sum(1)
    dist = (path - empirical_minimiser(P)).flatten(1).norm(dim=1)
    return {"loss": loss, "distance": dist, "W": path[-1]}


# ---------------------------------------------------------------------------------------------
# The dynamics: merged and separate key-query parameterisations
# ---------------------------------------------------------------------------------------------

import math  # noqa: E402  (the dynamics' own imports; the shared part above needs neither)

import numpy as np  # noqa: E402

__all__ += ["saddle_rate", "gd_merged", "sgd_merged", "gd_separate", "restricted_optimum",
            "plateau_levels", "learning_steps", "measured_plateaus", "drop_step",
            "drop_time_flow", "drop_step_bounds", "check_balance",
            "check_head_time"]


def _dyn_eigenvalues(cov) -> np.ndarray:
    """The eigenvalues ``lambda_1..lambda_m`` of a *diagonal* covariance, or a clear error."""
    S = _square(cov)
    if not torch.equal(S, torch.diag(torch.diagonal(S))):
        raise ValueError("cov must be diagonal here (rotate x to the eigenbasis of Sigma first)")
    return torch.diagonal(S).numpy().copy()


def _dyn_steps(eps, eta, steps) -> tuple:
    for name, val in (("eps", eps), ("eta", eta)):
        if isinstance(val, bool) or not isinstance(val, numbers.Real) \
                or not math.isfinite(val) or val <= 0:
            raise ValueError(f"{name} must be a finite positive number, got {val!r}")
    return float(eps), float(eta), _count("steps", steps, 1)


def _dyn_unit(g: torch.Generator, *shape) -> np.ndarray:
    """Rows of Gaussian entries scaled to unit Euclidean norm (float64 NumPy)."""
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    return (x / x.norm(dim=-1, keepdim=True)).numpy()


def saddle_rate(cov, n: int) -> float:
    """``lambda_s = ||grad R(0)||_F = (n-1)/n ||Sigma^2||_F``: the largest eigenvalue of minus
    the Hessian of ``(v, U_QK) -> R(v U_QK)`` at zero, the growth rate of gradient flow there."""
    B, _ = moments(cov, n)
    return float(torch.linalg.matrix_norm(_square(cov) @ B))


def _dyn_start(direction, m: int, seed) -> np.ndarray:
    """The unit (Frobenius) direction ``U`` of the merged start ``U_QK = eps U``: ``direction``
    normalised, or a Gaussian matrix drawn with ``seed`` (``m x m``, float64 NumPy)."""
    if direction is None:
        return _dyn_unit(torch.Generator().manual_seed(_count("seed", seed, 0)),
                     m * m).reshape(m, m)
    U = torch.as_tensor(direction, dtype=torch.float64).numpy()
    if U.shape != (m, m) or not np.isfinite(U).all() or not np.abs(U).sum() > 0:
        raise ValueError(f"direction must be a finite non-zero {m} x {m} matrix")
    return U / np.linalg.norm(U)


def gd_merged(cov, n: int, *, eps: float, eta: float, steps: int, direction=None,
              seed: int = 0) -> Dict[str, object]:
    """Gradient descent on the population risk of the merged parameterisation
    ``W_QK = v U_QK``, ``y_hat = v x_q^T U_QK Sigma_hat_xy`` (a scalar value weight ``v`` times
    a key-query matrix ``U_QK``, ``m x m``).

    Start: ``v = eps`` (``gamma_0`` in the chapter) and ``U_QK = eps U`` with ``||U||_F = 1``
    (balanced: ``|v| = ||U_QK||_F``); ``U = direction / ||direction||_F`` if given, else a
    Gaussian direction drawn with ``seed``. Step ``eta`` for ``steps`` steps. Returns ``risk``
    (``steps + 1``: ``R(v_k U_QK,k)``), ``diag`` (``(steps + 1) x m``: the diagonal of
    ``v_k U_QK,k``), ``imbalance`` (``steps + 1``: ``v_k^2 - ||U_QK,k||_F^2``), and the final
    ``v`` and, under the key ``"W_QK"``, the final factor ``U_QK`` (NumPy float64).
    """
    eps, eta, steps = _dyn_steps(eps, eta, steps)
    B, A = (x.numpy() for x in moments(cov, n))
    S = _square(cov).numpy()
    m = S.shape[0]
    U = _dyn_start(direction, m, seed)
    v, W = eps, eps * U
    SB, half_tr = S @ B, 0.5 * np.trace(S)
    risk, diag, imb = np.empty(steps + 1), np.empty((steps + 1, m)), np.empty(steps + 1)
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported below
        for k in range(steps + 1):
            M = v * W
            MA = M @ A
            risk[k] = 0.5 * np.sum(S * (MA @ M.T)) - np.sum(SB * M.T) + half_tr
            diag[k], imb[k] = np.diagonal(M), v * v - np.sum(W * W)
            if k == steps or not np.isfinite(risk[k]):
                break
            G = S @ (MA - B)
            v, W = v - eta * np.sum(G * W), W - eta * v * G
    if not np.isfinite(risk[k]):
        raise FloatingPointError(f"gradient descent diverged at step {k}: lower eta "
                                 f"(got {eta})")
    return {"risk": risk, "diag": diag, "imbalance": imb, "v": v, "W_QK": W}


def gd_separate(cov, n: int, *, H: int, eps: float, eta: float, steps: int,
                seed: int = 0, init=None) -> Dict[str, object]:
    """Gradient descent on the population risk of ``H`` rank-one heads with separate keys and
    queries, ``y_hat = sum_h v_h (x_q . wQ_h)(wK_h . Sigma_hat_xy)``, i.e.
    ``W_QK = sum_h v_h wQ_h wK_h^T`` (``wQ_h``, ``wK_h`` in ``R^m``: w^Q_h, w^K_h in the chapter).

    Start: ``|v_h| = ||wQ_h|| = ||wK_h|| = eps`` with random signs and directions (``seed``), or
    ``init = (v, Q, K)`` if given (then ``eps`` and ``seed`` are not used).
    Returns ``risk`` (``steps + 1``), ``diag`` (``(steps + 1) x m``: the diagonal of ``W_QK``
    at every step), and the final ``v`` (``H``), ``Q``, ``K`` (``H x m``, rows ``wQ_h``,
    ``wK_h``).
    """
    eps, eta, steps = _dyn_steps(eps, eta, steps)
    H = _count("H", H, 1)
    B, A = (x.numpy() for x in moments(cov, n))
    S = _square(cov).numpy()
    m = S.shape[0]
    g = torch.Generator().manual_seed(_count("seed", seed, 0))
    v = eps * np.sign(_dyn_unit(g, H, 1)[:, 0])
    Q, K = eps * _dyn_unit(g, H, m), eps * _dyn_unit(g, H, m)
    if init is not None:
        v, Q, K = (torch.as_tensor(x, dtype=torch.float64).numpy().copy() for x in init)
        if v.shape != (H,) or Q.shape != (H, m) or K.shape != (H, m) \
                or not all(np.isfinite(x).all() for x in (v, Q, K)):
            raise ValueError(f"init must be finite (v, Q, K) of shapes ({H},), ({H}, {m}), "
                             f"({H}, {m}), got {v.shape}, {Q.shape}, {K.shape}")
    SB, half_tr = S @ B, 0.5 * np.trace(S)
    risk, diag = np.empty(steps + 1), np.empty((steps + 1, m))
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported below
        for k in range(steps + 1):
            M = Q.T @ (v[:, None] * K)
            MA = M @ A
            risk[k] = 0.5 * np.sum(S * (MA @ M.T)) - np.sum(SB * M.T) + half_tr
            diag[k] = np.diagonal(M)
            if k == steps or not np.isfinite(risk[k]):
                break
            G = S @ (MA - B)
            GK, GQ = K @ G.T, Q @ G            # rows G wK_h and G^T wQ_h
            v, Q, K = (v - eta * np.sum(Q * GK, 1), Q - eta * v[:, None] * GK,
                       K - eta * v[:, None] * GQ)
    if not np.isfinite(risk[k]):
        raise FloatingPointError(f"gradient descent diverged at step {k}: lower eta "
                                 f"(got {eta})")
    return {"risk": risk, "diag": diag, "v": v, "Q": Q, "K": K}


def sgd_merged(cov, n: int, *, eps: float, eta: float, steps: int, batch: int,
               direction=None, seed: int = 0) -> Dict[str, object]:
    """Stochastic gradient descent on fresh prompts for the merged parameterisation: step ``k``
    draws ``batch`` new prompts (:func:`prompts`, seed ``seed + k + 1``), and moves ``(v, U_QK)``
    against the gradient of their mean loss ``1/(2 batch) sum (v x_q^T U_QK Sigma_hat_xy -
    y_q)^2``. The
    start is that of :func:`gd_merged` (the same ``direction`` or ``seed``). Returns ``risk``
    (``steps + 1``): the population risk of every iterate, in closed form (and the final ``v``
    and, under the key ``"W_QK"``, the final ``U_QK``)."""
    eps, eta, steps = _dyn_steps(eps, eta, steps)
    batch = _count("batch", batch, 1)
    S = _square(cov)
    m = S.shape[0]
    v = torch.tensor(eps, dtype=torch.float64)
    W = eps * torch.as_tensor(_dyn_start(direction, m, seed))
    risk = [float(population_risk(v * W, S, n))]
    for k in range(steps):
        P = prompts(batch, n, m, cov=S, seed=_count("seed", seed, 0) + k + 1)
        h = torch.einsum("inm,in->im", P["x"][:, :-1], P["y"][:, :-1]) / n
        xq, yq = P["x"][:, -1], P["y"][:, -1]
        r = v * torch.einsum("im,mk,ik->i", xq, W, h) - yq        # residuals
        gM = torch.einsum("i,im,ik->mk", r, xq, h) / batch           # d loss / d (v U_QK)
        v, W = v - eta * (gM * W).sum(), W - eta * v * gM
        risk.append(float(population_risk(v * W, S, n)))
    if not np.isfinite(risk).all():
        raise FloatingPointError(f"stochastic gradient descent diverged: lower eta (got {eta})")
    return {"risk": np.array(risk), "v": float(v), "W_QK": W.numpy()}


def restricted_optimum(cov, n: int, S_dirs) -> tuple:
    """For diagonal ``Sigma`` and a set ``S_dirs`` (the chapter's set I) of coordinate indices:
    the minimiser ``W_I`` of the risk over ``W_QK`` supported on ``span{e_i : i in I}`` (rows and
    columns), and its risk
    ``R_I = 1/2 tr Sigma - 1/2 sum_{i in I} (n-1) lambda_i^2 / (n lambda_i + tr Sigma)``
    (the levels (eq-icl-levels)). Returns ``(W_I, R_I)`` (tensor, float)."""
    lam = _dyn_eigenvalues(cov)
    n = _count("n", n, 2)
    idx = sorted(set(int(i) for i in S_dirs))
    if any(i < 0 or i >= len(lam) for i in idx):
        raise ValueError(f"S_dirs must hold indices in 0..{len(lam) - 1}, got {list(S_dirs)}")
    t = lam.sum()
    W = torch.zeros(len(lam), len(lam), dtype=torch.float64)
    for i in idx:
        W[i, i] = n / (n * lam[i] + t)
    gain = sum((n - 1) * lam[i] ** 2 / (n * lam[i] + t) for i in idx)
    return W, float(0.5 * t - 0.5 * gain)


def plateau_levels(cov, n: int) -> list:
    """``[R_{}, R_{1}, R_{1,2}, ...]``: the levels ``R_I`` of the saddles after learning the
    ``k = 0..m`` directions of largest variance (diagonal ``Sigma``), in that order."""
    lam = _dyn_eigenvalues(cov)
    order = sorted(range(len(lam)), key=lambda i: -lam[i])
    return [restricted_optimum(cov, n, order[:k])[1] for k in range(len(lam) + 1)]


def learning_steps(diag, cov, n: int) -> np.ndarray:
    """For a run's ``diag`` history (``steps x m``): the first step at which entry ``i`` of the
    diagonal of ``W_QK`` reaches half its optimal value ``n / (n lambda_i + tr Sigma)``
    (``-1`` if never)."""
    lam = _dyn_eigenvalues(cov)
    n = _count("n", n, 2)
    D = np.asarray(diag, dtype=np.float64)
    if D.ndim != 2 or D.shape[1] != len(lam):
        raise ValueError(f"diag must have shape (steps, {len(lam)}), got {D.shape}")
    half = 0.5 * n / (n * lam + lam.sum())
    hit = D >= half
    return np.where(hit.any(0), hit.argmax(0), -1)


def measured_plateaus(risk, steps_learned) -> list:
    """The plateau values of a risk curve cut at the learning steps: in each interval between
    consecutive learning steps (and before the first, after the last) the risk where the curve
    is flattest in log time, i.e. where ``(k + 1) |R_{k+1} - R_k|`` is smallest."""
    R = np.asarray(risk, dtype=np.float64)
    cuts = sorted(int(k) for k in steps_learned)
    if R.ndim != 1 or len(R) < 2 or any(k < 0 or k >= len(R) for k in cuts):
        raise ValueError("risk must be a curve of length >= 2 and every learning step one of "
                         f"its indices, got {len(R)} points and steps {cuts}")
    flat = (np.arange(len(R) - 1) + 1) * np.abs(np.diff(R))
    out = []
    for lo, hi in zip([0] + cuts, cuts + [len(R) - 1]):
        if hi <= lo:
            raise ValueError(f"two learning steps coincide ({lo}): no plateau between them")
        out.append(float(R[lo + int(np.argmin(flat[lo:hi]))]))
    return out


def drop_step(risk, cov, n: int) -> int:
    """The first step at which ``risk`` is at most ``(R_0 + R*) / 2``, halfway from the risk
    at zero, ``R_0 = 1/2 tr Sigma``, down to the minimum ``R*`` (``-1`` if never)."""
    R = np.asarray(risk, dtype=np.float64)
    if R.ndim != 1 or len(R) == 0 or not np.isfinite(R).all():
        raise ValueError(f"risk must be a non-empty finite curve, got shape {R.shape}")
    R0 = 0.5 * float(torch.trace(_square(cov)))
    R_star = float(population_risk(optimum(cov, n), cov, n))
    below = R <= 0.5 * (R0 + R_star)
    return int(below.argmax()) if below.any() else -1


def _dyn_isotropic(m: int, n: int, eps) -> tuple:
    """``(lambda_s, rho*, rho_0)`` of the isotropic theorem: ``lambda_s = sqrt(m) (n-1)/n``,
    ``rho* = n/(n+m)``, ``rho_0 = eps^2 / sqrt(m)``."""
    m, n = _count("m", m, 1), _count("n", n, 2)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps:
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    rho_star, rho0 = n / (n + m), eps ** 2 / math.sqrt(m)
    if rho0 >= (1 - 2 ** -0.5) * rho_star:
        raise ValueError(f"eps = {eps} starts past the drop: need eps^2 / sqrt(m) < "
                         f"(1 - 1/sqrt 2) n/(n+m) = {(1 - 2 ** -0.5) * rho_star:.4g}")
    return math.sqrt(m) * (n - 1) / n, rho_star, rho0


def drop_time_flow(m: int, n: int, eps: float) -> float:
    """Gradient flow, ``Sigma = I_m``, start ``v = eps``, ``U_QK = eps I / sqrt(m)``: the time at
    which the risk is halfway down, ``log((rho*/rho_0 - 1) / (1 + sqrt 2)) / (2 lambda_s)``."""
    omega, rho_star, rho0 = _dyn_isotropic(m, n, eps)
    return math.log((rho_star / rho0 - 1) / (1 + math.sqrt(2))) / (2 * omega)


def drop_step_bounds(m: int, n: int, eps: float, eta: float) -> tuple:
    """Gradient descent with step ``eta`` (``eta lambda_s <= 1/2``), same start: proved bounds
    ``(lower, upper)`` on :func:`drop_step`, from
    ``log(rho_h/rho_0) / (2 log(1 + eta lambda_s))`` and
    ``1 + log(rho_h/rho_0) / (2 log(1 + eta lambda_s / sqrt 2))``,
    ``rho_h = (1 - 1/sqrt 2) rho*``.
    """
    omega, rho_star, rho0 = _dyn_isotropic(m, n, eps)
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not 0 < eta * omega <= 0.5:
        raise ValueError(f"eta must be positive with eta omega <= 1/2 (omega = {omega:.4g}), "
                         f"got {eta!r}")
    L = math.log((1 - 2 ** -0.5) * rho_star / rho0)
    lower = math.ceil(L / (2 * math.log1p(eta * omega)))
    upper = math.floor(1 + L / (2 * math.log1p(eta * omega / math.sqrt(2))))
    return lower, upper


# Self-checks of the exercises "On the dynamics" (registered in tdlib.selfcheck as
# ``icl_balance`` and ``icl_head_time``): they print only "correct" and raise selfcheck.Wrong.

def check_balance(conserved) -> None:
    """ex-icl-balance: ``conserved(v, wQ, wK)`` (``v`` of shape ``(H,)``, ``wQ, wK`` of shape
    ``(H, m)``, torch float64) returns ``2H`` quantities that gradient flow of the separate
    parameterisation keeps constant: their derivative along ``-grad R`` vanishes at fresh random
    points, and their gradients are linearly independent (none is constant or redundant)."""
    from .selfcheck import Wrong, _arr, _call, _ok
    g = torch.Generator().manual_seed(4321)
    for m, H, n in ((2, 2, 5), (3, 4, 9)):
        cov = torch.diag(0.3 + torch.rand(m, generator=g, dtype=torch.float64))
        th = torch.randn(H * (1 + 2 * m), generator=g, dtype=torch.float64)

        def split(th):
            return th[:H], th[H:H + H * m].reshape(H, m), th[H + H * m:].reshape(H, m)

        def risk(th):
            v, Q, K = split(th)
            return population_risk(Q.T @ (v[:, None] * K), cov, n)

        def quantities(th):
            out = _call("conserved", conserved, *split(th))
            if not isinstance(out, torch.Tensor):
                out = torch.as_tensor(_arr("conserved", out))
            return out.reshape(-1).to(torch.float64)

        c = quantities(th)
        if c.numel() != 2 * H:
            raise Wrong(f"conserved: expected {2 * H} quantities for H = {H} heads (two per "
                        f"head), got {c.numel()}")
        try:
            J = torch.autograd.functional.jacobian(quantities, th)
        except Wrong:
            raise
        except Exception as err:  # the reader's function is not differentiable by autograd
            raise Wrong(f"conserved: autograd cannot differentiate your function ({err}); "
                        "compute with torch operations on the given tensors") from None
        grad = torch.autograd.functional.jacobian(risk, th)
        rate = J @ grad
        scale = float(J.norm() * grad.norm()) + 1e-300
        if float(rate.abs().max()) > 1e-9 * scale:
            raise Wrong("conserved: at least one of your quantities changes along gradient "
                        "flow. Hint: differentiate v_h^2 and the squared norms of w^Q_h and w^K_h "
                        "along the flow; which differences cancel?")
        if int(torch.linalg.matrix_rank(J)) < 2 * H:
            raise Wrong("conserved: your quantities are not independent (one is constant or a "
                        "combination of the others). Hint: there are two per head")
    _ok("two conserved quantities per head")


def check_head_time(head_time) -> None:
    """ex-icl-head-time: ``head_time(eps, lam, n)`` approximates the flow time at which one head
    started at ``(eps, eps e_1, eps e_1)`` reaches half of ``(W_QK*)_11`` (``Sigma = diag(lam)``),
    within 5 % for ``eps = 1e-2`` and ``1e-3``, against a numerical quadrature of its ODE."""
    from .selfcheck import Wrong, _call, _num, _ok
    g = torch.Generator().manual_seed(99)
    for trial in range(3):
        lam = (0.3 + 2 * torch.rand(3, generator=g, dtype=torch.float64)).tolist()
        n = int(torch.randint(3, 40, (), generator=g))
        w_star = n / (n * lam[0] + sum(lam))
        beta = (n - 1) / n * lam[0] ** 2
        for eps in (1e-2, 1e-3):
            # d gamma / dt = beta gamma^2 (1 - gamma^3 / W*_11), from eps to (W*_11 / 2)^(1/3)
            u = np.linspace(math.log(eps), math.log(w_star / 2) / 3, 200_001)
            f = np.exp(-u) / (beta * (1 - np.exp(3 * u) / w_star))
            exact = float(np.sum((f[1:] + f[:-1]) / 2 * np.diff(u)))
            got = _num("head_time", _call("head_time", head_time, eps, list(lam), n))
            if not abs(got - exact) <= 0.05 * exact:
                raise Wrong(f"head_time: for eps = {eps:g}, lam = "
                            f"{[round(x, 3) for x in lam]}, n = {n} your time is too "
                            f"{'long' if got > exact else 'short'}. Hint: near zero the scale "
                            f"gamma of the head obeys d gamma/dt ~ (const) gamma^2; which "
                            f"constant, and how long does it take to blow up from eps?")
    _ok("the time of the first drop of a single head")


# ---------------------------------------------------------------------------------------------
# The bridge back: the book's layer with other kernels on the same task
# ---------------------------------------------------------------------------------------------
