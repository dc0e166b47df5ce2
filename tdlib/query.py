"""For the chapter *Gaussian attention and query-only training*: training W_Q alone, the
decoupling into per-query problems, Jacobians and certificates.

Notation (the book's, one head). Samples ``X_i`` of shape ``(n, D)`` are stacked into
``Xs`` of shape ``(N n, D)``; queries ``Q_i = X_i W_Q`` and keys ``K_i = X_i W_K`` have shape
``(n, d)``; the value rows that reach the output are ``U_i = X_i W_V W_O`` of shape
``(n, d_out)``. Only ``W_Q`` (shape ``(D, d)``) is trained. The output of token ``k`` is
``o_ik = sum_j S(q_ik, k_ij) u_ij``, and the loss is
``f(W_Q) = 1/2 sum_{i,k} ||o_ik - y_ik||^2``.

Per-query Jacobians ``J_ik = d o_ik / d q_ik`` (shape ``(d_out, d)``):

* Gaussian, ``a_j = exp(-||q - k_j||^2 / c)``: ``J = -(2/c) U^T diag(a) (1 q^T - K)``;
* Softmax, ``p = softmax(K q / sqrt(d))``: ``J = (1/sqrt(d)) U^T (diag(p) - p p^T) K``.

All tensors may carry extra leading batch dimensions; every function is float64-friendly.

Non-finite input: :func:`scores`, :func:`outputs` and :func:`jacobians` (what a reader calls)
refuse NaN and infinities with an error naming the argument, and :class:`QueryProblem` checks
its weights the same way; only the ``*_unchecked`` twins, which the gradient-descent loops use to
try a step and reject it by its non-finite loss, let them through.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import torch

from .attention import KERNEL_NAMES, AttentionLayer, gaussian_width, make_kernel
from .checks import (as_array, as_tensor, check_choice, check_finite, check_int, check_positive,
                     check_rank, check_seed)



def _kernel_c(kernel: str, d: int, c: Optional[float]) -> float:
    """The Gaussian constant ``c`` (default ``2 sqrt(d)``)."""
    return float(c) if c is not None else gaussian_width(d)


def stack_tokens(X) -> torch.Tensor:
    """The stacked token matrix ``Xs`` of shape ``(N n, D)`` from ``X`` of shape ``(N, n, D)``."""
    X = as_array("X", X, "(N, n, D)")
    return X.reshape(-1, X.shape[-1])


def _batch(name: str, x, axes: str) -> torch.Tensor:
    """A non-empty floating tensor of at least two axes, ``axes`` such as ``(..., n, d)``.

    Entries are not checked for finiteness here: :func:`scores`, :func:`outputs` and
    :func:`jacobians` check them, their ``*_unchecked`` twins do not, because the
    gradient-descent loops built on those try steps that may overflow and reject them by the
    non-finite loss that comes out."""
    if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
        x = as_tensor(name, x, dtype=torch.float64)
    if x.ndim < 2 or x.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty array of shape {axes}, got shape "
                         f"{tuple(x.shape)}")
    return x


_NO_U = object()


def _check_qku(Q, K, U=_NO_U):
    """Queries ``(..., n_q, d)``, keys ``(..., n_k, d)`` and values ``(..., n_k, d_out)``."""
    Q, K = _batch("Q", Q, "(..., n, d)"), _batch("K", K, "(..., n, d)")
    if Q.shape[-1] != K.shape[-1]:
        raise ValueError(f"K: expected keys of dimension d={Q.shape[-1]} like the queries, got "
                         f"shape {tuple(K.shape)}")
    if U is _NO_U:
        return (Q, K) if Q.dtype == K.dtype else (Q.double(), K.double())
    U = _batch("U", U, "(..., n, d_out)")
    if not Q.dtype == K.dtype == U.dtype:
        Q, K, U = Q.double(), K.double(), U.double()
    if U.shape[-2] != K.shape[-2]:
        raise ValueError(f"U: expected one value row per key ({K.shape[-2]} rows), got shape "
                         f"{tuple(U.shape)}")
    return Q, K, U


def _check_finite_qku(**arrays) -> None:
    for name, x in arrays.items():
        check_finite(name, x)


def scores(Q: torch.Tensor, K: torch.Tensor, kernel: str, c: Optional[float] = None) -> torch.Tensor:
    """Attention matrix ``S`` of shape ``(..., n, n)`` from queries and keys ``(..., n, d)``.

    Queries and keys holding NaN or an infinity are refused (a ``ValueError`` naming ``Q`` or
    ``K``): the scores of such a query would be NaN, and a NaN that reaches a figure or a printed
    number is a wrong result nobody asked for. Loops that try steps which may overflow, and
    reject them by the non-finite loss that comes out, call :func:`scores_unchecked`."""
    Q, K = _check_qku(Q, K)
    _check_finite_qku(Q=Q, K=K)
    return scores_unchecked(Q, K, kernel, c)


def scores_unchecked(Q, K, kernel: str, c: Optional[float] = None) -> torch.Tensor:
    """:func:`scores` without the finiteness check: NaN and infinities propagate."""
    check_choice("kernel", kernel, KERNEL_NAMES)
    Q, K = _check_qku(Q, K)
    if c is not None:
        c = check_positive("c", c)
    opts = {"c": c} if (kernel == "gaussian" and c is not None) else {}
    return make_kernel(kernel, **opts)(Q, K)


def outputs(Q, K, U, kernel: str, c: Optional[float] = None) -> torch.Tensor:
    """Outputs ``o = S(Q, K) U`` of shape ``(..., n, d_out)``.

    Non-finite entries of ``Q``, ``K`` or ``U`` are refused with a ``ValueError`` that names the
    argument (see :func:`scores`); :func:`outputs_unchecked` lets them through for the loops."""
    Q, K, U = _check_qku(Q, K, U)
    _check_finite_qku(Q=Q, K=K, U=U)
    return outputs_unchecked(Q, K, U, kernel, c)


def outputs_unchecked(Q, K, U, kernel: str, c: Optional[float] = None) -> torch.Tensor:
    """:func:`outputs` without the finiteness check: a query that overflowed gives a non-finite
    output, by which gradient descent (:func:`run`, :func:`tdlib.phase.batched_gd`) rejects the
    step that made it."""
    check_choice("kernel", kernel, KERNEL_NAMES)
    Q, K, U = _check_qku(Q, K, U)
    return scores_unchecked(Q, K, kernel, c) @ U


def jacobians(Q, K, U, kernel: str, c: Optional[float] = None) -> torch.Tensor:
    """Per-query Jacobians ``J_k = d o_k / d q_k``, shape ``(..., n, d_out, d)``, in closed form.

    Non-finite entries of ``Q``, ``K`` or ``U`` are refused (see :func:`outputs`);
    :func:`jacobians_unchecked` lets them through for the loops."""
    Q, K, U = _check_qku(Q, K, U)
    _check_finite_qku(Q=Q, K=K, U=U)
    return jacobians_unchecked(Q, K, U, kernel, c)


def jacobians_unchecked(Q, K, U, kernel: str, c: Optional[float] = None) -> torch.Tensor:
    """:func:`jacobians` without the finiteness check: NaN and infinities propagate."""
    check_choice("kernel", kernel, KERNEL_NAMES)
    Q, K, U = _check_qku(Q, K, U)
    d = Q.shape[-1]
    if kernel == "gaussian":
        cc = _kernel_c(kernel, d, c)
        A = scores_unchecked(Q, K, kernel, c)            # (..., n_q, n_k): a_kj
        diff = Q.unsqueeze(-2) - K.unsqueeze(-3)         # (..., n_q, n_k, d): q_k - k_j
        # J_k = -(2/c) sum_j a_kj u_j (q_k - k_j)^T
        return -(2.0 / cc) * torch.einsum("...kj,...jo,...kje->...koe", A, U, diff)
    P = scores_unchecked(Q, K, kernel)                    # (..., n_q, n_k)
    # J_k = (1/sqrt d) U^T (diag p - p p^T) K
    UP = torch.einsum("...kj,...jo->...ko", P, U)        # U^T p for every query
    KP = torch.einsum("...kj,...je->...ke", P, K)        # K^T p
    first = torch.einsum("...kj,...jo,...je->...koe", P, U, K)
    return (first - UP.unsqueeze(-1) * KP.unsqueeze(-2)) / math.sqrt(d)


def smallest_singular_values(J: torch.Tensor) -> torch.Tensor:
    """``sigma_min`` of every Jacobian ``(..., d_out, d)``: its ``min(d_out, d)``-th singular value.

    It is positive exactly when ``J`` has full row rank (when ``d >= d_out``).
    """
    J = as_tensor("J", J, dtype=torch.float64)
    if J.ndim < 2 or J.numel() == 0:
        raise ValueError(f"J: expected a non-empty array of shape (..., d_out, d), got shape "
                         f"{tuple(J.shape)}")
    check_finite("J", J)
    s = torch.linalg.svdvals(J)
    return s[..., -1] if J.shape[-2] <= J.shape[-1] else torch.zeros(s.shape[:-1], dtype=J.dtype)


@dataclass
class QueryProblem:
    """A query-only training problem: data ``X (N, n, D)``, targets ``Y (N, n, d_out)`` and the
    fixed matrices ``W_K (D, d)``, ``W_V (D, d_v)``, ``W_O (d_v, d_out)`` of one head."""

    X: torch.Tensor
    Y: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor
    W_O: torch.Tensor
    kernel: str = "gaussian"
    c: Optional[float] = None

    def __post_init__(self):
        check_choice("kernel", self.kernel, KERNEL_NAMES)
        self.X = as_tensor("X", self.X, dtype=torch.float64)
        self.Y = as_tensor("Y", self.Y, dtype=torch.float64)
        for name in ("W_K", "W_V", "W_O"):
            setattr(self, name, as_tensor(name, getattr(self, name), dtype=torch.float64))
            check_rank(name, getattr(self, name), 2, "a matrix")
        check_rank("X", self.X, 3, "(N, n, D)")
        check_rank("Y", self.Y, 3, "(N, n, d_out)")
        N, n, D = self.X.shape
        if self.W_K.shape[0] != D or self.W_V.shape[0] != D:
            raise ValueError(f"W_K, W_V: expected {D} rows (the embedding dimension D of X), got "
                             f"shapes {tuple(self.W_K.shape)} and {tuple(self.W_V.shape)}")
        if self.W_O.shape[0] != self.W_V.shape[1]:
            raise ValueError(f"W_O: expected {self.W_V.shape[1]} rows (columns of W_V), got {tuple(self.W_O.shape)}")
        if tuple(self.Y.shape) != (N, n, self.W_O.shape[1]):
            raise ValueError(f"Y: expected shape (N, n, d_out) = {(N, n, self.W_O.shape[1])}, got {tuple(self.Y.shape)}")
        for name in ("X", "Y", "W_K", "W_V", "W_O"):
            check_finite(name, getattr(self, name))
        if self.c is not None:
            check_positive("c", self.c)

    # -- sizes and fixed parts -----------------------------------------------------------------
    @property
    def N(self): return self.X.shape[0]
    @property
    def n(self): return self.X.shape[1]
    @property
    def D(self): return self.X.shape[2]
    @property
    def d(self): return self.W_K.shape[1]
    @property
    def d_out(self): return self.W_O.shape[1]

    @property
    def Xs(self) -> torch.Tensor:
        """Stacked tokens ``(N n, D)``."""
        return self.X.reshape(-1, self.D)

    @property
    def K(self) -> torch.Tensor:
        """Keys ``(N, n, d)``."""
        return self.X @ self.W_K

    @property
    def U(self) -> torch.Tensor:
        """Value rows reaching the output, ``U_i = X_i W_V W_O``, shape ``(N, n, d_out)``."""
        return self.X @ self.W_V @ self.W_O

    def with_kernel(self, kernel: str) -> "QueryProblem":
        """The same data and fixed matrices with another kernel."""
        return QueryProblem(self.X, self.Y, self.W_K, self.W_V, self.W_O, kernel, self.c)

    def check_W(self, W_Q, name: str = "W_Q") -> torch.Tensor:
        """``W_Q`` as a float64 ``(D, d)`` tensor, or an error naming what was expected."""
        W = as_tensor(name, W_Q, dtype=torch.float64)
        if W.ndim == 3 and W.shape[0] == 1:
            W = W[0]
        if tuple(W.shape) != (self.D, self.d):
            raise ValueError(f"{name}: expected shape (D, d) = {(self.D, self.d)}, got {tuple(W.shape)}")
        check_finite(name, W)
        return W

    # -- the loss and its pieces ---------------------------------------------------------------
    def queries(self, W_Q) -> torch.Tensor:
        """``Q_i = X_i W_Q``, shape ``(N, n, d)``."""
        return self.X @ self.check_W(W_Q)

    def outputs(self, W_Q) -> torch.Tensor:
        """The outputs ``o_il`` of every token, shape ``(N, n, d_out)``."""
        return outputs(self.queries(W_Q), self.K, self.U, self.kernel, self.c)

    def per_query_losses(self, Q) -> torch.Tensor:
        """``g_ik(q_ik) = 1/2 ||o_ik - y_ik||^2`` for given queries ``Q (N, n, d)``: shape ``(N, n)``."""
        r = outputs(Q, self.K, self.U, self.kernel, self.c) - self.Y
        return 0.5 * (r * r).sum(-1)

    def loss(self, W_Q) -> float:
        """``f(W_Q) = 1/2 sum_il ||o_il - y_il||^2``."""
        return float(self.per_query_losses(self.queries(W_Q)).sum())

    def per_query_gradients(self, Q) -> torch.Tensor:
        """``grad g_ik = J_ik^T r_ik`` for given queries, shape ``(N, n, d)``."""
        r = outputs(Q, self.K, self.U, self.kernel, self.c) - self.Y
        J = jacobians(Q, self.K, self.U, self.kernel, self.c)
        return torch.einsum("Nkoe,Nko->Nke", J, r)

    def grad(self, W_Q) -> torch.Tensor:
        """``grad f(W_Q) = Xs^T G`` with ``G`` the stacked per-query gradients: shape ``(D, d)``."""
        G = self.per_query_gradients(self.queries(W_Q))
        return self.Xs.T @ G.reshape(-1, self.d)

    def jacobians(self, W_Q) -> torch.Tensor:
        """Per-query Jacobians at ``W_Q``, shape ``(N, n, d_out, d)``."""
        return jacobians(self.queries(W_Q), self.K, self.U, self.kernel, self.c)

    def certificate(self, W_Q) -> Dict[str, float]:
        """The quantities of the convergence theorem at ``W_Q``.

        ``sigma_J``: smallest per-query ``sigma_min(J_ik)``; ``sigma_X``: ``sigma_min(Xs)`` (the
        ``N n``-th singular value, 0 if ``Xs`` is not of full row rank); ``mu = sigma_X^2 sigma_J^2``;
        ``beta = sigma_max(Xs) max ||J_ik||_2`` (so ``||grad f|| <= beta sqrt(2 f)``);
        ``pl_ratio = ||grad f||^2 / (2 f)`` (at least ``mu``).
        """
        W = self.check_W(W_Q)
        J = self.jacobians(W)
        sx = torch.linalg.svdvals(self.Xs)
        sigma_X = float(sx[-1]) if self.Xs.shape[0] <= self.D else 0.0
        sigma_J = float(smallest_singular_values(J).min())
        f = self.loss(W)
        g = self.grad(W)
        return {
            "loss": f,
            "sigma_J": sigma_J,
            "sigma_X": sigma_X,
            "mu": sigma_X**2 * sigma_J**2,
            "beta": float(sx[0]) * float(torch.linalg.matrix_norm(J, 2).max()),
            "pl_ratio": float((g * g).sum()) / (2 * f) if f > 0 else float("inf"),
        }

    def model(self, W_Q) -> AttentionLayer:
        """The equivalent :class:`tdlib.AttentionLayer` (one head) with these weights."""
        m = AttentionLayer(self.D, H=1, d=self.d, d_v=self.W_V.shape[1], d_out=self.d_out,
                           kernel=self.kernel, kernel_options={"c": self.c} if self.c and self.kernel == "gaussian" else None)
        m.set_weights(W_Q=self.check_W(W_Q), W_K=self.W_K, W_V=self.W_V, W_O=self.W_O)
        return m


def make_problem(N: int = 2, n: int = 3, D: int = 12, d: int = 4, d_out: int = 2,
                 kernel: str = "gaussian", teacher: Optional[str] = None, w_scale: float = 1.0,
                 init_scale: float = 1.0, seed: int = 0):
    """A random query-only problem with a teacher: ``(problem, W_Q_star, W_Q0)``.

    Tokens have i.i.d. ``N(0, 1)`` entries; ``W_K``, ``W_V`` (``d_v = D``) and the teacher's
    ``W_Q_star`` have i.i.d. ``N(0, w_scale^2 / D)`` entries and ``W_O`` has i.i.d. ``N(0, 1 / D)``
    entries (``w_scale`` does not touch ``W_O``); targets are the outputs of the teacher layer of
    kernel ``teacher`` (default: ``kernel``) with the same ``W_K, W_V, W_O``, so zero loss is
    attainable for the student of the same kernel. The student starts at ``W_Q0`` with
    ``N(0, init_scale^2 / D)`` entries, drawn independently of everything else.
    """
    N, n, D, d, d_out = (check_int(k, v) for k, v in
                         (("N", N), ("n", n), ("D", D), ("d", d), ("d_out", d_out)))
    check_choice("kernel", kernel, KERNEL_NAMES)
    teacher = teacher or kernel
    check_choice("teacher", teacher, KERNEL_NAMES)
    w_scale = check_positive("w_scale", w_scale)
    init_scale = check_positive("init_scale", init_scale, strict=False)
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    X = r(N, n, D)
    W_K, W_V, W_O = r(D, d) * w_scale / math.sqrt(D), r(D, D) * w_scale / math.sqrt(D), r(D, d_out) / math.sqrt(D)
    W_star = r(D, d) * w_scale / math.sqrt(D)
    W_0 = r(D, d) * init_scale / math.sqrt(D)
    Y = outputs(X @ W_star, X @ W_K, X @ W_V @ W_O, teacher)
    return QueryProblem(X, Y, W_K, W_V, W_O, kernel), W_star, W_0


def run(problem: QueryProblem, W_Q0, lr: float, steps: int, tol: float = 0.0, adaptive: bool = False):
    """Gradient descent ``W_{t+1} = W_t - lr grad f(W_t)`` on ``W_Q`` alone, with the certificate.

    The same iterates as ``tdlib.train(problem.model(W_Q0), X, Y, lr, steps, trainable=("W_Q",))``
    (the tests check this), computed with the closed-form gradient ``Xs^T G`` so that the
    certificate costs little. Returns ``(history, W_Q)``; ``history.extra`` holds, at every
    iterate, ``sigma_J`` (smallest per-query ``sigma_min(J_ik)``), ``mu = sigma_X^2 sigma_J^2``,
    ``pl_ratio = ||grad f||^2 / (2 f)`` and ``dist = ||W_t - W_0||_F``. The run stops early when
    ``f <= tol``, and with ``stop == "diverged"`` if the loss becomes non-finite.

    ``adaptive=True`` uses the safeguarded step of the phase diagram (:func:`tdlib.phase.batched_gd`,
    the same rule): at every iteration a step that would raise the loss (or make it non-finite) is
    not taken and the step size is halved -- the iteration is spent, ``W`` stays, and the history
    records the same loss again -- while a step that lowers the loss is taken and the next step
    size grows by 10%. ``history.extra["lr"]`` records the step size tried at each iteration and
    ``history.extra["accepted"]`` whether it was taken.
    """
    import time

    from .train import History, next_step_size

    _check_problem(problem)
    lr = check_positive("lr (step size)", lr)
    steps = check_int("steps", steps, minimum=0)
    tol = check_positive("tol", tol, strict=False)
    W0 = problem.check_W(W_Q0, "W_Q0").clone()
    W = W0.clone()
    Xs, K, U, Y = problem.Xs, problem.K, problem.U, problem.Y
    sx = torch.linalg.svdvals(Xs)
    sigma_X = float(sx[-1]) if Xs.shape[0] <= problem.D else 0.0
    hist = History(lr=lr, trainable=("W_Q",), kernel=problem.kernel)
    hist.grad_norm = {"W_Q": []}
    ex = {k: [] for k in ("sigma_J", "mu", "pl_ratio", "dist", "lr", "accepted")}
    start = time.perf_counter()
    for t in range(steps + 1):
        Qt = problem.X @ W
        r = outputs_unchecked(Qt, K, U, problem.kernel, problem.c) - Y
        f = 0.5 * float((r * r).sum())
        if not math.isfinite(f):
            hist.stop = "diverged"
            break
        J = jacobians_unchecked(Qt, K, U, problem.kernel, problem.c)
        G = torch.einsum("Nkoe,Nko->Nke", J, r).reshape(-1, problem.d)
        g = Xs.T @ G
        g2 = float((g * g).sum())
        sJ = float(smallest_singular_values(J).min())
        hist.loss.append(f)
        hist.grad_norm["W_Q"].append(math.sqrt(g2))
        ex["sigma_J"].append(sJ)
        ex["mu"].append(sigma_X**2 * sJ**2)
        ex["pl_ratio"].append(g2 / (2 * f) if f > 0 else float("inf"))
        ex["dist"].append(float((W - W0).norm()))
        if hist.stop_if_done(f, t, steps, tol):
            break
        ex["lr"].append(lr)
        if adaptive:
            W_new = W - lr * g
            r_new = outputs_unchecked(problem.X @ W_new, K, U, problem.kernel, problem.c) - Y
            f_new = 0.5 * float((r_new * r_new).sum())
            ok = math.isfinite(f_new) and f_new <= f
            ex["accepted"].append(ok)
            if ok:
                W = W_new
            lr = next_step_size(lr, ok)
        else:
            ex["accepted"].append(True)
            W = W - lr * g
    ex["lr"].append(float("nan"))
    hist.extra = ex
    hist.seconds = time.perf_counter() - start
    return hist, W


# ---------------------------------------------------------------------------------------------
# Convex hulls: how far a target is from every Softmax output
# ---------------------------------------------------------------------------------------------

def _project_simplex(v: np.ndarray) -> np.ndarray:
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1
    k = np.nonzero(u - css / np.arange(1, len(v) + 1) > 0)[0][-1]
    return np.maximum(v - css[k] / (k + 1), 0)


def _hull_args(U, y, min_rows: int = 1):
    """Value rows ``U (n, d_out)`` (``n >= min_rows``) and a target ``y (d_out,)`` as NumPy
    float64 arrays, or a clear error."""
    U, y = as_array("U", U, "(n, d_out)").numpy(), as_array("y", y, "(d_out,)").numpy()
    if U.shape[0] < min_rows:
        raise ValueError(f"U: expected at least {min_rows} rows (n >= {min_rows}), got shape "
                         f"{U.shape}")
    if y.shape != (U.shape[1],):
        raise ValueError(f"y: expected shape ({U.shape[1]},) to match U of shape {U.shape}, "
                         f"got {y.shape}")
    return U, y


def _check_problem(problem) -> "QueryProblem":
    if not isinstance(problem, QueryProblem):
        raise TypeError(f"problem: expected a QueryProblem (e.g. make_problem()[0]), got "
                        f"{type(problem).__name__}")
    return problem


def hull_distance(U, y, iters: int = 3000) -> float:
    """A lower bound on the distance from ``y (d_out,)`` to the convex hull of the rows of
    ``U (n, d_out)``, exact up to float64 rounding, which is not controlled here (for a proved
    bound, see :func:`tdlib.separation.hull_gap`).

    Projected gradient finds a near-closest hull point ``p``; with ``w = (y - p)/||y - p||``, every
    hull point ``z`` has ``w^T (y - z) >= w^T y - max_j w^T u_j``, which is returned (``>= 0``).
    """
    U, y = _hull_args(U, y)
    iters = check_int("iters", iters)
    n = U.shape[0]
    lam = np.full(n, 1.0 / n)
    step = 1.0 / max(np.linalg.norm(U, 2) ** 2, 1e-12)
    for _ in range(iters):
        lam = _project_simplex(lam - step * (U @ (U.T @ lam - y)))
    r = y - U.T @ lam
    nr = np.linalg.norm(r)
    if nr < 1e-12:
        return 0.0
    w = r / nr
    return max(float(w @ y - (U @ w).max()), 0.0)


def softmax_loss_floor(problem: QueryProblem) -> float:
    """``1/2 sum_ik dist(y_ik, conv(rows of U_i))^2``: no Softmax ``W_Q`` (nor ``W_K``) can go below."""
    _check_problem(problem)
    U, Y = problem.U.numpy(), problem.Y.numpy()
    return 0.5 * sum(hull_distance(U[i], Y[i, k]) ** 2 for i in range(problem.N) for k in range(problem.n))


# ---------------------------------------------------------------------------------------------
# Levels at infinity: the Gaussian level 1/2 ||y||^2 and the Softmax level beta
# ---------------------------------------------------------------------------------------------

def _centred_basis(n: int) -> np.ndarray:
    """An orthonormal basis ``Pi`` of shape ``(n, n - 1)`` of the vectors orthogonal to ``1``."""
    return np.linalg.svd(np.eye(n) - 1.0 / n)[0][:, : n - 1]


def caratheodory(U, lam, tol: float = 1e-12) -> np.ndarray:
    """Weights ``p (n,)`` with ``U^T p = U^T lam``, ``p >= 0``, ``sum p = 1`` and at most
    ``d_out + 1`` positive entries (Caratheodory's theorem), from weights ``lam (n,)`` of the
    simplex and value rows ``U (n, d_out)``: while the support is larger, move along an affine
    dependence of the supporting rows until one weight reaches zero."""
    U = as_array("U", U, "(n, d_out)").numpy()
    p = as_array("lam", lam, "(n,)").numpy().copy()
    tol = check_positive("tol", tol)
    if p.shape != (U.shape[0],):
        raise ValueError(f"lam: expected shape ({U.shape[0]},), one weight per row of U, got "
                         f"{p.shape}")
    if p.min() < -tol or abs(p.sum() - 1) > 1e-9:
        raise ValueError(f"lam: expected a point of the simplex, got {p}")
    p = np.maximum(p, 0.0)
    while True:
        S = np.nonzero(p > tol)[0]
        if len(S) <= U.shape[1] + 1:
            p[p <= tol] = 0.0
            return p / p.sum()
        M = np.vstack([U[S].T, np.ones(len(S))])        # (d_out + 1, |S|): an affine dependence
        v = np.linalg.svd(M)[2][-1]                     # M v = 0, v != 0, sum v = 0
        if v.max() <= 0:
            v = -v
        pos = v > 0
        step = np.min(p[S][pos] / v[pos])
        p[S] = p[S] - step * v
        p[S[pos][np.argmin(p[S][pos] / v[pos])]] = 0.0


def softmax_level(U, y) -> float:
    """The Softmax level at infinity of one query, ``Lambda = min_{p on the boundary of the
    simplex} 1/2 ||U^T p - y||^2 = 1/2 min_j dist(y, conv{u_l : l != j})^2``, from ``U (n, d_out)``
    (``n >= 2``) and ``y (d_out,)``. Each distance is the lower bound of
    :func:`hull_distance`, so the value returned is a lower bound on ``Lambda`` up to float64
    rounding."""
    U, y = _hull_args(U, y, min_rows=2)
    n = U.shape[0]
    return 0.5 * min(hull_distance(np.delete(U, j, axis=0), y) ** 2 for j in range(n))


def softmax_twin_constants(K, U, y, g_bar: float) -> Dict[str, float]:
    """The constants of the Softmax twin of the Gaussian theorem for one query at level ``g_bar``.

    ``K (n, d)``, ``U (n, d_out)``, ``y (d_out,)``; ``A = K / sqrt(d)``, ``Pi (n, n-1)`` an
    orthonormal basis of ``1^perp``. Returns ``Lambda`` (:func:`softmax_level`); ``sigma_A =
    sigma_min(A^T Pi)`` (positive iff the keys are affinely independent); ``sigma_U =
    sigma_min(Pi^T U)`` (positive iff the value rows affinely span ``R^d_out``, so ``n >= d_out +
    1``); ``diam = max_jl ||u_j - u_l||``; ``p_min = (sqrt(2 Lambda) - sqrt(2 g_bar)) / diam``, a lower
    bound on every weight ``p_j`` where ``g <= g_bar`` (when ``g_bar < Lambda``); ``sigma_J =
    sigma_A sigma_U p_min``, a lower bound on ``sigma_min(J)`` there; and ``L_s = ||K||_2^2 / d
    (||U||_2^2 / 4 + 3 diam max_j ||u_j - y||)``, a global Lipschitz constant of ``grad g``."""
    U, y = _hull_args(U, y, min_rows=2)
    K = as_array("K", K, "(n, d)").numpy()
    if K.shape[0] != U.shape[0]:
        raise ValueError(f"K: expected {U.shape[0]} rows, one key per row of U, got shape "
                         f"{K.shape}")
    g_bar = check_positive("g_bar", g_bar, strict=False)
    n, d = K.shape
    Pi = _centred_basis(n)
    sv = lambda M, k: float(np.linalg.svd(M, compute_uv=False)[k - 1]) if min(M.shape) >= k else 0.0
    sigma_A = sv((K / math.sqrt(d)).T @ Pi, n - 1)
    sigma_U = sv(Pi.T @ U, U.shape[1])
    diam = max(float(np.linalg.norm(U[j] - U[l])) for j in range(n) for l in range(n))
    Lambda = softmax_level(U, y)
    p_min = max(math.sqrt(2 * Lambda) - math.sqrt(2 * g_bar), 0.0) / max(diam, 1e-300)
    r_max = max(float(np.linalg.norm(U[j] - y)) for j in range(n))
    L_s = np.linalg.norm(K, 2) ** 2 / d * (np.linalg.norm(U, 2) ** 2 / 4 + 3 * diam * r_max)
    return {"Lambda": Lambda, "sigma_A": sigma_A, "sigma_U": sigma_U, "diam": diam, "p_min": p_min,
            "sigma_J": sigma_A * sigma_U * p_min, "L_s": float(L_s)}


def softmax_twin_certificate(problem: QueryProblem, W_Q0) -> Dict[str, object]:
    """The hypotheses and constants of the Softmax twin of the Gaussian layer theorem at
    ``W_Q0`` (the book's proposition on levels at infinity).

    Needs ``Xs`` of full row rank, ``f0 = f(W_Q0) < Lambda_min = min_ik Lambda_ik`` (the smallest
    Softmax level at infinity) and, for every sample, affinely independent keys and value rows
    that affinely span ``R^d_out`` (``sigma_A, sigma_U > 0``). Then ``sigma_J = min_ik sigma_A
    sigma_U p_min`` bounds ``sigma_min(J_ik)`` on every sublevel set, ``mu = sigma_X^2 sigma_J^2``,
    ``L = ||Xs||_2^2 max_ik L_s`` and ``eta = 1 / L`` give ``f_t <= (1 - eta mu)^t f0``. ``ok`` is
    False (with a ``reason``) when a hypothesis fails."""
    if problem.kernel != "softmax":
        raise ValueError(f"problem.kernel: expected 'softmax', got {problem.kernel!r}")
    W0 = problem.check_W(W_Q0)
    f0 = problem.loss(W0)
    sx = torch.linalg.svdvals(problem.Xs)
    sigma_X = float(sx[-1]) if problem.N * problem.n <= problem.D else 0.0
    K, U, Y = problem.K.numpy(), problem.U.numpy(), problem.Y.numpy()
    consts = [softmax_twin_constants(K[i], U[i], Y[i, k], f0)
              for i in range(problem.N) for k in range(problem.n)]
    Lambda_min = min(c["Lambda"] for c in consts)
    res = {"f0": f0, "Lambda_min": Lambda_min, "sigma_X": sigma_X, "ok": False,
           "sigma_A": min(c["sigma_A"] for c in consts),
           "sigma_U": min(c["sigma_U"] for c in consts)}
    if sigma_X <= 1e-12:
        res["reason"] = "Xs is not of full row rank (D < N n or dependent tokens)"
    elif not f0 < Lambda_min:
        res["reason"] = f"f0 = {f0:.3g} is not below the Softmax level Lambda_min = {Lambda_min:.3g}"
    elif res["sigma_A"] <= 1e-12 or res["sigma_U"] <= 1e-12:
        res["reason"] = "keys not affinely independent or values not spanning R^d_out affinely"
    else:
        sigma_J = min(c["sigma_J"] for c in consts)
        L = float(sx[0]) ** 2 * max(c["L_s"] for c in consts)
        mu = sigma_X**2 * sigma_J**2
        res.update({"ok": True, "sigma_J": sigma_J, "mu": mu, "L": L, "eta": 1 / L,
                    "rate": 1 - mu / L})
    return res


# ---------------------------------------------------------------------------------------------
# The interactive figure
# ---------------------------------------------------------------------------------------------

def draw(kernel: str = "gaussian", ratio: float = 2.0, d: int = 4, init_scale: float = 1.0,
         N: int = 2, n: int = 3, d_out: int = 2, steps: int = 150, seed: int = 5):
    """One query-only GD run on a random teacher problem (teacher of the same kernel) with
    ``D = round(ratio * N n)``, and its certificate: loss, ``mu_t`` and the PL ratio along the run.

    Returns the history. GD uses the safeguarded step of :mod:`tdlib.phase` started at
    ``1 / sigma_max(Xs)^2``; the run stops once ``f <= 1e-12 f_0``.
    """
    import matplotlib.pyplot as plt

    from .plotting import WIDTH, kernel_style

    check_choice("kernel", kernel, KERNEL_NAMES)
    ratio = check_positive("ratio", ratio)
    d, N, n, steps = (check_int(k, v, minimum=m) for k, v, m in
                      (("d", d, 1), ("N", N, 1), ("n", n, 1), ("steps", steps, 0)))
    D = max(1, int(round(ratio * N * n)))
    prob, _, W0 = make_problem(N, n, D, d, d_out, kernel=kernel, init_scale=init_scale, seed=seed)
    lr = 1.0 / float(torch.linalg.matrix_norm(prob.Xs, 2)) ** 2
    f0 = prob.loss(W0)
    hist, _ = run(prob, W0, lr=lr, steps=steps, tol=1e-12 * f0, adaptive=True)
    style = kernel_style(kernel)
    # a fixed layout: constrained layout costs more than the run itself on a busy machine
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.4), layout="none")
    fig.subplots_adjust(left=0.11, right=0.98, bottom=0.15, top=0.80, wspace=0.38)
    t = np.arange(len(hist.loss))
    axes[0].semilogy(t, np.maximum(hist.loss, 1e-300), **style, label="loss $f_t$")
    axes[0].set_xlabel("step $t$")
    axes[0].set_ylabel("training loss")
    pl = np.asarray(hist.extra["pl_ratio"])
    mu = np.asarray(hist.extra["mu"])
    axes[1].semilogy(t, np.maximum(pl, 1e-300), **style, label=r"$\|\nabla f\|^2 / 2f$")
    if (mu > 0).any():
        axes[1].semilogy(t, np.where(mu > 0, mu, np.nan), color="#444444", ls="--",
                         label=r"$\mu_t=\sigma_X^2\sigma_J^2$")
    else:
        why = "D < Nn" if D < N * n else "d < d_out"
        axes[1].text(0.02, 0.05, f"$\\mu_t = 0$ ({why}):\nno certificate",
                     transform=axes[1].transAxes)
    axes[1].set_xlabel("step $t$")
    axes[1].set_ylabel("pl ratio, lower bound")
    # the legend sits above the axes, where it cannot hide the mu_t line
    axes[1].legend(loc="lower left", bbox_to_anchor=(-0.05, 1.0), ncol=1, borderaxespad=0.2)
    axes[0].text(0.0, 1.03, f"D={D}, Nn={N * n}, d={d}\nfinal loss {hist.final_loss:.1e}",
                 transform=axes[0].transAxes, ha="left", va="bottom")
    return hist


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------

def plot_side_by_side(hists: Dict[str, object], floor: float):
    """Loss (left) and smallest per-query Jacobian singular value (right) of the two kernels' runs,
    with the Softmax loss floor of :func:`softmax_loss_floor` as a dotted line."""
    import matplotlib.pyplot as plt

    from .plotting import WIDTH, kernel_color, kernel_style

    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.2))
    for k, h in hists.items():
        t = np.arange(len(h.loss))
        axes[0].semilogy(t, np.maximum(h.loss, 1e-300), **kernel_style(k), label=k)
        axes[1].semilogy(t, np.maximum(h.extra["sigma_J"], 1e-300), **kernel_style(k), label=k)
    axes[0].axhline(floor, color=kernel_color("softmax"), ls=":", lw=1.2, label="softmax floor")
    axes[0].set_xlabel("step $t$")
    axes[0].set_ylabel("training loss")
    axes[0].legend()
    axes[1].set_xlabel("step $t$")
    axes[1].set_ylabel(r"smallest $\sigma_{\min}(J_{i\ell})$")
    return axes
