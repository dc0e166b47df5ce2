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
    "attention.l2_kernel": Call(tdlib.attention.l2_kernel, lambda: {"c": 1.0}, {"c": "positive"}),
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
    "attention.softmax_kernel", "attention.kernel_name", "attention.sigmoid_logn_kernel",
    "attention.relu_n_kernel", "attention.linear_n_kernel",
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
    # the arithmetic type of the certificates: every operation makes a new Box, so its
    # constructor checks nothing (the entry points of separation and phase check the data)
    "intervals.Box",
    # validators of a stored landscape: their input is a loaded file, and they return its
    # problems instead of raising (tests/test_landscape.py edits stored files field by field)
    "landscape.check_arrays", "landscape.check_meta",
}


# =============================================================================================
# the application modules: experiments, stored results, certificates, figures, widgets,
# self-checks and the fused attention
# =============================================================================================

from strategies import KINDS, _kind  # noqa: E402

from tdlib import book, experiments, fastattention, plotting, selfcheck, separation  # noqa: E402
from tdlib import widgets  # noqa: E402

MODULES += ["experiments", "book", "separation", "plotting", "widgets", "selfcheck",
            "fastattention"]

KINDS.update({
    # a probability, an accuracy or a rate in [0, 1]
    "rate": _kind(None, "0.5", True, math.nan, math.inf, -0.1, 1.5, 1 + 1j),
    # a string that names something (not a number, a list or None)
    "name": _kind(None, 3, 1.5, True, ["a"]),
    # a list of run dicts (stored curves)
    "runs": _kind(None, [], "abc", 3, [None], [{}], [{"kernel": "softmax"}]),
    # a summary of runs (the dict of summarize)
    "summary": _kind(None, [], "abc", 3, {}, {"softmax": {}}),
    # markers every ... (None: every point; an int >= 1 or a positive fraction)
    "markevery": _kind("a", -1, 0, math.nan, math.inf, True, -0.5),
    # queries, keys or values of the fused attention (an empty batch is valid there)
    "qkv": _kind(None, "abc", np.ones((2, 1, 4, 3)), torch.ones(2, 1, 4, 3, dtype=torch.bool),
                 torch.ones(2, 1, 4, 3, dtype=torch.complex64), torch.ones(2, 1, 4, 0),
                 torch.ones(3)),
    # a boolean key mask (B, n_k)
    "mask": _kind(3, "a", torch.ones(2, 4), torch.ones(3, 4, dtype=torch.bool),
                  torch.ones(2, 5, dtype=torch.bool)),
    # a reader's answer function that returns nonsense or fails
    "answer": _kind(lambda *a: None, lambda *a: "abc", lambda *a: math.nan,
                    lambda *a: [math.nan] * 3, lambda *a: 1 / 0, None, 3),
    # a dict of arrays to store
    "arrays": _kind(None, [], "abc", {}, {"x": ["a"]}, {3: [1.0]}, {"x": [math.inf]},
                    {"x": np.array([math.nan])}),
    # a JSON document to store
    "doc": _kind(None, [], "abc", 3, {"x": math.inf}, {"x": object()}),
    # a glued value: a number must be finite, a value must be printable
    "glued": _kind(math.nan, math.inf, np.float64("nan"), None, torch.tensor(math.nan)),
    # the values to glue under a prefix
    "glue_values": _kind(None, [], "abc", {"a": math.nan}, {"a": None}),
    # a list of kernel names, or one name (a sweep's convenience)
    "run": _kind(None, [], "abc", 3, {}, {"config": 3}),
    # not real numbers (finiteness and shape are the caller's)
    "nonreal": _kind(None, "abc", [["a"]], [1 + 1j], np.array([True]), torch.ones(2) * 1j,
                     [[1.0], [1.0, 2.0]]),
    "knobs": _kind(None, [], "abc", 3, {"no_such_key": 1}),
    "docs": _kind(None, [], "abc", 3, [None], [3]),
    "kernels1": _kind([], ["nope"], None, 3, "nope"),
    # a list of seeds, or one seed
    "seeds1": _kind([], [-1], [1.5], [True], [2**63], None, "abc", -1, 2**63),
})


def fake_runs(seeds=(0, 1, 2), task="text"):
    """Stored-looking curves of both kernels: three evaluations per seed."""
    g = np.random.default_rng(7)
    return [{"task": task, "kernel": k, "seed": s, "n_test": 100, "test_majority": 0.5,
             "config": {"task": task, "seed": s, "kernel": k, "lr": 0.05 * (1 + s)},
             "curves": {"step": [0, 5, 10], "test_acc": list(0.5 + 0.1 * g.random(3)),
                        "test_loss": list(0.7 - 0.1 * g.random(3)),
                        "val_loss": list(0.7 - 0.1 * g.random(3)),
                        "val_acc": list(0.5 + 0.1 * g.random(3))}}
            for k in ("softmax", "gaussian") for s in seeds]


def fake_summary():
    return experiments.summarize(fake_runs())


def tmp_file(name="x.json") -> str:
    import tempfile
    from pathlib import Path

    return str(Path(tempfile.mkdtemp(prefix="bad-input-")) / name)


def stored_json() -> str:
    """A sound stored result in a fresh folder."""
    path = tmp_file("r.json")
    book.save_json(path, {"provenance": book.provenance("python -m tdlib.x"), "x": 1})
    return path


def tiny_classifier():
    from tdlib.transformer import Classifier, ModelConfig

    return Classifier(ModelConfig(vocab=16, max_len=6, D=4, hidden=4, H=2, layers=1), seed=0)


def gauss_problem():
    return query.make_problem(N=1, n=1, D=3, d=2, d_out=1, seed=2)


def box_gram():
    return separation.matmul_box(np.eye(2) + 0.1, (np.eye(2) + 0.1).T)


def ray():
    return separation.SoftmaxRay()


def qkv(B=2, n=4, d=3):
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(B, 1, n, d, generator=g) for k in "QKV"}


def slider():
    import ipywidgets as w

    return w.IntSlider(value=2, min=1, max=4)


def fresh_axes():
    import matplotlib.pyplot as plt

    plt.close("all")
    return plotting.new_axes()


def draw_xy(x=1):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, x])
    return fig


