# %% [raw]
# # ASSIGNMENT CONFIG
# name: softmax-local-minimum
# init_cell: true
# check_all_cell: true
# export_cell: false
# run_tests: false
# generate: true
# files: []
# strip_solutions_from_all_cells: true

# %% [markdown]
# # Problem set: Softmax attention and its local minima
#
# This problem set goes with the chapter *The Softmax local-minimum counterexample* of the book
# and uses its notation: for keys $k_1, \dots, k_n$ and values $v_1, \dots, v_n$, one query's output is
# $o(q) = \sum_j p_j(q)\,v_j$ with $p(q) = \operatorname{softmax}(Kq/\sqrt d)$, its loss is
# $g(q) = \frac12\|o(q) - y\|^2$, and $J(p) = \operatorname{diag}(p) - pp^\top$ is the softmax
# Jacobian.
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
# name: q1-jacobian-constant
# points: [0, 4]

# %% [markdown]
# **Question 1 (derive, then verify; 4 points).** The chapter bounds
# $\|J(p)\|_2 \le 1 - \|p\|^2$, which can be as large as $1 - 1/n$. Derive the exact value of
# $$C_n = \sup\{\|J(p)\|_2 : p \in \mathbb R^n,\ p_j > 0,\ \textstyle\sum_j p_j = 1\}, \qquad n \ge 2,$$
# and write it as `jacobian_sup(n)`. Then write `near_maximiser(n, eps)`: a probability vector with
# positive entries at which $\|J(p)\|_2 \ge C_n - \varepsilon$. Verify both yourself on many random
# probability vectors (near the vertices, the edges and the centre of the simplex).

# %%
def jacobian_sup(n):
    # BEGIN SOLUTION
    # u^T J(p) u is the variance of u_j under p; for a unit u, two entries differ by at most
    # sqrt 2, so the variance is at most 2/4 (Popoviciu); equality needs half the mass on each
    return 0.5
    # END SOLUTION

def near_maximiser(n, eps):
    # BEGIN SOLUTION
    if n == 2:
        return torch.tensor([0.5, 0.5], dtype=torch.float64)
    delta = min(eps, 0.5)                          # mass left for the other n - 2 entries
    p = torch.full((n,), delta / (n - 2), dtype=torch.float64)
    p[0] = p[1] = (1 - delta) / 2                  # then u = (e_1 - e_2)/sqrt 2 gives (1 - delta)/2
    return p
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert math.isfinite(float(jacobian_sup(3))), "jacobian_sup(n) should be a number"
assert torch.as_tensor(near_maximiser(3, 0.1)).shape == (3,), "near_maximiser(n, eps) has n entries"

# %%
# HIDDEN
def _jacobian_constant():
    g = torch.Generator().manual_seed(11)
    lam = lambda p: float(torch.linalg.eigvalsh(torch.diag(p) - torch.outer(p, p))[-1])
    for n in (2, 3, 5, 8):
        C = float(jacobian_sup(n))
        assert abs(C - 0.5) <= 1e-12, f"C_{n} is not right"
        for scale in (0.1, 1.0, 3.0, 10.0, 30.0):
            for _ in range(200):
                p = torch.softmax(scale * torch.randn(n, generator=g, dtype=torch.float64), 0)
                assert lam(p) <= C + 1e-12
        for eps in (1e-2, 1e-5, 1e-9):
            p = torch.as_tensor(near_maximiser(n, eps), dtype=torch.float64).reshape(-1)
            assert p.shape == (n,) and bool((p > 0).all()), "p needs n positive entries"
            assert abs(float(p.sum()) - 1) <= 1e-12, "p should sum to 1"
            assert lam(p) >= C - eps, f"|J(p)| is below C_n - eps for n={n}, eps={eps}"
_jacobian_constant()

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q2-scalar-counterexample
# points: [0, 4]

