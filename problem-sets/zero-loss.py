# %% [raw]
# # ASSIGNMENT CONFIG
# name: zero-loss
# init_cell: true
# check_all_cell: true
# export_cell: false
# run_tests: false
# generate: true
# files: []
# strip_solutions_from_all_cells: true

# %% [markdown]
# # Problem set: gradient descent reaches zero loss
#
# This problem set goes with the chapter *Gradient descent reaches zero loss: training the values*
# of the book and uses its notation: the feature matrix $B \in \mathbb R^{Nn\times HD}$, the stacked
# values $V \in \mathbb R^{HD\times d_v}$, one shared $W^O \in \mathbb R^{d_v\times d_{\text{out}}}$
# with full column rank, targets $Y \in \mathbb R^{Nn\times d_{\text{out}}}$ and
# $f(V) = \frac12\|BVW^O - Y\|_F^2$.
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
import tdlib
from tdlib import zeroloss

# %% [raw]
# # BEGIN QUESTION
# name: q1-value-limit
# points: [0, 4]

# %% [markdown]
# **Question 1 (derive, then verify; 4 points).** Let $B$ have any rank (possibly $\operatorname{rank}B < Nn$
# and $HD > Nn$), let $V_0$ be arbitrary and run value-only gradient descent
# $V_{t+1} = V_t - \eta\nabla_V f(V_t)$ with $0 < \eta \le 1/L$,
# $L = \lambda_{\max}(BB^\top)\sigma_{\max}(W^O)^2$. The iterates converge. Derive their limit
# $V_\infty$ in closed form in terms of $B$, $W^O$, $Y$ and $V_0$ (it depends on $V_0$ when
# $B$ has a non-trivial kernel or $d_v > d_{\text{out}}$), and write it as `value_limit(B, W_O, Y, V0)`,
# returning an $HD\times d_v$ tensor. Verify your formula yourself against a long run of gradient
# descent on a random instance with $\operatorname{rank}B < \min(Nn, HD)$ and $d_v > d_{\text{out}}$.

# %%
def value_limit(B, W_O, Y, V0):
    # BEGIN SOLUTION
    R0 = B @ V0 @ W_O - Y
    return V0 - torch.linalg.pinv(B) @ R0 @ torch.linalg.pinv(W_O)
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
_B, _W, _Y, _V = (torch.ones(s, dtype=torch.float64) for s in ((4, 6), (3, 2), (4, 2), (6, 3)))
_out = torch.as_tensor(value_limit(_B, _W, _Y, _V))
assert _out.shape == (6, 3), f"expected an HD x d_v = (6, 3) tensor, got shape {tuple(_out.shape)}"

# %%
# HIDDEN
def _limit_of_descent():
    g = torch.Generator().manual_seed(2024)
    def orth(m, k):
        return torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64))[0]
    for Nn, HD, r, d_v, d_out in ((6, 4, 3, 3, 2), (8, 10, 5, 2, 2), (5, 9, 3, 4, 1)):
        s = torch.rand(r, generator=g, dtype=torch.float64) + 0.5
        B = orth(Nn, r) @ torch.diag(s) @ orth(HD, r).T
        w = 0.6 * torch.rand(d_out, generator=g, dtype=torch.float64) + 0.7
        W_O = orth(d_v, d_out) @ torch.diag(w) @ orth(d_out, d_out).T
        Y = torch.randn(Nn, d_out, generator=g, dtype=torch.float64)
        V0 = torch.randn(HD, d_v, generator=g, dtype=torch.float64)
        eta = 1 / float(s.max() ** 2 * w.max() ** 2)
        V = V0.clone()
        for _ in range(4000):
            V = V - eta * B.T @ (B @ V @ W_O - Y) @ W_O.T
        got = torch.as_tensor(value_limit(B, W_O, Y, V0), dtype=torch.float64)
        assert got.shape == V.shape, "wrong shape"
        assert torch.allclose(got, V, rtol=1e-8, atol=1e-8), "not the limit of gradient descent"
_limit_of_descent()

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q2-counting-is-not-enough
# points: [0, 4]

# %% [markdown]
# **Question 2 (construct a counterexample; 4 points).** Counting says that zero loss for every
# target needs $HD \ge Nn$. Show that counting is not enough: build tokens $X$ (a tensor of shape
# $(N, n, D)$, $n \ge 2$) and a number of heads $H$ with $HD \ge Nn$ such that
# $\operatorname{rank}B < Nn$ for **every** choice of the attention weights $W^Q_h, W^K_h$, with
# either kernel. Your tokens must be pairwise distinct (also across samples: every two of the $Nn$
# tokens at distance at least $0.05$) and each of norm at most $2$. Return `(X, H)` from
# `counting_counterexample()`.
#
# The graders' certificate builds $B$ with `zeroloss.feature_matrix` for many random layers
# (`tdlib.AttentionLayer`, both kernels, several head dimensions $d$) and checks that
# $\sigma_{Nn}(B) \le 10^{-10}\,\sigma_1(B)$ every time; run the same check yourself.

