# %% [raw]
# # ASSIGNMENT CONFIG
# name: in-context-regression
# init_cell: true
# check_all_cell: true
# export_cell: false
# run_tests: false
# generate: true
# files: []
# strip_solutions_from_all_cells: true

# %% [markdown]
# # Problem set: in-context regression with the linear layer
#
# This problem set goes with the chapter *In-context regression: the linear kernel solved* of the
# book and uses its notation: a prompt has $n$ tokens, $n - 1$ labelled examples $(x_j, y_j)$ with
# $y_j = w^\top x_j$ and a query $x_q$ with hidden label $y_q = w^\top x_q$; covariates
# $x \sim \mathcal N(0, \Sigma)$ in $\mathbb R^m$; the layer predicts
# $\hat y = x_q^\top W^{QK}\hat\Sigma_{xy}$ with $\hat\Sigma_{xy} = \frac1n\sum_{j<n}y_jx_j$ and
# $\hat\Sigma = \frac1n\sum_{j<n}x_jx_j^\top$; the population risk is
# $\mathcal R(W^{QK}) = \frac12\mathbb E[(\hat y - y_q)^2]$, minimised by
# $W^{QK}_* = n(n\Sigma + \operatorname{tr}(\Sigma)I_m)^{-1}$ when $w \sim \mathcal N(0, I_m)$.
# The library's module `tdlib.icl` computes the chapter's quantities (`icl.population_risk`,
# `icl.optimum`, `icl.risk_gradient`, `icl.hessian_eigenvalues`, `icl.population_gd`, ...).
#
# Replace every `...` by your answer. Questions 1 to 4 are graded by tests that you do not see;
# the `grader.check(...)` cell after each of them only runs a sanity test (it checks that your
# answer has the right form, not that it is right). Check your answers yourself: each question
# says how. Questions 5 and 6 are written answers, graded by hand. Install the book's library
# (the wheel that comes with this notebook) and the grader first, e.g. on Colab after uploading
# the wheel: `pip install otter-grader==7.0.0 tdlib-*.whl`.

# %%
import math
import numpy as np
import torch
import tdlib
from tdlib import icl

# %% [raw]
# # BEGIN QUESTION
# name: q1-task-covariance
# points: [0, 4]

# %% [markdown]
# **Question 1 (derive, then verify; 4 points).** Let the tasks be correlated: every prompt draws
# $w \sim \mathcal N(0, \Omega)$ with a symmetric positive definite **task covariance**
# $\Omega \in \mathbb R^{m\times m}$, independently of the covariates (everything else as in the
# chapter; $\Omega = I_m$ is the chapter's case). Derive the minimiser $W^{QK}_\Omega$ of the
# population risk of the prediction (ICL) and the minimum risk, in closed form in terms of
# $\Sigma$, $\Omega$ and $n$. Write them as `task_optimum(cov, task_cov, n)` (an $m\times m$
# tensor) and `task_minimum(cov, task_cov, n)` (a number). Verify both yourself: against
# `icl.optimum` and `icl.minimum_risk` for $\Omega = I_m$, and for a general $\Omega$ against a
# Monte Carlo estimate of the risk on prompts that you draw with $w \sim \mathcal N(0, \Omega)$
# (at your optimum and at small perturbations of it).

# %%
def task_optimum(cov, task_cov, n):
    # BEGIN SOLUTION
    # w = Omega^{1/2} u with u ~ N(0, I): the prompt is a chapter prompt in the covariates
    # x' = Omega^{1/2} x (covariance Omega^{1/2} Sigma Omega^{1/2}), read by the matrix
    # Omega^{-1/2} W Omega^{-1/2}; so W_Omega = Omega^{1/2} W*(Sigma') Omega^{1/2}
    #                                         = n (n Omega Sigma + tr(Sigma Omega) I)^{-1} Omega
    S, Om = (torch.as_tensor(a, dtype=torch.float64) for a in (cov, task_cov))
    lam, V = torch.linalg.eigh(Om)
    root = V @ torch.diag(lam.sqrt()) @ V.T              # Omega^{1/2}
    return root @ icl.optimum(root @ S @ root, n) @ root
    # END SOLUTION

