"""Arithmetic, reductions and elementwise math: float64 finite-difference gradients and errors.

Runs without PyTorch (``test_math_vs_torch.py`` compares with it). Inputs stay away from
kinks and ties, where finite differences are meaningless; those conventions are checked
against PyTorch.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit.functional as F
from cnnkit import Tensor
from cnnkit.errors import DimensionError, ShapeError

from .inputs import Check, away_from_zero, checks, distinct, normal, positive

GRADCHECKS = [
    Check("add-broadcast", lambda a, b: a + b, normal(2, 3), normal(3)),
    Check("sub-broadcast", lambda a, b: a - b, normal(2, 1, 3), normal(4, 1)),
    Check("mul-broadcast", lambda a, b: a * b, normal(3, 1), normal(1, 4)),
    Check("div-broadcast", lambda a, b: a / b, normal(2, 3), away_from_zero(2, 1)),
    Check("pow-tensor-exponent", lambda a, b: a**b, positive(2, 3), normal(3)),
    Check("pow-scalar", lambda a: a**3, normal(2, 3)),
    Check("pow-fractional", lambda a: a**-0.5, positive(2, 3)),
    Check("rpow", lambda a: 1.7**a, normal(2, 3)),
    Check("scalar-ops", lambda a: (2.0 - a) / 3.0 + 1.5 * a - 4.0 / (a + 3.0), positive(3, 2)),
    Check("neg", lambda a: -a, normal(4)),
    Check("reuse", lambda a: a * a * a + a, normal(2, 3)),
    Check("F.add-F.mul", lambda a, b: F.mul(F.add(a, b), F.sub(a, F.div(b, 2.0))), normal(3), normal(2, 3)),
    Check("F.pow-F.neg", lambda a, b: F.neg(F.pow(a, b)), positive(3), normal(3)),
    Check("matmul", lambda a, b: a @ b, normal(3, 4), normal(4, 2)),
    Check("matmul-vec-vec", lambda a, b: a @ b, normal(4), normal(4)),
    Check("matmul-vec-mat", lambda a, b: a @ b, normal(3), normal(3, 2)),
    Check("matmul-mat-vec", lambda a, b: F.matmul(a, b), normal(2, 3), normal(3)),
    Check("matmul-batched-broadcast", lambda a, b: a @ b, normal(2, 1, 2, 3), normal(3, 3, 2)),
    Check("add-sub-alpha", lambda a, b: F.sub(F.add(a, b, alpha=-1.5), a, alpha=0.25), normal(2, 3), normal(3)),
    Check("clamp", lambda a: F.clamp(a, -0.5, 0.5) + a.clamp(min=0.1) * a.clip(max=-0.1), away_from_zero(3, 4)),
    # tensor bounds (broadcast, with lo > hi in some places): the gradients of all three
    Check("clamp-tensor-bounds", lambda a, lo, hi: F.clamp(a, lo, hi) + a.clamp(min=lo) * a.clip(max=hi),
          lambda rng: 2 * rng.standard_normal((3, 4)), normal(4), lambda rng: 0.5 + rng.standard_normal((3, 1))),
    Check("clone", lambda a: a.transpose(0, 1).clone() * a.transpose(0, 1), normal(2, 3)),
    Check("var", lambda a: a.var(1), normal(3, 4)),
    Check("var-correction-0-keepdim", lambda a: F.var(a, (0, 2), correction=0, keepdim=True), normal(2, 3, 2)),
    Check("std", lambda a: a.std(), normal(3, 4)),
    Check("std-dim", lambda a: F.std(a, -1, unbiased=False), normal(3, 4)),
    Check("sum-all", lambda a: a.sum(), normal(2, 3, 2)),
    Check("sum-dim", lambda a: a.sum(1), normal(2, 3, 2)),
    Check("sum-dims-keepdim", lambda a: F.sum(a, (0, 2), keepdim=True), normal(2, 3, 2)),
    Check("sum-0d-dim0", lambda a: a.sum(0) * 2.0, normal()),
    Check("mean-all", lambda a: a.mean(), normal(2, 3, 2)),
    Check("mean-negative-dim", lambda a: F.mean(a, -1, keepdim=True), normal(2, 3, 2)),
    Check("mean-axis-alias", lambda a: a.mean(axis=(0, 1), keepdims=True), normal(2, 3, 2)),
    Check("amax-all", lambda a: a.amax(), distinct(2, 3, 2)),
    Check("amax-dim", lambda a: a.amax(1), distinct(2, 3, 2)),
    Check("amax-dims-keepdim", lambda a: F.amax(a, (0, -1), keepdim=True), distinct(2, 3, 2)),
    Check("amin-dim", lambda a: a.amin(-1), distinct(2, 3, 2)),
    Check("max-all", lambda a: a.max(), distinct(2, 3, 2)),
    Check("max-dim-values", lambda a: a.max(1).values, distinct(2, 3, 2)),
    Check("min-dim-keepdim", lambda a: a.min(0, keepdim=True)[0], distinct(2, 3, 2)),
    Check("exp", F.exp, normal(2, 3)),
    Check("log", F.log, positive(2, 3)),
    Check("sqrt", F.sqrt, positive(2, 3)),
    Check("abs", F.abs, away_from_zero(2, 3)),
    Check("sign-times-x", lambda a: a.sign() * a, away_from_zero(2, 3)),
    Check("tensor-methods", lambda a: a.exp().log().sqrt().abs(), positive(2, 3)),
    Check("cast", lambda a: F.cast(a, np.float64) * 2.0, normal(3)),
]


@checks(GRADCHECKS)
def test_math_ops_gradcheck(check, rng):
    check.run(rng)


def test_reductions_refuse_bad_dims_with_clear_errors():
    x = Tensor(np.ones((2, 3)))
    with pytest.raises(DimensionError, match=r"sum: dimension out of range \(expected to be in range of "
                                             r"\[-2, 1\], but got 2\) for an input with 2 dimensions"):
        x.sum(2)
    with pytest.raises(IndexError):  # PyTorch users catch IndexError
        x.mean(-3)
    with pytest.raises(DimensionError, match=r"amax: dim 1 appears more than once in dim=\(1, -1\)"):
        x.amax((1, -1))
    with pytest.raises(TypeError, match="sum expects dim as an int, a tuple of ints or None, got 1.5"):
        x.sum(1.5)
    with pytest.raises(TypeError, match="mean got both dim=0 and axis=1; pass one of them"):
        x.mean(0, axis=1)
    with pytest.raises(TypeError, match="mean expects a floating input, got dtype int64"):
        Tensor(np.arange(3)).mean()
    with pytest.raises(ShapeError, match=r"amax cannot reduce over an empty dimension \(input shape \(0, 3\)"):
        Tensor(np.ones((0, 3))).amax(0)
    with pytest.raises(ShapeError, match=r"max\(\) of an empty tensor \(shape \(0, 3\)\) has no value"):
        Tensor(np.ones((0, 3))).max()


def test_max_with_dim_returns_values_and_indices():
    x = Tensor(np.array([[1.0, 5.0, 5.0], [7.0, 2.0, 7.0]]), requires_grad=True)
    values, indices = x.max(1)
    np.testing.assert_array_equal(values.data, [5.0, 7.0])
    np.testing.assert_array_equal(indices.data, [1, 0])  # the first maximum
    assert indices.dtype == np.int64 and not indices.requires_grad
    result = x.max(dim=1, keepdim=True)
    assert result.values.shape == (2, 1) and result.indices.shape == (2, 1)
    values.sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 1, 0], [1, 0, 0]])  # the whole gradient to one element


def test_argmax_is_an_int64_tensor_over_the_flattened_input_by_default():
    x = Tensor(np.array([[1.0, 9.0], [9.0, 3.0]]))
    assert x.argmax().item() == 1 and x.argmin().item() == 0
    np.testing.assert_array_equal(x.argmax(dim=0).data, [1, 0])
    np.testing.assert_array_equal(F.argmin(x, axis=1, keepdims=True).data, [[0], [1]])


def test_sum_of_nothing_is_zero_and_mean_of_nothing_is_nan():
    x = Tensor(np.ones((0, 3)), requires_grad=True)
    assert x.sum().item() == 0.0
    assert np.isnan(x.mean().item())
    x.mean(0).sum().backward()
    assert x.grad.shape == (0, 3)


def test_pow_gradients_at_base_zero_follow_pytorch():
    a = Tensor(np.array([0.0, 0.0, 0.0, 2.0]), requires_grad=True)
    b = Tensor(np.array([0.0, -1.0, 2.0, 0.0]), requires_grad=True)
    (a**b).sum().backward()
    # d/da: 0 where b == 0 (0**0 included), -inf at 0**-1, 2*0 at 0**2
    np.testing.assert_array_equal(a.grad, [0.0, -np.inf, 0.0, 0.0])
    # d/db: 0 where a == 0 and b >= 0, -inf at 0**-1 (inf * log 0), log(2) at 2**0
    np.testing.assert_array_equal(b.grad, [0.0, -np.inf, 0.0, np.log(2.0)])


def test_matmul_refuses_0d_and_mismatched_operands_with_clear_errors():
    with pytest.raises(ShapeError, match=r"matmul expects operands of at least 1 dimension, got shapes \(\) and \(3,\)"):
        Tensor(np.array(1.0)) @ Tensor(np.ones(3))
    with pytest.raises(ShapeError, match=r"matmul cannot multiply shapes \(2, 3\) and \(4, 2\) \(3 != 4\)"):
        Tensor(np.ones((2, 3))) @ Tensor(np.ones((4, 2)))


def test_division_by_zero_and_log_of_zero_are_silent_like_pytorch():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = Tensor(np.array([1.0, 0.0, -1.0]), requires_grad=True)
        y = (x / 0.0).sum() + x.log().sum() + x.sqrt().sum()
        y.backward()
    assert np.isnan(y.item())
