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
# This problem set goes with the chapter *Gradient descent reaches zero loss: training the values* of the book. Replace every `...` by your
# answer and run the `grader.check(...)` cell after each question: it tells you at once whether
# the answer passes and, if not, why (the tests travel inside the notebook). On Colab or
# elsewhere, install the book's library and the grader first:
# `pip install otter-grader==7.0.0 git+https://github.com/attention-gd/gd-transformers-book`.
# Questions 1-3 are exercises of the chapter; questions 4-5 are new.

# %%
import math
import numpy as np
import torch
from tdlib import selfcheck

# %% [raw]
# # BEGIN QUESTION
# name: q1-best-step
# points: 2

# %% [markdown]
# **Question 1 (chapter exercise "Larger steps").** Value-only gradient descent contracts the
# residual by $\max(|1 - \eta\alpha|, |1 - \eta L|)$ per step. Write `best_step(alpha, L)`, the step
# that minimises this factor.

# %%
def best_step(alpha, L):
    # BEGIN SOLUTION
    return 2 / (alpha + L)
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert selfcheck.passes(selfcheck.zl_step, best_step)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q2-identical-heads
# points: 2

# %% [markdown]
# **Question 2 (chapter exercise "Identical heads").** If all $H$ heads have the same attention
# matrices, how large can $\operatorname{rank} B$ be? Write it as `rank_bound(N, n, D, H)`.

# %%
def rank_bound(N, n, D, H):
    # BEGIN SOLUTION
    return min(N * n, D)
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert selfcheck.passes(selfcheck.zl_heads, rank_bound)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q3-expected-minimum
# points: 3

# %% [markdown]
# **Question 3 (chapter exercise "The expected minimum").** For targets with independent
# $\mathcal N(0, y^2)$ entries, independent of $B$, write the mean of the least-squares minimum
# $f_*$ as `mean_fstar(y, d_out, Nn, rank)` and its variance for $d_{\text{out}} = 1$ as
# `var_fstar(y, Nn, rank)`.

# %%
def mean_fstar(y, d_out, Nn, rank):
    # BEGIN SOLUTION
    return 0.5 * y**2 * d_out * (Nn - rank)
    # END SOLUTION

def var_fstar(y, Nn, rank):
    # BEGIN SOLUTION
    return 0.5 * y**4 * (Nn - rank)
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert selfcheck.passes(selfcheck.zl_expected, mean_fstar, var_fstar)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q4-feature-block
# points: 2

# %% [markdown]
# **Question 4 (new).** For one head, the feature block $B_h$ stacks the rows of $S(X_i)X_i$
# over the samples: row $i n + k$ is row $k$ of $S(X_i) X_i$. Write `feature_block(X, S)` for tokens
# `X` of shape $(N, n, D)$ and attention matrices `S` of shape $(N, n, n)$; it returns an
# $(Nn)\times D$ tensor.

# %%
def feature_block(X, S):
    # BEGIN SOLUTION
    return (S @ X).reshape(-1, X.shape[-1])
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
g = torch.Generator().manual_seed(0)
X = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
S = torch.softmax(torch.randn(3, 4, 4, generator=g, dtype=torch.float64), -1)
B = torch.as_tensor(feature_block(X, S))
assert B.shape == (12, 5), f"expected shape (12, 5), got {tuple(B.shape)}"
assert torch.allclose(B[4 + 2], S[1, 2] @ X[1]), "row i n + k should be row k of S(X_i) X_i"

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q5-least-squares-floor
# points: 3

# %% [markdown]
# **Question 5 (new).** Value-only training minimises $\frac12\|BW - Y\|_F^2$; its minimum is
# $f_* = \frac12\|(I - P_B)Y\|_F^2$ with $P_B$ the orthogonal projection onto the column space of $B$.
# Write `f_star(B, Y)` (it must also work when $B$ does not have full rank).

# %%
def f_star(B, Y):
    # BEGIN SOLUTION
    W = torch.linalg.lstsq(B, Y, driver="gelsd").solution
    return 0.5 * float(((B @ W - Y) ** 2).sum())
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
g = torch.Generator().manual_seed(1)
for cols, rank in ((3, 3), (8, 4), (20, 12)):
    B = torch.randn(12, rank, generator=g, dtype=torch.float64) @ torch.randn(rank, cols, generator=g, dtype=torch.float64)
    Y = torch.randn(12, 2, generator=g, dtype=torch.float64)
    U = torch.linalg.svd(B, full_matrices=False).U[:, :rank]
    want = 0.5 * float(((Y - U @ (U.T @ Y)) ** 2).sum())
    got = float(f_star(B, Y))
    assert abs(got - want) <= 1e-8 * max(1.0, want), f"B of rank {rank}: expected {want:.6g}, got {got:.6g}"

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION
