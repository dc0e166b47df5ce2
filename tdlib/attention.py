"""Attention kernels and the one-layer multi-head attention model of the book.

Notation (the book's, see the chapter *Setup and notation*):

* ``X`` has shape ``(N, n, D)``: ``N`` samples of ``n`` tokens with embedding dimension ``D``.
* Head ``h`` has ``W_Q[h], W_K[h]`` of shape ``(D, d)``, ``W_V[h]`` of shape ``(D, d_v)`` and
  ``W_O[h]`` of shape ``(d_v, d_out)``.
* A kernel maps queries ``Q = X W_Q`` and keys ``K = X W_K`` (shape ``(..., n, d)``) to an
  ``(..., n, n)`` matrix ``S``; the layer outputs ``T(X_i) = sum_h S_h(X_i) X_i W_V[h] W_O[h]``.
* The loss is ``f = 1/2 sum_i ||T(X_i) - Y_i||_F^2``.

A kernel is any function ``kernel(Q, K) -> S``; :func:`register_kernel` adds one by name.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Mapping, Union

import torch

from .checks import (as_tensor, check_choice, check_finite, check_int, check_positive, check_rank,
                     check_seed)

Kernel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_BUILTIN = frozenset({"softmax", "gaussian", "l2", "sigmoid-logn", "relu-n", "linear-n"})

KERNELS: Dict[str, Callable[..., Kernel]] = {}
"""Registry: kernel name -> factory. ``KERNELS[name](**options)`` returns a kernel function."""


def register_kernel(name: str, factory: Callable[..., Kernel] | None = None, *, replace: bool = False):
    """Register a kernel factory under ``name`` (usable as a decorator).

    The factory takes keyword options and returns ``kernel(Q, K) -> S``. A kernel with no
    options can be registered directly as a function of ``(Q, K)``:

    >>> register_kernel("dot", lambda Q, K: Q @ K.transpose(-1, -2) / Q.shape[-1])  # doctest: +SKIP

    The built-in kernels (``"softmax"``, ``"gaussian"`` and those of :data:`ZOO_KERNELS`)
    are only replaced with
    ``replace=True``: every later model built with that name would silently change otherwise.
    A kernel of your own can be registered again under its name (re-running a notebook cell).
    A kernel function with the attribute ``shift_invariant = True`` (it depends on ``q - k``
    only, as the Gaussian does) gets from the layer queries and keys computed from centred
    tokens, with the same differences: float32 scores stay accurate far from the origin.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"kernel name: expected a non-empty string, got {name!r}")
    if name in _BUILTIN and name in KERNELS and not replace:
        raise ValueError(f"kernel name: {name!r} is a built-in kernel; pass replace=True to "
                         f"replace it, or choose another name")

    def add(f):
        if not callable(f):
            raise TypeError(f"register_kernel({name!r}): expected a function, got {type(f).__name__}")
        # A plain two-argument kernel is wrapped into a factory without options.
        try:
            import inspect

            n_required = sum(
                p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                for p in inspect.signature(f).parameters.values()
            )
        except (TypeError, ValueError):  # builtins without a signature
            n_required = 0
        if n_required == 2:
            if not hasattr(f, "name"):
                try:
                    f.name = name
                except AttributeError:  # pragma: no cover - builtins
                    pass
            KERNELS[name] = lambda: f
        else:
            KERNELS[name] = f
        return f

    return add if factory is None else add(factory)


def make_kernel(name: Union[str, Kernel], **options) -> Kernel:
    """Return the kernel function called ``name`` with its options (or ``name`` if callable)."""
    if callable(name):
        if options:
            raise TypeError("make_kernel: options are only accepted with a kernel name")
        return name
    if not isinstance(name, str) or name not in KERNELS:
        known = ", ".join(sorted(KERNELS))
        raise ValueError(f"kernel: expected a kernel function or one of {known}, got {name!r}")
    try:
        import inspect

        inspect.signature(KERNELS[name]).bind(**options)
    except TypeError as err:
        raise TypeError(f"kernel_options: kernel {name!r} does not accept {options} ({err})") from None
    except ValueError:  # no signature to check against
        pass
    return KERNELS[name](**options)


