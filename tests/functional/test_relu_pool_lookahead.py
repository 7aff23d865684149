"""ReLU and 2x2 max pooling computed ahead by the convolution before them
(``functional/lookahead.py``, ``conv_blocked.conv2d_blocked``'s ``relu_pool``).

From the second call of a conv -> ReLU -> 2x2/2 max pooling chain with the same weight array, the
convolution computes the ReLU and the pooling itself; the results and every gradient must be
the unfused ops' bit for bit on any thread count, and anything that breaks the chain (another
pooling, a write in place, an odd map) must fall back to the ops' own passes.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit.functional as F
from cnnkit import Tensor, config, no_grad
from cnnkit.backend import dispatch, kernels
from cnnkit.functional import lookahead

pytestmark = [
    pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),   # the NaN and inf inputs' sums
]

LAYERS = [
    # (x shape (N, C, H, W), filters F, kernel, padding, x needs a gradient)
    ((64, 1, 28, 28), 6, 5, 2, False),   # LeNet-5's conv1: plane_forward
    ((64, 6, 14, 14), 16, 5, 0, True),   # LeNet-5's conv2: lanes_forward
    ((7, 6, 14, 14), 16, 5, 0, True),    # an odd batch
    ((5, 2, 12, 12), 8, 3, 1, True),     # 12x12 "same" maps
]


def _inputs(shape, F, K, dtype, rng):
    """x with exact ties, zeros, NaN and inf; w, b; the pooled output's upstream gradient."""
    x = rng.integers(-3, 4, size=shape).astype(dtype)
    x[0, 0, :4, :4] = 0
    x[-1, -1, 1, :3] = np.nan
    x[-1, 0, 2, 2] = np.inf
    w = (rng.standard_normal((F, shape[1], K, K)) * 0.3).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    b[0] = -0.0
    return x, w, b


class _Probe:
    """Records whether each convolution ran the ReLU and pooling ahead."""

    def __init__(self, monkeypatch):
        self.ran = []
        note = lookahead.note_conv

        def spied(w, out, plan, ran):
            self.ran.append(ran)
            return note(w, out, plan, ran)

        monkeypatch.setattr(lookahead, "note_conv", spied)


def _run(x, w, b, padding, needs_x, on, threads, calls=3, pool=F.max_pool2d, between=None):
    """Outputs and gradients [y, relu output, gx, gw, gb] of each of ``calls`` calls of
    pool(relu(conv2d(x, w, b)), 2) with one weight array (its values moved in place after each)."""
    previous = dispatch.FUSE_RELU_MAX_POOL_INTO_CONV
    dispatch.FUSE_RELU_MAX_POOL_INTO_CONV = on
    lookahead._local.ahead = None
    wt, bt = Tensor(w.copy(), requires_grad=True), Tensor(b.copy(), requires_grad=True)
    results = []
    try:
        with config.num_threads(threads):
            for k in range(calls):
                xt = Tensor(x + k, requires_grad=needs_x)
                c = F.conv2d(xt, wt, bt, padding=padding)
                if between is not None:
                    between(c)
                r = F.relu(c)
                y = pool(r, 2)
                g = np.linspace(-1, 1, y.data.size).reshape(y.shape).astype(x.dtype)
                (y * Tensor(g)).sum().backward()
                results.append([y.data.copy(), r.data.copy(), None if xt.grad is None else xt.grad.copy(),
                                wt.grad.copy(), bt.grad.copy()])
                with no_grad():
                    wt.data -= 0.01 * wt.grad
                wt.grad = bt.grad = None
    finally:
        dispatch.FUSE_RELU_MAX_POOL_INTO_CONV = previous
    return results


def _assert_same_bits(a, b):
    for step_a, step_b in zip(a, b, strict=True):
        for u, v in zip(step_a, step_b, strict=True):
            if u is None:
                assert v is None
                continue
            assert u.dtype == v.dtype and u.shape == v.shape
            np.testing.assert_array_equal(u.view(f"u{u.itemsize}"), v.view(f"u{v.itemsize}"))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layer", LAYERS)
def test_calls_match_the_separate_ops_bit_for_bit(monkeypatch, rng, layer, dtype, threads):
    shape, F_, K, padding, needs_x = layer
    x, w, b = _inputs(shape, F_, K, dtype, rng)
    probe = _Probe(monkeypatch)
    fused = _run(x, w, b, padding, needs_x, 1, threads)
    ran = probe.ran[:]
    _assert_same_bits(fused, _run(x, w, b, padding, needs_x, 0, threads))
    # the first call learns the chain, the next ones compute it ahead (float64's larger
    # outputs keep the ReLU's bool mask, for which nothing is computed ahead)
    keeps = dispatch.relu_keeps_output(np.empty((shape[0], F_, shape[2], shape[3]), dtype))
    assert ran == [False, keeps, keeps]


