"""Pooling against the naive-loop oracles and finite differences (runs without PyTorch).

``tests/reference.py`` visits every window element by element, so the oracle shares
nothing with the strided views and compiled kernels under test. Each comparison runs
with the compiled kernels on and off: both paths must agree with the oracle.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit.functional as F
from cnnkit import Tensor, config
from cnnkit.backend import as_numpy
from tests import reference

from .inputs import Check, checks, distinct, integers, normal, positive, with_nans


@pytest.fixture(params=["kernels", "numpy"])
def path(request):
    """Run a test on the compiled kernels (where numba is installed) and on the NumPy reference path."""
    with config.kernels(request.param == "kernels"):
        yield request.param


MAX_GEOMETRIES = [
    ((2, 3, 6, 6), dict(kernel_size=2)),
    ((1, 2, 7, 7), dict(kernel_size=3, stride=2, padding=1)),
    ((1, 2, 9, 7), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(2, 1))),
    ((1, 2, 5, 5), dict(kernel_size=2, ceil_mode=True)),
    ((1, 1, 5, 5), dict(kernel_size=2, stride=2, padding=1, ceil_mode=True)),  # last window starts in pad: dropped
    ((2, 2, 10, 9), dict(kernel_size=2, stride=3)),
    ((1, 2, 7, 6), dict(kernel_size=(3,), stride=(2,), padding=(1,))),  # one-element tuples
]


@pytest.mark.parametrize("shape, kw", MAX_GEOMETRIES, ids=[str(kw) for _, kw in MAX_GEOMETRIES])
@pytest.mark.parametrize("values", [normal, integers, with_nans], ids=["normal", "ties", "nans"])
def test_max_pool2d_matches_naive_loops_values_and_gradient(shape, kw, values, path, rng):
    """Forward against the oracle; the gradient lands on the oracle's first maximum (or last NaN)."""
    x = values(*shape)(rng)
    expected, where = reference.max_pool2d(x, return_indices=True, **kw)
    t = Tensor(x, requires_grad=True)
    y = F.max_pool2d(t, **kw)
    np.testing.assert_allclose(as_numpy(y.data), expected, rtol=1e-12, atol=0)
    gy = rng.standard_normal(expected.shape)
    y.backward(gy)
    N, C, H, W = shape
    grad = np.zeros((N, C, H * W))
    for n in range(N):
        for c in range(C):
            np.add.at(grad[n, c], where[n, c].reshape(-1), gy[n, c].reshape(-1))
    np.testing.assert_allclose(t.grad, grad.reshape(shape), rtol=1e-12, atol=1e-12)


AVG_GEOMETRIES = [
    ((2, 3, 6, 6), dict(kernel_size=2)),
    ((2, 2, 7, 8), dict(kernel_size=3, stride=2, padding=1)),
    ((2, 2, 7, 8), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ((1, 2, 6, 6), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ((1, 2, 6, 6), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ((1, 1, 5, 5), dict(kernel_size=2, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ((2, 2, 6, 7), dict(kernel_size=3, stride=2, padding=1, divisor_override=2)),
    ((1, 3, 9, 7), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1))),
]


@pytest.mark.parametrize("shape, kw", AVG_GEOMETRIES, ids=[str(kw) for _, kw in AVG_GEOMETRIES])
def test_avg_pool2d_matches_naive_loops(shape, kw, path, rng):
    x = rng.standard_normal(shape)
    np.testing.assert_allclose(as_numpy(F.avg_pool2d(Tensor(x), **kw).data), reference.avg_pool2d(x, **kw),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)])
def test_sum_pool2d_matches_naive_loops(kw, path, rng):
    x = rng.standard_normal((2, 2, 7, 6))
    np.testing.assert_allclose(as_numpy(F.sum_pool2d(Tensor(x), **kw).data), reference.sum_pool2d(x, **kw),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape, size", [((2, 3, 6, 6), 1), ((1, 2, 7, 5), (3, 2)), ((1, 2, 3, 4), (5, 7)),
                                         ((3, 2, 11, 13), (5, 6))])
