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


def _seed(value) -> int:
    """A seed: an integer in ``[0, 2^63)`` (what torch's generators take), or a clear
    error."""
    seed = _count("seed", value, 0)
    if seed >= 2 ** 63:
        raise ValueError(f"seed must be below 2**63, got {seed}")
    return seed


def _real(name: str, value, want: str = "an array of real numbers") -> torch.Tensor:
    """``value`` as a float64 tensor (a tensor keeps its autograd graph), or a
    ``TypeError`` naming ``name`` and saying ``want``: strings, ``None``, booleans and
    complex numbers are refused (a cast would turn them into numbers silently). Shape
    and finiteness are left to the caller."""
    from .checks import real_array

    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(torch.float64)
    return torch.from_numpy(real_array(name, value, want))


def _covariance(cov, m: int) -> torch.Tensor:
    """``cov`` as an ``m x m`` float64 symmetric positive definite tensor (identity if None)."""
    if cov is None:
        return torch.eye(m, dtype=torch.float64)
    S = _real("cov", cov, f"an ({m}, {m}) covariance matrix")
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
    S = _real("cov", cov, "a square covariance matrix")
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
    _prompts(P)
    y = P["y"].clone()
    y[:, -1] = 0
    return torch.cat([P["x"], y[..., None]], dim=-1)


def predict(W_QK: torch.Tensor, P: Dict[str, torch.Tensor]) -> torch.Tensor:
    """The prediction (ICL) ``x_q^T W_QK Sigma_hat_xy`` for every prompt (a vector of length
    ``N``)."""
    _prompts(P)
    x, y = P["x"], P["y"]
    n, m = x.shape[1], x.shape[2]
    W_QK = _matrix("W_QK", W_QK, m).to(x.dtype)
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
    G = _matrix("W_QK", W_QK, S.shape[0])
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
    M = _real(name, value, f"an ({m}, {m}) array of numbers")
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
    m, seed = _count("m", m, 1), _seed(seed)
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
        w0 = _real("w", w, "an array of numbers")
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
        return _dyn_unit(torch.Generator().manual_seed(_seed(seed)),
                     m * m).reshape(m, m)
    U = _real("direction", direction, f"a {m} x {m} matrix").numpy()
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
    g = torch.Generator().manual_seed(_seed(seed))
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
    if isinstance(S_dirs, (str, bytes)) or not hasattr(S_dirs, "__iter__") or any(
            isinstance(i, bool) or not isinstance(i, numbers.Integral) for i in S_dirs):
        raise TypeError(f"S_dirs must be a set of integer indices in "
                        f"0..{len(lam) - 1}, got {S_dirs!r:.60}")
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
    D = _real("diag", diag, f"a (steps, {len(lam)}) array of numbers").numpy()
    if D.ndim != 2 or D.shape[1] != len(lam) or not len(D) \
            or not np.isfinite(D).all():
        raise ValueError(f"diag must be finite numbers of shape (steps, {len(lam)}), "
                         f"got shape {D.shape}")
    half = 0.5 * n / (n * lam + lam.sum())
    hit = D >= half
    return np.where(hit.any(0), hit.argmax(0), -1)


def measured_plateaus(risk, steps_learned) -> list:
    """The plateau values of a risk curve cut at the learning steps: in each interval between
    consecutive learning steps (and before the first, after the last) the risk where the curve
    is flattest in log time, i.e. where ``(k + 1) |R_{k+1} - R_k|`` is smallest."""
    R = _real("risk", risk, "a curve of numbers").numpy()
    if isinstance(steps_learned, (str, bytes)) \
            or not hasattr(steps_learned, "__iter__") \
            or any(isinstance(k, bool) or not isinstance(k, numbers.Integral)
                   for k in steps_learned):
        raise TypeError(f"steps_learned must be integer indices of the curve, got "
                        f"{steps_learned!r:.60}")
    if R.ndim != 1 or not np.isfinite(R).all():
        raise ValueError(f"risk must be a finite curve, got shape {R.shape}")
    cuts = sorted(int(k) for k in steps_learned)
    if R.ndim != 1 or len(R) < 2 or any(k < 0 or k >= len(R) for k in cuts):
        raise ValueError("risk must be a curve of length >= 2 and every learning step "
                         f"(steps_learned) one of its indices, got {len(R)} points "
                         f"and steps {cuts}")
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
    R = _real("risk", risk, "a curve of numbers").numpy()
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
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) \
            or not 0 < eps < math.inf:
        raise ValueError(f"eps must be a finite positive number, got {eps!r}")
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

# The layer of the other chapters (tdlib.attention.AttentionLayer) on the prompts above, trained
# by full-batch GD on the loss of the query token only. Run the stored sweep with
#     OMP_NUM_THREADS=1 python -m tdlib.icl --out book/data/icl/bridge

BRIDGE_KERNELS = ("linear-n", "softmax", "gaussian")
"""The kernels of the bridge: the solvable one and the two of the book."""

BRIDGE_MODES = ("query", "joint")
"""``"joint"``: ``W_Q, W_K, W_V`` train from a random start (``W_O`` fixed and shared by the
heads); ``"query"``: only ``W_Q`` trains, the other weights hold the in-context structure
(:func:`structured_layer`)."""

__all__ += ["BRIDGE_KERNELS", "BRIDGE_MODES", "bridge_layer", "structured_layer",
            "query_output", "query_loss", "gd_query", "test_risk", "bridge_task",
            "bridge_tasks", "bridge_sweep", "check_bridge", "load_bridge", "bridge_runs",
            "kernel_summary",
            "paired", "tuned_lr", "shared_lr", "query_features", "flat_softmax_risk",
            "check_flat_risk", "hull_floor", "flat_gaussian_risk",
            "check_flat_gaussian_risk"]


def _layer(model):
    """``model`` if it is the book's layer (:class:`~tdlib.attention.AttentionLayer`),
    else a ``TypeError`` naming it."""
    from .attention import AttentionLayer

    if not isinstance(model, AttentionLayer):
        raise TypeError(f"model: expected an AttentionLayer (bridge_layer or "
                        f"structured_layer), got {type(model).__name__}")
    return model


