"""The Pathfinder generator: reproducible, balanced, markers present, no trivial cue."""
from __future__ import annotations

import numpy as np
import pytest

from tdlib import pathfinder as pf


@pytest.fixture(scope="module")
def sample16():
    seed = int(np.random.default_rng().integers(1 << 30))  # a fresh instance every run
    x, y, m = pf.generate(400, size=16, path_length=6, seed=seed)
    return x, y, m, seed


def test_shapes_balance_and_range(sample16):
    x, y, m, seed = sample16
    assert x.shape == (400, 16, 16) and x.dtype == np.uint8 and m.shape == (400, 2, 2)
    assert y.sum() == 200, f"labels not balanced (seed {seed})"
    assert x.max() == 255 and x.min() == 0
    # pairs: rows 2j and 2j+1 hold one image of each class with the same markers
    assert (y[::2] + y[1::2] == 1).all() and np.array_equal(m[::2], m[1::2])


def test_reproducible_from_seed():
    a = pf.generate(20, 16, 5, seed=7)
    b = pf.generate(20, 16, 5, seed=7)
    c = pf.generate(20, 16, 5, seed=8)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_no_ink_cue(sample16):
    x, y, m, seed = sample16
    acc_ink = pf.best_threshold_accuracy(x.reshape(len(x), -1).mean(1), y)
    print(f"seed {seed}: best threshold accuracy on mean intensity {acc_ink:.3f}")
    assert acc_ink < 0.62


N_CUE = 1200  # training and test images for the cue checks
NEAR = 0.03   # "near chance": a rule that in truth beats chance by at most 3 points


@pytest.fixture(scope="module")
def cue_sets():
    """Held-out cue baselines on fresh images of this generator and of the earlier one."""
    seed = int(np.random.default_rng().integers(1 << 30))
    out = {}
    for name, gen, length in (("new", pf.generate, 8), ("old", pf.generate_v2, 3)):
        x, y, m = gen(2 * N_CUE, size=16, path_length=length, seed=seed)
        out[name] = pf.cue_baselines((x[:N_CUE], y[:N_CUE], m[:N_CUE]),
                                     (x[N_CUE:], y[N_CUE:], m[N_CUE:]), 16)
        print(f"seed {seed}, {name} generator:",
              {k: round(v, 3) for k, v in out[name].items()})
    return out


def cue_bound(c):
    """Chance plus the declared margin plus three standard errors of a test accuracy."""
    p = c["chance"]
    return p + NEAR + 3 * np.sqrt(p * (1 - p) / c["n_test"])


@pytest.mark.slow   # the cue sets: thousands of generated images (about a minute)
def test_cue_rules_stay_near_chance(cue_sets):
    c = cue_sets["new"]
    for name in pf.CUE_NAMES:
        assert c[name] <= cue_bound(c), f"{name}: {c[name]:.3f} > {cue_bound(c):.3f}"


@pytest.mark.slow   # the cue sets: thousands of generated images (about a minute)
def test_cue_rules_catch_the_earlier_generator(cue_sets):
    """The same check fails on the earlier generator: its cues are real."""
    c = cue_sets["old"]
    assert c["marker position"] > cue_bound(c) and c["ink on the line"] > cue_bound(c)