@register_kernel("softmax")
def softmax_kernel() -> Kernel:
    """Row-wise softmax of ``Q K^T / sqrt(d)``: every row is a probability vector."""

    def softmax(Q: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        d = Q.shape[-1]
        return torch.softmax(Q @ K.transpose(-1, -2) / math.sqrt(d), dim=-1)

    softmax.name = "softmax"
    return softmax


def gaussian_width(d: int) -> float:
    """The default width ``c = 2 sqrt(d)`` of the Gaussian kernel for head dimension ``d``."""
    return 2 * math.sqrt(check_int("d", d))


def squared_distances(Q: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """``||Q_k - K_j||^2`` for all pairs, shape ``(..., n, n)`` (never below zero).

    Computed as ``||q||^2 + ||k||^2 - 2 q.k`` (one matrix product, as fast as the Softmax
    scores) after moving queries and keys by their common mean (per sample and head), which
    leaves every difference ``q - k`` unchanged. Without that shift the expanded form cancels
    catastrophically when queries and keys are large and close together (in float32 an error
    of about 0.1 at coordinates of size 1e3). With it, the absolute error is about
    ``eps * R^2`` where ``R`` is the spread of the points around their mean and ``eps`` the
    machine precision (1.2e-7 in float32, 2.2e-16 in float64): a distance is accurate to a
    relative ``eps`` only when it is not far below the spread ``R^2``, as for any method
    based on one matrix product. The gradient is that of the exact formula (the shift cancels).
    """
    for name, t in (("Q", Q), ("K", K)):
        if not isinstance(t, torch.Tensor) or t.ndim < 2 or t.numel() == 0:
            raise ValueError(f"{name}: expected a non-empty tensor of shape (..., n, d), got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else repr(t)}")
        if t.is_complex():
            raise TypeError(f"{name}: expected real numbers, got dtype {t.dtype}")
    if Q.shape[-1] != K.shape[-1]:
        raise ValueError(f"K: expected keys of dimension d={Q.shape[-1]} like the queries Q of "
                         f"shape {tuple(Q.shape)}, got shape {tuple(K.shape)}")
    batch = torch.broadcast_shapes(Q.shape[:-2], K.shape[:-2])  # e.g. many queries, one K
    Q, K = Q.expand(*batch, *Q.shape[-2:]), K.expand(*batch, *K.shape[-2:])
    centre = torch.cat([Q, K], dim=-2).mean(dim=-2, keepdim=True)
    Q, K = Q - centre, K - centre
    q2 = (Q * Q).sum(-1, keepdim=True)
    k2 = (K * K).sum(-1, keepdim=True).transpose(-1, -2)
    return (q2 + k2 - 2 * Q @ K.transpose(-1, -2)).clamp_min(0)


@register_kernel("gaussian")
def gaussian_kernel(c: float | None = None) -> Kernel:
    """``S_kj = exp(-||Q_k - K_j||^2 / c)`` with no row normalisation.

    ``c`` defaults to ``2 sqrt(d)`` (the choice of the common long-range-arena implementation;
    other write-ups use ``sqrt(d)``). Entries lie in ``(0, 1]``, with 1 exactly when the query
    equals the key. Distances are computed stably (see :func:`squared_distances` for the
    accuracy): large queries and keys that lie close together keep accurate weights.
    """
    if c is not None:
        check_positive("gaussian kernel c", c)

    def gaussian(Q: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        scale = c if c is not None else gaussian_width(Q.shape[-1])
        return torch.exp(-squared_distances(Q, K) / scale)

    gaussian.name = "gaussian"
    gaussian.c = c
    gaussian.shift_invariant = True   # depends on q - k only: the layer centres the tokens
    return gaussian


@register_kernel("l2")
def l2_kernel(c: float | None = None) -> Kernel:
    """Row-normalised Gaussian (L2) attention: ``S_kj = softmax_j(-||Q_k - K_j||^2 / c)``.

    Every row is a probability vector (like Softmax) and the weights depend on ``q - k``
    only (like the Gaussian kernel); ``c`` defaults to ``2 sqrt(d)`` as for the Gaussian.
    """
    if c is not None:
        check_positive("l2 kernel c", c)

    def l2(Q: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        scale = c if c is not None else gaussian_width(Q.shape[-1])
        return torch.softmax(-squared_distances(Q, K) / scale, dim=-1)

    l2.name = "l2"
    l2.c = c
    l2.shift_invariant = True
    return l2


@register_kernel("sigmoid-logn")
def sigmoid_logn_kernel() -> Kernel:
    """Sigmoid attention with bias ``-log n``: ``S_kj = sigmoid(Q_k . K_j / sqrt(d) - log n)``
    for ``n`` keys. Entries lie in ``(0, 1)``; rows do not sum to one (at zero scores each
    entry is ``1 / (n + 1)``)."""

    def sigmoid_logn(Q: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        d, n = Q.shape[-1], K.shape[-2]
        return torch.sigmoid(Q @ K.transpose(-1, -2) / math.sqrt(d) - math.log(n))

    sigmoid_logn.name = "sigmoid-logn"
    return sigmoid_logn


@register_kernel("relu-n")
def relu_n_kernel() -> Kernel:
    """ReLU attention divided by the number of keys: ``S_kj = max(0, Q_k . K_j / sqrt(d)) / n``."""

    def relu_n(Q: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        d, n = Q.shape[-1], K.shape[-2]
        return torch.relu(Q @ K.transpose(-1, -2) / math.sqrt(d)) / n

    relu_n.name = "relu-n"
    return relu_n


@register_kernel("linear-n")
def linear_n_kernel() -> Kernel:
    """Linear attention divided by the number of keys: ``S_kj = Q_k . K_j / (n sqrt(d))``
    (no feature map: the output is linear in each query)."""

    def linear_n(Q: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        d, n = Q.shape[-1], K.shape[-2]
        return Q @ K.transpose(-1, -2) / (n * math.sqrt(d))

    linear_n.name = "linear-n"
    return linear_n


ZOO_KERNELS = ("softmax", "gaussian", "l2", "sigmoid-logn", "relu-n", "linear-n")
"""The kernels of the chapter *A kernel zoo* (all registered in :data:`KERNELS`)."""

KERNEL_NAMES = ("softmax", "gaussian")
"""The two kernels the book compares (the registry :data:`KERNELS` may hold more)."""


def kernel_name(kernel: Kernel) -> str:
    """The name a kernel function was registered under (``"custom"`` if it has none)."""
    return getattr(kernel, "name", getattr(kernel, "__name__", "custom"))


# ---------------------------------------------------------------------------------------------
# The one-layer model
# ---------------------------------------------------------------------------------------------

PARAMS = ("W_Q", "W_K", "W_V", "W_O")
INITS = ("normal", "zeros", "identity")


class AttentionLayer(torch.nn.Module):
    """One multi-head attention layer ``T(X_i) = sum_h S_h(X_i) X_i W_V[h] W_O[h]``.

    Parameters
    ----------
    D : embedding dimension.   H : number of heads.   d : query/key dimension per head.
    d_v : value dimension per head (default ``D``).   d_out : output dimension (default ``D``).
    kernel : a registered kernel name (``"softmax"``, ``"gaussian"``, ...) or a kernel function.
    kernel_options : options for the kernel factory, e.g. ``{"c": 1.0}`` for the Gaussian.
    init : ``"normal"``, ``"zeros"`` or ``"identity"``, or a dict from parameter name to one of
        these. ``"normal"`` draws entries from ``N(0, scale^2 / fan_in)``.
    scale : a number, or a dict from parameter name to a number.
    seed : seed of the initialisation (the same seed gives the same weights).
    dtype, device : ``torch.float64`` by default (theory chapters); ``float32`` for experiments.
    """

    def __init__(
        self,
        D: int,
        H: int = 1,
        d: int | None = None,
        d_v: int | None = None,
        d_out: int | None = None,
        kernel: Union[str, Kernel] = "softmax",
        kernel_options: Mapping | None = None,
        init: Union[str, Mapping[str, str]] = "normal",
        scale: Union[float, Mapping[str, float]] = 1.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
        device: Union[str, torch.device] = "cpu",
    ):
        super().__init__()
        self.D = check_int("D", D)
        self.H = check_int("H", H)
        self.d = check_int("d", d if d is not None else D)
        self.d_v = check_int("d_v", d_v if d_v is not None else D)
        self.d_out = check_int("d_out", d_out if d_out is not None else D)
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
        if kernel_options is not None and not isinstance(kernel_options, Mapping):
            raise TypeError(f"kernel_options: expected a dict of kernel options such as "
                            f"{{'c': 1.0}}, got {kernel_options!r}")
        self.kernel = make_kernel(kernel, **dict(kernel_options or {}))
        shapes = self.shapes()
        for p in PARAMS:
            self.register_parameter(p, torch.nn.Parameter(torch.empty(shapes[p], dtype=dtype, device=device)))
        self.reset_parameters(init=init, scale=scale, seed=seed)

    # -- set-up ---------------------------------------------------------------------------------
    def shapes(self) -> Dict[str, tuple]:
        """Shapes of the stacked parameters: ``W_Q, W_K: (H, D, d)``, ``W_V: (H, D, d_v)``,
        ``W_O: (H, d_v, d_out)``."""
        H, D = self.H, self.D
        return {
            "W_Q": (H, D, self.d),
            "W_K": (H, D, self.d),
            "W_V": (H, D, self.d_v),
            "W_O": (H, self.d_v, self.d_out),
        }

    @property
    def kernel_name(self) -> str:
        return kernel_name(self.kernel)

    def reset_parameters(self, init="normal", scale=1.0, seed: int = 0) -> "AttentionLayer":
        """Re-draw all weights from ``seed`` (see the class docstring for ``init`` and ``scale``)."""
        if not isinstance(init, (str, Mapping)):
            raise TypeError(f"init: expected one of {INITS} or a dict from parameter name to one "
                            f"of them, got {init!r}")
        inits = {p: init for p in PARAMS} if isinstance(init, str) else dict(init)
        scales = {p: scale for p in PARAMS} if not isinstance(scale, Mapping) else dict(scale)
        for key in list(inits) + list(scales):
            check_choice("parameter name", key, PARAMS)
        seed = check_seed("seed", seed)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        with torch.no_grad():
            for p in PARAMS:
                kind = inits.get(p, "normal")
                check_choice(f"init of {p}", kind, INITS)
                s = check_positive(f"scale of {p}", scales.get(p, 1.0), strict=False)
                W = getattr(self, p)
                # Draw for every parameter so one parameter's choice never shifts the others' draws.
                z = torch.randn(W.shape, generator=gen, dtype=torch.float64)
                if kind == "normal":
                    W.copy_(z * s / math.sqrt(W.shape[1]))
                elif kind == "zeros":
                    W.zero_()
                else:
                    if W.shape[1] != W.shape[2]:
                        raise ValueError(
                            f"init of {p}: 'identity' needs square per-head blocks, "
                            f"got shape {tuple(W.shape[1:])}"
                        )
                    W.copy_(s * torch.eye(W.shape[1], dtype=W.dtype).expand_as(W))
        return self

    def set_weights(self, **weights) -> "AttentionLayer":
        """Overwrite weights, e.g. ``set_weights(W_K=..., W_V=...)``; shapes are checked.

        A 2-d array for a model with one head is accepted as that head's block.
        """
        shapes = self.shapes()
        with torch.no_grad():
            for p, value in weights.items():
                check_choice("parameter name", p, PARAMS)
                W = getattr(self, p)
                t = as_tensor(p, value, dtype=W.dtype, device=W.device)
                if t.ndim == 2 and self.H == 1:
                    t = t.unsqueeze(0)
                if tuple(t.shape) != shapes[p]:
                    raise ValueError(f"{p}: expected shape {shapes[p]}, got {tuple(t.shape)}")
                check_finite(p, t)
                W.copy_(t)
        return self

    def extra_repr(self) -> str:
        """The sizes and kernel shown by ``print(layer)``."""
        return (
            f"D={self.D}, H={self.H}, d={self.d}, d_v={self.d_v}, d_out={self.d_out}, "
            f"kernel={self.kernel_name}, dtype={self.W_Q.dtype}"
        )

    # -- computation ----------------------------------------------------------------------------
    def check_X(self, X) -> torch.Tensor:
        """Validate and convert inputs to a tensor of shape ``(N, n, D)`` on the model's device."""
        X = as_tensor("X", X, dtype=self.W_Q.dtype, device=self.W_Q.device)
        check_rank("X", X, 3, "(N, n, D)")
        if X.shape[2] != self.D:
            raise ValueError(
                f"X: expected embedding dimension D={self.D} in shape (N, n, D), got shape {tuple(X.shape)}"
            )
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"X: expected at least one sample and one token, got shape {tuple(X.shape)}")
        check_finite("X", X)
        return X

    def check_XY(self, X, Y):
        """Validate a data set: ``X`` of shape ``(N, n, D)`` and ``Y`` of shape ``(N, n, d_out)``."""
        X = self.check_X(X)
        Y = as_tensor("Y", Y, dtype=self.W_Q.dtype, device=self.W_Q.device)
        check_rank("Y", Y, 3, "(N, n, d_out)")
        N, n, _ = X.shape
        if tuple(Y.shape) != (N, n, self.d_out):
            raise ValueError(
                f"Y: expected shape (N, n, d_out) = {(N, n, self.d_out)} to match X of shape "
                f"{tuple(X.shape)}, got {tuple(Y.shape)}"
            )
        check_finite("Y", Y)
        return X, Y

    def queries_keys(self, X: torch.Tensor):
        """``Q = X W_Q`` and ``K = X W_K`` per head, each of shape ``(N, H, n, d)``."""
        Q = torch.einsum("Nnd,hde->Nhne", X, self.W_Q)
        K = torch.einsum("Nnd,hde->Nhne", X, self.W_K)
        return Q, K

    def scores(self, X) -> torch.Tensor:
        """The attention matrices ``S_h(X_i)``, shape ``(N, H, n, n)``."""
        X = self.check_X(X)
        return self._scores(X, check=True)

    def _centred_queries_keys(self, X: torch.Tensor):
        """Queries and keys with the same differences ``q_k - k_j`` as :meth:`queries_keys`,
        computed from tokens centred per sample: ``Q = (X - m) W_Q + m (W_Q - W_K)`` and
        ``K = (X - m) W_K`` with ``m`` the mean token. For a kernel that depends on ``q - k``
        only (the Gaussian) this keeps float32 scores accurate for tokens far from the origin
        (without it, rounding ``X W_Q`` at ``|X| = 1e4`` costs about 5e-4 in every score)."""
        m = X.mean(dim=1, keepdim=True)                                  # (N, 1, D)
        Xc = X - m
        Q = torch.einsum("Nnd,hde->Nhne", Xc, self.W_Q)
        Q = Q + torch.einsum("Nnd,hde->Nhne", m, self.W_Q - self.W_K)
        K = torch.einsum("Nnd,hde->Nhne", Xc, self.W_K)
        return Q, K

    def _scores(self, X: torch.Tensor, check: bool = False) -> torch.Tensor:
        if getattr(self.kernel, "shift_invariant", False):
            Q, K = self._centred_queries_keys(X)
        else:
            Q, K = self.queries_keys(X)
        S = self.kernel(Q, K)
        want = Q.shape[:-1] + (K.shape[-2],)
        if not isinstance(S, torch.Tensor) or S.shape != want:
            got = tuple(S.shape) if isinstance(S, torch.Tensor) else type(S).__name__
            raise ValueError(
                f"kernel {self.kernel_name!r}: expected kernel(Q, K) to return a tensor of shape "
                f"(N, H, n, n) = {tuple(want)} for queries and keys of shape {tuple(Q.shape)}, "
                f"got {got}"
            )
        if check and not bool(torch.isfinite(S).all()):
            self._nonfinite_scores(Q, K)
        return S

    def _nonfinite_scores(self, Q: torch.Tensor, K: torch.Tensor):
        """Raise the error for a kernel that returned NaN or Inf, naming the kernel."""
        Q, K = Q.detach(), K.detach()
        if bool(torch.isfinite(Q).all() and torch.isfinite(K).all()):
            mag = float(max(Q.abs().max(), K.abs().max()))
            raise FloatingPointError(
                f"kernel {self.kernel_name!r}: returned NaN/Inf for finite queries and keys "
                f"(largest entry {mag:.3g}); expected finite scores - check the kernel"
                + (" (or the size of the inputs and weights)" if mag > 1e3 else ""))
        raise FloatingPointError(f"kernel {self.kernel_name!r}: the queries or keys are not "
                                 f"finite; expected finite weights W_Q, W_K")

    def features(self, X) -> torch.Tensor:
        """Per-head features ``S_h(X_i) X_i``, shape ``(N, H, n, D)``."""
        X = self.check_X(X)
        return torch.einsum("Nhij,Njd->Nhid", self._scores(X, check=True), X)

    def forward(self, X) -> torch.Tensor:
        """``T(X_i)`` for every sample, shape ``(N, n, d_out)``."""
        X = self.check_X(X)
        return self._forward(X, check=True)

    def _forward(self, X: torch.Tensor, check: bool = False) -> torch.Tensor:
        S = self._scores(X, check=check)
        V = torch.einsum("Nnd,hdv->Nhnv", X, self.W_V)
        return torch.einsum("Nhij,Nhjv,hvo->Nio", S, V, self.W_O)

    def loss(self, X, Y) -> torch.Tensor:
        """The squared loss ``f = 1/2 sum_i ||T(X_i) - Y_i||_F^2`` (a 0-d tensor)."""
        X, Y = self.check_XY(X, Y)
        return 0.5 * ((self._forward(X, check=True) - Y) ** 2).sum()
