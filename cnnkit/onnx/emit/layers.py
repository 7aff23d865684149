"""Emitters of layers with weights or modes: Gemm / MatMul (linear), BatchNormalization
(eval mode), Dropout; training-mode dropout and losses are refused, naming the layer.
"""

from __future__ import annotations

import numpy as np

from ..writer import Writer

__all__ = ["EMITTERS"]


def _linear(w: Writer, fn, xs) -> str:
    if fn.inputs[0].ndim == 2:
        return w.add("Gemm", xs, transB=1)
    weight_t = w.add("Transpose", [xs[1]], "weight_t", perm=[1, 0])
    if len(xs) == 2:
        return w.add("MatMul", [xs[0], weight_t])
    return w.add("Add", [w.add("MatMul", [xs[0], weight_t], "matmul"), xs[2]])


def _batch_norm(w: Writer, fn, xs) -> str:
    if fn.training:
        raise w.error("BatchNorm normalizing with batch statistics (training mode); call model.eval()")
    x = fn.inputs[0]
    C = x.shape[1]
    scale = xs[1] if len(xs) > 1 else w.constant(np.ones(C, x.dtype), "scale")
    bias = xs[2] if len(xs) > 2 else w.constant(np.zeros(C, x.dtype), "bias")
    stats = []
    for which, array in (("running_mean", fn.running_mean), ("running_var", fn.running_var)):
        name = w.buffer_names.get(id(array))
        stats.append(w.initializer(name, array) if name else w.constant(array, which))
    return w.add("BatchNormalization", [xs[0], scale, bias] + stats, epsilon=float(fn.eps),
                 momentum=float(1.0 - fn.momentum))


def _dropout_marker(w: Writer, fn, xs) -> str:
    if w.opset >= 12:
        ratio = w.constant(np.asarray(fn.p, dtype=fn.inputs[0].dtype), "ratio")
        return w.add("Dropout", [xs[0], ratio])
    return w.add("Dropout", xs, ratio=float(fn.p))


def _dropout(w: Writer, fn, xs) -> str:
    raise w.error("dropout in training mode (F.dropout(training=True)) draws a random mask; "
                  "use nn.Dropout or training=self.training")


def _loss(w: Writer, fn, xs) -> str:
    raise w.error("a loss is not part of an inference graph; export the model without its loss")


EMITTERS = {
    "LinearOp": _linear,
    "BatchNormOp": _batch_norm,
    "DropoutMarkerOp": _dropout_marker,
    "DropoutOp": _dropout,
    "CrossEntropyOp": _loss,
    "NLLLossOp": _loss,
    "BCEWithLogitsOp": _loss,
    "BinaryCrossEntropyOp": _loss,
    "HuberOp": _loss,
    "SmoothL1Op": _loss,
}
