# %% [raw]
# # ASSIGNMENT CONFIG
# name: gaussian-convergence
# init_cell: true
# check_all_cell: true
# export_cell: false
# run_tests: false
# generate: true
# files: []
# strip_solutions_from_all_cells: true

# %% [markdown]
# # Problem set: query-only training with the Gaussian kernel
#
# This problem set goes with the chapters *Gaussian attention: what separates it from Softmax in
# query-only training* and *Softmax and Gaussian side by side* of the book and uses their
# notation: for keys $k_j$ (rows of
# $K \in \mathbb R^{n\times d}$), values $u_j$ (rows of $U \in \mathbb R^{n\times d_{\text{out}}}$) and a
# width $c > 0$, one query's output is $o(q) = \sum_j a_j(q)\,u_j$ with
# $a_j(q) = \exp(-\|q - k_j\|^2/c)$, and its loss is $g(q) = \frac12\|o(q) - y\|^2$.
#
# Replace every `...` by your answer. Questions 1 and 2 are graded by tests that you do not see;
# the `grader.check(...)` cell after each of them only runs a sanity test (it checks that your
# answer has the right form, not that it is right). Check your answers yourself: each question
# says how. Question 3 is a written proof, graded by hand. Install the book's library (the wheel
# that comes with this notebook) and the grader first, e.g. on Colab after uploading the wheel:
# `pip install otter-grader==7.0.0 tdlib-*.whl`.

# %%
import math
import numpy as np
import torch

# %% [raw]
# # BEGIN QUESTION
# name: q1-merge-threshold
# points: [0, 4]

# %% [markdown]
# **Question 1 (derive, then verify; 4 points).** Take $d = d_{\text{out}} = 1$, two keys $\pm m$
# ($m > 0$) and equal values $u_1 = u_2 = 1$, so $o(q) = e^{-(q-m)^2/c} + e^{-(q+m)^2/c}$.
# (a) Derive the threshold $m^\star(c)$ such that $o$ has exactly one critical point when
# $m \le m^\star(c)$ and exactly three when $m > m^\star(c)$; write it as `merge_threshold(c)`.
# (b) For $m > m^\star(c)$, derive the supremum $y^\star(m, c)$ of the targets $y$ for which $q = 0$ is
# a strict local minimum of $g$ that is not a global minimum (in the sense that $g$ takes
# smaller values elsewhere); write it as `spurious_level(m, c)`. Verify both yourself: count the
# critical points of $o$ on a fine grid just below and just above your threshold, and look at $g''(0)$
# for targets just below and just above your level.

# %%
def merge_threshold(c):
    # BEGIN SOLUTION
    return math.sqrt(c / 2)
    # END SOLUTION

def spurious_level(m, c):
    # BEGIN SOLUTION
    return 2 * math.exp(-m * m / c)
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert math.isfinite(float(merge_threshold(2.0))), "merge_threshold(c) should be a number"
assert math.isfinite(float(spurious_level(3.0, 2.0))), "spurious_level(m, c) should be a number"

# %%
# HIDDEN
def _threshold_checks():
    def o(q, m, c):
        return torch.exp(-(q - m) ** 2 / c) + torch.exp(-(q + m) ** 2 / c)
    def at_zero(fun):
        q = torch.zeros((), dtype=torch.float64, requires_grad=True)
        value = fun(q)
        d1, = torch.autograd.grad(value, q, create_graph=True)
        return float(value.detach()), float(d1.detach()), float(torch.autograd.grad(d1, q)[0])
    for c in (1.0, 2 * math.sqrt(2), 5.0):
        m_star = float(merge_threshold(c))
        assert abs(m_star - math.sqrt(c / 2)) <= 1e-9 * math.sqrt(c), f"m*({c}) is not right"
        assert at_zero(lambda q: o(q, 0.99 * m_star, c))[2] < 0 < at_zero(lambda q: o(q, 1.01 * m_star, c))[2]
        for m, count in ((0.9 * m_star, 1), (1.1 * m_star, 3)):
            reach = m + 3 * math.sqrt(c)
            do = torch.diff(o(torch.linspace(-reach, reach, 200001, dtype=torch.float64), m, c))
            assert int((torch.sign(do[1:]) != torch.sign(do[:-1])).sum()) == count, "critical points"
        m = 1.5 * m_star
        level = float(spurious_level(m, c))
        assert abs(level - 2 * math.exp(-m * m / c)) <= 1e-9, f"y*({m}, {c}) is not right"
        grid = torch.linspace(-m - 4 * math.sqrt(c), m + 4 * math.sqrt(c), 20001, dtype=torch.float64)
        for y, is_min in ((level * (1 - 1e-3), True), (level * (1 + 1e-3), False)):
            g0, d1, d2 = at_zero(lambda q: 0.5 * (o(q, m, c) - y) ** 2)
            assert abs(d1) <= 1e-12 and (d2 > 0) == is_min, "g''(0) has the wrong sign"
            if is_min:
                assert float((0.5 * (o(grid, m, c) - y) ** 2).min()) < g0 - 1e-9, "q = 0 is global"