def _kernels(kernels) -> list:
    """``kernels`` as a non-empty list of registered kernel names, or a clear error."""
    if isinstance(kernels, (str, bytes)) or not hasattr(kernels, "__iter__") \
            or not list(kernels):
        raise ValueError(f"kernels: expected a non-empty list of kernel names such as "
                         f"{list(BRIDGE_KERNELS)}, got {kernels!r:.60}")
    try:
        return [_kernel(k) for k in kernels]
    except ValueError as err:
        raise ValueError(f"kernels: {err}") from None


def _kernel(kernel) -> str:
    from .attention import KERNELS

    if not isinstance(kernel, str) or kernel not in KERNELS:
        raise ValueError(f"kernel: expected a registered kernel name such as "
                         f"{', '.join(BRIDGE_KERNELS)}, got {kernel!r}")
    return kernel


def bridge_layer(kernel: str, m: int, H: int = 1, seed: int = 0, scale: float = 1.0):
    """The book's layer for prompts in dimension ``m``: ``D = d = d_v = m + 1``, ``H`` heads,
    ``d_out = 1``, weights ``N(0, scale^2 / D)`` drawn from ``seed`` (float64), and one
    output matrix ``W_O`` (``D x 1``, head 0's draw) shared by every head."""
    from .attention import AttentionLayer

    m = _count("m", m, 1)
    D = m + 1
    model = AttentionLayer(D, H=_count("H", H, 1), d=D, d_v=D, d_out=1,
                           kernel=_kernel(kernel), scale=scale, seed=seed)
    W_O = model.W_O.detach()[0]
    return model.set_weights(W_O=W_O.expand(model.H, D, 1).clone())


def structured_layer(kernel: str, m: int, seed: int = 0, scale: float = 1.0):
    """One head (``D = d = d_v = m + 1``) with the structure of (ICL): keys read only ``x``
    (``W_K = diag(1, ..., 1, 0)``), values read only the label (``W_V W_O`` maps a token to
    its label, so ``v_j = y_j`` and the query's own value is 0); ``W_Q`` is
    ``N(0, scale^2 / D)`` from ``seed``. With ``linear-n`` and ``W_Q = sqrt(D) [W_QK 0; 0 0]``
    the query's output is the prediction (ICL) (:func:`predict`)."""
    model = bridge_layer(kernel, m, 1, seed, scale)
    D = m + 1
    W_K = torch.diag(torch.tensor([1.0] * m + [0.0], dtype=torch.float64))
    W_V = torch.zeros(D, D, dtype=torch.float64)
    W_V[m, 0] = 1.0
    W_O = torch.zeros(D, 1, dtype=torch.float64)
    W_O[0, 0] = 1.0
    return model.set_weights(W_K=W_K, W_V=W_V, W_O=W_O)


def query_output(model, X) -> torch.Tensor:
    """The layer's output at the query token, ``T(X_i)_{n,1}`` for every prompt (length N)."""
    with torch.no_grad():
        return _layer(model)(X)[:, -1, 0]


def query_loss(model, X, y_q) -> torch.Tensor:
    """``f = 1/2 sum_i (T(X_i)_{n,1} - y_{q,i})^2``: the book's loss restricted to the query
    token (a 0-d tensor; ``X``: ``N x n x (m+1)``, ``y_q``: length ``N``)."""
    X = _layer(model).check_X(X)
    y_q = _real("y_q", y_q, "one label per prompt").to(X.dtype)
    if y_q.shape != (X.shape[0],):
        raise ValueError(f"y_q: expected one label per prompt, shape ({X.shape[0]},), got "
                         f"{tuple(y_q.shape)}")
    if not torch.isfinite(y_q).all():
        raise ValueError("y_q: expected finite labels, got NaN or Inf")
    return 0.5 * ((model._forward(X)[:, -1, 0] - y_q) ** 2).sum()


def query_features(model, X) -> torch.Tensor:
    """The query rows ``B_q`` (``N x HD``) of the feature matrix ``B`` of the chapter *Zero
    loss*: row ``i`` is ``[S_h(X_i)_{n,:} X_i]_{h=1..H}``, so that with one shared ``W_O`` the
    query outputs are ``B_q V W_O``."""
    from .zeroloss import feature_matrix

    X = _layer(model).check_X(X)
    N, n = X.shape[:2]
    return feature_matrix(model, X).reshape(N, n, -1)[:, -1]


def hull_floor(P: Dict[str, torch.Tensor]) -> float:
    """``1/2 sum_i dist(y_{q,i}, [a_i, b_i])^2`` with ``a_i = min(0, min_{j<n} y_{ij})`` and
    ``b_i = max(0, max_{j<n} y_{ij})``: a lower bound on the query-token loss of the structured
    layer (:func:`structured_layer`) with any row-stochastic kernel, at every ``W_Q``."""
    y = _prompts(P)["y"]
    lo = y[:, :-1].min(dim=1).values.clamp(max=0)
    hi = y[:, :-1].max(dim=1).values.clamp(min=0)
    y_q = y[:, -1]
    gap = torch.clamp(lo - y_q, min=0) + torch.clamp(y_q - hi, min=0)
    return float(0.5 * (gap ** 2).sum())


def gd_query(model, X, y_q, lr: float, steps: int, trainable=("W_Q", "W_K", "W_V"),
             tol: float = 0.0, every: int = 50) -> dict:
    """Full-batch GD ``W <- W - lr grad_W f`` on :func:`query_loss` for ``steps`` steps (fewer
    once ``f <= tol``). Returns ``loss`` (``f`` every ``every`` steps and at the end),
    ``steps`` taken, ``final`` (the last finite ``f``), ``grad`` (the gradient's norm there),
    ``diverged`` (``f`` not finite or above ``1e8 f_0``). The model is trained in place."""
    import math

    from .checks import check_int, check_positive
    from .train import _check_trainable

    lr = check_positive("lr (step size)", lr)
    steps = check_int("steps", steps, minimum=0)
    every = check_int("every", every)
    tol = check_positive("tol", tol, strict=False)
    trainable = _check_trainable(trainable)
    ps = [getattr(_layer(model), p) for p in trainable]
    curve, f0, diverged, grad, t, last = [], None, False, float("nan"), 0, float("nan")
    for t in range(steps + 1):
        loss = query_loss(model, X, y_q)
        f = float(loss.detach())
        if not math.isfinite(f) or (f0 is not None and f > 1e8 * max(f0, 1e-300)):
            diverged = True
            break
        f0 = f if f0 is None else f0
        gs = torch.autograd.grad(loss, ps)
        grad = float(torch.sqrt(sum((g ** 2).sum() for g in gs)))
        last = f
        if t % every == 0 or t == steps or f <= tol:
            curve.append(f)
        if f <= tol or t == steps:
            break
        with torch.no_grad():
            for p, g in zip(ps, gs):
                p.sub_(lr * g)
    return {"loss": curve, "steps": t, "final": last,
            "grad": grad, "diverged": diverged}


