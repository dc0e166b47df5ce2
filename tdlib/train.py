"""Full-batch gradient descent on the one-layer model, and the history every GD loop records."""
from __future__ import annotations

import math
import textwrap
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional

import numpy as np
import torch

from .attention import PARAMS, AttentionLayer
from .checks import check_choice, check_finite, check_int, check_positive


STEP_GROW = 1.1
"""Factor by which the safeguarded step size grows after an accepted step."""


def next_step_size(lr, accepted, grow: float = STEP_GROW):
    """The one step-size rule of tdlib's safeguarded gradient descent (``query.run`` with
    ``adaptive=True`` and ``phase.batched_gd``): a step that does not raise the loss is taken
    and the next step size is ``grow * lr``; a step that would raise it is not taken and the
    step size is halved (the iteration is spent). ``lr`` and ``accepted`` may be a float and a
    bool, or tensors of per-instance step sizes and verdicts."""
    grow = check_positive("grow", grow)
    if isinstance(accepted, torch.Tensor):
        return torch.where(accepted, lr * grow, lr / 2)
    lr = check_positive("lr (step size)", lr)
    return lr * grow if accepted else lr / 2


MESSAGE_WIDTH = 70
"""Width to which divergence messages are wrapped: with the ``DivergenceError: `` that a
traceback or a ``print`` puts in front, a line still fits an 88-character column."""


class DivergenceError(FloatingPointError):
    """Gradient descent produced a non-finite (or exploding) loss.

    The message (``args[0]``) is one sentence; ``str(err)`` wraps it into lines of at most
    :data:`MESSAGE_WIDTH` characters, never inside a word such as ``lr=0.5``."""

    def __str__(self) -> str:
        return "\n".join(textwrap.wrap(super().__str__(), MESSAGE_WIDTH,
                                        break_long_words=False, break_on_hyphens=False))


class PlateauError(DivergenceError):
    """Gradient descent landed on a flat region it cannot leave: every kernel weight is
    (numerically) zero, so the output and the gradient vanish and the loss stays at the loss
    ``1/2 ||Y||^2`` of the zero output. For the Gaussian kernel this is the plateau at
    infinity: a large step throws every query far from every key."""


PLATEAU_WEIGHT = 1e-4
"""A run is on the plateau when no kernel weight exceeds this (and the loss is, to a relative
``1e-3``, the loss ``1/2 ||Y||^2`` of the zero output)."""


def _check_trainable(trainable) -> tuple:
    """``trainable`` as a tuple of distinct parameter names, or a clear error."""
    if isinstance(trainable, str):
        raise TypeError(f"trainable: expected a sequence of parameter names such as "
                        f"({trainable!r},), got the string {trainable!r}")
    try:
        trainable = tuple(trainable)
    except TypeError:
        raise TypeError(f"trainable: expected a sequence of names from {PARAMS}, "
                        f"got {trainable!r}") from None
    if not trainable:
        raise ValueError(f"trainable: expected a non-empty subset of {PARAMS}, got an empty set")
    for p in trainable:
        check_choice("trainable parameter", p, PARAMS)
    if len(set(trainable)) != len(trainable):
        dup = sorted({p for p in trainable if trainable.count(p) > 1})
        raise ValueError(f"trainable: expected distinct parameter names, got {trainable} "
                         f"({', '.join(dup)} more than once would multiply its step)")
    return trainable


def _divergence_message(model, X, t: int, f: float, first: float | None, lr: float) -> str:
    """Why the loss is not finite (or exploded) at step ``t``: the step size only when a step
    was taken and the kernel was not already returning non-finite numbers by itself."""
    with torch.no_grad():
        Q, K = model.queries_keys(X)
        S = model._scores(X)
    weights_ok = all(bool(torch.isfinite(getattr(model, p)).all()) for p in PARAMS)
    qk_ok = bool(torch.isfinite(Q).all() and torch.isfinite(K).all())
    kernel_bad = not bool(torch.isfinite(S).all())
    where = f"loss {f:.3e}" + (f" (it started at {first:.3e})" if first is not None else "")
    if t == 0:
        if kernel_bad and qk_ok:
            return (f"kernel {model.kernel_name!r} returned NaN/Inf at the initial weights "
                    f"(before any step; queries and keys are finite): the step size lr={lr:g} "
                    f"is not the cause - check the kernel")
        return (f"the loss is already {f:.3e} at the initial weights (before any step, so the "
                f"step size lr={lr:g} is not the cause): the output overflows in "
                f"{model.W_Q.dtype} - use smaller inputs, a smaller init scale or float64")
    if kernel_bad and qk_ok and weights_ok:
        mag = float(max(Q.abs().max(), K.abs().max()))
        if mag < 1e3:
            return (f"kernel {model.kernel_name!r} returned NaN/Inf at step {t} for finite "
                    f"queries and keys of size at most {mag:.3g}: {where}; the kernel, not "
                    f"the step size lr={lr:g}, is the likely cause")
    return (f"gradient descent diverged at step {t}: {where}; the step size lr={lr:g} is too "
            f"large for this problem - try a smaller one")


