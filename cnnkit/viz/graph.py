"""The define-by-run graph of one forward pass, as Graphviz DOT: op level and layer level.

Every op a forward pass runs is recorded as the ``creator`` of its output tensor, and
the op holds its input tensors, so walking ``creator -> inputs -> creator ...`` back
from the output visits the whole computation. ``trace`` collects that walk into a
``Graph``; ``model_graph`` also runs the model with forward hooks to name parameters
and buffers and to tell which module each op ran in. ``graph_to_dot`` writes the op
graph (op nodes with output shapes, parameters as inputs) and ``layer_graph_to_dot`` a
compact view with one node per layer call (and per op run outside any layer, such as
ResNet's residual additions). ``render_dot`` calls Graphviz's ``dot`` when installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..backend import as_numpy
from ..function import op_name
from ..nn.parameter import Parameter
from ..tensor import Tensor

__all__ = [
    "Graph", "OpNode", "TensorNode", "trace", "model_graph", "graph_to_dot", "layer_graph_to_dot",
    "render_dot", "dot_available", "to_graph_def",
]


@dataclass
class TensorNode:
    """A tensor of the graph.

    Attributes:
        kind: "input", "parameter", "buffer", "constant" (other leaves) or "result" (an op's output).
        name: a display name ("features.0.weight") or None.
        value, grad: copies of the data and of ``.grad`` (None if absent); kept for small tensors only.
    """

    id: int
    kind: str
    shape: tuple[int, ...]
    name: str | None = None
    value: np.ndarray | None = None
    grad: np.ndarray | None = None


@dataclass
class OpNode:
    """One op call: its class, input and output tensor ids, and the module whose forward ran it."""

    id: int
    type: str
    inputs: list[int]
    output: int
    module: str | None = None
    call: int = 0

    @property
    def label(self) -> str:
        """The op's name without the ``Op`` suffix: ``Conv2dOp`` -> ``Conv2d``."""
        return self.type[:-2] if self.type.endswith("Op") and len(self.type) > 2 else self.type


@dataclass
class Graph:
    """Ops in execution order (each after the ops that produced its inputs) and their tensors."""

    ops: list[OpNode]
    tensors: dict[int, TensorNode]
    outputs: list[int]
    inputs: list[int] = field(default_factory=list)
    leaf_modules: dict[str, str] = field(default_factory=dict)  # module path -> class name

    def __len__(self) -> int:
        return len(self.ops)


_KEEP_VALUES = 16  # store values/grads of tensors with at most this many elements


def _ordered_ops(roots: list) -> list:
    """The ops reachable from ``roots`` in execution order (iterative post-order, no recursion)."""
    order, visited = [], set()
    stack = [(fn, False) for fn in reversed(roots)]
    while stack:
        fn, expanded = stack.pop()
        if expanded:
            order.append(fn)
            continue
        if id(fn) in visited:
            continue
        visited.add(id(fn))
        stack.append((fn, True))
        for x in reversed(fn.inputs or ()):
            if x.creator is not None and id(x.creator) not in visited:
                stack.append((x.creator, False))
    return order


def trace(
    outputs: Tensor | list[Tensor],
    *,
    names: Mapping[int, str] | None = None,
    inputs: Sequence[Tensor] = (),
    modules: Mapping[int, tuple[str, int]] | None = None,
) -> Graph:
    """Collect the graph that produced ``outputs`` by following ``creator`` links.

    Call it before ``backward()`` (which frees the graph) or after ``backward(retain_graph=True)``.

    Args:
        outputs: the tensor(s) the graph ends in.
        names: ``id(tensor)`` or ``id(array)`` -> display name (parameters, inputs, toy variables).
        inputs: tensors to mark as the graph's inputs.
        modules: ``id(op)`` -> (module path, call number) of the module that ran it.

    Raises:
        ValueError: an output was not produced by a recorded op (grad mode off, or no input
            requiring grad), or its graph was already freed by ``backward()``.
    """
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    names = names or {}
    modules = modules or {}
    input_ids = {id(t) for t in inputs}
    roots = []
    for t in outputs:
        if t.creator is None:
            raise ValueError(
                "trace: the output has no creator op; run the forward pass with grad mode on and "
                "an input or parameter that requires grad"
            )
        roots.append(t.creator)
    tensors: dict[int, TensorNode] = {}

    def add_tensor(t: Tensor, kind: str) -> int:
        if id(t) not in tensors:
            name = names.get(id(t), names.get(id(t.data)))
            small = t.data.size <= _KEEP_VALUES
            tensors[id(t)] = TensorNode(
                id(t), kind, tuple(t.shape), name,
                np.array(as_numpy(t.data)) if small else None,
                np.array(as_numpy(t.grad)) if small and t.grad is not None else None,
            )
        return id(t)

    ops = []
    for fn in _ordered_ops(roots):
        if fn.inputs is None:
            raise ValueError(
                f"trace: the graph was freed by backward() at {type(fn).__name__}; "
                "trace before backward() or pass retain_graph=True"
            )
        in_ids = []
        for x in fn.inputs:
            if x.creator is not None:
                in_ids.append(id(x))  # added as the producing op's output
                continue
            if id(x) in input_ids:
                kind = "input"
            elif id(x) in names or id(x.data) in names:
                kind = "parameter" if isinstance(x, Parameter) else ("input" if x.requires_grad else "buffer")
            else:
                kind = "input" if x.requires_grad else "constant"
            in_ids.append(add_tensor(x, kind))
        out = fn.output_ref() if fn.output_ref is not None else None
        if out is None:  # the output is gone: only possible for an op no one consumes
            continue
        out_id = add_tensor(out, "result")
        module, call = modules.get(id(fn), (None, 0))
        ops.append(OpNode(id(fn), op_name(fn), in_ids, out_id, module, call))
    return Graph(ops, tensors, [id(t) for t in outputs], [i for i in input_ids if i in tensors])


def model_graph(model, input_shape: tuple[int, ...], x: np.ndarray | None = None) -> Graph:
    """Run ``model`` once (eval mode, batch of 1) and return its op graph with names and modules.

    Each op is attributed to the innermost module whose forward ran it: forward hooks fire
    innermost first, and each hook claims the not-yet-claimed ops between its module's
    inputs and its output. An op that claims no leaf module (a residual addition written
    in a block's ``forward``) belongs to the block.

    Args:
        input_shape: (C, H, W) of one input; ignored when ``x`` is given.
        x: an input batch (N, C, H, W); zeros of ``input_shape`` by default.

    Raises:
        ShapeError: the model cannot take that input (its message names the layer).
    """
    from ..config import enable_grad

    if x is None:
        x = np.zeros((1,) + tuple(input_shape), np.float32)
    names: dict[int, str] = {id(p): n for n, p in model.named_parameters()}
    for n, b in model.named_buffers():
        names[id(b)] = n
        if isinstance(b, Tensor):
            names[id(b.data)] = n
    owner: dict[int, tuple[str, int]] = {}
    calls: dict[str, int] = {}
    leaves = {n: type(m).__name__ for n, m in model.named_modules()
              if n and not any(True for _ in m.children())}

    def claim(path: str):
        def hook(module, args, output):
            if not isinstance(output, Tensor) or output.creator is None:
                return
            calls[path] = calls.get(path, 0) + 1
            stop = {id(a) for a in args if isinstance(a, Tensor)}
            stack, seen = [output.creator], set()
            while stack:
                fn = stack.pop()
                if id(fn) in seen:
                    continue
                seen.add(id(fn))
                owner.setdefault(id(fn), (path, calls[path]))
                for t in fn.inputs or ():
                    if id(t) not in stop and t.creator is not None:
                        stack.append(t.creator)
        return hook

    handles = [m.register_forward_hook(claim(n)) for n, m in model.named_modules()]
    xt = Tensor(np.asarray(x, np.float32), name="input")
    names[id(xt)] = "input"
    was_training = model.training
    model.eval()
    try:
        with enable_grad():
            out = model(xt)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if not isinstance(out, Tensor):
        raise ValueError(f"model_graph expects the model to return a Tensor, got {type(out).__name__}")
    graph = trace(out, names=names, inputs=[xt], modules={k: (p or None, c) for k, (p, c) in owner.items()})
    graph.leaf_modules = leaves
    return graph


# --------------------------------------------------------------------------- DOT output
_STYLE = {
    "op": 'shape=box, style="rounded,filled", fillcolor="#cfe2f3", color="#3d85c6"',
    "input": 'shape=ellipse, style=filled, fillcolor="#fce5cd", color="#e69138"',
    "parameter": 'shape=ellipse, style=filled, fillcolor="#d9ead3", color="#6aa84f", fontsize=10',
    "buffer": 'shape=ellipse, style="filled,dashed", fillcolor="#eeeeee", color="#999999", fontsize=10',
    "constant": 'shape=ellipse, style=filled, fillcolor="#eeeeee", color="#999999", fontsize=10',
    "result": 'shape=ellipse, style=filled, fillcolor="#fff2cc", color="#bf9000"',
    "output": 'shape=ellipse, style=filled, fillcolor="#f4cccc", color="#cc0000"',
    "layer": 'shape=box, style="rounded,filled", fillcolor="#cfe2f3", color="#3d85c6"',
    "loose": 'shape=box, style="rounded,filled", fillcolor="#ead1dc", color="#a64d79"',
}


def _quote(text: str) -> str:
    """A DOT string literal; ``\\n`` in the text becomes a line break."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _number(a: np.ndarray) -> str:
    if a.size == 1:
        return f"{float(a.reshape(-1)[0]):.4g}"
    return np.array2string(a, precision=3, separator=", ")


def _numbering(graph: Graph) -> tuple[dict[int, str], dict[int, str]]:
    """Short DOT node ids (t0, t1, ... and o0, o1, ...) in graph order, stable across runs."""
    tensors = {k: f"t{i}" for i, k in enumerate(graph.tensors)}
    return tensors, {op.id: f"o{i}" for i, op in enumerate(graph.ops)}


def _header(title: str | None, rankdir: str) -> list[str]:
    lines = ["digraph G {", f"  rankdir={rankdir};", '  node [fontname="Helvetica", fontsize=11];',
             '  edge [color="#666666", arrowsize=0.7];']
    if title:
        lines += [f"  label={_quote(title)};", "  labelloc=t;", "  fontsize=14;", '  fontname="Helvetica";']
    return lines


def graph_to_dot(
    graph: Graph, *, show_tensors: bool = False, show_values: bool = False, title: str | None = None,
    rankdir: str = "TB",
) -> str:
    """Write the op graph as Graphviz DOT text.

    Args:
        show_tensors: draw every tensor as its own node between ops (the articles' style
            for small graphs); otherwise ops are nodes labelled with their output shape and
            only leaves (input, parameters, buffers, constants) get nodes of their own.
        show_values: print value and gradient on tensor nodes (small tensors only).
        rankdir: "TB" (top to bottom) or "LR".
    """
    lines = _header(title, rankdir)
    t_, o_ = _numbering(graph)
    consumed = {t for op in graph.ops for t in op.inputs}
    producer = {op.output: op for op in graph.ops}

    def tensor_label(t: TensorNode) -> str:
        head = t.name or ("output" if t.id in graph.outputs else t.kind)
        parts = [head]
        if show_values and t.value is not None:
            parts.append(f"value {_number(t.value)}")
            if t.grad is not None:
                parts.append(f"grad {_number(t.grad)}")
        if t.shape:
            parts.append(_shape(t.shape))
        return "\n".join(parts)

    for t in graph.tensors.values():
        if t.kind != "result" or show_tensors:
            kind = "output" if t.id in graph.outputs else t.kind
            lines.append(f"  {t_[t.id]} [label={_quote(tensor_label(t))}, {_STYLE[kind]}];")
    for op in graph.ops:
        head = f"{op.module}: {op.label}" if op.module else op.label
        label = head if show_tensors else f"{head}\n{_shape(graph.tensors[op.output].shape)}"
        lines.append(f"  {o_[op.id]} [label={_quote(label)}, {_STYLE['op']}];")
        for t in op.inputs:
            src = o_[producer[t].id] if t in producer and not show_tensors else t_[t]
            lines.append(f"  {src} -> {o_[op.id]};")
        if show_tensors:
            lines.append(f"  {o_[op.id]} -> {t_[op.output]};")
    if not show_tensors:
        for out in graph.outputs:
            if out in producer and out not in consumed:
                t = graph.tensors[out]
                label = _quote("output " + _shape(t.shape))
                lines.append(f"  {t_[out]} [label={label}, {_STYLE['output']}];")
                lines.append(f"  {o_[producer[out].id]} -> {t_[out]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


@dataclass
class _Unit:
    key: tuple
    label: str
    style: str
    inputs: list = field(default_factory=list)
    params: int = 0
    output: int | None = None


def layer_graph_to_dot(graph: Graph, model=None, *, title: str | None = None, rankdir: str = "TB") -> str:
    """Write the layer-level view: one node per layer call, one per op outside any layer.

    A layer (a leaf module) that runs several ops (a padded conv) is one node; modules
    that run no op in eval mode (Dropout, Identity) do not appear. Edges follow the data,
    so skip connections and branch merges show.

    Args:
        model: the traced model, to print each layer's parameter count (optional).
    """
    params = {}
    if model is not None:
        for path, m in model.named_modules():
            params[path] = sum(int(p.size) for p in m.parameters(recurse=False))
    units: dict[tuple, _Unit] = {}
    unit_of_op: dict[int, tuple] = {}
    for op in graph.ops:
        is_leaf = op.module in graph.leaf_modules
        key = (op.module, op.call) if is_leaf else ("op", op.id)
        unit_of_op[op.id] = key
        if key not in units:
            if is_leaf:
                name = op.module + (f" (call {op.call})" if op.call > 1 else "")
                units[key] = _Unit(key, f"{name}\n{graph.leaf_modules[op.module]}", _STYLE["layer"],
                                   params=params.get(op.module, 0))
            else:
                where = f"{op.module}: " if op.module else ""
                units[key] = _Unit(key, f"{where}{op.label}", _STYLE["loose"])
        units[key].output = op.output
    producer_unit = {op.output: unit_of_op[op.id] for op in graph.ops}
    lines = _header(title, rankdir)
    t_, _ = _numbering(graph)
    for inp in graph.inputs:
        t = graph.tensors[inp]
        lines.append(f"  {t_[inp]} [label={_quote('input ' + _shape(t.shape))}, {_STYLE['input']}];")
    ids = {key: f"u{i}" for i, key in enumerate(units)}
    edges: list[tuple[str, str]] = []
    for op in graph.ops:
        dst = unit_of_op[op.id]
        for t in op.inputs:
            if t in producer_unit:
                src = producer_unit[t]
                if src != dst:
                    edges.append((ids[src], ids[dst]))
            elif t in graph.inputs:
                edges.append((t_[t], ids[dst]))
    for key, unit in units.items():
        shape = _shape(graph.tensors[unit.output].shape)
        extra = f"\n{unit.params:,} params" if unit.params else ""
        lines.append(f"  {ids[key]} [label={_quote(f'{unit.label}  {shape}{extra}')}, {unit.style}];")
    for src, dst in dict.fromkeys(edges):  # unique, in order
        lines.append(f"  {src} -> {dst};")
    for out in graph.outputs:
        if out in producer_unit:
            t = graph.tensors[out]
            lines.append(f"  {t_[out]} [label={_quote('output ' + _shape(t.shape))}, {_STYLE['output']}];")
            lines.append(f"  {ids[producer_unit[out]]} -> {t_[out]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- TensorBoard
def to_graph_def(graph: Graph):
    """Convert the op graph to a TensorBoard ``GraphDef`` (tensorboardX's protobuf classes).

    Node names use the module path as the scope ("features/0/Conv2d_0",
    "features/0/weight"), so TensorBoard folds each layer into one box that opens to show
    its ops; each node carries its output shape in ``_output_shapes``.
    """
    from tensorboardX.proto.attr_value_pb2 import AttrValue
    from tensorboardX.proto.graph_pb2 import GraphDef
    from tensorboardX.proto.node_def_pb2 import NodeDef
    from tensorboardX.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboardX.proto.versions_pb2 import VersionDef

    def shape_attr(shape: tuple[int, ...]) -> dict:
        dims = [TensorShapeProto.Dim(size=int(d)) for d in shape]
        return {"_output_shapes": AttrValue(list=AttrValue.ListValue(shape=[TensorShapeProto(dim=dims)]))}

    def scoped(name: str) -> str:
        return name.replace(".", "/")

    node_name: dict[int, str] = {}
    nodes = []
    for k, t in enumerate(graph.tensors.values()):
        if t.kind == "result":
            continue
        name = scoped(t.name) if t.name else f"{t.kind}_{k}"
        node_name[t.id] = name
        op = {"input": "Input", "parameter": "Parameter", "buffer": "Buffer"}.get(t.kind, "Constant")
        nodes.append(NodeDef(name=name, op=op, attr=shape_attr(t.shape)))
    for k, op in enumerate(graph.ops):
        name = f"{scoped(op.module)}/{op.label}_{k}" if op.module else f"{op.label}_{k}"
        node_name[op.output] = name
        nodes.append(NodeDef(name=name, op=op.label, input=[node_name[t] for t in op.inputs],
                             attr=shape_attr(graph.tensors[op.output].shape)))
    return GraphDef(node=nodes, versions=VersionDef(producer=22))


# --------------------------------------------------------------------------- rendering
def dot_available() -> bool:
    """True when Graphviz's ``dot`` program is on the PATH."""
    return shutil.which("dot") is not None


def render_dot(dot_text: str, path: str | os.PathLike, fmt: str | None = None) -> Path | None:
    """Render DOT text to ``path`` with Graphviz's ``dot`` (format from the suffix: svg, png, pdf).

    Returns:
        The written path, or None when ``dot`` is not installed (nothing is written).

    Raises:
        OSError: ``dot`` failed (its first error line is in the message).
    """
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".").lower() or "svg"
    if not dot_available():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["dot", f"-T{fmt}", "-o", str(path)], input=dot_text, text=True, capture_output=True, timeout=300,
    )
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["no message"])[0]
        raise OSError(f"dot -T{fmt} failed: {first}")
    return path
