"""A procedural Pathfinder data set (the long-range task of Linsley et al. 2018 / Tay et al. 2021).

Each image holds curved, **dashed** paths ("snakes") built from short straight segments whose
direction turns by a bounded random angle at every step: two long snakes of ``path_length``
segments and shorter distractors. Two marker disks sit on snake tips:

* label 1 ("connected"): a snake is grown from a random origin; the markers sit on its origin
  tip and on its terminal tip;
* label 0 ("not connected"): one long snake is grown from each of the *same two marker
  positions*, so each marker sits on the origin tip of its own snake.

Images are drawn in pairs (:func:`sample_pair`): a connected image, then a not-connected one
with its markers exactly where the connected one has them. The marker positions therefore have
the same distribution in both classes, and every rule that looks only at them scores exactly
1/2 on a test set of whole pairs. Both classes hold two long snakes and the same distractors,
so the ink is the same in distribution. :func:`cue_baselines` checks, on held-out images, that
rules which ignore the path structure stay near chance: marker position, a linear probe on the
pixels, and the ink on the straight line between the markers (which catches nearly straight
paths). The earlier generator (:func:`generate_v2`: marker *distance* matched by rejection,
3-segment paths) failed all three checks; it is kept so the checks can show it.

Choices that keep the question well posed at 16x16 pixels: paths are drawn at 60% brightness
and markers at full brightness, so a marker is never mistaken for a dash; no two paths come
closer than 0.9 pixels plus the stroke width, and no path but its own comes within
``clear`` of a marker, so "connected" is never ambiguous; each dash sits in the middle of its
segment, so the two ends of a path look alike. Difficulty grows with ``path_length``. Images
are rendered at 4x resolution and averaged down, then stored as integers ``0..255`` of shape
``(N, size, size)``; a model reads them as ``size**2`` tokens.

:func:`pathfinder` caches every generated set as an ``.npz`` file (folder
``$TDLIB_CACHE`` or ``~/.cache/tdlib``, or the ``cache_dir`` argument), so only the first call pays.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .checks import check_choice, check_int, check_positive, check_seed, real_array

SIZES = (16, 32)
SUPER = 4  # render at SUPER x resolution, then average (anti-aliasing)
GENERATOR_VERSION = 3  # part of the cache file name: bump it whenever the images change
MAX_TURN = math.pi / 3  # the largest turn between two segments of a path
STEP = 0.25  # spacing (pixels) of the points that stand for a path in distance checks


def cache_folder(path: str | os.PathLike | None = None) -> Path:
    """The folder for cached data sets: ``path``, else ``$TDLIB_CACHE``, else ``~/.cache/tdlib``."""
    p = Path(path or os.environ.get("TDLIB_CACHE") or Path.home() / ".cache" / "tdlib")
    p.mkdir(parents=True, exist_ok=True)
    return p


# ---------------------------------------------------------------------------------------------
# drawing on a float canvas of side size * SUPER, coordinates in output-pixel units
# ---------------------------------------------------------------------------------------------

_CENTRES: dict[int, np.ndarray] = {}


def _centres(S):
    """Pixel centres ``0.5, 1.5, ..., S - 0.5`` of a canvas of side ``S`` (cached, read-only)."""
    c = _CENTRES.get(S)
    if c is None:
        c = np.arange(S) + 0.5
        c.flags.writeable = False
        _CENTRES[S] = c
    return c


def _stamp_segment(canvas, p0, p1, width):
    """Ink a thick straight segment from ``p0`` to ``p1`` (output-pixel units): the canvas
    pixels whose centre lies within ``width / 2`` of the segment."""
    S = canvas.shape[0]
    a, b = np.asarray(p0) * SUPER, np.asarray(p1) * SUPER
    r = width * SUPER / 2
    # the box of pixels that can be reached (integer bounds, clipped to the canvas)
    x0, y0 = (min(max(math.floor(min(u, v) - r), 0), S - 1) for u, v in zip(a, b))
    x1, y1 = (min(max(math.ceil(max(u, v) + r), 0), S - 1) for u, v in zip(a, b))
    xs, ys = _centres(S)[None, x0:x1 + 1], _centres(S)[y0:y1 + 1, None]
    ab = b - a
    t = np.clip(((xs - a[0]) * ab[0] + (ys - a[1]) * ab[1]) / max(ab @ ab, 1e-12), 0, 1)
    dist2 = (xs - a[0] - t * ab[0]) ** 2 + (ys - a[1] - t * ab[1]) ** 2
    canvas[y0:y1 + 1, x0:x1 + 1] |= dist2 <= r * r


def _stamp_disk(canvas, c, radius):
    """Ink the canvas pixels whose centre lies within ``radius`` of ``c`` (output pixels)."""
    S = canvas.shape[0]
    cx, cy = np.asarray(c) * SUPER
    r = radius * SUPER
    xs = _centres(S)
    canvas |= (xs[None, :] - cx) ** 2 + (xs[:, None] - cy) ** 2 <= r * r


def _random_path(rng, size, n_segments, seg_len, max_turn, margin, tries=50):
    """Vertices of a smooth random walk that stays inside the image, or ``None``."""
    for _ in range(tries):
        p = rng.uniform(margin, size - margin, 2)
        angle = rng.uniform(0, 2 * math.pi)
        x, y = float(p[0]), float(p[1])
        pts = [(x, y)]
        ok = True
        for _ in range(n_segments):
            for _ in range(20):  # turn until the next vertex stays inside
                a = angle + rng.uniform(-max_turn, max_turn)
                qx, qy = x + seg_len * math.cos(a), y + seg_len * math.sin(a)
                if margin <= qx <= size - margin and margin <= qy <= size - margin:
                    break
            else:
                ok = False
                break
            angle, x, y = a, qx, qy
            pts.append((x, y))
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


_FRACTIONS: dict[int, np.ndarray] = {}


def _fractions(k):
    """The column ``1/k, 2/k, ..., 1`` exactly as ``np.linspace(0, 1, k + 1)[1:, None]`` gives
    it, ``(k, 1)`` (cached, read-only)."""
    t = _FRACTIONS.get(k)
    if t is None:
        t = _FRACTIONS[k] = np.linspace(0, 1, k + 1)[1:, None]
        t.flags.writeable = False
    return t


def _segment_points(p, q, step=STEP):
    """Points every ``step`` pixels from ``p`` (excluded) to ``q`` (included), ``(k, 2)`` with
    ``k = ceil(|q - p| / step)`` (at least 1); ``p`` and ``q`` are arrays of shape ``(2,)``."""
    d = q - p
    # |q - p| exactly as np.linalg.norm computes it (the same dot product, then sqrt), so k
    # does not change when |q - p| / step lies within rounding of an integer
    k = max(1, math.ceil(math.sqrt(d.dot(d)) / step))
    return p + _fractions(k) * d


def _polyline_points(pts, step=STEP):
    """Points every ``step`` pixels along a polyline (for distances between paths)."""
    out = [pts[:1]]
    for p0, p1 in zip(pts[:-1], pts[1:]):
        out.append(_segment_points(p0, p1, step))
    return np.concatenate(out)


def _min_distance(a, b) -> float:
    """The smallest distance between the points ``a`` (m, 2) and the points ``b`` (n, 2)."""
    return float(np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).min()))


def gap(path_a, path_b) -> float:
    """The smallest distance (pixels) between two paths given by their vertices."""
    return _min_distance(_polyline_points(path_a), _polyline_points(path_b))


def _params(size, path_length):
    s = size / 16  # geometry scales with the image
    return dict(size=size, seg_len=2.0 * s, width=0.7 * s, marker_radius=1.3 * s, margin=1.3 * s,
                max_turn=MAX_TURN, n_distractors=2 if size == 16 else 4,
                distractor_length=max(2, path_length // 2), min_gap=0.7 * s + 0.9,
                clear=2.0 * s, ink=0.6)


def _too_close(points, others, limit) -> bool:
    """Whether some point of ``points`` (m, 2) lies closer than ``limit`` to one of ``others``."""
    if len(others) == 0:
        return False
    d2 = ((points[:, None, :] - others[None, :, :]) ** 2).sum(-1)
    return bool(d2.min() < limit * limit)


def _first_fit(p, angles, P, near):
    """The first of the candidate directions ``angles`` (a list) whose segment of length
    ``P["seg_len"]`` from the tip ``p`` (2,) ends inside the margins and keeps clear of
    ``near``: ``(index, end (2,), segment points (k, 2))``, or ``None`` if none does.

    ``near = (x, y, lim2)`` holds points (two arrays (n,)) and their squared limits (n,); a
    segment is rejected if one of its points (:func:`_segment_points`) lies at squared
    distance below ``lim2`` from one of them. All candidates are tested at once.
    """
    lo, hi, seg_len = P["margin"], P["size"] - P["margin"], P["seg_len"]
    x, y = float(p[0]), float(p[1])
    inside, ends = [], []
    for j, a in enumerate(angles):
        qx, qy = x + seg_len * math.cos(a), y + seg_len * math.sin(a)
        if lo <= qx <= hi and lo <= qy <= hi:
            inside.append(j)
            ends.append((qx, qy))
    if not inside:
        return None
    ox, oy, lim2 = near
    if len(inside) == 1:  # one candidate: test it alone
        q = np.array(ends[0])
        seg = _segment_points(p, q)
        if len(ox) and ((seg[:, :1] - ox) ** 2 + (seg[:, 1:] - oy) ** 2 < lim2).any():
            return None
        return inside[0], q, seg
    d = np.array(ends) - p  # (m, 2): q - p for every candidate inside
    # points per segment as in _segment_points (the same dot product per candidate)
    ks = [max(1, math.ceil(math.sqrt(v.dot(v)) / STEP)) for v in d]
    best = None
    for kk in set(ks):  # candidates with the same number of points together
        rows = [r for r, k in enumerate(ks) if k == kk]
        if best is not None and rows[0] > best[0]:
            continue  # an earlier candidate already fits
        pts = p + _fractions(kk)[None] * d[rows][:, None, :]  # (r, kk, 2)
        r = 0
        if len(ox):
            d2 = (pts[..., :1] - ox) ** 2 + (pts[..., 1:] - oy) ** 2  # (r, kk, n)
            bad = (d2 < lim2).any(axis=(1, 2))
            if bad.all():
                continue
            r = int(np.argmin(bad))
        if best is None or rows[r] < best[0]:
            best = rows[r], pts[r]
    if best is None:
        return None
    m, seg = best
    return inside[m], np.array(ends[m]), seg


def _grow(rng, start, n_segments, P, avoid, keep_out, tries=40, restarts=15):
    """A snake of ``n_segments`` segments grown from ``start`` (its *origin tip*): vertices
    ``(n_segments + 1, 2)``, or ``None`` if no placement was found.

    The first direction is uniform; each later one turns by at most ``P["max_turn"]``. Every
    vertex stays inside the margins; every new segment keeps ``P["min_gap"]`` from the points
    ``avoid`` (other paths) and from its own earlier segments (but the adjacent one), and
    ``P["clear"]`` from the marker centres ``keep_out``. A segment is tested through its points
    every quarter pixel (:func:`_segment_points`). Each step draws directions until one fits,
    at most ``tries``; a stuck snake starts again from ``start``, at most ``restarts`` times.

    The directions of a step are drawn in chunks of 1, 3 and the rest, and each chunk is tested
    at once (:func:`_first_fit`). When a chunk holds a fitting direction before its end, the
    generator is set back and only the draws up to it are made again, so ``rng`` is consumed
    exactly as by drawing and testing one direction at a time.
    """
    turn, gap2, clear2 = P["max_turn"], P["min_gap"] * P["min_gap"], P["clear"] * P["clear"]
    # Only points within seg_len + limit of the current tip can be too close to a new segment
    # (all of whose points lie within seg_len of the tip); the extra 1e-3 pixel dwarfs every
    # rounding error, so leaving the farther points out changes no decision.
    reach2 = (P["seg_len"] + max(P["min_gap"], P["clear"]) + 1e-3) ** 2
    fixed = np.concatenate([avoid, keep_out]).reshape(-1, 2)
    fixed_lim2 = np.concatenate([np.full(len(avoid), gap2), np.full(len(keep_out), clear2)])
    start = np.asarray(start, dtype=float)
    for _ in range(restarts):
        pts, segs, angle = [start], [start[None]], 0.0
        for i in range(n_segments):
            p = pts[-1]
            # the points to keep away from (own: all earlier segments but the adjacent one)
            others = np.concatenate([fixed] + segs[:-1])
            lim2 = np.concatenate([fixed_lim2, np.full(len(others) - len(fixed), gap2)])
            near = ((others - p) ** 2).sum(-1) <= reach2
            near = (others[near, 0], others[near, 1], lim2[near])
            low, high = (0, 2 * math.pi) if i == 0 else (-turn, turn)
            fit, used = None, 0
            for c in (1, 3, tries):  # the rest in the last chunk
                c = min(c, tries - used)
                if c <= 0:
                    break
                state = rng.bit_generator.state if c > 1 else None
                draws = rng.uniform(low, high, c).tolist()
                fit = _first_fit(p, draws if i == 0 else [angle + u for u in draws], P, near)
                used += c
                if fit is not None:
                    if fit[0] < c - 1:  # set the generator back and make only the draws used
                        rng.bit_generator.state = state
                        rng.uniform(low, high, fit[0] + 1)
                    break
            if fit is None:
                break  # this snake is stuck: start it again
            j, q, seg = fit
            angle = draws[j] if i == 0 else angle + draws[j]
            pts.append(q)
            segs.append(seg)
        if len(pts) == n_segments + 1:
            return np.array(pts)
    return None


def _points(paths) -> np.ndarray:
    """All points (every quarter pixel) of a list of paths, ``(m, 2)``."""
    return np.concatenate([_polyline_points(p) for p in paths]) if paths else np.empty((0, 2))


def _add_distractors(rng, paths, markers, P):
    """``P["n_distractors"]`` short snakes that keep the gap from ``paths`` and from each other
    and the clearance from the markers, or ``None``."""
    out = []
    lo, hi = P["margin"], P["size"] - P["margin"]
    for _ in range(P["n_distractors"]):
        avoid = _points(paths + out)
        for _ in range(30):
            start = rng.uniform(lo, hi, 2)
            if _too_close(start[None], avoid, P["min_gap"]) or \
                    _too_close(start[None], markers, P["clear"]):
                continue
            c = _grow(rng, start, P["distractor_length"], P, avoid, markers, restarts=1)
            if c is not None:
                out.append(c)
                break
        else:
            return None
    return out


def _connected(rng, size, path_length, P):
    """Paths and markers of a connected image: snake ``a`` grown from a random origin, markers
    on its origin tip and its terminal tip; a second long snake and the distractors elsewhere."""
    lo, hi = P["margin"], P["size"] - P["margin"]
    a = _grow(rng, rng.uniform(lo, hi, 2), path_length, P, np.empty((0, 2)), np.empty((0, 2)))
    if a is None:
        return None
    markers = np.array([a[0], a[-1]])
    if np.linalg.norm(markers[0] - markers[1]) < 2.5 * P["marker_radius"]:
        return None  # markers must be two separate disks
    avoid = _points([a])
    for _ in range(20):
        start = rng.uniform(lo, hi, 2)
        if _too_close(start[None], avoid, P["min_gap"]) or \
                _too_close(start[None], markers, P["clear"]):
            continue
        b = _grow(rng, start, path_length, P, avoid, markers, restarts=1)
        if b is not None:
            return [a, b], markers
    return None


def _disconnected(rng, markers, path_length, P, attempts=10):
    """Paths of a not-connected image with the given ``markers``: one long snake grown from each
    marker (so both markers sit on origin tips), in random order, keeping apart."""
    for _ in range(attempts):
        order = rng.permutation(2)
        first = _grow(rng, markers[order[0]], path_length, P, np.empty((0, 2)),
                      markers[order[1]][None])
        if first is None:
            continue
        second = _grow(rng, markers[order[1]], path_length, P, _points([first]),
                       markers[order[0]][None])
        if second is not None:
            return [first, second] if order[0] == 0 else [second, first]
    return None


def sample_pair(size: int = 16, path_length: int = 6, rng=None):
    """A connected and a not-connected image with the **same marker positions**; returns
    ``[(image, info), (image, info)]`` for labels 1 and 0.

    The connected image has its markers on the origin and terminal tips of one snake; the
    not-connected one grows one snake from each marker. Both hold two long snakes of
    ``path_length`` segments and the same number of distractors. A pair whose second image
    cannot be placed is drawn again as a whole, so the two classes' marker positions have
    exactly the same distribution. ``info`` holds ``markers`` (2, 2), ``distance`` and
    ``paths`` (the two long snakes first).
    """
    size, path_length, _ = check_geometry(size, path_length)
    rng = np.random.default_rng(rng)
    P = _params(size, path_length)
    for _ in range(500):
        pos = _connected(rng, size, path_length, P)
        if pos is None:
            continue
        neg_paths = _disconnected(rng, pos[1], path_length, P)
        if neg_paths is None:
            continue
        out = []
        for paths in (pos[0], neg_paths):
            extra = _add_distractors(rng, paths, pos[1], P)
            if extra is None:
                break
            out.append(paths + extra)
        if len(out) < 2:
            continue
        m = pos[1]
        dist = float(np.linalg.norm(m[0] - m[1]))
        return [(render(paths, m, size, P["width"], P["marker_radius"], P["ink"]),
                 {"markers": m.copy(), "distance": dist, "paths": paths}) for paths in out]
    raise RuntimeError(f"pathfinder: could not place paths (size={size}, "
                       f"path_length={path_length}); try a shorter path_length")


def sample(label: int, size: int = 16, path_length: int = 6, rng=None):
    """One image with the given label (one half of :func:`sample_pair`); ``(image, info)``."""
    if label not in (0, 1) or isinstance(label, bool):
        raise ValueError(f"label: expected 0 (not connected) or 1 (connected), got {label!r}")
    return sample_pair(size, path_length, rng)[1 - label]


def generate(n: int, size: int = 16, path_length: int = 6, seed: int = 0):
    """``n`` images: ``(images uint8 (n, size, size), labels int64 (n,), markers float
    (n, 2, 2))`` (marker centres in pixels, ``(x, y)``), fully determined by ``seed``.

    Images come in pairs from :func:`sample_pair` (rows ``2j`` and ``2j + 1``, in random order
    within the pair): one connected and one not connected image with the same markers. An odd
    ``n`` drops the last image of the last pair.
    """
    n = check_int("n", n, minimum=2)
    size, path_length, seed = check_geometry(size, path_length, seed)
    rng = np.random.default_rng(int(seed))
    m = n + n % 2
    images = np.empty((m, size, size), dtype=np.uint8)
    labels = np.empty(m, dtype=np.int64)
    markers = np.empty((m, 2, 2))
    for j in range(0, m, 2):
        pair = sample_pair(size, path_length, rng)
        flip = int(rng.integers(2))
        for i, (lab, (img, info)) in enumerate(zip((1, 0), pair)):
            row = j + (i ^ flip)
            images[row], labels[row], markers[row] = img, lab, info["markers"]
    return images[:n], labels[:n], markers[:n]


# ---------------------------------------------------------------------------------------------
# cue checks: rules that ignore the path structure must stay at chance
# ---------------------------------------------------------------------------------------------

def majority_rate(labels) -> float:
    """The accuracy of always answering the more frequent class of ``labels`` (chance)."""
    labels = _check_labels(labels)
    p = float(np.mean(labels == 1))
    return max(p, 1 - p)


def marker_features(markers, size: int) -> np.ndarray:
    """Features of the marker positions alone, ``(N, 7)``: the two centres ``(x, y)`` (in an
    order that does not depend on the label: left one first), their distances from the image
    centre (smaller first) and the distance between them."""
    m = np.asarray(markers, dtype=float)
    if m.ndim != 3 or m.shape[1:] != (2, 2):
        raise ValueError(f"markers: expected shape (N, 2, 2), got {m.shape}")
    swap = m[:, 0, 0] > m[:, 1, 0]
    m = np.where(swap[:, None, None], m[:, ::-1], m)
    r = np.linalg.norm(m - size / 2, axis=2)
    d = np.linalg.norm(m[:, 0] - m[:, 1], axis=1)
    return np.column_stack([m.reshape(len(m), 4), np.sort(r, axis=1), d])


def line_ink(images, markers, marker_radius: float | None = None, n_points: int = 64) -> np.ndarray:
    """Mean grey level (0..255) on the straight line between the two markers, outside both
    marker disks (and half a pixel more), ``(N,)``; 0 where nothing is left of the line."""
    images = np.asarray(images, dtype=float)
    m = np.asarray(markers, dtype=float)
    N, size = images.shape[0], images.shape[-1]
    images = images.reshape(N, size, size)
    r = (marker_radius if marker_radius is not None else 1.3 * size / 16) + 0.5
    t = np.linspace(0, 1, n_points)
    pts = m[:, :1] + t[None, :, None] * (m[:, 1:] - m[:, :1])  # (N, n_points, 2)
    keep = (np.linalg.norm(pts - m[:, :1], axis=2) > r) & (np.linalg.norm(pts - m[:, 1:], axis=2) > r)
    ix = np.clip(pts[..., 0].astype(int), 0, size - 1)
    iy = np.clip(pts[..., 1].astype(int), 0, size - 1)
    vals = images[np.arange(N)[:, None], iy, ix]
    total, count = (vals * keep).sum(1), keep.sum(1)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def _ridge_classifier(x_train, y_train, x_test, ridge: float = 1.0) -> np.ndarray:
    """Labels predicted for ``x_test`` by least squares on ``+-1`` targets (standardised
    features, a bias, ridge penalty ``ridge`` times the number of samples)."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-9
    a = np.column_stack([(x_train - mu) / sd, np.ones(len(x_train))])
    b = np.column_stack([(x_test - mu) / sd, np.ones(len(x_test))])
    reg = ridge * len(a) * np.eye(a.shape[1])
    reg[-1, -1] = 0.0
    w = np.linalg.solve(a.T @ a + reg, a.T @ (2.0 * y_train - 1))
    return (b @ w > 0).astype(int)


