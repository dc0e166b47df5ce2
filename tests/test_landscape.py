"""Filter-normalized directions and the loss surface."""
from __future__ import annotations

import numpy as np
import torch

from tdlib.landscape import loss_fn_for, random_directions, surface
from tdlib.transformer import Classifier, ModelConfig


def tiny(kernel="softmax", seed=0):
    return Classifier(ModelConfig(max_len=8, D=8, hidden=16, H=2, kernel=kernel), seed=seed)


def data(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (24, 8), generator=g), torch.randint(0, 2, (24,), generator=g)


def test_origin_is_training_loss_and_model_restored():
    seed = int(torch.randint(1 << 30, ()))
    model = tiny(seed=seed)
    x, y = data(seed)
    f = loss_fn_for(x, y, batch=10)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    d1, d2 = random_directions(model, seed=seed)
    F = surface(model, f, d1, d2, [-0.5, 0.0, 0.5], [-0.5, 0.0, 0.5])
    with torch.no_grad():
        ce = float(torch.nn.functional.cross_entropy(model(x), y))
    assert abs(F[1, 1] - ce) < 1e-6 and abs(f(model) - ce) < 1e-6
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    # a grid point is the loss of the explicitly moved model
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.add_(0.5 * d1[n] - 0.5 * d2[n])
    assert abs(F[2, 0] - f(model)) < 1e-6
    assert np.ptp(F) > 0


def test_filter_normalization():
    model = tiny()
    (d,) = random_directions(model, seed=1, k=1)
    for n, p in model.named_parameters():
        if p.ndim <= 1:
            assert torch.count_nonzero(d[n]) == 0
        else:
            rows_w = p.detach().reshape(p.shape[0], -1).norm(dim=1)
            rows_d = d[n].reshape(p.shape[0], -1).norm(dim=1)
            assert torch.allclose(rows_w, rows_d, rtol=1e-5, atol=1e-7), n


def test_same_draw_for_both_kernels():
    soft, gauss = tiny("softmax", seed=3), tiny("gaussian", seed=3)
    ds, dg = random_directions(soft, seed=5), random_directions(gauss, seed=5)
    assert all(torch.equal(ds[i][n], dg[i][n]) for i in range(2) for n in ds[0])
    d_other = random_directions(soft, seed=6)
    assert not torch.equal(ds[0]["head.weight"], d_other[0]["head.weight"])