_threshold_checks()

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q2-minimum-on-the-hull
# points: [0, 4]

# %% [markdown]
# **Question 2 (construct a counterexample; 4 points).** When $d \ge n$, the keys are affinely
# independent and $\operatorname{rank}U = d_{\text{out}}$, the Jacobian $J(q)$ has full row rank at
# every $q$ off the keys' affine hull $\operatorname{aff}(K)$, so every stationary point there has
# zero loss. One might conclude that such a problem has no spurious local minimum. Refute this:
# find $K$, $U$, $y$ with $d \ge n$, affinely independent keys and $\operatorname{rank}U =
# d_{\text{out}}$, and the book's width $c = 2\sqrt d$, such that $g$ has a strict local minimum
# $q_{\text{loc}}$ with $g(q_{\text{loc}}) > 0$ and a point $q_{\text{better}}$ with a lower loss. Return a
# dictionary with entries `K` ($n\times d$), `U` ($n\times d_{\text{out}}$), `y` ($d_{\text{out}}$),
# `q_loc` (within $0.5$ of the minimum) and `q_better` from `gaussian_counterexample()`.
#
# The graders' certificate checks the rank conditions, refines `q_loc` by Newton's method in float64
# and requires $\|\nabla g\| \le 10^{-10}$, every Hessian eigenvalue $\ge 10^{-8}$,
# $g(q_{\text{loc}}) \ge 10^{-4}$ and $g(q_{\text{better}}) \le g(q_{\text{loc}}) - 10^{-4}$; run the same checks yourself.

# %%
def gaussian_counterexample():
    # BEGIN SOLUTION
    # a query at the key with the smaller value, on the line through the two keys: o < y there,
    # so leaving the line (which shrinks every weight by one common factor) raises the loss
    K = torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    U = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    return {"K": K, "U": U, "y": torch.tensor([2.0], dtype=torch.float64),
            "q_loc": torch.tensor([-2.0, 0.0], dtype=torch.float64),
            "q_better": torch.tensor([2.0, 0.0], dtype=torch.float64)}
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert {"K", "U", "y", "q_loc", "q_better"} <= set(gaussian_counterexample()), "missing entries"

# %%
# HIDDEN
def _hull_certificate():
    ce = gaussian_counterexample()
    K = torch.as_tensor(ce["K"], dtype=torch.float64)
    y = torch.as_tensor(ce["y"], dtype=torch.float64).reshape(-1)
    U = torch.as_tensor(ce["U"], dtype=torch.float64).reshape(len(K), len(y))
    n, d = K.shape
    assert d >= n, "need d >= n"
    assert bool(torch.isfinite(K).all() and torch.isfinite(U).all() and torch.isfinite(y).all())
    if n > 1:
        spread = float(torch.linalg.svdvals(K[1:] - K[0])[-1])
        assert spread >= 1e-3 * max(1.0, float(K.abs().max())), "keys not affinely independent"
    assert float(torch.linalg.svdvals(U)[-1]) >= 1e-3 * max(1.0, float(U.abs().max())), "rank U < d_out"
    c = 2 * math.sqrt(d)
    def g(q):
        return 0.5 * ((U.T @ torch.exp(-((q - K) ** 2).sum(1) / c) - y) ** 2).sum()
    q = q0 = torch.as_tensor(ce["q_loc"], dtype=torch.float64).reshape(d)
    for _ in range(40):
        G = torch.autograd.functional.jacobian(g, q)
        q = q - torch.linalg.solve(torch.autograd.functional.hessian(g, q), G)
    assert float((q - q0).norm()) <= 0.5, "q_loc is not within 0.5 of a stationary point"
    G = torch.autograd.functional.jacobian(g, q)
    low = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(g, q))[0])
    loc = float(g(q))
    assert float(G.norm()) <= 1e-10 and low >= 1e-8 and loc >= 1e-4, "not a strict local minimum of positive loss"
    better = torch.as_tensor(ce["q_better"], dtype=torch.float64).reshape(d)
    assert float(g(better)) <= loc - 1e-4, "q_better is not lower"
