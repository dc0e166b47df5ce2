"""A procedural Pathfinder data set (the long-range task of Linsley et al. 2018 / Tay et al. 2021).

Each image holds several curved, **dashed** paths built from short straight segments whose
direction turns by a bounded random angle at every step. Two paths are long ("main" paths); the
others are shorter distractors. Two marker disks are drawn:

* label 1 ("connected"): the markers sit at the two ends of the **same** main path;
* label 0 ("disconnected"): one marker sits at an end of each of the two main paths.

Both classes draw the same number of paths of the same lengths, so the total ink is the same in
distribution; and every disconnected sample is redrawn until its markers are as far apart as those
of a randomly chosen connected sample, so the distance between the markers carries (almost) no
information about the label either. Three choices keep the task well posed at 16x16 pixels: paths
are drawn at 60% brightness and the markers at full brightness, so a marker is never mistaken for a
dash; no two paths come closer than 0.9 pixels plus the stroke width (1.6 pixels at 16x16), so "connected" is never
ambiguous; and each dash sits in the middle of its segment, so the two ends of a path look alike.
Difficulty grows with ``path_length`` (segments per main path). Images are rendered at 4x
resolution and averaged down, then stored as integers ``0..255`` of shape ``(N, size, size)``; a
model reads them as ``size**2`` tokens.

:func:`pathfinder` caches every generated set as an ``.npz`` file (folder
``$TDLIB_CACHE`` or ``~/.cache/tdlib``, or the ``cache_dir`` argument), so only the first call pays.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .checks import check_choice, check_int, check_positive

SIZES = (16, 32)
SUPER = 4  # render at SUPER x resolution, then average (anti-aliasing)
GENERATOR_VERSION = 2  # part of the cache file name: bump it whenever the images change


def cache_folder(path: str | os.PathLike | None = None) -> Path:
    """The folder for cached data sets: ``path``, else ``$TDLIB_CACHE``, else ``~/.cache/tdlib``."""
    p = Path(path or os.environ.get("TDLIB_CACHE") or Path.home() / ".cache" / "tdlib")
    p.mkdir(parents=True, exist_ok=True)
    return p


# ---------------------------------------------------------------------------------------------
# drawing on a float canvas of side size * SUPER, coordinates in output-pixel units
# ---------------------------------------------------------------------------------------------

def _stamp_segment(canvas, p0, p1, width):
    """Ink a thick straight segment from ``p0`` to ``p1`` (output-pixel units)."""
    S = canvas.shape[0]
    a, b = np.asarray(p0) * SUPER, np.asarray(p1) * SUPER
    r = width * SUPER / 2
    lo = np.floor(np.minimum(a, b) - r).astype(int).clip(0, S - 1)
    hi = np.ceil(np.maximum(a, b) + r).astype(int).clip(0, S - 1)
    ys, xs = np.mgrid[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] + 0.5
    ab = b - a
    t = np.clip(((xs - a[0]) * ab[0] + (ys - a[1]) * ab[1]) / max(ab @ ab, 1e-12), 0, 1)
    dist2 = (xs - a[0] - t * ab[0]) ** 2 + (ys - a[1] - t * ab[1]) ** 2
    canvas[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] |= dist2 <= r * r


def _stamp_disk(canvas, c, radius):
    S = canvas.shape[0]
    cx, cy = np.asarray(c) * SUPER
    r = radius * SUPER
    ys, xs = np.mgrid[0:S, 0:S] + 0.5
    canvas |= (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r


def _random_path(rng, size, n_segments, seg_len, max_turn, margin, tries=50):
    """Vertices of a smooth random walk that stays inside the image, or ``None``."""
    for _ in range(tries):
        p = rng.uniform(margin, size - margin, 2)
        angle = rng.uniform(0, 2 * math.pi)
        pts = [p]
        ok = True
        for _ in range(n_segments):
            for _ in range(20):  # turn until the next vertex stays inside
                a = angle + rng.uniform(-max_turn, max_turn)
                q = pts[-1] + seg_len * np.array([math.cos(a), math.sin(a)])
                if margin <= q[0] <= size - margin and margin <= q[1] <= size - margin:
                    break
            else:
                ok = False
                break
            angle = a
            pts.append(q)
        if ok:
            return np.array(pts)
    return None


def _draw_dashed(canvas, pts, width, dash=0.6):
    """Draw the middle ``dash`` fraction of every segment: a dashed curve whose two ends look alike
    (so a marker on either end covers the same amount of path)."""
    lo, hi = (1 - dash) / 2, (1 + dash) / 2
    for p0, p1 in zip(pts[:-1], pts[1:]):
        _stamp_segment(canvas, p0 + lo * (p1 - p0), p0 + hi * (p1 - p0), width)


def render(paths, markers, size, width, marker_radius, ink=1.0):
    """Render paths (lists of vertices) and marker centres to a ``(size, size)`` uint8 image.

    Paths are drawn with brightness ``ink`` (at most 1), markers at full brightness.
    """
    S = size * SUPER
    lines, disks = np.zeros((S, S), dtype=bool), np.zeros((S, S), dtype=bool)
    for pts in paths:
        _draw_dashed(lines, pts, width)
    for m in markers:
        _stamp_disk(disks, m, marker_radius)
    canvas = np.where(disks, 1.0, ink * lines)
    img = canvas.reshape(size, SUPER, size, SUPER).mean(axis=(1, 3))
    return np.round(255 * img).astype(np.uint8)


def _polyline_points(pts, step=0.25):
    """Points every ``step`` pixels along a polyline (for distances between paths)."""
    out = [pts[:1]]
    for p0, p1 in zip(pts[:-1], pts[1:]):
        k = max(1, int(np.ceil(np.linalg.norm(p1 - p0) / step)))
        out.append(p0 + np.linspace(0, 1, k + 1)[1:, None] * (p1 - p0))
    return np.concatenate(out)


def gap(path_a, path_b) -> float:
    """The smallest distance (pixels) between two paths given by their vertices."""
    a, b = _polyline_points(path_a), _polyline_points(path_b)
    return float(np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).min()))


def _params(size, path_length):
    s = size / 16  # geometry scales with the image
    return dict(seg_len=2.0 * s, width=0.7 * s, marker_radius=1.3 * s, margin=1.3 * s,
                max_turn=math.pi / 4, n_distractors=2 if size == 16 else 4,
                distractor_length=max(2, path_length // 2), min_gap=0.7 * s + 0.9, ink=0.6)


def sample(label: int, size: int = 16, path_length: int = 6, rng=None, target_distance=None):
    """One image with the given label; returns ``(image, info)``.

    ``info`` holds the marker centres, the marker distance and the path vertices. If
    ``target_distance`` is given, the markers are within a tenth of a segment of that distance.
    """
    if label not in (0, 1) or isinstance(label, bool):
        raise ValueError(f"label: expected 0 (not connected) or 1 (connected), got {label!r}")
    size, path_length, _ = check_geometry(size, path_length)
    rng = np.random.default_rng(rng)
    P = _params(size, path_length)
    for _ in range(2000):
        a = _random_path(rng, size, path_length, P["seg_len"], P["max_turn"], P["margin"])
        b = _random_path(rng, size, path_length, P["seg_len"], P["max_turn"], P["margin"])
        if a is None or b is None or gap(a, b) < P["min_gap"]:
            continue  # the two main paths must not touch: connectivity stays unambiguous
        if label == 1:
            m0, m1 = a[0], a[-1]
        else:
            m0, m1 = a[rng.integers(2) * -1], b[rng.integers(2) * -1]
        dist = float(np.linalg.norm(m0 - m1))
        if dist < 2.5 * P["marker_radius"]:
            continue  # markers must be two separate disks
        if target_distance is not None and abs(dist - target_distance) > P["seg_len"] / 10:
            continue
        distractors = []
        for _ in range(P["n_distractors"]):
            for _ in range(30):  # a distractor keeps the same gap from every path placed so far
                c = _random_path(rng, size, P["distractor_length"], P["seg_len"], P["max_turn"], P["margin"])
                if c is not None and all(gap(c, q) >= P["min_gap"] for q in [a, b] + distractors):
                    distractors.append(c)
                    break
        if len(distractors) < P["n_distractors"]:
            continue  # every image carries all its distractors (no ink cue from missing ones)
        img = render([a, b] + distractors, [m0, m1], size, P["width"], P["marker_radius"], P["ink"])
        return img, {"markers": np.array([m0, m1]), "distance": dist, "paths": [a, b] + distractors}
    raise RuntimeError(f"pathfinder: could not place paths (size={size}, path_length={path_length}, "
                       f"target_distance={target_distance}); try a shorter path_length")


def generate(n: int, size: int = 16, path_length: int = 6, seed: int = 0):
    """``n`` images with balanced labels: ``(images uint8 (n, size, size), labels int64 (n,),
    marker_distances float (n,))``, fully determined by ``seed``.

    Half the labels are 1, in a shuffled order. Every disconnected sample is drawn with the marker
    distance of a random connected sample (within a tenth of a segment), which removes the distance cue.
    """
    n = check_int("n", n, minimum=2)
    size, path_length, seed = check_geometry(size, path_length, seed)
    rng = np.random.default_rng(int(seed))
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    images = np.empty((n, size, size), dtype=np.uint8)
    dists = np.empty(n)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    for i in pos:  # connected samples first, with free marker distance ...
        images[i], info = sample(1, size, path_length, rng)
        dists[i] = info["distance"]
    # ... then every disconnected sample copies the marker distance of a random connected one
    targets = rng.permutation(np.resize(dists[pos], len(neg)))
    for i, t in zip(neg, targets):
        images[i], info = sample(0, size, path_length, rng, target_distance=t)
        dists[i] = info["distance"]
    return images, labels.astype(np.int64), dists


def _read_cache(path: Path, n_train: int, n_test: int, size: int) -> dict:
    """The arrays of a cache file, or an error naming the file and how to recover."""
    want = {"x_train": (n_train, size, size), "y_train": (n_train,), "d_train": (n_train,),
            "x_test": (n_test, size, size), "y_test": (n_test,), "d_test": (n_test,)}
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as err:  # BadZipFile, pickle refusal, truncated file, OSError ...
        raise ValueError(f"{path}: damaged Pathfinder cache file ({type(err).__name__}: "
                         f"{err}); delete it and it will be generated again") from None
    shapes = {k: tuple(v.shape) for k, v in arrays.items()}
    if any(shapes.get(k) != v for k, v in want.items()):
        raise ValueError(f"{path}: damaged Pathfinder cache file (arrays {shapes}, expected "
                         f"{want}); delete it and it will be generated again")
    return arrays


MAX_PATH_LENGTH = {16: 7, 32: 7}
"""The longest main path (segments) accepted for each image size. Two main paths and the
distractors must fit inside the margins without touching; in our runs 7 segments placed every
image (about 0.5 s per image at 16x16, 4 s at 32x32), while at 8 segments most images found no
placement in 2000 tries (16x16: none of 6, 32x32: one of 6)."""


def check_geometry(size, path_length, seed=0):
    """Validate ``size``, ``path_length`` and ``seed`` before any image is drawn."""
    size = check_int("size", size)
    check_choice("size (image side)", size, SIZES)
    path_length = check_int("path_length", path_length, minimum=2)
    if path_length > MAX_PATH_LENGTH[size]:
        raise ValueError(f"path_length: expected at most {MAX_PATH_LENGTH[size]} segments for "
                         f"{size}x{size} images (longer paths do not fit), got {path_length}")
    return size, path_length, check_int("seed", seed, minimum=0)


def pathfinder(n_train: int, n_test: int, size: int = 16, path_length: int = 6, seed: int = 0,
               cache_dir: str | os.PathLike | None = None, verbose: bool = False):
    """Train and test sets, generated once and then read from the cache.

    Returns a dict with ``x_train`` (n_train, size*size) int64 tokens in ``0..255``, ``y_train``,
    ``x_test``, ``y_test``, ``d_train``/``d_test`` (marker distances) and ``path`` (the cache file).
    """
    n_train, n_test = check_int("n_train", n_train, minimum=2), check_int("n_test", n_test, minimum=2)
    size, path_length, seed = check_geometry(size, path_length, seed)
    folder = cache_folder(cache_dir)
    path = folder / f"pathfinder-v{GENERATOR_VERSION}-s{size}-L{path_length}-tr{n_train}-te{n_test}-seed{seed}.npz"
    if path.exists():
        arrays = _read_cache(path, n_train, n_test, size)
    else:
        if verbose:
            print(f"generating Pathfinder {size}x{size} (path length {path_length}) -> {path}")
        xi, yi, di = generate(n_train + n_test, size, path_length, seed)
        arrays = {"x_train": xi[:n_train], "y_train": yi[:n_train], "d_train": di[:n_train],
                  "x_test": xi[n_train:], "y_test": yi[n_train:], "d_test": di[n_train:]}
        from .book import _atomic_write  # temporary file, then os.replace: never half a file

        _atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))
    out = {k: v for k, v in arrays.items()}
    for k in ("x_train", "x_test"):
        out[k] = out[k].reshape(len(out[k]), -1).astype(np.int64)
    out["path"] = str(path)
    return out


def show(images, labels, ncols: int = 6, axes=None):
    """A grid of sample images titled by their label (for the chapter's figure)."""
    import matplotlib.pyplot as plt

    images, labels = np.asarray(images), np.asarray(labels)
    n = len(images)
    nrows = math.ceil(n / ncols)
    from .plotting import SMALL, WIDTH

    if axes is None:
        _, axes = plt.subplots(nrows, ncols, figsize=(WIDTH, WIDTH / ncols * 1.15 * nrows))
    axes = np.atleast_1d(axes).ravel()
    for ax, img, lab in zip(axes, images, labels):
        side = int(round(math.sqrt(img.size)))
        ax.imshow(img.reshape(side, side), cmap="gray", vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        ax.set_xlabel("connected" if lab == 1 else "not\nconnected", fontsize=SMALL)
    for ax in axes[n:]:
        ax.axis("off")
    return axes


def best_threshold_accuracy(feature, labels) -> float:
    """Accuracy of the best one-threshold rule ``label = [feature > t]`` (or its reverse).

    A cue that separates the classes scores near 1; a useless one scores near 1/2 (a little
    above, since the threshold is chosen on the same samples).
    """
    feature, labels = np.asarray(feature, dtype=float), np.asarray(labels)
    if feature.shape != labels.shape or feature.ndim != 1 or feature.size == 0:
        raise ValueError(f"feature and labels: expected equal non-empty 1-d shapes, got "
                         f"{feature.shape} and {labels.shape}")
    y = labels[np.argsort(feature, kind="stable")]
    zeros_below = np.concatenate([[0], np.cumsum(y == 0)])
    ones_above = np.concatenate([[0], np.cumsum((y == 1)[::-1])])[::-1]
    acc = (zeros_below + ones_above) / len(y)
    return float(max(acc.max(), 1 - acc.min()))
