"""Winograd convolution (``Conv2dWinogradOp``) against the im2col reference, PyTorch and float64.

Winograd's transforms add rounding error in float32 (F(4x4, 3x3) more than F(2x2, 3x3)):
the error budget is stated and tested here against a float64 direct convolution, at
channel counts of real networks, where the sums are longest.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cnnkit.functional as F
from cnnkit import Tensor, config
from cnnkit.backend import dispatch, kernels
from cnnkit.backend.kernels import batchnorm, winograd
from cnnkit.backend.prepack import ConvWeightPack, frozen
from cnnkit.functional.conv import Conv2dIm2colOp, Conv2dWinogradOp

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")

# fp32 relative error budgets (max |error| / max |exact|) of forward and gradients.
BUDGET = {2: 2e-6, 4: 1e-4}
TOL64 = 1e-11


def rel_err(actual, exact) -> float:
    return float(np.abs(np.asarray(actual, np.float64) - exact).max() / np.abs(exact).max())


def torch_conv(x, w, b, pads, gy):
    """float64 forward and gradients by PyTorch: the exact values for the error checks."""
    pt, pb, pl, pr = pads
    X = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    Wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    B = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.conv2d(torch.nn.functional.pad(X, (pl, pr, pt, pb)), Wt, B)
    y.backward(torch.tensor(gy, dtype=torch.float64))
    return y.detach().numpy(), X.grad.numpy(), Wt.grad.numpy(), B.grad.numpy()


def run_op(op, x, w, b, gy):
    xs = [Tensor(a.copy(), requires_grad=True) for a in (x, w, b)]
    y = op(*xs)
    y.backward(gy)
    return y.data, [t.grad for t in xs]


CASES = [
    # (N, C, F, H, W, pads (top, bottom, left, right))
    (2, 3, 4, 8, 8, (1, 1, 1, 1)),             # whole tiles
    (3, 5, 7, 11, 9, (1, 1, 1, 1)),            # odd sizes: partial tiles at the bottom/right
    (1, 4, 6, 5, 13, (0, 0, 0, 0)),            # no padding
    (2, 3, 5, 7, 10, (2, 2, 2, 2)),            # the largest padding the path takes
    (2, 3, 5, 7, 10, (2, 0, 1, 2)),            # asymmetric
    (1, 2, 3, 3, 3, (1, 1, 1, 1)),             # a map smaller than one F(4x4) tile
]


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("case", CASES)
def test_winograd_matches_pytorch_and_the_im2col_reference_in_float64(m, case, rng):
    N, C, Fo, H, W, pads = case
    x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((Fo, C, 3, 3)), rng.standard_normal(Fo)
    gy = rng.standard_normal((N, Fo, H + pads[0] + pads[1] - 2, W + pads[2] + pads[3] - 2))
    exact = torch_conv(x, w, b, pads, gy)
    y, grads = run_op(Conv2dWinogradOp((1, 1), pads, (1, 1), 1, m=m), x, w, b, gy)
    y_ref, grads_ref = run_op(Conv2dIm2colOp((1, 1), pads, (1, 1), 1), x, w, b, gy)
    for got, ref, ex in zip([y, *grads], [y_ref, *grads_ref], exact):
        assert rel_err(got, ex) < TOL64
        assert rel_err(ref, ex) < TOL64


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("case", CASES[:3])
def test_winograd_float32_within_its_error_budget_on_small_shapes(m, case, rng):
    N, C, Fo, H, W, pads = case
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((Fo, C, 3, 3)).astype(np.float32)
    b = rng.standard_normal(Fo).astype(np.float32)
    gy = rng.standard_normal((N, Fo, H + pads[0] + pads[1] - 2, W + pads[2] + pads[3] - 2)).astype(np.float32)
    exact = torch_conv(x, w, b, pads, gy)
    y, grads = run_op(Conv2dWinogradOp((1, 1), pads, (1, 1), 1, m=m), x, w, b, gy)
    assert y.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
    for got, ex in zip([y, *grads], exact):
        assert rel_err(got, ex) < BUDGET[m]


@pytest.mark.parametrize("m", [2, 4])
def test_winograd_float32_error_at_network_channel_counts(m, rng):
    """The stated budgets hold where the sums are long: 256 channels, like ResNet's layer3."""
    x = rng.standard_normal((2, 256, 14, 14)).astype(np.float32)
    w = (rng.standard_normal((64, 256, 3, 3)) / np.sqrt(256 * 9)).astype(np.float32)
    gy = rng.standard_normal((2, 64, 14, 14)).astype(np.float32)
    pads = (1, 1, 1, 1)
    y = winograd.conv2d_winograd(x, w, None, pads, m).transpose(1, 0, 2, 3)
    gx, gw = winograd.conv2d_winograd_grads(x, w, gy, pads, m, True, True)
    ey, egx, egw, _ = torch_conv(x, w, np.zeros(64), pads, gy)
    errors = [rel_err(y, ey), rel_err(gx, egx), rel_err(gw, egw)]
    assert max(errors) < BUDGET[m], errors


@pytest.mark.parametrize("by_rows", [True, False])
@pytest.mark.parametrize("m", [2, 4])
def test_winograd_in_image_blocks_equals_one_block(m, by_rows, rng, monkeypatch):
    monkeypatch.setattr(dispatch, "WINOGRAD_ROWS_MAX_ELEMENTS", 10**9 if by_rows else 0)
    x = rng.standard_normal((5, 3, 9, 7)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((5, 4, 9, 7)).astype(np.float32)
    pads = (1, 1, 1, 1)
    whole = winograd.conv2d_winograd(x, w, None, pads, m)
    blocked = winograd.conv2d_winograd(x, w, None, pads, m, block_bytes=1)   # one image per block
    np.testing.assert_array_equal(whole, blocked)
    for a, b in zip(winograd.conv2d_winograd_grads(x, w, gy, pads, m, True, True),
                    winograd.conv2d_winograd_grads(x, w, gy, pads, m, True, True, block_bytes=1)):
        assert rel_err(a, b) < BUDGET[m]                         # gw sums in another order


@pytest.mark.parametrize("needs", [(False, True, True), (True, False, False), (True, True, False)])
def test_winograd_computes_only_the_gradients_asked_for(needs, rng):
    x, w, b = rng.standard_normal((2, 4, 6, 6)), rng.standard_normal((5, 4, 3, 3)), rng.standard_normal(5)
    xs = [Tensor(a, requires_grad=r) for a, r in zip((x, w, b), needs)]
    y = Conv2dWinogradOp((1, 1), (1, 1, 1, 1), (1, 1), 1, m=4)(*xs)
    y.backward(np.ones(y.shape))
    for t, need in zip(xs, needs):
        assert (t.grad is None) == (not need)


def test_winograd_reads_channel_major_inputs_and_gradients(rng):
    """Conv and pool outputs are (N, C, H, W) views of (C, N, H, W) memory: no copy needed."""
    xc = rng.standard_normal((4, 2, 9, 9)).astype(np.float32)       # (C, N, H, W)
    x = xc.transpose(1, 0, 2, 3)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((6, 2, 9, 9)).astype(np.float32).transpose(1, 0, 2, 3)
    exact = torch_conv(x, w, np.zeros(6), (1, 1, 1, 1), gy)
    y, (gx, gw, _) = run_op(Conv2dWinogradOp((1, 1), (1, 1, 1, 1), (1, 1), 1, m=4), x, w, np.zeros(6, np.float32), gy)
    for got, ex in zip([y, gx, gw], exact):
        assert rel_err(got, ex) < BUDGET[4]


def test_conv2d_dispatches_3x3_stride1_layers_with_enough_channels_and_tiles_to_winograd(rng, monkeypatch):
    C = 64                                                       # above the direct kernel's sizes

    def choice(n, hw, stride=(1, 1), pads=(1, 1, 1, 1), channels=C):
        w_shape = (channels, channels, 3, 3)
        return dispatch.conv2d_algorithm(np, np.float32, (n, channels, hw, hw), w_shape, stride, pads, (1, 1), 1)

    assert choice(8, 32) == "winograd4"                          # 8 * 8 * 8 = 512 tiles of 4x4
    assert choice(8, 12) == "winograd2"                          # 72 tiles of 4x4, 288 of 2x2
    assert choice(1, 10) == "gemm"                               # too few tiles either way
    assert choice(1, 28, channels=128) == choice(1, 56) == "winograd4"   # batch 1, 49-196 4x4 tiles: by filter blocks
    assert choice(1, 14, channels=256) == "winograd2"            # 16 tiles of 4x4; F(2x2) by filter blocks
    with monkeypatch.context() as patch:
        patch.setattr(dispatch, "WINOGRAD4_FILTER_BLOCK", 0)
        assert choice(1, 28, channels=128) == choice(1, 56) == "winograd2"
    assert choice(8, 8) == "direct"                              # small maps: the direct kernel
    assert choice(32, 8) == "direct"                             # 128 tiles: F(4x4) not yet
    assert choice(64, 8) == "direct"                             # the blocked direct kernel at any batch
    assert choice(128, 6) == "direct"
    with monkeypatch.context() as patch:                         # the rows kernel yields to F(4x4) ...
        patch.setattr(dispatch, "DIRECT_CONV_BLOCKED", 0)
        assert choice(64, 8) == "winograd4"                      # ... from 256 tiles on
        assert choice(128, 6) == "winograd4"
    assert choice(8, 32, stride=(2, 2)) == "strided"             # 3x3/2 on the phases as planes
    assert choice(8, 30, stride=(2, 2)) == "gemm"                # rows not whole vectors
    assert choice(8, 32, pads=(3, 3, 3, 3)) == "gemm"
    assert choice(8, 32, channels=16) == "direct"
    assert choice(8, 32, channels=512) == "winograd2"            # 512x512 filter banks: F(2x2)
    with config.kernels(False):
        assert choice(8, 32) == "im2col"
    x = Tensor(rng.standard_normal((8, C, 32, 32)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((C, C, 3, 3)).astype(np.float32))
    assert type(F.conv2d(x, w, padding=1).creator) is Conv2dWinogradOp


def test_winograd_op_refuses_geometry_it_does_not_handle(rng):
    x, w = rng.standard_normal((1, 2, 6, 6)), rng.standard_normal((3, 2, 3, 3))
    with pytest.raises(ValueError, match=r"Conv2dWinogradOp handles 3x3 kernels.*stride \(2, 2\)"):
        Conv2dWinogradOp((2, 2), (1, 1, 1, 1), (1, 1), 1)(x, w)
    with pytest.raises(ValueError, match=r"padding <= 2.*padding \(3, 3, 3, 3\)"):
        Conv2dWinogradOp((1, 1), (3, 3, 3, 3), (1, 1), 1)(x, w)
    with pytest.raises(ValueError, match=r"got kernel \(5, 5\)"):
        Conv2dWinogradOp((1, 1), (1, 1, 1, 1), (1, 1), 1)(x, rng.standard_normal((3, 2, 5, 5)))


# ------------------------------------------------------------- the split by tile rows (batch 1)
ROW_CASES = [
    # (N, C, F, H, W, pads): partial tiles, odd sizes, images several, a map of one tile row
    (1, 5, 7, 11, 9, (1, 1, 1, 1)),
    (2, 3, 4, 13, 13, (2, 2, 2, 2)),
    (3, 4, 6, 7, 10, (2, 0, 1, 2)),
    (1, 3, 5, 3, 8, (1, 1, 1, 1)),
]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("case", ROW_CASES)
def test_winograd_split_by_tile_rows_matches_the_phase_split_and_pytorch(case, m, dtype, threads, rng, monkeypatch):
    N, C, Fo, H, W, pads = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((Fo, C, 3, 3)).astype(dtype)
    b = rng.standard_normal(Fo).astype(dtype)
    OH, OW = H + pads[0] + pads[1] - 2, W + pads[2] + pads[3] - 2
    U = winograd.winograd_filters(w, m)
    monkeypatch.setattr(dispatch, "PARALLEL_MIN_MACS", 1)     # split even these small shapes
    with config.num_threads(threads):
        by_rows = winograd._forward_by_rows(x, U, b, pads[0], pads[2], OH, OW, m)
        by_phases = winograd._forward(x, U, b, pads[0], pads[2], OH, OW, m)
    exact = torch_conv(x, w, b, pads, np.zeros((N, Fo, OH, OW)))[0]
    tol = TOL64 if dtype == np.float64 else BUDGET[m]
    assert by_rows.dtype == dtype
    assert rel_err(by_rows.transpose(1, 0, 2, 3), exact) < tol
    assert rel_err(by_rows, by_phases) < tol


def _record_ranges(monkeypatch, kernel: str) -> list:
    """The (first, end) ranges that winograd's parallel ``kernel`` is called with, from now on."""
    calls = []
    original = getattr(winograd, kernel)

    def spy(i0, i1, *args):
        calls.append((i0, i1))
        original(i0, i1, *args)

    monkeypatch.setattr(winograd, kernel, spy)
    return calls


def test_winograd_forward_at_batch_1_runs_by_tile_rows_and_matches_pytorch(rng, monkeypatch):
    """ResNet-18's 64-channel 56x56 layer at batch 1 (196 tiles of 4x4) takes the row split,
    through F.conv2d with prepacked filters as an optimized model runs it, where filter blocks
    are off (on, it takes them: ``test_winograd_f4_by_filter_blocks_...``); batch 8 does not."""
    monkeypatch.setattr(dispatch, "WINOGRAD4_FILTER_BLOCK", 0)
    calls = _record_ranges(monkeypatch, "_tile_rows")
    x = rng.standard_normal((1, 64, 56, 56)).astype(np.float32)
    w = (rng.standard_normal((64, 64, 3, 3)) / 24).astype(np.float32)
    pack = ConvWeightPack(frozen(w))
    with config.num_threads(2):
        y = F.conv2d(Tensor(x), Tensor(pack.weight), padding=1, prepacked=pack).data
    assert sorted(r for pair in calls for r in pair)[0] == 0 and max(r1 for _, r1 in calls) == 14
    assert len(calls) >= 2                                        # both threads' pieces
    exact = torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64),
                                       padding=1).numpy()
    assert rel_err(y, exact) < BUDGET[4]
    calls.clear()
    with config.num_threads(2):
        F.conv2d(Tensor(np.repeat(x, 8, axis=0)), Tensor(pack.weight), padding=1, prepacked=pack)
    assert calls == []


def test_winograd_row_split_applies_to_small_inputs_and_small_filter_banks():
    assert dispatch.winograd_by_rows(64 * 56 * 56, 36 * 64 * 64 * 4)        # ResNet-18 56x56, batch 1, F(4x4)
    assert dispatch.winograd_by_rows(256 * 14 * 14, 16 * 256 * 256 * 4)     # 14x14, batch 1, F(2x2)
    assert not dispatch.winograd_by_rows(2 * 64 * 56 * 56, 36 * 64 * 64 * 4)   # batch 2
    assert not dispatch.winograd_by_rows(128 * 64 * 8 * 8, 36 * 64 * 64 * 4)   # ResNet-20 at batch 128
    assert not dispatch.winograd_by_rows(512 * 7 * 7, 36 * 512 * 512 * 4)   # 512x512 F(4x4): 37.7 MB of filters


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("bank", [(1, 1), (5, 7), (17, 31), (64, 64)])   # 31*17: pairs past one block of 256
def test_winograd_filter_kernel_matches_the_product_and_float64(bank, m, dtype, threads, rng, monkeypatch):
    """U = G w G^T by the compiled kernel equals the kron(G, G) product (tap order of
    summation: within a few float units; equal bits on this machine's OpenBLAS) and float64's
    G w G^T, on any thread count with the same bits."""
    Fo, C = bank
    w = rng.standard_normal((Fo, C, 3, 3)).astype(dtype)
    monkeypatch.setattr(dispatch, "WINOGRAD_FILTER_KERNEL_MAX_BYTES", 0)
    product = winograd.winograd_filters(w, m)
    monkeypatch.setattr(dispatch, "WINOGRAD_FILTER_KERNEL_MAX_BYTES", 2**30)
    monkeypatch.setattr(dispatch, "WINOGRAD_FILTER_MIN_ELEMENTS", 64)     # split even these banks
    with config.num_threads(1):
        one = winograd.winograd_filters(w, m)
    with config.num_threads(threads):
        U = winograd.winograd_filters(w, m)
    np.testing.assert_array_equal(U, one)
    G = winograd._G[m]
    exact = np.einsum("ik,fckl,jl->ijfc", G, w.astype(np.float64), G).reshape(U.shape)
    eps = np.finfo(dtype).eps
    assert U.dtype == dtype and U.shape == ((m + 2) ** 2, Fo, C)
    assert np.abs(U - product).max() <= 8 * eps * np.abs(exact).max()
    assert np.abs(U - exact).max() <= 8 * eps * np.abs(exact).max()


def test_winograd_filter_kernel_runs_inside_the_op_on_small_banks_only(rng, monkeypatch):
    """Banks whose U fits WINOGRAD_FILTER_KERNEL_MAX_BYTES take the kernel, larger ones the product."""
    calls = _record_ranges(monkeypatch, "_filter_block")
    small = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    winograd.winograd_filters(small, 2)
    assert calls == [(0, 32)]
    monkeypatch.setattr(dispatch, "WINOGRAD_FILTER_KERNEL_MAX_BYTES", 16 * 32 * 4 - 4)
    winograd.winograd_filters(small, 2)
    assert calls == [(0, 32)]


ROWWISE_CASES = [
    # (N, C, H, W, pads): whole tiles, partial tiles, no / largest / asymmetric padding, wider
    # than one vector of tiles (TW > 16 at F(2x2)), ResNet-18's 28x28 map
    (1, 3, 8, 8, (1, 1, 1, 1)),
    (3, 5, 11, 9, (1, 1, 1, 1)),
    (1, 4, 5, 13, (0, 0, 0, 0)),
    (2, 3, 7, 10, (2, 2, 2, 2)),
    (2, 3, 7, 10, (2, 0, 1, 2)),
    (1, 2, 3, 3, (1, 1, 1, 1)),
    (2, 3, 37, 70, (1, 1, 1, 1)),
    (1, 8, 28, 28, (1, 1, 1, 1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("case", ROWWISE_CASES)
def test_winograd_rowwise_transforms_equal_the_tile_transforms_bit_for_bit(case, m, dtype, rng):
    """winograd_input_rowwise / winograd_output_rowwise against winograd_input / winograd_output:
    the whole grid, and a range of tile rows and channels (as the row split and the phase split
    call them), on NCHW and CNHW inputs."""
    N, C, H, W, pads = case
    pt, pb, pl, pr = pads
    OH, OW = H + pt + pb - 2, W + pl + pr - 2
    TH, TW = winograd._geometry(OH, OW, m)
    a2 = (m + 2) ** 2
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    for xs in (x, np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)):
        planes, sn, sc = kernels.as_planes(xs)
        for th0, th1, c0 in ((0, TH, 0), (TH // 2, TH, C // 2), (0, max(1, TH // 2), 0)):
            T = (th1 - th0) * N * TW
            old, new = np.full((2, a2, C, T), np.nan, dtype)
            winograd.winograd_input(c0, C, planes, sn, sc, N, 0, pt, pl, th0, th1 - th0, TW, m, old)
            winograd.winograd_input_rowwise(c0, C, planes, sn, sc, N, 0, pt, pl, th0, th1 - th0, TW, m, new)
            np.testing.assert_array_equal(old, new)
            M = rng.standard_normal((a2, C, T)).astype(dtype)
            b = rng.standard_normal(C).astype(dtype)
            old, new = np.full((2, C, N, OH, OW), np.nan, dtype)
            winograd.winograd_output(c0, C, M, N, 0, th0, th1 - th0, TW, m, b, old)
            winograd.winograd_output_rowwise(c0, C, M, N, 0, th0, th1 - th0, TW, m, b, new)
            np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("shape", [(1, 64, 56), (2, 32, 30)])
def test_winograd_forward_and_gradients_with_rowwise_transforms_keep_their_bits(shape, m, threads, rng, monkeypatch):
    """The op's forward (by tile rows or filter blocks at batch 1, by phases at batch 2) and gradients with
    WINOGRAD_ROWWISE_TRANSFORMS on and off: the same arrays, on each of 1, 2 and 3 threads."""
    N, C, H = shape
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    w = (rng.standard_normal((C, C, 3, 3)) / (3 * C**0.5)).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    gy = rng.standard_normal((N, C, H, H)).astype(np.float32)
    runs = []
    for on in (0, 1):
        monkeypatch.setattr(dispatch, "WINOGRAD_ROWWISE_TRANSFORMS", on)
        with config.num_threads(threads):
            runs.append(run_op(Conv2dWinogradOp((1, 1), (1, 1, 1, 1), (1, 1), 1, m=m), x, w, b, gy))
    (y0, g0), (y1, g1) = runs
    np.testing.assert_array_equal(y0, y1)
    for a, c in zip(g0, g1):
        np.testing.assert_array_equal(a, c)


# ------------------------------ Winograd split by blocks of output channels (F(2x2) eager, F(4x4))
FILTER_BLOCK_CASES = [
    # (N, C, F, H, W, pads, fb): channels past whole vectors (C 37: a partial group of 16 or 8
    # lanes), filters past whole blocks and under one vector (fb 8, 12), odd sizes, padding 0 to 2
    (1, 37, 40, 14, 14, (1, 1, 1, 1), 16),
    (1, 32, 24, 11, 9, (1, 1, 1, 1), 8),
    (2, 20, 12, 9, 13, (2, 0, 1, 2), 12),
    (3, 5, 7, 7, 10, (0, 0, 0, 0), 16),
    (1, 16, 32, 5, 5, (2, 2, 2, 2), 16),
]


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", FILTER_BLOCK_CASES)
def test_winograd_by_filter_blocks_matches_pytorch_on_any_thread_count(case, dtype, m, rng):
    """_forward_by_filters: within F(m x m)'s float32 budget of PyTorch's float64 convolution (float64:
    TOL64), and the same bits on 1, 2 and 3 threads (the blocks do not depend on them)."""
    N, C, Fo, H, W, pads, fb = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = (rng.standard_normal((Fo, C, 3, 3)) / np.sqrt(9 * C)).astype(dtype)
    b = rng.standard_normal(Fo).astype(dtype)
    OH, OW = H + pads[0] + pads[1] - 2, W + pads[2] + pads[3] - 2
    runs = []
    for threads in (1, 2, 3):
        with config.num_threads(threads):
            runs.append(winograd._forward_by_filters(x, w, b, pads[0], pads[2], OH, OW, m, fb))
    for y in runs[1:]:
        np.testing.assert_array_equal(y, runs[0])
    exact = torch_conv(x, w, b, pads, np.zeros((N, Fo, OH, OW)))[0]
    y = runs[0].transpose(1, 0, 2, 3)
    assert y.dtype == dtype and y.shape == exact.shape
    assert rel_err(y, exact) < (TOL64 if dtype == np.float64 else BUDGET[m])


@pytest.mark.parametrize("m", [2, 4])
def test_winograd_by_filter_blocks_reads_channel_major_inputs_and_image_blocks(m, rng):
    x = rng.standard_normal((3, 24, 9, 9)).astype(np.float32)
    w = rng.standard_normal((20, 24, 3, 3)).astype(np.float32)
    cnhw = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    whole = winograd._forward_by_filters(x, w, None, 1, 1, 9, 9, m, 8)
    np.testing.assert_array_equal(winograd._forward_by_filters(cnhw, w, None, 1, 1, 9, 9, m, 8), whole)
    one_image = winograd._forward_by_filters(x, w, None, 1, 1, 9, 9, m, 8, block_bytes=1)
    assert rel_err(one_image, whole) < BUDGET[m]             # the same sums; BLAS may block them otherwise


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_winograd_by_filter_blocks_without_bias_and_on_no_images(dtype, m, rng):
    x = rng.standard_normal((1, 33, 13, 13)).astype(dtype)
    w = (rng.standard_normal((20, 33, 3, 3)) / 17).astype(dtype)
    y = winograd._forward_by_filters(x, w, None, 1, 1, 13, 13, m, 8)
    exact = torch_conv(x, w, np.zeros(20), (1, 1, 1, 1), np.zeros((1, 20, 13, 13)))[0]
    assert y.dtype == dtype and rel_err(y.transpose(1, 0, 2, 3), exact) < (TOL64 if dtype == np.float64 else BUDGET[m])
    empty = winograd._forward_by_filters(x[:0], w, None, 1, 1, 13, 13, m, 8)
    assert empty.shape == (20, 0, 13, 13) and empty.dtype == dtype


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("residual", [False, True])
def test_winograd_by_filter_blocks_applies_the_epilogue_as_its_own_pass(residual, relu, m, rng):
    """The epilogue applied block by block gives the bits of the convolution, then ``affine_relu``
    (with or without the ReLU), on 1, 2 and 3 threads (blocks past the last whole one: 40 filters
    in blocks of 16)."""
    x = rng.standard_normal((1, 40, 14, 14)).astype(np.float32)
    w = (rng.standard_normal((40, 40, 3, 3)) / 19).astype(np.float32)
    scale, shift = rng.standard_normal(40).astype(np.float32), rng.standard_normal(40).astype(np.float32)
    r = rng.standard_normal((40, 1, 14, 14)).astype(np.float32) if residual else np.empty((0, 0, 0, 0), np.float32)
    for threads in (1, 2, 3):
        with config.num_threads(threads):
            fused = winograd._forward_by_filters(x, w, None, 1, 1, 14, 14, m, 16, epilogue=(scale, shift, r, relu))
            y = winograd._forward_by_filters(x, w, None, 1, 1, 14, 14, m, 16)
        batchnorm.affine_relu(y, scale, shift, r, relu)
        np.testing.assert_array_equal(fused, y)


def test_resnet18_layer3_at_batch_1_runs_eager_winograd_by_filter_blocks(rng, monkeypatch):
    """ResNet-18's 256x256 3x3 layers at 14x14, batch 1 (49 tiles of 2x2): F(2x2) by filter blocks
    through F.conv2d and F.conv2d_batch_norm_relu (the fused conv + BN + ReLU the same bits as the
    separate ops); gemm with the switch off, and the prepacked filters keep the split by rows."""
    calls = _record_ranges(monkeypatch, "_filter_blocks")
    shape, w_shape = (1, 256, 14, 14), (256, 256, 3, 3)
    assert dispatch.conv2d_algorithm(np, np.float32, shape, w_shape, (1, 1), (1, 1, 1, 1), (1, 1), 1) == "winograd2"
    assert dispatch.winograd_filter_block(1, 14, 14, 2) == dispatch.WINOGRAD_FILTER_BLOCK > 0
    assert dispatch.winograd_filter_block(2, 14, 14, 2) == 0                 # 98 tiles: the usual split
    assert dispatch.winograd_filter_block(2, 10, 10, 2) == 0                 # 50 tiles, two images
    assert dispatch.winograd_filter_block(1, 7, 7, 2) == 0                   # 16 tiles
    assert dispatch.winograd_filter_block(1, 14, 14, 4) == 0
    x = rng.standard_normal(shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) / 48).astype(np.float32)
    stats = [rng.standard_normal(256).astype(np.float32) for _ in range(4)]
    stats[1] = np.abs(stats[1]) + 0.5                                        # running variance
    args = dict(running_mean=stats[0], running_var=stats[1], bn_weight=stats[2], bn_bias=stats[3])
    with config.num_threads(2):
        y = F.conv2d(Tensor(x), Tensor(w), padding=1).data
        assert calls and max(q1 for _, q1 in calls) == -(-256 // dispatch.WINOGRAD_FILTER_BLOCK)
        calls.clear()
        fused = F.conv2d_batch_norm_relu(Tensor(x), Tensor(w), 1, 1, **args).data
        assert calls
        unfused = F.batch_norm_relu(F.conv2d(Tensor(x), Tensor(w), padding=1), *(Tensor(a) for a in stats)).data
    np.testing.assert_array_equal(fused, unfused)
    exact = torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64),
                                       padding=1).numpy()
    assert rel_err(y, exact) < BUDGET[2]
    calls.clear()
    pack = ConvWeightPack(frozen(w))
    F.conv2d(Tensor(x), Tensor(pack.weight), padding=1, prepacked=pack)
    assert calls == []
    monkeypatch.setattr(dispatch, "WINOGRAD_FILTER_BLOCK", 0)
    assert dispatch.conv2d_algorithm(np, np.float32, shape, w_shape, (1, 1), (1, 1, 1, 1), (1, 1), 1) == "gemm"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(128, 128, 28), (64, 64, 56), (64, 64, 36), (40, 24, 27), (33, 40, 30)])
def test_winograd_f4_by_filter_blocks_keeps_its_bits_on_any_thread_count_and_matches_pytorch(shape, dtype, rng, monkeypatch):
    """F(4x4) at batch 1 by filter blocks through ``conv2d_winograd`` (``_forward_by_filters``):
    filters transformed per block or prepacked (the same bits), with and without the batch norm +
    ReLU epilogue, the same bits on 1, 2 and 3 threads; the epilogue's bits as its own pass after
    the convolution; within F(4x4)'s budget of PyTorch (float64: to rounding). 27 and 30: partial
    tiles; 40 filters: a block of 32 and one of 8."""
    C, Fo, H = shape
    x = rng.standard_normal((1, C, H, H)).astype(dtype)
    w = (rng.standard_normal((Fo, C, 3, 3)) / (3 * C**0.5)).astype(dtype)
    b = rng.standard_normal(Fo).astype(dtype)
    scale, shift = rng.random(Fo).astype(dtype) + 0.5, rng.standard_normal(Fo).astype(dtype)
    r = rng.standard_normal((Fo, 1, H, H)).astype(dtype)
    U = winograd.winograd_filters(w, 4)
    assert dispatch.winograd_filter_block(1, H, H, 4) == dispatch.WINOGRAD4_FILTER_BLOCK   # OH = H (padding 1)
    calls = _record_ranges(monkeypatch, "_filter_blocks")
    with config.num_threads(2):
        winograd.conv2d_winograd(x, w, b, (1, 1, 1, 1), 4)
    assert sorted(calls)[0][0] == 0 and max(i1 for _, i1 in calls) == -(-Fo // dispatch.WINOGRAD4_FILTER_BLOCK)
    runs = []
    for threads in (1, 2, 3):
        with config.num_threads(threads):
            runs.append((winograd.conv2d_winograd(x, w, b, (1, 1, 1, 1), 4),
                         winograd.conv2d_winograd(x, w, b, (1, 1, 1, 1), 4, filters=U),
                         winograd.conv2d_winograd(x, w, None, (1, 1, 1, 1), 4, epilogue=(scale, shift, r, True))))
    for run in runs:
        for a, c in zip(run, runs[0]):
            np.testing.assert_array_equal(a, c)
    y, y_packed, fused = runs[0]
    np.testing.assert_array_equal(y, y_packed)
    plain = winograd.conv2d_winograd(x, w, None, (1, 1, 1, 1), 4)
    winograd.affine_relu(plain, scale, shift, r, True)
    np.testing.assert_array_equal(fused, plain)
    exact = torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64),
                                       torch.tensor(b, dtype=torch.float64), padding=1).numpy()
    assert y.dtype == dtype
    assert rel_err(y.transpose(1, 0, 2, 3), exact) < (TOL64 if dtype == np.float64 else BUDGET[4])


def test_conv2d_at_batch_1_takes_f4_by_filter_blocks_and_keeps_an_empty_batch_and_batch_2_working(rng, monkeypatch):
    """F.conv2d (eager: filters transformed in the call) on ResNet-18's 128-channel 28x28 layer:
    batch 1 takes F(4x4) by filter blocks within its budget of PyTorch; an empty batch and batch 2
    (the usual paths) give PyTorch's result too."""
    C, size = 128, 28
    w = (rng.standard_normal((C, C, 3, 3)) / (3 * C**0.5)).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    assert dispatch.conv2d_algorithm(np, np.float32, (1, C, size, size), w.shape, (1, 1), (1, 1, 1, 1), (1, 1), 1) == "winograd4"
    calls = _record_ranges(monkeypatch, "_filter_blocks")
    for N in (1, 0, 2):
        x = rng.standard_normal((N, C, size, size)).astype(np.float32)
        with config.num_threads(2):
            y = F.conv2d(Tensor(x), Tensor(w), Tensor(b), padding=1).data
        assert bool(calls) == (N == 1)
        calls.clear()
        exact = torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64),
                                           torch.tensor(b, dtype=torch.float64), padding=1).numpy()
        assert y.shape == exact.shape
        if N:
            assert rel_err(y, exact) < BUDGET[4]