def test_risk(model, P: Dict[str, torch.Tensor]) -> float:
    """``1/2 mean_i (T(X_i)_{n,1} - y_{q,i})^2`` over the prompts ``P``: on fresh prompts, a
    Monte Carlo estimate of the population risk ``R`` of the trained layer."""
    with torch.no_grad():
        r = query_output(_layer(model), tokens(P)) - P["y"][:, -1]
    return float(0.5 * (r ** 2).mean())


# ---------------------------------------------------------------------------------------------
# A certified trap: the Softmax query loss near a stopped run, in interval arithmetic
# ---------------------------------------------------------------------------------------------

# Only the acting block W_xx = W_Q[:m, :m] of a one-head Softmax layer is free (the chapter's
# W^Q_xx). The score of token j in prompt i is z_ij = <grad z_ij, W_xx> + (the rest of W_Q's
# part), with grad z_ij = X_in[:m] k_ij[:m]^T / sqrt(d) (k_ij = X_ij W_K, X_in the query
# token); the query's output is o_i = sum_j p_ij v_ij with p_i = softmax(z_i) and values
# v_ij = X_ij W_V W_O, and f_xx(W_xx) = 1/2 sum_i (o_i - y_qi)^2. With the mean
# zbar_i = sum_j p_ij grad z_ij (prop-icl-trap-certificate (1) of the chapter):
#     grad o_i = sum_j p_ij (v_ij - o_i) (grad z_ij - zbar_i),
#     hess o_i = sum_j p_ij (v_ij - o_i) (grad z_ij - zbar_i)(grad z_ij - zbar_i)^T,
#     grad f_xx = sum_i (o_i - y_qi) grad o_i,
#     hess f_xx = sum_i grad o_i grad o_i^T + (o_i - y_qi) hess o_i.
# trap_box evaluates them in outward-rounded arithmetic (tdlib.intervals.Box), so that they
# enclose the exact values for every W_xx of a box; trap_certificate turns that into a proof
# (prop-icl-trap-certificate (2) and (3)).

__all__ += ["trap_weights", "trap_box", "trap_derivatives", "trap_certificate",
            "trap_pairs", "rerun_query_start", "bound_text"]


def trap_weights(model) -> dict:
    """The fixed weights of a one-head Softmax layer with one output as float64 arrays:
    ``W_Q (D, d)`` (its block ``[:m, :m]``, ``m = D - 1``, is the free one), ``W_K (D, d)``,
    ``W_V (D, d_v)``, ``W_O (d_v, 1)``. A clear error for any other layer."""
    from .attention import AttentionLayer

    if not isinstance(model, AttentionLayer):
        raise TypeError(f"model: expected a tdlib AttentionLayer, got {type(model).__name__}")
    if model.kernel_name != "softmax" or model.H != 1 or model.d_out != 1:
        raise ValueError(f"model: expected one Softmax head with d_out = 1 (as "
                         f"structured_layer('softmax', m)), got kernel "
                         f"{model.kernel_name!r}, H = {model.H}, d_out = {model.d_out}")
    if model.D < 2 or model.d < model.D - 1:
        raise ValueError(f"model: expected D >= 2 and d >= m = D - 1, got D = {model.D}, "
                         f"d = {model.d}")
    w = {k: getattr(model, k).detach().to(torch.float64)[0].numpy().copy()
         for k in ("W_Q", "W_K", "W_V", "W_O")}
    for k, v in w.items():
        if not np.isfinite(v).all():
            raise ValueError(f"model: {k} has entries that are not finite")
    return w


def _trap_data(model, X, y_q):
    from .checks import as_array

    w = trap_weights(model)
    X = as_array("X", X, "(N, n, D)").numpy()
    D = w["W_Q"].shape[0]
    if X.shape[2] != D or X.shape[1] < 2:
        raise ValueError(f"X: expected shape (N, n, D) with n >= 2 and D = {D}, got "
                         f"{X.shape}")
    y_q = as_array("y_q", y_q, "(N,)").numpy()
    if y_q.shape != (X.shape[0],):
        raise ValueError(f"y_q: expected one label per prompt, shape ({X.shape[0]},), got "
                         f"{y_q.shape}")
    return w, X, y_q


def _with_block(W_Q: np.ndarray, W_xx):
    """The box of ``W_Q`` with its block ``[:m, :m]`` replaced by the box ``W_xx``."""
    from .intervals import Box

    m = W_xx.lo.shape[0]
    lo, hi = W_Q.copy(), W_Q.copy()
    lo[:m, :m], hi[:m, :m] = W_xx.lo, W_xx.hi
    return Box(lo, hi)


def trap_box(w: dict, X: np.ndarray, y_q: np.ndarray, W_xx, order: int = 2):
    """Enclosures of the exact ``f_xx``, ``grad f_xx`` (length ``m^2``, row-major in ``W_xx``)
    and ``hess f_xx`` (``m^2 x m^2``) of the query loss for every block in the box ``W_xx``
    (a :class:`tdlib.intervals.Box` of shape ``(m, m)``; the other entries of ``W_Q`` and all
    data taken as exact): ``(f, grad, hess)``, the last two ``None`` below ``order`` 1 and 2.
    ``w`` is :func:`trap_weights`; ``X (N, n, D)``, ``y_q (N,)`` float64 arrays."""
    from .intervals import Box

    N, n, D = X.shape
    m, d = D - 1, w["W_K"].shape[1]
    rt = Box(float(d)).sqrt()
    Xb = Box(X[..., None])                                        # (N, n, D, 1)
    q = (Box(X[:, -1, :, None]) * _with_block(w["W_Q"], W_xx)).sum(1)   # (N, d)
    K = (Xb * Box(w["W_K"])).sum(2)                               # (N, n, d)
    v = ((Xb * Box(w["W_V"])).sum(2) * Box(w["W_O"][:, 0])).sum(2)   # (N, n)
    z = (q[:, None, :] * K).sum(2) / rt                           # scores (N, n)
    E = (z[:, None, :] - z[:, :, None]).exp()                      # e^{z_ij' - z_ij}
    j = np.arange(n)
    E.lo[:, j, j] = E.hi[:, j, j] = 1.0
    p = E.sum(2).inv()                                            # p_ij = 1 / sum_j' E_ijj'
    o = (p * v).sum(1)
    err = o - Box(y_q)                                            # o_i - y_qi
    f = err.sq().sum(0) * 0.5
    if order < 1:
        return f, None, None
    dz = Box(X[:, -1, None, :m, None]) * K[:, :, None, :m] / rt   # grad z_ij (N, n, m, m)
    dz = Box(dz.lo.reshape(N, n, m * m), dz.hi.reshape(N, n, m * m))
    da = dz - (p[..., None] * dz).sum(1)[:, None, :]              # grad z_ij - zbar_i
    pc = p * (v - o[:, None])                                     # p_ij (v_ij - o_i)
    g = (pc[..., None] * da).sum(1)                               # grad o_i, (N, m^2)
    grad = (err[:, None] * g).sum(0)
    if order < 2:
        return f, grad, None
    Ho = (pc[..., None, None] * (da[..., :, None] * da[..., None, :])).sum(1)
    return f, grad, (g[:, :, None] * g[:, None, :] + err[:, None, None] * Ho).sum(0)


