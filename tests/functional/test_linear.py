"""F.linear against the naive-loop oracle and finite differences (runs without PyTorch)."""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit.functional as F
from cnnkit import Tensor
from tests import reference

from .inputs import Check, checks, normal


@pytest.mark.parametrize("x_shape, out_features, bias", [((5, 4), 3, True), ((4,), 6, False), ((2, 3, 7), 5, True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_matches_naive_loops(x_shape, out_features, bias, dtype, rng, xp):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((out_features, x_shape[-1])).astype(dtype)
    b = rng.standard_normal(out_features).astype(dtype) if bias else None
    actual = F.linear(Tensor(xp.asarray(x)), Tensor(xp.asarray(w)), None if b is None else Tensor(xp.asarray(b)))
    assert actual.dtype == dtype
    np.testing.assert_allclose(np.asarray(actual.data), reference.linear(x, w, b), rtol=1e-5, atol=1e-5)


GRADCHECKS = [
    Check("linear", F.linear, normal(3, 4), normal(2, 4), normal(2)),
    Check("linear-nobias", F.linear, normal(3, 4), normal(2, 4)),
    Check("linear-3d", F.linear, normal(2, 2, 3), normal(4, 3), normal(4)),
    Check("linear-1d", F.linear, normal(3), normal(2, 3), normal(2)),
]


@checks(GRADCHECKS)
def test_linear_gradcheck(check, rng):
    check.run(rng)
