"""The small Transformer classifier of the experiments, built on tdlib's attention kernels.

Configuration of the experiments (the paper's): ``L = 2`` blocks, embedding dimension
``D = 64``, MLP hidden dimension 128, ``H = 2`` heads, learned positional embeddings, mean
pooling over the real (non-padding) tokens, a linear read-out. Each block is

    Z  <- Z + MHA(LN(Z)),        MHA(Z) = concat_h[ S_h(Z) Z W^V_h ] W^O,
    Z  <- Z + MLP(LN(Z)),        S_h(Z) = kernel(Z W^Q_h, Z W^K_h),

with the kernel chosen by name through :func:`tdlib.attention.make_kernel`, so the Softmax and
the Gaussian model differ **only** in that one function and have identical parameters.
Padding tokens (``pad_id``, 0 for text) are masked as keys in every attention layer (as the
Long Range Arena code does) and left out of the mean pooling, so the logits of a padded
sequence are those of the same sequence without its padding (up to rounding). A batch without
any padding, and images (``pad_id=None``), take the unmasked route, unchanged.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from .attention import make_kernel
from .checks import check_int, check_seed
from .fastattention import attend


@dataclass
class Architecture:
    """The model's size and kernel (defaults: the paper's configuration); the one definition of
    these fields, shared by :class:`ModelConfig` and :class:`tdlib.experiments.ExperimentConfig`."""

    D: int = 64
    hidden: int = 128
    H: int = 2
    layers: int = 2
    kernel: str = "softmax"
    kernel_options: dict = field(default_factory=dict)

    def architecture(self) -> dict:
        """The :class:`Architecture` fields of this configuration, as keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(Architecture)}


@dataclass
class ModelConfig(Architecture):
    """Hyper-parameters of :class:`Classifier`: the :class:`Architecture` and the input side."""

    vocab: int = 256
    max_len: int = 128
    classes: int = 2
    pad_id: int | None = 0  # padding: masked as a key, left out of the pooling; None: no padding

    def check(self) -> "ModelConfig":
        """Check every field (raises with a clear message); returns ``self``."""
        for k in ("vocab", "max_len", "D", "hidden", "H", "layers"):
            check_int(k, getattr(self, k))
        check_int("classes", self.classes, minimum=2)
        if self.D % self.H:
            raise ValueError(f"D must be divisible by H (head dimension D/H), got D={self.D}, H={self.H}")
        if self.pad_id is not None:
            check_int("pad_id", self.pad_id, minimum=0)
        checked_kernel(self.kernel, self.kernel_options, self.H, self.D // self.H)  # fails fast
        return self


def checked_kernel(kernel, kernel_options, H: int, d: int):
    """``make_kernel(kernel, **kernel_options)``, tried once on small random queries and keys
    so that a kernel returning the wrong shape or non-finite numbers is named at once (and
    not deep inside a matrix product during training)."""
    if kernel_options is not None and not isinstance(kernel_options, dict):
        raise TypeError(f"kernel_options: expected a dict, got {kernel_options!r}")
    f = make_kernel(kernel, **dict(kernel_options or {}))
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, H, 3, d, generator=g)
    S = f(q, k)
    name = kernel if isinstance(kernel, str) else getattr(kernel, "name", "custom")
    if not isinstance(S, torch.Tensor) or tuple(S.shape) != (1, H, 3, 3):
        got = tuple(S.shape) if isinstance(S, torch.Tensor) else type(S).__name__
        raise ValueError(f"kernel {name!r}: expected kernel(Q, K) to return shape (B, H, n, n) "
                         f"= (1, {H}, 3, 3) for Q, K of shape (1, {H}, 3, {d}), got {got}")
    if not bool(torch.isfinite(S).all()):
        raise ValueError(f"kernel {name!r}: returned NaN/Inf for small random queries and keys")
    return f


class MultiHeadKernelAttention(nn.Module):
    """``concat_h[S_h(Z) Z W^V_h] W^O`` with ``S_h`` from a tdlib kernel; head dim ``d = D/H``.

    ``S_h V_h`` goes through the fused route of :mod:`tdlib.fastattention` for the built-in
    Softmax and Gaussian kernels (equal to the plain kernel, without storing ``S_h``); set the
    attribute ``fused = False`` (or the class attribute) to use the plain kernel everywhere.
    """

    fused: bool = True

    def __init__(self, D: int, H: int, kernel: str, kernel_options=None):
        super().__init__()
        self.H, self.d = H, D // H
        self.W_QKV = nn.Linear(D, 3 * D, bias=False)  # W^Q, W^K, W^V of all heads side by side
        self.W_O = nn.Linear(D, D)
        self.set_kernel(kernel, kernel_options)

    def set_kernel(self, kernel: str, kernel_options=None):
        """Swap the attention kernel (the weights stay): the second stage of the two-stage protocol."""
        self.kernel = checked_kernel(kernel, kernel_options, self.H, self.d)
        self.kernel_label = kernel if isinstance(kernel, str) else getattr(kernel, "name", "custom")

    def forward(self, Z: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Multi-head attention of ``Z`` (shape ``(B, n, D)``), fused where the kernel allows;
        ``key_mask`` (boolean ``(B, n)``, True for a real token) leaves padding keys out."""
        B, n, D = Z.shape
        q, k, v = self.W_QKV(Z).view(B, n, 3, self.H, self.d).permute(2, 0, 3, 1, 4)  # each (B, H, n, d)
        out = attend(self.kernel, q, k, v, fused=self.fused, key_mask=key_mask)  # S(q, k) v, (B, H, n, d)
        return self.W_O(out.transpose(1, 2).reshape(B, n, D))


class Block(nn.Module):
    """One pre-norm Transformer block: ``Z + MHA(LN(Z))``, then ``Z + MLP(LN(Z))``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.D), nn.LayerNorm(cfg.D)
        self.attn = MultiHeadKernelAttention(cfg.D, cfg.H, cfg.kernel, cfg.kernel_options)
        self.mlp = nn.Sequential(nn.Linear(cfg.D, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.D))

    def forward(self, Z, key_mask=None):
        """``Z + MHA(LN(Z))``, then ``Z + MLP(LN(Z))``; shape ``(B, n, D)`` kept (``key_mask``:
        see :meth:`MultiHeadKernelAttention.forward`)."""
        Z = Z + self.attn(self.ln1(Z), key_mask)
        return Z + self.mlp(self.ln2(Z))


class Classifier(nn.Module):
    """Token ids ``(B, n)`` with ``n <= max_len`` -> class logits ``(B, classes)``."""

    def __init__(self, cfg: ModelConfig | None = None, seed: int = 0, **overrides):
        super().__init__()
        cfg = cfg or ModelConfig()
        if not isinstance(cfg, ModelConfig):
            raise TypeError(f"cfg: expected a ModelConfig, got {type(cfg).__name__}")
        known = set(asdict(cfg))
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"Classifier: expected options among {', '.join(sorted(known))}, "
                            f"got unknown {', '.join(unknown)}")
        if overrides:
            cfg = ModelConfig(**{**asdict(cfg), **overrides})
        self.cfg = cfg.check()
        seed = check_seed("seed", seed)
        # The initialisation is a function of the seed only. It is drawn from torch's global
        # generator seeded with ``seed`` (the draws of every stored run), inside fork_rng so
        # that the caller's own random state is left exactly as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.embed = nn.Embedding(cfg.vocab, cfg.D)
            # positions start on the scale of the token embeddings (N(0, 1)), so that attention
            # can use where a token is from the first step: images depend on it (a 0.02 scale
            # stalled Pathfinder at chance for hundreds of steps in our runs)
            self.pos = nn.Parameter(torch.randn(cfg.max_len, cfg.D))
            self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
            self.ln = nn.LayerNorm(cfg.D)
            self.head = nn.Linear(cfg.D, cfg.classes)

    def set_kernel(self, kernel: str, kernel_options=None) -> "Classifier":
        """Use another attention kernel in every block, keeping all weights."""
        for b in self.blocks:
            b.attn.set_kernel(kernel, kernel_options)
        self.cfg = ModelConfig(**{**asdict(self.cfg), "kernel": kernel,
                                  "kernel_options": dict(kernel_options or {})})
        return self

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, classes)`` from token ids ``(B, n)``."""
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"tokens: expected a torch.long tensor of shape (B, n), got "
                            f"{type(tokens).__name__}")
        if tokens.ndim != 2:
            raise ValueError(f"tokens: expected shape (B, n), got {tuple(tokens.shape)}")
        if tokens.shape[1] == 0:
            raise ValueError(f"tokens: expected at least one token per sequence, got shape "
                             f"{tuple(tokens.shape)}")
        if tokens.shape[1] > self.cfg.max_len:
            raise ValueError(f"tokens: at most max_len={self.cfg.max_len} tokens, got {tokens.shape[1]}")
        if tokens.dtype != torch.long:
            raise TypeError(f"tokens: expected integer ids (torch.long), got {tokens.dtype}")
        if len(tokens) and (int(tokens.min()) < 0 or int(tokens.max()) >= self.cfg.vocab):
            raise ValueError(f"tokens: expected ids in [0, {self.cfg.vocab}), got range "
                             f"[{int(tokens.min())}, {int(tokens.max())}]")
        Z = self.embed(tokens) + self.pos[: tokens.shape[1]]
        key_mask = self.key_mask(tokens)
        for b in self.blocks:
            Z = b(Z, key_mask)
        Z = self.ln(Z)
        if self.cfg.pad_id is None:
            pooled = Z.mean(1)
        else:
            mask = (tokens != self.cfg.pad_id).unsqueeze(-1).to(Z.dtype)
            pooled = (Z * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.head(pooled)

    def key_mask(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """``tokens != pad_id`` (shape ``(B, n)``), or ``None`` when nothing is padding (no
        ``pad_id``, or a batch without padding): the unmasked route. A sequence made only of
        padding keeps all its keys (attention needs at least one); its pooled vector is zero."""
        if self.cfg.pad_id is None:
            return None
        keep = tokens != self.cfg.pad_id
        if bool(keep.all()):
            return None
        return keep | ~keep.any(-1, keepdim=True)

    def n_params(self) -> int:
        """The number of trainable numbers in the model."""
        return sum(p.numel() for p in self.parameters())
