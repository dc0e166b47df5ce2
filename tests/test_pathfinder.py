"""The Pathfinder generator: reproducible, balanced, markers present, no trivial cue."""
from __future__ import annotations

import hashlib

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


# ---------------------------------------------------------------------------------------------
# bit-for-bit reproducibility across versions of the code
# ---------------------------------------------------------------------------------------------

def _digest(*arrays) -> str:
    """SHA-256 of arrays: the dtype, the shape and the bytes of each, in order."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _output_digest(case) -> str:
    """The digest of what a generator call returns: ``generate`` and ``generate_v2`` give
    images, labels and markers; ``sample_pair`` (seeded) gives for both images the image, the
    markers, the marker distance and the vertices of every path."""
    if case[0] == "sample_pair":
        _, size, length, seed = case
        arrays = []
        for img, info in pf.sample_pair(size, length, np.random.default_rng(seed)):
            arrays += [img, info["markers"], np.float64(info["distance"]), *info["paths"]]
        return _digest(*arrays)
    name, n, size, length, seed = case
    return _digest(*getattr(pf, name)(n, size, length, seed))


# SHA-256 of generator outputs, computed with the generator as it stood at commit c8a5cd4
# (before it was made faster), NOT with the code under test. Stored experiment results and the
# cached data sets (``pathfinder-v3-...npz``) depend on these exact bits: a change of any bit
# must come with a new GENERATOR_VERSION and new reference values. Keys: ("generate" or
# "generate_v2", n, size, path_length, seed) or ("sample_pair", size, path_length, seed);
# the two of n = 2400 are the configuration of the cue sets above (with a fixed seed).
REFERENCE_SHA256 = {
    ("generate", 40, 16, 3, 0):
        "c9cae67a2764cc18c8e678d52e77b2d08cea89f87ce7dfccf11ac7cc854ce6e5",
    ("generate", 40, 16, 3, 1):
        "ef2781e909f50239f700f7b46a2af8be12e168436b046e3e41848bde736ed10a",
    ("generate", 41, 16, 3, 12345):
        "8287dcc5df40ef13a9d0407e4c13cfb691178a81cb87e108d2b35793a2da3e8b",
    ("generate", 40, 16, 8, 0):
        "bfc496d7733ee55498c7e40ea075372731eb731f9fb7040bb806182390a50c74",
    ("generate", 40, 16, 8, 1):
        "3acd87869cdb100e5817923ddd2175bd171d4832165011de3d322aaf1119e029",
    ("generate", 41, 16, 8, 12345):
        "7c31f4cf269a900eb32900caa8ccde751276d0e937813913d72cacd76d828ee6",
    ("generate", 40, 16, 10, 0):
        "fa8cdc12e2aea919ea20b008e8821d7c7af05c26422aa2abe54e9cdf1e8a8df4",
    ("generate", 40, 16, 10, 1):
        "52532b1e0556bfa96fbcbaea45c6adf648189839315aefb8320d2dee9707931a",
    ("generate", 41, 16, 10, 12345):
        "538d65b92dcbce2d48739c44a7825d154090bf954dcd157caccb1aebc2e7445d",
    ("generate", 40, 32, 3, 0):
        "9da689f4e963c71825477b19dd11e365b431f3d3dc4a070a0db85e49b15e7525",
    ("generate", 40, 32, 3, 1):
        "5e67c2192ae4decf9d19c01eb39bf11e3eda3593bdde50686b94fdd7fbb86017",
    ("generate", 41, 32, 3, 12345):
        "3d813585698d1c1f7c16df03e6819add4a8cf4e3c79d6f45d116b363b7086c50",
    ("generate", 40, 32, 8, 0):
        "26f5de810788bb890eee79b002a4659b4aa5fc27b4d99dc42d1867223675fc74",
    ("generate", 40, 32, 8, 1):
        "8852aaa1fa2eda550e423a2ae7b7eab3790d9ff47e9d7b0c8ef84818cd20beb6",
    ("generate", 41, 32, 8, 12345):
        "1c017ff2b3bf05b567a6c48d455b3b68f74905b46018db07525d49f72de44a63",
    ("sample_pair", 16, 3, 0):
        "4a215d67677368cee2958af6d57fbc1c4f7769145fa92efd29629973178db00e",
    ("sample_pair", 16, 3, 7):
        "882fa29d41355b0ccee9bd7637932ba9baa11863140a373e4eb2ffd6c4f6b264",
    ("sample_pair", 16, 3, 99):
        "b778a017ac53d5dec9355890545aa0e441c61b3f415aa66e463dda0c1f76a255",
    ("sample_pair", 16, 6, 0):
        "fadcb31833afc53f7aac39acc767358f8594eadcdb64b34788a24b336f13b3f6",
    ("sample_pair", 16, 6, 7):
        "4dd669ad1dadea6b56ff99faff203fd1cb7a237349a6f307b902a2a73b3507e0",
    ("sample_pair", 16, 6, 99):
        "0cb84c81b716f793da4a986665ac4fe1c3307f3bcf87cab431eea84cab861829",
    ("sample_pair", 16, 10, 0):
        "76c5bb06d75e65217c0c232b4af731b9def2c1293549a4750cf2ed6d4717e514",
    ("sample_pair", 16, 10, 7):
        "2184cce8f985e28701efca9fd16bb3640ab18cd71339ae0f0bc0fd7c4c250110",
    ("sample_pair", 16, 10, 99):
        "587b61590c1930ae98914433c959e937144cf97e745eb69ee919dddf10ba79e5",
    ("sample_pair", 32, 4, 0):
        "ee053e57a7abdd9c83736f42f56686387ddfc9b29a2ae9c0757b1e02b3267302",
    ("sample_pair", 32, 4, 7):
        "c54cb3a1d9f8007ebefe9bb4692ff7789b424a5ea38d2702a5e3bc188204f0a9",
    ("sample_pair", 32, 4, 99):
        "5276c07e67348005413b83499fecb66368d303d97070f2c64563d8db0335b82c",
    ("sample_pair", 32, 8, 0):
        "1fadddf3c1e590ed2370a4b4340e84180b852f048c290c168afdb5d3f2582c12",
    ("sample_pair", 32, 8, 7):
        "e5c2a1db365531edcf49ea1ee1879e86e9762f453b5beb3af3dbf77bc35cae6c",
    ("sample_pair", 32, 8, 99):
        "a52165101507615aaf189691bef74a165d3693eb0c09b3bf64736f2a576db5fe",
    ("generate_v2", 40, 16, 3, 0):
        "f80a1f0b31a0ac2eed5adcb7b517cc3f2da7c1a717ea2d5376876fcdac35d108",
    ("generate_v2", 41, 16, 3, 5):
        "5c116bffa0db12ab5e7f7df0162f63279b9f4b9db874072099af22b35629b0f4",
    ("generate_v2", 20, 32, 4, 2):
        "cac0629e5684a2f2466cd2ad6a171f124508a935acc197d8c009adcd7ceb2b53",
    ("generate", 2400, 16, 8, 2024):
        "e69a589fdad20bd2deb335d99177104a3720feadf504f66157d75a3928bf9472",
    ("generate_v2", 2400, 16, 3, 2024):
        "6748782c5124ca5b6a63b1a9a06143418f2015bb2877a1cf71acec7188e44d6d",
}
SLOW_CASES = {  # about a minute together
    ("generate", 40, 16, 10, 0), ("generate", 40, 16, 10, 1), ("generate", 41, 16, 10, 12345),
    ("sample_pair", 16, 10, 7), ("sample_pair", 16, 10, 99),
    ("generate", 2400, 16, 8, 2024), ("generate_v2", 2400, 16, 3, 2024),
}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CASES
                                  else c for c in REFERENCE_SHA256])
def test_same_bits_as_the_reference_generator(case):
    assert _output_digest(case) == REFERENCE_SHA256[case], f"{case}: generated data changed"
