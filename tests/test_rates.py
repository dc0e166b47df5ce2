import numpy as np
import pytest

from tdlib.rates import fit_rate


def test_exact_geometric_sequence():
    rng = np.random.default_rng(0)
    q, c = rng.uniform(0.5, 0.99), rng.uniform(0.1, 10)
    f = c * q ** np.arange(200)
    fit = fit_rate(f)
    assert fit.factor == pytest.approx(q, rel=1e-10)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(fit.predict(np.arange(200)), f, rtol=1e-8)


def test_transient_and_limit():
    t = np.arange(150)
    f_star = 0.3
    f = f_star + 2.0 * 0.9 ** t
    f[:20] += 5 * 0.5 ** t[:20]               # a fast transient that fitting from 0 would see
    assert fit_rate(f, f_star=f_star, start=0.2).factor == pytest.approx(0.9, rel=1e-6)
    assert fit_rate(f, f_star=f_star, tail=50).first == 100
    assert fit_rate(f, f_star=f_star).factor < 0.9   # the transient biases a fit from step 0


def test_zero_entries_dropped_and_noisy_fit():
    rng = np.random.default_rng(1)
    f = 0.8 ** np.arange(100) * np.exp(rng.normal(0, 0.05, 100))
    f[-3:] = 0.0                              # a run that hit zero exactly
    fit = fit_rate(f)
    assert fit.steps == 97 and abs(fit.factor - 0.8) < 0.01 and 0.99 < fit.r2 < 1


@pytest.mark.parametrize("kw, match", [({"start": 1.5}, "start"), ({"start": 0.1, "tail": 5}, "start and tail"),
                                       ({"tail": 1}, "tail")])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        fit_rate(np.ones(10), **kw)


def test_bad_values():
    with pytest.raises(ValueError, match="values"):
        fit_rate([1.0, float("nan"), 0.5])
    with pytest.raises(ValueError, match="at least two"):
        fit_rate([0.0, 0.0, 1.0])