# %% [markdown]
# **Question 2 (construct a counterexample; 4 points).** The chapter's non-global local minimum uses
# two-dimensional values. Find one with **scalar** values: $d = 1$ (so $p(s) = \operatorname{softmax}(sk)$
# for a query $s \in \mathbb R$), $d_{\text{out}} = 1$, keys $k \in \mathbb R^n$, values
# $v \in \mathbb R^n$ and a target $y \in \mathbb R$ such that $g(s) = \frac12(v^\top p(s) - y)^2$ has
# a strict local minimum $s_{\text{loc}}$ with $g(s_{\text{loc}}) > 0$ that is not global. Return a
# dictionary with entries `k`, `v`, `y`, `s_loc` (within $0.5$ of the minimum) and `s_glob` (a point
# with a lower loss) from `scalar_counterexample()`. (Question 3 shows why $n = 3$ is not enough.)
#
# The graders' certificate refines `s_loc` by Newton's method in float64 and requires
# $|g'| \le 10^{-10}$, $g'' \ge 10^{-6}$, $g(s_{\text{loc}}) \ge 10^{-4}$ and
# $g(s_{\text{glob}}) \le g(s_{\text{loc}}) - 10^{-4}$; run the same checks yourself.

# %%
def scalar_counterexample():
    # BEGIN SOLUTION
    # with keys 0 < 1 < 2 < 3, o'(s) has the sign of a quartic in e^s with two positive roots
    # here: o rises to a small local maximum, dips, and rises again to v_4 = 3 > y = 1
    k = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    v = torch.tensor([0.0, 1.0, -8.0, 3.0], dtype=torch.float64)
    o = lambda s: float(torch.softmax(s * k, 0) @ v)
    lo, hi = 0.0, 10.0                    # o(0) = -1 < 1 < o(10): o = y on the last rise
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if o(mid) < 1.0 else (lo, mid)
    return {"k": k, "v": v, "y": 1.0, "s_loc": -2.77, "s_glob": lo}
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert {"k", "v", "y", "s_loc", "s_glob"} <= set(scalar_counterexample()), "missing entries"

# %%
# HIDDEN
def _scalar_certificate():
    ce = scalar_counterexample()
    k = torch.as_tensor(ce["k"], dtype=torch.float64).reshape(-1)
    v = torch.as_tensor(ce["v"], dtype=torch.float64).reshape(-1)
    y = float(ce["y"])
    assert k.shape == v.shape and len(k) >= 2, "keys and scalar values, one per token"
    assert bool(torch.isfinite(k).all() and torch.isfinite(v).all()), "finite numbers"
    def g(s):
        return 0.5 * (torch.softmax(s * k, 0) @ v - y) ** 2
    def derivatives(s):
        s = torch.tensor(float(s), dtype=torch.float64, requires_grad=True)
        d1, = torch.autograd.grad(g(s), s, create_graph=True)
        d2, = torch.autograd.grad(d1, s)
        return float(d1.detach()), float(d2)
    s = s0 = float(ce["s_loc"])
    for _ in range(40):
        d1, d2 = derivatives(s)
        assert d2 > 0, "g is not convex along the Newton path from s_loc"
        s -= d1 / d2
    assert abs(s - s0) <= 0.5, "s_loc is not within 0.5 of a critical point"
    d1, d2 = derivatives(s)
    loc = float(g(torch.tensor(s, dtype=torch.float64)))
    assert abs(d1) <= 1e-10 and d2 >= 1e-6 and loc >= 1e-4, "not a strict local minimum of positive loss"
    assert float(g(torch.tensor(float(ce["s_glob"]), dtype=torch.float64))) <= loc - 1e-4, "not lower"
_scalar_certificate()

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q3-three-tokens
# manual: true
# points: 5

# %% [markdown]
# **Question 3 (written proof; 5 points).** Let $n = 3$, $d = 1$, $d_{\text{out}} = 1$: keys
# $k_1, k_2, k_3 \in \mathbb R$, values $v_1, v_2, v_3 \in \mathbb R$, a target $y$ and
# $g(s) = \frac12(o(s) - y)^2$ with $o(s) = \sum_j p_j(s)v_j$, $p(s) = \operatorname{softmax}(sk)$.
# Prove that every local minimum of $g$ on $\mathbb R$ is a global minimum. (Hint: write $o'(s)$ as a
# covariance under $p(s)$, and count the sign changes of a sum of three exponentials.)

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# **Proof.** Tokens with equal keys always have equal weights, so they act as one token carrying
# the average of their values, with weight proportional to $m_je^{sk_j}$ ($m_j$ the number of merged
# tokens); such constant positive factors change no sign below, and with fewer than three distinct
# keys the same argument works with one or no pair. So let $k_1 < k_2 < k_3$. Since $p_j' = p_j(k_j - \bar k)$ with
# $\bar k = \sum_i p_ik_i$,
# $$o'(s) = \operatorname{Cov}_{p(s)}(k, v) = \sum_{i<j} p_ip_j(k_j - k_i)(v_j - v_i)
# = Z(s)^{-2}\sum_{i<j} c_{ij}e^{s(k_i + k_j)},\quad c_{ij} = (k_j - k_i)(v_j - v_i),$$
# with $Z = \sum_j e^{sk_j}$. The exponents $k_1 + k_2 < k_1 + k_3 < k_2 + k_3$ are distinct, and
# $\operatorname{sign}c_{ij} = \operatorname{sign}(v_j - v_i)$. Two sign changes in the sequence
# $(c_{12}, c_{13}, c_{23})$ would need $v_2 - v_1$ and $v_3 - v_2$ of one sign $\sigma$ and $v_3 - v_1$ of
# sign $-\sigma$, impossible since $v_3 - v_1 = (v_3 - v_2) + (v_2 - v_1)$. So the non-zero coefficients
# change sign at most once: there is a $\lambda^*$ with all $c_{ij} \ge 0$ for $k_i + k_j < \lambda^*$ and
# all $c_{ij} \le 0$ for $k_i + k_j > \lambda^*$ (or the reverse). Then
# $e^{-\lambda^* s}Z^2o'(s) = \sum_{i<j} c_{ij}e^{(k_i + k_j - \lambda^*)s}$ is a sum of non-increasing terms,
# with derivative $\sum c_{ij}(k_i + k_j - \lambda^*)e^{(\cdot)s} < 0$ unless all $c_{ij} = 0$. Hence either
# $o$ is constant, or $o'$ has at most one zero, where it changes sign: $o$ is strictly monotone, or
# strictly decreasing then strictly increasing (or the reverse)
# around a single critical point.
#
# Let $s_0$ be a local minimum of $g$. If $g(s_0) = 0$ it is global. Otherwise, say $o(s_0) > y$
# (the other case is symmetric): near $s_0$, $o > y$ and $g \ge g(s_0)$ give $o \ge o(s_0)$, so $s_0$
# is a local minimum of $o$. A strictly monotone function has none; if $o$ is constant, $g$ is
# constant; otherwise $s_0$ is the single critical point, $o$ decreases before it and increases
# after it, so $o(s) \ge o(s_0) > y$ for all $s$ and $g(s) \ge g(s_0)$ everywhere: $s_0$ is global.
#
# **Rubric (5 points).**
# - 1: $o'(s)$ written as a covariance / sum over pairs with positive weights $p_ip_j$.
# - 2: at most one sign change of $o'$ from the sign pattern of the coefficients, with a valid
#   zero-counting argument (Descartes' rule for exponential sums, Rolle's theorem, or the
#   monotonicity of $e^{-\lambda^* s}Z^2o'$).
# - 1: a local minimum of $g$ with positive loss is a local minimum of $o$ (or of $-o$).
# - 1: conclusion from the unimodality of $o$, including the degenerate cases (equal keys, constant $o$).
# - Deduct 1 if the argument silently assumes distinct keys or distinct values.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION
