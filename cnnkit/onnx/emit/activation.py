"""Emitters of activations and softmax: Relu, LeakyRelu, Elu, Sigmoid, Tanh, Clip (hardtanh,
relu6), x * Sigmoid (silu), Softplus, HardSigmoid, HardSwish, Gelu (Erf or Tanh
before opset 20), Erf, Softmax, LogSoftmax.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...functional.smooth_activation import _KAPPA, _SQRT_1_2, _SQRT_2_PI
from ..writer import Writer, simple

__all__ = ["EMITTERS"]


def _softmax(op_type: str) -> Callable:
    def emit(w: Writer, fn, xs) -> str:
        ndim = fn.inputs[0].ndim
        axis = fn.axis % ndim
        if w.opset >= 13 or axis == ndim - 1:  # before 13, softmax over the last axis is the same
            return w.add(op_type, xs, axis=axis if w.opset >= 13 else ndim - 1)
        perm = list(range(ndim))
        perm[axis], perm[-1] = perm[-1], perm[axis]
        moved = w.add("Transpose", xs, "to_last", perm=perm)
        y = w.add(op_type, [moved], "softmax", axis=ndim - 1)
        return w.add("Transpose", [y], perm=perm)

    return emit


def _hardtanh(w: Writer, fn, xs) -> str:
    # hardtanh and relu6 (HardtanhOp(0, 6)) are Clip with both bounds; NaN kept, as cnnkit
    dtype = fn.inputs[0].dtype
    lo, hi = (w.constant(np.asarray(b, dtype), name) for b, name in ((fn.min_val, "min"), (fn.max_val, "max")))
    return w.add("Clip", [xs[0], lo, hi])


def _silu(w: Writer, fn, xs) -> str:
    return w.add("Mul", [xs[0], w.add("Sigmoid", xs, "sigmoid")])


# ONNX's Softplus has no threshold: above it cnnkit returns x, where log(1 + exp(x)) is larger by
# at most log(1 + exp(-threshold)); from threshold 15 on that is below float32's resolution there.
_SOFTPLUS_MIN_THRESHOLD = 15.0


def _softplus(w: Writer, fn, xs) -> str:
    if fn.threshold < _SOFTPLUS_MIN_THRESHOLD:
        raise w.error(f"ONNX's Softplus has no threshold; Softplus(threshold={fn.threshold}) differs from it "
                      f"by more than float32 rounding (threshold {_SOFTPLUS_MIN_THRESHOLD:g} or more exports)")
    if fn.beta == 1:
        return w.add("Softplus", xs)
    beta = w.constant(np.asarray(fn.beta, fn.inputs[0].dtype), "beta")
    y = w.add("Softplus", [w.add("Mul", [xs[0], beta], "scaled")], "softplus")
    return w.add("Div", [y, beta])


def _hardswish(w: Writer, fn, xs) -> str:
    if w.opset >= 14:
        return w.add("HardSwish", xs)
    return w.add("Mul", [xs[0], w.add("HardSigmoid", xs, "hardsigmoid", alpha=1.0 / 6.0, beta=0.5)])


def _gelu(w: Writer, fn, xs) -> str:
    """Gelu from opset 20; before it, spelled out as cnnkit computes it (as PyTorch's exporter
    does): the exact form 0.5 * x * (1 + Erf(x / sqrt(2))) (Erf exists from opset 9), the tanh
    form 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x*x*x)))."""
    if w.opset >= 20:
        return w.add("Gelu", xs, approximate=fn.approximate)
    x, dtype = xs[0], fn.inputs[0].dtype
    if fn.approximate == "tanh":
        cube = w.add("Mul", [w.add("Mul", [x, x], "square"), x], "cube")
        kappa = w.constant(np.asarray(_KAPPA, dtype), "kappa")
        inner = w.add("Add", [x, w.add("Mul", [cube, kappa], "cubic")], "inner")
        sqrt_2_pi = w.constant(np.asarray(_SQRT_2_PI, dtype), "sqrt_2_pi")
        t = w.add("Tanh", [w.add("Mul", [sqrt_2_pi, inner], "u")], "tanh")
    else:
        scaled = w.add("Mul", [x, w.constant(np.asarray(_SQRT_1_2, dtype), "sqrt_1_2")], "scaled")
        t = w.add("Erf", [scaled], "erf")
    one_plus = w.add("Add", [w.constant(np.asarray(1, dtype), "one"), t], "one_plus")
    return w.add("Mul", [w.add("Mul", [w.constant(np.asarray(0.5, dtype), "half"), x], "half_x"), one_plus])


EMITTERS = {
    "ReLUOp": simple("Relu"),
    "LeakyReLUOp": simple("LeakyRelu", alpha=lambda fn: float(fn.negative_slope)),
    "ELUOp": simple("Elu", alpha=lambda fn: float(fn.alpha)),
    "SigmoidOp": simple("Sigmoid"),
    "TanhOp": simple("Tanh"),
    "HardtanhOp": _hardtanh,
    "SiLUOp": _silu,
    "SoftplusOp": _softplus,
    "HardsigmoidOp": simple("HardSigmoid", alpha=lambda fn: 1.0 / 6.0, beta=lambda fn: 0.5),
    "HardswishOp": _hardswish,
    "GELUOp": _gelu,
    "ErfOp": simple("Erf"),
    "SoftmaxOp": _softmax("Softmax"),
    "LogSoftmaxOp": _softmax("LogSoftmax"),
}
