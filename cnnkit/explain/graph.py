"""The define-by-run graph of one forward pass: ops, tensors, and the module each op ran in.

Every op a forward pass runs is recorded as the ``creator`` of its output tensor, and
the op holds its input tensors, so walking ``creator -> inputs -> creator ...`` back
from the output visits the whole computation. ``trace`` collects that walk into a
``Graph``; ``model_graph`` also runs the model with forward hooks to name parameters
and buffers and to tell which module each op ran in. Drawing it is ``cnnkit.viz.dot``'s
job (Graphviz DOT, op level and layer level) and ``cnnkit.viz.tensorboard``'s (a
TensorBoard ``GraphDef``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..backend import as_numpy
from ..function import op_name
from ..graph import op_order, post_order
from ..nn import LayerCall, Parameter, trace_layers
from ..tensor import Tensor

__all__ = ["Graph", "OpNode", "TensorNode", "trace", "model_graph"]


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

    def claim(call: LayerCall) -> None:
        output = call.output
        if not isinstance(output, Tensor) or output.creator is None:
            return
        calls[call.path] = calls.get(call.path, 0) + 1
        stop = {id(a) for a in call.inputs if isinstance(a, Tensor)}

        def inner(fn):  # the ops between the module's inputs and its output
            return [t.creator for t in fn.inputs or () if id(t) not in stop and t.creator is not None]

        for fn in post_order([output.creator], inner):
            owner.setdefault(id(fn), (call.path, calls[call.path]))

    # The input requires grad so that ops before the first layer with parameters (input
    # normalization, a parameter-free first layer) are recorded too.
    xt = Tensor(np.asarray(x, np.float32), requires_grad=True, name="input")
    names[id(xt)] = "input"
    with trace_layers(model, lambda path, m: True, on_call=claim, keep=False, grad=True):
        out = model(xt)
    if not isinstance(out, Tensor):
        raise ValueError(f"model_graph expects the model to return a Tensor, got {type(out).__name__}")
    graph = trace(out, names=names, inputs=[xt], modules={k: (p or None, c) for k, (p, c) in owner.items()})
    graph.leaf_modules = leaves
    return graph
