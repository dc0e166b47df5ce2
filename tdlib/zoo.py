"""For the chapter *A kernel zoo*: query-only training with any registered kernel.

The setting is the query-only one of the Gaussian chapter: one head, ``W_K, W_V, W_O`` fixed,
keys ``K_i = X_i W_K``, value rows ``U_i = X_i W_V W_O`` and the loss
``f(W_Q) = 1/2 sum_ik ||S(q_ik, K_i) U_i - y_ik||^2`` with ``q_ik = W_Q^T x_ik``. Here the kernel
``S`` is any kernel of :data:`tdlib.attention.KERNELS` (the zoo: :data:`ZOO`), gradients come
from autograd in float64, and nothing depends on which kernel it is except three things that
are *proved* per class of kernels in the chapter:

* :data:`ROW_STOCHASTIC` kernels (every row of weights is a probability vector): the hull
  floor of :func:`tdlib.separation.softmax_floor` is a proved lower bound on their loss;
* every zoo kernel has an interval enclosure (:func:`score_box`), so a loss proved to be at most
  ``zero_tol * 1/2 ||Y||^2`` at an iterate (*numerical zero*) is a proof for it;
* nothing else is certified: the Gaussian layer theorem's covering is not run here.

Main entry points: :func:`make_problem`, :func:`gd` (the safeguarded GD of the phase
diagram), :func:`cell_task` (one cell of the zoo sweep, a module-level function of
JSON-serialisable keyword arguments), :func:`tasks` and :func:`sweep` (the whole sweep),
:func:`trap` (the Softmax chapter's instances with any kernel, certified by interval
arithmetic), :func:`properties` and :func:`profile` (bring your own kernel), :func:`draw`.

Command line (results and provenance go to ``OUT/results.json``)::

    OMP_NUM_THREADS=1 python -m tdlib.zoo --out book/data/zoo
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from . import book
from .attention import KERNELS, ZOO_KERNELS, make_kernel
from .checks import (SEED_LIMIT, as_tensor, check_choice, check_finite, check_flag,
                     check_int, check_positive, check_seed)
from .separation import Box, classify_curve, matmul_box, softmax_floor
from .phase import _descend
from .train import STEP_GROW

ZOO = ZOO_KERNELS
"""The zoo's kernels, in the order of the chapter's table."""

ROW_STOCHASTIC = ("softmax", "l2")
"""Zoo kernels whose weights are non-negative and sum to one in every row (proved in the
chapter): only for these is the hull floor a certificate."""

ZERO_TOL = 1e-20
"""The numerical-zero level (as in :mod:`tdlib.phase`): the enclosure of ``f(W_t)`` is at most
``ZERO_TOL * 1/2 ||Y||^2``."""

REASONS = {
    "softmax": "the standard Transformer kernel",
    "gaussian": "the paper's alternative; weights vanish far from every key",
    "l2": "row-normalised distances: a Lipschitz self-attention",
    "sigmoid-logn": "no normalisation across keys, cheaper kernels",
    "relu-n": "no exponential, no normalisation; divided by length",
    "linear-n": "cost linear in sequence length (no feature map here)",
}
"""A practitioner's one-line reason to use each zoo kernel (the chapter cites the sources)."""


def check_kernel(kernel: str, name: str = "kernel") -> str:
    """``kernel`` if it is a registered kernel name, else a clear error naming the known ones
    (and the argument ``name``: ``"teacher"``, ``"student"``, ...)."""
    if not isinstance(kernel, str) or kernel not in KERNELS:
        known = ", ".join(sorted(KERNELS))
        raise ValueError(f"{name}: expected a registered kernel name (one of {known}; add "
                         f"yours with tdlib.register_kernel), got {kernel!r:.60}")
    return kernel


# ---------------------------------------------------------------------------------------------
# Input checks shared by the entry points (the loops inside call the unchecked twins, whose
# names start with an underscore, on data checked once)
# ---------------------------------------------------------------------------------------------

def _tensor(name: str, value) -> torch.Tensor:
    """``value`` as a non-empty tensor of finite real numbers (a floating tensor is kept as it
    is, with its dtype and autograd graph; anything else becomes float64), or an error naming
    ``name``."""
    floating = isinstance(value, torch.Tensor) and value.is_floating_point()
    t = as_tensor(name, value, dtype=value.dtype if floating else torch.float64)
    if t.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty array, got shape {tuple(t.shape)}")
    check_finite(name, t)
    return t


def _arrays(**named) -> list:
    """Each ``name=(value, axes)`` (``axes`` such as ``"(N, n, D)"``) as :func:`_tensor` of
    rank ``len(axes)``, an axis of one name having one length in every argument; or an error
    naming the first argument that does not fit."""
    sizes: dict = {}
    owner: dict = {}
    out = []
    for name, (value, axes) in named.items():
        t = _tensor(name, value)
        dims = [a.strip() for a in axes.strip("()").split(",") if a.strip()]
        want = "(" + ", ".join(str(sizes.get(a, a)) for a in dims) + ("," * (len(dims) == 1))
        if t.ndim != len(dims) or any(sizes.get(a, k) != k for a, k in zip(dims, t.shape)):
            known = [f"{a} as in {owner[a]}" for a in dims if a in owner]
            why = f" ({', '.join(known)})" if known else ""
            raise ValueError(f"{name}: expected shape {axes} = {want}){why}, got "
                             f"{tuple(t.shape)}")
        for a, k in zip(dims, t.shape):
            sizes.setdefault(a, k)
            owner.setdefault(a, name)
        out.append(t)
    return out


def _batch(X, K, U, Y, W, w_name: str = "W") -> list:
    """A batch of query-only problems (the shapes of :func:`loss_and_grad`), checked."""
    return _arrays(X=(X, "(B, N, n, D)"), K=(K, "(B, N, n, d)"), U=(U, "(B, N, n, d_out)"),
                   Y=(Y, "(B, N, n, d_out)"), **{w_name: (W, "(B, D, d)")})


def _one(X, K, U, Y) -> list:
    """One query-only problem (``X (N, n, D)``, ``K (N, n, d)``, ``U, Y (N, n, d_out)``)."""
    return _arrays(X=(X, "(N, n, D)"), K=(K, "(N, n, d)"), U=(U, "(N, n, d_out)"),
                   Y=(Y, "(N, n, d_out)"))


def _list(name: str, values, check, of: str) -> list:
    """``values`` as a non-empty list (of ``of``) whose every entry passes
    ``check(name, entry)``."""
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name}: expected a non-empty list of {of}, got {values!r:.60}")
    values = list(values)
    if not values:
        raise ValueError(f"{name}: expected a non-empty list of {of}, got []")
    return [check(name, v) for v in values]


def _budgets(budgets) -> list:
    """Increasing step counts, each at least 16 (the tail fits of the labels need them)."""
    out = _list("budgets", budgets, lambda name, b: check_int(name, b, minimum=16),
                "increasing step counts")
    if any(a >= b for a, b in zip(out, out[1:])):
        raise ValueError(f"budgets: expected increasing step counts, got {out}")
    return out


