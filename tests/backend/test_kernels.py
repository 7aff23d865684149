"""The compiled kernels (``cnnkit.backend.kernels``) against the NumPy reference path.

Every kernel-backed op is run twice on the same inputs: once as dispatched (kernels on)
and once with the kernels switched off (``config.kernels(False)``), which runs the
pure-NumPy algorithm kept as the reference. Convolutions must agree to float rounding (the kernels sum in another
order); max pooling and ReLU must agree exactly, including which of several tied maxima
receives the gradient and what NaN and inf do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import cnnkit.functional as F
from cnnkit import Tensor, config
from cnnkit.backend import cores, dispatch, kernels
from cnnkit.backend.kernels import elementwise, simd
from cnnkit.backend.kernels import pool as pool_kernels
from cnnkit.functional.conv import Conv2dDirectOp, Conv2dIm2colOp
from cnnkit.functional.pool import MaxPool2dFusedOp, MaxPool2dReferenceOp
from tests.backend.arrays import cnhw

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")

TOL = {np.float32: (1e-4, 1e-5), np.float64: (1e-10, 1e-12)}


def assert_rounding_close(actual, expected, dtype):
    """Equal up to float rounding: atol scales with the largest |value| (sums cancel)."""
    rtol, atol = TOL[dtype]
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale)


def run(fn, arrays, grad_seed, reference: bool, needs=None, expect=None):
    """Forward and backward of fn(*tensors): (output, [input grads]) as NumPy arrays.

    ``expect``: the Function class the dispatch must pick for the output.
    """
    with config.kernels(not reference):
        needs = needs or [True] * len(arrays)
        tensors = [Tensor(a.copy(order="K"), requires_grad=r) for a, r in zip(arrays, needs)]  # layout kept
        y = fn(*tensors)
        if expect is not None:
            assert type(y.creator) is expect
        gy = np.random.default_rng(grad_seed).standard_normal(y.shape).astype(y.dtype)
        y.backward(gy)
        return y.data.copy(), [t.grad for t in tensors]



# ----------------------------------------------------------------------------- convolution
CONV_CASES = [
    # (N, C, F, H, W, KH, KW, padding)
    (4, 1, 6, 28, 28, 5, 5, 2),                # LeNet-5 conv1
    (3, 6, 16, 14, 14, 5, 5, 0),               # LeNet-5 conv2
    (1, 3, 4, 7, 9, 3, 3, 1),                  # batch 1, non-square
    (2, 2, 3, 5, 6, 3, 2, (2, 1)),             # padding up to the kernel size
    (2, 3, 5, 6, 5, 4, 4, "same"),             # even kernel: odd extra padding bottom/right
    (5, 4, 9, 9, 8, 2, 3, 0),                  # F not a multiple of the 8-tap groups
    (2, 17, 3, 4, 4, 3, 3, 1),                 # C*KH*KW = 153: group remainder
    (37, 6, 16, 14, 14, 5, 5, 0),              # 16-image groups and a partial one, gx blocks
]


@pytest.fixture(params=["blocked", "rows"])
def direct_kernel(request, monkeypatch):
    """Both kernels of Conv2dDirectOp (dispatch.DIRECT_CONV_BLOCKED 1 / 0)."""
    monkeypatch.setattr(dispatch, "DIRECT_CONV_BLOCKED", int(request.param == "blocked"))
    return request.param


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
def test_direct_conv2d_matches_im2col_reference(case, layout, dtype, rng, direct_kernel):
    N, C, Fo, H, W, KH, KW, padding = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    x = cnhw(x) if layout == "cnhw" else x
    w = rng.standard_normal((Fo, C, KH, KW)).astype(dtype)
    b = rng.standard_normal(Fo).astype(dtype)

    def conv(x, w, b):
        return F.conv2d(x, w, b, padding=padding)

    y, grads = run(conv, [x, w, b], 1, False, expect=Conv2dDirectOp)
    y_ref, grads_ref = run(conv, [x, w, b], 1, True, expect=Conv2dIm2colOp)
    assert_rounding_close(y, y_ref, dtype)
    for g, g_ref in zip(grads, grads_ref):
        assert_rounding_close(g, g_ref, dtype)


@pytest.mark.parametrize("case", [c for c in CONV_CASES if c[-1] != "same"])
def test_direct_conv2d_matches_pytorch_in_float64(case, rng, direct_kernel):
    """The direct kernel's forward and its three gradients against PyTorch (float64)."""
    import torch

    N, C, Fo, H, W, KH, KW, padding = case
    x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((Fo, C, KH, KW)), rng.standard_normal(Fo)
    y, grads = run(lambda x, w, b: F.conv2d(x, w, b, padding=padding), [x, w, b], 7, False,
                   expect=Conv2dDirectOp)
    ts = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    Y = torch.nn.functional.conv2d(*ts, padding=padding)
    Y.backward(torch.tensor(np.random.default_rng(7).standard_normal(y.shape)))   # run's gradient
    np.testing.assert_allclose(y, Y.detach().numpy(), rtol=1e-12, atol=1e-12)
    for g, t in zip(grads, ts):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("needs", [(False, True, True), (True, False, False), (True, True, False)])
def test_direct_conv2d_computes_only_the_gradients_asked_for(needs, rng, direct_kernel):
    x, w = rng.standard_normal((3, 2, 6, 6)), rng.standard_normal((4, 2, 3, 3))
    b = rng.standard_normal(4)

    def conv(x, w, b):
        return F.conv2d(x, w, b, padding=1)

    _, grads = run(conv, [x, w, b], 2, False, needs=list(needs), expect=Conv2dDirectOp)
    _, grads_ref = run(conv, [x, w, b], 2, True, needs=list(needs), expect=Conv2dIm2colOp)
    for g, g_ref, need in zip(grads, grads_ref, needs):
        assert (g is None) == (not need)
        if need:
            assert_rounding_close(g, g_ref, np.float64)


