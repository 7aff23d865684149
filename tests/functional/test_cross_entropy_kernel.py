"""Cross-entropy's compiled pass (backend/kernels/loss.py) against the NumPy reference.

The kernel takes (M, K) float logits with (M,) signed integer targets, without class weights
or label smoothing; its values agree with the reference's to a few units in the last place
(libm's exp/log and float64 row sums instead of NumPy's), with the same NaN / inf pattern,
the same errors, and the same gradient arithmetic. PyTorch agreement:
tests/functional/test_loss_vs_torch.py (which runs the kernel where it applies).
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit.functional as F
from cnnkit import Tensor, config
from cnnkit.backend import dispatch
from cnnkit.backend.kernels import AVAILABLE
from cnnkit.backend.kernels import loss as loss_kernels

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="numba is not installed")

TOL = {np.float32: 1e-6, np.float64: 1e-14}


@pytest.fixture
def kernel_calls(monkeypatch):
    """The number of compiled forward calls made while the test runs."""
    calls = []
    original = loss_kernels.cross_entropy_forward

    def counted(*args):
        calls.append(args[0].shape)
        return original(*args)

    monkeypatch.setattr(loss_kernels, "cross_entropy_forward", counted)
    return calls


def loss_and_grad(x, t, kernels, **kwargs):
    with config.kernels(kernels):
        xt = Tensor(x.copy(), requires_grad=True)
        loss = F.cross_entropy(xt, t, **kwargs)
        (loss.sum() if loss.ndim else loss).backward()
    return loss.data, xt.grad


def assert_like_reference(x, t, **kwargs):
    """Kernel and reference: equal non-finite entries, finite ones within TOL of the logits' scale."""
    tol = TOL[x.dtype.type]
    scale = max(1.0, float(np.nanmax(np.abs(np.where(np.isfinite(x), x, 0)))))
    with np.errstate(invalid="ignore"):
        ref = loss_and_grad(x, t, False, **kwargs)
    new = loss_and_grad(x, t, True, **kwargs)
    for a, b in zip(new, ref, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        finite = np.isfinite(b)
        np.testing.assert_array_equal(np.isfinite(a), finite)
        np.testing.assert_array_equal(a[~finite], b[~finite])            # NaN where NaN, the same infinities
        np.testing.assert_allclose(a[finite], b[finite], rtol=4 * tol, atol=4 * tol * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("M, K, magnitude", [(64, 10, 3.0), (1, 1, 1.0), (7, 3, 100.0), (33, 17, 0.01), (5, 1000, 10.0)])
def test_kernel_matches_the_reference(kernel_calls, dtype, reduction, M, K, magnitude):
    rng = np.random.default_rng(M * K)
    x = (rng.standard_normal((M, K)) * magnitude).astype(dtype)
    t = rng.integers(0, K, M)
    assert_like_reference(x, t, reduction=reduction)
    t[:: 3] = 4 if K > 4 else -1                                          # rows to ignore
    assert_like_reference(x, t, reduction=reduction, ignore_index=t[0])
    assert len(kernel_calls) == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_non_finite_logits_give_the_references_nan_and_inf(kernel_calls, dtype, reduction):
    x = np.array([[1.0, np.nan, 2.0], [np.inf, 0.0, 1.0], [-np.inf, 0.0, 1.0], [-np.inf, 0.0, 1.0],
                  [-np.inf, -np.inf, -np.inf], [3.0, 1.0, 2.0], [np.nan, 1.0, 0.0]], dtype)
    t = np.array([0, 1, 0, 2, 1, 0, 1])
    assert_like_reference(x, t, reduction=reduction)
    assert_like_reference(x, np.array([0, 1, 0, 2, 1, -100, -100]), reduction=reduction)  # ignored NaN rows
    assert kernel_calls


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_every_row_ignored_as_the_reference(reduction):
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    t = np.full(4, -100)
    assert_like_reference(x, t, reduction=reduction)
    loss, grad = loss_and_grad(x, t, True, reduction=reduction)
    np.testing.assert_array_equal(grad, 0.0)
    if reduction == "mean":
        assert np.isnan(loss)                                             # 0 / 0, as PyTorch


@pytest.mark.parametrize("kernels", [True, False])
def test_a_target_out_of_range_names_the_first_one(kernels):
    x = np.zeros((4, 10), np.float32)
    with config.kernels(kernels), pytest.raises(ValueError, match="cross_entropy target 12 is out of range for 10 classes"):
        F.cross_entropy(Tensor(x), np.array([1, 12, -5, 3]))
    with config.kernels(kernels), pytest.raises(ValueError, match="target -5 is out of range"):
        F.cross_entropy(Tensor(x), np.array([-100, -5, 12, 3]))


@pytest.mark.parametrize("kwargs, target", [
    (dict(weight=np.array([1.0, 2.0, 0.5], np.float32)), None),
    (dict(label_smoothing=0.1), None),
    ({}, "probabilities"),
    ({}, "uint8"),
    ({}, "3d"),
])
def test_other_cases_take_the_reference_bit_for_bit(kernel_calls, kwargs, target):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3, 2) if target == "3d" else (6, 3)).astype(np.float32)
    t = rng.integers(0, 3, (6, 2) if target == "3d" else 6)
    if target == "probabilities":
        t = rng.dirichlet(np.ones(3), 6).astype(np.float32)
    elif target == "uint8":
        t = t.astype(np.uint8)
    new, ref = loss_and_grad(x, t, True, **kwargs), loss_and_grad(x, t, False, **kwargs)
    for a, b in zip(new, ref, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not kernel_calls


def test_the_switch_off_takes_the_reference_bit_for_bit(kernel_calls, monkeypatch):
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((64, 10)).astype(np.float32), rng.integers(0, 10, 64)
    ref = loss_and_grad(x, t, False)
    monkeypatch.setattr(dispatch, "CROSS_ENTROPY_KERNEL", 0)
    for a, b in zip(loss_and_grad(x, t, True), ref, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not kernel_calls


def test_without_grad_no_softmax_is_kept():
    x = np.random.default_rng(2).standard_normal((8, 5)).astype(np.float32)
    t = np.arange(8) % 5
    losses, p, counted = loss_kernels.cross_entropy_forward(x, t, -100, False)
    assert p is None and counted == 8 and losses.shape == (8,)
    with config.no_grad():
        loss = F.cross_entropy(Tensor(x), t)
    np.testing.assert_allclose(loss.data, loss_and_grad(x, t, False)[0], rtol=4e-6)


@pytest.mark.parametrize("ignored", [0, 3])
def test_the_compiled_mean_raises_no_floating_point_flag(kernel_calls, ignored):
    """The compiled path's mean divides the upstream gradient by a count of rows >= 1 without
    ``np.errstate`` (nothing to silence); the same values as the division under it, and no flag
    even where every flag raises (a row count of 0 still takes the silenced division)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 10)).astype(np.float32)
    t = rng.integers(0, 10, 8)
    t[:ignored] = -100
    expected = loss_and_grad(x, t, True)
    with np.errstate(all="raise"):
        got = loss_and_grad(x, t, True)
    assert kernel_calls
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    with config.kernels(True):
        xt = Tensor(x, requires_grad=True)
        F.cross_entropy(xt, t).backward(np.array(np.inf, np.float32))     # inf / 8: no flag either
    assert np.isinf(xt.grad).any()