def _block(name: str, W_xx, m: int) -> np.ndarray:
    from .checks import as_array

    W_xx = as_array(name, W_xx, "(m, m)").numpy()
    if W_xx.shape != (m, m):
        raise ValueError(f"{name}: expected the acting block, shape ({m}, {m}), got "
                         f"{W_xx.shape}")
    return W_xx


def trap_derivatives(model, X, y_q, W_xx) -> tuple:
    """``(f, grad, hess)`` of the query loss of ``model`` (:func:`trap_weights`) as a function
    of the block ``W_xx = W_Q[:m, :m]`` at ``W_xx (m, m)``, from the closed forms above in float64
    (the midpoints of :func:`trap_box` on the point ``W_xx``): a float, an ``(m, m)`` array and
    an ``(m^2, m^2)`` array (row-major: entry ``(a m + b, c m + e)`` is
    ``d^2 f / dZ_ab dZ_ce``)."""
    from .intervals import Box

    w, X, y_q = _trap_data(model, X, y_q)
    m = X.shape[2] - 1
    W_xx = _block("W_xx", W_xx, m)
    f, g, H = trap_box(w, X, y_q, Box(W_xx), order=2)
    mid = lambda b: 0.5 * (b.lo + b.hi)
    return float(mid(f)), mid(g).reshape(m, m), mid(H)


def _norm_hi(v) -> float:
    """An upper bound on the Euclidean norm of every vector in the box ``v``."""
    from .intervals import Box

    return float(Box(np.maximum(np.abs(v.lo), np.abs(v.hi))).sq().sum(0).sqrt().hi)


def _lam_lo(H) -> float:
    """The best proved lower bound on ``lambda_min`` over the box ``H`` from a few margins
    (0 when the enclosure is not finite: a box too wide for the arithmetic proves nothing)."""
    from .separation import lambda_min_lower

    if not (np.isfinite(H.lo).all() and np.isfinite(H.hi).all()):
        return 0.0
    return max(float(lambda_min_lower(H, shrink=s)) for s in (1e-6, 1e-4, 1e-2, 0.1, 0.5))


def trap_certificate(model, X, y_q, W_hat, W_Q_other, radii=None) -> dict:
    """Prove, in outward-rounded interval arithmetic with every float64 input taken as exact,
    that the query loss ``f`` of the Softmax layer ``model`` (one head, ``d_out = 1``; ``X (N,
    n, D)``, ``y_q (N,)``) has a strict local minimum ``W_dagger`` in its block ``W_xx =
    W_Q[:m, :m]`` near ``W_hat (m, m)``, whose loss exceeds ``f(W_Q_other)`` (``W_Q_other
    (D, d)``), by prop-icl-trap-certificate of the chapter. Returns a dict:

    * ``grad_hi`` (the chapter's beta) >= ``||grad f_xx(W_hat)||_F``; ``f0 = (lo, hi)``
      encloses ``f_xx(W_hat)``; ``f_other_hi >= f(W_Q_other)``;
    * ``radius`` r: the first of ``radii`` (default ``grad_hi / lam_float`` times 2, 10, 100,
      1000, rounded up to two significant digits) with ``lam_lo <= lambda_min(hess f_xx)`` on the box ``W_hat +- r`` (so on the
      Frobenius ball of radius r) and ``grad_hi < lam_lo r``; ``None`` if none works;
    * then ``W_dagger`` is the only stationary point in the ball, ``||W_dagger - W_hat||_F <=
      dist_hi`` and ``f_xx(W_dagger) >= f_star_lo = f0[0] - grad_hi^2 / (2 lam_lo)``.

    ``ok`` is True when all of this is proved, ``f_star_lo > f_other_hi`` and ``f`` depends on
    ``W_Q`` only through ``W_xx`` (``block_only``: the query tokens' last coordinate and the
    last columns of ``W_K`` are exactly 0), so ``W_dagger`` gives a local minimum of ``f``
    over all of ``W_Q`` (not strict there: ``f`` is flat in the other entries), not a global
    one. ``reasons`` says what failed; ``tried`` lists ``(r, lam_lo)`` for every radius tried;
    ``lam_float`` is the float64 ``lambda_min`` of the Hessian at ``W_hat`` (a measurement
    that only chooses the radii)."""
    import math

    from .checks import as_array
    from .intervals import Box

    w, X, y_q = _trap_data(model, X, y_q)
    D, d = w["W_Q"].shape
    m = D - 1
    W_hat = _block("W_hat", W_hat, m)
    W_o = as_array("W_Q_other", W_Q_other, "(D, d)").numpy()
    if W_o.shape != (D, d):
        raise ValueError(f"W_Q_other: expected a query matrix of shape ({D}, {d}), got "
                         f"{W_o.shape}")
    if radii is not None:
        given = radii
        radii = _real("radii", radii, "a list of positive finite radii").reshape(-1).tolist()
        if np.ndim(given) != 1 or not radii or not all(math.isfinite(r) and r > 0
                                                        for r in radii):
            raise ValueError(f"radii: expected a list of positive finite radii, got "
                             f"{given!r:.60}")
    block_only = bool((X[:, -1, m:] == 0).all() and (w["W_K"][:, m:] == 0).all())
    f0, g0, H0 = trap_box(w, X, y_q, Box(W_hat), order=2)
    grad_hi = _norm_hi(g0)
    f_other_hi = float(trap_box(dict(w, W_Q=W_o), X, y_q,
                                Box(W_o[:m, :m]), order=0)[0].hi)
    lam_float = float(np.linalg.eigvalsh(0.5 * (H0.lo + H0.hi))[0])
    out = {"ok": False, "radius": None, "lam_lo": 0.0, "lam_float": lam_float,
           "grad_hi": grad_hi, "f0": (float(f0.lo), float(f0.hi)), "f_star_lo": None,
           "f_other_hi": f_other_hi, "dist_hi": None, "block_only": block_only,
           "tried": [], "reasons": []}
    if radii is None:
        if not lam_float > 0:
            out["reasons"].append(f"the float64 Hessian at the given block is not positive "
                                  f"definite (smallest eigenvalue {lam_float:.2e})")
            return out
        radii = [float(bound_text(c * max(grad_hi, 1e-300) / lam_float, up=True))
                 for c in (2, 10, 100, 1000)]           # short numbers, easy to print
    for r in radii:
        box = Box(np.nextafter(W_hat - r, -np.inf), np.nextafter(W_hat + r, np.inf))
        with np.errstate(over="ignore", invalid="ignore"):
            lam = _lam_lo(trap_box(w, X, y_q, box, order=2)[2])
        out["tried"].append((r, lam))
        if lam > 0 and grad_hi < float((Box(lam) * r).lo):
            out.update(radius=r, lam_lo=lam)
            break
    else:
        out["reasons"].append("no radius tried gave a positive lower bound on the "
                              "Hessian's eigenvalues over its box that exceeds the gradient "
                              "bound divided by the radius")
        return out
    lam, gb = Box(out["lam_lo"]), Box(grad_hi)
    out["f_star_lo"] = float((Box(f0.lo) - gb.sq() / (lam * 2.0)).lo)
    out["dist_hi"] = float((gb / lam).hi)
    if not out["f_star_lo"] > f_other_hi:
        out["reasons"].append("the lower bound on the loss at the minimum does not exceed "
                              "the upper bound on the loss at the other point")
    if not block_only:
        out["reasons"].append("the loss may depend on entries of the query matrix outside "
                              "the block: a minimum in the block is not shown to be one "
                              "in the whole matrix")
    out["ok"] = not out["reasons"]
    return out


def bound_text(x: float, *, up: bool, sig: int = 2, decimals: Optional[int] = None) -> str:
    """A proved bound ``x`` as text that keeps it proved: rounded up (``up=True``, for an upper
    bound) or down (a lower bound) to ``decimals`` places, or else to ``sig`` significant
    digits in scientific notation. ``float(text) >= x`` (up) or ``<= x`` (down); a relative
    margin of 1e-12 covers the rounding of the float operations used here."""
    import math

    from .checks import check_int, check_real

    x = check_real("x", x)
    if decimals is not None:
        e = -check_int("decimals", decimals, minimum=0)
    else:
        sig = check_int("sig", sig)
        e = (math.floor(math.log10(abs(x))) if x else 0) - sig + 1
    v = x / 10.0 ** e
    v = math.ceil(v + 1e-12 * abs(v)) if up else math.floor(v - 1e-12 * abs(v))
    if decimals is not None:
        return f"{v / 10 ** decimals:.{decimals}f}"
    return f"{v / 10 ** (sig - 1):.{sig - 1}f}e{e + sig - 1:+03d}"


def trap_pairs(doc: dict, grad_tol: float = 1e-9, gap: float = 1e-6) -> list:
    """Pairs ``(a, b)`` of stored query-only Softmax runs of the bridge sweep ``doc`` at
    Softmax's tuned step size, on the same prompts (seed), where ``a`` stopped (final gradient
    norm below ``grad_tol``) and ``b`` ended lower by more than ``gap`` times the zero
    output's loss (``rel`` below ``a``'s ``rel - gap``); in the order of the stored runs."""
    c = tuned_lr(doc, "query", "softmax")
    soft = [r for r in bridge_runs(doc, "query")
            if r["kernel"] == "softmax" and r["lrN"] == c and not r["diverged"]]
    return [(a, b) for a in soft for b in soft if a["seed"] == b["seed"]
            and a["grad"] < grad_tol and b["rel"] < a["rel"] - gap]


def rerun_query_start(doc: dict, run: dict) -> tuple:
    """Rerun the stored query-only run ``run`` (an entry of :func:`bridge_runs`) of the bridge
    sweep ``doc``: the prompts of its seed, the structured layer of its start, GD on ``W_Q``
    at its step size and budget with the sweep's stopping level. Returns ``(model, X, y_q,
    result)`` (:func:`gd_query`'s result); raises ``ValueError`` if the rerun does not end
    where the stored run ended (relative difference above 1e-6)."""
    cfg = doc["bridge_config"]
    mc = cfg["modes"]["query"]
    P = prompts(mc["N"], cfg["n"], cfg["m"], seed=run["seed"])
    X, y_q = tokens(P), P["y"][:, -1]
    f_zero = 0.5 * float((y_q ** 2).sum())
    model = structured_layer(run["kernel"], cfg["m"], seed=run["seed"] * 1000 + run["init"])
    out = gd_query(model, X, y_q, run["lrN"] / mc["N"], mc["steps"], ("W_Q",),
                   tol=doc["zero_fraction"] * f_zero)
    if not abs(out["final"] - run["final"]) <= 1e-6 * abs(run["final"]):
        raise ValueError(f"run: the rerun of seed {run['seed']}, start {run['init']} ends at "
                         f"f = {out['final']:.6g}, the stored run at {run['final']:.6g}")
    return model, X, y_q, out


BRIDGE_DEFAULTS = dict(kernels=list(BRIDGE_KERNELS), m=3, n=8, N_test=2000, seeds=6, seed=0,
                       modes={"query": dict(N=64, H=1, inits=3, steps=1000,
                                             lrN=[0.3, 1.0, 3.0, 10.0]),
                              "joint": dict(N=8, H=2, inits=2, steps=1500,
                                            lrN=[0.01, 0.03, 0.1, 0.3])})
"""The stored sweep's set-up (``python -m tdlib.icl`` with no options). Per mode: ``N``
training prompts, ``H`` heads, ``inits`` starts per seed, ``steps`` of GD, and the step sizes
as ``lr * N`` (the loss is a sum over prompts, its gradient grows with ``N``)."""

BRIDGE_ZERO = 1e-12
"""A run *reaches zero* when its final loss is at most this fraction of ``1/2 sum_i y_{q,i}^2``
(the loss of the zero output)."""


def _check_task(mode, seed, kernels, m, n, N, H, inits, steps, lrN, N_test) -> None:
    """Refuse a :func:`bridge_task` with a bad argument (an error naming it), before any
    run."""
    from .checks import check_choice

    check_choice("mode", mode, BRIDGE_MODES)
    _seed(seed)
    _kernels(kernels)
    for name, v, low in (("m", m, 1), ("n", n, 2), ("N", N, 1), ("H", H, 1),
                         ("inits", inits, 1), ("steps", steps, 0),
                         ("N_test", N_test, 1)):
        _count(name, v, low)
    bad = lambda c: (isinstance(c, bool) or not isinstance(c, numbers.Real)
                     or not 0 < c < math.inf)
    if isinstance(lrN, (str, bytes)) or not hasattr(lrN, "__iter__") or not list(lrN) \
            or any(bad(c) for c in lrN):
        raise ValueError(f"lrN: expected a non-empty list of positive step sizes "
                         f"(lr * N), got {lrN!r:.60}")


def bridge_task(mode: str, seed: int, kernels, m: int, n: int, N: int, H: int, inits: int,
                steps: int, lrN, N_test: int) -> dict:
    """One seed of the bridge sweep in one mode: ``N`` training prompts and ``N_test`` test
    prompts from ``seed``; for every kernel, start ``i < inits`` (seed ``seed * 1000 + i``,
    the same weights for every kernel where shapes agree) and step size ``lr = lrN[j] / N``,
    GD on :func:`query_loss`. JSON in, JSON out: ``runs`` holds one dict per run with
    ``kernel, init, lrN, final, rel`` (final / zero-output loss), ``grad, diverged,
    plateau`` (the final loss is, to 1e-3, that of the zero output), ``risk`` (test),
    ``norm_WQ``, ``lam0`` (``lambda_min(B_q B_q^T)`` at the start, joint mode) and ``loss``
    (every 50 steps)."""
    from .zeroloss import lambda_min

    torch.set_num_threads(1)
    _check_task(mode, seed, kernels, m, n, N, H, inits, steps, lrN, N_test)
    P = prompts(N, n, m, seed=seed)
    Pt = prompts(N_test, n, m, seed=seed + 2 ** 40)
    X, y_q = tokens(P), P["y"][:, -1]
    f_zero = 0.5 * float((y_q ** 2).sum())
    runs = []
    for k in kernels:
        for i in range(_count("inits", inits, 1)):
            for c in lrN:
                s = seed * 1000 + i
                model = (structured_layer(k, m, seed=s) if mode == "query"
                         else bridge_layer(k, m, H, seed=s))
                lam0 = (lambda_min(query_features(model, X).detach()) if mode == "joint"
                        else None)
                r = gd_query(model, X, y_q, c / N, steps,
                             ("W_Q",) if mode == "query" else ("W_Q", "W_K", "W_V"),
                             tol=BRIDGE_ZERO * f_zero)
                ok = not r["diverged"]
                runs.append({"kernel": k, "init": i, "lrN": c, "final": r["final"],
                             "rel": r["final"] / f_zero, "grad": r["grad"] if ok else None,
                             "diverged": r["diverged"],
                             "plateau": ok and abs(r["final"] - f_zero) <= 1e-3 * f_zero,
                             "risk": test_risk(model, Pt) if ok else None,
                             "norm_WQ": float(model.W_Q.detach().norm()) if ok else None,
                             "lam0": lam0, "steps": r["steps"], "loss": r["loss"]})
    return {"mode": mode, "seed": seed, "f_zero": f_zero, "runs": runs}


def _bridge_config(**options) -> dict:
    import copy

    cfg = copy.deepcopy(BRIDGE_DEFAULTS)
    for k, v in options.items():
        if v is None:
            continue
        if k not in cfg:
            raise ValueError(f"bridge option: expected one of {', '.join(cfg)}, got {k!r}")
        cfg[k] = v
    _kernels(cfg["kernels"])
    _count("seeds", cfg["seeds"], 1)
    _seed(cfg["seed"])
    return cfg


def bridge_tasks(**options) -> list:
    """The keyword arguments of every :func:`bridge_task` of the sweep (``options`` replace
    entries of :data:`BRIDGE_DEFAULTS`): one task per seed and mode; seed ``s`` draws the same
    prompts and starts for every kernel, so kernels are compared in pairs."""
    cfg = _bridge_config(**options)
    out = []
    for s in range(cfg["seeds"]):
        for mode, mc in cfg["modes"].items():
            out.append(dict(mode=mode, seed=int(cfg["seed"] + 1 + s),
                            kernels=list(cfg["kernels"]), m=cfg["m"], n=cfg["n"],
                            N_test=cfg["N_test"], **mc))
    for t in out:
        _check_task(**t)
    return out


def bridge_sweep(workers=None, scheduler=None, checkpoint=None, command=None, quiet=True,
                 **options) -> dict:
    """Every :func:`bridge_task` through :func:`tdlib.sweep.run`; returns the stored document
    ``{"bridge_config", "cells", "provenance"}``."""
    import time

    from . import book
    from . import sweep as runner
    from .icl import bridge_task as fn   # by its module name, also under python -m tdlib.icl

    start = time.perf_counter()
    task_list = bridge_tasks(**options)
    info: dict = {}
    cells = runner.run(fn, task_list, workers=workers, scheduler=scheduler,
                       checkpoint=checkpoint, quiet=quiet, info=info, desc="icl bridge")
    return {"bridge_config": _bridge_config(**options), "zero_fraction": BRIDGE_ZERO,
            "cells": cells,
            "provenance": book.provenance(command, **{
                **runner.record(info), "wall_seconds": time.perf_counter() - start,
                "cpu_seconds": info.get("cpu_seconds")})}