E = experiments
CALLS.update({
    # -- the shared checks added for these modules ---------------------------------------------
    "checks.check_between": Call(
        lambda value: tdlib.checks.check_between("p", value, 0.0, 1.0), lambda: {"value": 0.5},
        {"value": "rate"}, {"value": ("p",)}),
    "checks.check_flag": Call(lambda value: tdlib.checks.check_flag("show", value),
                              lambda: {"value": True}, {"value": "flag"}, {"value": ("show",)}),
    "checks.check_text": Call(lambda value: tdlib.checks.check_text("label", value),
                              lambda: {"value": "a"}, {"value": "name"}, {"value": ("label",)}),
    "checks.check_instance": Call(
        lambda value: tdlib.checks.check_instance("model", value, torch.nn.Module, "a module"),
        lambda: {"value": torch.nn.Linear(1, 1)}, {"value": "model"}, {"value": ("model",)}),
    "checks.real_array": Call(lambda value: tdlib.checks.real_array("F", value),
                              lambda: {"value": [[1.0]]}, {"value": "nonreal"},
                              {"value": ("F",)}),
    # -- experiments: configuration, data, statistics, readings, stored curves ----------------
    "experiments.ExperimentConfig.resolved": Call(
        lambda **kw: E.ExperimentConfig(**kw).resolved(), lambda: {"n_train": 64, "n_test": 16},
        {"task": "choice", "seed": "seed", "steps": "count", "batch_size": "count",
         "optimizer": "choice", "lr": "positive", "eval_every": "count", "n_eval": "count",
         "n_val": "count0", "max_len": "count", "n_train": "count", "n_test": "count",
         "data_seed": "seed", "D": "count", "H": "count", "kernel": "kernel",
         "kernel_options": "options"},
        {"kernel_options": ("c:", "c ")},
        none_ok=("steps", "optimizer", "lr", "eval_every", "n_eval")),
    "experiments.evaluate": Call(
        E.evaluate, lambda: {"model": tiny_classifier(), "x": torch.zeros(3, 6, dtype=torch.long),
                             "y": torch.zeros(3, dtype=torch.long)},
        {"model": "model", "batch": "count"}),
    "experiments.validation_split": Call(
        E.validation_split, lambda: {"data": {k: torch.zeros(5) for k in
                                              ("x_train", "y_train", "x_test", "y_test")},
                                     "n_val": 2},
        {"data": "mapping", "n_val": "count0"}),
    "experiments.attention_scale": Call(
        E.attention_scale, lambda: {"model": tiny_classifier(),
                                    "tokens": torch.zeros(2, 6, dtype=torch.long)},
        {"model": "model"}),
    "experiments.training_device": Call(E.training_device, lambda: {"name": "cpu"},
                                        {"name": "choice"}, {"name": ("device",)}),
    "experiments.check_sweep": Call(
        E.check_sweep, lambda: {"cfg": E.ExperimentConfig(), "kernels": ["softmax"],
                                "seeds": [0, 1]},
        {"cfg": "model", "kernels": "kernels1", "seeds": "seeds1"}, {"seeds": ("seed",)}),
    "experiments.choose_step_sizes": Call(
        E.choose_step_sizes, lambda: {"runs": fake_runs(), "last_k": 2},
        {"runs": "runs", "last_k": "count"}),
    "experiments.merge_sweeps": Call(
        E.merge_sweeps, lambda: {"docs": [{"sweep": fake_runs((0,)), "last_k": 1},
                                          {"sweep": fake_runs((1,)), "last_k": 1}]},
        {"docs": "runs"}),
    "experiments.shared_extras": Call(
        E.shared_extras, lambda: {"docs": [{"cues": 1}, {"cues": 1}]}, {"docs": "docs"}),
    "experiments.check_runs": Call(E.check_runs, lambda: {"results": fake_runs()},
                                   {"results": "runs"}),
    "experiments.summarize": Call(E.summarize, lambda: {"results": fake_runs()},
                                  {"results": "runs", "key": "choice"}),
    "experiments.accuracy_se": Call(E.accuracy_se, lambda: {"n_test": 100, "p": 0.5},
                                    {"n_test": "count", "p": "rate"}),
    "experiments.paired_differences": Call(
        E.paired_differences, lambda: {"summary": fake_summary()},
        {"summary": "summary", "last_k": "count", "order": "kernels"}),
    "experiments.sign_flip_test": Call(E.sign_flip_test, lambda: {"diffs": [0.1, -0.2, 0.3]},
                                       {"diffs": "array"}),
    "experiments.smallest_p": Call(E.smallest_p, lambda: {"n_seeds": 3}, {"n_seeds": "count"}),
    "experiments.verdict": Call(
        E.verdict, lambda: {"diffs": [0.1, -0.2, 0.3], "p": 0.5, "name_a": "A", "name_b": "B"},
        {"diffs": "array", "p": "rate", "name_a": "name", "name_b": "name"}),
    "experiments.verdict_reading": Call(
        E.verdict_reading, lambda: {"p": 0.5, "n_seeds": 3},
        {"p": "rate", "n_seeds": "count", "alpha": "rate"}),
    "experiments.chance_levels": Call(
        E.chance_levels, lambda: {"summary": fake_summary(), "majority": 0.5},
        {"summary": "summary", "majority": "rate"}),
    "experiments.first_above_chance": Call(
        E.first_above_chance, lambda: {"summary": fake_summary(), "n_test": 100,
                                       "majority": 0.5},
        {"summary": "summary", "n_test": "count", "majority": "rate", "z": "positive"}),
    "experiments.leave_chance_steps": Call(
        E.leave_chance_steps, lambda: {"firsts": {"softmax": [5, None]}, "last_step": 10},
        {"firsts": "mapping", "last_step": "count0"}),
    "experiments.leave_sentence": Call(
        E.leave_sentence, lambda: {"firsts": {"softmax": [5, None], "gaussian": [None, None]}},
        {"firsts": "mapping", "order": "kernels"}),
    "experiments.shell_lines": Call(E.shell_lines, lambda: {"command": "python -m x && y"},
                                    {"command": "name", "width": "count"}),
    "experiments.chance_rate": Call(E.chance_rate, lambda: {"runs": fake_runs()},
                                    {"runs": "runs"}),
    "experiments.config_of": Call(E.config_of, lambda: {"run": fake_runs()[0]},
                                  {"run": "run"}),
    "experiments.compare_kernels": Call(
        E.compare_kernels, lambda: {"runs": fake_runs(), "last_k": 2},
        {"runs": "runs", "z": "positive", "last_k": "count", "majority": "rate",
         "order": "kernels"}),
    "experiments.plot_curves": Call(E.plot_curves, lambda: {"results": fake_runs()},
                                    {"results": "runs", "key": "choice"}),
    "experiments.save": Call(E.save, lambda: {"results": [dict(r, seconds=1.0) for r in
                                                          fake_runs()],
                                              "path": tmp_file(), "command": "python -m x"},
                             {"results": "runs", "path": "path", "command": "name",
                              "extra": "mapping"}),
    "experiments.load": Call(E.load, lambda: {"path": stored_json()}, {"path": "path"}),
    "experiments.stored": Call(E.stored, lambda: {"name": "text-curves.json"},
                               {"name": "name", "path": "path"}),
    "experiments.draw_curves": Call(E.draw_curves, lambda: {},
                                    {"task": "choice", "quantity": "choice",
                                     "show_seeds": "flag"}),
    "experiments.options_for": Call(E.options_for, lambda: {"cfg": E.ExperimentConfig(),
                                                            "kernel": "softmax"},
                                    {"cfg": "model", "kernel": "kernel"}),
    "experiments.check_landscape": Call(
        E.check_landscape, lambda: {"grid": 5, "span": 1.0, "n_loss": 8},
        {"grid": "count", "span": "positive", "n_loss": "count", "direction_seed": "seed"}),
    "experiments.preset": Call(E.preset, lambda: {"name": "paper", "task": "text"},
                               {"name": "choice", "task": "choice"}, {"name": ("preset",)}),
    # -- stored results ---------------------------------------------------------------------
    "book.glue": Call(book.glue, lambda: {"name": "x", "value": 1.0},
                      {"name": "name", "value": "glued", "display": "flag"}),
    "book.glue_all": Call(book.glue_all, lambda: {"prefix": "x", "values": {"a": 1.0}},
                          {"prefix": "name", "values": "glue_values"}),
    "book.data_path": Call(lambda part: book.data_path(part), lambda: {"part": "experiments"},
                           {"part": "name"}, {"part": ("parts",)}),
    "book.provenance": Call(book.provenance, lambda: {"command": "python -m x"},
                            {"command": "name"}),
    "book.save_json": Call(book.save_json, lambda: {"path": tmp_file(), "doc": {"x": 1}},
                           {"path": "path", "doc": "doc"}),
    "book.save_npz": Call(book.save_npz, lambda: {"path": tmp_file("x.npz"),
                                                  "arrays": {"x": np.ones(2)}},
                          {"path": "path", "arrays": "arrays"}),
    "book.save_pair": Call(
        book.save_pair, lambda: {"npz_path": tmp_file("x.npz"), "arrays": {"x": np.ones(2)},
                                 "json_path": tmp_file("x.json"), "doc": {"x": 1}},
        {"npz_path": "path", "arrays": "arrays", "json_path": "path", "doc": "doc"}),
    "book.check_writable": Call(book.check_writable, lambda: {"path": tmp_file()},
                                {"path": "path"}),
    "book.remake_command": Call(book.remake_command, lambda: {"path": stored_json()},
                                {"path": "path"}),
    "book.load_json": Call(book.load_json, lambda: {"path": stored_json()},
                           {"path": "path", "validate": "flag"}),
    "book.load_npz": Call(
        book.load_npz, lambda: {"path": str(book.save_npz(tmp_file("x.npz"), {"x": np.ones(2)}))},
        {"path": "path", "validate": "flag"}),
    "book.stored": Call(lambda part: book.stored("experiments", part),
                        lambda: {"part": "text-curves.json"}, {"part": "name"},
                        {"part": ("parts",)}),
    "book.check_file": Call(book.check_file, lambda: {"path": stored_json()}, {"path": "path"}),
    "book.check_stored": Call(book.check_stored, lambda: {"root": book.data_path("experiments")},
                              {"root": "path"}),
    # -- certificates of the Gaussian chapter -------------------------------------------------
    "separation.matmul_box": Call(
        separation.matmul_box, lambda: {"A": np.ones((2, 3)), "B": np.ones((3, 2))},
        {"A": "tensor", "B": "tensor"}),
    "separation.cholesky_ok": Call(separation.cholesky_ok, lambda: {"G": box_gram()},
                                   {"G": "model"}),
    "separation.lambda_min_lower": Call(separation.lambda_min_lower, lambda: {"G": box_gram()},
                                        {"G": "model", "shrink": "rate"}),
    "separation.lambda_max_upper": Call(separation.lambda_max_upper, lambda: {"G": box_gram()},
                                        {"G": "model", "grow": "nonneg"}),
    "separation.gaussian_box": Call(
        separation.gaussian_box,
        lambda: {"Z": np.zeros((2, 2)), "K": np.eye(2), "U": np.eye(2), "y": np.ones(2),
                 "c": 2.0},
        {"Z": "array", "K": "array", "U": "array", "y": "array", "c": "positive"}),
    "separation.gaussian_bounds_upper": Call(
        separation.gaussian_bounds_upper, lambda: {"U": np.eye(2), "y": np.ones(2), "c": 2.0},
        {"U": "array", "y": "array", "c": "positive"}),
    "separation.gaussian_bounds": Call(
        separation.gaussian_bounds, lambda: {"U": np.eye(2), "y": np.ones(2), "c": 2.0},
        {"U": "array", "y": "array", "c": "positive"}),
    "separation.sublevel_certificate": Call(
        separation.sublevel_certificate,
        lambda: {"K": [[0.0], [1.0]], "U": [[1.0], [2.0]], "y": [1.5], "beta": 0.01, "c": 2.0},
        {"K": "tensor", "U": "array", "y": "array", "beta": "nonneg", "c": "positive",
         "max_boxes": "count", "max_depth": "count0"}),
    "separation.loss_box": Call(
        separation.loss_box,
        lambda: (lambda p: {"X": p[0].X[None], "K": p[0].K[None], "U": p[0].U[None],
                            "Y": p[0].Y[None], "W": p[2][None],
                            "kernel": "gaussian"})(gauss_problem()),
        {"X": "array", "K": "array", "U": "array", "Y": "array", "W": "array",
         "kernel": "kernel", "c": "positive"}),
    "separation.layer_certificate": Call(
        separation.layer_certificate,
        lambda: (lambda p: {"problem": p[0], "W_Q0": p[1] + 0.01})(gauss_problem()),
        {"problem": "model", "W_Q0": "array"}),
    "separation.layer_certificate_arrays": Call(
        separation.layer_certificate_arrays,
        lambda: (lambda p: {"X": p[0].X, "K": p[0].K, "U": p[0].U, "Y": p[0].Y,
                            "W": p[1] + 0.01, "c": 2 * math.sqrt(2)})(gauss_problem()),
        {"X": "array", "K": "array", "U": "array", "Y": "array", "W": "array",
         "c": "positive"}),
    "separation.hull_gap": Call(
        separation.hull_gap, lambda: {"U": np.eye(2)[None], "y": np.full((1, 2), 2.0)},
        {"U": "array", "y": "array", "iters": "count"}),
    "separation.softmax_floor": Call(
        separation.softmax_floor, lambda: {"U": np.ones((1, 2, 2)), "Y": np.zeros((1, 2, 2))},
        {"U": "array", "Y": "array"}),
    "separation.SoftmaxRay": Call(
        separation.SoftmaxRay, lambda: {},
        {"k1": "array", "k2": "array", "u1": "real", "u2": "real", "delta": "positive"}),
    "separation.SoftmaxRay.loss": Call(lambda r, q: r.loss(q), lambda: {"r": ray(), "q": [0., 0.]},
                                       {"q": "array"}),
    "separation.SoftmaxRay.grad": Call(lambda r, q: r.grad(q), lambda: {"r": ray(), "q": [0., 0.]},
                                       {"q": "array"}),
    "separation.SoftmaxRay.bounds": Call(
        lambda r, q0, eta, t: r.bounds(q0, eta, t),
        lambda: {"r": ray(), "q0": [0.0, 0.0], "eta": 0.5, "t": [1.0, 2.0]},
        {"q0": "array", "eta": "positive", "t": "tensor"}),
    "separation.gd_path": Call(
        separation.gd_path, lambda: {"loss_grad": lambda q: (float(q @ q), 2 * q),
                                     "q0": [1.0, 0.0], "eta": 0.1, "steps": 3},
        {"loss_grad": "model", "q0": "tensor", "eta": "positive", "steps": "count0"}),
    "separation.classify": Call(
        separation.classify, lambda: {"f_quarter": 1.0, "f_half": 0.5, "f_end": 0.25,
                                      "f_ref": 2.0, "pl_half": 0.1, "pl_end": 0.1},
        {"f_quarter": "nonneg", "f_half": "nonneg", "f_end": "nonneg", "f_ref": "positive",
         "pl_half": "nonneg", "pl_end": "nonneg", "zero_tol": "nonneg"}),
    "separation.pl_windows": Call(separation.pl_windows, lambda: {"t_max": 100},
                                  {"t_max": "count"}),
    "separation.classify_curve": Call(
        separation.classify_curve, lambda: {"losses": 0.9 ** np.arange(20.0)},
        {"losses": "array", "pl": "array", "zero_tol": "nonneg", "f_ref": "positive"}),
    # -- figures ------------------------------------------------------------------------------
    "plotting.kernel_color": Call(plotting.kernel_color, lambda: {"name": "softmax"},
                                  {"name": "name"}),
    "plotting.kernel_style": Call(plotting.kernel_style, lambda: {"name": "softmax"},
                                  {"name": "name", "line": "flag", "marker": "flag",
                                   "markevery": "markevery"}),
    "plotting.new_axes": Call(plotting.new_axes, lambda: {"ncols": 2},
                              {"ncols": "count", "nrows": "count", "width": "positive",
                               "height": "positive"}),
    "plotting.heatmap": Call(
        plotting.heatmap, lambda: {"ax": fresh_axes(), "M": np.eye(3)},
        {"ax": "model", "M": "array", "vmin": "real", "vmax": "real", "colorbar": "flag"}),
    # -- interactive cells ----------------------------------------------------------------------
    "widgets.explorer": Call(lambda draw, **c: widgets.explorer(draw, **c),
                             lambda: {"draw": draw_xy, "x": slider()}, {"draw": "model"}),
    "widgets.render_png": Call(widgets.render_png, lambda: {"draw": draw_xy, "values": {"x": 2}},
                               {"draw": "model", "values": "knobs"}),
    "widgets.grid_values": Call(widgets.grid_values,
                                lambda: {"name": "x", "control": slider(), "size": 3},
                                {"name": "name", "control": "model", "size": "count"}),
    # -- the fused attention (NaN propagates: a hot path; shapes and types are checked) -------
    "fastattention.softmax_attention": Call(
        fastattention.softmax_attention, qkv, {"Q": "qkv", "K": "qkv", "V": "qkv",
                                               "key_mask": "mask"}),
    "fastattention.gaussian_attention": Call(
        fastattention.gaussian_attention, qkv,
        {"Q": "batch", "K": "batch", "V": "batch", "c": "positive", "key_mask": "mask",
         "align": "count"}),
    "fastattention.fused_route": Call(fastattention.fused_route,
                                      lambda: {"kernel": tdlib.make_kernel("softmax")},
                                      {"kernel": "model"}),
    "fastattention.masked_plain": Call(
        fastattention.masked_plain,
        lambda: {"kernel": tdlib.make_kernel("gaussian"), **qkv(),
                 "key_mask": torch.ones(2, 4, dtype=torch.bool)},
        {"kernel": "model", "Q": "batch", "K": "batch", "V": "batch", "key_mask": "mask"}),
    "fastattention.attend": Call(
        fastattention.attend, lambda: {"kernel": tdlib.make_kernel("softmax"), **qkv()},
        {"kernel": "model", "Q": "batch", "K": "batch", "V": "batch", "fused": "flag",
         "key_mask": "mask"}),
})

# -- the self-checks: a reader's wrong or malformed answer is a Wrong that says what was
#    expected, never an error from inside the check
W = (selfcheck.Wrong,)
SAYS = ("expected", "should")   # a self-check says what the answer should be
SC = selfcheck
CALLS.update({
    "selfcheck.rowsum": Call(SC.rowsum, lambda: {"gauss_rowsums": lambda Q, K: Q.sum(-1)},
                             {"gauss_rowsums": "answer"}, errors=W, expect=SAYS),
    "selfcheck.diagonal": Call(SC.diagonal, lambda: {"X": [[1.0, 0.0], [2.0, 0.0]],
                                                     "W": np.eye(2)},
                               {"X": "array", "W": "array"}, errors=W, expect=SAYS),
    "selfcheck.own_kernel": Call(SC.own_kernel, lambda: {"sigmoid_loss": 0.0, "Y": np.ones(3)},
                                 {"sigmoid_loss": "nonneg", "Y": "tensor"}, errors=W, expect=SAYS),
    "selfcheck.zl_step": Call(SC.zl_step, lambda: {"best_step": lambda a, L: 2 / (a + L)},
                              {"best_step": "answer"}, errors=W, expect=SAYS),
    "selfcheck.zl_heads": Call(SC.zl_heads, lambda: {"rank_bound": lambda N, n, D, H: 1},
                               {"rank_bound": "answer"}, errors=W, expect=SAYS),
    "selfcheck.zl_expected": Call(
        SC.zl_expected, lambda: {"mean_fstar": lambda y, d, Nn, r: 0.5 * y**2 * d * (Nn - r),
                                 "var_fstar": lambda y, Nn, r: 0.5 * y**4 * (Nn - r)},
        {"mean_fstar": "answer", "var_fstar": "answer"}, errors=W, expect=SAYS),
    "selfcheck.zl_measure": Call(SC.zl_measure, lambda: {"q_measured": 0.5, "q_pred": 0.5},
                                 {"q_measured": "rate", "q_pred": "rate"}, errors=W, expect=SAYS),
    "selfcheck.jt_descent": Call(SC.jt_descent, lambda: {"pl_factor": lambda e, m, L: 0.0},
                                 {"pl_factor": "answer"}, errors=W, expect=SAYS),
    "selfcheck.ce_no_2d": Call(SC.ce_no_2d, lambda: {"q_from_p": lambda p, K: [0.0, 0.0]},
                               {"q_from_p": "answer"}, errors=W, expect=SAYS),
    "selfcheck.ce_log": Call(SC.ce_log, lambda: {"s_of_t": lambda t, a, s0: s0 + 0 * t},
                             {"s_of_t": "answer"}, errors=W, expect=SAYS),
    "selfcheck.softmax_jacobian": Call(
        SC.softmax_jacobian, lambda: {"jac": lambda q, K, U: torch.zeros(U.shape[1], K.shape[1],
                                                                         dtype=torch.float64)},
        {"jac": "answer"}, errors=W, expect=SAYS),
    "selfcheck.orthogonal": Call(SC.orthogonal, lambda: {"n_directions": lambda n, d: 0},
                                 {"n_directions": "answer"}, errors=W, expect=SAYS),
    "selfcheck.finite_differences": Call(
        SC.finite_differences, lambda: {"fd_err": {"softmax": 1e-9, "gaussian": 1e-9}},
        {"fd_err": "mapping"}, errors=W, expect=SAYS),
    "selfcheck.own_phase": Call(SC.own_phase, lambda: {"result": {"config": {"d_out": 2},
                                                                  "results": {}}},
                                {"result": "mapping"}, errors=W, expect=SAYS),
    "selfcheck.padding": Call(SC.padding, lambda: {"changes": {"softmax": True,
                                                               "gaussian": False}},
                              {"changes": "mapping"}, errors=W, expect=SAYS),
    "selfcheck.filter_norm": Call(SC.filter_norm, lambda: {"normalize": lambda d, W: d},
                                  {"normalize": "answer"}, errors=W, expect=SAYS),
    "selfcheck.zoo_l2": Call(
        SC.zoo_l2, lambda: {"l2_as_softmax": lambda Q, K: tdlib.make_kernel("l2")(Q, K)},
        {"l2_as_softmax": "answer"}, errors=W, expect=SAYS),
    "selfcheck.zoo_sigmoid_jacobian": Call(
        SC.zoo_sigmoid_jacobian, lambda: {"jac": lambda q, K, U: torch.autograd.functional.jacobian(
            lambda x: tdlib.make_kernel("sigmoid-logn")(x[None], K)[0] @ U, q)},
        {"jac": "answer"}, errors=W, expect=SAYS),
    "selfcheck.zoo_linear_floor": Call(
        SC.zoo_linear_floor, lambda: {"linear_floor": lambda X, K, U, Y: 0.0},
        {"linear_floor": "answer"}, errors=W, expect=SAYS),
    "selfcheck.zoo_own_kernel": Call(
        SC.zoo_own_kernel, lambda: {"prediction": {"row_stochastic": False, "vanishes": True,
                                                   "affine_in_q": False, "dead_zone": False}},
        {"prediction": "mapping"}, errors=W, expect=SAYS),
    "selfcheck.icl_noisy": Call(
        SC.icl_noisy, lambda: {
            "noisy_optimum": lambda c, n, s2: n * torch.linalg.inv(
                n * c + (torch.trace(c) + s2) * torch.eye(len(c), dtype=c.dtype)),
            "noisy_minimum": lambda c, n, s2: 0.0},
        {"noisy_optimum": "answer", "noisy_minimum": "answer"}, errors=W, expect=SAYS),
    "selfcheck.icl_step": Call(SC.icl_step, lambda: {"largest_step": lambda m, n: 2.0},
                               {"largest_step": "answer"}, errors=W, expect=SAYS),
    "selfcheck.icl_quartic": Call(SC.icl_quartic, lambda: {"mean_norm4": lambda c: 0.0},
                                  {"mean_norm4": "answer"}, errors=W, expect=SAYS),
    "selfcheck.passes": Call(lambda check: SC.passes(check, 0.5, 0.5),
                             lambda: {"check": SC.zl_measure}, {"check": "model"},
                             errors=(selfcheck.Wrong, TypeError)),
})

