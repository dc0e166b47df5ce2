"""For the chapter *Gaussian attention and query-only training*: how often query-only gradient
descent reaches zero loss, as a phase diagram over random problems.

For every cell of a grid (ratio ``D / (N n)``, head dimension ``d``, initialization scale) and
every pair (teacher kernel, student kernel), ``instances`` random problems from
:func:`tdlib.query.make_problem` are trained by full-batch GD on ``W_Q`` alone. Every run gets a
*label* from :func:`tdlib.separation.classify_curve`: ``converged`` (numerically zero),
``linear`` (the PL ratio is not decaying), ``power law`` (sublinear, still falling towards zero)
or ``stalling`` (the decrease dies out at a positive loss). A label read at one fixed budget
depends on that budget, so :func:`settle` doubles each run's budget (``steps``, ``2 steps``,
... up to ``max_steps``) until its labels at ``T/2`` and ``T`` agree; runs that never settle are
counted as ``undecided``. For comparison the sweep also records the label at ``steps / 2`` and
the old threshold count: final loss after ``steps`` iterations at most ``tol`` times
``1/2 ||Y||^2`` (the loss of the zero output).

Step size: each instance starts with ``eta = 1 / sigma_max(Xs)^2``; at every iteration a step
that would raise the loss is not taken and ``eta`` is halved (the iteration is spent), a step that
lowers it is taken and ``eta`` grows by the factor ``grow`` (1.1). Every run is therefore monotone
gradient descent with a safeguarded step; :func:`tdlib.query.run` with ``adaptive=True`` follows
the same rule. Constant-step GD can be much slower (on a Softmax plateau the growing step makes
progress that a fixed step does not).

Command line (results and provenance go to ``OUT/results.json``)::

    python -m tdlib.phase --out book/data/phase-diagram --instances 16 --steps 2000 \
        --max-steps 16000
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from . import book
from .attention import KERNEL_NAMES
from .checks import check_choice, check_int, check_positive
from .query import jacobians, make_problem, outputs
from .separation import LABELS, classify_curve
from .train import STEP_GROW, next_step_size


LABEL_RULE = ("tdlib.separation.classify_curve at budgets T = steps, 2 steps, ... <= max_steps; "
              "a run stops when its labels at T/2 and T agree (or it has converged); "
              "'undecided' if they still differ at max_steps")

MAX_D = 4096
"""The largest embedding dimension a sweep accepts (memory grows with instances * N n D)."""


@dataclass
class SweepConfig:
    """The grid and the training budget of a sweep (all lists are axes of the grid)."""

    ratios: List[float] = field(default_factory=lambda: [0.5, 1.0, 1.5, 2.0, 3.0])
    ds: List[int] = field(default_factory=lambda: [1, 2, 4, 8])
    init_scales: List[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    teachers: List[str] = field(default_factory=lambda: ["softmax", "gaussian"])
    students: List[str] = field(default_factory=lambda: ["softmax", "gaussian"])
    N: int = 3
    n: int = 4
    d_out: int = 2
    instances: int = 16
    steps: int = 2000
    max_steps: Optional[int] = None   # default 8 * steps
    tol: float = 1e-4
    seed: int = 0

    def validate(self) -> "SweepConfig":
        """Check every field; raise ``ValueError`` naming the bad one and what was expected."""
        for name in ("N", "n", "d_out", "instances", "steps"):
            check_int(name, getattr(self, name))
        check_int("seed", self.seed, minimum=0)
        check_int("steps", self.steps, minimum=16)
        if self.max_steps is None:
            self.max_steps = 8 * self.steps
        check_int("max_steps", self.max_steps, minimum=self.steps)
        k = self.max_steps // self.steps
        if self.max_steps % self.steps or k & (k - 1):
            raise ValueError(f"max_steps: expected steps ({self.steps}) times a power of two, "
                             f"got {self.max_steps}")
        check_positive("tol", self.tol)
        if not self.tol < 1:
            raise ValueError(f"tol: expected a number in (0, 1), got {self.tol}")
        for name in ("ratios", "ds", "init_scales", "teachers", "students"):
            if not list(getattr(self, name)):
                raise ValueError(f"{name}: expected a non-empty list, got {getattr(self, name)!r}")
        for r in self.ratios:
            check_positive("ratios (D/(N n))", r)
            if round(r * self.N * self.n) < 1:
                raise ValueError(f"ratios: {r} gives D = round({r} * {self.N * self.n}) < 1")
            if round(r * self.N * self.n) > MAX_D:
                raise ValueError(f"ratios: {r:g} gives D = round({r:g} * {self.N * self.n}) = "
                                 f"{round(r * self.N * self.n)}; expected D <= {MAX_D}")
        for d in self.ds:
            check_int("head dimension d", d)
        for s in self.init_scales:
            check_positive("init scale", s)
        for k in list(self.teachers) + list(self.students):
            check_choice("kernel", k, KERNEL_NAMES)
        return self


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
    """Run :func:`batched_gd`'s monotone GD on every problem of a batch until its label no longer
    depends on the budget.

    The label of a run at budget ``T`` is :func:`tdlib.separation.classify_curve` of its losses
    and PL ratios up to step ``T``. At ``T = steps, 2 steps, 4 steps, ...`` each run still going
    is labelled at ``T`` and at ``T/2``; when the two labels agree, or the run has converged
    (its loss is numerically zero and stays so, since every step is monotone), the run stops
    with that label: doubling its budget did not change it. Runs whose labels still disagree at
    ``max_steps`` are ``"undecided"``. ``max_steps`` must be ``steps`` times a power of two.

    Returns a dict of per-run lists: ``label``, ``budget`` (the ``T`` at which the run stopped),
    ``first`` (its label at ``steps / 2``, what a single fixed budget would have said), and the
    losses ``f_steps`` after ``steps`` iterations and ``f_ref = 1/2 ||Y||^2`` (or the given
    ``f_ref``) for the threshold count."""
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


RUN_LABELS = LABELS + ("undecided",)


def _problems(cfg: SweepConfig, a: int, b: int, c: int, teacher: str, which=None):
    """The problems of grid cell ``(a, b, c)`` for one teacher (both students see the same);
    ``which`` selects instances by index (default: all)."""
    D = int(round(cfg.ratios[a] * cfg.N * cfg.n))
    seeds = cfg.seed + 1_000_003 * (a * 97 + b * 13 + c) + np.arange(cfg.instances)
    seeds = seeds if which is None else seeds[list(which)]
    return _batch(cfg, D, cfg.ds[b], cfg.init_scales[c], teacher, teacher, seeds)


def _runs(cfg: SweepConfig, a: int, b: int, cells, student: str, which=None):
    """Settle the runs of several cells ``(c, teacher)`` of one ``(ratio, d)`` at once (one
    batch: the runs are independent, batching only saves time); one result dict per cell."""
    parts = [_problems(cfg, a, b, c, teacher, which) for c, teacher in cells]
    X, K, U, Y, W0 = (torch.cat(z) for z in zip(*parts))
    res = settle(X, K, U, Y, W0, student, cfg.steps, cfg.max_steps)
    m = len(parts[0][0])
    return [{k: v[j * m:(j + 1) * m] for k, v in res.items()} for j in range(len(cells))]


def rerun_cell(result: dict, teacher: str, student: str, ratio: float, d: int, init_scale: float,
               which=None) -> dict:
    """Recompute runs of one cell of a stored sweep from its configuration and seeds: all of
    them (default) or the instances listed in ``which``. Returns the success count, the count
    of every label, and the label and budget of every recomputed run."""
    cfg = SweepConfig(**result["config"]).validate()
    for name, value, axis in (("ratio", ratio, cfg.ratios), ("d", d, cfg.ds), ("init_scale", init_scale, cfg.init_scales)):
        if value not in axis:
            raise ValueError(f"{name}: expected one of {axis} (the stored grid), got {value}")
    if which is not None:
        which = [check_int("instance", i, minimum=0) for i in which]
        if not which or max(which) >= cfg.instances:
            raise ValueError(f"which: expected instance numbers in 0..{cfg.instances - 1}, "
                             f"got {which}")
    c = cfg.init_scales.index(init_scale)
    r = _runs(cfg, cfg.ratios.index(ratio), cfg.ds.index(d), [(c, teacher)], student, which)[0]
    success = sum(f <= cfg.tol * fr for f, fr in zip(r["f_steps"], r["f_ref"]))
    return {"success": int(success), **{k: r["label"].count(k) for k in RUN_LABELS},
            "run_labels": r["label"], "run_budgets": r["budget"]}


def sweep(cfg: SweepConfig, progress: bool = False) -> dict:
    """Run the whole grid; returns a dict with the configuration, provenance and, for every
    (teacher, student), arrays ``[ratio, d, init_scale]``: the count of every settled label
    (:func:`settle`), the count of runs whose label at ``steps / 2`` differs from the settled
    one, the median budget, and the old threshold count (final loss after ``steps`` iterations
    at most ``tol * 1/2 ||Y||^2``) with the median final relative loss; and per run
    (``[ratio, d, init_scale, instance]``) its label and budget."""
    cfg.validate()
    start = time.perf_counter()
    shape = (len(cfg.ratios), len(cfg.ds), len(cfg.init_scales))
    pairs = [(t, s) for t in cfg.teachers for s in cfg.students]
    acc = {p: {"success": np.zeros(shape, dtype=int), "median_rel_loss": np.zeros(shape),
               "labels": {k: np.zeros(shape, dtype=int) for k in RUN_LABELS},
               "first_label_differs": np.zeros(shape, dtype=int),
               "median_budget": np.zeros(shape),
               "run_labels": np.empty(shape + (cfg.instances,), dtype=object),
               "run_budgets": np.zeros(shape + (cfg.instances,), dtype=int)} for p in pairs}
    cells = [(c, t) for c in range(shape[2]) for t in cfg.teachers]
    for a, ratio in enumerate(cfg.ratios):
        for b, d in enumerate(cfg.ds):
            for student in cfg.students:
                for (c, teacher), r in zip(cells, _runs(cfg, a, b, cells, student)):
                    z = acc[(teacher, student)]
                    rel = np.asarray(r["f_steps"]) / np.asarray(r["f_ref"])
                    z["success"][a, b, c] = int((rel <= cfg.tol).sum())
                    z["median_rel_loss"][a, b, c] = float(np.median(rel))
                    for k in RUN_LABELS:
                        z["labels"][k][a, b, c] = r["label"].count(k)
                    z["first_label_differs"][a, b, c] = sum(
                        x != y for x, y in zip(r["first"], r["label"]))
                    z["median_budget"][a, b, c] = float(np.median(r["budget"]))
                    z["run_labels"][a, b, c] = r["label"]
                    z["run_budgets"][a, b, c] = r["budget"]
                if progress:
                    print(f"D/(Nn)={ratio:g} d={d} student={student} "
                          f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    tolist = lambda z: {k: tolist(v) if isinstance(v, dict) else v.tolist() for k, v in z.items()}
    return {
        "config": asdict(cfg),
        "D_values": [int(round(r * cfg.N * cfg.n)) for r in cfg.ratios],
        "results": {f"{t}->{s}": tolist(z) for (t, s), z in acc.items()},
        "provenance": book.provenance(wall_seconds=time.perf_counter() - start,
                                      success_rule="final loss after steps <= tol * 1/2 ||Y||^2",
                                      label_rule=LABEL_RULE),
    }


def success_fraction(result: dict, teacher: str, student: str) -> np.ndarray:
    """Fraction of successful runs, array ``[ratio, d, init_scale]``."""
    key = f"{teacher}->{student}"
    if key not in result["results"]:
        raise ValueError(f"no results for teacher {teacher!r} and student {student!r}; "
                         f"available: {sorted(result['results'])}")
    return np.asarray(result["results"][key]["success"]) / result["config"]["instances"]


def label_fraction(result: dict, teacher: str, student: str, labels=("converged", "linear")) -> np.ndarray:
    """Fraction of runs whose label is one of ``labels``, array ``[ratio, d, init_scale]``."""
    key = f"{teacher}->{student}"
    if key not in result["results"]:
        raise ValueError(f"no results for teacher {teacher!r} and student {student!r}; "
                         f"available: {sorted(result['results'])}")
    stored = result["results"][key].get("labels")
    if stored is None:
        raise ValueError("result: this sweep stores no labels (it predates them); rerun it")
    for k in labels:
        if k not in stored:
            raise ValueError(f"labels: expected names from {sorted(stored)}, got {k!r}")
    return sum(np.asarray(stored[k]) for k in labels) / result["config"]["instances"]


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


def summary(result: dict, init_scale: float = 1.0) -> dict:
    """Fractions of runs over each region of :data:`REGIONS` at one initialization scale, for
    every (teacher, student): ``lin`` (converged or linear), ``power``, ``stall``, ``undecided``,
    ``succ`` (the threshold count after ``steps``) and ``first`` (runs whose label at
    ``steps / 2`` differs from the settled one). Keys ``(teacher, student, region)``; a region
    with no cell of the grid gives NaN."""
    cfg = result["config"]
    if init_scale not in cfg["init_scales"]:
        raise ValueError(f"init_scale: expected one of {cfg['init_scales']}, got {init_scale}")
    c = cfg["init_scales"].index(init_scale)
    out = {}
    for key, r in result["results"].items():
        t, s = key.split("->")
        first = np.asarray(r["first_label_differs"]) / cfg["instances"]
        fr = {"lin": label_fraction(result, t, s, ("converged", "linear")),
              "power": label_fraction(result, t, s, ("power law",)),
              "stall": label_fraction(result, t, s, ("stalling",)),
              "undecided": label_fraction(result, t, s, ("undecided",)),
              "succ": success_fraction(result, t, s), "first": first}
        for name, mask in region_masks(result).items():
            out[(t, s, name)] = {k: float(v[:, :, c][mask].mean()) if mask.any() else math.nan
                                 for k, v in fr.items()}
    return out


def summary_table(table: dict) -> str:
    """:func:`summary` as lines of at most 72 characters."""
    cols = ("lin", "power", "stall", "undecided", "succ", "first")
    lines = ["targets->student  region  " + " ".join(f"{k[:6]:>6s}" for k in cols)]
    for (t, s, name), v in table.items():
        lines.append(f"{t[:5]:>7s}->{s[:5]:<8s} {name:7s} "
                     + " ".join(f"{v[k]:6.2f}" for k in cols))
    return "\n".join(lines)


def plot(result: dict, init_scale: Optional[float] = None, axes=None,
         labels: Optional[tuple] = None, what: Optional[str] = None):
    """Heat maps against ``D/(N n)`` (columns) and ``d`` (rows), one panel per (teacher, student),
    at one initialization scale (default: the middle one): the success fraction, or with
    ``labels`` the fraction of runs with one of those labels (``what`` names it on the colour
    bar)."""
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
        fig, axes = plt.subplots(nrow, ncol, figsize=(WIDTH, 2.9 * nrow), squeeze=False)
        axes = axes.ravel()
    for ax, (t, st) in zip(axes, pairs):
        F = (success_fraction(result, t, st) if labels is None
             else label_fraction(result, t, st, labels))[:, :, c].T   # rows: d, columns: ratio
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
                ax.text(j, i, f"{F[i, j]:.1f}", ha="center", va="center", fontsize=SMALL,
                        color="white" if F[i, j] < 0.6 else "black")
    what = what or ("fraction reaching zero loss" if labels is None else "fraction " + " or ".join(labels))
    plt.colorbar(im, ax=list(axes), shrink=0.8, label=what)
    return axes


def main(argv=None) -> int:
    """The command line ``python -m tdlib.phase --out FOLDER ...``; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m tdlib.phase", description=__doc__.split("\n")[0])
    d = SweepConfig()
    p.add_argument("--out", required=True, help="folder for results.json")
    p.add_argument("--ratios", type=float, nargs="+", default=d.ratios, help="values of D/(N n)")
    p.add_argument("--ds", type=int, nargs="+", default=d.ds, help="head dimensions d")
    p.add_argument("--init-scales", type=float, nargs="+", default=d.init_scales)
    p.add_argument("--teachers", nargs="+", default=d.teachers)
    p.add_argument("--students", nargs="+", default=d.students)
    for name in ("N", "n", "d_out", "instances", "steps", "seed"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    p.add_argument("--max-steps", type=int, default=None,
                   help="largest budget a run may need to settle (default 8 * steps)")
    p.add_argument("--tol", type=float, default=d.tol)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    cfg = SweepConfig(ratios=args.ratios, ds=args.ds, init_scales=args.init_scales, teachers=args.teachers,
                      students=args.students, N=args.N, n=args.n, d_out=args.d_out,
                      instances=args.instances, steps=args.steps, max_steps=args.max_steps,
                      tol=args.tol, seed=args.seed)
    try:
        cfg.validate()
        book.check_writable(Path(args.out) / "results.json")
    except (ValueError, TypeError, OSError) as err:
        p.error(f"bad configuration: {err}")
    torch.set_num_threads(1)
    res = sweep(cfg, progress=not args.quiet)
    res["provenance"]["command"] = "python -m tdlib.phase " + " ".join(
        sys.argv[1:] if argv is None else argv)
    path = book.save_json(Path(args.out) / "results.json", res)
    print(f"wrote {path} in {res['provenance']['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
