# %% [raw]
# # ASSIGNMENT CONFIG
# name: joint-training
# init_cell: true
# check_all_cell: true
# export_cell: false
# run_tests: false
# generate: true
# files: []
# strip_solutions_from_all_cells: true

# %% [markdown]
# # Problem set: joint training reaches zero loss
#
# This problem set goes with the chapter *Joint training reaches zero loss from a good initialization* of the book. Replace every `...` by your
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
from tdlib import joint as jt

# %% [raw]
# # BEGIN QUESTION
# name: q1-pl-step
# points: 2

# %% [markdown]
# **Question 1 (chapter exercise "The PL step").** If $\|\nabla^2 f\|_2 \le L$ along the step and
# $\|\nabla f\|^2 \ge 2\mu f$, one gradient step of size $\eta \le 2/L$ multiplies the loss by at most
# a factor that depends on $\eta$, $\mu$ and $L$. Write it as `pl_factor(eta, mu, L)`.

# %%
def pl_factor(eta, mu, L):
    # BEGIN SOLUTION
    return 1 - 2 * eta * mu * (1 - eta * L / 2)
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert selfcheck.passes(selfcheck.jt_descent, pl_factor)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q2-attention-gradients
# points: 2

# %% [markdown]
# **Question 2 (chapter exercise "Why the attention waits").** Write `attention_gradients(model, X, Y)`
# that returns `{"W_Q": ..., "W_K": ...}`, the Frobenius norms of the gradients of the loss with
# respect to $W^Q$ and $W^K$ at the model's current weights (use autograd).

# %%
def attention_gradients(model, X, Y):
    # BEGIN SOLUTION
    Ws = [model.W_Q, model.W_K]
    for W in Ws:
        W.requires_grad_(True)
    grads = torch.autograd.grad(model.loss(X, Y), Ws)
    return {"W_Q": float(grads[0].norm()), "W_K": float(grads[1].norm())}
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert selfcheck.passes(selfcheck.jt_first_step, attention_gradients)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q3-largest-gamma
# points: 3

# %% [markdown]
# **Question 3 (chapter exercise "How far the targets may grow").** With $W^V_0 = 0$, write
# `largest_gamma(model, X, Y)`: the largest $\gamma$ for which the joint condition (C1)-(C2) holds with
# the targets $\gamma Y$. (`jt.residual_limit(model, X, Y)` returns $\max_r \mu r/(2\beta(r))$.)

# %%
def largest_gamma(model, X, Y):
    # BEGIN SOLUTION
    return jt.residual_limit(model, X, Y) / float(Y.norm())
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert selfcheck.passes(selfcheck.jt_scale, largest_gamma)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q4-steps-needed
# points: 2

# %% [markdown]
# **Question 4 (new).** The joint theorem guarantees $f_t \le (1 - \eta\mu)^t f_0$. Write
# `steps_needed(eta, mu, eps)`: the smallest integer $t \ge 0$ for which this guarantee gives
# $f_t \le \varepsilon f_0$ (for $0 < \eta\mu < 1$ and $0 < \varepsilon \le 1$).

# %%
def steps_needed(eta, mu, eps):
    # BEGIN SOLUTION
    t = max(0, math.ceil(math.log(eps) / math.log(1 - eta * mu)))
    while t > 0 and (1 - eta * mu) ** (t - 1) <= eps:
        t -= 1
    while (1 - eta * mu) ** t > eps:
        t += 1
    return t
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
for eta, mu, eps in ((0.1, 1.0, 1e-6), (0.5, 0.3, 0.5), (1.0, 0.01, 1e-3), (0.2, 2.0, 1.0)):
    t = int(steps_needed(eta, mu, eps))
    q = 1 - eta * mu
    assert q**t <= eps, f"eta={eta}, mu={mu}, eps={eps}: (1 - eta mu)^{t} = {q**t:.3g} > eps"
    assert t == 0 or q ** (t - 1) > eps, f"eta={eta}, mu={mu}, eps={eps}: {t - 1} steps suffice"

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q5-pl-constant
# points: 3

# %% [markdown]
# **Question 5 (new).** Write `pl_constant(B, W_O)`, the PL constant
# $\mu = \lambda_{\min}(BB^\top)\,\sigma_{\min}(W^O)^2$ of the chapter's lemma, for a feature matrix
# `B` of shape $(Nn, HD)$ and an output matrix `W_O` of shape $(d_v, d_{\text{out}})$ with
# $d_v \ge d_{\text{out}}$ ($\sigma_{\min}$ is the $d_{\text{out}}$-th singular value).

# %%
def pl_constant(B, W_O):
    # BEGIN SOLUTION
    lam = float(torch.linalg.eigvalsh(B @ B.T)[0])
    s = float(torch.linalg.svdvals(W_O)[-1])
    return lam * s**2
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
g = torch.Generator().manual_seed(2)
for Nn, HD, dv, dout in ((6, 12, 3, 2), (4, 4, 2, 2), (6, 3, 2, 1)):
    B = torch.randn(Nn, HD, generator=g, dtype=torch.float64)
    W_O = torch.randn(dv, dout, generator=g, dtype=torch.float64)
    lam = max(float(torch.linalg.eigvalsh(B @ B.T)[0]), 0.0) if Nn <= HD else 0.0
    want = lam * float(torch.linalg.svdvals(W_O)[dout - 1]) ** 2
    got = float(pl_constant(B, W_O))
    assert abs(got - want) <= 1e-8 * max(1.0, abs(want)), f"Nn={Nn}, HD={HD}: expected {want:.6g}, got {got:.6g}"

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION
