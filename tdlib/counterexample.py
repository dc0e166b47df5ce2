"""For the chapter *The Softmax local-minimum counterexample*: the loss of one query, and
certified local minima of the Softmax loss.

The setting of the chapter *The Softmax local-minimum counterexample*. One attention head has
``n`` keys ``k_1..k_n`` (rows of ``keys``, shape ``(n, d)``) and ``n`` value rows ``v_1..v_n``
(rows of ``values``, shape ``(n, d_out)``; in the layer they are the rows of ``X W^V W^O``). A
query ``q`` (shape ``(d,)``) gives the output

    o(q) = sum_j S_j(q) v_j,     S(q) = kernel(q, keys)   (one row of the attention matrix),

and the per-query loss ``g(q) = 1/2 ||o(q) - y||^2`` for a target ``y`` (shape ``(d_out,)``).
With ``X = I_n`` (one sample, ``D = n``) the query of token ``k`` is row ``k`` of ``W^Q`` and the
layer's loss is ``f(W^Q) = sum_k g(W^Q_k)`` when every token has target ``y``:
:func:`layer` builds exactly that :class:`tdlib.AttentionLayer`.

For ``d = 1`` and the Softmax kernel, with ``s = q / sqrt(d) = q`` and ``p = softmax(s k)``,
derivatives have a closed form in terms of moments under ``p`` (see :func:`closed_form`):

    o'(s)  = E_p[(v - o)(k - kbar)],      o''(s) = E_p[(v - o)(k - kbar)^2],
    g'(s)  = (o - y) . o',                g''(s) = ||o'||^2 + (o - y) . o''.

Main entry points: :func:`instance` (the chapter's instance), :func:`certify` (Newton refinement
plus a readable :class:`Certificate`), :func:`run_gd` (many GD runs at once), :func:`basins`,
:func:`search` (random search plus certification), :func:`draw` (the interactive figure),
:func:`saturation_bound` and :func:`softmax_jacobian` (the saturation lemma), and
:func:`basin_shares` (where GD from random initializations ends, against ``Phi(s_b / sigma)``).
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from .attention import KERNEL_NAMES, AttentionLayer, gaussian_width, make_kernel
from .checks import (as_tensor, check_choice, check_finite, check_int, check_positive, check_rank,
                     check_real, check_seed, real_array)



REPORT_WIDTH = 80
"""Width of the printed reports of this module (certificates, search results, tables)."""


# ---------------------------------------------------------------------------------------------
# The problem
# ---------------------------------------------------------------------------------------------


@dataclass
class PerQueryProblem:
    """A query-only problem: ``keys (n, d)``, ``values (n, d_out)``, ``target (d_out,)``.

    ``kernel`` is ``"softmax"`` or ``"gaussian"`` (the layer's kernels, with their default
    scalings ``1/sqrt(d)`` and ``c = 2 sqrt(d)``). Arrays are stored as float64 tensors.
    """

    keys: torch.Tensor
    values: torch.Tensor
    target: torch.Tensor
    kernel: str = "softmax"

    def __post_init__(self):
        self.keys = as_tensor("keys", self.keys, dtype=torch.float64)
        if self.keys.numel() == 0:
            raise ValueError(f"keys: expected at least one key, got shape {tuple(self.keys.shape)}")
        self.values = as_tensor("values", self.values, dtype=torch.float64)
        self.target = as_tensor("target", self.target, dtype=torch.float64)
        if self.keys.ndim == 1:  # a list of scalar keys means d = 1
            self.keys = self.keys[:, None]
        check_rank("keys", self.keys, 2, "(n, d)")
        check_rank("values", self.values, 2, "(n, d_out)")
        check_rank("target", self.target, 1, "(d_out,)")
        if self.values.shape[0] != self.keys.shape[0]:
            raise ValueError(
                f"values: expected one row per key, i.e. shape ({self.keys.shape[0]}, d_out), "
                f"got shape {tuple(self.values.shape)}"
            )
        if self.target.shape[0] != self.values.shape[1]:
            raise ValueError(
                f"target: expected shape ({self.values.shape[1]},) to match values of shape "
                f"{tuple(self.values.shape)}, got {tuple(self.target.shape)}"
            )
        for name in ("keys", "values", "target"):
            check_finite(name, getattr(self, name))
        check_choice("kernel", self.kernel, KERNEL_NAMES)

    @property
    def n(self) -> int:
        return self.keys.shape[0]

    @property
    def d(self) -> int:
        return self.keys.shape[1]

    @property
    def d_out(self) -> int:
        return self.values.shape[1]

    def with_kernel(self, kernel: str) -> "PerQueryProblem":
        """The same keys, values and target with another kernel."""
        return PerQueryProblem(self.keys, self.values, self.target, kernel)

    def with_target(self, target) -> "PerQueryProblem":
        """The same keys, values and kernel with another target."""
        return PerQueryProblem(self.keys, self.values, target, self.kernel)

    def check_q(self, q, name: str = "q") -> torch.Tensor:
        """Queries as a float64 tensor of shape ``(..., d)`` (a scalar or 1-d batch if ``d = 1``)."""
        q = as_tensor(name, q, dtype=torch.float64)
        if self.d == 1 and (q.ndim == 0 or q.shape[-1] != 1):
            q = q[..., None]
        if q.ndim == 0 or q.shape[-1] != self.d or q.numel() == 0:
            raise ValueError(f"{name}: expected at least one query, of shape (..., d) with "
                             f"d={self.d}, got shape {tuple(q.shape)}")
        check_finite(name, q)
        return q

    def weights(self, q) -> torch.Tensor:
        """The attention row ``S(q)``, shape ``(..., n)`` (differentiable in ``q``)."""
        q = self.check_q(q)
        return self._weights(q)

    def _weights(self, q: torch.Tensor) -> torch.Tensor:
        keys = self.keys.expand(q.shape[:-1] + self.keys.shape)   # same batch axes as q
        return make_kernel(self.kernel)(q[..., None, :], keys)[..., 0, :]

    def output(self, q) -> torch.Tensor:
        """``o(q) = sum_j S_j(q) v_j``, shape ``(..., d_out)``."""
        return self._weights(self.check_q(q)) @ self.values

    def loss(self, q) -> torch.Tensor:
        """``g(q) = 1/2 ||o(q) - y||^2``, shape ``(...)``."""
        r = self._weights(self.check_q(q)) @ self.values - self.target
        return 0.5 * (r * r).sum(-1)

    def grad(self, q) -> torch.Tensor:
        """``grad g(q)`` by autograd, shape ``(..., d)``."""
        q = self.check_q(q).clone().requires_grad_(True)
        (gq,) = torch.autograd.grad(self.loss(q).sum(), q)
        return gq.detach()

    def grad_closed_form(self, q) -> torch.Tensor:
        """``grad g(q)`` in closed form, shape ``(..., d)`` (no autograd: fast).

        With ``a_j = v_j . (o - y)``: Softmax ``(E_p[a k] - E_p[a] E_p[k]) / sqrt(d)``;
        Gaussian ``-(2/c) sum_j S_j a_j (q - k_j)`` with ``c = gaussian_width(d)``.
        """
        q = self.check_q(q)
        S = self._weights(q)
        a = (S @ self.values - self.target) @ self.values.T          # (..., n)
        if self.kernel == "softmax":
            Sa = S * a
            mean_k = S @ self.keys
            grad = Sa @ self.keys - Sa.sum(-1, keepdim=True) * mean_k
            return grad / math.sqrt(self.d)
        c = gaussian_width(self.d)
        Sa = S * a
        return -(2 / c) * (Sa.sum(-1, keepdim=True) * q - Sa @ self.keys)

    def hessian(self, q) -> torch.Tensor:
        """``Hess g(q)`` by autograd for a single query, shape ``(d, d)``."""
        q = self.check_q(q)
        if q.ndim != 1:
            raise ValueError(f"hessian: expected a single query of shape ({self.d},), got {tuple(q.shape)}")
        return torch.autograd.functional.hessian(lambda x: self.loss(x), q).detach()


def _check_problem(problem, softmax_1d: bool = False) -> "PerQueryProblem":
    """``problem`` if it is a :class:`PerQueryProblem` (a Softmax one with ``d = 1`` when
    ``softmax_1d``), or a clear error."""
    if not isinstance(problem, PerQueryProblem):
        raise TypeError(f"problem: expected a PerQueryProblem (e.g. instance()), got "
                        f"{type(problem).__name__}")
    if softmax_1d and (problem.kernel != "softmax" or problem.d != 1):
        raise ValueError(f"problem: expected a Softmax problem with d = 1, got "
                         f"kernel={problem.kernel!r}, d={problem.d}")
    return problem


LAYOUTS = ("line", "lifted", "rhombus")


def instance(kernel: str = "softmax", d: int = 1,
             layout: str = "line") -> PerQueryProblem:
    """The chapter's instance: keys ``-1, 0, 1``, values ``(-3, 8), (-2, 0), (-1, 8)``, and the
    target ``y = o(-3)``, the Softmax output at the query ``q = -3``.

    ``d = 2`` places the keys in the plane, by ``layout``:

    * ``"line"``: ``(k, 0)``, on a line (``W^K`` of rank one; same Softmax curve,
      traversed at ``q_1 = sqrt(2) s``): the side-by-side comparison with the Gaussian
      kernel;
    * ``"lifted"``: the middle key moved off the line to ``(0, 1)`` (affinely
      independent keys);
    * ``"rhombus"``: four keys ``(-1, 0), (0, 1), (1, 0), (0, -1)``, no three on a line,
      the two keys off the axis both carrying the middle value ``(-2, 0)``.

    For ``d = 2`` the target is the Softmax output at the query ``(-3 sqrt 2, 0)``
    (scores ``3, 0, -3`` on the keys of the axis), the same ``y`` as for ``d = 1``
    except for the rhombus.
    """
    check_int("d", d)
    if d not in (1, 2):
        raise ValueError(f"d: expected 1 or 2, got {d}")
    check_choice("layout", layout, LAYOUTS)
    if d == 1 and layout != "line":
        raise ValueError(f"layout: {layout!r} needs d=2, got d=1")
    keys = torch.tensor([[-1.0], [0.0], [1.0]], dtype=torch.float64)
    values = torch.tensor([[-3.0, 8.0], [-2.0, 0.0], [-1.0, 8.0]], dtype=torch.float64)
    if d == 1:
        maker = PerQueryProblem(keys, values, torch.zeros(2), "softmax")
        return PerQueryProblem(keys, values, maker.output(ZERO_LOSS_QUERY), kernel)
    keys = torch.cat([keys, torch.zeros_like(keys)], dim=1)
    if layout == "lifted":
        keys[1, 1] = 1.0
    elif layout == "rhombus":
        keys = torch.cat([keys, torch.tensor([[0.0, -1.0]], dtype=torch.float64)])
        keys[1, 1] = 1.0
        values = torch.cat([values, values[1:2]])
    q0 = torch.tensor([ZERO_LOSS_QUERY * math.sqrt(2), 0.0], dtype=torch.float64)
    target = PerQueryProblem(keys, values, torch.zeros(2), "softmax").output(q0)
    return PerQueryProblem(keys, values, target, kernel)


ZERO_LOSS_QUERY = -3.0
"""The chapter's target is the Softmax output at this query, so ``g(-3) = 0``."""


# ---------------------------------------------------------------------------------------------
# Closed forms (d = 1, Softmax) and the layer
# ---------------------------------------------------------------------------------------------


def closed_form(problem: PerQueryProblem, s) -> dict:
    """Closed-form ``o, o', o'', g, g', g''`` of a ``d = 1`` Softmax problem at queries ``s``.

    ``s`` has shape ``(m,)`` (or is a number). With ``p = softmax(s k)``, ``kbar = p . k``:
    ``o' = E_p[(v - o)(k - kbar)]``, ``o'' = E_p[(v - o)(k - kbar)^2]``, ``g' = (o - y).o'``,
    ``g'' = ||o'||^2 + (o - y).o''``. Returns NumPy float64 arrays (``o*`` of shape ``(m, d_out)``,
    ``g*`` of shape ``(m,)``). Pure NumPy: fast enough for the interactive figure.
    """
    _check_problem(problem, softmax_1d=True)
    s = problem.check_q(s, "s")[..., 0].reshape(-1).numpy()
    k = problem.keys[:, 0].numpy()
    V = problem.values.numpy()
    y = problem.target.numpy()
    z = s[:, None] * k[None, :]
    z -= z.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    o = p @ V
    kc = k[None, :] - (p @ k)[:, None]  # k - kbar, shape (m, n)
    # the centred forms keep their accuracy under saturation, where v_j - o and k_j - kbar are
    # both tiny for the winning key (E_p[v (k - kbar)] alone would cancel catastrophically)
    Vc = V[None, :, :] - o[:, None, :]  # v - o, shape (m, n, d_out)
    pk = (p * kc)[:, :, None]
    o1 = (pk * Vc).sum(1)
    o2 = (pk * kc[:, :, None] * Vc).sum(1)
    r = o - y
    return {
        "p": p, "o": o, "o1": o1, "o2": o2,
        "g": 0.5 * (r**2).sum(1),
        "g1": (r * o1).sum(1),
        "g2": (o1**2).sum(1) + (r * o2).sum(1),
    }


def layer(problem: PerQueryProblem, W_Q=None, seed: int = 0):
    """The query-only problem as a real :class:`tdlib.AttentionLayer`; returns ``(model, X, Y)``.

    One sample of ``n`` tokens with ``X = I_n`` (so ``D = n``), ``W^K = keys`` (shape ``(n, d)``),
    ``W^V = values`` (``d_v = d_out``), ``W^O = I``, and every token's target ``y``. Token ``k``'s
    query is row ``k`` of ``W^Q``, and ``f(W^Q) = sum_k g(W^Q_k)``. ``W_Q`` (shape ``(n, d)``)
    defaults to a standard normal draw from ``seed``.
    """
    _check_problem(problem)
    n, d, d_out = problem.n, problem.d, problem.d_out
    model = AttentionLayer(D=n, H=1, d=d, d_v=d_out, d_out=d_out, kernel=problem.kernel, seed=seed)
    model.set_weights(W_K=problem.keys, W_V=problem.values, W_O=torch.eye(d_out, dtype=torch.float64))
    if W_Q is not None:
        W = as_tensor("W_Q", W_Q, dtype=torch.float64)
        if W.numel() != n * d:
            raise ValueError(f"W_Q: expected {n * d} entries (shape ({n}, {d})), got shape "
                             f"{tuple(W.shape)}")
        model.set_weights(W_Q=W.reshape(n, d))
    X = torch.eye(n, dtype=torch.float64)[None]
    Y = problem.target.expand(1, n, d_out).clone()
    return model, X, Y


def layer_loss_fn(model: AttentionLayer, X, Y) -> Callable[[torch.Tensor], torch.Tensor]:
    """``W^Q`` (flattened) ``-> f``, with ``W^K, W^V, W^O`` of ``model`` held fixed (for Newton)."""
    if not isinstance(model, AttentionLayer):
        raise TypeError(f"model: expected a tdlib.AttentionLayer, got {type(model).__name__}")
    X, Y = model.check_XY(X, Y)
    shape = model.W_Q.shape
    WK, WV, WO = (getattr(model, p).detach() for p in ("W_K", "W_V", "W_O"))

    def f(w: torch.Tensor) -> torch.Tensor:
        WQ = w.reshape(shape)
        Q = torch.einsum("Nnd,hde->Nhne", X, WQ)
        K = torch.einsum("Nnd,hde->Nhne", X, WK)
        S = model.kernel(Q, K)
        T = torch.einsum("Nhij,Njd,hdv,hvo->Nio", S, X, WV, WO)
        return 0.5 * ((T - Y) ** 2).sum()

    return f


# ---------------------------------------------------------------------------------------------
# Newton refinement and the certificate
# ---------------------------------------------------------------------------------------------


def newton(f: Callable[[torch.Tensor], torch.Tensor], x0, tol: float = 1e-13, max_iter: int = 50):
    """Newton's method ``x <- x - H(x)^{-1} grad f(x)`` in float64 until ``||grad f|| <= tol``.

    ``f`` maps a vector of shape ``(m,)`` to a number. Returns ``(x, grad_norm, iterations)``.
    Newton converges to the stationary point near ``x0`` (quadratically once close), so start it
    from the end of a gradient-descent run.
    """
    if not callable(f):
        raise TypeError(f"f: expected a function of a vector, got {type(f).__name__}")
    x = as_tensor("x0", x0, dtype=torch.float64).reshape(-1).clone()
    if x.numel() == 0:
        raise ValueError("x0: expected a non-empty starting point, got an empty array")
    check_finite("x0", x)
    tol = check_positive("tol", tol)
    max_iter = check_int("max_iter", max_iter, minimum=0)
    gn = math.inf
    for it in range(max_iter + 1):
        g = torch.autograd.functional.jacobian(f, x)
        gn = float(g.norm())
        if gn <= tol or it == max_iter:
            break
        H = torch.autograd.functional.hessian(f, x)
        try:
            x = x - torch.linalg.solve(H, g)
        except torch.linalg.LinAlgError:  # a flat (singular) Hessian: no Newton step exists
            break
    return x.detach(), gn, it


@dataclass
class Certificate:
    """A float64 certificate that ``point`` is a strict local minimum of positive loss.

    ``grad_norm`` is ``||grad f||`` at ``point`` after Newton refinement, ``eigenvalues`` the
    Hessian's eigenvalues there, ``loss`` the loss there; ``zero_point`` a point of (numerically)
    zero loss ``zero_loss``; ``barrier`` the largest loss along the straight segment from
    ``zero_point`` to ``point`` minus ``loss``: the largest of ``segment_points``
    equally spaced values, refined by Newton's method on the derivative along the
    segment from that grid maximum (``barrier_point`` is where, ``barrier_slope`` the
    derivative left there; the refinement is kept only if it stays between the
    neighbouring grid points and raises the value). For one scalar query the segment is
    the only way between the two points, so when the loss has a single local maximum on
    it this is the barrier to float64 accuracy; otherwise the segment gives an upper
    bound on the lowest pass.
    ``is_instance`` says whether all conditions hold and ``reasons`` lists those that fail.
    """

    point: np.ndarray
    loss: float
    grad_norm: float
    eigenvalues: np.ndarray
    zero_point: Optional[np.ndarray]
    zero_loss: float
    barrier: float
    newton_iterations: int
    thresholds: dict = field(default_factory=dict)
    reasons: List[str] = field(default_factory=list)
    barrier_point: Optional[np.ndarray] = None
    barrier_slope: float = math.nan

    @property
    def is_instance(self) -> bool:
        return not self.reasons

    def report(self) -> str:
        """A readable, multi-line report of every number and the verdict."""
        fmt = lambda a: np.array2string(np.asarray(a), precision=6, separator=", ")  # noqa: E731
        lines = [
            "certificate of a non-global strict local minimum (float64)",
            f"  point                 {fmt(self.point)}",
            f"  Newton iterations     {self.newton_iterations}",
            f"  gradient norm         {self.grad_norm:.3e}   (need < {self.thresholds.get('grad', 0):.0e})",
            f"  Hessian eigenvalues   {fmt(self.eigenvalues)}   (need all > {self.thresholds.get('eig', 0):.0e})",
            f"  loss there            {self.loss:.6f}   (need > {self.thresholds.get('loss', 0):.0e})",
            f"  zero-loss point       {fmt(self.zero_point) if self.zero_point is not None else 'none'}",
            f"  loss at that point    {self.zero_loss:.3e}   (need < {self.thresholds.get('zero', 0):.0e})",
            f"  barrier               {self.barrier:.6f}   "
            f"(segment maximum, slope left {self.barrier_slope:.1e})",
        ]
        verdict = ("CERTIFIED: a strict local minimum with positive loss, while zero loss is "
                   "attained elsewhere" if self.is_instance
                   else "NOT an instance: " + "; ".join(self.reasons))
        # wrapped so that the report fits a column of REPORT_WIDTH characters
        lines += textwrap.wrap(verdict, REPORT_WIDTH, initial_indent="  verdict               ",
                               subsequent_indent=" " * 24, break_on_hyphens=False)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def __repr__(self) -> str:
        verdict = "certified" if self.is_instance else "rejected"
        return (f"Certificate({verdict}: loss {self.loss:.4g}, grad norm {self.grad_norm:.1e}, "
                f"min eig {self.eigenvalues.min():.3g})")


def certify(
    f: Callable[[torch.Tensor], torch.Tensor],
    x0,
    zero_point=None,
    grad_tol: float = 1e-10,
    eig_tol: float = 1e-8,
    loss_tol: float = 1e-6,
    zero_tol: float = 1e-20,
    segment_points: int = 2001,
) -> Certificate:
    """Refine ``x0`` by Newton's method on ``f`` and certify it (see :class:`Certificate`).

    ``f`` maps a flat float64 vector to the loss: a problem's ``g`` (use ``problem.loss``) or a
    layer's ``f(W^Q)`` (use :func:`layer_loss_fn`). ``zero_point`` is a point where the loss
    should vanish (e.g. the query that generated the target). Conditions: gradient norm below
    ``grad_tol``, every Hessian eigenvalue above ``eig_tol``, loss above ``loss_tol``, and loss at
    ``zero_point`` below ``zero_tol``.
    """
    if not callable(f):
        raise TypeError(f"f: expected a function of a vector, got {type(f).__name__}")
    for name, v in (("grad_tol", grad_tol), ("eig_tol", eig_tol), ("loss_tol", loss_tol), ("zero_tol", zero_tol)):
        check_positive(name, v)
    check_int("segment_points", segment_points, minimum=2)
    max_iter = 50
    x, gn, iters = newton(f, x0, tol=min(grad_tol, 1e-13), max_iter=max_iter)
    H = torch.autograd.functional.hessian(f, x)
    eig = torch.linalg.eigvalsh(0.5 * (H + H.T)).numpy()
    loss = float(f(x))
    reasons = []
    if not gn < grad_tol:
        reasons.append(f"gradient norm {gn:.2e} is not below {grad_tol:.0e}")
    if not torch.isfinite(x).all():
        raise FloatingPointError("certify: Newton's method produced non-finite values; start closer to a minimum")
    if iters >= max_iter:
        reasons.append(f"Newton's method did not settle within {max_iter} iterations (a plateau or a drift to infinity?)")
    if not (eig > eig_tol).all():
        reasons.append(f"smallest Hessian eigenvalue {eig.min():.3e} is not above {eig_tol:.0e}")
    if not loss > loss_tol:
        reasons.append(f"the loss {loss:.3e} is not positive (<= {loss_tol:.0e}): this is a global minimum")
    zp, zl, barrier = None, math.nan, math.nan
    if zero_point is None:
        reasons.append("no zero-loss point was given")
    else:
        zp_t = as_tensor("zero_point", zero_point, dtype=torch.float64).reshape(-1)
        check_finite("zero_point", zp_t)
        if zp_t.shape != x.shape:
            raise ValueError(f"zero_point: expected shape {tuple(x.shape)}, got {tuple(zp_t.shape)}")
        zl = float(f(zp_t))
        zp = zp_t.numpy()
        if not zl < zero_tol:
            reasons.append(f"the loss {zl:.3e} at the zero-loss point is not below {zero_tol:.0e}")
        ts = torch.linspace(0, 1, segment_points, dtype=torch.float64)
        seg = torch.stack([f(zp_t + t * (x - zp_t)) for t in ts])
        i = int(seg.argmax())
        t_b, top, slope = _refine_segment_max(f, zp_t, x, ts, i, float(seg[i]))
        barrier = top - loss
        b_point = (zp_t + t_b * (x - zp_t)).detach().numpy()
    return Certificate(
        point=x.numpy(), loss=loss, grad_norm=gn, eigenvalues=eig, zero_point=zp, zero_loss=zl,
        barrier=barrier, newton_iterations=iters,
        barrier_point=None if zero_point is None else b_point,
        barrier_slope=math.nan if zero_point is None else slope,
        thresholds={"grad": grad_tol, "eig": eig_tol, "loss": loss_tol, "zero": zero_tol}, reasons=reasons,
    )


def _refine_segment_max(f, a, b, ts, i, grid_max, iters: int = 30):
    """Newton's method on ``h'(t)``, ``h(t) = f(a + t (b - a))``, from ``ts[i]``.

    Returns ``(t, h(t), |h'(t)|)``; falls back to the grid point if Newton leaves the
    two neighbouring grid cells or does not raise ``h`` (e.g. a maximum at an end).
    """
    def h(t):
        return f(a + t * (b - a))

    def derivs(t):
        t = torch.tensor(float(t), dtype=torch.float64)
        d1 = torch.autograd.functional.jacobian(h, t)
        d2 = torch.autograd.functional.hessian(h, t)
        return float(d1), float(d2)

    lo, hi = float(ts[max(i - 1, 0)]), float(ts[min(i + 1, len(ts) - 1)])
    t = float(ts[i])
    for _ in range(iters):
        d1, d2 = derivs(t)
        if d2 >= 0 or not math.isfinite(d1):   # not concave: no interior maximum here
            break
        step = d1 / d2
        t_new = t - step
        if not lo <= t_new <= hi:
            break
        t = t_new
        if abs(step) < 1e-15:
            break
    value = float(h(torch.tensor(t, dtype=torch.float64)))
    if not value >= grid_max:
        t, value = float(ts[i]), grid_max
    return t, value, abs(derivs(t)[0])


# ---------------------------------------------------------------------------------------------
# Gradient descent on many initializations at once, and basins
# ---------------------------------------------------------------------------------------------


def run_gd(problem: PerQueryProblem, q0, lr: float = 0.05, steps: int = 2000, record_every: int = 0):
    """Gradient descent ``q <- q - lr grad g(q)`` from every row of ``q0`` (shape ``(m, d)``) at once.

    Returns ``(q_final (m, d), path)`` where ``path`` has shape ``(steps // record_every + 1, m, d)``
    (``None`` if ``record_every == 0``). float64; the gradient is the closed form of
    :func:`closed_form` for a ``d = 1`` Softmax problem and
    :meth:`PerQueryProblem.grad_closed_form` otherwise.
    """
    _check_problem(problem)
    lr = check_positive("lr", lr)
    steps = check_int("steps", steps, minimum=0)
    record_every = check_int("record_every", record_every, minimum=0)
    q = problem.check_q(q0, "q0").clone()
    if q.ndim == 1:
        q = q[None]
    path = [q.clone()] if record_every else None
    fast = problem.kernel == "softmax" and problem.d == 1  # closed form: same numbers, much faster
    for t in range(1, steps + 1):
        if fast:
            q = q - lr * torch.from_numpy(closed_form(problem, q[:, 0].numpy())["g1"])[:, None]
        else:
            q = q - lr * problem.grad_closed_form(q)
        if not torch.isfinite(q).all():
            raise FloatingPointError(f"run_gd: the iterates became non-finite at step {t}; lr={lr:g} is too large")
        if record_every and t % record_every == 0:
            path.append(q.clone())
    return q, (torch.stack(path) if record_every else None)


def basins(problem: PerQueryProblem, q0, minima: Sequence, lr: float = 0.05, steps: int = 2000, radius: float = 1e-3):
    """Which of ``minima`` (a list of points of shape ``(d,)``) GD from each row of ``q0`` reaches.

    Returns an integer array of shape ``(m,)``: index into ``minima``, or ``-1`` if the run ends
    farther than ``radius`` from all of them (e.g. it drifts to infinity).
    """
    radius = check_positive("radius", radius)
    if isinstance(minima, (str, bytes)) or not hasattr(minima, "__len__") or not len(minima):
        raise ValueError(f"minima: expected a non-empty list of points of shape "
                         f"({_check_problem(problem).d},), got {minima!r}")
    M = [_check_problem(problem).check_q(m, "minima").reshape(-1) for m in minima]
    if any(m.shape != (problem.d,) for m in M):
        raise ValueError(f"minima: expected points of shape ({problem.d},), got shapes "
                         f"{[tuple(m.shape) for m in M]}")
    M = torch.stack(M)
    q, _ = run_gd(problem, q0, lr=lr, steps=steps)
    dist = torch.cdist(q, M)
    label = dist.argmin(1)
    label[dist.min(1).values > radius] = -1
    return label.numpy()


# ---------------------------------------------------------------------------------------------
# Random search plus certification
# ---------------------------------------------------------------------------------------------


@dataclass
class SearchResult:
    """What :func:`search` found: the ``problem``, its ``certificate`` (``None`` if nothing was
    found), the number of random problems tried and the query ``q_star`` that generated the target."""

    problem: Optional[PerQueryProblem]
    certificate: Optional[Certificate]
    tried: int
    q_star: Optional[np.ndarray]

    def __str__(self) -> str:
        if self.certificate is None:
            return f"no certified instance among {self.tried} random problems"
        P = self.problem
        return (
            f"found after {self.tried} random problem(s): n={P.n}, d={P.d}, d_out={P.d_out}, kernel={P.kernel}\n"
            f"keys   = {np.array2string(P.keys.numpy(), precision=4)}\n"
            f"values = {np.array2string(P.values.numpy(), precision=4)}\n"
            f"target = {np.array2string(P.target.numpy(), precision=4)} = o(q*) with q* = "
            f"{np.array2string(self.q_star, precision=4)}\n" + self.certificate.report()
        )


def search(
    n: int = 3,
    d: int = 1,
    d_out: int = 2,
    kernel: str = "softmax",
    trials: int = 50,
    starts: int = 64,
    seed: int = 0,
    scale: float = 3.0,
    lr: float = 0.05,
    steps: int = 400,
    min_loss: float = 1e-6,
) -> SearchResult:
    """Search random query-only problems for a certified non-global strict local minimum.

    Each trial draws keys ``N(0, 1)`` of shape ``(n, d)``, values ``N(0, scale^2)`` of shape
    ``(n, d_out)`` and a query ``q*`` ``N(0, scale^2)``, and sets the target ``y = o(q*)`` (so zero
    loss is attainable at ``q*``). It runs GD from ``starts`` random queries, takes the end point
    with the largest loss among those that stopped moving, and calls :func:`certify`. Returns the
    first certified instance, or a :class:`SearchResult` with ``certificate=None``. ``min_loss`` is
    the smallest loss at the local minimum that counts (raise it, e.g. to ``0.05``, to skip
    instances whose spurious minimum lies barely above zero).
    """
    n, d, d_out = check_int("n", n, minimum=2), check_int("d", d), check_int("d_out", d_out)
    trials, starts = check_int("trials", trials), check_int("starts", starts)
    check_choice("kernel", kernel, KERNEL_NAMES)
    scale = check_positive("scale", scale)
    min_loss = check_positive("min_loss", min_loss)
    lr, steps = check_positive("lr", lr), check_int("steps", steps, minimum=0)
    gen = torch.Generator().manual_seed(check_seed("seed", seed))
    for trial in range(1, trials + 1):
        keys = torch.randn(n, d, generator=gen, dtype=torch.float64)
        values = scale * torch.randn(n, d_out, generator=gen, dtype=torch.float64)
        q_star = scale * torch.randn(d, generator=gen, dtype=torch.float64)
        q0 = scale * torch.randn(starts, d, generator=gen, dtype=torch.float64)
        P = PerQueryProblem(keys, values, torch.zeros(d_out), kernel)
        P = P.with_target(P.output(q_star).detach())
        try:
            q, _ = run_gd(P, q0, lr=lr, steps=steps)
        except FloatingPointError:
            continue
        loss = P.loss(q).detach()
        still = P.grad(q).norm(dim=-1) < 1e-3  # nearly stationary (Newton in certify() finishes the job)
        candidates = torch.nonzero(still & (loss > min_loss)).flatten()
        # try distinct end points, highest loss first; certify() rejects plateaus and global minima
        tried_points: list = []
        for i in candidates[loss[candidates].argsort(descending=True)]:
            if any(float((q[i] - t).norm()) < 1e-3 for t in tried_points) or len(tried_points) >= 5:
                continue
            tried_points.append(q[i])
            cert = certify(lambda x: P.loss(x), q[i], zero_point=q_star, loss_tol=min_loss)
            if cert.is_instance:
                return SearchResult(P, cert, trial, q_star.numpy())
    return SearchResult(None, None, trials, None)


# ---------------------------------------------------------------------------------------------
# The interactive figure
# ---------------------------------------------------------------------------------------------


def gd_1d(problem: PerQueryProblem, s0: float, lr: float = 0.05, steps: int = 3000):
    """GD on a ``d = 1`` Softmax problem with the closed-form derivative ``g'(s)`` (fast).

    Returns the path of queries, shape ``(steps + 1,)``.
    """
    _check_problem(problem, softmax_1d=True)
    s0 = check_real("s0", s0)
    lr = check_positive("lr", lr)
    steps = check_int("steps", steps, minimum=0)
    k = problem.keys[:, 0].tolist()
    V = problem.values.tolist()
    y = problem.target.tolist()
    m, c = len(k), len(y)
    path = np.empty(steps + 1)
    s = path[0] = float(s0)
    for t in range(1, steps + 1):
        z = [s * kj for kj in k]
        zmax = max(z)
        e = [math.exp(zj - zmax) for zj in z]
        tot = sum(e)
        p = [ej / tot for ej in e]
        kbar = sum(pj * kj for pj, kj in zip(p, k))
        o = [sum(p[j] * V[j][a] for j in range(m)) for a in range(c)]
        o1 = [sum(p[j] * (k[j] - kbar) * (V[j][a] - o[a]) for j in range(m)) for a in range(c)]
        s -= lr * sum((o[a] - y[a]) * o1[a] for a in range(c))
        if not math.isfinite(s):
            raise FloatingPointError(f"gd_1d: the query became non-finite at step {t}; lr={lr:g} is too large")
        path[t] = s
    return path


def draw(init: float = 1.0, target_query: float = ZERO_LOSS_QUERY, lr: float = 0.1, steps: int = 1500):
    """The chapter's interactive figure for the Softmax instance with ``y = o(target_query)``.

    Left: the output curve ``o(s)``, the target and where GD from ``s_0 = init`` ends. Right: the
    loss ``g(s)`` with the GD path. Returns the figure. Takes well under a second.
    """
    import matplotlib.pyplot as plt

    from .plotting import kernel_color, new_axes

    init, target_query = check_real("init", init), check_real("target_query", target_query)
    lr, steps = check_positive("lr", lr), check_int("steps", steps, minimum=0)
    base = instance()
    P = base.with_target(base.output(target_query).detach())
    path = gd_1d(P, init, lr=lr, steps=steps)
    grid = np.linspace(-8, 8, 801)
    cf = closed_form(P, grid)
    end = closed_form(P, path[-1])
    start = closed_form(P, path[0])
    y = P.target.numpy()
    col = kernel_color("softmax")
    # fixed margins: the constrained layout took 40% of a redraw
    axes = new_axes(ncols=2, height=3.4, layout="none")
    axes[0].figure.subplots_adjust(left=0.09, right=0.98, bottom=0.15, top=0.96, wspace=0.32)
    ax = axes[0]
    ax.plot(cf["o"][:, 0], cf["o"][:, 1], color=col, label="output curve $o(s)$")
    ax.plot(*P.values.numpy().T, "s", color="#666666", ms=5, label="value rows $v_j$")
    ax.plot(*y, "*", color="k", ms=12, label="target $y$")
    ax.plot(*start["o"][0], "o", mfc="white", color=col, ms=7, label="start")
    ax.plot(*end["o"][0], "o", color=col, ms=7, label="end of GD")
    ax.set_xlabel("output coordinate 1")
    ax.set_ylabel("output coordinate 2")
    ax.xaxis.set_major_locator(plt.MaxNLocator(5))
    ax.legend(loc="lower left")
    ax = axes[1]
    ax.plot(grid, cf["g"], color=col)
    ax.plot(path, closed_form(P, path)["g"], ".", color="#009E73", ms=2)
    ax.plot(path[0], start["g"][0], "o", mfc="white", color=col, ms=7)
    ax.plot(path[-1], end["g"][0], "o", color=col, ms=7)
    ax.set_xlabel("query $s$")
    ax.set_ylabel("loss $g(s)$")
    ax.text(0.03, 0.95, f"end: s = {path[-1]:.3f}\ng = {end['g'][0]:.3g}", transform=ax.transAxes,
            va="top")
    return plt.gcf()


# ---------------------------------------------------------------------------------------------
# The chapter's checks and statistics
# ---------------------------------------------------------------------------------------------


def softmax_jacobian(p) -> torch.Tensor:
    """``J(p) = diag(p) - p p^T``, the Jacobian of the softmax at weights ``p`` (shape ``(n,)``,
    a probability vector with positive entries), shape ``(n, n)``."""
    p = as_tensor("p", p, dtype=torch.float64)
    check_rank("p", p, 1, "(n,)")
    if p.numel() == 0:
        raise ValueError("p: expected a probability vector of shape (n,) with n >= 1, got shape (0,)")
    check_finite("p", p)
    if not bool((p > 0).all()) or abs(float(p.sum()) - 1) > 1e-9:
        raise ValueError(f"p: expected a probability vector with positive entries, got "
                         f"entries in [{float(p.min()):.3g}, {float(p.max()):.3g}] summing to "
                         f"{float(p.sum()):.6g}")
    return torch.diag(p) - torch.outer(p, p)


def saturation_bound(problem: PerQueryProblem, q) -> float:
    """The right side of the saturation bound of the chapter,

        ||grad g(q)|| <= (2 / sqrt(d)) ||K||_2 ||V||_2 ||o(q) - y|| (1 - p_max(q)),

    for a Softmax ``problem`` (``K``: keys ``(n, d)``, ``V``: values ``(n, d_out)``) and one query
    ``q`` of shape ``(d,)``. ``1 - p_max`` is computed as the sum of the other weights, so it
    keeps its relative accuracy when attention saturates (``p_max`` within 1e-16 of 1)."""
    if _check_problem(problem).kernel != "softmax":
        raise ValueError(f"problem: expected a Softmax problem, got kernel={problem.kernel!r} "
                         f"(the bound uses that softmax weights sum to one)")
    q = problem.check_q(q)
    if q.ndim != 1:
        raise ValueError(f"q: expected one query of shape ({problem.d},), got {tuple(q.shape)}")
    p = problem.weights(q)
    rest = p.sort().values[:-1].sum()
    norm2 = lambda M: torch.linalg.matrix_norm(M, 2)  # noqa: E731
    resid = (problem.output(q) - problem.target).norm()
    return float(2 / math.sqrt(problem.d) * norm2(problem.keys) * norm2(problem.values)
                 * resid * rest)


def _Phi(x: float) -> float:
    """The standard normal distribution function."""
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


@dataclass
class BasinShares:
    """What :func:`basin_shares` measured, one entry per initialization scale ``sigma``:
    ``good`` the share of single queries that ended left of ``s_b`` (the good basin), ``zero``
    the share that reached the zero-loss query, ``zero_layer`` the share of layers (``tokens``
    queries each) whose queries all did; ``predicted = Phi(s_b / sigma)`` is the predicted
    share of one query, ``predicted ** tokens`` that of a layer."""

    sigmas: np.ndarray
    good: np.ndarray
    zero: np.ndarray
    zero_layer: np.ndarray
    predicted: np.ndarray
    tokens: int
    runs: int
    steps: int

    @property
    def predicted_layer(self) -> np.ndarray:
        return self.predicted ** self.tokens

    def __str__(self) -> str:
        lines = [f"{self.runs} layers of {self.tokens} queries per sigma, {self.steps} GD steps",
                 "        ---------- one query ----------   ------- layer -------",
                 " sigma  good basin  reached 0  predicted   reached 0  predicted"]
        for row in zip(self.sigmas, self.good, self.zero, self.predicted, self.zero_layer,
                       self.predicted_layer):
            lines.append("{:6.2f}  {:10.3f}  {:9.3f}  {:9.3f}   {:9.3f}  {:9.3f}".format(*row))
        return "\n".join(lines)

    def plot(self, ax=None):
        """Shares against ``sigma`` (log axis): predictions as lines, measurements as marks."""
        import matplotlib.pyplot as plt

        from .plotting import kernel_color

        ax = ax or plt.gca()
        one, layer = kernel_color("softmax"), "#7570b3"
        s = self.sigmas
        ax.semilogx(s, self.predicted, "-", color=one, lw=1,
                    label=r"one query, predicted $\Phi(s_b/\sigma)$")
        ax.semilogx(s, self.good, "o", color=one, mfc="none",
                    label="one query: ended in the good basin")
        ax.semilogx(s, self.zero, "o", color=one, label="one query: reached zero loss")
        ax.semilogx(s, self.predicted_layer, "--", color=layer, lw=1,
                    label=rf"layer, predicted $\Phi(s_b/\sigma)^{self.tokens}$")
        ax.semilogx(s, self.zero_layer, "s", color=layer, label="layer: reached zero loss")
        ax.set_xticks(s, [f"{x:g}" for x in s])
        ax.minorticks_off()
        ax.set_xlabel(r"initialization scale $\sigma$")
        ax.set_ylabel("fraction of runs")
        ax.set_ylim(0, 1)
        return ax


def basin_shares(problem: PerQueryProblem, s_b: float, sigmas, runs: int = 600,
                 lr: float = 0.2, steps: int = 600, seed: int = 7,
                 zero_query: float = ZERO_LOSS_QUERY, tol: float = 1e-2) -> BasinShares:
    """Run GD on ``runs`` layers per initialization scale and count where the queries end.

    For each ``sigma`` of ``sigmas`` the ``runs * n`` initial queries (``n = problem.n``
    tokens per layer, ``X = I_n``) are drawn from ``N(0, sigma^2)``; each runs ``steps`` GD
    steps of size ``lr`` on the ``d = 1`` Softmax ``problem``. A query is in the good basin when
    it ends left of ``s_b`` (the single local maximum of ``g``) and reached zero loss when it
    ends within ``tol`` of ``zero_query``. Returns a :class:`BasinShares`."""
    _check_problem(problem, softmax_1d=True)
    try:
        sigmas = real_array("sigmas", sigmas, "a non-empty list of positive scales")
    except TypeError:
        raise TypeError(f"sigmas: expected a non-empty list of positive scales, got "
                        f"{sigmas!r}") from None
    if sigmas.ndim != 1 or not len(sigmas) or not (np.isfinite(sigmas) & (sigmas > 0)).all():
        raise ValueError(f"sigmas: expected a non-empty list of positive scales, got {sigmas!r}")
    s_b, zero_query = check_real("s_b", s_b), check_real("zero_query", zero_query)
    runs = check_int("runs", runs)
    tol = check_positive("tol", tol)
    lr, steps = check_positive("lr", lr), check_int("steps", steps, minimum=0)
    seed = check_seed("seed", seed)
    n = problem.n
    gen = torch.Generator().manual_seed(int(seed))
    good, zero, zero_layer = [], [], []
    for sig in sigmas:
        init = float(sig) * torch.randn(runs * n, generator=gen, dtype=torch.float64)
        q_end, _ = run_gd(problem, init, lr=lr, steps=steps)
        q_end = q_end.reshape(runs, n).numpy()
        at_zero = np.abs(q_end - zero_query) < tol
        good.append((q_end < s_b).mean())
        zero.append(at_zero.mean())
        zero_layer.append(at_zero.all(1).mean())
    pred = np.array([_Phi(s_b / s) for s in sigmas])
    return BasinShares(sigmas, np.array(good), np.array(zero), np.array(zero_layer), pred,
                       n, runs, steps)
