"""The claims of the chapter *Joint training reaches zero loss from a good initialization*,
certified on fresh random instances (instances as in test_zeroloss.py).

Every test draws new seeds (printed on failure), so the claims are checked on instances nobody
chose; the assertions are the theorems' conclusions, not stored numbers.
"""
import math

import numpy as np
import pytest
import torch

import tdlib
from tdlib import joint as jt
from tdlib import zeroloss as th
from test_zeroloss import KERNELS, conditioned_instance, fresh_seed, one_thread, random_model  # noqa: F401


@pytest.mark.parametrize("kernel", KERNELS)
def test_pl_inequality_at_random_points(kernel):
    """||grad f||^2/(2f) >= ||grad_V f||^2/(2f) >= mu = lambda_min(BB^T) sigma_min(W_O)^2."""
    for _ in range(3):
        seed = fresh_seed()
        m, X, Y = random_model(kernel, N=2, n=3, D=8, H=1, d=3, d_v=3, d_out=2, seed=seed)
        m.set_weights(W_V=torch.randn(m.W_V.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
        r = jt.pl_ratio(m, X, Y)
        mu = jt.mu(m, X)
        assert mu > 0
        assert r["pl_ratio"] >= r["pl_ratio_W_V"] >= mu * (1 - 1e-10), (seed, r, mu)


@pytest.mark.parametrize("kernel", KERNELS)
def test_explicit_constants_bound_the_derivatives(kernel):
    """Sampled check of the lemma behind the joint theorem: L_B, M_B, beta and L are upper bounds."""
    seed = fresh_seed()
    m, X, Y = th.make_instance(kernel, N=2, n=3, D=16, d=3, d_out=2, y_scale=0.5, seed=seed)
    m.set_weights(W_V=0.5 * torch.randn(m.W_V.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
    r = 0.3
    k = jt.joint_constants(m, X, Y, r)
    theta0 = jt.snapshot(m)
    gen = torch.Generator().manual_seed(seed + 1)
    names = ("W_Q", "W_K", "W_V")

    def set_theta(theta):
        m.set_weights(**theta)

    def rand_dir():
        u = {p: torch.randn(theta0[p].shape, dtype=torch.float64, generator=gen) for p in names}
        nrm = math.sqrt(sum(float((v**2).sum()) for v in u.values()))
        return {p: v / nrm for p, v in u.items()}

    for _ in range(6):
        c = rand_dir()
        rho = r * float(torch.rand((), generator=gen, dtype=torch.float64)) * 0.9
        theta = {p: theta0[p] + rho * c[p] for p in names}
        u = rand_dir()
        eps = 1e-5
        set_theta({p: theta[p] + eps * u[p] for p in names})
        Bp, Rp = th.feature_matrix(m, X), th.residual(m, X, Y)
        set_theta({p: theta[p] - eps * u[p] for p in names})
        Bm, Rm = th.feature_matrix(m, X), th.residual(m, X, Y)
        set_theta(theta)
        B0, R0 = th.feature_matrix(m, X), th.residual(m, X, Y)
        uqk = math.sqrt(float((u["W_Q"] ** 2).sum() + (u["W_K"] ** 2).sum()))
        dB = float(((Bp - Bm) / (2 * eps)).norm())
        d2B = float(((Bp - 2 * B0 + Bm) / eps**2).norm())
        dR = float(((Rp - Rm) / (2 * eps)).norm())
        assert dB <= k.L_B * uqk * (1 + 1e-4) + 1e-7, (seed, dB, k.L_B)
        assert d2B <= k.M_B * uqk**2 * (1 + 1e-3) + 1e-3, (seed, d2B, k.M_B)
        assert dR <= k.beta * (1 + 1e-4) + 1e-7, (seed, dR, k.beta)
        # Hessian quadratic form by double backward
        Ws = [getattr(m, p) for p in names]
        loss = m.loss(X, Y)
        g = torch.autograd.grad(loss, Ws, create_graph=True)
        gu = sum((gi * u[p]).sum() for gi, p in zip(g, names))
        hu = torch.autograd.grad(gu, Ws)
        quad = float(sum((hi * u[p]).sum() for hi, p in zip(hu, names)))
        assert abs(quad) <= k.L * (1 + 1e-9), (seed, quad, k.L)
        assert float(R0.norm()) <= k.res


def test_sufficient_condition_implies_convergence():
    """Whenever the checked condition holds, GD with lr <= lr_max converges at the guaranteed rate,
    keeps lambda_min(B_t B_t^T) >= lambda_0/2 and stays in the ball of radius r."""
    held = 0
    for kernel, D, y in [("gaussian", 96, 0.002), ("gaussian", 64, 0.002), ("softmax", 96, 0.0005)]:
        seed = fresh_seed()
        m, X, Y = th.make_instance(kernel, N=2, n=3, D=D, y_scale=y, seed=seed)
        cond = jt.sufficient_condition(m, X, Y)
        if not cond.holds:
            continue
        held += 1
        start = jt.snapshot(m)
        steps = 40
        hist = tdlib.train(m, X, Y, lr=cond.lr_max, steps=steps, trainable=("W_Q", "W_K", "W_V"),
                           callback=lambda mm, t: {**jt.certificate_callback(X)(mm, t), "dist": jt.distance(mm, start)},
                           progress=False)
        f = np.array(hist.loss)      # (the run stops early if the loss reaches exactly 0)
        assert np.all(f <= cond.bound(len(f) - 1) * (1 + 1e-9)), (kernel, seed)
        assert min(hist.extra["lambda_min"]) >= cond.lambda0 / 2, (kernel, seed)
        assert max(hist.extra["dist"]) <= cond.r * (1 + 1e-12), (kernel, seed)
        assert f[-1] < 1e-3 * f[0]
    assert held >= 1, "the condition held on none of the drawn instances: the test checked nothing"


def test_condition_reports_why_it_fails():
    m, X, Y = th.make_instance("gaussian", N=2, n=3, D=4, seed=1)     # HD = 4 < Nn = 6
    cond = jt.sufficient_condition(m, X, Y)
    assert not cond.holds and any("HD = 4 < Nn = 6" in r for r in cond.reasons)
    m, X, Y = th.make_instance("softmax", N=2, n=3, D=48, y_scale=1.0, seed=1)
    cond = jt.sufficient_condition(m, X, Y)
    assert not cond.holds and "(C2)" in cond.summary() and math.isnan(cond.lr_max)
    def relu(Q, K):
        return torch.relu(Q @ K.transpose(-1, -2))

    m = tdlib.AttentionLayer(4, d=2, d_v=1, d_out=1, kernel=relu)
    with pytest.raises(ValueError, match="'softmax' and 'gaussian' kernels only"):
        jt.sufficient_condition(m, X[:, :, :4], Y)


def test_certificate_callback_is_aligned_with_the_history():
    m, X, Y = th.make_instance("softmax", D=12, seed=2)
    hist = tdlib.train(m, X, Y, lr=0.01, steps=6, callback=jt.certificate_callback(X, Y, every=2, pl=True),
                       progress=False)
    ex = hist.as_arrays()
    for key in ("lambda_min", "mu", "pl_ratio", "pl_ratio_W_V"):
        assert len(ex[key]) == len(hist.loss)
        assert np.isnan(ex[key][1::2]).all() and np.isfinite(ex[key][::2]).all()
    free = jt.pl_ratio_from_history(hist)
    assert np.allclose(free[::2], ex["pl_ratio"][::2], rtol=1e-10)
    assert (ex["pl_ratio"][::2] >= ex["mu"][::2]).all()


def test_bad_inputs_are_explained():
    m, X, Y = th.make_instance("gaussian", D=12)
    with pytest.raises(TypeError, match="tdlib.AttentionLayer"):
        th.feature_matrix("not a model", X)
    with pytest.raises(ValueError, match="Y: expected shape"):
        th.value_least_squares(m, X, Y[:1])
    with pytest.raises(ValueError, match="X: expected embedding dimension D=12"):
        th.feature_matrix(m, X[:, :, :5])
    with pytest.raises(ValueError, match=r"B: expected a 2-d array of shape \(Nn, HD\)"):
        th.lambda_min(torch.zeros(3))
    with pytest.raises(ValueError, match="Y: expected 6 rows"):
        th.projection_loss(th.feature_matrix(m, X), torch.zeros(5, 1))
    with pytest.raises(ValueError, match="pl=True needs the targets Y"):
        jt.certificate_callback(X, pl=True)


def test_residual_limit_separates_passing_and_failing_targets():
    seed = int(torch.randint(0, 10**6, ()))
    for kernel in ("gaussian", "softmax"):
        m, X, Y = th.make_instance(kernel, N=2, n=3, D=384, y_scale=1.0, seed=seed)
        lim = jt.residual_limit(m, X, Y)
        assert lim > 0, f"seed {seed}"
        for c, holds in ((0.98, True), (1.02, False)):
            cond = jt.sufficient_condition(m, X, Y * (c * lim / float(Y.norm())))
            assert cond.holds == holds, (kernel, seed, c)


def test_perturb_unties_and_derivative_ratios_stay_below_one():
    seed = fresh_seed()
    m, X, Y = th.make_instance("softmax", N=2, n=3, D=8, d=4, seed=seed)
    assert torch.equal(m.W_Q, m.W_K)
    jt.perturb(m, scale=0.3, seed=seed)
    assert not torch.equal(m.W_Q, m.W_K) and float(m.W_V.detach().abs().sum()) > 0
    before = jt.snapshot(m)
    worst = jt.derivative_bound_ratios(m, X, Y, r=0.3, samples=3, seed=seed)
    assert set(worst) == {"dB", "d2B", "dR", "hess"}
    assert all(0 < v <= 1.001 for v in worst.values()), (seed, worst)
    assert all(torch.equal(before[p], getattr(m, p).detach()) for p in before)  # restored
    with pytest.raises(ValueError, match="r"):
        jt.derivative_bound_ratios(m, X, Y, r=-1.0)
    with pytest.raises(ValueError, match="scale"):
        jt.perturb(m, scale=-1.0)


def test_certified_joint_run_keeps_the_guarantees():
    seeds = [fresh_seed() + k for k in range(10)]
    seed, m, X, Y, cond = jt.certified_instance("gaussian", 0.002, seeds, D=48)
    assert cond.holds and seed in seeds
    assert all(len(line) <= 88 for line in cond.summary().splitlines())
    run = jt.joint_run(m, X, Y, cond, steps=15)
    assert run.holds, (seed, str(run))
    assert run.guaranteed == pytest.approx(1 - cond.lr_max * cond.mu)
    assert run.measured <= run.guaranteed                   # the loss beats the guarantee
    assert all(len(line) <= 88 for line in str(run).splitlines())
    with pytest.raises(RuntimeError, match="failed on all 2"):
        jt.certified_instance("softmax", 10.0, [1, 2], D=8)
    bad = jt.sufficient_condition(*th.make_instance("softmax", D=8, y_scale=10.0)[:3])
    with pytest.raises(ValueError, match="cond"):
        jt.joint_run(m, X, Y, bad)
    import matplotlib.pyplot as plt
    plt.close(jt.plot_joint_runs([run]))


def test_condition_sweep_and_target_limits():
    cs = jt.condition_sweep([6, 96], seeds=[3, 4], y_scale=0.003)
    for k in KERNELS:
        assert cs.lam[k].shape == cs.holds[k].shape == (2, 2)
        assert not cs.holds[k][0].any()                   # D = Nn: lambda_0 is tiny
        assert np.all(cs.lam[k][1] > cs.lam[k][0])        # it grows with D
    half = jt.half_pass_dimension(cs)
    assert all(v in (None, 96) for v in half.values())
    assert half == {k: (96 if cs.holds[k][1].mean() >= 0.5 else None) for k in KERNELS}
    tau = jt.target_limits([24, 96], seeds=[3])
    for k in KERNELS:   # a draw passes at tau just below tau_max, and fails well above it
        m, X, Y = th.make_instance(k, N=2, n=3, D=96, seed=3)
        t = tau[k][1, 0]
        assert jt.sufficient_condition(m, X, 0.9 * t * Y).holds
        assert not jt.sufficient_condition(m, X, 1.5 * t * Y).holds
    with pytest.raises(ValueError, match="D_list"):
        jt.condition_sweep([], seeds=[1])
    with pytest.raises(ValueError, match="kernel"):
        jt.target_limits([24], seeds=[1], kernels=["cosine"])
    import matplotlib.pyplot as plt
    plt.close(jt.plot_condition_sweep(cs, Nn=6))
    plt.close(jt.plot_target_limits([24, 96], tau, tau=0.003))


def test_pl_runs_satisfy_the_lemma_along_the_way():
    runs = jt.pl_runs(seeds=(fresh_seed(),), D=24, steps=40)
    rows = jt.pl_summary(runs)
    assert [r["kernel"] for r in rows] == KERNELS
    for r in rows:
        assert r["ratio"] >= 1 - 1e-9                     # PL ratio >= mu_t at every iterate
        assert 0 < r["mu_drop"] <= 1 and 0 <= r["final"] < 1 and r["steps"] <= 40
    with pytest.raises(ValueError, match="step_factor"):
        jt.pl_runs(step_factor=0.0)
    import matplotlib.pyplot as plt
    fig = jt.plot_pl_runs(runs)
    assert len(fig.axes[1].lines) == 2 + 1
    plt.close(fig)
