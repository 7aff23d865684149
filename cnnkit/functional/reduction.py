"""Reductions: sum, mean, var / std, amax / amin, max / min (values and where), argmax / argmin.

Each takes PyTorch's ``dim`` (an int, a tuple or list, or None for every dimension) and
``keepdim``, and also NumPy's ``axis`` / ``keepdims`` as PyTorch accepts them. A 0-d
tensor takes dim 0 and -1. Ties and NaNs follow PyTorch: ``amax`` shares the gradient
among tied maxima, ``max(dim)`` gives it all to the first maximum, a NaN is the maximum.
"""

from __future__ import annotations

import builtins
import warnings
from typing import NamedTuple

import numpy as np

from ..backend import get_array_module
from ..errors import ShapeError
from ..function import Function
from ..tensor import Tensor, as_tensor
from .dims import normalize_dim, normalize_dims, reduction_args
from .dtypes import cast
from .logic import maximum, minimum

__all__ = ["sum", "mean", "var", "std", "all", "any", "amax", "amin", "max", "min", "argmax", "argmin", "ValuesIndices"]


class SumOp(Function):
    """Sum over axes.

    forward:  y = sum(x, axes)      (integer and bool inputs sum to int64, as PyTorch)
    backward: gx = broadcast(gy, x.shape)
    """

    def __init__(self, axes: tuple[int, ...], keepdims: bool):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        self.x_shape = x.shape
        dtype = np.int64 if x.dtype.kind in "biu" else None
        return x.sum(axis=self.axes, keepdims=self.keepdims, dtype=dtype)

    def backward(self, gy):
        gy = _expand_reduced(gy, self.x_shape, self.axes, self.keepdims)
        return self.xp.broadcast_to(gy, self.x_shape).copy()


class MeanOp(Function):
    """Mean over axes.

    forward:  y = sum(x, axes) / n,  n = number of elements reduced (NaN when n = 0)
    backward: gx = broadcast(gy, x.shape) / n
    """

    def __init__(self, axes: tuple[int, ...], keepdims: bool):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x):
        self.x_shape = x.shape
        self.n = _count(x.shape, self.axes)
        if self.n == 0:  # the mean of nothing: NaN, as PyTorch (NumPy would warn)
            shape = _reduced_shape(x.shape, self.axes, self.keepdims)
            return self.xp.full(shape, np.nan, dtype=x.dtype)
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        gy = _expand_reduced(gy, self.x_shape, self.axes, self.keepdims)
        n = gy.dtype.type(self.n) if self.n else gy.dtype.type(np.nan)
        return self.xp.broadcast_to(gy / n, self.x_shape).copy()


class AmaxOp(Function):
    """Largest (or smallest) value over axes: ``torch.amax`` / ``torch.amin``.

    forward:  y = max(x, axes)  (min(x, axes) when smallest; a NaN wins, as in PyTorch)
    backward: gx = gy * mask / count(mask),  mask = (x == y)  (ties share the gradient
              evenly, as torch.amax). NOTE: where y is NaN no element equals y, so
              the count is 0 and the gradient NaN, as torch.amax gives.
              With ``nan_selects`` (the full reduction ``x.max()``, PyTorch's
              evenly_distribute_backward) a NaN maximum's mask is isnan(x) instead.
    """

    def __init__(self, axes, keepdims: bool, smallest: bool = False, nan_selects: bool = False):
        self.axes, self.keepdims = axes, keepdims
        self.smallest, self.nan_selects = smallest, nan_selects

    def forward(self, x):
        op = "amin" if self.smallest else "amax"
        empty = [a for a in self.axes if x.shape[a] == 0]
        if empty or (x.size == 0 and len(self.axes) == x.ndim):
            raise ShapeError(
                f"{op} cannot reduce over an empty dimension (input shape {x.shape}, "
                f"dim={self.axes}): the result has no identity"
            )
        reduce = self.xp.min if self.smallest else self.xp.max
        y = reduce(x, axis=self.axes, keepdims=True)
        if self.saves_for_backward:
            mask = x == y
            if self.nan_selects:
                nan = self.xp.isnan(y)
                mask = self.xp.where(nan, self.xp.isnan(x), mask)
            self.mask = mask
        return y if self.keepdims else y.reshape(_reduced_shape(x.shape, self.axes, False))

    def backward(self, gy):
        gy = _expand_reduced(gy, self.mask.shape, self.axes, self.keepdims)
        count = self.mask.sum(axis=self.axes, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):  # count 0 under a NaN: NaN, as PyTorch
            return self.mask * (gy / count).astype(gy.dtype)


class SelectAlongDimOp(Function):
    """The values at given positions along one axis (the values of ``torch.max(x, dim)``).

    forward:  y = take_along_axis(x, index, axis)   (index has x's shape with size 1 at axis)
    backward: gx = zeros like x;  gx at index = gy  (each position selected once)

    Shapes: x (..., n, ...), index (..., 1, ...) -> y (..., 1, ...) (keepdim) or the
    axis dropped.

    ``smallest`` says what the positions are: of the minima (True), of the maxima (False),
    or other positions (None). ONNX export writes the values of max(dim) / min(dim) as
    ReduceMax / ReduceMin, which needs to know.
    """

    def __init__(self, index, axis: int, keepdims: bool, smallest: bool | None = None):
        self.index, self.axis, self.keepdims = index, axis, keepdims
        self.smallest = smallest

    def forward(self, x):
        self.x_shape, self.x_dtype = x.shape, x.dtype
        y = self.xp.take_along_axis(x, self.index, axis=self.axis)
        return y if self.keepdims else y.squeeze(self.axis)

    def backward(self, gy):
        xp = self.xp
        if not self.keepdims:
            gy = xp.expand_dims(gy, self.axis)
        gx = xp.zeros(self.x_shape, dtype=gy.dtype)
        xp.put_along_axis(gx, self.index, gy, axis=self.axis)
        return gx


class ValuesIndices(NamedTuple):
    """What ``max(dim)`` / ``min(dim)`` return, as PyTorch's ``torch.return_types.max``."""

    values: Tensor
    indices: Tensor


def _count(shape, axes) -> int:
    n = 1
    for a in axes:
        n *= shape[a]
    return n


def _reduced_shape(shape, axes, keepdims: bool) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if i in axes else n for i, n in enumerate(shape))
    return tuple(n for i, n in enumerate(shape) if i not in axes)


def _expand_reduced(g, x_shape, axes, keepdims):
    """Reshape a reduced gradient so it broadcasts against the input."""
    if not keepdims:
        g = g.reshape(_reduced_shape(x_shape, axes, True))
    return g


def sum(x, dim=None, keepdim: bool = False, *, dtype=None, axis=None, keepdims=None) -> Tensor:  # noqa: A001
    """Sum over ``dim`` (an int, a tuple, or None for every dimension), as torch.sum.

    ``dtype`` casts the input first (differentiably), as PyTorch's. ``axis`` and
    ``keepdims`` are accepted for ``dim`` and ``keepdim``, as PyTorch does.
    """
    x = as_tensor(x) if dtype is None else cast(x, dtype)
    dim, keepdim = reduction_args("sum", dim, keepdim, axis, keepdims)
    return SumOp(normalize_dims(dim, x.ndim, "sum"), keepdim)(x)


def mean(x, dim=None, keepdim: bool = False, *, dtype=None, axis=None, keepdims=None) -> Tensor:
    """Mean over ``dim`` (an int, a tuple, or None for every dimension), as torch.mean.

    ``dtype`` (a floating dtype) casts the input first, as PyTorch's.

    Raises:
        TypeError: x is not floating and no floating ``dtype`` is given (PyTorch cannot
            infer the result dtype either).
    """
    x = as_tensor(x) if dtype is None else cast(x, dtype)
    if x.dtype.kind != "f":
        raise TypeError(f"mean expects a floating input, got dtype {x.dtype} (convert it with .to())")
    dim, keepdim = reduction_args("mean", dim, keepdim, axis, keepdims)
    return MeanOp(normalize_dims(dim, x.ndim, "mean"), keepdim)(x)


def var(x, dim=None, unbiased=None, keepdim: bool = False, *, correction=None, axis=None,
        keepdims=None) -> Tensor:
    """Variance over ``dim``, as torch.var: ``sum((x - mean)**2) / max(0, N - correction)``.

    ``correction`` defaults to 1 (Bessel's); ``unbiased=False`` is PyTorch's older spelling of
    ``correction=0``. Built from mean, subtraction, product and sum, so its gradient is
    theirs (exact: ``2 (x - mean) / (N - correction)``). Where ``N - correction <= 0`` the
    result is NaN or inf and a warning says so, as in PyTorch.

    Raises:
        TypeError: an integer input (PyTorch refuses it too), or both unbiased and correction.
    """
    x = as_tensor(x)
    if x.dtype.kind != "f":
        raise TypeError(f"var and std expect a floating input, got dtype {x.dtype} (as in PyTorch)")
    if unbiased is not None and correction is not None:
        raise TypeError("var: pass either unbiased or correction, not both")
    correction = (1 if unbiased is None or unbiased else 0) if correction is None else correction
    dim, keepdim = reduction_args("var", dim, keepdim, axis, keepdims)
    axes = normalize_dims(dim, x.ndim, "var")
    dof = _count(x.shape, axes) - correction
    if dof <= 0:
        warnings.warn(f"var(): degrees of freedom is {dof} <= 0: the correction ({correction}) should "
                      "be smaller than the number of reduced elements", UserWarning, stacklevel=2)
    return VarOp(axes, correction, keepdim)(x)


