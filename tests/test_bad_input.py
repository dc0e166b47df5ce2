"""Bad input to tdlib's public functions: a clear error that names the argument, never a number.

Every public function of the theory modules is listed in :data:`CALLS` with one valid call and
the *kind* of each argument (a step size, a count, a seed, a tensor, a kernel name, ...). For
each (function, argument) pair Hypothesis draws bad values of that kind (NaN, infinities, zero
or negative numbers, booleans, strings, None, seeds of 2^63 and more, tensors holding NaN,
empty tensors, tensors of the wrong rank) and puts one into the valid call. The call must raise
``ValueError`` or ``TypeError`` whose message names the argument and says what was expected;
a result, or an error from deep inside torch or NumPy, fails the test.

A new public function inherits the discipline: :func:`test_every_public_function_is_listed`
fails until it is listed in :data:`CALLS` (or in :data:`EXEMPT`, with the reason). The bad
values of each kind, and the check of the refusal, live in ``tests/strategies.py`` for every
test to reuse.
"""
from __future__ import annotations

import functools
import importlib
import math
from typing import Dict

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import BAD, Call, check_refused, draw_bad

import tdlib
from tdlib import counterexample as ce
from tdlib import intervals, joint, query, rates, zeroloss
from tdlib.data import random_data

torch.set_num_threads(1)

MODULES = ["attention", "train", "data", "rates", "checks", "intervals", "counterexample",
           "query", "zeroloss", "joint", "text", "transformer", "landscape", "phase",
           "pathfinder"]


def layer(kernel="softmax", **kw):
    return tdlib.AttentionLayer(3, d_out=2, kernel=kernel, seed=0, **kw)


def data():
    return random_data(2, 3, 3, d_out=2, seed=1)


def model_xy():
    X, Y = data()
    return {"model": layer(), "X": X, "Y": Y}


def zl_instance(**extra):
    def make():
        m, X, Y = zeroloss.make_instance("gaussian", N=2, n=2, D=8, d=4, seed=3)
        return {"model": m, "X": X, "Y": Y, **extra}
    return make


def zl_no_y():
    return {k: v for k, v in zl_instance()().items() if k != "Y"}


def ce_problem():
    return ce.instance("softmax")


def query_problem():
    return query.make_problem(N=2, n=3, D=6, d=2, seed=1)[0]


def fitted_history():
    m, X, Y = zeroloss.make_instance("gaussian", N=2, n=2, D=8, d=4, seed=3)
    return tdlib.train(m, X, Y, lr=0.01, steps=3, progress=False)


