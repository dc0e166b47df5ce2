"""Every exercise's self-check accepts a correct answer and rejects a plainly wrong one.

The chapters run the reference solutions against the same checks when they execute
(tests/test_chapters.py); here each check also meets a wrong answer, and must explain it with a
hint that does not give the answer away. A right answer prints the neutral ``correct`` and the
check returns ``None`` (so a notebook echoes no stray ``True``).
"""
import math
import types

import numpy as np
import pytest
import torch

from tdlib import selfcheck
from tdlib.attention import KERNELS, make_kernel, register_kernel
from tdlib.selfcheck import Wrong


def test_every_exercise_has_a_check():
    from conftest import toc_files, source_of
    import re

    labels = set()
    for page in toc_files():
        text = source_of(page).read_text()
        labels |= set(re.findall(r"\{exercise\}[^\n]*\n:label: (\S+)", text))
    assert labels, "no exercise found in the book"
    assert labels == set(selfcheck.EXERCISES), (labels ^ set(selfcheck.EXERCISES))


def _rejects(check, *answer, match=None):
    with pytest.raises(Wrong, match=match):
        check(*answer)


def _accepts(check, *answer):
    """The check passes, prints exactly the neutral success word and returns nothing."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = check(*answer)
    assert result is None, f"{check.__name__} returned {result!r}: a notebook would echo it"
    assert out.getvalue() == selfcheck.SUCCESS + "\n", out.getvalue()
    return True


def test_rowsum():
    def good(Q, K):
        c = 2 * math.sqrt(Q.shape[-1])
        E = torch.exp(Q @ K.T / math.sqrt(Q.shape[-1]))
        return torch.exp(-(Q**2).sum(-1) / c) * (E @ torch.exp(-(K**2).sum(-1) / c))

    # another correct answer: sum the kernel's entries written out directly
    def also_good(Q, K):
        return torch.exp(-torch.cdist(Q, K) ** 2 / (2 * math.sqrt(Q.shape[-1]))).sum(-1)

    assert _accepts(selfcheck.rowsum, good)
    assert _accepts(selfcheck.rowsum, also_good)
    _rejects(selfcheck.rowsum, lambda Q, K: torch.ones(len(Q), dtype=Q.dtype), match="not normalised")
    _rejects(selfcheck.rowsum, lambda Q, K: 1 / 0, match="ZeroDivisionError")


def test_diagonal():
    W = torch.eye(3)
    x = torch.tensor([1.0, 0.5, 0.0])
    assert _accepts(selfcheck.diagonal, torch.stack([x, 2 * x]), W)
    _rejects(selfcheck.diagonal, torch.eye(3), W, match="largest")
    _rejects(selfcheck.diagonal, torch.eye(3), torch.eye(4), match="shape")


@pytest.fixture
def sigmoid_kernel():
    had = KERNELS.get("sigmoid")
    yield
    if had is None:
        KERNELS.pop("sigmoid", None)
    else:
        KERNELS["sigmoid"] = had


def test_own_kernel(sigmoid_kernel):
    Y = torch.ones(2, 3, 2)
    register_kernel("sigmoid", lambda Q, K: torch.sigmoid(Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1])))
    assert _accepts(selfcheck.own_kernel, 1e-4, Y)
    _rejects(selfcheck.own_kernel, 0.5 * 12, Y, match="not below 1%")
    register_kernel("sigmoid", lambda Q, K: torch.sigmoid(Q @ K.transpose(-1, -2)))
    _rejects(selfcheck.own_kernel, 1e-4, Y, match="does not compute")


def test_zero_loss_checks():
    assert _accepts(selfcheck.zl_step, lambda a, L: 2 / (a + L))
    _rejects(selfcheck.zl_step, lambda a, L: 1 / L, match="smaller one")
    assert _accepts(selfcheck.zl_heads, lambda N, n, D, H: min(N * n, D))
    _rejects(selfcheck.zl_heads, lambda N, n, D, H: min(N * n, H * D), match="copies")
    mean = lambda y, d_out, Nn, r: 0.5 * y**2 * d_out * (Nn - r)  # noqa: E731
    var = lambda y, Nn, r: 0.5 * y**4 * (Nn - r)  # noqa: E731
    assert _accepts(selfcheck.zl_expected, mean, var)
    _rejects(selfcheck.zl_expected, lambda y, d_out, Nn, r: 0.5 * y**2 * d_out * Nn, var, match="E f_")
    _rejects(selfcheck.zl_expected, mean, lambda y, Nn, r: y**4 * (Nn - r), match="Var f_")
    assert _accepts(selfcheck.zl_measure, 0.9, 0.9005)
    _rejects(selfcheck.zl_measure, 0.5, 0.9, match="predicted")
    _rejects(selfcheck.zl_measure, 1.2, 0.9, match="converging")


def test_joint_training_checks():
    assert _accepts(selfcheck.jt_descent, lambda eta, mu, L: 1 - 2 * eta * mu * (1 - eta * L / 2))
    _rejects(selfcheck.jt_descent, lambda eta, mu, L: 1 - eta * mu, match="descent|PL|expected")

    def grads(model, X, Y):
        Ws = [model.W_Q, model.W_K]
        for W in Ws:
            W.requires_grad_(True)
        g = torch.autograd.grad(model.loss(X, Y), Ws)
        return {"W_Q": float(g[0].norm()), "W_K": float(g[1].norm())}

    assert _accepts(selfcheck.jt_first_step, grads)
    _rejects(selfcheck.jt_first_step, lambda m, X, Y: {"W_Q": 0.0, "W_K": 0.0}, match="W_V != 0")
    _rejects(selfcheck.jt_first_step, lambda m, X, Y: 0.0, match="keys")
    from tdlib import joint

    exact = lambda m, X, Y: joint.residual_limit(m, X, Y) / float(Y.norm())  # noqa: E731
    assert _accepts(selfcheck.jt_scale, exact)
    _rejects(selfcheck.jt_scale, lambda m, X, Y: 10 * exact(m, X, Y), match="too large")
    _rejects(selfcheck.jt_scale, lambda m, X, Y: 0.1 * exact(m, X, Y), match="too small")

def test_softmax_local_minimum_checks():
    def q_from_p(p, K):
        M = (K[1:] - K[0]) / math.sqrt(2)
        return torch.linalg.solve(M, torch.log(p[1:]) - torch.log(p[0]))

    assert _accepts(selfcheck.ce_no_2d, q_from_p)
    _rejects(selfcheck.ce_no_2d, lambda p, K: torch.linalg.lstsq(K, torch.log(p)).solution,
             match="logarithms")
    assert _accepts(selfcheck.ce_log, lambda t, a, s0: np.log(np.exp(s0) + a * np.asarray(t)))
    _rejects(selfcheck.ce_log, lambda t, a, s0: s0 + np.log1p(np.asarray(t)), match="separable")

    P = types.SimpleNamespace(values=torch.zeros(3, 2))
    prob = types.SimpleNamespace(n=3, d_out=2, values=torch.ones(3, 2))
    mine = types.SimpleNamespace(problem=prob, q_star=np.array([0.5]))
    cert = types.SimpleNamespace(is_instance=True, reasons=[], grad_norm=1e-12,
                                 eigenvalues=np.array([1.0, 2.0, 3.0]), loss=0.1)
    assert _accepts(selfcheck.ce_search, mine, cert, P)
    _rejects(selfcheck.ce_search, mine, cert, types.SimpleNamespace(values=torch.ones(3, 2)), match="new")
    bad = types.SimpleNamespace(**{**vars(cert), "is_instance": False, "reasons": ["gradient too large"]})
    _rejects(selfcheck.ce_search, mine, bad, P, match="gradient too large")


def test_gaussian_convergence_checks():
    def jac(q, K, U):
        d = K.shape[1]
        p = torch.softmax(K @ q / math.sqrt(d), 0)
        return U.T @ (torch.diag(p) - torch.outer(p, p)) @ K / math.sqrt(d)

    assert _accepts(selfcheck.softmax_jacobian, jac)
    _rejects(selfcheck.softmax_jacobian,
             lambda q, K, U: U.T @ torch.diag(torch.softmax(K @ q / math.sqrt(K.shape[1]), 0)) @ K
             / math.sqrt(K.shape[1]), match="autograd")
    assert _accepts(selfcheck.orthogonal, lambda n, d: d - n + 1)
    _rejects(selfcheck.orthogonal, lambda n, d: d - n, match="affine hull")
    assert _accepts(selfcheck.finite_differences, {"gaussian": 3e-10, "softmax": 2e-10})
    _rejects(selfcheck.finite_differences, {"gaussian": 3e-10, "softmax": 0.1}, match="disagree")
    _rejects(selfcheck.finite_differences, {"gaussian": 3e-10}, match="each of")


def test_own_phase():
    from tdlib import phase

    cfg = phase.SweepConfig(ratios=[1.0], ds=[1], init_scales=[1.0], d_out=1, instances=1, steps=20)
    assert _accepts(selfcheck.own_phase, phase.sweep(cfg))
    cfg.d_out = 2
    _rejects(selfcheck.own_phase, phase.sweep(cfg), match="d_out = 1")
    _rejects(selfcheck.own_phase, {"nothing": 1}, match="phase.sweep")


def test_experiments_checks():
    assert _accepts(selfcheck.padding, {"softmax": True, "gaussian": False})
    _rejects(selfcheck.padding, {"softmax": True, "gaussian": True}, match="gaussian")

    def normalize(d, W):
        return d / d.norm(dim=1, keepdim=True) * W.norm(dim=1, keepdim=True)

    assert _accepts(selfcheck.filter_norm, normalize)
    _rejects(selfcheck.filter_norm, lambda d, W: d / d.norm() * W.norm(), match="row")

    model = types.SimpleNamespace(pos=torch.randn(16, 4) * 0.02)
    assert _accepts(selfcheck.positions, model, [0.5, 0.6], [0.5, 0.55])
    _rejects(selfcheck.positions, types.SimpleNamespace(pos=torch.randn(16, 4)), [0.5, 0.6], [0.5, 0.5],
             match="0.02")
    _rejects(selfcheck.positions, model, [50, 60], [0.5, 0.5], match="acc_small")

    data = {"x_train": np.zeros((8, 32)), "y_train": np.array([1, 0] * 4),
            "text_train": ["great film", "awful film"] * 4}
    assert _accepts(selfcheck.imdb, data, 1.0)
    _rejects(selfcheck.imdb, data, 0.5, match="fit")
    _rejects(selfcheck.imdb, {**data, "x_train": np.zeros((8, 64))}, 1.0, match="max_len")


def test_success_is_neutral(capsys):
    """The success output is one word whatever the exercise: no number, formula or praise that
    would show a reader the result before they have it."""
    assert selfcheck._ok("a message that documents what the answer satisfies") is None
    assert capsys.readouterr().out == "correct\n"


def _message(check, *answer) -> str:
    with pytest.raises(Wrong) as info:
        check(*answer)
    return str(info.value)


def test_hints_do_not_give_the_answer():
    """A wrong answer gets a hint: its message never states the reference formula or value."""
    cases = [
        (selfcheck.zl_step, (lambda a, L: 1 / L,), ["2 / (alpha + L)", "balance", "(L - alpha)"]),
        (selfcheck.zl_heads, (lambda N, n, D, H: N * n,), ["min(", "has rank"]),
        (selfcheck.zl_expected, (lambda y, d_out, Nn, r: 0.0, lambda y, Nn, r: 0.0),
         ["expected", "Nn - rank", "2k"]),
        (selfcheck.jt_descent, (lambda eta, mu, L: 0.5,), ["1 - 2 eta mu", "expected"]),
        (selfcheck.ce_no_2d, (lambda p, K: torch.zeros(2),), ["log p_j - log p_1", "solve"]),
        (selfcheck.softmax_jacobian, (lambda q, K, U: torch.zeros(U.shape[1], K.shape[1]),),
         ["diag p - p p", "expected (1/sqrt d)"]),
        (selfcheck.orthogonal, (lambda n, d: 0,), ["d - n + 1", "expected"]),
        (selfcheck.padding, ({"softmax": False, "gaussian": True},),
         ["divides by a sum", "depends on that key only"]),
        (selfcheck.diagonal, (torch.eye(3), torch.eye(3)), ["x_2 = 2 x_1", "longer copy"]),
    ]
    for check, answer, forbidden in cases:
        message = _message(check, *answer)
        for text in forbidden:
            assert text not in message, f"{check.__name__} tells the answer: {message}"
        assert "hint" in message.lower(), f"{check.__name__} gives no hint: {message}"


def test_kernel_zoo_checks():
    from tdlib import zoo

    assert _accepts(selfcheck.zoo_l2, lambda Q, K: make_kernel("l2")(Q, K))
    _rejects(selfcheck.zoo_l2, lambda Q, K: make_kernel("softmax")(Q, K), match="Hint")

    def jac(q, K, U):
        out = lambda x: make_kernel("sigmoid-logn")(x[None], K)[0] @ U  # noqa: E731
        return torch.autograd.functional.jacobian(out, q)

    assert _accepts(selfcheck.zoo_sigmoid_jacobian, jac)
    _rejects(selfcheck.zoo_sigmoid_jacobian, lambda q, K, U: 0 * jac(q, K, U), match="Hint")

    def floor(X, K, U, Y):
        A, R0 = zoo.linear_operator(X, K, U, Y)
        return 0.5 * float(((A @ (torch.linalg.pinv(A) @ R0) - R0) ** 2).sum())

    assert _accepts(selfcheck.zoo_linear_floor, floor)
    _rejects(selfcheck.zoo_linear_floor, lambda X, K, U, Y: -1.0, match="too small")