# valid calls that are wrong answers on purpose (a Wrong is their right outcome)
WRONG_ANSWERS = {"selfcheck.rowsum", "selfcheck.zl_heads",
                 "selfcheck.jt_descent", "selfcheck.ce_no_2d", "selfcheck.ce_log",
                 "selfcheck.softmax_jacobian", "selfcheck.orthogonal", "selfcheck.own_phase",
                 "selfcheck.filter_norm", "selfcheck.own_kernel", "selfcheck.zoo_linear_floor",
                 "selfcheck.zoo_own_kernel", "selfcheck.icl_noisy", "selfcheck.icl_step",
                 "selfcheck.icl_quartic"}

EXEMPT |= {
    # experiments: training and its sweeps (their arguments are checked by
    # ExperimentConfig.resolved, check_sweep and check_landscape, listed above, before any
    # work), data loading through the config, the readings of comparisons made above, the
    # command line (tests/test_robust.py)
    "experiments.ExperimentConfig", "experiments.load_data", "experiments.make_optimizer",
    "experiments.train_model", "experiments.run", "experiments.run_many", "experiments.sweep",
    "experiments.step_size_sweep", "experiments.two_stage", "experiments.landscape_run",
    "experiments.pathfinder_cues", "experiments.sweep_reading", "experiments.KernelComparison",
    "experiments.pathfinder_reading", "experiments.plateau_reading", "experiments.main",
    # stored results: no arguments, a class, the command line (tests/test_book.py)
    "book.versions", "book.git_state", "book.fresh_seed", "book.StoredResultError",
    "book.content_problems", "book.npz_problems", "book.main",
    # figures and widgets without arguments
    "plotting.use_style", "plotting.share_math_parser", "widgets.static_mode",
    # self-checks whose answer is a trained model or search result (checked by attribute)
    "selfcheck.Wrong", "selfcheck.jt_first_step", "selfcheck.jt_scale", "selfcheck.ce_search",
    "selfcheck.positions", "selfcheck.imdb",
}


# ======================================================================================
# in-context regression: prompts, the closed-form risk, the dynamics, the bridge sweep
# (its errors say "must be ..." or "expected ...", both followed by what was given)
# ======================================================================================

from tdlib import icl  # noqa: E402

MODULES += ["icl"]
KINDS["indices"] = _kind(None, "ab", 3, [1.5], [True], [-1], [99])   # indices of a list
SAY = ("expected", "must")
COV = np.diag([1.0, 0.5])


def icl_prompts(N=8, n=4):
    return icl.prompts(N, n, 2, seed=1)


def icl_layer():
    return icl.structured_layer("softmax", 2, seed=0)


def icl_xy():
    P = icl_prompts()
    return {"model": icl_layer(), "X": icl.tokens(P), "y_q": P["y"][:, -1]}


def right_head_time(eps, lam, n):
    return n / ((n - 1) * lam[0] ** 2 * eps)


def right_balance(v, Q, K):
    return torch.cat([v ** 2 - (Q ** 2).sum(1), v ** 2 - (K ** 2).sum(1)])


def icl_call(fn, make, kinds, **kw):
    return Call(fn, make, kinds, expect=kw.pop("expect", SAY), **kw)


CURVE = [1.0, 0.5, 0.4, 0.39, 0.2, 0.1, 0.09, 0.05]
TASK = dict(mode="query", seed=0, kernels=["linear-n"], m=2, n=3, N=4, H=1, inits=1,
            steps=2, lrN=[0.1], N_test=4)
