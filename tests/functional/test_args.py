"""functional/args.py: the one argument normalizer of ops, layers and tools, against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit.functional as F
from cnnkit import Tensor, nn
from cnnkit.errors import ShapeError
from cnnkit.explain.conv_dense import conv_stats
from cnnkit.functional.args import conv_padding, output_size, pair, same_padding

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("value, expected", [
    (3, (3, 3)), ((3,), (3, 3)), ([2, 5], (2, 5)), ((np.int64(4), 1), (4, 1)), (np.int32(2), (2, 2)),
])
def test_pair_accepts_an_int_or_one_or_two_ints(value, expected):
    assert pair(value, "kernel_size", "max_pool2d") == expected


@pytest.mark.parametrize("value", [1.5, True, (1, 2, 3), (), "2", (1.0, 2), (True, 1), None])
def test_pair_refuses_anything_else_naming_the_argument(value):
    with pytest.raises(ShapeError, match=r"^max_pool2d expects kernel_size as an int or a pair of ints, got "):
        pair(value, "kernel_size", "max_pool2d")


@pytest.mark.parametrize("kernel, dilation", [((3, 3), (1, 1)), ((4, 2), (1, 1)), ((2, 5), (3, 2)), ((1, 1), (1, 1))])
def test_same_padding_splits_as_pytorch_does(kernel, dilation, rng):
    x = rng.standard_normal((1, 2, 9, 8))
    w = rng.standard_normal((3, 2) + kernel)
    top, bottom, left, right = same_padding(kernel, dilation)
    # PyTorch's "same" equals explicit zero padding with this split (the extra row/column after).
    expected = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), padding="same", dilation=dilation)
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    got = torch.nn.functional.conv2d(torch.tensor(padded), torch.tensor(w), dilation=dilation)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-12)
    ours = F.conv2d(Tensor(x), Tensor(w), padding="same", dilation=dilation)
    np.testing.assert_allclose(ours.data, expected.numpy(), rtol=1e-10, atol=1e-12)
    assert conv_padding("same", kernel, (1, 1), dilation) == (top, bottom, left, right)


@pytest.mark.parametrize("size, kernel, stride, padding, dilation, ceil_mode", [
    (28, 5, 1, 2, 1, False), (7, 3, 2, 1, 1, True), (8, 3, 2, 1, 2, True), (10, 4, 3, 2, 1, True),
    (9, 2, 2, 0, 1, False), (6, 3, 3, 1, 1, True), (32, 3, 2, 1, 3, False),
])
def test_output_size_is_pytorchs_pooling_output_size(size, kernel, stride, padding, dilation, ceil_mode):
    x = torch.zeros(1, 1, size, size)
    y = torch.nn.functional.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)
    assert output_size(size, kernel, stride, padding, dilation, ceil_mode) == y.shape[-1]
    assert output_size(size, kernel, stride, (padding, padding), dilation, ceil_mode) == y.shape[-1]


def test_one_element_tuples_for_2d_pool_arguments_work_as_in_pytorch(rng):
    x = rng.standard_normal((2, 3, 7, 9))
    for ours, theirs in [
        (F.max_pool2d(Tensor(x), (3,), (2,), (1,)), torch.nn.functional.max_pool2d(torch.tensor(x), (3,), (2,), (1,))),
        (F.avg_pool2d(Tensor(x), (2,), (1,)), torch.nn.functional.avg_pool2d(torch.tensor(x), (2,), (1,))),
        (nn.MaxPool2d((2,))(Tensor(x)), torch.nn.MaxPool2d((2,))(torch.tensor(x))),
    ]:
        np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=1e-12)


# The same check raises the same type and message from the op, the layer and the tools.
@pytest.mark.parametrize("kwargs, message", [
    ({"stride": 1.5}, r" expects stride as an int or a pair of ints, got 1.5"),
    ({"padding": -1}, r" expects padding >= 0, got \(-1, -1\)"),
    ({"padding": "full"}, r" expects padding 'same', 'valid', an int or a pair, got 'full'"),
    ({"padding": "same", "stride": 2}, r"\(padding='same'\) needs stride 1, got stride \(2, 2\)"),
    ({"dilation": (1, 2, 3)}, r" expects dilation as an int or a pair of ints, got \(1, 2, 3\)"),
])
def test_conv_arguments_are_refused_alike_by_op_layer_and_conv_stats(kwargs, message, rng):
    x, w = Tensor(rng.standard_normal((1, 2, 6, 6))), Tensor(rng.standard_normal((4, 2, 3, 3)))
    with pytest.raises(ShapeError, match=r"conv2d" + message):
        F.conv2d(x, w, **kwargs)
    with pytest.raises(ShapeError, match=r"Conv2d" + message):
        nn.Conv2d(2, 4, 3, **kwargs)
    with pytest.raises(ShapeError, match=r"conv_stats" + message):
        conv_stats((2, 6, 6), 4, 3, **kwargs)


def test_groups_are_checked_with_shape_error_by_op_and_layer(rng):
    x, w = Tensor(rng.standard_normal((1, 2, 6, 6))), Tensor(rng.standard_normal((4, 2, 3, 3)))
    with pytest.raises(ShapeError, match=r"conv2d expects groups > 0, got 0"):
        F.conv2d(x, w, groups=0)
    with pytest.raises(ShapeError, match=r"Conv2d expects groups > 0, got 0"):
        nn.Conv2d(2, 4, 3, groups=0)
    with pytest.raises(ShapeError, match=r"divisible by groups \(3\)"):
        nn.Conv2d(2, 4, 3, groups=3)
