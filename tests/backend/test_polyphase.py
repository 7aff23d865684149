"""Strided convolutions against the NumPy reference and PyTorch: polyphase columns (``Conv2dPolyphaseOp``) and
3x3 stride-2 layers on phase planes (``Conv2dStridedPlanesOp``)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

import cnnkit.functional as F
from cnnkit import Tensor, config
from cnnkit.backend import dispatch, kernels
from cnnkit.backend.kernels import polyphase, strided
from cnnkit.errors import ShapeError
from cnnkit.functional.conv import Conv2dGemmOp, Conv2dIm2colOp, Conv2dPolyphaseOp, Conv2dStridedPlanesOp
from tests.backend.arrays import cnhw, run_conv

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")

TOL = {np.float32: 2e-6, np.float64: 1e-13}

CASES = [
    # (x shape, w shape, stride, pads (top, bottom, left, right))
    ((2, 3, 19, 17), (8, 3, 7, 7), (2, 2), (3, 3, 3, 3)),      # the ResNet stem, odd H and W
    ((1, 3, 16, 16), (4, 3, 7, 7), (2, 2), (3, 3, 3, 3)),      # batch 1, even size
    ((2, 1, 11, 9), (5, 1, 7, 7), (2, 2), (0, 0, 0, 0)),       # one channel, no padding
    ((3, 4, 9, 10), (6, 4, 5, 5), (2, 2), (2, 2, 2, 2)),       # four channels, 5x5
    ((2, 3, 8, 9), (4, 3, 3, 3), (2, 2), (1, 1, 1, 1)),        # 3x3/2
    ((1, 4, 7, 7), (3, 4, 3, 3), (2, 2), (0, 1, 0, 1)),        # "same"-style asymmetric padding
    ((2, 3, 12, 13), (4, 3, 4, 3), (3, 2), (1, 2, 0, 3)),      # unequal strides, padding 0..3
    ((2, 1, 10, 10), (2, 1, 2, 2), (3, 3), (0, 0, 0, 0)),      # stride > kernel: unread phases
    ((1, 3, 5, 6), (2, 3, 7, 7), (2, 2), (3, 3, 3, 3)),        # kernel larger than the input
]




def out_shape(x_shape, w_shape, stride, pads):
    N, _, H, W = x_shape
    F_, _, KH, KW = w_shape
    return (N, F_, (H + pads[0] + pads[1] - KH) // stride[0] + 1, (W + pads[2] + pads[3] - KW) // stride[1] + 1)


@pytest.fixture(params=["direct", "columns"])
def forward_kernel(request, monkeypatch):
    """Run a test with the forward's direct kernel on the phases, then with columns + products."""
    monkeypatch.setattr(dispatch, "POLYPHASE_DIRECT", int(request.param == "direct"))
    return request.param


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
@pytest.mark.parametrize("case", CASES)
def test_polyphase_conv_matches_the_reference_and_pytorch(case, layout, dtype, rng, forward_kernel):
    x_shape, w_shape, stride, pads = case
    x = rng.standard_normal(x_shape).astype(dtype)
    x = cnhw(x) if layout == "cnhw" else x
    w, b = rng.standard_normal(w_shape).astype(dtype), rng.standard_normal(w_shape[0]).astype(dtype)
    gy = rng.standard_normal(out_shape(x_shape, w_shape, stride, pads)).astype(dtype)
    gy = cnhw(gy) if layout == "cnhw" else gy
    args = (stride, pads, (1, 1), 1)
    ours, ref = run_conv(Conv2dPolyphaseOp, x, w, b, args, gy), run_conv(Conv2dIm2colOp, x, w, b, args, gy)
    for a, r in zip(ours, ref):
        assert a.shape == r.shape
        np.testing.assert_allclose(a, r, rtol=0, atol=TOL[dtype] * max(1.0, np.abs(r).max()))
    pt, pb, pl, pr = pads
    X, Wt, B = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(torch.nn.functional.pad(X, (pl, pr, pt, pb)), Wt, B, stride)
    ty.backward(torch.tensor(gy, dtype=torch.float64))
    for a, t in zip(ours, [ty, X.grad, Wt.grad, B.grad]):
        t = t.detach().numpy()
        np.testing.assert_allclose(a, t, rtol=0, atol=10 * TOL[dtype] * max(1.0, np.abs(t).max()))


