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
# # Problem set: joint training from a good initialization
#
# This problem set goes with the chapter *Joint training reaches zero loss from a good
# initialization* of the book and uses its notation: parameters $\theta = (W^Q, W^K, W^V)$ with one shared $W^O$ held fixed,
# the feature matrix $B(\theta) \in \mathbb R^{Nn\times HD}$, stacked values
# $V \in \mathbb R^{HD\times d_v}$, $f(\theta) = \frac12\|B(\theta)VW^O - Y\|_F^2$ and
# $\mu(\theta) = \lambda_{\min}(B(\theta)B(\theta)^\top)\,\sigma_{\min}(W^O)^2$.
#
# Replace every `...` by your answer. Questions 1 and 2 are graded by tests that you do not see;
# the `grader.check(...)` cell after each of them only runs a sanity test (it checks that your
# answer has the right form, not that it is right). Check your answers yourself: each question
# says how. Question 3 is a written proof, graded by hand. Install the book's library (the wheel
# that comes with this notebook) and the grader first, e.g. on Colab after uploading the wheel:
# `pip install otter-grader==7.0.0 tdlib-*.whl`.

# %%
import copy
import math
import numpy as np
import torch
import tdlib
from tdlib import zeroloss

# %% [raw]
# # BEGIN QUESTION
# name: q1-first-step
# points: [0, 4]

# %% [markdown]
# **Question 1 (derive, then verify; 4 points).** Start joint gradient descent on
# $(W^Q, W^K, W^V)$ from any $W^Q_0, W^K_0$ and $W^V_0 = 0$, and write $B = B(\theta_0)$.
# (a) Show that the first step $\theta_1 = \theta_0 - \eta\nabla f(\theta_0)$ does not move
# $W^Q$ or $W^K$, and that $f(\theta_1)$ is a quadratic polynomial in $\eta$. (b) Derive the step
# $\eta^\star$ that minimises $f(\theta_1)$ and the value $f_1^\star = f(\theta_1)$ at $\eta^\star$, in
# terms of $B$, $W^O$ and $Y$ (stacked as an $Nn\times d_{\text{out}}$ matrix, row $in + k$ for token
# $k$ of sample $i$). Write `first_step(B, W_O, Y)` returning the pair `(eta_star, f1_star)`.
# Verify it yourself: take a layer from `zeroloss.make_instance` (its $W^V$ is zero), build $B$ with
# `zeroloss.feature_matrix`, and compare with one step of gradient descent computed by autograd.

# %%
def first_step(B, W_O, Y):
    # BEGIN SOLUTION
    M = B @ B.T @ Y @ W_O.T @ W_O
    inner = float((M * Y).sum())                 # = |B^T Y W_O^T|_F^2 >= 0
    eta_star = inner / float((M * M).sum())
    f1_star = 0.5 * (float((Y * Y).sum()) - inner * eta_star)
    return eta_star, f1_star
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
_out = first_step(torch.eye(3, dtype=torch.float64), torch.eye(2, dtype=torch.float64),
                  torch.ones(3, 2, dtype=torch.float64))
assert len(_out) == 2, "return the pair (eta_star, f1_star)"
assert all(math.isfinite(float(v)) for v in _out), "both numbers should be finite"

# %%
# HIDDEN
def _first_step_by_autograd():
    for kernel in ("softmax", "gaussian"):
        for H, seed in ((1, 3), (2, 4)):
            m, X, Y = zeroloss.make_instance(kernel, N=2, n=3, D=6, H=H, d=3, d_out=2, seed=seed)
            g = torch.Generator().manual_seed(seed)
            W_O = torch.randn(2, 2, generator=g, dtype=torch.float64) + 2 * torch.eye(2, dtype=torch.float64)
            m.set_weights(W_O=W_O.expand(H, 2, 2).clone())
            B = zeroloss.feature_matrix(m, X)
            eta, f1 = (float(v) for v in first_step(B, W_O, Y.reshape(-1, 2)))
            Ws = [m.W_Q, m.W_K, m.W_V]
            for W in Ws:
                W.requires_grad_(True)
            grads = torch.autograd.grad(m.loss(X, Y), Ws)
            def loss_after(step):
                m1 = copy.deepcopy(m)
                new = {k: (W - step * G).detach() for k, W, G in zip(("W_Q", "W_K", "W_V"), Ws, grads)}
                m1.set_weights(**new)
                return float(m1.loss(X, Y).detach())
            f_star = loss_after(eta)
            assert abs(f_star - f1) <= 1e-9 * max(1.0, abs(f_star)), f"{kernel}: f1_star is not f(theta_1)"
            for factor in (1 - 1e-3, 1 + 1e-3):
                assert loss_after(factor * eta) > f_star, f"{kernel}: eta_star is not the best step"
_first_step_by_autograd()

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q2-tight-pl
# points: [0, 4]

# %% [markdown]
# **Question 2 (construct an instance; 4 points).** The PL lemma of the chapter gives
# $\|\nabla f(\theta)\|^2 \ge 2\mu(\theta)f(\theta)$. Show that the constant cannot be improved,
# not even by the attention blocks of the gradient: for a given layer `model` with $W^V = 0$,
# $HD \ge Nn$ and $\lambda_{\min}(BB^\top) > 0$, and tokens `X`, construct targets $Y$ (a tensor of
# shape $(N, n, d_{\text{out}})$) with $f(\theta) > 0$ and
# $\|\nabla_\theta f(\theta)\|^2 = 2\mu(\theta)f(\theta)$, the gradient taken in all of
# $W^Q, W^K, W^V$. The shared $W^O$ is `model.W_O[0]` (it need not be orthogonal, and $d_v \ge
# d_{\text{out}}$). Write `tight_targets(model, X)`; it must not change the model.
#
# The graders' certificate computes the whole gradient by autograd for layers of both kernels and
# checks the ratio $\|\nabla f\|^2/(2f\mu)$ against 1 to $10^{-6}$; do the same yourself.

# %%
def tight_targets(model, X):
    # BEGIN SOLUTION
    B = zeroloss.feature_matrix(model, X)
    u = torch.linalg.eigh(B @ B.T).eigenvectors[:, 0]          # lambda_min(B B^T)
    w = torch.linalg.svd(model.W_O[0].detach()).Vh[-1]         # sigma_min(W^O), right side
    N, n = X.shape[0], X.shape[1]
    # at W^V = 0 the output is 0, so the residual is -Y = u w^T: the attention gradients vanish
    # and |grad_V f|^2 = |B^T u|^2 |W^O w|^2 = lambda_min sigma_min^2 = 2 mu f
    return -torch.outer(u, w).reshape(N, n, -1)
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
_m, _X, _ = zeroloss.make_instance("softmax", N=1, n=2, D=4, d=2, d_out=1, seed=0)
_Y = torch.as_tensor(tight_targets(_m, _X))
assert _Y.shape == (1, 2, 1), f"expected targets of shape (N, n, d_out) = (1, 2, 1), got {tuple(_Y.shape)}"

# %%
# HIDDEN
def _tight_certificate():
    for kernel in ("softmax", "gaussian"):
        for H, D, d_v, seed in ((1, 8, 2, 5), (2, 4, 3, 6)):
            X = torch.randn(2, 3, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
            g = torch.Generator().manual_seed(seed)
            W_O = torch.randn(d_v, 2, generator=g, dtype=torch.float64)
            m = tdlib.AttentionLayer(D, H=H, d=3, d_v=d_v, d_out=2, kernel=kernel, seed=seed,
                                     dtype=torch.float64)
            m.set_weights(W_V=torch.zeros(H, D, d_v, dtype=torch.float64),
                          W_O=W_O.expand(H, d_v, 2).clone())
            before = {k: v.detach().clone() for k, v in m.state_dict().items()}
            Y = torch.as_tensor(tight_targets(m, X), dtype=torch.float64)
            assert all(torch.equal(before[k], v) for k, v in m.state_dict().items()), "model changed"
            B = zeroloss.feature_matrix(m, X)
            lam = float(torch.linalg.eigvalsh(B @ B.T)[0])
            mu = lam * float(torch.linalg.svdvals(W_O)[-1]) ** 2
            assert lam > 1e-8, "test instance: B B^T should be invertible"
            Ws = [m.W_Q, m.W_K, m.W_V]
            for W in Ws:
                W.requires_grad_(True)
            f = m.loss(X, Y)
            grad_sq = sum(float((G ** 2).sum()) for G in torch.autograd.grad(f, Ws))
            assert float(f.detach()) > 1e-8, "the loss must be positive"
            assert abs(grad_sq / (2 * float(f.detach()) * mu) - 1) <= 1e-6, f"{kernel}: ratio is not mu"
_tight_certificate()

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q3-pl-distance
# manual: true
# points: 5

# %% [markdown]
# **Question 3 (written proof; 5 points).** Let $F:\mathbb R^p \to [0, \infty)$ have an
# $L$-Lipschitz gradient and satisfy $\|\nabla F(x)\|^2 \ge 2\mu F(x)$ for **every** $x$, with
# $0 < \mu \le L$. Run $x_{t+1} = x_t - \frac1L\nabla F(x_t)$. Prove that
# (i) $F(x_t) \le (1 - \mu/L)^t F(x_0)$;
# (ii) $\|x_t - x_0\| \le 2\sqrt{2LF(x_0)}/\mu$ for every $t$;
# (iii) $x_t$ converges to a point $x_\infty$ with $F(x_\infty) = 0$.
# Then say in two or three sentences which step of the chapter's joint theorem plays the role of
# (ii), and why the theorem needs a ball of radius $r$ where this exercise does not.

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# **Proof.** (i) The descent lemma for an $L$-smooth function gives
# $F(x_{t+1}) \le F(x_t) - \frac1L\|\nabla F_t\|^2 + \frac{1}{2L}\|\nabla F_t\|^2
# = F(x_t) - \frac1{2L}\|\nabla F_t\|^2 \le (1 - \mu/L)F(x_t)$ by the PL inequality; iterate.
#
# (ii) The same inequality and $F \ge 0$ give $\|\nabla F_t\|^2 \le 2L(F_t - F_{t+1}) \le 2LF_t$, so
# $\|x_{t+1} - x_t\| = \|\nabla F_t\|/L \le \sqrt{2F_t/L} \le \sqrt{2F_0/L}\,\varrho^t$ with
# $\varrho = \sqrt{1 - \mu/L} < 1$. Summing,
# $\|x_t - x_0\| \le \sqrt{2F_0/L}/(1 - \varrho)$, and $1 - \sqrt{1 - s} \ge s/2$ for $s \in [0, 1]$
# gives $1/(1-\varrho) \le 2L/\mu$, so $\|x_t - x_0\| \le 2\sqrt{2LF_0}/\mu$.
#
# (iii) The steps are summable, so $(x_t)$ is Cauchy and converges; $F$ is continuous and
# $F(x_t) \to 0$ by (i), so $F(x_\infty) = 0$.
#
# In the joint theorem, the PL inequality and the smoothness constant hold only on the ball
# $\mathbb B_r$ (the eigenvalue bound needs $\theta$ near $\theta_0$); condition (C2),
# $2\beta\sqrt{2f_0} \le \underline\mu r$, is the analogue of (ii): it guarantees that the total
# length of the steps stays below $r$, so the iterates never leave the region where the
# hypotheses hold (an induction on $t$). Here the hypotheses hold everywhere, so no induction is needed.
#
# **Rubric (5 points).**
# - 1: descent lemma with step $1/L$ and the PL inequality combined into the factor $1 - \mu/L$.
# - 2: step length bounded by $\sqrt{2F_t/L}$ (using $F \ge 0$ or $\|\nabla F\|^2 \le 2LF$), geometric
#   sum, and the inequality $1 - \sqrt{1-s} \ge s/2$ (or an equivalent bound) to reach the constant.
# - 1: convergence of the iterates (Cauchy / summable steps) and $F(x_\infty) = 0$ by continuity.
# - 1: correct identification of (C2) and the induction that keeps $\theta_t \in \mathbb B_r$.
# - A proof of (ii) with a worse but explicit constant earns 1 of its 2 points.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION
