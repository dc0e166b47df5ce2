"""In-context linear regression with one attention layer (chapter *In-context regression*).

A **prompt** is a sample of the book's layer with ``n`` tokens: the first ``n - 1`` carry a
labelled example ``(x_j, y_j)`` with ``y_j = w . x_j``, the last carries the query ``(x_q, 0)``
whose label ``y_q = w . x_q`` the layer must predict. Covariates are ``x ~ N(0, Sigma)`` in
``R^m`` and each prompt draws its own task ``w ~ N(0, I_m)``.

With the ``linear-n`` kernel, value weights that read only the label and query/key weights that
read only ``x``, the layer's prediction for the query token is

    y_hat = x_q^T W_QK h,      h = (1/n) sum_{j<n} y_j x_j,                           (ICL)

with the **merged key-query matrix** ``W_QK`` (``W^{QK}`` in the chapter) (``m x m``). Its population risk
``R(W_QK) = 1/2 E[(y_hat - y_q)^2]`` over prompts and tasks is a convex quadratic:

    R(W_QK) = 1/2 tr(Sigma W_QK A W_QK^T) - tr(Sigma W_QK B) + 1/2 tr(Sigma),
    B = E[S_hat] = (n-1)/n Sigma,   A = E[S_hat^2] = (n-1)/n^2 (n Sigma^2 + tr(Sigma) Sigma),

where ``S_hat = (1/n) sum_{j<n} x_j x_j^T`` (so ``h = S_hat w``).
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
    """The prediction (ICL) ``x_q^T W_QK h`` for every prompt (a vector of length ``N``)."""
    x, y = P["x"], P["y"]
    n, m = x.shape[1], x.shape[2]
    W_QK = torch.as_tensor(W_QK, dtype=x.dtype)
    if W_QK.shape != (m, m):
        raise ValueError(f"W_QK must have shape ({m}, {m}), got {tuple(W_QK.shape)}")
    h = torch.einsum("inm,in->im", x[:, :-1], y[:, :-1]) / n
    return torch.einsum("im,mk,ik->i", x[:, -1], W_QK, h)


def moments(cov, n: int):
    """``(B, A) = (E[S_hat], E[S_hat^2])`` for Gaussian covariates (see the module docstring)."""
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
    """The gradient ``Sigma W_QK E[S_hat^2] - (n-1)/n Sigma^2`` of :func:`population_risk`
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
    """The ``m^2`` eigenvalues (ascending) of the Hessian ``E -> Sigma E E[S_hat^2]`` of
    :func:`population_risk`: the products ``lambda_i mu_j`` of the eigenvalues of ``Sigma`` and
    of ``E[S_hat^2]`` (the two matrices commute)."""
    B, A = moments(cov, n)
    lam = torch.linalg.eigvalsh(_square(cov))
    mu = torch.linalg.eigvalsh(A)
    return torch.sort((lam[:, None] * mu[None, :]).reshape(-1)).values


def preconditioned_step(P, precond, w=None) -> torch.Tensor:
    """One step ``w - precond grad L(w)`` of preconditioned gradient descent on each prompt's
    least squares ``L(w) = 1/2 (1/n) sum_{j<n} (y_j - w . x_j)^2`` (``N x m``).

    ``precond`` is ``m x m``; ``w`` (``N x m`` or ``m``) defaults to zero, where the step is
    ``precond h`` with ``h = (1/n) sum_{j<n} y_j x_j``.
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
    """Rows ``vec(x_q h^T)`` (``N x m^2``): ``y_hat = <W_QK, x_q h^T>``."""
    x, y = P["x"], P["y"]
    h = torch.einsum("inm,in->im", x[:, :-1], y[:, :-1]) / x.shape[1]
    return torch.einsum("ia,ib->iab", x[:, -1], h).reshape(x.shape[0], -1)


def empirical_minimiser(P) -> torch.Tensor:
    """The minimiser of :func:`training_loss` (``m x m``), by least squares on the features
    ``vec(x_q h^T)``; it is unique when those ``N`` rows span ``R^{m^2}`` (needs
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
    ``Z`` (``N x m^2``) the rows ``vec(x_q h^T)`` of the prompts ``P``."""
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
    ``1/2 tr(Sigma E E[S_hat^2] E^T)`` with ``E = W_t - W*``, without the cancellation of a
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


# ---------------------------------------------------------------------------------------------
# The bridge back: the book's layer with other kernels on the same task
# ---------------------------------------------------------------------------------------------