CALLS: Dict[str, Call] = {
    # -- the layer and the trainer ----------------------------------------------------------
    "attention.AttentionLayer": Call(
        tdlib.AttentionLayer, lambda: {"D": 3, "H": 1, "d": 2, "d_out": 2, "seed": 0},
        {"D": "count", "H": "count", "d": "count", "d_out": "count", "seed": "seed",
         "scale": "nonneg", "kernel": "kernel"}),
    "attention.AttentionLayer.forward": Call(
        lambda model, X: model(X), lambda: {"model": layer(), "X": data()[0]}, {"X": "array"}),
    "attention.AttentionLayer.loss": Call(
        lambda model, X, Y: model.loss(X, Y), model_xy, {"X": "array", "Y": "array"}),
    "attention.AttentionLayer.set_weights": Call(
        lambda model, W_Q: model.set_weights(W_Q=W_Q),
        lambda: {"model": layer(), "W_Q": torch.ones(1, 3, 3)}, {"W_Q": "array"}),
    "attention.gaussian_kernel": Call(tdlib.gaussian_kernel, lambda: {"c": 1.0}, {"c": "positive"}),
    "attention.gaussian_width": Call(tdlib.attention.gaussian_width, lambda: {"d": 4},
                                     {"d": "count"}),
    "attention.squared_distances": Call(
        tdlib.attention.squared_distances,
        lambda: {"Q": torch.ones(2, 3, 2), "K": torch.zeros(2, 3, 2)},
        {"Q": "batch", "K": "batch"}),
    "attention.make_kernel": Call(tdlib.attention.make_kernel, lambda: {"name": "softmax"},
                                  {"name": "kernel"}, {"name": ("kernel",)}),
    "attention.register_kernel": Call(
        tdlib.register_kernel, lambda: {"name": "bad-input-test", "factory": 3},
        {"name": "kernel"}, {"name": ("kernel name", "register_kernel")}),
    "train.train": Call(
        tdlib.train, lambda: {**model_xy(), "lr": 0.01, "steps": 2, "progress": False},
        {"lr": "positive", "steps": "count0", "tol": "nonneg", "blowup": "positive",
         "X": "array", "Y": "array", "model": "model"}),
    "train.next_step_size": Call(
        importlib.import_module("tdlib.train").next_step_size, lambda: {"lr": 0.1, "accepted": True}, {"lr": "positive", "grow": "positive"}),
    # -- data -------------------------------------------------------------------------------
    "data.random_inputs": Call(
        tdlib.random_inputs, lambda: {"N": 2, "n": 2, "D": 2},
        {"N": "count", "n": "count", "D": "count", "scale": "positive", "seed": "seed"}),
    "data.random_data": Call(
        tdlib.random_data, lambda: {"N": 2, "n": 2, "D": 2},
        {"d_out": "count", "x_scale": "positive", "y_scale": "positive", "seed": "seed"}),
    "data.teacher_data": Call(
        tdlib.teacher_data, lambda: {"N": 2, "n": 2, "D": 2},
        {"N": "count", "H": "count", "d": "count", "kernel": "kernel", "w_scale": "positive",
         "x_scale": "positive", "seed": "seed"}),
    # -- rates and checks -------------------------------------------------------------------
    "rates.fit_rate": Call(
        rates.fit_rate, lambda: {"values": 0.5 ** np.arange(10.0)},
        {"values": "array", "f_star": "real", "start": "start", "tail": "count"}),
    "checks.check_positive": Call(
        tdlib.checks.check_positive, lambda: {"name": "eta", "value": 1.0}, {"value": "positive"},
        {"value": ("eta",)}),
    "checks.check_int": Call(
        tdlib.checks.check_int, lambda: {"name": "k", "value": 3}, {"value": "count"},
        {"value": ("k",)}),
    "checks.check_real": Call(
        tdlib.checks.check_real, lambda: {"name": "s", "value": 1.0}, {"value": "real"},
        {"value": ("s",)}),
    "checks.check_seed": Call(
        tdlib.checks.check_seed, lambda: {"name": "seed", "value": 3}, {"value": "seed"},
        {"value": ("seed",)}),
    # -- the counterexample -----------------------------------------------------------------
    "counterexample.instance": Call(ce.instance, lambda: {}, {"kernel": "kernel", "d": "count"}),
    "counterexample.PerQueryProblem": Call(
        ce.PerQueryProblem,
        lambda: {k: getattr(ce_problem(), k) for k in ("keys", "values", "target", "kernel")},
        {"keys": "tensor", "values": "array", "target": "array", "kernel": "kernel"}),
    "counterexample.PerQueryProblem.loss": Call(
        lambda problem, q: problem.loss(q), lambda: {"problem": ce_problem(), "q": [0.5]},
        {"q": "tensor"}),
    "counterexample.PerQueryProblem.grad_closed_form": Call(
        lambda problem, q: problem.grad_closed_form(q),
        lambda: {"problem": ce_problem(), "q": [0.5]}, {"q": "tensor"}),
    "counterexample.closed_form": Call(
        ce.closed_form, lambda: {"problem": ce_problem(), "s": 0.5},
        {"s": "tensor", "problem": "model"}),
    "counterexample.run_gd": Call(
        ce.run_gd, lambda: {"problem": ce_problem(), "q0": [0.5], "steps": 3},
        {"q0": "tensor", "lr": "positive", "steps": "count0", "record_every": "count0",
         "problem": "model"}),
    "counterexample.gd_1d": Call(
        ce.gd_1d, lambda: {"problem": ce_problem(), "s0": 0.5, "steps": 3},
        {"s0": "real", "lr": "positive", "steps": "count0", "problem": "model"}),
    "counterexample.basins": Call(
        ce.basins, lambda: {"problem": ce_problem(), "q0": [[0.5]], "minima": [[1.0]],
                            "steps": 3},
        {"q0": "tensor", "minima": "tensor", "lr": "positive", "steps": "count0",
         "radius": "positive"}),
    "counterexample.saturation_bound": Call(
        ce.saturation_bound, lambda: {"problem": ce_problem(), "q": [0.5]}, {"q": "tensor"}),
    "counterexample.softmax_jacobian": Call(
        ce.softmax_jacobian, lambda: {"p": [0.2, 0.3, 0.5]}, {"p": "tensor"}),
    "counterexample.search": Call(
        ce.search, lambda: {"trials": 1, "starts": 2, "steps": 2},
        {"n": "count", "d": "count", "trials": "count", "starts": "count", "seed": "seed",
         "scale": "positive", "lr": "positive", "steps": "count0", "min_loss": "positive",
         "kernel": "kernel"}),
    "counterexample.layer_loss_fn": Call(
        ce.layer_loss_fn, lambda: {"model": layer(), "X": data()[0], "Y": data()[1]},
        {"model": "model", "X": "array", "Y": "array"}),
    "counterexample.layer": Call(
        ce.layer, lambda: {"problem": ce_problem(), "W_Q": [[0.1], [0.2], [0.3]]},
        {"seed": "seed", "problem": "model", "W_Q": "tensor"}),
    "counterexample.newton": Call(
        ce.newton, lambda: {"f": lambda x: ((x - 1) ** 2).sum(), "x0": [0.0], "max_iter": 3},
        {"x0": "tensor", "tol": "positive", "max_iter": "count0"}),
    "counterexample.certify": Call(
        ce.certify, lambda: {"f": lambda x: ((x - 1) ** 2).sum(), "x0": [1.0],
                             "zero_point": [1.0]},
        {"x0": "tensor", "zero_point": "tensor", "grad_tol": "positive", "eig_tol": "positive", "loss_tol": "positive",
         "segment_points": "count"}),
    "counterexample.basin_shares": Call(
        ce.basin_shares, lambda: {"problem": ce_problem(), "s_b": 1.0, "sigmas": [0.5],
                                  "runs": 2, "steps": 2},
        {"s_b": "real", "sigmas": "tensor", "runs": "count", "lr": "positive",
         "steps": "count0", "seed": "seed", "zero_query": "real", "tol": "positive"}),
    "counterexample.draw": Call(
        ce.draw, lambda: {"steps": 2},
        {"init": "real", "target_query": "real", "lr": "positive", "steps": "count0"}),
    # -- exact interval arithmetic ----------------------------------------------------------
    "intervals.exp_enclosure": Call(intervals.exp_enclosure, lambda: {"x": 0.5},
                                    {"x": "real", "terms": "count0"}),
    "intervals.sign_certificate": Call(
        intervals.sign_certificate,
        lambda: {"keys": [-1, 0, 1], "values": [[1.0], [0.0], [-1.0]], "target_query": 0.3},
        {"keys": "tensor", "values": "tensor", "target_query": "real"}),
    "intervals.curvature_bound": Call(
        intervals.curvature_bound,
        lambda: {"keys": [-1, 0, 1], "values": [[1.0], [0.0], [-1.0]], "target": [0.3]},
        {"keys": "array", "values": "array", "target": "array"}),
    # -- query-only training ----------------------------------------------------------------
    "query.make_problem": Call(
        query.make_problem, lambda: {"N": 2, "n": 2, "D": 4, "d": 2},
        {"N": "count", "n": "count", "D": "count", "d": "count", "d_out": "count",
         "kernel": "kernel", "w_scale": "positive", "init_scale": "nonneg", "seed": "seed"}),
    "query.scores": Call(
        query.scores, lambda: {"Q": torch.ones(3, 2), "K": torch.zeros(4, 2),
                               "kernel": "gaussian"},
        {"Q": "tensor", "K": "tensor", "kernel": "kernel", "c": "positive"}),
    "query.outputs": Call(
        query.outputs, lambda: {"Q": torch.ones(3, 2), "K": torch.zeros(4, 2),
                                "U": torch.ones(4, 2), "kernel": "softmax"},
        {"Q": "tensor", "K": "tensor", "U": "tensor", "kernel": "kernel"}),
    "query.jacobians": Call(
        query.jacobians, lambda: {"Q": torch.ones(3, 2), "K": torch.zeros(4, 2),
                                  "U": torch.ones(4, 2), "kernel": "softmax"},
        {"Q": "tensor", "K": "tensor", "U": "tensor", "kernel": "kernel"}),
    # the loops' twins: NaN and infinities propagate by design (a rejected trial step)
    "query.scores_unchecked": Call(
        query.scores_unchecked, lambda: {"Q": torch.ones(3, 2), "K": torch.zeros(4, 2),
                                         "kernel": "gaussian"},
        {"Q": "batch", "K": "batch", "kernel": "kernel", "c": "positive"}),
    "query.outputs_unchecked": Call(
        query.outputs_unchecked, lambda: {"Q": torch.ones(3, 2), "K": torch.zeros(4, 2),
                                          "U": torch.ones(4, 2), "kernel": "softmax"},
        {"Q": "batch", "K": "batch", "U": "batch", "kernel": "kernel"}),
    "query.jacobians_unchecked": Call(
        query.jacobians_unchecked, lambda: {"Q": torch.ones(3, 2), "K": torch.zeros(4, 2),
                                            "U": torch.ones(4, 2), "kernel": "softmax"},
        {"Q": "batch", "K": "batch", "U": "batch", "kernel": "kernel"}),
    "query.smallest_singular_values": Call(
        query.smallest_singular_values, lambda: {"J": torch.ones(3, 2, 2)}, {"J": "tensor"}),
    "query.stack_tokens": Call(query.stack_tokens, lambda: {"X": torch.ones(2, 3, 4)},
                               {"X": "array"}),
    "query.QueryProblem.loss": Call(
        lambda problem, W_Q: problem.loss(W_Q),
        lambda: {"problem": query_problem(), "W_Q": torch.zeros(6, 2)}, {"W_Q": "array"}),
    "query.run": Call(
        query.run, lambda: {"problem": query_problem(), "W_Q0": torch.zeros(6, 2), "lr": 0.1,
                            "steps": 2},
        {"W_Q0": "array", "lr": "positive", "steps": "count0", "tol": "nonneg",
         "problem": "model"}),
    "query.hull_distance": Call(
        query.hull_distance, lambda: {"U": [[0.0, 0.0], [1.0, 0.0]], "y": [0.5, 1.0]},
        {"U": "array", "y": "array", "iters": "count"}),
    "query.caratheodory": Call(
        query.caratheodory,
        lambda: {"U": [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], "lam": [0.2, 0.3, 0.5]},
        {"U": "array", "lam": "array", "tol": "positive"}),
    "query.softmax_level": Call(
        query.softmax_level, lambda: {"U": [[0.0, 0.0], [1.0, 0.0]], "y": [0.5, 1.0]},
        {"U": "array", "y": "array"}),
    "query.softmax_twin_constants": Call(
        query.softmax_twin_constants,
        lambda: {"K": [[0.0], [1.0]], "U": [[0.0, 0.0], [1.0, 0.0]], "y": [0.5, 1.0],
                 "g_bar": 1.0},
        {"K": "tensor", "U": "array", "y": "array", "g_bar": "nonneg"}),
    "query.softmax_loss_floor": Call(query.softmax_loss_floor, lambda: {"problem": query_problem()},
                                     {"problem": "model"}),
    "query.draw": Call(
        query.draw, lambda: {"steps": 2},
        {"kernel": "kernel", "ratio": "positive", "d": "count", "init_scale": "nonneg",
         "N": "count", "n": "count", "steps": "count0", "seed": "seed"}),
    # -- zero loss --------------------------------------------------------------------------
    "zeroloss.make_instance": Call(
        zeroloss.make_instance, lambda: {"N": 2, "n": 2, "D": 4, "d": 2},
        {"kernel": "kernel", "N": "count", "n": "count", "D": "count", "H": "count",
         "d": "count", "d_out": "count", "x_scale": "positive", "s": "nonneg",
         "y_scale": "positive", "seed": "seed"}),
    "zeroloss.feature_matrix": Call(zeroloss.feature_matrix, zl_no_y,
                                    {"X": "array", "model": "model"}),
    "zeroloss.feature_blocks": Call(zeroloss.feature_blocks, zl_no_y,
                                    {"X": "array", "model": "model"}),
    "zeroloss.gram_eigenvalues": Call(zeroloss.gram_eigenvalues, lambda: {"B": torch.eye(3)},
                                      {"B": "array"}),
    "zeroloss.lambda_min": Call(zeroloss.lambda_min, lambda: {"B": torch.eye(3)}, {"B": "array"}),
    "zeroloss.lambda_max": Call(zeroloss.lambda_max, lambda: {"B": torch.eye(3)}, {"B": "array"}),
    "zeroloss.lambda_plus": Call(zeroloss.lambda_plus, lambda: {"B": torch.eye(3)},
                                 {"B": "array", "rtol": "positive"}),
    "zeroloss.rank": Call(zeroloss.rank, lambda: {"B": torch.eye(3)},
                          {"B": "array", "rtol": "positive"}),
    "zeroloss.output_singular_values": Call(
        zeroloss.output_singular_values, lambda: {"W_O": torch.eye(2)}, {"W_O": "array"}),
    "zeroloss.projection_loss": Call(
        zeroloss.projection_loss, lambda: {"B": torch.eye(3)[:, :2], "Y": torch.ones(3, 1)},
        {"B": "array", "Y": "tensor"}),
    "zeroloss.shared_output": Call(zeroloss.shared_output, lambda: {"model": layer()},
                                   {"model": "model", "rtol": "nonneg"}),
    "zeroloss.stacked_values": Call(zeroloss.stacked_values, lambda: {"model": layer()},
                                    {"model": "model"}),
    "zeroloss.residual": Call(zeroloss.residual, zl_instance(),
                              {"X": "array", "Y": "array", "model": "model"}),
    "zeroloss.value_operator": Call(zeroloss.value_operator, lambda: {
        k: v for k, v in zl_instance()().items() if k != "Y"}, {"X": "array", "model": "model"}),
    "zeroloss.value_rate": Call(zeroloss.value_rate, lambda: {
        k: v for k, v in zl_instance()().items() if k != "Y"},
        {"X": "array", "lr": "positive", "model": "model"}),
    "zeroloss.value_recursion": Call(
        zeroloss.value_recursion, zl_instance(lr=1e-3, steps=2),
        {"X": "array", "Y": "array", "lr": "positive", "steps": "count0"}),
    "zeroloss.value_least_squares": Call(zeroloss.value_least_squares, zl_instance(),
                                         {"X": "array", "Y": "array", "model": "model"}),
    "zeroloss.check_value_theorem": Call(
        zeroloss.check_value_theorem, lambda: {"kernel": "softmax", "D": 4, "seed": 1,
                                               "steps": 2},
        {"kernel": "kernel", "D": "count", "seed": "seed", "N": "count", "n": "count",
         "d_out": "count", "steps": "count"}),
    "zeroloss.phase_sweep": Call(
        zeroloss.phase_sweep, lambda: {"D_grid": {1: [2]}, "N": 2, "n": 2, "steps": 2,
                                       "seeds": [1], "kernels": ["softmax"]},
        {"D_grid": "grid", "N": "count", "n": "count", "steps": "count", "seeds": "seeds",
         "kernels": "kernels"}),
    "zeroloss.rate_runs": Call(
        zeroloss.rate_runs, lambda: {"D_above": 8, "D_below": 2, "N": 2, "n": 2,
                                     "kernels": ["softmax"], "max_steps": 20, "tail": 5},
        {"D_above": "count", "D_below": "count", "N": "count", "n": "count", "seed": "seed",
         "kernels": "kernels", "max_steps": "count", "tail": "count"}),
    "zeroloss.draw": Call(
        zeroloss.draw, lambda: {"steps": 2},
        {"D": "count", "H": "count", "N": "count", "n": "count", "kernel": "kernel",
         "eta_L": "positive", "steps": "count0"}),
    # -- joint training ---------------------------------------------------------------------
    "joint.mu": Call(joint.mu, lambda: {k: v for k, v in zl_instance()().items() if k != "Y"},
                     {"X": "array", "model": "model"}),
    "joint.pl_ratio": Call(joint.pl_ratio, zl_instance(),
                           {"X": "array", "Y": "array", "model": "model"}),
    "joint.pl_ratio_from_history": Call(
        joint.pl_ratio_from_history, lambda: {"history": fitted_history()},
        {"history": "model"}),
    "joint.certificate_callback": Call(
        joint.certificate_callback, lambda: {"X": zl_instance()()["X"]},
        {"X": "array", "every": "count"}),
    "joint.distance": Call(joint.distance, lambda: {
        "model": zl_instance()()["model"], "start": joint.snapshot(zl_instance()()["model"])},
        {"model": "model", "start": "model"}),
    "joint.snapshot": Call(joint.snapshot, lambda: {"model": layer()}, {"model": "model"}),
    "joint.joint_constants": Call(joint.joint_constants, zl_instance(r=0.1),
                                  {"X": "array", "Y": "array", "r": "nonneg",
                                   "model": "model"}),
    "joint.sufficient_condition": Call(joint.sufficient_condition, zl_instance(grid=5),
                                       {"X": "array", "Y": "array", "grid": "count",
                                        "model": "model"}),
    "joint.residual_limit": Call(joint.residual_limit, zl_instance(grid=3),
                                 {"X": "array", "Y": "array", "grid": "count",
                                  "model": "model"}),
    "joint.perturb": Call(joint.perturb, lambda: {"model": layer()},
                          {"model": "model", "scale": "nonneg", "seed": "seed"}),
    "joint.derivative_bound_ratios": Call(
        joint.derivative_bound_ratios, zl_instance(r=0.1, samples=1),
        {"X": "array", "Y": "array", "r": "positive", "samples": "count", "seed": "seed",
         "eps": "positive", "model": "model"}),
    "joint.certified_instance": Call(
        joint.certified_instance, lambda: {"kernel": "gaussian", "y_scale": 1e-3,
                                           "seeds": [1], "D": 24},
        {"kernel": "kernel", "y_scale": "positive", "seeds": "seeds", "D": "count",
         "N": "count", "n": "count"}),
    "joint.condition_sweep": Call(
        joint.condition_sweep, lambda: {"D_list": [4], "seeds": [1], "kernels": ["softmax"]},
        {"D_list": "counts", "seeds": "seeds", "y_scale": "positive", "N": "count",
         "n": "count", "kernels": "kernels"}),
    "joint.target_limits": Call(
        joint.target_limits, lambda: {"D_list": [4], "seeds": [1], "kernels": ["softmax"]},
        {"D_list": "counts", "seeds": "seeds", "N": "count", "n": "count",
         "kernels": "kernels"}),
    "joint.pl_runs": Call(
        joint.pl_runs, lambda: {"seeds": [1], "kernels": ["softmax"], "D": 8, "steps": 2},
        {"seeds": "seeds", "kernels": "kernels", "D": "count", "steps": "count0",
         "step_factor": "positive", "N": "count", "n": "count"}),
}

