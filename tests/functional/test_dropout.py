"""dropout: mask statistics, scaling, gradient and the generator contract (runs without PyTorch)."""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit
import cnnkit.functional as F
from cnnkit import Tensor

from .inputs import Check, checks, normal


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_dropout_mask_statistics_scaling_and_gradient(p, dtype, rng):
    n = 200_000
    x = Tensor(rng.uniform(0.5, 1.5, (n // 500, 500)).astype(dtype), requires_grad=True)
    y = F.dropout(x, p, training=True, generator=np.random.default_rng(1))
    assert y.dtype == np.dtype(dtype)
    dropped = y.data == 0
    # the number of zeros is Binomial(n, p): within 5 standard deviations
    assert abs(dropped.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    # survivors are scaled by 1 / (1 - p)
    scale = dtype(1 / (1 - p))
    tol = 1e-6 if dtype == np.float32 else 1e-15
    np.testing.assert_allclose(y.data[~dropped], x.data[~dropped] * scale, rtol=tol)
    # the gradient is the same mask times the same scaling
    gy = rng.standard_normal(x.shape).astype(dtype)
    y.backward(gy)
    assert x.grad.dtype == np.dtype(dtype)
    np.testing.assert_allclose(x.grad, np.where(dropped, 0, gy * scale), rtol=tol)


def test_dropout_mask_comes_from_the_generator(rng):
    x = Tensor(rng.standard_normal((50, 40)))
    a = F.dropout(x, 0.5, generator=np.random.default_rng(7))
    b = F.dropout(x, 0.5, generator=np.random.default_rng(7))
    c = F.dropout(x, 0.5, generator=np.random.default_rng(8))
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)
    cnnkit.manual_seed(3)
    d = F.dropout(x, 0.5)
    cnnkit.manual_seed(3)
    np.testing.assert_array_equal(d.data, F.dropout(x, 0.5).data)


def test_dropout_refuses_p_outside_0_1():
    with pytest.raises(ValueError, match=r"dropout expects p in \[0, 1\], got 1.5"):
        F.dropout(Tensor(np.ones(3)), 1.5)


# a fresh generator with one seed per call: the same mask in every forward pass
GRADCHECKS = [
    Check("dropout", lambda x: F.dropout(x, 0.4, generator=np.random.default_rng(3)), normal(4, 5)),
    Check("dropout-eval", lambda x: F.dropout(x, 0.4, training=False) * 1.0, normal(4, 5)),
]


@checks(GRADCHECKS)
def test_dropout_gradcheck(check, rng):
    check.run(rng)


def test_dropout_refuses_integer_input_while_training_and_passes_it_through_otherwise():
    x = Tensor(np.arange(6).reshape(2, 3))
    with pytest.raises(TypeError, match="dropout expects a floating input .* got int64"):
        F.dropout(x, 0.5)
    assert F.dropout(x, 0.5, training=False) is x
