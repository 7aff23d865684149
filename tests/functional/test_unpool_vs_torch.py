"""max_pool2d(return_indices=True), adaptive_max_pool2d(return_indices=True) and max_unpool2d
against PyTorch: the indices (ties, NaN,
windows of -inf, padding, dilation, ceil_mode, unbatched inputs), unpooling forward and
backward, output_size, the layers, the errors; float64 finite differences.

PyTorch is the reference (a test-only dependency): this module is skipped without it.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cnnkit.functional as F  # noqa: E402
from cnnkit import Tensor, nn  # noqa: E402
from cnnkit.errors import ShapeError  # noqa: E402
from cnnkit.gradcheck import gradcheck  # noqa: E402
from tests import reference  # noqa: E402

from .torch_compare import TF, assert_close, dtypes  # noqa: E402

POOLS = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=1, padding=1),                      # overlapping windows: repeated indices
    dict(kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1), ceil_mode=True),
    dict(kernel_size=3, stride=2, ceil_mode=True),
]
SHAPES = [(2, 3, 7, 9), (1, 2, 6, 6), (3, 5, 5)]                   # the last one unbatched (C, H, W)


def _input(shape, rng, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    x[..., 0, :2] = x[..., 0, 2:3]                                 # ties: the first maximum is kept
    if x.shape[-1] > 4:
        x[..., 1, 4] = np.nan                                      # a NaN wins its windows
    x[..., -2:, -2:] = -np.inf                                     # windows of -inf only (and padding)
    return x


@pytest.mark.parametrize("pool", POOLS, ids=lambda kw: str(kw).replace(" ", ""))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@dtypes()
def test_max_pool2d_indices_equal_torchs(pool, shape, dtype, rng):
    x = _input(shape, rng, dtype)
    y, indices = F.max_pool2d(Tensor(x), return_indices=True, **pool)
    y_torch, i_torch = TF.max_pool2d(torch.from_numpy(x), return_indices=True, **pool)
    assert indices.dtype == np.int64 and not indices.requires_grad
    np.testing.assert_array_equal(indices.data, i_torch.numpy())
    np.testing.assert_array_equal(y.data, y_torch.numpy())
    if len(shape) == 4:                                            # the naive loops agree too
        np.testing.assert_array_equal(indices.data, reference.max_pool2d(x, return_indices=True, **pool)[1])


def _unpool_cases():
    """(pool, shape, output_size): the default size where the pool's indices fit it, and the input's size."""
    for pool in POOLS:
        for shape in SHAPES:
            k, st = pool["kernel_size"], pool.get("stride", pool["kernel_size"])
            k, st, p = (k if isinstance(k, tuple) else (k, k)), (st if isinstance(st, tuple) else (st, st)), \
                pool.get("padding", 0)
            y_torch, i_torch = TF.max_pool2d(torch.zeros(shape), return_indices=True, **pool)
            OH, OW = y_torch.shape[-2:]
            default = ((OH - 1) * st[0] - 2 * p + k[0], (OW - 1) * st[1] - 2 * p + k[1])
            if all(d >= n for d, n in zip(default, shape[-2:], strict=True)):
                yield pool, shape, None                            # every index fits the default plane
            if all(d - s < n < d + s for d, n, s in zip(default, shape[-2:], st, strict=True)):
                yield pool, shape, tuple(shape[-2:])               # the size the pool rounded down


@pytest.mark.parametrize("pool, shape, output_size", list(_unpool_cases()),
                         ids=lambda v: str(v).replace(" ", ""))
@dtypes()
def test_max_unpool2d_forward_and_backward_match_torch(pool, shape, output_size, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    y_torch, i_torch = TF.max_pool2d(torch.from_numpy(x), return_indices=True, **pool)
    unpool = {k: v for k, v in pool.items() if k in ("kernel_size", "stride", "padding")}
    value = y_torch.numpy().copy()
    t = torch.from_numpy(value).requires_grad_()
    expected = TF.max_unpool2d(t, i_torch, output_size=output_size, **unpool)
    g = rng.standard_normal(tuple(expected.shape)).astype(dtype)
    expected.backward(torch.from_numpy(g))
    ours_in = Tensor(value, requires_grad=True)
    actual = F.max_unpool2d(ours_in, Tensor(i_torch.numpy()), output_size=output_size, **unpool)
    assert_close(actual.data, expected.detach().numpy(), dtype, "max_unpool2d output")
    actual.backward(Tensor(g))
    assert_close(ours_in.grad, t.grad.numpy(), dtype, "max_unpool2d input gradient")


def test_pool_then_unpool_gradients_match_finite_differences(rng):
    x = rng.standard_normal((2, 2, 5, 6))                          # float64, distinct values

    def pool_unpool(t):
        y, indices = F.max_pool2d(t, 2, return_indices=True)
        return F.max_unpool2d(y * y, indices, 2, output_size=(5, 6))

    assert gradcheck(pool_unpool, [x])
    # padded windows that do not overlap (overlapping ones repeat an index: the unpooled output then
    # depends on one of the repeated values only, while backward, PyTorch's too, gathers for each)
    y, indices = F.max_pool2d(Tensor(x), 3, stride=3, padding=1, return_indices=True)
    assert gradcheck(lambda t: F.max_unpool2d(t, indices, 3, stride=3, padding=1, output_size=(5, 6)), [y.data])


def test_layers_match_torch(rng):
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    pool, unpool = nn.MaxPool2d(2, return_indices=True), nn.MaxUnpool2d(2)
    tpool, tunpool = torch.nn.MaxPool2d(2, return_indices=True), torch.nn.MaxUnpool2d(2)
    assert repr(pool) == repr(tpool) and repr(unpool) == repr(tunpool)
    assert repr(nn.MaxUnpool2d((2, 3), stride=1, padding=1)) == repr(torch.nn.MaxUnpool2d((2, 3), stride=1, padding=1))
    y, indices = pool(Tensor(x))
    ty, tindices = tpool(torch.from_numpy(x))
    np.testing.assert_array_equal(indices.data, tindices.numpy())
    np.testing.assert_array_equal(unpool(y, indices, output_size=(8, 8)).data,
                                  tunpool(ty, tindices, output_size=(8, 8)).numpy())
    assert isinstance(nn.MaxPool2d(2)(Tensor(x)), Tensor)           # without return_indices: the output alone


def _pooled(rng):
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    y, i = TF.max_pool2d(torch.from_numpy(x), 2, return_indices=True)
    return y, i


@pytest.mark.parametrize("change, torch_type, cn_type, match", [
    (lambda y, i: (y, i.float(), {}), RuntimeError, TypeError,
     r"max_unpool2d expects integer \(int64\) indices, got dtype float32"),
    (lambda y, i: (y, i[:, :1], {}), RuntimeError, ShapeError,
     r"max_unpool2d expects indices of the input's shape \(1, 2, 2, 2\), got \(1, 1, 2, 2\)"),
    (lambda y, i: (y, i + 100, {}), RuntimeError, ValueError,
     r"max_unpool2d found index 1\d\d, outside the output plane of 4x4 \(indices 0 to 15\)"),
    (lambda y, i: (y, i, {"output_size": (9, 9)}), ValueError, ValueError,
     r"max_unpool2d expects output_size \(9, 9\) within a stride of the default \(4, 4\): dimension 0 must be "
     r"between 2 and 6, exclusive"),
    (lambda y, i: (y, i, {"output_size": (1, 2, 3)}), ValueError, ValueError,
     r"max_unpool2d expects output_size of 2 or 4 elements, got \(1, 2, 3\)"),
], ids=["float-indices", "indices-shape", "index-out-of-range", "output-size-far", "output-size-length"])
def test_max_unpool2d_refuses_what_torch_refuses(change, torch_type, cn_type, match, rng):
    y, i = _pooled(rng)
    ty, ti, kw = change(y, i)
    with pytest.raises(torch_type):
        TF.max_unpool2d(ty, ti, 2, **kw)
    with pytest.raises(cn_type, match=match):
        F.max_unpool2d(Tensor(ty.numpy()), Tensor(ti.numpy()), 2, **kw)


# ------------------------------------------------------------------ adaptive_max_pool2d(return_indices=True)
@pytest.mark.parametrize("output_size", [2, (3, 4), (1, 1), (None, 3), (5, 7)])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@dtypes()
def test_adaptive_max_pool2d_indices_equal_torchs(output_size, shape, dtype, rng):
    # was refused ("adaptive_max_pool2d(return_indices=True) is not supported"); windows of
    # uneven size (7 -> 3, 9 -> 4) overlap, with ties, a NaN and windows of -inf only
    x = _input(shape, rng, dtype)
    t = torch.from_numpy(x).requires_grad_()
    xt = Tensor(x, requires_grad=True)
    y, indices = F.adaptive_max_pool2d(xt, output_size, return_indices=True)
    y_torch, i_torch = TF.adaptive_max_pool2d(t, output_size, return_indices=True)
    assert indices.dtype == np.int64 and not indices.requires_grad
    np.testing.assert_array_equal(indices.data, i_torch.numpy())
    np.testing.assert_array_equal(y.data, y_torch.detach().numpy())
    gy = rng.standard_normal(y.shape).astype(dtype)
    y.backward(gy)
    y_torch.backward(torch.from_numpy(gy))
    assert_close(xt.grad, t.grad.numpy(), dtype, "input gradient")
    # the values alone, without a graph, are those of the op without indices
    y_alone, i_alone = F.adaptive_max_pool2d(Tensor(x), output_size, return_indices=True)
    np.testing.assert_array_equal(i_alone.data, i_torch.numpy())
    np.testing.assert_array_equal(y_alone.data, F.adaptive_max_pool2d(Tensor(x), output_size).data)


def test_adaptive_max_pool_layer_returns_indices_for_max_unpool_like_torchs(rng):
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    y, i = nn.AdaptiveMaxPool2d(4, return_indices=True)(Tensor(x))
    y_torch, i_torch = torch.nn.AdaptiveMaxPool2d(4, return_indices=True)(torch.from_numpy(x))
    np.testing.assert_array_equal(i.data, i_torch.numpy())
    unpooled = nn.MaxUnpool2d(2)(y, i)                              # 4x4 windows of 2 on an 8x8 plane
    np.testing.assert_array_equal(unpooled.data, torch.nn.MaxUnpool2d(2)(y_torch, i_torch).numpy())
    assert repr(nn.AdaptiveMaxPool2d(4, return_indices=True)) == repr(torch.nn.AdaptiveMaxPool2d(4, return_indices=True))
