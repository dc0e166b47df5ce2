"""The full-batch gradient-descent trainer."""
import numpy as np
import pytest
import torch

import tdlib
from tdlib.train import MESSAGE_WIDTH, History


def value_problem(seed=0):
    X, Y = tdlib.random_data(N=3, n=4, D=16, d_out=2, x_scale=2.0, seed=seed)
    model = tdlib.AttentionLayer(D=16, H=1, d=4, d_out=2, kernel="softmax", seed=seed + 1)
    return model, X, Y


def test_value_only_loss_decreases_monotonically():
    model, X, Y = value_problem(seed=int(torch.randint(0, 1000, ())))
    # step below 1/L for the quadratic in W_V: L = ||B||^2 ||W_O||^2 (spectral norms)
    with torch.no_grad():
        B = model.features(X)[:, 0].reshape(-1, 16)
        L = float(torch.linalg.matrix_norm(B, 2) ** 2 * torch.linalg.matrix_norm(model.W_O[0], 2) ** 2)
    hist = tdlib.train(model, X, Y, lr=0.9 / L, steps=300, trainable=["W_V"], progress=False)
    diffs = np.diff(hist.loss)
    assert (diffs <= 1e-14 * hist.loss[0]).all(), diffs.max()
    assert hist.final_loss < hist.loss[0]
    assert hist.stop == "steps" and hist.steps == 300
    assert len(hist.grad_norm["W_V"]) == 301


def test_frozen_parameters_do_not_move():
    model, X, Y = value_problem()
    before = {p: getattr(model, p).detach().clone() for p in tdlib.PARAMS}
    tdlib.train(model, X, Y, lr=0.01, steps=20, trainable=["W_Q"], progress=False)
    assert not torch.equal(before["W_Q"], model.W_Q)
    for p in ("W_K", "W_V", "W_O"):
        assert torch.equal(before[p], getattr(model, p))


def test_one_step_is_a_gradient_step():
    model, X, Y = value_problem(seed=3)
    loss = model.loss(X, Y)
    g = torch.autograd.grad(loss, model.W_K)[0]
    expected = model.W_K.detach() - 0.05 * g
    tdlib.train(model, X, Y, lr=0.05, steps=1, trainable=["W_K"], progress=False)
    assert torch.allclose(model.W_K.detach(), expected, atol=1e-15)


def test_tolerance_stops_early_and_callback_is_recorded():
    model, X, Y = value_problem(seed=4)
    f0 = float(model.loss(X, Y))
    hist = tdlib.train(model, X, Y, lr=0.05, steps=5000, trainable=["W_V"], tol=0.5 * f0,
                       callback=lambda m, t: {"norm_V": m.W_V.norm(), "t": t}, progress=False)
    assert hist.stop == "tol" and hist.final_loss <= 0.5 * f0 and hist.steps < 5000
    assert hist.extra["t"] == list(range(len(hist.loss)))
    assert len(hist.extra["norm_V"]) == len(hist.loss)
    arrays = hist.as_arrays()
    assert set(arrays) == {"loss", "grad_norm_W_V", "norm_V", "t"}
    assert "stop: tol" in repr(hist)


def test_seeded_runs_are_bit_for_bit_repeatable():
    def run():
        X, Y, _ = tdlib.teacher_data(3, 4, 8, kernel="gaussian", H=2, d=3, d_out=2, seed=5)
        m = tdlib.AttentionLayer(8, H=2, d=3, d_out=2, kernel="gaussian", seed=6)
        h = tdlib.train(m, X, Y, lr=0.02, steps=50, progress=False)
        return h.loss, m.W_Q.detach().clone()

    (l1, w1), (l2, w2) = run(), run()
    assert l1 == l2 and torch.equal(w1, w2)


def test_divergence_raises_with_step_and_advice():
    model, X, Y = value_problem(seed=6)
    with pytest.raises(tdlib.DivergenceError, match=r"(?s)diverged\s+at\s+step\s+\d+.*lr=1000\s.*smaller"):
        tdlib.train(model, X, Y, lr=1e3, steps=100, trainable=["W_V"], progress=False)
    model, X, Y = value_problem(seed=6)
    hist = tdlib.train(model, X, Y, lr=1e3, steps=100, trainable=["W_V"], on_divergence="stop", progress=False)
    assert hist.stop == "diverged" and all(np.isfinite(hist.loss))



def test_divergence_message_fits_the_column_and_keeps_its_words():
    model, X, Y = value_problem(seed=6)
    with pytest.raises(tdlib.DivergenceError) as err:
        tdlib.train(model, X, Y, lr=1e3, steps=100, trainable=["W_V"], progress=False)
    lines = str(err.value).splitlines()
    assert len(lines) > 1, "a long message is wrapped"
    assert max(len(line) for line in lines) <= MESSAGE_WIDTH
    assert len("DivergenceError: " + lines[0]) <= 88
    # wrapping only moves line breaks: the words are those of the one-sentence message
    assert " ".join(str(err.value).split()) == " ".join(err.value.args[0].split())
    assert "lr=1000" in str(err.value).split()


def test_history_repr_is_one_short_line():
    long = History(lr=0.05, trainable=("W_Q", "W_K", "W_V"), loss=[1.5, 2e-27], stop="plateau",
                   kernel="gaussian")
    text = repr(long)
    assert "\n" not in text and len(text) <= 88, text
    assert "1.5e+00 -> 2.0e-27" in text and "plateau" in text and "W_Q+W_K+W_V" in text
    assert "stop" not in repr(History(lr=0.1, trainable=("W_Q",), loss=[1.0, 0.5],
                                      stop="steps"))

class TestBadArguments:
    model, X, Y = value_problem()

    def test_negative_step(self):
        with pytest.raises(ValueError, match=r"lr \(step size\): expected a positive finite number, got -0.1"):
            tdlib.train(self.model, self.X, self.Y, lr=-0.1, steps=5)

    def test_empty_trainable(self):
        with pytest.raises(ValueError, match="trainable: expected a non-empty subset"):
            tdlib.train(self.model, self.X, self.Y, lr=0.1, steps=5, trainable=[])

    def test_unknown_trainable(self):
        with pytest.raises(ValueError, match="'W_Z'"):
            tdlib.train(self.model, self.X, self.Y, lr=0.1, steps=5, trainable=["W_Z"])

    def test_mismatched_data(self):
        with pytest.raises(ValueError, match="Y: expected shape"):
            tdlib.train(self.model, self.X, self.Y[:2], lr=0.1, steps=5)

    def test_steps(self):
        with pytest.raises(ValueError, match="steps: expected an integer >= 0, got -1"):
            tdlib.train(self.model, self.X, self.Y, lr=0.1, steps=-1)


def test_history_plots_on_log_scale():
    import matplotlib

    matplotlib.use("Agg")
    model, X, Y = value_problem()
    hist = tdlib.train(model, X, Y, lr=0.05, steps=10, trainable=["W_V"], progress=False)
    ax = hist.plot(label="run")
    assert ax.get_yscale() == "log"
    assert len(ax.lines) == 1 and len(ax.lines[0].get_xdata()) == 11
