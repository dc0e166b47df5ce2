"""In-context regression, the optimum (tdlib.icl): the layer realises the prediction (ICL), the
moments and the closed-form risk against Monte Carlo, the gradient against autograd, the optimum
and its minimum, one preconditioned least-squares step, gradient descent against its bound, the
exercises' self-checks and the errors of bad input. Fresh seeds every run (printed on failure)."""
import math

import pytest
import torch

import tdlib
from tdlib import icl, selfcheck
from tdlib.selfcheck import Wrong

torch.set_num_threads(1)
SEED = int(torch.randint(0, 2**31 - 1, ()))
F64 = torch.float64


def gen(offset=0):
    return torch.Generator().manual_seed(SEED + offset)


def rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=F64)


# ------------------------------------------------------------------ the layer and (ICL)

@pytest.mark.parametrize("m, n, d, d_v", [(1, 2, 1, 1), (3, 5, 2, 4), (4, 7, 6, 2)])
def test_block_layer_predicts_icl(m, n, d, d_v):
    """prop-icl-layer: the book's layer with block weights gives (ICL) with the stated W_QK."""
    g = gen(m)
    U_Q, U_K, v, o = rand(g, m, d), rand(g, m, d), rand(g, d_v), rand(g, d_v, 1)
    z = lambda *s: torch.zeros(*s, dtype=F64)  # noqa: E731
    model = tdlib.AttentionLayer(D=m + 1, d=d, d_v=d_v, d_out=1, kernel="linear-n")
    model.set_weights(W_Q=torch.cat([U_Q, z(1, d)]), W_K=torch.cat([U_K, z(1, d)]),
                      W_V=torch.cat([z(m, d_v), v[None]]), W_O=o)
    W_QK = float(v @ o) * U_Q @ U_K.T / math.sqrt(d)
    P = icl.prompts(40, n, m, cov=icl.random_covariance(m, seed=SEED % 1000), seed=SEED % 997)
    with torch.no_grad():
        out = model(icl.tokens(P))[:, -1, 0]
    assert torch.allclose(out, icl.predict(W_QK, P), rtol=1e-12, atol=1e-13), SEED
    assert torch.allclose(icl.merged_key_query(model), W_QK, rtol=1e-13, atol=1e-14)


def test_layer_realises_any_W_QK_and_is_read_back():
    m, n = 4, 6
    W = rand(gen(1), m, m)
    model = icl.linear_layer(W)
    P = icl.prompts(30, n, m, seed=SEED % 1000)
    with torch.no_grad():
        out = model(icl.tokens(P))[:, -1, 0]
    assert torch.allclose(out, icl.predict(W, P), rtol=1e-12, atol=1e-13)
    assert torch.allclose(icl.merged_key_query(model), W, rtol=1e-14, atol=1e-14)


def test_merged_key_query_refuses_other_layers():
    m = 3
    model = icl.linear_layer(torch.eye(m, dtype=F64))
    with torch.no_grad():
        model.W_V[0, 0, 0] = 1.0          # the value now reads a covariate
    with pytest.raises(ValueError, match="W_V"):
        icl.merged_key_query(model)
    with pytest.raises(ValueError, match="linear-n"):
        icl.merged_key_query(tdlib.AttentionLayer(D=m + 1, d_out=1, kernel="softmax"))
    with pytest.raises(TypeError, match="AttentionLayer"):
        icl.merged_key_query(torch.eye(3))


# ------------------------------------------------------------------ moments and the risk

def _z(samples, want):
    """z-scores of the sample mean of ``samples`` (first axis) against ``want``."""
    N = samples.shape[0]
    return (samples.mean(0) - want) / (samples.std(0) / math.sqrt(N))


def test_fourth_moment_and_second_moment_of_S_hat_monte_carlo():
    """lem-icl-moments, (1) and (2), within 5 standard errors on fresh draws."""
    m, n, N = 3, 5, 200_000
    S = icl.random_covariance(m, seed=SEED % 1000)
    P = icl.prompts(N, n, m, cov=S, seed=SEED % 991)
    x = P["x"][:, 0]
    quartic = (x * x).sum(1)[:, None, None] * x[:, :, None] * x[:, None, :]
    assert _z(quartic, 2 * S @ S + torch.trace(S) * S).abs().max() < 5, SEED
    ex = P["x"][:, :-1]
    S_hat = torch.einsum("ija,ijb->iab", ex, ex) / n
    B, A = icl.moments(S, n)
    assert _z(S_hat, B).abs().max() < 5, SEED
    assert _z(S_hat @ S_hat, A).abs().max() < 5, SEED