def _seeds(seed, count: int) -> int:
    """A first seed whose ``count`` consecutive seeds are all below ``2^63``."""
    seed = check_seed("seed", seed)
    if seed + count - 1 >= SEED_LIMIT:
        raise ValueError(f"seed: expected seed + {count - 1} < 2^63 (one seed per run), "
                         f"got {seed}")
    return seed


def _dimension(ratio, N: int, n: int) -> int:
    """``D = round(ratio N n)``, at least 1."""
    D = int(round(check_positive("ratio", ratio) * N * n))
    if D < 1:
        raise ValueError(f"ratio: expected a ratio with D = round(ratio N n) >= 1 (N = {N}, "
                         f"n = {n}), got {ratio!r}")
    return D


def _stored(result) -> dict:
    """``result`` if it has the layout of a zoo sweep (:func:`sweep`, ``book/data/zoo``, the
    ``sweep`` of :func:`profile`), else a clear error."""
    cfg = result.get("zoo_config") if isinstance(result, dict) else None
    ok = isinstance(cfg, dict) and all(k in cfg for k in ("kernels", "ratios", "ds", "n")) \
        and isinstance(result.get("cells"), list) \
        and all(isinstance(c, dict) for c in result["cells"])
    if not ok:
        got = (f"a dict with keys {sorted(map(str, result))}" if isinstance(result, dict)
               else f"{type(result).__name__} {result!r:.60}")
        raise TypeError(f"result: expected a zoo sweep (a dict with 'zoo_config' and a list "
                        f"of 'cells', as made by zoo.sweep), got {got}")
    return result


def _student(result: dict, student) -> str:
    """``student`` if it is one of the students of the sweep ``result``."""
    check_choice("student", student, list(result["zoo_config"]["kernels"]))
    return student


# ---------------------------------------------------------------------------------------------
# Per-query problems and the layer loss with any kernel
# ---------------------------------------------------------------------------------------------

_FUNCS: dict = {}


def weights(Q, K, kernel: str) -> torch.Tensor:
    """The weights ``S(q, K)`` of queries ``Q (..., m, d)`` against keys ``K (..., n, d)``, shape
    ``(..., m, n)``; a clear error when the kernel returns a wrong shape or NaN/Inf."""
    check_kernel(kernel)
    Q, K = _tensor("Q", Q), _tensor("K", K)
    for name, t, rows in (("Q", Q, "m"), ("K", K, "n")):
        if t.ndim < 2:
            raise ValueError(f"{name}: expected shape (..., {rows}, d), got {tuple(t.shape)}")
    if Q.shape[-1] != K.shape[-1]:
        raise ValueError(f"K: expected shape (..., n, d) with d = {Q.shape[-1]} as in Q, got "
                         f"{tuple(K.shape)}")
    try:
        torch.broadcast_shapes(Q.shape[:-2], K.shape[:-2])
    except RuntimeError:
        raise ValueError(f"K: expected leading axes that broadcast with those of Q "
                         f"{tuple(Q.shape)}, got {tuple(K.shape)}") from None
    return _weights(Q, K, kernel)


def _weights(Q, K, kernel: str) -> torch.Tensor:
    """:func:`weights` without the checks of its input (the loops' twin)."""
    factory = KERNELS[kernel]
    if _FUNCS.get(kernel, (None,))[0] is not factory:     # (re-)registered: make it again
        _FUNCS[kernel] = (factory, make_kernel(kernel))
    S = _FUNCS[kernel][1](Q, K)
    want = Q.shape[:-1] + (K.shape[-2],)
    if not isinstance(S, torch.Tensor) or tuple(S.shape) != tuple(want):
        got = tuple(S.shape) if isinstance(S, torch.Tensor) else type(S).__name__
        raise ValueError(f"kernel {kernel!r}: expected weights of shape {tuple(want)} for "
                         f"queries {tuple(Q.shape)} and keys {tuple(K.shape)}, got {got}")
    if not bool(torch.isfinite(S).all()):
        raise FloatingPointError(f"kernel {kernel!r}: returned NaN/Inf for finite queries and "
                                 f"keys (largest query entry {float(Q.abs().max()):.3g}); "
                                 f"expected finite weights")
    return S


def make_problem(N: int, n: int, D: int, d: int, d_out: int, teacher: str,
                 init_scale: float = 1.0, seed: int = 0):
    """A random query-only problem whose targets come from a teacher of kernel ``teacher``:
    returns tensors ``X (N, n, D)``, keys ``K (N, n, d)``, values ``U (N, n, d_out)``, targets
    ``Y (N, n, d_out)``, the teacher's ``W_star (D, d)`` and the start ``W0 (D, d)``. The draws
    are those of :func:`tdlib.query.make_problem` (same seed, same numbers)."""
    N, n, D, d, d_out = (check_int(k, v) for k, v in
                         (("N", N), ("n", n), ("D", D), ("d", d), ("d_out", d_out)))
    check_kernel(teacher, "teacher")
    init_scale = check_positive("init_scale", init_scale, strict=False)
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    X = r(N, n, D)
    W_K, W_V, W_O = r(D, d) / math.sqrt(D), r(D, D) / math.sqrt(D), r(D, d_out) / math.sqrt(D)
    W_star = r(D, d) / math.sqrt(D)
    W0 = r(D, d) * init_scale / math.sqrt(D)
    K, U = X @ W_K, X @ W_V @ W_O
    Y = _weights(X @ W_star, K, teacher) @ U
    return X, K, U, Y, W_star, W0


def loss_and_grad(X, K, U, Y, W, kernel: str):
    """Query-only losses ``f (B,)`` and gradients ``grad f (B, D, d)`` of a batch of problems
    (``X (B, N, n, D)``, ``K (B, N, n, d)``, ``U, Y (B, N, n, d_out)``, ``W (B, D, d)``), by
    autograd in the dtype of the data."""
    check_kernel(kernel)
    return _loss_and_grad(*_batch(X, K, U, Y, W), kernel)


def _loss_and_grad(X, K, U, Y, W, kernel: str):
    """:func:`loss_and_grad` without the checks of its input (the loop of :func:`gd`)."""
    W = W.detach().clone().requires_grad_(True)
    Q = X @ W.unsqueeze(1)
    r = _weights(Q, K, kernel) @ U - Y
    f = 0.5 * (r * r).sum((1, 2, 3))
    (g,) = torch.autograd.grad(f.sum(), W)
    return f.detach(), g


def query_only_loss(X, K, U, Y, Ws, kernel: str) -> torch.Tensor:
    """The query-only loss of one problem (``X (N, n, D)``, ``K (N, n, d)``, ``U, Y (N, n,
    d_out)``) at many query matrices ``Ws (B, D, d)``, shape ``(B,)``."""
    check_kernel(kernel)
    X, K, U, Y, Ws = _arrays(X=(X, "(N, n, D)"), K=(K, "(N, n, d)"), U=(U, "(N, n, d_out)"),
                             Y=(Y, "(N, n, d_out)"), Ws=(Ws, "(B, D, d)"))
    Ws = Ws.to(torch.float64)
    Q = X[None] @ Ws[:, None]
    r = _weights(Q, K.expand(Q.shape), kernel) @ U - Y
    return 0.5 * (r * r).sum((1, 2, 3))


