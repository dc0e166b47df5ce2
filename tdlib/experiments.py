"""The experiment runner: train the small Transformer on text or Pathfinder, store what happened.

From Python::

    cfg = ExperimentConfig(task="text", kernel="gaussian", seed=0, steps=600)
    result = run(cfg)                        # a dict: config, curves, versions, wall time
    results = sweep(cfg, kernels=KERNEL_NAMES, seeds=(0, 1, 2))
    save(results, "book/data/experiments/text-curves.json")

From the command line (the stored results of the book were made this way; every file records
the command that made it)::

    python -m tdlib.experiments curves --task text --kernels softmax gaussian --seeds 0 1 2 \
        --steps 2000 --out book/data/experiments/text-curves.json
    python -m tdlib.experiments landscape --task text --stage1-steps 1000 --steps 1000 \
        --out book/data/experiments/text-landscape.npz

Step sizes are chosen per kernel on a validation split carved from the training data
(``--n-val``), never on the test set::

    python -m tdlib.experiments step-sizes --task pathfinder --n-val 400 --steps 250 \
        --lrs 3e-4 1e-3 3e-3 --out sweep.json      # records every run and the choice

The runs of ``curves``, ``step-sizes`` and ``landscape`` (one task per kernel) go through
:mod:`tdlib.sweep`: by default on one worker process per core (one torch thread each),
``--serial`` in this process, ``--scheduler tcp://HOST:PORT`` (or ``$TDLIB_SCHEDULER``) on a
Dask cluster; finished runs are kept beside the output (``.<name>.sweep-parts``, or
``--checkpoint``) until the output is written, so the same command resumes after a crash.

Runs can also be split by hand and joined afterwards with
``python -m tdlib.experiments merge --out joined.json part1.json part2.json`` (a run that
appears twice is refused; step-size sweeps are joined the same way and the choice is made
again on all their runs). ``python -m tdlib.experiments check`` validates every stored result
file under ``book/data`` and names the bad ones (the same as ``python -m tdlib.book check``).

On a GPU, ``python -m tdlib.experiments curves --task pathfinder --preset paper --device cuda
--out runs.json`` runs the paper-scale configuration (:data:`PRESETS`; ``--imdb PATH`` trains
the text task on the real IMDb folder, and the text preset requires it); every run records its
device and timings, and every result file the git commit of the code and the thread counts
(``--threads N`` sets torch's in every run; default 1).

A configuration that cannot work (unknown task or kernel, a step size that is not positive, an
evaluation interval longer than the run, ...) is rejected before any data is loaded.
"""
from __future__ import annotations

import argparse
import math
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from . import book
from .attention import KERNEL_NAMES, KERNELS, make_kernel
from .checks import (check_between, check_choice, check_flag, check_instance, check_int,
                     check_positive, check_seed, check_text, real_array)
from .pathfinder import majority_rate
from .transformer import Architecture, Classifier, ModelConfig

TASKS = ("text", "pathfinder")
OPTIMIZERS = ("sgd", "adam")
# The paper's choice: SGD for text, Adam for Pathfinder; step sizes are ours (tuned on CPU runs).
DEFAULTS = {
    "text": dict(optimizer="sgd", lr=0.05, momentum=0.9, steps=2000, eval_every=100),
    "pathfinder": dict(optimizer="adam", lr=1e-3, momentum=0.0, steps=2500, eval_every=100),
}

# ``--preset paper``: the paper-scale runs, meant for a GPU (``--device cuda``). The paper's own
# batch sizes and step counts are not available to us; these are the Long Range Arena settings
# of the common PyTorch code for this 2-block model (steps 20000 for text, 62400 for Pathfinder;
# byte-level text of 4000 tokens; 32x32 Pathfinder), with our generator's path length 6.
PRESETS = {
    "paper": {
        "text": dict(batch_size=32, steps=20000, eval_every=500, max_len=4000, n_eval=5000),
        "pathfinder": dict(batch_size=256, steps=62400, eval_every=1000, image_size=32,
                           path_length=6, n_train=160_000, n_test=20_000, n_eval=5000),
    },
}


@dataclass
class ExperimentConfig(Architecture):
    """One training run. ``None`` fields take the task's default from :data:`DEFAULTS`.

    Data: ``text`` uses the tweet corpus (:func:`tdlib.text.tweets`) with ``max_len`` byte
    tokens; ``pathfinder`` uses ``n_train + n_test`` generated images of side ``image_size``
    (``image_size**2`` tokens) with main paths of ``path_length`` segments. ``data_seed`` fixes
    the data (split or generated images); ``seed`` fixes the initialisation and the mini-batches.
    ``n_val > 0`` holds out the last ``n_val`` training samples as a validation set (for choosing
    the step size, :func:`step_size_sweep`); the model then trains on the others.
    """

    task: str = "text"
    seed: int = 0
    steps: int | None = None
    batch_size: int = 32
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    eval_every: int | None = None
    n_eval: int | None = None  # evaluate on the first n_eval test samples (None: all)
    n_val: int = 0  # validation samples carved from the end of the training set (never the test set)
    max_len: int = 128
    image_size: int = 16
    path_length: int = 8
    n_train: int = 8000
    n_test: int = 1000
    data_seed: int = 0
    cache_dir: str | None = None
    imdb: str | None = None  # text: the real IMDb folder (aclImdb) instead of the tweet corpus
    device: str = "cpu"      # where the model trains ("cuda" for a GPU); data stay on the CPU

    def resolved(self) -> "ExperimentConfig":
        """A copy with the task defaults filled in, checked (raises with a clear message)."""
        check_choice("task", self.task, TASKS)
        d = DEFAULTS[self.task]
        cfg = replace(self, **{k: v for k, v in d.items() if getattr(self, k) is None})
        check_choice("optimizer", cfg.optimizer, OPTIMIZERS)
        if cfg.kernel not in KERNELS:
            raise ValueError(f"kernel: expected one of {', '.join(sorted(KERNELS))}, got {cfg.kernel!r}")
        if not isinstance(cfg.kernel_options, dict):
            raise TypeError(f"kernel_options: expected a dict, got {cfg.kernel_options!r}")
        make_kernel(cfg.kernel, **cfg.kernel_options)
        for k in ("steps", "batch_size", "eval_every", "max_len", "image_size", "path_length",
                  "n_train", "n_test", "D", "hidden", "H", "layers"):
            check_int(k, getattr(cfg, k))
        check_seed("seed", cfg.seed)
        check_seed("data_seed", cfg.data_seed)
        check_positive("lr", cfg.lr)
        if not check_positive("momentum", cfg.momentum, strict=False) < 1:
            raise ValueError(f"momentum: expected a number in [0, 1), got {cfg.momentum}")
        if cfg.eval_every > cfg.steps:
            raise ValueError(f"eval_every: expected at most steps={cfg.steps}, got {cfg.eval_every}")
        if cfg.n_eval is not None:
            check_int("n_eval", cfg.n_eval)
        check_int("n_val", cfg.n_val, minimum=0)
        if cfg.D % cfg.H:
            raise ValueError(f"D must be divisible by H, got D={cfg.D}, H={cfg.H}")
        if cfg.task == "pathfinder":
            from .pathfinder import check_geometry

            check_choice("image_size", cfg.image_size, (16, 32))
            check_geometry(cfg.image_size, cfg.path_length, cfg.data_seed)
            if cfg.batch_size > cfg.n_train - cfg.n_val:
                raise ValueError(f"batch_size: expected at most n_train - n_val = "
                                 f"{cfg.n_train - cfg.n_val}, got {cfg.batch_size}")
        return cfg

    def model_config(self) -> ModelConfig:
        """The :class:`ModelConfig` of this run's classifier (sequence length from the task)."""
        n = self.image_size ** 2 if self.task == "pathfinder" else self.max_len
        arch = {**self.architecture(), "kernel_options": dict(self.kernel_options)}
        return ModelConfig(vocab=256, max_len=n, pad_id=None if self.task == "pathfinder" else 0,
                           **arch)


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------

_DATA: dict = {}