def test_against_torch(rng):
    torch = pytest.importorskip("torch")
    x, w, b = _inputs((16, 6, 14, 14), 16, 5, np.float32, rng)
    x[~np.isfinite(x)] = 1.0
    first, second = _run(x, w, b, 0, True, 1, 2, calls=2)   # the second call: computed ahead
    w1 = w.copy()
    w1 -= 0.01 * first[3]                                     # the weights the second call used
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x + 1, w1, b))
    r = torch.relu(torch.nn.functional.conv2d(xt, wt, bt))
    y = torch.nn.functional.max_pool2d(r, 2)
    g = torch.tensor(np.linspace(-1, 1, y.numel()).reshape(y.shape).astype(np.float32))
    (y * g).sum().backward()
    for mine, theirs in zip(second, [y, r, xt.grad, wt.grad, bt.grad], strict=True):
        np.testing.assert_allclose(mine, theirs.detach().numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_chain_that_changes_falls_back_and_is_forgotten(monkeypatch, rng, threads):
    x, w, b = _inputs((8, 6, 14, 14), 16, 5, np.float32, rng)
    wt, bt = Tensor(w, requires_grad=True), Tensor(b, requires_grad=True)
    probe = _Probe(monkeypatch)
    with config.num_threads(threads):
        for _ in range(2):   # learned, then computed ahead
            F.max_pool2d(F.relu(F.conv2d(Tensor(x), wt, bt)), 2).sum().backward()
        assert probe.ran == [False, True]
        computed = F.relu(F.conv2d(Tensor(x), wt, bt))             # computed ahead, not taken:
        y = F.avg_pool2d(computed, 2)
        dispatch.FUSE_RELU_MAX_POOL_INTO_CONV = 0
        try:
            expected = F.avg_pool2d(F.relu(F.conv2d(Tensor(x), wt, bt)), 2)
        finally:
            dispatch.FUSE_RELU_MAX_POOL_INTO_CONV = 1
        np.testing.assert_array_equal(y.data, expected.data)
        F.max_pool2d(F.relu(F.conv2d(Tensor(x), wt, bt)), 2)       # the guess was dropped
    assert probe.ran == [False, True, True, False, False]


def _write_in_place(c):
    with no_grad():
        c[0, 0, 0, 0] = 100.0


def _read_first(c):
    (c * 2.0).sum()


@pytest.mark.parametrize("between", [_write_in_place, _read_first])
def test_what_happens_between_the_convolution_and_the_relu(rng, between):
    """A write into the convolution's output (counted by function.note_write) makes the ReLU
    compute from the written values; another consumer first changes nothing."""
    x, w, b = _inputs((8, 6, 14, 14), 16, 5, np.float32, rng)
    _assert_same_bits(_run(x, w, b, 0, True, 1, 2, between=between), _run(x, w, b, 0, True, 0, 2, between=between))


@pytest.mark.parametrize("shape", [(4, 6, 15, 14), (4, 6, 14, 15)])
def test_odd_maps_are_not_computed_ahead(monkeypatch, rng, shape):
    x, w, b = _inputs(shape, 16, 3, np.float32, rng)
    probe = _Probe(monkeypatch)
    _assert_same_bits(_run(x, w, b, 1, True, 1, 2), _run(x, w, b, 1, True, 0, 2))
    assert probe.ran[:3] == [False, False, False]


def test_a_retained_relu_gradient_is_unchanged(rng):
    x, w, b = _inputs((8, 6, 14, 14), 16, 5, np.float32, rng)
    grads = []
    for on in (1, 0):
        dispatch.FUSE_RELU_MAX_POOL_INTO_CONV = on
        try:
            wt, bt = Tensor(w, requires_grad=True), Tensor(b, requires_grad=True)
            for _ in range(2):
                r = F.relu(F.conv2d(Tensor(x, requires_grad=True), wt, bt))
                r.retain_grad()
                F.max_pool2d(r, 2).sum().backward()
            grads.append((r.grad, wt.grad))
        finally:
            dispatch.FUSE_RELU_MAX_POOL_INTO_CONV = 1
    np.testing.assert_array_equal(grads[0][0], grads[1][0])
    np.testing.assert_array_equal(grads[0][1], grads[1][1])


def test_a_guess_relearned_every_call_keeps_one_finalizer(rng):
    """A weight whose chain alternates (computed ahead, not taken, learned again) must not
    register a finalizer per call; the guess goes with the weight array."""
    x, w, b = _inputs((4, 6, 14, 14), 16, 5, np.float32, rng)
    wt, bt = Tensor(w.copy(), requires_grad=True), Tensor(b, requires_grad=True)
    key = id(wt.data)
    for _ in range(4):
        F.max_pool2d(F.relu(F.conv2d(Tensor(x), wt, bt)), 2)
        F.avg_pool2d(F.relu(F.conv2d(Tensor(x), wt, bt)), 2)
    assert key in lookahead._watched
    del wt
    assert key not in lookahead._followed and key not in lookahead._watched
