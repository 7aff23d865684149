"""Export: a cnnkit model becomes an ONNX file that any ONNX runtime can run.

    cnnkit.onnx.export(model, "resnet18.onnx", input_shape=(3, 224, 224),
                       class_names=names, preprocessing={"mean": [...], "std": [...]})

How: one forward pass in eval mode records cnnkit's define-by-run graph (the graph
``visualize graph`` draws: every op is the ``creator`` of its output and holds its
inputs), with each op attributed to the module that ran it. Each op, in execution order,
is written as its ONNX counterpart (``_EMITTERS``): Conv2dOp -> Conv, LinearOp -> Gemm,
BatchNormOp (eval) -> BatchNormalization, MaxPool2dOp -> MaxPool with ceil_mode, adaptive
pools -> GlobalAveragePool / AveragePool / slices, sum / mean / amax / amin and the values of
max(dim) / min(dim) -> ReduceSum / ReduceMean / ReduceMax / ReduceMin (axes an attribute or an
input, by opset), div(rounding_mode=...) -> Div, Sign, Abs and Floor (trunc) or NumPy's exact
floor division spelled in Mod, Div, Floor and Where (floor), sin / cos -> Sin / Cos, hardtanh /
relu6 -> Clip, clamp between tensor bounds -> Max / Min, silu -> x * Sigmoid, softplus ->
Softplus (threshold >= 15), interpolate -> Resize, hardsigmoid -> HardSigmoid, hardswish -> HardSwish (x * HardSigmoid
before opset 14), gelu -> Gelu (opset 20+), ...
Parameters and buffers become initializers under their ``state_dict`` names; other
constants become Constant nodes.
An op ONNX cannot express raises ``OnnxExportError`` naming the layer.

Node names are the module paths of the layers ("features.0"; "layer1.0.add" for the
residual addition a block's forward computes; "layer1.0.relu_2" for a module's second
call), so ``cnnkit.onnx.load`` of the file rebuilds a model with the same ``state_dict``
keys.

Dynamic batch: the input's first dimension is the symbol "N". The trace runs at batch 2
so that a reshape keeping the batch can be told apart; every reshape is written with -1
in place of the batch. Dynamic size (``dynamic_size=True``, for fully convolutional
models and others that take any image size, such as a ResNet ending in global pooling):
the input's height and width are the symbols "H" and "W", and the output's dimensions
that follow them "OH", "OW". After writing, the file is checked three ways: ONNX's checker
(``full_check``), strict shape inference, and a run of the exported graph by cnnkit's own
importer at another batch size (and, with a dynamic size, another image size), compared
with the model: a forward that depends on the batch or the size in a way the trace cannot
see (a reshape to fixed sizes, adaptive pooling to a fixed grid) fails here, loudly. The
error says which failure it is: a node cnnkit's importer cannot run, a graph that differs
even on the traced input (an exporter bug), a forward that depends on the input's values,
or one that depends on the batch or the size.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import config, nn
from ..errors import CnnkitError, OnnxExportError, OnnxUnsupportedError
from ..explain.graph import Graph, OpNode, model_graph
from ..function import Function
from ..functional.pool import _adaptive_bounds
from ..functional.shape import clone
from ..graph import op_order
from ..tensor import Tensor
from .importer import from_model_proto
from .reader import PROTOBUF_LIMIT, skeleton

__all__ = ["export", "export_opsets", "MIN_EXPORT_OPSET", "TRACE_BATCH"]

MIN_EXPORT_OPSET = 11  # Pad, Slice and Gather with the input forms used below
TRACE_BATCH = 2  # with a dynamic batch the trace runs at 2, so batch-keeping reshapes show
_RTOL = 1e-4  # the self-check: max abs difference <= _RTOL * max(1, max |output|)


class DropoutMarkerOp(Function):
    """The identity, standing in an eval-mode trace for a Dropout layer (written as Dropout).

    forward: y = x;  backward: gx = gy.  Shapes: y, gy, gx have x.shape.
    """

    def __init__(self, p: float):
        self.p = p

    def forward(self, x):
        return x.view()

    def backward(self, gy):
        return gy


# --------------------------------------------------------------------------- the writer
class _Writer:
    """Collects ONNX nodes, initializers and value names while the ops are emitted."""

    def __init__(self, graph: Graph, fns: dict[int, Function], opset: int, dynamic: bool, batch: int,
                 buffer_names: dict[int, str], leaf_types: dict[str, str]):
        self.graph, self.fns, self.opset = graph, fns, opset
        self.dynamic, self.batch = dynamic, batch
        self.dynamic_size = False  # H and W are symbols: nothing may depend on their traced values
        self.buffer_names, self.leaf_types = buffer_names, leaf_types
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, np.ndarray] = {}
        self.values: dict[int, str] = {}  # tensor id -> ONNX value name
        self.used: set[str] = set()
        self.op: OpNode | None = None
        self.base = ""
        self.root_layer = ""  # the class name of a model that is one of cnnkit's layers

    def output(self, fn: Function) -> Tensor:
        """The output tensor of a traced op (alive: the trace holds the whole graph)."""
        return fn.output_ref()

    # -- naming
    def unique(self, name: str) -> str:
        candidate, k = name, 2
        while candidate in self.used:
            candidate, k = f"{name}_{k}", k + 1
        self.used.add(candidate)
        return candidate

    def where(self) -> str:
        op = self.op
        if op.module:
            layer = self.leaf_types.get(op.module)
            return f"layer '{op.module}'" + (f" ({layer})" if layer else "")
        if self.root_layer:  # the model is one layer (export(nn.MaxPool2d(2), ...))
            return f"the model ({self.root_layer})"
        return "the model's forward (outside any layer)"

    def error(self, reason: str) -> OnnxExportError:
        return OnnxExportError(f"cannot export {self.op.label} in {self.where()}: {reason}")

    # -- values
    def value(self, tid: int, fn_input: Tensor) -> str:
        """The ONNX value name of an op input (a computed value, the input, a weight or a constant)."""
        if tid in self.values:
            return self.values[tid]
        node = self.graph.tensors[tid]
        if tid in self.graph.inputs:
            name = "input"
        elif node.kind in ("parameter", "buffer") and node.name:
            name = self.initializer(node.name, fn_input.data)
        else:
            name = self.constant(fn_input.data, "const")
        self.values[tid] = name
        return name

    def initializer(self, name: str, array: np.ndarray) -> str:
        if name not in self.initializers:
            self.initializers[name] = array
            self.used.add(name)
        return name

    def constant(self, array, hint: str) -> str:
        """A Constant node holding ``array``; returns its output name."""
        array = np.asarray(array)
        name = self.unique(f"{self.base}/{hint}")
        self.nodes.append(helper.make_node("Constant", [], [name], name=name,
                                           value=numpy_helper.from_array(np.array(array, order="C"))))
        return name

    def ints(self, values: Sequence[int], hint: str) -> str:
        return self.constant(np.asarray(list(values), dtype=np.int64), hint)

    def add(self, op_type: str, inputs: Sequence[str], hint: str | None = None, **attrs) -> str:
        """Append a node; the first node of an op takes the op's name, later ones a suffix."""
        name = self.unique(self.base if hint is None else f"{self.base}/{hint}")
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attrs))
        return name

    # -- axes-taking nodes whose form changed between opsets
    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: bool, hint=None) -> str:
        """A Reduce* node over ``axes`` (which cnnkit's ops always list: () only for a 0-d input).

        The axes are an attribute before the opset in ``_AXES_INPUT_FROM`` and an input from it.
        No axes means no reduction: an Identity, since ONNX reads an empty list as every axis
        (noop_with_empty_axes, from the same opsets, would say otherwise; Identity is shorter).
        """
        if not axes:
            return self.add("Identity", [x], hint)
        if self.opset >= _AXES_INPUT_FROM[op_type]:
            return self.add(op_type, [x, self.ints(axes, "axes")], hint, keepdims=int(keepdims))
        return self.add(op_type, [x], hint, axes=list(axes), keepdims=int(keepdims))

    def unsqueeze(self, x: str, axes: Sequence[int], hint=None) -> str:
        if self.opset >= 13:
            return self.add("Unsqueeze", [x, self.ints(axes, "axes")], hint)
        return self.add("Unsqueeze", [x], hint, axes=list(axes))

    def squeeze(self, x: str, axes: Sequence[int], hint=None) -> str:
        if self.opset >= 13:
            return self.add("Squeeze", [x, self.ints(axes, "axes")], hint)
        return self.add("Squeeze", [x], hint, axes=list(axes))

    def slice(self, x: str, starts, ends, axes, steps, hint=None) -> str:
        return self.add("Slice", [x, self.ints(starts, "starts"), self.ints(ends, "ends"),
                                  self.ints(axes, "axes"), self.ints(steps, "steps")], hint)


# --------------------------------------------------------------------------- emitters
# Each emitter writes one cnnkit op: emit(w, fn, xs) -> the ONNX value of the op's output,
# where xs are the ONNX values of fn.inputs.
def _pool_window(w: _Writer, fn, x: str) -> tuple[str, dict]:
    """The input and window attributes of a MaxPool or AveragePool node.

    A ceil_mode window that would start in the end padding is dropped (PyTorch, cnnkit,
    onnxruntime and ONNX's reference all drop it), but ONNX's shape inference keeps it before
    opset 22, so the file would fail its own checks. On an axis that drops a window the
    output has floor mode's size and windows: where every axis does, ceil_mode=0 writes the
    same pool; where another axis needs ceil_mode, the dropping axis gets the end padding
    (or, when its windows stop short of the input's end, a crop of the input) that its last
    window reaches exactly, so that ceil and floor agree there.
    """
    g = fn.g
    (PH, PW) = g.padding
    pads = [PH, PW, PH, PW]
    ceil_mode = g.ceil_mode
    if ceil_mode and not w.dynamic_size:  # with a symbolic size, nothing is inferred to disagree
        geometry = list(zip(fn.inputs[0].shape[2:], w.output(fn).shape[2:], g.kernel, g.stride,
                            g.padding, g.dilation, strict=True))
        extents = [d * (k - 1) + 1 for _, _, k, _, _, d in geometry]
        floor = [(n + 2 * p - e) // s + 1 for (n, _, _, s, p, _), e in zip(geometry, extents, strict=True)]
        ceiled = [-(-(n + 2 * p - e) // s) + 1 for (n, _, _, s, p, _), e in zip(geometry, extents, strict=True)]
        outputs = [o for _, o, *_ in geometry]
        if outputs == floor:
            ceil_mode = False
        elif outputs != ceiled and w.opset < 22:
            crops = []
            for axis, ((n, o, _, s, p, _), e) in enumerate(zip(geometry, extents, strict=True)):
                if o == ceiled[axis]:
                    continue
                reach = (o - 1) * s + e - p - n  # how far the last window runs past the input's end
                pads[2 + axis] = max(reach, 0)
                if reach < 0:
                    crops.append((axis + 2, n + reach))
            if crops:
                axes, ends = [a for a, _ in crops], [n for _, n in crops]
                x = w.slice(x, [0] * len(axes), ends, axes, [1] * len(axes), "crop")
    return x, dict(kernel_shape=list(g.kernel), strides=list(g.stride), pads=pads, ceil_mode=int(ceil_mode))


def _conv(w: _Writer, fn, xs) -> str:
    KH, KW = fn.inputs[1].shape[2:]
    pt, pb, pl, pr = fn.pads
    return w.add("Conv", xs, kernel_shape=[KH, KW], strides=list(fn.stride), pads=[pt, pl, pb, pr],
                 dilations=list(fn.dilation), group=int(fn.groups))


def _conv_transpose(w: _Writer, fn, xs) -> str:
    """ConvTranspose, with output_padding folded into the end pads where they allow.

    cnnkit (like PyTorch) crops ``padding`` from both ends of the full output, then adds
    ``output_padding`` rows at the end, which any value below max(stride, dilation) may do;
    onnxruntime refuses an output_padding not below the stride. Cropping p - op rows from the
    end is the same output, so output_padding is written only where it exceeds the padding,
    and what is then still not below the stride (rows past the full output: the bias only)
    becomes a Pad of zeros and the bias added after it.
    """
    KH, KW = fn.inputs[1].shape[2:]
    begins, ends, extra, rest = [], [], [], []
    for p, op, s in zip(fn.padding, fn.output_padding, fn.stride, strict=True):
        fold = min(p, op)
        e = op - fold                       # rows added past the full output
        begins.append(p)
        ends.append(p - fold)
        extra.append(e if e < s else 0)
        rest.append(0 if e < s else e)
    attrs = dict(kernel_shape=[KH, KW], strides=list(fn.stride), pads=begins + ends,
                 output_padding=extra, dilations=list(fn.dilation), group=int(fn.groups))
    if not any(rest):
        return w.add("ConvTranspose", xs, **attrs)
    y = w.add("ConvTranspose", xs[:2], "conv_transpose", **attrs)
    y = w.add("Pad", [y, w.ints([0, 0, 0, 0, 0, 0] + rest, "pads")], "pad" if len(xs) > 2 else None,
              mode="constant")
    if len(xs) > 2:
        y = w.add("Add", [y, w.add("Reshape", [xs[2], w.ints([-1, 1, 1], "bias_shape")], "bias")])
    return y


def _max_pool(w: _Writer, fn, xs) -> str:
    x, attrs = _pool_window(w, fn, xs[0])
    return w.add("MaxPool", [x], dilations=list(fn.g.dilation), **attrs)


def _avg_pool(w: _Writer, fn, xs) -> str:
    g = fn.g
    if fn.divisor_override is None:
        x, attrs = _pool_window(w, fn, xs[0])
        return w.add("AveragePool", [x], count_include_pad=int(fn.count_include_pad), **attrs)
    # sum = mean over the full window (zeros included) * area; cnnkit divides by the override.
    x = fn.inputs[0]
    H, W = x.shape[2:]
    (KH, KW), (SH, SW), (PH, PW) = g.kernel, g.stride, g.padding
    OH, OW = w.output(fn).shape[2:]
    if g.ceil_mode and w.dynamic_size:
        raise w.error("divisor_override with ceil_mode and a dynamic size: at another size a ceil_mode "
                      "window may run past the padding, and ONNX's average would divide it by its "
                      "clipped area; export with dynamic_size=False")
    extra_h, extra_w = (OH - 1) * SH + KH - (H + 2 * PH), (OW - 1) * SW + KW - (W + 2 * PW)
    if extra_h > 0 or extra_w > 0:
        # A ceil_mode window runs past the padding, where ONNX's average would divide by the
        # clipped area: zeros there (they add nothing to a sum) make every window whole, and
        # floor mode then places the same windows.
        padded = w.add("Pad", [xs[0], w.ints([0, 0, 0, 0, 0, 0, max(extra_h, 0), max(extra_w, 0)], "pads")],
                       "pad_overhang", mode="constant")
        mean = w.add("AveragePool", [padded], "average", count_include_pad=1, kernel_shape=[KH, KW],
                     strides=[SH, SW], pads=[PH, PW, PH, PW], ceil_mode=0)
    else:
        x_name, attrs = _pool_window(w, fn, xs[0])
        mean = w.add("AveragePool", [x_name], count_include_pad=1, **attrs)
    scale = np.asarray(KH * KW / fn.divisor_override, dtype=x.dtype)
    return w.add("Mul", [mean, w.constant(scale, "scale")], "scale")


def _adaptive(reduce_op: str, global_op: str, pool_op: str) -> Callable:
    def emit(w: _Writer, fn, xs) -> str:
        x = fn.inputs[0]
        H, W = x.shape[2:]
        OH, OW = w.output(fn).shape[2:]
        if (OH, OW) == (1, 1):
            return w.add(global_op, xs)
        if w.dynamic_size:
            raise w.error(f"adaptive pooling to a {OH}x{OW} grid has windows that depend on the input "
                          "size, which ONNX cannot express for a size it does not know; export with "
                          "dynamic_size=False (or pool to 1x1)")
        if H % OH == 0 and W % OW == 0:  # equal windows, side by side: an ordinary pool
            k = [H // OH, W // OW]
            return w.add(pool_op, xs, kernel_shape=k, strides=k)
        # Unequal windows (PyTorch's floor/ceil bounds): reduce each window of rows, then of
        # columns; a rectangle's mean (or max) is the mean (max) of its row means (maxes).
        value = xs[0]
        for axis, bounds in ((2, _adaptive_bounds(H, OH)), (3, _adaptive_bounds(W, OW))):
            parts = [w.reduce(reduce_op, w.slice(value, [a], [b], [axis], [1], f"slice{axis}_{i}"),
                              [axis], True, f"{reduce_op.lower()}{axis}_{i}")
                     for i, (a, b) in enumerate(bounds)]
            value = w.add("Concat", parts, "concat_rows" if axis == 2 else None, axis=axis)
        return value

    return emit


def _softmax(op_type: str) -> Callable:
    def emit(w: _Writer, fn, xs) -> str:
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


def _linear(w: _Writer, fn, xs) -> str:
    if fn.inputs[0].ndim == 2:
        return w.add("Gemm", xs, transB=1)
    weight_t = w.add("Transpose", [xs[1]], "weight_t", perm=[1, 0])
    if len(xs) == 2:
        return w.add("MatMul", [xs[0], weight_t])
    return w.add("Add", [w.add("MatMul", [xs[0], weight_t], "matmul"), xs[2]])


def _batch_norm(w: _Writer, fn, xs) -> str:
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


def _dropout_marker(w: _Writer, fn, xs) -> str:
    if w.opset >= 12:
        ratio = w.constant(np.asarray(fn.p, dtype=fn.inputs[0].dtype), "ratio")
        return w.add("Dropout", [xs[0], ratio])
    return w.add("Dropout", xs, ratio=float(fn.p))


def _dropout(w: _Writer, fn, xs) -> str:
    raise w.error("dropout in training mode (F.dropout(training=True)) draws a random mask; "
                  "use nn.Dropout or training=self.training")


# The opset from which a Reduce* node takes its axes as an input (an attribute before).
_AXES_INPUT_FROM = {"ReduceSum": 13, "ReduceMean": 18, "ReduceMax": 18, "ReduceMin": 18}


def _reduction(op_type: str) -> Callable:
    # sum / mean of floats (an integer tensor is never traced: see _rounding_div)
    def emit(w: _Writer, fn, xs) -> str:
        return w.reduce(op_type, xs[0], list(fn.axes), fn.keepdims)

    return emit


def _amax(w: _Writer, fn, xs) -> str:
    # amax / amin and the full x.max() / x.min()
    return w.reduce("ReduceMin" if fn.smallest else "ReduceMax", xs[0], list(fn.axes), fn.keepdims)


def _select_along_dim(w: _Writer, fn, xs) -> str:
    # The values of max(x, dim) / min(x, dim): the extremum along dim, whichever position holds it.
    if fn.smallest is None:
        raise w.error("values picked at positions computed outside cnnkit's ops (only the values "
                      "of max(dim) and min(dim) have an ONNX counterpart)")
    return w.reduce("ReduceMin" if fn.smallest else "ReduceMax", xs[0], [fn.axis], fn.keepdims)


def _rounding_div(w: _Writer, fn, xs) -> str:
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


def _remainder(w: _Writer, fn, xs) -> str:
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


def _cast(w: _Writer, fn, xs) -> str:
    return w.add("Cast", xs, to=helper.np_dtype_to_tensor_dtype(fn.dtype))


def _lp_root(w: _Writer, fn, xs) -> str:
    # lp_pool2d's last step, (s * area) ** (1/p): NaN where an odd p meets a negative sum,
    # in ONNX's Pow as in PyTorch (sign(s) * relu(|s|) is s, NaN included)
    dtype = fn.inputs[0].dtype
    total = w.add("Mul", [xs[0], w.constant(np.asarray(fn.area, dtype), "area")], "window_sum")
    return w.add("Pow", [total, w.constant(np.asarray(1.0 / fn.p, dtype), "exponent")])


def _reshape(w: _Writer, fn, xs) -> str:
    x_shape = tuple(fn.inputs[0].shape)
    out_shape = tuple(w.output(fn).shape)
    if not w.dynamic or not x_shape:
        return w.add("Reshape", [xs[0], w.ints(out_shape, "shape")])
    B = w.batch
    if out_shape[:1] == x_shape[:1] == (B,):  # the batch stays in front
        if len(out_shape) == 2 and len(x_shape) >= 2:
            return w.add("Flatten", xs, axis=1)
        return w.add("Reshape", [xs[0], w.ints((-1,) + out_shape[1:], "shape")])
    # The batch is folded into another dimension: that one becomes -1, if only one can hold it.
    rest = math.prod(x_shape[1:])
    holders = [j for j, n in enumerate(out_shape)
               if n % B == 0 and math.prod(out_shape) // n * (n // B) == rest]
    if len(holders) != 1:
        raise w.error(f"a reshape from {x_shape} to {out_shape} mixes the batch with other "
                      "dimensions; export with dynamic_batch=False")
    target = list(out_shape)
    target[holders[0]] = -1
    return w.add("Reshape", [xs[0], w.ints(target, "shape")])


def _transpose(w: _Writer, fn, xs) -> str:
    ndim = fn.inputs[0].ndim
    return w.add("Transpose", xs, perm=[a % ndim for a in fn.dims])


def _index_array(i) -> np.ndarray | None:
    """An integer index array (advanced indexing), or None for an int, slice, None or ..."""
    if isinstance(i, (slice, int, np.integer)) or i is None or i is Ellipsis:
        return None
    return np.asarray(i)


_INT64_MAX, _INT64_MIN = 2**63 - 1, -(2**63)
_WHOLE_AXIS = {(start, None, step) for start in (None, 0) for step in (None, 1)}


def _getitem(w: _Writer, fn, xs) -> str:
    x = fn.inputs[0]
    index = fn.index if isinstance(fn.index, tuple) else (fn.index,)
    arrays = [k for k, i in enumerate(index) if _index_array(i) is not None]
    if arrays:
        k = arrays[0]
        picked = _index_array(index[k])
        if len(arrays) > 1 or picked.dtype.kind not in "iu" or any(
            i != slice(None) for j, i in enumerate(index) if j != k
        ):
            raise w.error(f"indexing with {fn.index!r}: only ints, slices, None, ... and one integer "
                          "index array with full slices elsewhere have an ONNX counterpart")
        return w.add("Gather", [xs[0], w.constant(picked.astype(np.int64), "indices")], axis=k)
    if Ellipsis in index:  # expand ... to the full slices it stands for
        k = index.index(Ellipsis)
        fill = x.ndim - (len(index) - 1 - sum(i is None for i in index))
        index = index[:k] + (slice(None),) * fill + index[k + 1:]
    starts, ends, axes, steps, squeeze, unsqueeze = [], [], [], [], [], []
    axis = out_axis = 0
    for i in index:
        if i is None:
            unsqueeze.append(out_axis)
            out_axis += 1
            continue
        if isinstance(i, slice):
            # Skipped only when it keeps the whole axis at any size: x[..., -1:] of a traced
            # size 1 keeps it too, but not with a dynamic size.
            if (i.start, i.stop, i.step) not in _WHOLE_AXIS:
                # The slice as written, open ends as ONNX's clamped extremes (so a dynamic size
                # keeps "to the end"); ONNX reads negative and out-of-range bounds as Python does.
                step = 1 if i.step is None else int(i.step)
                first, last = (0, _INT64_MAX) if step > 0 else (_INT64_MAX, _INT64_MIN)
                starts.append(first if i.start is None else int(i.start))
                ends.append(last if i.stop is None else int(i.stop))
                axes.append(axis)
                steps.append(step)
            out_axis += 1
        else:
            # As written, so a negative index counts from the end at any size (-1: to the end).
            k = int(i)
            starts.append(k)
            ends.append(_INT64_MAX if k == -1 else k + 1)
            axes.append(axis)
            steps.append(1)
            squeeze.append(axis)
        axis += 1
    value = xs[0]
    if starts:
        value = w.slice(value, starts, ends, axes, steps, "slice" if squeeze or unsqueeze else None)
    if squeeze:
        value = w.squeeze(value, squeeze, "squeeze" if unsqueeze else None)
    if unsqueeze:
        value = w.unsqueeze(value, unsqueeze)
    return value if value != xs[0] else w.add("Identity", xs)


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _circular_by_slices(w: _Writer, fn, x: str, begins, ends) -> str:
    """Circular padding before opset 19 (Pad's "wrap" mode): per axis, the last b entries, the
    input and its first e entries, concatenated (an axis padded earlier is wrapped whole, as
    on a torus). Negative starts count from the end, so a dynamic size is followed."""
    sizes = fn.inputs[0].shape
    if any(b < 0 or e < 0 or max(b, e) > n for b, e, n in zip(begins, ends, sizes, strict=True)):
        raise w.error(f"circular padding {tuple(fn.pad)} that crops or wraps more than once needs "
                      f"opset 19 or newer (exporting opset {w.opset})")
    for axis in reversed(range(len(sizes))):
        b, e = begins[axis], ends[axis]
        if not b and not e:
            continue
        parts = [w.slice(x, [-b], [_INT64_MAX], [axis], [1], f"wrap_begin{axis}")] if b else []
        parts.append(x)
        if e:
            parts.append(w.slice(x, [0], [e], [axis], [1], f"wrap_end{axis}"))
        x = w.add("Concat", parts, f"wrap{axis}", axis=axis)
    return x


def _pad(w: _Writer, fn, xs) -> str:
    x = fn.inputs[0]
    begins, ends = [0] * x.ndim, [0] * x.ndim
    for k in range(len(fn.pad) // 2):  # F.pad's widths start from the last dimension
        begins[x.ndim - 1 - k], ends[x.ndim - 1 - k] = fn.pad[2 * k], fn.pad[2 * k + 1]
    if fn.mode == "circular" and w.opset < 19:
        return _circular_by_slices(w, fn, xs[0], begins, ends)
    inputs = [xs[0], w.ints(begins + ends, "pads")]
    if fn.mode == "constant":
        inputs.append(w.constant(np.asarray(fn.value, dtype=x.dtype), "value"))
    return w.add("Pad", inputs, mode=_PAD_MODES[fn.mode])


def _concat(w: _Writer, fn, xs) -> str:
    return w.add("Concat", xs, axis=fn.axis % fn.inputs[0].ndim)


def _stack(w: _Writer, fn, xs) -> str:
    axis = fn.axis % (fn.inputs[0].ndim + 1)
    parts = [w.unsqueeze(x, [axis], f"unsqueeze{i}") for i, x in enumerate(xs)]
    return w.add("Concat", parts, axis=axis)


def _clamp(w: _Writer, fn, xs) -> str:
    # Clip (opset 11: bounds are inputs, "" for an absent one) = min(max(x, lo), hi), NaN kept, as clamp
    dtype = fn.inputs[0].dtype
    bounds = ["" if b is None else w.constant(np.asarray(b, dtype), name) for b, name in ((fn.lo, "min"), (fn.hi, "max"))]
    return w.add("Clip", [xs[0], *bounds] if bounds[1] else [xs[0], bounds[0]])


def _clamp_tensor(w: _Writer, fn, xs) -> str:
    # clamp between tensor bounds: Max then Min, which broadcast and propagate NaN, as cnnkit
    y = xs[0]
    if fn.has_lo:
        y = w.add("Max", [y, xs[1]], "max" if fn.has_hi else None)
    if fn.has_hi:
        y = w.add("Min", [y, xs[-1]])
    return y


def _hardtanh(w: _Writer, fn, xs) -> str:
    # hardtanh and relu6 (HardtanhOp(0, 6)) are Clip with both bounds; NaN kept, as cnnkit
    dtype = fn.inputs[0].dtype
    lo, hi = (w.constant(np.asarray(b, dtype), name) for b, name in ((fn.min_val, "min"), (fn.max_val, "max")))
    return w.add("Clip", [xs[0], lo, hi])


def _silu(w: _Writer, fn, xs) -> str:
    return w.add("Mul", [xs[0], w.add("Sigmoid", xs, "sigmoid")])


# ONNX's Softplus has no threshold: above it cnnkit returns x, where log(1 + exp(x)) is larger by
# at most log(1 + exp(-threshold)); from threshold 15 on that is below float32's resolution there.
_SOFTPLUS_MIN_THRESHOLD = 15.0


def _softplus(w: _Writer, fn, xs) -> str:
    if fn.threshold < _SOFTPLUS_MIN_THRESHOLD:
        raise w.error(f"ONNX's Softplus has no threshold; Softplus(threshold={fn.threshold}) differs from it "
                      f"by more than float32 rounding (threshold {_SOFTPLUS_MIN_THRESHOLD:g} or more exports)")
    if fn.beta == 1:
        return w.add("Softplus", xs)
    beta = w.constant(np.asarray(fn.beta, fn.inputs[0].dtype), "beta")
    y = w.add("Softplus", [w.add("Mul", [xs[0], beta], "scaled")], "softplus")
    return w.add("Div", [y, beta])


def _hardswish(w: _Writer, fn, xs) -> str:
    if w.opset >= 14:
        return w.add("HardSwish", xs)
    return w.add("Mul", [xs[0], w.add("HardSigmoid", xs, "hardsigmoid", alpha=1.0 / 6.0, beta=0.5)])


def _gelu(w: _Writer, fn, xs) -> str:
    if w.opset < 20:
        raise w.error(f"Gelu needs opset 20 or newer (exporting opset {w.opset})")
    return w.add("Gelu", xs, approximate=fn.approximate)


def _simple(op_type: str, **attrs_of: Callable) -> Callable:
    def emit(w: _Writer, fn, xs) -> str:
        return w.add(op_type, xs, **{k: f(fn) for k, f in attrs_of.items()})

    return emit


def _loss(w: _Writer, fn, xs) -> str:
    raise w.error("a loss is not part of an inference graph; export the model without its loss")


def _interpolate(w: _Writer, fn, xs) -> str:
    """F.interpolate -> Resize with the attributes of its mode (see cnnkit/onnx/ops/resize.py).

    nearest: asymmetric + floor; nearest-exact: half_pixel + round_prefer_ceil; (bi)linear:
    half_pixel (PyTorch's rule, also at an output length 1) or align_corners. A scale factor
    used in the index formula is written as scales (right at any input size); an explicit size
    (or a recomputed scale) as sizes: the input's N and C, then the traced OH, OW.
    """
    if fn.mode in ("nearest", "nearest-exact"):
        attrs = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        if fn.mode == "nearest-exact":
            attrs.update(coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_ceil")
    else:
        attrs = dict(mode="linear", coordinate_transformation_mode="align_corners" if fn.align_corners
                     else "half_pixel")
    roi = w.constant(np.zeros(0, np.float32), "roi")
    if all(s is not None for s in fn.scales):
        scales = w.constant(np.asarray([1.0, 1.0, *fn.scales], np.float32), "scales")
        return w.add("Resize", [xs[0], roi, scales], **attrs)
    no_scales = w.constant(np.zeros(0, np.float32), "scales")
    n_c = w.slice(w.add("Shape", [xs[0]], "shape"), [0], [2], [0], [1], "n_c")
    sizes = w.add("Concat", [n_c, w.ints(fn.out_sizes, "out_size")], "sizes", axis=0)
    return w.add("Resize", [xs[0], roi, no_scales, sizes], **attrs)


_EMITTERS: dict[str, Callable[[_Writer, Function, list[str]], str]] = {
    "InterpolateOp": _interpolate,
    "Conv2dOp": _conv,
    "ConvTranspose2dOp": _conv_transpose,
    "MaxPool2dOp": _max_pool,
    "AvgPool2dOp": _avg_pool,
    "AdaptiveAvgPool2dOp": _adaptive("ReduceMean", "GlobalAveragePool", "AveragePool"),
    "AdaptiveMaxPool2dOp": _adaptive("ReduceMax", "GlobalMaxPool", "MaxPool"),
    "ReLUOp": _simple("Relu"),
    "LeakyReLUOp": _simple("LeakyRelu", alpha=lambda fn: float(fn.negative_slope)),
    "ELUOp": _simple("Elu", alpha=lambda fn: float(fn.alpha)),
    "SigmoidOp": _simple("Sigmoid"),
    "TanhOp": _simple("Tanh"),
    "HardtanhOp": _hardtanh,
    "SiLUOp": _silu,
    "SoftplusOp": _softplus,
    "HardsigmoidOp": _simple("HardSigmoid", alpha=lambda fn: 1.0 / 6.0, beta=lambda fn: 0.5),
    "HardswishOp": _hardswish,
    "GELUOp": _gelu,
    "SoftmaxOp": _softmax("Softmax"),
    "LogSoftmaxOp": _softmax("LogSoftmax"),
    "LinearOp": _linear,
    "BatchNormOp": _batch_norm,
    "DropoutMarkerOp": _dropout_marker,
    "DropoutOp": _dropout,
    "AddOp": _simple("Add"),
    "SubOp": _simple("Sub"),
    "MulOp": _simple("Mul"),
    "DivOp": _simple("Div"),
    "RoundingDivOp": _rounding_div,
    "RemainderOp": _remainder,
    "PowOp": _simple("Pow"),
    "NegOp": _simple("Neg"),
    "ExpOp": _simple("Exp"),
    "LogOp": _simple("Log"),
    "SqrtOp": _simple("Sqrt"),
    "SinOp": _simple("Sin"),
    "CosOp": _simple("Cos"),
    "StdRootOp": _simple("Sqrt"),   # std's square root (its gradient rule differs, its value is Sqrt)
    "CloneOp": _simple("Identity"),
    "ClampOp": _clamp,
    "ClampTensorOp": _clamp_tensor,
    "AbsOp": _simple("Abs"),
    "ExtremumOp": lambda w, fn, xs: w.add("Max" if fn.largest else "Min", xs),  # maximum, minimum (NaN wins)
    "SignOp": _simple("Sign"),
    "MatMulOp": _simple("MatMul"),
    "SumOp": _reduction("ReduceSum"),
    "MeanOp": _reduction("ReduceMean"),
    "AmaxOp": _amax,
    "SelectAlongDimOp": _select_along_dim,
    "CastOp": _cast,
    "LpRootOp": _lp_root,
    "ReshapeOp": _reshape,
    "PermuteOp": _transpose,
    "GetItemOp": _getitem,
    "PadOp": _pad,
    "ConcatOp": _concat,
    "StackOp": _stack,
    "CrossEntropyOp": _loss,
    "NLLLossOp": _loss,
    "BCEWithLogitsOp": _loss,
    "BinaryCrossEntropyOp": _loss,
    "HuberOp": _loss,
    "SmoothL1Op": _loss,
}


# --------------------------------------------------------------------------- naming
def _op_names(graph: Graph, leaf_types: Mapping[str, str]) -> dict[int, str]:
    """op id -> node name: the module path for a layer's one op, path.op for the others."""
    groups: dict[tuple[str, int], list[OpNode]] = {}
    for op in graph.ops:
        groups.setdefault((op.module or "", op.call), []).append(op)
    names: dict[int, str] = {}
    taken: set[str] = set()

    def claim(name: str) -> str:
        candidate, k = name, 2
        while candidate in taken:
            candidate, k = f"{name}_{k}", k + 1
        taken.add(candidate)
        return candidate

    for (path, call), ops in groups.items():
        if path and path in leaf_types and len(ops) == 1:
            names[ops[0].id] = claim(path if call <= 1 else f"{path}_{call}")
            continue
        prefix = f"{path}." if path else ""
        suffix = f"_{call}" if call > 1 else ""
        for op in ops:
            names[op.id] = claim(f"{prefix}{op.label.lower()}{suffix}")
    return names


# --------------------------------------------------------------------------- export
def _version() -> str:
    try:
        return importlib.metadata.version("cnnkit")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "unknown"


def _metadata(class_names, preprocessing, input_shape, model) -> dict[str, str]:
    meta = {"cnnkit.version": _version(), "cnnkit.model": type(model).__name__}
    if class_names is not None:
        meta["cnnkit.classes"] = json.dumps([str(c) for c in class_names])
    pre = dict(preprocessing or {})
    pre.update({"input_shape": list(input_shape), "layout": "NCHW"})  # what the file really takes
    meta["cnnkit.preprocessing"] = json.dumps(pre, default=lambda v: np.asarray(v).tolist())
    return meta


def export_opsets() -> tuple[int, int]:
    """The oldest and newest ONNX opset ``export`` writes (the newest: the installed onnx's)."""
    return MIN_EXPORT_OPSET, onnx.defs.onnx_opset_version()


def _check_arguments(model, input_shape, opset) -> tuple[int, ...]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"export expects a cnnkit Module, got {type(model).__name__}")
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"export expects input_shape as a tuple of ints like (3, 224, 224), got {input_shape!r}") from None
    if not shape or min(shape) <= 0:
        raise ValueError(f"export expects input_shape of positive sizes, one sample's (C, H, W), got {input_shape!r}")
    oldest, newest = export_opsets()
    if not isinstance(opset, (int, np.integer)) or not oldest <= opset <= newest:
        raise ValueError(f"export supports opsets {oldest} to {newest}, got {opset!r}")
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes - {np.dtype(np.float32)}:
        raise OnnxExportError(
            f"export writes float32 models; this one has {sorted(str(d) for d in dtypes)} parameters "
            "(call model.float() first)"
        )
    return shape


def _trace(model, shape: tuple[int, ...], batch: int) -> tuple[Graph, dict[int, Function], Tensor]:
    """Run the model once in eval mode; return its op graph, the ops by id and the output."""
    x = _sample(batch, shape, 0)
    captured: list = []
    handles = []
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            handles.append(m.register_forward_hook(
                lambda m, args, out: DropoutMarkerOp(m.p)(out) if isinstance(out, Tensor) else None))
    # A model that returns its input (nn.Identity, an empty Sequential) records no op: its
    # graph is one Identity node (an op of its own, so the trace has an output to follow).
    handles.append(model.register_forward_hook(
        lambda m, args, out: clone(out) if isinstance(out, Tensor) and out.creator is None else None))
    handles.append(model.register_forward_hook(lambda m, args, out: captured.append(out)))
    try:
        graph = model_graph(model, shape, x)
    except ValueError:
        if captured and not isinstance(captured[-1], Tensor):
            raise OnnxExportError(f"cannot export {type(model).__name__}: its forward returns a "
                                  f"{type(captured[-1]).__name__}, not one Tensor") from None
        raise  # the model's own error (a ShapeError names the layer)
    finally:
        for h in handles:
            h.remove()
    out = captured[-1]
    return graph, {id(fn): fn for fn in op_order([out.creator])}, out


def _other_size(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The sample shape the self-check of a dynamic-size export runs at: larger H and W."""
    C, H, W = shape
    return (C, H + H // 2 + 3, W + W // 2 + 5)  # far enough that a feature map grows too


def _size_symbols(model, shape, out: Tensor) -> list:
    """Per output dimension: "OH"/"OW"-style symbols where it follows the input's size."""
    other = _other_size(shape)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with config.no_grad():
            moved = model(Tensor(np.zeros((1,) + other, np.float32))).shape
    except Exception as error:  # the model's own refusal of another size
        raise OnnxExportError(
            f"cannot export {type(model).__name__} with a dynamic size: it does not run on a "
            f"{'x'.join(map(str, other))} input ({type(error).__name__}: {error}); export with "
            "dynamic_size=False"
        ) from None
    finally:
        for m, mode in modes:
            m.training = mode
    names = {out.ndim - 2: "OH", out.ndim - 1: "OW"}
    return [names.get(i, f"out{i}") if a != b and i > 0 else a
            for i, (a, b) in enumerate(zip(out.shape, moved, strict=True))]


def _build(model, shape, opset: int, dynamic: bool, dynamic_size: bool = False) -> tuple[onnx.ModelProto, int]:
    """The ONNX model of one traced forward pass, and the bytes of its weights."""
    batch = TRACE_BATCH if dynamic else 1
    graph, fns, out = _trace(model, shape, batch)
    leaf_types = graph.leaf_modules
    buffer_names = {id(b.data if isinstance(b, Tensor) else b): n for n, b in model.named_buffers()}
    w = _Writer(graph, fns, opset, dynamic, batch, buffer_names, leaf_types)
    w.dynamic_size = dynamic_size
    if not list(model.children()) and type(model).__module__.startswith("cnnkit.nn."):
        w.root_layer = type(model).__name__
    names = _op_names(graph, leaf_types)
    w.used.update({"input", "output"})
    for op in graph.ops:
        fn = fns[op.id]
        w.op, w.base = op, names[op.id]
        emit = _EMITTERS.get(op.type)
        if emit is None:
            raise w.error(f"ONNX export has no counterpart for cnnkit's {op.type}")
        xs = [w.value(tid, t) for tid, t in zip(op.inputs, fn.inputs)]
        w.values[op.output] = emit(w, fn, xs)
    # The graph's output is renamed "output" where it is made.
    final = w.values[graph.outputs[0]]
    for node in w.nodes:
        node.output[:] = ["output" if o == final else o for o in node.output]
        node.input[:] = ["output" if i == final else i for i in node.input]
    if dynamic and out.shape[:1] != (batch,):
        raise OnnxExportError(f"cannot export with a dynamic batch: the output's shape {out.shape} does not "
                              f"start with the batch ({batch}); export with dynamic_batch=False")

    in_dims: list = ["N" if dynamic else batch] + list(shape)
    out_dims: list = list(out.shape)
    if dynamic_size:
        in_dims[-2:] = ["H", "W"]
        out_dims = _size_symbols(model, shape, out)
    if dynamic:
        out_dims[0] = "N"

    # The ModelProto is filled in place: make_graph / make_model would copy every weight twice.
    proto = onnx.ModelProto()
    proto.opset_import.add(domain="", version=opset)
    proto.ir_version = helper.find_min_ir_version_for(list(proto.opset_import))
    proto.producer_name, proto.producer_version = "cnnkit", _version()
    graph_proto = proto.graph
    graph_proto.name = type(model).__name__
    graph_proto.node.extend(w.nodes)
    graph_proto.input.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, in_dims))
    graph_proto.output.append(
        helper.make_tensor_value_info("output", helper.np_dtype_to_tensor_dtype(out.dtype), out_dims))
    for name, array in w.initializers.items():
        t = graph_proto.initializer.add()
        t.name, t.data_type = name, helper.np_dtype_to_tensor_dtype(array.dtype)
        t.dims.extend(array.shape)
        t.raw_data = np.asarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()  # ONNX stores little-endian
    return proto, sum(a.nbytes for a in w.initializers.values())


def _sample(batch: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A standard normal float32 input: the trace's (seed 0) or a self-check's (other seeds)."""
    return np.random.default_rng(seed).standard_normal((batch,) + shape).astype(np.float32)


def _compare(proto: onnx.ModelProto, model, x: np.ndarray) -> str | None:
    """Run the exported graph (with cnnkit's importer) and the model on ``x``: None when they
    agree, else what differs.

    Raises:
        OnnxUnsupportedError: the importer cannot run a node of the graph.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with config.no_grad():
            expected = model(Tensor(x)).data
            try:
                got = from_model_proto(proto, "the exported graph", checked=True)(Tensor(x)).data
            except OnnxUnsupportedError:
                raise
            except (CnnkitError, ValueError, IndexError) as error:  # e.g. a size baked into the graph
                return f"it fails there: {error}"
    finally:
        for m, mode in modes:
            m.training = mode
    if got.shape != expected.shape:
        return f"output {got.shape} vs {expected.shape}"
    # NaN and infinities (log(0), sqrt(-1), a max pool over padding only) agree where both hold
    # the same one; the scale is the finite values'.
    got = got.astype(np.float64)
    same = (got == expected) | (np.isnan(got) & np.isnan(expected))
    finite = np.abs(expected[np.isfinite(expected)])
    scale = max(1.0, float(finite.max(initial=0.0)))
    diff = float(np.abs(np.where(same, 0.0, got - expected)).max(initial=0.0))
    if diff <= _RTOL * scale:
        return None
    return f"output {got.shape} vs {expected.shape}, max abs difference {diff:.3g}"


def _verify(proto: onnx.ModelProto, model, shape, dynamic: bool, dynamic_size: bool = False) -> None:
    """Run the exported graph with cnnkit's importer and compare with the model.

    The check runs at batch 1 (the trace ran at TRACE_BATCH when the batch is dynamic) and,
    with a dynamic size, at a larger image. When they differ, two more runs say why: on the
    trace's own input only a wrongly written op can differ; on another input of the traced
    shape, a forward that depends on the input's values; otherwise the batch (or size).
    """
    name = type(model).__name__
    batch, traced_batch = 1, TRACE_BATCH if dynamic else 1
    other = _other_size(shape) if dynamic_size else shape
    where = f"batch {batch}" + (f", input {'x'.join(map(str, other))}" if dynamic_size else "")
    try:
        failure = _compare(proto, model, _sample(batch, other, 1))
        if failure is None:
            return
        on_trace = _compare(proto, model, _sample(traced_batch, shape, 0))
    except OnnxUnsupportedError as error:
        raise OnnxExportError(
            f"cnnkit's own importer cannot run the exported graph of {name} at {where}, so the "
            f"self-check cannot compare it with the model: {error} (a gap in cnnkit, not in the "
            "model; verify=False writes the file unchecked)"
        ) from None
    if on_trace is not None:
        raise OnnxExportError(
            f"the exported graph of {name} does not reproduce the model even on the input it was "
            f"traced with (batch {traced_batch}: {on_trace}): an op is written wrongly, a bug in "
            "cnnkit's exporter (verify=False writes the file unchecked)"
        )
    same_shape = (batch, other) == (traced_batch, shape)
    values = failure if same_shape else _compare(proto, model, _sample(traced_batch, shape, 2))
    if values is not None:
        raise OnnxExportError(
            f"the exported graph of {name} does not reproduce the model on another input of the "
            f"traced shape (batch {traced_batch}: {values}): its forward depends on the input's "
            "values in a way one trace cannot record (a Python branch on values, or values "
            "the graph does not hold: integer tensors, .data, NumPy), which ONNX cannot express"
        )
    fix = ("export with dynamic_size=False (a fixed input size)" if dynamic_size
           else "export with dynamic_batch=False")
    raise OnnxExportError(
        f"the exported graph of {name} does not reproduce the model at {where} ({failure}), "
        f"though it does at the traced batch {traced_batch}: its forward depends on the batch "
        f"size{' or the input size' if dynamic_size else ''} in a way one trace cannot record ({fix})"
    )


def _save(proto: onnx.ModelProto, path: Path, external: bool) -> None:
    """Write atomically (a temporary file in the same folder, then a rename); weights go to
    ``<name>.data`` beside it when the model is too big for one protobuf message."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        tmp_model = Path(tmp) / path.name
        if external:
            onnx.save_model(proto, tmp_model, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=f"{path.name}.data", size_threshold=1024)
            os.replace(Path(tmp) / f"{path.name}.data", path.parent / f"{path.name}.data")
        else:
            onnx.save_model(proto, tmp_model)
        os.replace(tmp_model, path)


def export(
    model: nn.Module, path: str | os.PathLike, input_shape: Sequence[int], opset: int = 17,
    dynamic_batch: bool = True, *, dynamic_size: bool = False, class_names: Sequence[str] | None = None,
    preprocessing: Mapping[str, Any] | None = None, verify: bool = True,
) -> Path:
    """Write ``model`` as an ONNX file that onnxruntime (or any ONNX runtime) can run.

    Args:
        model: a cnnkit Module taking one (N, *input_shape) float32 tensor and returning one tensor.
        path: the .onnx file to write (atomically; weights over 2 GiB go to ``<path>.data``).
        input_shape: one sample's shape, (C, H, W).
        opset: the ONNX opset to write, 11 to the newest the installed onnx knows.
        dynamic_batch: name the batch dimension "N" so any batch size runs; False fixes it to 1.
        dynamic_size: name the input's height and width "H" and "W" so any image size runs
            (fully convolutional models, global pooling); input_shape is then the size traced.
        class_names: stored in the file's metadata ("cnnkit.classes", JSON).
        preprocessing: stored as "cnnkit.preprocessing" (JSON) beside input_shape, e.g.
            {"mean": [0.1307], "std": [0.3081], "scale": 1 / 255}.
        verify: run the written graph with cnnkit's importer at another batch size (and
            image size, with dynamic_size) and compare with the model (max abs difference
            <= 1e-4 of the output's scale).

    Returns:
        The path written.

    Raises:
        OnnxExportError: an op ONNX cannot express (the message names the layer), or the
            written graph does not reproduce the model.
        ValueError: a bad input_shape or opset.
    """
    shape = _check_arguments(model, input_shape, opset)
    if dynamic_size and len(shape) != 3:
        raise ValueError(f"dynamic_size needs an image input_shape (C, H, W), got {input_shape!r}")
    proto, weight_bytes = _build(model, shape, int(opset), dynamic_batch, dynamic_size)
    for key, value in _metadata(class_names, preprocessing, shape, model).items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"{type(model).__name__} exported by cnnkit"
    light = skeleton(proto)  # the checks need shapes and types, not gigabytes of weights
    try:
        onnx.checker.check_model(light, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(light, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise OnnxExportError(f"the exported graph of {type(model).__name__} fails ONNX's checks: {error}") from None
    proto.graph.value_info.extend(inferred.graph.value_info)  # intermediate shapes, for viewers
    if verify:
        _verify(proto, model, shape, dynamic_batch, dynamic_size)
    path = Path(path)
    _save(proto, path, external=weight_bytes >= PROTOBUF_LIMIT - 2**24)  # room for the graph itself
    return path
