"""Loss landscapes along filter-normalized random directions (Li et al. 2018).

Around trained weights ``theta*`` we draw two random directions ``d1, d2`` (one Gaussian tensor
per parameter) and rescale them **filter by filter**: every row ``d_row`` of a weight matrix
(one output unit, or one token's embedding) gets the norm of the same row of ``theta*``,

    d_row <- d_row / ||d_row|| * ||theta*_row||,

so that moving by ``zeta_1 d1 + zeta_2 d2`` changes every unit by the same *relative* amount whatever the
scale of its weights. One-dimensional parameters (biases, layer-norm gains) get direction zero,
the choice of Li et al. for biases and normalisation layers. The picture is then

    F(zeta_1, zeta_2) = f(theta* + zeta_1 d1 + zeta_2 d2)   on a grid of (zeta_1, zeta_2),

and ``F(0, 0)`` is the training loss at ``theta*`` (checked by the tests).
"""
from __future__ import annotations

import math
from typing import Callable, Dict

import numpy as np
import torch

from .checks import check_int, check_seed, real_array


def _check_module(model) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module (e.g. a tdlib Classifier), got "
                        f"{type(model).__name__}")
    return model

Direction = Dict[str, torch.Tensor]


def filter_normalize(direction: Direction, model: torch.nn.Module) -> Direction:
    """Rescale ``direction`` row by row to the norms of the model's rows (1-d parameters -> 0)."""
    out = {}
    for name, p in model.named_parameters():
        if name not in direction:
            raise KeyError(f"direction: missing parameter {name!r}")
        d = direction[name].to(p.device)
        if d.shape != p.shape:
            raise ValueError(f"direction[{name!r}]: expected shape {tuple(p.shape)}, got {tuple(d.shape)}")
        if p.ndim <= 1:
            out[name] = torch.zeros_like(p)
            continue
        w, dd = p.detach().reshape(p.shape[0], -1), d.reshape(p.shape[0], -1)
        scale = w.norm(dim=1, keepdim=True) / dd.norm(dim=1, keepdim=True).clamp_min(1e-12)
        out[name] = (dd * scale).reshape(p.shape)
    return out


def random_directions(model: torch.nn.Module, seed: int = 0, k: int = 2):
    """``k`` filter-normalized random directions for ``model``, drawn from ``seed``.

    The raw Gaussian draw depends only on ``seed`` and the parameter shapes, so two models with
    the same architecture get the same draw (each then normalized against its own weights);
    every direction tensor lives on the device of its parameter.
    """
    _check_module(model)
    g = torch.Generator().manual_seed(check_seed("seed", seed))
    dirs = []
    for _ in range(check_int("k", k)):
        # drawn on the CPU (the same numbers whatever the device), then moved to the model's
        raw = {n: torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device)
               for n, p in model.named_parameters()}
        dirs.append(filter_normalize(raw, model))
    return dirs


def loss_fn_for(x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> Callable[[torch.nn.Module], float]:
    """``model -> mean cross-entropy on (x, y)`` in evaluation mode, without gradients; each
    batch is moved to the model's device (keep ``x``, ``y`` there to avoid the copies)."""
    batch = check_int("batch", batch)
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)) or len(x) == 0 \
            or len(x) != len(y):
        raise ValueError(f"x, y: expected tensors of inputs and labels of the same non-zero "
                         f"length, got {getattr(x, 'shape', x)!r:.60} and "
                         f"{getattr(y, 'shape', y)!r:.60}")

    @torch.no_grad()
    def f(model):
        was = model.training
        model.eval()
        device = next(model.parameters()).device
        total = 0.0
        for i in range(0, len(x), batch):
            xb, yb = x[i:i + batch].to(device), y[i:i + batch].to(device)
            total += float(torch.nn.functional.cross_entropy(model(xb), yb, reduction="sum"))
        model.train(was)
        return total / len(x)

    return f


def _floats(name: str, values) -> np.ndarray:
    """``values`` as a float array, or an error naming ``name``."""
    return real_array(name, values, "an array of numbers")


def _coords(name: str, values) -> np.ndarray:
    """A non-empty 1-d array of finite grid coordinates, or an error naming ``name``."""
    a = real_array(name, values, "a 1-d list of numbers")
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-d list of numbers, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: expected finite numbers, got {a.tolist()!r:.80}")
    return a


@torch.no_grad()
def surface(model: torch.nn.Module, loss_fn: Callable[[torch.nn.Module], float], d1: Direction,
            d2: Direction, alphas, betas) -> np.ndarray:
    """``F[i, j] = loss_fn(theta* + alphas[i] d1 + betas[j] d2)``; the model is restored after."""
    params = dict(_check_module(model).named_parameters())
    for name, d in (("d1", d1), ("d2", d2)):
        if not isinstance(d, dict) or set(d) != set(params):
            raise ValueError(f"{name}: expected a direction with one entry per model parameter "
                             f"(from random_directions), got {type(d).__name__}")
    theta = {n: p.detach().clone() for n, p in params.items()}
    alphas, betas = _coords("alphas", alphas), _coords("betas", betas)
    F = np.empty((len(alphas), len(betas)))
    try:
        for i, a in enumerate(alphas):
            for j, b in enumerate(betas):
                for n, p in params.items():
                    p.copy_(theta[n] + a * d1[n] + b * d2[n])
                F[i, j] = loss_fn(model)
                if not np.isfinite(F[i, j]):
                    raise FloatingPointError(
                        f"loss_fn: returned {F[i, j]} at (zeta_1, zeta_2) = ({a:g}, {b:g}); the loss "
                        f"overflows that far from the trained weights - use a smaller span")
    finally:
        for n, p in params.items():
            p.copy_(theta[n])
    return F


def half_axis_rises(F, coords, step: int = 1):
    """The local shape of a landscape ``F`` (shape ``(..., g, g)`` on the grid ``coords`` of odd
    length ``g``, centred on 0): the rise ``F(+-r d_i) - F(0, 0)`` along the four half-axes at
    radius ``r = step`` grid spacings. Returns ``(r, rises)`` with ``rises`` of shape ``(..., 4)``
    (order: +zeta_1, -zeta_1, +zeta_2, -zeta_2). For a quadratic ``F`` their mean is
    ``r^2/4`` times the trace of its 2x2 Hessian in the plane: curvature at the centre, which
    the mean of ``F`` over the whole square (dominated by the far field) does not measure."""
    coords = _coords("coords", coords)
    F = _floats("F", F)
    g = len(coords)
    if g % 2 == 0 or not np.allclose(coords, -coords[::-1]) or coords[g // 2] != 0:
        raise ValueError(f"coords: expected an odd number of points symmetric about 0, got "
                         f"{coords.tolist()!r:.80}")
    if F.shape[-2:] != (g, g):
        raise ValueError(f"F: expected a last shape ({g}, {g}) (the grid), got {F.shape}")
    if not np.isfinite(F).all():
        raise ValueError(f"F: expected finite losses, got {int((~np.isfinite(F)).sum())} "
                         f"NaN/Inf")
    step = check_int("step", step)
    c = g // 2
    if step > c:
        raise ValueError(f"step: expected at most {c} grid spacings (the grid's half-width), "
                         f"got {step}")
    centre = F[..., c, c]
    rises = np.stack([F[..., c + step, c], F[..., c - step, c], F[..., c, c + step],
                      F[..., c, c - step]], axis=-1) - centre[..., None]
    return float(coords[c + step]), rises


def flatter(rises_a, rises_b, names=("a", "b")) -> str:
    """Which of two kernels has the flatter centre, from their half-axis rises on the **same**
    draws of directions (equal shapes, e.g. ``(draws, 4)``; both kernels share each raw draw,
    so the rises pair up): ``names[0]`` if every paired difference ``b - a`` is positive,
    ``names[1]`` if every one is negative, else ``"tie"`` (the difference lies within its
    spread over directions)."""
    a, b = _floats("rises_a", rises_a), _floats("rises_b", rises_b)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"rises_a, rises_b: expected rises of equal, non-empty shapes (one "
                         f"per draw and half-axis, paired), got {a.shape} and {b.shape}")
    for name, r in (("rises_a", a), ("rises_b", b)):
        if not np.isfinite(r).all():
            raise ValueError(f"{name}: expected finite rises, got "
                             f"{int((~np.isfinite(r)).sum())} NaN/Inf")
    diff = b - a
    if (diff > 0).all():
        return names[0]
    if (diff < 0).all():
        return names[1]
    return "tie"