def test_direct_conv2d_is_skipped_where_another_algorithm_is_faster_or_needed():
    big, small = (64, 64, 5, 5), (8, 64, 3, 3)
    f32 = np.float32

    def choice(w_shape, stride=(1, 1), dilation=(1, 1), groups=1, dtype=f32, xp=np, pads=(1, 1, 1, 1)):
        x_shape = (w_shape[1] * groups, 8, 8)
        return dispatch.conv2d_algorithm(xp, dtype, x_shape, w_shape, stride, pads, dilation, groups)

    assert choice(big) == "gemm"
    assert choice(small) == "direct"
    assert choice(small, stride=(2, 2)) == "gemm"
    assert choice(small, dilation=(2, 2)) == "gemm"
    assert choice((8, 32, 3, 3), groups=2) == "gemm"
    assert choice((8, 64, 1, 1)) == "gemm"
    assert choice(small, dtype=np.float16) == "im2col"
    with config.kernels(False):
        assert choice(small) == "im2col"


def test_direct_conv2d_op_refuses_geometry_it_does_not_handle(rng):
    x, w = rng.standard_normal((1, 2, 6, 6)), rng.standard_normal((3, 2, 3, 3))
    with pytest.raises(ValueError, match=r"Conv2dDirectOp handles stride 1.*got stride \(2, 2\)"):
        Conv2dDirectOp((2, 2), (0, 0, 0, 0), (1, 1), 1)(x, w)


# ----------------------------------------------------------------------------- max pooling
POOL_CASES = [
    # (H, W, kernel_size, stride, padding, dilation, ceil_mode)
    (28, 28, 2, None, 0, 1, False),            # LeNet-5: the 2x2 fast path
    (7, 9, 2, 2, 0, 1, False),                 # 2x2 with an odd last row and column
    (7, 9, 2, 2, 0, 1, True),                  # ceil_mode: overhanging windows
    (9, 8, 3, 2, 1, 1, False),                 # ResNet's stem pooling: the 3x3/2 kernel
    (10, 7, 3, 2, 1, 1, True),                 # 3x3/2 with ceil_mode's overhang
    (8, 9, 3, 2, 0, 1, True),                  # 3x3/2 without padding
    (3, 4, 3, 2, 1, 1, False),                 # 3x3/2 on a map smaller than two windows
    (8, 10, (3, 2), (1, 2), (1, 1), 1, False), # overlapping windows, rectangular
    (11, 11, 3, 2, 1, 2, True),                # dilation and ceil_mode
    (5, 5, 5, 1, 2, 1, False),                 # windows mostly padding
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
def test_fused_max_pool2d_equals_reference_exactly_with_ties(case, layout, dtype, rng):
    H, W, k, s, p, d, ceil = case
    # small integers: many exact ties inside windows, as on MNIST's black background
    x = rng.integers(-2, 3, size=(3, 4, H, W)).astype(dtype)
    x = cnhw(x) if layout == "cnhw" else x

    def pool(x):
        return F.max_pool2d(x, k, s, p, d, ceil)

    y, (gx,) = run(pool, [x], 3, False, expect=MaxPool2dFusedOp)
    y_ref, (gx_ref,) = run(pool, [x], 3, True, expect=MaxPool2dReferenceOp)
    np.testing.assert_array_equal(y, y_ref)
    # the same elements receive gradient (the first maximum of each window) ...
    np.testing.assert_array_equal(gx != 0, gx_ref != 0)
    # ... and where windows overlap, an element's gradients add up in another order
    assert_rounding_close(gx, gx_ref, dtype)
    if s is None or s == k:
        np.testing.assert_array_equal(gx, gx_ref)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5, 3, 8, 6), (1, 4, 6, 6), (4, 1, 6, 7), (2, 3, 9, 9)])
@pytest.mark.parametrize("window", [(2, 2, 0, False), (3, 2, 1, False), (3, 2, 0, True), (2, 1, 1, False)])
@pytest.mark.parametrize("layouts", [("cnhw", "nchw"), ("cnhw", "cnhw"), ("nchw", "cnhw")])
def test_fused_max_pool2d_on_channel_major_maps_equals_the_reference(layouts, window, shape, dtype, threads, rng):
    """The kernels visit planes in memory order: on the direct convolution's CNHW maps (kept as
    they are, no copy), with an upstream gradient of either layout, after a ReLU (the fused mask)
    or not, the same maxima and gradients as the reference, bit for bit; N or C of 1 too."""
    k, s, p, ceil = window
    x_layout, g_layout = layouts
    x = rng.integers(-2, 3, size=shape).astype(dtype)               # ties, zeros, negatives
    x.reshape(-1)[3] = np.nan
    for relu in (False, True):
        results = []
        for reference in (False, True):
            with config.kernels(not reference), config.num_threads(threads):
                xt = Tensor(cnhw(x) if x_layout == "cnhw" else x.copy(), requires_grad=True)
                y = F.max_pool2d(F.relu(xt) if relu else xt, k, s, p, ceil_mode=ceil)
                assert type(y.creator) is (MaxPool2dReferenceOp if reference else MaxPool2dFusedOp)
                gy = np.random.default_rng(7).standard_normal(y.shape).astype(dtype)
                y.backward(cnhw(gy) if g_layout == "cnhw" else gy)
                results.append((y.data, xt.grad))
        (y, gx), (y_ref, gx_ref) = results
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(gx != 0, gx_ref != 0)
        assert_rounding_close(gx, gx_ref, dtype)
        if s == k:
            np.testing.assert_array_equal(gx, gx_ref)


@pytest.mark.parametrize("kernel_size, stride, padding", [(2, 2, 0), (3, 1, 1), (3, 2, 1), (3, 2, 0)])
def test_fused_max_pool2d_propagates_nan_and_inf_like_the_reference(kernel_size, stride, padding, rng):
    x = rng.standard_normal((2, 3, 6, 6))
    x[0, 0, 0, 0], x[0, 1, 2, 3], x[1, 2, 4, 4] = np.nan, np.inf, -np.inf
    x[0, 0, 1, 1] = x[0, 0, 3, 3] = np.nan                      # several NaNs in one window
    x[1, 0] = -np.inf

    def pool(x):
        return F.max_pool2d(x, kernel_size, stride, padding)

    y, (gx,) = run(pool, [x], 4, False, expect=MaxPool2dFusedOp)
    y_ref, (gx_ref,) = run(pool, [x], 4, True, expect=MaxPool2dReferenceOp)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(gx != 0, gx_ref != 0)
    assert_rounding_close(gx, gx_ref, np.float64)  # overlapping windows add in another order


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 28, 28), (4, 10, 10), (2, 7, 9), (1, 1, 1), (1, 3, 2), (2, 9, 67), (1, 4, 64)])
def test_max_pool2d_2x2_vector_kernels_equal_the_scalar_kernels_bit_for_bit(shape, dtype, rng):
    """The vector 2x2/2 forward and backward (``simd.max_pool_2x2``, ``max_unpool_2x2``) against
    the scalar ones: the same maxima (NaN, signed zeros, infinities), the same tap bytes with the
    same NOT_POSITIVE flag (first maximum, last NaN), the same gx with and without the ReLU mask;
    odd sizes and partial last vectors; nothing written past y, arg and gx."""
    P, H, W = shape
    VL = simd.lanes(np.dtype(dtype))
    special = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 2.0], dtype)
    for x in (rng.integers(-2, 3, size=shape).astype(dtype), rng.choice(special, size=shape),
              rng.standard_normal(shape).astype(dtype)):
        # the backward's gradients: NaN and -0.0 among them
        gy = rng.choice(special, size=(P, H // 2, W // 2)).astype(dtype)
        _assert_2x2_kernels_like_the_scalar_ones(
            x, gy, lambda x, y, arg: pool_kernels.max_pool2d_forward_2x2_simd(0, P, x, y, arg, VL),
            lambda gy, arg, gx, keep: pool_kernels.max_pool2d_backward_2x2_simd(0, P, gy, P, 1, arg, 1, P, gx, keep, VL))


def _assert_2x2_kernels_like_the_scalar_ones(x, gy, forward, backward):
    """A vector 2x2/2 kernel pair, forward(x, y, arg) and backward(gy, arg, gx, keep), against
    the scalar kernels on planes x (P, H, W) and output gradients gy: the same maxima, tap bytes
    and gx (ReLU mask on and off), bit for bit; nothing written past y, arg and gx."""
    P, H, W = x.shape
    OH, OW, dtype = H // 2, W // 2, x.dtype
    size = P * OH * OW
    y0, a0 = np.full(size, 7, dtype), np.full(size, 9, np.uint8)
    y1, a1 = np.full(size + 40, 5, dtype), np.full(size + 40, 3, np.uint8)
    pool_kernels.max_pool2d_forward_2x2(0, P, x, y0.reshape(P, OH, OW), a0.reshape(P, OH, OW))
    forward(x, y1[:size].reshape(P, OH, OW), a1[:size].reshape(P, OH, OW))
    assert y1[:size].tobytes() == y0.tobytes()
    np.testing.assert_array_equal(a1[:size], a0)
    assert (y1[size:] == 5).all() and (a1[size:] == 3).all()
    for keep in (pool_kernels.TAP_BITS, 0xFF):
        g0, g1 = np.full(P * H * W, 7, dtype), np.full(P * H * W + 40, 5, dtype)
        pool_kernels.max_pool2d_backward_2x2(0, P, gy, P, 1, a0.reshape(P, OH, OW), 1, P, g0.reshape(P, H, W),
                                             np.uint8(keep))
        backward(gy, a0.reshape(P, OH, OW), g1[: P * H * W].reshape(P, H, W), np.uint8(keep))
        assert g1[: P * H * W].tobytes() == g0.tobytes()
        assert (g1[P * H * W :] == 5).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 10, 10), (3, 11, 10), (2, 10, 11), (5, 4, 4), (2, 2, 2), (2, 7, 9), (2, 5, 8),
                                   (3, 9, 3), (2, 1, 6), (4, 12, 6), (3, 16, 16), (2, 6, 12)])
def test_max_pool2d_2x2_row_packed_kernels_equal_the_scalar_kernels_bit_for_bit(shape, dtype, rng):
    """The row-packed 2x2/2 kernels (several output rows per vector op: ``max_pool_2x2_rows``,
    ``max_unpool_2x2_rows``) against the scalar ones on narrow maps (LeNet-5's 10x10; odd
    heights and widths, a last block of fewer rows, 1-4 rows per vector): the same maxima, tap
    bytes and gx (ReLU mask on and off), bit for bit; nothing written past y, arg and gx."""
    P, H, W = shape
    OH, OW = H // 2, W // 2
    special = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 2.0], dtype)
    for R in range(2, pool_kernels._rows_per_vector(OW, np.dtype(dtype)) + 1):
        for x in (rng.integers(-2, 3, size=shape).astype(dtype), rng.choice(special, size=shape),
                  rng.standard_normal(shape).astype(dtype)):
            gy = rng.choice(special, size=(P, OH, OW)).astype(dtype)
            _assert_2x2_kernels_like_the_scalar_ones(
                x, gy, lambda x, y, arg, R=R: pool_kernels.max_pool2d_forward_2x2_rows(0, P, x, y, arg, R),
                lambda gy, arg, gx, keep, R=R: pool_kernels.max_pool2d_backward_2x2_rows(0, P, gy, P, 1, arg, 1, P, gx,
                                                                                         keep, R))


def test_row_packed_max_pooling_takes_maps_whose_rows_fit_twice_in_a_vector():
    assert pool_kernels._rows_per_vector(5, np.dtype(np.float32)) == 3      # LeNet-5's 10x10 -> 5x5
    assert pool_kernels._rows_per_vector(14, np.dtype(np.float32)) == 1     # 28x28: one row a vector op
    assert pool_kernels._rows_per_vector(2, np.dtype(np.float32)) == pool_kernels.PACKED_ROWS
    assert pool_kernels._rows_per_vector(5, np.dtype(np.float64)) == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
def test_row_packed_max_pooling_gives_the_op_results_of_the_row_kernels(dtype, layout, rng, monkeypatch):
    """dispatch.MAX_POOL_2X2_PACKED_ROWS on and off through the op (LeNet-5's second pooling, NaN
    and ties, the gradient in the other layout, ReLU fused or not, 1-3 threads): the same bits."""
    x = rng.integers(-2, 3, size=(5, 16, 10, 10)).astype(dtype)
    x.reshape(-1)[[5, 100, 2000]] = np.nan
    x = cnhw(x) if layout == "cnhw" else x
    results, calls = [], []
    for name in ("max_pool2d_forward_2x2_rows", "max_pool2d_backward_2x2_rows"):
        kernel = getattr(pool_kernels, name)
        monkeypatch.setattr(pool_kernels, name, lambda *a, kernel=kernel: calls.append(1) or kernel(*a))
    for on in (1, 0):
        monkeypatch.setattr(dispatch, "MAX_POOL_2X2_PACKED_ROWS", on)
        for threads in (1, 2, 3):
            with config.num_threads(threads):
                for relu in (False, True):
                    y, (gx,) = run(lambda t, relu=relu: F.max_pool2d(F.relu(t) if relu else t, 2), [x], 5, False)
                    results.append((y, gx))
    assert len(calls) >= (12 if dtype == np.float32 else 0) and (dtype == np.float32 or not calls)
    half = len(results) // 2
    for (y, gx), (y_ref, gx_ref) in zip(results[:half], results[half:], strict=True):
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(gx, gx_ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool2d_2x2_vector_and_scalar_kernels_give_the_same_op_results(dtype, rng, monkeypatch):
    """dispatch.MAX_POOL_2X2_SIMD on and off: the same outputs and gradients, ReLU fused or not."""
    x = rng.integers(-2, 3, size=(3, 6, 28, 27)).astype(dtype)
    x.reshape(-1)[[5, 100, 2000]] = np.nan
    results = []
    for on in (1, 0):
        monkeypatch.setattr(dispatch, "MAX_POOL_2X2_SIMD", on)
        for relu in (False, True):
            y, (gx,) = run(lambda t, relu=relu: F.max_pool2d(F.relu(t) if relu else t, 2), [cnhw(x)], 5, False)
            results.append((y, gx))
    for (y, gx), (y_ref, gx_ref) in zip(results[:2], results[2:], strict=True):
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(gx, gx_ref)


@pytest.mark.parametrize("padding, ceil_mode", [(1, False), (0, True), (1, True)])
def test_max_pool2d_3x3s2_kernel_matches_pytorch_with_nan_and_ties(padding, ceil_mode, rng):
    """The 3x3/2 kernel (ResNet's stem) against PyTorch: values, and which tap gets the
    gradient with exact ties (the first maximum) and NaNs (the last NaN of a window)."""
    import torch

    x = rng.integers(-2, 3, size=(2, 3, 9, 8)).astype(np.float32)
    x[0, 0, 1, 1] = x[0, 0, 2, 2] = x[1, 2, 4, 5] = np.nan
    x[0, 1, 3, 3] = np.inf
    y, (gx,) = run(lambda x: F.max_pool2d(x, 3, 2, padding, ceil_mode=ceil_mode), [x], 6, False,
                   expect=MaxPool2dFusedOp)
    gy = np.random.default_rng(6).standard_normal(y.shape).astype(np.float32)   # run's gradient
    X = torch.tensor(x, requires_grad=True)
    Y = torch.nn.functional.max_pool2d(X, 3, 2, padding, ceil_mode=ceil_mode)
    Y.backward(torch.tensor(gy))
    np.testing.assert_array_equal(y, Y.detach().numpy())
    np.testing.assert_allclose(gx, X.grad.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(gx != 0, X.grad.numpy() != 0)


VALUES_3X3S2_CASES = [
    # (H, W, padding, ceil_mode)
    (112, 112, 1, False),                      # ResNet-18's stem pooling
    (9, 8, 1, False), (10, 7, 1, True), (8, 9, 0, True), (11, 13, 0, False),
    (3, 4, 1, False), (2, 2, 1, False), (1, 5, 1, True), (1, 1, 1, False),
]


def _same_bits(a, b):
    """Equal bit for bit: signed zeros and NaNs included."""
    ints = {4: np.int32, 8: np.int64}[a.dtype.itemsize]
    return a.shape == b.shape and np.array_equal(a.view(ints), b.view(ints))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", VALUES_3X3S2_CASES)
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
def test_max_pool2d_3x3s2_without_backward_writes_no_index_and_equals_the_reference(
        case, layout, dtype, rng, monkeypatch):
    """Under no_grad the 3x3/2 pooling computes the maxima alone (separable kernel): bit for
    bit the tap-tracking kernel's values (the first maximum in row-major order, so the same
    signed zero among tied zeros; the last NaN of a window), and the NumPy reference's and
    PyTorch's values (np.maximum may return the other zero of a tie)."""
    import torch

    H, W, p, ceil = case
    x = rng.integers(-1, 2, size=(2, 3, H, W)).astype(dtype) * rng.choice([-0.0, 1.0], size=(2, 3, H, W))
    x[rng.random(x.shape) < 0.03] = np.nan
    x[rng.random(x.shape) < 0.03] = np.inf
    x[rng.random(x.shape) < 0.03] = -np.inf
    x = cnhw(x) if layout == "cnhw" else x

    def pool(x):
        return F.max_pool2d(Tensor(x), 3, 2, p, ceil_mode=ceil).data

    tracked = run(lambda t: F.max_pool2d(t, 3, 2, p, ceil_mode=ceil), [x], 3, False, expect=MaxPool2dFusedOp)[0]
    with config.kernels(False):
        reference = pool(x)
    monkeypatch.setattr(pool_kernels, "max_pool2d_forward_3x3s2", None)  # the tap-tracking kernel must not run
    with config.no_grad():
        y = pool(x)
    assert _same_bits(y, tracked)
    np.testing.assert_array_equal(y, reference)
    expected = torch.nn.functional.max_pool2d(torch.from_numpy(np.ascontiguousarray(x)), 3, 2, p, ceil_mode=ceil)
    np.testing.assert_array_equal(y, expected.numpy())


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_max_pool2d_3x3s2_without_backward_does_not_depend_on_the_threads(threads, rng, monkeypatch):
    x = rng.standard_normal((2, 7, 23, 18)).astype(np.float32)
    with config.no_grad(), config.num_threads(1):
        expected = F.max_pool2d(Tensor(x), 3, 2, 1).data
    monkeypatch.setattr(dispatch, "POOL_VALUES_MIN_ELEMENTS", 1)  # every plane its own piece
    with config.no_grad(), config.num_threads(threads):
        assert _same_bits(F.max_pool2d(Tensor(x), 3, 2, 1).data, expected)


# ------------------------------------------------------------------------------------ relu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
@pytest.mark.parametrize("shape", [(16, 8, 16, 16), (1, 512, 7, 7), (2, 2, 32, 32)])  # from ELEMENTWISE_MIN_SIZE on
def test_parallel_relu_equals_reference_exactly(shape, layout, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, 0, :4] = [np.nan, np.inf, -np.inf, 0.0]
    x = cnhw(x) if layout == "cnhw" else x
    assert dispatch.relu_kernel_applies(np, x)
    with config.kernels(False):
        assert not dispatch.relu_kernel_applies(np, x)
    y, (gx,) = run(F.relu, [x], 5, False)
    y_ref, (gx_ref,) = run(F.relu, [x], 5, True)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(gx, gx_ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
def test_relu_keeping_its_output_as_the_mask_equals_the_mask_bit_for_bit(layout, dtype, rng, monkeypatch):
    """Outputs up to RELU_KEEPS_OUTPUT_MAX_BYTES serve as their own mask (nonzero where it is set):
    the same y and gx as with a bool mask, NaN, +-inf, +-0 in x and inf/NaN upstream included."""
    x = rng.standard_normal((16, 8, 17, 15)).astype(dtype)
    x[0, 0, 0, :6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40 if dtype == np.float32 else 1e-310]
    x = cnhw(x) if layout == "cnhw" else x
    gy = rng.standard_normal(x.shape).astype(dtype)
    gy[0, 0, 0, :6] = [np.inf, np.nan, np.nan, np.inf, np.nan, np.inf]
    results = []
    for limit in (0, 2**40):
        monkeypatch.setattr(dispatch, "RELU_KEEPS_OUTPUT_MAX_BYTES", limit)
        monkeypatch.setattr(elementwise, "relu_with_mask", elementwise.relu_with_mask if limit == 0 else None)
        with config.kernels(True):
            xs = Tensor(x.copy(), requires_grad=True)
            y = F.relu(xs)
            y.backward(gy)
        assert xs.grad.strides == xs.data.strides
        results.append((y.data, xs.grad))
    for a, b in zip(*results, strict=True):
        assert _same_bits(a, b)


def test_an_in_place_write_into_a_relu_output_kept_as_its_mask_is_refused(rng, monkeypatch):
    """As PyTorch (its ReLU saves its result): the gradient would use the new values."""
    from cnnkit import no_grad

    x = Tensor(rng.standard_normal((8, 8, 16, 16)).astype(np.float32), requires_grad=True)
    with config.kernels(True):
        assert dispatch.relu_keeps_output(x.data)
        y = F.relu(x)
        with no_grad():
            y[0, 0, 0, 0] = 5.0
        with pytest.raises(RuntimeError, match="modified by an inplace operation: its output of ReLU"):
            y.sum().backward()
        monkeypatch.setattr(dispatch, "RELU_KEEPS_OUTPUT_MAX_BYTES", 0)    # a bool mask: nothing of y kept
        y = F.relu(x)
        with no_grad():
            y[0, 0, 0, 0] = 5.0
        y.sum().backward()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parallel_relu_matches_pytorch_with_nan_and_inf(dtype, rng):
    """The ReLU kernel (above ELEMENTWISE_MIN_SIZE) against PyTorch: a NaN passes forward
    and its gradient passes; inf/NaN upstream gradients where x <= 0 give 0."""
    import torch

    x = rng.standard_normal((8, 8, 32, 32)).astype(dtype)
    x[0, 0, 0, :5] = [np.nan, np.inf, -np.inf, 0.0, -0.0]
    assert dispatch.relu_kernel_applies(np, x)
    y, (gx,) = run(F.relu, [x], 8, False)
    gy = np.random.default_rng(8).standard_normal(y.shape).astype(dtype)
    X = torch.tensor(x, requires_grad=True)
    Y = torch.relu(X)
    Y.backward(torch.tensor(gy))
    np.testing.assert_array_equal(y, Y.detach().numpy())
    np.testing.assert_array_equal(gx, X.grad.numpy())
    gy[0, 0, 0, :5] = [np.inf, np.nan, np.nan, np.inf, np.nan]
    with config.kernels(True):
        xs = Tensor(x.copy(), requires_grad=True)
        F.relu(xs).backward(gy)
    X.grad = None
    torch.relu(X).backward(torch.tensor(gy))
    np.testing.assert_array_equal(xs.grad, X.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
@pytest.mark.parametrize("shape", [(16, 8, 16, 16), (1, 512, 7, 7), (2, 2, 32, 32)])
@pytest.mark.parametrize("threads", [1, 3])
def test_relu_without_backward_writes_no_mask_and_matches_pytorch(shape, layout, dtype, threads, rng, monkeypatch):
    """Under no_grad the kernel writes y alone (relu_only), equal to PyTorch's, NaN/inf included,
    split over the threads by INFERENCE_MIN_ELEMENTS (small here: every shape splits)."""
    import torch

    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, 0, :5] = [np.nan, np.inf, -np.inf, 0.0, -0.0]
    x = cnhw(x) if layout == "cnhw" else x
    assert dispatch.relu_kernel_applies(np, x)
    monkeypatch.setattr(elementwise, "relu_with_mask", None)  # the masked kernel must not run
    monkeypatch.setattr(dispatch, "INFERENCE_MIN_ELEMENTS", 1000)
    with config.kernels(True), config.no_grad(), config.num_threads(threads):
        y = F.relu(Tensor(x)).data
    assert y.strides == x.strides
    np.testing.assert_array_equal(y, torch.relu(torch.from_numpy(np.ascontiguousarray(x))).numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layouts", [("cnhw", "nchw"), ("nchw", "cnhw"), ("cnhw", "gaps")])
def test_relu_gradient_of_another_layout_takes_the_kernel_and_equals_pytorch(layouts, dtype, rng, monkeypatch):
    """An upstream gradient laid out otherwise than the forward's input (C order next to the
    direct convolution's channel-major maps: ResNet-20's shortcut branches), or with gaps,
    still takes the parallel kernel, not NumPy's select; gx keeps x's layout, values exact
    (inf/NaN upstream where x <= 0 give 0)."""
    import torch

    x_layout, g_layout = layouts
    x = rng.standard_normal((16, 8, 17, 15)).astype(dtype)
    x[0, 0, 0, :5] = [np.nan, np.inf, -np.inf, 0.0, -0.0]
    gy = rng.standard_normal(x.shape).astype(dtype)
    gy[0, 0, 0, :5] = [np.inf, np.nan, np.nan, np.inf, np.nan]
    gy[1, 2, 3, :3] = [np.inf, -np.inf, np.nan]
    xs = Tensor(cnhw(x) if x_layout == "cnhw" else x.copy(), requires_grad=True)
    if g_layout == "gaps":
        g = np.zeros(x.shape[:3] + (2 * x.shape[3],), dtype)[..., ::2]
        g[...] = gy
    else:
        g = cnhw(gy) if g_layout == "cnhw" else gy.copy()
    assert dispatch.relu_kernel_applies(np, xs.data)
    calls = []
    monkeypatch.setattr(elementwise, "relu_backward",
                        lambda *a, kernel=elementwise.relu_backward: calls.append(1) or kernel(*a))
    monkeypatch.setattr(np, "where", None)  # NumPy's select (the reference path) must not run
    with config.kernels(True):
        F.relu(xs).backward(g)
    monkeypatch.undo()
    assert calls and xs.grad.strides == xs.data.strides
    X = torch.tensor(x, requires_grad=True)
    torch.relu(X).backward(torch.tensor(gy))
    np.testing.assert_array_equal(xs.grad, X.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_parallel_add_equals_numpys_sum_bit_for_bit(layout, dtype, threads, rng, monkeypatch):
    """The shortcut sums and the gradients backward accumulates: NumPy's a + b exactly
    (inf - inf, NaN, -0.0 + 0.0 included), a's layout, any thread count."""
    a, b = (rng.standard_normal((16, 9, 17, 13)).astype(dtype) for _ in range(2))
    a[0, 0, 0, :4], b[0, 0, 0, :4] = [np.inf, np.nan, -0.0, 1e308], [-np.inf, 1.0, 0.0, 1e308]
    a, b = (cnhw(v) for v in (a, b)) if layout == "cnhw" else (a, b)
    monkeypatch.setattr(dispatch, "PARALLEL_MIN_ELEMENTS", 1000)  # every thread gets chunks
    calls = []
    monkeypatch.setattr(elementwise, "add_forward", lambda *v, k=elementwise.add_forward: calls.append(1) or k(*v))
    with config.num_threads(threads), np.errstate(all="ignore"):
        y, expected = elementwise.add(a, b), a + b
    assert calls and y.strides == a.strides and y.dtype == a.dtype
    assert _same_bits(y, expected)
    assert _same_bits(F.add(Tensor(a), Tensor(b)).data, expected)


def test_add_leaves_other_pairs_to_numpy(rng):
    a = rng.standard_normal((8, 8, 32, 32)).astype(np.float32)
    for b in (a[0], a.astype(np.float64), cnhw(a), np.ones(a.shape, np.int32), 2.0):  # broadcast, dtypes, layouts
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(elementwise.add(a, b), a + b)
            assert elementwise.add(a, b).dtype == (a + b).dtype
    with config.kernels(False):
        assert _same_bits(elementwise.add(a, a), a + a)


def test_relu_output_keeps_the_input_memory_layout(rng):
    x = cnhw(rng.standard_normal((16, 8, 16, 16)).astype(np.float32))
    y = F.relu(Tensor(x)).data
    assert y.strides == x.strides


# --------------------------------------------------------------------------------- threads
def test_results_do_not_depend_on_the_number_of_threads(rng):
    # Big enough that every kernel splits its work over the threads (dispatch's grains):
    # a 3-channel 3x3 convolution on 40x40 images, 1.3M elements through ReLU and pooling.
    x = Tensor(rng.standard_normal((160, 3, 40, 40)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((5, 3, 3, 3)).astype(np.float32), requires_grad=True)
    assert 160 * 5 * 40 * 40 >= 2 * dispatch.PARALLEL_MIN_ELEMENTS
    results = []
    for threads in (1, 2, 3):
        x.grad = w.grad = None
        with config.num_threads(threads):
            y = F.max_pool2d(F.relu(F.conv2d(x, w, padding=1)), 2)
            y.backward(np.ones(y.shape, np.float32))
        results.append((y.data.copy(), x.grad.copy(), w.grad.copy()))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_parallel_for_covers_every_item_once_and_reraises_errors():
    seen = np.zeros(50, int)

    def count(i0, i1, out):
        out[i0:i1] += 1

    with config.num_threads(3):
        cores.parallel_for(count, 50, seen)
    np.testing.assert_array_equal(seen, 1)

    def fail(i0, i1):
        if i0 > 0:
            raise ValueError(f"chunk {i0}")

    with config.num_threads(3), pytest.raises(ValueError, match="chunk"):
        cores.parallel_for(fail, 50)


@pytest.mark.parametrize("count, pieces", [(14, 4), (28, 4), (50, 12), (7, 7), (5, 1), (1000, 8)])
def test_chunk_bounds_cover_the_range_with_the_larger_chunks_first(count, pieces, monkeypatch):
    bounds = cores.chunk_bounds(count, pieces)
    sizes = np.diff(bounds)
    assert bounds[0] == 0 and bounds[-1] == count and len(sizes) == pieces
    assert sizes.max() - sizes.min() <= 1 and list(sizes) == sorted(sizes, reverse=True)
    monkeypatch.setattr(dispatch, "POOL_LARGE_CHUNKS_FIRST", 0)       # the order before (A/B runs)
    old = cores.chunk_bounds(count, pieces)
    assert old == [count * k // pieces for k in range(pieces + 1)]
    assert sorted(np.diff(old)) == sorted(sizes)


@pytest.mark.parametrize("shape_a, shape_b", [
    ((256, 1152), (1152, 196)),       # ResNet-18's 3x3/2 layer at batch 1: 256 rows, one block of 256 before
    ((128, 576), (576, 784)),         # 784 columns
    ((7, 33), (33, 1001)),            # odd extents
    ((3, 9, 20), (3, 20, 5)),         # a batch of products
])
@pytest.mark.parametrize("threads", [2, 3])
def test_matmul_split_over_the_pool_equals_numpy(shape_a, shape_b, threads, rng, monkeypatch):
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    monkeypatch.setattr(dispatch, "SMALL_PRODUCT_MACS", 0)        # split every product
    with config.num_threads(threads):
        np.testing.assert_allclose(cores.matmul(a, b), a @ b, rtol=1e-13, atol=1e-13 * np.abs(a @ b).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_matmuls_side_by_side_equal_one_after_the_other(dtype, threads, rng, monkeypatch):
    """LeNet-5's fc1 backward at batch 256 (gx = gy @ W, gW = gy^T @ x): bit for bit what
    ``matmul`` gives each product, whether the products run side by side or not."""
    g = rng.standard_normal((256, 120)).astype(dtype)
    w = rng.standard_normal((120, 400)).astype(dtype)
    x = rng.standard_normal((256, 400)).astype(dtype)
    expected = [cores.matmul(g, w), cores.matmul(g.T, x)]
    ran = []
    monkeypatch.setattr(cores, "_matmul_pairs", lambda *a: ran.append(a[:2]) or _pairs(*a))
    with config.num_threads(threads):
        got = cores.matmuls([(g, w), (g.T, x)])
    assert len(ran) == (0 if threads == 1 else 2)   # one product per thread
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    with config.num_threads(2):
        small = cores.matmuls([(g[:4], w), (g[:4].T, x[:4])])   # under PARALLEL_MIN_MACS: one after the other
    assert len(ran) == (0 if threads == 1 else 2)
    np.testing.assert_array_equal(small[1], cores.matmul(g[:4].T, x[:4]))


_pairs = cores._matmul_pairs


@pytest.mark.parametrize("extent", [49, 196, 256, 512, 784, 1000, 4096, 25088])
@pytest.mark.parametrize("threads", [2, 3, 4])
def test_matmul_blocks_are_balanced_over_the_threads(extent, threads):
    step = cores._block_step(extent, threads)
    blocks = -(-extent // step)
    assert step <= dispatch.MATMUL_BLOCK
    assert blocks >= threads or step == 1
    if extent % (dispatch.MATMUL_BLOCK * threads) == 0:
        assert step == dispatch.MATMUL_BLOCK                       # large products keep their blocks
    assert extent - (blocks - 1) * step >= step // 2 or blocks > threads   # no sliver of a last block


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape_a, shape_b", [
    ((120, 1), (1, 400)),             # LeNet-5's fc1 weight gradient at batch 1: gy^T @ x
    ((1, 1), (1, 7)), ((5, 1), (1, 1)), ((1, 1), (1, 1)),
    ((3, 6, 1), (3, 1, 9)),           # a batch of outer products
    ((6, 1), (4, 1, 9)),              # broadcast over b's batch
])
def test_matmul_with_inner_dimension_one_has_numpys_bits(shape_a, shape_b, dtype, rng):
    """cores.matmul's outer products (0 + a_i * b_j in two vector passes) against np.matmul bit
    for bit: signed zeros (a zero times a negative number), infinities and NaNs included."""
    a = rng.standard_normal(shape_a).astype(dtype)
    b = rng.standard_normal(shape_b).astype(dtype)
    a.flat[::3] = 0
    b.flat[::4] = -0.0
    if a.size > 2 and b.size > 2:
        a.flat[1], b.flat[2], a.flat[2] = np.inf, np.nan, -np.inf
    with np.errstate(invalid="ignore"):
        expected = np.matmul(a, b)
        got = cores.matmul(a, b)
        transposed = cores.matmul(np.ascontiguousarray(a.swapaxes(-1, -2)).swapaxes(-1, -2), b)   # strided a
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got.view(np.uint8), expected.view(np.uint8))
    np.testing.assert_array_equal(transposed.view(np.uint8), expected.view(np.uint8))


def test_parallel_for_uses_the_configured_threads():
    seen = []

    def record(i0, i1):
        seen.append(threading.get_ident())

    for threads in (1, 2, 4):
        seen.clear()
        with config.num_threads(threads):
            cores.parallel_for(record, 64)
        assert 1 <= len(set(seen)) <= threads
        if threads == 1:
            assert seen == [threading.get_ident()]


# -------------------------------------------------------------------------------- switches
def test_kernel_and_thread_switches_restore_their_values():
    enabled, threads = config.kernels_enabled(), config.get_num_threads()
    with config.kernels(not enabled), config.num_threads(threads + 2):
        assert config.kernels_enabled() is (not enabled)
        assert config.get_num_threads() == threads + 2
    assert config.kernels_enabled() is enabled and config.get_num_threads() == threads
    with pytest.raises(RuntimeError), config.num_threads(1):
        raise RuntimeError("leaves the block")
    assert config.get_num_threads() == threads


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_num_threads_refuses_anything_but_a_positive_int(bad):
    with pytest.raises(ValueError, match=rf"num_threads expects a positive int, got {bad!r}"):
        with config.num_threads(bad):
            pass


def test_kernels_switch_refuses_non_bools():
    with pytest.raises(TypeError, match="kernels expects True or False, got 1"):
        with config.kernels(1):
            pass


def test_environment_variables_give_the_initial_values():
    code = (
        "import warnings; warnings.simplefilter('error')\n"
        "from cnnkit import config; print(config.kernels_enabled(), config.get_num_threads())"
    )

    def start(**env):
        full = {**os.environ, **env}
        result = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=120)
        return result.stdout.strip() or result.stderr.strip().splitlines()[-1]

    assert start(CNNKIT_KERNELS="0", CNNKIT_NUM_THREADS="3") == "False 3"
    assert start(CNNKIT_KERNELS="1", CNNKIT_NUM_THREADS="1") == "True 1"
    assert "CNNKIT_NUM_THREADS expects a positive integer, got 'many'" in start(CNNKIT_NUM_THREADS="many")


def test_relu_kernel_takes_arrays_from_elementwise_min_size_on():
    small = np.ones(dispatch.ELEMENTWISE_MIN_SIZE - 1, np.float32)
    assert not dispatch.relu_kernel_applies(np, small)
    assert dispatch.relu_kernel_applies(np, np.ones(dispatch.ELEMENTWISE_MIN_SIZE, np.float32))
    assert dispatch.relu_kernel_applies(np, np.ones((1, 512, 7, 7), np.float32))        # ResNet-18's last maps
    assert not dispatch.relu_kernel_applies(np, np.ones((2, 4096), np.float32)[:, ::2])  # gaps: NumPy


@pytest.mark.parametrize("make", [
    lambda a: a, lambda a: cnhw(a), lambda a: a[:, :, ::2], lambda a: a.transpose(0, 2, 3, 1), lambda a: a[:1],
])
def test_flat_is_a_view_in_memory_order_or_none(make, rng):
    a = make(rng.standard_normal((2, 3, 4, 5)))
    f = kernels.flat(a)
    if f is None:
        assert not np.shares_memory(np.ravel(a, order="K"), a)
    else:
        assert f.ndim == 1 and f.size == a.size and np.shares_memory(f, a)
        np.testing.assert_array_equal(np.sort(f), np.sort(a, axis=None))
        np.testing.assert_array_equal(f, np.ravel(a, order="K"))


def test_flat_is_a_view_exactly_where_the_elements_are_one_block():
    """``kernels.flat``: the elements in memory order as a 1-D view where a's elements lie in one
    block in some axis order, else None; the test is ravel("K")'s result owning its memory (a
    copy) instead of ``np.shares_memory``, with the same answers."""
    import itertools

    a = np.arange(4 * 5 * 6 * 7, dtype=np.float32).reshape(4, 5, 6, 7)
    views = 0
    for perm in itertools.permutations(range(4)):
        b = a.transpose(perm)
        for index in [(), (slice(None, None, 2),), (slice(None), slice(None, None, -1)), (slice(1, 3),),
                      (Ellipsis, slice(0, 1)), (0,), (slice(None), 0), (Ellipsis, 0)]:
            c = b[index]
            got = kernels.flat(c)
            ravelled = np.ravel(c, order="K")
            expected = ravelled if np.shares_memory(ravelled, c) else None
            assert (got is None) == (expected is None), (perm, index)
            if got is not None:
                views += 1
                assert got.ndim == 1 and np.shares_memory(got, c)
                np.testing.assert_array_equal(got, expected)
    assert views > 24                                                      # both answers were exercised
    assert kernels.flat(np.empty((0, 3), np.float32)).shape == (0,)
    assert kernels.flat(np.ones((), np.float32)).shape == (1,)