def test_adaptive_pools_match_naive_loops(shape, size, rng):
    x = rng.standard_normal(shape)
    np.testing.assert_allclose(as_numpy(F.adaptive_avg_pool2d(Tensor(x), size).data),
                               reference.adaptive_avg_pool2d(x, size), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(as_numpy(F.adaptive_max_pool2d(Tensor(x), size).data),
                                  reference.adaptive_max_pool2d(x, size))


def test_lp_pool2d_is_the_pth_root_of_the_window_power_sum(rng):
    x = rng.uniform(0.1, 2.0, (1, 2, 6, 6))
    for p in (1.0, 2.0, 3.0):
        expected = reference.sum_pool2d(x**p, 2) ** (1 / p)
        np.testing.assert_allclose(F.lp_pool2d(Tensor(x), p, 2).data, expected, rtol=1e-12)
    np.testing.assert_allclose(F.lp_pool2d(Tensor(x), float("inf"), 2).data, reference.max_pool2d(x, 2),
                               rtol=1e-12)


def pool(name, **kw):
    return lambda x: getattr(F, name)(x, **kw)


GRADCHECKS = [
    Check("max_pool2d", lambda x: F.max_pool2d(x, 2), distinct(2, 2, 4, 4)),
    Check("max_pool2d-overlap-pad", lambda x: F.max_pool2d(x, 3, 1, 1), distinct(1, 2, 4, 3)),
    Check("max_pool2d-stride>kernel", lambda x: F.max_pool2d(x, (2, 1), (3, 2)), distinct(1, 2, 7, 5)),
    Check("max_pool2d-dilation", lambda x: F.max_pool2d(x, 2, 1, 0, (2, 1)), distinct(1, 2, 5, 4)),
    Check("max_pool2d-ceil", lambda x: F.max_pool2d(x, 2, ceil_mode=True), distinct(1, 2, 5, 3)),
    Check("max_pool2d-ceil-pad", lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True), distinct(1, 1, 6, 6)),
    Check("avg_pool2d", lambda x: F.avg_pool2d(x, 2), normal(2, 2, 4, 4)),
    Check("avg_pool2d-pad-include", lambda x: F.avg_pool2d(x, 3, 2, 1), normal(1, 2, 5, 4)),
    Check("avg_pool2d-pad-exclude", lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), normal(1, 2, 5, 4)),
    Check("avg_pool2d-ceil", lambda x: F.avg_pool2d(x, (2, 3), (2, 2), (1, 1), ceil_mode=True), normal(1, 2, 4, 5)),
    Check("avg_pool2d-divisor", lambda x: F.avg_pool2d(x, 2, 1, divisor_override=3), normal(1, 2, 3, 4)),
    Check("sum_pool2d", lambda x: F.sum_pool2d(x, 2, 1, 1), normal(1, 2, 3, 4)),
    Check("lp_pool2d-p2", lambda x: F.lp_pool2d(x, 2, 2), normal(1, 2, 4, 4)),
    Check("lp_pool2d-p3", lambda x: F.lp_pool2d(x, 3, (2, 3), 1), positive(1, 2, 3, 4)),
    Check("lp_pool2d-p1", lambda x: F.lp_pool2d(x, 1, 2), normal(1, 2, 4, 4)),
    Check("lp_pool2d-p-inf", lambda x: F.lp_pool2d(x, float("inf"), 2), distinct(1, 2, 4, 4)),
    Check("adaptive_avg_pool2d", lambda x: F.adaptive_avg_pool2d(x, (2, 3)), normal(2, 2, 5, 4)),
    Check("adaptive_avg_pool2d-global", lambda x: F.adaptive_avg_pool2d(x, 1), normal(2, 2, 3, 3)),
    Check("adaptive_avg_pool2d-upsample", lambda x: F.adaptive_avg_pool2d(x, (3, 4)), normal(1, 2, 2, 3)),
    Check("adaptive_max_pool2d", lambda x: F.adaptive_max_pool2d(x, (2, 3)), distinct(2, 2, 5, 4)),
    Check("adaptive_max_pool2d-global", lambda x: F.adaptive_max_pool2d(x, 1), distinct(2, 2, 3, 3)),
    Check("adaptive_max_pool2d-upsample", lambda x: F.adaptive_max_pool2d(x, (3, 4)), distinct(1, 2, 2, 3)),
]


def _random_pool_checks(count: int, seed: int) -> list[Check]:
    """Seeded sweep, small shapes: max and avg pooling with random kernels, strides (often
    > kernel), padding, dilation and ceil_mode."""
    r = np.random.default_rng(seed)

    def ints(low, high):
        return tuple(int(v) for v in r.integers(low, high, 2))

    out = []
    for i in range(count):
        C = int(r.integers(1, 3))
        K, S, D = ints(1, 4), ints(1, 4), ints(1, 3)
        P = tuple(int(r.integers(0, k // 2 + 1)) for k in K)
        # dilation only without padding: a dilated window may otherwise skip the input entirely
        D = D if not any(P) else (1, 1)
        HW = tuple(max(1, d * (k - 1) + 1 - 2 * p) + int(r.integers(0, 4)) for k, p, d in zip(K, P, D, strict=True))
        kw = dict(kernel_size=K, stride=S, padding=P, dilation=D, ceil_mode=bool(i % 2))
        out.append(Check(f"max_pool2d-sweep{i}-{kw}", pool("max_pool2d", **kw), distinct(1, C, *HW)))
        kw = dict(kernel_size=K, stride=S, padding=P, ceil_mode=bool(i % 2), count_include_pad=bool(i % 3))
        out.append(Check(f"avg_pool2d-sweep{i}-{kw}", pool("avg_pool2d", **kw), normal(1, C, *HW)))
    return out


@checks(GRADCHECKS + _random_pool_checks(12, seed=99))
def test_pooling_gradcheck(check, rng):
    check.run(rng)


@pytest.mark.parametrize("op", ["avg_pool2d", "sum_pool2d"])
def test_average_pooling_of_integers_is_refused_clearly(op):
    with pytest.raises(TypeError, match=f"{op} expects a floating input, got int64"):
        getattr(F, op)(Tensor(np.ones((1, 1, 4, 4), dtype=np.int64)), 2)


def test_geometries_of_plain_ints_are_shared_and_others_still_checked():
    """``_PoolGeometry.of`` keeps one geometry per call of plain ints (a layer's every step) and its
    output size per input shape; arguments that only compare equal to those (2.0, True, NumPy
    ints) are validated anew, so a float kernel size is refused even after 2's geometry is kept."""
    from cnnkit.errors import ShapeError
    from cnnkit.functional.pool import _PoolGeometry

    g = _PoolGeometry.of("max_pool2d", 2, None, 0, 1, False)
    assert _PoolGeometry.of("max_pool2d", 2, None, 0, 1, False) is g
    assert _PoolGeometry.of("avg_pool2d", 2, None, 0, 1, False) is not g            # the op's name is in errors
    assert _PoolGeometry.of("max_pool2d", np.int64(2), None, 0, 1, False) is not g
    assert g.resolve((1, 1, 6, 7)) is g.resolve((1, 1, 6, 7)) == ((3, 3), (0, 0, 0, 0), ((2, 2), (1, 1), (3, 3)))
    with pytest.raises(ShapeError, match="kernel_size"):
        F.max_pool2d(Tensor(np.ones((1, 1, 4, 4), np.float32)), 2.0)
    with pytest.raises(ShapeError, match="kernel_size"):
        F.max_pool2d(Tensor(np.ones((1, 1, 4, 4), np.float32)), True)
    with pytest.raises(ShapeError, match="larger than the padded input"):           # an error is not kept
        g.resolve((1, 1, 1, 1))
    with pytest.raises(ShapeError, match="larger than the padded input"):
        g.resolve((1, 1, 1, 1))
    x = np.arange(36, dtype=np.float32).reshape(1, 1, 6, 6)
    np.testing.assert_array_equal(F.max_pool2d(Tensor(x), np.int64(2)).data, F.max_pool2d(Tensor(x), 2).data)
