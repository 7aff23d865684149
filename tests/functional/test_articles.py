"""The worked examples of the CNN explainer articles, as tests."""

from __future__ import annotations

import numpy as np

import cnnkit.functional as F
from cnnkit import Tensor


def test_six_5x5x3_filters_on_a_32x32x3_image_give_six_28x28_feature_maps():
    image = Tensor(np.random.default_rng(0).uniform(0, 255, (1, 3, 32, 32)).astype(np.float32))
    filters = Tensor(np.random.default_rng(1).standard_normal((6, 3, 5, 5)).astype(np.float32))
    assert F.conv2d(image, filters).shape == (1, 6, 28, 28)
    # (W - F + 2P) / S + 1 = (32 - 5 + 0) / 1 + 1 = 28; with P=2 the size is kept.
    assert F.conv2d(image, filters, padding=2).shape == (1, 6, 32, 32)
    assert F.conv2d(image, filters, stride=3).shape == (1, 6, 10, 10)  # (32 - 5) / 3 + 1


def test_2x2_max_pooling_with_stride_2():
    x = np.array([[1, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]], dtype=np.float32)
    y = F.max_pool2d(Tensor(x[None, None]), kernel_size=2, stride=2)
    np.testing.assert_array_equal(y.data[0, 0], [[6, 8], [3, 4]])


def test_max_pooling_routes_the_gradient_to_the_max_and_average_pooling_spreads_it():
    x = Tensor(np.array([[1, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]], np.float32)[None, None],
               requires_grad=True)
    F.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(
        x.grad[0, 0], [[0, 0, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 1]]
    )
    x.grad = None
    F.avg_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad[0, 0], np.full((4, 4), 0.25))


def test_max_pooling_has_no_parameters_and_is_applied_per_channel():
    x = np.random.default_rng(2).standard_normal((2, 5, 8, 8)).astype(np.float32)
    y = F.max_pool2d(Tensor(x), 2)
    assert y.shape == (2, 5, 4, 4)  # depth unchanged, width and height halved
    np.testing.assert_array_equal(y.data[:, 3], F.max_pool2d(Tensor(x[:, 3:4]), 2).data[:, 0])


def test_a_convolution_backward_to_the_input_is_a_convolution_with_flipped_filters():
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((1, 2, 6, 6)), requires_grad=True)
    w = rng.standard_normal((3, 2, 3, 3))
    gy = rng.standard_normal((1, 3, 4, 4))
    F.conv2d(x, Tensor(w)).backward(gy)
    # full convolution of gy with the spatially flipped, channel-swapped filters
    flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # (2, 3, 3, 3)
    expected = F.conv2d(Tensor(gy), Tensor(flipped), padding=2).data
    np.testing.assert_allclose(x.grad, expected, rtol=1e-12, atol=1e-12)


def test_softmax_turns_scores_into_probabilities():
    scores = Tensor(np.array([[2.0, 1.0, 0.1]]))
    p = F.softmax(scores, dim=1).data
    np.testing.assert_allclose(p.sum(), 1.0)
    np.testing.assert_allclose(p, [[0.65900114, 0.24243297, 0.09856589]], rtol=1e-7)
