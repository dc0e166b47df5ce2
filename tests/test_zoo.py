"""The kernel zoo: each kernel against its formula and autograd, the propositions of the chapter
on fresh random instances, the interval enclosures, the trap certificates, the sweep's task
function and the errors of bad input."""
import math

import numpy as np
import pytest
import torch

import tdlib
from tdlib import zoo
from tdlib.separation import Box, softmax_floor

SEED = int(torch.randint(0, 2**31 - 1, ()))


def gen(offset=0):
    return torch.Generator().manual_seed(SEED + offset)


def plain(name, Q, K):
    """The table's formula, entry by entry, in plain Python."""
    n, d = K.shape
    out = np.zeros((Q.shape[0], n))
    for l in range(Q.shape[0]):
        dots = [float(Q[l] @ K[j]) / math.sqrt(d) for j in range(n)]
        dist = [float((Q[l] - K[j]) @ (Q[l] - K[j])) / (2 * math.sqrt(d)) for j in range(n)]
        for j in range(n):
            if name == "softmax":
                out[l, j] = math.exp(dots[j]) / sum(math.exp(z) for z in dots)
            elif name == "gaussian":
                out[l, j] = math.exp(-dist[j])
            elif name == "l2":
                out[l, j] = math.exp(-dist[j]) / sum(math.exp(-z) for z in dist)
            elif name == "sigmoid-logn":
                out[l, j] = 1 / (1 + math.exp(-(dots[j] - math.log(n))))
            elif name == "relu-n":
                out[l, j] = max(0.0, dots[j]) / n
            else:
                out[l, j] = dots[j] / n
    return out


@pytest.mark.parametrize("name", zoo.ZOO)
def test_kernel_matches_formula_and_layer_gradient(name):
    g = gen()
    Q, K = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(2))
    assert np.abs(tdlib.make_kernel(name)(Q, K).numpy() - plain(name, Q, K)).max() < 1e-13
    X, Y = tdlib.random_data(N=2, n=4, D=5, d_out=2, x_scale=2.0, seed=SEED % 1000)
    model = tdlib.AttentionLayer(D=5, H=2, d=3, d_out=2, kernel=name, seed=1)
    loss = model.loss(X, Y)
    grads = torch.autograd.grad(loss, [model.W_Q, model.W_K])
    for W, G in zip((model.W_Q, model.W_K), grads):
        E = torch.randn(W.shape, generator=g, dtype=torch.float64)
        with torch.no_grad():
            W += 1e-6 * E
            fp = float(model.loss(X, Y))
            W -= 2e-6 * E
            fm = float(model.loss(X, Y))
            W += 1e-6 * E
        fd = (fp - fm) / 2e-6
        assert abs(fd - float((G * E).sum())) <= 1e-6 * (1 + abs(fd))


@pytest.mark.parametrize("name", zoo.ZOO)
def test_score_box_encloses_float_weights(name):
    g = gen(1)
    Q = 3 * torch.randn(4, 6, 3, generator=g, dtype=torch.float64)
    K = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    S = tdlib.make_kernel(name)(Q, K).numpy()
    box = zoo.score_box(name, Box(Q.numpy()), K.numpy())
    tol = 1e-13 * (1 + np.abs(S))
    assert (box.lo <= S + tol).all() and (S - tol <= box.hi).all()
    assert (box.hi - box.lo).max() < 1e-10


def test_loss_box_encloses_loss():
    X, K, U, Y, _, W0 = zoo.make_problem(2, 3, 6, 2, 2, "gaussian", seed=SEED)
    for name in zoo.ZOO:
        f = float(zoo.query_only_loss(X, K, U, Y, W0[None], name)[0])
        b = zoo.loss_box(X[None], K[None], U[None], Y[None], W0[None], name)
        assert b.lo[0] <= f * (1 + 1e-12) and f * (1 - 1e-12) <= b.hi[0]


def test_row_stochastic_floor_and_affine_logits():
    X, K, U, Y, _, W0 = zoo.make_problem(3, 3, 12, 3, 2, "gaussian", seed=SEED)
    floor = float(softmax_floor(U, Y))
    Ws = W0 + 3 * torch.randn(100, *W0.shape, generator=gen(2), dtype=torch.float64)
    for name in zoo.ROW_STOCHASTIC:
        assert float(zoo.query_only_loss(X, K, U, Y, Ws, name).min()) >= floor
    c = 2 * math.sqrt(3)
    q = torch.randn(7, 3, generator=gen(3), dtype=torch.float64)
    want = torch.softmax((2 * q @ K[0].T - (K[0] ** 2).sum(-1)) / c, -1)
    assert torch.allclose(tdlib.make_kernel("l2")(q, K[0]), want, atol=1e-15)


def test_properties_of_the_zoo():
    props = {k: zoo.properties(k, seed=SEED % 10_000) for k in zoo.ZOO}
    assert [k for k in zoo.ZOO if props[k]["row_stochastic"]] == ["softmax", "l2"]
    assert [k for k in zoo.ZOO if props[k]["vanishes"]] == ["gaussian"]
    assert [k for k in zoo.ZOO if props[k]["affine_in_q"]] == ["linear-n"]
    assert props["relu-n"]["dead_zone"] and not props["sigmoid-logn"]["dead_zone"]


def test_linear_kernel_is_a_convex_quadratic():
    X, K, U, Y, _, W0 = zoo.make_problem(3, 4, 4, 2, 2, "softmax", seed=SEED)
    A, R0 = zoo.linear_operator(X, K, U, Y)
    for W in (W0, W0 + torch.randn(W0.shape, generator=gen(4), dtype=torch.float64)):
        f = float(zoo.query_only_loss(X, K, U, Y, W[None], "linear-n")[0])
        assert abs(f - 0.5 * float(((A @ W.reshape(-1) - R0) ** 2).sum())) < 1e-10 * (1 + f)
    sv = torch.linalg.svdvals(A)
    s_pos = float(sv[sv > 1e-10 * sv[0]].min())
    f_min = 0.5 * float(((A @ (torch.linalg.pinv(A) @ R0) - R0) ** 2).sum())
    W, gaps = W0[None].clone(), []
    for _ in range(200):
        f, g = zoo.loss_and_grad(X[None], K[None], U[None], Y[None], W, "linear-n")
        gaps.append(float(f) - f_min)
        W = W - g / float(sv[0]) ** 2
    rate = 1 - (s_pos / float(sv[0])) ** 2
    assert all(gp <= gaps[0] * rate ** t * (1 + 1e-9) + 1e-12 for t, gp in enumerate(gaps))


def test_relu_dead_zone_is_a_set_of_spurious_stationary_points():
    X, K, U, Y, W_t, _ = zoo.make_problem(2, 3, 12, 4, 2, "relu-n", seed=SEED)
    w = torch.linalg.lstsq(K, torch.ones(2, 3, 1, dtype=torch.float64)).solution
    Q = -w.transpose(1, 2).expand(2, 3, 4).reshape(6, 4)
    Xs = X.reshape(6, 12)
    W = Xs.T @ torch.linalg.solve(Xs @ Xs.T, Q)
    for E in (0, 1e-3 * torch.randn(W.shape, generator=gen(5), dtype=torch.float64)):
        f, g = zoo.loss_and_grad(X[None], K[None], U[None], Y[None], (W + E)[None], "relu-n")
        assert float(g.abs().max()) == 0.0
        assert abs(float(f) - 0.5 * float((Y ** 2).sum())) < 1e-12
    assert float(zoo.query_only_loss(X, K, U, Y, W_t[None], "relu-n")[0]) < 1e-20


def test_sigmoid_jacobian_full_rank_when_keys_independent():
    g = gen(6)
    K, U = torch.randn(3, 4, generator=g, dtype=torch.float64), \
        torch.randn(3, 2, generator=g, dtype=torch.float64)
    for _ in range(20):
        q = 3 * torch.randn(4, generator=g, dtype=torch.float64)
        nu = tdlib.make_kernel("sigmoid-logn")(q[None], K)[0]
        J = U.T @ torch.diag(nu * (1 - nu)) @ K / 2.0
        J_auto = torch.autograd.functional.jacobian(
            lambda q: tdlib.make_kernel("sigmoid-logn")(q[None], K)[0] @ U, q)
        assert torch.allclose(J, J_auto, atol=1e-14)
        assert float(torch.linalg.svdvals(J)[-1]) > 0


def test_trap_certificates():
    soft = zoo.trap("softmax", d=1)
    trapped = [m for m in soft["minima"] if m["non_global"]]
    assert len(trapped) == 1 and abs(trapped[0]["s"] - 2.33) < 0.02   # the Softmax chapter's s*
    assert soft["best"] < 1e-20
    lin = zoo.trap("linear-n", d=1)
    assert len(lin["minima"]) == 1 and not lin["minima"][0]["non_global"]
    for k in zoo.ZOO:
        tr = zoo.trap(k, d=1, h=0.02)
        assert all(m["proved"] for m in tr["minima"])
        assert all(m["lower"] <= m["g"] for m in tr["minima"])
    g2 = zoo.trap("gaussian", d=2, gd_steps=800)
    assert g2["gd_zero"]


def test_cell_task_is_deterministic_and_json():
    import json
    task = zoo.tasks(kernels=["relu-n"], ratios=[1.0], ds=[2], instances=2,
                     budgets=[32, 64])[0]
    json.dumps(task)
    a, b = zoo.cell_task(**task), zoo.cell_task(**task)
    assert a["label"] == b["label"] and a["f_end"] == b["f_end"]
    json.dumps(a)
    assert set(a["kind"]) <= {"certified", "measured"}
    # students of one teacher see the same problems: same seed
    ts = zoo.tasks(kernels=["l2", "relu-n"], ratios=[1.0], ds=[2])
    seeds = {(t["teacher"], t["student"]): t["seed"] for t in ts}
    assert seeds[("softmax", "l2")] == seeds[("softmax", "relu-n")]


def test_hull_floor_only_for_row_stochastic_students():
    task = zoo.tasks(kernels=["softmax", "sigmoid-logn"], ratios=[2.0], ds=[4], instances=4,
                     budgets=[32, 64])
    for t in task:
        res = zoo.cell_task(**t)
        if t["student"] not in zoo.ROW_STOCHASTIC:
            assert "positive" not in res["label"] and all(f == 0 for f in res["floor"])


def test_profile_of_a_kernel_of_your_own():
    tdlib.register_kernel("zoo-test-cauchy", lambda Q, K: 1 / (1 + torch.cdist(Q, K) ** 2))
    prof = zoo.profile("zoo-test-cauchy", instances=2, steps=64, draw=False)
    assert prof["properties"]["vanishes"] and not prof["properties"]["row_stochastic"]
    assert prof["trap"]["minima"] == []          # no interval enclosure: nothing certified
    assert len(prof["sweep"]["cells"]) == 4
    assert all(k == "measured" for c in prof["sweep"]["cells"] for k in c["kind"])


def test_stored_sweep_and_widget_figure():
    import matplotlib
    matplotlib.use("Agg")
    res = tdlib.book.stored("zoo", "results.json")
    assert len(res["cells"]) == len(zoo.tasks())
    assert {c["student"] for c in res["cells"]} == set(zoo.ZOO)
    for k in zoo.ZOO:
        f = zoo.fractions(res, k, "own")
        assert np.all((0 <= f) & (f <= 1))
    # certified positive labels only for row-stochastic students
    assert all("positive" not in c["label"] for c in res["cells"]
               if c["student"] not in zoo.ROW_STOCHASTIC)
    fig = zoo.draw("relu-n")
    assert len(fig.axes) == 2


class TestBadInput:
    def test_unregistered_kernel(self):
        with pytest.raises(ValueError, match="registered kernel name.*got 'nope'"):
            zoo.properties("nope")
        with pytest.raises(ValueError, match="registered kernel"):
            zoo.make_problem(2, 3, 6, 2, 2, "nope")

    def test_kernel_returning_nan(self):
        tdlib.register_kernel("zoo-test-nan", lambda Q, K: Q @ K.transpose(-1, -2) * math.nan)
        with pytest.raises(FloatingPointError, match="zoo-test-nan.*NaN"):
            zoo.properties("zoo-test-nan")

    def test_kernel_of_wrong_shape(self):
        tdlib.register_kernel("zoo-test-shape", lambda Q, K: Q @ Q.transpose(-1, -2)[..., :1])
        with pytest.raises(ValueError, match="zoo-test-shape.*expected weights of shape"):
            zoo.properties("zoo-test-shape")

    def test_wrong_shapes(self):
        X, K, U, Y, _, W0 = zoo.make_problem(2, 3, 6, 2, 2, "softmax", seed=0)
        with pytest.raises(ValueError, match=r"Ws: expected shape \(B, D, d\)"):
            zoo.query_only_loss(X, K, U, Y, W0, "softmax")

    def test_box_needs_a_zoo_kernel(self):
        tdlib.register_kernel("zoo-test-own", lambda Q, K: Q @ K.transpose(-1, -2))
        with pytest.raises(ValueError, match="interval enclosure"):
            zoo.trap("zoo-test-own")

    def test_bad_budgets(self):
        X, K, U, Y, _, W0 = zoo.make_problem(2, 3, 6, 2, 2, "softmax", seed=0)
        with pytest.raises(ValueError, match="increasing"):
            zoo.label_runs(X[None], K[None], U[None], Y[None], W0[None], "softmax", [64, 32])