@dataclass(repr=False)
class History:
    """What a run recorded. ``loss[t]`` is ``f`` at the iterate *before* step ``t``.

    ``grad_norm[p][t]`` is ``||grad_p f||_F`` at that iterate, ``extra[key][t]`` whatever the
    callback returned under ``key``; ``stop`` says why the run ended (``"tol"``, ``"steps"``,
    ``"diverged"``, ``"plateau"``); ``lr`` and ``trainable`` record the set-up.
    """

    lr: float
    trainable: tuple
    loss: List[float] = field(default_factory=list)
    grad_norm: Dict[str, List[float]] = field(default_factory=dict)
    extra: Dict[str, List[float]] = field(default_factory=dict)
    stop: str = ""
    seconds: float = 0.0
    kernel: str = ""

    @property
    def steps(self) -> int:
        """Number of gradient steps taken."""
        return max(len(self.loss) - 1, 0)

    @property
    def final_loss(self) -> float:
        """The loss at the last recorded iterate."""
        if not self.loss:
            raise ValueError(f"final_loss: this run recorded no finite loss (stopped by "
                             f"{self.stop or 'nothing yet'})")
        return self.loss[-1]

    def stop_if_done(self, f: float, t: int, steps: int, tol: float) -> bool:
        """The stopping rule of every GD loop in tdlib, applied after recording iterate ``t``
        with loss ``f``: stop with ``"tol"`` once ``f <= tol``, else with ``"steps"`` at
        ``t == steps``. Returns whether to stop (and records the reason in :attr:`stop`)."""
        if f <= tol:
            self.stop = "tol"
        elif t == steps:
            self.stop = "steps"
        return bool(self.stop)

    def as_arrays(self) -> Dict[str, np.ndarray]:
        """Everything recorded, as NumPy arrays keyed by name."""
        out = {"loss": np.asarray(self.loss)}
        out.update({f"grad_norm_{p}": np.asarray(v) for p, v in self.grad_norm.items()})
        out.update({k: np.asarray(v) for k, v in self.extra.items()})
        return out

    def plot(self, ax=None, label: str | None = None, **kwargs):
        """Loss against step on a log scale; returns the axes."""
        from .plotting import kernel_style, new_axes

        ax = ax if ax is not None else new_axes()
        for key, value in kernel_style(self.kernel).items():
            kwargs.setdefault(key, value)
        ax.semilogy(np.arange(len(self.loss)), np.maximum(self.loss, 1e-300), label=label, **kwargs)
        ax.set_xlabel("step $t$")
        ax.set_ylabel("training loss $f(\\theta_t)$")
        if label is not None:
            ax.legend()
        return ax

    def __repr__(self) -> str:
        """One short line (within 88 characters for the book's kernels, step sizes and stop
        reasons): the kernel, the step size, the trained matrices, the number of steps, the
        loss ``f`` at the start and the end, and why the run stopped when it did not simply
        run all its steps (the wall time and the curves are attributes, not in the summary)."""
        loss = (f"f {self.loss[0]:.1e} -> {self.loss[-1]:.1e}" if self.loss
                else "no finite loss recorded")
        why = f", stop: {self.stop or 'nothing yet'}" if self.stop != "steps" else ""
        return (f"History({self.kernel or 'model'}, lr={self.lr:g}, {'+'.join(self.trainable)}: "
                f"{self.steps} steps, {loss}{why})")


