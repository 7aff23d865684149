"""conv2d and conv_transpose2d against the naive-loop oracles and finite differences.

Runs without PyTorch (``test_conv_vs_torch.py`` compares with it): ``tests/reference.py``
computes each output element with plain loops, independently of im2col, the compiled
direct convolution and col2im.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit.functional as F
from cnnkit import Tensor
from cnnkit.backend import as_numpy
from tests import reference

from .inputs import Check, channel_major, checks, normal

# (x shape, weight shape, keyword arguments): stride, padding (ints, pairs, "same", "valid"),
# dilation, groups (depthwise included), stride larger than the kernel, 1x1 kernels.
CONV_GEOMETRIES = [
    ((2, 3, 7, 6), (4, 3, 3, 3), dict()),
    ((2, 3, 7, 6), (4, 3, 3, 3), dict(stride=2, padding=1)),
    ((1, 2, 9, 8), (3, 2, 3, 2), dict(stride=(2, 1), padding=(1, 0), dilation=(2, 3))),
    ((2, 4, 6, 6), (6, 2, 3, 3), dict(groups=2, padding=1)),
    ((1, 3, 6, 5), (3, 1, 3, 3), dict(groups=3, stride=2, padding=1)),
    ((2, 2, 8, 7), (3, 2, 2, 2), dict(stride=3)),
    ((1, 2, 5, 6), (3, 2, 4, 2), dict(padding="same")),
    ((1, 2, 7, 6), (2, 2, 3, 2), dict(padding="same", dilation=(2, 3))),
    ((2, 3, 5, 4), (2, 3, 1, 1), dict(padding="valid")),
    ((1, 2, 2, 3), (3, 2, 3, 3), dict(padding=3)),
]


@pytest.mark.parametrize("x_shape, w_shape, kw", CONV_GEOMETRIES, ids=[str(g[2]) for g in CONV_GEOMETRIES])
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_matches_naive_loops(x_shape, w_shape, kw, bias, rng, xp):
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0]) if bias else None
    expected = reference.conv2d(x, w, b, **kw)
    for dtype, tol in [(np.float64, 1e-10), (np.float32, 2e-5)]:
        for layout in (lambda a: a, channel_major):  # conv and pool hand on channel-major views
            actual = F.conv2d(Tensor(xp.asarray(layout(x).astype(dtype))), Tensor(xp.asarray(w.astype(dtype))),
                              None if b is None else Tensor(xp.asarray(b.astype(dtype))), **kw)
            assert actual.dtype == dtype
            np.testing.assert_allclose(as_numpy(actual.data), expected, rtol=tol, atol=tol)


CONV_T_GEOMETRIES = [
    ((2, 3, 4, 4), (3, 2, 3, 3), dict()),
    ((1, 2, 3, 5), (2, 3, 3, 3), dict(stride=2)),
    ((2, 2, 4, 3), (2, 2, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    ((1, 3, 3, 5), (3, 2, 2, 4), dict(stride=(2, 3), padding=(0, 1), output_padding=(1, 2))),
    ((1, 2, 3, 3), (2, 2, 3, 3), dict(dilation=3, output_padding=2)),
    ((2, 4, 3, 4), (4, 3, 3, 3), dict(groups=2, stride=2)),
    ((1, 2, 3, 3), (2, 2, 2, 2), dict(stride=3)),
]


@pytest.mark.parametrize("x_shape, w_shape, kw", CONV_T_GEOMETRIES, ids=[str(g[2]) for g in CONV_T_GEOMETRIES])
def test_conv_transpose2d_matches_naive_loops(x_shape, w_shape, kw, rng, xp):
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[1] * kw.get("groups", 1))
    expected = reference.conv_transpose2d(x, w, b, **kw)
    actual = F.conv_transpose2d(Tensor(xp.asarray(x)), Tensor(xp.asarray(w)), Tensor(xp.asarray(b)), **kw)
    np.testing.assert_allclose(as_numpy(actual.data), expected, rtol=1e-10, atol=1e-10)


def test_conv_transpose2d_is_the_adjoint_of_conv2d(rng):
    """<conv2d(x, w), y> = <x, conv_transpose2d(y, w)>: the oracles agree with each other too."""
    x, w = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 3))
    kw = dict(stride=2, padding=1, dilation=1)
    y = rng.standard_normal(reference.conv2d(x, w, **kw).shape)
    lhs = np.sum(reference.conv2d(x, w, **kw) * y)
    rhs = np.sum(x * reference.conv_transpose2d(y, w, output_padding=1, **kw)[:, :, :7, :6])
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10)


def conv(**kw):
    return lambda x, w, b=None: F.conv2d(x, w, b, **kw)


def conv_t(**kw):
    return lambda x, w, b=None: F.conv_transpose2d(x, w, b, **kw)


GRADCHECKS = [
    Check("conv2d", conv(), normal(2, 2, 4, 4), normal(3, 2, 3, 3), normal(3)),
    Check("conv2d-stride-pad-nonsquare", conv(stride=(2, 1), padding=(1, 2)), normal(1, 2, 5, 4),
          normal(2, 2, 3, 2), normal(2)),
    Check("conv2d-stride>kernel", conv(stride=3), normal(2, 1, 7, 6), normal(2, 1, 2, 2), normal(2)),
    Check("conv2d-dilation", conv(dilation=(2, 1), padding=1), normal(1, 2, 5, 4), normal(2, 2, 2, 3)),
    Check("conv2d-groups", conv(groups=2, padding=1), normal(2, 4, 3, 3), normal(4, 2, 2, 2), normal(4)),
    Check("conv2d-depthwise", conv(groups=3, stride=2, padding=1), normal(1, 3, 5, 5), normal(3, 1, 3, 3),
          normal(3)),
    Check("conv2d-1x1", conv(), normal(2, 3, 2, 3), normal(2, 3, 1, 1), normal(2)),
    Check("conv2d-same-even-kernel", conv(padding="same"), normal(1, 2, 4, 5), normal(2, 2, 2, 4)),
    Check("conv2d-valid", conv(padding="valid"), normal(1, 2, 4, 4), normal(2, 2, 3, 2), normal(2)),
    Check("conv2d-unbatched", conv(padding=1), normal(2, 3, 3), normal(2, 2, 3, 3), normal(2)),
    Check("conv_transpose2d", conv_t(), normal(2, 2, 3, 3), normal(2, 3, 2, 2), normal(3)),
    Check("conv_transpose2d-stride-outpad", conv_t(stride=2, padding=1, output_padding=1), normal(1, 2, 3, 2),
          normal(2, 2, 3, 3), normal(2)),
    Check("conv_transpose2d-nonsquare", conv_t(stride=(1, 3), padding=(1, 0), output_padding=(0, 2)),
          normal(1, 2, 3, 2), normal(2, 1, 3, 2)),
    Check("conv_transpose2d-dilation", conv_t(dilation=2, output_padding=1, stride=1), normal(1, 1, 3, 3),
          normal(1, 2, 2, 2), normal(2)),
    Check("conv_transpose2d-groups", conv_t(groups=2, stride=2), normal(1, 4, 2, 2), normal(4, 1, 2, 2), normal(2)),
]


def _random_geometry_checks(count: int, seed: int) -> list[Check]:
    """Seeded sweep, small shapes: conv2d and conv_transpose2d with random kernels, strides
    (often > kernel), padding, dilation and groups."""
    r = np.random.default_rng(seed)

    def ints(low, high):
        return tuple(int(v) for v in r.integers(low, high, 2))

    out = []
    for i in range(count):
        G = int(r.choice([1, 2]))
        C, Fo = G * int(r.integers(1, 3)), G * int(r.integers(1, 3))
        K, S, D = ints(1, 4), ints(1, 4), ints(1, 3)
        P = tuple(int(r.integers(0, k // 2 + 1)) for k in K)
        HW = tuple(max(1, d * (k - 1) + 1 - 2 * p) + int(r.integers(0, 3)) for k, p, d in zip(K, P, D, strict=True))
        kw = dict(stride=S, padding=P, dilation=D, groups=G)
        out.append(Check(f"conv2d-sweep{i}-{kw}", conv(**kw), normal(1 + i % 2, C, *HW), normal(Fo, C // G, *K),
                         normal(Fo)))
        OP = tuple(int(r.integers(0, max(s, d))) for s, d in zip(S, D, strict=True))
        HW = ints(1, 4)
        P = tuple(min(p, (h - 1) * s // 2) for p, h, s in zip(P, HW, S, strict=True))  # keep the output non-empty
        kw = dict(stride=S, padding=P, output_padding=OP, dilation=D, groups=G)
        out.append(Check(f"conv_transpose2d-sweep{i}-{kw}", conv_t(**kw), normal(1, C, *HW),
                         normal(C, Fo // G, *K), normal(Fo)))
    return out


@checks(GRADCHECKS + _random_geometry_checks(12, seed=99))
def test_convolution_gradcheck(check, rng):
    check.run(rng)
