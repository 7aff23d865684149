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
from ..tensor import Tensor
from .emit import EMITTERS
from .tracing import TRACE_BATCH, size_symbols, trace
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
    for op in graph.ops:
        fn = fns[op.id]
        w.op, w.base = op, names[op.id]
        emit = EMITTERS.get(op.type)
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