def test_polyphase_conv_accepts_an_output_gradient_in_any_memory_order(rng):
    x, w = rng.standard_normal((2, 3, 15, 15)), rng.standard_normal((4, 3, 7, 7))
    gy = rng.standard_normal((2, 4, 8, 8, 2))[..., 0]                # neither NCHW nor CNHW memory
    args = ((2, 2), (3, 3, 3, 3), (1, 1), 1)
    ours, ref = run_conv(Conv2dPolyphaseOp, x, w, None, args, gy, (False, True)), run_conv(
        Conv2dIm2colOp, x, w, None, args, gy, (False, True))
    np.testing.assert_allclose(ours[2], ref[2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", [CASES[0], CASES[6]])
def test_polyphase_conv_in_row_blocks_equals_one_block(case, rng):
    x_shape, w_shape, stride, pads = case
    x = rng.standard_normal((5,) + x_shape[1:]).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    out_hw = out_shape(x.shape, w_shape, stride, pads)[2:]
    gy = rng.standard_normal((5, w_shape[0]) + out_hw).astype(np.float32)
    whole = polyphase.conv2d_polyphase(x, w, None, stride, pads, out_hw, block_bytes=2**30)
    rows = polyphase.conv2d_polyphase(x, w, None, stride, pads, out_hw, block_bytes=1)   # one row a block
    g1 = polyphase.conv2d_polyphase_grads(x, w, gy, stride, pads, False, True, block_bytes=2**30)[1]
    g2 = polyphase.conv2d_polyphase_grads(x, w, gy, stride, pads, False, True, block_bytes=1)[1]
    for a, b in [(whole, rows), (g1, g2)]:              # BLAS may round block edges differently
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(a).max())


def test_polyphase_weight_gradient_does_not_depend_on_the_thread_count(rng):
    x = rng.standard_normal((3, 3, 40, 40)).astype(np.float32)
    w = rng.standard_normal((8, 3, 7, 7)).astype(np.float32)
    gy = rng.standard_normal((3, 8, 20, 20)).astype(np.float32)
    args = (x, w, gy, (2, 2), (3, 3, 3, 3), False, True)
    with config.num_threads(1):
        one = polyphase.conv2d_polyphase_grads(*args, block_bytes=1)[1]
    with config.num_threads(2):
        two = polyphase.conv2d_polyphase_grads(*args, block_bytes=1)[1]
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("needs", [(False, True, True), (False, True), (True, False, False), (True, True, False)])
def test_polyphase_conv_computes_only_the_gradients_asked_for(needs, rng):
    x, w, b = rng.standard_normal((2, 3, 9, 9)), rng.standard_normal((4, 3, 7, 7)), rng.standard_normal(4)
    inputs = [Tensor(a, requires_grad=n) for a, n in zip((x, w, b), needs)]
    y = Conv2dPolyphaseOp((2, 2), (3, 3, 3, 3), (1, 1), 1)(*inputs)
    y.backward(np.ones(y.shape))
    for t, need in zip(inputs, needs):
        assert (t.grad is None) == (not need)


def test_polyphase_conv_refuses_dilation_and_groups(rng):
    x, w = rng.standard_normal((1, 4, 9, 9)), rng.standard_normal((4, 2, 3, 3))
    with pytest.raises(ValueError, match=r"handles dilation 1 and groups 1, got dilation \(1, 1\), groups 2"):
        Conv2dPolyphaseOp((2, 2), (1, 1, 1, 1), (1, 1), 2)(x, w)
    with pytest.raises(ValueError, match=r"got dilation \(2, 2\), groups 1"):
        Conv2dPolyphaseOp((2, 2), (1, 1, 1, 1), (2, 2), 1)(x, rng.standard_normal((4, 4, 3, 3)))


@contextlib.contextmanager
def dispatch_switch(name, value):
    before = getattr(dispatch, name)
    setattr(dispatch, name, value)
    try:
        yield
    finally:
        setattr(dispatch, name, before)


def algorithm(x_shape, w_shape, stride=(2, 2), pads=(3, 3, 3, 3), dilation=(1, 1), groups=1, dtype=np.float32):
    return dispatch.conv2d_algorithm(np, dtype, x_shape, w_shape, stride, pads, dilation, groups)


def test_dispatch_sends_the_resnet_stem_and_only_strided_few_channel_layers_to_polyphase():
    stem = ((8, 3, 224, 224), (64, 3, 7, 7))
    assert algorithm(*stem) == "polyphase"
    assert algorithm((1, 3, 224, 224), (64, 3, 7, 7)) == "polyphase"                 # batch 1
    assert algorithm(*stem, dtype=np.float64) == "polyphase"
    assert algorithm((128, 16, 32, 32), (32, 16, 3, 3), pads=(1,) * 4) == "strided"    # ResNet-20's 16->32 ...
    with dispatch_switch("STRIDED_PLANES", 0):
        assert algorithm((128, 16, 32, 32), (32, 16, 3, 3), pads=(1,) * 4) == "polyphase"  # ... before
    assert algorithm((8, 17, 224, 224), (64, 17, 7, 7)) == "gemm"                      # too many channels
    assert algorithm((8, 64, 56, 56), (128, 64, 3, 3), pads=(1,) * 4) == "gemm"         # ResNet-18's 3x3/2
    assert algorithm((8, 3, 56, 56), (16, 3, 1, 1), pads=(0,) * 4) == "gemm"            # 1x1: one phase of four
    assert algorithm((128, 3, 32, 32), (16, 3, 3, 3), pads=(0,) * 4) == "gemm"          # too little work per image
    assert algorithm(*stem, stride=(1, 1)) != "polyphase"
    assert algorithm(*stem, dilation=(2, 2)) == "gemm"
    assert algorithm((8, 4, 224, 224), (64, 2, 7, 7), groups=2) == "gemm"
    assert algorithm(*stem, dtype=np.float16) == "im2col"
    with config.kernels(False):
        assert algorithm(*stem) == "im2col"
    assert 3 <= dispatch.POLYPHASE_MAX_CHANNELS < 64


def test_conv2d_runs_the_stem_on_polyphase_with_kernels_and_on_im2col_without(rng):
    x = Tensor(rng.standard_normal((1, 3, 64, 64)).astype(np.float32))
    w = Tensor(rng.standard_normal((64, 3, 7, 7)).astype(np.float32), requires_grad=True)
    y = F.conv2d(x, w, stride=2, padding=3)
    assert type(y.creator) is Conv2dPolyphaseOp
    with config.kernels(False):
        ref = F.conv2d(x, w, stride=2, padding=3)
    assert type(ref.creator) is Conv2dIm2colOp
    np.testing.assert_allclose(y.data, ref.data, rtol=0, atol=2e-6 * np.abs(ref.data).max())
    small = F.conv2d(Tensor(rng.standard_normal((1, 3, 16, 16)).astype(np.float32)), w, stride=2, padding=3)
    assert type(small.creator) is Conv2dGemmOp                        # 0.7M multiply-adds per image


def test_polyphase_conv_in_image_blocks_equals_one_block(rng, monkeypatch):
    x = rng.standard_normal((5, 3, 17, 15)).astype(np.float64)
    w, b = rng.standard_normal((4, 3, 7, 7)), rng.standard_normal(4)
    gy = rng.standard_normal((5, 4, 9, 8))
    args = (x, w, None, (2, 2), (3, 3, 3, 3), (9, 8))
    whole = polyphase.conv2d_polyphase(*args)
    g_whole = polyphase.conv2d_polyphase_grads(x, w, gy, (2, 2), (3, 3, 3, 3), False, True)[1]
    monkeypatch.setattr(dispatch, "COLUMNS_BLOCK_BYTES", 1)         # phases of one image at a time
    np.testing.assert_allclose(polyphase.conv2d_polyphase(*args), whole, rtol=0, atol=1e-12)
    g_images = polyphase.conv2d_polyphase_grads(x, w, gy, (2, 2), (3, 3, 3, 3), False, True)[1]
    np.testing.assert_allclose(g_images, g_whole, rtol=1e-12, atol=1e-12)
    ref = Conv2dIm2colOp((2, 2), (3, 3, 3, 3), (1, 1), 1)(x, w, b).data
    y = Conv2dPolyphaseOp((2, 2), (3, 3, 3, 3), (1, 1), 1)(x, w, b).data
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_polyphase_direct_forward_on_the_resnet_stem_matches_columns_and_pytorch(dtype, rng, monkeypatch):
    x = rng.standard_normal((1, 3, 224, 224)).astype(dtype)
    w = (rng.standard_normal((64, 3, 7, 7)) / 12).astype(dtype)
    b = rng.standard_normal(64).astype(dtype)
    args = (x, w, b, (2, 2), (3, 3, 3, 3), (112, 112))
    direct = polyphase.conv2d_polyphase(*args)
    monkeypatch.setattr(dispatch, "POLYPHASE_DIRECT", 0)
    columns = polyphase.conv2d_polyphase(*args)
    expected = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                          torch.from_numpy(b).double(), stride=2, padding=3).numpy()
    scale = np.abs(expected).max()
    np.testing.assert_allclose(direct.transpose(1, 0, 2, 3), expected, rtol=0, atol=TOL[dtype] * scale)
    np.testing.assert_allclose(direct, columns, rtol=0, atol=TOL[dtype] * scale)


@pytest.mark.parametrize("band_rows, threads", [(8, 1), (8, 2), (8, 3), (1, 2), (3, 3), (1000, 2)])
def test_polyphase_direct_forward_does_not_depend_on_bands_or_threads(band_rows, threads, rng, monkeypatch):
    """Each output is one band's, summed tap by tap in a fixed order: bit for bit the same
    whatever the band height and the number of threads."""
    x = cnhw(rng.standard_normal((3, 3, 41, 38)).astype(np.float32))
    w, b = rng.standard_normal((13, 3, 7, 7)).astype(np.float32), rng.standard_normal(13).astype(np.float32)
    args = (x, w, b, (2, 2), (3, 3, 3, 3), (21, 19))
    with config.num_threads(1):
        expected = polyphase.conv2d_polyphase(*args)
    monkeypatch.setattr(dispatch, "POLYPHASE_DIRECT_BAND_ROWS", band_rows)
    monkeypatch.setattr(dispatch, "PARALLEL_MIN_MACS", 1)             # every band its own piece
    with config.num_threads(threads):
        np.testing.assert_array_equal(polyphase.conv2d_polyphase(*args), expected)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_polyphase_direct_forward_with_kept_tap_offsets_equals_offsets_per_call(threads, rng, monkeypatch):
    """``POLYPHASE_OFFSETS_CACHE``: the kept offsets are the ones computed per call, and the
    forward gives the same bits with them, for two geometries one after the other (the second
    does not get the first's offsets) and for the first again."""
    layers = [((2, 3, 19, 17), (8, 3, 7, 7), (2, 2), (3, 3, 3, 3)),
              ((1, 4, 12, 13), (5, 4, 4, 3), (3, 2), (1, 2, 0, 3))]
    arrays = [(rng.standard_normal(xs).astype(np.float32), rng.standard_normal(ws).astype(np.float32),
               rng.standard_normal(ws[0]).astype(np.float32), st, pads) for xs, ws, st, pads in layers]

    def forwards():
        return [polyphase.conv2d_polyphase(x, w, b, st, pads, out_shape(x.shape, w.shape, st, pads)[2:])
                for x, w, b, st, pads in arrays + arrays[:1]]

    monkeypatch.setattr(polyphase, "_offsets", {})
    with config.num_threads(threads):
        monkeypatch.setattr(dispatch, "POLYPHASE_OFFSETS_CACHE", 0)
        per_call = forwards()
        assert polyphase._offsets == {}
        monkeypatch.setattr(dispatch, "POLYPHASE_OFFSETS_CACHE", 1)
        kept = forwards()
    assert len(polyphase._offsets) == 2
    for a, b in zip(kept, per_call):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------- 3x3 stride 2 on phase planes

STRIDED_CASES = [
    # (x shape, F): 3x3, stride 2, padding 1; H, W even, rows and phases whole float32 vectors
    ((3, 16, 32, 32), 32),          # ResNet-20's 16->32 layer, odd batch
    ((5, 32, 16, 16), 64),          # its 32->64 layer
    ((1, 5, 8, 32), 8),             # batch 1, odd channels, H != W
    ((2, 3, 12, 16), 16),           # phases of 6x8: three vectors each, a row across a vector
    ((19, 17, 4, 32), 24),          # more images than a weight-gradient group; 16 + 1 channels, 16 + 8 filters
]


def strided_arrays(rng, x_shape, F_, dtype, layout):
    N, C, H, W = x_shape
    x = rng.standard_normal(x_shape).astype(dtype)
    w = (rng.standard_normal((F_, C, 3, 3)) / np.sqrt(9 * C)).astype(dtype)
    b = rng.standard_normal(F_).astype(dtype)
    gy = rng.standard_normal((N, F_, H // 2, W // 2)).astype(dtype)
    if layout == "cnhw":
        x, gy = cnhw(x), cnhw(gy)
    return x, w, b, gy


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
@pytest.mark.parametrize("case", STRIDED_CASES)
def test_strided_planes_conv_matches_the_reference_and_pytorch(case, layout, dtype, rng):
    x_shape, F_ = case
    x, w, b, gy = strided_arrays(rng, x_shape, F_, dtype, layout)
    args = ((2, 2), (1, 1, 1, 1), (1, 1), 1)
    assert dispatch.strided_planes_applies(x.shape, w.shape, *args, np.dtype(dtype).itemsize)
    ours, ref = run_conv(Conv2dStridedPlanesOp, x, w, b, args, gy), run_conv(Conv2dIm2colOp, x, w, b, args, gy)
    for a, r in zip(ours, ref):
        assert a.shape == r.shape
        np.testing.assert_allclose(a, r, rtol=0, atol=TOL[dtype] * max(1.0, np.abs(r).max()))
    X, Wt, B = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(X, Wt, B, stride=2, padding=1)
    ty.backward(torch.tensor(gy, dtype=torch.float64))
    for a, t in zip(ours, [ty, X.grad, Wt.grad, B.grad]):
        t = t.detach().numpy()
        np.testing.assert_allclose(a, t, rtol=0, atol=10 * TOL[dtype] * max(1.0, np.abs(t).max()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_strided_planes_do_not_depend_on_the_thread_count(dtype, rng, monkeypatch):
    """Each output of the forward and of gx is one image's, summed in a fixed order; gW's groups are
    fixed: the same bits on 1, 2 and 3 threads."""
    x, w, b, gy = strided_arrays(rng, (37, 8, 8, 32), 16, dtype, "cnhw")
    monkeypatch.setattr(dispatch, "PARALLEL_MIN_MACS", 1)             # every image its own piece
    results = []
    for threads in (1, 2, 3):
        with config.num_threads(threads):
            results.append([strided.conv2d_strided(x, w, b), *strided.conv2d_strided_grads(x, w, gy, True, True)])
    for other in results[1:]:
        for a, r in zip(other, results[0]):
            np.testing.assert_array_equal(a, r)


def test_strided_planes_accept_an_output_gradient_in_any_memory_order(rng):
    x, w, b, _ = strided_arrays(rng, (2, 4, 8, 16), 8, np.float64, "nchw")
    gy = rng.standard_normal((2, 8, 4, 8, 2))[..., 0]                # neither NCHW nor CNHW memory
    args = ((2, 2), (1, 1, 1, 1), (1, 1), 1)
    ours, ref = run_conv(Conv2dStridedPlanesOp, x, w, b, args, gy), run_conv(Conv2dIm2colOp, x, w, b, args, gy)
    for a, r in zip(ours[1:], ref[1:]):
        np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12)


def test_strided_planes_take_an_empty_batch(rng):
    x, w, b, _ = strided_arrays(rng, (0, 4, 8, 16), 8, np.float32, "cnhw")
    ours = run_conv(Conv2dStridedPlanesOp, x, w, b, ((2, 2), (1, 1, 1, 1), (1, 1), 1), np.zeros((0, 8, 4, 8), np.float32))
    assert [a.shape for a in ours] == [(0, 8, 4, 8), (0, 4, 8, 16), (8, 4, 3, 3), (8,)]
    assert not ours[2].any() and not ours[3].any()


@pytest.mark.parametrize("needs", [(False, True, True), (False, True), (True, False, False), (True, True, False)])
def test_strided_planes_compute_only_the_gradients_asked_for(needs, rng):
    x, w, b, _ = strided_arrays(rng, (2, 3, 8, 16), 8, np.float32, "nchw")
    inputs = [Tensor(a, requires_grad=n) for a, n in zip((x, w, b), needs)]
    y = Conv2dStridedPlanesOp((2, 2), (1, 1, 1, 1), (1, 1), 1)(*inputs)
    y.backward(np.ones(y.shape, np.float32))
    for t, need in zip(inputs, needs):
        assert (t.grad is None) == (not need)


def test_strided_planes_refuse_other_geometries(rng):
    x, w = rng.standard_normal((1, 4, 8, 16)), rng.standard_normal((8, 4, 3, 3))
    with pytest.raises(ShapeError, match=r"Conv2dStridedPlanesOp handles 3x3 kernels .* got input \(1, 4, 8, 16\), "
                                         r"weight \(8, 4, 3, 3\), stride \(2, 2\), padding \(0, 0, 0, 0\)"):
        Conv2dStridedPlanesOp((2, 2), (0, 0, 0, 0), (1, 1), 1)(x, w)
    with pytest.raises(ShapeError, match=r"got input \(1, 4, 9, 16\)"):
        Conv2dStridedPlanesOp((2, 2), (1, 1, 1, 1), (1, 1), 1)(rng.standard_normal((1, 4, 9, 16)), w)
    with pytest.raises(ShapeError, match=r"at most 64 input channels.* got input \(1, 65, 8, 16\)"):
        Conv2dStridedPlanesOp((2, 2), (1, 1, 1, 1), (1, 1), 1)(rng.standard_normal((1, 65, 8, 16)),
                                                             rng.standard_normal((8, 65, 3, 3)))


def test_dispatch_sends_only_3x3_stride_2_layers_of_whole_vector_phases_to_strided_planes():
    resnet20 = [((128, 16, 32, 32), (32, 16, 3, 3)), ((128, 32, 16, 16), (64, 32, 3, 3))]
    for x_shape, w_shape in resnet20:
        for dtype in (np.float32, np.float64):
            assert algorithm(x_shape, w_shape, pads=(1,) * 4, dtype=dtype) == "strided"
        assert algorithm((1,) + x_shape[1:], w_shape, pads=(1,) * 4) == "strided"          # batch 1
    layer = ((8, 16, 32, 32), (32, 16, 3, 3))
    assert algorithm(*layer, pads=(0,) * 4) != "strided"                                  # padding 0
    assert algorithm((8, 16, 31, 32), layer[1], pads=(1,) * 4) != "strided"               # odd H
    assert algorithm((8, 16, 32, 24), layer[1], pads=(1,) * 4) != "strided"               # rows of 1.5 vectors
    assert algorithm((8, 16, 32, 24), layer[1], pads=(1,) * 4, dtype=np.float64) == "strided"  # 3 float64 vectors
    assert algorithm((8, 16, 6, 16), layer[1], pads=(1,) * 4) != "strided"                # phases of 3x8 pixels
    assert algorithm(layer[0], (12, 16, 3, 3), pads=(1,) * 4) != "strided"                # F not a multiple of 8
    assert algorithm(layer[0], (32, 16, 5, 5), pads=(1,) * 4) != "strided"
    assert algorithm(*layer, stride=(2, 1), pads=(1,) * 4) != "strided"
    assert algorithm((8, 128, 32, 32), (128, 128, 3, 3), pads=(1,) * 4) == "gemm"          # beyond the channels measured
    assert algorithm(*layer, pads=(1,) * 4, dilation=(2, 2)) == "gemm"
    with dispatch_switch("STRIDED_PLANES", 0):
        assert algorithm(*layer, pads=(1,) * 4) == "polyphase"
    with config.kernels(False):
        assert algorithm(*layer, pads=(1,) * 4) == "im2col"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, padding, expected", [
    ((3, 16, 32, 32), 1, Conv2dStridedPlanesOp),      # ResNet-20's layer
    ((2, 16, 32, 32), 0, Conv2dGemmOp),               # padding 0 (15x15 outputs: below polyphase's work)
    ((1, 16, 31, 30), 1, Conv2dPolyphaseOp),          # odd sizes
    ((3, 32, 15, 16), 1, Conv2dGemmOp),               # odd H, 32 channels
])
def test_conv2d_3x3_stride_2_gives_pytorch_results_on_every_path(x_shape, padding, expected, dtype, rng):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = (rng.standard_normal((2 * x_shape[1], x_shape[1], 3, 3)) / np.sqrt(9 * x_shape[1])).astype(dtype)
    xs, ws = Tensor(cnhw(x), requires_grad=True), Tensor(w, requires_grad=True)
    y = F.conv2d(xs, ws, stride=2, padding=padding)
    assert type(y.creator) is expected
    gy = rng.standard_normal(y.shape).astype(dtype)
    y.backward(gy)
    X, Wt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w))
    ty = torch.nn.functional.conv2d(X, Wt, stride=2, padding=padding)
    ty.backward(torch.tensor(gy, dtype=torch.float64))
    for a, t in zip([y.data, xs.grad, ws.grad], [ty, X.grad, Wt.grad]):
        t = t.detach().numpy()
        np.testing.assert_allclose(a, t, rtol=0, atol=10 * TOL[dtype] * max(1.0, np.abs(t).max()))
