"""Exact interval proofs of the sign of g' for one-dimensional Softmax problems."""
import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
import torch

from tdlib import counterexample as ce
from tdlib import intervals as iv
from tdlib import separation
from tdlib.intervals import Box

KEYS = [-1, 0, 1]
VALUES = [[-3.0, 8.0], [-2.0, 0.0], [-1.0, 8.0]]


def test_exp_enclosure_contains_exp_and_is_tight():
    for x in (Fraction(-3), Fraction(0), Fraction(7, 3), Fraction(-11, 2)):
        e = iv.exp_enclosure(x)
        ref = Fraction(math.exp(x))                     # correct to about one rounding
        tol = Fraction(1, 10**15)
        assert e.lo <= ref * (1 + tol) and ref * (1 - tol) <= e.hi
        assert e.hi - e.lo <= Fraction(1, 10**30) * max(1, ref)
    with pytest.raises(ValueError, match="terms"):
        iv.exp_enclosure(100, terms=10)


def test_interval_arithmetic_encloses_random_evaluations():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a, b = sorted(rng.normal(size=2))
        c, d = sorted(rng.normal(size=2))
        x = iv.Interval(Fraction(a), Fraction(b))
        y = iv.Interval(Fraction(c), Fraction(d))
        for _ in range(20):
            u, v = rng.uniform(a, b), rng.uniform(c, d)
            for res, val in ((x + y, u + v), (x - y, u - v), (x * y, u * v)):
                near = min(abs(float(res.lo) - val), abs(float(res.hi) - val)) < 1e-12
                assert res.lo <= Fraction(val) <= res.hi or near
    with pytest.raises(ZeroDivisionError):
        iv.Interval(Fraction(-1), Fraction(1)).inverse()


def test_chapter_instance_sign_pattern_matches_closed_form():
    cert = iv.sign_certificate(KEYS, VALUES, -3)
    assert cert.signs == [-1, 1, -1, 1] and len(cert.zeros) == 3
    assert len(cert.maxima()) == 1 and len(cert.minima()) == 2
    P = ce.instance()
    # the proved signs agree with float64 closed-form g' away from the zeros
    s = np.linspace(-12, 12, 4001)
    g1 = ce.closed_form(P, s)["g1"]
    edges = [z for pair in cert.zeros for z in pair]
    for k, sign in enumerate(cert.signs):
        lo = -np.inf if k == 0 else cert.zeros[k - 1][1]
        hi = np.inf if k == len(cert.zeros) else cert.zeros[k][0]
        inside = (s > lo + 1e-6) & (s < hi - 1e-6) & (np.abs(g1) > 1e-13)
        assert np.all(np.sign(g1[inside]) == sign)
    # the brackets are tight and hold the zeros found by Newton's method
    zero_m3, (lo_b, hi_b), (lo_s, hi_s) = cert.zeros
    assert zero_m3[0] <= -3 <= zero_m3[1]
    assert max(hi - lo for lo, hi in cert.zeros) < 1e-9
    star = ce.certify(lambda x: P.loss(x), [2.0], zero_point=[-3.0])
    assert lo_s <= float(star.point[0]) <= hi_s
    assert lo_b <= float(star.barrier_point[0]) <= hi_b     # refined top of the barrier


def test_other_targets_give_other_patterns():
    # a target low on the left arm: no spurious minimum, a single zero of g'
    cert = iv.sign_certificate(KEYS, VALUES, Fraction(-1, 2))
    assert cert.signs == [-1, 1] and cert.zeros[0][0] <= -0.5 <= cert.zeros[0][1]
    # a fresh random problem: the proved number of sign changes equals the float64 count
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ())))
    V = np.round(rng.normal(scale=3, size=(3, 2)), 3)
    st = Fraction(int(rng.integers(-30, 30)), 10)
    cert = iv.sign_certificate(KEYS, V, st)
    P = ce.PerQueryProblem(torch.tensor([[-1.0], [0.0], [1.0]]), V, torch.zeros(2))
    P = P.with_target(P.output(float(st)))
    g1 = ce.closed_form(P, np.linspace(-20, 20, 80001))["g1"]
    g1 = g1[g1 != 0]
    inside = [z for z in cert.zeros if -20 < z[0] and z[1] < 20]
    assert np.count_nonzero(np.diff(np.sign(g1))) == len(inside), (V, st)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="keys"):
        iv.sign_certificate([0, 0, 1], VALUES, -3)
    with pytest.raises(ValueError, match="values"):
        iv.sign_certificate(KEYS, [[1.0, 2.0]], -3)