def test_cue_rules_find_planted_cues():
    rng = np.random.default_rng()
    n = 400
    y = np.arange(n) % 2
    m = rng.uniform(7, 9, (n, 2, 2))  # markers within 1.5 px of the centre ...
    m[y == 1] = rng.uniform(1, 3, (n // 2, 2, 2))  # ... or, for label 1, in a corner
    x = rng.integers(0, 50, (n, 16, 16)).astype(np.uint8)
    x[y == 1, :4, :4] = 255  # and inks a corner
    c = pf.cue_baselines((x[:200], y[:200], m[:200]), (x[200:], y[200:], m[200:]), 16)
    assert c["marker position"] == 1.0 and c["pixel probe"] == 1.0 and c["chance"] == 0.5
    ink = pf.line_ink(np.full((1, 16, 16), 90), np.array([[[2.0, 8.0], [14.0, 8.0]]]))
    assert ink[0] == 90.0
    with pytest.raises(ValueError, match="markers"):
        pf.marker_features(np.zeros((3, 2)), 16)
    with pytest.raises(ValueError, match="labels"):
        pf.majority_rate([])


@pytest.mark.parametrize("label", [0, 1])
@pytest.mark.parametrize("size", [16, 32])
def test_both_markers_present_and_label_meaning(label, size):
    rng = np.random.default_rng()
    img, info = pf.sample(label, size=size, path_length=5 if size == 16 else 6, rng=rng)
    assert img.shape == (size, size)
    m = info["markers"]
    assert m.shape == (2, 2) and np.linalg.norm(m[0] - m[1]) > 2 * pf._params(size, 5)["marker_radius"]
    assert len(info["paths"][0]) == len(info["paths"][1]) == (6 if size == 32 else 5) + 1
    for cx, cy in m:  # the pixel holding each marker centre is (almost) fully inked
        assert img[int(cy), int(cx)] >= 200
    a, b = info["paths"][:2]
    ends_a = [a[0], a[-1]]
    on_a = [any(np.allclose(p, e) for e in ends_a) for p in m]
    on_b = [any(np.allclose(p, e) for e in (b[0], b[-1])) for p in m]
    if label == 1:
        assert all(on_a) and not any(on_b)
    else:  # one marker on the origin tip of each long snake
        assert np.allclose(m[0], a[0]) and np.allclose(m[1], b[0])


def test_cache_roundtrip(tmp_path):
    first = pf.pathfinder(6, 4, size=16, path_length=4, seed=3, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    second = pf.pathfinder(6, 4, size=16, path_length=4, seed=3, cache_dir=tmp_path)
    assert files[0].stat().st_mtime_ns == mtime  # read, not regenerated
    assert np.array_equal(first["x_train"], second["x_train"]) and first["x_train"].shape == (6, 256)
    assert np.array_equal(first["y_test"], second["y_test"])


def test_bad_input():
    with pytest.raises(ValueError, match="size"):
        pf.generate(10, size=20)
    with pytest.raises(ValueError, match="path_length"):
        pf.generate(10, size=16, path_length=1)


def test_threshold_accuracy_detects_a_real_cue():
    y = np.arange(100) % 2
    assert pf.best_threshold_accuracy(y + 0.1 * np.random.default_rng().random(100), y) == 1.0
    assert pf.best_threshold_accuracy(-y.astype(float), y) == 1.0


@pytest.mark.parametrize("size", [16, 32])
def test_paths_keep_apart_and_markers_stand_out(size):
    """No two paths touch (connectivity is unambiguous) and only markers reach full brightness."""
    rng = np.random.default_rng()
    P = pf._params(size, 4)
    for label in (0, 1):
        img, info = pf.sample(label, size=size, path_length=4, rng=rng)
        paths = info["paths"]
        assert len(paths) == 2 + P["n_distractors"]
        gaps = [pf.gap(p, q) for i, p in enumerate(paths) for q in paths[i + 1:]]
        assert min(gaps) >= P["min_gap"], f"paths {min(gaps):.2f} px apart, expected >= {P['min_gap']}"
        ys, xs = np.mgrid[0:size, 0:size] + 0.5
        far = np.ones((size, size), bool)
        for cx, cy in info["markers"]:
            far &= (xs - cx) ** 2 + (ys - cy) ** 2 > (P["marker_radius"] + 1) ** 2
        assert img[far].max() <= round(255 * P["ink"]), "a path pixel is as bright as a marker"


def test_gap_of_two_known_paths():
    a = np.array([[0.0, 0.0], [4.0, 0.0]])
    b = np.array([[0.0, 3.0], [2.0, 1.5], [4.0, 3.0]])
    assert abs(pf.gap(a, b) - 1.5) < 1e-9
