# %% [raw]
# # ASSIGNMENT CONFIG
# name: kernel-zoo
# init_cell: true
# check_all_cell: true
# export_cell: false
# run_tests: false
# generate: true
# files: []
# strip_solutions_from_all_cells: true

# %% [markdown]
# # Problem set: which property of a kernel decides the trap
#
# This problem set goes with the chapter *A kernel zoo: which property of a kernel decides the
# trap* of the book and uses its notation: for one query $q \in \mathbb R^d$, keys $k_j$ (rows of
# $K \in \mathbb R^{n\times d}$), values $u_j$ (rows of $U \in \mathbb R^{n\times d_{\text{out}}}$)
# and a target $y$, a kernel gives weights $\nu(q) \in \mathbb R^n$, the output is
# $o(q) = U^\top\nu(q)$ and the loss $g(q) = \frac12\lVert o(q) - y\rVert^2$. The zoo's kernels
# are those of the library (`tdlib.make_kernel(name)`, `zoo.weights(Q, K, name)`): `softmax`
# ($\operatorname{softmax}_j(q^\top k_j/\sqrt d)$), `l2`
# ($\operatorname{softmax}_j(-\lVert q - k_j\rVert^2/c)$), `gaussian`
# ($e^{-\lVert q - k_j\rVert^2/c}$), both with $c = 2\sqrt d$, `sigmoid-logn`
# ($\operatorname{sigmoid}(q^\top k_j/\sqrt d - \log n)$), `relu-n` and `linear-n`.
#
# Replace every `...` by your answer. Questions 1 and 2 are graded by tests that you do not see;
# the `grader.check(...)` cell after each of them only runs a sanity test (it checks that your
# answer has the right form, not that it is right). Check your answers yourself: each question
# says how. Questions 3 and 4 are written answers, graded by hand. Install the book's library
# (the wheel that comes with this notebook) and the grader first, e.g. on Colab after uploading
# the wheel: `pip install otter-grader==7.0.0 tdlib-*.whl`.

# %%
import math
import numpy as np
import torch
import tdlib
from tdlib import zoo

# %% [raw]
# # BEGIN QUESTION
# name: q1-weights-at-infinity
# points: [0, 4]

# %% [markdown]
# **Question 1 (derive, then verify; 4 points).** Whether a kernel *vanishes at infinity*, and
# which level the loss approaches far away, depends on the limit of the weights along a ray.
# For a direction $\omega \in \mathbb R^d$, $\omega \ne 0$, and keys $K$, derive
# $\lim_{t\to\infty}\nu(t\omega)$ for each of the kernels `softmax`, `l2`, `sigmoid-logn` and
# `gaussian`, **including the cases where several keys have the same largest projection
# $k_j^\top\omega$, or a projection equal to $0$**. Write `limit_weights(kernel, omega, K)`
# returning the limit as a tensor of shape $(n,)$ (`omega` of shape $(d,)$, `K` of shape
# $(n, d)$). Verify yourself with `zoo.weights` at growing $t$, on keys with ties (for example
# integer keys and an integer direction) and without.

# %%
def limit_weights(kernel, omega, K):
    # BEGIN SOLUTION
    K = torch.as_tensor(K, dtype=torch.float64)
    direction = torch.as_tensor(omega, dtype=torch.float64)
    n, d = K.shape
    proj = K @ direction
    if kernel == "gaussian":          # every distance grows without bound
        return torch.zeros(n, dtype=torch.float64)
    if kernel == "sigmoid-logn":      # scores t k.omega / sqrt d - log n
        limit = (proj > 0).to(torch.float64)
        limit[proj == 0] = 1 / (n + 1)
        return limit
    top = proj == proj.max()
    if kernel == "softmax":           # the tied top logits stay exactly equal
        return top.to(torch.float64) / top.sum()
    if kernel == "l2":                # logits (2 t k.omega - |k|^2) / c: ties keep -|k|^2 / c
        c = 2 * math.sqrt(d)
        e = torch.exp(-(K * K).sum(1) / c) * top
        return e / e.sum()
    raise ValueError(f"kernel: expected softmax, l2, sigmoid-logn or gaussian, got {kernel!r}")
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
_out = torch.as_tensor(limit_weights("softmax", torch.ones(2), torch.eye(3, 2)))
assert _out.shape == (3,), f"expected a tensor of shape (n,) = (3,), got {tuple(_out.shape)}"

