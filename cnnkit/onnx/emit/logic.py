"""Emitters of comparisons, logic and selection: Equal, Less, Greater (and the -OrEqual forms,
spelled with Or before opset 12), Not, And, Or, Xor, and Where (``F.where``, ``masked_fill``; ``x[mask] = v``
is in ``shape``, with the other indexing).

The export trace records comparisons and logical ops (``config.record_logic``), so a mask
computed from the input is written as the nodes that compute it, not as the traced values.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from ..writer import Writer

__all__ = ["EMITTERS"]

_COMPARE = {"eq": "Equal", "lt": "Less", "gt": "Greater"}
_OR_EQUAL = {"le": "Less", "ge": "Greater"}   # LessOrEqual / GreaterOrEqual from opset 12
_LOGICAL = {"and": "And", "or": "Or", "xor": "Xor"}


def _as_bool(w: Writer, t, x: str, k: int) -> str:
    """A logical operand: itself when bool, else x != 0 (NaN is nonzero, so True)."""
    if t.dtype == np.bool_:
        return x
    zero = w.constant(np.zeros((), t.dtype), f"zero{k}")
    return w.add("Not", [w.add("Equal", [x, zero], f"is_zero{k}")], f"nonzero{k}")


def _logic(w: Writer, fn, xs) -> str:
    op = fn.op
    if op in _LOGICAL:
        a, b = (_as_bool(w, t, x, k) for k, (t, x) in enumerate(zip(fn.inputs, xs, strict=True)))
        return w.add(_LOGICAL[op], [a, b])
    if op == "not":
        if fn.inputs[0].dtype == np.bool_:
            return w.add("Not", xs)
        return w.add("Equal", [xs[0], w.constant(np.zeros((), fn.inputs[0].dtype), "zero")])
    # comparisons: the operands in the dtype they are compared in (PyTorch's promotion)
    a, b = (x if t.dtype == fn.dtype else w.add("Cast", [x], f"cast{k}", to=helper.np_dtype_to_tensor_dtype(fn.dtype))
            for k, (t, x) in enumerate(zip(fn.inputs, xs, strict=True)))
    if op in _COMPARE:
        return w.add(_COMPARE[op], [a, b])
    if op == "ne":
        return w.add("Not", [w.add("Equal", [a, b], "equal")])
    if w.opset >= 12:
        return w.add(_OR_EQUAL[op] + "OrEqual", [a, b])
    strict = w.add(_OR_EQUAL[op], [a, b], "strict")
    return w.add("Or", [strict, w.add("Equal", [a, b], "equal")])


def _where(w: Writer, fn, xs) -> str:
    condition = xs[0]
    if fn.inputs[0].dtype != np.bool_:
        condition = w.add("Cast", [condition], "condition", to=TensorProto.BOOL)
    return w.add("Where", [condition, xs[1], xs[2]])


EMITTERS = {
    "LogicOp": _logic,
    "WhereOp": _where,
}
