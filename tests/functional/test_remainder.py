"""fmod and remainder: float64 finite-difference gradients and errors (PyTorch comparisons
are in ``test_remainder_vs_torch.py``).

Inputs keep a / b away from whole numbers, where the remainder jumps and finite
differences are meaningless.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit.functional as F
from cnnkit import Tensor

from .inputs import Check, checks, const


def _off_whole(*shape):
    """Dividends whose quotient by _DIVISOR sits a quarter away from a whole number."""
    return lambda rng: (rng.integers(-5, 6, shape) + rng.choice([0.25, 0.75], shape)) * 1.5


_DIVISOR = const(np.array([1.5, -1.5, 1.5]))

GRADCHECKS = [
    Check("fmod", F.fmod, _off_whole(2, 3), _DIVISOR),
    Check("remainder", F.remainder, _off_whole(2, 3), _DIVISOR),
    Check("remainder-scalar-divisor", lambda a: F.remainder(a, 1.5) * a, _off_whole(4)),
]


@checks(GRADCHECKS)
def test_remainder_gradcheck(check, rng):
    check.run(rng)


@pytest.mark.parametrize("fn, name", [(F.fmod, "fmod"), (F.remainder, "remainder")])
def test_remainder_errors_name_the_op(fn, name):
    with pytest.raises(ZeroDivisionError, match=rf"^{name}: integer division by zero$"):
        fn(Tensor(np.array([3, 4])), Tensor(np.array([2, 0])))
    with pytest.raises(TypeError, match=rf"^{name} is not defined for bool tensors, as in PyTorch$"):
        fn(Tensor(np.array([True])), Tensor(np.array([True])))


def test_remainder_of_a_float_by_zero_is_nan_silently():
    with np.errstate(all="raise"):
        y = F.fmod(Tensor(np.array([1.0, -2.0])), 0.0)
    assert np.isnan(y.data).all()