def layer_loss(model, X, Y, W_Q) -> torch.Tensor:
    """The loss of an :class:`~tdlib.attention.AttentionLayer` ``model`` on ``(X, Y)`` with its
    query matrix replaced by ``W_Q`` (same shape as ``model.W_Q``; differentiable in it)."""
    from .attention import AttentionLayer

    if not isinstance(model, AttentionLayer):
        raise TypeError(f"model: expected an AttentionLayer, got {type(model).__name__} "
                        f"{str(model)[:40]!r}")
    X, Y = model.check_XY(X, Y)
    floating = isinstance(W_Q, torch.Tensor) and W_Q.is_floating_point()
    W_Q = as_tensor("W_Q", W_Q, dtype=W_Q.dtype if floating else model.W_Q.dtype)
    if tuple(W_Q.shape) != tuple(model.W_Q.shape):
        raise ValueError(f"W_Q: expected shape {tuple(model.W_Q.shape)}, got {tuple(W_Q.shape)}")
    check_finite("W_Q", W_Q)
    Q = torch.einsum("Nnd,hde->Nhne", X, W_Q)
    K = torch.einsum("Nnd,hde->Nhne", X, model.W_K.detach())
    S = model.kernel(Q, K)
    T = torch.einsum("Nhij,Njd,hdv,hvo->Nio", S, X, model.W_V.detach(), model.W_O.detach())
    return 0.5 * ((T - Y) ** 2).sum()


def linear_operator(X, K, U, Y):
    """For the ``linear-n`` kernel: the matrix ``A (N n d_out, D d)`` and vector ``R0 = vec Y``
    with ``f(W_Q) = 1/2 ||A vec(W_Q) - R0||^2`` exactly (outputs are linear in ``W_Q``)."""
    X, K, U, Y = (v.to(torch.float64) for v in _one(X, K, U, Y))
    D, d = X.shape[-1], K.shape[-1]

    def outputs(w):
        Q = X @ w.reshape(D, d)
        return (_weights(Q, K, "linear-n") @ U).reshape(-1)

    A = torch.autograd.functional.jacobian(outputs, torch.zeros(D * d, dtype=torch.float64))
    return A, Y.reshape(-1)


def dead_fraction(runs: int = 200, N: int = 3, n: int = 4, ratio: float = 2.0, d: int = 4,
                  init_scale: float = 1.0, seed: int = 0):
    """For ``relu-n``: the fraction of random problems and starts (as in the sweep) whose start
    lies in the dead zone (every score negative), and the fraction with at least one token whose
    scores are all ``<= 0``."""
    runs, N, n, d = (check_int(k, v) for k, v in (("runs", runs), ("N", N), ("n", n),
                                                   ("d", d)))
    check_positive("init_scale", init_scale, strict=False)
    _seeds(seed, runs)
    D = _dimension(ratio, N, n)
    all_dead = some_dead = 0
    for r in range(runs):
        X, K, U, Y, _, W0 = make_problem(N, n, D, d, 2, "relu-n", init_scale, seed + r)
        scores = (X @ W0) @ K.transpose(-1, -2)                     # (N, n, n)
        all_dead += bool((scores < 0).all())
        some_dead += bool((scores <= 0).all(-1).any())
    return all_dead / runs, some_dead / runs


def gd(X, K, U, Y, W0, kernel: str, steps: int, grow: float = STEP_GROW, keep=()):
    """The phase diagram's safeguarded GD on ``W_Q`` for a batch (shapes of
    :func:`loss_and_grad`): the step starts at ``1 / ||Xs||_2^2``, a step that would raise the
    loss is not taken and halves it, a step that lowers it is taken and lets it grow by
    ``grow``. Returns the losses ``F (B, steps + 1)``, PL ratios ``P`` (``||grad f||^2 / 2f``)
    and a dict of the iterates at the steps in ``keep``."""
    check_kernel(kernel)
    steps = check_int("steps", steps, minimum=1)
    check_positive("grow", grow)
    X, K, U, Y, W0 = _batch(X, K, U, Y, W0, "W0")
    bad = isinstance(keep, (str, bytes)) or not hasattr(keep, "__iter__")
    marks = () if bad else list(keep)
    if bad or any(isinstance(t, bool) or not isinstance(t, (int, np.integer))
                  or not 0 <= t <= steps for t in marks):
        raise ValueError(f"keep: expected step numbers in 0..steps = 0..{steps}, got "
                         f"{keep if bad else marks!r:.60}")
    keep = marks
    return _gd(X, K, U, Y, W0, kernel, steps, grow, keep)


def _gd(X, K, U, Y, W0, kernel: str, steps: int, grow: float, keep):
    """:func:`gd` on checked input."""
    B, N, n, D = X.shape
    lr = 1.0 / torch.linalg.matrix_norm(X.reshape(B, N * n, D), 2) ** 2
    F = np.zeros((B, steps + 1))
    P = np.zeros((B, steps + 1))
    W = W0.clone()
    f, g = _loss_and_grad(X, K, U, Y, W, kernel)
    pl = lambda f, g: ((g * g).sum((1, 2)) / (2 * f)).numpy()  # noqa: E731
    F[:, 0], P[:, 0] = f.numpy(), pl(f, g)
    kept = {0: W.clone()} if 0 in keep else {}
    _descend(lambda W: _loss_and_grad(X, K, U, Y, W, kernel), (W, f, g, lr), 0, steps, F, P,
            grow, keep, kept)
    return F, P, kept


# ---------------------------------------------------------------------------------------------
# Interval enclosures (every float64 input taken as exact)
# ---------------------------------------------------------------------------------------------

def score_box(kernel: str, Q: Box, K) -> Box:
    """An enclosure of the weights ``S(q, K)`` for every query in the box ``Q (..., m, d)``
    against exact keys ``K (..., n, d)``: a :class:`~tdlib.separation.Box` of shape
    ``(..., m, n)``. Implemented for the zoo kernels only (a kernel of your own has none)."""
    check_choice("kernel (with an interval enclosure)", kernel, ZOO)
    if not isinstance(Q, Box):
        raise TypeError(f"Q: expected a Box of queries of shape (..., m, d) "
                        f"(tdlib.separation.Box), got {type(Q).__name__} {str(Q)[:40]!r}")
    if Q.lo.ndim < 2 or Q.lo.shape != Q.hi.shape or not (
            np.isfinite(Q.lo).all() and np.isfinite(Q.hi).all() and (Q.lo <= Q.hi).all()):
        raise ValueError(f"Q: expected a box of shape (..., m, d) with finite ends lo <= hi, "
                         f"got shapes {Q.lo.shape} and {Q.hi.shape}")
    K = np.asarray(_tensor("K", K).detach().cpu(), dtype=np.float64)
    if K.ndim < 2 or K.shape[-1] != Q.lo.shape[-1]:
        raise ValueError(f"K: expected shape (..., n, d) with d = {Q.lo.shape[-1]} as in Q, "
                         f"got {K.shape}")
    try:
        np.broadcast_shapes(Q.lo.shape[:-2], K.shape[:-2])
    except ValueError:
        raise ValueError(f"K: expected leading axes that broadcast with those of Q "
                         f"{Q.lo.shape}, got {K.shape}") from None
    return _score_box(kernel, Q, K)


def _score_box(kernel: str, Q: Box, K: np.ndarray) -> Box:
    """:func:`score_box` on checked input (``K`` a float64 array)."""
    d, n = K.shape[-1], K.shape[-2]
    Kb = Box(K[..., None, :, :])
    Qb = Q[..., :, None, :]
    if kernel in ("gaussian", "l2"):
        c = Box(2.0) * Box(float(d)).sqrt()
        z = -((Qb - Kb).sq().sum(-1) / c)
    else:
        z = (Qb * Kb).sum(-1) / Box(float(d)).sqrt()
    if kernel == "gaussian":
        return z.exp()
    if kernel in ("softmax", "l2"):
        shift = 0.5 * (z.lo + z.hi).max(-1, keepdims=True)
        e = (z - shift).exp()
        return e / e.sum(-1)[..., None]
    nb = Box(float(n))
    if kernel == "sigmoid-logn":
        return (Box(1.0) + (-(z - nb.log())).exp()).inv()
    if kernel == "relu-n":
        return Box(np.maximum(z.lo, 0.0), np.maximum(z.hi, 0.0)) / nb
    return z / nb                                                    # linear-n


def loss_box(X, K, U, Y, W, kernel: str) -> Box:
    """An enclosure of the exact query-only loss ``f(W)`` of a batch (shapes of
    :func:`loss_and_grad`; all float64 data taken as exact), a :class:`Box` of shape ``(B,)``."""
    check_choice("kernel (with an interval enclosure)", kernel, ZOO)
    return _loss_box(*_batch(X, K, U, Y, W), kernel)


def _loss_box(X, K, U, Y, W, kernel: str) -> Box:
    """:func:`loss_box` on checked input."""
    X, K, U, Y, W = (np.asarray(torch.as_tensor(v, dtype=torch.float64).detach())
                     for v in (X, K, U, Y, W))
    Q = matmul_box(X, W[:, None])
    w = _score_box(kernel, Q, K)
    o = (w[..., None] * Box(U[..., None, :, :])).sum(-2)
    return (o - Box(Y)).sq().sum(-1).sum(-1).sum(-1) * 0.5


def query_loss_box(kernel: str, lo, hi, keys, values, target) -> Box:
    """Enclosures of the per-query loss ``g(q) = 1/2 ||S(q, keys) values - target||^2`` over
    the boxes ``[lo, hi]`` of queries (arrays ``(m, d)``), shape ``(m,)``, for ``keys (n, d)``,
    ``values (n, d_out)`` and ``target (d_out,)``."""
    check_choice("kernel (with an interval enclosure)", kernel, ZOO)
    lo, hi, keys, values, target = (v.detach().cpu().numpy() for v in _arrays(
        lo=(lo, "(m, d)"), hi=(hi, "(m, d)"), keys=(keys, "(n, d)"),
        values=(values, "(n, d_out)"), target=(target, "(d_out,)")))
    if not (lo <= hi).all():
        raise ValueError("hi: expected hi >= lo entrywise (the boxes [lo, hi]), got "
                         f"{int((lo > hi).sum())} entries below lo")
    return _query_loss_box(kernel, lo, hi, keys, values, target)


def _query_loss_box(kernel: str, lo, hi, keys, values, target) -> Box:
    """:func:`query_loss_box` on checked input."""
    lo, hi = (np.asarray(v, dtype=np.float64)[:, None, :] for v in (lo, hi))
    w = _score_box(kernel, Box(lo, hi), np.asarray(keys, dtype=np.float64))[:, 0, :]  # (m, n)
    o = (w[..., None] * Box(np.asarray(values, dtype=np.float64)[None])).sum(1)
    return (o - Box(np.asarray(target, dtype=np.float64))).sq().sum(-1) * 0.5


# ---------------------------------------------------------------------------------------------
# Labels of a batch of runs, and one cell of the zoo sweep
# ---------------------------------------------------------------------------------------------

LABEL_RULE = (
    "certified positive: row-stochastic student (softmax, l2) and separation.softmax_floor > 0; "
    "certified zero: zoo.loss_box encloses f(W_t) below zero_tol * 1/2 ||Y||^2 at a budget; "
    "otherwise measured: separation.classify_curve at the budget (zero if only the computed "
    "loss is below the zero level)")


def label_runs(X, K, U, Y, W0, kernel: str, budgets: Sequence[int],
               zero_tol: float = ZERO_TOL) -> Dict[str, list]:
    """Train every run of a batch for ``budgets[-1]`` steps (:func:`gd`) and label it at every
    budget: ``positive`` (certified, row-stochastic student with a proved hull floor),
    ``zero`` (certified numerical zero, or measured when only the computed loss is below the
    level), or the measured tail shape of :func:`tdlib.separation.classify_curve`. Returns per-run
    lists ``label``, ``kind``, ``certificate``, ``labels_at``, ``kinds_at``, ``floor``
    (over ``1/2 ||Y||^2``), ``f_end`` and ``f_ref``."""
    check_kernel(kernel)
    budgets = _budgets(budgets)
    zero_tol = check_positive("zero_tol", zero_tol)
    X, K, U, Y, W0 = _batch(X, K, U, Y, W0, "W0")
    B = X.shape[0]
    F, P, kept = _gd(X, K, U, Y, W0, kernel, budgets[-1], STEP_GROW, set(budgets))
    fref = (0.5 * (Y * Y).sum((1, 2, 3))).numpy()
    fref_lo = (Box(Y.numpy()).sq().sum(-1).sum(-1).sum(-1) * 0.5).lo
    floor = softmax_floor(U, Y) if kernel in ROW_STOCHASTIC else np.zeros(B)
    boxed = kernel in ZOO
    f_hi = {b: (_loss_box(X, K, U, Y, kept[b], kernel).hi if boxed else np.full(B, np.inf))
            for b in budgets}

    def label(i, b):
        if floor[i] > 0:
            return "positive", "certified", "hull floor"
        if f_hi[b][i] <= zero_tol * fref_lo[i]:
            return "zero", "certified", "numerical zero"
        shape = classify_curve(F[i, :b + 1], P[i, :b + 1], zero_tol=zero_tol, f_ref=fref[i])
        return ("zero" if shape == "converged" else shape), "measured", None

    out = {k: [] for k in ("label", "kind", "certificate", "labels_at", "kinds_at")}
    for i in range(B):
        at = [label(i, b) for b in budgets]
        for k, v in zip(("label", "kind", "certificate"), at[-1]):
            out[k].append(v)
        out["labels_at"].append([x[0] for x in at])
        out["kinds_at"].append([x[1] for x in at])
    out["floor"] = (floor / fref).tolist()
    out["f_end"] = F[:, -1].tolist()
    out["f_ref"] = fref.tolist()
    return out


def cell_task(student: str, teacher: str, ratio: float, d: int, init_scale: float, N: int,
              n: int, d_out: int, instances: int, budgets: List[int], seed: int,
              zero_tol: float = ZERO_TOL) -> dict:
    """One cell of the zoo sweep: ``instances`` problems (seeds ``seed, seed + 1, ...``) with
    ``D = round(ratio N n)``, targets from ``teacher``, trained by ``student``; returns
    :func:`label_runs` plus the task's own arguments. Module-level and JSON in, JSON out, so a
    parallel runner can call it."""
    torch.set_num_threads(1)
    check_kernel(student, "student")
    check_kernel(teacher, "teacher")
    N, n, d, d_out, instances = (check_int(k, v) for k, v in (
        ("N", N), ("n", n), ("d", d), ("d_out", d_out), ("instances", instances)))
    check_positive("init_scale", init_scale, strict=False)
    _budgets(budgets)
    _seeds(seed, instances)
    check_positive("zero_tol", zero_tol)
    D = _dimension(ratio, N, n)
    probs = [make_problem(N, n, D, d, d_out, teacher, init_scale, seed + i)
             for i in range(instances)]
    X, K, U, Y, _, W0 = (torch.stack(z) for z in zip(*probs))
    res = label_runs(X, K, U, Y, W0, student, budgets, zero_tol)
    return {"student": student, "teacher": teacher, "ratio": ratio, "d": d,
            "init_scale": init_scale, "seed": seed, **res}


def other_teacher(student: str) -> str:
    """The second teacher of a student in the sweep: Softmax, or Gaussian for Softmax."""
    check_kernel(student, "student")
    return "gaussian" if student == "softmax" else "softmax"


DEFAULTS = dict(kernels=list(ZOO), ratios=[0.5, 1.0, 2.0], ds=[1, 2, 4, 8], init_scale=1.0,
                N=3, n=4, d_out=2, instances=16, budgets=[500, 1000, 2000], seed=0)
"""The stored zoo sweep's grid (``python -m tdlib.zoo`` with no options)."""


def tasks(kernels=None, ratios=None, ds=None, init_scale=None, N=None, n=None, d_out=None,
          instances=None, budgets=None, seed=None) -> List[dict]:
    """The keyword arguments of every :func:`cell_task` of a sweep (unset options from
    :data:`DEFAULTS`), each with its own seed: for every student, targets of its own kind
    (``teacher = student``) and of :func:`other_teacher`."""
    cfg = {k: v for k, v in dict(DEFAULTS).items()}
    for k, v in dict(kernels=kernels, ratios=ratios, ds=ds, init_scale=init_scale, N=N, n=n,
                     d_out=d_out, instances=instances, budgets=budgets, seed=seed).items():
        if v is not None:
            cfg[k] = v
    _list("kernels", cfg["kernels"], lambda name, k: check_kernel(k, name), "kernel names")
    _list("ratios", cfg["ratios"], check_positive, "positive ratios D/(N n)")
    _list("ds", cfg["ds"], check_int, "head dimensions")
    check_positive("init_scale", cfg["init_scale"], strict=False)
    for k in ("N", "n", "d_out", "instances"):
        check_int(k, cfg[k])
    _budgets(cfg["budgets"])
    check_seed("seed", cfg["seed"])
    out = []
    for a, ratio in enumerate(cfg["ratios"]):
        for b, d in enumerate(cfg["ds"]):
            for student in cfg["kernels"]:
                for which, teacher in (("own", student), ("other", other_teacher(student))):
                    # one seed per (ratio, d, teacher): every student of a teacher sees the
                    # same problems and starts
                    s = cfg["seed"] + 1_000_003 * (a * 97 + b * 13) + 10_007 * sum(
                        map(ord, teacher))
                    out.append(dict(student=student, teacher=teacher, ratio=float(ratio),
                                    d=int(d), init_scale=float(cfg["init_scale"]),
                                    N=cfg["N"], n=cfg["n"], d_out=cfg["d_out"],
                                    instances=cfg["instances"],
                                    budgets=list(cfg["budgets"]), seed=int(s)))
    top = max(t["seed"] for t in out) + cfg["instances"] - 1
    if top >= SEED_LIMIT:
        raise ValueError(f"seed: expected a seed small enough that every run's seed stays "
                         f"below 2^63 (the largest would be {top}), got {cfg['seed']}")
    return out


def sweep(workers: Optional[int] = None, scheduler: Optional[str] = None, checkpoint=None,
          command: Optional[str] = None, quiet: bool = True, **options) -> dict:
    """Run every task of :func:`tasks` (``options`` as there) through
    :func:`tdlib.sweep.run` (``workers``, ``scheduler``, ``checkpoint`` as there; the result is
    the same in every mode) and return the stored document: ``zoo_config``, ``label_rule``,
    ``cells`` (each task's arguments and per-run labels) and ``provenance``."""
    from . import sweep as runner
    from .zoo import cell_task as fn    # by its module name, also under python -m tdlib.zoo

    start = time.perf_counter()
    task_list = tasks(**options)
    cfg = dict(DEFAULTS)
    cfg.update({k: v for k, v in options.items() if v is not None})
    info: dict = {}
    results = runner.run(fn, task_list, workers=workers, scheduler=scheduler,
                         checkpoint=checkpoint, quiet=quiet, info=info, desc="kernel zoo")
    return {"zoo_config": cfg, "label_rule": LABEL_RULE, "cells": results,
            "provenance": book.provenance(command, **{
                **runner.record(info), "wall_seconds": time.perf_counter() - start,
                "cpu_seconds": info.get("cpu_seconds")})}


# ---------------------------------------------------------------------------------------------
# Reading a stored sweep
# ---------------------------------------------------------------------------------------------

def cells_of(result: dict, student: str, teacher_kind: str) -> List[dict]:
    """The stored cells of one student with targets of its own kind (``"own"``) or of
    :func:`other_teacher` (``"other"``)."""
    _student(_stored(result), student)
    check_choice("teacher_kind", teacher_kind, ("own", "other"))
    t = student if teacher_kind == "own" else other_teacher(student)
    out = [c for c in result["cells"] if c["student"] == student and c["teacher"] == t]
    if not out:
        have = sorted({str(c.get("student")) for c in result["cells"]})
        raise ValueError(f"student: expected a student with cells on {teacher_kind} targets "
                         f"(the sweep has cells of {have}), got {student!r}")
    return out


def fractions(result: dict, student: str, teacher_kind: str, labels=("zero", "linear"),
              kind: Optional[str] = None) -> np.ndarray:
    """Fraction of runs per cell ``[ratio, d]`` whose final label is in ``labels`` (and, if
    ``kind`` is given, of that kind: ``"certified"`` or ``"measured"``)."""
    _student(_stored(result), student)
    check_choice("teacher_kind", teacher_kind, ("own", "other"))
    _list("labels", labels, lambda name, lab: check_choice(name, lab, LABELS) or lab,
          "labels")
    if kind is not None:
        check_choice("kind", kind, ("certified", "measured"))
    cfg = result["zoo_config"]
    out = np.full((len(cfg["ratios"]), len(cfg["ds"])), np.nan)
    for c in cells_of(result, student, teacher_kind):
        a, b = cfg["ratios"].index(c["ratio"]), cfg["ds"].index(c["d"])
        hit = [lab in labels and (kind is None or k == kind)
               for lab, k in zip(c["label"], c["kind"])]
        out[a, b] = float(np.mean(hit))
    return out


LABELS = ("zero", "positive", "linear", "power law", "stalling")
"""The final labels of :func:`label_runs`."""

REGIONS = ("in", "coupled", "d1")
"""Regions of the grid: ``in`` (``D >= N n`` and ``d >= n``: where the dimension conditions of
the chapter's propositions can hold), ``coupled`` (``D < N n``) and ``d1`` (``d = 1``)."""

SUMMARY_KEYS = ("zero_c", "pos_c", "zero_m", "lin", "power", "stall")


def _in_region(cfg: dict, cell: dict, region: str) -> bool:
    if region == "in":
        return cell["ratio"] >= 1 and cell["d"] >= cfg["n"]
    if region == "coupled":
        return cell["ratio"] < 1
    return cell["d"] == 1


def summary(result: dict) -> dict:
    """Fractions of runs with each final label, per ``(student, teacher_kind, region)``:
    ``zero_c``, ``pos_c`` (certified), ``zero_m``, ``lin``, ``power``, ``stall`` (measured);
    NaN when the region has no runs."""
    cfg = _stored(result)["zoo_config"]
    out = {}
    for student in cfg["kernels"]:
        for tk in ("own", "other"):
            cells = cells_of(result, student, tk)
            for region in REGIONS:
                runs = [(lab, k) for c in cells if _in_region(cfg, c, region)
                        for lab, k in zip(c["label"], c["kind"])]
                m = max(len(runs), 1)
                frac = lambda lab, kind: (sum(r == (lab, kind) for r in runs) / m  # noqa: E731
                                          if runs else math.nan)
                out[(student, tk, region)] = {
                    "zero_c": frac("zero", "certified"), "pos_c": frac("positive", "certified"),
                    "zero_m": frac("zero", "measured"), "lin": frac("linear", "measured"),
                    "power": frac("power law", "measured"),
                    "stall": frac("stalling", "measured")}
    return out


def flip_rate(result: dict, student: Optional[str] = None) -> dict:
    """Of the runs whose label at the second-to-last budget is *measured*, how many have another
    label at the last budget (all students, or one): ``runs``, ``flips``, ``rate``."""
    _stored(result)
    if student is not None:
        _student(result, student)
    runs = flips = 0
    for c in result["cells"]:
        if student is not None and c["student"] != student:
            continue
        for labs, kinds in zip(c["labels_at"], c["kinds_at"]):
            if kinds[-2] == "measured":
                runs += 1
                flips += labs[-2] != labs[-1]
    return {"runs": runs, "flips": flips, "rate": flips / runs if runs else math.nan}


def plot_diagram(result: dict, student: str, axes=None):
    """The student's phase diagram: one heat map per kind of targets (own, other), each cell the
    fraction of runs labelled zero or linear, the certified part printed below it."""
    import matplotlib.pyplot as plt
    from .plotting import WIDTH
    _student(_stored(result), student)
    if axes is not None and (isinstance(axes, (str, bytes)) or not hasattr(axes, "__len__")
                             or len(axes) != 2
                             or not all(hasattr(ax, "imshow") for ax in axes)):
        raise TypeError(f"axes: expected two matplotlib Axes (a row of plt.subplots(..., 2)), "
                        f"got {type(axes).__name__} {str(axes)[:40]!r}")
    cfg = result["zoo_config"]
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(WIDTH, 2.9), constrained_layout=True)
    for ax, tk in zip(axes, ("own", "other")):
        good = fractions(result, student, tk)
        cert = fractions(result, student, tk, ("zero", "positive"), kind="certified")
        ax.imshow(good, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
        ax.grid(False)
        for a in range(good.shape[0]):
            for b in range(good.shape[1]):
                col = "black" if good[a, b] > 0.6 else "white"
                ax.text(b, a, f"{good[a, b]:.2f}\n({cert[a, b]:.2f} c)", ha="center",
                        va="center", fontsize=8, color=col)
        ax.set_xticks(range(len(cfg["ds"])), [str(d) for d in cfg["ds"]])
        ax.set_yticks(range(len(cfg["ratios"])), [f"{r:g}" for r in cfg["ratios"]])
        ax.set_xlabel("head dimension $d$")
        t = student if tk == "own" else other_teacher(student)
        ax.set_title(f"{student} on {t} targets", fontsize=9)
    axes[0].set_ylabel("$D/(Nn)$")
    return axes


# ---------------------------------------------------------------------------------------------
# The trap: the Softmax chapter's instances with any kernel
# ---------------------------------------------------------------------------------------------

def trap_instance(d: int = 1):
    """Keys, values and target of the Softmax chapter's instance: keys ``-1, 0, 1`` (on the
    first axis when ``d = 2``), values ``(-3, 8), (-2, 0), (-1, 8)``, target the Softmax output
    at the query ``-3`` (``(-3 sqrt 2, 0)`` when ``d = 2``, the same target)."""
    from .counterexample import instance
    check_choice("d", check_int("d", d), (1, 2))
    P = instance("softmax", d=d)
    return P.keys.numpy(), P.values.numpy(), P.target.numpy()


def query_loss(kernel: str, q, keys, values, target) -> np.ndarray:
    """The per-query loss ``g(q)`` in float64 for queries ``q (m, d)``, shape ``(m,)``, with
    ``keys (n, d)``, ``values (n, d_out)`` and ``target (d_out,)``."""
    check_kernel(kernel)
    q, keys, values, target = (v.detach().to(torch.float64) for v in _arrays(
        q=(q, "(m, d)"), keys=(keys, "(n, d)"), values=(values, "(n, d_out)"),
        target=(target, "(d_out,)")))
    Q = q[:, None, :]
    K = keys.expand(Q.shape[0], -1, -1)
    o = _weights(Q, K, kernel)[:, 0] @ values
    r = o - target
    return (0.5 * (r * r).sum(-1)).numpy()


_TRAP_GRID: dict = {}
TRAP_POINTS = 10 ** 6
"""The largest grid :func:`trap` evaluates (``2 span / h`` points)."""


def _trap_grid(kernel: str, d: int, span: float, h: float, pieces: int) -> dict:
    """The grid part of :func:`trap` (kept once computed: it depends on its arguments only)."""
    K, U, y = trap_instance(d)
    s = np.arange(-span, span + h / 2, h)
    pad = lambda v: np.stack([v, np.zeros_like(v)], 1) if d == 2 else v[:, None]  # noqa: E731
    g = query_loss(kernel, pad(s), K, U, y)
    ib = int(np.argmin(g))
    best_hi = float(_query_loss_box(kernel, pad(s[ib:ib + 1]), pad(s[ib:ib + 1]), K, U,
                                    y).hi[0])
    minima = []
    for i in np.flatnonzero((g[1:-1] < g[:-2]) & (g[1:-1] < g[2:])) + 1:
        three = pad(s[i - 1:i + 2])
        e = _query_loss_box(kernel, three, three, K, U, y)
        proved = bool(e.hi[1] < min(e.lo[0], e.lo[2]))
        edges = np.linspace(s[i - 1], s[i + 1], pieces + 1)
        lower = float(_query_loss_box(kernel, pad(edges[:-1]), pad(edges[1:]), K, U,
                                      y).lo.min())
        minima.append({"s": float(s[i]), "g": float(g[i]), "lower": lower,
                       "bracket": (float(s[i - 1]), float(s[i + 1])), "proved": proved,
                       "non_global": bool(proved and lower > best_hi)})
    return {"kernel": kernel, "d": d, "s": s, "g": g, "minima": minima,
            "best_s": float(s[ib]), "best": float(g[ib]), "best_hi": best_hi}


def trap(kernel: str, d: int = 1, span: float = 12.0, h: float = 0.01, pieces: int = 64,
         gd_steps: int = 0) -> dict:
    """The Softmax chapter's instance with ``kernel``: the loss along the first query
    coordinate ``s`` on ``[-span, span]`` (step ``h``; the second coordinate is 0 when
    ``d = 2``) and a certificate for every strict local minimum of the grid.

    For a grid minimum ``s_m`` the bracket is ``[s_m - h, s_m + h]``. Proved with interval
    arithmetic (:func:`query_loss_box`): ``g(s_m) < min(g(s_m - h), g(s_m + h))``, so ``g``
    has a local minimum inside the bracket; and a lower bound ``lower`` of ``g`` on the whole
    bracket (``pieces`` sub-intervals). The minimum is *non-global* when ``lower`` exceeds an
    upper bound of ``g`` at the lowest grid point, ``best_hi``. Returns ``s``, ``g``,
    ``minima`` (dicts ``s``, ``g``, ``lower``, ``bracket``, ``proved``, ``non_global``),
    ``best_s``, ``best_hi`` and the lowest grid value ``best``. With ``gd_steps > 0`` also the
    end of ``gd_steps`` safeguarded GD steps on the layer (:func:`gd`; ``X = I_3``, every
    token's target ``y``) from the Softmax chapter's start ``s = 1`` (``(sqrt 2, 1)`` when
    ``d = 2``): the per-query loss ``gd_end``, the query ``gd_point`` and ``gd_zero``
    (numerical zero proved by :func:`loss_box`)."""
    check_kernel(kernel)
    check_choice("kernel (with an interval enclosure)", kernel, ZOO)
    check_choice("d", check_int("d", d), (1, 2))
    span, h = check_positive("span", span), check_positive("h", h)
    if 2 * span / h > TRAP_POINTS:
        raise ValueError(f"h: expected a grid step giving at most {TRAP_POINTS} points on "
                         f"[-span, span] = [{-span:g}, {span:g}], got h = {h!r}")
    check_int("pieces", pieces)
    check_int("gd_steps", gd_steps, minimum=0)
    key = (kernel, d, float(span), float(h), int(pieces), id(KERNELS[kernel]))
    if key not in _TRAP_GRID:
        _TRAP_GRID[key] = _trap_grid(kernel, d, span, h, pieces)
    out = dict(_TRAP_GRID[key])
    if not gd_steps:
        return out
    K, U, y = trap_instance(d)
    X = torch.eye(3, dtype=torch.float64)[None, None]
    Kt, Ut = torch.as_tensor(K)[None, None], torch.as_tensor(U)[None, None]
    Yt = torch.as_tensor(y).expand(1, 1, 3, 2).clone()
    start = [1.0] if d == 1 else [math.sqrt(2), 1.0]
    W0 = torch.tensor([start] * 3, dtype=torch.float64)[None]
    F, _, kept = _gd(X, Kt, Ut, Yt, W0, kernel, gd_steps, STEP_GROW, {gd_steps})
    f_hi = float(_loss_box(X, Kt, Ut, Yt, kept[gd_steps], kernel).hi[0])
    fref_lo = float((Box(Yt.numpy()).sq().sum(-1).sum(-1).sum(-1) * 0.5).lo[0])
    out.update(gd_end=float(F[0, -1]) / 3, gd_point=kept[gd_steps][0, 0].numpy(),
               gd_zero=bool(f_hi <= ZERO_TOL * fref_lo))
    return out


# ---------------------------------------------------------------------------------------------
# Bring your own kernel
# ---------------------------------------------------------------------------------------------

def properties(kernel: str, d: int = 3, n: int = 4, samples: int = 200, seed: int = 0) -> dict:
    """Numerical checks of the properties the chapter's propositions use, on random keys and
    queries (``samples`` of them, float64): ``row_stochastic`` (weights >= 0 summing to 1 within
    1e-12), ``vanishes`` (the largest weight at ``||q|| = 1e6`` along random directions is below
    1e-6), ``dead_zone`` (some random query has a gradient exactly 0 while its loss is
    positive), ``affine_in_q`` (the output is affine in the query within 1e-9), ``bounded``
    (every weight in [0, 1] at ``||q|| = 1e6``). These are measurements on samples, not proofs."""
    check_kernel(kernel)
    d, n, samples = (check_int(k, v) for k, v in (("d", d), ("n", n), ("samples", samples)))
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    K, U, y = r(samples, n, d), r(samples, n, 2), r(samples, 2)
    Q = 2 * r(samples, 1, d)
    S = _weights(Q, K, kernel)
    row = bool((S >= 0).all() and (S.sum(-1) - 1).abs().max() < 1e-12)
    far = 1e6 * Q / Q.norm(dim=-1, keepdim=True)
    S_far = _weights(far, K, kernel)
    vanishes = bool(S_far.abs().max() < 1e-6)
    bounded = bool((S_far >= 0).all() and (S_far <= 1).all())
    Qg = Q.clone().requires_grad_(True)
    loss = 0.5 * ((_weights(Qg, K, kernel) @ U)[:, 0] - y).pow(2).sum(-1)
    (grad,) = torch.autograd.grad(loss.sum(), Qg)
    dead = bool(((grad.abs().amax((1, 2)) == 0) & (loss > 1e-12)).any())
    Q2 = 2 * r(samples, 1, d)
    o = lambda q: _weights(q, K, kernel) @ U  # noqa: E731
    aff = (o(Q + Q2) - o(Q) - o(Q2) + o(torch.zeros_like(Q))).abs().max()
    return {"row_stochastic": row, "vanishes": vanishes, "dead_zone": dead,
            "affine_in_q": bool(aff < 1e-9), "bounded": bounded}


PROPERTIES = ("row_stochastic", "vanishes", "affine_in_q", "dead_zone", "bounded")
"""The keys of :func:`properties`."""


def table_row(kernel: str, props: dict) -> str:
    """One line of the chapter's kernel x property table, from :func:`properties`."""
    check_kernel(kernel)
    if not isinstance(props, dict) or not all(isinstance(props.get(k), (bool, np.bool_))
                                              for k in PROPERTIES):
        raise TypeError(f"props: expected the dict of zoo.properties (True or False for each "
                        f"of {', '.join(PROPERTIES)}), got {props!r:.80}")
    yes = lambda b: "yes" if b else "no"  # noqa: E731
    return (f"{kernel:13s} {yes(props['row_stochastic']):>7s} {yes(props['vanishes']):>9s} "
            f"{yes(props['affine_in_q']):>7s} {yes(props['dead_zone']):>5s} "
            f"{yes(props['bounded']):>8s}")


TABLE_HEADER = f"{'kernel':13s} {'rowstoch':>7s} {'vanishes':>9s} {'affine':>7s} {'dead':>5s} " \
               f"{'bounded':>8s}"


def profile(kernel: str, instances: int = 4, steps: int = 256, seed: int = 0,
            draw: bool = True) -> dict:
    """Bring your own kernel: :func:`properties`, the trap instance (``d = 2``, the loss along
    the first query coordinate; certified only for zoo kernels, measured otherwise), and a small
    phase sweep (``D/(Nn)`` in 1, 2, ``d`` in 2, 4, ``instances`` problems per cell with targets
    of the kernel's own kind, ``steps`` GD steps, measured labels). Prints the kernel's table row
    and, with ``draw``, plots the trap curve and the diagram. Returns a dict with
    ``properties``, ``trap`` and ``sweep``. Takes a few seconds. ``steps`` is at least 32
    (the sweep's budgets ``steps // 2`` and ``steps`` are at least 16)."""
    check_kernel(kernel)
    check_int("instances", instances)
    steps = check_int("steps", steps, minimum=32)
    check_seed("seed", seed)
    check_flag("draw", draw)
    props = properties(kernel, seed=seed)
    K, U, y = trap_instance(2)
    s = np.arange(-12, 12.005, 0.01)
    curve = query_loss(kernel, np.stack([s, 0 * s], 1), K, U, y)
    tr = trap(kernel, d=2) if kernel in ZOO else {"s": s, "g": curve, "minima": []}
    cfg = dict(kernels=[kernel], ratios=[1.0, 2.0], ds=[2, 4], instances=instances,
               budgets=[steps // 2, steps], seed=seed)
    cells = [cell_task(**t) for t in tasks(**cfg) if t["teacher"] == kernel]
    res = {"zoo_config": {**DEFAULTS, **cfg}, "cells": cells}
    print(TABLE_HEADER)
    print(table_row(kernel, props))
    low = float(np.min(curve))
    print(f"trap instance: lowest loss on the grid {low:.3g} at s = {s[np.argmin(curve)]:.2f}")
    if draw:
        import matplotlib.pyplot as plt
        from .plotting import WIDTH, kernel_style
        fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 2.8), constrained_layout=True)
        axes[0].semilogy(s, np.maximum(curve, 1e-16), **kernel_style(kernel, marker=False))
        axes[0].set_xlabel("first query coordinate $s$")
        axes[0].set_ylabel("loss $g$")
        good = np.full((2, 2), np.nan)
        for c in cells:
            good[[1.0, 2.0].index(c["ratio"]), [2, 4].index(c["d"])] = np.mean(
                [lab in ("zero", "linear") for lab in c["label"]])
        axes[1].imshow(good, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
        axes[1].grid(False)
        for a in range(2):
            for b in range(2):
                axes[1].text(b, a, f"{good[a, b]:.2f}", ha="center", va="center",
                             color="black" if good[a, b] > 0.6 else "white")
        axes[1].set_xticks([0, 1], ["2", "4"])
        axes[1].set_yticks([0, 1], ["1", "2"])
        axes[1].set_xlabel("head dimension $d$")
        axes[1].set_ylabel("$D/(Nn)$")
        plt.show()
    return {"properties": props, "trap": tr, "sweep": res}


def draw(kernel: str = "softmax", result: Optional[dict] = None):
    """The widget's figure for a zoo kernel: its loss along the trap instance's first query
    coordinate (``d = 1`` and ``d = 2``) with the certified minima, and its stored diagram on
    targets of its own kind (the stored ``book/data/zoo/results.json`` unless ``result`` is
    given)."""
    import matplotlib.pyplot as plt
    from .plotting import WIDTH, kernel_color
    check_choice("kernel", kernel, ZOO)
    result = _stored(result) if result is not None else book.stored("zoo", "results.json")
    fig = plt.figure(figsize=(WIDTH, 3.0), constrained_layout=True)
    ax0, ax1 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for d, ls in ((1, "-"), (2, "--")):
        tr = trap(kernel, d=d)
        ax0.semilogy(tr["s"], np.maximum(tr["g"], 1e-16), ls=ls, label=f"$d = {d}$",
                     color=kernel_color(kernel))
        for m in tr["minima"]:
            if m["non_global"]:
                ax0.plot(m["s"], m["g"], "o", color="#D55E00")
    ax0.set_xlabel("first query coordinate $s$")
    ax0.set_ylabel("loss $g$")
    ax0.legend(fontsize=8)
    _own_diagram(result, kernel, ax1)
    return fig


def _own_diagram(result, kernel, ax):
    cfg = result["zoo_config"]
    good = fractions(result, kernel, "own")
    ax.imshow(good, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
    ax.grid(False)
    for a in range(good.shape[0]):
        for b in range(good.shape[1]):
            ax.text(b, a, f"{good[a, b]:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if good[a, b] > 0.6 else "white")
    ax.set_xticks(range(len(cfg["ds"])), [str(d) for d in cfg["ds"]])
    ax.set_yticks(range(len(cfg["ratios"])), [f"{r:g}" for r in cfg["ratios"]])
    ax.set_xlabel("head dimension $d$")
    ax.set_ylabel("$D/(Nn)$")
    ax.set_title(f"{kernel}: zero or linear, own targets", fontsize=9)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    """``python -m tdlib.zoo --out FOLDER``: the zoo sweep into ``FOLDER/results.json``; the
    runs go through :func:`tdlib.sweep.run` (``--workers``, ``--serial``, ``--scheduler``,
    ``--checkpoint``; finished tasks kept in ``OUT/.sweep-parts`` until the result is
    written)."""
    from . import sweep as runner

    ap = argparse.ArgumentParser(prog="python -m tdlib.zoo",
                                 description="The kernel zoo's phase sweep (query-only GD).")
    ap.add_argument("--out", required=True, help="output folder (writes results.json)")
    ap.add_argument("--instances", type=int, default=None)
    ap.add_argument("--kernels", nargs="+", default=None)
    ap.add_argument("--progress", action="store_true", help="show a progress bar")
    runner.add_arguments(ap)
    args = ap.parse_args(argv)
    path, where = runner.start(ap, args, lambda: tasks(instances=args.instances,
                                                       kernels=args.kernels))
    doc = sweep(command=runner.command("python -m tdlib.zoo", argv), quiet=not args.progress,
                instances=args.instances, kernels=args.kernels, **where)
    path = runner.save(path, doc, where)
    prov = doc["provenance"]
    print(f"wrote {path} in {prov['wall_seconds']:.0f} s ({prov.get('mode')}, "
          f"{prov.get('workers')} workers)", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    # the tasks must be found by name (tdlib.zoo.cell_task), not as __main__.cell_task
    from tdlib.zoo import main as _main

    sys.exit(_main())