def train(
    model: AttentionLayer,
    X,
    Y,
    lr: float,
    steps: int,
    trainable: Iterable[str] = ("W_Q", "W_K", "W_V"),
    tol: float = 0.0,
    callback: Optional[Callable[[AttentionLayer, int], Dict[str, float]]] = None,
    on_divergence: str = "raise",
    blowup: float = 1e8,
    progress: Optional[bool] = None,
) -> History:
    """Run ``steps`` steps of full-batch GD ``W <- W - lr * grad_W f`` on the trainable weights.

    ``f = 1/2 sum_i ||T(X_i) - Y_i||_F^2`` as in :meth:`AttentionLayer.loss`. The run stops early
    once ``f <= tol``. ``callback(model, t)`` is called at every recorded iterate and may return a
    dict of numbers to record (certificates such as ``lambda_min``). If the loss becomes non-finite
    or exceeds ``blowup`` times its initial value, the run is divergent: with
    ``on_divergence="raise"`` a :class:`DivergenceError` names the step (and says whether the
    step size or the kernel is to blame); with ``"stop"`` the run ends with
    ``history.stop == "diverged"``.

    A run that lands on a plateau (every kernel weight below :data:`PLATEAU_WEIGHT` and the
    loss equal to ``1/2 ||Y||^2``, the loss of the zero output, as when a large step throws
    every Gaussian query far from every key) cannot move any more: it raises
    :class:`PlateauError` (a :class:`DivergenceError`), or with ``on_divergence="stop"`` ends
    with ``history.stop == "plateau"``. ``progress=None`` shows a progress bar only for runs
    that last more than two seconds.
    """
    if not isinstance(model, AttentionLayer):
        raise TypeError(f"model: expected a tdlib.AttentionLayer, got {type(model).__name__}")
    trainable = _check_trainable(trainable)
    lr = check_positive("lr (step size)", lr)
    steps = check_int("steps", steps, minimum=0)
    tol = check_positive("tol", tol, strict=False)
    blowup = check_positive("blowup", blowup)
    check_choice("on_divergence", on_divergence, ("raise", "stop"))
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a function (model, t) -> dict, got {callback!r}")
    X, Y = model.check_XY(X, Y)
    for p in PARAMS:   # a NaN start is the weights' fault, not the step size's
        check_finite(f"model.{p} (the initial weights)", getattr(model, p).detach())
    zero_output_loss = 0.5 * float((Y.double() ** 2).sum())

    params = {p: getattr(model, p) for p in PARAMS}
    for p, W in params.items():
        W.requires_grad_(p in trainable)
    hist = History(lr=lr, trainable=trainable, kernel=model.kernel_name)
    hist.grad_norm = {p: [] for p in trainable}

    bar = None
    start = time.perf_counter()
    try:
        if progress is not False:
            from tqdm import tqdm  # text bar on stderr: no widget needed in the built pages

            bar = tqdm(total=steps, delay=0 if progress else 2.0, leave=False, desc=f"GD ({model.kernel_name})")
        for t in range(steps + 1):
            loss = 0.5 * ((model._forward(X) - Y) ** 2).sum()
            f = float(loss.detach())
            if not math.isfinite(f) or (hist.loss and f > blowup * max(hist.loss[0], 1e-300)):
                hist.stop = "diverged"
                if on_divergence == "raise":
                    first = hist.loss[0] if hist.loss else None
                    raise DivergenceError(_divergence_message(model, X, t, f, first, lr))
                break
            hist.loss.append(f)
            grads = torch.autograd.grad(loss, [params[p] for p in trainable])
            for p, g in zip(trainable, grads):
                hist.grad_norm[p].append(float(g.detach().norm()))
            if callback is not None:
                record = callback(model, t) or {}
                if not isinstance(record, Mapping):
                    raise TypeError(f"callback: expected it to return a dict of numbers or None, "
                                    f"got {type(record).__name__} at step {t}")
                for key, value in record.items():
                    try:
                        value = float(value)
                    except (TypeError, ValueError):
                        raise TypeError(f"callback: expected a number under {key!r}, got "
                                        f"{value!r} at step {t}") from None
                    hist.extra.setdefault(key, []).append(value)
            if f > tol and abs(f - zero_output_loss) <= 1e-3 * zero_output_loss:
                with torch.no_grad():  # rare: only when the loss is that of the zero output
                    top = float(model._scores(X).abs().max())
                if top <= PLATEAU_WEIGHT:
                    hist.stop = "plateau"
                    if on_divergence == "raise":
                        cause = (f"after {t} steps: the step size lr={lr:g} is too large for "
                                 f"this problem - try a smaller one" if t else
                                 "at the initial weights (before any step): use a smaller "
                                 "init scale or inputs")
                        raise PlateauError(
                            f"gradient descent is stuck on a plateau {cause}. Every kernel weight "
                            f"is at most {top:.1e}, so the output and the gradient vanish and "
                            f"the loss stays at {f:.6e} = 1/2 ||Y||^2, the loss of the zero "
                            f"output (for the Gaussian kernel: every query is far from every key)")
                    break
            if hist.stop_if_done(f, t, steps, tol):
                break
            with torch.no_grad():
                for p, g in zip(trainable, grads):
                    params[p].sub_(lr * g)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        for W in params.values():
            W.requires_grad_(True)
        hist.seconds = time.perf_counter() - start
    return hist
