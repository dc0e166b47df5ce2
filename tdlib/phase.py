"""For the chapter *Gaussian attention and query-only training*: how often query-only gradient
descent reaches zero loss, as a phase diagram over random problems.

For every cell of a grid (ratio ``D / (N n)``, head dimension ``d``, initialization scale) and
every pair (teacher kernel, student kernel), ``instances`` random problems from
:func:`tdlib.query.make_problem` are trained by full-batch GD on ``W_Q`` alone, all instances of a
cell at once. A run *succeeds* when its final loss is at most ``tol`` times ``1/2 ||Y||^2`` (the
loss of the zero output). Because that count depends on the step budget, every run also gets a
*label* from :func:`tdlib.separation.classify`, read off its losses at steps ``T/4``, ``T/2``,
``T`` and its PL ratios ``||grad f||^2 / (2 f)`` averaged over windows ending at ``T/2`` and ``T``: ``converged`` (numerically
zero), ``linear`` (the PL ratio is not decaying), ``power law`` (sublinear, still falling towards
zero) or ``stalling`` (the decrease dies out at a positive loss). Each run is labelled a second
time from steps ``T/8``, ``T/4``, ``T/2`` (half the budget) to count how often the label changes.

Step size: each instance starts with ``eta = 1 / sigma_max(Xs)^2``; at every iteration a step
that would raise the loss is not taken and ``eta`` is halved (the iteration is spent), a step that
lowers it is taken and ``eta`` grows by the factor ``grow`` (1.1). Every run is therefore monotone
gradient descent with a safeguarded step; :func:`tdlib.query.run` with ``adaptive=True`` follows
the same rule. Constant-step GD can be much slower (on a Softmax plateau the growing step makes
progress that a fixed step does not).

Command line (results and provenance go to ``OUT/results.json``)::

    python -m tdlib.phase --out book/data/phase-diagram --instances 16 --steps 2000
"""
from __future__ import annotations

import argparse
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
from .separation import LABELS, classify, pl_windows
from .train import STEP_GROW, next_step_size


LABEL_RULE = ("tdlib.separation.classify: losses at steps T/4, T/2, T and PL ratios averaged "
              "over steps [0.45 T, 0.5 T] and [0.9 T, T]")

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
    tol: float = 1e-4
    seed: int = 0

    def validate(self) -> "SweepConfig":
        """Check every field; raise ``ValueError`` naming the bad one and what was expected."""
        for name in ("N", "n", "d_out", "instances", "steps"):
            check_int(name, getattr(self, name))
        check_int("seed", self.seed, minimum=0)
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


def _cell(cfg: SweepConfig, a: int, b: int, c: int, teacher: str, student: str, half: bool = False):
    """Final loss / (1/2 ||Y||^2) of every instance of grid cell ``(a, b, c)``, and the label of
    every run (:func:`tdlib.separation.classify` at steps ``T/4``, ``T/2``, ``T``)."""
    D = int(round(cfg.ratios[a] * cfg.N * cfg.n))
    # the same problems (data, teacher, init) for both students of a teacher
    seeds = cfg.seed + 1_000_003 * (a * 97 + b * 13 + c) + np.arange(cfg.instances)
    X, K, U, Y, W0 = _batch(cfg, D, cfg.ds[b], cfg.init_scales[c], teacher, student, seeds)
    T = cfg.steps
    f, fref, at, _, pw = batched_gd(X, K, U, Y, W0, student, T, marks=(T // 8, T // 4, T // 2, T),
                                    windows=pl_windows(T))
    labels = [classify(a4, a2, aT, fr, p2, pT)
              for (_, a4, a2, aT), (_, p2, pT), fr in zip(at.tolist(), pw.tolist(), fref.tolist())]
    if not half:
        return (f / fref).numpy(), labels
    # the same runs judged at half the budget: how often does doubling it change a label?
    early = [classify(a8, a4, a2, fr, p4, p2)
             for (a8, a4, a2, _), (p4, p2, _), fr in zip(at.tolist(), pw.tolist(), fref.tolist())]
    return (f / fref).numpy(), labels, early


def rerun_cell(result: dict, teacher: str, student: str, ratio: float, d: int, init_scale: float) -> int:
    """Recompute one cell of a stored sweep from its configuration; returns a dict with the
    success count and the count of every label."""
    cfg = SweepConfig(**result["config"]).validate()
    for name, value, axis in (("ratio", ratio, cfg.ratios), ("d", d, cfg.ds), ("init_scale", init_scale, cfg.init_scales)):
        if value not in axis:
            raise ValueError(f"{name}: expected one of {axis} (the stored grid), got {value}")
    rel, labels = _cell(cfg, cfg.ratios.index(ratio), cfg.ds.index(d), cfg.init_scales.index(init_scale),
                        teacher, student)
    return {"success": int((rel <= cfg.tol).sum()), **{k: labels.count(k) for k in LABELS}}


def sweep(cfg: SweepConfig, progress: bool = False) -> dict:
    """Run the whole grid; returns a dict with the configuration, provenance and, for every
    (teacher, student), an array ``success[ratio, d, init_scale]`` of success counts and the
    median final relative loss."""
    cfg.validate()
    start = time.perf_counter()
    shape = (len(cfg.ratios), len(cfg.ds), len(cfg.init_scales))
    results = {}
    total = len(cfg.teachers) * len(cfg.students) * int(np.prod(shape))
    done = 0
    for teacher in cfg.teachers:
        for student in cfg.students:
            succ = np.zeros(shape, dtype=int)
            med = np.zeros(shape)
            counts = {k: np.zeros(shape, dtype=int) for k in LABELS}
            changed = np.zeros(shape, dtype=int)
            for a, ratio in enumerate(cfg.ratios):
                D = int(round(ratio * cfg.N * cfg.n))
                for b, d in enumerate(cfg.ds):
                    for c, s in enumerate(cfg.init_scales):
                        rel, labels, early = _cell(cfg, a, b, c, teacher, student, half=True)
                        changed[a, b, c] = sum(x != y for x, y in zip(labels, early))
                        succ[a, b, c] = int((rel <= cfg.tol).sum())
                        for k in LABELS:
                            counts[k][a, b, c] = labels.count(k)
                        med[a, b, c] = float(np.median(rel))
                        done += 1
                        if progress:
                            print(f"[{done}/{total}] teacher={teacher} student={student} D={D} d={d} "
                                  f"scale={s}: {succ[a, b, c]}/{cfg.instances} succeed "
                                  f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
            results[f"{teacher}->{student}"] = {"success": succ.tolist(), "median_rel_loss": med.tolist(),
                                                "labels": {k: v.tolist() for k, v in counts.items()},
                                                "label_changed_from_half_budget": changed.tolist()}
    return {
        "config": asdict(cfg),
        "D_values": [int(round(r * cfg.N * cfg.n)) for r in cfg.ratios],
        "results": results,
        "provenance": book.provenance(wall_seconds=time.perf_counter() - start,
                                      success_rule="final loss <= tol * 1/2 ||Y||^2",
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
        ax.text(0.02, 1.02, f"{t} targets, {st} student", transform=ax.transAxes)
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
    p.add_argument("--tol", type=float, default=d.tol)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    cfg = SweepConfig(ratios=args.ratios, ds=args.ds, init_scales=args.init_scales, teachers=args.teachers,
                      students=args.students, N=args.N, n=args.n, d_out=args.d_out,
                      instances=args.instances, steps=args.steps, tol=args.tol, seed=args.seed)
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
