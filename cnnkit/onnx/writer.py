"""The writer the exporter's emitters share: ONNX nodes, initializers and value names.

Each cnnkit op of a traced forward pass is written by one emitter (``cnnkit/onnx/emit/``),
``emit(w, fn, xs) -> the ONNX value of fn's output``, where ``w`` is the ``Writer`` below and
``xs`` the ONNX values of ``fn.inputs``. The writer names nodes after the layer that ran the
op, turns weights into initializers and other arrays into Constant nodes, and spells the
nodes whose form changed between opsets (Reduce*, Squeeze, Unsqueeze) for the opset written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import OnnxExportError
from ..explain.graph import Graph, OpNode
from ..function import Function
from ..tensor import Tensor

__all__ = ["Writer", "simple", "AXES_INPUT_FROM"]

# The opset from which a Reduce* node takes its axes as an input (an attribute before).
AXES_INPUT_FROM = {"ReduceSum": 13, "ReduceMean": 18, "ReduceMax": 18, "ReduceMin": 18, "ReduceProd": 18}


class Writer:
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
        # op id -> (input shapes, output shape) in a second trace at another batch (and size,
        # with dynamic_size): a dimension that differs there follows the input's batch or size
        self.moved: dict[int, tuple[list[tuple[int, ...]], tuple[int, ...]]] = {}
        # (ONNX value, shape in the trace, shape in the second trace) of the graph's input and
        # of each op output written so far: where a reshape finds dimensions that follow the input
        self.shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []

    def output(self, fn: Function) -> Tensor:
        """The output tensor of a traced op (alive: the trace holds the whole graph)."""
        return fn.output_ref()

    def moved_shapes(self) -> tuple[list[tuple[int, ...]], tuple[int, ...]] | None:
        """The current op's (input shapes, output shape) in the second trace, or None when
        there is none (a fixed batch and size) or its ops did not line up with the first's."""
        return self.moved.get(self.op.id)

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

        The axes are an attribute before the opset in ``AXES_INPUT_FROM`` and an input from it.
        No axes means no reduction: an Identity, since ONNX reads an empty list as every axis
        (noop_with_empty_axes, from the same opsets, would say otherwise; Identity is shorter).
        """
        if not axes:
            return self.add("Identity", [x], hint)
        if self.opset >= AXES_INPUT_FROM[op_type]:
            return self.add(op_type, [x, self.ints(axes, "axes")], hint, keepdims=int(keepdims))
        return self.add(op_type, [x], hint, axes=list(axes), keepdims=int(keepdims))

    def count(self, x: str, axes: Sequence[int], dtype, hint: str = "count") -> str:
        """The number of elements of ``x`` over ``axes``, as a 0-d ``dtype`` value read from
        its shape when the graph runs (so a dynamic batch or size counts what it gets)."""
        dims = self.add("Gather", [self.add("Shape", [x], f"{hint}_shape"), self.ints(axes, f"{hint}_axes")],
                        f"{hint}_dims", axis=0)
        dims = self.add("Cast", [dims], f"{hint}_float", to=helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
        return self.reduce("ReduceProd", dims, [0], False, hint)

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



def simple(op_type: str, **attrs_of: Callable) -> Callable:
    def emit(w: Writer, fn, xs) -> str:
        return w.add(op_type, xs, **{k: f(fn) for k, f in attrs_of.items()})

    return emit