def _check_labels(labels, name: str = "labels") -> np.ndarray:
    """``labels`` as a non-empty 1-d integer array of 0s and 1s, or a clear error."""
    y = real_array(name, labels, "a 1-d array of 0s and 1s", bools=True)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-d array of 0s and 1s, got shape "
                         f"{y.shape}")
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        raise ValueError(f"{name}: expected 0s and 1s, got {int(bad.sum())} other value(s), "
                         f"e.g. {y[bad][0]!r}")
    return y.astype(int)


def _threshold_scan(feature, labels, names=("feature", "labels")):
    """The accuracy of the rule ``label = [feature > t]`` for every threshold ``t`` that splits
    the samples differently: below all values, between two *different* consecutive values
    (a threshold cannot separate equal values), above all. Returns ``(acc, cuts)``."""
    y = _check_labels(labels, names[1])
    f = real_array(names[0], feature, "a 1-d array of numbers")
    if f.shape != y.shape:
        raise ValueError(f"{names[0]}: expected shape {y.shape} like {names[1]}, got {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError(f"{names[0]}: expected finite numbers, got "
                         f"{int((~np.isfinite(f)).sum())} NaN/Inf")
    order = np.argsort(f, kind="stable")
    fs, ys = f[order], y[order]
    zeros_below = np.concatenate([[0], np.cumsum(ys == 0)])
    ones_above = np.concatenate([[0], np.cumsum((ys == 1)[::-1])])[::-1]
    acc = (zeros_below + ones_above) / len(ys)
    cuts = np.concatenate([[-np.inf], (fs[:-1] + fs[1:]) / 2, [np.inf]])
    real = np.concatenate([[True], fs[1:] != fs[:-1], [True]])
    return acc[real], cuts[real]