CALLS.update({
    # -- prompts and the closed-form risk ----------------------------------------------
    "icl.prompts": icl_call(icl.prompts, lambda: {"N": 2, "n": 3, "m": 2},
                            {"N": "count", "n": "count", "m": "count", "cov": "array",
                             "seed": "seed"}),
    "icl.tokens": icl_call(icl.tokens, lambda: {"P": icl_prompts()}, {"P": "mapping"}),
    "icl.predict": icl_call(icl.predict,
                            lambda: {"W_QK": np.eye(2), "P": icl_prompts()},
                            {"W_QK": "array", "P": "mapping"}),
    "icl.moments": icl_call(icl.moments, lambda: {"cov": COV, "n": 4},
                            {"cov": "array", "n": "count"}),
    "icl.population_risk": icl_call(
        icl.population_risk, lambda: {"W_QK": np.eye(2), "cov": COV, "n": 4},
        {"W_QK": "array", "cov": "array", "n": "count"}),
    "icl.optimum": icl_call(icl.optimum, lambda: {"cov": COV, "n": 4},
                            {"cov": "array", "n": "count"}),
    "icl.random_covariance": icl_call(
        icl.random_covariance, lambda: {"m": 2},
        {"m": "count", "seed": "seed", "low": "positive", "high": "positive"}),
    "icl.linear_layer": icl_call(icl.linear_layer, lambda: {"W_QK": np.eye(2)},
                                 {"W_QK": "array"}),
    "icl.merged_key_query": icl_call(icl.merged_key_query,
                                     lambda: {"model": icl.linear_layer(np.eye(2))},
                                     {"model": "model"}),
    "icl.risk_gradient": icl_call(
        icl.risk_gradient, lambda: {"W_QK": np.eye(2), "cov": COV, "n": 4},
        {"W_QK": "array", "cov": "array", "n": "count"}),
    "icl.minimum_risk": icl_call(icl.minimum_risk, lambda: {"cov": COV, "n": 4},
                                 {"cov": "array", "n": "count"}),
    "icl.hessian_eigenvalues": icl_call(icl.hessian_eigenvalues,
                                        lambda: {"cov": COV, "n": 4},
                                        {"cov": "array", "n": "count"}),
    "icl.preconditioned_step": icl_call(
        icl.preconditioned_step, lambda: {"P": icl_prompts(), "precond": np.eye(2),
                                          "w": np.zeros(2)},
        {"P": "mapping", "precond": "array", "w": "array"}),
    "icl.training_loss": icl_call(icl.training_loss,
                                  lambda: {"W_QK": np.eye(2), "P": icl_prompts()},
                                  {"W_QK": "array", "P": "mapping"}),
    "icl.empirical_minimiser": icl_call(icl.empirical_minimiser,
                                        lambda: {"P": icl_prompts()}, {"P": "mapping"}),
    "icl.training_hessian_eigenvalues": icl_call(
        icl.training_hessian_eigenvalues, lambda: {"P": icl_prompts()},
        {"P": "mapping"}),
    "icl.population_gd": icl_call(
        icl.population_gd, lambda: {"cov": COV, "n": 4, "lr": 0.1, "steps": 3,
                                    "W0": np.zeros((2, 2))},
        {"cov": "array", "n": "count", "lr": "positive", "steps": "count0",
         "W0": "array"}),
    "icl.training_gd": icl_call(
        icl.training_gd, lambda: {"P": icl_prompts(), "lr": 1e-3, "steps": 3,
                                  "W0": np.zeros((2, 2))},
        {"P": "mapping", "lr": "positive", "steps": "count0", "W0": "array"}),
    # -- the dynamics ------------------------------------------------------------------
    "icl.saddle_rate": icl_call(icl.saddle_rate, lambda: {"cov": COV, "n": 4},
                                {"cov": "array", "n": "count"}),
    "icl.gd_merged": icl_call(
        icl.gd_merged, lambda: {"cov": COV, "n": 4, "eps": 0.1, "eta": 0.1, "steps": 3},
        {"cov": "array", "n": "count", "eps": "positive", "eta": "positive",
         "steps": "count", "seed": "seed"}),
    "icl.gd_merged(direction)": icl_call(
        icl.gd_merged, lambda: {"cov": COV, "n": 4, "eps": 0.1, "eta": 0.1, "steps": 3,
                                "direction": np.eye(2)},
        {"direction": "array"}),
    "icl.gd_separate": icl_call(
        icl.gd_separate, lambda: {"cov": COV, "n": 4, "H": 2, "eps": 0.1, "eta": 0.1,
                                  "steps": 3},
        {"cov": "array", "n": "count", "H": "count", "eps": "positive",
         "eta": "positive", "steps": "count", "seed": "seed"}),
    "icl.sgd_merged": icl_call(
        icl.sgd_merged, lambda: {"cov": COV, "n": 4, "eps": 0.1, "eta": 0.01,
                                 "steps": 2, "batch": 4},
        {"cov": "array", "n": "count", "eps": "positive", "eta": "positive",
         "steps": "count", "batch": "count", "seed": "seed"}),
    "icl.restricted_optimum": icl_call(
        icl.restricted_optimum, lambda: {"cov": COV, "n": 4, "S_dirs": [0]},
        {"cov": "array", "n": "count", "S_dirs": "indices"}),
    "icl.plateau_levels": icl_call(icl.plateau_levels, lambda: {"cov": COV, "n": 4},
                                   {"cov": "array", "n": "count"}),
    "icl.learning_steps": icl_call(
        icl.learning_steps, lambda: {"diag": np.full((5, 2), 0.3), "cov": COV, "n": 4},
        {"diag": "array", "cov": "array", "n": "count"}),
    "icl.measured_plateaus": icl_call(
        icl.measured_plateaus, lambda: {"risk": CURVE, "steps_learned": [3, 5]},
        {"risk": "tensor", "steps_learned": "indices"}),
    "icl.drop_step": icl_call(icl.drop_step,
                              lambda: {"risk": CURVE, "cov": COV, "n": 4},
                              {"risk": "tensor", "cov": "array", "n": "count"}),
    "icl.drop_time_flow": icl_call(icl.drop_time_flow,
                                   lambda: {"m": 2, "n": 8, "eps": 0.05},
                                   {"m": "count", "n": "count", "eps": "positive"}),
    "icl.drop_step_bounds": icl_call(
        icl.drop_step_bounds, lambda: {"m": 2, "n": 8, "eps": 0.05, "eta": 0.1},
        {"m": "count", "n": "count", "eps": "positive", "eta": "positive"}),
    "icl.check_balance": Call(icl.check_balance, lambda: {"conserved": right_balance},
                              {"conserved": "answer"}, errors=W, expect=SAYS),
    "icl.check_head_time": Call(icl.check_head_time,
                                lambda: {"head_time": right_head_time},
                                {"head_time": "answer"}, errors=W, expect=SAYS),
    # -- the bridge: the book's layer on the same task ---------------------------------
    "icl.bridge_layer": icl_call(
        icl.bridge_layer, lambda: {"kernel": "softmax", "m": 2},
        {"kernel": "kernel", "m": "count", "H": "count", "seed": "seed",
         "scale": "nonneg"}),
    "icl.structured_layer": icl_call(
        icl.structured_layer, lambda: {"kernel": "gaussian", "m": 2},
        {"kernel": "kernel", "m": "count", "seed": "seed", "scale": "nonneg"}),
    "icl.query_output": icl_call(
        icl.query_output, lambda: {k: v for k, v in icl_xy().items() if k != "y_q"},
        {"model": "model", "X": "array"}),
    "icl.query_loss": icl_call(icl.query_loss, icl_xy,
                               {"model": "model", "X": "array", "y_q": "array"}),
    "icl.query_features": icl_call(
        icl.query_features, lambda: {k: v for k, v in icl_xy().items() if k != "y_q"},
        {"model": "model", "X": "array"}),
    "icl.hull_floor": icl_call(icl.hull_floor, lambda: {"P": icl_prompts()},
                               {"P": "mapping"}),
    "icl.gd_query": icl_call(
        icl.gd_query, lambda: {**icl_xy(), "lr": 0.01, "steps": 2},
        {"model": "model", "X": "array", "y_q": "array", "lr": "positive",
         "steps": "count0", "tol": "nonneg", "every": "count"}),
    "icl.test_risk": icl_call(icl.test_risk, lambda: {"model": icl_layer(),
                                                      "P": icl_prompts()},
                              {"model": "model", "P": "mapping"}),
    "icl.bridge_task": icl_call(
        icl.bridge_task, lambda: dict(TASK),
        {"mode": "choice", "seed": "seed", "kernels": "kernels", "m": "count",
         "n": "count", "N": "count", "H": "count", "inits": "count", "steps": "count0",
         "lrN": "positives", "N_test": "count"}),
    "icl.bridge_tasks": icl_call(
        icl.bridge_tasks, lambda: {"seeds": 1, "kernels": ["softmax"]},
        {"seeds": "count", "kernels": "kernels", "seed": "seed", "m": "count",
         "n": "count", "N_test": "count"},
        none_ok=("seeds", "kernels", "seed", "m", "n", "N_test")),
    # -- the certificate of the Softmax trap ---------------------------------------------
    "icl.trap_weights": icl_call(icl.trap_weights, lambda: {"model": icl_layer()},
                                 {"model": "model"}),
    "icl.trap_derivatives": icl_call(
        icl.trap_derivatives, lambda: {**icl_xy(), "W_xx": np.eye(2)},
        {"model": "model", "X": "array", "y_q": "array", "W_xx": "array"}),
    "icl.trap_certificate": icl_call(
        icl.trap_certificate,
        lambda: {**icl_xy(), "W_hat": np.eye(2), "W_Q_other": np.zeros((3, 3))},
        {"model": "model", "X": "array", "y_q": "array", "W_hat": "array",
         "W_Q_other": "array", "radii": "positives"}, none_ok=("radii",)),
    "icl.bound_text": icl_call(icl.bound_text, lambda: {"x": 0.123, "up": True},
                               {"x": "real", "sig": "count"}),
    "icl.flat_softmax_risk": icl_call(icl.flat_softmax_risk, lambda: {"m": 2, "n": 4},
                                      {"m": "count", "n": "count"}),
    "icl.flat_gaussian_risk": icl_call(icl.flat_gaussian_risk, lambda: {"m": 2, "n": 4},
                                       {"m": "count", "n": "count"}),
    "icl.check_flat_risk": Call(icl.check_flat_risk,
                                lambda: {"flat_risk": icl.flat_softmax_risk},
                                {"flat_risk": "answer"}, errors=W, expect=SAYS),
    "icl.check_flat_gaussian_risk": Call(
        icl.check_flat_gaussian_risk, lambda: {"flat_gaussian": icl.flat_gaussian_risk},
        {"flat_gaussian": "answer"}, errors=W, expect=SAYS),
    "icl.bridge_runs": icl_call(icl.bridge_runs, lambda: {"doc": stored_bridge(),
                                                          "mode": "query"},
                                {"mode": "choice"}),
    "icl.tuned_lr": icl_call(icl.tuned_lr,
                             lambda: {"doc": stored_bridge(), "mode": "query",
                                      "kernel": "softmax"},
                             {"mode": "choice", "kernel": "kernel"}),
})