# %%
# HIDDEN
def _limit_checks():
    g = torch.Generator().manual_seed(77)
    cases = [  # integer keys and directions: exact ties, zero projections, different norms
        (torch.tensor([[1., 0.], [1., 1.], [-1., 0.], [0., 2.]]), torch.tensor([1., 0.])),
        (torch.tensor([[2., 1.], [2., -1.], [0., 3.], [1., 0.]]), torch.tensor([1., 0.])),
        (torch.tensor([[1., 2., 0.], [1., 0., 2.], [1., -2., 0.], [0., 0., 1.]]),
         torch.tensor([2., 0., 0.])),
        (torch.tensor([[0., 1.], [0., -1.], [1., 0.]]), torch.tensor([-1., 0.])),
    ]
    while len(cases) < 10:        # generic keys: a clear gap between the top projections
        n, d = int(torch.randint(2, 6, (), generator=g)), int(torch.randint(1, 4, (), generator=g))
        K, w = (torch.randn(*shape, generator=g, dtype=torch.float64) for shape in ((n, d), (d,)))
        p = torch.sort(K @ w / w.norm()).values
        if len(p) > 1 and float(p[-1] - p[-2]) > 0.2 and float(p.abs().min()) > 0.05:
            cases.append((K, w))
    for K, w in cases:
        K, w = K.to(torch.float64), w.to(torch.float64)
        for kernel in ("softmax", "l2", "sigmoid-logn", "gaussian"):
            got = torch.as_tensor(limit_weights(kernel, w, K), dtype=torch.float64)
            assert got.shape == (K.shape[0],), f"{kernel}: wrong shape"
            far = zoo.weights((1e3 * w / w.norm())[None], K, kernel)[0]
            assert torch.allclose(got, far, rtol=0, atol=1e-8), \
                f"{kernel}: not the weights far along the direction"
_limit_checks()

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q2-scalar-trap
# points: [0, 4]

# %% [markdown]
# **Question 2 (construct a counterexample; 4 points).** The hull floor of the row-stochastic
# kernels certifies a positive loss only when a target lies outside the convex hull of the values.
# Show that a target inside the hull does not protect `l2` attention from a trap: find, in
# dimension $d = 1$ with **scalar** values ($d_{\text{out}} = 1$), at most $5$ distinct keys and
# values in $[-5, 5]$, and a target $y$ with $\min_ju_j \le y \le \max_ju_j$, such that the `l2`
# loss $g$ has a local minimum at $s_{\text{loc}}$ (within $0.01$) that is not global, with a
# query $s_{\text{better}}$ of lower loss. Return a dictionary with entries `keys` ($n$ numbers),
# `values` ($n$ numbers), `target` (a number), `s_loc` and `s_better` from `scalar_trap()`.
#
# The graders' certificate is the proposition *A bracket certifies a non-global local minimum*:
# it locates the lowest point $s_m$ of a grid of step $10^{-3}$ within $0.05$ of `s_loc`, and
# with interval arithmetic (`zoo.query_loss_box`) proves $g(s_m) < \min g(s_m \pm 10^{-3})$ and a
# lower bound of $g$ on $[s_m - 10^{-3}, s_m + 10^{-3}]$ that exceeds $g(s_{\text{better}})$ by at
# least $10^{-3}$; run the same certificate yourself.

# %%
def scalar_trap():
    # BEGIN SOLUTION
    # o(s) moves from u_1 (s -> -inf) towards u_4 (s -> +inf), passing near each value; a bump
    # of height below the target (the value 2 at the key 0) is a local maximum of o under y,
    # hence a local minimum of g, while o reaches y = 2.5 on its way to u_4 = 3
    return {"keys": [-2.0, 0.0, 2.0, 4.0], "values": [0.0, 2.0, 0.0, 3.0], "target": 2.5,
            "s_loc": 0.0, "s_better": 3.805}
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert {"keys", "values", "target", "s_loc", "s_better"} <= set(scalar_trap()), "missing entries"

# %%
# HIDDEN
def _scalar_trap_certificate():
    inst = scalar_trap()
    K = np.asarray(inst["keys"], dtype=np.float64).reshape(-1, 1)
    U = np.asarray(inst["values"], dtype=np.float64).reshape(-1, 1)
    y = np.array([float(inst["target"])])
    n = K.shape[0]
    assert U.shape == (n, 1) and 1 <= n <= 5, "need at most 5 keys, one scalar value each"
    assert np.all(np.isfinite(K)) and np.all(np.isfinite(U)) and np.isfinite(y).all()
    assert np.abs(K).max() <= 5 and np.abs(U).max() <= 5, "keys and values must lie in [-5, 5]"
    assert len(np.unique(K)) == n, "the keys must be distinct"
    assert U.min() <= y[0] <= U.max(), "the target must lie in the hull of the values"
    h = 1e-3
    s = float(inst["s_loc"]) + h * np.arange(-50, 51)
    g = zoo.query_loss("l2", s[:, None], K, U, y)
    i = int(np.argmin(g))
    assert 0 < i < len(s) - 1, "no local minimum within 0.05 of s_loc"
    three = s[i - 1:i + 2, None]
    e = zoo.query_loss_box("l2", three, three, K, U, y)
    assert e.hi[1] < min(e.lo[0], e.lo[2]), "the bracket does not prove a local minimum"
    edges = np.linspace(s[i - 1], s[i + 1], 65)[:, None]
    lower = float(zoo.query_loss_box("l2", edges[:-1], edges[1:], K, U, y).lo.min())
    b = np.array([[float(inst["s_better"])]])
    better_hi = float(zoo.query_loss_box("l2", b, b, K, U, y).hi[0])
    assert lower >= better_hi + 1e-3, "s_better is not proved lower than the local minimum"
_scalar_trap_certificate()

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q3-two-keys
# manual: true
# points: 5

# %% [markdown]
# **Question 3 (written proof; 5 points).** Let $n = 2$ distinct keys $k_1 \ne k_2$ in
# $\mathbb R^d$ (any $d \ge 1$), any values $u_1, u_2 \in \mathbb R^{d_{\text{out}}}$ and any
# target $y$. Prove that for the kernels `softmax` and `l2` every local minimum of $g$ is a global
# minimum. Then explain in two or three sentences why the argument breaks down for $n = 3$
# keys, and why your instance of Question 2 needs at least three keys.

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# **Proof.** For both kernels the weights are a softmax of logits affine in $q$: $q^\top k_j/\sqrt d$
# for `softmax`, and for `l2`
# $-\lVert q - k_j\rVert^2/c = -\lVert q\rVert^2/c + (2k_j^\top q - \lVert k_j\rVert^2)/c$, where the
# first term is common to both keys and cancels. With two keys,
# $\nu_1(q) = \sigma(z(q))$, $\nu_2 = 1 - \nu_1$, where $\sigma$ is the logistic function and
# $z(q) = a^\top q + b$ is the difference of the logits, with $a = (k_1 - k_2)/\sqrt d$ (softmax) or
# $a = 2(k_1 - k_2)/c$ (`l2`); $a \ne 0$ because the keys differ. So
# $$g(q) = \psi(\sigma(z(q))),\qquad \psi(p) = \tfrac12\lVert u_2 + p(u_1 - u_2) - y\rVert^2,$$
# a convex quadratic $\psi$ of $p \in (0, 1)$. Let $q_0$ be a local minimum of $g$, with
# $g \ge g(q_0)$ on a ball $B$ around $q_0$. The map $q \mapsto z(q)$ is linear-affine with
# $a \ne 0$, so $z(B)$ contains an open interval around $z_0 = z(q_0)$ (move $q$ along $a$), and
# $\sigma$ is a strictly increasing homeomorphism of $\mathbb R$ onto $(0, 1)$, so
# $\sigma(z(B))$ contains an open interval around $p_0 = \sigma(z_0)$: $p_0$ is a local
# minimum of $\psi$ on $(0, 1)$. A local minimum of a convex function on an interval is a global
# minimum on it, so $\psi(p_0) \le \psi(p)$ for every $p \in (0, 1)$. Every value of $g$ is
# $\psi(p)$ for some $p \in (0, 1)$, hence $g(q_0) = \psi(p_0) \le g(q)$ for every $q$.
#
# For $n = 3$ the weights $\nu(q)$ trace a curve (for $d = 1$) or a surface in the simplex, and
# $g$ is a convex function of $\nu$ restricted to that set; a convex function restricted to a
# curve need not be unimodal along it (the output $o(s)$ of Question 2 goes out towards one value
# and back, a local maximum of $o$ under the target). With two keys the curve is the segment
# itself, traversed monotonically, which is why Question 2 needs at least three keys.
#
# **Rubric (5 points).**
# - 1: both kernels written as a softmax of affine logits (the common $-\lVert q\rVert^2/c$ of
#   `l2` cancels).
# - 1: with two keys, $g = \psi\circ\sigma\circ z$ with $\psi$ a convex quadratic of one variable
#   and $z$ affine with $a \ne 0$ (uses $k_1 \ne k_2$).
# - 2: a local minimum of $g$ gives a local minimum of $\psi$ on $(0, 1)$ (openness of $z$ and
#   monotonicity of $\sigma$), which is global for a convex $\psi$, and every value of $g$ is a
#   value of $\psi$ on $(0, 1)$. One point only if the local-to-local step is not justified.
# - 1: why three keys are needed (a curve in the simplex, not monotone in the convex
#   function).

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q4-which-property
# manual: true
# points: 4

