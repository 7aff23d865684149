"""The autograd engine: graph recording, backward order, accumulation, memory, dtypes."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import cnnkit
import cnnkit.functional as F
from cnnkit import ShapeError, Tensor


def test_gradient_accumulates_when_a_tensor_is_reused():
    x = Tensor(np.array([3.0]), requires_grad=True)
    (x * x + x).backward()  # d/dx (x^2 + x) = 2x + 1
    np.testing.assert_allclose(x.grad, [7.0])


def test_leaf_gradients_accumulate_across_backward_calls():
    x = Tensor(np.array([2.0]), requires_grad=True)
    (x * 3).backward()
    (x * 3).backward()
    np.testing.assert_allclose(x.grad, [6.0])


def test_backward_handles_graphs_deeper_than_the_recursion_limit():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(5_000):
        y = y * 1.0
    y.backward()
    np.testing.assert_allclose(x.grad, [1.0])


def test_diamond_graph_sums_both_paths_before_going_further_back():
    # x -> a -> (b, c) -> d: a's gradient must include both b and c before a's backward.
    x = Tensor(np.array([2.0]), requires_grad=True)
    a = x * x          # 4, da/dx = 2x
    b = a * 3.0
    c = a * a          # dc/da = 2a
    d = b + c          # dd/da = 3 + 2a = 11
    d.backward()
    np.testing.assert_allclose(x.grad, [11.0 * 4.0])


def test_operator_results_match_numpy_and_broadcast_gradients_sum_back():
    rng = np.random.default_rng(0)
    a = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    b = Tensor(rng.standard_normal((4,)), requires_grad=True)
    y = (a * b + a / (b * b + 1) - b) ** 2
    expected = (a.data * b.data + a.data / (b.data**2 + 1) - b.data) ** 2
    np.testing.assert_allclose(y.data, expected)
    y.sum().backward()
    assert a.grad.shape == (3, 4) and b.grad.shape == (4,)
    cnnkit.gradcheck(lambda a, b: (a * b + a / (b * b + 1) - b) ** 2, [a.data, b.data])


def test_reflected_operators_with_scalars_and_arrays():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = 1 - x + 2 * x - 3 / x + np.array([1.0, 1.0]) * x
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [-1 + 2 + 3 / 1 + 1, -1 + 2 + 3 / 4 + 1])


def test_comparisons_return_bool_tensors_without_gradient():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    result = x > 1.5
    assert isinstance(result, Tensor) and result.dtype == np.bool_
    assert not result.requires_grad and result.creator is None
    np.testing.assert_array_equal(result.data, [False, True, True])
    np.testing.assert_array_equal((x == 2.0).data, [False, True, False])


def test_float32_stays_float32_and_float64_stays_float64():
    x32 = Tensor(np.ones(3, np.float32), requires_grad=True)
    y = (x32 * 2.5 + 1) / 3
    assert y.dtype == np.float32
    y.sum().backward()
    assert x32.grad.dtype == np.float32
    x64 = Tensor(np.ones((1, 2, 5, 5)), requires_grad=True)
    w64 = Tensor(np.ones((3, 2, 3, 3)), requires_grad=True)
    out = F.max_pool2d(F.relu(F.conv2d(x64, w64, padding=1)), 2)
    assert out.dtype == np.float64
    out.sum().backward()
    assert x64.grad.dtype == np.float64 and w64.grad.dtype == np.float64


def test_python_floats_use_the_default_dtype():
    assert Tensor([1.0, 2.0]).dtype == np.float32
    with cnnkit.default_dtype(np.float64):
        assert Tensor([1.0, 2.0]).dtype == np.float64
    assert Tensor([1.0]).dtype == np.float32
    assert Tensor([1, 2]).dtype.kind == "i"


def test_no_grad_records_nothing_and_restores_the_mode():
    x = Tensor(np.ones(2), requires_grad=True)
    with cnnkit.no_grad():
        y = x * 2
        assert not cnnkit.is_grad_enabled()
        with cnnkit.enable_grad():
            z = x * 2
    assert cnnkit.is_grad_enabled()
    assert y.creator is None and not y.requires_grad
    assert z.creator is not None


def test_graph_is_freed_after_backward_unless_retained():
    x = Tensor(np.ones(3), requires_grad=True)
    y = (x * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()
    z = (x * 2).sum()
    z.backward(retain_graph=True)
    z.backward()
    np.testing.assert_allclose(x.grad, [2 + 2 + 2] * 3)


def test_intermediate_arrays_are_released_after_backward():
    x = Tensor(np.ones((4, 4)), requires_grad=True)
    h = x * 3.0
    op_ref = weakref.ref(h.creator)
    loss = (h * h).sum()
    del h
    loss.backward()
    del loss
    gc.collect()
    assert op_ref() is None


def test_retain_grad_keeps_an_intermediate_gradient():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x * 3
    h.retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad, 2 * h.data)
    np.testing.assert_allclose(x.grad, 18 * x.data)


def test_backward_on_a_non_scalar_needs_a_gradient_of_its_shape():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match=r"one-element tensor, got shape \(2, 3\)"):
        y.backward()
    with pytest.raises(ShapeError, match=r"expects grad of shape \(2, 3\), got \(3,\)"):
        y.backward(np.ones(3))
    y.backward(np.full((2, 3), 0.5))
    np.testing.assert_allclose(x.grad, np.ones((2, 3)))


def test_backward_without_requires_grad_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(1)).backward()


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="floating dtype"):
        Tensor(np.arange(3), requires_grad=True)


def test_inputs_that_do_not_require_grad_get_no_gradient():
    x = Tensor(np.ones((1, 1, 4, 4)))
    w = Tensor(np.ones((1, 1, 3, 3)), requires_grad=True)
    F.conv2d(x, w).sum().backward()
    assert x.grad is None
    np.testing.assert_allclose(w.grad, np.full((1, 1, 3, 3), 4.0))


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: x.reshape(3, 4).transpose(1, 0)[1:3, ::2],
        lambda x: x.sum(dim=1, keepdim=True) * x.mean(axis=0),
        lambda x: x.amax(axis=1) + x.max(dim=0).values.sum(),
        lambda x: x[np.array([0, 0, 2]), 1:],
        lambda x: (x.abs() + 1).log().exp().sqrt(),
        lambda x: x.T @ x,
        lambda x: F.cat([x, x * 2], dim=1)[:, 1:5] + F.stack([x, x], dim=0).sum(axis=0),
    ],
    ids=["reshape-transpose-slice", "sum-mean", "max", "fancy-index", "unary-chain", "matmul", "cat-stack"],
)
def test_tensor_methods_pass_gradcheck(fn):
    x = np.random.default_rng(1).standard_normal((3, 4)) + 0.1
    cnnkit.gradcheck(fn, [x])
