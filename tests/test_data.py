import pytest
import torch

import tdlib


def test_random_data_shapes_scale_and_seed():
    X, Y = tdlib.random_data(50, 6, 40, d_out=3, x_scale=2.0, y_scale=0.5, seed=1)
    assert X.shape == (50, 6, 40) and Y.shape == (50, 6, 3) and X.dtype == torch.float64
    assert abs(float(X.norm(dim=-1).mean()) - 2.0) < 0.1
    assert abs(float(Y.std()) - 0.5) < 0.05
    X2, _ = tdlib.random_data(50, 6, 40, d_out=3, x_scale=2.0, y_scale=0.5, seed=1)
    assert torch.equal(X, X2)


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_teacher_targets_are_reachable(kernel):
    X, Y, teacher = tdlib.teacher_data(4, 3, 5, kernel=kernel, H=2, d=2, d_out=2, seed=3)
    assert float(teacher.loss(X, Y)) == 0.0
    assert teacher.kernel_name == kernel


def test_bad_sizes():
    with pytest.raises(ValueError, match="n: expected an integer >= 1, got 0"):
        tdlib.random_inputs(3, 0, 4)
    with pytest.raises(ValueError, match="scale: expected a positive"):
        tdlib.random_inputs(3, 2, 4, scale=0)