def load_data(cfg: ExperimentConfig) -> dict:
    """Train/test tensors for ``cfg`` (kept in memory across runs with the same data settings)."""
    cfg = cfg.resolved()
    if cfg.task == "text":
        key = ("text", cfg.max_len, cfg.data_seed, cfg.imdb)
    else:
        key = ("pathfinder", cfg.image_size, cfg.path_length, cfg.n_train, cfg.n_test, cfg.data_seed,
               cfg.cache_dir)
    if key not in _DATA:
        if cfg.task == "text":
            from .text import imdb_folder, tweets

            raw = (imdb_folder(cfg.imdb, max_len=cfg.max_len, seed=cfg.data_seed) if cfg.imdb
                   else tweets(max_len=cfg.max_len, seed=cfg.data_seed))
        else:
            from .pathfinder import pathfinder

            raw = pathfinder(cfg.n_train, cfg.n_test, size=cfg.image_size, path_length=cfg.path_length,
                             seed=cfg.data_seed, cache_dir=cfg.cache_dir, verbose=True)
        _DATA[key] = {k: torch.as_tensor(np.asarray(raw[k])) for k in ("x_train", "y_train", "x_test", "y_test")}
    return _DATA[key]


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model, x, y, batch: int = 500) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``."""
    check_instance("model", model, torch.nn.Module, "a torch.nn.Module (a tdlib Classifier)")
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"x, y: expected the same non-zero number of samples to evaluate on, "
                         f"got {len(x)} inputs and {len(y)} labels")
    batch = check_int("batch", batch)
    model.eval()
    loss, correct = 0.0, 0
    device = next(model.parameters()).device
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch].to(device), y[i:i + batch].to(device)
        logits = model(xb)
        loss += float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(-1) == yb).sum())
    model.train()
    return loss / len(x), correct / len(x)


def validation_split(data: dict, n_val: int) -> dict:
    """``data`` with its last ``n_val`` training samples moved to ``x_val``/``y_val`` (the
    test set is untouched); ``data`` itself when ``n_val == 0``."""
    if not isinstance(data, dict) or not {"x_train", "y_train"} <= set(data) or not all(
            hasattr(data[k], "__len__") for k in ("x_train", "y_train")) \
            or len(data["x_train"]) != len(data["y_train"]):
        raise ValueError(f"data: expected the dict of load_data (x_train, y_train of one "
                         f"length, x_test, y_test), got {data!r:.80}")
    n_val = check_int("n_val", n_val, minimum=0)
    if n_val == 0:
        return data
    n = len(data["x_train"])
    if n_val >= n:
        raise ValueError(f"n_val: expected fewer than the {n} training samples, got {n_val}")
    out = dict(data)
    out["x_train"], out["x_val"] = data["x_train"][: n - n_val], data["x_train"][n - n_val:]
    out["y_train"], out["y_val"] = data["y_train"][: n - n_val], data["y_train"][n - n_val:]
    return out


@torch.no_grad()
def attention_scale(model: Classifier, tokens: torch.Tensor) -> dict:
    """The size of what attention adds to the residual stream, at the model's current weights:
    per block, the root-mean-square entry of the attention output ``MHA(LN(Z))`` and of the
    residual stream ``Z`` that enters the block, on ``tokens`` (B, n). Returns
    ``{"attention": [...], "residual": [...]}`` (one number per block)."""
    check_instance("model", model, Classifier, "a tdlib Classifier")
    out = {"attention": [], "residual": []}
    hooks = [b.register_forward_pre_hook(
        lambda _m, args: out["residual"].append(float(args[0].pow(2).mean().sqrt())))
        for b in model.blocks]
    hooks += [b.attn.register_forward_hook(
        lambda _m, _args, y: out["attention"].append(float(y.pow(2).mean().sqrt())))
        for b in model.blocks]
    was_training = model.training
    try:
        model.eval()
        model(tokens)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return out


def training_device(name: str) -> torch.device:
    """``torch.device(name)``, with a clear error for a malformed or unavailable device."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: expected a torch device such as 'cpu' or 'cuda', got {name!r}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} requested but no CUDA GPU is available to torch")
    return device


