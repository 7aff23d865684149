"""fmod and remainder against PyTorch: values (floats and integers, signs mixed), dtypes, gradients."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cnnkit.functional as F  # noqa: E402
from cnnkit import Tensor  # noqa: E402

from .inputs import away_from_zero, normal  # noqa: E402
from .torch_compare import check_op  # noqa: E402

PAIRS = [("fmod", F.fmod, torch.fmod), ("remainder", F.remainder, torch.remainder)]


@pytest.mark.parametrize("name, ours, theirs", PAIRS, ids=[p[0] for p in PAIRS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32, np.int8],
                         ids=lambda d: np.dtype(d).name)
def test_values_and_dtypes_match_torch(name, ours, theirs, dtype):
    a = np.array([[7.5, -7.5, 7.0, -7.0, 0.0, 1.0, -1.0, 5.0]]).astype(dtype)
    b = np.array([[2.0], [-2.0], [3.0], [-3.0]]).astype(dtype)
    if np.dtype(dtype).kind == "f":
        a = np.concatenate([a, np.array([[np.inf, np.nan, 1.0, 0.1]] * 1, dtype).repeat(2, 1)], 1)
        b = np.concatenate([b, np.array([[0.0], [np.inf], [0.1], [-0.1]], dtype)], 0)
    got = ours(Tensor(a), Tensor(b))
    expected = theirs(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got.data, expected)


@pytest.mark.parametrize("name, ours, theirs", PAIRS, ids=[p[0] for p in PAIRS])
def test_gradients_match_torch(name, ours, theirs, rng):
    check_op(ours, theirs, [normal(3, 4)(rng) * 4, away_from_zero(4)(rng)], dtype=np.float64, rng=rng)


@pytest.mark.parametrize("dtypes", [(np.float64, np.float64), (np.int64, np.int64), (np.int32, np.float32),
                                    (np.int16, np.uint8)], ids=lambda d: f"{np.dtype(d[0]).name}-{np.dtype(d[1]).name}")
def test_floordiv_and_mod_operators_match_torch(dtypes):
    """``a // b`` is torch.floor_divide (div with rounding_mode='floor') and ``a % b`` torch.remainder,
    with Python numbers on either side."""
    a = np.array([[7, -7, 6, -6, 0, 5]]).astype(dtypes[0])
    b = np.array([[2], [-2], [3], [-4]]).astype(dtypes[1])
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    cases = [(lambda x, y: x // y, Tensor(a), Tensor(b), ta, tb), (lambda x, y: x % y, Tensor(a), Tensor(b), ta, tb)]
    for number in (3, -2.5):
        cases += [(lambda x, y: x // y, Tensor(a), number, ta, number), (lambda x, y: x % y, Tensor(a), number, ta, number),
                  (lambda x, y: x // y, number, Tensor(b), number, tb), (lambda x, y: x % y, number, Tensor(b), number, tb)]
    for op, x, y, tx, ty in cases:
        got, expected = op(x, y), op(tx, ty).numpy()
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got.data, expected)


def test_mod_operator_gradients_match_torch(rng):
    """The gradients of a % b (PyTorch has none for a // b, nor for a number % a tensor)."""
    check_op(lambda a, b: a % b, lambda a, b: a % b, [normal(3, 4)(rng) * 4, away_from_zero(4)(rng)],
             dtype=np.float64, rng=rng)
