"""Self-checks for the book's exercises: one function per exercise, named after its label.

Each function takes the reader's answer (a number, a function or an object the exercise asks
for) and tests it on fresh random instances where it can. A right answer prints the neutral
``correct`` and nothing else (the function returns ``None``, so a notebook echoes no value); a
wrong one raises :class:`Wrong` (an ``AssertionError``) whose message says where the answer fails
and gives a hint, never the answer itself. Any correct answer passes: the checks test properties
of the answer, never the text of one particular solution.

>>> from tdlib import selfcheck
>>> selfcheck.zl_step(my_best_step)  # doctest: +SKIP
correct
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np
import torch

from .attention import KERNEL_NAMES, make_kernel

__all__ = [
    "Wrong", "rowsum", "diagonal", "own_kernel", "zl_step", "zl_heads", "zl_expected",
    "zl_measure", "jt_descent", "jt_first_step", "jt_scale", "ce_no_2d", "ce_log", "ce_search", "softmax_jacobian", "orthogonal",
    "finite_differences", "own_phase", "padding", "filter_norm", "positions", "imdb", "zoo_l2",
    "zoo_sigmoid_jacobian", "zoo_linear_floor", "zoo_own_kernel", "passes", "EXERCISES",
]


class Wrong(AssertionError):
    """The answer is not right; the message says why."""


def _require(ok, message: str):
    if not ok:
        raise Wrong(message)


SUCCESS = "correct"
"""What every check prints for a right answer: the same word whatever the answer, so that the
output of a check never shows a result or a formula."""


def _ok(message: str = "") -> None:
    # ``message`` documents, in the code, what a passing answer satisfies; it is not printed:
    # it would give the result away to a reader who has not solved the exercise yet
    print(SUCCESS)


def _rng(seed=None) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) if seed is not None else 1234)


def _call(name: str, f: Callable, *args):
    _require(callable(f), f"{name}: expected a function, got {type(f).__name__}")
    try:
        return f(*args)
    except Exception as err:  # the reader's code failed: say where
        raise Wrong(f"{name}: expected a function that runs on the check's inputs; it raised "
                    f"{type(err).__name__}: {err}") from err


def _num(name: str, value, want: str = "a finite number") -> float:
    """A reader's number (or a number their function returned), or :class:`Wrong` naming it:
    ``None``, strings, booleans, arrays of several entries and NaN or infinities are refused."""
    if (isinstance(value, np.ndarray) and value.size == 1
            or isinstance(value, torch.Tensor) and value.numel() == 1):
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise Wrong(f"{name}: expected {want}, got {value!r:.60} ({type(value).__name__})")
    if not math.isfinite(float(value)):
        raise Wrong(f"{name}: expected {want}, got {value}")
    return float(value)


def _arr(name: str, value) -> torch.Tensor:
    """A reader's array (or one their function returned) as a finite float64 tensor, or
    :class:`Wrong` naming it."""
    try:
        t = torch.as_tensor(np.asarray(value, dtype=np.float64) if not isinstance(
            value, torch.Tensor) else value).to(torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise Wrong(f"{name}: expected an array of numbers, got {value!r:.60} "
                    f"({type(value).__name__})") from None
    if isinstance(value, torch.Tensor) and (value.is_complex() or value.dtype == torch.bool) \
            or isinstance(value, np.ndarray) and value.dtype.kind in "bc":
        raise Wrong(f"{name}: expected an array of real numbers, got dtype {value.dtype}")
    if not bool(torch.isfinite(t).all()):
        raise Wrong(f"{name}: expected finite numbers, got {int((~torch.isfinite(t)).sum())} "
                    f"NaN/Inf entries")
    return t


def _answer(name: str):
    """Name the reader's answer ``name`` in every :class:`Wrong` of a one-answer check."""
    import functools

    def wrap(check):
        @functools.wraps(check)
        def run(*args, **kwargs):
            try:
                return check(*args, **kwargs)
            except Wrong as err:
                if str(err).startswith(f"{name}:"):
                    raise
                raise Wrong(f"{name}: {err}") from None
        return run
    return wrap


def _close(a, b, rtol=1e-8, atol=1e-10) -> bool:
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=rtol, atol=atol))


# ----------------------------------------------------------------------------- setup and notation

@_answer("gauss_rowsums")
def rowsum(gauss_rowsums: Callable) -> None:
    """ex-rowsum: ``gauss_rowsums(Q, K)`` returns the ``n`` row sums ``phi_l sum_j E_lj psi_j``
    of the Gaussian matrix (``c = 2 sqrt d``) for queries and keys of shape ``(n, d)``."""
    g = _rng(1)
    for n, d in ((3, 2), (6, 4), (5, 8)):
        Q = torch.randn(n, d, generator=g, dtype=torch.float64)
        K = Q + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)
        want = make_kernel("gaussian")(Q, K).sum(-1)
        got = _arr("gauss_rowsums", _call("gauss_rowsums", gauss_rowsums, Q, K))
        _require(_close(got, want), f"gauss_rowsums: your row sums for n={n}, d={d} differ from the Gaussian "
                 "matrix's. Gaussian rows are not normalised: they need not sum to 1; expand "
                 "|q_l - k_j|^2 and mind the width c = 2 sqrt d")
    return _ok("your row sums match the Gaussian matrix; each lies in (0, n] since every entry "
               "lies in (0, 1]")


def diagonal(X, W) -> None:
    """ex-diagonal: tokens ``X`` (``(n, D)``) and ``W`` (``(D, d)``) such that with
    ``W_Q = W_K = W`` some diagonal entry of the Softmax matrix is *not* the largest of its row."""
    X, W = _arr("X", X), _arr("W", W)
    _require(X.ndim == 2 and X.numel() > 0, f"X: expected tokens of shape (n, D), got "
             f"{tuple(X.shape)}")
    _require(W.ndim == 2 and X.shape[1] == W.shape[0] and W.numel() > 0,
             f"W: expected shape (D, d) with D = {X.shape[1]} (the columns of X), got "
             f"{tuple(W.shape)}")
    Q = X @ W
    G = make_kernel("gaussian")(Q, Q)
    _require(_close(torch.diagonal(G), torch.ones(len(X))), "the Gaussian diagonal should be 1")
    S = make_kernel("softmax")(Q, Q)
    beaten = (S.max(-1).values > torch.diagonal(S) * (1 + 1e-9))
    _require(bool(beaten.any()), "in your example every Softmax diagonal entry is the largest of its "
             "row. Hint: a Softmax score is an inner product q_l^T q_j, and an inner product with "
             "another vector can exceed |q_l|^2")
    k = int(beaten.nonzero()[0])
    return _ok(f"in row {k} the Softmax diagonal {S[k, k]:.3f} is below the row's largest entry "
               f"{S[k].max():.3f}, while every Gaussian diagonal entry is exactly 1")


def own_kernel(sigmoid_loss: float, Y) -> None:
    """ex-own-kernel: a ``sigmoid`` kernel is registered and computes
    ``sigmoid(Q K^T / sqrt d)``, and the final loss ``sigmoid_loss`` on targets ``Y`` is below
    1 % of the loss of the zero output, ``1/2 ||Y||^2``."""
    from .attention import KERNELS
    loss = _num("sigmoid_loss", sigmoid_loss, "the final loss (a finite number >= 0)")
    _require(loss >= 0, f"sigmoid_loss: expected the final loss (a finite number >= 0), got {loss}")
    Y = _arr("Y", Y)
    _require(Y.numel() > 0, f"Y: expected the targets of the run, got shape {tuple(Y.shape)}")
    _require("sigmoid" in KERNELS, "register the kernel under the name 'sigmoid'")
    g = _rng(2)
    Q, K = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    got = make_kernel("sigmoid")(Q, K)
    _require(_close(got, torch.sigmoid(Q @ K.T / math.sqrt(3)), rtol=1e-5, atol=1e-6),
             "the kernel registered as 'sigmoid' does not compute sigmoid(Q K^T / sqrt(d))")
    f0 = 0.5 * float((Y ** 2).sum())
    _require(math.isfinite(loss) and 0 <= loss < 1e-2 * f0,
             f"final loss {loss:.3g} is not below 1% of the zero-output loss {f0:.3g}: train "
             "longer or with a larger step (the run of the chapter uses lr=0.01, 1500 steps)")
    return _ok(f"the sigmoid layer's loss is {loss:.3g}, {loss / f0:.1e} of the zero-output loss")


# ----------------------------------------------------------------------------- zero loss

@_answer("best_step")
def zl_step(best_step: Callable) -> None:
    """ex-zl-step: ``best_step(alpha, L)`` is the step that minimises
    ``max(|1 - eta alpha|, |1 - eta L|)`` for ``0 < alpha <= L``."""
    for alpha, L in ((0.1, 1.0), (2.0, 3.0), (1e-3, 50.0), (1.0, 1.0)):
        eta = _num("best_step", _call("best_step", best_step, alpha, L))
        factor = lambda e: max(abs(1 - e * alpha), abs(1 - e * L))  # noqa: E731
        best = factor(2 / (alpha + L))
        _require(factor(eta) <= best * (1 + 1e-9) + 1e-12,
                 f"for alpha={alpha}, L={L} your step {eta:.4g} gives the factor {factor(eta):.4g}, "
                 "and another step gives a smaller one. Hint: sketch |1 - eta alpha| and "
                 "|1 - eta L| as functions of eta")
    return _ok("your step size and contraction factor match the optimum")


@_answer("rank_bound")
def zl_heads(rank_bound: Callable) -> None:
    """ex-zl-heads: ``rank_bound(N, n, D, H)`` is the largest rank the feature matrix ``B``
    (``Nn x HD``) can have when all ``H`` heads have the same attention matrices."""
    g = _rng(3)
    for N, n, D, H in ((2, 3, 4, 3), (3, 4, 20, 2), (1, 5, 2, 4), (2, 2, 8, 1)):
        X = torch.randn(N, n, D, generator=g, dtype=torch.float64)
        S = torch.softmax(torch.randn(N, n, n, generator=g, dtype=torch.float64), -1)
        block = (S @ X).reshape(N * n, D)
        B = torch.cat([block] * H, dim=1)
        r = int(torch.linalg.matrix_rank(B))
        got = _num("rank_bound", _call("rank_bound", rank_bound, N, n, D, H), "an integer")
        _require(int(got) == r,
                 f"for N={N}, n={n}, D={D}, H={H} your bound {got} is too "
                 f"{'large' if int(got) > r else 'small'} for a generic instance with identical "
                 "heads. Hint: what do copies of one block add to the column space, and how many "
                 "rows does B have?")
    return _ok("your rank bound holds for every H and generic instances reach it")


def zl_expected(mean_fstar: Callable, var_fstar: Callable) -> None:
    """ex-zl-expected: ``mean_fstar(y, d_out, Nn, rank)`` is the expected minimum ``E f_*`` and
    ``var_fstar(y, Nn, rank)`` its variance for ``d_out = 1``."""
    for y, d_out, Nn, r in ((1.0, 1, 24, 12), (0.5, 3, 10, 4), (2.0, 2, 7, 7)):
        k = Nn - r
        m = _num("mean_fstar", _call("mean_fstar", mean_fstar, y, d_out, Nn, r))
        _require(math.isclose(m, 0.5 * y**2 * d_out * k, rel_tol=1e-9, abs_tol=1e-12),
                 f"mean_fstar: E f_* for y={y}, d_out={d_out}, Nn={Nn}, rank={r}: your value {m:.4g} is too "
                 f"{'large' if m > 0.5 * y**2 * d_out * k else 'small'}. Hint: in how many "
                 "dimensions does the least-squares residual live?")
        v = _num("var_fstar", _call("var_fstar", var_fstar, y, Nn, r))
        _require(math.isclose(v, 0.5 * y**4 * k, rel_tol=1e-9, abs_tol=1e-12),
                 f"var_fstar: Var f_* for y={y}, Nn={Nn}, rank={r}: your value {v:.4g} is too "
                 f"{'large' if v > 0.5 * y**4 * k else 'small'}. Hint: which distribution does "
                 "|(I - P_B) y|^2 / y^2 have, and what is its variance?")
    return _ok("your mean and variance of the least-squares floor match")


def zl_measure(q_measured: float, q_pred: float) -> None:
    """ex-zl-measure: the measured per-step factor agrees with the predicted one to 2 % in log."""
    q = _num("q_measured", q_measured)
    q_pred = _num("q_pred", q_pred)
    _require(0 < q_pred < 1, f"q_pred: expected the predicted factor in (0, 1), got {q_pred}")
    _require(0 < q < 1, f"q_measured: expected the factor of a converging run, in (0, 1), got {q}")
    _require(abs(math.log(q) / math.log(q_pred) - 1) < 0.02,
             f"your factor {q:.6f} is not the predicted {q_pred:.6f}: fit the *tail* of log(f_t - f_*)")
    return _ok("the measured factor agrees with the predicted one to 2 % in log")


# ----------------------------------------------------------------------------- joint training

@_answer("pl_factor")
def jt_descent(pl_factor: Callable) -> None:
    """ex-jt-descent: ``pl_factor(eta, mu, L)`` is the one-step factor
    ``1 - 2 eta mu (1 - eta L / 2)`` that the descent lemma and the PL inequality give."""
    for eta, mu_, L in ((0.1, 1.0, 2.0), (1.0, 0.2, 1.0), (0.5, 0.01, 3.0), (1e-3, 5.0, 100.0)):
        want = 1 - 2 * eta * mu_ * (1 - eta * L / 2)
        got = _num("pl_factor", _call("pl_factor", pl_factor, eta, mu_, L))
        _require(math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12),
                 f"for eta={eta}, mu={mu_}, L={L} your factor {got:.6g} is not the one the two "
                 "inequalities give. Hint: start from the descent lemma for one step of size eta, "
                 "then bound |grad f|^2 from below")
    return _ok("your contraction factor and best step size match")


@_answer("attention_gradients")
def jt_first_step(attention_gradients: Callable) -> None:
    """ex-jt-first-step: ``attention_gradients(model, X, Y)`` returns ``{"W_Q": ..., "W_K": ...}``,
    the Frobenius norms of the gradients of the loss in ``W^Q`` and ``W^K``."""
    from . import joint, zeroloss

    for kernel in KERNEL_NAMES:
        for moved in (False, True):
            m, X, Y = zeroloss.make_instance(kernel, N=2, n=3, D=8, d=4, seed=11)
            if moved:
                joint.perturb(m, scale=0.3, seed=12)
            Ws = [m.W_Q, m.W_K]
            for W in Ws:
                W.requires_grad_(True)
            want = [float(g.norm()) for g in torch.autograd.grad(m.loss(X, Y), Ws)]
            for W in Ws:
                W.requires_grad_(False)
            got = _call("attention_gradients", attention_gradients, m, X, Y)
            _require(isinstance(got, Mapping) and {"W_Q", "W_K"} <= set(got),
                     f"expected a dict with keys 'W_Q' and 'W_K', got {got!r}")
            where = "with W_V != 0" if moved else "at W_V = 0"
            for name, w in zip(("W_Q", "W_K"), want):
                _require(math.isclose(float(got[name]), w, rel_tol=1e-6, abs_tol=1e-10),
                         f"{kernel} {where}: your |grad_{name} f| = {float(got[name]):.6g} is "
                         f"too {'large' if float(got[name]) > w else 'small'}. Hint: differentiate "
                         "the model's own loss with autograd and take Frobenius norms")
    return _ok("at W_V = 0 both gradients vanish; once W_V moves, the attention moves too")