@functools.lru_cache(maxsize=None)
def stored_bridge():
    """The stored bridge sweep, read and validated once."""
    return icl.load_bridge()


EXEMPT |= {
    # the sweep (its options are checked by bridge_tasks, listed above, before any
    # run), the validators of a stored sweep (they return its problems;
    # tests/test_icl_bridge.py), the readings of a stored sweep (validated on
    # load by check_bridge) and the command line (tests/test_icl_bridge.py)
    "icl.bridge_sweep", "icl.check_bridge", "icl.load_bridge", "icl.shared_lr",
    "icl.paired", "icl.kernel_summary", "icl.main",
    # the certificate's interval evaluation (its arguments are made by trap_weights and
    # trap_certificate, listed above) and the readings of the stored sweep that find and
    # rerun the trap (validated on load by check_bridge; tests/test_icl_bridge.py)
    "icl.trap_box", "icl.trap_pairs", "icl.rerun_query_start",
}


# ======================================================================================
# the kernel zoo: kernels, query-only problems, interval boxes, the trap instance,
# properties, profile and the zoo sweep
# ======================================================================================

from tdlib import zoo  # noqa: E402

MODULES += ["zoo"]
KINDS.update({
    # final labels of the zoo sweep (a list of them)
    "labels": _kind(None, [], "zero", 3, ["nope"], [None]),
    # a box of queries (tdlib.separation.Box, last axis d = 2): not a box, NaN, lo > hi,
    # another last axis or rank
    "box": _kind(None, "box", 3, torch.zeros(3, 2),
                 separation.Box(np.full((3, 2), math.nan)),
                 separation.Box(np.ones((3, 2)), np.zeros((3, 2))),
                 separation.Box(np.zeros((3, 5))), separation.Box(np.zeros(2))),
})


def zoo_data(batch=True, W="W"):
    """A small query-only problem of the zoo (N = 2, n = 3, D = 4, d = 2, d_out = 2), as a
    batch of one (keys X, K, U, Y and ``W``) or as one problem (X, K, U, Y)."""
    X, K, U, Y, _, W0 = zoo.make_problem(2, 3, 4, 2, 2, "softmax", seed=1)
    if not batch:
        return {"X": X, "K": K, "U": U, "Y": Y}
    return {"X": X[None], "K": K[None], "U": U[None], "Y": Y[None], W: W0[None]}


def zoo_trap():
    K, U, y = zoo.trap_instance(1)
    return {"keys": K, "values": U, "target": y}


@functools.lru_cache(maxsize=None)
def stored_zoo():
    """The stored zoo sweep, read once (the functions below do not change it)."""
    return tdlib.book.stored("zoo", "results.json")


PROPS = {"row_stochastic": True, "vanishes": False, "affine_in_q": False,
         "dead_zone": False, "bounded": True}
ZOO_ARRAYS = {"X": "array", "K": "array", "U": "array", "Y": "array"}
CALLS.update({
    # -- kernels and query-only problems ---------------------------------------------------
    "zoo.check_kernel": Call(zoo.check_kernel, lambda: {"kernel": "softmax"},
                             {"kernel": "kernel"}),
    "zoo.weights": Call(zoo.weights, lambda: {"Q": torch.ones(3, 2), "K": torch.zeros(4, 2),
                                              "kernel": "gaussian"},
                        {"Q": "tensor", "K": "tensor", "kernel": "kernel"}),
    "zoo.make_problem": Call(
        zoo.make_problem, lambda: {"N": 2, "n": 3, "D": 4, "d": 2, "d_out": 2,
                                   "teacher": "softmax"},
        {"N": "count", "n": "count", "D": "count", "d": "count", "d_out": "count",
         "teacher": "kernel", "init_scale": "nonneg", "seed": "seed"}),
    "zoo.loss_and_grad": Call(zoo.loss_and_grad, lambda: {**zoo_data(), "kernel": "l2"},
                              {**ZOO_ARRAYS, "W": "array", "kernel": "kernel"}),
    "zoo.query_only_loss": Call(
        zoo.query_only_loss,
        lambda: {**zoo_data(False), "Ws": zoo_data()["W"], "kernel": "relu-n"},
        {**ZOO_ARRAYS, "Ws": "array", "kernel": "kernel"}),
    "zoo.layer_loss": Call(zoo.layer_loss,
                           lambda: {**model_xy(), "W_Q": layer().W_Q.detach().clone()},
                           {"model": "model", "X": "array", "Y": "array", "W_Q": "array"}),
    "zoo.linear_operator": Call(zoo.linear_operator, lambda: zoo_data(False), ZOO_ARRAYS),
    "zoo.dead_fraction": Call(
        zoo.dead_fraction, lambda: {"runs": 2},
        {"runs": "count", "N": "count", "n": "count", "ratio": "positive", "d": "count",
         "init_scale": "nonneg", "seed": "seed"}),
    "zoo.gd": Call(zoo.gd, lambda: {**zoo_data(W="W0"), "kernel": "softmax", "steps": 3,
                                    "keep": [0, 3]},
                   {**ZOO_ARRAYS, "W0": "array", "kernel": "kernel", "steps": "count",
                    "grow": "positive", "keep": "indices"}),
    # -- interval enclosures ---------------------------------------------------------------
    "zoo.score_box": Call(
        zoo.score_box, lambda: {"kernel": "l2", "Q": separation.Box(np.ones((3, 2))),
                                "K": np.zeros((4, 2))},
        {"kernel": "kernel", "Q": "box", "K": "tensor"}),
    "zoo.loss_box": Call(zoo.loss_box, lambda: {**zoo_data(), "kernel": "sigmoid-logn"},
                         {**ZOO_ARRAYS, "W": "array", "kernel": "kernel"}),
    "zoo.query_loss_box": Call(
        zoo.query_loss_box, lambda: {"kernel": "gaussian", "lo": [[0.0], [1.0]],
                                     "hi": [[0.5], [1.5]], **zoo_trap()},
        {"kernel": "kernel", "lo": "array", "hi": "array", "keys": "array",
         "values": "array", "target": "array"}),
    # -- one cell and the tasks of the zoo sweep -------------------------------------------
    "zoo.label_runs": Call(
        zoo.label_runs, lambda: {**zoo_data(W="W0"), "kernel": "softmax",
                                 "budgets": [16, 32]},
        {**ZOO_ARRAYS, "W0": "array", "kernel": "kernel", "budgets": "counts",
         "zero_tol": "positive"}),
    "zoo.cell_task": Call(
        zoo.cell_task, lambda: {"student": "linear-n", "teacher": "softmax", "ratio": 1.0,
                                "d": 2, "init_scale": 1.0, "N": 2, "n": 2, "d_out": 2,
                                "instances": 1, "budgets": [16, 32], "seed": 0},
        {"student": "kernel", "teacher": "kernel", "ratio": "positive", "d": "count",
         "init_scale": "nonneg", "N": "count", "n": "count", "d_out": "count",
         "instances": "count", "budgets": "counts", "seed": "seed",
         "zero_tol": "positive"}),
    "zoo.other_teacher": Call(zoo.other_teacher, lambda: {"student": "l2"},
                              {"student": "kernel"}),
    "zoo.tasks": Call(
        zoo.tasks, lambda: {},
        {"kernels": "kernels", "ratios": "positives", "ds": "counts", "init_scale": "nonneg",
         "N": "count", "n": "count", "d_out": "count", "instances": "count",
         "budgets": "counts", "seed": "seed"}),
    # -- readings and figures of a stored sweep --------------------------------------------
    "zoo.cells_of": Call(zoo.cells_of, lambda: {"result": stored_zoo(), "student": "l2",
                                                "teacher_kind": "own"},
                         {"result": "mapping", "student": "kernel",
                          "teacher_kind": "choice"}),
    "zoo.fractions": Call(
        zoo.fractions, lambda: {"result": stored_zoo(), "student": "gaussian",
                                "teacher_kind": "other"},
        {"result": "mapping", "student": "kernel", "teacher_kind": "choice",
         "labels": "labels", "kind": "choice"}),
    "zoo.summary": Call(zoo.summary, lambda: {"result": stored_zoo()},
                        {"result": "mapping"}),
    "zoo.flip_rate": Call(zoo.flip_rate, lambda: {"result": stored_zoo()},
                          {"result": "mapping", "student": "kernel"}),
    "zoo.plot_diagram": Call(zoo.plot_diagram, lambda: {"result": stored_zoo(),
                                                        "student": "relu-n"},
                             {"result": "mapping", "student": "kernel", "axes": "model"}),
    "zoo.draw": Call(zoo.draw, lambda: {"kernel": "relu-n"},
                     {"kernel": "kernel", "result": "mapping"}),
    # -- the trap instance -----------------------------------------------------------------
    "zoo.trap_instance": Call(zoo.trap_instance, lambda: {"d": 2}, {"d": "count"}),
    "zoo.query_loss": Call(zoo.query_loss, lambda: {"kernel": "softmax", "q": [[0.5]],
                                                    **zoo_trap()},
                           {"kernel": "kernel", "q": "array", "keys": "array",
                            "values": "array", "target": "array"}),
    "zoo.trap": Call(zoo.trap, lambda: {"kernel": "gaussian", "span": 2.0, "h": 0.1},
                     {"kernel": "kernel", "d": "count", "span": "positive", "h": "positive",
                      "pieces": "count", "gd_steps": "count0"}),
    # -- bring your own kernel -------------------------------------------------------------
    "zoo.properties": Call(zoo.properties, lambda: {"kernel": "softmax", "samples": 8},
                           {"kernel": "kernel", "d": "count", "n": "count",
                            "samples": "count", "seed": "seed"}),
    "zoo.table_row": Call(zoo.table_row, lambda: {"kernel": "l2", "props": dict(PROPS)},
                          {"kernel": "kernel", "props": "mapping"}),
    "zoo.profile": Call(zoo.profile, lambda: {"kernel": "linear-n", "instances": 1,
                                              "steps": 32, "draw": False},
                        {"kernel": "kernel", "instances": "count", "steps": "count",
                         "seed": "seed", "draw": "flag"}),
})

EXEMPT |= {
    # the whole sweep: its options are checked by tasks (listed above) before any run, and
    # workers, scheduler and checkpoint by tdlib.sweep.run (tests/test_sweep.py); the
    # command line, whose --instances and --kernels go through tasks in sweep.start
    "zoo.sweep", "zoo.main",
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
    if name in WRONG_ANSWERS:
        pytest.skip("a wrong answer on purpose: see test_a_wrong_answer_is_told_not_crashed")
    call.fn(**call.make())


@pytest.mark.parametrize("name,arg", PAIRS, ids=[f"{n}-{a}" for n, a in PAIRS])
@BAD
@given(data=st.data())
def test_bad_argument_is_named(name, arg, data):
    call = CALLS[name]
    drawn = draw_bad(call, arg, data)
    assume(drawn is not None)
    check_refused(name, call, arg, *drawn)


@pytest.mark.parametrize("name", sorted(WRONG_ANSWERS))
def test_a_wrong_answer_is_told_not_crashed(name):
    call = CALLS[name]
    with pytest.raises(selfcheck.Wrong):
        call.fn(**call.make())
