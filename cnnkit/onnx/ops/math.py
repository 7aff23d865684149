"""Elementwise arithmetic (and variadic Sum), rounding, trigonometry, erf, activations,
(log-)softmax, matrix products and reductions."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ... import functional as F
from ...functional.trig import cos, sin
from ...tensor import Tensor
from . import TRANSLATORS, Node

__all__ = ["reduce_axes"]


def _is_int(t: Tensor) -> bool:
    return t.dtype.kind in "iub"


# --------------------------------------------------------------------------- arithmetic
def _operands(node: Node) -> tuple[Tensor, Tensor]:
    """A and B of a binary node; before opset 7, B broadcasts from ``axis`` of A when asked."""
    a, b = node.input(0), node.input(1)
    axis = node.attr("axis")
    if node.opset < 7 and node.attr("broadcast", 0) and axis is not None and b.ndim:
        trailing = a.ndim - axis % a.ndim - b.ndim
        b = F.reshape(b, b.shape + (1,) * trailing)
    return a, b


def _binary(fn: Callable) -> Callable[[Node], Tensor]:
    def translate(node: Node) -> Tensor:
        a, b = _operands(node)
        y = fn(a, b)
        # ONNX keeps the input type; NumPy may widen a 0-d operand's result.
        return y if y.dtype == a.dtype else F.cast(y, a.dtype)

    return translate


def div(node: Node) -> Tensor:
    a, b = _operands(node)
    if _is_int(a):
        # Integer division truncates toward zero (C's rule), unlike NumPy's floor division.
        x, y = a.data, b.data
        q = np.floor_divide(x, y)
        q = q + (((np.remainder(x, y) != 0) & ((x < 0) ^ (y < 0))).astype(q.dtype))
        return Tensor(q.astype(a.dtype))
    y = F.div(a, b)
    return y if y.dtype == a.dtype else F.cast(y, a.dtype)


def pow_(node: Node) -> Tensor:
    a, b = _operands(node)
    if _is_int(a):
        return Tensor(np.power(a.data, b.data).astype(a.dtype))
    if b.dtype != a.dtype:  # an integer (or other float) exponent: the result has the base's type
        b = Tensor(b.data.astype(a.dtype))
    return F.pow(a, b)


def mod(node: Node) -> Tensor:
    """A - B * q with q = trunc(A / B) (fmod=1, C's fmod) or floor(A / B) (fmod=0, Python's %)."""
    a, b = _operands(node)
    if _is_int(a) and (b.data == 0).any():
        raise node.unsupported("an integer division by zero (its remainder is undefined)")
    return F.fmod(a, b) if node.attr("fmod", 0) else F.remainder(a, b)


def _piecewise_constant(fn: Callable) -> Callable[[Node], Tensor]:
    """Sign, Floor, Ceil: the derivative is 0 wherever it exists, which a constant carries exactly."""

    def translate(node: Node) -> Tensor:
        x = node.input(0)
        return Tensor(fn(x.data).astype(x.dtype))

    return translate


def sum_(node: Node) -> Tensor:
    """Variadic Sum: the inputs added left to right, broadcast as NumPy."""
    operands = [t for t in node.inputs if t is not None]
    y = operands[0]
    for t in operands[1:]:
        y = F.add(y, t)
    return y if y.dtype == operands[0].dtype else F.cast(y, operands[0].dtype)


def _unary(fn: Callable) -> Callable[[Node], Tensor]:
    return lambda node: fn(node.input(0))


# --------------------------------------------------------------------------- matrix products
def gemm(node: Node) -> Tensor:
    """Y = alpha * A' @ B' + beta * C, A' = A.T if transA, B' = B.T if transB."""
    a, b, c = node.input(0), node.input(1), node.input(2)
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    trans_a, trans_b = bool(node.attr("transA", 0)), bool(node.attr("transB", 0))
    if trans_b and not trans_a and alpha == beta == 1.0 and (c is None or c.shape == (b.shape[0],)):
        return F.linear(a, b, c)  # PyTorch's Linear: y = a @ b.T + c
    y = F.matmul(F.transpose(a, 0, 1) if trans_a else a, F.transpose(b, 0, 1) if trans_b else b)
    if alpha != 1.0:
        y = y * alpha
    if c is not None and beta != 0.0:
        y = y + (c if beta == 1.0 else c * beta)
    return y


def matmul(node: Node) -> Tensor:
    return F.matmul(node.input(0), node.input(1))


# --------------------------------------------------------------------------- softmax
def _softmax_like(fn: Callable) -> Callable[[Node], Tensor]:
    def translate(node: Node) -> Tensor:
        x = node.input(0)
        if node.opset >= 13:
            return fn(x, int(node.attr("axis", -1)))
        # Before opset 13, the input is a 2-D matrix split at `axis`, normalized over each row.
        axis = int(node.attr("axis", 1)) % max(x.ndim, 1)
        rows = math.prod(x.shape[:axis])
        return F.reshape(fn(F.reshape(x, (rows, -1)), 1), x.shape)

    return translate


# --------------------------------------------------------------------------- reductions
def reduce_axes(node: Node, axes_input_from: int, x: Tensor) -> tuple[int, ...] | None:
    """The axes a Reduce* node reduces, or None for "no reduction" (noop_with_empty_axes).

    Axes are an attribute before ``axes_input_from`` and an optional input from it; an empty
    list means every axis unless noop_with_empty_axes is set.
    """
    if node.opset < axes_input_from:
        axes = node.attr("axes")
        axes = list(axes) if axes is not None else []
    else:
        given = node.input(1)
        axes = given.data.astype(np.int64).reshape(-1).tolist() if given is not None else []
    if not axes:
        if node.attr("noop_with_empty_axes", 0):
            return None
        return tuple(range(x.ndim))
    return tuple(sorted(a % x.ndim for a in axes))


def _reduce(fn: Callable, empty: Callable, axes_input_from: int) -> Callable[[Node], Tensor]:
    def translate(node: Node) -> Tensor:
        x = node.input(0)
        axes = reduce_axes(node, axes_input_from, x)
        if axes is None:
            return x
        keepdims = bool(node.attr("keepdims", 1))
        if any(x.shape[a] == 0 for a in axes):
            # Reducing an empty set: ONNX's identity elements (0 for a sum, -inf / the type's
            # minimum for a max, +inf / its maximum for a min, NaN for a mean), with no
            # gradient to carry.
            shape = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
            if not keepdims:
                shape = tuple(n for i, n in enumerate(x.shape) if i not in axes)
            return Tensor(np.full(shape, empty(x.dtype), dtype=x.dtype))
        return fn(x, axes, keepdims)

    return translate


def _prod(x: Tensor, axes, keepdims: bool) -> Tensor:
    """The product over ``axes``: integers with NumPy (shape arithmetic, no gradient), floats as
    a chain of F.mul over the slices along each axis (its gradient: the product of the others)."""
    if x.dtype.kind != "f":
        return Tensor(np.prod(x.data, axis=axes, keepdims=keepdims).astype(x.dtype))
    y = x
    for axis in axes:
        index = [slice(None)] * x.ndim
        index[axis] = slice(0, 1)
        product = y[tuple(index)]
        for i in range(1, x.shape[axis]):
            index[axis] = slice(i, i + 1)
            product = F.mul(product, y[tuple(index)])
        y = product                                         # size 1 along axis
    if not keepdims:
        y = F.reshape(y, [n for i, n in enumerate(x.shape) if i not in axes])
    return y


def _lowest(dtype: np.dtype):
    if dtype.kind == "b":
        return False
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _highest(dtype: np.dtype):
    if dtype.kind == "b":
        return True
    return np.inf if dtype.kind == "f" else np.iinfo(dtype).max


def hard_sigmoid(node: Node) -> Tensor:
    """max(0, min(1, alpha * x + beta)): F.hardsigmoid for PyTorch's alpha = 1/6, beta = 1/2."""
    x = node.input(0)
    alpha, beta = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
    if np.float32(alpha) == np.float32(1.0 / 6.0) and beta == 0.5:
        return F.hardsigmoid(x)
    return F.hardtanh(x * alpha + beta, 0.0, 1.0)


TRANSLATORS.update({
    "Add": _binary(F.add),
    "Sub": _binary(F.sub),
    "Mul": _binary(F.mul),
    "Div": div,
    "Pow": pow_,
    "Neg": _unary(F.neg),
    "Abs": _unary(F.abs),
    "Exp": _unary(F.exp),
    "Log": _unary(F.log),
    "Sqrt": _unary(F.sqrt),
    "Mod": mod,
    "Sign": _piecewise_constant(np.sign),
    "Floor": _piecewise_constant(np.floor),
    "Ceil": _piecewise_constant(np.ceil),
    "Sin": _unary(sin),
    "Erf": _unary(F.erf),
    "Sum": sum_,
    "Cos": _unary(cos),
    "Relu": _unary(F.relu),
    "LeakyRelu": lambda node: F.leaky_relu(node.input(0), float(node.attr("alpha", 0.01))),
    "Elu": lambda node: F.elu(node.input(0), float(node.attr("alpha", 1.0))),
    "Sigmoid": _unary(F.sigmoid),
    "Tanh": _unary(F.tanh),
    "Softplus": _unary(F.softplus),
    "HardSigmoid": hard_sigmoid,
    "HardSwish": _unary(F.hardswish),
    "Gelu": lambda node: F.gelu(node.input(0), str(node.attr("approximate", "none"))),
    "Softmax": _softmax_like(F.softmax),
    "LogSoftmax": _softmax_like(F.log_softmax),
    "Gemm": gemm,
    "MatMul": matmul,
    "ReduceSum": _reduce(F.sum, lambda dtype: 0, 13),
    "ReduceMean": _reduce(F.mean, lambda dtype: np.nan, 18),
    "ReduceMax": _reduce(F.amax, _lowest, 18),
    "ReduceMin": _reduce(F.amin, _highest, 18),
    "ReduceProd": _reduce(_prod, lambda dtype: 1, 18),
})