@functools.lru_cache(maxsize=1)
def tiny_imdb() -> str:
    """A folder in the layout of aclImdb with one review per split and class (made once)."""
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp(prefix="aclImdb-"))
    for split in ("train", "test"):
        for cls, word in (("pos", "good"), ("neg", "bad")):
            (root / split / cls).mkdir(parents=True)
            (root / split / cls / "0_1.txt").write_text(f"a {word} film")
    return str(root)


def small_classifier():
    from tdlib.transformer import Classifier, ModelConfig

    return Classifier(ModelConfig(vocab=16, max_len=6, D=4, hidden=4, H=2, layers=1), seed=0)


CALLS.update({
    # -- the experiments' models and data ---------------------------------------------------
    "text.encode": Call(importlib.import_module("tdlib.text").encode,
                        lambda: {"texts": ["ab", "c"], "max_len": 4}, {"max_len": "count"}),
    "text.tweets": Call(importlib.import_module("tdlib.text").tweets, lambda: {"max_len": 8},
                        {"max_len": "count", "test_fraction": "positive", "seed": "seed"}),
    "text.imdb_folder": Call(importlib.import_module("tdlib.text").imdb_folder,
                             lambda: {"root": tiny_imdb(), "max_len": 8},
                             {"root": "path", "max_len": "count", "seed": "seed"}),
    "transformer.Classifier": Call(
        lambda **kw: __import__("tdlib.transformer", fromlist=["Classifier"]).Classifier(
            __import__("tdlib.transformer", fromlist=["ModelConfig"]).ModelConfig(
                vocab=16, max_len=6, D=4, hidden=4, H=2, layers=1), **kw),
        lambda: {"seed": 0}, {"seed": "seed"}),
    "transformer.ModelConfig.check": Call(
        lambda **kw: __import__("tdlib.transformer", fromlist=["ModelConfig"]).ModelConfig(
            **kw).check(), lambda: {"D": 4, "H": 2},
        {"D": "count", "H": "count", "hidden": "count", "layers": "count", "vocab": "count",
         "max_len": "count", "kernel": "kernel"}),
    "landscape.random_directions": Call(
        importlib.import_module("tdlib.landscape").random_directions,
        lambda: {"model": small_classifier()}, {"model": "model", "seed": "seed", "k": "count"}),
    "landscape.loss_fn_for": Call(
        importlib.import_module("tdlib.landscape").loss_fn_for,
        lambda: {"x": torch.ones(3, 6, dtype=torch.long), "y": torch.zeros(3, dtype=torch.long)},
        {"batch": "count"}),
    "landscape.surface": Call(
        importlib.import_module("tdlib.landscape").surface,
        lambda: (lambda m: {"model": m, "loss_fn": lambda mm: 0.0,
                            "d1": importlib.import_module("tdlib.landscape").random_directions(
                                m, seed=1)[0],
                            "d2": importlib.import_module("tdlib.landscape").random_directions(
                                m, seed=2)[0],
                            "alphas": [0.0, 1.0], "betas": [0.0, 1.0]})(small_classifier()),
        {"alphas": "tensor", "betas": "tensor", "model": "model"}),
    "landscape.half_axis_rises": Call(
        importlib.import_module("tdlib.landscape").half_axis_rises,
        lambda: {"F": np.arange(9.0).reshape(3, 3), "coords": [-1.0, 0.0, 1.0]},
        {"F": "tensor", "coords": "array", "step": "count"}),
    "landscape.flatter": Call(
        importlib.import_module("tdlib.landscape").flatter,
        lambda: {"rises_a": np.ones((2, 4)), "rises_b": 2 * np.ones((2, 4))},
        {"rises_a": "array", "rises_b": "array"}),
    # -- the phase diagram ------------------------------------------------------------------
    "phase.SweepConfig.validate": Call(
        lambda **kw: importlib.import_module("tdlib.phase").SweepConfig(**kw).validate(),
        lambda: {},
        {"ratios": "positives", "ds": "counts", "init_scales": "positives",
         "teachers": "kernels", "students": "kernels", "N": "count", "n": "count",
         "d_out": "count", "instances": "count", "tol": "positive", "zero_tol": "positive",
         "seed": "seed", "audit": "count0"}),
    "phase.batched_gd": Call(
        lambda **kw: importlib.import_module("tdlib.phase").batched_gd(**kw),
        lambda: (lambda p: {"X": p[0].X[None], "K": p[0].K[None], "U": p[0].U[None],
                            "Y": p[0].Y[None], "W0": p[2][None], "kernel": "gaussian",
                            "steps": 2})(query.make_problem(N=1, n=2, D=3, d=2, seed=0)),
        {"steps": "count", "grow": "positive", "kernel": "kernel"}),
    # -- Pathfinder ---------------------------------------------------------------------------
    "pathfinder.best_threshold_accuracy": Call(
        importlib.import_module("tdlib.pathfinder").best_threshold_accuracy,
        lambda: {"feature": [0.1, 0.2, 0.3], "labels": [0, 1, 1]},
        {"feature": "array", "labels": "array"}),
    "pathfinder.majority_rate": Call(
        importlib.import_module("tdlib.pathfinder").majority_rate,
        lambda: {"labels": [0, 1, 1]}, {"labels": "array"}),
    "pathfinder.check_geometry": Call(
        importlib.import_module("tdlib.pathfinder").check_geometry,
        lambda: {"size": 16, "path_length": 3}, {"size": "count", "path_length": "count",
                                                 "seed": "seed"}),
    "pathfinder.generate": Call(
        importlib.import_module("tdlib.pathfinder").generate,
        lambda: {"n": 2, "size": 16, "path_length": 3}, {"n": "count", "seed": "seed"}),
})

EXEMPT = {
    # results and figures of results: their input is the output of a function listed above
    "train.History", "train.DivergenceError", "train.PlateauError", "rates.RateFit",
    "counterexample.Certificate", "counterexample.SearchResult", "counterexample.BasinShares",
    "zeroloss.ValueRate", "zeroloss.LeastSquares", "zeroloss.ValueCheck", "zeroloss.PhaseSweep",
    "zeroloss.RateRun", "zeroloss.phase_summary", "zeroloss.plot_phase_sweep",
    "zeroloss.plot_rate_runs", "joint.JointConstants", "joint.JointCondition", "joint.JointRun",
    "joint.joint_run", "joint.plot_joint_runs", "joint.ConditionSweep",
    "joint.plot_condition_sweep", "joint.half_pass_dimension", "joint.plot_target_limits",
    "joint.pl_summary", "joint.plot_pl_runs", "query.plot_side_by_side",
    "query.softmax_twin_certificate", "intervals.Interval", "intervals.SignCertificate",
    # the problem classes are listed through their constructors' helpers and methods
    "query.QueryProblem",
    # kernels: the factories take their options (checked through make_kernel and the layer)
    "attention.softmax_kernel", "attention.kernel_name",
    # text helpers without numeric input, and the path of the bundled corpus
    "text.decode", "text.corpus_path", "text.normalise", "text.deduplicate",
    # the classifier's parts are built and checked through Classifier and ModelConfig.check
    "transformer.Architecture", "transformer.ModelConfig", "transformer.checked_kernel",
    "transformer.MultiHeadKernelAttention", "transformer.Block",
    # a direction of random_directions and a figure of surfaces
    "landscape.filter_normalize", "landscape.plot_pair",
    # the phase diagram: functions of a stored sweep (validated on load by phase.check_result,
    # tests/test_robust.py), the sweep and its runs (fed by SweepConfig and batched_gd's
    # checks), the figure and the command line (tests/test_robust.py)
    "phase.SweepConfig", "phase.settle", "phase.certify_runs", "phase.rerun_cell", "phase.sweep",
    "phase.check_result", "phase.success_fraction", "phase.run_array", "phase.label_fraction",
    "phase.budgets_of", "phase.flip_rate", "phase.region_masks", "phase.summary",
    "phase.summary_table", "phase.plot", "phase.main",
    # Pathfinder: drawing primitives and the generator's parts (fed by check_geometry), the data
    # set on disk (tests/test_robust.py), the cue baselines of generated data, the figure
    "pathfinder.cache_folder", "pathfinder.render", "pathfinder.gap", "pathfinder.sample_pair",
    "pathfinder.sample", "pathfinder.marker_features", "pathfinder.line_ink",
    "pathfinder.cue_baselines", "pathfinder.generate_v2", "pathfinder.pathfinder",
    "pathfinder.show",
    # the checks that take (name, x) arrays are exercised through every tensor argument above
    "checks.as_tensor", "checks.as_array", "checks.check_rank", "checks.check_finite", "checks.check_choice",
    "checks.real_array",
    # the arithmetic type of the certificates: every operation makes a new Box, so its
    # constructor checks nothing (the entry points of separation and phase check the data)
    "intervals.Box",
    # validators of a stored landscape: their input is a loaded file, and they return its
    # problems instead of raising (tests/test_landscape.py edits stored files field by field)
    "landscape.check_arrays", "landscape.check_meta",
}


