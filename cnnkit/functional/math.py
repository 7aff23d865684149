"""Elementwise arithmetic and reductions: the ops behind Tensor's operators.

Binary ops broadcast like NumPy; their backward sums the gradient back to each
input's shape (``sum_to``).
"""

from __future__ import annotations

import numpy as np

from ..function import Function
from ..tensor import Tensor, as_array

__all__ = [
    "add", "sub", "mul", "div", "pow", "neg", "matmul", "sum", "mean", "max",
    "exp", "log", "sqrt", "abs", "cast", "signed_root", "sum_to",
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
        return a / b

    def backward(self, gy):
        need_a, need_b = self.needs_input_grad
        ga = sum_to(gy / self.b, self.a.shape) if need_a else None
        gb = sum_to(-gy * self.a / (self.b * self.b), self.b.shape) if need_b else None
        return ga, gb


class PowOp(Function):
    """Elementwise power with broadcasting.

    forward:  y = a ** b
    backward: ga = gy * b * a ** (b - 1), gb = gy * y * log(a)  (each summed to its shape)
    """

    def forward(self, a, b):
        self.a, self.b = a, b
        self.y = a**b
        return self.y

    def backward(self, gy):
        need_a, need_b = self.needs_input_grad
        xp = self.xp
        ga = sum_to(gy * self.b * self.a ** (self.b - 1), self.a.shape) if need_a else None
        gb = None
        if need_b:
            # NOTE: d(a**b)/db = a**b * log(a); PyTorch defines it as 0 where a == 0.
            log_a = xp.log(xp.where(self.a == 0, 1, self.a))
            gb = sum_to(gy * self.y * log_a, self.b.shape)
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


def _normalize_axis(axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(a % ndim if ndim else a for a in axis)


def _expand_reduced(g, x_shape, axes, keepdims):
    """Reshape a reduced gradient so it broadcasts against the input."""
    if not keepdims:
        shape = [1 if i in axes else n for i, n in enumerate(x_shape)]
        g = g.reshape(shape)
    return g


class SumOp(Function):
    """Sum over axes.

    forward:  y = sum(x, axes)
    backward: gx = broadcast(gy, x.shape)
    """

    def __init__(self, axis=None, keepdims: bool = False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.axes = _normalize_axis(self.axis, x.ndim)
        self.x_shape = x.shape
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        gy = _expand_reduced(gy, self.x_shape, self.axes, self.keepdims)
        return self.xp.broadcast_to(gy, self.x_shape).copy()


class MeanOp(Function):
    """Mean over axes.

    forward:  y = sum(x, axes) / n,  n = number of elements reduced
    backward: gx = broadcast(gy, x.shape) / n
    """

    def __init__(self, axis=None, keepdims: bool = False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.axes = _normalize_axis(self.axis, x.ndim)
        self.x_shape = x.shape
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        n = 1
        for a in self.axes:
            n *= self.x_shape[a]
        gy = _expand_reduced(gy, self.x_shape, self.axes, self.keepdims)
        return self.xp.broadcast_to(gy / gy.dtype.type(n), self.x_shape).copy()


class MaxOp(Function):
    """Maximum over axes (PyTorch's ``amax``).

    forward:  y = max(x, axes)
    backward: gx = gy * (x == y) / count(x == y)   (ties share the gradient evenly,
              as PyTorch's ``amax`` does)
    """

    def __init__(self, axis=None, keepdims: bool = False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.axes = _normalize_axis(self.axis, x.ndim)
        y = x.max(axis=self.axes, keepdims=True)
        if self.saves_for_backward:
            self.mask = x == y
        return y if self.keepdims else y.reshape([n for i, n in enumerate(x.shape) if i not in self.axes])

    def backward(self, gy):
        gy = _expand_reduced(gy, self.mask.shape, self.axes, self.keepdims)
        count = self.mask.sum(axis=self.axes, keepdims=True)
        return self.mask * (gy / count).astype(gy.dtype)


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
        return self.xp.log(x)

    def backward(self, gy):
        return gy / self.x


class SqrtOp(Function):
    """forward: y = sqrt(x);  backward: gx = gy / (2 y)"""

    def forward(self, x):
        self.y = self.xp.sqrt(x)
        return self.y

    def backward(self, gy):
        return gy / (2 * self.y)


class AbsOp(Function):
    """forward: y = |x|;  backward: gx = gy * sign(x)  (0 at x = 0, as PyTorch)"""

    def forward(self, x):
        self.sign = self.xp.sign(x)
        return self.xp.abs(x)

    def backward(self, gy):
        return gy * self.sign


class SignedRootOp(Function):
    """Signed p-th root, the last step of Lp pooling.

    forward:  y = sign(x) * |x| ** (1/p)
    backward: gx = gy * |x| ** (1/p - 1) / p, and 0 where x == 0 (PyTorch's convention for
              lp_pool2d on an all-zero window, where the true derivative is infinite)
    """

    def __init__(self, p: float):
        self.p = p

    def forward(self, x):
        xp = self.xp
        self.x = x
        return xp.sign(x) * xp.abs(x) ** x.dtype.type(1.0 / self.p)

    def backward(self, gy):
        xp = self.xp
        a = xp.abs(self.x)
        nonzero = a > 0
        safe = xp.where(nonzero, a, 1)
        return xp.where(nonzero, gy * safe ** gy.dtype.type(1.0 / self.p - 1) / gy.dtype.type(self.p), 0)


class CastOp(Function):
    """Change dtype. forward: y = x.astype(dtype);  backward: gx = gy.astype(x.dtype)"""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)

    def forward(self, x):
        self.x_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy):
        return gy.astype(self.x_dtype)


def _binary(op_cls, a, b) -> Tensor:
    # Python scalars take the tensor operand's dtype so float32 stays float32.
    like = a.data if isinstance(a, Tensor) else b.data if isinstance(b, Tensor) else None
    if not isinstance(a, Tensor):
        a = Tensor._wrap(as_array(a, like=like))
    if not isinstance(b, Tensor):
        b = Tensor._wrap(as_array(b, like=like))
    return op_cls()(a, b)


def add(a, b) -> Tensor:
    return _binary(AddOp, a, b)


def sub(a, b) -> Tensor:
    return _binary(SubOp, a, b)


def mul(a, b) -> Tensor:
    return _binary(MulOp, a, b)


def div(a, b) -> Tensor:
    return _binary(DivOp, a, b)


def pow(a, b) -> Tensor:  # noqa: A001 - PyTorch's name
    return _binary(PowOp, a, b)


def neg(x) -> Tensor:
    return NegOp()(x)


def matmul(a, b) -> Tensor:
    return _binary(MatMulOp, a, b)


def sum(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return SumOp(axis, keepdims)(x)


def mean(x, axis=None, keepdims: bool = False) -> Tensor:
    return MeanOp(axis, keepdims)(x)


def max(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return MaxOp(axis, keepdims)(x)


def exp(x) -> Tensor:
    return ExpOp()(x)


def log(x) -> Tensor:
    return LogOp()(x)


def sqrt(x) -> Tensor:
    return SqrtOp()(x)


def abs(x) -> Tensor:  # noqa: A001
    return AbsOp()(x)


def signed_root(x, p: float) -> Tensor:
    return SignedRootOp(p)(x)


def cast(x, dtype) -> Tensor:
    return CastOp(dtype)(x)
