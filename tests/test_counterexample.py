"""The Softmax local-minimum counterexample: certificates computed independently, and the search."""
import math

import numpy as np
import pytest
import torch

import tdlib
from tdlib import counterexample as ce


def fd_grad_hess(f, x, h=1e-4):
    """Central finite differences of a scalar function of a float64 vector: gradient and Hessian."""
    x = np.asarray(x, dtype=np.float64)
    m = len(x)
    E = np.eye(m) * h
    grad = np.array([(f(x + E[i]) - f(x - E[i])) / (2 * h) for i in range(m)])
    hess = np.array([[(f(x + E[i] + E[j]) - f(x + E[i] - E[j]) - f(x - E[i] + E[j]) + f(x - E[i] - E[j])) / (4 * h * h)
                      for j in range(m)] for i in range(m)])
    return grad, hess


def test_instance_numbers_and_layer_agree_with_closed_form():
    P = ce.instance()
    assert P.keys.flatten().tolist() == [-1.0, 0.0, 1.0]
    assert P.values.tolist() == [[-3.0, 8.0], [-2.0, 0.0], [-1.0, 8.0]]
    # the target is the Softmax output at s = -3, computed by hand
    p = np.exp([3.0, 0.0, -3.0]); p /= p.sum()
    assert np.allclose(P.target.numpy(), p @ P.values.numpy(), rtol=0, atol=1e-14)
    # the real layer's loss is the sum of per-query losses, at a fresh random W_Q
    W = torch.randn(3, 1, dtype=torch.float64) * 3
    model, X, Y = ce.layer(P, W_Q=W)
    cf = ce.closed_form(P, W.flatten().numpy())
    assert abs(float(model.loss(X, Y).detach()) - cf["g"].sum()) < 1e-12


def test_chapter_instance_certified_by_independent_derivatives():
    """Newton refinement via autograd; gradient and Hessian re-derived by closed form and by finite
    differences of the plain loss, on the real layer."""
    P = ce.instance()
    model, X, Y = ce.layer(P, W_Q=[[2.0]] * 3)
    f = ce.layer_loss_fn(model, X, Y)
    cert = ce.certify(f, [2.0, 2.0, 2.0], zero_point=[-3.0] * 3)
    assert cert.is_instance, cert.report()
    x = cert.point
    # closed form (d = 1 moments) at the refined point
    cf = ce.closed_form(P, x)
    assert np.abs(cf["g1"]).max() < 1e-10
    assert (cf["g2"] > 0.1).all()
    # finite differences of the layer loss evaluated through AttentionLayer.forward
    def layer_loss(w):
        model.set_weights(W_Q=torch.tensor(w).reshape(3, 1))
        return float(model.loss(X, Y).detach())
    g_fd, H_fd = fd_grad_hess(layer_loss, x)
    assert np.abs(g_fd).max() < 1e-7
    eig_fd = np.linalg.eigvalsh(0.5 * (H_fd + H_fd.T))
    assert np.allclose(np.sort(eig_fd), np.sort(cert.eigenvalues), atol=1e-5)
    assert np.allclose(np.sort(cf["g2"]), np.sort(cert.eigenvalues), atol=1e-12)
    assert (eig_fd > 0).all()
    # positive loss at the local minimum, zero at (-3, -3, -3), and a barrier between them
    assert cert.loss > 1.0 and layer_loss(np.array([-3.0] * 3)) < 1e-28
    assert abs(cert.loss - 3 * cf["g"][0]) < 1e-12
    assert cert.barrier > 1.0
    # GD started in the basin stays there (the trainer on the real layer)
    model.set_weights(W_Q=torch.tensor(x + np.array([0.8, -0.5, 1.5])).reshape(3, 1))
    hist = tdlib.train(model, X, Y, lr=0.2, steps=400, trainable=["W_Q"], progress=False)
    assert np.abs(model.W_Q.detach().flatten().numpy() - x).max() < 1e-4
    assert hist.final_loss > 1.0


def test_proof_ingredients_hold():
    P = ce.instance()
    ends = ce.closed_form(P, [2.3, 2.4])
    assert ends["g1"][0] < 0 < ends["g1"][1]
    s = np.linspace(-25, 25, 20001)
    assert (ce.closed_form(P, s)["o1"][:, 0] > 0).all()   # o_1 strictly increasing: injective curve


def test_closed_form_matches_autograd_on_random_problems():
    g = torch.Generator().manual_seed(int(torch.randint(0, 10**6, ())))
    for _ in range(3):
        P = ce.PerQueryProblem(torch.randn(4, 1, generator=g), 2 * torch.randn(4, 3, generator=g),
                            torch.randn(3, generator=g))
        s = 3 * torch.randn(7, generator=g, dtype=torch.float64)
        cf = ce.closed_form(P, s.numpy())
        assert np.abs(cf["o"] - P.output(s).numpy()).max() < 1e-12
        assert np.abs(cf["g1"] - P.grad(s)[:, 0].numpy()).max() < 1e-10
        hess = np.array([float(P.hessian(s[i:i + 1])[0, 0]) for i in range(7)])
        assert np.abs(cf["g2"] - hess).max() < 1e-10


def test_search_finds_and_certifies_an_instance():
    found = ce.search(n=3, d=1, d_out=2, trials=10, seed=0)
    cert = found.certificate
    assert cert is not None and cert.is_instance, str(found)
    assert cert.grad_norm < 1e-10 and (cert.eigenvalues > 0).all() and cert.loss > 1e-6
    # independent check: the point is a strict local min of the problem's loss on a small window
    P, x = found.problem, float(cert.point[0])
    window = ce.closed_form(P, x + np.linspace(-1e-2, 1e-2, 201))["g"]
    assert window.argmin() == 100 and (np.delete(window, 100) > window[100]).all()
    assert float(P.loss(torch.tensor(found.q_star))) < 1e-20
    assert "CERTIFIED" in str(found)


def test_certify_rejects_a_global_minimum_with_a_clear_report():
    P = ce.instance()
    cert = ce.certify(lambda x: P.loss(x), [-2.8], zero_point=[-3.0])
    assert not cert.is_instance
    assert abs(cert.point[0] + 3.0) < 1e-8 and cert.loss < 1e-20
    assert any("global minimum" in r for r in cert.reasons)
    assert "NOT an instance" in cert.report()


def test_certify_rejects_a_saddle_or_maximum():
    P = ce.instance()
    cf = ce.closed_form(P, np.linspace(-3, 2.3, 5001))
    s_b = float(np.linspace(-3, 2.3, 5001)[cf["g"].argmax()])
    cert = ce.certify(lambda x: P.loss(x), [s_b], zero_point=[-3.0])
    assert not cert.is_instance
    assert any("eigenvalue" in r for r in cert.reasons)


def test_gaussian_side_by_side():
    """d = 2: from the same start, Softmax stays at positive loss and the Gaussian reaches zero."""
    start = [[math.sqrt(2), 1.0]]
    ends = {}
    for kernel in ("softmax", "gaussian"):
        P = ce.instance(kernel, d=2)
        q, _ = ce.run_gd(P, start, lr=0.05, steps=1000)
        ends[kernel] = float(P.loss(q))
    assert ends["softmax"] > 1.0 and ends["gaussian"] < 1e-20


def test_basins_and_inputs_are_checked():
    P = ce.instance()
    lab = ce.basins(P, [[-1.0], [0.0], [0.5], [4.0]], minima=[[-3.0], [2.329057]], lr=0.2, steps=800, radius=1e-2)
    assert lab.tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="values: expected one row per key"):
        ce.PerQueryProblem([[0.0], [1.0]], [[1.0, 2.0]], [0.0, 0.0])
    with pytest.raises(ValueError, match="kernel: expected one of"):
        ce.PerQueryProblem([[0.0]], [[1.0]], [0.0], kernel="linear")
    with pytest.raises(ValueError, match="problem: expected a Softmax problem with d = 1"):
        ce.closed_form(ce.instance("softmax", d=2), [0.0])
    with pytest.raises(ValueError, match="q: expected at least one query, of shape"):
        ce.instance(d=2).output(torch.zeros(3))


def test_draw_renders():
    # its speed is measured by benchmarks/run.py, not asserted here
    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    fig = ce.draw(init=-0.5, target_query=-2.0)
    fig.canvas.draw()
    assert fig.axes
    plt.close("all")


def test_closed_form_gradient_matches_autograd():
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
    for kernel in ("softmax", "gaussian"):
        for d in (1, 2, 3):
            K, V = torch.randn(4, d, generator=gen), torch.randn(4, 2, generator=gen)
            P = ce.PerQueryProblem(K, V, torch.randn(2, generator=gen), kernel)
            q = 2 * torch.randn(7, d, generator=gen, dtype=torch.float64)
            closed = P.grad_closed_form(q)
            assert torch.allclose(P.grad(q), closed, rtol=1e-10, atol=1e-13)


def test_barrier_is_refined_to_a_stationary_point_of_the_segment():
    P = ce.instance()
    cert = ce.certify(lambda x: P.loss(x), [2.0], zero_point=[-3.0], segment_points=51)
    s_b = float(cert.barrier_point[0])
    cf = ce.closed_form(P, [s_b, float(cert.point[0])])
    assert abs(cf["g1"][0]) < 1e-12 and cf["g2"][0] < 0          # a local maximum of g
    assert abs(cert.barrier - (cf["g"][0] - cf["g"][1])) < 1e-12
    grid = ce.certify(lambda x: P.loss(x), [2.0], zero_point=[-3.0],
                      segment_points=2001)
    assert abs(grid.barrier - cert.barrier) < 1e-12     # independent of the grid


def test_layouts_in_the_plane():
    line, lifted, rh = (ce.instance("softmax", d=2, layout=k)
                        for k in ("line", "lifted", "rhombus"))
    assert torch.allclose(line.target, ce.instance().target, atol=1e-14)
    assert torch.allclose(lifted.target, ce.instance().target, atol=1e-14)
    K = rh.keys.numpy()
    for i, j, k in [(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)]:   # no three collinear
        assert abs(np.linalg.det(np.c_[K[[i, j, k]], np.ones(3)])) > 0.5
    zero = [-3 * math.sqrt(2), 0.0]
    cert = ce.certify(lambda x: rh.loss(x), [3.7, 0.05], zero_point=zero)
    assert cert.is_instance and cert.loss > 1
    gauss = rh.with_kernel("gaussian")
    q, _ = ce.run_gd(gauss, [[math.sqrt(2), 1.0]], lr=0.05, steps=1500)
    assert float(gauss.loss(q)) < 1e-20
    with pytest.raises(ValueError, match="layout"):
        ce.instance("softmax", d=1, layout="rhombus")
    with pytest.raises(ValueError, match="layout"):
        ce.instance("softmax", d=2, layout="square")


def test_saturation_bound_holds_and_is_tight_in_its_factor():
    g = torch.Generator().manual_seed(11)
    keys = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]
    P = ce.PerQueryProblem(keys, 3 * torch.randn(4, 2, generator=g), 3 * torch.randn(2, generator=g))
    u = torch.tensor([1.0, 0.3], dtype=torch.float64)  # key 1 wins by a score gap of 0.7 / sqrt 2
    bounds = []
    for r in (1.0, 10.0, 30.0):
        q = r * u
        bound = ce.saturation_bound(P, q)
        assert float(P.grad(q).norm()) <= bound * (1 + 1e-12)
        J = ce.softmax_jacobian(P.weights(q))
        assert torch.linalg.eigvalsh(J).min() > -1e-15 and J.sum(1).abs().max() < 1e-15
        bounds.append(bound)
    assert bounds[-1] < 1e-3 * bounds[0], "saturation drives the bound to zero"
    with pytest.raises(ValueError, match="Softmax"):
        ce.saturation_bound(P.with_kernel("gaussian"), u)
    with pytest.raises(ValueError, match="one query"):
        ce.saturation_bound(P, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="probability vector"):
        ce.softmax_jacobian([0.5, 0.6])


def test_basin_shares_follow_the_basin_boundary():
    P = ce.instance()
    from tdlib import intervals

    lo, hi = intervals.sign_certificate([-1, 0, 1], P.values.numpy(), -3.0).maxima()[0]
    s_b = 0.5 * (lo + hi)  # the proved local maximum of g: the boundary of the good basin
    sh = ce.basin_shares(P, s_b, [0.25, 4.0], runs=50, steps=300)
    assert sh.good.shape == sh.zero.shape == sh.zero_layer.shape == (2,)
    assert np.allclose(sh.predicted, [0.5 * (1 + math.erf(s_b / s / math.sqrt(2)))
                                      for s in (0.25, 4.0)])
    assert np.allclose(sh.predicted_layer, sh.predicted ** 3)
    # a layer reaches zero only when all its queries do; a query only from the good basin
    assert (sh.zero_layer <= sh.zero + 1e-12).all() and (sh.zero <= sh.good + 1e-12).all()
    assert abs(sh.good - sh.predicted).max() < 0.12  # 150 queries per scale
    assert max(len(line) for line in str(sh).splitlines()) <= ce.REPORT_WIDTH
    for bad in ([], [0.0, 1.0], [[1.0]]):
        with pytest.raises(ValueError, match="sigmas"):
            ce.basin_shares(P, s_b, bad)
    with pytest.raises(ValueError, match="d = 1"):
        ce.basin_shares(ce.instance(d=2), s_b, [1.0])


def test_certificate_reports_fit_the_column():
    P = ce.instance()
    yes = ce.certify(lambda x: P.loss(x), [2.0], zero_point=[ce.ZERO_LOSS_QUERY])
    no = ce.certify(lambda x: P.loss(x), [-2.9], zero_point=[ce.ZERO_LOSS_QUERY])
    assert yes.is_instance and not no.is_instance
    for cert in (yes, no):
        assert max(len(line) for line in str(cert).splitlines()) <= ce.REPORT_WIDTH
    assert "CERTIFIED" in str(yes) and "NOT an instance" in str(no)
    assert " ".join(no.reasons[0].split()) in " ".join(str(no).split())
