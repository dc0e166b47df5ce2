"""Filter-normalized directions and the loss surface."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tdlib.landscape import loss_fn_for, random_directions, surface
from tdlib.transformer import Classifier, ModelConfig


def tiny(kernel="softmax", seed=0):
    return Classifier(ModelConfig(max_len=8, D=8, hidden=16, H=2, kernel=kernel), seed=seed)


def data(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (24, 8), generator=g), torch.randint(0, 2, (24,), generator=g)


def test_origin_is_training_loss_and_model_restored():
    seed = int(torch.randint(1 << 30, ()))
    model = tiny(seed=seed)
    x, y = data(seed)
    f = loss_fn_for(x, y, batch=10)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    d1, d2 = random_directions(model, seed=seed)
    F = surface(model, f, d1, d2, [-0.5, 0.0, 0.5], [-0.5, 0.0, 0.5])
    with torch.no_grad():
        ce = float(torch.nn.functional.cross_entropy(model(x), y))
    assert abs(F[1, 1] - ce) < 1e-6 and abs(f(model) - ce) < 1e-6
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    # a grid point is the loss of the explicitly moved model
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.add_(0.5 * d1[n] - 0.5 * d2[n])
    assert abs(F[2, 0] - f(model)) < 1e-6
    assert np.ptp(F) > 0


def test_filter_normalization():
    model = tiny()
    (d,) = random_directions(model, seed=1, k=1)
    for n, p in model.named_parameters():
        if p.ndim <= 1:
            assert torch.count_nonzero(d[n]) == 0
        else:
            rows_w = p.detach().reshape(p.shape[0], -1).norm(dim=1)
            rows_d = d[n].reshape(p.shape[0], -1).norm(dim=1)
            assert torch.allclose(rows_w, rows_d, rtol=1e-5, atol=1e-7), n


def test_same_draw_for_both_kernels():
    soft, gauss = tiny("softmax", seed=3), tiny("gaussian", seed=3)
    ds, dg = random_directions(soft, seed=5), random_directions(gauss, seed=5)
    assert all(torch.equal(ds[i][n], dg[i][n]) for i in range(2) for n in ds[0])
    d_other = random_directions(soft, seed=6)
    assert not torch.equal(ds[0]["head.weight"], d_other[0]["head.weight"])


def test_half_axis_rises_measure_curvature_at_the_centre():
    coords = np.linspace(-1, 1, 11)
    A, B = np.meshgrid(coords, coords, indexing="ij")
    a, b = np.random.default_rng().uniform(0.1, 3.0, 2)
    F = 0.7 + a * A**2 + b * B**2 + 0.05 * np.sin(9 * A)  # the far field plays no part
    from tdlib.landscape import flatter, half_axis_rises

    r, rises = half_axis_rises(F, coords, step=2)
    assert r == pytest.approx(0.4)
    expect = np.array([a * r**2 + 0.05 * np.sin(9 * r), a * r**2 - 0.05 * np.sin(9 * r),
                       b * r**2, b * r**2])
    np.testing.assert_allclose(rises, expect, rtol=1e-12, atol=1e-12)
    _, batch = half_axis_rises(np.stack([F, 2 * F]), coords)
    assert batch.shape == (2, 4)
    assert flatter([1, 3], [2, 4], ("x", "y")) == "x"  # paired: each rise of x is below
    assert flatter([2, 4], [1, 3], ("x", "y")) == "y"
    assert flatter([1, 4], [2, 3]) == "tie"
    with pytest.raises(ValueError, match="paired"):
        flatter([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="symmetric"):
        half_axis_rises(F[:10, :10], coords[:10])
    with pytest.raises(ValueError, match="half-width"):
        half_axis_rises(F, coords, step=6)


def _check_device(model, loss_fn, device):
    d1, d2 = random_directions(model, seed=1)
    assert all(t.device == torch.device(device) for d in (d1, d2) for t in d.values())
    F = surface(model, loss_fn, d1, d2, [-0.1, 0.0, 0.1], [0.0])
    assert np.isfinite(F).all()
    return F


def test_directions_and_data_follow_the_model_device():
    model = tiny()
    x, y = data(4)
    F = _check_device(model, loss_fn_for(x, y), "cpu")
    # a model on the "meta" device would show a tensor left behind on the CPU at once
    meta = tiny().to("meta")
    d1, _ = random_directions(meta, seed=1)
    assert all(t.device.type == "meta" for t in d1.values())
    assert F.shape == (3, 1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")
def test_landscape_command_on_cuda(tmp_path):
    from tdlib.experiments import main

    model = tiny().cuda()
    x, y = data(4)
    _check_device(model, loss_fn_for(x, y), "cuda:0")
    out = tmp_path / "ls.npz"
    assert main(["landscape", "--task", "text", "--device", "cuda", "--max-len", "16",
                 "--steps", "2", "--eval-every", "1", "--stage1-steps", "2", "--grid", "5",
                 "--n-loss", "8", "--n-eval", "8", "--near-seeds", "1", "--out", str(out),
                 "--quiet"]) == 0
    assert np.isfinite(np.load(out)["loss_gaussian"]).all()


# ---------------------------------------------------------------------------------------------
# stored landscapes: damaged files are named on load, with the field and the command
# ---------------------------------------------------------------------------------------------

def _stored_copy(tmp_path, task="text"):
    """A copy of a stored landscape pair (the .npz and its .json) in ``tmp_path``."""
    import shutil

    from tdlib import book

    src = book.data_path("experiments", f"{task}-landscape.npz")
    for f in (src, src.with_suffix(".json")):
        shutil.copy(f, tmp_path / f.name)
    return tmp_path / src.name


def _edit_npz(path, edit):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _roll(a):
    a["coords"] = a["coords"][::-1].copy()


NPZ_EDITS = {
    "coords-missing": (lambda a: a.pop("coords"), "'loss_softmax'|'coords'"),
    "coords-decreasing": (_roll, "'coords'.*strictly increasing"),
    "coords-2d": (lambda a: a.update(coords=a["coords"][None]), "'coords'.*1-d grid"),
    "coords-nan": (lambda a: a["coords"].__setitem__(0, np.nan), "'coords'.*finite"),
    "coords-asymmetric": (lambda a: a.update(coords=a["coords"] + 0.1), "'coords'.*symmetric"),
    "loss-shape": (lambda a: a.update(loss_gaussian=a["loss_gaussian"][:, :-1]),
                   "'loss_gaussian'.*shape"),
    "loss-missing": (lambda a: a.pop("loss_softmax"), "'loss_softmax': missing"),
    "loss-negative": (lambda a: a["loss_softmax"].__setitem__((0, 0), -1.0),
                      "'loss_softmax'.*positive"),
    "origin-off-centre": (lambda a: a.update(origin_softmax=a["origin_softmax"] + 1.0),
                          "'origin_softmax'.*centre"),
    "origin-array": (lambda a: a.update(origin_gaussian=np.ones(3)), "'origin_gaussian'"),
}


@pytest.mark.parametrize("edit", sorted(NPZ_EDITS))
def test_a_damaged_landscape_npz_is_named_on_load(tmp_path, edit):
    import re

    from tdlib import book, experiments

    f = _stored_copy(tmp_path)
    change, field = NPZ_EDITS[edit]
    _edit_npz(f, change)
    with pytest.raises(book.StoredResultError) as err:
        experiments.stored(f.name, path=tmp_path)
    msg = str(err.value)
    assert str(f) in msg and re.search(field, msg), msg
    assert "remake it with: python -m tdlib.experiments landscape" in msg, msg
    assert book.check_file(f), "the checker reports the same file"


def test_near_centre_draws_are_checked_with_the_grid(tmp_path):
    from tdlib import book

    f = _stored_copy(tmp_path, "text")
    _edit_npz(f, lambda a: a.update(near_seeds=np.array([1, 1, 2, 3])))
    with pytest.raises(book.StoredResultError, match="'near_seeds'.*distinct"):
        book.load_npz(f)
    f = _stored_copy(tmp_path, "text")
    _edit_npz(f, lambda a: a.update(near_gaussian=a["near_gaussian"][:2]))
    with pytest.raises(book.StoredResultError, match="'near_gaussian'.*shape"):
        book.load_npz(f)


@pytest.mark.parametrize("field,value,match", [
    ("grid", 14, "'grid'.*odd integer"), ("grid", None, "'grid'"),
    ("span", -1.0, "'span'.*positive"), ("n_loss", 0, "'n_loss'.*integer >= 1"),
    ("stage1", {}, "'stage1.config.steps'"),
])
def test_a_damaged_landscape_json_is_named_on_load(tmp_path, field, value, match):
    import json

    from tdlib import book

    f = _stored_copy(tmp_path, "pathfinder").with_suffix(".json")
    doc = json.loads(f.read_text())
    doc[field] = value
    f.write_text(json.dumps(doc))
    with pytest.raises(book.StoredResultError, match=match) as err:
        book.load_json(f)
    assert str(f) in str(err.value) and "python -m tdlib.experiments landscape" in str(err.value)


def test_the_json_must_describe_the_npz_grid(tmp_path):
    import json

    from tdlib import book

    f = _stored_copy(tmp_path, "pathfinder")
    meta = f.with_suffix(".json")
    doc = json.loads(meta.read_text())
    doc["grid"] += 2
    meta.write_text(json.dumps(doc))
    with pytest.raises(book.StoredResultError, match="'grid' of the .json: expected 13"):
        book.load_npz(f)


def test_the_stored_landscapes_pass_their_checks():
    from tdlib import book, landscape

    for task in ("text", "pathfinder"):
        f = book.data_path("experiments", f"{task}-landscape.npz")
        arrays = book.load_npz(f)
        assert landscape.check_arrays(arrays, book.load_json(f.with_suffix(".json"))) == []
        assert book.check_file(f) == [] and book.check_file(f.with_suffix(".json")) == []
