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
kernels do this blockwise, the math route explicitly). In exact arithmetic
``l_kj - l_k0 = -||q_k - k_j||^2/c <= 0``, so the largest score of every row is the sink's and
every exponential that SDPA forms is ``exp(-||q_k - k_j||^2/c) <= 1``, however large the
queries are. In floating point this holds only up to the rounding of the expanded exponent
(next paragraph), an absolute error of about ``eps * R^2 / c``. When that error reaches tens
(in float32, spreads ``R`` of the points of about 1e4 and more, with ``d = 32``), a real key's
rounded score can exceed the sink's by so much that the sink's weight ``p_k0`` underflows:
the division below then returns huge or non-finite numbers, where the plain kernel (which clamps
the squared distance at zero) stays finite. :func:`gaussian_attention` therefore checks every
sink weight against its exact range ``[1/(n+1), 1]`` and, if one falls below half its lower
end, recomputes that call with the plain kernel (same result in exact arithmetic; no large
intermediate). Below that spread the check never fires and costs one reduction.

**Masking.** A key mask (padding keys, ``False``) is passed to SDPA as a boolean mask over the
real keys; the sink is never masked. The masked keys then get weight exactly zero and the
identity above holds with the sums over the real keys only.

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

**Bad input.** Every entry point checks types and shapes (a named error for a missing tensor,
integer, boolean or complex entries, an empty or mis-shaped one, a bad ``c``, ``align`` or
mask). Entries are not checked for NaN: these functions sit inside every forward pass of the
classifier, and a NaN in ``Q``, ``K`` or ``V`` comes out as NaN in the output rows it touches,
where the training loop's loss check sees it.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .attention import gaussian_kernel, gaussian_width, softmax_kernel, squared_distances
from .checks import check_flag, check_int, check_positive

_SOFTMAX_CODE = softmax_kernel().__code__
_GAUSSIAN_CODE = gaussian_kernel().__code__


def _check_qkv(Q, K, V) -> None:
    """Queries ``(..., n, d)``, keys ``(..., n_k, d)`` and values ``(..., n_k, d_v)``: real
    floating tensors of one dtype whose axes agree, with ``d, d_v, n_k >= 1`` (an empty batch
    gives an empty output), checked before any work."""
    for name, t in (("Q", Q), ("K", K), ("V", V)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point torch tensor of shape "
                            f"(..., n, d), got {type(t).__name__} "
                            f"{getattr(t, 'dtype', '')}")
        if t.ndim < 2 or t.shape[-1] == 0:
            raise ValueError(f"{name}: expected a tensor of shape (..., n, d) with d >= 1, got "
                             f"shape {tuple(t.shape)}")
    if K.shape[-2] == 0:
        raise ValueError(f"K: expected at least one key, got shape {tuple(K.shape)}")
    if K.shape[-1] != Q.shape[-1] or K.dtype != Q.dtype:
        raise ValueError(f"K: expected keys of dimension d = {Q.shape[-1]} and dtype {Q.dtype} "
                         f"like Q, got shape {tuple(K.shape)} and dtype {K.dtype}")
    if V.shape[-2] != K.shape[-2] or V.dtype != Q.dtype:
        raise ValueError(f"V: expected one value row per key ({K.shape[-2]}) and dtype "
                         f"{Q.dtype}, got shape {tuple(V.shape)} and dtype {V.dtype}")


def _check_kernel(kernel) -> None:
    if not callable(kernel):
        raise TypeError(f"kernel: expected a kernel function (Q, K) -> S, e.g. from "
                        f"tdlib.make_kernel, got {type(kernel).__name__}")


def _sdpa_mask(key_mask: Optional[torch.Tensor], Q: torch.Tensor, K: torch.Tensor):
    """A boolean ``key_mask`` of shape ``(B, n_k)`` (True for a real key) checked against ``Q``,
    ``K`` of shape ``(B, H, n, d)`` and returned as ``(B, 1, 1, n_k)`` for broadcasting."""
    if key_mask is None:
        return None
    if not isinstance(key_mask, torch.Tensor) or key_mask.dtype != torch.bool:
        raise TypeError(f"key_mask: expected a torch.bool tensor of shape (B, n_k), got "
                        f"{getattr(key_mask, 'dtype', type(key_mask).__name__)}")
    if Q.ndim != 4 or tuple(key_mask.shape) != (K.shape[0], K.shape[-2]):
        raise ValueError(f"key_mask: expected shape (B, n_k) = ({K.shape[0]}, {K.shape[-2]}) for "
                         f"queries and keys of shape (B, H, n, d), got key_mask "
                         f"{tuple(key_mask.shape)} with Q {tuple(Q.shape)}")
    return key_mask[:, None, None, :].to(Q.device)


