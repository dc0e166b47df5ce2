"""The dynamics of in-context regression (chapter *In-context regression*, section on the
dynamics): the merged landscape, the isotropic drop solved exactly, the saddles of separate keys
and queries, the measured plateaus, and the exercises' self-checks. Everything is float64 and
every instance is drawn at random from a seeded generator."""
import contextlib
import io
import math

import numpy as np
import pytest
import torch

from tdlib import icl, selfcheck


def _spd(g, m):
    C = torch.randn(m, m, generator=g, dtype=torch.float64)
    return C @ C.T + 0.3 * torch.eye(m, dtype=torch.float64)


def _diag(g, m):
    return torch.diag(0.2 + 2 * torch.rand(m, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("seed", range(4))
def test_merged_gradients_hessian_and_conservation(seed):
    g = torch.Generator().manual_seed(seed)
    m, n = 2 + seed % 3, 4 + 5 * seed
    cov = _spd(g, m)
    risk = lambda th: icl.population_risk(th[0] * th[1:].reshape(m, m), cov, n)  # noqa: E731
    th = torch.randn(1 + m * m, generator=g, dtype=torch.float64).requires_grad_(True)
    (gr,) = torch.autograd.grad(risk(th), th)
    v, W = th.detach()[0], th.detach()[1:].reshape(m, m)
    M = (v * W).requires_grad_(True)
    (gM,) = torch.autograd.grad(icl.population_risk(M, cov, n), M)
    assert torch.allclose(gr[0], (gM * W).sum(), rtol=1e-12, atol=1e-12)
    assert torch.allclose(gr[1:].reshape(m, m), v * gM, rtol=1e-12, atol=1e-12)
    # d/dt (v^2 - |W|^2) along -grad is -2 (v dv - <W, dW>) = 0
    assert abs(float(v * gr[0] - (W.reshape(-1) * gr[1:]).sum())) < 1e-10 * (1 + float(gr.norm()))
    eig = torch.linalg.eigvalsh(torch.autograd.functional.hessian(risk, torch.zeros_like(th)))
    omega = icl.saddle_rate(cov, n)
    assert omega == pytest.approx((n - 1) / n * float(torch.linalg.matrix_norm(cov @ cov)))
    assert float(eig[-1]) == pytest.approx(omega, rel=1e-10)
    assert float(eig[0]) == pytest.approx(-omega, rel=1e-10)
    assert int((eig.abs() < 1e-12).sum()) == m * m - 1


def test_merged_stationary_points_are_only_the_two_kinds():
    g = torch.Generator().manual_seed(5)
    m, n = 3, 7
    cov = _spd(g, m)
    W_star = icl.optimum(cov, n)

    def grad(v, W):
        th = torch.cat([torch.tensor([v], dtype=torch.float64), W.reshape(-1)])
        th.requires_grad_(True)
        R = icl.population_risk(th[0] * th[1:].reshape(m, m), cov, n)
        return torch.autograd.grad(R, th)[0]

    assert float(grad(2.5, W_star / 2.5).abs().max()) < 1e-12          # v W = W*
    E = torch.randn(m, m, generator=g, dtype=torch.float64)
    S2 = cov @ cov
    E = E - (E * S2).sum() / (S2 * S2).sum() * S2                       # <Sigma^2, E> = 0
    assert float(grad(0.0, E).abs().max()) < 1e-12
    assert float(grad(0.0, S2).abs().max()) > 1e-3                     # v = 0 but not orthogonal
    # a restricted minimiser of the separate parameterisation is not stationary here
    lam = _diag(g, m)
    W_I, _ = icl.restricted_optimum(lam, n, [0])
    th = torch.cat([torch.ones(1, dtype=torch.float64), W_I.reshape(-1)]).requires_grad_(True)
    R = icl.population_risk(th[0] * th[1:].reshape(m, m), lam, n)
    assert float(torch.autograd.grad(R, th)[0].abs().max()) > 1e-3


@pytest.mark.parametrize("m,n,eps,eta_omega", [(1, 2, 1e-2, 0.5), (3, 10, 1e-3, 0.1),
                                               (5, 40, 3e-5, 0.3), (2, 6, 0.2, 0.05)])
def test_isotropic_reduction_and_drop_bounds(m, n, eps, eta_omega):
    omega, rho_s = math.sqrt(m) * (n - 1) / n, n / (n + m)
    eta, steps = eta_omega / omega, 3000
    cov = torch.eye(m, dtype=torch.float64)
    run = icl.gd_merged(cov, n, eps=eps, eta=eta, steps=steps, direction=cov)
    rho = [eps ** 2 / math.sqrt(m)]
    for _ in range(steps):
        rho.append(rho[-1] * (1 + eta * omega * (1 - rho[-1] / rho_s)) ** 2)
    rho = np.array(rho)
    assert np.abs(run["diag"] - rho[:, None]).max() < 1e-12
    R_pred = m * (m + 1) / (2 * (n + m)) + m * (n - 1) * (n + m) / (2 * n ** 2) * (rho - rho_s) ** 2
    assert np.abs(run["risk"] - R_pred).max() < 1e-12
    assert np.all(np.diff(run["risk"]) <= 1e-14 * m) and np.all(np.diff(rho) >= 0)
    assert np.all(rho <= rho_s * (1 + 1e-15))
    assert np.abs(run["imbalance"]).max() < 1e-12      # v = |W|_F exactly along this start
    lo, hi = icl.drop_step_bounds(m, n, eps, eta)
    t_drop = icl.drop_step(run["risk"], cov, n)
    assert lo <= t_drop <= hi and np.all(np.diff(rho[:t_drop + 1]) > 0)
    R_star = float(icl.population_risk(icl.optimum(cov, n), cov, n))
    assert run["risk"][t_drop] <= 0.5 * (m / 2 + R_star) < run["risk"][t_drop - 1]


@pytest.mark.parametrize("m,n", [(1, 3), (3, 10), (4, 50)])
def test_flow_drop_time_against_a_fine_integration(m, n):
    """The closed-form flow time against RK4 on the logistic law, and gradient descent with a
    tiny step against the flow; the log(1/eps) asymptotics with its constant."""
    omega, rho_s = math.sqrt(m) * (n - 1) / n, n / (n + m)
    for eps in (1e-2, 1e-4):
        rho, t, dt = eps ** 2 / math.sqrt(m), 0.0, 1e-3
        f = lambda r: 2 * omega * r * (1 - r / rho_s)  # noqa: E731
        rho_h = (1 - 2 ** -0.5) * rho_s
        while rho < rho_h:
            k1 = f(rho); k2 = f(rho + dt / 2 * k1); k3 = f(rho + dt / 2 * k2)  # noqa: E702
            k4 = f(rho + dt * k3)
            prev, rho, t = rho, rho + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4), t + dt
        t_cross = t - dt * (rho - rho_h) / (rho - prev)
        assert icl.drop_time_flow(m, n, eps) == pytest.approx(t_cross, abs=2e-4)
        const = math.log(math.sqrt(m) * rho_s / (1 + math.sqrt(2))) / (2 * omega)
        assert icl.drop_time_flow(m, n, eps) == pytest.approx(
            math.log(1 / eps) / omega + const, abs=eps)
    eta = 1e-3 / omega
    cov = torch.eye(m, dtype=torch.float64)
    run = icl.gd_merged(cov, n, eps=1e-2, eta=eta, steps=20_000, direction=cov)
    assert eta * icl.drop_step(run["risk"], cov, n) == pytest.approx(
        icl.drop_time_flow(m, n, 1e-2), rel=2e-3)


@pytest.mark.parametrize("seed", range(5))
def test_restricted_minimum_and_saddles(seed):
    g = torch.Generator().manual_seed(100 + seed)
    m, n, H = 4, int(torch.randint(2, 30, (), generator=g)), 5
    cov = _diag(g, m)
    k = int(torch.randint(0, m, (), generator=g))
    I = sorted(torch.randperm(m, generator=g)[:k].tolist())
    W_I, R_I = icl.restricted_optimum(cov, n, I)
    # least squares over the entries in I x I, built from the risk itself (a quadratic)
    mask = torch.zeros(m, m, dtype=torch.float64)
    mask[np.ix_(I, I)] = 1.0
    Rm = lambda x: icl.population_risk(mask * x.reshape(m, m), cov, n)  # noqa: E731
    x0 = torch.zeros(m * m, dtype=torch.float64)
    keep = mask.reshape(-1) > 0
    if keep.any():
        Hs = torch.autograd.functional.hessian(Rm, x0)
        gr = torch.autograd.functional.jacobian(Rm, x0)
        x0[keep] = torch.linalg.solve(Hs[keep][:, keep], -gr[keep])
    assert float(Rm(x0)) == pytest.approx(R_I, rel=1e-12)
    assert torch.allclose(x0.reshape(m, m), W_I, atol=1e-12)
    # every other matrix supported on I x I does worse
    for _ in range(20):
        E = mask * torch.randn(m, m, generator=g, dtype=torch.float64)
        assert float(icl.population_risk(W_I + 1e-3 * E, cov, n)) >= R_I - 1e-15
    # theta_I is stationary, and a free head escapes along a missing direction
    v = torch.zeros(H, dtype=torch.float64)
    Q, K = torch.zeros(H, m, dtype=torch.float64), torch.zeros(H, m, dtype=torch.float64)
    for h, i in enumerate(I):
        gam = float(W_I[i, i]) ** (1 / 3)
        v[h], Q[h, i], K[h, i] = gam, gam, gam
    risk = lambda v, Q, K: icl.population_risk(Q.T @ (v[:, None] * K), cov, n)  # noqa: E731
    ps = [p.clone().requires_grad_(True) for p in (v, Q, K)]
    grads = torch.autograd.grad(risk(*ps), ps)
    assert max(float(t.abs().max()) for t in grads) < 1e-12
    assert float(risk(v, Q, K)) == pytest.approx(R_I, rel=1e-12)
    for j in (j for j in range(m) if j not in I):
        v2, Q2, K2 = v.clone(), Q.clone(), K.clone()
        v2[len(I)], Q2[len(I), j], K2[len(I), j] = 0.05, 0.05, 0.05
        assert float(risk(v2, Q2, K2)) < R_I


def test_levels_are_ordered_and_end_at_the_minimum():
    g = torch.Generator().manual_seed(7)
    cov, n = _diag(g, 5), 9
    levels = icl.plateau_levels(cov, n)
    assert levels[0] == pytest.approx(0.5 * float(torch.trace(cov)))
    assert levels[-1] == pytest.approx(float(icl.population_risk(icl.optimum(cov, n), cov, n)),
                                       rel=1e-12)
    assert all(a > b for a, b in zip(levels, levels[1:]))
    # isotropic: the book's R* = m(m+1) / (2(n+m))
    assert icl.plateau_levels(torch.eye(3), 7)[-1] == pytest.approx(3 * 4 / (2 * 10))


def test_one_step_of_each_run_is_one_autograd_step():
    g = torch.Generator().manual_seed(11)
    m, n, H, eta = 3, 6, 4, 0.05
    cov = _spd(g, m)
    U = torch.randn(m, m, generator=g, dtype=torch.float64)
    run = icl.gd_merged(cov, n, eps=0.3, eta=eta, steps=1, direction=U)
    th = torch.cat([torch.tensor([0.3], dtype=torch.float64), 0.3 * U.reshape(-1) / U.norm()])
    th.requires_grad_(True)
    (gr,) = torch.autograd.grad(icl.population_risk(th[0] * th[1:].reshape(m, m), cov, n), th)
    th1 = th.detach() - eta * gr
    assert run["v"] == pytest.approx(float(th1[0]), abs=1e-14)
    assert np.allclose(run["W_QK"], th1[1:].reshape(m, m).numpy(), atol=1e-14)
    diag = _diag(g, m)
    init = [torch.randn(*s, generator=g, dtype=torch.float64) for s in ((H,), (H, m), (H, m))]
    run = icl.gd_separate(diag, n, H=H, eps=1.0, eta=eta, steps=1, init=init)
    ps = [p.clone().requires_grad_(True) for p in init]
    R = icl.population_risk(ps[1].T @ (ps[0][:, None] * ps[2]), diag, n)
    grads = torch.autograd.grad(R, ps)
    for name, p, gp in zip(("v", "Q", "K"), init, grads):
        assert np.allclose(run[name], (p - eta * gp).numpy(), atol=1e-14), name
    assert run["risk"][0] == pytest.approx(float(R.detach()), rel=1e-13)


@pytest.mark.parametrize("seed", [0, 3])
def test_separate_run_rests_on_every_level_in_order(seed):
    cov, n = torch.diag(torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)), 10
    run = icl.gd_separate(cov, n, H=3, eps=0.01, eta=0.2, steps=30_000, seed=seed)
    learned = icl.learning_steps(run["diag"], cov, n)
    assert list(np.argsort(learned)) == [0, 1, 2] and np.all(learned > 0)
    measured = icl.measured_plateaus(run["risk"], sorted(learned))
    for got, want in zip(measured, icl.plateau_levels(cov, n)):
        assert got == pytest.approx(want, rel=1e-3)
    merged = icl.gd_merged(cov, n, eps=0.01, eta=0.02, steps=3000, seed=seed)
    assert merged["risk"][-1] == pytest.approx(icl.plateau_levels(cov, n)[-1], rel=1e-9)


def test_plateau_measurement_on_a_made_up_curve():
    k = np.arange(1, 3001)
    step = lambda x: 0.5 * (1 + np.tanh(x / 2))  # noqa: E731  (a logistic step, no overflow)
    R = 1 + 2 * step(-(k - 100) / 3.0) - 0.5 * step((k - 1000) / 10.0)
    got = icl.measured_plateaus(R, [100, 1000])
    assert got == pytest.approx([3.0, 1.0, 0.5], abs=1e-3)
    D = np.zeros((10, 2))
    D[4:, 1] = 1.0
    assert list(icl.learning_steps(D, torch.eye(2), 5)) == [-1, 4]


def test_bad_input_is_refused_with_a_message():
    cov = torch.eye(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="diagonal"):
        icl.restricted_optimum([[1.0, 0.2], [0.2, 1.0]], 5, [0])
    with pytest.raises(ValueError, match="S_dirs"):
        icl.restricted_optimum(cov, 5, [2])
    with pytest.raises(ValueError, match="eps"):
        icl.gd_merged(cov, 5, eps=0.0, eta=0.1, steps=3)
    with pytest.raises(ValueError, match="eta"):
        icl.gd_separate(cov, 5, H=2, eps=0.1, eta=math.nan, steps=3)
    with pytest.raises(ValueError, match="direction"):
        icl.gd_merged(cov, 5, eps=0.1, eta=0.1, steps=3, direction=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="init"):
        icl.gd_separate(cov, 5, H=2, eps=0.1, eta=0.1, steps=3, init=(1, 2, 3))
    with pytest.raises(ValueError, match="eta omega"):
        icl.drop_step_bounds(2, 5, 1e-3, 10.0)
    with pytest.raises(ValueError, match="past the drop"):
        icl.drop_time_flow(2, 5, 1.0)
    with pytest.raises(FloatingPointError, match="diverged"):
        icl.gd_merged(cov, 5, eps=0.5, eta=50.0, steps=200)
    with pytest.raises(ValueError, match="coincide"):
        icl.measured_plateaus(np.ones(10), [3, 3])


