"""Max pooling's backward run inside the next convolution's backward region
(``MaxPool2dFusedOp.backward_by_images``, ``conv_blocked.conv2d_blocked_grads``' ``then``).

The fused backward must give exactly the gradients of the separate passes (the same kernels on
the same planes) on any thread count, with NaN, inf, zeros and ties, odd sizes and both dtypes;
it must pass its result on only where the convolution was the pooling output's only consumer,
and agree with PyTorch.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit.functional as F
from cnnkit import Tensor, config
from cnnkit.backend import dispatch, kernels
from cnnkit.backend.kernels import pool as pool_kernels
from cnnkit.functional.pool import MaxPool2dFusedOp

pytestmark = [
    pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),   # the NaN and inf inputs' sums
]

STAGES = [
    # (ReLU input shape (N, C, H, W), conv filters F, kernel, padding): the conv's gx layout
    ((64, 6, 28, 28), 16, 5, 0),   # LeNet-5's pool 1 -> conv2: stacked rows, 4 images an item
    ((7, 6, 29, 27), 16, 5, 0),    # odd sizes: an odd last row and column, a partial last item
    ((5, 3, 16, 16), 8, 3, 1),     # 8x8 "same" maps: planes, one image an item
    ((3, 4, 28, 28), 8, 3, 1),     # 14x14 "same" maps: lane rows
]


def _inputs(shape, dtype, rng):
    """Values with exact ties, zeros (ReLU's kink), NaN and inf."""
    x = rng.integers(-3, 4, size=shape).astype(dtype)
    x[0, 0, :4, :4] = 0
    x[-1, 1, 0, :3] = np.nan
    x[-1, -1, 2, 2] = np.inf
    x[0, -1, 3, 3] = -np.inf
    return x


def _channel_major(a):
    return np.ascontiguousarray(a.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)


class _Spy:
    """Counts the pooling backwards that passed a fused result on, and the separate scatters."""

    def __init__(self, monkeypatch):
        self.passed, self.scatters = [], []
        backward, scatter = MaxPool2dFusedOp.backward, pool_kernels.max_pool2d_scatter

        def spied_backward(op, gy):
            self.passed.append(op.ahead is not None and gy is op.ahead[0])
            return backward(op, gy)

        def spied_scatter(*args, **kw):
            self.scatters.append(args[0].shape)
            return scatter(*args, **kw)

        monkeypatch.setattr(MaxPool2dFusedOp, "backward", spied_backward)
        monkeypatch.setattr(pool_kernels, "max_pool2d_scatter", spied_scatter)


def _stage(x, w, b, gy, fuse: int, threads: int, extra=None, relu: bool = True, retain=None):
    """Gradients [x, w, b] of conv2d(max_pool2d(relu(x), 2), w, b, padding) (+ extra(pooled))."""
    previous = dispatch.FUSE_MAX_POOL_BACKWARD_INTO_CONV
    dispatch.FUSE_MAX_POOL_BACKWARD_INTO_CONV = fuse
    try:
        with config.num_threads(threads):
            ts = [Tensor(_channel_major(x), requires_grad=True), Tensor(w.copy(), requires_grad=True),
                  Tensor(b.copy(), requires_grad=True)]
            r = F.relu(ts[0]) if relu else ts[0] * 1.0
            p = F.max_pool2d(r, 2)
            if retain == "pooled":
                p.retain_grad()
            elif retain == "relu":
                r.retain_grad()
            y = F.conv2d(p, ts[1], ts[2], padding=(w.shape[2] - 1) // 2 if gy.shape[2:] == p.shape[2:] else 0)
            loss = (y * Tensor(gy)).sum()
            if extra is not None:
                loss = loss + extra(p)
            loss.backward()
            kept = {"pooled": p.grad, "relu": r.grad}.get(retain)
            return [t.grad.copy() for t in ts], kept
    finally:
        dispatch.FUSE_MAX_POOL_BACKWARD_INTO_CONV = previous


def _case(shape, f, k, pad, dtype, rng):
    x = _inputs(shape, dtype, rng)
    N, C, H, W = shape
    w = rng.standard_normal((f, C, k, k)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    oh, ow = H // 2 + 2 * pad - k + 1, W // 2 + 2 * pad - k + 1
    gy = rng.standard_normal((N, f, oh, ow)).astype(dtype)
    return x, w, b, gy


def _assert_same_bits(got, want):
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
        assert np.array_equal(np.signbit(a), np.signbit(b))


@pytest.mark.parametrize("shape, f, k, pad", STAGES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_backward_is_bit_identical_to_the_separate_passes_on_1_2_3_threads(shape, f, k, pad, dtype, rng,
                                                                              monkeypatch):
    x, w, b, gy = _case(shape, f, k, pad, dtype, rng)
    want, _ = _stage(x, w, b, gy, 0, 1)
    spy = _Spy(monkeypatch)
    for threads in (1, 2, 3):
        spy.passed.clear(), spy.scatters.clear()
        got, _ = _stage(x, w, b, gy, 1, threads)
        assert spy.passed == [True] and spy.scatters == []      # scattered inside the conv's backward
        _assert_same_bits(got, want)
        unfused, _ = _stage(x, w, b, gy, 0, threads)
        _assert_same_bits(unfused, want)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("relu", [True, False], ids=["relu", "no-relu"])
def test_fused_backward_matches_pytorch(dtype, tol, relu, rng):
    import torch

    x, w, b, gy = _case((7, 6, 29, 27), 16, 5, 0, dtype, rng)
    x[~np.isfinite(x)] = 1.5                                      # NaN and inf gradients compare badly
    got, _ = _stage(x, w, b, gy, 1, 2, relu=relu)
    T = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    f = torch.nn.functional
    r = f.relu(T[0]) if relu else T[0] * 1.0
    (f.conv2d(f.max_pool2d(r, 2), T[1], T[2]) * torch.tensor(gy)).sum().backward()
    for a, t in zip(got, T):
        ref = t.grad.numpy()
        np.testing.assert_allclose(a, ref, rtol=tol, atol=tol * max(1.0, float(np.abs(ref).max())))
    np.testing.assert_array_equal(got[0] != 0, T[0].grad.numpy() != 0)  # the same elements get a gradient


def test_a_second_consumer_of_the_pooled_output_is_not_fused_and_still_exact(rng, monkeypatch):
    """The pooled output also feeds a sum: its gradient is the sum of two, scattered as usual."""
    import torch

    x, w, b, gy = _case((5, 6, 28, 28), 16, 5, 0, np.float64, rng)
    x[~np.isfinite(x)] = 2.0
    extra = lambda p: (p * 3.0).sum()  # noqa: E731
    want, _ = _stage(x, w, b, gy, 0, 2, extra=extra)
    spy = _Spy(monkeypatch)
    got, _ = _stage(x, w, b, gy, 1, 2, extra=extra)
    assert spy.passed == [False] and len(spy.scatters) == 1       # the fused result dropped
    _assert_same_bits(got, want)
    T = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    f = torch.nn.functional
    p = f.max_pool2d(f.relu(T[0]), 2)
    ((f.conv2d(p, T[1], T[2]) * torch.tensor(gy)).sum() + (p * 3.0).sum()).backward()
    np.testing.assert_allclose(got[0], T[0].grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("retain", ["pooled", "relu"])
def test_retained_gradients_are_those_of_the_separate_passes(retain, rng):
    """p.retain_grad(): the conv's gx, unchanged; r.retain_grad(): the pooling's gradient before
    ReLU's mask (no ReLU fusion then), as in PyTorch."""
    x, w, b, gy = _case((5, 6, 28, 28), 16, 5, 0, np.float32, rng)
    want, kept_want = _stage(x, w, b, gy, 0, 2, retain=retain)
    got, kept = _stage(x, w, b, gy, 1, 2, retain=retain)
    _assert_same_bits(got + [kept], want + [kept_want])


def test_more_channels_than_a_forward_item_takes_are_not_fused(rng, monkeypatch):
    """The conv's gx items are channel blocks (more than FORWARD_CHANNEL_BLOCK channels): no
    image is whole after an item, so the pooling scatters after the region, as without fusion."""
    x, w, b, gy = _case((2, 40, 16, 16), 8, 3, 1, np.float32, rng)
    want, _ = _stage(x, w, b, gy, 0, 2)
    spy = _Spy(monkeypatch)
    got, _ = _stage(x, w, b, gy, 1, 2)
    assert spy.passed == [False] and len(spy.scatters) == 1
    _assert_same_bits(got, want)


def test_a_pooling_backward_that_splits_over_threads_itself_is_not_fused(rng, monkeypatch):
    """Two threads' grain of elements or more (LeNet-5's pool 1 from batch 223 on): the pooling's
    own pass already runs on every thread, and it stays separate."""
    x, w, b, gy = _case((8, 6, 28, 28), 16, 5, 0, np.float32, rng)
    want, _ = _stage(x, w, b, gy, 0, 2)
    monkeypatch.setattr(dispatch, "PARALLEL_MIN_ELEMENTS", 8 * 6 * 28 * 28 // 2)
    spy = _Spy(monkeypatch)
    got, _ = _stage(x, w, b, gy, 1, 2)
    assert spy.passed == [False] and len(spy.scatters) == 1
    _assert_same_bits(got, want)


def test_retain_graph_runs_the_fused_backward_twice_with_the_same_result(rng):
    x, w, b, gy = _case((4, 6, 28, 28), 16, 5, 0, np.float32, rng)
    X = Tensor(_channel_major(x), requires_grad=True)
    y = F.conv2d(F.max_pool2d(F.relu(X), 2), Tensor(w), Tensor(b))
    y.backward(gy, retain_graph=True)
    first = X.grad.copy()
    y.backward(gy)
    np.testing.assert_array_equal(X.grad, 2 * first)


# --- conv1's weight gradients in the same region (dispatch.FUSE_CONV_WEIGHT_GRADS_INTO_NEXT_CONV) ---


def _lenet_features(x, ws, gy, fuse: int, threads: int, x_grad=False, relu=True, extra=None):
    """Gradients [x, w1, b1, w2, b2] of conv2(pool(relu(conv1(x)))) (+ extra(conv1's output)), the
    conv1 fusion switched ``fuse``, and whether conv1's backward received the fused result."""
    from cnnkit.functional.conv import Conv2dDirectOp

    previous = dispatch.FUSE_CONV_WEIGHT_GRADS_INTO_NEXT_CONV
    dispatch.FUSE_CONV_WEIGHT_GRADS_INTO_NEXT_CONV = fuse
    passed = []
    backward = Conv2dDirectOp.backward

    def spied(op, g):
        if op.inputs[0].creator is None:                             # conv1
            passed.append(op.ahead is not None and g is op.ahead[0])
        return backward(op, g)

    try:
        Conv2dDirectOp.backward = spied
        with config.num_threads(threads):
            ts = [Tensor(x.copy(), requires_grad=x_grad)] + [Tensor(a.copy(), requires_grad=True) for a in ws]
            y1 = F.conv2d(ts[0], ts[1], ts[2], padding=2)
            p = F.max_pool2d(F.relu(y1) if relu else y1, 2)
            loss = (F.conv2d(p, ts[3], ts[4]) * Tensor(gy)).sum()
            if extra is not None:
                loss = loss + extra(y1)
            loss.backward()
            return [None if t.grad is None else t.grad.copy() for t in ts], passed
    finally:
        Conv2dDirectOp.backward = backward
        dispatch.FUSE_CONV_WEIGHT_GRADS_INTO_NEXT_CONV = previous


def _lenet_case(N, dtype, rng, H=28, W=28):
    x = rng.integers(-3, 4, size=(N, 1, H, W)).astype(dtype)      # ties and zeros
    x[0, 0, :4, :4] = 0
    x[-1, 0, 5, :3] = np.nan
    x[-1, 0, 9, 9] = np.inf
    ws = [rng.standard_normal(s).astype(dtype) for s in [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,)]]
    gy = rng.standard_normal((N, 16, H // 2 - 4, W // 2 - 4)).astype(dtype)
    return x, ws, gy


def _same(got, want):
    _assert_same_bits([g for g in got if g is not None], [w for w in want if w is not None])
    assert [g is None for g in got] == [w is None for w in want]


@pytest.mark.parametrize("N, H, W", [(64, 28, 28), (13, 28, 28), (5, 29, 27), (1, 28, 28)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv1_weight_grads_in_conv2s_region_are_bit_identical_on_1_2_3_threads(N, H, W, dtype, rng):
    x, ws, gy = _lenet_case(N, dtype, rng, H, W)
    want, passed = _lenet_features(x, ws, gy, 0, 1)
    assert passed == [False]
    for threads in (1, 2, 3):
        got, passed = _lenet_features(x, ws, gy, 1, threads)
        assert passed == [True]                                      # conv1's own region skipped
        _same(got, want)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("relu", [True, False], ids=["relu", "no-relu"])
def test_conv1_weight_grads_in_conv2s_region_match_pytorch(dtype, tol, relu, rng):
    import torch

    x, ws, gy = _lenet_case(13, dtype, rng)
    x[~np.isfinite(x)] = 0.5
    got, passed = _lenet_features(x, ws, gy, 1, 2, relu=relu)
    assert passed == [True]
    T = [torch.tensor(x)] + [torch.tensor(a, requires_grad=True) for a in ws]
    f = torch.nn.functional
    y1 = f.conv2d(T[0], T[1], T[2], padding=2)
    p = f.max_pool2d(f.relu(y1) if relu else y1, 2)
    (f.conv2d(p, T[3], T[4]) * torch.tensor(gy)).sum().backward()
    for a, t in zip(got[1:], T[1:]):
        ref = t.grad.numpy()
        np.testing.assert_allclose(a, ref, rtol=tol, atol=tol * max(1.0, float(np.abs(ref).max())))


def test_conv1_needing_an_input_gradient_or_with_a_second_consumer_keeps_its_own_backward(rng):
    """An input that requires grad (conv1's gx would need a region of its own) or a second consumer
    of conv1's output (its gradient is a sum): conv1's backward runs as without the fusion."""
    x, ws, gy = _lenet_case(8, np.float64, rng)
    x[~np.isfinite(x)] = 1.0
    want, _ = _lenet_features(x, ws, gy, 0, 2, x_grad=True)
    got, passed = _lenet_features(x, ws, gy, 1, 2, x_grad=True)
    assert passed == [False]
    _same(got, want)
    extra = lambda y1: (y1 * 0.5).sum()  # noqa: E731
    want, _ = _lenet_features(x, ws, gy, 0, 2, extra=extra)
    got, passed = _lenet_features(x, ws, gy, 1, 2, extra=extra)
    assert passed == [False]
    _same(got, want)


def test_conv1_fusion_off_with_the_pooling_fusion_off(rng, monkeypatch):
    x, ws, gy = _lenet_case(8, np.float32, rng)
    want, _ = _lenet_features(x, ws, gy, 0, 2)
    monkeypatch.setattr(dispatch, "FUSE_MAX_POOL_BACKWARD_INTO_CONV", 0)
    got, passed = _lenet_features(x, ws, gy, 1, 2)
    assert passed == [False]
    _same(got, want)
