"""Comparisons, boolean logic and selection: Less, Greater, Equal (and the -OrEqual forms),
And, Or, Xor, Not, Where, elementwise Max and Min, Clip, and CastLike.

Comparisons and logic give boolean tensors, computed with NumPy (they carry no gradient).
Where, Max, Min and Clip are selections, all made by ``F.where`` (NumPy broadcasting, the
gradient of each output element to the candidate it came from); Max and Min propagate NaN
as ONNX's reference (NumPy's maximum and minimum) does, and a tie goes to the first operand.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from onnx import helper

from ... import functional as F
from ...tensor import Tensor
from . import TRANSLATORS, Node
from .math import _operands
from .shape import cast

__all__: list[str] = []  # translators only, registered in TRANSLATORS


def _is_float(t: Tensor) -> bool:
    return t.dtype.kind == "f"


# --------------------------------------------------------------------------- comparisons, logic
def _compare(fn: Callable) -> Callable[[Node], Tensor]:
    def translate(node: Node) -> Tensor:
        a, b = _operands(node)
        return Tensor(fn(a.data, b.data))

    return translate


def _logical(fn: Callable) -> Callable[[Node], Tensor]:
    def translate(node: Node) -> Tensor:
        a, b = _operands(node)
        return Tensor(fn(a.data.astype(bool), b.data.astype(bool)))

    return translate


def logical_not(node: Node) -> Tensor:
    return Tensor(np.logical_not(node.input(0).data))


# --------------------------------------------------------------------------- selections
def where(node: Node) -> Tensor:
    condition, a, b = node.input(0), node.input(1), node.input(2)
    return F.where(Tensor(condition.data.astype(bool, copy=False)), a, b)  # (bool by the spec)


def _extreme(keep_first: Callable, numpy_fn: Callable) -> Callable[[Node], Tensor]:
    """Variadic Max / Min: fold the inputs left to right."""

    def translate(node: Node) -> Tensor:
        operands = [t for t in node.inputs if t is not None]
        y = operands[0]
        for t in operands[1:]:
            if _is_float(y):
                # NaN wins (either side), ties keep the earlier operand.
                y = F.where(Tensor(keep_first(y.data, t.data) | np.isnan(y.data)), y, t)
            else:
                y = Tensor(numpy_fn(y.data, t.data))
        return y

    return translate


def clip(node: Node) -> Tensor:
    """min(max(x, low), high); before opset 11 the bounds are attributes, from 11 inputs."""
    x = node.input(0)
    if node.opset < 11:
        low, high = node.attr("min"), node.attr("max")
        low = None if low is None else Tensor(np.asarray(low, dtype=x.dtype))
        high = None if high is None else Tensor(np.asarray(high, dtype=x.dtype))
    else:
        low, high = node.input(1), node.input(2)
    if not _is_float(x):
        y = x.data
        if low is not None:
            y = np.maximum(y, low.data)
        if high is not None:
            y = np.minimum(y, high.data)
        return Tensor(y.astype(x.dtype))
    y = x
    if low is not None:
        y = F.where(Tensor(y.data < low.data), low, y)    # NaN compares false: it stays
    if high is not None:
        y = F.where(Tensor(y.data > high.data), high, y)
    return y


def cast_like(node: Node) -> Tensor:
    """Cast to the element type of the second input."""
    like = node.input(1)
    if like.dtype.kind not in "biuf" or like.dtype.isbuiltin != 1:  # ml_dtypes: bfloat16, float8, ...
        raise node.unsupported(
            f"a cast to {like.dtype}: cnnkit holds NumPy's own bool, integer and float16/32/64 types only"
        )
    attrs = dict(node.attrs, to=helper.np_dtype_to_tensor_dtype(like.dtype))
    return cast(Node("Cast", node.name, [node.input(0)], attrs, node.opset, node.n_outputs))


TRANSLATORS.update({
    "Less": _compare(np.less),
    "LessOrEqual": _compare(np.less_equal),
    "Greater": _compare(np.greater),
    "GreaterOrEqual": _compare(np.greater_equal),
    "Equal": _compare(np.equal),
    "And": _logical(np.logical_and),
    "Or": _logical(np.logical_or),
    "Xor": _logical(np.logical_xor),
    "Not": logical_not,
    "Where": where,
    "Max": _extreme(np.greater_equal, np.maximum),
    "Min": _extreme(np.less_equal, np.minimum),
    "Clip": clip,
    "CastLike": cast_like,
})