def _threshold_rule(f_train, y_train, f_test) -> np.ndarray:
    """Labels predicted for ``f_test`` by the best one-threshold rule fitted on the train set."""
    acc, cuts = _threshold_scan(f_train, y_train, ("f_train", "y_train"))
    up = acc.max() >= 1 - acc.min()
    i = int(np.argmax(acc)) if up else int(np.argmin(acc))
    pred = (np.asarray(f_test, dtype=float) > cuts[i]).astype(int)
    return pred if up else 1 - pred


def _quadratic(x):
    """``x`` with all products of pairs of its columns appended (a quadratic classifier)."""
    i, j = np.triu_indices(x.shape[1])
    return np.column_stack([x, x[:, i] * x[:, j]])


CUE_NAMES = ("marker position", "pixel probe", "ink on the line")


def cue_baselines(train, test, size: int) -> dict:
    """Held-out accuracies of rules that ignore the path structure. ``train`` and ``test`` are
    ``(images (N, size, size), labels (N,), markers (N, 2, 2))``; every rule is fitted on
    ``train`` and scored on ``test``.

    * ``"marker position"``: the best on the test set of a quadratic least-squares classifier
      on :func:`marker_features` and one-threshold rules on each of those features;
    * ``"pixel probe"``: a linear least-squares classifier on the raw pixels;
    * ``"ink on the line"``: a one-threshold rule on :func:`line_ink`.

    Also returns ``"chance"`` (:func:`majority_rate` of the test labels), ``"n_test"`` and
    ``"best"`` (the largest of the three). Taking the best of several marker rules on the test
    set makes that entry, if anything, optimistic for the cue.
    """
    (xa, ya, ma), (xb, yb, mb) = train, test
    ya, yb = np.asarray(ya), np.asarray(yb)
    for name, (x, y, m) in (("train", train), ("test", test)):
        if not (len(x) == len(y) == len(m)) or len(y) < 2:
            raise ValueError(f"{name}: expected images, labels and markers of one length >= 2, "
                             f"got {len(x)}, {len(y)}, {len(m)}")
    fa, fb = marker_features(ma, size), marker_features(mb, size)
    marker_acc = [np.mean(_ridge_classifier(_quadratic(fa), ya, _quadratic(fb), 1e-3) == yb)]
    marker_acc += [np.mean(_threshold_rule(fa[:, j], ya, fb[:, j]) == yb) for j in range(4, 7)]
    pixels = np.mean(_ridge_classifier(np.reshape(xa, (len(xa), -1)).astype(float), ya,
                                       np.reshape(xb, (len(xb), -1)).astype(float)) == yb)
    line = np.mean(_threshold_rule(line_ink(xa, ma), ya, line_ink(xb, mb)) == yb)
    out = {"marker position": float(max(marker_acc)), "pixel probe": float(pixels),
           "ink on the line": float(line)}
    out["best"] = max(out[k] for k in CUE_NAMES)
    out.update(chance=majority_rate(yb), n_test=int(len(yb)))
    return out


def _params_v2(size, path_length):
    s = size / 16  # geometry scales with the image
    return dict(seg_len=2.0 * s, width=0.7 * s, marker_radius=1.3 * s, margin=1.3 * s,
                max_turn=math.pi / 4, n_distractors=2 if size == 16 else 4,
                distractor_length=max(2, path_length // 2), min_gap=0.7 * s + 0.9, ink=0.6)


def _sample_v2(label: int, size: int = 16, path_length: int = 3, rng=None, target_distance=None):
    """One image of the earlier generator (see :func:`generate_v2`); returns ``(image, info)``.

    ``info`` holds the marker centres, the marker distance and the path vertices. If
    ``target_distance`` is given, the markers are within a tenth of a segment of that distance.
    """
    if label not in (0, 1) or isinstance(label, bool):
        raise ValueError(f"label: expected 0 (not connected) or 1 (connected), got {label!r}")
    size, path_length, _ = check_geometry(size, path_length)
    rng = np.random.default_rng(rng)
    P = _params_v2(size, path_length)
    for _ in range(2000):
        a = _random_path(rng, size, path_length, P["seg_len"], P["max_turn"], P["margin"])
        b = _random_path(rng, size, path_length, P["seg_len"], P["max_turn"], P["margin"])
        if a is None or b is None:
            continue
        placed = [_polyline_points(a), _polyline_points(b)]  # points of the paths so far
        if _min_distance(*placed) < P["min_gap"]:
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
                if c is None:
                    continue
                pc = _polyline_points(c)
                if all(_min_distance(pc, q) >= P["min_gap"] for q in placed):
                    distractors.append(c)
                    placed.append(pc)
                    break
        if len(distractors) < P["n_distractors"]:
            continue  # every image carries all its distractors (no ink cue from missing ones)
        img = render([a, b] + distractors, [m0, m1], size, P["width"], P["marker_radius"], P["ink"])
        return img, {"markers": np.array([m0, m1]), "distance": dist, "paths": [a, b] + distractors}
    raise RuntimeError(f"pathfinder: could not place paths (size={size}, path_length={path_length}, "
                       f"target_distance={target_distance}); try a shorter path_length")


def generate_v2(n: int, size: int = 16, path_length: int = 3, seed: int = 0):
    """The **earlier** generator (version 2, kept so the cue checks can show what they catch):
    ``(images uint8 (n, size, size), labels int64 (n,), markers float (n, 2, 2))``.

    Each disconnected sample was redrawn until its marker *distance* matched that of a random
    connected sample; the marker *positions* were not matched, and with short paths that left
    cues (marker distance from the centre, ink on the line between the markers).
    """
    n = check_int("n", n, minimum=2)
    size, path_length, seed = check_geometry(size, path_length, seed)
    rng = np.random.default_rng(int(seed))
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    images = np.empty((n, size, size), dtype=np.uint8)
    markers = np.empty((n, 2, 2))
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    dists = np.empty(n)
    for i in pos:
        images[i], info = _sample_v2(1, size, path_length, rng)
        markers[i], dists[i] = info["markers"], info["distance"]
    targets = rng.permutation(np.resize(dists[pos], len(neg)))
    for i, t in zip(neg, targets):
        images[i], info = _sample_v2(0, size, path_length, rng, target_distance=t)
        markers[i], dists[i] = info["markers"], info["distance"]
    return images, labels.astype(np.int64), markers


def _read_cache(path: Path, n_train: int, n_test: int, size: int) -> dict:
    """The arrays of a cache file, or an error naming the file and how to recover."""
    want = {"x_train": (n_train, size, size), "y_train": (n_train,), "m_train": (n_train, 2, 2),
            "x_test": (n_test, size, size), "y_test": (n_test,), "m_test": (n_test, 2, 2)}
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


MAX_PATH_LENGTH = {16: 10, 32: 8}
"""The longest main path (segments) accepted for each image size. In our trials 10 segments
placed six 16x16 images (about 0.3 s each) and 8 segments six 32x32 images (0.2 s each), while
at 32x32 with 10 or more segments (four distractors) no image found a placement."""


def check_geometry(size, path_length, seed=0):
    """Validate ``size``, ``path_length`` and ``seed`` before any image is drawn."""
    size = check_int("size", size)
    check_choice("size (image side)", size, SIZES)
    path_length = check_int("path_length", path_length, minimum=2)
    if path_length > MAX_PATH_LENGTH[size]:
        raise ValueError(f"path_length: expected at most {MAX_PATH_LENGTH[size]} segments for "
                         f"{size}x{size} images (longer paths do not fit), got {path_length}")
    return size, path_length, check_seed("seed", seed)


def pathfinder(n_train: int, n_test: int, size: int = 16, path_length: int = 6, seed: int = 0,
               cache_dir: str | os.PathLike | None = None, verbose: bool = False):
    """Train and test sets, generated once and then read from the cache.

    Returns a dict with ``x_train`` (n_train, size*size) int64 tokens in ``0..255``, ``y_train``,
    ``x_test``, ``y_test``, ``m_train``/``m_test`` (marker centres, (N, 2, 2)) and ``path`` (the
    cache file). The images of one pair of :func:`generate` stay in one split when ``n_train``
    is even.
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
        xi, yi, mi = generate(n_train + n_test, size, path_length, seed)
        arrays = {"x_train": xi[:n_train], "y_train": yi[:n_train], "m_train": mi[:n_train],
                  "x_test": xi[n_train:], "y_test": yi[n_train:], "m_test": mi[n_train:]}
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
    above, since the threshold is chosen on the same samples). Labels must be 0s and 1s and
    the feature finite (anything else is an error, not a score). A threshold cannot split
    samples with equal feature values, so only thresholds between different values count.
    """
    acc, _ = _threshold_scan(feature, labels)
    return float(max(acc.max(), 1 - acc.min()))