def public_functions():
    for name in MODULES:
        mod = importlib.import_module(f"tdlib.{name}")
        for attr, obj in vars(mod).items():
            if attr.startswith("_") or not callable(obj):
                continue
            if getattr(obj, "__module__", None) != mod.__name__:
                continue
            yield f"{name}.{attr}"


def test_every_public_function_is_listed():
    missing = [f for f in public_functions() if f not in CALLS and f not in EXEMPT]
    assert not missing, ("list these in tests/test_bad_input.py (CALLS, with the kind of each "
                         "argument, or EXEMPT with the reason): " + ", ".join(missing))


PAIRS = [(name, arg) for name, call in CALLS.items() for arg in call.kinds]


@pytest.mark.parametrize("name", sorted(CALLS))
def test_the_valid_call_works(name):
    """The table's valid calls succeed: a bad value, not the rest of the call, is refused."""
    call = CALLS[name]
    if name == "attention.register_kernel":
        pytest.skip("its 'valid' call registers nothing (factory=3 is refused by design)")
    call.fn(**call.make())


@pytest.mark.parametrize("name,arg", PAIRS, ids=[f"{n}-{a}" for n, a in PAIRS])
@BAD
@given(data=st.data())
def test_bad_argument_is_named(name, arg, data):
    call = CALLS[name]
    drawn = draw_bad(call, arg, data)
    assume(drawn is not None)
    check_refused(name, call, arg, *drawn)
