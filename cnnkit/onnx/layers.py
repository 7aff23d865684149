"""The module that runs each node of an imported graph: a cnnkit layer where one fits.

A node whose weights are stored in the file and whose attributes a cnnkit layer expresses
exactly becomes that layer (Conv -> ``nn.Conv2d``, Gemm -> ``nn.Linear``,
BatchNormalization -> ``nn.BatchNorm2d``, MaxPool -> ``nn.MaxPool2d``, Relu -> ``nn.ReLU``,
...), holding the file's tensors as its Parameters and buffers. The model is then
summarized, visualized and pruned like a model built in cnnkit: ``summary`` counts its
MACs, ``visualize feature-maps`` finds its convolutions, ``prune`` their channels.

Every other node becomes an ``OnnxNode``, which hands its inputs to the operator's
translator (``cnnkit.onnx.ops``); a layer and the translator of its operator compute the
same cnnkit calls. Floating-point tensors from the file that act as weights (the
operands of Conv, Gemm, MatMul, Add, Mul, ...) are Parameters either way, so the whole
graph can be fine-tuned; BatchNormalization's mean and variance are buffers; shapes,
axes and other constants are plain arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import nn
from ..nn import Parameter
from ..nn.resize import sync_sizes
from ..tensor import Tensor
from .ops import Node, translate
from .ops.conv import cnnkit_padding, explicit_pads
from .ops.norm import batch_norm_training, dropout_settings

__all__ = ["NodeSpec", "OnnxNode", "build_module", "PARAMETER_INPUTS", "BUFFER_INPUTS"]

# Input slots whose stored float tensors are learned weights (Parameters).
PARAMETER_INPUTS: dict[str, tuple[int, ...]] = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1),
    "BatchNormalization": (1, 2), "Add": (0, 1), "Sub": (0, 1), "Mul": (0, 1), "Div": (0, 1),
}
# Input slots whose stored tensors are state but not learned (buffers).
BUFFER_INPUTS: dict[str, tuple[int, ...]] = {"BatchNormalization": (3, 4)}


@dataclass
class NodeSpec:
    """What the importer knows about one node before running it.

    Attributes:
        op_type, name, attrs, opset, n_outputs: as in ``ops.Node``.
        n_inputs: the node's input slots (omitted trailing inputs not counted).
        runtime: the slots whose values are computed while the model runs.
        constants: slot -> value stored in the file (initializer or Constant node).
        weights: slot -> the Parameter or buffer array that holds a stored tensor.
        absent: slots of omitted optional inputs.
        input_rank, input_float: rank and float-ness of input 0 from shape inference (None: unknown).
    """

    op_type: str
    name: str
    attrs: dict
    opset: int
    n_outputs: int
    n_inputs: int
    runtime: list[int]
    constants: dict[int, np.ndarray]
    weights: dict[int, Any] = field(default_factory=dict)
    absent: set[int] = field(default_factory=set)
    input_rank: int | None = None
    input_float: bool | None = None

    def attr(self, name: str, default: Any = None) -> Any:
        value = self.attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    def node(self, inputs: list) -> Node:
        return Node(self.op_type, self.name, inputs, self.attrs, self.opset, self.n_outputs)


class OnnxNode(nn.Module):
    """One ONNX node run by its operator's translator (``cnnkit.onnx.ops``).

    Its stored float weights are Parameters (``W``, ``B``, ... after the operator's input
    names), its stored constants plain arrays. ``forward`` takes the node's computed inputs
    in slot order and returns its output (a tuple for several outputs).
    """

    def __init__(self, spec: NodeSpec, slot_names: list[str]):
        super().__init__()
        self.op_type, self.node_name = spec.op_type, spec.name
        self.attrs, self.opset, self.n_outputs = spec.attrs, spec.opset, spec.n_outputs
        self.slots: list[tuple[str, Any]] = []  # ("input", None) | ("weight", name) | ("const", array) | ("absent", None)
        for i in range(spec.n_inputs):
            if i in spec.absent:
                self.slots.append(("absent", None))
            elif i in spec.weights:
                weight = spec.weights[i]
                if isinstance(weight, Parameter):
                    setattr(self, slot_names[i], weight)
                else:
                    self.register_buffer(slot_names[i], weight)
                self.slots.append(("weight", slot_names[i]))
            elif i in spec.constants:
                self.slots.append(("const", spec.constants[i]))
            else:
                self.slots.append(("input", None))

    def forward(self, *xs: Tensor) -> Tensor | tuple:
        given = iter(xs)
        inputs: list = []
        for kind, ref in self.slots:
            if kind == "input":
                inputs.append(next(given))
            elif kind == "weight":
                value = getattr(self, ref)
                inputs.append(value if isinstance(value, Tensor) else Tensor(value))
            elif kind == "const":
                inputs.append(Tensor(ref))
            else:
                inputs.append(None)
        node = Node(self.op_type, self.node_name, inputs, self.attrs, self.opset, self.n_outputs)
        out = translate(node)
        return out[0] if len(out) == 1 else out

    def extra_repr(self) -> str:
        shown = ", ".join(f"{k}={_short(v)}" for k, v in self.attrs.items())
        return self.op_type + (f", {shown}" if shown else "")


def _short(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"[{', '.join(map(str, value[:8]))}, ...]"
    if hasattr(value, "dims"):  # a TensorProto
        return f"tensor{list(value.dims)}"
    return str(value)


# --------------------------------------------------------------------------- layers
def _ints(spec: NodeSpec, name: str, default) -> tuple[int, ...]:
    value = spec.attr(name)
    return tuple(int(v) for v in value) if value is not None else tuple(default)


def _only_input_computed(spec: NodeSpec) -> bool:
    return spec.runtime == [0]


def _conv(spec: NodeSpec) -> nn.Module | None:
    w = spec.constants.get(1)
    if w is None or w.ndim != 4 or w.dtype.kind != "f" or not _only_input_computed(spec) or 1 not in spec.weights:
        return None
    F_, Cg, KH, KW = w.shape
    strides, dilations = _ints(spec, "strides", (1, 1)), _ints(spec, "dilations", (1, 1))
    auto_pad = spec.attr("auto_pad", "NOTSET")
    if auto_pad == "SAME_UPPER" and strides == (1, 1):
        padding: Any = "same"  # cnnkit's "same" puts the odd extra row last, as SAME_UPPER
    elif auto_pad in ("NOTSET", "", "VALID"):
        pads = explicit_pads(spec.node([]), None, (KH, KW), strides, dilations)
        top, bottom, left, right = pads
        if top != bottom or left != right:
            return None
        padding = (top, left)
    else:
        return None
    groups = int(spec.attr("group", 1))
    # Built with the smallest channels its groups allow (so no large random init is drawn),
    # then given the file's weights and sizes. (nn.resize.sync_sizes cannot be used here: it
    # reads groups == in == out as depthwise, which this small layer would look like.)
    layer = nn.Conv2d(groups, groups, (KH, KW), strides, padding, dilations, groups,
                      bias=2 in spec.weights, dtype=w.dtype)
    layer.in_channels, layer.out_channels = Cg * groups, F_
    layer.weight = spec.weights[1]
    if 2 in spec.weights:
        layer.bias = spec.weights[2]
    return layer


def _gemm(spec: NodeSpec) -> nn.Module | None:
    b, c = spec.constants.get(1), spec.constants.get(2)
    if b is None or b.ndim != 2 or b.dtype.kind != "f" or not _only_input_computed(spec):
        return None
    if spec.attr("transA", 0) or float(spec.attr("alpha", 1.0)) != 1.0 or float(spec.attr("beta", 1.0)) != 1.0:
        return None
    if spec.attr("transB", 0) == 0:
        return None  # the Parameter would have to be a transposed copy of the stored weight
    out_features, in_features = b.shape
    if c is not None and (c.shape != (out_features,) or 2 not in spec.weights):
        return None
    layer = nn.Linear(1, 1, bias=c is not None, dtype=b.dtype)  # no large random init; sized below
    layer.weight = spec.weights[1]
    sync_sizes(layer)
    if c is not None:
        layer.bias = spec.weights[2]
    return layer


def _batch_norm(spec: NodeSpec) -> nn.Module | None:
    if not _only_input_computed(spec) or set(spec.weights) != {1, 2, 3, 4}:
        return None
    if batch_norm_training(spec.node([])) or spec.n_outputs != 1 or spec.input_float is not True:
        return None
    if spec.opset < 9 and spec.attr("spatial", 1) != 1:
        return None
    layer_type = {4: nn.BatchNorm2d, 2: nn.BatchNorm1d, 3: nn.BatchNorm1d}.get(spec.input_rank)
    if layer_type is None:
        return None
    scale = spec.weights[1]
    # ONNX's momentum weighs the old running value, cnnkit's (PyTorch's) the new batch.
    momentum = 1.0 - float(spec.attr("momentum", 0.9))
    layer = layer_type(scale.shape[0], eps=float(spec.attr("epsilon", 1e-5)), momentum=momentum,
                       dtype=scale.dtype)
    layer.weight, layer.bias = spec.weights[1], spec.weights[2]
    layer.running_mean, layer.running_var = spec.weights[3], spec.weights[4]
    return layer


def _pool(spec: NodeSpec) -> nn.Module | None:
    kernel = _ints(spec, "kernel_shape", ())
    if len(kernel) != 2 or spec.input_float is not True or not _only_input_computed(spec) or spec.n_outputs != 1:
        return None
    if spec.attr("auto_pad", "NOTSET") not in ("NOTSET", "", "VALID"):
        return None
    strides, dilations = _ints(spec, "strides", (1, 1)), _ints(spec, "dilations", (1, 1))
    padding = cnnkit_padding(kernel, explicit_pads(spec.node([]), None, kernel, strides, dilations))
    if padding is None:
        return None
    ceil_mode = bool(spec.attr("ceil_mode", 0)) if spec.opset >= 10 else False
    if spec.op_type == "MaxPool":
        return nn.MaxPool2d(kernel, strides, padding, dilations, ceil_mode=ceil_mode)
    if dilations != (1, 1):
        return None
    return nn.AvgPool2d(kernel, strides, padding, ceil_mode, bool(spec.attr("count_include_pad", 0)))


def _global_pool(layer_type) -> Callable[[NodeSpec], nn.Module | None]:
    def build(spec: NodeSpec) -> nn.Module | None:
        if spec.input_rank != 4 or spec.input_float is not True:
            return None
        return layer_type(1)

    return build


def _activation(make: Callable[[NodeSpec], nn.Module]) -> Callable[[NodeSpec], nn.Module | None]:
    def build(spec: NodeSpec) -> nn.Module | None:
        return make(spec) if spec.input_float is True and _only_input_computed(spec) else None

    return build


def _softmax(layer_type) -> Callable[[NodeSpec], nn.Module | None]:
    def build(spec: NodeSpec) -> nn.Module | None:
        if spec.opset < 13 or spec.input_float is not True:
            return None  # before opset 13 softmax works on a 2-D coercion of the input
        return layer_type(dim=int(spec.attr("axis", -1)))

    return build


def _flatten(spec: NodeSpec) -> nn.Module | None:
    if int(spec.attr("axis", 1)) != 1 or spec.input_rank is None or spec.input_rank < 2:
        return None
    return nn.Flatten(1, -1)


def _dropout(spec: NodeSpec) -> nn.Module | None:
    if spec.n_outputs != 1 or spec.runtime != [0]:
        return None
    inputs = [Tensor(spec.constants[i]) if i in spec.constants else None for i in range(spec.n_inputs)]
    ratio, training = dropout_settings(spec.node(inputs))
    if training:
        return None
    # Identity at inference, as in the file; fine-tuning (model.train()) drops with its ratio.
    return nn.Dropout(ratio)


LAYERS: dict[str, Callable[[NodeSpec], nn.Module | None]] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "BatchNormalization": _batch_norm,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": _global_pool(nn.AdaptiveAvgPool2d),
    "GlobalMaxPool": _global_pool(nn.AdaptiveMaxPool2d),
    "Relu": _activation(lambda spec: nn.ReLU()),
    "LeakyRelu": _activation(lambda spec: nn.LeakyReLU(float(spec.attr("alpha", 0.01)))),
    "Elu": _activation(lambda spec: nn.ELU(float(spec.attr("alpha", 1.0)))),
    "Sigmoid": _activation(lambda spec: nn.Sigmoid()),
    "Tanh": _activation(lambda spec: nn.Tanh()),
    "Softplus": _activation(lambda spec: nn.Softplus()),
    "HardSwish": _activation(lambda spec: nn.Hardswish()),
    "Gelu": _activation(lambda spec: nn.GELU(str(spec.attr("approximate", "none")))),
    "Softmax": _softmax(nn.Softmax),
    "LogSoftmax": _softmax(nn.LogSoftmax),
    "Flatten": _flatten,
    "Dropout": _dropout,
}


def build_module(spec: NodeSpec, slot_names: list[str]) -> nn.Module:
    """The module that runs ``spec``: a cnnkit layer where one fits exactly, else an OnnxNode."""
    make = LAYERS.get(spec.op_type)
    # A layer's forward takes the one data input; stored weights live in the layer.
    layer = make(spec) if make is not None and spec.runtime == [0] else None
    return layer if layer is not None else OnnxNode(spec, slot_names)