def check_bridge(doc) -> list:
    """The problems of a stored bridge sweep (an empty list when it is sound): every task of
    its configuration present once, every run of every kernel, start and step size present,
    finite numbers where a run did not diverge, relative losses that match ``final``."""
    problems = []
    try:
        want = bridge_tasks(**doc["bridge_config"])
    except (KeyError, TypeError, ValueError) as err:
        return [f"bridge_config: not a valid configuration ({err})"]
    cells = doc.get("cells")
    if not isinstance(cells, list):
        return ["cells: expected a list of tasks"]
    have = {(c.get("mode"), c.get("seed")): c for c in cells if isinstance(c, dict)}
    if len(have) != len(cells):
        problems.append("cells: a task appears twice or is not a dict")
    for t in want:
        c = have.get((t["mode"], t["seed"]))
        if c is None:
            problems.append(f"cells: task mode={t['mode']} seed={t['seed']} is missing")
            continue
        runs = c.get("runs") or []
        keys = {(r.get("kernel"), r.get("init"), r.get("lrN")) for r in runs}
        need = {(k, i, a) for k in t["kernels"] for i in range(t["inits"]) for a in t["lrN"]}
        if keys != need or len(runs) != len(need):
            problems.append(f"cells: task mode={t['mode']} seed={t['seed']} does not hold one "
                            f"run per kernel, start and step size")
        for r in runs:
            bad = [f for f in ("final", "rel") if not isinstance(r.get(f), (int, float))]
            if not r.get("diverged"):
                bad += [f for f in ("risk", "grad") if not isinstance(r.get(f), (int, float))]
            elif r.get("risk") is not None:
                bad.append("risk")
            if not bad and abs(r["rel"] * c["f_zero"] - r["final"]) > 1e-9 * (1 + r["final"]):
                bad.append("rel")
            if bad:
                problems.append(f"cells: run {r.get('kernel')}/{r.get('init')}/{r.get('lrN')} "
                                f"of mode={t['mode']} seed={t['seed']}: bad {', '.join(bad)}")
                break
    return problems


def load_bridge(*parts: str) -> dict:
    """The stored bridge sweep (default ``book/data/icl/bridge/results.json``), validated by
    :func:`check_bridge`: a damaged file raises an error that names it and its command."""
    from . import book

    parts = parts or ("icl", "bridge", "results.json")
    doc = book.stored(*parts)
    problems = check_bridge(doc)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise book.StoredResultError(f"{book.data_path(*parts)}: {problems[0]}{more}; remake "
                                     f"it with: {doc.get('provenance', {}).get('command')}")
    return doc


def bridge_runs(doc: dict, mode: str) -> list:
    """Every stored run of ``mode`` with its task's ``seed`` added (a list of dicts)."""
    from .checks import check_choice

    check_choice("mode", mode, BRIDGE_MODES)
    return [dict(r, seed=c["seed"]) for c in doc["cells"] if c["mode"] == mode
            for r in c["runs"]]


def _bad(r) -> bool:
    return bool(r["diverged"] or r["plateau"])


def tuned_lr(doc: dict, mode: str, kernel: str) -> float:
    """The step size (as ``lr * N``) of the grid with the lowest median final training loss of
    ``kernel`` over every seed and start (a diverged run counts as an infinite loss): tuned on
    the training loss, never on the test risk."""
    import math
    import statistics

    rs = [r for r in bridge_runs(doc, mode) if r["kernel"] == _kernel(kernel)]
    if not rs:
        raise ValueError(f"kernel: {kernel!r} has no runs in mode {mode!r}")
    grid = sorted({r["lrN"] for r in rs})
    med = {c: statistics.median(math.inf if r["diverged"] else r["rel"]
                                for r in rs if r["lrN"] == c) for c in grid}
    return min(grid, key=lambda c: (med[c], c))


def shared_lr(doc: dict, mode: str) -> float:
    """The largest step size (``lr * N``) of the grid at which no run of any kernel diverged
    or ended on the plateau of the zero output (the smallest of the grid if there is none)."""
    rs = bridge_runs(doc, mode)
    grid = sorted({r["lrN"] for r in rs})
    good = [c for c in grid if not any(_bad(r) for r in rs if r["lrN"] == c)]
    return max(good) if good else grid[0]


