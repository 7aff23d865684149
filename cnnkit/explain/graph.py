"""The define-by-run graph of one forward pass: ops, tensors, and the module each op ran in.

Every op a forward pass runs is recorded as the ``creator`` of its output tensor, and
the op holds its input tensors, so walking ``creator -> inputs -> creator ...`` back
from the output visits the whole computation. ``trace`` collects that walk into a
``Graph``; ``model_graph`` also runs the model with forward hooks (``nn.trace_layers``)
to name parameters and buffers and to tell which module each op ran in.

The layer level: ``layer_units`` groups a Graph's ops into one ``LayerUnit`` per *layer
call* (a call of a leaf module, or of a module that owns parameters directly:
``is_layer``) and one per op run outside any layer (ResNet's residual additions,
GoogLeNet's and DenseNet's concatenations), with edges that follow the data.
``forward_pass`` runs a model and keeps that level together with the tensors themselves
(a ``ForwardPass``), so every layer's output, and a later ``backward`` through the same
pass, are at hand.

Drawing is ``cnnkit.viz.dot``'s job (Graphviz DOT, op level and layer level) and
``cnnkit.viz.tensorboard``'s (a TensorBoard ``GraphDef``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import config
from ..backend import as_numpy
from ..function import op_name
from ..graph import input_values, op_order, post_order
from ..nn import LayerCall, Module, Parameter, trace_layers
from ..tensor import Tensor

__all__ = [
    "Graph", "OpNode", "TensorNode", "trace", "model_graph", "is_layer", "LayerUnit", "layer_units",
    "ForwardPass", "forward_pass", "INPUT",
]

INPUT = -1  # among a unit's ``inputs``: the model's input


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
    leaf_modules: dict[str, str] = field(default_factory=dict)  # layer module path -> class name (``is_layer``)
    identities: list[tuple[str, int, int]] = field(default_factory=list)  # (path, call, tensor id): ran no op
    values: dict[int, Tensor] = field(default_factory=dict, repr=False)    # tensor id -> Tensor (keep=True)
    functions: dict[int, object] = field(default_factory=dict, repr=False)  # op id -> Function (keep=True)

    def __len__(self) -> int:
        return len(self.ops)


_KEEP_VALUES = 16  # store values/grads of tensors with at most this many elements


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
    for fn in op_order(roots):
        if fn.inputs is None:
            raise ValueError(
                f"trace: the graph was freed by backward() at {type(fn).__name__}; "
                "trace before backward() or pass retain_graph=True"
            )
        in_ids = []
        # the values fn read: a tensor assigned in place later (x[mask] = v) stands for its new value
        for x, creator in zip(input_values(fn), fn.input_creators, strict=True):
            if creator is not None:
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


def is_layer(module: Module) -> bool:
    """A module whose calls are layers: a leaf, or a module that owns parameters directly.

    ``summary`` gives these a row each; ``layer_units`` a unit per call.
    """
    has_children = next(module.children(), None) is not None
    return not has_children or next(module.parameters(recurse=False), None) is not None


def _attributed_forward(model: Module, xt: Tensor):
    """Run ``model(xt)`` in eval mode, grad mode on, attributing each op to the innermost module.

    Forward hooks (``nn.trace_layers``) fire innermost first, and each claims the
    not-yet-claimed ops between its module's inputs and its output. A layer that returns
    its input (Dropout in eval mode, Identity) ran no op and claims nothing.

    Returns:
        (output, {id(op): (module path, call number)}, [(path, call, tensor) of the layer
        calls that returned their input]). Call numbers count every call of a module, as
        ``summary``'s rows do.
    """
    owner: dict[int, tuple[str, int]] = {}
    identities: list[tuple[str, int, Tensor]] = []

    def claim(call: LayerCall) -> None:
        output = call.output
        stop = {id(a) for a in call.inputs if isinstance(a, Tensor)}
        if isinstance(output, Tensor) and id(output) in stop:
            if is_layer(call.module):
                identities.append((call.path, call.number, output))
            return
        if not isinstance(output, Tensor) or output.creator is None:
            return

        def inner(fn):  # the ops between the module's inputs and its output
            if fn.inputs is None:
                return []
            return [c for t, c in zip(input_values(fn), fn.input_creators, strict=True)
                    if id(t) not in stop and c is not None]

        for fn in post_order([output.creator], inner):
            owner.setdefault(id(fn), (call.path, call.number))

    # The model's own ops: full backward hooks act only in backward, and the identity ops that
    # route a call's gradients to them (nn/backward_hooks.py) would show as ops of the graph.
    with config.skip_backward_hooks(), trace_layers(model, lambda path, m: True, on_call=claim, keep=False,
                                                    grad=True):
        out = model(xt)
    return out, owner, identities


def model_graph(
    model, input_shape: tuple[int, ...] = (), x: np.ndarray | None = None, *, keep: bool = False,
    input_requires_grad: bool = True,
) -> Graph:
    """Run ``model`` once (eval mode) and return its op graph with names and modules.

    Each op is attributed to the innermost module whose forward ran it; an op that no
    layer claims (a residual addition written in a block's ``forward``) belongs to the
    block. A layer that returns its input is listed in ``graph.identities``.

    Args:
        input_shape: (C, H, W) of one input; ignored when ``x`` is given.
        x: an input batch (N, C, H, W); zeros of ``input_shape`` by default.
        keep: also keep the tensors (``graph.values``) and the ops (``graph.functions``), so
            their data can be read and ``backward`` run through the same pass.
        input_requires_grad: record the graph from the input (default), so ops before the
            first layer with parameters (input normalization, a parameter-free first layer)
            are recorded too, and gradients with respect to the input can be taken.

    Raises:
        ShapeError: the model cannot take that input (its message names the layer).
        ValueError: the model does not return a Tensor.
    """
    if x is None:
        x = np.zeros((1,) + tuple(input_shape), np.float32)
    names: dict[int, str] = {id(p): n for n, p in model.named_parameters()}
    for n, b in model.named_buffers():
        names[id(b)] = n
        if isinstance(b, Tensor):
            names[id(b.data)] = n
    xt = Tensor(np.asarray(x, np.float32), requires_grad=input_requires_grad, name="input")
    names[id(xt)] = "input"
    out, owner, identities = _attributed_forward(model, xt)
    if not isinstance(out, Tensor):
        raise ValueError(f"model_graph expects the model to return a Tensor, got {type(out).__name__}")
    graph = trace(out, names=names, inputs=[xt], modules={k: (p or None, c) for k, (p, c) in owner.items()})
    if id(xt) not in graph.tensors:  # no op read the input directly (it is always the graph's input)
        graph.tensors[id(xt)] = TensorNode(id(xt), "input", tuple(xt.shape), "input")
    graph.inputs = [id(xt)]
    graph.leaf_modules = {n: type(m).__name__ for n, m in model.named_modules() if n and is_layer(m)}
    graph.identities = [(p, c, id(t)) for p, c, t in identities]
    if keep:
        graph.values = {id(xt): xt, id(out): out}
        for fn in op_order([out.creator]):
            graph.functions[id(fn)] = fn
            for t in input_values(fn) if fn.inputs is not None else ():
                graph.values[id(t)] = t
            y = fn.output_ref() if fn.output_ref is not None else None
            if y is not None:
                graph.values[id(y)] = y
        for _, _, t in identities:
            graph.values[id(t)] = t
    return graph


# --------------------------------------------------------------------------- the layer level
@dataclass
class LayerUnit:
    """One node of the layer-level graph: a layer call, or an op run outside any layer.

    Attributes:
        index: position in execution order.
        name: the module path, with " (call k)" for a repeated call, or "<owner>: <Op>" for
            an op outside any layer ("layer1.0: Add").
        kind: "layer" (a layer call that ran ops), "identity" (a layer call that ran no op
            and returned its input) or "op" (an op outside any layer).
        type: the module's class name, or the op's label ("Add", "Concat", "ReLU").
        path: the module path; for an "op" unit, the module whose forward ran it ("" = the model).
        call: which call of the module (1 for the first).
        inputs: indices of the units it reads (``INPUT`` for the model's input).
        op_ids, input_ids, output_id: its ops and the tensors it reads and makes, by id in the Graph.
        module, functions, input_tensors, output: the objects themselves, filled in by
            ``forward_pass`` (None and empty for a unit of a Graph alone).
    """

    index: int
    name: str
    kind: str
    type: str
    path: str
    call: int
    inputs: list[int] = field(default_factory=list)
    op_ids: list[int] = field(default_factory=list)
    input_ids: list[int] = field(default_factory=list)
    output_id: int = 0
    module: Module | None = field(default=None, repr=False)
    functions: list = field(default_factory=list, repr=False)
    input_tensors: list[Tensor] = field(default_factory=list, repr=False)
    output: Tensor | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """The output's shape without the batch axis (``forward_pass`` units)."""
        return tuple(self.output.shape[1:]) if self.output is not None else ()


def layer_units(graph: Graph, *, identities: bool = True) -> list[LayerUnit]:
    """Group the ops of ``graph`` into layer calls and ops outside layers, in execution order.

    Args:
        identities: include layer calls that ran no op (each placed right after the unit
            that made its input, and made the producer of that tensor for later readers).
    """
    units: list[LayerUnit] = []
    by_call: dict[tuple[str, int], LayerUnit] = {}
    producer: dict[int, int] = {i: INPUT for i in graph.inputs}
    waiting: dict[int, list[tuple[str, int]]] = {}
    if identities:
        for path, call, tid in graph.identities:
            waiting.setdefault(tid, []).append((path, call))

    def new(**kw) -> LayerUnit:
        unit = LayerUnit(index=len(units), **kw)
        units.append(unit)
        return unit

    def flush(tid: int) -> None:
        for path, call in waiting.pop(tid, []):
            unit = new(name=path + (f" (call {call})" if call > 1 else ""), kind="identity",
                       type=graph.leaf_modules.get(path, "?"), path=path, call=call, output_id=tid)
            unit.inputs, unit.input_ids = [producer[tid]], [tid]
            producer[tid] = unit.index

    for tid in graph.inputs:
        flush(tid)
    for op in graph.ops:
        path = op.module or ""
        if path in graph.leaf_modules:
            unit = by_call.get((path, op.call))
            if unit is None:
                unit = new(name=path + (f" (call {op.call})" if op.call > 1 else ""), kind="layer",
                           type=graph.leaf_modules[path], path=path, call=op.call)
                by_call[(path, op.call)] = unit
        else:
            unit = new(name=f"{path}: {op.label}" if path else op.label, kind="op", type=op.label,
                       path=path, call=op.call)
        for tid in op.inputs:
            src = producer.get(tid)
            if src is not None and src != unit.index and tid not in unit.input_ids:
                unit.inputs.append(src)
                unit.input_ids.append(tid)
        unit.op_ids.append(op.id)
        unit.output_id = op.output
        producer[op.output] = unit.index
        flush(op.output)
    return units


@dataclass
class ForwardPass:
    """One forward pass kept whole: its layer units (with their tensors) in execution order."""

    units: list[LayerUnit]
    input: Tensor
    output: Tensor
    graph: Graph = field(repr=False)

    def consumers(self, index: int) -> list[int]:
        """Indices of the units that read unit ``index``'s output (``INPUT``: the input's readers)."""
        return [u.index for u in self.units if index in u.inputs]


def forward_pass(model: Module, x: np.ndarray, *, input_requires_grad: bool = True) -> ForwardPass:
    """Run ``model`` on ``x`` (eval mode, grad mode on) and keep every layer unit with its tensors.

    The graph stays alive, so ``pass_.output.backward(seed, retain_graph=True)`` gives the
    gradient of any output with respect to the input and (after ``retain_grad()``) to
    every unit's output, without a second forward pass.

    Args:
        x: one batch (N, C, H, W) or (N, D); converted to float32.
        input_requires_grad: record the graph from the input (so backward reaches it even
            when the parameters are frozen).

    Raises:
        ShapeError: the model rejects the input (the message names the layer).
        ValueError: the model does not return a Tensor.
    """
    graph = model_graph(model, x=x, keep=True, input_requires_grad=input_requires_grad)
    modules = dict(model.named_modules())
    units = layer_units(graph)
    for u in units:
        u.module = modules.get(u.path) if u.kind != "op" else None
        if isinstance(getattr(u.module, "op_type", None), str):
            u.type = u.module.op_type  # a generic node names its operator (an imported ONNX node: "Add", "Concat")
        u.functions = [graph.functions[i] for i in u.op_ids]
        u.input_tensors = [graph.values[i] for i in u.input_ids]
        u.output = graph.values[u.output_id]
    return ForwardPass(units, graph.values[graph.inputs[0]], graph.values[graph.outputs[0]], graph)
