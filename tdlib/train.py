"""Full-batch gradient descent on the one-layer model, and the history every GD loop records."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional

import numpy as np
import torch

from .attention import PARAMS, AttentionLayer
from .checks import check_choice, check_int, check_positive


class DivergenceError(FloatingPointError):
    """Gradient descent produced a non-finite (or exploding) loss."""


@dataclass(repr=False)
class History:
    """What a run recorded. ``loss[t]`` is ``f`` at the iterate *before* step ``t``.

    ``grad_norm[p][t]`` is ``||grad_p f||_F`` at that iterate, ``extra[key][t]`` whatever the
    callback returned under ``key``; ``stop`` says why the run ended (``"tol"``, ``"steps"``,
    ``"diverged"``); ``lr`` and ``trainable`` record the set-up.
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

    def __repr__(self) -> str:  # a one-line summary, not thousands of numbers
        return (
            f"History({self.kernel or 'model'}: {self.steps} steps of size {self.lr:g} on "
            f"{', '.join(self.trainable)}; loss {self.loss[0]:.3e} -> {self.loss[-1]:.3e}; "
            f"stopped by {self.stop}; {self.seconds:.2f} s)"
        )


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
    ``on_divergence="raise"`` a :class:`DivergenceError` names the step; with ``"stop"`` the run
    ends with ``history.stop == "diverged"``. ``progress=None`` shows a progress bar only for runs
    that last more than two seconds.
    """
    trainable = tuple(trainable)
    if not trainable:
        raise ValueError(f"trainable: expected a non-empty subset of {PARAMS}, got an empty set")
    for p in trainable:
        check_choice("trainable parameter", p, PARAMS)
    lr = check_positive("lr (step size)", lr)
    steps = check_int("steps", steps, minimum=0)
    tol = check_positive("tol", tol, strict=False)
    check_choice("on_divergence", on_divergence, ("raise", "stop"))
    X, Y = model.check_XY(X, Y)

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
                    raise DivergenceError(
                        f"gradient descent diverged at step {t}: loss became {f:.3e} "
                        f"(it started at {hist.loss[0] if hist.loss else float('nan'):.3e}); "
                        f"the step size lr={lr:g} is too large for this problem - try a smaller one"
                    )
                break
            hist.loss.append(f)
            grads = torch.autograd.grad(loss, [params[p] for p in trainable])
            for p, g in zip(trainable, grads):
                hist.grad_norm[p].append(float(g.detach().norm()))
            if callback is not None:
                for key, value in (callback(model, t) or {}).items():
                    hist.extra.setdefault(key, []).append(float(value))
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
