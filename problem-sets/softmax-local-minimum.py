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
# # Problem set: the Softmax local-minimum counterexample
#
# This problem set goes with the chapter *The Softmax local-minimum counterexample* of the book. Replace every `...` by your
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
# name: q1-inverse-map
# points: 3

# %% [markdown]
# **Question 1 (chapter exercise "No counterexample with three generic keys in the plane").**
# For three affinely independent keys in $\mathbb R^2$ (rows of `K`) and $p$ in the open simplex,
# write `q_from_p(p, K)`, the query with $\operatorname{softmax}(Kq/\sqrt 2) = p$.

# %%
def q_from_p(p, K):
    # BEGIN SOLUTION
    M = (K[1:] - K[0]) / math.sqrt(2)
    return torch.linalg.solve(M, torch.log(p[1:]) - torch.log(p[0]))
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert selfcheck.passes(selfcheck.ce_no_2d, q_from_p)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q2-log-growth
# points: 2

# %% [markdown]
# **Question 2 (chapter exercise "The logarithmic growth of the query").** Write the solution of
# $\dot s = a e^{-s}$, $s(0) = s_0$, as `s_of_t(t, a, s0)` (vectorised over a NumPy array `t`).

# %%
def s_of_t(t, a, s0):
    # BEGIN SOLUTION
    return np.log(np.exp(s0) + a * np.asarray(t, dtype=float))
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert selfcheck.passes(selfcheck.ce_log, s_of_t)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q3-output
# points: 2

# %% [markdown]
# **Question 3 (new).** Write `softmax_output(q, K, V)`: the output $o(q) = \sum_j p_j(q) v_j$ of one
# query `q` (shape $(d,)$) against keys `K` $(n, d)$ and values `V` $(n, d_{\text{out}})$, with
# $p(q) = \operatorname{softmax}(Kq/\sqrt d)$.

# %%
def softmax_output(q, K, V):
    # BEGIN SOLUTION
    return torch.softmax(K @ q / math.sqrt(K.shape[1]), 0) @ V
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
from tdlib import counterexample as ce
P = ce.instance()
for s in (-3.0, 0.0, 2.5):
    got = torch.as_tensor(softmax_output(torch.tensor([s], dtype=torch.float64),
                                         P.keys.reshape(3, 1).double(), P.values.double()))
    want = P.output(torch.tensor([[s]], dtype=torch.float64))[0]
    assert torch.allclose(got, want), f"at s = {s}: expected {want.numpy()}, got {got.numpy()}"

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q4-loss-floor
# points: 3

# %% [markdown]
# **Question 4 (new).** With two values $v_1 \ne v_2$ the outputs fill the open segment between
# them, so the loss floor is $\frac12\operatorname{dist}(y, [v_1, v_2])^2$. Write
# `segment_floor(v1, v2, y)` returning it (NumPy vectors of any dimension).

# %%
def segment_floor(v1, v2, y):
    # BEGIN SOLUTION
    d = v2 - v1
    t = np.clip(np.dot(y - v1, d) / np.dot(d, d), 0.0, 1.0)
    return 0.5 * float(np.sum((v1 + t * d - y) ** 2))
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
rng = np.random.default_rng(0)
for _ in range(5):
    v1, v2, y = rng.normal(size=(3, 3))
    ts = np.linspace(0, 1, 200001)[:, None]
    want = 0.5 * np.min(np.sum((v1 + ts * (v2 - v1) - y) ** 2, axis=1))
    got = segment_floor(v1, v2, y)
    assert abs(got - want) < 1e-6, f"expected {want:.6f}, got {got:.6f} (clip to the segment's ends)"

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION
