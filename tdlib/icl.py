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
        return model(X)[:, -1, 0]


def query_loss(model, X, y_q) -> torch.Tensor:
    """``f = 1/2 sum_i (T(X_i)_{n,1} - y_{q,i})^2``: the book's loss restricted to the query
    token (a 0-d tensor; ``X``: ``N x n x (m+1)``, ``y_q``: length ``N``)."""
    X = model.check_X(X)
    y_q = torch.as_tensor(y_q, dtype=X.dtype)
    if y_q.shape != (X.shape[0],):
        raise ValueError(f"y_q: expected one label per prompt, shape ({X.shape[0]},), got "
                         f"{tuple(y_q.shape)}")
    return 0.5 * ((model._forward(X)[:, -1, 0] - y_q) ** 2).sum()


def query_features(model, X) -> torch.Tensor:
    """The query rows ``B_q`` (``N x HD``) of the feature matrix ``B`` of the chapter *Zero
    loss*: row ``i`` is ``[S_h(X_i)_{n,:} X_i]_{h=1..H}``, so that with one shared ``W_O`` the
    query outputs are ``B_q V W_O``."""
    from .zeroloss import feature_matrix

    X = model.check_X(X)
    N, n = X.shape[:2]
    return feature_matrix(model, X).reshape(N, n, -1)[:, -1]


def hull_floor(P: Dict[str, torch.Tensor]) -> float:
    """``1/2 sum_i dist(y_{q,i}, [a_i, b_i])^2`` with ``a_i = min(0, min_{j<n} y_{ij})`` and
    ``b_i = max(0, max_{j<n} y_{ij})``: a lower bound on the query-token loss of the structured
    layer (:func:`structured_layer`) with any row-stochastic kernel, at every ``W_Q``."""
    y = P["y"].to(torch.float64)
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
    ps = [getattr(model, p) for p in trainable]
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
        r = query_output(model, tokens(P)) - P["y"][:, -1]
    return float(0.5 * (r ** 2).mean())


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
    from .checks import check_choice
    from .zeroloss import lambda_min

    torch.set_num_threads(1)
    check_choice("mode", mode, BRIDGE_MODES)
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
    for k in cfg["kernels"]:
        _kernel(k)
    _count("seeds", cfg["seeds"], 1)
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


def check_flat_risk(flat_risk) -> None:
    """Self-check of the exercise *uniform attention* (label ``ex-icl-flat``): ``flat_risk(m,
    n)`` must return the population risk of the structured Softmax layer at ``W_Q = 0`` for
    isotropic covariates; compared with the closed form on several sizes. Prints ``correct``
    or raises :class:`tdlib.selfcheck.Wrong` with a hint."""
    from .selfcheck import Wrong, _call, _num, _ok, _require

    try:
        for m, n in ((1, 2), (3, 8), (5, 4), (2, 20)):
            got = _num("flat_risk", _call("flat_risk", flat_risk, m, n))
            want = flat_softmax_risk(m, n)
            _require(abs(got - want) <= 1e-9 * want,
                     f"for m={m}, n={n} your risk is too {'large' if got > want else 'small'}. "
                     "Hint: the query's own token has weight 1/n and value 0; given w, the "
                     "examples and the query are independent with mean zero")
    except Wrong as err:
        if str(err).startswith("flat_risk:"):
            raise
        raise Wrong(f"flat_risk: {err}") from None
    return _ok("the risk of uniform Softmax attention is right on four sizes")


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
    from .selfcheck import Wrong, _call, _num, _ok, _require

    try:
        for m, n in ((1, 2), (3, 8), (5, 4), (2, 20)):
            got = _num("flat_gaussian", _call("flat_gaussian", flat_gaussian, m, n))
            want = flat_gaussian_risk(m, n)
            _require(abs(got - want) <= 1e-9 * want,
                     f"for m={m}, n={n} your risk is too {'large' if got > want else 'small'}. "
                     "Hint: the weights are not normalised; E[exp(-b |x|^2) x x^T] is a "
                     "multiple of the identity")
    except Wrong as err:
        if str(err).startswith("flat_gaussian:"):
            raise
        raise Wrong(f"flat_gaussian: {err}") from None
    return _ok("the risk of the Gaussian layer at W_Q = 0 is right on four sizes")


def main(argv=None) -> int:
    """``python -m tdlib.icl --out FOLDER``: the bridge sweep into ``FOLDER/results.json``
    through :func:`tdlib.sweep.run` (``--workers``, ``--serial``, ``--scheduler``,
    ``--checkpoint``)."""
    import argparse
    import sys
    from pathlib import Path

    from . import book
    from . import sweep as runner

    ap = argparse.ArgumentParser(prog="python -m tdlib.icl",
                                 description="The in-context regression bridge sweep.")
    ap.add_argument("--out", required=True, help="output folder (writes results.json)")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--kernels", nargs="+", default=None)
    ap.add_argument("--progress", action="store_true", help="show a progress bar")
    runner.add_arguments(ap)
    args = ap.parse_args(argv)
    out = Path(args.out)
    try:
        if out.suffix in (".json", ".npz") or out.is_file():
            raise ValueError(f"--out: expected a folder, got {args.out}")
        book.check_writable(out / "results.json")
        where = runner.options(args, out / ".sweep-parts")
        bridge_tasks(seeds=args.seeds, kernels=args.kernels)      # refuse bad options now
    except (ValueError, TypeError, OSError) as err:
        ap.error(f"bad configuration: {err}")
    book.git_state()
    torch.set_num_threads(1)
    cmd = "python -m tdlib.icl " + " ".join(argv if argv is not None else sys.argv[1:])
    doc = bridge_sweep(command=cmd, quiet=not args.progress, seeds=args.seeds,
                       kernels=args.kernels, **where)
    path = book.save_json(out / "results.json", doc)
    runner.clear(where["checkpoint"])
    print(f"wrote {path} in {doc['provenance']['wall_seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    from tdlib.icl import main as _main   # tasks found by name (tdlib.icl.bridge_task)

    sys.exit(_main())
