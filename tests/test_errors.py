"""Bad input gets a ShapeError (a ValueError) naming the op, the expectation and what came in."""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit.functional as F
from cnnkit import ShapeError, Tensor


def zeros(*shape):
    return Tensor(np.zeros(shape, np.float32))


def test_shape_error_is_a_value_error():
    assert issubclass(ShapeError, ValueError)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: F.conv2d(zeros(8, 8), zeros(4, 1, 3, 3)),
         r"conv2d expects input of shape \(N, C, H, W\), got \(8, 8\)"),
        (lambda: F.conv2d(zeros(2, 1, 8, 8), zeros(4, 3, 3, 3)),
         r"conv2d expects C = weight.shape\[1\] \* groups = 3 \* 1 = 3, received C=1 \(input shape \(2, 1, 8, 8\)\)"),
        (lambda: F.conv2d(zeros(1, 1, 2, 2), zeros(1, 1, 5, 5), padding=1),
         r"conv2d kernel \(5, 5\) with dilation \(1, 1\) is larger than the padded input \(4, 4\) "
         r"\(input shape \(1, 1, 2, 2\), padding \(1, 1, 1, 1\)\)"),
        (lambda: F.conv2d(zeros(1, 1, 8, 8), zeros(1, 1, 3, 3), stride=0),
         r"conv2d expects stride > 0, got \(0, 0\)"),
        (lambda: F.conv2d(zeros(1, 1, 8, 8), zeros(1, 1, 3, 3), stride=(1, -2)),
         r"conv2d expects stride > 0, got \(1, -2\)"),
        (lambda: F.conv2d(zeros(1, 4, 8, 8), zeros(6, 2, 3, 3), groups=3),
         r"conv2d expects C = weight.shape\[1\] \* groups = 2 \* 3 = 6, received C=4"),
        (lambda: F.conv_transpose2d(zeros(1, 2, 4, 4), zeros(3, 1, 3, 3)),
         r"conv_transpose2d expects C = weight.shape\[0\] = 3, received C=2 \(input shape \(1, 2, 4, 4\)\)"),
        (lambda: F.max_pool2d(zeros(2, 3), 2),
         r"max_pool2d expects input of shape \(N, C, H, W\), got \(2, 3\)"),
        (lambda: F.max_pool2d(zeros(1, 1, 2, 2), 3),
         r"max_pool2d kernel \(3, 3\) with dilation \(1, 1\) is larger than the padded input \(2, 2\) "
         r"\(input shape \(1, 1, 2, 2\), padding \(0, 0\)\)"),
        (lambda: F.max_pool2d(zeros(1, 1, 8, 8), 2, stride=0),
         r"max_pool2d expects stride > 0, got \(0, 0\)"),
        (lambda: F.avg_pool2d(zeros(1, 1, 8, 8), 2, padding=2),
         r"avg_pool2d expects padding between 0 and half the kernel size, got padding \(2, 2\) for kernel_size \(2, 2\)"),
        (lambda: F.linear(zeros(4, 5), zeros(3, 6)),
         r"linear expects input of shape \(\*, 6\) for weight \(3, 6\), got \(4, 5\)"),
        (lambda: F.cross_entropy(zeros(4, 10), np.zeros(3, np.int64)),
         r"cross_entropy expects target of shape \(4,\) for input of shape \(4, 10\), got \(3,\)"),
        (lambda: F.batch_norm(zeros(4, 3, 2, 2), np.zeros(2), np.ones(2)),
         r"batch_norm expects running_mean of shape \(3,\), got \(2,\) \(input shape \(4, 3, 2, 2\)\)"),
        (lambda: F.adaptive_avg_pool2d(zeros(4, 3), 1),
         r"adaptive_avg_pool2d expects input of shape \(N, C, H, W\), got \(4, 3\)"),
        (lambda: zeros(2, 3).reshape(4, 2),
         r"reshape cannot turn an input of shape \(2, 3\) \(6 elements\) into shape \(4, 2\)"),
    ],
    ids=[
        "conv-rank", "conv-channels", "conv-kernel-too-large", "conv-zero-stride", "conv-negative-stride",
        "conv-groups", "conv-transpose-channels", "pool-rank", "pool-kernel-too-large", "pool-zero-stride",
        "pool-padding", "linear-features", "ce-target", "bn-stats", "adaptive-rank", "reshape",
    ],
)
def test_errors_name_the_op_the_expectation_and_the_input(call, message):
    with pytest.raises(ShapeError, match=message):
        call()


def test_a_bad_argument_type_is_refused_with_its_value():
    with pytest.raises(ValueError, match=r"conv2d expects stride as an int or a pair of ints, got 1.5"):
        F.conv2d(zeros(1, 1, 4, 4), zeros(1, 1, 3, 3), stride=1.5)
    with pytest.raises(ValueError, match=r"padding 'same', 'valid', an int or a pair, got 'full'"):
        F.conv2d(zeros(1, 1, 4, 4), zeros(1, 1, 3, 3), padding="full")