@_answer("largest_gamma")
def jt_scale(largest_gamma: Callable) -> None:
    """ex-jt-scale: ``largest_gamma(model, X, Y)`` is the largest factor ``gamma`` for which the
    joint condition (C1)-(C2) holds with targets ``gamma Y`` (``W^V_0 = 0``)."""
    from . import joint, zeroloss

    for kernel in KERNEL_NAMES:
        m, X, Y = zeroloss.make_instance(kernel, N=2, n=3, D=48, seed=21)
        gamma = _num("largest_gamma", _call("largest_gamma", largest_gamma, m, X, Y))
        _require(gamma > 0, f"{kernel}: expected a positive gamma, got {gamma}")
        for factor, should in ((0.5, True), (2.0, False)):
            holds = joint.sufficient_condition(m, X, factor * gamma * Y).holds
            _require(holds == should,
                     f"{kernel}: with targets {factor} * gamma * Y (gamma = {gamma:.4g}) the "
                     f"condition {'fails' if should else 'still holds'}: gamma is too "
                     f"{'large' if should else 'small'}. Hint: which of (C1)-(C3) depends on the "
                     "targets, and how does it scale with them?")
    return _ok("your largest target scale matches")


# ----------------------------------------------------------------------------- Softmax local minimum

@_answer("q_from_p")
def ce_no_2d(q_from_p: Callable) -> None:
    """ex-ce-no-2d: ``q_from_p(p, K)`` returns the query ``q`` in R^2 with
    ``softmax(K q / sqrt 2) = p``, for three affinely independent keys (rows of ``K``) and ``p``
    in the open simplex: the inverse of the map of the exercise."""
    g = _rng(4)
    for _ in range(4):
        K = torch.randn(3, 2, generator=g, dtype=torch.float64)
        p = torch.softmax(2 * torch.randn(3, generator=g, dtype=torch.float64), 0)
        q = _arr("q_from_p", _call("q_from_p", q_from_p, p, K)).reshape(-1)
        _require(q.shape == (2,), f"expected a query of shape (2,), got {tuple(q.shape)}")
        back = torch.softmax(K @ q / math.sqrt(2), 0)
        _require(_close(back, p, rtol=1e-6, atol=1e-9),
                 f"softmax(K q / sqrt 2) = {back.numpy().round(4)} but p = {p.numpy().round(4)}. "
                 "Hint: take logarithms, and remember that adding one number to every score "
                 "changes nothing")
    return _ok("every p in the open simplex has exactly one query: the map is onto and invertible")


@_answer("s_of_t")
def ce_log(s_of_t: Callable) -> None:
    """ex-ce-log: ``s_of_t(t, a, s0)`` solves ``s' = a exp(-s)`` with ``s(0) = s0``."""
    for a, s0 in ((1.0, 0.0), (0.3, 2.0), (5.0, -1.0)):
        t = np.array([0.0, 0.5, 3.0, 100.0])
        s = _arr("s_of_t", _call("s_of_t", s_of_t, t, a, s0)).numpy()
        _require(s.shape == t.shape and abs(s[0] - s0) < 1e-9,
                 f"s(0) should be s0={s0}, got {s[:1]} (and one value per time)")
        h = 1e-6
        ds = (np.asarray(s_of_t(t[1:] + h, a, s0)) - np.asarray(s_of_t(t[1:] - h, a, s0))) / (2 * h)
        _require(np.allclose(ds, a * np.exp(-s[1:]), rtol=1e-5),
                 f"s'(t) = {ds.round(5)} but a exp(-s) = {(a * np.exp(-s[1:])).round(5)}. "
                 "Hint: the equation is separable")
    return _ok("your closed form for the query s(t) matches the iteration")


def ce_search(mine, mine_layer, P) -> None:
    """ex-ce-search: a new three-token, two-output counterexample ``mine`` (a search result) whose
    layer certificate ``mine_layer`` holds; ``P`` is the chapter's instance."""
    _require(mine.problem.n == 3 and mine.problem.d_out == 2, "three tokens with two-dimensional values")
    _require(not np.allclose(mine.problem.values.numpy(), P.values.numpy()), "find a new instance")
    _require(mine_layer.is_instance, "the layer's certificate does not hold: " + "; ".join(mine_layer.reasons))
    _require(mine_layer.grad_norm < 1e-10 and (mine_layer.eigenvalues > 0).all() and mine_layer.loss > 0,
             "a strict local minimum needs a zero gradient, positive Hessian eigenvalues, positive loss")
    return _ok("a certified non-global local minimum")


# ----------------------------------------------------------------------------- Gaussian convergence

@_answer("jac")
def softmax_jacobian(jac: Callable) -> None:
    """ex-softmax-jacobian: ``jac(q, K, U)`` returns the ``d_out x d`` Jacobian of
    ``o(q) = U^T softmax(K q / sqrt d)`` (keys ``K`` ``(n, d)``, values ``U`` ``(n, d_out)``)."""
    g = _rng(5)
    for n, d, d_out in ((3, 2, 2), (4, 6, 5), (5, 3, 1)):
        q = torch.randn(d, generator=g, dtype=torch.float64)
        K = torch.randn(n, d, generator=g, dtype=torch.float64)
        U = torch.randn(n, d_out, generator=g, dtype=torch.float64)
        f = lambda x: U.T @ torch.softmax(K @ x / math.sqrt(d), 0)  # noqa: E731
        want = torch.autograd.functional.jacobian(f, q)
        got = _arr("jac", _call("jac", jac, q, K, U))
        same = torch.as_tensor(got).shape == want.shape
        _require(_close(got, want), f"n={n}, d={d}, d_out={d_out}: your Jacobian differs from autograd "
                 + (f"by {float((torch.as_tensor(got) - want).abs().max()):.3g}. " if same else
                    f"in shape: expected {tuple(want.shape)}. ")
                 + "Hint: apply the chain rule through the scores z = K q / sqrt d; the "
                 "derivative of softmax is an n x n matrix")
        r = int(torch.linalg.matrix_rank(want))
        _require(r <= min(n - 1, d, d_out), "rank bound violated: this should not happen")
    return _ok("your Jacobian matches autograd, and its rank stays within the bound")


@_answer("n_directions")
def orthogonal(n_directions: Callable) -> None:
    """ex-orthogonal: ``n_directions(n, d)`` is the number of independent directions orthogonal
    to the affine hull of ``n`` affinely independent keys in R^d (``d >= n``)."""
    from .query import jacobians
    g = _rng(6)
    for n, d in ((3, 4), (2, 5), (4, 4), (3, 8)):
        K = torch.randn(n, d, generator=g, dtype=torch.float64)
        w = torch.softmax(torch.randn(n, generator=g, dtype=torch.float64), 0)
        q = (w @ K).unsqueeze(0)                       # a query in aff(K)
        U = torch.randn(n, d + 2, generator=g, dtype=torch.float64)
        J = jacobians(q, K, U, "gaussian")[0]          # (d_out, d)
        null = d - int(torch.linalg.matrix_rank(J))
        got = _num("n_directions", _call("n_directions", n_directions, n, d), "an integer")
        _require(got == d - n + 1,
                 f"for n={n} keys in R^{d} your count {got} is too "
                 f"{'large' if got > d - n + 1 else 'small'}. Hint: what is the dimension of the "
                 "affine hull of n affinely independent points?")
        _require(null >= got, "the Jacobian should vanish on all of them")
    return _ok("your count of the directions that J(q) kills is right")


@_answer("fd_err")
def finite_differences(fd_err: Mapping[str, float]) -> None:
    """ex-finite-differences: ``fd_err[kernel]`` is the largest finite-difference error of the
    closed-form Jacobian for each kernel."""
    _require(isinstance(fd_err, Mapping) and set(fd_err) == set(KERNEL_NAMES),
             f"fd_err: expected a dict with an error for each of {KERNEL_NAMES}, got {fd_err!r:.80}")
    errs = {k: _num(f"fd_err[{k!r}]", v, "an error >= 0") for k, v in fd_err.items()}
    _require(all(0 <= v < 1e-7 for v in errs.values()),
             f"fd_err: finite differences disagree, expected errors below 1e-7, got {fd_err}")
    return _ok("both closed-form Jacobians agree with finite differences")


@_answer("result")
def own_phase(result: dict) -> None:
    """ex-own-phase: ``result`` is a sweep (``tdlib.phase.sweep``) with one output coordinate and
    both kernels as teacher and student."""
    _require(isinstance(result, dict) and isinstance(result.get("results"), dict)
             and isinstance(result.get("config"), dict),
             "expected the dictionary returned by phase.sweep (or read from results.json)")
    _require(result["config"]["d_out"] == 1, f"expected d_out = 1, got {result['config']['d_out']}")
    want = {f"{t}->{s}" for t in KERNEL_NAMES for s in KERNEL_NAMES}
    _require(want <= set(result["results"]), f"expected the pairs {sorted(want)}, "
             f"got {sorted(result['results'])}")
    return _ok("a d_out = 1 sweep with every teacher/student pair")


# ----------------------------------------------------------------------------- experiments

@_answer("changes")
def padding(changes: Mapping[str, bool]) -> None:
    """ex-padding: ``changes[kernel]`` says whether the attention weights a query puts on the
    real keys change when ``n_p`` identical padding keys are added (``"softmax"``, ``"gaussian"``)."""
    g = _rng(7)
    q, K = torch.randn(1, 4, generator=g), torch.randn(3, 4, generator=g)
    pad = torch.zeros(1, 4)
    truth = {}
    for kernel in KERNEL_NAMES:
        k = make_kernel(kernel)
        real = [k(q, torch.cat([K, pad.expand(m, 4)]))[0, :3] for m in (0, 1, 5)]
        truth[kernel] = not all(torch.allclose(real[0], r) for r in real[1:])
    _require(isinstance(changes, Mapping) and set(changes) == set(KERNEL_NAMES)
             and all(isinstance(v, (bool, np.bool_)) for v in changes.values()),
             f"expected True or False for each of {KERNEL_NAMES}, got {changes!r:.80}")
    for kernel, moved in truth.items():
        _require(bool(changes[kernel]) == moved,
                 f"{kernel}: your answer is not right. Hint: write the weight of one real key "
                 "with and without n_p padding keys, and compare")
    return _ok("your padded weights match, for both kernels")


