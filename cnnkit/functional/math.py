"""Elementwise arithmetic and reductions: the ops behind Tensor's operators.

Binary ops broadcast like NumPy; their backward sums the gradient back to each
input's shape (``sum_to``). Their result dtype follows PyTorch's promotion rules
(``result_type``), not NumPy's: an int tensor times a float32 tensor is float32, and a
0-d tensor does not widen a dimensioned tensor of its own kind.

Reductions take PyTorch's ``dim`` / ``keepdim`` (or NumPy's ``axis`` / ``keepdims``).
"""

from __future__ import annotations

from functools import reduce
from typing import NamedTuple

import numpy as np

from .. import config
from ..backend import get_array_module
from ..errors import ShapeError
from ..function import Function
from ..tensor import Tensor, as_tensor
from .dims import normalize_dim, normalize_dims, reduction_args

__all__ = [
    "add", "sub", "mul", "div", "pow", "neg", "matmul",
    "sum", "mean", "max", "min", "amax", "amin", "argmax", "argmin", "ValuesIndices",
    "exp", "log", "sqrt", "abs", "sign", "cast", "result_type", "as_floating", "sum_to",
]


def sum_to(g, shape: tuple[int, ...]):
    """Sum ``g`` over the axes NumPy broadcasting added or stretched, giving ``shape``."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        i + lead for i, n in enumerate(shape) if n == 1 and g.shape[i + lead] != 1
    )
    g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape) if lead else g


class AddOp(Function):
    """Elementwise sum with broadcasting.

    forward:  y = a + b
    backward: ga = sum_to(gy, a.shape), gb = sum_to(gy, b.shape)
    """

    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a + b

    def backward(self, gy):
        return sum_to(gy, self.a_shape), sum_to(gy, self.b_shape)


class SubOp(Function):
    """Elementwise difference with broadcasting.

    forward:  y = a - b
    backward: ga = sum_to(gy, a.shape), gb = -sum_to(gy, b.shape)
    """

    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a - b

    def backward(self, gy):
        gb = -sum_to(gy, self.b_shape) if self.needs_input_grad[1] else None
        return sum_to(gy, self.a_shape), gb


class MulOp(Function):
    """Elementwise product with broadcasting.

    forward:  y = a * b
    backward: ga = sum_to(gy * b, a.shape), gb = sum_to(gy * a, b.shape)
    """

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, gy):
        need_a, need_b = self.needs_input_grad
        ga = sum_to(gy * self.b, self.a.shape) if need_a else None
        gb = sum_to(gy * self.a, self.b.shape) if need_b else None
        return ga, gb


class DivOp(Function):
    """Elementwise quotient with broadcasting.

    forward:  y = a / b
    backward: ga = sum_to(gy / b, a.shape), gb = sum_to(-gy * a / b**2, b.shape)
    """

    def forward(self, a, b):
        self.a, self.b = a, b
        with np.errstate(divide="ignore", invalid="ignore"):  # x / 0: inf or NaN, silently as PyTorch
            return a / b

    def backward(self, gy):
        need_a, need_b = self.needs_input_grad
        with np.errstate(divide="ignore", invalid="ignore"):
            ga = sum_to(gy / self.b, self.a.shape) if need_a else None
            gb = sum_to(-gy * self.a / (self.b * self.b), self.b.shape) if need_b else None
        return ga, gb


class PowOp(Function):
    """Elementwise power with broadcasting.

    forward:  y = a ** b
    backward: ga = gy * b * a ** (b - 1), and 0 where b == 0 (so 0 ** 0 has gradient 0);
              gb = gy * y * log(a), and 0 where a == 0 and b >= 0   (each summed to its
              shape). NOTE: these are PyTorch's conventions (pow_backward_self and
              pow_backward_exponent): at a == 0 with b < 0 the gradients stay -inf / inf.
    """

    def forward(self, a, b):
        self.a, self.b = a, b
        with np.errstate(divide="ignore", invalid="ignore"):  # 0 ** -1 = inf, (-8) ** 0.5 = NaN
            self.y = a**b
        return self.y

    def backward(self, gy):
        need_a, need_b = self.needs_input_grad
        xp = self.xp
        a, b = self.a, self.b
        ga = gb = None
        with np.errstate(divide="ignore", invalid="ignore"):  # 0 ** -1, log(-1): inf and NaN, as PyTorch
            if need_a:
                ga = xp.where(b == 0, 0, gy * b * a ** (b - 1))
                ga = sum_to(ga.astype(gy.dtype, copy=False), a.shape)
            if need_b:
                gb = xp.where((a == 0) & (b >= 0), 0, gy * self.y * xp.log(a))
                gb = sum_to(gb.astype(gy.dtype, copy=False), b.shape)
        return ga, gb


class NegOp(Function):
    """Elementwise negation.

    forward:  y = -x
    backward: gx = -gy
    """

    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


class MatMulOp(Function):
    """Matrix product with NumPy's matmul rules (batched, broadcast leading axes).

    forward:  y = a @ b          a (..., n, k), b (..., k, m) -> y (..., n, m)
    backward: ga = gy @ b^T,  gb = a^T @ gy   (summed over broadcast batch axes)
    1-D operands are promoted as in NumPy and the result squeezed back.
    """

    def forward(self, a, b):
        self.a, self.b = a, b
        return a @ b

    def backward(self, gy):
        xp = self.xp
        a, b = self.a, self.b
        a2 = a[None, :] if a.ndim == 1 else a          # (1, k) for a vector
        b2 = b[:, None] if b.ndim == 1 else b          # (k, 1) for a vector
        # Restore the dropped axes, the trailing one first: for vector @ vector gy is 0-d.
        gy2 = gy
        if b.ndim == 1:
            gy2 = xp.expand_dims(gy2, -1)
        if a.ndim == 1:
            gy2 = xp.expand_dims(gy2, -2)
        need_a, need_b = self.needs_input_grad
        ga = gb = None
        if need_a:
            ga = gy2 @ xp.swapaxes(b2, -1, -2)
            ga = sum_to(ga, a2.shape).reshape(a.shape)
        if need_b:
            gb = xp.swapaxes(a2, -1, -2) @ gy2
            gb = sum_to(gb, b2.shape).reshape(b.shape)
        return ga, gb


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
    """

    def __init__(self, index, axis: int, keepdims: bool):
        self.index, self.axis, self.keepdims = index, axis, keepdims

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


