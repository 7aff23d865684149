"""Graph assembly: a traced forward pass written op by op into an ONNX ModelProto.

Each op, in execution order, goes to its emitter (``cnnkit/onnx/emit``) under a node name
taken from the module path of the layer that ran it (``op_names``); the graph's input is
"input" and its output "output", with the symbols "N" (dynamic batch) and "H", "W", "OH",
"OW" (dynamic size) where the sizes may change.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..errors import OnnxExportError
from ..explain.graph import Graph, OpNode
from ..graph import input_values
from ..tensor import Tensor
from .emit import EMITTERS
from .tracing import TRACE_BATCH, other_size, size_symbols, trace
from .writer import Writer

__all__ = ["build", "op_names", "version"]


def op_names(graph: Graph, leaf_types: Mapping[str, str]) -> dict[int, str]:
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



def version() -> str:
    try:
        return importlib.metadata.version("cnnkit")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "unknown"


def _moved_shapes(model, shape, graph: Graph, fns, dynamic: bool, dynamic_size: bool) -> dict:
    """op id -> (input shapes, output shape) in a second trace at batch TRACE_BATCH + 1 (with a
    dynamic batch) and a larger image (with a dynamic size); empty when that trace does not
    run the same ops in the same order (the self-check then judges the file).

    A dimension that differs between the two traces follows the input's batch or size, so an
    emitter can write it from the input's shape instead of baking the traced value in.
    """
    batch = TRACE_BATCH + 1 if dynamic else 1
    try:
        graph2, fns2, _ = trace(model, other_size(shape) if dynamic_size else shape, batch)
    except Exception:  # noqa: BLE001 - the model's own refusal; size_symbols and the self-check report it
        return {}
    if [op.type for op in graph2.ops] != [op.type for op in graph.ops]:
        return {}
    return {op.id: ([tuple(t.shape) for t in fns2[op2.id].inputs], tuple(fns2[op2.id].output_ref().shape))
            for op, op2 in zip(graph.ops, graph2.ops, strict=True)}


def build(model, shape, opset: int, dynamic: bool, dynamic_size: bool = False) -> tuple[onnx.ModelProto, int]:
    """The ONNX model of one traced forward pass, and the bytes of its weights."""
    batch = TRACE_BATCH if dynamic else 1
    graph, fns, out = trace(model, shape, batch)
    leaf_types = graph.leaf_modules
    buffer_names = {id(b.data if isinstance(b, Tensor) else b): n for n, b in model.named_buffers()}
    w = Writer(graph, fns, opset, dynamic, batch, buffer_names, leaf_types)
    w.dynamic_size = dynamic_size
    if not list(model.children()) and type(model).__module__.startswith("cnnkit.nn."):
        w.root_layer = type(model).__name__
    names = op_names(graph, leaf_types)
    w.used.update({"input", "output"})
    if dynamic or dynamic_size:
        w.moved = _moved_shapes(model, shape, graph, fns, dynamic, dynamic_size)
    if w.moved:
        moved_input = (TRACE_BATCH + 1 if dynamic else 1,) + (other_size(shape) if dynamic_size else shape)
        w.shapes.append(("input", (batch,) + tuple(shape), moved_input))
    for op in graph.ops:
        fn = fns[op.id]
        w.op, w.base = op, names[op.id]
        emit = EMITTERS.get(op.type)
        if emit is None:
            raise w.error(f"ONNX export has no counterpart for cnnkit's {op.type}")
        xs = [w.value(tid, t) for tid, t in zip(op.inputs, input_values(fn), strict=True)]
        w.values[op.output] = emit(w, fn, xs)
        if op.id in w.moved:
            w.shapes.append((w.values[op.output], tuple(w.output(fn).shape), w.moved[op.id][1]))
    # The graph's output is renamed "output" where it is made.
    final = w.values[graph.outputs[0]]
    for node in w.nodes:
        node.output[:] = ["output" if o == final else o for o in node.output]
        node.input[:] = ["output" if i == final else i for i in node.input]
    if dynamic and out.shape[:1] != (batch,):
        raise OnnxExportError(f"cannot export with a dynamic batch: the output's shape {out.shape} does not "
                              f"start with the batch ({batch}); export with dynamic_batch=False")
    last = w.moved.get(graph.ops[-1].id) if graph.ops else None
    if dynamic and last is not None and last[1][:1] != (TRACE_BATCH + 1,):
        raise OnnxExportError(f"cannot export with a dynamic batch: the output's first dimension does not follow "
                              f"the batch (shape {out.shape} at batch {batch}, {last[1]} at batch "
                              f"{TRACE_BATCH + 1}); export with dynamic_batch=False")

    in_dims: list = ["N" if dynamic else batch] + list(shape)
    out_dims: list = list(out.shape)
    if dynamic_size:
        in_dims[-2:] = ["H", "W"]
        out_dims = size_symbols(model, shape, out)
    if dynamic:
        out_dims[0] = "N"

    # The ModelProto is filled in place: make_graph / make_model would copy every weight twice.
    proto = onnx.ModelProto()
    proto.opset_import.add(domain="", version=opset)
    proto.ir_version = helper.find_min_ir_version_for(list(proto.opset_import))
    proto.producer_name, proto.producer_version = "cnnkit", version()
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
