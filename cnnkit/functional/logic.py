"""Comparisons, logic and selection: the ops behind ==, <, ~, &, | and ``where``.

Comparisons (``eq ne lt le gt ge``) and the logical and bitwise ops give tensors without
gradient, as PyTorch's: their outputs are piecewise constant. Comparisons and logical ops
give bool tensors. Both operands are first brought to the dtype PyTorch would compute in
(``result_type``): an int tensor against 2.5 compares as the default float dtype, a
float32 tensor against a Python or NumPy float compares in float32 (so ``x == 0.1`` holds
where ``x`` holds float32's 0.1, as in PyTorch), against a float64 array in float64.

The bitwise ops (``&``, ``|``, ``^``, ``~``) take bool and integer tensors only; on bool
tensors they are the logical ops. ``where`` and ``masked_fill`` select between two
tensors by a bool condition and are differentiable in both candidates; so are ``maximum``
and ``minimum``, which select by comparing the two.
"""

from __future__ import annotations

import operator

import numpy as np

from .. import config
from ..backend import get_array_module
from ..errors import ShapeError
from ..function import Function
from ..tensor import Tensor, as_tensor
from .dtypes import result_type, to_dtype
from .math import sum_to

__all__ = [
    "eq", "ne", "lt", "le", "gt", "ge",
    "logical_not", "logical_and", "logical_or", "logical_xor",
    "bitwise_not", "bitwise_and", "bitwise_or", "bitwise_xor",
    "where", "masked_fill", "WhereOp", "LogicOp", "maximum", "minimum", "ExtremumOp",
]

_NUMERIC_KINDS = "biuf"
_INTEGRAL_KINDS = "biu"


def _broadcast_shape(op: str, *shapes: tuple[int, ...]) -> tuple[int, ...]:
    """The shape ``shapes`` broadcast to, or a ShapeError naming every shape."""
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        listed = ", ".join(str(s) for s in shapes[:-1]) + f" and {shapes[-1]}"
        raise ShapeError(f"{op}: shapes {listed} do not broadcast together") from None


def _operands(op: str, a, b, kinds: str = _NUMERIC_KINDS) -> tuple:
    """The arrays of ``a`` and ``b`` in their common dtype (PyTorch's promotion).

    Python scalars take the tensor operand's dtype where PyTorch would (``as_tensor``'s
    ``like``), as in the arithmetic ops.

    Raises:
        TypeError: an operand that is not a number, or a dtype outside ``kinds``.
        ShapeError: shapes that do not broadcast.
    """
    like = a.data if isinstance(a, Tensor) else b.data if isinstance(b, Tensor) else None
    ta, tb = as_tensor(a, like=like), as_tensor(b, like=like)
    for t in (ta, tb):
        if t.dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"{op} expects numbers, bools, arrays or tensors, got an operand of dtype {t.dtype}")
    dtype = result_type(ta.data, tb.data)
    if dtype.kind not in kinds:
        raise TypeError(
            f"{op} is defined for bool and integer tensors only (as in PyTorch), got {ta.dtype} and {tb.dtype}"
        )
    _broadcast_shape(op, ta.shape, tb.shape)
    return ta.data.astype(dtype, copy=False), tb.data.astype(dtype, copy=False)


def _constant(array) -> Tensor:
    """Wrap an op's result (a 0-d result may be a NumPy scalar) as a tensor without gradient."""
    return Tensor._wrap(get_array_module(array).asarray(array))


class LogicOp(Function):
    """A comparison or logical op as a graph node, recorded only inside ``config.record_logic``.

    forward:  y = op(a, b) or op(x), a bool array; comparisons (eq ne lt le gt ge) compare in
              ``dtype`` (PyTorch's promotion of the operands), logical ops (and or xor not)
              read nonzero as True
    backward: none: y is piecewise constant, so no input gets a gradient (and y requires none)

    Outside ``record_logic`` the comparison functions return their result as a leaf, as
    PyTorch's do; inside it (ONNX export's trace) this op records how a mask was computed.
    """

    _FORWARD = {
        "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le, "gt": operator.gt,
        "ge": operator.ge, "and": lambda a, b: (a != 0) & (b != 0), "or": lambda a, b: (a != 0) | (b != 0),
        "xor": lambda a, b: (a != 0) ^ (b != 0), "not": lambda x: x == 0,
    }

    def __init__(self, op: str, dtype):
        self.op, self.dtype = op, np.dtype(dtype)

    def forward(self, *xs):
        return self._FORWARD[self.op](*(x.astype(self.dtype, copy=False) for x in xs))

    def backward(self, gy):
        return (None,) * len(self.inputs)


def _result(op: str, dtype, operands: tuple, result) -> Tensor:
    """``result`` as a bool tensor without gradient; inside ``config.record_logic``, when an
    operand is part of the recorded graph, made by a recorded ``LogicOp`` instead."""
    if config.is_logic_recorded() and config.is_grad_enabled() and any(
        isinstance(t, Tensor) and (t.requires_grad or t.creator is not None) for t in operands
    ):
        y = LogicOp(op, dtype)(*operands)
        y.requires_grad = False  # recorded, yet without gradient, as every comparison
        return y
    return _constant(result)


# --------------------------------------------------------------------------- comparisons
def eq(a, b) -> Tensor:
    """a == b elementwise, with broadcasting: a bool tensor without gradient, as torch.eq.

    Raises:
        ShapeError: the shapes do not broadcast. TypeError: an operand that is not numeric.
    """
    x, y = _operands("eq (==)", a, b)
    return _result("eq", x.dtype, (a, b), x == y)


def ne(a, b) -> Tensor:
    """a != b elementwise (True where either is NaN), as torch.ne."""
    x, y = _operands("ne (!=)", a, b)
    return _result("ne", x.dtype, (a, b), x != y)


def lt(a, b) -> Tensor:
    """a < b elementwise, as torch.lt."""
    x, y = _operands("lt (<)", a, b)
    return _result("lt", x.dtype, (a, b), x < y)


def le(a, b) -> Tensor:
    """a <= b elementwise, as torch.le."""
    x, y = _operands("le (<=)", a, b)
    return _result("le", x.dtype, (a, b), x <= y)


def gt(a, b) -> Tensor:
    """a > b elementwise, as torch.gt."""
    x, y = _operands("gt (>)", a, b)
    return _result("gt", x.dtype, (a, b), x > y)


def ge(a, b) -> Tensor:
    """a >= b elementwise, as torch.ge."""
    x, y = _operands("ge (>=)", a, b)
    return _result("ge", x.dtype, (a, b), x >= y)


# --------------------------------------------------------------------------- logic
def logical_not(x) -> Tensor:
    """True where ``x`` is zero (any dtype; NaN counts as nonzero), as torch.logical_not."""
    x = as_tensor(x)
    return _result("not", x.dtype, (x,), x.data == 0)


def logical_and(a, b) -> Tensor:
    """True where both are nonzero, with broadcasting, as torch.logical_and."""
    x, y = _operands("logical_and", a, b)
    return _result("and", x.dtype, (a, b), (x != 0) & (y != 0))


def logical_or(a, b) -> Tensor:
    """True where either is nonzero, as torch.logical_or."""
    x, y = _operands("logical_or", a, b)
    return _result("or", x.dtype, (a, b), (x != 0) | (y != 0))


def logical_xor(a, b) -> Tensor:
    """True where exactly one is nonzero, as torch.logical_xor."""
    x, y = _operands("logical_xor", a, b)
    return _result("xor", x.dtype, (a, b), (x != 0) ^ (y != 0))


def bitwise_not(x) -> Tensor:
    """``~x``: logical not of a bool tensor, bitwise not of an integer one, as torch.bitwise_not.

    Raises:
        TypeError: a floating tensor (as PyTorch: to invert a mask, compare first).
    """
    x = as_tensor(x)
    if x.dtype.kind not in _INTEGRAL_KINDS:
        raise TypeError(f"~ (bitwise_not) is defined for bool and integer tensors only (as in PyTorch), "
                        f"got {x.dtype}")
    if x.dtype == np.bool_:  # logical not: recorded for export as the other logic ops
        return _result("not", x.dtype, (x,), ~x.data)
    return _constant(~x.data)


def bitwise_and(a, b) -> Tensor:
    """``a & b`` for bool and integer tensors (logical and on bools), as torch.bitwise_and."""
    x, y = _operands("& (bitwise_and)", a, b, _INTEGRAL_KINDS)
    if x.dtype == np.bool_:  # logical and: recorded for export as the other logic ops
        return _result("and", x.dtype, (a, b), x & y)
    return _constant(x & y)


def bitwise_or(a, b) -> Tensor:
    """``a | b`` for bool and integer tensors, as torch.bitwise_or."""
    x, y = _operands("| (bitwise_or)", a, b, _INTEGRAL_KINDS)
    if x.dtype == np.bool_:  # logical or: recorded for export as the other logic ops
        return _result("or", x.dtype, (a, b), x | y)
    return _constant(x | y)


def bitwise_xor(a, b) -> Tensor:
    """``a ^ b`` for bool and integer tensors, as torch.bitwise_xor."""
    x, y = _operands("^ (bitwise_xor)", a, b, _INTEGRAL_KINDS)
    if x.dtype == np.bool_:  # logical xor: recorded for export as the other logic ops
        return _result("xor", x.dtype, (a, b), x ^ y)
    return _constant(x ^ y)


# --------------------------------------------------------------------------- selection
class WhereOp(Function):
    """Pick each element from one of two tensors by a bool condition.

    forward:  y = x where condition, else other   (condition, x and other broadcast)
    backward: gcondition: none (a bool input);
              gx = sum_to(gy where condition, else 0, x.shape)
              gother = sum_to(gy where not condition, else 0, other.shape)

    The condition is an input (without gradient), so the graph shows where a recorded mask
    (``config.record_logic``) is used.

    Shapes: y and gy have the broadcast shape of condition, x and other.
    """

    def forward(self, condition, x, other):
        self.condition = condition  # read by backward
        self.x_shape, self.other_shape = x.shape, other.shape
        return self.xp.where(condition, x, other)

    def backward(self, gy):
        xp = self.xp
        zero = xp.zeros((), dtype=gy.dtype)
        _, need_x, need_other = self.needs_input_grad
        gx = sum_to(xp.where(self.condition, gy, zero), self.x_shape) if need_x else None
        gother = sum_to(xp.where(self.condition, zero, gy), self.other_shape) if need_other else None
        return None, gx, gother


def _bool_condition(op: str, condition, name: str) -> Tensor:
    condition = as_tensor(condition)
    if condition.dtype != np.bool_:
        raise TypeError(f"{op} expects a bool {name} (compare first, e.g. x > 0), got dtype {condition.dtype}")
    return condition


def where(condition, input=None, other=None):  # noqa: A002 - PyTorch's argument names
    """``input`` where ``condition`` holds, else ``other``, with broadcasting, as torch.where.

    ``input`` and ``other`` are tensors, arrays or numbers, promoted to one dtype by
    PyTorch's rules (``where(c, x, 0.0)`` keeps x's float32; ``where(c, 1, 0)`` is int64).
    The gradient of each output element goes to the candidate it came from. With the
    condition alone, ``where(c)`` is ``c``'s nonzero positions: one int64 tensor of
    indices per dimension, as ``torch.where(c)``.

    Raises:
        TypeError: a condition that is not bool, or only one of input and other.
        ShapeError: the three shapes do not broadcast together.
    """
    condition = _bool_condition("where", condition, "condition")
    if input is None and other is None:
        data = condition.data.reshape(1) if condition.ndim == 0 else condition.data
        return tuple(Tensor._wrap(i.astype(np.int64, copy=False)) for i in get_array_module(data).nonzero(data))
    if input is None or other is None:
        raise TypeError("where(condition, input, other) needs both input and other (or neither)")
    like = input.data if isinstance(input, Tensor) else other.data if isinstance(other, Tensor) else None
    x, other = as_tensor(input, like=like), as_tensor(other, like=like)
    dtype = result_type(x.data, other.data)
    _broadcast_shape("where", condition.shape, x.shape, other.shape)
    return WhereOp()(condition, to_dtype(x, dtype), to_dtype(other, dtype))


def masked_fill(x, mask, value) -> Tensor:
    """``x`` with ``value`` where ``mask`` holds, as torch's ``Tensor.masked_fill``.

    ``value`` (a number or a 0-d tensor) takes ``x``'s dtype (2.5 fills an int tensor with
    2, as PyTorch); ``mask`` and ``x`` broadcast together. The gradient reaches ``x`` where
    the mask is false (and a 0-d ``value`` tensor where it is true).

    Raises:
        TypeError: a mask that is not bool. ShapeError: a value tensor that is not 0-d, or
        shapes that do not broadcast.
    """
    x = as_tensor(x)
    mask = _bool_condition("masked_fill", mask, "mask")
    if isinstance(value, Tensor):
        if value.ndim != 0:
            raise ShapeError(f"masked_fill expects a number or a 0-d tensor as value, got shape {value.shape}")
        value = to_dtype(value, x.dtype)
    else:
        value = Tensor._wrap(get_array_module(x.data).asarray(value, dtype=x.dtype))
    _broadcast_shape("masked_fill", mask.shape, x.shape)
    return WhereOp()(mask, value, x)


class ExtremumOp(Function):
    """The elementwise maximum (or minimum) of two tensors, with broadcasting.

    forward:  y = maximum(a, b) (minimum(a, b)); a NaN in either operand gives NaN
    backward: h = gy / 2 where a == b, else gy  (a tie shares the gradient, as PyTorch);
              maximum: ga = sum_to(h, 0 where a < b), gb = sum_to(h, 0 where a > b)
              minimum: ga = sum_to(h, 0 where a > b), gb = sum_to(h, 0 where a < b)

    Shapes: y and gy have the broadcast shape of a and b.
    """

    def __init__(self, largest: bool):
        self.largest = largest

    def forward(self, a, b):
        if self.saves_for_backward:
            self.a, self.b = a, b
        return self.xp.maximum(a, b) if self.largest else self.xp.minimum(a, b)

    def backward(self, gy):
        xp = self.xp
        a, b = self.a, self.b
        zero = xp.zeros((), dtype=gy.dtype)
        h = xp.where(a == b, gy / 2, gy)                              # broadcast shape
        a_loses, b_loses = (a < b, a > b) if self.largest else (a > b, a < b)
        need_a, need_b = self.needs_input_grad
        ga = sum_to(xp.where(a_loses, zero, h), a.shape) if need_a else None
        gb = sum_to(xp.where(b_loses, zero, h), b.shape) if need_b else None
        return ga, gb


def _extremum_of_two(op: str, input, other, largest: bool) -> Tensor:
    like = input.data if isinstance(input, Tensor) else other.data if isinstance(other, Tensor) else None
    a, b = as_tensor(input, like=like), as_tensor(other, like=like)
    dtype = result_type(a.data, b.data)
    _broadcast_shape(op, a.shape, b.shape)
    return ExtremumOp(largest)(to_dtype(a, dtype), to_dtype(b, dtype))


def maximum(input, other) -> Tensor:  # noqa: A002 - PyTorch's argument names
    """The elementwise maximum, as torch.maximum (and ``torch.max(input, other)``).

    The operands broadcast and are promoted to one dtype; a NaN in either gives NaN; where
    they tie, each receives half the gradient, as in PyTorch.
    """
    return _extremum_of_two("maximum", input, other, True)


def minimum(input, other) -> Tensor:  # noqa: A002 - PyTorch's argument names
    """The elementwise minimum, as torch.minimum (and ``torch.min(input, other)``)."""
    return _extremum_of_two("minimum", input, other, False)
