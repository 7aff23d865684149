"""Activations and (log-)softmax: float64 finite-difference gradients (runs without PyTorch)."""

from __future__ import annotations

import numpy as np

import cnnkit.functional as F
from cnnkit import Tensor

from .inputs import Check, away_from_zero, checks, normal

GRADCHECKS = [
    Check("relu", F.relu, away_from_zero(2, 3, 2)),
    Check("leaky_relu", lambda a: F.leaky_relu(a, 0.1), away_from_zero(2, 5)),
    Check("leaky_relu-negative-slope", lambda a: F.leaky_relu(a, -0.4), away_from_zero(2, 5)),
    Check("elu", lambda a: F.elu(a, 0.7), away_from_zero(2, 5)),
    Check("sigmoid", F.sigmoid, lambda rng: 3 * rng.standard_normal((2, 5))),
    Check("tanh", F.tanh, lambda rng: 2 * rng.standard_normal((2, 5))),
    Check("softmax-last", F.softmax, normal(3, 4)),
    Check("softmax-dim0", lambda a: F.softmax(a, 0), normal(3, 4)),
    Check("softmax-channels", lambda a: F.softmax(a, 1), normal(2, 3, 2, 2)),
    Check("log_softmax-last", F.log_softmax, normal(3, 4)),
    Check("log_softmax-channels", lambda a: F.log_softmax(a, 1), normal(2, 3, 2, 2)),
    Check("log_softmax-large", lambda a: F.log_softmax(a, 1), lambda rng: 50 * rng.standard_normal((2, 4))),
    Check("log_softmax-0d", lambda a: F.log_softmax(a, 0) + a, normal()),
    # kinks (hardtanh +-1, relu6 0 and 6, hardsigmoid/hardswish +-3) are measure-zero for these draws
    Check("gelu", F.gelu, lambda rng: 3 * rng.standard_normal((2, 5))),
    Check("gelu-tanh", lambda a: F.gelu(a, "tanh"), lambda rng: 3 * rng.standard_normal((2, 5))),
    Check("erf", F.erf, lambda rng: 2 * rng.standard_normal((2, 5))),
    Check("silu", F.silu, lambda rng: 4 * rng.standard_normal((2, 5))),
    Check("softplus", lambda a: F.softplus(a, 2.0, 3.0), lambda rng: 3 * rng.standard_normal((2, 5))),
    Check("hardtanh", lambda a: F.hardtanh(a, -0.5, 1.5), lambda rng: 2 * rng.standard_normal((2, 5))),
    Check("relu6", F.relu6, lambda rng: 5 * rng.standard_normal((2, 5))),
    Check("hardsigmoid", F.hardsigmoid, lambda rng: 4 * rng.standard_normal((2, 5))),
    Check("hardswish", F.hardswish, lambda rng: 4 * rng.standard_normal((2, 5))),
]


@checks(GRADCHECKS)
def test_activations_gradcheck(check, rng):
    check.run(rng)


def test_nan_in_nan_out_and_gradients_do_not_hide_it():
    x = Tensor(np.array([np.nan, -1.0, 0.0, 2.0]), requires_grad=True)
    y = F.relu(x)
    assert np.isnan(y.data[0])
    y.backward(np.ones(4))
    np.testing.assert_array_equal(x.grad, [1.0, 0.0, 0.0, 1.0])  # PyTorch's threshold_backward
    x.grad = None
    F.elu(x).backward(np.ones(4))
    assert np.isnan(x.grad[0]) and np.isfinite(x.grad[1:]).all()


def test_softmax_of_an_empty_axis_is_empty():
    x = Tensor(np.ones((2, 0)), requires_grad=True)
    y = F.softmax(x, 1)
    assert y.shape == (2, 0)
    y.sum().backward()
    assert x.grad.shape == (2, 0)