# ---------------------------------------------------------------------------------------------
# Stored landscapes (book/data/experiments/*-landscape.npz and .json): what the chapter reads
# ---------------------------------------------------------------------------------------------

STORED_KERNELS = ("softmax", "gaussian")
"""The kernels whose surfaces a stored landscape holds (the chapter reads both)."""


def _grid_problems(name: str, a, size=None) -> list:
    """Problems of a stored 1-d grid: finite, strictly increasing, ``size`` points if given."""
    a = np.asarray(a)
    if a.dtype.kind not in "fiu" or a.ndim != 1 or a.size < 3:
        return [f"field {name!r}: expected a 1-d grid of at least 3 numbers, got dtype "
                f"{a.dtype} and shape {a.shape}"]
    if not np.isfinite(a).all():
        return [f"field {name!r}: expected finite grid coordinates, got "
                f"{int((~np.isfinite(a)).sum())} NaN/Inf"]
    if not (np.diff(a) > 0).all():
        return [f"field {name!r}: expected strictly increasing grid coordinates, got "
                f"{a.tolist()!r:.80}"]
    if size is not None and a.size != size:
        return [f"field {name!r}: expected {size} points, got {a.size}"]
    return []


def _surface_problems(name: str, F, shape: tuple) -> list:
    F = np.asarray(F)
    if F.dtype.kind != "f" or F.shape != shape:
        return [f"field {name!r}: expected float losses of shape {shape} (one per grid point), "
                f"got dtype {F.dtype} and shape {F.shape}"]
    if not (np.isfinite(F).all() and (F > 0).all()):
        return [f"field {name!r}: expected positive finite losses, got "
                f"{int((~np.isfinite(F)).sum())} NaN/Inf and {int((F <= 0).sum())} <= 0"]
    return []


