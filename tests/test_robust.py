"""Bad input gets a clear error naming the argument, before any work; stored results survive a
failed write; no silent wrong numbers (the cases a careless user hits first)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tdlib import book, experiments, landscape, pathfinder, phase, text
from tdlib.attention import KERNELS, AttentionLayer, register_kernel, squared_distances
from tdlib.data import random_data, random_inputs
from tdlib.train import DivergenceError, History, PlateauError, train
from tdlib.transformer import Classifier, ModelConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def custom_kernel():
    """Register kernels under fresh names and remove them afterwards."""
    added = []

    def add(name, f):
        register_kernel(name, f)
        added.append(name)
        return name

    yield add
    for name in added:
        KERNELS.pop(name, None)


# ---------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------

def gaussian_collapse(**kw):
    model = AttentionLayer(6, kernel="gaussian", d_out=6, seed=3)
    X, Y = random_data(4, 4, 6, d_out=6, seed=3)
    return model, X, Y, train(model, X, Y, lr=1.0, steps=300, progress=False, **kw)


def test_gaussian_plateau_at_infinity_is_detected():
    with pytest.raises(PlateauError, match=r"(?s)plateau.*lr=1\b") as err:
        gaussian_collapse()
    assert isinstance(err.value, DivergenceError)
    model, X, Y, hist = gaussian_collapse(on_divergence="stop")
    assert hist.stop == "plateau" and hist.steps < 300
    # it is a real plateau: the loss is that of the zero output and the weights vanish
    assert hist.final_loss == pytest.approx(0.5 * float((Y ** 2).sum()), rel=1e-3)
    assert float(model.scores(X).detach().max()) < 1e-4
    assert "plateau" in repr(hist)
    assert len(hist.loss) == len(hist.grad_norm["W_Q"])


def test_a_healthy_gaussian_run_is_not_called_a_plateau():
    model = AttentionLayer(6, kernel="gaussian", d_out=6, seed=3)
    X, Y = random_data(4, 4, 6, d_out=6, seed=3)
    hist = train(model, X, Y, lr=0.01, steps=50, progress=False)
    assert hist.stop == "steps" and hist.final_loss < hist.loss[0]


def test_softmax_divergence_still_blames_the_step_size():
    model = AttentionLayer(6, kernel="softmax", d_out=6, seed=3)
    X, Y = random_data(4, 4, 6, d_out=6, seed=3)
    with pytest.raises(DivergenceError, match=r"lr=1e\+06\s+is\s+too\s+large"):
        train(model, X, Y, lr=1e6, steps=50, progress=False)


def test_divergence_does_not_blame_lr_for_a_nan_kernel(custom_kernel):
    name = custom_kernel("robust-nan", lambda Q, K: torch.full(Q.shape[:-1] + (K.shape[-2],), math.nan,
                                                               dtype=Q.dtype))
    model = AttentionLayer(3, kernel=name, seed=0)
    X, Y = random_data(2, 3, 3, d_out=3)
    with pytest.raises(DivergenceError) as err:
        train(model, X, Y, lr=0.1, steps=5, progress=False)
    msg = " ".join(str(err.value).split())  # the message is wrapped into lines
    assert "robust-nan" in msg and "not the cause" in msg and "too large" not in msg


def test_divergence_at_step_0_in_float32_is_overflow_not_lr():
    model = AttentionLayer(4, kernel="softmax", seed=0, scale=1e20, dtype=torch.float32)
    X, Y = random_data(2, 3, 4, d_out=4, dtype=torch.float32)
    with pytest.raises(DivergenceError, match=r"before\s+any\s+step") as err:
        train(model, X, Y, lr=0.1, steps=5, progress=False)
    assert "too large for this problem" not in " ".join(str(err.value).split())


def test_stop_at_step_0_gives_a_readable_history():
    model = AttentionLayer(4, kernel="softmax", seed=0, scale=1e20, dtype=torch.float32)
    X, Y = random_data(2, 3, 4, d_out=4, dtype=torch.float32)
    hist = train(model, X, Y, lr=0.1, steps=5, on_divergence="stop", progress=False)
    assert hist.stop == "diverged" and "no finite loss" in repr(hist)
    with pytest.raises(ValueError, match="final_loss"):
        hist.final_loss
    assert "nothing yet" in repr(History(lr=0.1, trainable=("W_Q",)))


@pytest.mark.parametrize("trainable, error, match", [
    ("W_Q", TypeError, "the string 'W_Q'"),
    (("W_V", "W_V"), ValueError, "distinct"),
    ((), ValueError, "non-empty"),
    (("W_X",), ValueError, "trainable parameter"),
    (3, TypeError, "trainable"),
])
def test_trainable_is_checked(trainable, error, match):
    model = AttentionLayer(3, seed=0)
    X, Y = random_data(2, 2, 3, d_out=3)
    with pytest.raises(error, match=match):
        train(model, X, Y, lr=0.1, steps=1, trainable=trainable)


def test_a_kernel_of_the_wrong_shape_is_named(custom_kernel):
    name = custom_kernel("robust-bad-shape", lambda Q, K: Q @ K.transpose(-1, -2)[..., :2])
    with pytest.raises(ValueError, match="robust-bad-shape.*shape"):
        AttentionLayer(4, kernel=name)(torch.randn(2, 3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="robust-bad-shape.*shape"):
        Classifier(ModelConfig(max_len=4, D=8, hidden=8, H=2, kernel=name))


def test_register_kernel_keeps_builtins(custom_kernel):
    before = KERNELS["softmax"]
    for builtin in ("softmax", "gaussian"):
        with pytest.raises(ValueError, match=f"'{builtin}' is a built-in kernel.*replace=True"):
            register_kernel(builtin, lambda Q, K: Q @ K.transpose(-1, -2))
    assert KERNELS["softmax"] is before
    try:
        f = lambda Q, K: torch.softmax(Q @ K.transpose(-1, -2), -1)  # noqa: E731
        register_kernel("softmax", f, replace=True)
        assert KERNELS["softmax"]() is f
    finally:
        KERNELS["softmax"] = before
    # a kernel of one's own may be registered again (re-running a notebook cell)
    name = custom_kernel("robust-twice", lambda Q, K: Q @ K.transpose(-1, -2))
    g = lambda Q, K: 2 * Q @ K.transpose(-1, -2)  # noqa: E731
    register_kernel(name, g)
    assert KERNELS[name]() is g


def test_random_inputs_rejects_integer_dtypes_and_bad_seeds():
    with pytest.raises(TypeError, match="dtype"):
        random_inputs(2, 2, 2, dtype=torch.int64)
    with pytest.raises(ValueError, match="seed"):
        random_inputs(2, 2, 2, seed=-1)
    with pytest.raises(TypeError, match="seed"):
        AttentionLayer(3, seed=1.5)
    with pytest.raises(TypeError, match="x_scale"):
        random_data(2, 2, 2, x_scale="big")


# ---------------------------------------------------------------------------------------------
# the Gaussian kernel's numerical range
# ---------------------------------------------------------------------------------------------

def direct(Q, K):
    return ((Q.unsqueeze(-2) - K.unsqueeze(-3)) ** 2).sum(-1)


@pytest.mark.parametrize("offset", [1e3, 1e4])
def test_squared_distances_of_large_close_points_in_float32(offset):
    g = torch.Generator().manual_seed(0)
    Q = offset + torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
    K = Q + 0.3 * torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
    q, k = Q.float(), K.float()
    exact = direct(q.double(), k.double())  # exact distances of the float32 inputs
    got = squared_distances(q, k).double()
    err = float((got - exact).abs().max())
    expanded = ((q * q).sum(-1, keepdim=True) + (k * k).sum(-1).unsqueeze(-2)
                - 2 * q @ k.transpose(-1, -2)).clamp_min(0).double()
    print(f"offset {offset:g}: float32 error {err:.2e}, expanded form without centring "
          f"{float((expanded - exact).abs().max()):.2e} (distances up to {float(exact.max()):.1f})")
    assert err < 1e-5 * max(1.0, float(exact.max()))
    # the kernel values themselves
    S = torch.exp(-got / 4.0)
    assert float((S - torch.exp(-exact / 4.0)).abs().max()) < 1e-5


def test_squared_distance_gradients_match_the_direct_formula():
    g = torch.Generator().manual_seed(1)
    Q = (50 + torch.randn(2, 2, 4, 3, generator=g, dtype=torch.float64)).requires_grad_()
    K = (50 + torch.randn(2, 2, 4, 3, generator=g, dtype=torch.float64)).requires_grad_()
    W = torch.randn(2, 2, 4, 4, generator=g, dtype=torch.float64)
    ours = torch.autograd.grad((W * squared_distances(Q, K)).sum(), (Q, K))
    ref = torch.autograd.grad((W * direct(Q, K)).sum(), (Q, K))
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-8, rtol=1e-10)
    q, k = (t.detach()[:1, :1] * 0.02 for t in (Q, K))
    assert torch.autograd.gradcheck(lambda a, b: torch.exp(-squared_distances(a, b)),
                                    (q.requires_grad_(), k.requires_grad_()))


# ---------------------------------------------------------------------------------------------
# the classifier keeps the caller's random state
# ---------------------------------------------------------------------------------------------

def test_classifier_seed_leaves_the_global_generator_alone():
    cfg = ModelConfig(max_len=6, D=8, hidden=8, H=2)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = Classifier(cfg, seed=5)
    assert torch.equal(torch.rand(3), expected), "Classifier changed the global random state"
    b = Classifier(cfg, seed=5)
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n
    # the same draws as before: torch's generator seeded with the seed (stored runs rely on it)
    torch.manual_seed(5)
    emb = torch.nn.Embedding(cfg.vocab, cfg.D)
    assert torch.equal(a.embed.weight, emb.weight)
    with pytest.raises(ValueError, match="seed"):
        Classifier(cfg, seed=-2)


# ---------------------------------------------------------------------------------------------
# text data
# ---------------------------------------------------------------------------------------------

def write_csv(path, rows):
    with open(path, "w", encoding="latin-1") as fh:
        fh.write("sentiment,text\n")
        for lab, t in rows:
            fh.write(f"{lab},{t}\n")
    return path


def test_tweets_rejects_one_class_and_tiny_corpora(tmp_path):
    one = write_csv(tmp_path / "one.csv", [("positive", f"good {i}") for i in range(20)])
    with pytest.raises(ValueError, match=r"one.csv.*0 negative"):
        text.tweets(path=one)
    tiny = write_csv(tmp_path / "tiny.csv", [("positive", "good a"), ("positive", "good b"),
                                             ("negative", "bad a"), ("negative", "bad b")])
    with pytest.raises(ValueError, match=r"tiny.csv.*test set"):
        text.tweets(path=tiny)
    ok = write_csv(tmp_path / "ok.csv", [(lab, f"{lab} {i}") for i in range(10)
                                         for lab in ("positive", "negative")])
    d = text.tweets(path=ok, test_fraction=0.5)
    for part in ("train", "test"):
        assert set(d[f"y_{part}"].tolist()) == {0, 1}


def test_imdb_limit_is_balanced(tmp_path):
    from test_text import write_imdb

    root = write_imdb(tmp_path, {"train": {"pos": 5, "neg": 3}, "test": {"pos": 3, "neg": 4}})
    d = text.imdb_folder(root, limit=4)
    for part in ("train", "test"):
        assert sorted(d[f"y_{part}"].tolist()) == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="limit: expected an even"):
        text.imdb_folder(root, limit=3)
    with pytest.raises(ValueError, match="limit.*3 negative"):
        text.imdb_folder(root, limit=8)


def test_encode_names_a_non_string():
    with pytest.raises(TypeError, match="index 1"):
        text.encode(["ok", 3])


# ---------------------------------------------------------------------------------------------
# Pathfinder
# ---------------------------------------------------------------------------------------------

def test_impossible_path_length_is_rejected_at_once(tmp_path, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("an image was generated before the path length was checked")

    monkeypatch.setattr(pathfinder, "sample", no_work)
    for call in (lambda: pathfinder.generate(10, size=16, path_length=40),
                 lambda: pathfinder.pathfinder(10, 10, size=16, path_length=40, cache_dir=tmp_path),
                 lambda: experiments.ExperimentConfig(task="pathfinder", path_length=40).resolved()):
        with pytest.raises(ValueError, match="path_length: expected at most"):
            call()
    assert not list(tmp_path.iterdir())


def test_pathfinder_label_and_empty_features_are_named():
    with pytest.raises(ValueError, match="label: expected 0"):
        pathfinder.sample(2, size=16, path_length=3, rng=0)
    with pytest.raises(ValueError, match="non-empty"):
        pathfinder.best_threshold_accuracy([], [])


@pytest.mark.parametrize("content", [b"not a zip", b"\x80\x04K\x01."])  # junk, a pickle
def test_damaged_pathfinder_cache_is_named(tmp_path, content):
    first = pathfinder.pathfinder(4, 2, size=16, path_length=3, seed=9, cache_dir=tmp_path)
    f = Path(first["path"])
    f.write_bytes(content)
    with pytest.raises(ValueError, match=f"{f.name}.*delete it"):
        pathfinder.pathfinder(4, 2, size=16, path_length=3, seed=9, cache_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# experiments: duplicates, missing numbers, validation before work
# ---------------------------------------------------------------------------------------------

def fake_run(kernel="softmax", seed=0, acc=(0.5, 0.7), task="text"):
    return {"task": task, "kernel": kernel, "seed": seed, "seconds": 1.0,
            "curves": {"step": [0, 10][: len(acc)], "test_acc": list(acc),
                       "test_loss": [0.7, 0.6][: len(acc)], "train_loss": [None, 0.6][: len(acc)]}}


def no_work(*args, **kwargs):
    raise AssertionError("work started before the arguments were checked")


def test_summarize_refuses_missing_values_and_duplicates():
    with pytest.raises(ValueError, match=r"text/softmax/seed 1: test_acc is missing.*step 10"):
        experiments.summarize([fake_run(seed=0), fake_run(seed=1, acc=(0.5, None))])
    with pytest.raises(ValueError, match="seed 0 appears twice"):
        experiments.summarize([fake_run(seed=0), fake_run(seed=0)])
    s = experiments.summarize([fake_run(seed=0), fake_run(seed=1, acc=(0.5, 0.9))])
    assert s["softmax"]["mean"].tolist() == pytest.approx([0.5, 0.8])
    tl = experiments.summarize([fake_run(seed=0)], "train_loss")["softmax"]["mean"]
    assert math.isnan(tl[0]) and tl[1] == 0.6  # no training loss before the first step


@pytest.mark.parametrize("seeds, match", [(["0", "0"], "seeds: expected distinct"),
                                          (["0", "-1"], "seed: expected an integer >= 0")])
def test_curves_checks_seeds_before_training(tmp_path, monkeypatch, capsys, seeds, match):
    monkeypatch.setattr(experiments, "run", no_work)
    monkeypatch.setattr(experiments, "load_data", no_work)
    with pytest.raises(SystemExit):
        experiments.main(["curves", "--task", "text", "--out", str(tmp_path / "c.json"),
                          "--seeds", *seeds])
    assert match in capsys.readouterr().err
    with pytest.raises(ValueError, match=match):
        experiments.sweep(experiments.ExperimentConfig(), seeds=[int(s) for s in seeds])


def unwritable(tmp_path) -> Path:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return blocker / "out.json"  # a folder that cannot exist (its parent is a file)


def test_unwritable_out_is_found_before_the_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(experiments, "run", no_work)
    monkeypatch.setattr(experiments, "landscape_run", no_work)
    monkeypatch.setattr(phase, "sweep", no_work)
    out = unwritable(tmp_path)
    for argv in (["curves", "--task", "text", "--out", str(out)],
                 ["landscape", "--task", "text", "--stage1-steps", "5", "--out", str(out.with_suffix(".npz"))]):
        with pytest.raises(SystemExit):
            experiments.main(argv)
        assert "cannot write" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        phase.main(["--out", str(out.parent / "folder"), "--steps", "16"])
    assert "cannot write" in capsys.readouterr().err


@pytest.mark.parametrize("extra, match", [(["--grid", "0"], "grid"), (["--span", "nan"], "span"),
                                          (["--span", "-1"], "span"), (["--grid", "1"], "grid")])
def test_landscape_grid_is_checked_before_training(tmp_path, monkeypatch, capsys, extra, match):
    monkeypatch.setattr(experiments, "landscape_run", no_work)
    with pytest.raises(SystemExit):
        experiments.main(["landscape", "--task", "text", "--stage1-steps", "5",
                          "--out", str(tmp_path / "l.npz"), *extra])
    assert match in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_surface_refuses_empty_or_nan_grids():
    m = Classifier(ModelConfig(max_len=4, D=8, hidden=8, H=2), seed=0)
    d1, d2 = landscape.random_directions(m)
    with pytest.raises(ValueError, match="alphas"):
        landscape.surface(m, lambda model: 1.0, d1, d2, [], [0.0])
    with pytest.raises(ValueError, match="betas"):
        landscape.surface(m, lambda model: 1.0, d1, d2, [0.0], [math.nan])


def test_merge_refuses_the_same_runs_twice(tmp_path, capsys):
    a = experiments.save([fake_run(seed=0)], tmp_path / "a.json", command="python -m tdlib.experiments a")
    b = experiments.save([fake_run(seed=0)], tmp_path / "b.json", command="python -m tdlib.experiments b")
    c = experiments.save([fake_run(seed=1)], tmp_path / "c.json", command="python -m tdlib.experiments c")
    out = tmp_path / "joined.json"
    for files, match in (([a, a], "more than once"), ([a, b], "appears twice")):
        with pytest.raises(SystemExit):
            experiments.main(["merge", "--out", str(out)] + [str(f) for f in files])
        assert match in capsys.readouterr().err
    assert not out.exists()
    experiments.main(["merge", "--out", str(out), str(a), str(c)])
    assert [r["seed"] for r in experiments.load(out)["runs"]] == [0, 1]


def test_sweep_config_rejects_huge_ratios_by_name():
    with pytest.raises(ValueError, match="ratios: 1e\\+09 gives D"):
        phase.SweepConfig(ratios=[1e9]).validate()


# ---------------------------------------------------------------------------------------------
# atomic writes and the check of stored results
# ---------------------------------------------------------------------------------------------

def fail_on_call(k, exc=OSError("No space left on device")):
    """A stand-in for os.replace that works ``k - 1`` times, then raises."""
    import os

    calls = []
    real = os.replace

    def replace(*args):
        calls.append(args)
        if len(calls) >= k:
            raise exc
        return real(*args)

    return replace


def test_experiments_save_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    f = experiments.save([fake_run(seed=0)], tmp_path / "r.json", command="python -m tdlib.experiments x")
    before = f.read_bytes()
    monkeypatch.setattr(book.os, "replace", fail_on_call(1))
    with pytest.raises(OSError):
        experiments.save([fake_run(seed=1)], f, command="python -m tdlib.experiments y")
    assert f.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_a_failure_while_writing_arrays_keeps_the_old_file(tmp_path, monkeypatch):
    f = book.save_npz(tmp_path / "a.npz", {"x": np.arange(3.0)})

    def broken(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(book.np, "savez", broken)
    with pytest.raises(OSError):
        book.save_npz(f, {"x": np.zeros(5)})
    assert book.load_npz(f)["x"].tolist() == [0.0, 1.0, 2.0]


def test_landscape_pair_is_written_as_one(tmp_path, monkeypatch):
    npz, js = tmp_path / "l.npz", tmp_path / "l.json"
    book.save_pair(npz, {"loss": np.ones((3, 3))}, js, {"provenance": {"command": "python -m tdlib.x"}})
    assert book.check_file(npz) == [] and book.check_file(js) == []
    old = (npz.read_bytes(), js.read_bytes())
    # the arrays cannot be encoded: nothing is touched
    with pytest.raises(ValueError):
        book.save_pair(npz, {"loss": np.ones(2)}, js, {"x": math.inf})
    assert (npz.read_bytes(), js.read_bytes()) == old
    # a crash between the two moves is detected by the checksum the .json records
    monkeypatch.setattr(book.os, "replace", fail_on_call(2))
    with pytest.raises(OSError):
        book.save_pair(npz, {"loss": np.zeros((3, 3))}, js, {"provenance": {"command": "python -m tdlib.x"}})
    assert js.read_bytes() == old[1]
    assert any("checksum" in p for p in book.check_file(npz))


def test_phase_cli_writes_atomically(tmp_path, monkeypatch):
    fake = {"provenance": {"command": None, "wall_seconds": 1.0}, "config": {}}
    monkeypatch.setattr(phase, "sweep", lambda cfg, progress=True, **where: dict(fake))
    phase.main(["--out", str(tmp_path), "--quiet", "--steps", "16"])
    f = tmp_path / "results.json"
    before = f.read_bytes()
    monkeypatch.setattr(book.os, "replace", fail_on_call(1))
    with pytest.raises(OSError):
        phase.main(["--out", str(tmp_path), "--quiet", "--steps", "32"])
    assert f.read_bytes() == before


def test_load_json_rejects_nan_naming_the_file(tmp_path):
    f = tmp_path / "nan.json"
    f.write_text('{"x": NaN}')
    with pytest.raises(ValueError, match="nan.json.*NaN is not JSON"):
        book.load_json(f)


def test_every_stored_result_passes_the_check():
    report = book.check_stored()
    assert len(report) >= 5
    assert {str(f): p for f, p in report.items() if p} == {}


def test_check_command_names_the_bad_file(tmp_path):
    good = experiments.save([fake_run(seed=0)], tmp_path / "good.json", command="python -m tdlib.experiments g")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "truncated.json").write_text(good.read_text()[:40])
    experiments.save([fake_run(seed=0, acc=(0.5, 1.5))], tmp_path / "impossible.json",
                     command="python -m tdlib.experiments i")
    (tmp_path / "orphan.npz").write_bytes(book.save_npz(tmp_path / "x.npz", {"a": np.ones(2)}).read_bytes())
    proc = subprocess.run([sys.executable, "-m", "tdlib.experiments", "check", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    bad = {line.split()[1] for line in proc.stdout.splitlines() if line.startswith("BAD")}
    assert {Path(b).name for b in bad} == {"truncated.json", "impossible.json", "orphan.npz", "x.npz"}
    assert f"ok  {good}" in proc.stdout
    ok = subprocess.run([sys.executable, "-m", "tdlib.book", "check"], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(good.read_text())["runs"][0]["seed"] == 0


# ---------------------------------------------------------------------------------------------
# the classes of bad input found by trying the library as a careless user would
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("offset", [1e2, 1e3, 1e4])
def test_float32_gaussian_scores_of_a_far_tight_cluster_are_accurate(offset):
    """The layer centres the tokens before a shift-invariant kernel: float32 scores of points
    near ``offset`` agree with float64 ones (rounding ``X W_Q`` at 1e4 alone costs 5e-4)."""
    g = torch.Generator().manual_seed(int(offset))
    m32 = AttentionLayer(4, kernel="gaussian", seed=1, dtype=torch.float32)
    m32.set_weights(W_K=m32.W_Q.detach())              # tied: queries meet their own keys
    m64 = AttentionLayer(4, kernel="gaussian", seed=1)
    m64.set_weights(**{p: getattr(m32, p).detach().double() for p in ("W_Q", "W_K", "W_V", "W_O")})
    X = (offset + 0.3 * torch.randn(3, 5, 4, generator=g, dtype=torch.float64)).float()
    S32, S64 = m32.scores(X).detach().double(), m64.scores(X.double()).detach()
    assert float(S64.max()) > 0.9                       # the scores are not all tiny
    err = float((S32 - S64).abs().max())
    print(f"offset {offset:g}: float32 scores within {err:.1e} of float64")
    assert err < 1e-6
    # the gradient is that of the same function
    Y = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad(m64.loss(X.double(), Y), m64.W_Q)[0]
    Q, K = m64.queries_keys(X.double())
    direct = 0.5 * ((torch.einsum("Nhij,Njd,hdv,hvo->Nio", torch.exp(-direct_d(Q, K) / 4.0),
                                  X.double(), m64.W_V, m64.W_O) - Y) ** 2).sum()
    assert torch.allclose(grads, torch.autograd.grad(direct, m64.W_Q)[0], rtol=1e-6, atol=1e-9)


def direct_d(Q, K):
    return ((Q.unsqueeze(-2) - K.unsqueeze(-3)) ** 2).sum(-1)


def test_a_kernel_returning_nan_is_named_by_the_forward(custom_kernel):
    name = custom_kernel("robust-nan-forward", lambda Q, K: torch.log(Q @ K.transpose(-1, -2)))
    model = AttentionLayer(3, kernel=name, seed=0)
    X, _ = random_data(2, 3, 3, d_out=3)
    with pytest.raises(FloatingPointError, match=rf"kernel '{name}'.*NaN/Inf for finite queries"):
        model(X)
    with pytest.raises(FloatingPointError, match=rf"kernel '{name}'"):
        model.scores(X)


@pytest.mark.parametrize("lr", [True, False, "0.1", np.float64("nan"), 1 + 0j])
def test_train_refuses_a_step_size_that_is_not_a_positive_number(lr):
    model = AttentionLayer(3, seed=0)
    X, Y = random_data(2, 3, 3, d_out=3)
    before = model.W_Q.detach().clone()
    with pytest.raises((TypeError, ValueError), match=r"lr \(step size\): expected a positive"):
        train(model, X, Y, lr=lr, steps=5, progress=False)
    assert torch.equal(model.W_Q.detach(), before)


def test_a_nan_start_is_blamed_on_the_weights_not_the_step_size():
    model = AttentionLayer(3, seed=0)
    X, Y = random_data(2, 3, 3, d_out=3)
    with torch.no_grad():
        model.W_K[0, 1, 2] = math.nan
    with pytest.raises(ValueError, match=r"model\.W_K \(the initial weights\): expected finite"):
        train(model, X, Y, lr=0.1, steps=5, progress=False)


@pytest.mark.parametrize("seed", [2**63, 2**64, -1])
def test_seeds_outside_0_to_2_63_are_refused(seed):
    from tdlib import joint, query, zeroloss

    for call in (lambda: random_inputs(2, 2, 2, seed=seed), lambda: AttentionLayer(2, seed=seed),
                 lambda: query.make_problem(seed=seed),
                 lambda: joint.perturb(AttentionLayer(2), seed=seed),
                 lambda: zeroloss.make_instance(seed=seed)):
        with pytest.raises(ValueError, match="seed"):
            call()


def test_certify_on_a_flat_hessian_reports_instead_of_crashing():
    from tdlib import counterexample as ce

    cert = ce.certify(lambda x: (x ** 4).sum(), [0.3], zero_point=[0.0])
    assert not cert.is_instance
    assert any("Hessian eigenvalue" in r for r in cert.reasons), cert.reasons


@pytest.mark.parametrize("call,match", [
    (lambda ce: ce.closed_form(ce.instance(), math.nan), "s: expected finite"),
    (lambda ce: ce.gd_1d(ce.instance(), math.nan, steps=0), "s0: expected a finite real"),
    (lambda ce: ce.run_gd(ce.instance(), [math.nan], steps=0), "q0: expected finite"),
    (lambda ce: ce.instance().loss([]), "q: expected at least one query"),
])
def test_the_counterexample_refuses_a_nan_query(call, match):
    from tdlib import counterexample as ce

    with pytest.raises(ValueError, match=match):
        call(ce)


def test_empty_or_misshaped_input_is_named():
    from tdlib import query, zeroloss

    with pytest.raises(ValueError, match=r"B: expected a non-empty matrix"):
        zeroloss.lambda_max(torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"U: expected a non-empty array"):
        query.hull_distance(np.zeros((0, 2)), [0.0, 0.0])
    with pytest.raises(ValueError, match=r"y: expected shape \(2,\)"):
        query.hull_distance(np.eye(2), [0.0, 0.0, 1.0])
    from tdlib import counterexample as ce
    with pytest.raises(ValueError, match=r"minima: expected a non-empty list"):
        ce.basins(ce.instance(), [[0.5]], [], steps=1)


def test_imdb_folder_and_classifier_options_are_named():
    with pytest.raises(TypeError, match=r"root: expected the path of the aclImdb folder"):
        text.imdb_folder(None)
    with pytest.raises(TypeError, match=r"Classifier: expected options among .*unknown heads"):
        Classifier(heads=4)
    with pytest.raises(ValueError, match=r"seed: expected an integer seed in \[0, 2\^63\)"):
        Classifier(ModelConfig(max_len=6, D=8, hidden=8, H=2), seed=2**63)


# ---------------------------------------------------------------------------------------------
# command lines: a bad argument fails at once, with a message, and writes nothing
# ---------------------------------------------------------------------------------------------

def _fails_and_writes_nothing(main, argv, out: Path, capsys, *words):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    msg = capsys.readouterr().err
    for w in words:
        assert w in msg, f"{argv}: {w!r} not in {msg!r}"
    assert not out.exists() and not out.with_suffix(".json").exists(), f"{argv} wrote {out}"


@pytest.mark.parametrize("extra,words", [
    (["curves", "--seeds", "0", "0"], ("seeds", "distinct")),
    (["landscape", "--stage1-steps", "2", "--grid", "0"], ("grid", "expected an integer >= 3")),
    (["landscape", "--stage1-steps", "2", "--span", "nan"], ("span", "expected a positive")),
    (["landscape", "--stage1-steps", "2", "--near-seeds", "1", "1"], ("near-seeds", "distinct")),
    (["landscape", "--stage1-steps", "2", "--near-seeds", "0"], ("near-seeds", "direction")),
])
def test_experiments_command_line_refuses_before_any_work(tmp_path, monkeypatch, capsys, extra,
                                                          words):
    monkeypatch.setattr(experiments, "sweep", no_work)
    monkeypatch.setattr(experiments, "landscape_run", no_work)
    out = tmp_path / ("runs.json" if extra[0] == "curves" else "land.npz")
    argv = [extra[0], "--task", "text", "--out", str(out), "--steps", "2", "--eval-every", "1",
            *extra[1:]]
    _fails_and_writes_nothing(experiments.main, argv, out, capsys, *words)


@pytest.mark.parametrize("cmd,name", [("curves", "runs.npz"), ("curves", "runs"),
                                      ("landscape", "land.json")])
def test_an_out_without_its_suffix_is_refused(tmp_path, monkeypatch, capsys, cmd, name):
    monkeypatch.setattr(experiments, "sweep", no_work)
    monkeypatch.setattr(experiments, "landscape_run", no_work)
    out = tmp_path / name
    argv = [cmd, "--task", "text", "--out", str(out), "--steps", "2"]
    if cmd == "landscape":
        argv += ["--stage1-steps", "2"]
    _fails_and_writes_nothing(experiments.main, argv, out, capsys, "--out", "expected a")


def test_merging_the_same_runs_twice_writes_nothing(tmp_path, capsys):
    a = tmp_path / "a.json"
    experiments.save([fake_run(seed=0), fake_run(seed=1)], a, command="python -m tdlib.experiments x")
    b = tmp_path / "b.json"
    b.write_text(a.read_text())                 # a copy: the same runs under another name
    out = tmp_path / "merged.json"
    _fails_and_writes_nothing(experiments.main, ["merge", "--out", str(out), str(a), str(a)],
                              out, capsys, "more than once")
    _fails_and_writes_nothing(experiments.main, ["merge", "--out", str(out), str(a), str(b)],
                              out, capsys, "appears twice")


@pytest.mark.parametrize("extra,words", [
    (["--ratios", "1.0", "1.0"], ("ratios", "distinct")),
    (["--seed", "-1"], ("seed",)),
    (["--steps", "0"], ("steps",)),
    (["--tol", "nan"], ("tol",)),
])
def test_phase_command_line_refuses_before_any_work(tmp_path, monkeypatch, capsys, extra, words):
    monkeypatch.setattr(phase, "sweep", no_work)
    out = tmp_path / "sweep"
    _fails_and_writes_nothing(phase.main, ["--out", str(out), *extra], out / "results.json",
                              capsys, *words)


def test_phase_out_is_a_folder_not_a_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(phase, "sweep", no_work)
    out = tmp_path / "results.json"
    _fails_and_writes_nothing(phase.main, ["--out", str(out)], out, capsys, "--out",
                              "expected a folder")


# ---------------------------------------------------------------------------------------------
# stored results that were edited or damaged: named on load, with the command that remakes them
# ---------------------------------------------------------------------------------------------

STORED_SWEEP = ROOT / "book" / "data" / "phase-diagram" / "results.json"


def damaged(tmp_path, edit) -> Path:
    doc = json.loads(STORED_SWEEP.read_text())
    edit(doc)
    f = tmp_path / "results.json"
    f.write_text(json.dumps(doc))
    return f


@pytest.mark.parametrize("edit,field", [
    (lambda d: d["results"]["softmax->softmax"]["success"][0][0].__setitem__(0, 999),
     "results['softmax->softmax']['success']: expected counts in 0..instances"),
    (lambda d: d["config"].__setitem__("instances", 0), "instances: expected an integer >= 1"),
    (lambda d: d.pop("D_values"), "field 'D_values': missing"),
    (lambda d: d["config"].__setitem__("colour", "blue"), "unknown colour"),
    (lambda d: d["config"].pop("tol"), "missing tol"),
    (lambda d: d["results"]["gaussian->softmax"]["labels"].__setitem__("zero", [[[0]]]),
     "results['gaussian->softmax']['labels']['zero']: expected shape"),
])
def test_an_edited_sweep_is_named_on_load_with_the_command(tmp_path, edit, field):
    f = damaged(tmp_path, edit)
    command = json.loads(STORED_SWEEP.read_text())["provenance"]["command"]
    with pytest.raises(book.StoredResultError) as err:
        book.load_json(f)
    msg = str(err.value)
    assert str(f) in msg and field in msg, msg
    assert f"remake it with: {command}" in msg
    assert any(field in p for p in book.check_file(f))        # the check command agrees


def test_a_truncated_file_names_the_command_from_git_or_its_text(tmp_path):
    text = STORED_SWEEP.read_text()
    command = json.loads(text)["provenance"]["command"]
    cut = tmp_path / "results.json"
    cut.write_text(text[: len(text) // 2])          # the provenance (at the end) is lost
    with pytest.raises(book.StoredResultError, match="not a valid JSON result file"):
        book.load_json(cut)
    # the stored file itself, cut in place, finds the command in the committed version
    assert book.remake_command(STORED_SWEEP) == command
    curves = ROOT / "book" / "data" / "experiments" / "text-curves.json"
    cut.write_text(curves.read_text()[:5000])      # a curves file keeps its provenance first
    assert book.remake_command(cut) == json.loads(curves.read_text())["provenance"]["command"]


def test_sweep_config_names_every_wrong_field_whatever_the_others_hold():
    cases = {"ratios": dict(ratios=[]), "tol": dict(tol=1.5),
             "teachers": dict(teachers=["cosine"]), "students": dict(students="softmax"),
             "ds": dict(ds=[0]), "init_scales": dict(init_scales=[math.nan])}
    rounding = dict(ratios=[0.01])                  # D = round(0.01 * 12) = 0
    for name, bad in cases.items():
        for other in ({}, dict(N=0), dict(n="x"), dict(seed=-1), dict(instances=0), rounding):
            with pytest.raises(ValueError) as err:
                phase.SweepConfig(**{**other, **bad}).validate()
            assert f"{name}: expected" in str(err.value), (name, other, str(err.value))
    with pytest.raises(ValueError, match=r"ratios: 0.01 gives D = round\(0.01 \* 12\) = 0"):
        phase.SweepConfig(**rounding).validate()


@pytest.mark.parametrize("steps", [-1, 0, 1.5, True])
def test_batched_gd_refuses_a_count_of_steps_below_one(steps):
    from tdlib.query import make_problem

    p, _, W0 = make_problem(N=1, n=2, D=3, d=2, seed=0)
    one = lambda t: t[None]  # noqa: E731
    with pytest.raises((ValueError, TypeError), match="steps: expected an integer >= 1"):
        phase.batched_gd(one(p.X), one(p.K), one(p.U), one(p.Y), one(W0), "gaussian", steps)


def test_evaluating_on_an_empty_set_is_named():
    model = Classifier(ModelConfig(max_len=6, D=8, hidden=8, H=2), seed=0)
    x = torch.zeros(0, 6, dtype=torch.long)
    with pytest.raises(ValueError, match="x, y: expected the same non-zero number of samples"):
        experiments.evaluate(model, x, torch.zeros(0, dtype=torch.long))
