"""What separates the kernels: explicit Gaussian bounds, the covering certificate, the Gaussian
layer theorem, the Softmax sublinear bounds and the tail-shape label of a run at a budget."""
import math

import numpy as np
import pytest
import torch

from tdlib import query, separation


def fresh_seed():
    return int(torch.randint(0, 2**31 - 1, ()))


def test_gaussian_bounds_hold_at_random_points():
    seed = fresh_seed()
    g = torch.Generator().manual_seed(seed)
    n, d, d_out = 3, 3, 2
    c = 2 * math.sqrt(d)
    K, U, y = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((n, d), (n, d_out), (d_out,)))
    b = separation.gaussian_bounds(U, y, c)
    a0 = lambda q: torch.exp(-((q - K[0]) ** 2).sum() / c)
    gq = lambda q: 0.5 * ((query.outputs(q[None], K, U, "gaussian")[0] - y) ** 2).sum()
    J = lambda q: query.jacobians(q[None], K, U, "gaussian")[0]
    for i in range(60):
        v = torch.randn(d, generator=g, dtype=torch.float64)
        q = K[0] + (math.sqrt(c / 2) * v / v.norm() if i % 3 == 0 else 1.5 * v)
        assert float(torch.autograd.functional.jacobian(a0, q).norm()) <= math.sqrt(2 / (c * math.e)) * (1 + 1e-12), seed
        assert float(torch.linalg.matrix_norm(torch.autograd.functional.hessian(a0, q), 2)) <= 2 / c * (1 + 1e-12)
        D_aq = torch.autograd.functional.jacobian(lambda q: a0(q) * (q - K[0]), q)
        assert float(torch.linalg.matrix_norm(D_aq, 2)) <= 1 + 1e-12, seed
        assert float(torch.linalg.matrix_norm(torch.autograd.functional.hessian(gq, q), 2)) <= b["L_g"], seed
        assert float(torch.linalg.matrix_norm(J(q), 2)) <= b["J_max"] * (1 + 1e-12), seed
        q2 = q + 0.3 * torch.randn(d, generator=g, dtype=torch.float64)
        assert float(torch.linalg.matrix_norm(J(q) - J(q2), 2)) <= b["L_J"] * float((q - q2).norm()) + 1e-15
    # bound 1 is attained on the sphere ||q - k|| = sqrt(c / 2): it cannot be improved
    q = K[0] + math.sqrt(c / 2) * torch.ones(d, dtype=torch.float64) / math.sqrt(d)
    assert math.isclose(float(torch.autograd.functional.jacobian(a0, q).norm()), math.sqrt(2 / (c * math.e)), rel_tol=1e-12)


def test_sublevel_certificate_is_sound_on_sampled_points():
    """No sampled point of the sublevel set has a Jacobian below the certified sigma."""
    seed = fresh_seed()
    g = torch.Generator().manual_seed(seed)
    K = torch.randn(2, 2, generator=g, dtype=torch.float64)
    U = torch.randn(2, 1, generator=g, dtype=torch.float64)
    q_star = torch.randn(2, generator=g, dtype=torch.float64)
    y = query.outputs(q_star[None], K, U, "gaussian")[0]
    beta = 0.01 * 0.5 * float(y @ y)
    cert = separation.sublevel_certificate(K, U, y, beta, 2 * math.sqrt(2))
    Q = (K.mean(0) + (cert["rho"] + 2) * (2 * torch.rand(200_000, 2, generator=g, dtype=torch.float64) - 1))
    Kb, Ub = K.expand(len(Q), *K.shape), U.expand(len(Q), *U.shape)
    gq = 0.5 * ((query.outputs(Q[:, None, :], Kb, Ub, "gaussian")[:, 0] - y) ** 2).sum(-1)
    inside = Q[gq <= beta]
    assert len(inside) > 0, seed
    # the sublevel set lies within rho of a key
    assert float(torch.cdist(inside, K).min(1).values.max()) <= cert["rho"] + 1e-12, seed
    if cert["ok"]:
        Ki, Ui = K.expand(len(inside), *K.shape), U.expand(len(inside), *U.shape)
        s = query.smallest_singular_values(query.jacobians(inside[:, None, :], Ki, Ui, "gaussian")[:, 0])
        assert float(s.min()) >= cert["sigma"], seed


