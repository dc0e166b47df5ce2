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


# ---------------------------------------------------------------------------------------------
# The dynamics: merged and separate key-query parameterisations
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# The bridge back: the book's layer with other kernels on the same task
# ---------------------------------------------------------------------------------------------