@_answer("normalize")
def filter_norm(normalize: Callable) -> None:
    """ex-filter-norm: ``normalize(direction, W)`` rescales each row of ``direction`` to the norm
    of the same row of ``W`` (both 2-d tensors of one shape)."""
    g = _rng(8)
    W = torch.randn(5, 3, generator=g, dtype=torch.float64)
    d = torch.randn(5, 3, generator=g, dtype=torch.float64)
    got = _arr("normalize", _call("normalize", normalize, d, W))
    _require(got.shape == W.shape, f"expected shape {tuple(W.shape)}, got {tuple(got.shape)}")
    _require(_close(got.norm(dim=1), W.norm(dim=1)), "each row should have the norm of W's row")
    cos = (got * d).sum(1) / (got.norm(dim=1) * d.norm(dim=1))
    _require(_close(cos, torch.ones(5)), "each row should keep the direction of the raw row")
    for c in (0.1, 7.0):
        _require(_close(torch.as_tensor(normalize(d, c * W)), c * got),
                 f"scaling W by {c} should scale the normalized direction by {c}")
    return _ok("your normalized direction scales with the weights, row by row")


def positions(model, acc_small, acc_default) -> None:
    """ex-positions: ``model`` has positional embeddings scaled to about 0.02 of their default
    size; ``acc_small`` and ``acc_default`` are test-accuracy curves (lists of numbers in [0, 1])."""
    std = float(model.pos.detach().std())
    _require(std < 0.1, f"positional embeddings have standard deviation {std:.3f}: multiply "
             "model.pos.data by 0.02 right after construction")
    for name, acc in (("acc_small", acc_small), ("acc_default", acc_default)):
        a = np.asarray(acc, dtype=float)
        _require(a.ndim == 1 and len(a) >= 2 and ((a >= 0) & (a <= 1)).all(),
                 f"{name}: expected a curve of at least two accuracies in [0, 1], got {acc!r}")
    return _ok("small positional embeddings and two accuracy curves")


def imdb(data: dict, acc: float) -> None:
    """ex-imdb: ``data`` is the loaded IMDb-layout folder (``max_len=32``) and ``acc`` the final
    training accuracy of a few Adam steps."""
    _require(data["x_train"].shape[1] == 32, "use max_len=32")
    _require(len(data["y_train"]) >= 8 and data["y_train"].mean() == 0.5, "two classes, balanced")
    _require(all(("great" in t) == bool(y) for t, y in zip(data["text_train"], data["y_train"])),
             "labels follow the folders")
    _require(acc == 1.0, f"a few Adam steps should fit the reviews exactly, got accuracy {acc}")
    return _ok("the loader reads the IMDb layout and the model fits it")


# ----------------------------------------------------------------------------- kernel zoo