def _accepts(check, answer):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = check(answer)
    assert result is None and out.getvalue() == selfcheck.SUCCESS + "\n"


def test_self_checks_accept_right_answers_and_reject_wrong_ones():
    assert selfcheck.EXERCISES["ex-icl-balance"] is selfcheck.icl_balance
    assert selfcheck.EXERCISES["ex-icl-head-time"] is selfcheck.icl_head_time
    _accepts(selfcheck.icl_balance, lambda v, Q, K: torch.cat(
        [v ** 2 - (Q ** 2).sum(1), v ** 2 - (K ** 2).sum(1)]))
    # another right answer: the difference of the two, and their sum
    _accepts(selfcheck.icl_balance, lambda v, Q, K: torch.cat(
        [(K ** 2).sum(1) - (Q ** 2).sum(1), 2 * v ** 2 - (Q ** 2).sum(1) - (K ** 2).sum(1)]))
    for wrong in (lambda v, Q, K: torch.cat([v ** 2, (K ** 2).sum(1)]),
                  lambda v, Q, K: torch.cat([v ** 2 - (Q ** 2).sum(1)] * 2),
                  lambda v, Q, K: v, lambda v, Q, K: "abc"):
        with pytest.raises(selfcheck.Wrong):
            selfcheck.icl_balance(wrong)
    _accepts(selfcheck.icl_head_time, lambda eps, lam, n: n / ((n - 1) * lam[0] ** 2 * eps))
    for wrong in (lambda eps, lam, n: 1 / (lam[0] * eps),
                  lambda eps, lam, n: math.log(1 / eps) / lam[0] ** 2,
                  lambda eps, lam, n: math.nan, None):
        with pytest.raises(selfcheck.Wrong):
            selfcheck.icl_head_time(wrong)


def test_fresh_prompt_sgd_follows_the_exact_gradient():
    """SGD on fresh prompts starts where GD starts, and a large batch drops at nearly the same
    step; a batch of one prompt is noisier but still a descent on average."""
    cov, n = torch.diag(torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)), 10
    gd = icl.gd_merged(cov, n, eps=0.01, eta=0.02, steps=300, seed=2)
    sgd = icl.sgd_merged(cov, n, eps=0.01, eta=0.02, steps=300, batch=512, seed=2)
    assert sgd["risk"][0] == gd["risk"][0]
    d_gd, d_sgd = icl.drop_step(gd["risk"], cov, n), icl.drop_step(sgd["risk"], cov, n)
    assert d_gd > 0 and abs(d_sgd - d_gd) <= 0.1 * d_gd
    assert sgd["risk"][-1] < 0.6 * sgd["risk"][0]
    with pytest.raises(ValueError, match="batch"):
        icl.sgd_merged(cov, n, eps=0.01, eta=0.02, steps=3, batch=0)
