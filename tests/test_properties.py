"""Property-based tests of tdlib's public API (Hypothesis).

The invariant, for every generated call: either a finite, correct result, or an exception whose
message names the offending argument. Inputs cover shapes, dtypes, non-finite values, empty
batches and degenerate configurations. The whole file runs in about a minute on two cores.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from strategies import KINDS, dtypes, junk_ints, junk_numbers

from tdlib import experiments, landscape, pathfinder, text
from tdlib.attention import KERNEL_NAMES, AttentionLayer, gaussian_width, squared_distances
from tdlib.data import random_data, random_inputs
from tdlib.train import DivergenceError, train
from tdlib.transformer import Classifier, ModelConfig

torch.set_num_threads(1)

FAST = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW = settings(FAST, max_examples=40)


def names(err: BaseException, *words: str) -> None:
    """The error message names one of ``words`` (an argument name)."""
    msg = str(err)
    assert any(w in msg for w in words), f"{type(err).__name__} does not name {words}: {msg}"


# junk_ints, junk_numbers (anything a careless caller may pass where a count or a number is
# expected) and the bad values of each kind of argument come from tests/strategies.py


# ---------------------------------------------------------------------------------------------
# the layer
# ---------------------------------------------------------------------------------------------

def reference_output(model: AttentionLayer, X: torch.Tensor) -> torch.Tensor:
    """``sum_h S_h(X_i) X_i W_V[h] W_O[h]`` with the kernels written out entry by entry."""
    X = X.double()
    out = torch.zeros(X.shape[0], X.shape[1], model.d_out, dtype=torch.float64)
    for h in range(model.H):
        Wq, Wk, Wv, Wo = (getattr(model, p)[h].detach().double() for p in ("W_Q", "W_K", "W_V", "W_O"))
        Q, K = X @ Wq, X @ Wk
        if model.kernel_name == "softmax":
            S = torch.softmax(Q @ K.transpose(1, 2) / math.sqrt(model.d), dim=-1)
        else:
            diff = Q.unsqueeze(2) - K.unsqueeze(1)
            S = torch.exp(-(diff ** 2).sum(-1) / gaussian_width(model.d))
        out += S @ X @ Wv @ Wo
    return out


@FAST
@given(N=st.integers(1, 3), n=st.integers(1, 4), D=st.integers(1, 5), H=st.integers(1, 2),
       d=st.integers(1, 3), d_out=st.integers(1, 3), kernel=st.sampled_from(KERNEL_NAMES),
       dtype=dtypes, seed=st.integers(0, 10_000), scale=st.floats(1e-3, 30.0))
def test_layer_output_is_finite_and_correct(N, n, D, H, d, d_out, kernel, dtype, seed, scale):
    model = AttentionLayer(D, H=H, d=d, d_out=d_out, kernel=kernel, seed=seed, dtype=dtype)
    X = random_inputs(N, n, D, scale=scale, seed=seed + 1, dtype=dtype)
    T = model(X)
    assert T.shape == (N, n, d_out) and T.dtype == dtype and bool(torch.isfinite(T).all())
    ref = reference_output(model, X)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    assert torch.allclose(T.double(), ref, rtol=tol, atol=tol * (1 + float(ref.abs().max())))


@FAST
@given(shape=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(1, 4)),
       bad=st.sampled_from([math.nan, math.inf, -math.inf, None]), data=st.data())
def test_bad_inputs_are_named(shape, bad, data):
    model = AttentionLayer(3, kernel=data.draw(st.sampled_from(KERNEL_NAMES)), seed=0)
    X = torch.ones(shape, dtype=torch.float64)
    if bad is not None and X.numel():
        X.view(-1)[data.draw(st.integers(0, X.numel() - 1))] = bad
    ok = shape[0] > 0 and shape[1] > 0 and shape[2] == 3 and bad is None
    try:
        T = model(X)
    except (ValueError, TypeError) as err:
        assert not ok, err
        names(err, "X:")
    else:
        assert ok and bool(torch.isfinite(T).all())
    # a target of the wrong shape or with NaN is named too
    if ok:
        Y = torch.zeros(shape[0], shape[1], 3)
        Y[0, 0, 0] = math.nan
        with pytest.raises(ValueError) as err:
            model.loss(X, Y)
        names(err.value, "Y:")


@FAST
@given(args=st.tuples(junk_ints, junk_ints, junk_ints), dtype=st.sampled_from(
    [torch.float32, torch.float64, torch.int64, torch.float16, "float"]),
    seed=st.one_of(junk_ints, KINDS["seed"](0)))
def test_random_inputs_result_or_named_error(args, dtype, seed):
    try:
        X = random_inputs(*args, seed=seed, dtype=dtype)
    except (ValueError, TypeError) as err:
        names(err, "N:", "n:", "D:", "dtype", "seed")
    else:
        assert tuple(X.shape) == args and X.dtype == dtype and bool(torch.isfinite(X).all())


@FAST
@given(lr=st.one_of(junk_numbers, KINDS["positive"](0.1)),
       steps=st.one_of(junk_ints, KINDS["count0"](1)), tol=st.one_of(junk_numbers,
                                                                    KINDS["nonneg"](0.0)))
def test_train_arguments_are_named(lr, steps, tol):
    model = AttentionLayer(2, seed=0)
    X, Y = random_data(1, 2, 2, d_out=2)
    try:
        hist = train(model, X, Y, lr=lr, steps=steps, tol=tol, progress=False)
    except DivergenceError:
        pass
    except (ValueError, TypeError) as err:
        names(err, "lr", "steps", "tol")
    else:
        assert all(math.isfinite(f) for f in hist.loss)


@SLOW
@given(N=st.integers(1, 3), n=st.integers(1, 3), D=st.integers(1, 4), kernel=st.sampled_from(KERNEL_NAMES),
       lr=st.floats(1e-4, 1e4), steps=st.integers(0, 12), seed=st.integers(0, 1000),
       trainable=st.sets(st.sampled_from(["W_Q", "W_K", "W_V", "W_O"]), min_size=1))
def test_train_gives_a_true_history_or_a_named_divergence(N, n, D, kernel, lr, steps, seed, trainable):
    model = AttentionLayer(D, kernel=kernel, d_out=2, seed=seed)
    X, Y = random_data(N, n, D, d_out=2, seed=seed)
    try:
        hist = train(model, X, Y, lr=lr, steps=steps, trainable=sorted(trainable), progress=False)
    except DivergenceError as err:
        names(err, "lr=", "kernel")
        return
    assert hist.stop in ("steps", "tol", "plateau")
    assert all(math.isfinite(f) for f in hist.loss)
    assert hist.stop != "steps" or hist.steps == steps
    # the last recorded loss is the loss of the weights the model now holds
    assert float(model.loss(X, Y).detach()) == pytest.approx(hist.final_loss, rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# the Gaussian distances
# ---------------------------------------------------------------------------------------------

@FAST
@given(n=st.integers(1, 5), m=st.integers(1, 5), d=st.integers(1, 4), seed=st.integers(0, 10_000),
       offset=st.floats(-1e6, 1e6), spread=st.floats(1e-3, 1e2))
def test_squared_distances_are_exact_under_translation(n, m, d, seed, offset, spread):
    g = torch.Generator().manual_seed(seed)
    Q = spread * torch.randn(2, n, d, generator=g, dtype=torch.float64)
    K = spread * torch.randn(2, m, d, generator=g, dtype=torch.float64)
    direct = ((Q.unsqueeze(-2) - K.unsqueeze(-3)) ** 2).sum(-1)
    got = squared_distances(Q + offset, K + offset)
    assert got.shape == (2, n, m) and bool((got >= 0).all())
    # only the rounding of the shifted inputs themselves (about 1e-16 * |offset|) remains
    tol = 1e-9 * spread ** 2 + 1e-14 * abs(offset) * (spread + 1) * d
    assert float((got - direct).abs().max()) <= tol
    # keys without the batch dimension broadcast against the queries
    one = squared_distances(Q + offset, K[0] + offset)
    assert one.shape == (2, n, m) and float((one[0] - direct[0]).abs().max()) <= tol


# ---------------------------------------------------------------------------------------------
# text, Pathfinder, the classifier, the experiment configuration and summaries
# ---------------------------------------------------------------------------------------------

@FAST
@given(texts=st.lists(st.text(alphabet=st.characters(blacklist_characters="\x00",
                                                     blacklist_categories=("Cs",)), max_size=12),
                      max_size=4), max_len=junk_ints)
def test_encode_roundtrip_or_named_error(texts, max_len):
    try:
        x = text.encode(texts, max_len=max_len)
    except (ValueError, TypeError) as err:
        names(err, "max_len")
        return
    assert x.shape == (len(texts), max_len) and x.dtype == np.int64
    assert x.min(initial=0) >= 0 and x.max(initial=0) < 256
    for row, t in zip(x, texts):
        if len(t.encode()) <= max_len:
            assert text.decode(row) == t


@FAST
@given(size=junk_ints, path_length=st.one_of(junk_ints, KINDS["count"](3)),
       seed=st.one_of(junk_ints, KINDS["seed"](0)))
def test_pathfinder_geometry_or_named_error(size, path_length, seed):
    try:
        s, L, sd = pathfinder.check_geometry(size, path_length, seed)
    except (ValueError, TypeError) as err:
        names(err, "size", "path_length", "seed")
    else:
        assert s in pathfinder.SIZES and 2 <= L <= pathfinder.MAX_PATH_LENGTH[s] and sd >= 0


@SLOW
@given(B=st.integers(0, 3), n=st.integers(0, 6), low=st.integers(-2, 255), high=st.integers(0, 300),
       dtype=st.sampled_from([torch.long, torch.int32, torch.float32]), kernel=st.sampled_from(KERNEL_NAMES))
def test_classifier_logits_or_named_error(B, n, low, high, dtype, kernel):
    model = Classifier(ModelConfig(max_len=4, D=4, hidden=4, H=2, kernel=kernel), seed=0)
    tokens = torch.randint(min(low, high), max(low, high) + 1, (B, n)).to(dtype)
    try:
        logits = model(tokens)
    except (ValueError, TypeError) as err:
        names(err, "tokens")
    else:
        assert logits.shape == (B, 2) and bool(torch.isfinite(logits).all())


FIELDS = ["task", "seed", "steps", "batch_size", "optimizer", "lr", "momentum", "eval_every", "n_eval",
          "max_len", "image_size", "path_length", "n_train", "n_test", "data_seed", "D", "H", "kernel"]


@FAST
@given(field=st.sampled_from(FIELDS), value=st.one_of(junk_numbers, st.sampled_from(
    ["text", "pathfinder", "sgd", "adam", "softmax", "gaussian", "nope"])), task=st.sampled_from(["text", "pathfinder"]))
def test_experiment_config_or_named_error(field, value, task):
    cfg = experiments.ExperimentConfig(task=task, n_train=64, n_test=16, steps=200)
    try:
        experiments.ExperimentConfig(**{**cfg.__dict__, field: value}).resolved()
    except (ValueError, TypeError) as err:
        # a task change can expose another field's bound; all name a field
        names(err, field, "eval_every", "batch_size", "image_size", "path_length", "D must be")


@FAST
@given(accs=st.lists(st.lists(st.one_of(st.floats(0, 1), st.none(), st.just(math.nan)), min_size=2, max_size=2),
                     min_size=1, max_size=4),
       seeds=st.lists(st.integers(0, 3), min_size=4, max_size=4))
def test_summarize_is_finite_or_names_the_run(accs, seeds):
    runs = [{"task": "text", "kernel": "softmax", "seed": s, "curves": {"step": [0, 5], "test_acc": a}}
            for a, s in zip(accs, seeds)]
    try:
        s = experiments.summarize(runs)["softmax"]
    except ValueError as err:
        names(err, "seed")
    else:
        assert np.isfinite(s["mean"]).all() and len(s["runs"]) == len(runs)
        assert ((s["min"] <= s["mean"] + 1e-12) & (s["mean"] <= s["max"] + 1e-12)).all()


@FAST
@given(alphas=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=3),
       betas=st.lists(st.floats(-2, 2), max_size=3))
def test_surface_or_named_error(alphas, betas):
    model = torch.nn.Linear(2, 2)
    d1, d2 = landscape.random_directions(model)
    try:
        F = landscape.surface(model, lambda m: float(m.weight.square().sum()) + 1.0, d1, d2, alphas, betas)
    except (ValueError, FloatingPointError) as err:
        names(err, "alphas", "betas", "loss_fn")
    else:
        assert F.shape == (len(alphas), len(betas)) and np.isfinite(F).all()


# ---------------------------------------------------------------------------------------------
# the best one-threshold rule of the Pathfinder cue check
# ---------------------------------------------------------------------------------------------

def brute_threshold_accuracy(feature, labels) -> float:
    """Every threshold below, between and above the values, tried one by one."""
    f, y = np.asarray(feature, dtype=float), np.asarray(labels)
    cuts = np.concatenate([[-np.inf], np.unique(f)])
    acc = [float(((f > t) == (y == 1)).mean()) for t in cuts]
    return max(max(acc), 1 - min(acc))


@FAST
@given(data=st.data(), n=st.integers(1, 12), values=st.integers(1, 4))
def test_best_threshold_accuracy_is_that_of_a_real_threshold(data, n, values):
    """Ties (a few distinct values) are where a rule ``feature > t`` cannot split the samples."""
    feature = data.draw(st.lists(st.integers(0, values - 1), min_size=n, max_size=n))
    labels = data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    got = pathfinder.best_threshold_accuracy([float(v) for v in feature], labels)
    assert got == pytest.approx(brute_threshold_accuracy(feature, labels), abs=1e-12)


@FAST
@given(labels=st.lists(st.sampled_from([0, 1, 2, -1, 0.5, True, math.nan]), min_size=1,
                       max_size=6),
       bad_feature=st.sampled_from([None, math.nan, math.inf]))
def test_best_threshold_accuracy_refuses_invalid_labels_and_scores(labels, bad_feature):
    feature = [float(i) for i in range(len(labels))]
    valid = all(v in (0, 1) for v in labels)
    if bad_feature is not None:
        feature[0] = bad_feature
    try:
        acc = pathfinder.best_threshold_accuracy(feature, labels)
    except (ValueError, TypeError) as err:
        names(err, "labels:", "feature:")
        assert not valid or bad_feature is not None, err
    else:
        assert valid and bad_feature is None and 0.5 <= acc <= 1
