"""cnnkit.gradcheck itself: the harness every op's gradient test relies on must be able to fail."""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit
from cnnkit import GradcheckError


class WrongSquare(cnnkit.Function):
    """y = x**2 with a deliberately wrong backward (2.1 x instead of 2 x)."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, gy):
        return gy * 2.1 * self.x


def test_gradcheck_catches_a_wrong_backward(rng):
    with pytest.raises(GradcheckError, match=r"input 0 \(shape \(2, 3\)\) element"):
        cnnkit.gradcheck(lambda x: WrongSquare()(x), [rng.standard_normal((2, 3))])


def test_gradcheck_reports_the_worst_element():
    with pytest.raises(GradcheckError, match=r"input 0 \(shape \(3,\)\) element \(2,\): backward gives [-0-9.]+, finite differences give"):
        cnnkit.gradcheck(lambda x: WrongSquare()(x), [np.array([0.0, 0.0, 3.0])])


def test_gradcheck_passes_integer_inputs_through_as_constants(rng):
    x, index = rng.standard_normal(5), np.array([4, 0, 0])
    assert cnnkit.gradcheck(lambda x, i: x[i.data] * 2.0, [x, index])


def test_gradcheck_needs_a_tensor_back():
    with pytest.raises(TypeError, match="gradcheck expects fn to return a Tensor, got ValuesIndices"):
        cnnkit.gradcheck(lambda x: x.max(0), [np.ones(3)])
