"""The bridge of the in-context regression chapter: the book's layer on in-context prompts with
the loss of the query token, the value-only corollary on fresh instances, the hull floor, the
convex query-only problem of linear-n, the sweep's task, its stored result and its readers, the
self-check of the exercise, and the errors of bad input."""
import copy
import math

import numpy as np
import pytest
import torch

from tdlib import book, icl, selfcheck

SEED = int(torch.randint(0, 2**31 - 1, ()))
M, N_TOK = 3, 6


def data(N, seed=SEED):
    P = icl.prompts(N, N_TOK, M, seed=seed)
    return P, icl.tokens(P), P["y"][:, -1]


@pytest.mark.parametrize("trial", range(3))
def test_structured_linear_layer_is_the_icl_prediction(trial):
    g = torch.Generator().manual_seed(SEED + trial)
    W_QK = torch.randn(M, M, generator=g, dtype=torch.float64)
    model = icl.structured_layer("linear-n", M, seed=trial)
    W_Q = torch.zeros(M + 1, M + 1, dtype=torch.float64)
    W_Q[:M, :M] = math.sqrt(M + 1) * W_QK
    model.set_weights(W_Q=W_Q)
    P, X, y_q = data(50, SEED + trial)
    assert torch.allclose(icl.query_output(model, X), icl.predict(W_QK, P), atol=1e-12)
    want = 0.5 * float(((icl.predict(W_QK, P) - y_q) ** 2).sum())
    assert abs(float(icl.query_loss(model, X, y_q)) - want) <= 1e-10 * (1 + want)


@pytest.mark.parametrize("kernel", icl.BRIDGE_KERNELS)
def test_query_loss_gradient_matches_finite_differences(kernel):
    P, X, y_q = data(5)
    model = icl.bridge_layer(kernel, M, H=2, seed=SEED % 1000)
    loss = icl.query_loss(model, X, y_q)
    (g,) = torch.autograd.grad(loss, [model.W_K])
    eps = 1e-6
    for idx in [(0, 0, 1), (1, 2, 3), (0, 3, 0)]:
        with torch.no_grad():
            model.W_K[idx] += eps
            up = float(icl.query_loss(model, X, y_q))
            model.W_K[idx] -= 2 * eps
            down = float(icl.query_loss(model, X, y_q))
            model.W_K[idx] += eps
        assert abs((up - down) / (2 * eps) - float(g[idx])) <= 1e-6 * (1 + abs(float(g[idx])))


def test_query_loss_ignores_the_other_tokens():
    P, X, y_q = data(4)
    model = icl.bridge_layer("softmax", M, seed=1)
    T = model(X).detach()
    assert torch.allclose(icl.query_loss(model, X, y_q),
                          0.5 * ((T[:, -1, 0] - y_q) ** 2).sum(), atol=1e-12)


@pytest.mark.parametrize("kernel", icl.BRIDGE_KERNELS)
def test_value_only_corollary(kernel):
    """cor-icl-query-value: B_q V W_O gives the query outputs, the rank bound, and the rate
    bound at eta = 1/L with HD = N on a fresh instance."""
    N, H = 8, 2
    P, X, y_q = data(N)
    model = icl.bridge_layer(kernel, M, H=H, seed=SEED % 997)
    B_q = icl.query_features(model, X).detach()
    assert B_q.shape == (N, H * (M + 1))
    V = model.W_V.detach().reshape(H * (M + 1), -1)
    W_O = model.W_O.detach()[0]
    assert torch.allclose(B_q @ V @ W_O, icl.query_output(model, X)[:, None], atol=1e-12)
    lam = torch.linalg.eigvalsh(B_q @ B_q.T)
    assert lam[0] > 0
    w2 = float((W_O ** 2).sum())
    alpha, L = float(lam[0]) * w2, float(lam[-1]) * w2
    run = icl.gd_query(model, X, y_q, 1 / L, 100, ("W_V",), every=1)
    f = np.array(run["loss"])
    bound = (1 - alpha / L) ** (2 * np.arange(len(f))) * f[0]
    assert np.all(f <= bound * (1 + 1e-9) + 1e-28)


