"""The register-blocked direct convolution (``kernels/conv_blocked.py``, ``Conv2dDirectOp`` kernel "blocked").

Against the NumPy im2col reference (float32 and float64, NCHW and CNHW inputs), against
PyTorch (float32 and float64), float64 finite differences, and the other direct kernel
("rows"). The shapes cover the kernel's edges: channels that are no multiple of a tile
(tiles of 16, 8, 4, 2, 1 output channels), flat rows that are no multiple of a vector
(the tail past the planes), short rows (tiles of one vector) and long ones (two), odd
widths, batch 1, batches that leave a partial weight-gradient group, padding 0 to K-1,
asymmetric padding, 3x3, 5x5, 1x3 and 4x4 kernels.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit.functional as F
from cnnkit import Tensor, config
from cnnkit.backend import dispatch, kernels
from cnnkit.functional.conv import Conv2dDirectOp, Conv2dIm2colOp
from cnnkit.gradcheck import gradcheck
from tests.backend.arrays import cnhw
from tests.backend.test_kernels import assert_rounding_close, run

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")

CASES = [
    # (N, C, F, H, W, KH, KW, pads (top, bottom, left, right))
    (2, 16, 16, 32, 32, 3, 3, (1, 1, 1, 1)),      # ResNet-20 stage 1 (long rows: 2-vector tiles)
    (3, 32, 32, 16, 16, 3, 3, (1, 1, 1, 1)),      # stage 2
    (2, 64, 64, 8, 8, 3, 3, (1, 1, 1, 1)),        # stage 3 (short rows: 1-vector tiles)
    (3, 1, 6, 28, 28, 5, 5, (2, 2, 2, 2)),        # LeNet-5 conv1 (a tile of 6 channels)
    (2, 3, 22, 9, 8, 3, 3, (1, 1, 1, 1)),         # short rows: 22 = 16 + 6 channels
    (17, 6, 16, 14, 14, 5, 5, (0, 0, 0, 0)),      # LeNet-5 conv2, a partial image group
    (1, 5, 21, 9, 11, 3, 3, (0, 0, 0, 0)),        # batch 1, 21 = 16 + 4 + 1 channels, odd width
    (2, 33, 7, 7, 5, 3, 3, (2, 2, 1, 0)),         # padding K-1, asymmetric; 7 = 4 + 2 + 1
    (2, 3, 5, 6, 13, 1, 3, (0, 0, 1, 1)),         # a 1x3 kernel
    (2, 3, 5, 6, 5, 4, 4, (1, 2, 1, 2)),          # even kernel, "same" padding
    (33, 2, 3, 5, 6, 3, 3, (0, 1, 2, 0)),         # groups of 16 short-row images + a partial one
]


def _conv(pads, op=Conv2dDirectOp):
    """x, w, b -> the stride-1 convolution with padding (top, bottom, left, right) by ``op``."""

    def conv(x, w, b=None):
        return op((1, 1), pads, (1, 1), 1)(x, w) if b is None else op((1, 1), pads, (1, 1), 1)(x, w, b)

    return conv


def _arrays(case, rng, dtype=np.float64, layout="nchw"):
    """x (N, C, H, W) in ``layout``, w (F, C, KH, KW) and b (F,): standard normal draws, in that order."""
    N, C, Fo, H, W, KH, KW, _ = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    x = cnhw(x) if layout == "cnhw" else x
    return x, rng.standard_normal((Fo, C, KH, KW)).astype(dtype), rng.standard_normal(Fo).astype(dtype)


@pytest.fixture
def blocked(monkeypatch):
    monkeypatch.setattr(dispatch, "DIRECT_CONV_BLOCKED", 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
def test_blocked_conv2d_matches_the_im2col_reference(case, layout, dtype, rng, blocked):
    pads = case[-1]
    x, w, b = _arrays(case, rng, dtype, layout)
    y, grads = run(_conv(pads), [x, w, b], 1, False, expect=Conv2dDirectOp)
    y_ref, grads_ref = run(_conv(pads, Conv2dIm2colOp), [x, w, b], 1, True)
    assert_rounding_close(y, y_ref, dtype)
    for g, g_ref in zip(grads, grads_ref):
        assert_rounding_close(g, g_ref, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_blocked_conv2d_matches_pytorch(case, dtype, rng, blocked):
    """Forward and the three gradients against torch.nn.functional.conv2d."""
    import torch

    pads = case[-1]
    x, w, b = _arrays(case, rng, dtype)
    y, grads = run(_conv(pads), [x, w, b], 7, False, expect=Conv2dDirectOp)
    ts = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    pt, pb, pl, pr = pads
    Y = torch.nn.functional.conv2d(torch.nn.functional.pad(ts[0], (pl, pr, pt, pb)), ts[1], ts[2])
    Y.backward(torch.tensor(np.random.default_rng(7).standard_normal(y.shape).astype(dtype)))  # run's gradient
    assert_rounding_close(y, Y.detach().numpy(), dtype)
    for g, t in zip(grads, ts):
        assert_rounding_close(g, t.grad.numpy(), dtype)


@pytest.mark.parametrize("case", [
    (2, 3, 5, 6, 7, 3, 3, (1, 1, 1, 1)),
    (1, 2, 3, 7, 6, 5, 5, (2, 1, 0, 2)),
    (1, 2, 8, 8, 8, 3, 3, (1, 1, 1, 1)),          # lane rows, one image per vector
    (5, 2, 8, 4, 4, 3, 3, (1, 1, 1, 1)),          # lane rows, two images per vector, a partial pack
])
def test_blocked_conv2d_passes_gradcheck_in_float64(case, rng, blocked):
    pads = case[-1]
    x, w, b = _arrays(case, rng)
    conv = _conv(pads)
    with config.kernels(True):
        creator = conv(*(Tensor(a, requires_grad=True) for a in (x, w, b))).creator
        assert type(creator) is Conv2dDirectOp and creator.kernel == "blocked"
        assert gradcheck(conv, [x, w, b])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocked_and_rows_kernels_agree(dtype, rng):
    x = rng.standard_normal((5, 7, 12, 9)).astype(dtype)
    w = rng.standard_normal((11, 7, 3, 3)).astype(dtype)
    b = rng.standard_normal(11).astype(dtype)
    gy = rng.standard_normal((5, 11, 12, 9)).astype(dtype)
    results = {}
    for kernel in ("blocked", "rows"):
        xs, ws, bs = (Tensor(a, requires_grad=True) for a in (x, w, b))
        y = Conv2dDirectOp((1, 1), (1, 1, 1, 1), (1, 1), 1, kernel=kernel)(xs, ws, bs)
        y.backward(gy)
        results[kernel] = (y.data, xs.grad, ws.grad, bs.grad)
    for a, r in zip(results["blocked"], results["rows"]):
        assert_rounding_close(a, r, dtype)


@pytest.mark.parametrize("needs", [(False, True, True), (True, False, False), (True, True, False), (False, False, True)])
def test_blocked_conv2d_computes_only_the_gradients_asked_for(needs, rng, blocked):
    x, w, b = rng.standard_normal((3, 2, 6, 6)), rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)
    _, grads = run(_conv((1, 1, 1, 1)), [x, w, b], 2, False, needs=list(needs), expect=Conv2dDirectOp)
    _, grads_ref = run(_conv((1, 1, 1, 1), Conv2dIm2colOp), [x, w, b], 2, True, needs=list(needs))
    for g, g_ref, need in zip(grads, grads_ref, needs):
        assert (g is None) == (not need)
        if need:
            assert_rounding_close(g, g_ref, np.float64)


def test_blocked_conv2d_results_do_not_depend_on_the_number_of_threads(rng, blocked):
    # 40 images: three weight-gradient groups of 16 short-row images, split over threads.
    x = Tensor(rng.standard_normal((40, 16, 8, 8)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((16, 16, 3, 3)).astype(np.float32), requires_grad=True)
    results = []
    for threads in (1, 2, 3):
        x.grad = w.grad = None
        with config.num_threads(threads), dispatch_grain(1):
            y = F.conv2d(x, w, padding=1)
            assert y.creator.kernel == "blocked"
            y.backward(np.ones(y.shape, np.float32))
        results.append((y.data.copy(), x.grad.copy(), w.grad.copy()))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [
    (64, 6, 16, 14, 14, 5, 5, (0, 0, 0, 0)),      # LeNet-5 conv2 at batch 64: 4 groups of 16 + 64 items
    (17, 6, 16, 14, 14, 5, 5, (0, 0, 0, 0)),      # a partial weight-gradient group
    (40, 16, 40, 8, 8, 3, 3, (1, 1, 1, 1)),       # 2 channel blocks per image (32 + 8), short rows
    (1, 5, 21, 9, 11, 3, 3, (0, 0, 0, 0)),        # batch 1
])
def test_backward_in_one_region_equals_two_regions_bit_for_bit(monkeypatch, case, dtype, rng, blocked):
    """CONV_GRADS_ONE_REGION: gx, gw and gb as the two-region backward computes them, on 1-3 threads."""
    pads = case[-1]
    x, w, b = _arrays(case, rng, dtype)
    monkeypatch.setattr(dispatch, "CONV_GRADS_ONE_REGION", 0)
    _, two = run(_conv(pads), [x, w, b], 3, False, expect=Conv2dDirectOp)
    monkeypatch.setattr(dispatch, "CONV_GRADS_ONE_REGION", 1)
    for threads in (1, 2, 3):
        with config.num_threads(threads), dispatch_grain(1):
            _, one = run(_conv(pads), [x, w, b], 3, False, expect=Conv2dDirectOp)
        for g, g_two in zip(one, two):
            np.testing.assert_array_equal(g, g_two)
    for needs in ([True, False, True], [False, True, True]):   # one of the two gradients alone
        _, one = run(_conv(pads), [x, w, b], 3, False, needs=needs)
        for g, g_two, need in zip(one, two, needs):
            assert (g is None) == (not need)
            if need:
                np.testing.assert_array_equal(g, g_two)


@pytest.mark.parametrize("case", [
    (1, 6, 16, 14, 14, 5, 5, (0, 0, 0, 0)),       # LeNet-5 conv2 at batch 1: stacked gx items of 4, groups of 16
    (3, 6, 16, 14, 14, 5, 5, (0, 0, 0, 0)),       # batch 3
    (1, 16, 16, 8, 8, 3, 3, (1, 1, 1, 1)),        # lane rows of 2 images (8-pixel rows)
])
def test_the_grain_counts_the_images_a_batch_has(monkeypatch, case, rng, blocked):
    """CONV_GRAIN_PRESENT_IMAGES: a region's grain counts the images an item or group holds in the
    batch, not its full size; the backward of a small batch then opens no region, with the same bits."""
    from cnnkit.backend import cores

    pads = case[-1]
    x, w, b = _arrays(case, rng, np.float32)
    results = {}
    for present in (0, 1):
        monkeypatch.setattr(dispatch, "CONV_GRAIN_PRESENT_IMAGES", present)
        with config.num_threads(2), cores.tracing() as events:
            results[present] = run(_conv(pads), [x, w, b], 3, False, expect=Conv2dDirectOp)
        results[present, "regions"] = sum(1 for e in events if e[0] == "region")
    assert results[0, "regions"] >= 1          # before: a two-thread region on a few hundred thousand multiply-adds
    assert results[1, "regions"] == 0
    (y0, g0), (y1, g1) = results[0], results[1]
    np.testing.assert_array_equal(y1, y0)
    for a, c in zip(g1, g0):
        np.testing.assert_array_equal(a, c)


class dispatch_grain:
    """Every kernel split over the threads however small (PARALLEL_MIN_MACS = 1) inside the block."""

    def __init__(self, macs: int):
        self.macs = macs

    def __enter__(self):
        self.saved, dispatch.PARALLEL_MIN_MACS = dispatch.PARALLEL_MIN_MACS, self.macs

    def __exit__(self, *exc):
        dispatch.PARALLEL_MIN_MACS = self.saved


def test_direct_kernel_choice_and_refusals(monkeypatch, rng):
    assert dispatch.direct_conv_kernel((16, 16, 3, 3), (1, 1, 1, 1)) == "blocked"
    assert dispatch.direct_conv_kernel((16, 16, 3, 3), (2, 2, 2, 2)) == "blocked"
    assert dispatch.direct_conv_kernel((16, 16, 3, 3), (3, 0, 0, 0)) == "rows"   # padding >= kernel
    monkeypatch.setattr(dispatch, "DIRECT_CONV_BLOCKED", 0)
    assert dispatch.direct_conv_kernel((16, 16, 3, 3), (1, 1, 1, 1)) == "rows"
    with pytest.raises(ValueError, match=r"Conv2dDirectOp kernel must be 'blocked', 'rows' or None, got 'fast'"):
        Conv2dDirectOp((1, 1), (0, 0, 0, 0), (1, 1), 1, kernel="fast")
    x, w = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3))
    with pytest.raises(ValueError, match=r"blocked kernel handles padding up to the kernel size minus one, "
                                         r"got padding \(3, 3, 3, 3\) for a \(3, 3\) kernel"):
        Conv2dDirectOp((1, 1), (3, 3, 3, 3), (1, 1), 1, kernel="blocked")(x, w)


def test_padding_of_the_kernel_size_runs_on_the_rows_kernel(rng):
    x, w, b = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    conv = _conv((3, 3, 3, 3))
    y, grads = run(conv, [x, w, b], 3, False, expect=Conv2dDirectOp)
    y_ref, grads_ref = run(_conv((3, 3, 3, 3), Conv2dIm2colOp), [x, w, b], 3, True)
    assert_rounding_close(y, y_ref, np.float64)
    for g, g_ref in zip(grads, grads_ref):
        assert_rounding_close(g, g_ref, np.float64)
    with config.kernels(True):
        assert conv(*(Tensor(a, requires_grad=True) for a in (x, w, b))).creator.kernel == "rows"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [
    (1, 7, 70, 9, 13, (1, 1, 1, 1)),      # blocks of 32 + 32 + 6 (one 6-channel tile) channels, batch 1
    (2, 5, 37, 20, 21, (0, 2, 1, 1)),     # 32 + 5 channels, long rows (2-vector tiles), batch 2
    (1, 3, 33, 6, 5, (2, 0, 0, 2)),       # 32 + 1, short rows (16-channel tiles)
])
def test_blocked_forward_split_over_channel_blocks(monkeypatch, case, dtype, rng):
    """The forward's (image, channel block) items: equal to the im2col reference and PyTorch,
    and bit for bit to one item per image, on 1-3 threads."""
    import torch

    from cnnkit.backend.kernels import conv_blocked

    N, C, Fo, H, W, pads = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((Fo, C, 3, 3)).astype(dtype)
    b = rng.standard_normal(Fo).astype(dtype)

    def forward():
        op = Conv2dDirectOp((1, 1), pads, (1, 1), 1, kernel="blocked")
        with config.kernels(True):
            return op(Tensor(x), Tensor(w), Tensor(b)).data.copy()

    monkeypatch.setattr(conv_blocked, "FORWARD_CHANNEL_BLOCK", 16 * 64)   # one item per image
    whole = forward()
    monkeypatch.setattr(conv_blocked, "FORWARD_CHANNEL_BLOCK", 32)
    for threads in (1, 2, 3):
        with config.num_threads(threads), dispatch_grain(1):
            np.testing.assert_array_equal(forward(), whole)
    y_ref = Conv2dIm2colOp((1, 1), pads, (1, 1), 1)(Tensor(x), Tensor(w), Tensor(b)).data
    assert_rounding_close(whole, y_ref, dtype)
    pt, pb, pl, pr = pads
    Y = torch.nn.functional.conv2d(torch.nn.functional.pad(torch.tensor(x), (pl, pr, pt, pb)),
                                   torch.tensor(w), torch.tensor(b))
    assert_rounding_close(whole, Y.numpy(), dtype)


# Shapes on which the forward (and the input gradient, except where W < OW) takes lane rows
# in float32 and float64: k images side by side per vector (k = 2, 4, 5 in float32), partial
# last packs (17, 6, 33 images), padding left only / right only / wider than "same" (W < OW),
# 5x5 and 1x3 kernels. The weight gradient takes them for 3-row kernels with F a multiple of
# 8 (F = 64, 8, 16, 24 below), flat rows for the others (F = 9, 6, 4).
LANE_CASES = [
    (2, 64, 64, 8, 8, 3, 3, (1, 1, 1, 1)),        # ResNet-20 stage 3
    (17, 3, 8, 8, 8, 3, 3, (1, 1, 1, 1)),         # a last pack of one image
    (6, 5, 16, 4, 4, 3, 3, (1, 1, 1, 1)),         # four images per vector (two in float64)
    (6, 5, 9, 4, 4, 3, 3, (1, 1, 1, 1)),          # the same, gw on flat rows
    (4, 3, 8, 5, 8, 3, 3, (2, 0, 0, 2)),          # taps shifted by 0, 1, 2
    (4, 3, 8, 6, 8, 3, 3, (0, 2, 2, 0)),          # taps shifted by -2, -1, 0
    (2, 4, 6, 8, 8, 5, 5, (2, 2, 2, 2)),
    (4, 2, 4, 5, 8, 1, 3, (0, 0, 1, 1)),
    (4, 3, 24, 7, 6, 3, 3, (1, 1, 2, 2)),         # W = 6 < OW = 8; gx on flat rows
    (33, 6, 8, 3, 3, 3, 3, (1, 1, 1, 1)),         # five images per vector, one junk lane
]


def _direct_against_im2col_and_pytorch(pads, x, w, b, dtype):
    """The direct op's forward and three gradients, checked against im2col and PyTorch up to
    rounding; returned (y, grads) for the caller's own comparisons."""
    import torch

    y, grads = run(_conv(pads), [x, w, b], 5, False, expect=Conv2dDirectOp)
    y_ref, grads_ref = run(_conv(pads, Conv2dIm2colOp), [x, w, b], 5, True)
    assert_rounding_close(y, y_ref, dtype)
    for g, g_ref in zip(grads, grads_ref):
        assert_rounding_close(g, g_ref, dtype)
    ts = [torch.tensor(np.ascontiguousarray(a), requires_grad=True) for a in (x, w, b)]
    pt, pb, pl, pr = pads
    Y = torch.nn.functional.conv2d(torch.nn.functional.pad(ts[0], (pl, pr, pt, pb)), ts[1], ts[2])
    Y.backward(torch.tensor(np.random.default_rng(5).standard_normal(y.shape).astype(dtype)))
    assert_rounding_close(y, Y.detach().numpy(), dtype)
    for g, t in zip(grads, ts):
        assert_rounding_close(g, t.grad.numpy(), dtype)
    return y, grads


def _assert_same_bits_on_2_and_3_threads(pads, x, w, b, y, grads):
    """The direct convolution's forward and gradients on 2 and 3 threads (the smallest grain): ``y``, ``grads`` bit for bit."""
    for threads in (2, 3):
        with config.num_threads(threads), dispatch_grain(1):
            y_t, grads_t = run(_conv(pads), [x, w, b], 5, False, expect=Conv2dDirectOp)
        np.testing.assert_array_equal(y_t, y)
        for g_t, g in zip(grads_t, grads):
            np.testing.assert_array_equal(g_t, g)


def _assert_non_finite_like_pytorch(x, w, pad: int):
    """The kernel's forward (padding ``pad`` on every side) has NaN and inf where PyTorch's has, the rest equal."""
    import torch

    with config.kernels(True):
        y = Conv2dDirectOp((1, 1), (pad,) * 4, (1, 1), 1)(Tensor(x), Tensor(w)).data
    Y = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), padding=pad).numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(Y))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(Y))
    finite = np.isfinite(Y)
    np.testing.assert_array_equal(y[finite], Y[finite])


def _lane_rows_taken(case, dtype):
    from cnnkit.backend.kernels.conv_blocked import row_layout

    N, C, Fo, H, W, KH, KW, (pt, pb, pl, pr) = case
    OH, OW = H + pt + pb - KH + 1, W + pl + pr - KW + 1
    return row_layout(N, OH, W, OW, KW, 64 // np.dtype(dtype).itemsize) > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", LANE_CASES)
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
def test_lane_rows_match_the_im2col_reference_pytorch_and_flat_rows(case, layout, dtype, rng, blocked, monkeypatch):
    """Forward and the three gradients on lane rows: equal to im2col and PyTorch up to rounding;
    the forward equal bit for bit to flat rows (the same taps summed in the same order)."""
    monkeypatch.setattr(dispatch, "DIRECT_CONV_PLANES", 0)     # lane rows rather than planes
    assert _lane_rows_taken(case, dtype)
    pads = case[-1]
    x, w, b = _arrays(case, rng, dtype, layout)
    y, grads = _direct_against_im2col_and_pytorch(pads, x, w, b, dtype)
    monkeypatch.setattr(dispatch, "DIRECT_CONV_LANE_ROWS", 0)
    assert not _lane_rows_taken(case, dtype)
    y_flat, grads_flat = run(_conv(pads), [x, w, b], 5, False, expect=Conv2dDirectOp)
    np.testing.assert_array_equal(y, y_flat)
    for g, g_flat in zip(grads, grads_flat):
        assert_rounding_close(g, g_flat, dtype)


def test_lane_rows_stay_off_where_they_compute_as_much_as_flat_rows():
    from cnnkit.backend.kernels.conv_blocked import row_layout

    assert row_layout(128, 8, 8, 8, 3, 16) == 2        # 8x8: 64 of 80 entries per image
    assert row_layout(128, 8, 8, 8, 3, 8) == 1
    assert row_layout(128, 16, 16, 16, 3, 16) == 1     # 16x16: 256 of 288 entries
    assert row_layout(128, 15, 15, 15, 3, 16) == 0     # 15x15: 240 of 256, not worth the copies
    assert row_layout(128, 32, 32, 32, 3, 16) == 0     # rows wider than a vector
    assert row_layout(1, 8, 8, 8, 3, 16) == 0          # half a pack: 128 entries against 80
    assert row_layout(128, 6, 8, 6, 3, 16) == 0        # input wider than the output
    assert row_layout(33, 3, 3, 3, 3, 16) == 5         # 3x3 maps: 7 packs of 48 entries against 33 x 16
    assert row_layout(3, 3, 3, 3, 3, 16) == 0          # one pack of 48 against 3 x 16


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("planes", [0, 1])
def test_lane_rows_keep_non_finite_values_where_they_are(dtype, planes, blocked, monkeypatch):
    """inf and NaN in the input reach only the outputs whose windows hold them, as in PyTorch:
    the shifted copies (lane rows) and the masked loads (planes) never carry a value into a
    neighbouring image's or row's padding."""

    monkeypatch.setattr(dispatch, "DIRECT_CONV_PLANES", planes)
    x = np.ones((17, 2, 8, 8), dtype)
    x[0, 0, 3, 7] = np.inf      # right edge of image 0 (its neighbour in the vector is image 1)
    x[1, 1, 0, 0] = np.nan      # left edge of image 1
    x[16, 0, 7, 0] = -np.inf    # last row, left edge of the last, half-filled pack
    w = np.ones((4, 2, 3, 3), dtype)
    assert _lane_rows_taken((17, 2, 4, 8, 8, 3, 3, (1, 1, 1, 1)), dtype)
    _assert_non_finite_like_pytorch(x, w, 1)


# Shapes on which the forward and the input gradient take planes (``plane_forward``: output of
# the input's size, planes of whole vectors) in float32 and float64, and the weight gradient too
# where the kernel has 3 columns and F is a multiple of 8 (``plane_grad_w``): tiles of 16 channels and
# the remainders (22 = 16 + 6, 13 = 8 + 4 + 1, 7 = 4 + 2 + 1, 18 = 16 + 2), planes of one to
# sixteen vectors, rows shorter and longer than a vector, 5x5, 4x4 and 1x3 kernels, "same"
# padding that is asymmetric, two channel blocks at batch 1.
PLANE_CASES = [
    (2, 64, 64, 8, 8, 3, 3, (1, 1, 1, 1)),        # ResNet-20 stage 3
    (3, 32, 32, 16, 16, 3, 3, (1, 1, 1, 1)),      # stage 2
    (2, 5, 22, 4, 4, 3, 3, (1, 1, 1, 1)),
    (3, 7, 13, 8, 6, 3, 3, (1, 1, 1, 1)),
    (2, 3, 5, 8, 4, 5, 5, (2, 2, 2, 2)),
    (2, 3, 4, 4, 8, 4, 4, (1, 2, 1, 2)),
    (2, 3, 7, 2, 16, 1, 3, (0, 0, 1, 1)),
    (3, 4, 18, 4, 12, 3, 3, (2, 0, 0, 2)),
    (1, 33, 40, 4, 4, 3, 3, (1, 1, 1, 1)),        # channel blocks of 32 + 8
    (35, 3, 16, 8, 8, 3, 3, (1, 1, 1, 1)),        # weight-gradient groups of 32 images + 3
    (3, 4, 24, 4, 12, 3, 3, (0, 2, 2, 0)),        # the weight gradient on planes, taps shifted by -2 .. 0
]


def _planes_taken(case, dtype):
    from cnnkit.backend.kernels.conv_blocked import plane_layout

    N, C, Fo, H, W, KH, KW, (pt, pb, pl, pr) = case
    OH, OW = H + pt + pb - KH + 1, W + pl + pr - KW + 1
    return plane_layout(H, W, OH, OW, 64 // np.dtype(dtype).itemsize)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", PLANE_CASES)
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
def test_planes_match_the_im2col_reference_pytorch_and_flat_rows(case, layout, dtype, rng, blocked, monkeypatch):
    """Forward and the three gradients with planes (the weight gradient too: its switch on): equal
    to im2col, PyTorch and flat rows up to rounding (the taps are summed in another order), and
    the same bits on 1-3 threads."""
    monkeypatch.setattr(dispatch, "DIRECT_CONV_PLANES_GRAD_W", 1)
    assert _planes_taken(case, dtype)
    pads = case[-1]
    x, w, b = _arrays(case, rng, dtype, layout)
    y, grads = _direct_against_im2col_and_pytorch(pads, x, w, b, dtype)
    _assert_same_bits_on_2_and_3_threads(pads, x, w, b, y, grads)
    monkeypatch.setattr(dispatch, "DIRECT_CONV_PLANES", 0)
    monkeypatch.setattr(dispatch, "DIRECT_CONV_PLANES_GRAD_W", 0)
    assert not _planes_taken(case, dtype)
    y_flat, grads_flat = run(_conv(pads), [x, w, b], 5, False, expect=Conv2dDirectOp)
    assert_rounding_close(y, y_flat, dtype)
    for g, g_flat in zip(grads, grads_flat):
        assert_rounding_close(g, g_flat, dtype)


def test_planes_only_where_the_output_keeps_the_input_size_in_whole_vectors():
    from cnnkit.backend.kernels.conv_blocked import plane_layout

    assert plane_layout(8, 8, 8, 8, 16) and plane_layout(32, 32, 32, 32, 8)
    assert plane_layout(4, 12, 4, 12, 16)                # 48 pixels: three vectors
    assert not plane_layout(7, 7, 7, 7, 16)              # 49 pixels
    assert not plane_layout(6, 6, 8, 8, 16)              # padding wider than "same"
    assert not plane_layout(10, 8, 8, 8, 16)             # no padding at the top and bottom


# Shapes whose input gradient (an unpadded layer's: a "full" convolution of gy) or forward (padding
# K - 1 on every side) takes stacked rows (``stacked_forward``): LeNet-5's conv2, batches that leave
# a last item of fewer images and a last partial vector (odd pixel counts), tiles of 16, 8, 6, 4, 2, 1
# channels, short runs (1-vector tiles), 3x3, 5x5, 2x4 and 1x3 kernels.
STACKED_CASES = [
    (17, 6, 16, 14, 14, 5, 5, (0, 0, 0, 0)),      # LeNet-5 conv2: gx on stacked rows, F = 6 outputs
    (3, 23, 7, 5, 7, 3, 3, (0, 0, 0, 0)),         # gx: 23 = 16 + 4 + 2 + 1 channels, 35 pixels a map
    (5, 2, 3, 4, 9, 2, 4, (0, 0, 0, 0)),          # even, non-square kernel
    (1, 3, 8, 1, 6, 1, 3, (0, 0, 0, 0)),          # batch 1, one row
    (6, 5, 14, 6, 5, 3, 3, (2, 2, 2, 2)),         # the forward itself full: 14 = 8 + 6 channels
    (2, 4, 3, 3, 3, 5, 5, (4, 4, 4, 4)),          # a kernel larger than the input
]


def _stacked_taken(shape, pads, dtype):
    from cnnkit.backend.kernels.conv_blocked import stacked_layout

    H, W, KH, KW = shape
    pt, pb, pl, pr = pads
    return stacked_layout(H, W, H + pt + pb - KH + 1, W + pl + pr - KW + 1, KH, KW, pt, pl)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", STACKED_CASES)
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
def test_stacked_rows_match_the_im2col_reference_pytorch_and_flat_rows_bit_for_bit(case, layout, dtype, rng,
                                                                                    blocked, monkeypatch):
    """Forward and the three gradients with stacked rows: equal to im2col and PyTorch up to rounding,
    the same bits on 1-3 threads, and the same bits as lane / flat rows (each output's taps summed
    in the same order, the padding's zeros at the same taps)."""
    N, C, Fo, H, W, KH, KW, pads = case
    full = pads == (KH - 1, KH - 1, KW - 1, KW - 1)
    gx_pads = (KH - 1 - pads[0], KH - 1 - pads[1], KW - 1 - pads[2], KW - 1 - pads[3])
    assert _stacked_taken((H, W, KH, KW), pads, dtype) if full else (
        _stacked_taken((H + pads[0] + pads[1] - KH + 1, W + pads[2] + pads[3] - KW + 1, KH, KW), gx_pads, dtype))
    x, w, b = _arrays(case, rng, dtype, layout)
    y, grads = _direct_against_im2col_and_pytorch(pads, x, w, b, dtype)
    _assert_same_bits_on_2_and_3_threads(pads, x, w, b, y, grads)
    monkeypatch.setattr(dispatch, "DIRECT_CONV_STACKED", 0)
    assert not _stacked_taken((H, W, KH, KW), pads, dtype)
    y_rows, grads_rows = run(_conv(pads), [x, w, b], 5, False, expect=Conv2dDirectOp)
    np.testing.assert_array_equal(y, y_rows)
    for g, g_rows in zip(grads, grads_rows):
        np.testing.assert_array_equal(g, g_rows)


def test_stacked_rows_only_on_full_convolutions():
    from cnnkit.backend.kernels.conv_blocked import stacked_images, stacked_layout

    assert stacked_layout(10, 10, 14, 14, 5, 5, 4, 4)            # LeNet-5 conv2's input gradient
    assert not stacked_layout(10, 10, 14, 14, 5, 5, 3, 4)        # padding below K - 1 on one side
    assert not stacked_layout(14, 14, 14, 14, 5, 5, 2, 2)        # "same"
    assert stacked_images(196, 16) == 4 and stacked_images(196, 8) == 4 and stacked_images(35, 16) == 16
    assert stacked_images(64, 16) == 4                            # at least 4 images


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stacked_rows_keep_non_finite_values_where_they_are(dtype, blocked):
    """inf and NaN reach only the outputs whose windows hold them: the padding a row or an image
    shares with its neighbour is never written."""

    x = np.ones((5, 2, 4, 6), dtype)
    x[0, 0, 1, 5] = np.inf      # right edge: the next row's left padding
    x[1, 1, 3, 0] = np.nan      # last row, left edge: the next image's top padding
    x[4, 0, 0, 0] = -np.inf     # the last image, a partial item
    w = np.ones((3, 2, 3, 3), dtype)
    assert _stacked_taken((4, 6, 3, 3), (2, 2, 2, 2), dtype)
    _assert_non_finite_like_pytorch(x, w, 2)


# Shapes whose weight gradient takes filter lanes (``conv_lanes.lanes_grad_w``: 5x5 kernels, F a
# multiple of the lanes): LeNet-5's conv2 with a last partial group, F of two and three vectors (float64:
# one to four), padding on some sides, maps whose pixels are no multiple of a vector, batch 1.
LANES_CASES = [
    (17, 6, 16, 14, 14, 5, 5, (0, 0, 0, 0)),      # LeNet-5 conv2, groups of 16 images + 1
    (3, 2, 32, 6, 7, 5, 5, (0, 0, 0, 0)),         # two float32 vectors of filters, 6 pixels a map
    (2, 3, 48, 9, 11, 5, 5, (2, 1, 0, 3)),        # asymmetric padding, 5 x 10 = 50 pixels
    (1, 1, 16, 5, 5, 5, 5, (2, 2, 2, 2)),         # batch 1, one channel, "same"
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", LANES_CASES)
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
def test_filter_lanes_weight_gradient_matches_im2col_pytorch_and_the_other_tiles(case, layout, dtype, rng, blocked,
                                                                                  monkeypatch):
    """Forward and the three gradients with the weight gradient on filter lanes: equal to im2col,
    PyTorch and the pixel tiles up to rounding (another summation order), the same bits on 1-3
    threads."""
    from cnnkit.backend.kernels.conv_lanes import lanes_grad_w_applies

    N, C, Fo, H, W, KH, KW, pads = case
    assert lanes_grad_w_applies(Fo, KH, KW, 64 // np.dtype(dtype).itemsize)
    x, w, b = _arrays(case, rng, dtype, layout)
    y, grads = _direct_against_im2col_and_pytorch(pads, x, w, b, dtype)
    _assert_same_bits_on_2_and_3_threads(pads, x, w, b, y, grads)
    monkeypatch.setattr(dispatch, "DIRECT_CONV_LANES_GRAD_W", 0)
    _, grads_tiles = run(_conv(pads), [x, w, b], 5, False, expect=Conv2dDirectOp)
    np.testing.assert_array_equal(grads_tiles[0], grads[0])        # gx: the same kernel either way
    for g, g_tiles in zip(grads[1:], grads_tiles[1:]):
        assert_rounding_close(g, g_tiles, dtype)


def test_filter_lanes_only_for_5x5_kernels_with_whole_vectors_of_filters():
    from cnnkit.backend.kernels.conv_lanes import lanes_grad_w_applies

    assert lanes_grad_w_applies(16, 5, 5, 16) and lanes_grad_w_applies(16, 5, 5, 8) and lanes_grad_w_applies(32, 5, 5, 16)
    assert not lanes_grad_w_applies(6, 5, 5, 16)        # LeNet-5's conv1: 6 filters
    assert not lanes_grad_w_applies(16, 3, 3, 16)       # 3x3: not compiled
    assert not lanes_grad_w_applies(24, 5, 5, 16)


# Shapes whose forward takes filter lanes (``conv_lanes.lanes_forward``: F a multiple of the lanes,
# 10-pixel output rows, an output smaller than the input): LeNet-5's conv2, two float32 vectors of
# filters, an odd number of output rows (a last tile of one row), a 1-row output, padding.
LANES_FORWARD_CASES = [
    (17, 6, 16, 14, 14, 5, 5, (0, 0, 0, 0)),      # LeNet-5 conv2
    (3, 3, 32, 9, 12, 3, 3, (1, 0, 0, 0)),        # 8 x 10 outputs
    (2, 2, 16, 8, 12, 2, 4, (0, 0, 0, 1)),        # 7 x 10: the last tile's second row is junk
    (1, 1, 16, 3, 10, 3, 1, (0, 0, 0, 0)),        # batch 1, one output row
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", LANES_FORWARD_CASES)
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
def test_filter_lanes_forward_matches_im2col_pytorch_and_flat_rows_bit_for_bit(case, layout, dtype, rng, blocked,
                                                                                monkeypatch):
    """The forward on filter lanes (and the gradients as dispatched): equal to im2col and PyTorch up to
    rounding, the same bits on 1-3 threads and as on flat rows (each output's bias and taps summed
    in the same order)."""
    from cnnkit.backend.kernels.conv_lanes import lanes_forward_rows

    N, C, Fo, H, W, KH, KW, (pt, pb, pl, pr) = case
    assert lanes_forward_rows(Fo, H, W, H + pt + pb - KH + 1, W + pl + pr - KW + 1, 64 // np.dtype(dtype).itemsize)
    pads = case[-1]
    x, w, b = _arrays(case, rng, dtype, layout)
    y, grads = _direct_against_im2col_and_pytorch(pads, x, w, b, dtype)
    _assert_same_bits_on_2_and_3_threads(pads, x, w, b, y, grads)
    monkeypatch.setattr(dispatch, "DIRECT_CONV_LANES_FORWARD", 0)
    y_rows, grads_rows = run(_conv(pads), [x, w, b], 5, False, expect=Conv2dDirectOp)
    np.testing.assert_array_equal(y, y_rows)
    for g, g_rows in zip(grads, grads_rows):
        np.testing.assert_array_equal(g, g_rows)


def test_filter_lanes_forward_only_where_a_tile_is_compiled():
    from cnnkit.backend.kernels.conv_lanes import lanes_forward_rows

    assert lanes_forward_rows(16, 14, 14, 10, 10, 16) == 2       # LeNet-5 conv2
    assert lanes_forward_rows(16, 14, 14, 10, 10, 8) == 2
    assert not lanes_forward_rows(6, 14, 14, 10, 10, 16)        # 6 filters
    assert not lanes_forward_rows(16, 10, 10, 10, 10, 16)       # "same": the planes kernel
    assert not lanes_forward_rows(16, 13, 13, 9, 9, 16)         # no 9-pixel tile
