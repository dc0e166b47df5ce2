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


# ---------------------------------------------------------------------------------------------
# padding masks
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,opts", OPTIONS)
@pytest.mark.parametrize("fused", [True, False])
def test_masked_keys_equal_attention_without_them(name, opts, fused):
    """Masking keys gives, for every real query, the attention over the other keys alone."""
    kernel = make_kernel(name, **opts)
    Q, K, V = _qkv((3, 2, 9, 5), dv=4, scale=2.0, seed=11)
    lengths = [9, 6, 2]
    mask = torch.arange(9)[None, :] < torch.tensor(lengths)[:, None]  # (B, n), True = real
    out = attend(kernel, Q, K, V, fused=fused, key_mask=mask)
    for b, n in enumerate(lengths):
        ref = kernel(Q[b:b + 1], K[b:b + 1, :, :n]) @ V[b:b + 1, :, :n]
        torch.testing.assert_close(out[b:b + 1], ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,opts", OPTIONS)
def test_masked_gradcheck(name, opts):
    kernel = make_kernel(name, **opts)
    Q, K, V = (t.requires_grad_() for t in _qkv((2, 1, 4, 3), dv=2, seed=4))
    mask = torch.tensor([[True, True, False, False], [True, True, True, False]])
    assert torch.autograd.gradcheck(lambda q, k, v: attend(kernel, q, k, v, key_mask=mask),
                                    (Q, K, V))


def test_key_mask_is_checked():
    kernel = make_kernel("gaussian")
    Q, K, V = _qkv((2, 1, 4, 3), seed=4)
    with pytest.raises(TypeError, match="bool"):
        attend(kernel, Q, K, V, key_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="shape"):
        attend(kernel, Q, K, V, key_mask=torch.ones(2, 5, dtype=torch.bool))


def test_other_kernels_get_zero_weight_on_masked_keys():
    kernel = lambda Q, K: Q @ K.transpose(-1, -2)  # noqa: E731
    Q, K, V = _qkv((1, 1, 4, 3), seed=6)
    mask = torch.tensor([[True, False, True, False]])
    out = attend(kernel, Q, K, V, key_mask=mask)
    torch.testing.assert_close(out, kernel(Q, K[..., [0, 2], :]) @ V[..., [0, 2], :])


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
@pytest.mark.parametrize("fused", [True, False])
def test_padded_sequence_gives_the_unpadded_logits(kernel, fused):
    m = Classifier(ModelConfig(max_len=40, kernel=kernel), seed=3).double()
    for b in m.blocks:
        b.attn.fused = fused
    g = torch.Generator().manual_seed(8)
    lengths = [40, 23, 5, 1]
    x = torch.randint(1, 256, (len(lengths), 40), generator=g)
    for i, n in enumerate(lengths):
        x[i, n:] = 0
    padded = m(x)
    unpadded = torch.cat([m(x[i:i + 1, :n]) for i, n in enumerate(lengths)])
    # without the mask the padding changes the logits (the Gaussian adds every pad's value)
    m_nomask = Classifier(ModelConfig(max_len=40, kernel=kernel), seed=3).double()
    m_nomask.key_mask = lambda tokens: None
    for b in m_nomask.blocks:
        b.attn.fused = fused
    err_mask = (padded - unpadded).abs().max().item()
    err_nomask = (m_nomask(x) - unpadded).abs().max().item()
    print(f"{kernel} fused={fused}: padded vs unpadded logits, masked {err_mask:.1e}, "
          f"unmasked {err_nomask:.1e}")
    torch.testing.assert_close(padded, unpadded, rtol=1e-10, atol=1e-11)
    assert err_nomask > 1e-3


def test_all_padding_sequence_stays_finite():
    m = Classifier(ModelConfig(max_len=8, kernel="softmax"), seed=0)
    x = torch.zeros(2, 8, dtype=torch.long)
    x[0, :3] = 7
    assert torch.isfinite(m(x)).all()


def _premask_forward(model, tokens):
    """The classifier's forward pass as it was before padding masks (attention without any
    mask), written out from the model's parts."""
    B, n = tokens.shape
    Z = model.embed(tokens) + model.pos[:n]
    for b in model.blocks:
        a, Zn = b.attn, b.ln1(Z)
        q, k, v = a.W_QKV(Zn).view(B, n, 3, a.H, a.d).permute(2, 0, 3, 1, 4)
        Z = Z + a.W_O(attend(a.kernel, q, k, v, fused=a.fused).transpose(1, 2).reshape(B, n, -1))
        Z = Z + b.mlp(b.ln2(Z))
    Z = model.ln(Z)
    if model.cfg.pad_id is None:
        return model.head(Z.mean(1))
    mask = (tokens != model.cfg.pad_id).unsqueeze(-1).to(Z.dtype)
    return model.head((Z * mask).sum(1) / mask.sum(1).clamp_min(1.0))


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("pad_id", [None, 0])
def test_inputs_without_padding_are_bit_identical_to_the_unmasked_route(kernel, fused, pad_id):
    """Images (pad_id None) and text batches without padding take the unmasked route: the
    same bits, outputs and gradients, as the forward pass without masks (float32)."""
    m = Classifier(ModelConfig(max_len=64, kernel=kernel, pad_id=pad_id), seed=5)
    for b in m.blocks:
        b.attn.fused = fused
    x = torch.randint(1, 256, (6, 64), generator=torch.Generator().manual_seed(2))
    assert m.key_mask(x) is None
    grads = []
    for f in (m, lambda t: _premask_forward(m, t)):
        m.zero_grad()
        y = f(x)
        y.square().sum().backward()
        grads.append([y.detach()] + [p.grad.clone() for p in m.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


# ---------------------------------------------------------------------------------------------
# the fused Gaussian far from its comfort zone, and head alignment
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spread", [1e4, 3e4, 1e5])
def test_fused_gaussian_falls_back_when_rounding_breaks_the_sink(spread):
    """float32, huge spread: the expanded exponent's rounding (about eps R^2 / c) makes a real
    key's score beat the sink's; the route then uses the plain kernel, which stays finite."""
    g = torch.Generator().manual_seed(int(spread))
    Q = spread * torch.randn(1, 2, 64, 32, generator=g)
    K = spread * torch.randn(1, 2, 64, 32, generator=g)
    K[..., :4, :] = Q[..., :4, :] + torch.randn(1, 2, 4, 32, generator=g)  # some near pairs
    V = torch.randn(1, 2, 64, 32, generator=g)
    plain = make_kernel("gaussian")(Q, K) @ V
    out = gaussian_attention(Q, K, V)
    mask = torch.ones(1, 64, dtype=torch.bool)
    mask[:, 40:] = False
    out_masked = gaussian_attention(Q, K, V, key_mask=mask)
    assert torch.isfinite(plain).all() and torch.isfinite(out).all()
    assert torch.isfinite(out_masked).all()
    torch.testing.assert_close(out, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
@pytest.mark.parametrize("masked", [False, True])
def test_head_width_aligned_to_8_gives_the_same_result(dtype, tol, masked):
    Q, K, V = (t.to(dtype) for t in _qkv((2, 2, 13, 5), dv=7, scale=2.0, seed=9))
    mask = torch.arange(13)[None, :] < torch.tensor([13, 8])[:, None]
    km = mask if masked else None
    a = gaussian_attention(Q, K, V, key_mask=km, align=1)   # width max(d + 2, dv + 1) = 8
    b = gaussian_attention(Q, K, V, key_mask=km, align=8)
    c = gaussian_attention(Q, K, V, key_mask=km, align=16)  # padded to 16
    torch.testing.assert_close(b, a, rtol=tol, atol=tol)
    torch.testing.assert_close(c, a, rtol=tol, atol=tol)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")
def test_fused_routes_on_cuda_equal_the_cpu():
    Q, K, V = _qkv((2, 2, 40, 32), scale=2.0, seed=12)
    mask = torch.arange(40)[None, :] < torch.tensor([40, 17])[:, None]
    for name in ("softmax", "gaussian"):
        kernel = make_kernel(name)
        cpu = attend(kernel, Q.float(), K.float(), V.float(), key_mask=mask)
        gpu = attend(kernel, Q.float().cuda(), K.float().cuda(), V.float().cuda(),
                     key_mask=mask.cuda())
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