_hull_certificate()

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q3-merging-proof
# manual: true
# points: 5

# %% [markdown]
# **Question 3 (written proof; 5 points).** Prove your answers to Question 1: for the output
# $o(q) = e^{-(q-m)^2/c} + e^{-(q+m)^2/c}$, (a) $o$ has a single critical point for $m \le m^\star(c)$
# and exactly three for $m > m^\star(c)$; (b) for $m > m^\star(c)$, $q = 0$ is a strict local minimum of
# $g$ that is not global exactly when $y < y^\star(m, c)$. Then explain in two or three sentences
# why the minimum of (b) is no longer a local minimum when the same keys and values are placed in
# $\mathbb R^2$ (keys $(\pm m, 0)$, $c$ unchanged), and why the instance of Question 2 survives that move.

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# **Proof.** (a) $o'(q) = -\frac2c\big[(q - m)e^{-(q-m)^2/c} + (q + m)e^{-(q+m)^2/c}\big]$ is odd, with
# $o'(0) = 0$. For $q \ge m$ both terms in the bracket are $\ge 0$ and the second is $> 0$, so $o' < 0$;
# by oddness $o' > 0$ for $q \le -m$. For $0 < q < m$, $o'(q) = 0$ iff
# $\varphi(q) := \log(m - q) - \log(m + q) + 4mq/c = 0$ (divide by $(m+q)e^{-(q+m)^2/c}$ and use
# $(q+m)^2 - (q-m)^2 = 4mq$). $\varphi(0) = 0$ and $\varphi'(q) = 4m/c - 2m/(m^2 - q^2)$, which decreases in
# $q$. If $m^2 \le c/2$: $\varphi'(q) < 4m/c - 2/m \le 0$ on $(0, m)$, so $\varphi < 0$ there and $0$ is the
# only critical point. If $m^2 > c/2$: $\varphi'(0) > 0$, $\varphi'$ is strictly decreasing and
# $\varphi \to -\infty$ as $q \to m$, so $\varphi$ rises then falls and has exactly one zero in $(0, m)$;
# with oddness, three critical points. Hence $m^\star(c) = \sqrt{c/2}$.
#
# (b) $o''(0) = 2e^{-m^2/c}(4m^2/c^2 - 2/c) > 0$ for $m^2 > c/2$, and $g''(0) = o'(0)^2 + (o(0) - y)o''(0)
# = (o(0) - y)o''(0)$. If $y < o(0) = 2e^{-m^2/c}$: $g''(0) > 0$, a strict local minimum with
# $g(0) = \frac12(o(0) - y)^2 > 0$; it is not global: for $0 < y < o(0)$ some $q$ has $o(q) = y$
# (intermediate values, $o \to 0$), and for $y \le 0$, $g(q) \to \frac12y^2 < g(0)$ as $q \to \infty$. If
# $y > o(0)$, $g''(0) < 0$; if $y = o(0)$, $g(0) = 0$ is global. So $y^\star = 2e^{-m^2/c}$.
#
# In $\mathbb R^2$, moving from $0$ along the second coordinate multiplies both weights by
# $e^{-t^2/c}$, so $o$ decreases; at the minimum of (b) $o(0) > y$, so $g$ decreases too: a saddle.
# In Question 2 the local minimum sits where $0 < o < y$: shrinking $o$ moves it away from $y$, so the
# loss increases off the line (curvature $2(y - o)o/c > 0$), and the minimum survives.
#
# **Rubric (5 points).**
# - 2: (a) with a complete argument for both regimes (sign of $o'$ outside $(-m, m)$, and the
#   count inside via $\varphi$ or an equivalent monotonicity argument); the threshold $m^2 = c/2$.
# - 2: (b) $g''(0) = (o(0) - y)o''(0)$, strictness, non-globality for both $0 < y < o(0)$ and
#   $y \le 0$, and the failure for $y \ge o(0)$.
# - 1: the orthogonal direction rescales the weights; sign of $\langle o, o - y\rangle$ decides.
# - Deduct 1 for (a) shown only by the second derivative at 0 (it does not count critical points).

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION
