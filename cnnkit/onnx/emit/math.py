"""Emitters of arithmetic and reductions: the binary and unary ops, rounding division and the
remainder (spelled exactly), clamp, casts, sums, means and extrema over axes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from onnx import helper

from ..writer import Writer, simple

__all__ = ["EMITTERS"]


def _reduction(op_type: str) -> Callable:
    # sum / mean of floats (an integer tensor is never traced: see _rounding_div)
    def emit(w: Writer, fn, xs) -> str:
        return w.reduce(op_type, xs[0], list(fn.axes), fn.keepdims)

    return emit


def _var(w: Writer, fn, xs) -> str:
    """sum((x - mean)**2) / max(0, n - correction), n read from x's shape when the graph runs.

    The count is not a constant of the traced size: with a dynamic batch or image size the
    file divides by the count of the input it gets (a file that baked the traced count in
    gave wrong variances at other sizes). A fixed batch and size write the count as a constant.
    """
    x, dtype = xs[0], fn.inputs[0].dtype
    axes = list(fn.axes)
    centered = w.add("Sub", [x, w.reduce("ReduceMean", x, axes, True, "mean")], "centered")
    squares = w.reduce("ReduceSum", w.add("Mul", [centered, centered], "squares"), axes, fn.keepdims, "sum")
    if w.dynamic or w.dynamic_size:
        dof = w.add("Sub", [w.count(x, axes, dtype), w.constant(np.asarray(fn.correction, dtype), "correction")],
                    "dof_signed")
        dof = w.add("Max", [dof, w.constant(np.asarray(0, dtype), "zero")], "dof")
    else:
        n = math.prod(fn.inputs[0].shape[a] for a in axes)
        dof = w.constant(np.asarray(max(n - fn.correction, 0), dtype), "dof")
    return w.add("Div", [squares, dof])


def _amax(w: Writer, fn, xs) -> str:
    # amax / amin and the full x.max() / x.min()
    return w.reduce("ReduceMin" if fn.smallest else "ReduceMax", xs[0], list(fn.axes), fn.keepdims)


def _select_along_dim(w: Writer, fn, xs) -> str:
    # The values of max(x, dim) / min(x, dim): the extremum along dim, whichever position holds it.
    if fn.smallest is None:
        raise w.error("values picked at positions computed outside cnnkit's ops (only the values "
                      "of max(dim) and min(dim) have an ONNX counterpart)")
    return w.reduce("ReduceMin" if fn.smallest else "ReduceMax", xs[0], [fn.axis], fn.keepdims)


def _rounding_div(w: Writer, fn, xs) -> str:
    """div(a, b, rounding_mode="trunc" | "floor") with the values of cnnkit's RoundingDivOp.

    The operands are floats: an integer tensor cannot require a gradient, so no op on one is
    recorded and the trace holds integer results as constants (a forward that casts the input
    to integers fails the self-check, which says its values are not recorded).
    """
    dtype = fn.inputs[0].dtype
    if fn.mode == "trunc":  # trunc(q) = sign(q) * floor(|q|), q = a / b (-0.3 gives -0, as trunc)
        q = w.add("Div", xs, "quotient")
        return w.add("Mul", [w.add("Sign", [q], "sign"), w.add("Floor", [w.add("Abs", [q], "abs")], "floor")])
    zero, one = w.constant(np.asarray(0, dtype), "zero"), w.constant(np.asarray(1, dtype), "one")
    # NOTE: floor(a / b) rounds a / b first, which can land on the next integer (1 / 0.1 is
    # 10.0 in float32, but 1 // 0.1 is 9.0). cnnkit floors as NumPy's floor_divide and
    # PyTorch's div_floor_floating do, from the exact remainder fmod(a, b); so does this:
    a, b = xs
    mod = w.add("Mod", xs, "fmod", fmod=1)
    div = w.add("Div", [w.add("Sub", [a, mod], "a_minus_fmod"), b], "exact_div")
    # a nonzero remainder whose sign is not b's: the quotient was rounded toward zero, one less
    signs_differ = w.add("Xor", [w.add("Less", [b, zero], "b_negative"),
                                 w.add("Less", [mod, zero], "fmod_negative")], "signs_differ")
    nonzero = w.add("Not", [w.add("Equal", [mod, zero], "fmod_zero")], "fmod_nonzero")
    step_down = w.add("And", [nonzero, signs_differ], "step_down")
    div = w.add("Where", [step_down, w.add("Sub", [div, one], "less_one"), div], "floor_div")
    # div is a whole number up to rounding: more than half above its floor means the next one
    floor = w.add("Floor", [div], "floor")
    fraction = w.add("Sub", [div, floor], "fraction")
    above_half = w.add("Greater", [fraction, w.constant(np.asarray(0.5, dtype), "half")], "above_half")
    floor = w.add("Where", [above_half, w.add("Add", [floor, one], "plus_one"), floor], "rounded")
    # A zero quotient takes the sign of a / b (finite there: only it meets the 0, so no inf * 0);
    # dividing by zero gives a / b itself (inf or NaN).
    quotient = w.add("Div", xs, "quotient")
    div_zero = w.add("Equal", [div, zero], "div_zero")
    finite = w.add("Where", [div_zero, quotient, zero], "finite_quotient")
    signed_zero = w.add("Mul", [finite, zero], "signed_zero")
    floor = w.add("Where", [div_zero, signed_zero, floor], "zero_signed")
    return w.add("Where", [w.add("Equal", [b, zero], "b_zero"), quotient, floor])


def _remainder(w: Writer, fn, xs) -> str:
    """fmod (Mod with fmod=1: C's fmod, exact) and remainder (Python's %, NumPy's rule on it).

    ONNX's Mod takes floats only with fmod=1, so remainder is spelled from it as NumPy does:
    a nonzero fmod whose sign is not b's gets b added; a zero one takes b's sign.
    """
    r = w.add("Mod", xs, "fmod" if fn.rounding == "floor" else None, fmod=1)
    if fn.rounding == "trunc":
        return r
    dtype = fn.inputs[0].dtype
    _, b = xs
    zero = w.constant(np.asarray(0, dtype), "zero")
    b_negative = w.add("Less", [b, zero], "b_negative")
    signs_differ = w.add("Xor", [b_negative, w.add("Less", [r, zero], "fmod_negative")], "signs_differ")
    is_zero = w.add("Equal", [r, zero], "fmod_zero")
    step = w.add("And", [w.add("Not", [is_zero], "fmod_nonzero"), signs_differ], "add_b")
    r = w.add("Where", [step, w.add("Add", [r, b], "plus_b"), r], "adjusted")
    signed_zero = w.add("Where", [b_negative, w.constant(np.asarray(-0.0, dtype), "minus_zero"), zero],
                        "signed_zero")
    return w.add("Where", [is_zero, signed_zero, r])


def _cast(w: Writer, fn, xs) -> str:
    return w.add("Cast", xs, to=helper.np_dtype_to_tensor_dtype(fn.dtype))


def _clamp(w: Writer, fn, xs) -> str:
    # Clip (opset 11: bounds are inputs, "" for an absent one) = min(max(x, lo), hi), NaN kept, as clamp
    dtype = fn.inputs[0].dtype
    bounds = ["" if b is None else w.constant(np.asarray(b, dtype), name) for b, name in ((fn.lo, "min"), (fn.hi, "max"))]
    return w.add("Clip", [xs[0], *bounds] if bounds[1] else [xs[0], bounds[0]])


def _clamp_tensor(w: Writer, fn, xs) -> str:
    # clamp between tensor bounds: Max then Min, which broadcast and propagate NaN, as cnnkit
    y = xs[0]
    if fn.has_lo:
        y = w.add("Max", [y, xs[1]], "max" if fn.has_hi else None)
    if fn.has_hi:
        y = w.add("Min", [y, xs[-1]])
    return y


EMITTERS = {
    "AddOp": simple("Add"),
    "SubOp": simple("Sub"),
    "MulOp": simple("Mul"),
    "DivOp": simple("Div"),
    "RoundingDivOp": _rounding_div,
    "RemainderOp": _remainder,
    "PowOp": simple("Pow"),
    "NegOp": simple("Neg"),
    "ExpOp": simple("Exp"),
    "LogOp": simple("Log"),
    "SqrtOp": simple("Sqrt"),
    "SinOp": simple("Sin"),
    "CosOp": simple("Cos"),
    "StdRootOp": simple("Sqrt"),   # std's square root (its gradient rule differs, its value is Sqrt)
    "ClampOp": _clamp,
    "ClampTensorOp": _clamp_tensor,
    "AbsOp": simple("Abs"),
    "ExtremumOp": lambda w, fn, xs: w.add("Max" if fn.largest else "Min", xs),  # maximum, minimum (NaN wins)
    "SignOp": simple("Sign"),
    "MatMulOp": simple("MatMul"),
    "SumOp": _reduction("ReduceSum"),
    "MeanOp": _reduction("ReduceMean"),
    "VarOp": _var,
    "AmaxOp": _amax,
    "SelectAlongDimOp": _select_along_dim,
    "CastOp": _cast,
}