@pytest.mark.parametrize("where", ["optimum", "random", "zero"])
def test_population_risk_against_monte_carlo(where):
    """prop-icl-risk: (eq-icl-risk) against the mean squared error of fresh prompts."""
    m, n, N = 3, 6, 200_000
    S = icl.random_covariance(m, seed=SEED % 1000)
    W = {"optimum": icl.optimum(S, n), "random": rand(gen(2), m, m) / math.sqrt(m),
         "zero": torch.zeros(m, m, dtype=F64)}[where]
    P = icl.prompts(N, n, m, cov=S, seed=SEED % 983)
    sq = 0.5 * (icl.predict(W, P) - P["y"][:, -1]) ** 2
    z = (float(sq.mean()) - float(icl.population_risk(W, S, n))) / (float(sq.std()) / N**0.5)
    assert abs(z) < 5, (SEED, z)


def test_gradient_against_autograd_and_zero_at_optimum():
    g = gen(3)
    for m, n in ((1, 2), (3, 4), (5, 11)):
        S = icl.random_covariance(m, seed=(SEED + m) % 1000)
        W = rand(g, m, m).requires_grad_(True)
        (auto,) = torch.autograd.grad(icl.population_risk(W, S, n), W)
        assert torch.allclose(auto, icl.risk_gradient(W.detach(), S, n), rtol=1e-12,
                              atol=1e-13)
        W_star = icl.optimum(S, n)
        W0 = W_star.clone().requires_grad_(True)
        (at_opt,) = torch.autograd.grad(icl.population_risk(W0, S, n), W0)
        assert float(at_opt.abs().max()) < 1e-12
        assert float(icl.risk_gradient(W_star, S, n).abs().max()) < 1e-12


def test_optimum_is_the_minimum_and_matches_the_formulas():
    """thm-icl-optimum (2), (3) and cor-icl-isotropic."""
    g = gen(4)
    for m, n in ((2, 2), (4, 9), (6, 3)):
        S = icl.random_covariance(m, seed=(SEED + 7 * m) % 1000)
        W_star = icl.optimum(S, n)
        alt = torch.linalg.inv(S + torch.trace(S) / n * torch.eye(m, dtype=F64))
        assert torch.allclose(W_star, alt, rtol=1e-12)
        R_star = float(icl.population_risk(W_star, S, n))
        assert abs(R_star - float(icl.minimum_risk(S, n))) < 1e-12
        lam = torch.linalg.eigvalsh(S)
        t = float(lam.sum())
        drop = float((0.5 * (n - 1) * lam**2 / (n * lam + t)).sum())
        assert abs(R_star - (0.5 * t - drop)) < 1e-12
        for _ in range(50):
            E = rand(g, m, m)
            assert float(icl.population_risk(W_star + E, S, n)) > R_star
        assert float(icl.hessian_eigenvalues(S, n)[0]) > 0
    for m, n in ((1, 2), (3, 10), (8, 5)):
        I = torch.eye(m, dtype=F64)
        assert torch.allclose(icl.optimum(I, n), n / (n + m) * I, rtol=1e-14)
        assert abs(float(icl.minimum_risk(I, n)) - m * (m + 1) / (2 * (n + m))) < 1e-13


def test_hessian_eigenvalues_against_the_explicit_matrix():
    """The Hessian of the risk, built column by column by autograd, has the stated spectrum."""
    m, n = 3, 5
    S = icl.random_covariance(m, seed=SEED % 1000)
    H = torch.autograd.functional.hessian(
        lambda w: icl.population_risk(w.reshape(m, m), S, n), torch.zeros(m * m, dtype=F64))
    assert torch.allclose(torch.linalg.eigvalsh(H), icl.hessian_eigenvalues(S, n),
                          rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ one GD step

def test_prediction_at_optimum_is_one_preconditioned_step():
    """cor-icl-gd-step, with the least-squares gradient from autograd and from the library."""
    m, n, N = 4, 9, 300
    S = icl.random_covariance(m, seed=SEED % 1000)
    P = icl.prompts(N, n, m, cov=S, seed=SEED % 977)
    W_star = icl.optimum(S, n)
    w1 = icl.preconditioned_step(P, W_star)
    step = torch.einsum("im,im->i", P["x"][:, -1], w1)
    assert torch.allclose(step, icl.predict(W_star, P), rtol=1e-12, atol=1e-13)
    omega = torch.zeros(N, m, dtype=F64, requires_grad=True)
    x, y = P["x"][:, :-1], P["y"][:, :-1]
    L = 0.5 * ((y - torch.einsum("ijm,im->ij", x, omega)) ** 2).sum() / n
    (grad,) = torch.autograd.grad(L, omega)
    assert torch.allclose(-grad @ W_star.T, w1, rtol=1e-12, atol=1e-13)
    # from another start, the step is w - W grad L(w)
    w0 = rand(gen(5), m)
    omega = w0.expand(N, m).clone().requires_grad_(True)
    L = 0.5 * ((y - torch.einsum("ijm,im->ij", x, omega)) ** 2).sum() / n
    (grad,) = torch.autograd.grad(L, omega)
    assert torch.allclose(icl.preconditioned_step(P, W_star, w0), w0 - grad @ W_star.T,
                          rtol=1e-12, atol=1e-13)
    # isotropic: plain GD with step size n / (n + m)
    I = torch.eye(m, dtype=F64)
    Pi = icl.prompts(N, n, m, seed=SEED % 971)
    h = torch.einsum("inm,in->im", Pi["x"][:, :-1], Pi["y"][:, :-1]) / n
    assert torch.allclose(icl.preconditioned_step(Pi, icl.optimum(I, n)), n / (n + m) * h,
                          rtol=1e-13, atol=1e-14)


# ------------------------------------------------------------------ gradient descent

def test_population_gd_within_its_bound_and_at_its_rate():
    """prop-icl-gd (1): the gap stays below rho^(2t) times the start and ends at that rate."""
    m, n = 4, 8
    S = icl.random_covariance(m, seed=SEED % 1000)
    kappa = icl.hessian_eigenvalues(S, n)
    rho = 1 - float(kappa[0] / kappa[-1])
    T = math.ceil(math.log(1e-9) / math.log(rho**2))
    run = icl.population_gd(S, n, lr=1 / float(kappa[-1]), steps=T)
    gap = run["gap"]
    steps = torch.arange(T + 1, dtype=F64)
    assert bool((gap <= gap[0] * rho ** (2 * steps) * (1 + 1e-9) + 1e-15).all())
    assert bool((run["distance"] <= run["distance"][0] * rho**steps * (1 + 1e-9)).all())
    k = T // 4
    rate = float((gap[-1] / gap[-1 - k]) ** (1 / k))
    assert rate <= rho**2 + 1e-9 and rate > rho**2 - 0.05, (SEED, rate, rho**2)
    # a random start, and the closed-form risk of the iterates
    W0 = rand(gen(6), m, m)
    run = icl.population_gd(S, n, lr=0.5 / float(kappa[-1]), steps=5, W0=W0)
    assert abs(float(run["risk"][0]) - float(icl.population_risk(W0, S, n))) < 1e-12
    gap = run["risk"] - icl.minimum_risk(S, n)
    assert torch.allclose(run["gap"], gap, rtol=1e-9, atol=1e-12)
    assert float(run["risk"][-1]) < float(run["risk"][0])


def test_training_gd_reaches_the_empirical_minimiser():
    """prop-icl-gd (2), and the training loss and its minimiser against autograd."""
    m, n, N = 3, 6, 200
    P = icl.prompts(N, n, m, cov=icl.random_covariance(m, seed=SEED % 1000), seed=SEED % 967)
    W_N = icl.empirical_minimiser(P)
    W = W_N.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(icl.training_loss(W, P), W)
    assert float(g.abs().max()) < 1e-9 * N
    kap = icl.training_hessian_eigenvalues(P)
    H = torch.autograd.functional.hessian(
        lambda w: icl.training_loss(w.reshape(m, m), P), torch.zeros(m * m, dtype=F64))
    assert torch.allclose(torch.linalg.eigvalsh(H), kap, rtol=1e-9, atol=1e-9)
    rho = 1 - float(kap[0] / kap[-1])
    T = math.ceil(math.log(1e-8) / math.log(rho))
    run = icl.training_gd(P, lr=1 / float(kap[-1]), steps=T)
    d = run["distance"]
    assert bool((d <= d[0] * rho ** torch.arange(T + 1, dtype=F64) * (1 + 1e-6)
                 + 1e-12).all())
    assert abs(float(run["loss"][-1]) - float(icl.training_loss(W_N, P))) < 1e-10 * N


def test_empirical_minimiser_approaches_the_optimum():
    """The excess risk of W_N at N = 8000 is below its value at N = 50 (mean of 3 seeds)."""
    m, n = 2, 6
    S = icl.random_covariance(m, seed=SEED % 1000)
    R_star = float(icl.minimum_risk(S, n))

    def excess(N):
        return sum(float(icl.population_risk(icl.empirical_minimiser(
            icl.prompts(N, n, m, cov=S, seed=(SEED + s) % 10**6)), S, n)) - R_star
            for s in range(3)) / 3

    small, large = excess(50), excess(8000)
    assert 0 < large < small, (SEED, small, large)


# ------------------------------------------------------------------ bad input

def test_bad_input_is_refused_with_a_clear_error():
    S = torch.eye(2, dtype=F64)
    P = icl.prompts(10, 4, 2, seed=0)
    with pytest.raises(ValueError, match="W_QK"):
        icl.risk_gradient(torch.eye(3), S, 4)
    with pytest.raises(ValueError, match="W_QK: expected finite"):
        icl.risk_gradient(torch.full((2, 2), math.nan), S, 4)
    with pytest.raises(TypeError, match="W_QK"):
        icl.risk_gradient("eye", S, 4)
    with pytest.raises(ValueError, match="positive definite"):
        icl.minimum_risk(-S, 4)
    with pytest.raises(ValueError, match="n must be"):
        icl.minimum_risk(S, 1)
    with pytest.raises(ValueError, match="W_QK"):
        icl.linear_layer(torch.ones(2, 3))
    with pytest.raises(ValueError, match="W_QK: expected a square"):
        icl.linear_layer("eye")
    with pytest.raises(ValueError, match="w: expected finite numbers of shape"):
        icl.preconditioned_step(P, torch.eye(2), torch.zeros(3))
    with pytest.raises(ValueError, match="precond"):
        icl.preconditioned_step(P, torch.eye(3))
    with pytest.raises(TypeError, match="P: expected the dict"):
        icl.training_loss(torch.eye(2), [1, 2])
    with pytest.raises(ValueError, match="P: expected x of shape"):
        icl.training_loss(torch.eye(2), {"x": torch.zeros(3, 2), "y": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"N >= 4"):
        icl.empirical_minimiser(icl.prompts(3, 4, 2, seed=0))
    with pytest.raises(ValueError, match="lr: expected a step size below"):
        icl.population_gd(S, 4, lr=10.0, steps=3)
    for lr in (0.0, -1.0, math.nan, math.inf, True, "0.1", None):
        with pytest.raises((ValueError, TypeError), match="lr"):
            icl.population_gd(S, 4, lr=lr, steps=3)
    with pytest.raises(ValueError, match="steps"):
        icl.training_gd(P, lr=1e-4, steps=-1)
    with pytest.raises(ValueError, match="W0"):
        icl.population_gd(S, 4, lr=0.1, steps=1, W0=torch.eye(3))
    with pytest.raises(ValueError, match="low, high"):
        icl.random_covariance(3, low=2.0, high=1.0)
    with pytest.raises(TypeError, match="m must be"):
        icl.random_covariance(2.5)


# ------------------------------------------------------------------ the exercises' self-checks

def _accepts(check, *answer):
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert check(*answer) is None
    assert out.getvalue() == selfcheck.SUCCESS + "\n"


def _noisy_opt(cov, n, s2):
    S = torch.as_tensor(cov, dtype=F64)
    return n * torch.linalg.inv(n * S + (torch.trace(S) + s2) * torch.eye(len(S), dtype=F64))


def _noisy_min(cov, n, s2):
    lam = torch.linalg.eigvalsh(torch.as_tensor(cov, dtype=F64))
    r = lam.sum() + s2
    return 0.5 * s2 + 0.5 * float((lam * (lam + r) / (n * lam + r)).sum())


def test_noisy_labels_formula_against_monte_carlo():
    """The answer of ex-icl-noisy is right: with label noise, the Monte-Carlo risk at the
    stated minimiser matches the stated minimum, and the minimiser's Monte-Carlo gradient
    (the mean of the per-prompt gradients) is zero within 5 standard errors."""
    m, n, N, s2 = 3, 5, 200_000, 0.7
    S = icl.random_covariance(m, seed=SEED % 1000)
    P = icl.prompts(N, n, m, cov=S, seed=SEED % 953)
    g = gen(8)
    y = P["y"] + math.sqrt(s2) * torch.randn(P["y"].shape, generator=g, dtype=F64)
    W = _noisy_opt(S, n, s2)
    h = torch.einsum("inm,in->im", P["x"][:, :-1], y[:, :-1]) / n
    r = torch.einsum("im,mk,ik->i", P["x"][:, -1], W, h) - y[:, -1]
    sq = 0.5 * r**2
    z = (float(sq.mean()) - _noisy_min(S, n, s2)) / (float(sq.std()) / N**0.5)
    assert abs(z) < 5, (SEED, z)
    grads = r[:, None, None] * P["x"][:, -1][:, :, None] * h[:, None, :]   # d/dW of 1/2 r^2
    assert _z(grads, torch.zeros(m, m, dtype=F64)).abs().max() < 5, SEED


def test_selfchecks_accept_right_and_reject_wrong_answers():
    _accepts(selfcheck.icl_noisy, _noisy_opt, _noisy_min)
    with pytest.raises(Wrong, match="not the minimiser"):
        selfcheck.icl_noisy(lambda c, n, s2: icl.optimum(c, n), _noisy_min)
    with pytest.raises(Wrong, match="noisy_minimum"):
        selfcheck.icl_noisy(_noisy_opt, lambda c, n, s2: _noisy_min(c, n, s2) - 0.5 * s2)
    with pytest.raises(Wrong, match="shape"):
        selfcheck.icl_noisy(lambda c, n, s2: torch.eye(5), _noisy_min)
    with pytest.raises(Wrong, match="ZeroDivisionError"):
        selfcheck.icl_noisy(lambda c, n, s2: 1 / 0, _noisy_min)
    _accepts(selfcheck.icl_step, lambda m, n: 2 * n**2 / ((n - 1) * (n + m)))
    with pytest.raises(Wrong, match="too small"):      # forgets the factor n / (n - 1)
        selfcheck.icl_step(lambda m, n: 2 * n / (n + m))
    with pytest.raises(Wrong, match="too large"):
        selfcheck.icl_step(lambda m, n: 4 * n**2 / ((n - 1) * (n + m)))
    with pytest.raises(Wrong, match="expected a finite number"):
        selfcheck.icl_step(lambda m, n: None)
    assert selfcheck.EXERCISES["ex-icl-noisy"] is selfcheck.icl_noisy
    assert selfcheck.EXERCISES["ex-icl-step"] is selfcheck.icl_step
    right = lambda c: float(2 * torch.trace(c @ c) + torch.trace(c) ** 2)  # noqa: E731
    _accepts(selfcheck.icl_quartic, right)
    with pytest.raises(Wrong, match="too small"):
        selfcheck.icl_quartic(lambda c: float(torch.trace(c) ** 2))
    with pytest.raises(Wrong, match="mean_norm4: expected a function"):
        selfcheck.icl_quartic(3.0)
    assert selfcheck.EXERCISES["ex-icl-quartic"] is selfcheck.icl_quartic


def test_mean_norm4_against_monte_carlo():
    """The answer of ex-icl-quartic: E |x|^4 = 2 tr(Sigma^2) + (tr Sigma)^2 within 5 standard
    errors on fresh draws."""
    m, N = 4, 400_000
    S = icl.random_covariance(m, seed=SEED % 1000)
    x = icl.prompts(N, 2, m, cov=S, seed=SEED % 941)["x"][:, 0]
    q = (x * x).sum(1) ** 2
    want = 2 * float(torch.trace(S @ S)) + float(torch.trace(S)) ** 2
    assert abs(float(q.mean()) - want) < 5 * float(q.std()) / N**0.5, SEED
