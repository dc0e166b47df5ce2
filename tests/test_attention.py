"""The kernels and the one-layer model: values, gradients, symmetries, errors."""
import math

import numpy as np
import pytest
import torch

import tdlib
from tdlib.attention import PARAMS

KERNELS = ["softmax", "gaussian"]


def small_problem(kernel, seed=0, **kw):
    X, Y = tdlib.random_data(N=3, n=4, D=6, d_out=2, x_scale=2.0, seed=seed)
    model = tdlib.AttentionLayer(D=6, H=2, d=3, d_v=5, d_out=2, kernel=kernel, seed=seed + 1, **kw)
    return model, X, Y


@pytest.mark.parametrize("kernel", KERNELS)
def test_gradients_match_finite_differences(kernel):
    """Autograd gradients of every parameter agree with central differences (float64)."""
    model, X, Y = small_problem(kernel, seed=int(torch.randint(0, 10_000, ())))
    loss = model.loss(X, Y)
    grads = torch.autograd.grad(loss, [getattr(model, p) for p in PARAMS])
    eps = 1e-6
    gen = torch.Generator().manual_seed(5)
    for p, g in zip(PARAMS, grads):
        W = getattr(model, p)
        for _ in range(6):  # random entries of each parameter
            idx = tuple(int(torch.randint(0, s, (), generator=gen)) for s in W.shape)
            with torch.no_grad():
                old = W[idx].item()
                W[idx] = old + eps
                fp = float(model.loss(X, Y))
                W[idx] = old - eps
                fm = float(model.loss(X, Y))
                W[idx] = old
            fd = (fp - fm) / (2 * eps)
            assert abs(fd - g[idx].item()) <= 1e-6 * max(1.0, abs(fd)), (p, idx, fd, g[idx].item())


def test_gradients_pass_torch_gradcheck():
    """A second, independent check through torch.autograd.gradcheck on the Gaussian layer."""
    model, X, Y = small_problem("gaussian")

    def f(W_Q, W_K, W_V, W_O):
        with torch.no_grad():
            model.set_weights(W_Q=W_Q.detach(), W_K=W_K.detach(), W_V=W_V.detach(), W_O=W_O.detach())
        Q = torch.einsum("Nnd,hde->Nhne", X, W_Q)
        K = torch.einsum("Nnd,hde->Nhne", X, W_K)
        S = model.kernel(Q, K)
        V = torch.einsum("Nnd,hdv->Nhnv", X, W_V)
        return torch.einsum("Nhij,Nhjv,hvo->Nio", S, V, W_O)

    inputs = [getattr(model, p).detach().clone().requires_grad_(True) for p in PARAMS]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7)


def test_softmax_rows_sum_to_one():
    model, X, _ = small_problem("softmax", seed=3)
    S = model.scores(X)
    assert S.shape == (3, 2, 4, 4)
    assert torch.allclose(S.sum(-1), torch.ones(3, 2, 4, dtype=S.dtype), atol=1e-14)
    assert bool((S > 0).all())


def test_gaussian_entries_in_unit_interval_and_diagonal_one():
    model, X, _ = small_problem("gaussian", seed=4)
    S = model.scores(X)
    assert bool((S > 0).all()) and bool((S <= 1).all())
    model.set_weights(W_K=model.W_Q.detach().clone())
    S = model.scores(X)
    diag = torch.diagonal(S, dim1=-2, dim2=-1)
    assert torch.allclose(diag, torch.ones_like(diag), atol=1e-14)
    # off the diagonal, entries are strictly below one for distinct tokens
    off = S - torch.diag_embed(diag)
    assert float(off.detach().max()) < 1


def test_gaussian_is_rescaled_softmax_numerator():
    g = torch.Generator().manual_seed(11)
    Q, K = torch.randn(2, 6, 4, generator=g, dtype=torch.float64)
    d, c = 4, 2 * math.sqrt(4)
    E = torch.exp(Q @ K.T / math.sqrt(d))
    expected = torch.exp(-(Q**2).sum(1) / c)[:, None] * E * torch.exp(-(K**2).sum(1) / c)[None, :]
    assert torch.allclose(tdlib.make_kernel("gaussian")(Q, K), expected, rtol=1e-12)


def test_gaussian_constant_is_configurable():
    g = torch.Generator().manual_seed(2)
    Q, K = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    S = tdlib.make_kernel("gaussian", c=0.7)(Q, K)
    expected = torch.exp(-torch.cdist(Q, K) ** 2 / 0.7)
    assert torch.allclose(S, expected, rtol=1e-10)
    with pytest.raises(ValueError, match="positive"):
        tdlib.make_kernel("gaussian", c=-1.0)


@pytest.mark.parametrize("kernel", KERNELS)
def test_permutation_equivariance(kernel):
    """Permuting the tokens of a sample permutes the rows of its output."""
    model, X, _ = small_problem(kernel, seed=7)
    perm = torch.randperm(X.shape[1], generator=torch.Generator().manual_seed(1))
    out = model(X)
    out_perm = model(X[:, perm])
    assert torch.allclose(out_perm, out[:, perm], atol=1e-12)


def test_heads_add_up():
    """A two-head layer equals the sum of its two one-head layers."""
    model, X, _ = small_problem("gaussian", seed=8)
    total = 0
    for h in range(2):
        single = tdlib.AttentionLayer(D=6, H=1, d=3, d_v=5, d_out=2, kernel="gaussian")
        single.set_weights(**{p: getattr(model, p)[h].detach() for p in PARAMS})
        total = total + single(X)
    assert torch.allclose(model(X), total, atol=1e-12)


def test_adding_a_kernel_takes_a_few_lines():
    tdlib.register_kernel("relu_test", lambda Q, K: torch.relu(Q @ K.transpose(-1, -2)) / Q.shape[-2])
    model, X, Y = small_problem("relu_test", seed=9)
    assert model.kernel_name == "relu_test"
    hist = tdlib.train(model, X, Y, lr=0.01, steps=50, trainable=["W_V"], progress=False)
    assert hist.final_loss < hist.loss[0]
    del tdlib.KERNELS["relu_test"]


def test_kernel_factory_with_options():
    @tdlib.register_kernel("scaled_dot_test")
    def factory(tau=1.0):
        return lambda Q, K: torch.softmax(Q @ K.transpose(-1, -2) / tau, dim=-1)

    k = tdlib.make_kernel("scaled_dot_test", tau=0.5)
    Q = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(k(Q, Q), torch.softmax(2 * Q, dim=-1))
    del tdlib.KERNELS["scaled_dot_test"]


def test_unknown_kernel_lists_known_ones():
    with pytest.raises(ValueError) as err:
        tdlib.AttentionLayer(D=4, kernel="cosinus")
    msg = str(err.value)
    assert "cosinus" in msg and "softmax" in msg and "gaussian" in msg


def test_initializations():
    m = tdlib.AttentionLayer(D=5, H=3, d=5, d_v=5, d_out=5, init="identity", scale=2.0)
    assert torch.equal(m.W_Q[1], 2.0 * torch.eye(5, dtype=torch.float64))
    m = tdlib.AttentionLayer(D=5, H=3, d=4, init={"W_V": "zeros"}, seed=3)
    assert float(m.W_V.abs().max()) == 0.0 and float(m.W_Q.abs().max()) > 0
    # each parameter's draw does not depend on the other parameters' init choices
    a = tdlib.AttentionLayer(D=5, H=3, d=4, seed=3)
    assert torch.equal(a.W_Q, m.W_Q)
    # scale: the empirical std is close to scale / sqrt(D)
    big = tdlib.AttentionLayer(D=400, d=400, scale=0.5, seed=1)
    assert abs(float(big.W_Q.std()) - 0.5 / 20) < 0.01 * 0.5 / 20 * 10
    with pytest.raises(ValueError, match="square"):
        tdlib.AttentionLayer(D=5, d=3, init="identity")
    with pytest.raises(ValueError, match="expected one of"):
        tdlib.AttentionLayer(D=5, init="uniform")


def test_float32_and_seeds():
    m32 = tdlib.AttentionLayer(D=4, dtype=torch.float32, seed=1)
    X = tdlib.random_inputs(2, 3, 4, dtype=torch.float32)
    assert m32(X).dtype == torch.float32
    a, b = tdlib.AttentionLayer(D=4, seed=1), tdlib.AttentionLayer(D=4, seed=1)
    c = tdlib.AttentionLayer(D=4, seed=2)
    assert torch.equal(a.W_Q, b.W_Q) and not torch.equal(a.W_Q, c.W_Q)
    with pytest.raises(TypeError, match="float32 or torch.float64"):
        tdlib.AttentionLayer(D=4, dtype=torch.int64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_runs_on_gpu():  # pragma: no cover - CPU-only CI
    m = tdlib.AttentionLayer(D=4, device="cuda")
    assert m(torch.zeros(1, 2, 4)).device.type == "cuda"


class TestBadInput:
    model = tdlib.AttentionLayer(D=4, d_out=2)
    X, Y = tdlib.random_data(2, 3, 4, d_out=2)

    def test_wrong_rank(self):
        with pytest.raises(ValueError, match=r"expected a 3-d array of shape \(N, n, D\), got shape \(3, 4\)"):
            self.model(self.X[0])

    def test_wrong_D(self):
        with pytest.raises(ValueError, match="D=4"):
            self.model(torch.zeros(2, 3, 5))

    def test_mismatched_Y(self):
        with pytest.raises(ValueError, match=r"Y: expected shape .* \(2, 3, 2\)"):
            self.model.loss(self.X, self.Y[:, :2])
        with pytest.raises(ValueError, match="Y: expected shape"):
            self.model.loss(self.X, self.Y[:1])

    def test_nan_and_inf(self):
        X = self.X.clone()
        X[1, 2, 3] = float("nan")
        with pytest.raises(ValueError, match=r"NaN/Inf .*\(1, 2, 3\)"):
            self.model(X)
        Y = self.Y.clone()
        Y[0, 0, 0] = float("inf")
        with pytest.raises(ValueError, match="Y: expected finite"):
            self.model.loss(self.X, Y)

    def test_set_weights_shape(self):
        with pytest.raises(ValueError, match=r"W_Q: expected shape \(1, 4, 4\), got \(1, 4, 3\)"):
            self.model.set_weights(W_Q=torch.zeros(4, 3))
        with pytest.raises(ValueError, match="expected one of"):
            self.model.set_weights(W_X=torch.zeros(4, 4))

    def test_numpy_and_lists_are_accepted(self):
        out = self.model(np.asarray(self.X))
        assert out.shape == (2, 3, 2)

    def test_bad_dimensions(self):
        with pytest.raises(ValueError, match="D: expected an integer >= 1, got 0"):
            tdlib.AttentionLayer(D=0)
        with pytest.raises(TypeError, match="H: expected an integer"):
            tdlib.AttentionLayer(D=3, H=1.5)