def softmax_attention(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor,
                      key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``softmax(Q K^T / sqrt(d)) V`` through the fused SDPA (shapes ``(..., n, d)``). With a
    boolean ``key_mask`` of shape ``(B, n_k)`` (for shapes ``(B, H, n, d)``), the softmax runs
    over the keys marked True only (every row needs at least one)."""
    _check_qkv(Q, K, V)
    m = _sdpa_mask(key_mask, Q, K)
    if m is None:
        return F.scaled_dot_product_attention(Q, K, V, scale=1.0 / math.sqrt(Q.shape[-1]))
    return F.scaled_dot_product_attention(Q, K, V, attn_mask=m, scale=1.0 / math.sqrt(Q.shape[-1]))


def _gaussian_plain(Q, K, V, c, key_mask):
    """``S V`` with the plain Gaussian kernel (``S`` stored), padding keys given weight 0."""
    S = torch.exp(-squared_distances(Q, K) / c)
    m = _sdpa_mask(key_mask, Q, K)
    return (S if m is None else S * m) @ V


def gaussian_attention(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor,
                       c: Optional[float] = None, key_mask: Optional[torch.Tensor] = None,
                       align: Optional[int] = None) -> torch.Tensor:
    """``S V`` with ``S_kj = exp(-||Q_k - K_j||^2 / c)`` (unnormalised), through the fused SDPA
    and one sink key (derivation in the module docstring); ``c`` defaults to
    :func:`tdlib.attention.gaussian_width` of the head dimension.

    ``key_mask`` (boolean, shape ``(B, n_k)`` for shapes ``(B, H, n, d)``; True for a real key)
    gives the other keys weight zero. The augmented head width ``d + 2`` is rounded up to a
    multiple of ``align`` (default: 8 on CUDA, where the memory-efficient SDPA backend wants
    aligned heads, 1 elsewhere); the extra coordinates are zero and change no score. If the
    rounding of the expanded exponent makes a sink weight leave its exact range (huge, far
    apart queries and keys; see *Overflow* in the module docstring), the plain kernel computes
    the result instead.
    """
    _check_qkv(Q, K, V)
    c = check_positive("c", c) if c is not None else gaussian_width(Q.shape[-1])
    if align is not None:
        align = check_int("align", align)
    d, dv = Q.shape[-1], V.shape[-1]
    m = _sdpa_mask(key_mask, Q, K)
    # move queries and keys by their common mean (differences q - k unchanged): conditioning
    centre = torch.cat([Q, K], dim=-2).mean(dim=-2, keepdim=True)
    Q, K = Q - centre, K - centre
    # one width w for queries, keys and values: the fused CPU kernels need equal head sizes
    w = max(d + 2, dv + 1)
    if align is None:
        align = 8 if Q.device.type == "cuda" else 1
    w = -(-w // int(align)) * int(align)
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
    if m is None:
        out = F.scaled_dot_product_attention(Qa, Ka, Va, scale=1.0)
    else:  # the sink (first key) always takes part
        m = torch.cat([torch.ones_like(m[..., :1]), m], dim=-1)
        out = F.scaled_dot_product_attention(Qa, Ka, Va, attn_mask=m, scale=1.0)
    p0 = out[..., dv:dv + 1]  # the sink's weight, in [1/(n+1), 1] in exact arithmetic
    if not bool((p0.detach() >= 0.5 / (K.shape[-2] + 1)).all()):  # also False for NaN
        return _gaussian_plain(Q, K, V, c, key_mask)
    return out[..., :dv] / p0


Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def fused_route(kernel) -> Optional[Attend]:
    """The fused ``(Q, K, V, key_mask=None) -> S V`` for a kernel function made by tdlib's
    built-in Softmax or Gaussian factory, or ``None`` for any other kernel (those go through
    ``kernel(Q, K) @ V``)."""
    _check_kernel(kernel)
    code = getattr(kernel, "__code__", None)
    if code is _SOFTMAX_CODE:
        return softmax_attention
    if code is _GAUSSIAN_CODE:
        c = getattr(kernel, "c", None)
        return lambda Q, K, V, key_mask=None: gaussian_attention(Q, K, V, c=c, key_mask=key_mask)
    return None


def masked_plain(kernel, Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor,
                 key_mask: torch.Tensor) -> torch.Tensor:
    """``S V`` with the plain kernel and the keys where ``key_mask`` (shape ``(B, n_k)``) is
    False left out: for the Softmax kernel the softmax runs over the other keys (its rows stay
    probability vectors); for any other kernel, the Gaussian included, the left-out columns of
    ``S = kernel(Q, K)`` are set to zero (the exact result for a kernel whose entries depend on
    their own key only; a kernel that normalises its rows itself is not renormalised)."""
    _check_kernel(kernel)
    _check_qkv(Q, K, V)
    if key_mask is None:
        raise TypeError("key_mask: expected a torch.bool tensor of shape (B, n_k), got None")
    m = _sdpa_mask(key_mask, Q, K)
    if getattr(kernel, "__code__", None) is _SOFTMAX_CODE:
        scores = Q @ K.transpose(-1, -2) / math.sqrt(Q.shape[-1])
        return torch.softmax(scores.masked_fill(~m, float("-inf")), dim=-1) @ V
    return (kernel(Q, K) * m) @ V


def attend(kernel, Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor,
           fused: bool = True, key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``kernel(Q, K) @ V``, through the fused route when there is one and ``fused`` is true.

    ``key_mask`` (boolean, shape ``(B, n_k)`` for shapes ``(B, H, n, d)``; True for a real key,
    at least one per sample) leaves the other keys out (see :func:`masked_plain`); ``None``
    takes the unmasked route unchanged."""
    _check_kernel(kernel)
    _check_qkv(Q, K, V)
    check_flag("fused", fused)
    route = fused_route(kernel) if fused else None
    if route is None:
        if key_mask is None:
            return kernel(Q, K) @ V
        return masked_plain(kernel, Q, K, V, key_mask)
    if key_mask is None:
        return route(Q, K, V)
    return route(Q, K, V, key_mask=key_mask)