@_answer("l2_as_softmax")
def zoo_l2(l2_as_softmax: Callable) -> None:
    """ex-zoo-l2: ``l2_as_softmax(Q, K)`` gives the weights of the ``l2`` kernel for queries
    ``Q (m, d)`` and keys ``K (n, d)``, on fresh random inputs of several sizes."""
    g = _rng()
    for m, n, d in ((1, 3, 1), (4, 3, 2), (5, 6, 4)):
        Q, K = 3 * torch.randn(m, d, generator=g, dtype=torch.float64), \
            torch.randn(n, d, generator=g, dtype=torch.float64)
        got = _call("l2_as_softmax", l2_as_softmax, Q, K)
        _require(isinstance(got, torch.Tensor) and tuple(got.shape) == (m, n),
                 f"expected a tensor of shape {(m, n)}, got "
                 f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")
        _require(_close(got, make_kernel("l2")(Q, K), rtol=1e-9, atol=1e-12),
                 f"the weights differ from the l2 kernel's for m, n, d = {m}, {n}, {d}. Hint: "
                 "expand the squared distance; which of its terms survive the row normalization?")
    return _ok("your affine-logit Softmax gives the l2 weights")


@_answer("jac")
def zoo_sigmoid_jacobian(jac: Callable) -> None:
    """ex-zoo-sigmoid-jacobian: ``jac(q, K, U)`` is the Jacobian of the ``sigmoid-logn`` output
    of one query, compared with autograd at fresh random points."""
    g = _rng()
    for n, d, d_out in ((3, 1, 2), (3, 4, 2), (5, 3, 1)):
        K = torch.randn(n, d, generator=g, dtype=torch.float64)
        U = torch.randn(n, d_out, generator=g, dtype=torch.float64)
        q = 2 * torch.randn(d, generator=g, dtype=torch.float64)
        out = lambda q: make_kernel("sigmoid-logn")(q[None], K)[0] @ U  # noqa: E731
        want = torch.autograd.functional.jacobian(out, q)
        got = _call("sigmoid_jac", jac, q, K, U)
        _require(isinstance(got, torch.Tensor) and got.shape == want.shape,
                 f"expected a tensor of shape {tuple(want.shape)} (d_out, d)")
        _require(_close(got, want), f"the Jacobian differs from autograd for n, d, d_out = "
                 f"{n}, {d}, {d_out}. Hint: differentiate each weight through its score, then "
                 "sum the values with those derivatives")
    return _ok("your sigmoid Jacobian matches autograd")


@_answer("linear_floor")
def zoo_linear_floor(linear_floor: Callable) -> None:
    """ex-zoo-linear-floor: ``linear_floor(X, K, U, Y)`` is the smallest query-only loss of the
    ``linear-n`` kernel, compared with the least-squares minimum (pseudo-inverse) on three
    problems."""
    from . import zoo
    for seed, (N, n, D, d) in enumerate(((2, 3, 4, 2), (3, 4, 8, 3), (2, 3, 12, 4))):
        X, K, U, Y, _, W0 = zoo.make_problem(N, n, D, d, 2, "softmax", seed=100 + seed)
        A, R0 = zoo.linear_operator(X, K, U, Y)
        sol = torch.linalg.pinv(A) @ R0
        best = 0.5 * float(((A @ sol - R0) ** 2).sum())
        got = _num("linear_floor", _call("linear_floor", linear_floor, X, K, U, Y))
        _require(abs(got - best) <= 1e-8 * max(1.0, best),
                 f"problem {seed}: your minimum is too {'large' if got > best else 'small'}. "
                 "Hint: with this kernel the outputs are affine in W^Q")
    return _ok("your minimum of the linear kernel's loss is right on three fresh problems")


@_answer("prediction")
def zoo_own_kernel(prediction: Mapping[str, bool]) -> None:
    """ex-zoo-own-kernel: a ``cauchy`` kernel is registered and computes
    ``1 / (1 + ||q - k||^2 / (2 sqrt d))``, and ``prediction`` matches
    :func:`tdlib.zoo.properties` on the four keys asked for."""
    from . import zoo
    from .attention import KERNELS
    keys = ("row_stochastic", "vanishes", "affine_in_q", "dead_zone")
    _require(isinstance(prediction, Mapping) and set(keys) <= set(prediction)
             and all(isinstance(prediction[k], (bool, np.bool_)) for k in keys),
             f"expected a dict with True or False for each of {keys}, got {prediction!r:.80}")
    _require("cauchy" in KERNELS, "register the kernel under the name 'cauchy'")
    g = _rng(3)
    Q, K = torch.randn(4, 3, generator=g), torch.randn(5, 3, generator=g)
    want = 1 / (1 + torch.cdist(Q, K) ** 2 / (2 * math.sqrt(3)))
    _require(_close(make_kernel("cauchy")(Q, K), want, rtol=1e-5, atol=1e-6),
             "the kernel registered as 'cauchy' does not compute 1 / (1 + |q - k|^2 / c)")
    measured = zoo.properties("cauchy")
    wrong = [k for k in keys if bool(prediction[k]) != measured[k]]
    _require(not wrong, f"{len(wrong)} of your {len(keys)} predictions differ from the "
             f"measurement: go back to the formula (is each weight positive? do the weights sum "
             f"to one? what happens far from every key?)")
    return _ok("your prediction matches the measured properties of the Cauchy kernel")


EXERCISES = {
    "ex-rowsum": rowsum, "ex-diagonal": diagonal, "ex-own-kernel": own_kernel,
    "ex-zl-step": zl_step, "ex-zl-heads": zl_heads, "ex-zl-expected": zl_expected,
    "ex-zl-measure": zl_measure, "ex-jt-descent": jt_descent,
    "ex-jt-first-step": jt_first_step, "ex-jt-scale": jt_scale, "ex-ce-no-2d": ce_no_2d, "ex-ce-log": ce_log,
    "ex-ce-search": ce_search, "ex-softmax-jacobian": softmax_jacobian,
    "ex-orthogonal": orthogonal, "ex-finite-differences": finite_differences,
    "ex-own-phase": own_phase, "ex-padding": padding, "ex-filter-norm": filter_norm,
    "ex-positions": positions, "ex-imdb": imdb, "ex-zoo-l2": zoo_l2,
    "ex-zoo-sigmoid-jacobian": zoo_sigmoid_jacobian, "ex-zoo-linear-floor": zoo_linear_floor,
    "ex-zoo-own-kernel": zoo_own_kernel,
}
"""Exercise label -> its self-check (every exercise of the book has one)."""


def passes(check: Callable, *answer) -> bool:
    """Run ``check(*answer)`` without its printed message: ``True`` if the answer is right, else
    :class:`Wrong` propagates with its explanation."""
    import contextlib
    import io

    if not callable(check):
        raise TypeError(f"check: expected a self-check function such as selfcheck.zl_step, got "
                        f"{type(check).__name__}")

    with contextlib.redirect_stdout(io.StringIO()):
        check(*answer)
    return True


# ----------------------------------------------------------------------------- in-context regression

def _icl_covariances():
    """Three covariances of the in-context chapter's exercises: isotropic, diagonal, rotated."""
    from . import icl
    return [torch.eye(2, dtype=torch.float64),
            torch.diag(torch.tensor([2.0, 0.5, 0.25], dtype=torch.float64)),
            icl.random_covariance(4, seed=11)]


@_answer("noisy_optimum")
def icl_noisy(noisy_optimum: Callable, noisy_minimum: Callable) -> None:
    """ex-icl-noisy: ``noisy_optimum(cov, n, noise_var)`` is the minimiser
    ``n (n Sigma + (tr Sigma + s^2) I)^{-1}`` of the risk with label noise of variance ``s^2``
    and ``noisy_minimum(cov, n, noise_var)`` its minimum, on three covariances."""
    for k, S in enumerate(_icl_covariances()):
        for n, s2 in ((2, 0.3), (9, 1.5)):
            m = S.shape[0]
            lam = torch.linalg.eigvalsh(S)
            ridge = float(lam.sum()) + s2
            want = n * torch.linalg.inv(n * S + ridge * torch.eye(m, dtype=torch.float64))
            low = 0.5 * s2 + 0.5 * float((lam * (lam + ridge) / (n * lam + ridge)).sum())
            got = _arr("noisy_optimum", _call("noisy_optimum", noisy_optimum, S.clone(), n, s2))
            _require(tuple(got.shape) == (m, m), f"expected an ({m}, {m}) matrix for an "
                     f"{m} x {m} covariance, got shape {tuple(got.shape)}")
            _require(_close(got, want), f"covariance {k}, n = {n}: not the minimiser. Hint: "
                     "given the covariates, the noise adds a term to the second moment of "
                     "(1/n) sum y_j x_j; compare it with the term tr(Sigma) Sigma")
            best = _num("noisy_minimum", _call("noisy_minimum", noisy_minimum, S.clone(), n, s2))
            _require(abs(best - low) <= 1e-9 * max(1.0, low),
                     f"noisy_minimum: covariance {k}, n = {n}: too "
                     f"{'large' if best > low else 'small'}. Hint: the query's own noise cannot "
                     "be predicted, and the ridge enters the second moment only")
    return _ok("your noisy optimum and minimum are right on three covariances")


@_answer("largest_step")
def icl_step(largest_step: Callable) -> None:
    """ex-icl-step: ``largest_step(m, n)`` is ``2 / lambda_max`` of the population risk's
    Hessian for ``Sigma = I_m``, ``2 n^2 / ((n - 1)(n + m))``, on several sizes."""
    from . import icl
    for m, n in ((1, 2), (3, 5), (4, 20), (10, 7)):
        want = 2 / float(icl.hessian_eigenvalues(torch.eye(m, dtype=torch.float64), n)[-1])
        got = _num("largest_step", _call("largest_step", largest_step, m, n))
        _require(abs(got - want) <= 1e-9 * want, f"m = {m}, n = {n}: too "
                 f"{'large' if got > want else 'small'}. Hint: for Sigma = I every eigenvalue "
                 "of the Hessian is the same; the threshold is 2 over it")
    return _ok("your threshold is 2 / lambda_max of the Hessian for every size tried")


@_answer("mean_norm4")
def icl_quartic(mean_norm4: Callable) -> None:
    """ex-icl-quartic: ``mean_norm4(cov)`` is ``E ||x||^4 = 2 tr(Sigma^2) + (tr Sigma)^2`` for
    ``x ~ N(0, Sigma)``, on three covariances."""
    for k, S in enumerate(_icl_covariances()):
        want = 2 * float(torch.trace(S @ S)) + float(torch.trace(S)) ** 2
        got = _num("mean_norm4", _call("mean_norm4", mean_norm4, S.clone()))
        _require(abs(got - want) <= 1e-9 * want, f"covariance {k} ({S.shape[0]} x "
                 f"{S.shape[0]}): too {'large' if got > want else 'small'}. Hint: "
                 "||x||^4 = tr(x x^T x x^T); take the trace of part (1) of the lemma")
    return _ok("your fourth moment of the norm is right on three covariances")


__all__ += ["icl_noisy", "icl_step", "icl_quartic"]
EXERCISES.update({"ex-icl-noisy": icl_noisy, "ex-icl-step": icl_step,
                  "ex-icl-quartic": icl_quartic})


# The dynamics' checks live in tdlib.icl, next to the model they test; registered here.
from .icl import check_balance as icl_balance, check_head_time as icl_head_time  # noqa: E402

EXERCISES.update({"ex-icl-balance": icl_balance, "ex-icl-head-time": icl_head_time})
__all__ += ["icl_balance", "icl_head_time"]

# The bridge's checks live in tdlib.icl too; registered here.
from .icl import check_flat_risk as icl_flat, check_flat_gaussian_risk as icl_flat_gauss  # noqa: E402

EXERCISES.update({"ex-icl-flat": icl_flat, "ex-icl-flat-gauss": icl_flat_gauss})
__all__ += ["icl_flat", "icl_flat_gauss"]