# %%
def counting_counterexample():
    # BEGIN SOLUTION
    # every sample's tokens are multiples of one vector: each head adds rank at most 1 per
    # sample, so a sample's n = 3 rows of B have rank at most H = 2 < 3
    x1 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    x2 = torch.tensor([0.0, 0.6, 0.8], dtype=torch.float64)
    c1 = torch.tensor([-1.0, 0.4, 1.2], dtype=torch.float64)
    c2 = torch.tensor([-0.8, 0.3, 1.0], dtype=torch.float64)
    X = torch.stack([torch.outer(c1, x1), torch.outer(c2, x2)])
    return X, 2
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
_X, _H = counting_counterexample()
assert torch.as_tensor(_X).ndim == 3, "X should have shape (N, n, D)"
assert int(_H) >= 1, "H should be a positive integer"

# %%
# HIDDEN
def _counting_certificate():
    X, H = counting_counterexample()
    X, H = torch.as_tensor(X, dtype=torch.float64), int(H)
    N, n, D = X.shape
    assert n >= 2 and H >= 1 and H * D >= N * n, "need n >= 2 and H D >= N n"
    tokens = X.reshape(N * n, D)
    assert float(tokens.norm(dim=1).max()) <= 2 + 1e-12, "a token is longer than 2"
    gaps = torch.cdist(tokens, tokens) + 10 * torch.eye(N * n, dtype=torch.float64)
    assert float(gaps.min()) >= 0.05 - 1e-12, "two tokens are closer than 0.05"
    seeds = iter(range(100, 200))
    for kernel in ("softmax", "gaussian"):
        for d in (1, 2, 5):
            for _ in range(5):
                layer = tdlib.AttentionLayer(D, H=H, d=d, d_v=1, d_out=1, kernel=kernel,
                                             seed=next(seeds), dtype=torch.float64)
                s = torch.linalg.svdvals(zeroloss.feature_matrix(layer, X))
                assert float(s[N * n - 1]) <= 1e-10 * float(s[0]), f"{kernel}: rank B = N n"
_counting_certificate()

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q3-rank-bound
# manual: true
# points: 5

# %% [markdown]
# **Question 3 (written proof; 5 points).** Let $S_h(X_i) \in \mathbb R^{n\times n}$ be *any*
# matrices (any kernel, any weights). Prove that
# $$\operatorname{rank} B \;\le\; \sum_{i=1}^N \min\big(n,\; H\operatorname{rank}X_i\big).$$
# Deduce that if value-only training reaches zero loss for **every** target $Y$ (with $W^O$ of full
# column rank), then $H\operatorname{rank}X_i \ge n$ for every sample $i$, and explain in one or two
# sentences why your instance of Question 2 passes its certificate for every choice of weights.

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# **Proof.** The rows of $B$ that belong to sample $i$ form the $n\times HD$ block
# $B^{(i)} = [S_1(X_i)X_i \;\cdots\; S_H(X_i)X_i] = [S_1(X_i) \cdots S_H(X_i)]\,
# \operatorname{blockdiag}(X_i, \dots, X_i)$. It has $n$ rows, so rank at most $n$; its column
# space is the sum of the column spaces of the $S_h(X_i)X_i$, each of dimension at most
# $\operatorname{rank}X_i$, so its rank is at most $H\operatorname{rank}X_i$. The row space of $B$ is
# the sum of the row spaces of the blocks $B^{(i)}$, so
# $\operatorname{rank}B \le \sum_i \operatorname{rank}B^{(i)} \le \sum_i\min(n, H\operatorname{rank}X_i)$.
#
# By part 4 of the value-only theorem, $\min_V f = \frac12\|(I - P_B)Y\|_F^2$; it is zero for
# every $Y$ only if the column space of $B$ is all of $\mathbb R^{Nn}$, i.e. $\operatorname{rank}B = Nn$.
# Then $Nn \le \sum_i \min(n, H\operatorname{rank}X_i)$; each term is at most $n$, so every term equals
# $n$, i.e. $H\operatorname{rank}X_i \ge n$. In the instance of Question 2 every $X_i$ has rank 1 and
# $H = 2 < n = 3$, so $\operatorname{rank}B \le 2N = 4 < 6 = Nn$ whatever the weights: the
# certificate's rank test holds exactly, up to rounding.
#
# **Rubric (5 points).**
# - 2: the per-sample block is written as a product (or its column space as a sum) and bounded by
#   both $n$ and $H\operatorname{rank}X_i$; no assumption on $S_h$ is used.
# - 1: rank of $B$ bounded by the sum over samples (row spaces add, or subadditivity of rank).
# - 1: zero loss for every $Y$ $\Rightarrow$ $\operatorname{rank}B = Nn$ (via $f_* = \frac12\|(I-P_B)Y\|^2$,
#   or by choosing $Y$ outside the column space), and the conclusion $H\operatorname{rank}X_i \ge n$.
# - 1: the instance of Question 2 is explained by the bound (rank of each $X_i$ times $H$ below $n$).
# - Deduct 1 for a proof that only covers one kernel or generic weights.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION
