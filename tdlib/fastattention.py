"""Fast attention outputs ``S(Q, K) V`` for the two kernels of the book, through PyTorch's fused
``scaled_dot_product_attention`` (SDPA), which never stores the ``(..., n, n)`` matrix ``S``.

The plain kernels of :mod:`tdlib.attention` stay the reference: :func:`attend` uses a fused
route only for the built-in Softmax and Gaussian kernel functions, and ``kernel(Q, K) @ V`` for
every other kernel (for instance a user-registered one).

Softmax
-------
``softmax(Q K^T / sqrt(d)) V`` is exactly what SDPA computes with its default scale
``1/sqrt(d)``.

Gaussian (unnormalised) through one extra "sink" key
-----------------------------------------------------
The Gaussian kernel is ``S_kj = exp(-||q_k - k_j||^2 / c)`` (no row normalisation; ``c`` is
``gaussian_width(d) = 2 sqrt(d)`` unless given). Expanding the square,

    S_kj = exp(-||q_k||^2 / c) * exp(2 q_k.k_j / c) * exp(-||k_j||^2 / c).

Give every query and key two more coordinates and add one more key, the sink ``k_0``:

    q'_k = ( 2 q_k / c,   1,            ||q_k||^2 / c )      (length d + 2)
    k'_j = ( k_j,         -||k_j||^2/c, 0             )      j = 1..n
    k'_0 = ( 0,           0,            1             )      the sink

so that, with SDPA's scale set to 1, the scores are

    l_kj = q'_k . k'_j = (2 q_k.k_j - ||k_j||^2) / c = -||q_k - k_j||^2 / c + ||q_k||^2 / c,
    l_k0 = q'_k . k'_0 = ||q_k||^2 / c,

that is ``exp(l_kj) = S_kj exp(l_k0)``. The softmax over the ``n + 1`` keys therefore gives

    p_kj = S_kj / (1 + sum_i S_ki),      p_k0 = 1 / (1 + sum_i S_ki),

the common factor ``exp(||q_k||^2 / c)`` cancelling. Give the real keys the values
``v'_j = (v_j, 0)`` and the sink the value ``v'_0 = (0, ..., 0, 1)``: SDPA returns
``o'_k = (sum_j p_kj v_j, p_k0)``, and

    sum_j S_kj v_j = o'_k[:d_v] / o'_k[d_v]                                              (exact)

**Overflow.** SDPA subtracts each row's largest score before exponentiating (the fused
kernels do this blockwise, the math route explicitly). Since ``l_kj - l_k0 = -||q_k - k_j||^2/c
<= 0``, the largest score of every row is the sink's, so every exponential that SDPA forms is
``exp(-||q_k - k_j||^2/c) <= 1``: nothing overflows however large the queries are, and the
sink's own term is exactly ``exp(0) = 1``.

**Conditioning.** Queries and keys are first moved by their common mean ``m`` (per sample and
head), as in :func:`tdlib.attention.squared_distances`: ``q - k`` and hence ``S`` do not change,
but the norms entering the expansion become the spread ``R`` of the points around ``m`` instead
of their distance from the origin. The divisor ``p_k0 = 1/(1 + sum_i S_ki)`` lies in
``[1/(n+1), 1]`` because ``0 < S_ki <= 1``: dividing by it loses at most a factor ``n + 1``
of scale and no relative precision, and it never underflows. The one rounding issue is the one the plain kernel shares:
``l_kj - l_k0`` is formed from ``||q||^2``, ``||k||^2`` and ``q.k`` separately, so it carries an
absolute error of about ``eps * R^2 / c`` in the exponent (``eps`` the machine precision), the
accuracy of :func:`tdlib.attention.squared_distances`.
In float64 the two agree to rounding, which the tests check, gradients included
(SDPA is differentiable in ``Q``, ``K`` and ``V``, and so is the augmentation).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .attention import gaussian_kernel, gaussian_width, softmax_kernel

_SOFTMAX_CODE = softmax_kernel().__code__
_GAUSSIAN_CODE = gaussian_kernel().__code__


def softmax_attention(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """``softmax(Q K^T / sqrt(d)) V`` through the fused SDPA (shapes ``(..., n, d)``)."""
    return F.scaled_dot_product_attention(Q, K, V, scale=1.0 / math.sqrt(Q.shape[-1]))


def gaussian_attention(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor,
                       c: Optional[float] = None) -> torch.Tensor:
    """``S V`` with ``S_kj = exp(-||Q_k - K_j||^2 / c)`` (unnormalised), through the fused SDPA
    and one sink key (derivation in the module docstring); ``c`` defaults to
    :func:`tdlib.attention.gaussian_width` of the head dimension."""
    c = float(c) if c is not None else gaussian_width(Q.shape[-1])
    d, dv = Q.shape[-1], V.shape[-1]
    # move queries and keys by their common mean (differences q - k unchanged): conditioning
    centre = torch.cat([Q, K], dim=-2).mean(dim=-2, keepdim=True)
    Q, K = Q - centre, K - centre
    # one width w for queries, keys and values: the fused CPU kernels need equal head sizes
    w = max(d + 2, dv + 1)
    q2 = (Q * Q).sum(-1, keepdim=True) / c
    k2 = (K * K).sum(-1, keepdim=True) / c
    Qa = torch.cat([Q * (2.0 / c), torch.ones_like(q2), q2], dim=-1)  # q'_k, (..., n, d + 2)
    Ka = torch.cat([K, -k2, torch.zeros_like(k2)], dim=-1)             # k'_j, (..., n, d + 2)
    Qa = F.pad(Qa, (0, w - d - 2))
    Ka = F.pad(Ka, (0, w - d - 2))
    sink = torch.zeros_like(Ka[..., :1, :])
    sink[..., d + 1] = 1.0                                             # k'_0 = (0, 0, 1)
    Ka = torch.cat([sink, Ka], dim=-2)                                 # (..., n + 1, w)
    Va = F.pad(V, (0, w - dv))                                         # v'_j = (v_j, 0)
    vsink = torch.zeros_like(Va[..., :1, :])
    vsink[..., dv] = 1.0                                               # v'_0 = (0, 1)
    Va = torch.cat([vsink, Va], dim=-2)                                # (..., n + 1, w)
    out = F.scaled_dot_product_attention(Qa, Ka, Va, scale=1.0)
    return out[..., :dv] / out[..., dv:dv + 1]


Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def fused_route(kernel) -> Optional[Attend]:
    """The fused ``(Q, K, V) -> S V`` for a kernel function made by tdlib's built-in Softmax or
    Gaussian factory, or ``None`` for any other kernel (those go through ``kernel(Q, K) @ V``)."""
    code = getattr(kernel, "__code__", None)
    if code is _SOFTMAX_CODE:
        return softmax_attention
    if code is _GAUSSIAN_CODE:
        c = getattr(kernel, "c", None)
        return lambda Q, K, V: gaussian_attention(Q, K, V, c=c)
    return None


def attend(kernel, Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor,
           fused: bool = True) -> torch.Tensor:
    """``kernel(Q, K) @ V``, through the fused route when there is one and ``fused`` is true."""
    route = fused_route(kernel) if fused else None
    if route is None:
        return kernel(Q, K) @ V
    return route(Q, K, V)