def task_minimum(cov, task_cov, n):
    # BEGIN SOLUTION
    # the chapter's minimum for Sigma' = Omega^{1/2} Sigma Omega^{1/2}, whose eigenvalues are
    # those of Sigma Omega
    S, Om = (torch.as_tensor(a, dtype=torch.float64) for a in (cov, task_cov))
    lam, V = torch.linalg.eigh(Om)
    root = V @ torch.diag(lam.sqrt()) @ V.T
    return float(icl.minimum_risk(root @ S @ root, n))
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
_S = torch.eye(2, dtype=torch.float64)
_out = torch.as_tensor(task_optimum(_S, 2 * _S, 5))
assert _out.shape == (2, 2), f"expected an m x m = (2, 2) tensor, got shape {tuple(_out.shape)}"
assert math.isfinite(float(task_minimum(_S, 2 * _S, 5))), "task_minimum should be a number"

# %%
# HIDDEN
def _task_covariance_checks():
    def root(M):
        lam, U = torch.linalg.eigh(M)
        return U @ torch.diag(lam.sqrt()) @ U.T
    for k, (m, n) in enumerate(((2, 3), (3, 8), (4, 20), (5, 6))):
        S = icl.random_covariance(m, seed=300 + k)
        Om = icl.random_covariance(m, seed=400 + k, low=0.1, high=3.0)
        R_half = root(Om)
        R_inv = torch.linalg.inv(R_half)
        S_tilde = R_half @ S @ R_half
        # the risk with task covariance Omega is the chapter's risk of the covariates
        # Omega^{1/2} x, read by Omega^{-1/2} W Omega^{-1/2} (w = Omega^{1/2} u, u ~ N(0, I))
        def risk(W):
            return icl.population_risk(R_inv @ W @ R_inv, S_tilde, n)
        W = torch.as_tensor(task_optimum(S, Om, n), dtype=torch.float64)
        assert W.shape == (m, m), "wrong shape"
        W = W.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(risk(W), W)
        scale = float(torch.linalg.matrix_norm(S @ Om @ S))
        assert float(grad.abs().max()) <= 1e-9 * scale, "the risk's gradient is not zero there"
        want = R_half @ icl.optimum(S_tilde, n) @ R_half
        assert torch.allclose(W.detach(), want, rtol=1e-9, atol=1e-12), "not the minimiser"
        R_min = float(task_minimum(S, Om, n))
        assert abs(R_min - float(risk(want))) <= 1e-9 * float(torch.trace(S @ Om)), \
            "not the minimum of the risk"
        eye = torch.eye(m, dtype=torch.float64)
        assert torch.allclose(torch.as_tensor(task_optimum(S, eye, n), dtype=torch.float64),
                              icl.optimum(S, n), rtol=1e-9, atol=1e-12), "Omega = I"
_task_covariance_checks()

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q2-overshooting-step
# points: [0, 3]

# %% [markdown]
# **Question 2 (construct a counterexample; 3 points).** A layer trained on isotropic prompts
# ($\Sigma = I_m$) learns $W^{QK} = \frac{n}{n+m}I_m$: one step of plain gradient descent with
# step size $\frac{n}{n+m}$. It is then used, with the same $n$, on prompts whose covariance
# $\Sigma$ has the same total variance, $\operatorname{tr}\Sigma = m$. One might expect the learnt
# step to help at least a little on every such $\Sigma$. Refute this: find $m \ge 2$, $n$ with
# $2 \le n \le 100$ and a covariance $\Sigma$ with $\operatorname{tr}\Sigma = m$ and every
# eigenvalue at least $0.05$, for which the isotropic layer does **worse than predicting zero**:
# $\mathcal R\big(\frac{n}{n+m}I_m\big) \ge \mathcal R(0) + 10^{-2}\,\mathcal R(0)$. Return
# `(cov, n)` from `overshooting_covariance()`.
#
# The graders' certificate checks the trace and the eigenvalues and evaluates both risks with
# the closed form `icl.population_risk`; run the same check yourself, and confirm it with a
# Monte Carlo estimate on prompts drawn with `icl.prompts(N, n, m, cov=cov)`.

# %%
def overshooting_covariance():
    # BEGIN SOLUTION
    # R(c I) - R(0) = c^2/2 tr(Sigma E[Sigma_hat^2]) - c (n-1)/n tr(Sigma^2) is positive once
    # c exceeds twice its minimiser; with almost all the variance in one direction,
    # n tr(Sigma^3) + tr(Sigma) tr(Sigma^2) > 2 (n + m) tr(Sigma^2) holds for n > 3 when m = 3
    cov = torch.diag(torch.tensor([2.8, 0.1, 0.1], dtype=torch.float64))
    return cov, 20
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
_cov, _n = overshooting_covariance()
assert torch.as_tensor(_cov).ndim == 2, "cov should be an m x m matrix"
assert int(_n) == _n, "n should be an integer"

# %%
# HIDDEN
def _overshoot_certificate():
    S, n = overshooting_covariance()
    S = torch.as_tensor(S, dtype=torch.float64)
    assert int(n) == n and 2 <= int(n) <= 100, "need an integer n with 2 <= n <= 100"
    n = int(n)
    assert S.ndim == 2 and S.shape[0] == S.shape[1] >= 2, "cov must be m x m with m >= 2"
    m = S.shape[0]
    assert torch.allclose(S, S.T, rtol=0, atol=1e-12), "cov must be symmetric"
    assert float(torch.linalg.eigvalsh(S).min()) >= 0.05 - 1e-12, "an eigenvalue is below 0.05"
    assert abs(float(torch.trace(S)) - m) <= 1e-9 * m, "tr(cov) must equal m"
    R0 = float(icl.population_risk(torch.zeros(m, m, dtype=torch.float64), S, n))
    R_iso = float(icl.population_risk(n / (n + m) * torch.eye(m, dtype=torch.float64), S, n))
    assert R_iso >= 1.01 * R0, f"R(n/(n+m) I) = {R_iso:.4f} is not 1 % above R(0) = {R0:.4f}"
_overshoot_certificate()

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q3-best-step
# points: [0, 3]

# %% [markdown]
# **Question 3 (derive, then verify; 3 points).** Gradient descent
# $W_{t+1} = W_t - \eta\nabla\mathcal R(W_t)$ on the population risk (with
# $w \sim \mathcal N(0, I_m)$ again) contracts the error $W_t - W^{QK}_*$ in the eigen-directions
# of the Hessian $\mathcal H$ of part 1 of the proposition *Gradient descent on the two
# quadratics*, by the factors $1 - \eta h$, $h$ an eigenvalue of $\mathcal H$. Derive, in closed
# form in terms of the eigenvalues $\lambda_1, \dots, \lambda_m$ of $\Sigma$ and $n$: the constant
# step size $\eta^\star$ that makes the worst factor $\max_h|1 - \eta h|$ smallest, and the factor
# $r^\star$ by which the risk gap $\mathcal R(W_t) - \mathcal R^*$ then shrinks per step in the
# long run, from $W_0 = 0$ (say why no eigen-direction that matters is left out). Write
# `fastest_step(cov, n)` returning `(eta_star, r_star)`. Verify yourself: run `icl.population_gd`
# at $\eta^\star$ from zero, measure the ratio of the gaps over the last steps, and compare with
# the run at $\eta = 1/\lambda_{\max}(\mathcal H)$.

# %%
def fastest_step(cov, n):
    # BEGIN SOLUTION
    # the Hessian's eigenvalues lambda_a (n-1)/n^2 (n lambda_b^2 + t lambda_b) are smallest and
    # largest at a = b = the smallest and the largest eigenvalue of Sigma; both extreme
    # directions u_a u_a^T carry a non-zero entry of W* (diagonal in the eigenbasis), so the gap
    # shrinks in the long run by the square of the worst factor
    h = icl.hessian_eigenvalues(cov, n)
    lo, hi = float(h[0]), float(h[-1])
    return 2 / (lo + hi), ((hi - lo) / (hi + lo)) ** 2
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
_out = fastest_step(torch.eye(2, dtype=torch.float64), 4)
assert len(_out) == 2 and all(math.isfinite(float(v)) for v in _out), "return (eta, rate)"

# %%
# HIDDEN
def _fastest_step_checks():
    for k, (m, n) in enumerate(((2, 4), (3, 8), (4, 12))):
        S = icl.random_covariance(m, seed=500 + k, low=0.3, high=2.0)
        lam = torch.linalg.eigvalsh(S)
        t = float(lam.sum())
        hs = [(n - 1) / n ** 2 * float(l) ** 2 * (n * float(l) + t) for l in (lam[0], lam[-1])]
        eta, rate = (float(v) for v in fastest_step(S, n))
        assert abs(eta - 2 / sum(hs)) <= 1e-9 * eta, "not the best step size"
        want = ((hs[1] - hs[0]) / (hs[1] + hs[0])) ** 2
        assert abs(rate - want) <= 1e-9, "not the rate at the best step size"
        run = icl.population_gd(S, n, lr=2 / sum(hs), steps=400)
        gap = run["gap"]
        tail = int((gap > 1e-24 * gap[0]).sum()) - 1
        measured = float((gap[tail] / gap[tail - 20]) ** (1 / 20))
        assert abs(measured - rate) <= 1e-3 * rate, f"measured {measured}, claimed {rate}"
_fastest_step_checks()

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q4-unbalanced-limit
# points: [0, 3]

# %% [markdown]
# **Question 4 (derive, then verify; 3 points).** Take the merged parameterisation
# $W^{QK} = vU_{QK}$ of the chapter with $\Sigma = I_m$, and start gradient flow **unbalanced**:
# $v_0 = a$ and $U_{QK,0} = \frac{b}{\sqrt m}I_m$ with $a, b > 0$ and
# $ab/\sqrt m < \rho^* = \frac{n}{n+m}$. Derive the limit $(v_\infty, U_{QK,\infty})$ of the
# flow in closed form in terms of $m$, $n$, $a$ and $b$ (hint: find the form the iterates keep,
# then use the product at the limit and a conserved quantity). Write
# `unbalanced_limit(m, n, a, b)` returning `(v_inf, U_inf)` (a number and an $m\times m$ tensor).
# Verify yourself with gradient descent on $(v, U_{QK})$ with a small step size, using
# `icl.risk_gradient` and the chain rule of part 1 of the proposition *The landscape of the
# merged parameterisation*.

# %%
def unbalanced_limit(m, n, a, b):
    # BEGIN SOLUTION
    # v and U_QK = (u / sqrt m) I keep their form; v u / sqrt m -> rho*, and the flow keeps
    # v^2 - |U_QK|_F^2 = v^2 - u^2 = a^2 - b^2 =: c; so v^4 - c v^2 - m rho*^2 = 0
    rho_star = n / (n + m)
    c = a * a - b * b
    v = math.sqrt((c + math.sqrt(c * c + 4 * m * rho_star ** 2)) / 2)
    u = math.sqrt(m) * rho_star / v
    return v, u / math.sqrt(m) * torch.eye(m, dtype=torch.float64)
    # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
_v, _U = unbalanced_limit(2, 5, 0.5, 0.1)
assert math.isfinite(float(_v)) and torch.as_tensor(_U).shape == (2, 2), "(number, m x m)"

# %%
# HIDDEN
def _unbalanced_checks():
    for m, n, a, b in ((3, 10, 1.0, 0.2), (2, 6, 0.1, 0.9), (4, 30, 0.6, 0.6)):
        v_inf, U_inf = unbalanced_limit(m, n, a, b)
        v_inf = float(v_inf)
        U_inf = torch.as_tensor(U_inf, dtype=torch.float64)
        rho_star = n / (n + m)
        c = a * a - b * b
        want = math.sqrt((c + math.sqrt(c * c + 4 * m * rho_star ** 2)) / 2)
        assert abs(v_inf - want) <= 1e-9 * want, "v_inf is not right"
        eye = torch.eye(m, dtype=torch.float64)
        assert torch.allclose(U_inf, rho_star / want * eye, rtol=1e-9, atol=1e-12), "U_inf"
        # gradient descent with a small step on the factors (the flow up to O(eta))
        B, A = icl.moments(eye, n)          # grad R(W) = W A - B for Sigma = I
        G0 = icl.risk_gradient(a * b * eye, eye, n)
        assert torch.allclose(G0, a * b * A - B, rtol=0, atol=1e-12)
        v, U, eta = a, b / math.sqrt(m) * eye, 2e-3
        for _ in range(6000):
            G = v * U @ A - B
            v, U = v - eta * float((G * U).sum()), U - eta * v * G
        assert abs(v - v_inf) <= 1e-2 * v_inf, f"gradient descent ends at v = {v:.4f}"
        assert torch.allclose(U, U_inf, rtol=1e-2, atol=1e-3), "gradient descent's U_QK"
_unbalanced_checks()

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q5-task-covariance-proof
# manual: true
# points: 5

# %% [markdown]
# **Question 5 (written proof; 5 points).** Prove your answers to Question 1: for
# $w \sim \mathcal N(0, \Omega)$, $\Omega$ symmetric positive definite, show that the population
# risk is a strictly convex quadratic in $W^{QK}$, find its minimiser and its minimum, and check
# that they reduce to the chapter's for $\Omega = I_m$. You may use the lemma *Moments of the
# examples* and the theorem *The optimal merged key-query matrix* of the chapter.

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# **Proof.** Let $R = \Omega^{1/2}$ (the symmetric positive definite square root) and
# $u = R^{-1}w \sim \mathcal N(0, I_m)$, independent of the covariates. Put $x' = Rx$ for every
# covariate; the $x'$ are independent $\mathcal N(0, \Sigma')$ with $\Sigma' = R\Sigma R$,
# symmetric positive definite. The labels are $y = w^\top x = u^\top x'$, so a prompt is a
# prompt of the chapter for the covariance $\Sigma'$, and
# $\hat y = x_q^\top W\frac1n\sum_{j<n}y_jx_j = x_q'^\top(R^{-1}WR^{-1})\hat\Sigma'_{xy}$.
# Hence $\mathcal R_\Omega(W) = \mathcal R_{\Sigma'}(R^{-1}WR^{-1})$, where $\mathcal R_{\Sigma'}$ is
# the chapter's risk for $\Sigma'$. The map $W \mapsto R^{-1}WR^{-1}$ is linear and invertible,
# and $\mathcal R_{\Sigma'}$ is a strictly convex quadratic (the theorem, part 1), so
# $\mathcal R_\Omega$ is one too, minimised exactly at $W$ with
# $R^{-1}WR^{-1} = n(n\Sigma' + \operatorname{tr}(\Sigma')I_m)^{-1}$, i.e.
# $$W^{QK}_\Omega = nR\big(nR\Sigma R + \operatorname{tr}(\Sigma\Omega)I_m\big)^{-1}R
#   = n\big(n\Omega\Sigma + \operatorname{tr}(\Sigma\Omega)I_m\big)^{-1}\Omega ,$$
# using $\operatorname{tr}(R\Sigma R) = \operatorname{tr}(\Sigma\Omega)$ and
# $R(nR\Sigma R + tI)^{-1} = (nR^2\Sigma + tI)^{-1}R$ (from $(nR^2\Sigma + tI)R = R(nR\Sigma R + tI)$).
# The minimum is the chapter's for $\Sigma'$:
# $\mathcal R^*_\Omega = \frac12\sum_i\mu_i(\mu_i + t)/(n\mu_i + t)$ with $t = \operatorname{tr}(\Sigma\Omega)$
# and $\mu_i$ the eigenvalues of $R\Sigma R$, which are those of $\Sigma\Omega = R^{-1}(R\Sigma R)R$.
# For $\Omega = I_m$: $R = I_m$, $\Sigma' = \Sigma$, and both formulas are the chapter's.
#
# (A direct computation works as well: $\hat y - y_q = x_q^\top(W\hat\Sigma - I)w$ gives
# $2\mathcal R_\Omega(W) = \mathbb E\operatorname{tr}\big(\Sigma(W\hat\Sigma - I)\Omega(W\hat\Sigma - I)^\top\big)$,
# and $\mathbb E[\hat\Sigma\Omega\hat\Sigma] = \frac{n-1}{n^2}(n\Sigma\Omega\Sigma + \operatorname{tr}(\Sigma\Omega)\Sigma)$
# by $\mathbb E[gg^\top Cgg^\top] = 2C + \operatorname{tr}(C)I$; the gradient
# $\Sigma W\,\mathbb E[\hat\Sigma\Omega\hat\Sigma] - \frac{n-1}{n}\Sigma\Omega\Sigma$ vanishes at the
# same matrix.)
#
# **Rubric (5 points).**
# - 2: the risk is written as a quadratic in $W^{QK}$ with the right second moment (by the change
#   of variables $w = \Omega^{1/2}u$, or by computing $\mathbb E[\hat\Sigma\Omega\hat\Sigma]$ from
#   the fourth moment of a Gaussian vector), with the independence used stated.
# - 1: strict convexity (an invertible linear change of variables, or a positive definite
#   quadratic term), so the stationary point is the unique minimiser.
# - 1: the minimiser solved correctly in a closed form equivalent to
#   $n(n\Omega\Sigma + \operatorname{tr}(\Sigma\Omega)I)^{-1}\Omega$ (the order of the factors
#   matters: $n(n\Sigma\Omega + tI)^{-1}\Omega$ is wrong in general).
# - 1: the minimum (eigenvalues of $\Sigma\Omega$, $t = \operatorname{tr}(\Sigma\Omega)$) and the
#   reduction to the chapter's formulas for $\Omega = I_m$.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q6-plateaus-and-floors
# manual: true
# points: 4

# %% [markdown]
# **Question 6 (interpretation, short answers; 4 points).** Answer each part in two or three
# sentences, citing the chapter's results you use.
#
# (a) The chapter trains the merged and the separate parameterisation from the same small
# scale $\gamma_0$ on $\Sigma = \operatorname{diag}(2, 1, \frac12)$: the merged risk drops once,
# the separate risk three times. Which statement explains why the merged run cannot rest at an
# intermediate level, and which one provides the intermediate levels of the separate run?
#
# (b) Predict the separate run on $\Sigma = \operatorname{diag}(2, 2, \frac12)$ with $H = 3$
# heads and a small random start: how many drops do you expect, and at which levels
# (as sets $\mathcal I$ of directions)? Say which part of your prediction is proved and which
# part rests on the chapter's heuristic.
#
# (c) If $\gamma_0$ is divided by $10$, how does the time of the merged drop change, and how
# does the time of the first separate drop change, according to the chapter?
#
# (d) In the bridge, every query label of the $N$ training prompts happens to lie in the
# interval $[\min(0, \min_j y_{ij}), \max(0, \max_j y_{ij})]$ of its prompt, so the hull floor
# of the Softmax loss is zero. Does this show that query-only Softmax training can reach zero
# loss on these prompts? Why or why not?

# %% [raw]
# # BEGIN SOLUTION

# %% [markdown]
# **Answers.**
# (a) Part 2 of *The landscape of the merged parameterisation*: every stationary point has
# risk $\mathcal R^*$ or $\mathcal R(0) = \frac12\operatorname{tr}\Sigma$, none in between, so there
# is no saddle at an intermediate level to slow the merged flow. *The saddles of the separate
# parameterisation* (parts 2 to 4): for each set $\mathcal I$ of directions there is a saddle
# $\theta_{\mathcal I}$ at the level $\mathcal R_{\mathcal I}$ of (eq-icl-levels).
#
# (b) Two drops: first both directions of the eigenvalue $2$ (pushed with the same strength
# $\frac{n-1}{n}\lambda_i^2$, so learnt at about the same time), from $\mathcal R_\emptyset$ to
# about $\mathcal R_{\{1,2\}}$, then the third, to $\mathcal R^*$. Proved: the levels
# $\mathcal R_{\mathcal I}$ and that $\theta_{\mathcal I}$ are saddles (and, with equal
# eigenvalues, $\mathcal R_{\{1\}}$ and $\mathcal R_{\{2\}}$ are equal). The order, the grouping
# of the two equal directions and the number of visible drops rest on the heuristic (growth
# with strength $\frac{n-1}{n}\lambda_i^2$ from the small start); a start with very different
# components along $e_1$ and $e_2$ could separate them into two drops.
#
# (c) Merged: by *One drop, solved* (isotropic case, proved) and part 4 of the landscape
# proposition (general case, measured), the plateau grows like
# $\frac1{\lambda_{\mathrm s}}\log\frac1{\gamma_0}$, so it lengthens by an additive
# $\log(10)/\lambda_{\mathrm s}$. Separate: the heuristic time of order
# $1/(\frac{n-1}{n}\lambda_1^2\gamma_0)$ is a power of $\gamma_0$, so it becomes about ten
# times longer.
#
# (d) No. The hull floor is a lower bound valid for every $W^Q$; a zero lower bound is void, not
# a proof that zero is reached. Reaching zero needs one $W^Q$ whose Softmax weights put every
# one of the $N$ queries' outputs on its label at the same time, and nothing in the chapter
# guarantees that (query-only Softmax training can stop at a spurious minimum, as in the
# earlier chapters).
#
# **Rubric (4 points, 1 per part).**
# - (a) both statements named (no intermediate stationary level for merged; the saddles
#   $\theta_{\mathcal I}$ at $\mathcal R_{\mathcal I}$ for separate).
# - (b) two drops with the levels $\mathcal R_\emptyset \to \mathcal R_{\{1,2\}} \to \mathcal R^*$,
#   and a correct split between what is proved (levels, saddles) and what is heuristic (order,
#   grouping). Half a point for the levels without the split.
# - (c) additive $\log(10)/\lambda_{\mathrm s}$ for the merged drop versus about a factor ten for the
#   separate one.
# - (d) "no", with the reason that a lower bound of zero does not imply that the loss reaches
#   zero.

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION
