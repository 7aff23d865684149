"""F.interpolate against PyTorch: nearest, nearest-exact, (bi)linear with and without align_corners;
sizes and scale factors (integer and not, up and down, recompute_scale_factor), values and input
gradients in float32 and float64; the refused arguments.

PyTorch is the reference (a test-only dependency): this module is skipped without it.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cnnkit.functional as F  # noqa: E402
from cnnkit import Tensor  # noqa: E402
from cnnkit.errors import ShapeError  # noqa: E402

from .inputs import normal  # noqa: E402
from .torch_compare import TF, Case, cases, dtypes, same_error  # noqa: E402

SHAPES_2D = [(2, 3, 5, 7), (1, 2, 4, 4), (2, 1, 9, 3), (1, 1, 1, 1)]
RESIZES = [
    dict(size=(8, 11)), dict(size=3), dict(size=(2, 13)), dict(size=(4, 4)),
    dict(scale_factor=2), dict(scale_factor=3.0), dict(scale_factor=1.7), dict(scale_factor=(0.6, 2.3)),
    dict(scale_factor=0.5), dict(scale_factor=2.05), dict(scale_factor=(1.0, 3.3)),
    dict(scale_factor=1.7, recompute_scale_factor=True), dict(scale_factor=(0.6, 2.3), recompute_scale_factor=True),
]
MODES_2D = [("nearest", None), ("nearest-exact", None), ("bilinear", False), ("bilinear", True)]


def _case(shape, mode, align_corners, kw) -> Case:
    def cn(x):
        return F.interpolate(x, mode=mode, align_corners=align_corners, **kw)

    def th(x):
        return TF.interpolate(x, mode=mode, align_corners=align_corners, **kw)

    name = f"{mode}-ac{align_corners}-{shape}-{kw}".replace(" ", "")
    return Case(name, cn, th, lambda rng: ([normal(*shape)(rng)], []))


def _fits(shape, kw) -> bool:
    """Output sizes >= 1 (PyTorch refuses the others; tested below as an error)."""
    factors = kw.get("scale_factor")
    if factors is None:
        return True
    factors = factors if isinstance(factors, tuple) else (factors,) * (len(shape) - 2)
    return all(int(n * f) >= 1 for n, f in zip(shape[2:], factors, strict=True))


CASES_2D = [
    _case(shape, mode, ac, kw)
    for shape in SHAPES_2D for kw in RESIZES for mode, ac in MODES_2D if _fits(shape, kw)
]
CASES_1D = [
    _case(shape, mode, ac, kw)
    for shape in [(2, 3, 7), (1, 1, 2)]
    for kw in [dict(size=12), dict(size=(3,)), dict(scale_factor=2.5), dict(scale_factor=0.75)]
    for mode, ac in [("nearest", None), ("nearest-exact", None), ("linear", False), ("linear", True)]
    if _fits(shape, kw)
]


@cases(CASES_2D + CASES_1D)
@dtypes()
def test_interpolate_matches_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)


def test_nearest_gradient_sums_over_copies():
    x = Tensor(np.arange(4.0).reshape(1, 1, 2, 2), requires_grad=True)
    F.interpolate(x, scale_factor=2).sum().backward()
    np.testing.assert_array_equal(x.grad, np.full((1, 1, 2, 2), 4.0))


def _x(*shape):
    return np.zeros(shape, dtype=np.float32)


@pytest.mark.parametrize("shape, mode, align_corners, kw", [
    ((1, 2, 6, 8), "nearest", None, dict(size=(9, 13))),
    ((1, 2, 12, 16), "nearest", None, dict(size=(5, 6))),
    ((1, 2, 6, 8), "nearest-exact", None, dict(scale_factor=1.7)),
    ((1, 2, 6, 8), "bilinear", False, dict(size=(9, 13))),
    ((1, 2, 6, 8), "bilinear", True, dict(size=(9, 13))),
    ((1, 2, 12, 16), "bilinear", False, dict(size=(5, 6))),
    ((1, 2, 5, 5), "bilinear", False, dict(scale_factor=2)),
    ((1, 2, 8), "linear", False, dict(size=13)),
    ((1, 2, 14), "linear", True, dict(scale_factor=0.6)),
], ids=lambda v: str(v).replace(" ", ""))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inf_and_nan_in_the_upstream_gradient_reach_the_same_inputs_as_in_torch(shape, mode, align_corners, kw,
                                                                                 dtype, rng):
    """Only the sources an output read get its inf/NaN (a zero-weight tap: 0 * inf = NaN), as in PyTorch."""
    x = rng.standard_normal(shape).astype(dtype)
    t = torch.from_numpy(x).requires_grad_()
    y_torch = TF.interpolate(t, mode=mode, align_corners=align_corners, **kw)
    g = rng.standard_normal(tuple(y_torch.shape)).astype(dtype)
    flat = g.reshape(-1)
    flat[[0, flat.size // 3, flat.size // 2, flat.size - 2]] = [np.inf, -np.inf, np.nan, np.inf]
    y_torch.backward(torch.from_numpy(g))
    ours = Tensor(x, requires_grad=True)
    F.interpolate(ours, mode=mode, align_corners=align_corners, **kw).backward(Tensor(g))
    expected = t.grad.numpy()
    assert np.isfinite(expected).any(axis=-1).all()   # every row keeps finite values, which the test checks
    np.testing.assert_array_equal(np.isnan(ours.grad), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(ours.grad), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(ours.grad), np.isneginf(expected))
    finite = np.isfinite(expected)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(ours.grad[finite], expected[finite], rtol=rtol, atol=rtol)


@pytest.mark.parametrize("kw, cn_type, match", [
    (dict(size=4, scale_factor=2), ValueError, r"exactly one of size or scale_factor, got size=4, scale_factor=2"),
    (dict(), ValueError, r"exactly one of size or scale_factor, got size=None, scale_factor=None"),
    (dict(size=4, mode="cubic"), NotImplementedError, r"got mode='cubic'"),
    (dict(size=4, mode="nearest", align_corners=True), ValueError,
     r"align_corners can only be set .* got align_corners=True with mode='nearest'"),
    (dict(size=(4, 4, 4)), ShapeError, r"size with 2 value\(s\) .* got size=\(4, 4, 4\)"),
    (dict(scale_factor=0.1), ShapeError, r"sizes > 0, got input \(1, 2, 3, 3\) and output size \(0, 0\)"),
    (dict(size=4, recompute_scale_factor=True), ValueError, r"recompute_scale_factor is not meaningful"),
])
def test_refusals_match_torch(kw, cn_type, match):
    x = _x(1, 2, 3, 3)
    same_error(lambda: F.interpolate(Tensor(x), **kw), lambda: TF.interpolate(torch.from_numpy(x), **kw),
               cn_type, match)


@pytest.mark.parametrize("shape, mode, match", [
    ((1, 2, 3), "bilinear", r"mode='bilinear'\) expects input of shape \(N, C, H, W\), got \(1, 2, 3\)"),
    ((1, 2, 3, 3), "linear", r"mode='linear'\) expects input of shape \(N, C, W\), got \(1, 2, 3, 3\)"),
    ((2, 3), "nearest", r"expects input of shape \(N, C, W\) or \(N, C, H, W\), got \(2, 3\)"),
])
def test_wrong_dims_are_refused_as_torch(shape, mode, match):
    x = _x(*shape)
    same_error(lambda: F.interpolate(Tensor(x), size=2, mode=mode),
               lambda: TF.interpolate(torch.from_numpy(x), size=2, mode=mode), ShapeError, match)


def test_modes_torch_has_but_cnnkit_lacks_are_refused_by_name():
    with pytest.raises(NotImplementedError, match=r"supports mode in .* got mode='bicubic'"):
        F.interpolate(Tensor(_x(1, 1, 3, 3)), size=4, mode="bicubic")
    with pytest.raises(NotImplementedError, match=r"antialias=True"):
        F.interpolate(Tensor(_x(1, 1, 3, 3)), size=4, mode="bilinear", antialias=True)


@pytest.mark.parametrize("make", [
    lambda m: m.Upsample(scale_factor=2),
    lambda m: m.Upsample(size=(5, 9), mode="bilinear"),
    lambda m: m.Upsample(scale_factor=(1.5, 0.7), mode="bilinear", align_corners=True),
    lambda m: m.Upsample(scale_factor=2.5, mode="nearest-exact", recompute_scale_factor=True),
    lambda m: m.UpsamplingNearest2d(size=7),
    lambda m: m.UpsamplingBilinear2d(scale_factor=3),
], ids=["nearest-x2", "bilinear-size", "bilinear-ac", "exact-recompute", "nearest2d", "bilinear2d"])
def test_upsample_layers_match_torch(make, rng):
    import cnnkit.nn as nn

    x = rng.standard_normal((2, 3, 4, 6))
    ours, theirs = make(nn), make(torch.nn)
    np.testing.assert_allclose(ours(Tensor(x)).data, theirs(torch.from_numpy(x)).numpy(), rtol=1e-12, atol=1e-12)
    assert repr(ours) == repr(theirs)