def paired(doc: dict, mode: str, kernel: str, lrN: float, ref: str = "linear-n",
           lrN_ref: Optional[float] = None, key: str = "risk") -> dict:
    """Paired differences ``key(kernel) - key(ref)`` over the (seed, start) pairs of ``mode``
    (same prompts and, where shapes agree, the same starting weights), ``kernel`` at step size
    ``lrN`` and ``ref`` at ``lrN_ref`` (default the same). Pairs where either run diverged
    are left out and counted. Returns ``diff`` (a list), ``median``, ``lower`` (pairs where
    ``kernel`` is lower), ``higher``, ``pairs``, ``dropped`` and ``p``, the two-sided sign
    test's p-value (ties left out)."""
    import math

    lrN_ref = lrN if lrN_ref is None else lrN_ref
    rs = bridge_runs(doc, mode)
    pick = lambda k, c: {(r["seed"], r["init"]): r for r in rs
                         if r["kernel"] == k and r["lrN"] == c}
    a, b = pick(_kernel(kernel), lrN), pick(_kernel(ref), lrN_ref)
    if not a or not b:
        raise ValueError(f"paired: no runs of {kernel!r} at lrN={lrN} or of {ref!r} at "
                         f"lrN={lrN_ref} in mode {mode!r}")
    keys = sorted(set(a) & set(b))
    ok = [k for k in keys if not (a[k]["diverged"] or b[k]["diverged"])]
    diff = [a[k][key] - b[k][key] for k in ok]
    lower, higher = sum(d < 0 for d in diff), sum(d > 0 for d in diff)
    t = lower + higher
    tail = sum(math.comb(t, j) for j in range(min(lower, higher) + 1)) / 2 ** t if t else 1.0
    srt = sorted(diff)
    med = (srt[(len(srt) - 1) // 2] + srt[len(srt) // 2]) / 2 if srt else float("nan")
    return {"diff": diff, "median": med, "lower": lower, "higher": higher, "pairs": len(ok),
            "dropped": len(keys) - len(ok), "p": min(1.0, 2 * tail)}


def kernel_summary(doc: dict, mode: str, kernel: str, lrN: float) -> dict:
    """What the sweep measured for ``kernel`` at step size ``lrN`` in ``mode``: ``runs``,
    ``diverged``, ``plateau`` (runs ending on the zero output's loss), ``zero`` (runs at or
    below :data:`BRIDGE_ZERO` of it), ``rel`` (median final loss / zero-output loss over the
    runs that did not diverge), ``risk`` (median test risk), ``spread`` (median over seeds of
    the spread ``(max - min) / (1/2 sum y_q^2)`` of the final losses of the starts; every
    seed's spread in ``spreads``),
    ``grad`` (median final gradient norm) and ``norm`` (median final ``||W_Q||_F``)."""
    import statistics

    rs = [r for r in bridge_runs(doc, mode) if r["kernel"] == _kernel(kernel)
          and r["lrN"] == lrN]
    if not rs:
        raise ValueError(f"kernel_summary: no runs of {kernel!r} at lrN={lrN} in {mode!r}")
    ok = [r for r in rs if not r["diverged"]]
    med = lambda v: statistics.median(v) if v else float("nan")
    spreads = []
    for s in sorted({r["seed"] for r in ok}):
        v = [r["rel"] for r in ok if r["seed"] == s]
        if len(v) > 1:
            spreads.append(max(v) - min(v))
    return {"runs": len(rs), "diverged": sum(r["diverged"] for r in rs),
            "plateau": sum(r["plateau"] for r in rs),
            "zero": sum(r["rel"] <= doc["zero_fraction"] for r in ok),
            "rel": med([r["rel"] for r in ok]), "risk": med([r["risk"] for r in ok]),
            "spread": med(spreads), "spreads": spreads, "grad": med([r["grad"] for r in ok]),
            "norm": med([r["norm_WQ"] for r in ok])}


def flat_softmax_risk(m: int, n: int) -> float:
    """The population risk of the structured Softmax layer at ``W_Q = 0`` (isotropic
    ``Sigma = I_m``): uniform weights ``1/n`` give ``y_hat = (1/n) sum_{j<n} y_j`` and
    ``R = 1/2 m (1 + (n - 1) / n^2)``."""
    m, n = _count("m", m, 1), _count("n", n, 2)
    return 0.5 * m * (1 + (n - 1) / n ** 2)


def _check_flat(name: str, answer, want, hint: str, done: str) -> None:
    """Compare the reader's ``answer(m, n)`` with ``want(m, n)`` (to relative 1e-9) on four
    sizes; a wrong or malformed answer raises :class:`tdlib.selfcheck.Wrong` starting with
    ``name`` (with ``hint`` when the value is off); prints ``correct`` (``done``) otherwise."""
    from .selfcheck import Wrong, _call, _num, _ok, _require

    try:
        for m, n in ((1, 2), (3, 8), (5, 4), (2, 20)):
            got = _num(name, _call(name, answer, m, n))
            w = want(m, n)
            _require(abs(got - w) <= 1e-9 * w,
                     f"for m={m}, n={n} your risk is too {'large' if got > w else 'small'}. "
                     f"Hint: {hint}")
    except Wrong as err:
        if str(err).startswith(f"{name}:"):
            raise
        raise Wrong(f"{name}: {err}") from None
    return _ok(done)


def check_flat_risk(flat_risk) -> None:
    """Self-check of the exercise *uniform attention* (label ``ex-icl-flat``): ``flat_risk(m,
    n)`` must return the population risk of the structured Softmax layer at ``W_Q = 0`` for
    isotropic covariates; compared with the closed form on several sizes. Prints ``correct``
    or raises :class:`tdlib.selfcheck.Wrong` with a hint."""
    return _check_flat("flat_risk", flat_risk, flat_softmax_risk,
                       "the query's own token has weight 1/n and value 0; given w, the "
                       "examples and the query are independent with mean zero",
                       "the risk of uniform Softmax attention is right on four sizes")


def flat_gaussian_risk(m: int, n: int) -> float:
    """The population risk of the structured Gaussian layer at ``W_Q = 0`` (isotropic
    ``Sigma = I_m``, width ``c = 2 sqrt(m + 1)``): the weights ``exp(-||x_j||^2 / c)`` give
    ``R = 1/2 m (1 + (n - 1) (1 + 4/c)^(-m/2 - 1))``."""
    m, n = _count("m", m, 1), _count("n", n, 2)
    c = 2 * (m + 1) ** 0.5
    return 0.5 * m * (1 + (n - 1) * (1 + 4 / c) ** (-m / 2 - 1))


def check_flat_gaussian_risk(flat_gaussian) -> None:
    """Self-check of the exercise *a Gaussian start* (label ``ex-icl-flat-gauss``):
    ``flat_gaussian(m, n)`` must return :func:`flat_gaussian_risk` on several sizes. Prints
    ``correct`` or raises :class:`tdlib.selfcheck.Wrong` with a hint."""
    return _check_flat("flat_gaussian", flat_gaussian, flat_gaussian_risk,
                       "the weights are not normalised; E[exp(-b |x|^2) x x^T] is a "
                       "multiple of the identity",
                       "the risk of the Gaussian layer at W_Q = 0 is right on four sizes")


def main(argv=None) -> int:
    """``python -m tdlib.icl --out FOLDER``: the bridge sweep into ``FOLDER/results.json``
    through :func:`tdlib.sweep.run` (``--workers``, ``--serial``, ``--scheduler``,
    ``--checkpoint``)."""
    import argparse
    import sys

    from . import sweep as runner

    ap = argparse.ArgumentParser(prog="python -m tdlib.icl",
                                 description="The in-context regression bridge sweep.")
    ap.add_argument("--out", required=True, help="output folder (writes results.json)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--kernels", nargs="+", default=None)
    ap.add_argument("--progress", action="store_true", help="show a progress bar")
    runner.add_arguments(ap)
    args = ap.parse_args(argv)
    path, where = runner.start(ap, args, lambda: bridge_tasks(seeds=args.seeds,
                                                              kernels=args.kernels))
    doc = bridge_sweep(command=runner.command("python -m tdlib.icl", argv),
                       quiet=not args.progress, seeds=args.seeds, kernels=args.kernels,
                       **where)
    path = runner.save(path, doc, where)
    print(f"wrote {path} in {doc['provenance']['wall_seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    from tdlib.icl import main as _main   # tasks found by name (tdlib.icl.bridge_task)

    sys.exit(_main())