def check_arrays(arrays, meta=None) -> list:
    """The problems of a stored landscape's arrays (an empty list when the chapter can read
    them), each naming its field. Expected: ``coords`` (``g`` points, odd, strictly increasing,
    symmetric about 0), ``loss_<k>`` of shape ``(g, g)`` (positive, finite) and ``origin_<k>``
    (the number ``F(0, 0)``, equal to the centre of ``loss_<k>``) for each kernel of
    :data:`STORED_KERNELS`; optionally ``near_coords`` (the 5 central points of ``coords``),
    ``near_seeds`` (distinct seeds ``>= 0``) and ``near_<k>`` of shape ``(seeds, 5, 5)``. With
    ``meta`` (the ``.json`` written with them) its ``grid`` and ``span`` must match ``coords``."""
    if not hasattr(arrays, "keys"):
        return [f"expected a mapping of named arrays, got {type(arrays).__name__}"]
    problems = [f"field {k!r}: missing (expected {why})" for k, why in
                [("coords", "the grid coordinates")] +
                [(f"{p}_{k}", w) for k in STORED_KERNELS for p, w in
                 (("loss", f"the {k} surface"), ("origin", f"the {k} loss at the centre"))]
                if k not in arrays]
    if "coords" not in arrays:
        return problems
    coords = np.asarray(arrays["coords"])
    grid = _grid_problems("coords", coords)
    if grid:
        return problems + grid
    g, c = coords.size, coords.size // 2
    if g % 2 == 0 or coords[c] != 0 or not np.allclose(coords, -coords[::-1]):
        problems.append(f"field 'coords': expected an odd number of points symmetric about 0, "
                        f"got {coords.tolist()!r:.80}")
        return problems
    for k in STORED_KERNELS:
        if f"loss_{k}" not in arrays:
            continue
        bad = _surface_problems(f"loss_{k}", arrays[f"loss_{k}"], (g, g))
        problems += bad
        if f"origin_{k}" in arrays and not bad:
            o = np.asarray(arrays[f"origin_{k}"])
            centre = float(np.asarray(arrays[f"loss_{k}"])[c, c])
            if o.size != 1 or o.dtype.kind not in "fiu" or not np.isfinite(o).all():
                problems.append(f"field 'origin_{k}': expected one finite number, got dtype "
                                f"{o.dtype} and shape {o.shape}")
            elif abs(float(o.reshape(())) - centre) > 1e-6 * max(1.0, abs(centre)):
                problems.append(f"field 'origin_{k}': expected the loss at the centre of "
                                f"loss_{k}, {centre:.6g}, got {float(o.reshape(())):.6g}")
    near = [k for k in arrays if k.startswith("near_")]
    if near:
        missing = [k for k in ["near_coords", "near_seeds"] + [f"near_{k}" for k in
                                                                STORED_KERNELS]
                   if k not in arrays]
        if missing:
            return problems + [f"field {missing[0]!r}: missing (the near-centre draws are "
                               f"stored as near_coords, near_seeds and near_<kernel>)"]
        bad = _grid_problems("near_coords", arrays["near_coords"], 5)
        if not bad and g >= 5 and not np.array_equal(arrays["near_coords"],
                                                     coords[c - 2:c + 3]):
            bad = ["field 'near_coords': expected the 5 central points of coords, got "
                   f"{np.asarray(arrays['near_coords']).tolist()!r:.80}"]
        seeds = np.asarray(arrays["near_seeds"])
        if seeds.dtype.kind not in "iu" or seeds.ndim != 1 or seeds.size == 0 \
                or (seeds < 0).any() or len(set(seeds.tolist())) != seeds.size:
            bad.append(f"field 'near_seeds': expected a 1-d array of distinct integer seeds "
                       f">= 0, got dtype {seeds.dtype} and values {seeds.tolist()!r:.60}")
        problems += bad
        if not bad:
            for k in STORED_KERNELS:
                problems += _surface_problems(f"near_{k}", arrays[f"near_{k}"],
                                              (seeds.size, 5, 5))
    if isinstance(meta, dict) and not problems:
        if meta.get("grid") != g:
            problems.append(f"field 'grid' of the .json: expected {g} (the points of coords), "
                            f"got {meta.get('grid')!r}")
        span = meta.get("span")
        if not isinstance(span, (int, float)) or isinstance(span, bool) \
                or not math.isclose(float(span), float(coords[-1]), rel_tol=1e-9):
            problems.append(f"field 'span' of the .json: expected {float(coords[-1])} (the "
                            f"last point of coords), got {span!r}")
    return problems


def _count(doc, *path):
    """``doc[path[0]][path[1]]...`` if it is an integer >= 1, else ``None``."""
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc if isinstance(doc, int) and not isinstance(doc, bool) and doc >= 1 else None