def test_value_only_below_the_threshold_has_the_projection_minimum():
    """With HD < N the minimum over V is 1/2 ||(I - P_B) y_q||^2 > 0 and GD approaches it."""
    N = 12
    P, X, y_q = data(N)
    model = icl.bridge_layer("softmax", M, H=1, seed=3)
    B_q = icl.query_features(model, X).detach()
    assert torch.linalg.matrix_rank(B_q) <= min(N, M + 1)
    proj = B_q @ torch.linalg.pinv(B_q)
    f_star = 0.5 * float(((y_q - proj @ y_q) ** 2).sum())
    assert f_star > 0
    lam = torch.linalg.eigvalsh(B_q.T @ B_q)
    L = float(lam[-1]) * float((model.W_O.detach()[0] ** 2).sum())
    run = icl.gd_query(model, X, y_q, 1 / L, 1500, ("W_V",))
    assert run["final"] >= f_star * (1 - 1e-9)
    assert run["final"] <= f_star * (1 + 1e-3)


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0, 100.0])
def test_hull_floor_bounds_every_row_stochastic_loss(scale):
    P, X, y_q = data(30)
    floor = icl.hull_floor(P)
    assert floor > 0
    for kernel in ("softmax", "l2"):
        for s in range(5):
            model = icl.structured_layer(kernel, M, seed=SEED % 1000 + s, scale=scale)
            assert float(icl.query_loss(model, X, y_q)) >= floor * (1 - 1e-12)


def test_hull_floor_is_attained_for_one_prompt_with_its_label_outside():
    P, X, y_q = data(1)
    y = P["y"][0]
    lo, hi = min(0.0, float(y[:-1].min())), max(0.0, float(y[:-1].max()))
    yq = float(y[-1])
    want = 0.5 * (max(lo - yq, 0) + max(yq - hi, 0)) ** 2
    assert abs(icl.hull_floor(P) - want) <= 1e-12 * (1 + want)


def test_linear_query_only_reaches_the_least_squares_minimum_from_every_start():
    """Query-only training of linear-n on in-context prompts is convex least squares."""
    N = 40
    P, X, y_q = data(N)
    n = N_TOK
    h = torch.einsum("inm,in->im", P["x"][:, :-1], P["y"][:, :-1]) / n
    A = torch.einsum("im,ik->imk", P["x"][:, -1], h).reshape(N, -1)   # y_hat = A vec(W_QK)
    sol = torch.linalg.lstsq(A, y_q[:, None]).solution
    f_min = 0.5 * float(((A @ sol)[:, 0] - y_q).pow(2).sum())
    # f(W_Q) = 1/2 ||A vec(W_Q[:m, :m]) / sqrt(D) - y_q||^2: step 1/L with L = lambda_max / D
    lr = (M + 1) / float(torch.linalg.eigvalsh(A.T @ A)[-1])
    finals = []
    for s in range(3):
        model = icl.structured_layer("linear-n", M, seed=s)
        r = icl.gd_query(model, X, y_q, lr, 1500, ("W_Q",))
        finals.append(r["final"])
    assert max(finals) - min(finals) <= 1e-8 * f_min
    assert abs(finals[0] - f_min) <= 1e-8 * f_min


def test_gd_query_matches_one_manual_step_and_stops_at_tol():
    P, X, y_q = data(6)
    model = icl.bridge_layer("gaussian", M, seed=2)
    other = icl.bridge_layer("gaussian", M, seed=2)
    loss = icl.query_loss(other, X, y_q)
    (g,) = torch.autograd.grad(loss, [other.W_Q])
    r = icl.gd_query(model, X, y_q, 0.01, 1, ("W_Q",))
    assert torch.allclose(model.W_Q.detach(), other.W_Q.detach() - 0.01 * g, atol=1e-14)
    assert r["steps"] == 1 and r["loss"][0] == pytest.approx(float(loss))
    r = icl.gd_query(model, X, y_q, 0.01, 50, ("W_Q",), tol=1e300)
    assert r["steps"] == 0


def test_gd_query_reports_divergence():
    P, X, y_q = data(6)
    model = icl.bridge_layer("linear-n", M, seed=2)
    r = icl.gd_query(model, X, y_q, 1e3, 100)
    assert r["diverged"] and math.isfinite(r["final"])


def test_flat_softmax_risk_matches_monte_carlo():
    P = icl.prompts(100000, N_TOK, M, seed=SEED)
    model = icl.structured_layer("softmax", M).set_weights(
        W_Q=torch.zeros(M + 1, M + 1, dtype=torch.float64))
    r = (icl.query_output(model, icl.tokens(P)) - P["y"][:, -1]) ** 2 / 2
    se = float(r.std()) / math.sqrt(len(r))
    assert abs(float(r.mean()) - icl.flat_softmax_risk(M, N_TOK)) < 5 * se


def test_flat_gaussian_risk_matches_monte_carlo():
    P = icl.prompts(100000, N_TOK, M, seed=SEED + 1)
    model = icl.structured_layer("gaussian", M).set_weights(
        W_Q=torch.zeros(M + 1, M + 1, dtype=torch.float64))
    r = (icl.query_output(model, icl.tokens(P)) - P["y"][:, -1]) ** 2 / 2
    se = float(r.std()) / math.sqrt(len(r))
    assert abs(float(r.mean()) - icl.flat_gaussian_risk(M, N_TOK)) < 5 * se
    assert icl.flat_gaussian_risk(M, N_TOK) > M / 2      # worse than predicting 0


def test_check_flat_gaussian_risk():
    assert selfcheck.passes(icl.check_flat_gaussian_risk, icl.flat_gaussian_risk)
    with pytest.raises(selfcheck.Wrong, match="flat_gaussian"):
        icl.check_flat_gaussian_risk(icl.flat_softmax_risk)


def test_check_flat_risk(capsys):
    assert selfcheck.passes(icl.check_flat_risk, icl.flat_softmax_risk)
    with pytest.raises(selfcheck.Wrong, match="flat_risk"):
        icl.check_flat_risk(lambda m, n: 0.5 * m)
    with pytest.raises(selfcheck.Wrong, match="flat_risk"):
        icl.check_flat_risk(lambda m, n: "one")


TINY = dict(seeds=2, N_test=50, modes={
    "query": dict(N=6, H=1, inits=2, steps=20, lrN=[0.3, 1.0]),
    "joint": dict(N=4, H=1, inits=2, steps=20, lrN=[0.03, 100.0])})


@pytest.fixture(scope="module")
def tiny():
    return icl.bridge_sweep(workers=1, command="test", **copy.deepcopy(TINY))


def test_sweep_pairs_kernels_and_validates(tiny):
    assert icl.check_bridge(tiny) == []
    # a pair shares its start: the same weights for every kernel at one seed
    for make in (lambda k: icl.structured_layer(k, M, seed=7),
                 lambda k: icl.bridge_layer(k, M, H=2, seed=7)):
        a, b, c = (make(k) for k in icl.BRIDGE_KERNELS)
        for p in ("W_Q", "W_K", "W_V", "W_O"):
            assert torch.equal(getattr(a, p), getattr(b, p))
            assert torch.equal(getattr(a, p), getattr(c, p))
    seeds = {(c["mode"], c["seed"]) for c in tiny["cells"]}
    assert len(seeds) == len(tiny["cells"]) == 4
    # a run at lr N = 100 of linear-n diverges and is counted, not compared
    d = icl.paired(tiny, "joint", "softmax", 100.0)
    assert d["pairs"] + d["dropped"] == 4
    assert icl.shared_lr(tiny, "joint") == 0.03


def test_check_bridge_names_damage(tiny):
    bad = copy.deepcopy(tiny)
    bad["cells"][0]["runs"].pop()
    assert any("one run per kernel" in p for p in icl.check_bridge(bad))
    bad = copy.deepcopy(tiny)
    bad["cells"][0]["runs"][0]["rel"] *= 2
    assert any("bad rel" in p for p in icl.check_bridge(bad))
    bad = copy.deepcopy(tiny)
    del bad["cells"][1]
    assert any("missing" in p for p in icl.check_bridge(bad))


def test_paired_sign_test():
    runs = lambda k, vals: [{"kernel": k, "init": i, "lrN": 1.0, "risk": v, "diverged": False,
                             "plateau": False} for i, v in enumerate(vals)]
    doc = {"cells": [{"mode": "query", "seed": 1,
                      "runs": runs("linear-n", [1, 1, 1, 1, 1]) + runs("softmax",
                                                                      [0, 0, 0, 0, 2])}]}
    d = icl.paired(doc, "query", "softmax", 1.0)
    assert (d["lower"], d["higher"], d["pairs"]) == (4, 1, 5)
    assert d["p"] == pytest.approx(2 * 6 / 32)
    assert d["median"] == -1


def test_stored_sweep_is_sound():
    path = book.data_path("icl", "bridge", "results.json")
    if not path.exists():
        pytest.skip("no stored bridge sweep")
    doc = icl.load_bridge()
    assert doc["provenance"]["command"].startswith("python -m tdlib.icl")
    assert icl.check_bridge(doc) == []


def test_bad_input():
    with pytest.raises(ValueError, match="kernel"):
        icl.bridge_layer("softmaxx", 3)
    with pytest.raises(ValueError, match="m must be"):
        icl.bridge_layer("softmax", 0)
    P, X, y_q = data(3)
    model = icl.bridge_layer("softmax", M)
    with pytest.raises(ValueError, match="one label per prompt"):
        icl.query_loss(model, X, y_q[:2])
    with pytest.raises(ValueError, match="mode"):
        icl.bridge_runs({"cells": []}, "both")
    with pytest.raises(ValueError, match="bridge option"):
        icl.bridge_tasks(steps=3)
    with pytest.raises(SystemExit):
        icl.main(["--out", "x.json"])


# ------------------------------------------------------------------ the certified trap
def _block_loss(model, X, y_q):
    """f as a function of the block Z = W_Q[:m, :m] (autograd), the other weights fixed."""
    W = model.W_Q.detach()[0]

    def f(Z):
        W_Q = torch.cat([torch.cat([Z, W[:M, M:]], 1), W[M:]], 0)
        T = torch.func.functional_call(model, {"W_Q": W_Q[None]}, (X,))
        return 0.5 * ((T[:, -1, 0] - y_q) ** 2).sum()
    return f


def _softmax_instance(seed, structured):
    model = (icl.structured_layer("softmax", M, seed=seed, scale=2.0) if structured
             else icl.bridge_layer("softmax", M, H=1, seed=seed, scale=2.0))
    P, X, y_q = data(7, seed)
    return model, X, y_q


@pytest.mark.parametrize("structured", [True, False])
@pytest.mark.parametrize("trial", range(3))
def test_trap_derivatives_match_autograd(trial, structured):
    model, X, y_q = _softmax_instance(SEED + trial, structured)
    Z = model.W_Q.detach()[0, :M, :M].clone()
    f, g, H = icl.trap_derivatives(model, X, y_q, Z)
    fa = _block_loss(model, X, y_q)
    want_g = torch.func.grad(fa)(Z).detach().numpy()
    want_H = torch.autograd.functional.hessian(fa, Z).reshape(M * M, -1).detach().numpy()
    assert abs(f - float(fa(Z).detach())) <= 1e-12 * (1 + abs(f))
    assert np.abs(g - want_g).max() <= 1e-10 * (1 + np.abs(want_g).max())
    assert np.abs(H - want_H).max() <= 1e-10 * (1 + np.abs(want_H).max())
    assert np.abs(H - H.T).max() <= 1e-10 * (1 + np.abs(H).max())


@pytest.mark.parametrize("trial", range(2))
def test_trap_box_encloses_the_values_at_points_of_the_box(trial):
    from tdlib.intervals import Box

    model, X, y_q = _softmax_instance(SEED + 10 + trial, structured=True)
    W_hat = model.W_Q.detach()[0, :M, :M].numpy()
    r = 1e-3
    w = icl.trap_weights(model)
    f_b, g_b, H_b = icl.trap_box(w, X.numpy(), y_q.numpy(), Box(W_hat - r, W_hat + r))
    assert H_b.hi.max() - H_b.lo.min() < 1e6 and np.isfinite(H_b.lo).all()
    fa = _block_loss(model, X, y_q)
    g = np.random.default_rng(SEED + trial)
    for _ in range(5):
        Z = torch.as_tensor(W_hat + r * g.uniform(-1, 1, W_hat.shape))
        vals = [(f_b, float(fa(Z).detach())),
                (g_b, torch.func.grad(fa)(Z).detach().numpy().ravel()),
                (H_b, torch.autograd.functional.hessian(fa, Z).detach().reshape(M * M, -1)
                 .numpy())]
        for box, v in vals:
            slack = 1e-12 * (1 + np.abs(v).max())      # the float64 value's own rounding
            assert (box.lo - slack <= v).all() and (v <= box.hi + slack).all()
    f_p, g_p, _ = icl.trap_box(w, X.numpy(), y_q.numpy(), Box(W_hat), order=1)
    assert f_p.hi - f_p.lo <= 1e-9 * f_p.hi       # a point box is tight


@pytest.fixture(scope="module")
def trap():
    doc = icl.load_bridge()
    pairs = icl.trap_pairs(doc)
    if not pairs:
        pytest.skip("the stored sweep has no stopped Softmax start above another start")
    a, b = pairs[0]
    model, X, y_q, run = icl.rerun_query_start(doc, a)
    other = icl.rerun_query_start(doc, b)[0]
    return model, X, y_q, model.W_Q.detach()[0, :M, :M], other.W_Q.detach()[0]


def test_trap_certificate_on_the_stored_trap(trap):
    model, X, y_q, W_hat, W_other = trap
    c = icl.trap_certificate(model, X, y_q, W_hat, W_other)
    assert c["ok"], c["reasons"]
    assert c["lam_lo"] > 0 and c["grad_hi"] < c["lam_lo"] * c["radius"]
    assert c["lam_lo"] <= c["lam_float"] and c["dist_hi"] < c["radius"]
    with torch.no_grad():
        f_a = float(icl.query_loss(model, X, y_q))
        other = icl.structured_layer("softmax", M).set_weights(W_Q=W_other)
        f_b = float(icl.query_loss(other, X, y_q))
    assert c["f0"][0] - 1e-12 * f_a <= f_a <= c["f0"][1] + 1e-12 * f_a
    assert c["f_star_lo"] > c["f_other_hi"] >= f_b * (1 - 1e-12)
    # the lemma's conclusions, checked on Newton's iterates from W_hat (float64)
    Z = W_hat.numpy().copy()
    for _ in range(3):
        f, g, H = icl.trap_derivatives(model, X, y_q, Z)
        Z = Z - np.linalg.solve(H, g.ravel()).reshape(M, M)
    assert np.linalg.norm(Z - W_hat.numpy()) <= c["dist_hi"] * (1 + 1e-6) + 1e-15
    assert icl.trap_derivatives(model, X, y_q, Z)[0] >= c["f_star_lo"] - 1e-9


def test_trap_certificate_fails_where_it_must(trap):
    model, X, y_q, W_hat, W_other = trap
    away = icl.trap_certificate(model, X, y_q, W_hat + 0.1, W_other)   # not near a minimum
    assert not away["ok"] and away["reasons"] and away["radius"] is None
    tiny = icl.trap_certificate(model, X, y_q, W_hat, W_other, radii=[1e-14])
    assert not tiny["ok"] and tiny["tried"] == [(1e-14, tiny["tried"][0][1])]
    same = icl.trap_certificate(model, X, y_q, W_hat, model.W_Q.detach()[0])
    assert not same["ok"] and "other point" in same["reasons"][0]
    assert "positive lower bound" in tiny["reasons"][0]
    assert same["radius"] is not None         # the minimum itself is still proved


def test_bound_text_rounds_outward():
    g = np.random.default_rng(SEED)
    for x in np.concatenate([g.normal(size=200) * 10.0 ** g.integers(-12, 6, 200),
                             [0.5, 0.25, 1e-10, -2.0, 0.0]]):
        for kw in ({"sig": 2}, {"sig": 4}, {"decimals": 3}, {"decimals": 8}):
            lo, hi = icl.bound_text(x, up=False, **kw), icl.bound_text(x, up=True, **kw)
            assert float(lo) <= x <= float(hi), (x, kw, lo, hi)
    assert icl.bound_text(0.76387, up=False, decimals=4) == "0.7638"
    assert icl.bound_text(0.76381, up=True, decimals=4) == "0.7639"
    assert icl.bound_text(7.76e-11, up=True) == "7.8e-11"
    with pytest.raises(ValueError, match="x"):
        icl.bound_text(float("inf"), up=True)


def test_trap_certificate_bad_input():
    model, X, y_q = _softmax_instance(1, structured=True)
    W_hat, W = model.W_Q.detach()[0, :M, :M], model.W_Q.detach()[0]
    with pytest.raises(ValueError, match="one Softmax head"):
        icl.trap_certificate(icl.structured_layer("linear-n", M), X, y_q, W_hat, W)
    with pytest.raises(ValueError, match="acting block"):
        icl.trap_certificate(model, X, y_q, W, W)
    with pytest.raises(ValueError, match="finite"):
        icl.trap_certificate(model, X, y_q, W_hat * float("nan"), W)
    with pytest.raises(ValueError, match="radii"):
        icl.trap_certificate(model, X, y_q, W_hat, W, radii=[1e-3, 0.0])
    with pytest.raises(ValueError, match="radii"):
        icl.trap_certificate(model, X, y_q, W_hat, W, radii=[-1.0])
    with pytest.raises(ValueError, match="W_Q_other"):
        icl.trap_certificate(model, X, y_q, W_hat, W_hat)
    with pytest.raises(ValueError, match="one label per prompt"):
        icl.trap_certificate(model, X, y_q[:3], W_hat, W)
    with pytest.raises(ValueError, match="X"):
        icl.trap_certificate(model, X[..., :M], y_q, W_hat, W)
    with pytest.raises(TypeError, match="AttentionLayer"):
        icl.trap_certificate("softmax", X, y_q, W_hat, W)
    with pytest.raises(ValueError, match="differs|ends at"):
        doc = icl.load_bridge()
        run = dict(icl.bridge_runs(doc, "query")[0])
        run["final"] *= 2
        icl.rerun_query_start(doc, run)
