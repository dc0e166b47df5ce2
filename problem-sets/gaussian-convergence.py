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
# This problem set goes with the chapter *Gaussian attention: query-only training converges, and how often each kernel succeeds* of the book. Replace every `...` by your
# answer and run the `grader.check(...)` cell after each question: it tells you at once whether
# the answer passes and, if not, why (the tests travel inside the notebook). On Colab or
# elsewhere, install the book's library and the grader first:
# `pip install otter-grader==7.0.0 git+https://github.com/attention-gd/gd-transformers-book`.
# Questions 1-2 are exercises of the chapter; questions 3-4 are new.

# %%
import math
import numpy as np
import torch
from tdlib import selfcheck

# %% [raw]
# # BEGIN QUESTION
# name: q1-softmax-jacobian
# points: 3

# %% [markdown]
# **Question 1 (chapter exercise "The Softmax Jacobian").** Write `softmax_jac(q, K, U)`, the
# $d_{\text{out}}\times d$ Jacobian of $o(q) = U^\top\operatorname{softmax}(Kq/\sqrt d)$.

# %%
def softmax_jac(q, K, U):
    # BEGIN SOLUTION
    d = K.shape[1]
    p = torch.softmax(K @ q / math.sqrt(d), 0)
    return U.T @ (torch.diag(p) - torch.outer(p, p)) @ K / math.sqrt(d)
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert selfcheck.passes(selfcheck.softmax_jacobian, softmax_jac)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q2-orthogonal
# points: 2

# %% [markdown]
# **Question 2 (chapter exercise "Where the orthogonal directions go").** How many independent
# directions are orthogonal to the affine hull of $n$ affinely independent keys in $\mathbb R^d$
# ($d \ge n$)? Write `n_directions(n, d)`.

# %%
def n_directions(n, d):
    # BEGIN SOLUTION
    return d - n + 1
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert selfcheck.passes(selfcheck.orthogonal, n_directions)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q3-gaussian-jacobian
# points: 3

# %% [markdown]
# **Question 3 (new).** Write `gauss_jac(q, K, U, c)`, the Jacobian of the Gaussian output
# $o(q) = \sum_j \exp(-\|q - k_j\|^2/c)\,u_j$ with respect to $q$ (shape $d_{\text{out}}\times d$).

# %%
def gauss_jac(q, K, U, c):
    # BEGIN SOLUTION
    a = torch.exp(-((q - K) ** 2).sum(1) / c)
    return -(2 / c) * (U.T * a) @ (q - K)
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
g = torch.Generator().manual_seed(2)
for n, d, d_out in ((3, 4, 2), (5, 2, 3)):
    q, K, U = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((d,), (n, d), (n, d_out)))
    c = 2 * math.sqrt(d)
    f = lambda x: U.T @ torch.exp(-((x - K) ** 2).sum(1) / c)
    want = torch.autograd.functional.jacobian(f, q)
    got = torch.as_tensor(gauss_jac(q, K, U, c))
    assert got.shape == want.shape and torch.allclose(got, want), "your Jacobian differs from autograd"

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q4-steps-needed
# points: 2

# %% [markdown]
# **Question 4 (new).** The theorem gives $f(W_t) \le (1 - \eta\mu)^t f_0$. Write
# `steps_needed(eta, mu, eps)`: the smallest integer $t$ for which this bound guarantees
# $f(W_t) \le \varepsilon f_0$ ($0 < \eta\mu < 1$, $0 < \varepsilon < 1$).

# %%
def steps_needed(eta, mu, eps):
    # BEGIN SOLUTION
    return math.ceil(math.log(eps) / math.log(1 - eta * mu))
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
for eta, mu, eps in ((0.1, 0.5, 1e-3), (1.0, 0.01, 1e-6), (0.5, 1.0, 0.5)):
    t = int(steps_needed(eta, mu, eps))
    r = 1 - eta * mu
    assert r**t <= eps * (1 + 1e-12), f"after {t} steps the bound is {r**t:.3g} > {eps}"
    assert t == 0 or r**(t - 1) > eps, f"{t - 1} steps already suffice"

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION
