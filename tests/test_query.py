"""Query-only training: decoupling, Jacobians, the convergence theorem, the phase-diagram CLI."""
import json
import math

import numpy as np
import pytest
import torch

import tdlib
from tdlib import phase, query, separation


def fresh_seed():
    return int(torch.randint(0, 2**31 - 1, ()))


@pytest.mark.parametrize("kernel", ["gaussian", "softmax"])
def test_decoupling_gradient_is_stacked_per_query_gradients(kernel):
    seed = fresh_seed()
    p, _, W = query.make_problem(N=3, n=4, D=15, d=3, d_out=2, kernel=kernel, seed=seed)
    # the whole gradient from autograd on the full layer ...
    model = p.model(W)
    auto = torch.autograd.grad(model.loss(p.X, p.Y), model.W_Q)[0][0]
    # ... equals X^T G, G the per-query gradients, each from autograd on its own g_ik
    Q = p.queries(W).clone().requires_grad_(True)
    per_query = torch.autograd.grad(p.per_query_losses(Q).sum(), Q)[0]
    assert torch.allclose(auto, p.Xs.T @ per_query.reshape(-1, p.d), rtol=1e-10, atol=1e-12), seed
    assert torch.allclose(per_query, p.per_query_gradients(p.queries(W)), rtol=1e-10, atol=1e-12), seed
    # the loss is the sum of the per-query losses, and X W_Q reaches any queries
    assert math.isclose(float(model.loss(p.X, p.Y).detach()), p.loss(W), rel_tol=1e-12)
    target = torch.randn(p.N * p.n, p.d, dtype=torch.float64)
    W_hit = p.Xs.T @ torch.linalg.solve(p.Xs @ p.Xs.T, target)
    assert torch.allclose(p.Xs @ W_hit, target, atol=1e-10)


@pytest.mark.parametrize("kernel", ["gaussian", "softmax"])
def test_jacobians_match_autograd(kernel):
    g = torch.Generator().manual_seed(fresh_seed())
    K, U, Q = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((4, 5), (4, 3), (4, 5)))
    J = query.jacobians(Q, K, U, kernel)
    for k in range(4):
        def out(q):
            Qk = Q.clone()
            Qk[k] = q
            return query.outputs(Qk, K, U, kernel)[k]
        assert torch.allclose(torch.autograd.functional.jacobian(out, Q[k]), J[k], atol=1e-12)


def test_gaussian_jacobian_constant_and_rank():
    # -(2/c) U^T diag(a) (1 q^T - K), with c = 2 sqrt(d): constant 1/sqrt(d)
    g = torch.Generator().manual_seed(fresh_seed())
    n, d, d_out = 3, 6, 2
    K, U, q = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((n, d), (n, d_out), (d,)))
    a = torch.exp(-((q - K) ** 2).sum(1) / (2 * math.sqrt(d)))
    J = -(1 / math.sqrt(d)) * U.T @ torch.diag(a) @ (q[None] - K)
    assert torch.allclose(query.jacobians(q[None], K, U, "gaussian")[0], J, atol=1e-14)
    assert float(query.smallest_singular_values(J)) > 0
    # at a point of the keys' affine hull, the orthogonal directions are in the kernel of J
    lam = torch.softmax(torch.randn(n, generator=g, dtype=torch.float64), 0)
    q_aff = lam @ K
    J_aff = query.jacobians(q_aff[None], K, U, "gaussian")[0]
    w = torch.randn(d, generator=g, dtype=torch.float64)
    diffs = (K[1:] - K[0]).T
    w = w - diffs @ torch.linalg.lstsq(diffs, w).solution
    assert float((J_aff @ w).abs().max()) < 1e-12
    # and a Jacobian with d < d_out has sigma_min = 0 by definition
    assert float(query.smallest_singular_values(J[:, :1].T @ J[:, :1])) >= 0
    assert float(query.smallest_singular_values(torch.ones(2, 1, dtype=torch.float64))) == 0


def test_adaptive_run_is_the_phase_diagram_rule():
    """query.run(adaptive=True) and phase.batched_gd take exactly the same steps."""
    seed = fresh_seed()
    p, _, W0 = query.make_problem(N=2, n=3, D=12, d=4, d_out=2, kernel="softmax", seed=seed)
    lr = 1 / float(torch.linalg.matrix_norm(p.Xs, 2)) ** 2
    hist, _ = query.run(p, W0, lr=lr, steps=120, adaptive=True)
    one = lambda x: x[None]
    f, _, at, pl = phase.batched_gd(one(p.X), one(p.K), one(p.U), one(p.Y), one(W0), "softmax", 120,
                                    marks=(0, 30, 120))
    assert np.allclose([hist.loss[0], hist.loss[30], hist.loss[120]], at[0].numpy(), rtol=1e-12), seed
    assert np.allclose(hist.extra["pl_ratio"][120], float(pl[0, 2]), rtol=1e-9), seed
    # rejected steps are spent iterations: the loss is repeated, never increased
    assert np.all(np.diff(hist.loss) <= 0) and len(hist.loss) == 121
    assert all(a <= b for a, b in zip(hist.loss[1:], hist.loss[:-1]))


def test_make_problem_w_scale_leaves_W_O():
    a = query.make_problem(seed=3, w_scale=1.0)[0]
    b = query.make_problem(seed=3, w_scale=2.0)[0]
    assert torch.equal(a.W_O, b.W_O) and torch.allclose(b.W_K, 2 * a.W_K)


def test_run_equals_tdlib_train():
    p, _, W0 = query.make_problem(N=2, n=3, D=8, d=3, d_out=2, kernel="gaussian", seed=5)
    hist, W = query.run(p, W0, lr=0.02, steps=40)
    model = p.model(W0)
    h2 = tdlib.train(model, p.X, p.Y, lr=0.02, steps=40, trainable=("W_Q",), progress=False)
    assert np.allclose(hist.loss, h2.loss, rtol=1e-10)
    assert torch.allclose(W, model.W_Q.detach()[0], atol=1e-12)


def side_by_side(steps):
    p, _, W0 = query.make_problem(N=2, n=3, D=12, d=4, d_out=2, kernel="gaussian", seed=112)
    lr0 = 1 / float(torch.linalg.matrix_norm(p.Xs, 2)) ** 2
    out = {}
    for k in ("gaussian", "softmax"):
        h, W = query.run(p.with_kernel(k), W0, lr=lr0, steps=steps, adaptive=True, tol=1e-12 * p.loss(W0))
        out[k] = (h.loss, W)
    return p, out


def test_side_by_side_instance_reproduces():
    p, a = side_by_side(120)
    _, b = side_by_side(120)
    for k in a:
        assert a[k][0] == b[k][0] and torch.equal(a[k][1], b[k][1])
    # Softmax can never go below the hull floor; the Gaussian run (as in the chapter) reaches zero
    floor = query.softmax_loss_floor(p)
    assert floor > 1e-2 and min(a["softmax"][0]) >= floor
    _, W0 = p, query.make_problem(N=2, n=3, D=12, d=4, d_out=2, kernel="gaussian", seed=112)[2]
    h, _ = query.run(p, W0, lr=1 / float(torch.linalg.matrix_norm(p.Xs, 2)) ** 2, steps=700,
                     adaptive=True, tol=1e-12 * p.loss(W0))
    assert h.final_loss < 1e-10


def test_hull_distance_is_a_lower_bound():
    g = np.random.default_rng(fresh_seed())
    U = g.normal(size=(4, 2))
    inside = np.array([0.1, 0.2, 0.3, 0.4]) @ U
    assert query.hull_distance(U, inside) == 0.0
    direction = g.normal(size=2)
    y = 3 * np.linalg.norm(U, axis=1).max() * direction / np.linalg.norm(direction)  # outside the hull
    lb = query.hull_distance(U, y)
    # no convex combination of the rows is closer than the bound
    lam = g.dirichlet(np.ones(4), size=2000)
    assert lb > 0 and (np.linalg.norm(lam @ U - y, axis=1) >= lb - 1e-12).all()


def test_problem_rejects_bad_input():
    p, _, W0 = query.make_problem(seed=0)
    with pytest.raises(ValueError, match=r"W_Q: expected shape \(D, d\)"):
        p.loss(W0[:, :2])
    with pytest.raises(ValueError, match="kernel"):
        query.make_problem(kernel="cosine")
    with pytest.raises(ValueError, match="Y: expected shape"):
        query.QueryProblem(p.X, p.Y[:, :, :1], p.W_K, p.W_V, p.W_O)


def test_cli_rejects_bad_configuration(capsys, tmp_path):
    with pytest.raises(SystemExit) as err:
        phase.main(["--out", str(tmp_path), "--ratios", "-1"])
    assert err.value.code == 2
    assert "bad configuration" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        phase.main(["--out", str(tmp_path), "--students", "cosine"])
    assert "expected one of 'softmax', 'gaussian'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="tol"):
        phase.SweepConfig(tol=2.0).validate()
    with pytest.raises(ValueError, match="max_steps: expected steps"):
        phase.SweepConfig(steps=100, max_steps=300).validate()
    with pytest.raises(ValueError, match="steps"):
        phase.SweepConfig(steps=4).validate()


def test_settle_stops_a_run_when_doubling_the_budget_keeps_its_label():
    """Every settled run carries the label it has at its budget T and at T/2; the others are
    undecided at max_steps; a converged run stops at once."""
    seed = fresh_seed()
    probs = [query.make_problem(N=2, n=3, D=12, d=4, d_out=2, kernel="softmax",
                                teacher="gaussian", seed=seed + i) for i in range(4)]
    X, K, U, Y = (torch.stack([getattr(p, a) for p, _, _ in probs]) for a in "XKUY")
    W0 = torch.stack([w for _, _, w in probs])
    res = phase.settle(X, K, U, Y, W0, "softmax", 32, 256)
    for i in range(4):
        T = res["budget"][i]
        assert T in (32, 64, 128, 256), (seed, T)
        f, _, curve, pl = phase.batched_gd(X[i:i + 1], K[i:i + 1], U[i:i + 1], Y[i:i + 1],
                                           W0[i:i + 1], "softmax", T, marks=range(T + 1))
        at = lambda S: separation.classify_curve(curve[0, :S + 1].numpy(), pl[0, :S + 1].numpy(),
                                                 f_ref=res["f_ref"][i])
        if res["label"][i] == "undecided":
            assert T == 256 and at(256) != at(128), seed
        elif res["label"][i] != "converged":
            assert res["label"][i] == at(T) == at(T // 2), seed
        assert res["first"][i] == at(16), seed
    with pytest.raises(ValueError, match="power of two"):
        phase.settle(X, K, U, Y, W0, "softmax", 32, 96)


def test_tiny_sweep_end_to_end(tmp_path):
    args = ["--out", str(tmp_path), "--ratios", "1", "2", "--ds", "2", "--init-scales", "1",
            "--instances", "3", "--steps", "30", "--max-steps", "120", "--N", "2", "--n", "2",
            "--quiet", "--serial"]
    assert phase.main(args) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["config"]["instances"] == 3 and res["provenance"]["wall_seconds"] > 0
    assert res["provenance"]["torch"] == torch.__version__
    for pair in ("softmax->softmax", "softmax->gaussian", "gaussian->softmax", "gaussian->gaussian"):
        F = phase.success_fraction(res, *pair.split("->"))
        assert F.shape == (2, 1, 1) and ((0 <= F) & (F <= 1)).all()
    # every run has exactly one label; budgets lie in [steps, max_steps]
    for pair, r in res["results"].items():
        total = sum(np.asarray(v) for v in r["labels"].values())
        assert (total == 3).all(), pair
        changed = np.asarray(r["first_label_differs"])
        assert ((0 <= changed) & (changed <= 3)).all()
        budget = np.asarray(r["run_budget"])
        assert ((30 <= budget) & (budget <= 120)).all()
    L = phase.label_fraction(res, "gaussian", "gaussian", ("zero", "linear"))
    assert L.shape == (2, 1, 1) and ((0 <= L) & (L <= 1)).all()
    with pytest.raises(ValueError, match="labels: expected names"):
        phase.label_fraction(res, "gaussian", "gaussian", ("fast",))
    assert res["provenance"]["command"].startswith("python -m tdlib.phase --out")
    # one stored cell recomputed from the stored configuration gives the stored labels
    live = phase.rerun_cell(res, "gaussian", "softmax", ratio=2.0, d=2, init_scale=1.0)
    stored = res["results"]["gaussian->softmax"]["labels"]
    assert all(live[k] == stored[k][1][0][0] for k in stored)
    runs = res["results"]["gaussian->softmax"]["run_label"][1][0][0]
    assert live["run_label"] == runs
    two = phase.rerun_cell(res, "gaussian", "softmax", ratio=2.0, d=2, init_scale=1.0, which=[2, 0])
    assert two["run_label"] == [runs[2], runs[0]]
    # the region summary: the label fractions of a region add up to one
    table = phase.summary(res, init_scale=1.0)
    assert len(table) == 4 * 3
    for (t, s, region), v in table.items():
        if region in ("coupled", "d1"):
            assert math.isnan(v["lin"])             # no cell has D < Nn or d = 1
        else:
            assert abs(sum(v[k] for k in phase.SUMMARY_KEYS) - 1) < 1e-12
    assert all(len(line) <= 72 for line in phase.summary_table(table).splitlines())
    with pytest.raises(ValueError, match="init_scale"):
        phase.summary(res, init_scale=3.0)
    with pytest.raises(ValueError, match="which: expected instance numbers"):
        phase.rerun_cell(res, "gaussian", "softmax", ratio=2.0, d=2, init_scale=1.0, which=[3])
    with pytest.raises(ValueError, match="stored grid"):
        phase.rerun_cell(res, "gaussian", "softmax", ratio=5.0, d=2, init_scale=1.0)


# ------------------------------------------------------------------ levels at infinity (prop-level-separation)
def _seg_dist(a, b, y):
    t = np.clip((y - a) @ (b - a) / ((b - a) @ (b - a)), 0, 1)
    return np.linalg.norm(a + t * (b - a) - y)


def test_softmax_level_of_a_triangle_is_the_distance_to_its_edges():
    g = np.random.default_rng(fresh_seed())
    for _ in range(20):
        U, y = g.normal(size=(3, 2)), g.normal(size=2) * 2
        edges = [_seg_dist(U[a], U[b], y) for a, b in ((0, 1), (1, 2), (0, 2))]
        assert math.isclose(query.softmax_level(U, y), 0.5 * min(edges) ** 2,
                            rel_tol=1e-6, abs_tol=1e-12)
    with pytest.raises(ValueError, match="n >= 2"):
        query.softmax_level(np.ones((1, 2)), np.ones(2))


def test_caratheodory_keeps_the_point_and_drops_weights():
    g = np.random.default_rng(fresh_seed())
    for n, d_out in ((5, 2), (6, 3), (4, 1)):
        U, lam = g.normal(size=(n, d_out)), g.dirichlet(np.ones(n))
        p = query.caratheodory(U, lam)
        assert np.count_nonzero(p) <= d_out + 1 and p.min() >= 0
        assert math.isclose(p.sum(), 1) and np.allclose(U.T @ p, U.T @ lam, atol=1e-12)
        # a target in the hull of n >= d_out + 2 rows: the Softmax level is zero (part 3a)
        assert query.softmax_level(U, U.T @ lam) < 1e-10
    with pytest.raises(ValueError, match="simplex"):
        query.caratheodory(np.ones((3, 2)), np.array([0.5, 0.6, 0.1]))


def test_softmax_twin_constants_bound_the_hessian_and_the_jacobian():
    """L_s bounds the Hessian of g (autograd) and sigma_A sigma_U min_j p_j bounds sigma_min(J),
    at random queries; rho bounds every weight where g <= g_bar."""
    seed = fresh_seed()
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    for _ in range(5):
        K, U = r(3, 2), r(3, 2)
        y = U.T @ torch.softmax(r(3), 0)                # inside the hull
        c = query.softmax_twin_constants(K, U, y, 0.0)
        loss = lambda q: 0.5 * ((query.outputs(q[None], K, U, "softmax")[0] - y) ** 2).sum()
        for _ in range(20):
            q = 3 * r(2)
            H = torch.autograd.functional.hessian(loss, q)
            assert float(torch.linalg.matrix_norm(H, 2)) <= c["L_s"], seed
            p = query.scores(q[None], K, "softmax")[0]
            sJ = float(torch.linalg.svdvals(query.jacobians(q[None], K, U, "softmax")[0])[-1])
            assert sJ >= c["sigma_A"] * c["sigma_U"] * float(p.min()) * (1 - 1e-9), seed
            g_q = float(loss(q))
            if g_q < c["Lambda"]:
                lower = query.softmax_twin_constants(K, U, y, g_q)["p_min"]
                assert float(p.min()) >= lower * (1 - 1e-9), seed


def test_softmax_twin_converges_linearly_below_its_level():
    seed = fresh_seed()
    p, W_star, _ = query.make_problem(N=2, n=3, D=12, d=2, d_out=2, kernel="softmax", seed=seed)
    Z = torch.randn(W_star.shape, generator=torch.Generator().manual_seed(seed),
                    dtype=torch.float64)
    for eps in (0.05, 0.02, 0.01, 0.005, 0.002, 1e-3, 5e-4, 2e-4, 1e-4):  # tiny levels occur
        W0 = W_star + eps * float(W_star.norm()) / float(Z.norm()) * Z
        cert = query.softmax_twin_certificate(p, W0)
        if cert["ok"]:
            break
    assert cert["ok"], (seed, cert)
    hist, _ = query.run(p, W0, lr=cert["eta"], steps=1000)
    loss = np.array(hist.loss)
    assert np.all(loss <= cert["f0"] * cert["rate"] ** np.arange(len(loss)) * (1 + 1e-9)), seed
    assert min(hist.extra["pl_ratio"]) >= cert["mu"] * (1 - 1e-9), seed
    assert loss[-1] < 0.5 * loss[0], seed


def test_softmax_twin_refuses_what_it_does_not_cover():
    seed = fresh_seed()
    p, _, W0 = query.make_problem(N=2, n=4, D=12, d=3, d_out=2, kernel="softmax", seed=seed)
    cert = query.softmax_twin_certificate(p, W0)      # n = d_out + 2: the level is zero
    assert not cert["ok"] and cert["Lambda_min"] < 1e-10 and "level" in cert["reason"], seed
    pg, _, Wg = query.make_problem(N=2, n=3, D=12, d=2, d_out=2, seed=seed)
    with pytest.raises(ValueError, match="softmax"):
        query.softmax_twin_certificate(pg, Wg)


def test_outside_the_hull_a_finite_minimiser_can_exist():
    """n = d = d_out = 2, U = I, keys (0,0), (0.5,0), y = (0.9,0.9): y is outside the segment
    conv{e1, e2}, yet GD reaches the floor 0.16 at a finite query, at a linear rate."""
    K = torch.tensor([[0.0, 0.0], [0.5, 0.0]], dtype=torch.float64)
    U, y = torch.eye(2, dtype=torch.float64), torch.tensor([0.9, 0.9], dtype=torch.float64)
    assert math.isclose(query.hull_distance(U.numpy(), y.numpy()) ** 2 / 2, 0.16, rel_tol=1e-9)
    q = torch.randn(2, dtype=torch.float64)
    gaps = []
    for _ in range(1000):
        r = query.outputs(q[None], K, U, "softmax")[0] - y
        gaps.append(0.5 * float(r @ r) - 0.16)
        q = q - query.jacobians(q[None], K, U, "softmax")[0].T @ r
    assert abs(gaps[-1]) < 1e-12 and float(q.norm()) < 10
    # the level on the simplex's boundary is higher than the attained floor
    assert math.isclose(query.softmax_level(U.numpy(), y.numpy()), 0.41, rel_tol=1e-9)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("arg", ["Q", "K", "U"])
def test_user_facing_outputs_refuse_non_finite_input_and_the_loops_twins_propagate(bad, arg):
    """``scores``/``outputs``/``jacobians`` name a non-finite argument instead of returning NaN;
    their ``*_unchecked`` twins (used by the GD loops to reject an overflowing step) compute
    without a check: a NaN comes out as the NaN the step is rejected by (an infinite key can
    also give a finite but meaningless output, which is why the user-facing ones refuse it)."""
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
    args = {"Q": torch.randn(3, 2, generator=g, dtype=torch.float64),
            "K": torch.randn(4, 2, generator=g, dtype=torch.float64),
            "U": torch.randn(4, 2, generator=g, dtype=torch.float64)}
    args[arg][1, 0] = bad
    for kernel in ("softmax", "gaussian"):
        for fn in (query.outputs, query.jacobians) + ((query.scores,) if arg != "U" else ()):
            kw = {k: v for k, v in args.items() if fn is not query.scores or k != "U"}
            with pytest.raises(ValueError, match=rf"^{arg}: expected finite numbers"):
                fn(**kw, kernel=kernel)
        out = query.outputs_unchecked(**args, kernel=kernel)
        assert out.shape == (3, 2)
        if math.isnan(bad):
            assert not bool(torch.isfinite(out).all()), f"{kernel}: {arg}={bad} gave {out}"
