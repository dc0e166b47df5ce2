"""The fused attention routes equal the plain kernels (outputs and gradients, float64)."""
from __future__ import annotations

import pytest
import torch

from tdlib import register_kernel
from tdlib.attention import KERNELS, make_kernel
from tdlib.fastattention import attend, fused_route, gaussian_attention
from tdlib.transformer import Classifier, ModelConfig

OPTIONS = [("softmax", {}), ("gaussian", {}), ("gaussian", {"c": 0.3}), ("gaussian", {"c": 7.0})]


def _qkv(shape, dv=None, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    *lead, n, d = shape
    Q = scale * torch.randn(*lead, n, d, generator=g, dtype=torch.float64)
    K = scale * torch.randn(*lead, n, d, generator=g, dtype=torch.float64)
    V = torch.randn(*lead, n, dv or d, generator=g, dtype=torch.float64)
    return Q, K, V


@pytest.mark.parametrize("name,opts", OPTIONS)
def test_gradcheck_small(name, opts):
    kernel = make_kernel(name, **opts)
    assert fused_route(kernel) is not None
    Q, K, V = (t.requires_grad_() for t in _qkv((2, 4, 3), dv=2, seed=1))
    assert torch.autograd.gradcheck(lambda q, k, v: attend(kernel, q, k, v), (Q, K, V))


@pytest.mark.parametrize("name,opts", OPTIONS)
@pytest.mark.parametrize("scale", [1.0, 3.0, 12.0])
@pytest.mark.parametrize("dv", [None, 3, 11])
def test_equal_to_plain_kernel_with_gradients(name, opts, scale, dv):
    kernel = make_kernel(name, **opts)
    Q, K, V = _qkv((3, 2, 17, 6), dv=dv, scale=scale, seed=int(scale) + (dv or 0))
    # large-norm queries: a few rows far away from every key
    Q[..., :3, :] *= 5.0
    ins_ref = [t.clone().requires_grad_() for t in (Q, K, V)]
    ins_fast = [t.clone().requires_grad_() for t in (Q, K, V)]
    ref = kernel(ins_ref[0], ins_ref[1]) @ ins_ref[2]
    fast = attend(kernel, *ins_fast)
    W = torch.randn_like(ref)
    (ref * W).sum().backward()
    (fast * W).sum().backward()
    err = (fast - ref).abs().max().item()
    print(f"{name} {opts} scale={scale} dv={dv}: max output difference {err:.2e}")
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-11)
    for a, b in zip(ins_fast, ins_ref):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-10)


def test_gaussian_route_is_finite_for_huge_queries():
    Q, K, V = _qkv((1, 8, 4), seed=3)
    Q = Q * 1e3  # ||q||^2 / c is about 1e6: exp of it overflows, the sink trick never forms it
    out = gaussian_attention(Q, K, V)
    ref = make_kernel("gaussian")(Q, K) @ V
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=1e-8, atol=1e-12)


def test_gaussian_route_accurate_for_large_close_points():
    # queries and keys far from the origin but close together: float32 against exact float64
    Q, K, V = _qkv((2, 16, 4), scale=0.5, seed=7)
    Q, K, V = (Q + 1e3).float(), (K + 1e3).float(), V.float()
    exact = make_kernel("gaussian")(Q.double(), K.double()) @ V.double()  # same inputs, exact
    fast = gaussian_attention(Q, K, V).double()
    err = (fast - exact).abs().max().item()
    print(f"float32 fused Gaussian at coordinates 1e3: max error {err:.1e}")
    torch.testing.assert_close(fast, exact, rtol=2e-5, atol=2e-5)


def test_float32_close_to_float64():
    Q, K, V = _qkv((2, 2, 64, 8), scale=2.0, seed=5)
    for name in ("softmax", "gaussian"):
        kernel = make_kernel(name)
        ref = kernel(Q, K) @ V
        fast = attend(kernel, Q.float(), K.float(), V.float()).double()
        torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)


def test_other_kernels_use_the_plain_function():
    register_kernel("test-fast-linear", lambda Q, K: Q @ K.transpose(-1, -2) / Q.shape[-1])
    try:
        kernel = make_kernel("test-fast-linear")
        assert fused_route(kernel) is None
        Q, K, V = _qkv((5, 4), seed=2)
        torch.testing.assert_close(attend(kernel, Q, K, V), kernel(Q, K) @ V)
        # a function merely *named* gaussian is not the built-in one
        def gaussian(Q, K):
            return torch.ones(Q.shape[:-1] + K.shape[-2:-1], dtype=Q.dtype)
        assert fused_route(gaussian) is None
    finally:
        KERNELS.pop("test-fast-linear", None)


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_classifier_fused_equals_plain(kernel, monkeypatch):
    m = Classifier(ModelConfig(max_len=30, kernel=kernel, pad_id=None), seed=2).double()
    x = torch.randint(0, 256, (4, 30))
    outs, grads = [], []
    for fused in (True, False):
        for b in m.blocks:
            b.attn.fused = fused
        m.zero_grad()
        y = m(x)
        y.square().sum().backward()
        outs.append(y.detach())
        grads.append([p.grad.clone() for p in m.parameters()])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-10, atol=1e-12)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-11)