def test_curvature_bound_and_basins_of_gradient_descent():
    P = ce.instance()
    ell = iv.curvature_bound(KEYS, VALUES, P.target.numpy())
    s = np.linspace(-30, 30, 60001)
    assert np.abs(ce.closed_form(P, s)["g2"]).max() <= ell
    cert = iv.sign_certificate(KEYS, VALUES, -3)
    s_b, s_star = np.mean(cert.maxima()[0]), np.mean(cert.minima()[1])
    starts = np.array([-4.0, -2.5, s_b - 0.1, s_b + 0.1, 1.0, 4.0])
    ends, _ = ce.run_gd(P, starts, lr=0.9 / ell, steps=20000)
    expected = np.where(starts < s_b, -3.0, s_star)
    assert np.allclose(ends[:, 0].numpy(), expected, atol=1e-4)


# --------------------------------------------------------------------------- float64 boxes

def test_box_encloses_50_digit_values():
    g = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ())))
    x = g.normal(size=200) * 30
    y = g.normal(size=200)
    mpmath.mp.dps = 50
    for name, box, exact in (
            ("exp", Box(x).exp(), [mpmath.exp(mpmath.mpf(v)) for v in x]),
            ("x*y+x", Box(x) * Box(y) + Box(x),
             [mpmath.mpf(a) * mpmath.mpf(b) + mpmath.mpf(a) for a, b in zip(x, y)]),
            ("sqrt|x|/y", Box(np.abs(x)).sqrt() / Box(np.abs(y) + 0.1),
             [mpmath.sqrt(abs(mpmath.mpf(a))) / (abs(mpmath.mpf(b)) + mpmath.mpf(0.1))
              for a, b in zip(x, y)]),
            ("log", Box(np.abs(x) + 1e-3).log(),
             [mpmath.log(abs(mpmath.mpf(a)) + mpmath.mpf(1e-3)) for a in x])):
        for lo, hi, e in zip(box.lo, box.hi, exact):
            assert mpmath.mpf(lo) <= e <= mpmath.mpf(hi), name
        # and the boxes are narrow: a few thousand units in the last place at most
        assert np.all(box.hi - box.lo <= 1e-11 * np.maximum(np.abs(box.hi), 1e-300)), name


def _exact(x) -> list:
    return [Fraction(float(v)) for v in np.ravel(x)]


def test_box_arithmetic_encloses_the_exact_rational_result():
    """+, -, *, / and squares of float boxes against the same formula in exact fractions, on
    fresh numbers of very different sizes (where a float result is rounded)."""
    g = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ())))
    x = g.normal(size=300) * 10.0 ** g.integers(-8, 9, size=300)
    y = g.normal(size=300) * 10.0 ** g.integers(-8, 9, size=300)
    z = np.abs(y) + 1e-3
    cases = (("x + y", Box(x) + Box(y), [a + b for a, b in zip(_exact(x), _exact(y))]),
             ("x - y", Box(x) - y, [a - b for a, b in zip(_exact(x), _exact(y))]),
             ("x * y + x", Box(x) * Box(y) + Box(x),
              [a * b + a for a, b in zip(_exact(x), _exact(y))]),
             ("x / z", Box(x) / Box(z), [a / b for a, b in zip(_exact(x), _exact(z))]),
             ("x^2", Box(x).sq(), [a * a for a in _exact(x)]),
             ("sum", Box(np.stack([x, y, z])).sum(0),
              [a + b + c for a, b, c in zip(_exact(x), _exact(y), _exact(z))]))
    for name, box, exact in cases:
        inside = [Fraction(float(lo)) <= e <= Fraction(float(hi))
                  for lo, hi, e in zip(box.lo, box.hi, exact)]
        assert all(inside), f"{name}: {inside.count(False)} exact values outside their box"


def test_box_lives_in_intervals_and_separation_uses_it():
    assert separation.Box is iv.Box and separation.E_BOX is iv.E_BOX
    assert iv.E_BOX.lo < math.e < iv.E_BOX.hi
    with pytest.raises(ZeroDivisionError, match="positive"):
        Box([-1.0, 2.0]).inv()
