"""Max pooling's backward applying the mask of the ReLU before it (``functional/pool.py``, ``_relu_before``).

The fused backward (2x2/2 windows) must give exactly the gradients of the two separate
passes (a select either way), in every layout and dtype, with NaN, inf, zeros and ties; it
must fire only where the ReLU's output has no other observer of its gradient, and agree
with PyTorch. Other windows keep the two passes.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit.functional as F
from cnnkit import Tensor, config
from cnnkit.backend import dispatch, kernels
from cnnkit.backend.kernels import elementwise
from cnnkit.functional.activation import ReLUOp
from tests.backend.arrays import cnhw

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")

POOLS = [
    # (input shape, kernel, stride, padding)
    ((8, 6, 28, 28), 2, 2, 0),     # LeNet-5 conv1's output: the 2x2 kernel, above ELEMENTWISE_MIN_SIZE
    ((3, 5, 9, 7), 2, 2, 0),       # odd sizes: a last row and column in no window
    ((2, 4, 13, 13), 3, 2, 1),     # ResNet's stem pooling (3x3/2, padded): not fused
    ((2, 3, 11, 11), 3, 1, 1),     # overlapping windows: gradients added; not fused
]


def _inputs(shape, dtype, rng):
    """Values with exact ties, zeros (ReLU's kink), NaN and inf."""
    x = rng.integers(-3, 4, size=shape).astype(dtype)
    x[0, 0, :4, :4] = 0
    x[1, 1, 0, :3] = np.nan
    x[-1, -1, 2, 2] = np.inf
    x[-1, 0, 3, 3] = -np.inf
    return x


def _relu_pool(x, gy, k, s, p, fuse: int, kernels_on: bool = True, layout=np.asarray):
    """(y, gx) of max_pool2d(relu(x)) with the fusion switched ``fuse``; gx is x's gradient."""
    previous = dispatch.FUSE_RELU_INTO_MAX_POOL_BACKWARD
    dispatch.FUSE_RELU_INTO_MAX_POOL_BACKWARD = fuse
    try:
        with config.kernels(kernels_on):
            X = Tensor(layout(x.copy()), requires_grad=True)
            y = F.max_pool2d(F.relu(X), k, s, p)
            y.backward(gy)
            return y.data.copy(), X.grad.copy()
    finally:
        dispatch.FUSE_RELU_INTO_MAX_POOL_BACKWARD = previous


@pytest.mark.parametrize("shape, k, s, p", POOLS)
@pytest.mark.parametrize("layout", [np.asarray, cnhw], ids=["nchw", "cnhw"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_backward_equals_the_two_passes_and_the_reference_exactly(shape, k, s, p, layout, dtype, rng,
                                                                        monkeypatch):
    x = _inputs(shape, dtype, rng)
    gy_shape = F.max_pool2d(Tensor(x), k, s, p).shape
    gy = rng.standard_normal(gy_shape).astype(dtype)
    y_ref, gx_ref = _relu_pool(x, gy, k, s, p, 0, kernels_on=False, layout=layout)  # NumPy reference
    y_two, gx_two = _relu_pool(x, gy, k, s, p, 0, layout=layout)                     # two kernel passes
    calls = []
    relu_grad = elementwise.relu_grad
    monkeypatch.setattr(elementwise, "relu_grad", lambda *a: calls.append(a) or relu_grad(*a))
    y, gx = _relu_pool(x, gy, k, s, p, 1, layout=layout)
    assert len(calls) == (0 if (k, s, p) == (2, 2, 0) else 1)  # ReLU's own backward pass skipped for 2x2/2
    for a, b in ((y, y_ref), (y, y_two), (gx, gx_two)):
        np.testing.assert_array_equal(a, b)
        assert np.array_equal(np.signbit(a), np.signbit(b))  # -0.0 where the separate passes give it
    if k == s:  # windows apart: one gradient per element, exactly the reference's
        np.testing.assert_array_equal(gx, gx_ref)
    else:       # overlapping windows: the reference adds the gradients tap by tap, the kernel window by window
        np.testing.assert_allclose(gx, gx_ref, rtol=1e-12 if dtype == np.float64 else 1e-6, atol=1e-6)
        np.testing.assert_array_equal(gx != 0, gx_ref != 0)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_lenet_stage_matches_pytorch_forward_and_every_gradient(dtype, tol, rng):
    """conv -> ReLU -> 2x2 max-pool -> conv -> ReLU -> max-pool, as LeNet-5's features, odd batch."""
    import torch

    x = rng.standard_normal((5, 1, 28, 28)).astype(dtype)
    w1, b1 = rng.standard_normal((6, 1, 5, 5)).astype(dtype), rng.standard_normal(6).astype(dtype)
    w2, b2 = rng.standard_normal((16, 6, 5, 5)).astype(dtype), rng.standard_normal(16).astype(dtype)
    arrays = [x, w1, b1, w2, b2]
    ts = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    y = F.max_pool2d(F.relu(F.conv2d(ts[0], ts[1], ts[2], padding=2)), 2)
    y = F.max_pool2d(F.relu(F.conv2d(y, ts[3], ts[4])), 2)
    gy = rng.standard_normal(y.shape).astype(dtype)
    calls = []
    original = ReLUOp.backward
    ReLUOp.backward = lambda self, g: calls.append(g is self.premasked) or original(self, g)
    try:
        y.backward(gy)
    finally:
        ReLUOp.backward = original
    assert calls == [True, True]  # both ReLUs received the pooling's masked gradient
    T = [torch.tensor(a, requires_grad=True) for a in arrays]
    f = torch.nn.functional
    Y = f.max_pool2d(f.relu(f.conv2d(T[0], T[1], T[2], padding=2)), 2)
    Y = f.max_pool2d(f.relu(f.conv2d(Y, T[3], T[4])), 2)
    Y.backward(torch.tensor(gy))
    scale = lambda a: tol * max(1.0, float(np.abs(a).max()))  # noqa: E731
    np.testing.assert_allclose(y.data, Y.detach().numpy(), rtol=tol, atol=scale(Y.detach().numpy()))
    for t, T_ in zip(ts, T):
        np.testing.assert_allclose(t.grad, T_.grad.numpy(), rtol=tol, atol=scale(T_.grad.numpy()))


def test_a_retained_relu_gradient_stays_unmasked_as_in_pytorch(rng):
    """relu(x).retain_grad(): its .grad is the pooling's gradient, not yet masked; no fusion."""
    import torch

    x = _inputs((4, 3, 16, 16), np.float32, rng)
    x[np.isnan(x)] = 1.0
    gy = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    X = Tensor(x.copy(), requires_grad=True)
    r = F.relu(X)
    r.retain_grad()
    F.max_pool2d(r, 2).backward(gy)
    T = torch.tensor(x, requires_grad=True)
    R = torch.relu(T)
    R.retain_grad()
    torch.nn.functional.max_pool2d(R, 2).backward(torch.tensor(gy))
    np.testing.assert_array_equal(r.grad, R.grad.numpy())
    np.testing.assert_array_equal(X.grad, T.grad.numpy())
    assert (r.grad != X.grad).any()  # windows whose maximum is at ReLU's zero: kept in r.grad only


def test_a_second_consumer_of_the_relu_output_gets_the_relu_masking_as_usual(rng):
    """y = pool(r) summed with r * 2: r's gradient is the sum of two; the ReLU masks the sum."""
    import torch

    x = _inputs((4, 3, 16, 16), np.float64, rng)
    x[np.isnan(x)] = 2.0
    X = Tensor(x.copy(), requires_grad=True)
    r = F.relu(X)
    (F.max_pool2d(r, 2).sum() + (r * 2.0).sum()).backward()
    T = torch.tensor(x, requires_grad=True)
    R = torch.relu(T)
    (torch.nn.functional.max_pool2d(R, 2).sum() + (R * 2.0).sum()).backward()
    np.testing.assert_array_equal(X.grad, T.grad.numpy())


def test_retain_graph_runs_the_fused_backward_twice_with_the_same_result(rng):
    x = _inputs((8, 6, 28, 28), np.float32, rng)
    X = Tensor(x, requires_grad=True)
    y = F.max_pool2d(F.relu(X), 2)
    y.backward(np.ones(y.shape, np.float32), retain_graph=True)
    first = X.grad.copy()
    y.backward(np.ones(y.shape, np.float32))
    np.testing.assert_array_equal(X.grad, 2 * first)