def make_optimizer(cfg: ExperimentConfig, params):
    """The optimizer named by ``cfg.optimizer``: SGD with ``cfg.momentum``, or Adam."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.Adam(params, lr=cfg.lr)


def train_model(cfg: ExperimentConfig, model: Classifier | None = None, data: dict | None = None,
                progress: bool = True, desc: str | None = None):
    """Train (a fresh model, or ``model`` continued) for ``cfg.steps`` mini-batch steps.

    Every ``eval_every`` steps (and at step 0) records the test loss and accuracy and the mean
    training loss since the previous record. Returns ``(model, result)``; ``result`` is a
    JSON-ready dict with the configuration, the curves, package versions and the wall time.
    """
    cfg = cfg.resolved()
    data = validation_split(data or load_data(cfg), cfg.n_val)
    if model is None:
        model = Classifier(cfg.model_config(), seed=cfg.seed)
    device = training_device(cfg.device)
    model = model.to(device)
    xtr, ytr = data["x_train"], data["y_train"]
    xte, yte = data["x_test"], data["y_test"]
    if cfg.n_eval is not None:
        xte, yte = xte[: cfg.n_eval], yte[: cfg.n_eval]
    if cfg.batch_size > len(xtr):
        raise ValueError(f"batch_size: expected at most {len(xtr)} (training samples), got {cfg.batch_size}")
    opt = make_optimizer(cfg, model.parameters())
    gen = torch.Generator().manual_seed(10_000 + cfg.seed)
    curves = {"step": [], "test_loss": [], "test_acc": [], "train_loss": []}
    if cfg.n_val:
        curves.update(val_loss=[], val_acc=[])
    init_scale = attention_scale(model, xtr[:64].to(device))
    run_loss, run_n = [], 0
    perm, pos = torch.randperm(len(xtr), generator=gen), 0

    def record(step):
        tl, ta = evaluate(model, xte, yte)
        curves["step"].append(step)
        curves["test_loss"].append(tl)
        curves["test_acc"].append(ta)
        curves["train_loss"].append(float(np.mean(run_loss)) if run_loss else None)
        if cfg.n_val:
            vl, va = evaluate(model, data["x_val"], data["y_val"])
            curves["val_loss"].append(vl)
            curves["val_acc"].append(va)
        run_loss.clear()

    start, cpu_start = time.perf_counter(), time.process_time()
    record(0)
    try:
        from tqdm.auto import tqdm

        bar = tqdm(range(1, cfg.steps + 1), desc=desc or f"{cfg.task}/{cfg.kernel}/seed {cfg.seed}",
                   disable=not progress, mininterval=2.0, leave=False)
    except ImportError:  # pragma: no cover
        bar = range(1, cfg.steps + 1)
    model.train()
    for step in bar:
        if pos + cfg.batch_size > len(xtr):  # a new epoch: a new permutation
            perm, pos = torch.randperm(len(xtr), generator=gen), 0
        idx = perm[pos:pos + cfg.batch_size]
        pos += cfg.batch_size
        loss = torch.nn.functional.cross_entropy(model(xtr[idx].to(device)), ytr[idx].to(device))
        if not torch.isfinite(loss):
            if step == 1:  # no update has been made yet: the step size cannot be the cause
                raise FloatingPointError(f"{cfg.task}/{cfg.kernel}: non-finite training loss at the "
                                         f"initial weights (before any update); check the kernel "
                                         f"{cfg.kernel!r} and its options {cfg.kernel_options}")
            raise FloatingPointError(f"{cfg.task}/{cfg.kernel}: non-finite training loss at step {step}; "
                                     f"lower lr (now {cfg.lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run_loss.append(loss.item())
        if step % cfg.eval_every == 0 or step == cfg.steps:
            record(step)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(test_acc=f"{curves['test_acc'][-1]:.3f}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    result = {"config": asdict(cfg), "seed": cfg.seed, "kernel": cfg.kernel, "task": cfg.task,
              "curves": curves, "seconds": seconds, "cpu_seconds": cpu_seconds, "device": str(device),
              "torch_threads": torch.get_num_threads(), "versions": book.versions(),
              "git": book.git_state(),
              "n_params": model.n_params(), "n_train": len(xtr), "n_test": len(xte),
              "n_val": cfg.n_val, "test_majority": majority_rate(yte), "init_scale": init_scale}
    return model, result


def run(cfg: ExperimentConfig, progress: bool = True) -> dict:
    """Train one model and return its result dict (see :func:`train_model`)."""
    return train_model(cfg, progress=progress)[1]


def _distinct(name: str, values, check) -> list:
    """``values`` as a non-empty list of distinct items, each passed through ``check``."""
    if isinstance(values, (str, int)):
        values = [values]
    if not isinstance(values, (list, tuple, range, np.ndarray)):
        raise TypeError(f"{name}: expected a list of values, got {values!r:.60}")
    values = [check(v) for v in values]
    if not values:
        raise ValueError(f"{name}: expected at least one value, got none")
    dup = sorted({v for v in values if values.count(v) > 1}, key=str)
    if dup:
        raise ValueError(f"{name}: expected distinct values (a repeated one would be counted "
                         f"twice in the mean and the band), got {values} with "
                         f"{', '.join(map(str, dup))} repeated")
    return values


def _check_summary(summary) -> dict:
    """A :func:`summarize` result: a non-empty dict kernel -> {"step", "runs", ...}."""
    if not isinstance(summary, dict) or not summary or not all(
            isinstance(v, dict) and {"step", "runs"} <= set(v) for v in summary.values()):
        raise ValueError(f"summary: expected the dict of summarize (kernel -> step, mean, "
                         f"runs, ...), got {summary!r:.80}")
    return summary


def _check_order(order, known) -> tuple:
    """Two distinct kernel names of ``known`` (the kernels of the runs)."""
    if not isinstance(order, (list, tuple)) or len(order) != 2 or len(set(order)) != 2 \
            or any(k not in known for k in order):
        raise ValueError(f"order: expected two kernels of the runs {sorted(known, key=str)}, "
                         f"got {order!r}")
    return tuple(order)


def _check_docs(docs, needs=()) -> list:
    """Stored documents: a non-empty list of dicts, each with the keys ``needs``."""
    if not isinstance(docs, (list, tuple)) or not docs or not all(
            isinstance(d, dict) and set(needs) <= set(d) for d in docs):
        raise ValueError(f"docs: expected a non-empty list of stored documents"
                         f"{' with ' + ', '.join(needs) if needs else ''}, got {docs!r:.80}")
    return list(docs)


def check_sweep(cfg: ExperimentConfig, kernels, seeds):
    """Validate a sweep (every kernel's configuration, distinct kernels, distinct seeds >= 0)
    before any data is loaded or any model trained; returns ``(kernels, seeds)`` as lists."""
    check_instance("cfg", cfg, ExperimentConfig, "an ExperimentConfig")
    kernels = _distinct("kernels", kernels, lambda k: (check_choice("kernels", k, tuple(KERNELS))
                                                       or k))
    seeds = _distinct("seeds", seeds, lambda s: check_seed("seed", s))
    for k in kernels:
        replace(cfg, kernel=k).resolved()
    return kernels, seeds


def _run_task(config: dict) -> dict:
    """One task of :func:`run_many` (for :func:`tdlib.sweep.run`): :func:`run` of the
    configuration ``config`` (an :class:`ExperimentConfig` as a dict), without a progress bar."""
    return run(ExperimentConfig(**config), progress=False)


def run_many(cfgs, progress: bool = True, workers: int | None = None,
             scheduler: str | None = None, checkpoint=None, info: dict | None = None,
             threads: int = 1) -> list:
    """:func:`run` for every configuration of ``cfgs``; the result dicts in the same order.

    The runs go through :func:`tdlib.sweep.run`: in this process (the default here), on
    ``workers`` local processes (one thread each) or on the Dask cluster at ``scheduler``; a
    run's curves do not depend on where it ran. With ``checkpoint`` (a folder) finished runs
    are kept and a rerun resumes; ``info`` receives how the sweep ran; every run trains with
    ``threads`` torch threads. Every configuration is checked before the first run starts."""
    from . import sweep as runner

    tasks = [{"config": asdict(c)} for c in cfgs]
    if workers is None and scheduler is None:
        workers = 1
    return runner.run(_run_task, tasks, workers=workers, scheduler=scheduler,
                      checkpoint=checkpoint, quiet=not progress, info=info,
                      check=lambda config: ExperimentConfig(**config).resolved(), desc="runs",
                      threads=threads)


def sweep(cfg: ExperimentConfig, kernels=KERNEL_NAMES, seeds=(0, 1, 2), progress: bool = True,
          log: bool = False, **where):
    """:func:`run` for every kernel and seed (the same data for all); a list of result dicts,
    kernel by kernel, each in the order of ``seeds``. ``where`` goes to :func:`run_many`
    (``workers``, ``scheduler``, ``checkpoint``, ``info``; default: in this process).

    Every kernel and seed is checked before the first run starts."""
    kernels, seeds = check_sweep(cfg, kernels, seeds)
    results = run_many([replace(cfg, kernel=k, seed=int(s)) for k in kernels for s in seeds],
                       progress=progress, **where)
    if log:
        for r in results:
            print(f"{cfg.task}/{r['kernel']}/seed {r['seed']}: {r['seconds']:.0f} s, final test "
                  f"accuracy {r['curves']['test_acc'][-1]:.3f}", flush=True)
    return results


# ---------------------------------------------------------------------------------------------
# step sizes chosen on a validation split, and the cue baselines of a Pathfinder run's data
# ---------------------------------------------------------------------------------------------

def step_size_sweep(cfg: ExperimentConfig, kernels=KERNEL_NAMES, lrs=(3e-4, 1e-3, 3e-3),
                    seed: int = 0, progress: bool = True, log: bool = False, **where) -> list:
    """One run per kernel and step size ``lr`` in ``lrs`` (seed ``seed``), each with the
    validation curves of ``cfg.n_val`` held-out training samples (``cfg.n_val > 0`` required);
    a list of run dicts. :func:`choose_step_sizes` picks from them. ``where`` goes to
    :func:`run_many` (default: in this process)."""
    if cfg.n_val < 1:
        raise ValueError(f"n_val: a step-size sweep chooses on a validation split; expected "
                         f"n_val >= 1, got {cfg.n_val}")
    lrs = _distinct("lrs", lrs, lambda v: check_positive("lr", v))
    kernels, _ = check_sweep(cfg, kernels, [seed])
    out = run_many([replace(cfg, kernel=k, seed=int(seed), lr=float(lr))
                    for k in kernels for lr in lrs], progress=progress, **where)
    if log:
        for r in out:
            c = r["curves"]
            print(f"{cfg.task}/{r['kernel']}/lr {r['config']['lr']:g}: validation loss "
                  f"{c['val_loss'][-1]:.4f}, accuracy {c['val_acc'][-1]:.3f}", flush=True)
    return out


def choose_step_sizes(runs, last_k: int = 3) -> dict:
    """Per kernel, the step size of ``runs`` (from :func:`step_size_sweep`) with the smallest
    validation loss averaged over the last ``last_k`` evaluations: ``{kernel: {"lr": best,
    "val_loss": {lr: mean}, "val_acc": {lr: mean}}}`` (step sizes as strings, JSON keys). The
    test set plays no part in the choice."""
    last_k = check_int("last_k", last_k)
    if not isinstance(runs, (list, tuple)) or not runs or not all(
            isinstance(r, dict) and isinstance(r.get("curves"), dict) and "kernel" in r
            and isinstance(r.get("config"), dict) and "lr" in r["config"] for r in runs):
        raise ValueError(f"runs: expected the non-empty list of step_size_sweep runs (each with "
                         f"a kernel, a config with lr and curves), got {runs!r:.80}")
    out = {}
    for r in runs:
        c = r["curves"]
        if "val_loss" not in c or len(c["val_loss"]) < last_k:
            raise ValueError(f"runs: expected validation curves of at least last_k={last_k} "
                             f"evaluations, got a run without (kernel {r.get('kernel')})")
        d = out.setdefault(r["kernel"], {"val_loss": {}, "val_acc": {}})
        key = repr(float(r["config"]["lr"]))
        if key in d["val_loss"]:
            raise ValueError(f"runs: step size {key} appears twice for kernel {r['kernel']}")
        d["val_loss"][key] = float(np.mean(c["val_loss"][-last_k:]))
        d["val_acc"][key] = float(np.mean(c["val_acc"][-last_k:]))
    for d in out.values():
        d["lr"] = float(min(d["val_loss"], key=d["val_loss"].get))
    return out


def merge_sweeps(docs) -> dict:
    """Join stored step-size sweeps (files written by ``step-sizes``, one ``last_k``) into one
    document with the runs of all and :func:`choose_step_sizes` made again on them."""
    docs = _check_docs(docs, ("sweep", "last_k"))
    last = {d.get("last_k") for d in docs}
    if len(last) != 1:
        raise ValueError(f"files: expected sweeps chosen with one last_k, got {sorted(last)}")
    runs = [r for d in docs for r in d["sweep"]]
    last_k = last.pop()
    return {"sweep": runs, "choice": choose_step_sizes(runs, last_k), "last_k": last_k}


def sweep_reading(doc: dict, z: float = 3.0) -> str:
    """What a stored step-size sweep (``doc`` as written by ``step-sizes``) can support: whether
    any run's final validation accuracy rose ``z`` standard errors above its step-0 value, how
    far apart the validation losses of the grid are, and whether a choice sits at an end of
    the grid (where a larger or smaller step size was not tried)."""
    runs = doc["sweep"]
    moved = [r["curves"]["val_acc"][-1] - r["curves"]["val_acc"][0] > z * accuracy_se(r["n_val"])
             for r in runs]
    ends = {}
    for k, c in doc["choice"].items():
        grid = sorted(float(v) for v in c["val_loss"])
        if len(grid) > 1 and c["lr"] in (grid[0], grid[-1]):
            ends.setdefault("largest" if c["lr"] == grid[-1] else "smallest", []).append(
                k.capitalize())
    edges = [f"{' and '.join(names)} chose the {end} step size of the grid"
             for end, names in ends.items()]
    spread = max(max(c["val_loss"].values()) - min(c["val_loss"].values())
                 for c in doc["choice"].values())
    if not any(moved):
        out = (f"No step size lifted the validation accuracy of either kernel {z:g} standard "
               f"errors above its start, and the averaged validation losses of a kernel differ "
               f"by at most {spread:.4f}: the choice rests on differences this small and says "
               f"little")
    else:
        out = (f"{sum(moved)} of {len(runs)} sweep runs lifted the validation accuracy {z:g} "
               f"standard errors above its start; the averaged validation losses of a kernel "
               f"differ by up to {spread:.4f}")
    return out + ("" if not edges else "; " + " and ".join(edges)) + "."


def pathfinder_cues(cfg: ExperimentConfig) -> dict:
    """:func:`tdlib.pathfinder.cue_baselines` on the data of a Pathfinder run: fitted on the
    training images the model trains on (without the validation split), scored on the test
    images it is evaluated on (the first ``n_eval``)."""
    from .pathfinder import cue_baselines, pathfinder

    cfg = cfg.resolved()
    if cfg.task != "pathfinder":
        raise ValueError(f"task: cue baselines exist for 'pathfinder', got {cfg.task!r}")
    raw = pathfinder(cfg.n_train, cfg.n_test, size=cfg.image_size, path_length=cfg.path_length,
                     seed=cfg.data_seed, cache_dir=cfg.cache_dir)
    n, e = cfg.n_train - cfg.n_val, cfg.n_eval or cfg.n_test
    side = (-1, cfg.image_size, cfg.image_size)
    train = (raw["x_train"][:n].reshape(side), raw["y_train"][:n], raw["m_train"][:n])
    test = (raw["x_test"][:e].reshape(side), raw["y_test"][:e], raw["m_test"][:e])
    return cue_baselines(train, test, cfg.image_size)


def shared_extras(docs) -> dict:
    """The entries (besides ``provenance``, ``runs`` and ``parts``) that several stored files
    share with equal values, such as the cue baselines of the same data: kept by a merge."""
    docs = _check_docs(docs)
    keys = set.intersection(*(set(d) for d in docs)) - {"provenance", "runs", "parts", "parts_git"}
    return {k: docs[0][k] for k in sorted(keys) if all(d[k] == docs[0][k] for d in docs)}


def check_runs(results, name: str = "results") -> list:
    """Validate a list of run dicts: each run once (task, kernel, seed), one task. Returns the
    list; raises an error naming the offending run (as ``name[i]``) otherwise."""
    if not isinstance(results, (list, tuple)) or not results:
        raise ValueError(f"{name}: expected a non-empty list of runs, got {results!r:.80}")
    seen = {}
    for i, r in enumerate(results):
        try:
            key = (r.get("task"), r["kernel"], r.get("seed"))
            r["curves"]["step"]
        except (KeyError, TypeError, AttributeError):
            raise ValueError(f"{name}[{i}]: expected a run dict with a kernel and curves, "
                             f"got {r!r:.80}") from None
        if key in seen and key[2] is not None:
            raise ValueError(f"{name}: run {key[0]}/{key[1]}/seed {key[2]} appears twice "
                             f"(entries {seen[key]} and {i}); each seed must count once")
        seen[key] = i
    tasks = {k[0] for k in seen if k[0] is not None}
    if len(tasks) > 1:
        raise ValueError(f"{name}: expected runs of one task, got {sorted(tasks)}")
    return list(results)


def summarize(results, key: str = "test_acc") -> dict:
    """Per kernel: ``steps``, the mean, min and max over seeds of the curve ``key``, ``runs``
    (one row per seed, in the order of ``seeds``) and ``seeds``.

    A missing value (``None``/NaN) in ``key`` is an error naming the run, except the training
    loss at step 0 (no step has been taken), which stays NaN; runs of one kernel must share
    their evaluation steps, and each (kernel, seed) must appear once."""
    results = check_runs(results)
    out = {}
    for k in dict.fromkeys(r["kernel"] for r in results):
        runs = [r for r in results if r["kernel"] == k]
        if all(r.get("seed") is not None for r in runs):  # in the order of the seeds
            runs = sorted(runs, key=lambda r: r["seed"])
        steps = np.array(runs[0]["curves"]["step"])
        rows = []
        for r in runs:
            name = "/".join(str(x) for x in (r.get("task"), k) if x is not None)
            name += f"/seed {r['seed']}" if r.get("seed") is not None else ""
            if key not in r["curves"]:
                raise ValueError(f"key: expected a curve that every run has, got {key!r}: run "
                                 f"{name} has {', '.join(r['curves'])}")
            if not np.array_equal(np.array(r["curves"]["step"]), steps):
                raise ValueError(f"run {name}: evaluated at other steps than the first {k} "
                                 f"run; the mean over seeds needs the same steps")
            row = np.array([np.nan if v is None else v for v in r["curves"][key]], dtype=float)
            bad = np.flatnonzero(~np.isfinite(row))
            if key == "train_loss":  # no training loss before the first step
                bad = bad[steps[bad] != 0]
            if len(bad):
                raise ValueError(f"run {name}: {key} is missing or not finite at step "
                                 f"{int(steps[bad[0]])}; its mean over seeds would be NaN")
            rows.append(row)
        curves = np.array(rows)
        out[k] = {"step": steps, "mean": curves.mean(0), "min": curves.min(0), "max": curves.max(0),
                  "std": curves.std(0), "runs": curves, "seeds": [r.get("seed") for r in runs]}
    return out


def accuracy_se(n_test: int, p: float = 0.5) -> float:
    """Standard error of an accuracy ``p`` measured on ``n_test`` test examples (binomial):
    ``sqrt(p (1 - p) / n_test)``; at ``p = 1/2`` it is the noise of a coin-flipping model."""
    n_test = check_int("n_test", n_test)
    p = check_between("p", p, 0.0, 1.0, what="an accuracy")
    return math.sqrt(p * (1 - p) / n_test)


def paired_differences(summary: dict, order=("gaussian", "softmax"), last_k: int = 1) -> np.ndarray:
    """Per seed, ``order[0]`` minus ``order[1]`` of a :func:`summarize` result, each run's value
    being the mean of its last ``last_k`` evaluations (``last_k = 1``: the final value). Seed
    ``s`` gives both kernels the same initial weights and mini-batches, so the runs pair up by
    seed; both kernels need the same seeds, listed in the same order. Shape ``(seeds,)``."""
    a, b = _check_order(order, _check_summary(summary))
    last_k = check_int("last_k", last_k)
    ra, rb = summary[a], summary[b]
    if ra.get("seeds") != rb.get("seeds"):
        raise ValueError(f"runs: a paired comparison needs the same seeds for both kernels, got "
                         f"{ra.get('seeds')} ({a}) and {rb.get('seeds')} ({b})")
    if last_k > len(ra["step"]) or last_k > len(rb["step"]):
        raise ValueError(f"last_k: expected at most {min(len(ra['step']), len(rb['step']))} "
                         f"evaluations, got {last_k}")
    return ra["runs"][:, -last_k:].mean(1) - rb["runs"][:, -last_k:].mean(1)


MAX_SIGN_FLIP_SEEDS = 20
"""The exact sign-flip test enumerates all ``2**n`` sign patterns: at most this many seeds."""


def sign_flip_test(diffs) -> float:
    """Exact two-sided p-value of the paired sign-flip permutation test of "the kernel makes no
    difference" on the mean paired difference: the share of the ``2**n`` sign patterns ``s``
    with ``|mean(s * diffs)| >= |mean(diffs)|``. Under that hypothesis each seed's difference
    is as likely to have either sign. The observed pattern and its negation always count, so
    the smallest p-value ``n`` seeds can give is ``2 / 2**n`` (0.25 for 3 seeds)."""
    d = real_array("diffs", diffs, "a non-empty 1-d array of finite differences")
    if d.ndim != 1 or d.size == 0 or not np.isfinite(d).all():
        raise ValueError(f"diffs: expected a non-empty 1-d array of finite differences, "
                         f"got {diffs!r:.80}")
    if d.size > MAX_SIGN_FLIP_SEEDS:
        raise ValueError(f"diffs: the exact test enumerates 2**n sign patterns; expected at "
                         f"most {MAX_SIGN_FLIP_SEEDS} seeds, got {d.size}")
    signs = 1 - 2 * ((np.arange(2 ** d.size)[:, None] >> np.arange(d.size)) & 1)
    means = np.abs(signs @ d) / d.size
    observed = abs(d.mean())
    return float(np.mean(means >= observed - 1e-12 * max(1.0, observed)))


def smallest_p(n_seeds: int) -> float:
    """The smallest p-value :func:`sign_flip_test` can return with ``n_seeds`` seeds: ``2/2**n``."""
    n = check_int("n_seeds", n_seeds)
    return 2.0 / 2 ** n


def verdict(diffs, p: float, name_a: str, name_b: str) -> str:
    """The paired comparison in words: how many seeds favour each kernel, the mean paired
    difference and the sign-flip p-value ``p`` (of :func:`sign_flip_test`)."""
    check_text("name_a", name_a, "a kernel's name")
    check_text("name_b", name_b, "a kernel's name")
    d = real_array("diffs", diffs, "a non-empty 1-d array of differences")
    if d.ndim != 1 or d.size == 0 or not np.isfinite(d).all():
        raise ValueError(f"diffs: expected a non-empty 1-d array of finite differences, got "
                         f"{diffs!r:.80}")
    p = check_between("p", p, 0.0, 1.0, what="a p-value", lo_open=True)
    ahead, behind = int((d > 0).sum()), int((d < 0).sum())
    ties = f", {d.size - ahead - behind} tied" if ahead + behind < d.size else ""
    return (f"{name_a} ends ahead of {name_b} in {ahead} of {d.size} seeds, behind in "
            f"{behind}{ties} (mean paired difference {d.mean():+.3f}, sign-flip p = {p:.2f})")


def verdict_reading(p: float, n_seeds: int, alpha: float = 0.05) -> str:
    """What a paired p-value ``p`` from ``n_seeds`` seeds is worth, in one sentence."""
    p = check_between("p", p, 0.0, 1.0, what="a p-value", lo_open=True)
    alpha = check_between("alpha", alpha, 0.0, 1.0, what="a level", lo_open=True, hi_open=True)
    floor = smallest_p(n_seeds)
    if floor > alpha:
        return (f"with {n_seeds} seeds the smallest p-value this test can give is {floor:.2f}, "
                f"so it cannot show a difference at the {alpha:g} level, whichever way the seeds "
                f"fall")
    if p <= alpha:
        return (f"a difference this consistent over {n_seeds} seeds has probability {p:.2f} "
                f"when the kernel makes no difference: evidence, at the {alpha:g} level, that "
                f"the kernels differ in this setting")
    return (f"a difference like this one is common ({p:.2f}) when the kernel makes no "
            f"difference: it is not evidence for either kernel")


def chance_levels(summary: dict, majority: float) -> dict:
    """Per kernel, per seed: the level a run must beat to "leave chance", the larger of its
    accuracy at step 0 (the untrained model) and ``majority`` (always answering the more
    frequent test class)."""
    majority = check_between("majority", majority, 0.0, 1.0, what="a rate", lo_open=True)
    _check_summary(summary)
    return {k: [max(float(run[0]), majority) for run in v["runs"]] for k, v in summary.items()}


def first_above_chance(summary: dict, n_test: int, majority: float, z: float = 3.0) -> dict:
    """Per kernel of a :func:`summarize` result of test accuracy: per seed, the first evaluated
    step after step 0 whose accuracy exceeds that seed's :func:`chance_levels` level by ``z``
    binomial standard errors (:func:`accuracy_se` at that level, ``n_test`` test samples), or
    ``None`` if the seed never gets there."""
    z = check_positive("z", z)
    n_test = check_int("n_test", n_test)
    levels = chance_levels(summary, majority)
    out = {}
    for k, v in summary.items():
        steps = []
        for run, level in zip(v["runs"], levels[k]):
            above = np.asarray(run[1:]) > level + z * accuracy_se(n_test, level)
            steps.append(int(v["step"][1 + int(np.argmax(above))]) if above.any() else None)
        out[k] = steps
    return out


def leave_chance_steps(firsts: dict, last_step: int) -> dict:
    """Per kernel, the mean over seeds of :func:`first_above_chance` steps; a seed that never
    leaves chance counts as ``last_step`` and the result is then a lower bound."""
    _check_firsts(firsts)
    last_step = check_int("last_step", last_step, minimum=0)
    return {k: float(np.mean([last_step if t is None else t for t in ts]))
            for k, ts in firsts.items()}


def _check_firsts(firsts) -> dict:
    """Output of :func:`first_above_chance`: kernel -> list of steps (``None``: never)."""
    if not isinstance(firsts, dict) or not firsts or not all(
            isinstance(v, list) and all(t is None or isinstance(t, int) for t in v)
            for v in firsts.values()):
        raise ValueError(f"firsts: expected the dict of first_above_chance (kernel -> list of "
                         f"steps or None), got {firsts!r:.80}")
    return firsts


def leave_sentence(firsts: dict, order=("softmax", "gaussian")) -> str:
    """One sentence on who leaves chance, from :func:`first_above_chance` output (per kernel,
    per seed, a step or ``None``): how many seeds of each kernel leave chance within the budget,
    and at which evaluated steps."""
    _check_firsts(firsts)
    if not isinstance(order, (list, tuple)) or set(order) != set(firsts):
        raise ValueError(f"order: expected the kernels {sorted(firsts, key=str)} of firsts, got "
                         f"{order!r}")
    parts = []
    for k in order:
        steps = [t for t in firsts[k] if t is not None]
        where = f" (first at step {', '.join(str(t) for t in steps)})" if steps else ""
        parts.append(f"{len(steps)} of {len(firsts[k])} {k.capitalize()} seeds{where}")
    if not any(t is not None for ts in firsts.values() for t in ts):
        return "no seed of either kernel leaves chance within the budget"
    return " and ".join(parts) + " leave chance within the budget"


REPORT_WIDTH = 80
"""Width of the printed summaries of this module."""


def shell_lines(command: str, width: int = REPORT_WIDTH) -> str:
    """A stored regenerate ``command`` laid out for reading: one ``&&``-joined part per line,
    each wrapped at ``width`` characters with shell continuations (`` \\``), so the text can
    still be pasted into a terminal. Words (paths, options) are never split."""
    if not isinstance(command, str) or not command.strip():
        raise ValueError(f"command: expected a non-empty shell command, got {command!r}")
    width = check_int("width", width, minimum=20)
    out = []
    parts = command.split(" && ")
    for i, part in enumerate(parts):
        tail = " &&" if i < len(parts) - 1 else ""
        lines = textwrap.wrap(part, width - 3, break_long_words=False, break_on_hyphens=False,
                              subsequent_indent="    ")
        out += [line + " \\" for line in lines[:-1]] + [lines[-1] + tail]
    return "\n".join(out)


@dataclass
class KernelComparison:
    """The statistics of one task's stored runs that the experiments chapter reports.

    ``kernels[k]`` holds, for kernel ``k``: ``acc`` (final test accuracy, mean over seeds),
    ``lo``/``hi`` (its range over seeds), ``last`` (mean over seeds of the mean of the last
    ``last_k`` evaluations), ``avg`` (mean accuracy over all evaluations after step 0), ``loss``
    (final test loss, mean over seeds), ``seeds``, ``start`` (mean accuracy at step 0),
    ``first`` (per seed, the first step above chance, see :func:`first_above_chance`),
    ``leave`` (their mean, :func:`leave_chance_steps`) and ``left`` (how many seeds left).
    ``paired`` holds the per-seed differences ``order[0] - order[1]`` of the final accuracy
    (``diffs``) and of the last-``last_k`` mean (``diffs_last``), their means and sign-flip
    p-values (``p``, ``p_last``) and ``min_p`` (the smallest p the seeds allow). ``se`` is the
    standard error of an accuracy at ``majority`` (the majority-class rate of the test set).
    ``verdict`` and ``reading`` are the sentences of :func:`verdict` and
    :func:`verdict_reading` on the final accuracies."""

    task: str
    kernels: dict
    paired: dict
    se: float
    majority: float
    verdict: str
    reading: str
    final_step: int
    last_k: int

    def glue_values(self) -> dict:
        """Flat names for :func:`tdlib.book.glue_all`: ``<kernel>_acc``, ``_lo``, ``_hi``,
        ``_last``, ``_avg``, ``_loss``, ``_start``, ``_leave``, ``_left``; ``paired_mean``,
        ``paired_p``, ``paired_mean_last``, ``paired_p_last``, ``min_p``, ``last_k``, ``se``,
        ``majority``, ``verdict``, ``verdict_reading``."""
        out = {f"{k}_{key}": v[key] for k, v in self.kernels.items()
               for key in ("acc", "lo", "hi", "last", "avg", "loss", "start", "leave", "left")}
        out.update({f"paired_{k}": self.paired[k] for k in ("mean", "p", "mean_last", "p_last")})
        out.update(min_p=self.paired["min_p"], last_k=self.last_k, se=self.se,
                   majority=self.majority, verdict=self.verdict, verdict_reading=self.reading)
        return out

    def __str__(self) -> str:
        seeds = "/".join(str(v["seeds"]) for v in self.kernels.values())
        lines = textwrap.wrap(f"{self.task}: test accuracy at step {self.final_step} ({seeds} "
                              f"seeds; majority class {self.majority:.3f}, standard error "
                              f"{self.se:.3f})", REPORT_WIDTH)
        for k, v in self.kernels.items():
            first = ", ".join("never" if t is None else f"step {t}" for t in v["first"])
            lines += [f"  {k:9s} final {v['acc']:.3f} (seeds {v['lo']:.3f} to {v['hi']:.3f}), "
                      f"last {self.last_k} evaluations {v['last']:.3f}"]
            lines += textwrap.wrap(f"step 0: {v['start']:.3f}; first 3 s.e. above chance, per "
                                   f"seed: {first}", REPORT_WIDTH, initial_indent=" " * 12,
                                   subsequent_indent=" " * 12)
        d = self.paired
        lines += textwrap.wrap(
            f"paired differences per seed: final {', '.join(f'{x:+.3f}' for x in d['diffs'])} "
            f"(p = {d['p']:.2f}); last {self.last_k} evaluations "
            f"{', '.join(f'{x:+.3f}' for x in d['diffs_last'])} (p = {d['p_last']:.2f})",
            REPORT_WIDTH, initial_indent="  ", subsequent_indent="  ")
        lines += textwrap.wrap(f"{self.verdict}: {self.reading}", REPORT_WIDTH,
                               initial_indent="  ", subsequent_indent="  ")
        return "\n".join(lines)


def chance_rate(runs) -> float:
    """The majority-class rate of the test set the runs were evaluated on: the runs' stored
    ``test_majority`` (all equal), or, for runs stored without it, recomputed from the test
    labels of the first run's configuration (:func:`load_data`, first ``n_test`` samples)."""
    runs = check_runs(runs, "runs")
    stored_rates = {r.get("test_majority") for r in runs}
    if None not in stored_rates:
        if len(stored_rates) != 1:
            raise ValueError(f"runs: expected one test set, got majority rates {stored_rates}")
        return float(stored_rates.pop())
    if not {"config", "n_test"} <= set(runs[0]):
        raise ValueError(f"runs: expected a stored test_majority, or a config and n_test to "
                         f"recompute it from, got a run with {sorted(runs[0])}")
    return majority_rate(load_data(config_of(runs[0]))["y_test"][: runs[0]["n_test"]].numpy())


def config_of(run: dict) -> ExperimentConfig:
    """The :class:`ExperimentConfig` of a stored run (entries it does not know are left out)."""
    if not isinstance(run, dict) or not isinstance(run.get("config"), dict):
        raise ValueError(f"run: expected a stored run with a config dict, got {run!r:.80}")
    names = {f.name for f in fields(ExperimentConfig)}
    return ExperimentConfig(**{k: v for k, v in run["config"].items() if k in names})


def pathfinder_reading(shared: KernelComparison, own: KernelComparison, cue_best: float,
                       z: float = 3.0) -> str:
    """The chapter's conclusion on Pathfinder, from the comparisons at the shared and at each
    kernel's own step size and the best cue rule's test accuracy ``cue_best``: whether any
    run leaves chance, and whether any kernel's mean final accuracy rises ``z`` standard
    errors above the best cue rule."""
    comps = (shared, own)
    if not any(v["left"] for c in comps for v in c.kernels.values()):
        return ("No run of either kernel, at either step size, leaves chance within the "
                "budget: in these runs neither kernel learns the task, and they say nothing "
                "about which kernel learns Pathfinder better.")
    best = max(v["acc"] for c in comps for v in c.kernels.values())
    if best <= cue_best + z * shared.se:
        return (f"Some runs leave chance, but no kernel's mean final accuracy rises {z:g} "
                f"standard errors above the best cue rule ({cue_best:.3f}), so the runs do not "
                f"show that the model follows the paths.")
    return (f"Some runs rise above chance and above the best cue rule ({cue_best:.3f}): the "
            f"model uses the path structure. Which kernel is ahead is for the paired "
            f"statistics to say.")


def plateau_reading(c: KernelComparison) -> str:
    """Whether the Gaussian runs of a comparison stay at chance longer than the Softmax ones
    (mean first step above chance, a seed that never leaves counted at the last step)."""
    g, s = c.kernels["gaussian"], c.kernels["softmax"]
    if g["left"] == 0 and s["left"] == 0:
        return ("No Pathfinder run of either kernel leaves chance within the budget, so these "
                "runs cannot say whether a Gaussian plateau goes with the large initial output.")
    if g["leave"] > s["leave"]:
        return (f"The Gaussian Pathfinder runs leave chance later than the Softmax ones (step "
                f"{g['leave']:.0f} against {s['leave']:.0f}, mean over seeds): the plateau "
                f"coincides with the large initial output, which fits, but does not prove, "
                f"that the output scale causes it.")
    return (f"The Gaussian Pathfinder runs do not leave chance later than the Softmax ones "
            f"(step {g['leave']:.0f} against {s['leave']:.0f}, mean over seeds): here the large "
            f"initial output does not come with a longer plateau.")


def compare_kernels(runs, order=("gaussian", "softmax"), z: float = 3.0, last_k: int = 5,
                    majority: float | None = None) -> KernelComparison:
    """Summarize one task's runs (a list of run dicts with test accuracy and test loss curves,
    the same seeds for both kernels, each with ``n_test``) into a :class:`KernelComparison`:
    final and last-``last_k`` accuracy per kernel, when each seed leaves chance (against its
    step-0 accuracy and the majority class ``majority``, by default :func:`chance_rate`),
    and the paired comparison of ``order[0]`` against ``order[1]``."""
    runs = check_runs(runs, "runs")
    z, last_k = check_positive("z", z), check_int("last_k", last_k)
    if majority is not None:
        check_between("majority", majority, 0.0, 1.0, what="a rate", lo_open=True)
    acc, loss = summarize(runs, "test_acc"), summarize(runs, "test_loss")
    order = _check_order(order, acc)
    n_test = {r["n_test"] for r in runs}
    if len(n_test) != 1:
        raise ValueError(f"runs: expected one test-set size, got n_test = {sorted(n_test)}")
    n_test = n_test.pop()
    majority = chance_rate(runs) if majority is None else float(majority)
    firsts = first_above_chance(acc, n_test, majority, z=z)
    final_step = int(acc[order[0]]["step"][-1])
    leave = leave_chance_steps(firsts, final_step)
    kernels = {}
    for k, v in acc.items():
        kernels[k] = {"acc": float(v["mean"][-1]), "lo": float(v["min"][-1]),
                      "hi": float(v["max"][-1]), "avg": float(v["mean"][1:].mean()),
                      "last": float(v["runs"][:, -last_k:].mean()), "start": float(v["mean"][0]),
                      "loss": float(loss[k]["mean"][-1]), "seeds": len(v["runs"]),
                      "first": firsts[k], "leave": leave[k],
                      "left": sum(t is not None for t in firsts[k])}
    diffs = paired_differences(acc, order)
    diffs_last = paired_differences(acc, order, last_k)
    p = sign_flip_test(diffs)
    paired = {"diffs": [float(x) for x in diffs], "mean": float(diffs.mean()), "p": p,
              "diffs_last": [float(x) for x in diffs_last], "mean_last": float(diffs_last.mean()),
              "p_last": sign_flip_test(diffs_last), "min_p": smallest_p(len(diffs))}
    name = lambda k: k.capitalize()  # noqa: E731
    return KernelComparison(
        task=str(runs[0].get("task", "")), kernels=kernels, paired=paired,
        se=accuracy_se(n_test, majority), majority=majority,
        verdict=verdict(diffs, p, name(order[0]), name(order[1])),
        reading=verdict_reading(p, len(diffs)), final_step=final_step, last_k=last_k)


def plot_curves(results, key: str = "test_acc", ax=None, label_suffix: str = "", linestyle=None):
    """Mean over seeds (line) and min-max over seeds (band) of ``key`` for every kernel, in the
    kernel's style (``linestyle`` overrides the kernel's line style)."""
    import matplotlib.pyplot as plt

    from .plotting import kernel_color, kernel_style

    ax = ax or plt.gca()
    for k, s in summarize(results, key).items():
        c = kernel_color(k)
        n = len(s["runs"])
        style = kernel_style(k, line=linestyle is None)
        if linestyle is not None:
            style["linestyle"] = linestyle
        ax.plot(s["step"], s["mean"], **style, label=f"{k}{label_suffix} ({n} seeds)")
        ax.fill_between(s["step"], s["min"], s["max"], color=c, alpha=0.2, linewidth=0)
    ax.set_xlabel("training step")
    ax.set_ylabel({"test_acc": "test accuracy", "test_loss": "test loss",
                   "train_loss": "training loss"}.get(key, key))
    return ax


def save(results, path, command: str | None = None, extra: dict | None = None,
         sweep: dict | None = None) -> Path:
    """Write results (a list of run dicts) to JSON (atomically), with their provenance: the
    command that produced them and the wall time: the total of the runs' times, or with
    ``sweep`` (the ``info`` of :func:`tdlib.sweep.run`) the sweep's own wall time, its
    workers and mode, and the total of the runs' times as ``run_seconds``."""
    results = check_runs(results)
    if command is not None:
        check_text("command", command, "the shell command that remakes the results")
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra: expected a dict of further entries, got {extra!r:.60}")
    command = command or "python -m tdlib.experiments " + " ".join(sys.argv[1:])
    wall = float(sum(r["seconds"] for r in results))
    how = {}
    if sweep is not None:
        from . import sweep as runner

        how = {**runner.record(sweep), "run_seconds": wall}
        wall = how.pop("wall_seconds")
    doc = {"provenance": book.provenance(command, wall_seconds=wall, **how), "runs": results}
    doc.update(extra or {})
    return book.save_json(path, doc)


def load(path) -> dict:
    """Read a file written by :func:`save` (an error names a missing or damaged file)."""
    return book.load_json(path)


def stored(name: str, path=None) -> dict:
    """A stored result of this module: ``book/data/experiments/<name>`` (see
    :func:`tdlib.book.stored`), or ``<path>/<name>`` when a folder ``path`` is given."""
    check_text("name", name, "a file name such as 'text-curves.json'")
    if path is not None and (not isinstance(path, (str, Path)) or str(path) == ""):
        raise TypeError(f"path: expected a folder, got {path!r}")
    if path is not None:
        f = Path(path) / name
        return book.load_npz(f) if f.suffix == ".npz" else book.load_json(f)
    return book.stored("experiments", name)


def draw_curves(task: str = "text", quantity: str = "test_acc", show_seeds: bool = False, path=None):
    """The stored curves of one task: mean over seeds and min-max band for both kernels; with
    ``show_seeds`` every seed's curve is drawn too; accuracy plots show the majority-class rate
    and, where stored, the best cue rule. (The pure function behind the chapter's interactive
    cell.)"""
    import matplotlib.pyplot as plt

    from .plotting import WIDTH, kernel_color

    check_choice("task", task, TASKS)
    check_choice("quantity", quantity, ("test_acc", "test_loss", "train_loss"))
    check_flag("show_seeds", show_seeds)
    doc = stored(f"{task}-curves.json", path)
    runs = doc["runs"]
    fig, ax = plt.subplots(figsize=(WIDTH, 3.4))
    plot_curves(runs, quantity, ax=ax)
    if show_seeds:
        for r in runs:
            ax.plot(r["curves"]["step"], r["curves"][quantity], color=kernel_color(r["kernel"]),
                    linewidth=0.7, alpha=0.8)
    if quantity == "test_acc":
        ax.axhline(chance_rate(runs), color="#888888", linewidth=0.8, linestyle=":",
                   label="majority class")
        if "cues" in doc:
            ax.axhline(doc["cues"]["best"], color="#444444", linewidth=0.8, linestyle="--",
                       label="best cue rule")
    ax.legend()
    return fig


# ---------------------------------------------------------------------------------------------
# the two-stage protocol and the loss landscape
# ---------------------------------------------------------------------------------------------

def options_for(cfg: ExperimentConfig, kernel: str) -> dict:
    """The kernel options of ``cfg`` if ``kernel`` is its kernel, else none (the options of
    one kernel, e.g. the Gaussian width ``c``, mean nothing to another)."""
    check_instance("cfg", cfg, ExperimentConfig, "an ExperimentConfig")
    check_choice("kernel", kernel, tuple(KERNELS))
    return dict(cfg.kernel_options) if kernel == cfg.kernel else {}


def two_stage(cfg: ExperimentConfig, stage1_steps: int, kernels=KERNEL_NAMES,
              stage1_kernel: str = "softmax", progress: bool = True):
    """Stage 1: train one model with ``stage1_kernel`` for ``stage1_steps``. Stage 2: from that
    same model, continue ``cfg.steps`` steps with each kernel (a fresh optimizer, the same
    mini-batches). ``cfg.kernel_options`` go to ``cfg.kernel`` only (:func:`options_for`).
    Returns ``{kernel: (model, result)}`` and the stage-1 result."""
    check_int("stage1_steps", stage1_steps)
    import copy

    cfg = cfg.resolved()
    c1 = replace(cfg, kernel=stage1_kernel, kernel_options=options_for(cfg, stage1_kernel),
                 steps=stage1_steps, eval_every=min(cfg.eval_every, stage1_steps)).resolved()
    shared, r1 = train_model(c1, progress=progress, desc="stage 1")
    out = {}
    for k in kernels:
        m = copy.deepcopy(shared).set_kernel(k, options_for(cfg, k))
        c2 = replace(cfg, kernel=k, kernel_options=options_for(cfg, k), seed=cfg.seed + 1)
        out[k] = train_model(c2, model=m, progress=progress, desc=f"stage 2 {k}")
    return out, r1


def check_landscape(grid, span, n_loss, direction_seed=0):
    """Validate the landscape grid before any training: at least 3 points per side (the trained
    weights are the centre), a positive finite ``span``, ``n_loss >= 1``, a seed >= 0."""
    grid = check_int("grid", grid, minimum=3)
    span = check_positive("span", span)
    return grid, span, check_int("n_loss", n_loss), check_seed("direction_seed", direction_seed)


def _landscape_task(config: dict, stage1_steps: int, kernel: str, grid: int, span: float,
                    n_loss: int, direction_seed: int, stage1_kernel: str, near_seeds) -> dict:
    """One kernel of :func:`landscape_run` (a task for :func:`tdlib.sweep.run`): stage 1 (the
    same for every kernel: it is recomputed here, with the same bits, so that the kernels'
    tasks are independent), stage 2 with ``kernel``, and its losses on the grid. Returns the
    stage results and the losses as lists."""
    from .landscape import loss_fn_for, random_directions, surface

    cfg = ExperimentConfig(**config)
    runs, r1 = two_stage(cfg, stage1_steps, kernels=[kernel], stage1_kernel=stage1_kernel,
                         progress=False)
    model, res = runs[kernel]
    data = load_data(cfg)
    device = training_device(cfg.device)
    loss_fn = loss_fn_for(data["x_train"][:n_loss].to(device), data["y_train"][:n_loss].to(device))
    coords = np.linspace(-span, span, grid)
    d1, d2 = random_directions(model, seed=direction_seed)
    out = {"stage1": r1, "stage2": res, "loss": surface(model, loss_fn, d1, d2, coords, coords),
           "origin": loss_fn(model)}
    if near_seeds:
        c = grid // 2
        near = coords[c - 2:c + 3]
        out["near"] = np.stack([surface(model, loss_fn, *random_directions(model, seed=s), near,
                                        near) for s in near_seeds])
    return out


def landscape_run(cfg: ExperimentConfig, stage1_steps: int, grid: int = 21, span: float = 1.0,
                  n_loss: int = 512, direction_seed: int = 0, stage1_kernel: str = "softmax",
                  near_seeds=(), progress: bool = True, kernels=KERNEL_NAMES, **where) -> dict:
    """Two-stage training (stage 1 with ``stage1_kernel``), then the training loss on a
    ``grid x grid`` square of side ``2 span`` around each stage-2 solution along two
    filter-normalized random directions drawn from ``direction_seed`` (the same random draw for
    both kernels). Directions and the ``n_loss`` training samples live on the model's device.
    For every seed of ``near_seeds`` another pair of directions is drawn and the loss is
    evaluated on the central ``5 x 5`` points of the grid only (arrays ``near_<kernel>`` of
    shape ``(len(near_seeds), 5, 5)`` on ``near_coords``): the local rise over several draws.
    Returns arrays ready for :func:`numpy.savez` plus metadata.

    Each kernel is one task of :func:`tdlib.sweep.run` (:func:`_landscape_task`, which also
    recomputes stage 1): ``where`` (``workers``, ``scheduler``, ``checkpoint``, ``info``) says
    where they run, by default in this process."""
    from . import sweep as runner

    grid, span, n_loss, direction_seed = check_landscape(grid, span, n_loss, direction_seed)
    check_int("stage1_steps", stage1_steps)
    t0 = time.perf_counter()
    check_choice("stage1_kernel", stage1_kernel, tuple(KERNELS))
    near_seeds = [check_int("near seed", v, minimum=0) for v in near_seeds]
    if near_seeds and grid < 5:
        raise ValueError(f"grid: expected at least 5 points per side with near seeds, got {grid}")
    kernels = _distinct("kernels", kernels, lambda k: k)
    for k in kernels:
        check_choice("kernel", k, tuple(KERNELS))
    config = asdict(cfg.resolved())
    tasks = [{"config": config, "stage1_steps": stage1_steps, "kernel": k, "grid": grid,
              "span": span, "n_loss": n_loss, "direction_seed": direction_seed,
              "stage1_kernel": stage1_kernel, "near_seeds": near_seeds} for k in kernels]
    info = where.pop("info", None)
    info = {} if info is None else info
    if where.get("workers") is None and where.get("scheduler") is None:
        where["workers"] = 1
    done = runner.run(_landscape_task, tasks, quiet=not progress, info=info,
                      desc="landscapes", **where)
    coords = np.linspace(-span, span, grid)
    out = {"coords": coords}
    meta = {"stage1": done[0]["stage1"], "stage2": {}, "grid": grid, "span": span,
            "n_loss": n_loss, "direction_seed": direction_seed, "stage1_kernel": stage1_kernel}
    for k, d in zip(kernels, done):
        out[f"loss_{k}"] = np.asarray(d["loss"], dtype=float)
        out[f"origin_{k}"] = d["origin"]
        if near_seeds:
            c = grid // 2
            out["near_coords"], out["near_seeds"] = coords[c - 2:c + 3], np.array(near_seeds)
            out[f"near_{k}"] = np.asarray(d["near"], dtype=float)
        meta["stage2"][k] = d["stage2"]
    meta["provenance"] = book.provenance(wall_seconds=time.perf_counter() - t0,
                                         **{k: v for k, v in runner.record(info).items()
                                            if k != "wall_seconds"})
    return out, meta


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------

def preset(name: str, task: str, **overrides) -> ExperimentConfig:
    """The configuration of preset ``name`` (see :data:`PRESETS`) for ``task``, with overrides."""
    check_choice("preset", name, tuple(PRESETS))
    check_choice("task", task, TASKS)
    return ExperimentConfig(**{"task": task, **PRESETS[name][task], **overrides})


def _config_from_args(a) -> ExperimentConfig:
    """The :class:`ExperimentConfig` of parsed command-line arguments ``a``; raises
    ``ValueError`` for combinations that would silently do something else than asked."""
    names = {f.name for f in fields(ExperimentConfig)}
    kw = {k: v for k, v in vars(a).items() if k in names and v is not None}
    if getattr(a, "gaussian_c", None) is not None:  # options of the Gaussian runs only
        kernels = getattr(a, "kernels", None) or ["softmax", "gaussian"]
        kw["kernel"], kw["kernel_options"] = "gaussian", {"c": check_positive("--c", a.gaussian_c)}
        if getattr(a, "cmd", None) == "curves" and "gaussian" not in kernels:
            raise ValueError(f"--c: the Gaussian width applies to Gaussian runs, but --kernels "
                             f"is {' '.join(kernels)}")
    if getattr(a, "preset", None):
        if a.preset == "paper" and a.task == "text" and not getattr(a, "imdb", None):
            raise ValueError("--preset paper --task text: expected --imdb PATH (the aclImdb "
                             "folder); padded to the preset's 4000 bytes, the short tweets "
                             "would be almost all padding")
        return preset(a.preset, **kw)
    if getattr(a, "imdb", None) and getattr(a, "max_len", None) is None:
        raise ValueError("--imdb without --preset: give --max-len explicitly (the default, 128 "
                         "bytes, would cut every review to its first 128 bytes; the paper's "
                         "preset uses 4000)")
    return ExperimentConfig(**kw)


def main(argv=None) -> int:
    """The command line ``python -m tdlib.experiments {curves,landscape,merge,check}``; returns
    the exit status. Every argument (and the output path) is checked before any work."""
    from . import sweep as runner

    p = argparse.ArgumentParser(prog="python -m tdlib.experiments", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("curves", "landscape", "step-sizes"):
        s = sub.add_parser(name)
        s.add_argument("--task", choices=TASKS, required=True)
        s.add_argument("--out", required=True, help="output file (.json for curves, .npz for landscape)")
        for f in ("steps", "batch_size", "eval_every", "n_eval", "max_len", "image_size", "path_length",
                  "n_train", "n_test", "n_val", "data_seed", "D", "hidden", "H", "layers"):
            s.add_argument("--" + f.replace("_", "-"), dest=f, type=int)
        s.add_argument("--optimizer", choices=OPTIMIZERS)
        s.add_argument("--lr", type=float)
        s.add_argument("--momentum", type=float)
        s.add_argument("--cache-dir", dest="cache_dir")
        s.add_argument("--preset", choices=sorted(PRESETS), help="start from a preset configuration")
        s.add_argument("--device", help="torch device to train on (default cpu), e.g. cuda")
        s.add_argument("--imdb", help="text: the real IMDb folder (aclImdb) instead of the tweets; "
                       "reviews are cut to --max-len bytes, which must then be given (the "
                       "preset 'paper' gives 4000); required by --preset paper --task text")
        s.add_argument("--c", dest="gaussian_c", type=float,
                       help="width c of the Gaussian kernel (default 2 sqrt(d)); Gaussian runs only")
        s.add_argument("--threads", type=int, help="torch threads of every run (default 1, as "
                       "the stored runs; another count can change the last bits)")
        s.add_argument("--quiet", action="store_true", help="no progress bar")
        runner.add_arguments(s)
    sub.choices["curves"].add_argument("--kernels", nargs="+", default=["softmax", "gaussian"])
    sub.choices["curves"].add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ss = sub.choices["step-sizes"]
    ss.add_argument("--kernels", nargs="+", default=["softmax", "gaussian"])
    ss.add_argument("--lrs", nargs="+", type=float, required=True, help="step sizes to try")
    ss.add_argument("--seed", type=int, default=0)
    ss.add_argument("--last-k", dest="last_k", type=int, default=3,
                    help="choose by the validation loss averaged over the last k evaluations")
    ls = sub.choices["landscape"]
    ls.add_argument("--seed", type=int, default=0)
    ls.add_argument("--stage1-steps", dest="stage1_steps", type=int, required=True)
    ls.add_argument("--grid", type=int, default=21)
    ls.add_argument("--span", type=float, default=1.0)
    ls.add_argument("--n-loss", dest="n_loss", type=int, default=512)
    ls.add_argument("--direction-seed", dest="direction_seed", type=int, default=0,
                    help="seed of the two random directions")
    ls.add_argument("--near-seeds", dest="near_seeds", type=int, nargs="*", default=[],
                    help="more direction seeds, evaluated on the central 5x5 points only")
    ls.add_argument("--stage1-kernel", dest="stage1_kernel", choices=sorted(KERNELS),
                    default="softmax", help="kernel of the shared stage 1 (default softmax)")
    mg = sub.add_parser("merge", help="join several curve files (e.g. runs made in parallel) into one")
    mg.add_argument("--out", required=True)
    mg.add_argument("files", nargs="+")
    ck = sub.add_parser("check", help="validate every stored result file and name the bad ones")
    ck.add_argument("folder", nargs="?", default=None, help="default: book/data")
    a = p.parse_args(argv)
    book.git_state()  # the code this process runs, read before any long work
    if a.cmd == "check":
        return book.main(["check"] + ([a.folder] if a.folder else []))
    if a.cmd in ("curves", "landscape", "merge", "step-sizes"):
        want = ".npz" if a.cmd == "landscape" else ".json"
        if Path(a.out).suffix != want:
            p.error(f"--out: expected a {want} file"
                    + (" (its .json is written beside it)" if want == ".npz" else "")
                    + f", got {a.out}")
        try:
            book.check_writable(a.out)
        except OSError as err:
            p.error(str(err))
    if a.cmd == "merge":
        same = sorted({f for f in a.files if [Path(g).resolve() for g in a.files].count(Path(f).resolve()) > 1})
        if same:
            p.error(f"files: {', '.join(same)} given more than once; each run must count once")
        try:
            docs = [load(f) for f in a.files]
            if all("sweep" in d for d in docs):  # step-size sweeps: join them, choose again
                sweep_doc = merge_sweeps(docs)
            else:
                runs = check_runs([r for d in docs for r in d["runs"]])
        except (ValueError, FileNotFoundError, KeyError) as err:
            p.error(str(err))
        merge = runner.command("python -m tdlib.experiments", argv)
        # the recorded command remakes the parts (in any order, or in parallel) and joins them
        parts = [d["provenance"]["command"] for d in docs]
        parts_git = [d["provenance"].get("git") for d in docs]
        if all("sweep" in d for d in docs):
            sweep_doc["provenance"] = book.provenance(
                " && ".join(parts + [merge]),
                wall_seconds=float(sum(r["seconds"] for r in sweep_doc["sweep"])))
            path = book.save_json(a.out, {**sweep_doc, "parts": parts, "parts_git": parts_git})
            print(f"wrote {path} ({len(sweep_doc['sweep'])} runs)")
            return 0
        path = save(runs, a.out, command=" && ".join(parts + [merge]),
                    extra={"parts": parts, "parts_git": parts_git, **shared_extras(docs)})
        print(f"wrote {path} ({len(runs)} runs)")
        return 0
    command = runner.command("python -m tdlib.experiments", argv)
    try:
        cfg = _config_from_args(a)
        if a.threads is not None:
            torch.set_num_threads(check_int("threads", a.threads))
        cfg.resolved()
        training_device(cfg.device)
        if a.cmd == "curves":
            kernels = _distinct("kernels", a.kernels, lambda k: k)
            for k in kernels:
                check_sweep(replace(cfg, kernel=k, kernel_options=options_for(cfg, k)), [k], a.seeds)
        elif a.cmd == "step-sizes":
            check_sweep(cfg, a.kernels, [a.seed])
            if cfg.n_val < 1:
                raise ValueError("--n-val: a step-size sweep needs a validation split (>= 1)")
            _distinct("lrs", a.lrs, lambda v: check_positive("lr", v))
            check_int("last_k", a.last_k)
        else:
            check_landscape(a.grid, a.span, a.n_loss, a.direction_seed)
            near = (_distinct("--near-seeds", a.near_seeds,
                              lambda v: check_seed("--near-seeds", v)) if a.near_seeds else [])
            if a.direction_seed in near:
                raise ValueError(f"--near-seeds: expected seeds other than --direction-seed "
                                 f"{a.direction_seed} (that draw is the full grid's), got "
                                 f"{a.near_seeds}")
            if a.near_seeds and a.grid < 5:
                raise ValueError(f"--grid: expected at least 5 with --near-seeds, got {a.grid}")
            check_int("stage1_steps", a.stage1_steps)
            if Path(a.out).suffix != ".npz":
                raise ValueError(f"--out: expected a .npz file (its .json is written beside "
                                 f"it), got {a.out}")
            book.check_writable(Path(a.out).with_suffix(".json"))
        out = Path(a.out)
        where = runner.options(a, out.with_name(f".{out.stem}.sweep-parts"))
    except (ValueError, TypeError, OSError) as err:
        p.error(str(err))
    info: dict = {}
    where.update(info=info, threads=1 if a.threads is None else a.threads)
    if a.cmd == "curves":
        cfgs = [replace(cfg, kernel=k, kernel_options=options_for(cfg, k), seed=int(s))
                for k in kernels for s in a.seeds]
        results = run_many(cfgs, progress=not a.quiet, **where)
        for r in results:
            print(f"{cfg.task}/{r['kernel']}/seed {r['seed']}: {r['seconds']:.0f} s, final "
                  f"test accuracy {r['curves']['test_acc'][-1]:.3f}", flush=True)
        extra = {"cues": pathfinder_cues(cfg)} if cfg.task == "pathfinder" else None
        path = save(results, a.out, command=command, extra=extra, sweep=info)
        print(f"wrote {path} ({sum(r['seconds'] for r in results):.0f} s of training, "
              f"{info['wall_seconds']:.0f} s of wall time on {info['workers']} workers)")
    elif a.cmd == "step-sizes":
        results = step_size_sweep(cfg, a.kernels, a.lrs, a.seed, progress=not a.quiet, log=True,
                                  **where)
        choice = choose_step_sizes(results, a.last_k)
        how = {**runner.record(info), "run_seconds": float(sum(r["seconds"] for r in results))}
        doc = {"provenance": book.provenance(command, **how), "sweep": results,
               "choice": choice, "last_k": a.last_k}
        path = book.save_json(a.out, doc)
        print(f"wrote {path}: " + ", ".join(f"{k} lr {v['lr']:g}" for k, v in choice.items()))
    else:
        arrays, meta = landscape_run(cfg, a.stage1_steps, grid=a.grid, span=a.span, n_loss=a.n_loss,
                                     direction_seed=a.direction_seed, near_seeds=a.near_seeds,
                                     stage1_kernel=a.stage1_kernel, progress=not a.quiet,
                                     **where)
        meta["provenance"]["command"] = command
        # one pair: the .json records the checksum of its .npz and is moved into place last
        book.save_pair(out, arrays, out.with_suffix(".json"), meta)
        seconds = meta["provenance"]["wall_seconds"]
        print(f"wrote {out} and {out.with_suffix('.json')} ({seconds:.0f} s)")
    runner.clear(where["checkpoint"])
    return 0


if __name__ == "__main__":
    # the tasks must be found by name (tdlib.experiments._run_task), not in __main__
    from tdlib.experiments import main as _main

    raise SystemExit(_main())