class ExpOp(Function):
    """forward: y = exp(x);  backward: gx = gy * y"""

    def forward(self, x):
        self.y = self.xp.exp(x)
        return self.y

    def backward(self, gy):
        return gy * self.y


class LogOp(Function):
    """forward: y = log(x);  backward: gx = gy / x"""

    def forward(self, x):
        self.x = x
        with np.errstate(divide="ignore", invalid="ignore"):  # log 0 = -inf, log(-1) = NaN, as PyTorch
            return self.xp.log(x)

    def backward(self, gy):
        with np.errstate(divide="ignore", invalid="ignore"):
            return gy / self.x


class SqrtOp(Function):
    """forward: y = sqrt(x);  backward: gx = gy / (2 y)"""

    def forward(self, x):
        with np.errstate(invalid="ignore"):  # sqrt(-1) = NaN, as PyTorch
            self.y = self.xp.sqrt(x)
        return self.y

    def backward(self, gy):
        with np.errstate(divide="ignore", invalid="ignore"):  # 1 / (2 sqrt 0) = inf, as PyTorch
            return gy / (2 * self.y)


class AbsOp(Function):
    """forward: y = |x|;  backward: gx = gy * sign(x)  (sign is 0 at x = 0 and at NaN, as PyTorch)"""

    def forward(self, x):
        self.sign = _sign(x)
        return self.xp.abs(x)

    def backward(self, gy):
        return gy * self.sign


class SignOp(Function):
    """forward: y = sign(x) (-1, 0 or 1; 0 at NaN, as torch.sign);  backward: gx = 0"""

    def forward(self, x):
        self.x_shape, self.x_dtype = x.shape, x.dtype
        return _sign(x)

    def backward(self, gy):
        return self.xp.zeros(self.x_shape, dtype=gy.dtype)


def _sign(x):
    if x.dtype.kind == "b":
        return x.copy()
    return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)


class CastOp(Function):
    """Change dtype. forward: y = x.astype(dtype);  backward: gx = gy.astype(x.dtype)"""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)

    def forward(self, x):
        self.x_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy):
        return gy.astype(self.x_dtype)


def _category(dtype) -> int:
    return {"b": 0, "i": 1, "u": 1, "f": 2, "c": 3}[dtype.kind]


def _promote_types(a, b):
    """PyTorch's promote_types: a higher kind wins outright (int64 with float32 is float32)."""
    ca, cb = _category(a), _category(b)
    if ca != cb:
        return a if ca > cb else b
    return np.promote_types(a, b)


def result_type(*arrays) -> np.dtype:
    """The dtype of an elementwise op on ``arrays``, by PyTorch's rules (``torch.result_type``).

    Dimensioned operands decide; 0-d operands (and Python scalars, already made 0-d
    arrays) only count when they are of a higher kind (bool < int < float): a 0-d
    float64 tensor times a float32 matrix is float32, an int matrix times 2.5 is the
    default float dtype.
    """
    dims = [a.dtype for a in arrays if a.ndim]
    zeros = [a.dtype for a in arrays if not a.ndim]
    if not dims:
        return reduce(_promote_types, zeros)
    dim_type = reduce(_promote_types, dims)
    if zeros:
        zero_type = reduce(_promote_types, zeros)
        if _category(zero_type) > _category(dim_type):
            return _promote_types(dim_type, zero_type)
    return dim_type


def _to_dtype(t: Tensor, dtype) -> Tensor:
    if t.dtype == dtype:
        return t
    if t.requires_grad:
        return CastOp(dtype)(t)
    return Tensor._wrap(t.data.astype(dtype))


def _binary(op_cls, a, b, floating: bool = False) -> Tensor:
    # Python scalars take the tensor operand's dtype so float32 stays float32.
    like = a.data if isinstance(a, Tensor) else b.data if isinstance(b, Tensor) else None
    a, b = as_tensor(a, like=like), as_tensor(b, like=like)
    if a.dtype != b.dtype or (floating and a.dtype.kind != "f"):
        dtype = result_type(a.data, b.data)
        if floating and dtype.kind != "f":  # true division of integers: the default float dtype
            dtype = config.get_default_dtype()
        a, b = _to_dtype(a, dtype), _to_dtype(b, dtype)
    return op_cls()(a, b)


def as_floating(x) -> Tensor:
    """x as a tensor; integer and bool tensors become the default float dtype (as torch.exp)."""
    x = as_tensor(x)
    if x.dtype.kind in "biu":
        return Tensor._wrap(x.data.astype(config.get_default_dtype()))
    return x


def add(a, b) -> Tensor:
    return _binary(AddOp, a, b)


def sub(a, b) -> Tensor:
    return _binary(SubOp, a, b)


def mul(a, b) -> Tensor:
    return _binary(MulOp, a, b)


def div(a, b) -> Tensor:
    """True division, as torch.div: integer operands give the default float dtype."""
    return _binary(DivOp, a, b, floating=True)


def pow(a, b) -> Tensor:  # noqa: A001 - PyTorch's name
    return _binary(PowOp, a, b)


def neg(x) -> Tensor:
    return NegOp()(x)


def matmul(a, b) -> Tensor:
    """Matrix product with NumPy's (and PyTorch's) rules for 1-D and batched operands.

    Raises:
        ShapeError: a 0-d operand, or inner dimensions that differ.
    """
    a, b = as_tensor(a), as_tensor(b, like=a.data)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul expects operands of at least 1 dimension, got shapes {a.shape} and {b.shape}")
    k_a, k_b = a.shape[-1], b.shape[-2] if b.ndim > 1 else b.shape[0]
    if k_a != k_b:
        raise ShapeError(f"matmul cannot multiply shapes {a.shape} and {b.shape} ({k_a} != {k_b})")
    return _binary(MatMulOp, a, b)


def sum(x, dim=None, keepdim: bool = False, *, axis=None, keepdims=None) -> Tensor:  # noqa: A001
    """Sum over ``dim`` (an int, a tuple, or None for every dimension), as torch.sum.

    ``axis`` and ``keepdims`` are accepted for ``dim`` and ``keepdim``, as PyTorch does.
    """
    x = as_tensor(x)
    dim, keepdim = reduction_args("sum", dim, keepdim, axis, keepdims)
    return SumOp(normalize_dims(dim, x.ndim, "sum"), keepdim)(x)


def mean(x, dim=None, keepdim: bool = False, *, axis=None, keepdims=None) -> Tensor:
    """Mean over ``dim`` (an int, a tuple, or None for every dimension), as torch.mean.

    Raises:
        TypeError: x is not floating (PyTorch cannot infer the result dtype either).
    """
    x = as_tensor(x)
    if x.dtype.kind != "f":
        raise TypeError(f"mean expects a floating input, got dtype {x.dtype} (convert it with .to())")
    dim, keepdim = reduction_args("mean", dim, keepdim, axis, keepdims)
    return MeanOp(normalize_dims(dim, x.ndim, "mean"), keepdim)(x)


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
    """
    return _extremum("max", x, dim, keepdim, axis, keepdims, smallest=False)


def min(x, dim=None, keepdim: bool = False, *, axis=None, keepdims=None):  # noqa: A001
    """The smallest element, or the smallest along ``dim`` and where it is (torch.min)."""
    return _extremum("min", x, dim, keepdim, axis, keepdims, smallest=True)


def _extremum(op: str, x, dim, keepdim, axis, keepdims, smallest: bool):
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
    values = SelectAlongDimOp(indices.data, axis, keepdim)(x)
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


def exp(x) -> Tensor:
    return ExpOp()(as_floating(x))


def log(x) -> Tensor:
    return LogOp()(as_floating(x))


def sqrt(x) -> Tensor:
    return SqrtOp()(as_floating(x))


def abs(x) -> Tensor:  # noqa: A001
    return AbsOp()(x)


def sign(x) -> Tensor:
    """-1, 0 or 1 per element (0 at NaN, as torch.sign); its gradient is 0 everywhere."""
    return SignOp()(x)


def cast(x, dtype) -> Tensor:
    """Convert to ``dtype``; differentiable between floating dtypes, a constant otherwise."""
    x = as_tensor(x)
    dtype = np.dtype(dtype)
    if dtype.kind != "f":  # integer outputs have no gradient, as in PyTorch
        return Tensor._wrap(x.data.astype(dtype))
    return CastOp(dtype)(x)
