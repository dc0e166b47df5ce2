"""For the chapter *Gaussian attention and query-only training*: what query-only gradient
descent does over many random problems, as a phase diagram whose labels say what is proved and
what is measured.

For every cell of a grid (ratio ``D / (N n)``, head dimension ``d``, initialization scale) and
every pair (teacher kernel, student kernel), ``instances`` random problems from
:func:`tdlib.query.make_problem` are trained by full-batch GD on ``W_Q`` alone, for the fixed
budgets ``t_max / 2^k, ..., t_max / 2, t_max`` (:class:`SweepConfig`); the runs of the first
``audit`` instances of every cell go on to ``2 t_max``. :func:`certify_runs` gives every run a
label at every budget:

* *certified*: ``positive`` (a Softmax student with a target outside the convex hull of its
  value rows: :func:`tdlib.separation.softmax_floor` proves a positive floor for every ``W_Q``)
  or ``zero`` (the loss is proved to be at most ``zero_tol * 1/2 ||Y||^2``, or the hypotheses
  of the Gaussian layer theorem are proved at the iterate of the last budget);
* *measured*: the tail shape of :func:`tdlib.separation.classify_curve` (``linear``,
  ``power law``, ``stalling``) at that budget. A measured label depends on the budget; the
  sweep records it at every budget, and the audit measures how often it changes at ``2 t_max``.

Step size: each instance starts with ``eta = 1 / sigma_max(Xs)^2``; at every iteration a step
that would raise the loss is not taken and ``eta`` is halved (the iteration is spent), a step that
lowers it is taken and ``eta`` grows by the factor ``grow`` (1.1). Every run is therefore monotone
gradient descent with a safeguarded step; :func:`tdlib.query.run` with ``adaptive=True`` follows
the same rule. This is not the constant step ``eta <= 1/L`` of the layer theorem: a theorem
certificate proves what constant-step GD does from that iterate, not what the sweep's run does.

Command line (results and provenance go to ``OUT/results.json``; the runs go through
:mod:`tdlib.sweep`, by default on one worker process per core, ``--serial`` in this process,
``--scheduler tcp://HOST:PORT`` on a Dask cluster)::

    python -m tdlib.phase --out book/data/phase-diagram --instances 16 --steps 1000 \
        --max-steps 4000 --audit 4
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from typing import List, Optional

import numpy as np
import torch

from . import book
from .attention import KERNEL_NAMES
from .checks import check_choice, check_int, check_positive, check_seed
from .query import jacobians_unchecked as jacobians, make_problem, outputs_unchecked as outputs
from . import separation
from .separation import Box, classify_curve
from .train import STEP_GROW, next_step_size


MAX_D = 4096
"""The largest embedding dimension a sweep accepts (memory grows with instances * N n D)."""


@dataclass
class SweepConfig:
    """The grid and the budgets of a sweep (all lists are axes of the grid). The fixed budgets
    are ``steps, 2 steps, ..., max_steps`` (``t_max = max_steps``, default ``4 steps``); the
    runs of the first ``audit`` instances of every cell also go on to ``2 t_max``."""

    ratios: List[float] = field(default_factory=lambda: [0.5, 1.0, 1.5, 2.0, 3.0])
    ds: List[int] = field(default_factory=lambda: [1, 2, 4, 8])
    init_scales: List[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    teachers: List[str] = field(default_factory=lambda: ["softmax", "gaussian"])
    students: List[str] = field(default_factory=lambda: ["softmax", "gaussian"])
    N: int = 3
    n: int = 4
    d_out: int = 2
    instances: int = 16
    steps: int = 1000
    max_steps: Optional[int] = None   # default 4 * steps
    tol: float = 1e-4
    seed: int = 0
    audit: int = 0
    zero_tol: float = 1e-20
    thm_max_d: int = 4
    thm_max_boxes: int = 50_000

    def problems(self) -> List[str]:
        """Every wrong field, each named by itself (``"ratios: ..."``), whatever the other
        fields hold: a field whose check needs another one (a ratio needs ``N`` and ``n``) is
        checked only once that one is sound. An empty list when the configuration is sound."""
        out: List[str] = []

        def check(name, f, *args, **kw):
            try:
                return f(name, *args, **kw), True
            except (TypeError, ValueError) as err:
                out.append(str(err))
                return None, False

        ints = {}
        for name in ("N", "n", "d_out", "instances", "thm_max_d", "thm_max_boxes"):
            ints[name] = check(name, check_int, getattr(self, name))
        check("seed", check_seed, self.seed)
        audit, audit_ok = check("audit", check_int, self.audit, minimum=0)
        if audit_ok and ints["instances"][1] and audit > self.instances:
            out.append(f"audit: expected at most instances = {self.instances}, got {audit}")
        steps, steps_ok = check("steps", check_int, self.steps, minimum=16)
        if steps_ok:
            max_steps = 4 * steps if self.max_steps is None else self.max_steps
            m, m_ok = check("max_steps", check_int, max_steps, minimum=steps)
            if m_ok:
                k = m // steps
                if m % steps or k & (k - 1):
                    out.append(f"max_steps: expected steps ({steps}) times a power of two, "
                               f"got {m}")
        for name in ("tol", "zero_tol"):
            v, ok = check(name, check_positive, getattr(self, name))
            if ok and not v < 1:
                out.append(f"{name}: expected a number in (0, 1), got {v}")
        lists = {}
        for name in ("ratios", "ds", "init_scales", "teachers", "students"):
            v = getattr(self, name)
            if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__") or not list(v):
                out.append(f"{name}: expected a non-empty list, got {v!r}")
                lists[name] = []
            else:
                lists[name] = list(v)
                try:
                    dup = sorted({x for x in lists[name] if lists[name].count(x) > 1}, key=str)
                except TypeError:   # unhashable entries: reported by their own check below
                    dup = []
                if dup:
                    out.append(f"{name}: expected distinct values (a repeated one would run "
                               f"its cells twice), got {lists[name]} with "
                               f"{', '.join(map(str, dup))} repeated")
        Nn = self.N * self.n if ints["N"][1] and ints["n"][1] else None
        for r in lists["ratios"]:
            r, ok = check("ratios", check_positive, r)
            if ok and Nn is not None:
                D = round(r * Nn)
                if D < 1:
                    out.append(f"ratios: {r:g} gives D = round({r:g} * {Nn}) = {D}; expected "
                               f"D >= 1")
                elif D > MAX_D:
                    out.append(f"ratios: {r:g} gives D = round({r:g} * {Nn}) = {D}; expected "
                               f"D <= {MAX_D}")
        for d in lists["ds"]:
            check("ds", check_int, d)
        for s in lists["init_scales"]:
            check("init_scales", check_positive, s)
        for name in ("teachers", "students"):
            for k in lists[name]:
                check(name, check_choice, k, KERNEL_NAMES)
        return out

    def validate(self) -> "SweepConfig":
        """Check every field; raise ``ValueError`` naming each bad one (see :meth:`problems`)
        and what was expected; fills in the default ``max_steps``."""
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))
        if self.max_steps is None:
            self.max_steps = 4 * self.steps
        return self

    @classmethod
    def from_dict(cls, config, source: str = "config") -> "SweepConfig":
        """The configuration stored in a result (``result["config"]``), with an error that
        names a missing or unknown key (``source`` says where it comes from)."""
        if not isinstance(config, dict):
            raise ValueError(f"{source}: expected a dict of SweepConfig fields, got "
                             f"{type(config).__name__}")
        known = {f.name for f in fields(cls)}
        unknown, missing = sorted(set(config) - known), sorted(known - set(config))
        if unknown or missing:
            raise ValueError(f"{source}: expected the keys of SweepConfig, got "
                             + ", ".join(([f"unknown {', '.join(unknown)}"] if unknown else [])
                                         + ([f"missing {', '.join(missing)}"] if missing
                                            else [])))
        return cls(**config).validate()

    def budgets(self) -> List[int]:
        """The fixed budgets ``steps, 2 steps, ..., max_steps``."""
        self.validate()
        out = [self.steps]
        while out[-1] < self.max_steps:
            out.append(2 * out[-1])
        return out


def _batch(cfg: SweepConfig, D: int, d: int, init_scale: float, teacher: str, student: str, seeds):
    probs = [make_problem(cfg.N, cfg.n, D, d, cfg.d_out, kernel=student, teacher=teacher,
                          init_scale=init_scale, seed=int(s)) for s in seeds]
    X = torch.stack([p.X for p, _, _ in probs])
    K = torch.stack([p.K for p, _, _ in probs])
    U = torch.stack([p.U for p, _, _ in probs])
    Y = torch.stack([p.Y for p, _, _ in probs])
    W0 = torch.stack([w for _, _, w in probs])
    return X, K, U, Y, W0


def batched_gd(X, K, U, Y, W0, kernel: str, steps: int, grow: float = STEP_GROW, marks=(), windows=()):
    """Monotone GD on ``W_Q`` for a batch of problems; returns the final losses ``(B,)``,
    ``1/2 ||Y||^2`` per instance, and the losses and PL ratios ``||grad f||^2 / (2 f)`` after each
    step count in ``marks`` (two arrays of shape ``(B, len(marks))``). With ``windows`` (pairs
    ``(a, b)`` of step counts) a fifth value holds the geometric mean of the PL ratio over the
    iterates ``a..b`` of each window, shape ``(B, len(windows))``. ``grow = 1`` gives
    constant-step GD with the halving safeguard only. Shapes: ``X (B, N, n, D)``, ``K (B, N, n, d)``,
    ``U, Y (B, N, n, d_out)``, ``W0 (B, D, d)``."""
    steps = check_int("steps", steps, minimum=1)
    grow = check_positive("grow", grow)
    marks = [check_int("marks", m, minimum=0) for m in marks]
    if any(m > steps for m in marks):
        raise ValueError(f"marks: expected step counts in 0..steps = {steps}, got {marks}")
    B, N, n, D = X.shape
    Xs = X.reshape(B, N * n, D)
    lr = 1.0 / torch.linalg.matrix_norm(Xs, 2) ** 2          # (B,)

    def loss_and_grad(W):
        Q = X @ W.unsqueeze(1)
        r = outputs(Q, K, U, kernel) - Y
        f = 0.5 * (r * r).sum((1, 2, 3))
        J = jacobians(Q, K, U, kernel)
        G = torch.einsum("BNkoe,BNko->BNke", J, r).reshape(B, N * n, -1)
        return f, Xs.transpose(1, 2) @ G

    W = W0.clone()
    f, g = loss_and_grad(W)
    marks = [int(m) for m in marks]
    wanted = set(marks)
    pl = lambda f, g: (g * g).sum((1, 2)) / (2 * f)
    seen = {0: (f.clone(), pl(f, g))} if 0 in wanted else {}
    windows = [(int(a), int(b)) for a, b in windows]
    logs = torch.zeros(B, len(windows), dtype=f.dtype)

    def collect(t, f, g):
        for w, (a, b) in enumerate(windows):
            if a <= t <= b:
                logs[:, w] += torch.log(torch.clamp(pl(f, g), min=1e-300))

    collect(0, f, g)
    for t in range(1, steps + 1):
        W_new = W - lr[:, None, None] * g
        f_new, g_new = loss_and_grad(W_new)
        ok = torch.isfinite(f_new) & (f_new <= f)
        W = torch.where(ok[:, None, None], W_new, W)
        f = torch.where(ok, f_new, f)
        g = torch.where(ok[:, None, None], g_new, g)
        lr = next_step_size(lr, ok, grow)
        if t in wanted:
            seen[t] = (f.clone(), pl(f, g))
        if windows:
            collect(t, f, g)
    empty = torch.zeros(B, 0, dtype=f.dtype)
    at = torch.stack([seen[m][0] for m in marks], 1) if marks else empty
    pl_at = torch.stack([seen[m][1] for m in marks], 1) if marks else empty
    fref = 0.5 * (Y * Y).sum((1, 2, 3))
    if not windows:
        return f, fref, at, pl_at
    sizes = torch.tensor([b - a + 1 for a, b in windows], dtype=f.dtype)
    return f, fref, at, pl_at, torch.exp(logs / sizes)


def settle(X, K, U, Y, W0, kernel: str, steps: int, max_steps: int, grow: float = STEP_GROW,
           f_ref=None):
    """Run :func:`batched_gd`'s monotone GD on every problem of a batch until doubling the
    budget once leaves its label unchanged (an older labelling rule, kept for comparison).

    The label of a run at budget ``t_max`` is :func:`tdlib.separation.classify_curve` of its
    losses and PL ratios up to step ``t_max``. At ``t_max = steps, 2 steps, 4 steps, ...`` each
    run still going is labelled at ``t_max`` and at ``t_max / 2``; when the two labels agree, or
    the run's computed loss is numerically zero, the run stops with that label. This does *not*
    make the label independent of the budget: the label at ``2 t_max`` is never looked at, and
    on random problems many settled labels change there (:func:`certify_runs` and
    :func:`flip_rate` measure how often). Runs whose labels still disagree at ``max_steps`` are
    ``"undecided"``. ``max_steps`` must be ``steps`` times a power of two.

    Returns a dict of per-run lists: ``label``, ``budget`` (the ``t_max`` at which the run
    stopped), ``first`` (its label at ``steps / 2``), and the losses ``f_steps`` after
    ``steps`` iterations and ``f_ref = 1/2 ||Y||^2`` (or the given ``f_ref``)."""
    steps = check_int("steps", steps, minimum=16)
    max_steps = check_int("max_steps", max_steps, minimum=steps)
    ratio = max_steps // steps
    if max_steps % steps or ratio & (ratio - 1):
        raise ValueError(f"max_steps: expected steps ({steps}) times a power of two, got {max_steps}")
    B, N, n, D = X.shape
    fref = (0.5 * (Y * Y).sum((1, 2, 3)) if f_ref is None
            else torch.as_tensor(f_ref, dtype=X.dtype)).numpy()
    F = np.zeros((B, max_steps + 1))
    P = np.zeros((B, max_steps + 1))
    out = {"label": [None] * B, "budget": [0] * B, "first": [None] * B,
           "f_steps": [0.0] * B, "f_ref": fref.tolist()}
    idx = torch.arange(B)                                   # the runs still going
    Xs = X.reshape(B, N * n, D)
    lr = 1.0 / torch.linalg.matrix_norm(Xs, 2) ** 2

    def loss_and_grad(i, W):
        Q = X[i] @ W.unsqueeze(1)
        r = outputs(Q, K[i], U[i], kernel) - Y[i]
        f = 0.5 * (r * r).sum((1, 2, 3))
        J = jacobians(Q, K[i], U[i], kernel)
        G = torch.einsum("BNkoe,BNko->BNke", J, r).reshape(len(i), N * n, -1)
        return f, Xs[i].transpose(1, 2) @ G

    def record(t, f, g):
        F[idx.numpy(), t] = f.numpy()
        P[idx.numpy(), t] = ((g * g).sum((1, 2)) / (2 * f)).numpy()

    W = W0.clone()
    f, g = loss_and_grad(idx, W)
    record(0, f, g)
    t, T = 0, steps
    while len(idx):
        for t in range(t + 1, T + 1):
            W_new = W - lr[:, None, None] * g
            f_new, g_new = loss_and_grad(idx, W_new)
            ok = torch.isfinite(f_new) & (f_new <= f)
            W = torch.where(ok[:, None, None], W_new, W)
            f = torch.where(ok, f_new, f)
            g = torch.where(ok[:, None, None], g_new, g)
            lr = next_step_size(lr, ok, grow)
            record(t, f, g)
        keep = []
        for j, i in enumerate(idx.tolist()):
            now = classify_curve(F[i, :T + 1], P[i, :T + 1], f_ref=fref[i])
            before = classify_curve(F[i, :T // 2 + 1], P[i, :T // 2 + 1], f_ref=fref[i])
            if T == steps:
                out["first"][i], out["f_steps"][i] = before, float(F[i, steps])
            if now == before or now == "converged" or T == max_steps:
                out["label"][i] = now if now == before or now == "converged" else "undecided"
                out["budget"][i] = T
            else:
                keep.append(j)
        keep = torch.tensor(keep, dtype=torch.long)
        idx, W, f, g, lr = idx[keep], W[keep], f[keep], g[keep], lr[keep]
        T *= 2
    return out


LABELS_CERTIFIED = ("zero", "positive")
LABELS_MEASURED = ("zero", "linear", "power law", "stalling")
RUN_LABELS = ("zero", "positive", "linear", "power law", "stalling")
"""The labels of a run. ``zero`` and ``positive`` are certified (proved; ``zero`` can also be
measured, when the computed loss is below the zero level but its enclosure is not);
``linear``, ``power law`` and ``stalling`` are measured at a budget by
:func:`tdlib.separation.classify_curve`."""

CERTIFICATES = ("numerical zero", "thm-gauss-query", "softmax hull floor")

ZERO_TOL = 1e-20
"""The numerical-zero level: a run is *zero (certified)* at step ``t`` when the enclosure
:func:`tdlib.separation.loss_box` proves ``f(W_t) <= ZERO_TOL * 1/2 ||Y||^2``, that is, every
residual is at most ``1e-10`` times the size of the targets."""

LABEL_RULE = (
    "certified positive: softmax student, separation.softmax_floor > 0 (a proved lower bound on "
    "the loss at every W_Q); certified zero: the enclosure separation.loss_box of f(W_t) is at "
    "most zero_tol * 1/2 ||Y||^2 ('numerical zero'), or, at the last budget t_max, gaussian "
    "student, separation.layer_certificate_arrays proves the hypotheses of thm-gauss-query at "
    "W_t ('thm-gauss-query': gradient descent with eta <= 1/L from W_t converges linearly to "
    "zero; the sweep's own growing step is not covered); otherwise measured: "
    "separation.classify_curve at the budget")


def _loss_and_grad(X, K, U, Y, W, kernel):
    B, N, n, D = X.shape
    Q = X @ W.unsqueeze(1)
    r = outputs(Q, K, U, kernel) - Y
    f = 0.5 * (r * r).sum((1, 2, 3))
    J = jacobians(Q, K, U, kernel)
    G = torch.einsum("BNkoe,BNko->BNke", J, r).reshape(B, N * n, -1)
    return f, X.reshape(B, N * n, D).transpose(1, 2) @ G


def _descend(loss_and_grad, state, t0, t1, F, P, grow, marks=(), keep=None):
    """The safeguarded monotone GD of the sweeps, from step ``t0`` to ``t1``, on a batch of runs.

    ``loss_and_grad(W)`` gives the losses ``f (B,)`` and gradients ``grad f (B, D, d)`` at
    ``W (B, D, d)`` (the kernel and the data live in it: :func:`_loss_and_grad` here, the
    autograd one of :func:`tdlib.zoo.loss_and_grad` for the zoo). ``state = (W, f, g, eta)`` is
    the iterate at ``t0`` with its loss, gradient and step sizes ``eta (B,)``. At each step
    ``W - eta grad f`` is taken when its loss is finite and not larger, and ``eta`` grows by
    ``grow``; otherwise ``W`` stays and ``eta`` halves (:func:`tdlib.train.next_step_size`).
    Writes the losses and PL ratios ``||grad f||^2 / 2f`` after step ``t`` into ``F[:, t]`` and
    ``P[:, t]`` (arrays ``(B, >= t1 + 1)``) and a copy of ``W`` at every step in ``marks`` into
    the dict ``keep``; returns the state at ``t1``."""
    W, f, g, lr = state
    for t in range(t0 + 1, t1 + 1):
        W_new = W - lr[:, None, None] * g
        f_new, g_new = loss_and_grad(W_new)
        ok = torch.isfinite(f_new) & (f_new <= f)
        W = torch.where(ok[:, None, None], W_new, W)
        f = torch.where(ok, f_new, f)
        g = torch.where(ok[:, None, None], g_new, g)
        lr = next_step_size(lr, ok, grow)
        F[:, t] = f.numpy()
        P[:, t] = ((g * g).sum((1, 2)) / (2 * f)).numpy()
        if t in marks:
            keep[t] = W.clone()
    return W, f, g, lr


def certify_runs(X, K, U, Y, W0, kernel: str, budgets, audit=None, zero_tol: float = ZERO_TOL,
                 grow: float = STEP_GROW, thm_max_d: int = 4, thm_max_boxes: int = 50_000):
    """Label every run of a batch at the fixed budgets ``budgets`` (increasing step counts; the
    last is ``t_max``), and the runs flagged in ``audit`` also at ``2 t_max``.

    Every run is :func:`batched_gd`'s monotone GD (the step starts at ``1 / ||Xs||_2^2``, grows by
    ``grow`` after a step that does not raise the loss and halves otherwise). A run's label at
    budget ``b`` is, in this order:

    * ``positive`` (certified, ``"softmax hull floor"``): Softmax student and
      :func:`tdlib.separation.softmax_floor` ``> 0`` -- no ``W_Q`` goes below it, at any budget;
    * ``zero`` (certified, ``"numerical zero"``): the enclosure of the exact loss at ``W_b``
      (:func:`tdlib.separation.loss_box`) is at most ``zero_tol * 1/2 ||Y||^2``;
    * ``zero`` (certified, ``"thm-gauss-query"``), only at ``b = t_max`` and after it: Gaussian
      student, ``d_out <= d <= thm_max_d``, ``D >= N n`` and the computed loss below the smallest
      per-token loss at infinity, and :func:`tdlib.separation.layer_certificate_arrays` proves
      every hypothesis of the theorem at ``W_{t_max}``. What is proved: gradient descent with a
      constant step ``eta <= 1/L`` from ``W_{t_max}`` converges linearly to zero loss, and every
      later iterate of this monotone run satisfies the PL inequality with ``mu > 0``; the sweep's
      growing step itself is not covered by the theorem;
    * otherwise measured: :func:`tdlib.separation.classify_curve` of the losses and PL ratios up
      to ``b`` (``linear``, ``power law``, ``stalling``; ``zero`` if only the computed loss is
      below the zero level).

    Shapes: ``X (B, N, n, D)``, ``K (B, N, n, d)``, ``U, Y (B, N, n, d_out)``, ``W0 (B, D, d)``.
    Returns a dict of per-run lists: ``label``, ``kind``, ``certificate`` (None when
    measured), ``budget`` (the first budget at which the run carries its label; ``t_max`` for a
    measured label), ``labels_at`` and ``kinds_at`` (label and kind at every budget),
    ``audit_label`` and ``audit_kind`` (at ``2 t_max``; None outside the audit), ``floor``
    (the proved floor over ``1/2 ||Y||^2``),
    ``start_below`` (Gaussian student: the start is proved to satisfy hypothesis 2 of the
    theorem, ``f(W_0) < min_ik 1/2 ||y_ik||^2``; None for Softmax), ``f_first`` (the computed
    loss after ``budgets[0]`` steps) and ``f_ref = 1/2 ||Y||^2``.
    """
    budgets = [check_int("budget", b, minimum=16) for b in budgets]
    if not budgets or any(a >= b for a, b in zip(budgets, budgets[1:])):
        raise ValueError(f"budgets: expected increasing step counts, got {budgets}")
    check_choice("kernel", kernel, KERNEL_NAMES)
    if X.ndim != 4 or K.ndim != 4 or W0.ndim != 3:
        raise ValueError(f"X, K, W0: expected shapes (B, N, n, D), (B, N, n, d), (B, D, d), "
                         f"got {tuple(X.shape)}, {tuple(K.shape)}, {tuple(W0.shape)}")
    B, N, n, D = X.shape
    d, d_out = K.shape[-1], U.shape[-1]
    if (K.shape[:3] != X.shape[:3] or U.shape[:3] != X.shape[:3] or Y.shape != U.shape
            or tuple(W0.shape) != (B, D, d)):
        raise ValueError(f"K, U, Y, W0: expected shapes (B, N, n, d), (B, N, n, d_out) twice "
                         f"and (B, D, d) for X of shape {tuple(X.shape)}, got "
                         f"{tuple(K.shape)}, {tuple(U.shape)}, {tuple(Y.shape)}, "
                         f"{tuple(W0.shape)}")
    audit = np.zeros(B, dtype=bool) if audit is None else np.asarray(audit, dtype=bool)
    if audit.shape != (B,):
        raise ValueError(f"audit: expected {B} flags, got shape {audit.shape}")
    t_max = budgets[-1]
    fref = (0.5 * (Y * Y).sum((1, 2, 3))).numpy()
    fref_lo = (Box(Y.numpy()).sq().sum(-1).sum(-1).sum(-1) * 0.5).lo
    floor = (separation.softmax_floor(U, Y) if kernel == "softmax" else np.zeros(B))
    c = 2 * math.sqrt(d)
    g_inf = (0.5 * (Y * Y).sum(-1)).reshape(B, -1).min(1).values.numpy()
    start_below = [None] * B
    if kernel == "gaussian":
        f0_hi = separation.loss_box(X, K, U, Y, W0, "gaussian").hi
        g_inf_lo = (Box(Y.numpy()).sq().sum(-1) * 0.5).lo.reshape(B, -1).min(1)
        start_below = [bool(a < b) for a, b in zip(f0_hi, g_inf_lo)]
    T_all = 2 * t_max if audit.any() else t_max
    F = np.full((B, T_all + 1), np.nan)
    P = np.full((B, T_all + 1), np.nan)
    W = W0.clone()
    f, g = _loss_and_grad(X, K, U, Y, W, kernel)
    F[:, 0], P[:, 0] = f.numpy(), ((g * g).sum((1, 2)) / (2 * f)).numpy()
    lr = 1.0 / torch.linalg.matrix_norm(X.reshape(B, N * n, D), 2) ** 2
    keep = {0: W.clone()} if 0 in budgets else {}
    state = _descend(lambda W: _loss_and_grad(X, K, U, Y, W, kernel), (W, f, g, lr), 0, t_max,
                    F, P, grow, set(budgets), keep)
    marks = list(budgets)
    if audit.any():
        a = torch.as_tensor(np.flatnonzero(audit))
        sub = [v[a] for v in state]
        Fa, Pa = F[a.numpy()], P[a.numpy()]
        ka = {}
        _descend(lambda W: _loss_and_grad(X[a], K[a], U[a], Y[a], W, kernel), sub, t_max,
                2 * t_max, Fa, Pa, grow, {2 * t_max}, ka)
        F[a.numpy()], P[a.numpy()] = Fa, Pa
        marks.append(2 * t_max)
    f_hi = {b: separation.loss_box(X, K, U, Y, keep[b], kernel).hi for b in budgets}
    if audit.any():
        f_hi[2 * t_max] = np.full(B, np.inf)
        f_hi[2 * t_max][a.numpy()] = separation.loss_box(X[a], K[a], U[a], Y[a],
                                                         ka[2 * t_max], kernel).hi
    thm = [False] * B
    if kernel == "gaussian" and D >= N * n and d_out <= d <= thm_max_d:
        for i in range(B):
            if F[i, t_max] < g_inf[i] and not f_hi[t_max][i] <= zero_tol * fref_lo[i]:
                cert = separation.layer_certificate_arrays(
                    X[i], K[i], U[i], Y[i], keep[t_max][i], c, max_boxes=thm_max_boxes,
                    max_depth=24)
                thm[i] = bool(cert["ok"])

    def label(i, b):
        if floor[i] > 0:
            return "positive", "certified", "softmax hull floor"
        if f_hi[b][i] <= zero_tol * fref_lo[i]:
            return "zero", "certified", "numerical zero"
        if thm[i] and b >= t_max:
            return "zero", "certified", "thm-gauss-query"
        shape = separation.classify_curve(F[i, :b + 1], P[i, :b + 1], zero_tol=zero_tol,
                                          f_ref=fref[i])
        return ("zero" if shape == "converged" else shape), "measured", None

    out = {k: [] for k in ("label", "kind", "certificate", "budget", "labels_at",
                           "kinds_at", "audit_label", "audit_kind")}
    for i in range(B):
        at = [label(i, b) for b in budgets]
        lab, kind, cert = at[-1]
        first = next(b for b, x in zip(budgets, at) if x == at[-1])
        out["label"].append(lab)
        out["kind"].append(kind)
        out["certificate"].append(cert)
        out["budget"].append(first if kind == "certified" else t_max)
        out["labels_at"].append([x[0] for x in at])
        out["kinds_at"].append([x[1] for x in at])
        late = label(i, 2 * t_max) if audit[i] else (None, None, None)
        out["audit_label"].append(late[0])
        out["audit_kind"].append(late[1])
    out["floor"] = (floor / fref).tolist()
    out["start_below"] = start_below
    out["f_first"] = F[:, budgets[0]].tolist()
    out["f_ref"] = fref.tolist()
    return out


def _problems(cfg: SweepConfig, a: int, b: int, c: int, teacher: str, which=None):
    """The problems of grid cell ``(a, b, c)`` for one teacher (both students see the same);
    ``which`` selects instances by index (default: all)."""
    D = int(round(cfg.ratios[a] * cfg.N * cfg.n))
    seeds = cfg.seed + 1_000_003 * (a * 97 + b * 13 + c) + np.arange(cfg.instances)
    seeds = seeds if which is None else seeds[list(which)]
    return _batch(cfg, D, cfg.ds[b], cfg.init_scales[c], teacher, teacher, seeds)


def _runs(cfg: SweepConfig, a: int, b: int, cells, student: str, which=None):
    """Label the runs of several cells ``(c, teacher)`` of one ``(ratio, d)`` at once (one
    batch: the runs are independent, batching only saves time); one result dict per cell."""
    which = list(range(cfg.instances)) if which is None else list(which)
    parts = [_problems(cfg, a, b, c, teacher, which) for c, teacher in cells]
    X, K, U, Y, W0 = (torch.cat(z) for z in zip(*parts))
    audit = np.array([i < cfg.audit for i in which] * len(cells))
    res = certify_runs(X, K, U, Y, W0, student, cfg.budgets(), audit, cfg.zero_tol,
                       thm_max_d=cfg.thm_max_d, thm_max_boxes=cfg.thm_max_boxes)
    m = len(which)
    return [{k: v[j * m:(j + 1) * m] for k, v in res.items()} for j in range(len(cells))]


PER_RUN = ("label", "kind", "certificate", "budget", "labels_at", "kinds_at", "audit_label",
           "audit_kind", "floor", "start_below")
"""The per-run fields of a stored sweep (arrays ``[ratio, d, init_scale, instance]``)."""


def rerun_cell(result: dict, teacher: str, student: str, ratio: float, d: int, init_scale: float,
               which=None) -> dict:
    """Recompute runs of one cell of a stored sweep from its configuration and seeds: all of
    them (default) or the instances listed in ``which``. Returns, for the recomputed runs, the
    per-run fields of :func:`certify_runs` under the names ``run_<field>`` (``run_label``,
    ``run_kind``, ...) and the count of every final label."""
    cfg = SweepConfig.from_dict(result["config"], "result['config']")
    for name, value, axis in (("ratio", ratio, cfg.ratios), ("d", d, cfg.ds),
                              ("init_scale", init_scale, cfg.init_scales)):
        if value not in axis:
            raise ValueError(f"{name}: expected one of {axis} (the stored grid), got {value}")
    if which is not None:
        which = [check_int("instance", i, minimum=0) for i in which]
        if not which or max(which) >= cfg.instances:
            raise ValueError(f"which: expected instance numbers in 0..{cfg.instances - 1}, "
                             f"got {which}")
    c = cfg.init_scales.index(init_scale)
    r = _runs(cfg, cfg.ratios.index(ratio), cfg.ds.index(d), [(c, teacher)], student, which)[0]
    return {**{k: r["label"].count(k) for k in RUN_LABELS},
            **{f"run_{k}": r[k] for k in PER_RUN}}


def _cell_runs(config: dict, a: int, b: int, student: str) -> list:
    """One task of :func:`sweep`: the runs of every cell ``(init_scale, teacher)`` of the
    grid point ``(ratios[a], ds[b])`` with one student, as one batch (see :func:`_runs`);
    ``config`` is a :class:`SweepConfig` as a dict. A list of per-cell result dicts."""
    cfg = SweepConfig.from_dict(config)
    cells = [(c, t) for c in range(len(cfg.init_scales)) for t in cfg.teachers]
    return _runs(cfg, a, b, cells, student)


def _sweep_tasks(cfg: SweepConfig) -> list:
    """The tasks of :func:`sweep` for :func:`tdlib.sweep.run`: one per ``(ratio, d, student)``,
    in the order of the grid."""
    config = asdict(cfg.validate())
    return [{"config": config, "a": a, "b": b, "student": s}
            for a in range(len(cfg.ratios)) for b in range(len(cfg.ds)) for s in cfg.students]


def _task_memory(cfg: SweepConfig) -> float:
    """Bytes one task of :func:`sweep` needs, roughly: a worker process with torch (about
    0.4 GiB) plus the loss and PL-ratio records of its batch, ``2 * B * (2 t_max + 1)``
    float64 numbers kept twice, and its tensors."""
    cfg.validate()
    B = cfg.instances * len(cfg.init_scales) * len(cfg.teachers)
    D = max(int(round(r * cfg.N * cfg.n)) for r in cfg.ratios)
    tensors = B * cfg.N * cfg.n * (D + max(cfg.ds) * (cfg.d_out + 2) + 4 * cfg.d_out) * 8 * 8
    return 0.4 * 2**30 + 4 * B * (2 * cfg.max_steps + 1) * 8 + tensors


def sweep(cfg: SweepConfig, progress: bool = False, workers: Optional[int] = None,
          scheduler: Optional[str] = None, checkpoint=None) -> dict:
    """Run the whole grid; returns a dict with the configuration, provenance and, for every
    (teacher, student), arrays ``[ratio, d, init_scale]``: the count of every final label
    (``labels``), the old threshold count ``success`` (final loss after ``steps`` iterations at
    most ``tol * 1/2 ||Y||^2``), the number of runs whose label at the first budget differs
    from the final one; and per run (``[ratio, d, init_scale, instance]``) every field of
    :data:`PER_RUN` under the name ``run_<field>``.

    The tasks (:func:`_sweep_tasks`, one batch per ``(ratio, d, student)``) go through
    :func:`tdlib.sweep.run`: in this process (the default here), on ``workers`` local
    processes or on the Dask cluster at ``scheduler``; with ``checkpoint`` (a folder)
    finished tasks are kept there and a rerun resumes. The result is the same in every mode.
    ``progress`` shows a progress bar."""
    from . import sweep as runner

    cfg.validate()
    start = time.perf_counter()
    shape = (len(cfg.ratios), len(cfg.ds), len(cfg.init_scales))
    pairs = [(t, s) for t in cfg.teachers for s in cfg.students]
    acc = {p: {"success": np.zeros(shape, dtype=int),
               "labels": {k: np.zeros(shape, dtype=int) for k in RUN_LABELS},
               "first_label_differs": np.zeros(shape, dtype=int),
               **{f"run_{k}": np.empty(shape + (cfg.instances,), dtype=object)
                  for k in PER_RUN}} for p in pairs}
    cells = [(c, t) for c in range(shape[2]) for t in cfg.teachers]
    tasks = _sweep_tasks(cfg)
    info: dict = {}
    if workers is None and scheduler is None:
        workers = 1
    done = runner.run(_cell_runs, tasks, workers=workers, scheduler=scheduler,
                      checkpoint=checkpoint, quiet=not progress, info=info,
                      memory_per_task=_task_memory(cfg), desc="phase diagram")
    for task, runs in zip(tasks, done):
        a, b, student = task["a"], task["b"], task["student"]
        for (c, teacher), r in zip(cells, runs):
            z = acc[(teacher, student)]
            rel = np.asarray(r["f_first"]) / np.asarray(r["f_ref"])
            z["success"][a, b, c] = int((rel <= cfg.tol).sum())
            for k in RUN_LABELS:
                z["labels"][k][a, b, c] = r["label"].count(k)
            z["first_label_differs"][a, b, c] = sum(
                x[0] != y for x, y in zip(r["labels_at"], r["label"]))
            for k in PER_RUN:
                for i, v in enumerate(r[k]):
                    z[f"run_{k}"][a, b, c, i] = v
    tolist = lambda z: {k: tolist(v) if isinstance(v, dict) else v.tolist() for k, v in z.items()}
    return {
        "config": asdict(cfg),
        "D_values": [int(round(r * cfg.N * cfg.n)) for r in cfg.ratios],
        "results": {f"{t}->{s}": tolist(z) for (t, s), z in acc.items()},
        "provenance": book.provenance(wall_seconds=time.perf_counter() - start,
                                      cpu_seconds=info["cpu_seconds"],
                                      workers=info["workers"], mode=info["mode"],
                                      tasks=info["tasks"], resumed=info["resumed"],
                                      budgets=cfg.budgets(),
                                      success_rule="final loss after steps <= tol * 1/2 ||Y||^2",
                                      label_rule=LABEL_RULE),
    }


def check_result(result) -> List[str]:
    """The problems of a stored sweep (what :func:`sweep` returns), each naming its field: the
    keys ``config``, ``D_values``, ``results`` and ``provenance``; a configuration with exactly
    the fields of :class:`SweepConfig`, each sound; one entry per (teacher, student) pair whose
    counts (``success``, ``first_label_differs``, ``labels``) are integers in
    ``0..instances`` of the grid's shape, the label counts of a cell adding up to
    ``instances``, and per-run arrays of shape ``[ratio, d, init_scale, instance]``. An empty
    list when the result is sound (``tdlib.book.stored`` runs this on every load)."""
    if not isinstance(result, dict):
        return [f"expected a JSON object, got {type(result).__name__}"]
    missing = [k for k in ("config", "D_values", "results", "provenance") if k not in result]
    if missing:
        return [f"field {k!r}: missing" for k in missing]
    try:
        cfg = SweepConfig.from_dict(result["config"], "field 'config'")
    except (TypeError, ValueError) as err:
        return [str(err)]
    shape = (len(cfg.ratios), len(cfg.ds), len(cfg.init_scales))
    inst, problems = cfg.instances, []
    D = [int(round(r * cfg.N * cfg.n)) for r in cfg.ratios]
    if result["D_values"] != D:
        problems.append(f"field 'D_values': expected {D} (round(ratio * N n)), got "
                        f"{result['D_values']!r:.80}")
    pairs = {f"{t}->{s}" for t in cfg.teachers for s in cfg.students}
    res = result["results"]
    if not isinstance(res, dict) or set(res) != pairs:
        got = sorted(res) if isinstance(res, dict) else type(res).__name__
        return problems + [f"field 'results': expected the pairs {sorted(pairs)}, got {got}"]
    for key, z in res.items():
        where = f"results[{key!r}]"
        if not isinstance(z, dict):
            problems.append(f"field {where}: expected a dict, got {type(z).__name__}")
            continue
        labels = z.get("labels")
        if not isinstance(labels, dict) or set(labels) != set(RUN_LABELS):
            problems.append(f"field {where}['labels']: expected counts for {list(RUN_LABELS)}")
            labels = {}
        counts = {"['success']": z.get("success"),
                  "['first_label_differs']": z.get("first_label_differs"),
                  **{f"['labels'][{k!r}]": v for k, v in labels.items()}}
        good = {}
        for name, v in counts.items():
            field_ = f"field {where}{name}"
            if v is None:
                problems.append(f"{field_}: missing")
                continue
            try:
                a = np.asarray(v, dtype=float)
            except (TypeError, ValueError):
                problems.append(f"{field_}: expected counts, got {v!r:.60}")
                continue
            if a.shape != shape:
                problems.append(f"{field_}: expected shape {shape} (ratios, ds, init_scales), "
                                f"got {a.shape}")
            elif not (np.isfinite(a).all() and (a == np.round(a)).all()):
                problems.append(f"{field_}: expected whole counts, got {a.ravel()[:4]}...")
            elif a.min() < 0 or a.max() > inst:
                bad = a.max() if a.max() > inst else a.min()
                problems.append(f"{field_}: expected counts in 0..instances = {inst}, got "
                                f"{bad:g}")
            else:
                good[name] = a
        label_counts = [good.get(f"['labels'][{k!r}]") for k in labels]
        if labels and all(c is not None for c in label_counts):
            total = sum(label_counts)
            if (total != inst).any():
                problems.append(f"field {where}['labels']: the counts of a cell add up to "
                                f"{total[total != inst][0]:g}, expected instances = {inst}")
        for k in PER_RUN:
            v = z.get(f"run_{k}")
            if v is None:
                problems.append(f"field {where}['run_{k}']: missing")
                continue
            a = np.asarray(v, dtype=object)
            if a.shape[:4] != shape + (inst,):
                problems.append(f"field {where}['run_{k}']: expected shape "
                                f"{shape + (inst,)} (ratios, ds, init_scales, instances), got "
                                f"{a.shape[:4]}")
    return problems


def _pair(result: dict, teacher: str, student: str) -> dict:
    key = f"{teacher}->{student}"
    if key not in result["results"]:
        raise ValueError(f"no results for teacher {teacher!r} and student {student!r}; "
                         f"available: {sorted(result['results'])}")
    return result["results"][key]


def success_fraction(result: dict, teacher: str, student: str) -> np.ndarray:
    """Fraction of runs whose loss after ``steps`` iterations is at most ``tol * 1/2 ||Y||^2``
    (the old threshold count), array ``[ratio, d, init_scale]``."""
    return np.asarray(_pair(result, teacher, student)["success"]) / result["config"]["instances"]


def run_array(result: dict, teacher: str, student: str, field: str) -> np.ndarray:
    """One per-run field (see :data:`PER_RUN`) as an object array
    ``[ratio, d, init_scale, instance]`` (``labels_at`` gains a last axis: the budgets)."""
    if field not in PER_RUN:
        raise ValueError(f"field: expected one of {PER_RUN}, got {field!r}")
    r = _pair(result, teacher, student)
    if f"run_{field}" not in r:
        raise ValueError("result: this sweep stores no certified labels (it predates them); "
                         "rerun it with python -m tdlib.phase")
    return np.asarray(r[f"run_{field}"], dtype=object)


def _check_labels(labels):
    for k in labels:
        if k not in RUN_LABELS:
            raise ValueError(f"labels: expected names from {RUN_LABELS}, got {k!r}")


def label_fraction(result: dict, teacher: str, student: str, labels=("zero", "linear"),
                   kind: Optional[str] = None, budget: Optional[int] = None) -> np.ndarray:
    """Fraction of runs whose label is one of ``labels``, array ``[ratio, d, init_scale]``:
    the final label (at the last budget ``t_max``), or with ``budget`` the label at that fixed
    budget (one of the sweep's budgets, or ``2 t_max``: then over the audited runs only,
    NaN in a cell without them). ``kind`` ("certified" or "measured") counts only labels of
    that kind (final labels only)."""
    _check_labels(labels)
    if kind not in (None, "certified", "measured"):
        raise ValueError(f"kind: expected 'certified', 'measured' or None, got {kind!r}")
    if budget is None:
        lab = run_array(result, teacher, student, "label")
        hit = np.isin(lab, list(labels))
        if kind is not None:
            hit &= run_array(result, teacher, student, "kind") == kind
        return hit.mean(-1)
    if kind is not None:
        raise ValueError("kind: only for the final labels (budget=None)")
    budgets = budgets_of(result)
    if budget == 2 * budgets[-1]:
        lab = run_array(result, teacher, student, "audit_label")
        seen = lab != None  # noqa: E711 (an object array)
        hit = np.isin(lab, list(labels)) & seen
        with np.errstate(invalid="ignore"):
            return hit.sum(-1) / np.where(seen.sum(-1) > 0, seen.sum(-1), np.nan)
    if budget not in budgets:
        raise ValueError(f"budget: expected one of {budgets} or {2 * budgets[-1]}, got {budget}")
    lab = run_array(result, teacher, student, "labels_at")[..., budgets.index(budget)]
    return np.isin(lab, list(labels)).mean(-1)


def budgets_of(result: dict) -> List[int]:
    """The fixed budgets of a stored sweep."""
    return SweepConfig.from_dict(result["config"], "result['config']").budgets()


def flip_rate(result: dict, start: int, pairs=None) -> dict:
    """How firm the measured labels at budget ``start`` are: among the runs whose label at
    ``start`` is measured, the fraction whose label at ``2 start`` differs. ``start = t_max``
    uses the audited runs (continued to ``2 t_max``). Returns ``{"runs", "flips", "to_zero",
    "rate"}`` summed over ``pairs`` (keys ``"teacher->student"``, default all); ``to_zero``
    counts the flips to ``zero``."""
    budgets = budgets_of(result)
    if start not in budgets:
        raise ValueError(f"start: expected one of {budgets}, got {start}")
    j = budgets.index(start)
    if start != budgets[-1] and budgets[j + 1] != 2 * start:
        raise ValueError(f"start: the next budget after {start} is not {2 * start}")
    runs = flips = to_zero = 0
    for key in (pairs or result["results"]):
        t, s = key.split("->")
        at = run_array(result, t, s, "labels_at").reshape(-1, len(budgets))
        kinds = run_array(result, t, s, "kinds_at").reshape(-1, len(budgets))
        before, use = at[:, j], kinds[:, j] == "measured"
        if start == budgets[-1]:
            after = run_array(result, t, s, "audit_label").ravel()
            use &= after != None  # noqa: E711 (an object array)
        else:
            after = at[:, j + 1]
        changed = use & (before != after)
        runs += int(use.sum())
        flips += int(changed.sum())
        to_zero += int((changed & (after == "zero")).sum())
    return {"runs": runs, "flips": flips, "to_zero": to_zero,
            "rate": flips / runs if runs else math.nan}


REGIONS = {
    "in": "D >= N n and d >= n (the theorem's dimension conditions can hold)",
    "coupled": "D < N n (queries coupled through X)",
    "d1": "D >= N n and d = 1 < d_out (no full-rank Gaussian Jacobian)",
}


def region_masks(result: dict) -> dict:
    """Boolean masks ``[ratio, d]`` of the regions named in :data:`REGIONS`."""
    cfg = result["config"]
    r = np.asarray(cfg["ratios"], dtype=float)[:, None]
    d = np.asarray(cfg["ds"])[None, :]
    return {"in": (r >= 1) & (d >= cfg["n"]), "coupled": (r < 1) & (d > 0),
            "d1": (r >= 1) & (d == 1)}


SUMMARY_KEYS = ("zero_c", "pos_c", "zero_m", "lin", "power", "stall")
"""Columns of :func:`summary`: certified zero, certified positive, measured zero, linear, power
law, stalling (the last four measured)."""


def summary(result: dict, init_scale: float = 1.0, budget: Optional[int] = None) -> dict:
    """Fractions of runs over each region of :data:`REGIONS` at one initialization scale, for
    every (teacher, student), keys ``(teacher, student, region)`` -> :data:`SUMMARY_KEYS`
    (they add up to one). With ``budget`` (one of the sweep's budgets) the labels at that
    budget, with ``zero_c``/``pos_c`` the runs certified by then. A region with no cell of the
    grid gives NaN."""
    cfg = result["config"]
    if init_scale not in cfg["init_scales"]:
        raise ValueError(f"init_scale: expected one of {cfg['init_scales']}, got {init_scale}")
    c = cfg["init_scales"].index(init_scale)
    budgets = budgets_of(result)
    b = budgets[-1] if budget is None else budget
    if b not in budgets:
        raise ValueError(f"budget: expected one of {budgets}, got {b}")
    out = {}
    for key in result["results"]:
        t, s = key.split("->")
        lab = run_array(result, t, s, "labels_at")[..., budgets.index(b)]
        meas = run_array(result, t, s, "kinds_at")[..., budgets.index(b)] == "measured"
        fr = {"zero_c": (lab == "zero") & ~meas, "pos_c": (lab == "positive") & ~meas,
              "zero_m": (lab == "zero") & meas, "lin": lab == "linear",
              "power": lab == "power law", "stall": lab == "stalling"}
        for name, mask in region_masks(result).items():
            out[(t, s, name)] = {k: float(v[:, :, c][mask].mean()) if mask.any() else math.nan
                                 for k, v in fr.items()}
    return out


def summary_table(table: dict) -> str:
    """:func:`summary` as lines of at most 72 characters."""
    lines = ["targets->student  region  " + " ".join(f"{k:>6s}" for k in SUMMARY_KEYS)]
    for (t, s, name), v in table.items():
        lines.append(f"{t[:5]:>7s}->{s[:5]:<8s} {name:7s} "
                     + " ".join(f"{v[k]:6.2f}" for k in SUMMARY_KEYS))
    return "\n".join(lines)


def plot(result: dict, init_scale: Optional[float] = None, axes=None,
         labels: tuple = ("zero", "linear"), what: Optional[str] = None):
    """Heat maps against ``D/(N n)`` (columns) and ``d`` (rows), one panel per (teacher,
    student), at one initialization scale (default: the middle one): the fraction of runs whose
    final label is one of ``labels`` (colour), written in each cell as ``c + m``: the certified
    part and the measured part (``what`` names the fraction on the colour bar)."""
    import matplotlib.pyplot as plt

    from .plotting import SMALL, WIDTH

    cfg = result["config"]
    scales = cfg["init_scales"]
    s = scales[len(scales) // 2] if init_scale is None else init_scale
    if s not in scales:
        raise ValueError(f"init_scale: expected one of {scales}, got {s}")
    c = scales.index(s)
    pairs = [(t, st) for t in cfg["teachers"] for st in cfg["students"]]
    if axes is None:
        ncol = len(cfg["students"])
        nrow = len(cfg["teachers"])
        fig, axes = plt.subplots(nrow, ncol, figsize=(WIDTH, 2.9 * nrow + 0.8), squeeze=False,
                                 layout="constrained")
        axes = axes.ravel()
    for ax, (t, st) in zip(axes, pairs):
        Fc = label_fraction(result, t, st, labels, kind="certified")[:, :, c].T
        Fm = label_fraction(result, t, st, labels, kind="measured")[:, :, c].T
        F = Fc + Fm
        im = ax.imshow(F, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
        ax.grid(False)
        ax.set_xticks(range(len(cfg["ratios"])), [f"{r:g}" for r in cfg["ratios"]])
        ax.set_yticks(range(len(cfg["ds"])), [str(d) for d in cfg["ds"]])
        ax.set_xlabel("$D/(Nn)$")
        ax.set_ylabel("head dimension $d$")
        ax.text(0.0, 1.03, f"{t} targets, {st} student", transform=ax.transAxes,
                fontsize=SMALL)
        for i in range(F.shape[0]):
            for j in range(F.shape[1]):
                short = lambda x: f"{x:.2f}".lstrip("0") if x < 1 else "1"
                ax.text(j, i, f"{short(Fc[i, j])}\n+{short(Fm[i, j])}", ha="center", va="center",
                        fontsize=SMALL - 2, linespacing=0.9,
                        color="white" if F[i, j] < 0.6 else "black")
    what = what or "fraction " + " or ".join(labels)
    plt.colorbar(im, ax=list(axes), shrink=0.6, orientation="horizontal", aspect=40,
                 label=what + " (in each cell: certified, + measured)")
    return axes


def main(argv=None) -> int:
    """The command line ``python -m tdlib.phase --out FOLDER ...``; returns the exit status.
    The runs go through :func:`tdlib.sweep.run`: by default on one local worker process per
    core; ``--serial`` in this process, ``--scheduler tcp://HOST:PORT`` on a Dask cluster.
    Finished tasks are kept in ``OUT/.sweep-parts`` (or ``--checkpoint``) until
    ``results.json`` is written: the same command run again after a crash resumes."""
    from . import sweep as runner

    p = argparse.ArgumentParser(prog="python -m tdlib.phase", description=__doc__.split("\n")[0])
    d = SweepConfig()
    p.add_argument("--out", required=True, help="folder for results.json")
    p.add_argument("--ratios", type=float, nargs="+", default=d.ratios, help="values of D/(N n)")
    p.add_argument("--ds", type=int, nargs="+", default=d.ds, help="head dimensions d")
    p.add_argument("--init-scales", type=float, nargs="+", default=d.init_scales)
    p.add_argument("--teachers", nargs="+", default=d.teachers)
    p.add_argument("--students", nargs="+", default=d.students)
    for name in ("N", "n", "d_out", "instances", "steps", "seed", "audit"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    p.add_argument("--max-steps", type=int, default=None,
                   help="the last fixed budget t_max (default 4 * steps); the budgets are "
                        "steps, 2 steps, ..., t_max, and the audited runs also go to 2 t_max")
    p.add_argument("--tol", type=float, default=d.tol)
    p.add_argument("--zero-tol", type=float, default=d.zero_tol)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    runner.add_arguments(p)
    args = p.parse_args(argv)
    cfg = SweepConfig(ratios=args.ratios, ds=args.ds, init_scales=args.init_scales,
                      teachers=args.teachers, students=args.students, N=args.N, n=args.n,
                      d_out=args.d_out, instances=args.instances, steps=args.steps,
                      max_steps=args.max_steps, tol=args.tol, seed=args.seed, audit=args.audit,
                      zero_tol=args.zero_tol)
    path, where = runner.start(p, args, cfg.validate)
    res = sweep(cfg, progress=not args.quiet, **where)
    res["provenance"]["command"] = runner.command("python -m tdlib.phase", argv)
    path = runner.save(path, res, where)
    prov = res["provenance"]
    print(f"wrote {path} in {prov['wall_seconds']:.0f} s ({prov.get('mode')}, "
          f"{prov.get('workers')} workers, {prov.get('resumed')} of {prov.get('tasks')} tasks "
          f"resumed)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    # the tasks must be found by name (tdlib.phase.cell_runs), not as __main__.cell_runs
    from tdlib.phase import main as _main

    sys.exit(_main())