def check_meta(meta) -> list:
    """The problems of a stored landscape's ``.json`` (an empty list when the chapter can read
    it), each naming its field: ``grid`` (an odd integer >= 3), ``span`` (positive), ``n_loss``
    and ``stage1.config.steps`` (integers >= 1), for each kernel of :data:`STORED_KERNELS`
    ``stage2.<k>.config.steps`` and ``stage2.<k>.n_params`` (integers >= 1), and
    ``provenance.wall_seconds`` (a finite number >= 0)."""
    if not isinstance(meta, dict):
        return [f"expected a JSON object, got {type(meta).__name__}"]
    problems = []
    g = meta.get("grid")
    if _count(meta, "grid") is None or g < 3 or g % 2 == 0:
        problems.append(f"field 'grid': expected an odd integer >= 3, got {g!r}")
    span = meta.get("span")
    if isinstance(span, bool) or not isinstance(span, (int, float)) \
            or not (math.isfinite(span) and span > 0):
        problems.append(f"field 'span': expected a positive finite number, got {span!r}")
    for path in [("n_loss",), ("stage1", "config", "steps")] + [
            ("stage2", k, f) for k in STORED_KERNELS for f in ("n_params",)] + [
            ("stage2", k, "config", "steps") for k in STORED_KERNELS]:
        if _count(meta, *path) is None:
            problems.append(f"field {'.'.join(path)!r}: expected an integer >= 1, got "
                            f"{_lookup(meta, path)!r:.60}")
    wall = _lookup(meta, ("provenance", "wall_seconds"))
    if isinstance(wall, bool) or not isinstance(wall, (int, float)) \
            or not (math.isfinite(wall) and wall >= 0):
        problems.append(f"field 'provenance.wall_seconds': expected a finite number >= 0, got "
                        f"{wall!r}")
    return problems


def _lookup(doc, path):
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return "(missing)"
        doc = doc[key]
    return doc


def plot_pair(coords, surfaces: Dict[str, np.ndarray], kind: str = "contour", levels: int = 20,
              vmax: float | None = None, fig=None):
    """Side-by-side contour (``kind="contour"``) or surface (``"surface"``) plots of several
    landscapes on the **same** grid and colour scale (log10 of the loss)."""
    import matplotlib.pyplot as plt

    names = list(surfaces)
    for k, v in surfaces.items():
        v = np.asarray(v, dtype=float)
        if v.shape != (len(coords), len(coords)) or not (np.isfinite(v).all() and (v > 0).all()):
            raise ValueError(f"surfaces[{k!r}]: expected positive finite losses of shape "
                             f"{(len(coords), len(coords))} (one per grid point), got shape "
                             f"{v.shape} with range [{np.nanmin(v) if v.size else 'empty'}, "
                             f"{np.nanmax(v) if v.size else 'empty'}]")
    logs = {k: np.log10(np.asarray(v)) for k, v in surfaces.items()}
    lo = min(float(v.min()) for v in logs.values())
    hi = max(float(v.max()) for v in logs.values()) if vmax is None else float(np.log10(vmax))
    lv = np.linspace(lo, hi, levels)
    A, B = np.meshgrid(coords, coords, indexing="ij")
    from .plotting import WIDTH

    fig = fig or plt.figure(figsize=(WIDTH, 3.4 if len(names) > 1 else 3.8))
    axes = []
    for i, k in enumerate(names):
        Z = np.clip(logs[k], lo, hi)
        if kind == "surface":
            ax = fig.add_subplot(1, len(names), i + 1, projection="3d")
            im = ax.plot_surface(A, B, Z, cmap="viridis", vmin=lo, vmax=hi, linewidth=0, antialiased=True)
            ax.set_zlim(lo, hi)
            ax.set_zlabel("log10 loss")
            ax.view_init(elev=35, azim=-60)
            # few, small tick labels: the default ones run into each other on a 3-d axis
            for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
                axis.set_major_locator(plt.MaxNLocator(4))
            ax.tick_params(labelsize=7, pad=0)
        else:
            ax = fig.add_subplot(1, len(names), i + 1)
            im = ax.contourf(A, B, Z, levels=lv, cmap="viridis", vmin=lo, vmax=hi)
            ax.contour(A, B, Z, levels=lv, colors="white", linewidths=0.3)
            ax.plot([0], [0], marker="*", color="white", markersize=9)
            ax.set_aspect("equal")
            ax.grid(False)
        ax.set_xlabel(rf"$\zeta_1$ ({k})")
        ax.set_ylabel(r"$\zeta_2$")
        axes.append(ax)
    fig.colorbar(im, ax=axes, shrink=0.8, label="log10 training loss", format="%.3f")
    return fig, axes
