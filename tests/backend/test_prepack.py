"""Prepacked convolution weights: frozen arrays, forms keyed by the array itself, the dispatch with them."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import cnnkit.functional as F
from cnnkit import Tensor, no_grad
from cnnkit.backend import dispatch, kernels
from cnnkit.backend.kernels import winograd
from cnnkit.backend.prepack import ConvWeightPack, frozen

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")


def test_frozen_is_a_read_only_copy_that_cannot_be_made_writeable(rng):
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    f = frozen(w)
    np.testing.assert_array_equal(f, w)
    assert not np.shares_memory(f, w)
    with pytest.raises(ValueError, match="read-only"):
        f[0] = 0
    with pytest.raises(ValueError, match="read-only"):
        f += 1
    with pytest.raises(ValueError, match="WRITEABLE"):
        f.flags.writeable = True
    w[...] = 0                                          # the source stays the caller's own
    assert np.abs(f).max() > 0


def test_a_pack_needs_a_read_only_weight():
    with pytest.raises(ValueError, match=r"ConvWeightPack\(conv1\) needs a read-only weight"):
        ConvWeightPack(np.zeros((2, 2, 3, 3), np.float32), "conv1")


@pytest.mark.parametrize("m", [2, 4])
def test_filters_are_computed_once_and_equal_the_per_call_transform(rng, m):
    w = frozen(rng.standard_normal((8, 5, 3, 3)))
    pack = ConvWeightPack(w, "conv")
    U = pack.winograd_filters(w, m)
    np.testing.assert_array_equal(U, winograd.winograd_filters(w, m))
    assert pack.winograd_filters(w, m) is U
    assert not U.flags.writeable
    assert pack.forms() == [f"winograd{m}"] and pack.nbytes == U.nbytes


def test_a_pack_answers_only_for_its_own_array(rng):
    w = frozen(rng.standard_normal((8, 5, 3, 3)))
    pack = ConvWeightPack(w)
    same_values = w.copy()                              # equal values, another array: no answer
    same_values.flags.writeable = False
    assert pack.winograd_filters(same_values, 2) is None
    assert pack.winograd_filters(w.view(), 2) is None   # a view is another array too
    assert pack.winograd_filters(copy.deepcopy(w), 2) is None
    assert pack.holds(w) and not pack.holds(same_values)


def conv_inputs(rng, N, C, Fo, H, dtype=np.float32):
    x = rng.standard_normal((N, C, H, H)).astype(dtype)
    w = (rng.standard_normal((Fo, C, 3, 3)) / np.sqrt(9 * C)).astype(dtype)
    b = rng.standard_normal(Fo).astype(dtype)
    return x, w, b


@pytest.mark.parametrize("N, C, H, algorithm", [(8, 128, 7, "winograd4"), (1, 64, 14, "winograd2"),
                                                (1, 128, 7, "gemm")])
def test_conv2d_with_a_pack_runs_the_prepacked_dispatch(rng, monkeypatch, N, C, H, algorithm):
    x, w, b = conv_inputs(rng, N, C, C, H)
    wf = frozen(w)
    pack = ConvWeightPack(wf, "conv")
    chosen = []
    original = dispatch.conv2d_algorithm

    def spy(*args, **kwargs):
        chosen.append(original(*args, **kwargs))
        return chosen[-1]

    monkeypatch.setattr(dispatch, "conv2d_algorithm", spy)
    with no_grad():
        plain = F.conv2d(Tensor(x), Tensor(w), Tensor(b), padding=1).data
        packed = F.conv2d(Tensor(x), Tensor(wf), Tensor(b), padding=1, prepacked=pack).data
    assert chosen[1] == algorithm
    assert pack.forms() == ([algorithm] if algorithm != "gemm" else [])
    np.testing.assert_allclose(packed, plain, rtol=1e-4, atol=1e-4 * np.abs(plain).max())


@pytest.mark.parametrize("m", [2, 4])
def test_the_prepacked_winograd_forward_is_bit_for_bit_the_per_call_one(rng, m):
    x, w, b = conv_inputs(rng, 2, 32, 48, 12)
    wf = frozen(w)
    U = ConvWeightPack(wf).winograd_filters(wf, m)
    per_call = winograd.conv2d_winograd(x, w, b, (1, 1, 1, 1), m)
    prepared = winograd.conv2d_winograd(x, wf, b, (1, 1, 1, 1), m, filters=U)
    np.testing.assert_array_equal(prepared, per_call)


def test_conv2d_ignores_a_pack_of_another_array(rng):
    x, w, b = conv_inputs(rng, 8, 128, 128, 7)
    pack = ConvWeightPack(frozen(w))
    other = frozen(w * 2)                               # the weight was replaced: the pack must not answer
    with no_grad():
        y = F.conv2d(Tensor(x), Tensor(other), Tensor(b), padding=1, prepacked=pack).data
        expected = F.conv2d(Tensor(x), Tensor(w * 2), Tensor(b), padding=1).data
    np.testing.assert_array_equal(y, expected)
    assert pack.forms() == []


@pytest.mark.parametrize("x_shape, w_shape, plain, prepacked", [
    ((8, 512, 7, 7), (512, 512, 3, 3), "winograd2", "winograd4"),   # ResNet-18 layer4, batch 8
    ((8, 256, 14, 14), (256, 256, 3, 3), "winograd2", "winograd2"),  # 14 = 4*4 - 2: F(4x4) would pad more
    ((1, 256, 14, 14), (256, 256, 3, 3), "winograd2", "winograd2"),  # 49 tiles: by filter blocks eager
    ((2, 256, 10, 10), (256, 256, 3, 3), "gemm", "winograd2"),       # 50 tiles, but of two images
    ((64, 512, 2, 2), (512, 512, 3, 3), "gemm", "winograd2"),        # VGG-11 CIFAR b64's 2x2 maps: 64 tiles
    ((1, 512, 7, 7), (512, 512, 3, 3), "gemm", "gemm"),              # 16 tiles
    ((1, 64, 56, 56), (64, 64, 3, 3), "winograd4", "winograd4"),     # 196 4x4 tiles: by filter blocks eager
    ((1, 128, 28, 28), (128, 128, 3, 3), "winograd4", "winograd4"),  # 49 4x4 tiles: by filter blocks eager
    ((2, 64, 28, 28), (64, 64, 3, 3), "winograd2", "winograd4"),     # 98 4x4 tiles, but of two images
    ((8, 16, 32, 32), (16, 16, 3, 3), "direct", "direct"),           # small banks stay direct
    ((8, 64, 8, 8), (64, 64, 3, 3), "direct", "direct"),             # small maps too, below 256 4x4 tiles
    ((64, 64, 8, 8), (64, 64, 3, 3), "direct", "direct"),             # at any batch (the blocked kernel)
])
def test_dispatch_thresholds_with_and_without_prepacked_filters(x_shape, w_shape, plain, prepacked):
    args = (np, np.float32, x_shape, w_shape, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    assert dispatch.conv2d_algorithm(*args) == plain
    assert dispatch.conv2d_algorithm(*args, prepacked=True) == prepacked