class VarOp(Function):
    """Variance over axes with a correction: torch.var's value and gradient.

    forward:  y = sum((x - m)**2, axes) / max(0, n - correction),  m = mean(x, axes),
              n = number of elements reduced
    backward: gx = broadcast(gy) * 2 (x - m) / max(0, n - correction)
              (the mean's own term, -2 sum(x - m) / n / (n - correction), is 0)

    One op rather than a chain of mean, product and sum, so that the divisor stays tied to
    the input's size: ONNX export writes it from the input's shape, so a file with a dynamic
    batch or image size divides by the count of the size it runs at.

    Shapes: x (...), y x.shape reduced over axes (kept as 1 with keepdims); gx x.shape.
    """

    def __init__(self, axes: tuple[int, ...], correction: float, keepdims: bool):
        self.axes, self.correction, self.keepdims = axes, correction, keepdims

    def forward(self, x):
        dof = x.dtype.type(builtins.max(_count(x.shape, self.axes) - self.correction, 0))
        centered = x - x.mean(axis=self.axes, keepdims=True) if x.size else x
        with np.errstate(divide="ignore", invalid="ignore"):  # dof 0: inf or NaN, as PyTorch
            y = (centered * centered).sum(axis=self.axes, keepdims=self.keepdims) / dof
        if self.saves_for_backward:
            self.centered, self.dof = centered, dof
        return y

    def backward(self, gy):
        gy = _expand_reduced(gy, self.centered.shape, self.axes, self.keepdims)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (2 * gy / self.dof * self.centered).astype(gy.dtype, copy=False)


class StdRootOp(Function):
    """std's last step, the square root of the variance, with PyTorch's gradient at 0.

    forward:  y = sqrt(v)
    backward: gv = gy / (2 y), and 0 where y == 0 (a constant input has gradient 0 in
              torch.std, where the plain square root's would be 0 * inf = NaN)
    """

    def forward(self, v):
        self.y = self.xp.sqrt(v)
        return self.y

    def backward(self, gy):
        xp = self.xp
        zero = self.y == 0
        with np.errstate(divide="ignore", invalid="ignore"):
            gv = gy / (2 * self.y)
        return xp.where(zero, xp.zeros((), dtype=gv.dtype), gv)


def std(x, dim=None, unbiased=None, keepdim: bool = False, *, correction=None, axis=None,
        keepdims=None) -> Tensor:
    """Standard deviation: the square root of ``var`` with the same arguments, as torch.std
    (its gradient is 0, not NaN, where the deviation is 0, as PyTorch's)."""
    return StdRootOp()(var(x, dim, unbiased, keepdim, correction=correction, axis=axis, keepdims=keepdims))


def all(x, dim=None, keepdim: bool = False, *, axis=None, keepdims=None) -> Tensor:  # noqa: A001
    """True where every element over ``dim`` is nonzero (a bool tensor, no gradient), as torch.all."""
    return _logical("all", x, dim, keepdim, axis, keepdims)


def any(x, dim=None, keepdim: bool = False, *, axis=None, keepdims=None) -> Tensor:  # noqa: A001
    """True where some element over ``dim`` is nonzero (a bool tensor, no gradient), as torch.any."""
    return _logical("any", x, dim, keepdim, axis, keepdims)


def _logical(op: str, x, dim, keepdim, axis, keepdims) -> Tensor:
    x = as_tensor(x)
    dim, keepdim = reduction_args(op, dim, keepdim, axis, keepdims)
    axes = normalize_dims(dim, x.ndim, op)
    xp = get_array_module(x.data)
    return Tensor._wrap(xp.asarray(getattr(xp, op)(x.data != 0, axis=axes, keepdims=keepdim)))


def amax(x, dim=None, keepdim: bool = False, *, axis=None, keepdims=None) -> Tensor:
    """Largest value over ``dim`` (an int, a tuple or None); ties share the gradient (torch.amax)."""
    x = as_tensor(x)
    dim, keepdim = reduction_args("amax", dim, keepdim, axis, keepdims)
    return AmaxOp(normalize_dims(dim, x.ndim, "amax"), keepdim)(x)


def amin(x, dim=None, keepdim: bool = False, *, axis=None, keepdims=None) -> Tensor:
    """Smallest value over ``dim`` (an int, a tuple or None); ties share the gradient (torch.amin)."""
    x = as_tensor(x)
    dim, keepdim = reduction_args("amin", dim, keepdim, axis, keepdims)
    return AmaxOp(normalize_dims(dim, x.ndim, "amin"), keepdim, smallest=True)(x)


def max(x, dim=None, keepdim: bool = False, *, axis=None, keepdims=None):  # noqa: A001
    """The largest element, or the largest along ``dim`` and where it is (torch.max).

    Returns:
        Without ``dim``: a 0-d tensor (ties, and NaNs when the maximum is NaN, share the
        gradient). With ``dim`` (an int): ``ValuesIndices(values, indices)``, unpackable
        as ``values, indices = x.max(1)``; the gradient goes to the first maximum, a
        NaN counting as the maximum, as in PyTorch. ``indices`` is an int64 tensor.
        With a tensor in place of ``dim``: the elementwise ``maximum`` of the two.
    """
    return _extremum("max", x, dim, keepdim, axis, keepdims, smallest=False)


def min(x, dim=None, keepdim: bool = False, *, axis=None, keepdims=None):  # noqa: A001
    """The smallest element, or the smallest along ``dim`` and where it is (torch.min)."""
    return _extremum("min", x, dim, keepdim, axis, keepdims, smallest=True)


def _extremum(op: str, x, dim, keepdim, axis, keepdims, smallest: bool):
    if isinstance(dim, Tensor):  # torch.max(input, other): the elementwise maximum
        return minimum(x, dim) if smallest else maximum(x, dim)
    x = as_tensor(x)
    dim, keepdim = reduction_args(op, dim, keepdim, axis, keepdims)
    if dim is None:
        if keepdim:
            raise TypeError(f"{op}() without dim takes no keepdim (use amax/amin with keepdim)")
        if x.size == 0:
            raise ShapeError(f"{op}() of an empty tensor (shape {x.shape}) has no value; pass dim")
        return AmaxOp(tuple(range(x.ndim)), False, smallest, nan_selects=True)(x)
    indices = _arg_extremum(op, x, dim, True, smallest)
    axis = normalize_dim(dim, x.ndim, op)
    if x.ndim == 0:
        values = x * 1 if x.requires_grad else Tensor._wrap(x.data.copy())
        return ValuesIndices(values, Tensor._wrap(indices.data.reshape(())))
    values = SelectAlongDimOp(indices.data, axis, keepdim, smallest)(x)
    if not keepdim:
        indices = Tensor._wrap(indices.data.squeeze(axis))
    return ValuesIndices(values, indices)


def _arg_extremum(op: str, x: Tensor, dim, keepdim: bool, smallest: bool) -> Tensor:
    data = x.data
    xp = get_array_module(data)
    if dim is None:
        if data.size == 0:
            raise ShapeError(f"{op} of an empty tensor (shape {x.shape}) has no position; pass dim")
        flat = data.reshape(-1)
        index = flat.argmin() if smallest else flat.argmax()
        shape = (1,) * data.ndim if keepdim else ()
        return Tensor._wrap(xp.asarray(index, dtype=np.int64).reshape(shape))
    axis = normalize_dim(dim, data.ndim, op)
    if data.ndim == 0:
        return Tensor._wrap(xp.zeros((), dtype=np.int64))
    if data.shape[axis] == 0:
        raise ShapeError(f"{op} over dim {dim} of size 0 (input shape {x.shape}) has no position")
    found = data.argmin(axis=axis, keepdims=keepdim) if smallest else data.argmax(axis=axis, keepdims=keepdim)
    return Tensor._wrap(found.astype(np.int64, copy=False))


def argmax(x, dim=None, keepdim: bool = False, *, axis=None, keepdims=None) -> Tensor:
    """Position of the largest element (of the flattened tensor when ``dim`` is None), int64.

    The first maximum wins, and a NaN counts as the maximum, as in PyTorch.
    """
    dim, keepdim = reduction_args("argmax", dim, keepdim, axis, keepdims)
    return _arg_extremum("argmax", as_tensor(x), dim, keepdim, smallest=False)


def argmin(x, dim=None, keepdim: bool = False, *, axis=None, keepdims=None) -> Tensor:
    """Position of the smallest element (of the flattened tensor when ``dim`` is None), int64."""
    dim, keepdim = reduction_args("argmin", dim, keepdim, axis, keepdims)
    return _arg_extremum("argmin", as_tensor(x), dim, keepdim, smallest=True)