# %% [markdown]
# **Question 4 (interpretation, short answers; 4 points).** Answer each part in two or three
# sentences, citing the chapter's results you use.
#
# (a) The hull floor is a proved lower bound for `softmax` and `l2` but not for `sigmoid-logn`,
# although the sigmoid's weights also lie in $(0, 1)$. Which property makes the difference, and
# what bound does the sigmoid have instead?
#
# (b) Query-only training with `linear-n` has no spurious local minimum, yet its smallest loss
# can be positive. How can both be true?
#
# (c) A start of `relu-n` in the dead zone $\mathcal D$: what does gradient descent do from
# there, with any step size, and why is a small random perturbation of the start no cure in
# general?
#
# (d) By Question 1, along which kind of ray does the `l2` loss approach a level that is not a
# loss of a single value, and what does that say about the level at infinity of a row-stochastic
# kernel?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# **Answers.**
# (a) Row-stochasticity (*The hull floor and the level of row-stochastic kernels*, part 1): the
# weights of `softmax` and `l2` are non-negative and sum to one, so each output is a convex
# combination of the values. The sigmoid's weights do not sum to one (at $q = 0$ they sum to
# $n/(n+1)$), so outputs can leave the hull; it has only the box bound
# $g \ge \frac12\operatorname{dist}(y, U^\top[0,1]^n)^2$ (*Sigmoid attention with bias $-\log n$*,
# part 1).
#
# (b) With an affine kernel the loss is a convex quadratic in $W^Q$ (*Query-only training with
# an affine kernel is a convex least-squares problem*): every stationary point is a global
# minimum. But the global minimum of a least-squares problem is zero only if the targets lie in
# the range of the linear map, which the outputs $U_i^\top K_iW^{Q\top}x/(n\sqrt d)$ need not
# reach: no trap, and still a positive floor.
#
# (c) On $\mathcal D$ every weight, output and gradient is exactly zero (*The dead zone of ReLU
# attention*, part 1), so gradient descent never moves, whatever the step. $\mathcal D$ is open, so
# a small enough perturbation stays in it; only a perturbation large enough to leave
# $\mathcal D$ helps. Under the hypotheses of part 2, $\mathcal D$ has positive measure, so random
# starts can land in it (the chapter measures how often).
#
# (d) Along a direction $\omega$ for which several keys share the largest projection
# $k_j^\top\omega$, the `l2` weights tend to a point inside a face of the simplex (weights
# $\propto e^{-\lVert k_j\rVert^2/c}$ on the tied keys), so the output tends to a mixture of values,
# not to one value. The loss at infinity of a row-stochastic kernel is therefore a loss on the
# boundary of the simplex, not only at its vertices: the level $\Lambda$ is a minimum over
# $\partial\Delta$ (part 2 of the row-stochastic proposition).
#
# **Rubric (4 points, 1 per part).**
# - (a) row-stochasticity named as the difference, and the box bound (or "outputs can leave the
#   hull") for the sigmoid.
# - (b) convexity excludes spurious minima; a positive minimum is a positive least-squares
#   residual (targets outside the range).
# - (c) the gradient is exactly zero on the open set $\mathcal D$, so GD stays; small perturbations
#   stay inside.
# - (d) ties of the largest projection give a limit inside a face of the simplex, so the level
#   at infinity involves the boundary of the simplex, not only single values.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION
