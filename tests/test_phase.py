"""The phase diagram's labels: certified zero, certified positive, measured tail shapes, the
rounding control behind the certificates, and the stored sweep."""
import math
from pathlib import Path

import mpmath
import numpy as np
import pytest
import torch

from tdlib import book, phase, query, separation

STORED = Path(__file__).resolve().parents[1] / "book" / "data" / "phase-diagram" / "results.json"


def fresh_seed():
    return int(torch.randint(0, 2**31 - 1, ()))


def batch(probs, starts):
    X, K, U, Y = (torch.stack([getattr(p, a) for p in probs]) for a in "XKUY")
    return X, K, U, Y, torch.stack(list(starts))


# --------------------------------------------------------------------------- rounding control
# (the Box arithmetic itself is tested in tests/test_intervals.py)

def test_loss_box_encloses_the_exact_loss():
    seed = fresh_seed()
    mpmath.mp.dps = 40
    for kernel in ("gaussian", "softmax"):
        p, _, W0 = query.make_problem(N=2, n=2, D=4, d=2, d_out=2, kernel=kernel, seed=seed)
        box = separation.loss_box(p.X[None], p.K[None], p.U[None], p.Y[None], W0[None], kernel)
        X, K, U, Y, W = (v.numpy() for v in (p.X, p.K, p.U, p.Y, W0))
        f = mpmath.mpf(0)
        for i in range(2):
            for k in range(2):
                q = [sum(mpmath.mpf(X[i, k, a]) * mpmath.mpf(W[a, e]) for a in range(4))
                     for e in range(2)]
                if kernel == "gaussian":
                    w = [mpmath.exp(-sum((q[e] - mpmath.mpf(K[i, j, e])) ** 2 for e in range(2))
                                    / mpmath.mpf(2 * math.sqrt(2))) for j in range(2)]
                else:
                    s = [sum(q[e] * mpmath.mpf(K[i, j, e]) for e in range(2)) / mpmath.sqrt(2)
                         for j in range(2)]
                    w = [mpmath.exp(v) / sum(mpmath.exp(u) for u in s) for v in s]
                for o in range(2):
                    r = sum(w[j] * mpmath.mpf(U[i, j, o]) for j in range(2)) - mpmath.mpf(Y[i, k, o])
                    f += r * r / 2
        assert mpmath.mpf(box.lo[0]) <= f <= mpmath.mpf(box.hi[0]), (seed, kernel)
        assert box.hi[0] - box.lo[0] <= 1e-9 * box.hi[0], (seed, kernel)


def test_certificate_is_not_fooled_at_the_boundary_S_u_equal_m():
    """One key, y = u and level 0: the set {g <= 0} is the key itself, where J = 0. With
    S_u = m the set is not empty; the certificate must fail (it used to call the set empty)."""
    K = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    U = torch.tensor([[1.0]], dtype=torch.float64)
    cert = separation.sublevel_certificate(K, U, U[0], 0.0, 2 * math.sqrt(2), max_boxes=2_000)
    assert not cert["ok"] and cert["sigma"] == 0.0


def test_certificate_decisions_have_positive_margins():
    seed = fresh_seed()
    g = torch.Generator().manual_seed(seed)
    K = torch.randn(2, 2, generator=g, dtype=torch.float64)
    U = torch.randn(2, 1, generator=g, dtype=torch.float64)
    y = query.outputs(torch.randn(1, 2, generator=g, dtype=torch.float64), K, U, "gaussian")[0]
    cert = separation.sublevel_certificate(K, U, y, 0.01 * 0.5 * float(y @ y), 2 * math.sqrt(2))
    assert cert["min_margin"] > 0 and cert["min_rel_margin"] > 0, seed
    if cert["ok"]:
        assert 0 < cert["sigma"] < math.inf, seed


# --------------------------------------------------------------------------- certified labels

def test_hull_gap_is_an_exact_lower_bound():
    g = np.random.default_rng(fresh_seed())
    U = g.normal(size=(3, 4, 2))
    inside = np.einsum("mn,mno->mo", g.dirichlet(np.ones(4), size=3), U)
    outside = 3 * np.abs(U).max() * np.array([[1.0, 0.0], [0.0, -1.0], [0.6, 0.8]])
    assert np.all(separation.hull_gap(U, inside) == 0)
    lb = separation.hull_gap(U, outside)
    assert np.all(lb > 0)
    lam = g.dirichlet(np.ones(4), size=5000)
    for m in range(3):
        dist2 = ((lam @ U[m] - outside[m]) ** 2).sum(1)
        assert dist2.min() >= lb[m]
        # nearly tight: the hull point nearest to y is found to within 1e-6
        assert lb[m] >= dist2.min() * (1 - 1e-6) - 2 * np.abs(U[m]).max() ** 2 or lb[m] > 0


def test_certified_positive_on_a_target_outside_the_hull():
    """A Softmax student whose targets are pushed outside the hull of the value rows gets a
    certified positive label with a floor its loss never goes below; with every target equal
    to a value row (inside the hull, exactly) it does not."""
    seed = fresh_seed() % 10**6
    p, _, W0 = query.make_problem(N=2, n=3, D=12, d=4, d_out=2, kernel="softmax", seed=seed)
    far = p.U.abs().max() * 3
    Y_out = p.Y.clone()
    Y_out[0, 0] = torch.tensor([far, far], dtype=torch.float64)
    X, K, U, Y, W = batch([p, p], [W0, W0])
    Y_in = p.U[:, :1].expand(p.Y.shape).clone()
    Y = torch.stack([Y_out, Y_in])
    res = phase.certify_runs(X, K, U, Y, W, "softmax", [32, 64])
    assert res["label"][0] == "positive" and res["kind"][0] == "certified", seed
    assert res["certificate"][0] == "softmax hull floor" and res["floor"][0] > 0
    assert res["label"][1] != "positive" and res["floor"][1] == 0, seed
    f, fref, _, _ = phase.batched_gd(X[:1], K[:1], U[:1], Y[:1], W[:1], "softmax", 64)
    assert float(f[0]) >= res["floor"][0] * float(fref[0]), seed


def test_certified_zero_numerical_and_by_the_theorem():
    """A Gaussian student started at its teacher is numerically zero at once; one started
    near a certified instance's teacher, with the zero level set out of reach, is certified
    by the theorem at the last budget (only there)."""
    seed = fresh_seed() % 10**6
    p, W_star, _ = query.make_problem(N=2, n=2, D=6, d=2, d_out=1, seed=seed)
    res = phase.certify_runs(*batch([p], [W_star]), "gaussian", [16, 32])
    assert res["label"] == ["zero"] and res["certificate"] == ["numerical zero"], seed
    assert res["budget"] == [16]
    for s in range(seed, seed + 30):
        p, W_star, _ = query.make_problem(N=2, n=2, D=6, d=2, d_out=1, seed=s)
        Z = torch.randn(W_star.shape, generator=torch.Generator().manual_seed(s),
                        dtype=torch.float64)
        W0 = W_star + 0.1 * float(W_star.norm()) / float(Z.norm()) * Z
        res = phase.certify_runs(*batch([p], [W0]), "gaussian", [16, 32], zero_tol=1e-300)
        if res["certificate"] == ["thm-gauss-query"]:
            break
    else:
        raise AssertionError(f"no theorem certificate among seeds {seed}..{seed + 29}")
    assert res["label"] == ["zero"] and res["kind"] == ["certified"]
    assert res["labels_at"][0][1] == "zero" and res["kinds_at"][0] == ["measured", "certified"]
    cert = separation.layer_certificate(p, W0, max_boxes=50_000)
    assert res["start_below"] == [cert["f0_hi"] < cert["beta_inf"]]


def test_measured_labels_are_the_tail_shape_at_each_budget():
    seed = fresh_seed() % 10**6
    probs = [query.make_problem(N=2, n=3, D=12, d=4, d_out=2, kernel="softmax", seed=seed + i)
             for i in range(3)]
    X, K, U, Y, W0 = batch([p for p, _, _ in probs], [w for _, _, w in probs])
    budgets = [32, 64, 128]
    res = phase.certify_runs(X, K, U, Y, W0, "softmax", budgets, audit=[True, False, True])
    _, fref, curve, pl = phase.batched_gd(X, K, U, Y, W0, "softmax", 256, marks=range(257))
    for i in range(3):
        expect = []
        for b in budgets + [256]:
            lab = separation.classify_curve(curve[i, :b + 1].numpy(), pl[i, :b + 1].numpy(),
                                            zero_tol=phase.ZERO_TOL, f_ref=float(fref[i]))
            expect.append("zero" if lab == "converged" else lab)
        if res["kind"][i] == "measured":
            assert res["labels_at"][i] == expect[:3], seed
            assert res["budget"][i] == 128 and res["certificate"][i] is None
        if res["audit_kind"][i] == "measured":
            assert res["audit_label"][i] == expect[3], seed
        assert (res["audit_label"][i] is None) == (i == 1)
    with pytest.raises(ValueError, match="budgets: expected increasing"):
        phase.certify_runs(X, K, U, Y, W0, "softmax", [64, 32])
    with pytest.raises(ValueError, match="K, U, Y, W0: expected shapes"):
        phase.certify_runs(X, K, U, Y[:, :, :, :1], W0, "softmax", [32, 64])
    with pytest.raises(ValueError, match="audit: expected 3 flags"):
        phase.certify_runs(X, K, U, Y, W0, "softmax", [32, 64], audit=[True])
    with pytest.raises(ValueError, match="kernel"):
        phase.certify_runs(X, K, U, Y, W0, "cosine", [32, 64])


def test_tiny_certified_sweep_and_flip_rates(tmp_path):
    args = ["--out", str(tmp_path), "--ratios", "1", "2", "--ds", "2", "--init-scales", "1",
            "--instances", "3", "--steps", "32", "--max-steps", "64", "--N", "2", "--n", "2",
            "--audit", "2", "--quiet", "--serial"]
    assert phase.main(args) == 0
    res = book.load_json(tmp_path / "results.json")
    check_sweep(res)
    fr = phase.flip_rate(res, 32)
    assert fr["runs"] >= 0 and 0 <= fr["flips"] <= fr["runs"]
    audit = phase.flip_rate(res, 64)
    assert audit["runs"] <= 2 * 2 * 4
    live = phase.rerun_cell(res, "gaussian", "softmax", ratio=2.0, d=2, init_scale=1.0,
                            which=[2, 0])
    stored = phase.run_array(res, "gaussian", "softmax", "label")[1, 0, 0]
    assert live["run_label"] == [stored[2], stored[0]]
    with pytest.raises(ValueError, match="start: expected one of"):
        phase.flip_rate(res, 48)
    with pytest.raises(ValueError, match="labels: expected names"):
        phase.label_fraction(res, "gaussian", "gaussian", ("converged",))
    with pytest.raises(ValueError, match="audit: expected at most"):
        phase.SweepConfig(instances=2, audit=3).validate()


# --------------------------------------------------------------------------- the stored sweep

def check_sweep(res):
    """Every invariant a stored certified sweep must satisfy."""
    cfg = phase.SweepConfig(**res["config"]).validate()
    budgets = cfg.budgets()
    assert res["provenance"]["command"].startswith("python -m tdlib.phase")
    assert res["provenance"]["budgets"] == budgets
    for key, r in res["results"].items():
        t, s = key.split("->")
        lab, kind, cert, budget = (phase.run_array(res, t, s, f)
                                   for f in ("label", "kind", "certificate", "budget"))
        at, kinds_at = (phase.run_array(res, t, s, f) for f in ("labels_at", "kinds_at"))
        audit, floor = (phase.run_array(res, t, s, f) for f in ("audit_label", "floor"))
        start = phase.run_array(res, t, s, "start_below")
        assert set(lab.ravel()) <= set(phase.RUN_LABELS), key
        for k in phase.RUN_LABELS:
            assert (np.asarray(r["labels"][k]) == (lab == k).sum(-1)).all(), key
        assert at.shape == lab.shape + (len(budgets),)
        assert (at[..., -1] == lab).all() and (kinds_at[..., -1] == kind).all(), key
        meas = kind == "measured"
        assert all(c is None for c in cert[meas]) and (budget[meas] == budgets[-1]).all()
        assert set(cert[~meas].ravel()) <= set(phase.CERTIFICATES), key
        assert ((lab == "positive") <= (cert == "softmax hull floor")).all()
        assert ((cert == "softmax hull floor") == (floor.astype(float) > 0)).all(), key
        if s == "gaussian":
            assert not (lab == "positive").any() and all(v in (True, False) for v in start.ravel())
        else:
            assert not (cert == "thm-gauss-query").any() and all(v is None for v in start.ravel())
        assert set(budget[~meas].ravel()) <= set(budgets), key
        audited = audit != None  # noqa: E711
        assert (audited == (np.arange(cfg.instances) < cfg.audit)).all(), key
        # a certified label holds at every later budget and at the audit
        for j, b in enumerate(budgets):
            held = ~meas & (budget <= b)
            assert (at[..., j][held] == lab[held]).all(), key
        assert (audit[audited & ~meas] == lab[audited & ~meas]).all(), key


def test_stored_sweep_is_valid():
    res = book.load_json(STORED)
    check_sweep(res)
    assert res["provenance"]["cpu_seconds"] > 0
    table = phase.summary(res, init_scale=1.0)
    for v in table.values():
        if not math.isnan(v["lin"]):
            assert abs(sum(v[k] for k in phase.SUMMARY_KEYS) - 1) < 1e-12
