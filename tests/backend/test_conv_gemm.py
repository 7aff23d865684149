"""Compiled im2col + GEMM convolution (``Conv2dGemmOp``) against the NumPy reference and PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cnnkit.functional as F
from cnnkit import Tensor, config
from cnnkit.backend import dispatch, kernels
from cnnkit.backend.kernels import im2col as im2col_kernels
from cnnkit.functional.conv import Conv2dGemmOp, Conv2dIm2colOp
from tests.backend.arrays import cnhw, run_conv

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")

TOL = {np.float32: 2e-6, np.float64: 1e-13}

CASES = [
    # (x shape, w shape, stride, pads (top, bottom, left, right), dilation, groups)
    ((2, 3, 9, 8), (4, 3, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),       # ResNet's stride-2 3x3
    ((2, 3, 13, 11), (5, 3, 7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1),     # the ResNet stem
    ((3, 5, 7, 7), (4, 5, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),       # pointwise: no columns
    ((2, 4, 7, 7), (6, 4, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),       # ResNet's downsample
    ((2, 4, 9, 8), (6, 2, 3, 2), (1, 2), (2, 0, 1, 1), (2, 1), 2),       # groups, dilation, asymmetric
    ((2, 3, 5, 5), (2, 3, 2, 2), (3, 3), (0, 0, 0, 0), (1, 1), 1),       # stride > kernel: gaps
    ((1, 2, 4, 6), (3, 2, 3, 3), (1, 1), (2, 2, 2, 2), (1, 1), 1),       # padding up to the kernel
]




@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
@pytest.mark.parametrize("case", CASES)
def test_gemm_conv_matches_the_reference_and_pytorch(case, layout, dtype, rng):
    x_shape, w_shape, stride, pads, dilation, groups = case
    x = rng.standard_normal(x_shape).astype(dtype)
    x = cnhw(x) if layout == "cnhw" else x
    w, b = rng.standard_normal(w_shape).astype(dtype), rng.standard_normal(w_shape[0]).astype(dtype)
    args = (stride, pads, dilation, groups)
    y_shape = Conv2dIm2colOp(*args)(x, w, b).shape
    gy = rng.standard_normal(y_shape).astype(dtype)
    ours, ref = run_conv(Conv2dGemmOp, x, w, b, args, gy), run_conv(Conv2dIm2colOp, x, w, b, args, gy)
    for a, r in zip(ours, ref):
        np.testing.assert_allclose(a, r, rtol=0, atol=TOL[dtype] * max(1.0, np.abs(r).max()))
    pt, pb, pl, pr = pads
    X, Wt, B = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(torch.nn.functional.pad(X, (pl, pr, pt, pb)), Wt, B, stride, 0, dilation, groups)
    ty.backward(torch.tensor(gy, dtype=torch.float64))
    for a, t in zip(ours, [ty, X.grad, Wt.grad, B.grad]):
        t = t.detach().numpy()
        np.testing.assert_allclose(a, t, rtol=0, atol=10 * TOL[dtype] * max(1.0, np.abs(t).max()))


@pytest.mark.parametrize("case", [CASES[0], CASES[2]])
def test_gemm_conv_in_image_blocks_equals_one_block(case, rng, monkeypatch):
    monkeypatch.setattr(dispatch, "GEMM_ROWS_MAX_PIXELS", 0)      # the image blocks, not the row split
    x_shape, w_shape, stride, pads, dilation, groups = case
    x = cnhw(rng.standard_normal((5,) + x_shape[1:]).astype(np.float32))
    w = rng.standard_normal(w_shape).astype(np.float32)
    C, H, W = x.shape[1:]
    OH = (H + pads[0] + pads[1] - w_shape[2]) // stride[0] + 1
    OW = (W + pads[2] + pads[3] - w_shape[3]) // stride[1] + 1
    gy = rng.standard_normal((5, w_shape[0], OH, OW)).astype(np.float32)
    args = (stride, pads, dilation, groups)
    whole = im2col_kernels.conv2d_gemm(x, w, None, *args, (OH, OW))
    blocked = im2col_kernels.conv2d_gemm(x, w, None, *args, (OH, OW), block_bytes=1)
    g1 = im2col_kernels.conv2d_gemm_grads(x, w, gy, *args, True, True)
    g2 = im2col_kernels.conv2d_gemm_grads(x, w, gy, *args, True, True, block_bytes=1)
    for a, b in zip([whole, *g1], [blocked, *g2]):    # BLAS may round block edges differently
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(a).max())


@pytest.mark.parametrize("needs", [(False, True, True), (True, False, False), (True, True, False)])
def test_gemm_conv_computes_only_the_gradients_asked_for(needs, rng):
    x, w, b = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    grads = run_conv(Conv2dGemmOp, x, w, b, ((2, 2), (1, 1, 1, 1), (1, 1), 1), np.ones((2, 4, 4, 4)), needs)[1:]
    for g, need in zip(grads, needs):
        assert (g is None) == (not need)


def test_conv2d_dispatches_strided_grouped_and_pointwise_convolutions_to_gemm(rng):
    x = Tensor(rng.standard_normal((2, 4, 8, 8)).astype(np.float32), requires_grad=True)
    assert type(F.conv2d(x, rng.standard_normal((8, 4, 3, 3)).astype(np.float32), stride=2).creator) is Conv2dGemmOp
    assert type(F.conv2d(x, rng.standard_normal((8, 2, 3, 3)).astype(np.float32), groups=2).creator) is Conv2dGemmOp
    assert type(F.conv2d(x, rng.standard_normal((8, 4, 1, 1)).astype(np.float32)).creator) is Conv2dGemmOp
    with config.kernels(False):
        assert type(F.conv2d(x, rng.standard_normal((8, 4, 1, 1)).astype(np.float32)).creator) is Conv2dIm2colOp


# ------------------------------------------------------------- the split by output rows (batch 1)
ROW_CASES = [c for c in CASES if c[5] == 1 and (c[1][2:] != (1, 1) or c[2] != (1, 1))] + [
    ((1, 3, 11, 10), (4, 3, 3, 3), (2, 1), (1, 2, 0, 1), (2, 3), 1),    # dilated, asymmetric, strided rows
]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ROW_CASES)
def test_gemm_conv_split_by_output_rows_matches_the_image_blocks_and_pytorch(case, dtype, threads, rng, monkeypatch):
    """One image of few output pixels: each thread builds the columns of its output rows and multiplies them."""
    x_shape, w_shape, stride, pads, dilation, groups = case
    x = rng.standard_normal((1,) + x_shape[1:]).astype(dtype)
    w, b = rng.standard_normal(w_shape).astype(dtype), rng.standard_normal(w_shape[0]).astype(dtype)
    C, H, W = x.shape[1:]
    OH = (H + pads[0] + pads[1] - dilation[0] * (w_shape[2] - 1) - 1) // stride[0] + 1
    OW = (W + pads[2] + pads[3] - dilation[1] * (w_shape[3] - 1) - 1) // stride[1] + 1
    args = (stride, pads, dilation, groups)
    monkeypatch.setattr(dispatch, "PARALLEL_MIN_MACS", 1)         # split even these small shapes
    monkeypatch.setattr(dispatch, "SMALL_PRODUCT_MACS", 0)
    calls = []
    original = im2col_kernels._output_rows
    monkeypatch.setattr(im2col_kernels, "_output_rows", lambda *a: calls.append(a[:2]) or original(*a))
    with config.num_threads(threads):
        by_rows = im2col_kernels.conv2d_gemm(x, w, b, *args, (OH, OW))
        monkeypatch.setattr(dispatch, "GEMM_ROWS_MAX_PIXELS", 0)
        by_blocks = im2col_kernels.conv2d_gemm(x, w, b, *args, (OH, OW))
    assert sorted(calls)[0][0] == 0 and max(i1 for _, i1 in calls) == OH   # every output row, once
    assert len(calls) == min(threads * dispatch.ROWS_PER_THREAD, OH) or threads == 1
    assert sum(i1 - i0 for i0, i1 in calls) == OH
    np.testing.assert_allclose(by_rows, by_blocks, rtol=0, atol=TOL[dtype] * np.abs(by_blocks).max())
    pt, pb, pl, pr = pads
    ty = torch.nn.functional.conv2d(torch.nn.functional.pad(torch.tensor(x, dtype=torch.float64), (pl, pr, pt, pb)),
                                    torch.tensor(w, dtype=torch.float64), torch.tensor(b, dtype=torch.float64),
                                    stride, 0, dilation, groups).numpy()
    np.testing.assert_allclose(by_rows.transpose(1, 0, 2, 3), ty, rtol=0, atol=10 * TOL[dtype] * np.abs(ty).max())


def test_gemm_row_split_in_training_gives_pytorch_gradients(rng, monkeypatch):
    """F.conv2d on a 3x3/2 layer at batch 1 (ResNet's strided layers): the forward by rows, the
    backward as always; float64 against PyTorch."""
    x = rng.standard_normal((1, 8, 15, 13))
    w, b = rng.standard_normal((6, 8, 3, 3)), rng.standard_normal(6)
    gy = rng.standard_normal((1, 6, 8, 7))
    monkeypatch.setattr(dispatch, "SMALL_PRODUCT_MACS", 0)        # the row split on this small layer
    assert dispatch.gemm_by_rows(1, 8 * 7, w.nbytes, 8 * 9 * 8 * 7 * 8, 6 * 8 * 9 * 8 * 7)
    xs, ws, bs = (Tensor(a, requires_grad=True) for a in (x, w, b))
    with config.num_threads(2):
        y = F.conv2d(xs, ws, bs, stride=2, padding=1)
        y.backward(gy)
    assert type(y.creator) is Conv2dGemmOp
    X, Wt, B = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(X, Wt, B, stride=2, padding=1)
    ty.backward(torch.tensor(gy))
    for ours, theirs in zip([y.data, xs.grad, ws.grad, bs.grad], [ty, X.grad, Wt.grad, B.grad]):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_gemm_row_split_applies_to_one_image_of_few_pixels_large_products_and_small_weights():
    assert dispatch.gemm_by_rows(1, 784, 128 * 576 * 4, 576 * 784 * 4, 128 * 576 * 784)   # ResNet-18 3x3/2, batch 1
    assert not dispatch.gemm_by_rows(1, 784, 128 * 64 * 4, 64 * 784 * 4, 128 * 64 * 784)  # its 1x1/2 shortcut: 6.4M
    assert not dispatch.gemm_by_rows(1, 49, 512 * 2304 * 4, 2304 * 49 * 4, 512 * 2304 * 49)  # 4.7 MB of weights
    assert not dispatch.gemm_by_rows(8, 784, 128 * 576 * 4, 576 * 784 * 4, 8 * 128 * 576 * 784)  # batch 8


# ------------------------------------------------------- the split by input channels (batch 1)
CHANNEL_CASES = [
    ((1, 7, 9, 8), (5, 7, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),          # 3x3 "same"
    ((1, 6, 11, 10), (9, 6, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),        # ResNet's 3x3/2
    ((1, 3, 10, 9), (4, 3, 3, 2), (1, 2), (2, 0, 1, 1), (2, 1)),         # 3 channels in 2 groups, dilated
    ((1, 6, 11, 10), (9, 6, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),        # ResNet's 1x1/2 shortcut
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CHANNEL_CASES)
def test_gemm_conv_split_by_channel_groups_has_the_same_bits_on_1_to_3_threads(case, dtype, rng, monkeypatch):
    """One image whose weights are larger than its columns (ResNet-18's 14x14 and 7x7 layers at
    batch 1): each thread builds the columns of a group of input channels and multiplies them by
    W's matching columns; the groups' products are summed in a fixed order. The same bits on any
    thread count; within rounding of one product (the image blocks) and of PyTorch."""
    x_shape, w_shape, stride, pads, dilation = case
    x = rng.standard_normal(x_shape).astype(dtype)
    w, b = rng.standard_normal(w_shape).astype(dtype), rng.standard_normal(w_shape[0]).astype(dtype)
    C, H, W = x.shape[1:]
    OH = (H + pads[0] + pads[1] - dilation[0] * (w_shape[2] - 1) - 1) // stride[0] + 1
    OW = (W + pads[2] + pads[3] - dilation[1] * (w_shape[3] - 1) - 1) // stride[1] + 1
    args = (stride, pads, dilation, 1)
    monkeypatch.setattr(dispatch, "SMALL_PRODUCT_MACS", 0)        # these small shapes count as large
    monkeypatch.setattr(dispatch, "GEMM_CHANNEL_GROUPS_MIN_MACS", 0)
    monkeypatch.setattr(dispatch, "gemm_by_rows", lambda *a: False)
    calls = []
    original = im2col_kernels._channel_groups
    monkeypatch.setattr(im2col_kernels, "_channel_groups", lambda *a: calls.append(a[:2]) or original(*a))
    results = []
    for threads in (1, 2, 3):
        with config.num_threads(threads):
            results.append(im2col_kernels.conv2d_gemm(x, w, b, *args, (OH, OW)))
    assert sorted(calls)[:2] == [(0, 1), (1, 2)] or (0, 2) in calls   # both groups, on one thread or two
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
    monkeypatch.setattr(dispatch, "GEMM_CHANNEL_GROUPS", 0)       # one product (the image blocks)
    one = im2col_kernels.conv2d_gemm(x, w, b, *args, (OH, OW))
    np.testing.assert_allclose(results[0], one, rtol=0, atol=TOL[dtype] * np.abs(one).max())
    pt, pb, pl, pr = pads
    ty = torch.nn.functional.conv2d(torch.nn.functional.pad(torch.tensor(x, dtype=torch.float64), (pl, pr, pt, pb)),
                                    torch.tensor(w, dtype=torch.float64), torch.tensor(b, dtype=torch.float64),
                                    stride, 0, dilation).numpy()
    np.testing.assert_allclose(results[0].transpose(1, 0, 2, 3), ty, rtol=0, atol=10 * TOL[dtype] * np.abs(ty).max())


def test_gemm_channel_groups_apply_to_one_image_of_few_pixels_and_large_products(monkeypatch):
    assert dispatch.gemm_by_channels(1, 196, 256, 256 * 2304 * 196)            # ResNet-18's 256x14x14, batch 1
    assert dispatch.gemm_by_channels(1, 49, 512, 512 * 4608 * 49)              # its 512x7x7
    assert dispatch.gemm_by_channels(1, 784, 64, 128 * 64 * 784)               # its 1x1/2 shortcuts: 6.4M
    assert not dispatch.gemm_by_channels(1, 784, 64, 2**22)                    # at most GEMM_CHANNEL_GROUPS_MIN_MACS
    assert not dispatch.gemm_by_channels(8, 49, 512, 8 * 512 * 4608 * 49)      # batch 8
    assert not dispatch.gemm_by_channels(1, 56 * 56, 64, 64 * 576 * 56 * 56)   # more pixels than GEMM_ROWS_MAX_PIXELS
    monkeypatch.setattr(dispatch, "GEMM_CHANNEL_GROUPS", 0)
    assert not dispatch.gemm_by_channels(1, 49, 512, 512 * 4608 * 49)


def test_resnet18_14x14_layer_at_batch_1_in_channel_groups_matches_pytorch_in_training(rng):
    """F.conv2d on ResNet-18's 256x14x14 layer at batch 1 with gradients: the forward in channel
    groups (F(2x2) by filter blocks off: it takes this shape), the backward as always; float64
    against PyTorch."""
    x, w = rng.standard_normal((1, 256, 14, 14)), rng.standard_normal((256, 256, 3, 3)) / 48
    gy = rng.standard_normal((1, 256, 14, 14))
    xs, ws = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
    calls = []
    original = im2col_kernels._forward_by_channels
    with pytest.MonkeyPatch.context() as m, config.num_threads(2):
        m.setattr(im2col_kernels, "_forward_by_channels", lambda *a: calls.append(1) or original(*a))
        m.setattr(dispatch, "WINOGRAD_FILTER_BLOCK", 0)
        y = F.conv2d(xs, ws, padding=1)
        y.backward(gy)
    assert calls and type(y.creator) is Conv2dGemmOp
    X, Wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.conv2d(X, Wt, padding=1)
    ty.backward(torch.tensor(gy))
    for ours, theirs in zip([y.data, xs.grad, ws.grad], [ty, X.grad, Wt.grad]):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-11, atol=1e-11 * np.abs(theirs.detach().numpy()).max())


COLUMN_CASES = [
    # (N, C, H, W), (KH, KW), stride, dilation, (top, left) padding, (OH, OW)
    ((1, 512, 7, 7), (3, 3), (1, 1), (1, 1), (1, 1), (7, 7)),           # ResNet-18's 512x7x7 at batch 1
    ((2, 3, 9, 8), (3, 3), (2, 2), (1, 1), (1, 1), (5, 4)),             # 3x3/2
    ((2, 3, 13, 11), (7, 7), (2, 2), (1, 1), (3, 3), (7, 6)),           # the stem
    ((2, 4, 9, 8), (3, 2), (1, 2), (2, 1), (2, 1), (7, 5)),             # dilated, asymmetric
    ((2, 3, 5, 5), (2, 2), (3, 3), (1, 1), (0, 0), (2, 2)),             # stride > kernel: unread inputs
    ((1, 2, 4, 6), (3, 3), (1, 1), (1, 1), (2, 2), (6, 8)),             # padding up to the kernel
    ((1, 2, 5, 5), (3, 3), (2, 2), (1, 1), (1, 1), (4, 4)),             # ceil mode's overhang: bottom, right
    ((1, 3, 11, 10), (3, 3), (2, 1), (2, 3), (-3, 0), (2, 8)),          # a row block: negative top padding
    ((1, 3, 11, 10), (3, 3), (2, 1), (1, 1), (-20, 1), (2, 10)),        # a block that reads no input row
]


@pytest.mark.parametrize("threads", [1, 2])
def test_gemm_conv_is_the_same_with_either_column_kernel(threads, rng, monkeypatch):
    """A whole Conv2dGemmOp forward and backward (image blocks), and a forward split by output
    rows, with the padded columns give the bits of the per-row kernel."""
    x, w = rng.standard_normal((2, 6, 11, 9)).astype(np.float32), rng.standard_normal((5, 6, 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    args = ((1, 1), (1, 1, 1, 1), (1, 1), 1)                          # stride 1: the padded kernel's case
    gy = rng.standard_normal(Conv2dIm2colOp(*args)(x, w, b).shape).astype(np.float32)

    def both_paths(padded):
        with monkeypatch.context() as m, config.num_threads(threads):
            m.setattr(dispatch, "IM2COL_PADDED", padded)
            blocks = run_conv(Conv2dGemmOp, x, w, b, args, gy)
            m.setattr(dispatch, "PARALLEL_MIN_MACS", 1)                # split even this small shape by rows
            m.setattr(dispatch, "SMALL_PRODUCT_MACS", 0)
            rows = im2col_kernels.conv2d_gemm(x[:1], w, b, *args[:3], 1, (11, 9))
        return [np.asarray(a).tobytes() for a in blocks] + [rows.tobytes()]

    assert both_paths(1) == both_paths(0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_1_columns_split_over_the_threads_with_the_same_bits(dtype, rng):
    """ResNet-18's 256-channel 14x14 layer at batch 1: its columns (451,584 entries) are built by
    two threads under IM2COL_MIN_ELEMENTS; the result equals one thread's bit for bit and PyTorch."""
    calls = []
    original = im2col_kernels.parallel_for

    def spy(fn, count, *args, grain=1, **kwargs):
        calls.append(count // max(grain, 1))
        return original(fn, count, *args, grain=grain, **kwargs)

    x = rng.standard_normal((1, 256, 14, 14)).astype(dtype)
    w = (rng.standard_normal((256, 256, 3, 3)) / 48).astype(dtype)
    geometry = ((3, 3), (1, 1), (1, 1), (1, 1), (14, 14))
    planes, sn, sc = kernels.as_planes(x)
    cols = {}
    with pytest.MonkeyPatch.context() as m:
        m.setattr(im2col_kernels, "parallel_for", spy)
        for threads in (1, 2, 3):
            with config.num_threads(threads):
                cols[threads] = np.empty((256 * 9, 196), dtype)
                im2col_kernels._im2col(planes, sn, sc, 0, 1, 256, w.shape, geometry, cols[threads])
    assert max(calls) >= 2                                      # the split applies at this size
    np.testing.assert_array_equal(cols[2], cols[1])
    np.testing.assert_array_equal(cols[3], cols[1])
    with config.num_threads(2):
        y = F.conv2d(Tensor(x), Tensor(w), padding=1).data
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-4 if dtype == np.float32 else 1e-10)


# ------------------------------------------------- stride-2 columns (dispatch.IM2COL_STRIDE2)
STRIDE2_COLUMN_CASES = [
    # (N, C, H, W), (KH, KW), stride, dilation, (top, left) padding, (OH, OW)
    ((1, 3, 56, 56), (3, 3), (2, 2), (1, 1), (1, 1), (28, 28)),         # ResNet-18's 3x3/2 at 56x56
    ((1, 4, 14, 14), (1, 1), (2, 2), (1, 1), (0, 0), (7, 7)),           # a 1x1/2 shortcut (not dispatched)
    ((2, 3, 9, 8), (3, 3), (2, 2), (1, 1), (1, 1), (5, 4)),             # 3x3/2, odd height
    ((2, 3, 8, 9), (3, 3), (2, 2), (1, 1), (1, 1), (4, 5)),             # odd width: phase 0 one longer
    ((2, 3, 13, 11), (7, 7), (2, 2), (1, 1), (3, 3), (7, 6)),           # the stem (odd padding)
    ((2, 4, 9, 10), (3, 2), (1, 2), (2, 1), (2, 1), (7, 5)),            # dilated, asymmetric, row stride 1
    ((2, 3, 9, 12), (3, 3), (2, 2), (2, 3), (2, 2), (5, 5)),            # dilation 3 across the columns
    ((1, 2, 5, 5), (3, 3), (2, 2), (1, 1), (1, 1), (4, 4)),             # ceil mode's overhang: bottom, right
    ((1, 2, 4, 6), (3, 3), (2, 2), (1, 1), (2, 2), (3, 4)),             # padding up to the kernel
    ((1, 2, 5, 7), (1, 3), (3, 2), (1, 1), (0, 4), (2, 6)),             # padding beyond the kernel: zero columns
    ((1, 3, 11, 10), (3, 3), (2, 2), (1, 1), (-3, 0), (2, 5)),          # a row block: negative top padding
    ((1, 3, 11, 10), (3, 3), (2, 2), (1, 1), (-20, 1), (2, 5)),         # a block that reads no input row
    ((2, 3, 7, 7), (1, 1), (2, 2), (1, 1), (1, 1), (4, 4)),             # 1x1/2 with padding
    ((0, 3, 9, 8), (3, 3), (2, 2), (1, 1), (1, 1), (5, 4)),             # an empty batch: no columns
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
@pytest.mark.parametrize("kernel, case", [("im2col_rows_padded", c) for c in COLUMN_CASES]
                         + [("im2col_rows_stride2", c) for c in STRIDE2_COLUMN_CASES])
def test_column_kernels_equal_the_row_kernels_bit_for_bit(kernel, case, layout, dtype, rng):
    """im2col_rows_padded (stride-1 kernels beyond 1x1, dispatch.IM2COL_PADDED) and
    im2col_rows_stride2 (a column stride of 2, dispatch.IM2COL_STRIDE2) copy the same values as
    im2col_rows for any geometry: every entry, padding zeros included, bit for bit; for any
    channel range."""
    x_shape, (KH, KW), (SH, SW), (DH, DW), (pt, pl), (OH, OW) = case
    x = rng.standard_normal(x_shape).astype(dtype)
    x.reshape(-1)[::7] = -0.0                                          # signed zeros are copied, not made
    x = cnhw(x) if layout == "cnhw" else x
    planes, sn, sc = kernels.as_planes(x)
    N, C = x_shape[:2]
    for c0, c1 in [(0, C), (C // 2, C)]:
        rows = np.full((C * KH * KW, N * OH * OW), np.nan, dtype)
        other = rows.copy()
        args = (planes, sn, sc, 0, N, KH, KW, SH, SW, DH, DW, pt, pl, OH, OW)
        im2col_kernels.im2col_rows(c0, c1, *args, rows)
        getattr(im2col_kernels, kernel)(c0, c1, *args, other)
        assert rows.tobytes() == other.tobytes()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_gemm_conv_is_the_same_with_the_stride2_columns(threads, rng, monkeypatch):
    """Conv2dGemmOp forward and backward in image blocks, the forward split by output rows and
    by channel groups, on 3x3/2 and 1x1/2 layers: the stride-2 column kernel gives the bits
    of the per-row kernel."""
    x = rng.standard_normal((2, 6, 13, 11)).astype(np.float32)
    layers = [(rng.standard_normal((5, 6, 3, 3)).astype(np.float32), (1, 1, 1, 1), (7, 6)),
              (rng.standard_normal((5, 6, 1, 1)).astype(np.float32), (0, 0, 0, 0), (7, 6))]
    b = rng.standard_normal(5).astype(np.float32)

    def all_paths(on):
        out = []
        with monkeypatch.context() as m, config.num_threads(threads):
            m.setattr(dispatch, "IM2COL_STRIDE2", on)
            for w, pads, out_hw in layers:
                args = ((2, 2), pads, (1, 1), 1)
                gy = rng.standard_normal((2, 5) + out_hw).astype(np.float32)
                out += [np.asarray(a).tobytes() for a in run_conv(Conv2dGemmOp, x, w, b, args, gy)]
                with monkeypatch.context() as s:
                    s.setattr(dispatch, "PARALLEL_MIN_MACS", 1)      # split even this small shape by rows
                    s.setattr(dispatch, "SMALL_PRODUCT_MACS", 0)
                    s.setattr(dispatch, "gemm_by_rows", lambda *a: True)
                    out.append(im2col_kernels.conv2d_gemm(x[:1], w, b, *args[:3], 1, out_hw).tobytes())
                    s.setattr(dispatch, "gemm_by_rows", lambda *a: False)
                    s.setattr(dispatch, "GEMM_CHANNEL_GROUPS_MIN_MACS", 0)
                    out.append(im2col_kernels.conv2d_gemm(x[:1], w, b, *args[:3], 1, out_hw).tobytes())
        return out

    state = rng.bit_generator.state
    on = all_paths(1)
    rng.bit_generator.state = state
    assert on == all_paths(0)


def test_resnet18_strided_layers_with_stride2_columns_match_pytorch(rng):
    """ResNet-18's 3x3/2 64->128 layer and 1x1/2 shortcut at batch 1 through F.conv2d (the row
    split and the channel groups, both on the stride-2 columns), against PyTorch in float64."""
    x = rng.standard_normal((1, 64, 56, 56)).astype(np.float32)
    for w, padding in [((rng.standard_normal((128, 64, 3, 3)) / 24).astype(np.float32), 1),
                       ((rng.standard_normal((128, 64, 1, 1)) / 8).astype(np.float32), 0)]:
        with config.num_threads(2):
            y = F.conv2d(Tensor(x), Tensor(w), stride=2, padding=padding)
        assert dispatch.conv2d_algorithm(np, x.dtype, x.shape, w.shape, (2, 2), (padding,) * 4, (1, 1), 1) == "gemm"
        ref = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                         stride=2, padding=padding).numpy()
        np.testing.assert_allclose(y.data, ref, rtol=0, atol=2e-6 * np.abs(ref).max())


@pytest.mark.parametrize("on", [0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stride2_conv_of_an_empty_batch(on, dtype, rng, monkeypatch):
    """N = 0 through the GEMM convolution with either column kernel: an empty output and input
    gradient, zero weight and bias gradients, as PyTorch gives."""
    monkeypatch.setattr(dispatch, "IM2COL_STRIDE2", on)
    x = np.zeros((0, 3, 9, 8), dtype)
    w, b = rng.standard_normal((4, 3, 3, 3)).astype(dtype), rng.standard_normal(4).astype(dtype)
    y, gx, gw, gb = run_conv(Conv2dGemmOp, x, w, b, ((2, 2), (1, 1, 1, 1), (1, 1), 1), np.zeros((0, 4, 5, 4), dtype))
    X, Wt, B = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(X, Wt, B, stride=2, padding=1)
    ty.sum().backward()
    assert y.shape == tuple(ty.shape) and gx.shape == x.shape and y.dtype == gx.dtype == dtype
    np.testing.assert_array_equal(gw, Wt.grad.numpy())
    np.testing.assert_array_equal(gb, B.grad.numpy())
