"""The compiled kernels (``cnnkit.functional.kernels``) against the NumPy reference path.

Every kernel-backed op is run twice on the same inputs: once as dispatched (kernels on)
and once with the kernels switched off, which runs the pure-NumPy code the op keeps as
its reference. Convolutions must agree to float rounding (the kernels sum in another
order); max pooling and ReLU must agree exactly, including which of several tied maxima
receives the gradient and what NaN and inf do.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit.functional as F
from cnnkit import Tensor
from cnnkit.functional import kernels

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")

TOL = {np.float32: (1e-4, 1e-5), np.float64: (1e-10, 1e-12)}


def assert_rounding_close(actual, expected, dtype):
    """Equal up to float rounding: atol scales with the largest |value| (sums cancel)."""
    rtol, atol = TOL[dtype]
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale)


def run(fn, arrays, grad_seed, reference: bool, monkeypatch, needs=None):
    """Forward and backward of fn(*tensors): (output, [input grads]) as NumPy arrays."""
    with monkeypatch.context() as m:
        if reference:
            m.setattr(kernels, "AVAILABLE", False)
        needs = needs or [True] * len(arrays)
        tensors = [Tensor(a.copy(), requires_grad=r) for a, r in zip(arrays, needs)]
        y = fn(*tensors)
        gy = np.random.default_rng(grad_seed).standard_normal(y.shape).astype(y.dtype)
        y.backward(gy)
        return y.data.copy(), [t.grad for t in tensors]


def cnhw(a):
    """The same values as a, in channel-major memory (how conv/pool outputs are stored)."""
    return np.ascontiguousarray(a.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)


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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
def test_direct_conv2d_matches_im2col_reference(case, layout, dtype, rng, monkeypatch):
    N, C, Fo, H, W, KH, KW, padding = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    x = cnhw(x) if layout == "cnhw" else x
    w = rng.standard_normal((Fo, C, KH, KW)).astype(dtype)
    b = rng.standard_normal(Fo).astype(dtype)
    assert kernels.direct_conv_applies(np, x, w, (1, 1), (1, 1), 1)

    def conv(x, w, b):
        return F.conv2d(x, w, b, padding=padding)

    y, grads = run(conv, [x, w, b], 1, False, monkeypatch)
    y_ref, grads_ref = run(conv, [x, w, b], 1, True, monkeypatch)
    assert_rounding_close(y, y_ref, dtype)
    for g, g_ref in zip(grads, grads_ref):
        assert_rounding_close(g, g_ref, dtype)


@pytest.mark.parametrize("needs", [(False, True, True), (True, False, False), (True, True, False)])
def test_direct_conv2d_computes_only_the_gradients_asked_for(needs, rng, monkeypatch):
    x, w = rng.standard_normal((3, 2, 6, 6)), rng.standard_normal((4, 2, 3, 3))
    b = rng.standard_normal(4)

    def conv(x, w, b):
        return F.conv2d(x, w, b, padding=1)

    _, grads = run(conv, [x, w, b], 2, False, monkeypatch, needs=list(needs))
    _, grads_ref = run(conv, [x, w, b], 2, True, monkeypatch, needs=list(needs))
    for g, g_ref, need in zip(grads, grads_ref, needs):
        assert (g is None) == (not need)
        if need:
            assert_rounding_close(g, g_ref, np.float64)


def test_direct_conv2d_is_skipped_where_im2col_is_faster_or_needed():
    x = np.zeros((2, 64, 8, 8), np.float32)
    big = np.zeros((64, 64, 3, 3), np.float32)
    small = np.zeros((8, 64, 3, 3), np.float32)
    assert not kernels.direct_conv_applies(np, x, big, (1, 1), (1, 1), 1)
    assert kernels.direct_conv_applies(np, x, small, (1, 1), (1, 1), 1)
    assert not kernels.direct_conv_applies(np, x, small, (2, 2), (1, 1), 1)
    assert not kernels.direct_conv_applies(np, x, small, (1, 1), (2, 2), 1)
    assert not kernels.direct_conv_applies(np, x, small[:, :32], (1, 1), (1, 1), 2)
    assert not kernels.direct_conv_applies(np, x, small[:, :, :1, :1], (1, 1), (1, 1), 1)
    assert not kernels.direct_conv_applies(np, x.astype(np.float16), small, (1, 1), (1, 1), 1)


# ----------------------------------------------------------------------------- max pooling
POOL_CASES = [
    # (H, W, kernel_size, stride, padding, dilation, ceil_mode)
    (28, 28, 2, None, 0, 1, False),            # LeNet-5: the 2x2 fast path
    (7, 9, 2, 2, 0, 1, False),                 # 2x2 with an odd last row and column
    (7, 9, 2, 2, 0, 1, True),                  # ceil_mode: overhanging windows
    (9, 8, 3, 2, 1, 1, False),                 # ResNet's stem pooling
    (8, 10, (3, 2), (1, 2), (1, 1), 1, False), # overlapping windows, rectangular
    (11, 11, 3, 2, 1, 2, True),                # dilation and ceil_mode
    (5, 5, 5, 1, 2, 1, False),                 # windows mostly padding
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
def test_fused_max_pool2d_equals_reference_exactly_with_ties(case, layout, dtype, rng, monkeypatch):
    H, W, k, s, p, d, ceil = case
    # small integers: many exact ties inside windows, as on MNIST's black background
    x = rng.integers(-2, 3, size=(3, 4, H, W)).astype(dtype)
    x = cnhw(x) if layout == "cnhw" else x

    def pool(x):
        return F.max_pool2d(x, k, s, p, d, ceil)

    y, (gx,) = run(pool, [x], 3, False, monkeypatch)
    y_ref, (gx_ref,) = run(pool, [x], 3, True, monkeypatch)
    np.testing.assert_array_equal(y, y_ref)
    # the same elements receive gradient (the first maximum of each window) ...
    np.testing.assert_array_equal(gx != 0, gx_ref != 0)
    # ... and where windows overlap, an element's gradients add up in another order
    assert_rounding_close(gx, gx_ref, dtype)
    if s is None or s == k:
        np.testing.assert_array_equal(gx, gx_ref)


@pytest.mark.parametrize("kernel_size, stride, padding", [(2, 2, 0), (3, 1, 1)])
def test_fused_max_pool2d_propagates_nan_and_inf_like_the_reference(kernel_size, stride, padding, rng, monkeypatch):
    x = rng.standard_normal((2, 3, 6, 6))
    x[0, 0, 0, 0], x[0, 1, 2, 3], x[1, 2, 4, 4] = np.nan, np.inf, -np.inf
    x[1, 0] = -np.inf

    def pool(x):
        return F.max_pool2d(x, kernel_size, stride, padding)

    y, (gx,) = run(pool, [x], 4, False, monkeypatch)
    y_ref, (gx_ref,) = run(pool, [x], 4, True, monkeypatch)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(gx != 0, gx_ref != 0)
    assert_rounding_close(gx, gx_ref, np.float64)  # overlapping windows add in another order


# ------------------------------------------------------------------------------------ relu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
def test_parallel_relu_equals_reference_exactly(layout, dtype, rng, monkeypatch):
    x = rng.standard_normal((16, 8, 16, 16)).astype(dtype)      # above ELEMENTWISE_MIN_SIZE
    x[0, 0, 0, :4] = [np.nan, np.inf, -np.inf, 0.0]
    x = cnhw(x) if layout == "cnhw" else x
    assert kernels.relu_applies(np, x)
    y, (gx,) = run(F.relu, [x], 5, False, monkeypatch)
    y_ref, (gx_ref,) = run(F.relu, [x], 5, True, monkeypatch)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(gx, gx_ref)


def test_relu_output_keeps_the_input_memory_layout(rng):
    x = cnhw(rng.standard_normal((16, 8, 16, 16)).astype(np.float32))
    y = F.relu(Tensor(x)).data
    assert y.strides == x.strides


# --------------------------------------------------------------------------------- threads
def test_results_do_not_depend_on_the_number_of_threads(rng, monkeypatch):
    monkeypatch.setattr(kernels, "PARALLEL_MIN_MACS", 1)        # split even tiny work
    monkeypatch.setattr(kernels, "PARALLEL_MIN_ELEMENTS", 1)
    monkeypatch.setattr(kernels, "ELEMENTWISE_MIN_SIZE", 1)
    x = Tensor(rng.standard_normal((40, 3, 12, 12)).astype(np.float32), requires_grad=True)  # 3 image groups
    w = Tensor(rng.standard_normal((5, 3, 3, 3)).astype(np.float32), requires_grad=True)
    results = []
    for threads in (1, 2, 3):
        monkeypatch.setattr(kernels, "NUM_THREADS", threads)
        x.grad = w.grad = None
        y = F.max_pool2d(F.relu(F.conv2d(x, w, padding=1)), 2)
        y.backward(np.ones(y.shape, np.float32))
        results.append((y.data.copy(), x.grad.copy(), w.grad.copy()))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_parallel_for_covers_every_item_once_and_reraises_errors(monkeypatch):
    monkeypatch.setattr(kernels, "NUM_THREADS", 3)
    seen = np.zeros(50, int)

    def count(i0, i1, out):
        out[i0:i1] += 1

    kernels.parallel_for(count, 50, seen)
    np.testing.assert_array_equal(seen, 1)

    def fail(i0, i1):
        if i0 > 0:
            raise ValueError(f"chunk {i0}")

    with pytest.raises(ValueError, match="chunk"):
        kernels.parallel_for(fail, 50)