def test_certificate_fails_exactly_when_a_critical_point_is_in_the_set():
    """On the two-key instance the Gaussian output has one critical point (a maximum on the key
    line); the certificate succeeds below its loss and fails above it."""
    ray = separation.SoftmaxRay()
    c = 2 * math.sqrt(2)
    # locate the maximum of o along the key line by Newton's method on the first coordinate
    o = lambda x: query.outputs(torch.stack([x, torch.zeros_like(x)])[None],
                                ray.K, ray.U, "gaussian")[0, 0]
    x = torch.tensor(0.1, dtype=torch.float64)
    for _ in range(30):
        x = x - torch.func.grad(o)(x) / torch.func.grad(torch.func.grad(o))(x)
    crit = 0.5 * (float(o(x)) - float(ray.y[0])) ** 2
    assert separation.sublevel_certificate(ray.K, ray.U, ray.y, 0.9 * crit, c)["ok"]
    assert not separation.sublevel_certificate(ray.K, ray.U, ray.y, 1.1 * crit, c,
                                               max_boxes=50_000)["ok"]


def certified_instance(seed):
    for s in range(seed, seed + 30):
        p, W_star, _ = query.make_problem(N=2, n=2, D=6, d=2, d_out=1, seed=s)
        Z = torch.randn(W_star.shape, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
        for eps in (0.2, 0.1, 0.05):
            W0 = W_star + eps * float(W_star.norm()) / float(Z.norm()) * Z
            cert = separation.layer_certificate(p, W0, max_boxes=40_000)
            if cert["ok"]:
                return p, W0, cert
    raise AssertionError(f"no certified instance among seeds {seed}..{seed + 29}")


def test_layer_certificate_verdict_agrees_with_gradient_descent():
    seed = fresh_seed() % 10**6
    p, W0, cert = certified_instance(seed)
    assert cert["f0"] < cert["beta_inf"] and 0 < cert["mu"] <= cert["L"]
    hist, _ = query.run(p, W0, lr=cert["eta"], steps=400)
    bound = cert["f0"] * cert["rate"] ** np.arange(len(hist.loss))
    assert np.all(np.asarray(hist.loss) <= bound * (1 + 1e-9)), seed
    assert min(hist.extra["pl_ratio"]) >= cert["mu"] * (1 - 1e-9), seed
    assert min(hist.extra["sigma_J"]) >= cert["sigma_J"] * (1 - 1e-9), seed


def test_layer_certificate_says_why_it_fails():
    p, W_star, W0 = query.make_problem(N=2, n=2, D=6, d=2, d_out=1, init_scale=3.0, seed=1)
    far = W0 * 20
    cert = separation.layer_certificate(p, far)
    assert not cert["ok"] and "below" in cert["reason"]
    p2, W2, _ = query.make_problem(N=2, n=3, D=4, d=2, d_out=1, seed=1)
    assert "full row rank" in separation.layer_certificate(p2, W2)["reason"]
    with pytest.raises(ValueError, match="problem.kernel: expected 'gaussian'"):
        separation.layer_certificate(p.with_kernel("softmax"), W_star)
    with pytest.raises(ValueError, match="beta: expected a level below"):
        separation.sublevel_certificate(p.K[0], p.U[0], p.Y[0, 0], 10.0, 2.0)


def test_softmax_gap_obeys_both_bounds_and_decays_like_one_over_t():
    g = np.random.default_rng(fresh_seed())
    ray = separation.SoftmaxRay(u2=float(g.uniform(0, 0.8)), delta=float(g.uniform(0.05, 0.5)))
    q0 = torch.tensor([-abs(g.normal()) * 0.5, g.normal()])
    for eta in (1 / ray.L(), 0.3 / ray.L()):
        f, gn, qT = separation.gd_path(lambda q: (ray.loss(q), ray.grad(q)), q0, eta, 1500)
        gap = f - ray.floor
        b = ray.bounds(q0, eta, np.arange(len(f)))
        assert np.all(gap > 0) and np.all(np.diff(gap) < 0)
        assert np.all(gap >= b["lower"]) and np.all(gap <= b["upper"])
        # t * gap levels off (a 1/t law), the gradient vanishes and the query escapes
        tg = np.arange(len(f)) * gap
        assert 0.8 < tg[1500] / tg[750] < 1.2
        assert gn[-1] < 1e-2 * gn[0] and float(qT.norm()) > float(q0.norm())
        # no PL inequality relative to the floor
        assert gn[-1] ** 2 / (2 * gap[-1]) < 0.1 * gn[10] ** 2 / (2 * gap[10])


def test_softmax_has_no_minimiser_on_bounded_sets():
    ray = separation.SoftmaxRay()
    g = torch.Generator().manual_seed(fresh_seed())
    for R in (1.0, 10.0):
        Q = R * (2 * torch.rand(2000, 2, generator=g, dtype=torch.float64) - 1)
        gaps = torch.tensor([ray.loss(q) for q in Q]) - ray.floor
        w = float(ray.w.norm())
        # gap >= delta du s(theta) with theta <= ||w|| ||q|| <= ||w|| sqrt(2) R
        assert float(gaps.min()) >= ray.delta * ray.du / (1 + math.exp(w * math.sqrt(2) * R)) * (1 - 1e-9)


def test_gaussian_plateau_gradient_bound():
    g = torch.Generator().manual_seed(fresh_seed())
    K, U = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(3, 2, generator=g, dtype=torch.float64)
    y = torch.randn(2, generator=g, dtype=torch.float64)
    c = 4.0
    b = separation.gaussian_bounds(U, y, c)
    for rho in (1.5, 2.5, 4.0):
        v = torch.randn(500, 4, generator=g, dtype=torch.float64)
        Q = K[0] + v / v.norm(dim=1, keepdim=True) * (rho + 3 * torch.rand(500, 1, generator=g, dtype=torch.float64)
                                                     + float((K - K[0]).norm(dim=1).max()))
        assert float(torch.cdist(Q, K).min()) >= rho
        Kb, Ub = K.expand(len(Q), *K.shape), U.expand(len(Q), *U.shape)
        r = query.outputs(Q[:, None, :], Kb, Ub, "gaussian")[:, 0] - y
        grad = torch.einsum("boe,bo->be", query.jacobians(Q[:, None, :], Kb, Ub, "gaussian")[:, 0], r)
        G = 2 / c * b["S_u"] * b["r_max"] * rho * math.exp(-rho**2 / c)
        assert float(grad.norm(dim=1).max()) <= G


MODELS = {
    "geometric": (lambda t: 0.999**t, "linear"),
    "fast, then slow": (lambda t: np.exp(-t / 20) + 1e-3 * 0.9995**t, "linear"),
    "1/t": (lambda t: 1 / (1 + t), "power law"),
    "1/t^2": (lambda t: 1 / (1 + t) ** 2, "power law"),
    "floor + 1/t": (lambda t: 0.3 + 1 / (1 + t), "stalling"),
    "floor + geometric": (lambda t: 0.3 + 0.99**t, "stalling"),
    "plateau": (lambda t: 0.5 + 0 * t, "stalling"),
    "zero": (lambda t: 0.9**t, "converged"),
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("T", [800, 1600, 3200])
def test_classifier_labels_model_curves_at_every_budget(name, T):
    curve, label = MODELS[name]
    assert separation.classify_curve(curve(np.arange(T + 1.0)), f_ref=1.0) == label


@pytest.mark.parametrize("T", [600, 1200, 2400])
def test_classifier_labels_the_two_kernels_on_the_two_key_instance(T):
    """Softmax (target outside the hull) is stalling and its gap follows a power law; the
    Gaussian kernel, certified below its critical level, converges, at every budget."""
    g = np.random.default_rng(fresh_seed())
    ray = separation.SoftmaxRay(delta=float(g.uniform(0.1, 0.3)))
    q0 = torch.tensor([-0.1 * abs(g.normal()), 0.6 + 0.1 * g.normal()])
    f, _, _ = separation.gd_path(lambda q: (ray.loss(q), ray.grad(q)), q0, 1 / ray.L(), T)
    assert separation.classify_curve(f) == "stalling"
    assert separation.classify_curve(f - ray.floor) == "power law"
    c = 2 * math.sqrt(2)
    cert = separation.sublevel_certificate(ray.K, ray.U, ray.y, ray.loss(q0, "gaussian"), c)
    assert cert["ok"]
    fg, _, _ = separation.gd_path(lambda q: (ray.loss(q, "gaussian"), ray.grad(q, "gaussian")),
                                  q0, 1 / cert["L_g"], T)
    assert separation.classify_curve(fg) == "converged"


def test_classifier_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 9"):
        separation.classify_curve([1.0, 0.5])
    with pytest.raises(ValueError, match="f_half: expected a non-negative"):
        separation.classify(1.0, -1.0, 0.5, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="losses: expected positive"):
        separation.classify(1.0, 0.0, 0.5, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="pl_half: expected a non-negative"):
        separation.classify(1.0, 0.9, 0.5, 1.0, -1.0, 1.0)
    with pytest.raises(ValueError, match="u1 > u2"):
        separation.SoftmaxRay(u1=0.0, u2=1.0)
