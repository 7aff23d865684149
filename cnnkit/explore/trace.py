"""One forward pass, kept: every layer call and every op run outside a layer, with its tensors.

``trace_layers`` runs a model on one input with grad mode on and keeps the output of
every *layer call* (a call of a leaf module, such as ``layer1.0.conv1``, or of a module
that owns parameters directly) and of every op that ran outside any layer (ResNet's
residual additions, GoogLeNet's and DenseNet's concatenations, a functional ReLU), with
edges that follow the data. Because the graph is kept, ``backward`` can run on it later
(saliency, Grad-CAM, gradient statistics) without a second forward pass.

Each op is attributed to the innermost module whose forward ran it, the rule of
``viz.graph.model_graph``: forward hooks fire innermost first, and each claims the
not-yet-claimed ops between its module's inputs and its output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import nn
from ..config import enable_grad
from ..tensor import Tensor

__all__ = ["LayerCall", "LayerTrace", "trace_layers", "INPUT"]

INPUT = -1  # the index that stands for the model's input among a unit's ``inputs``


@dataclass
class LayerCall:
    """One node of the layer-level graph.

    Attributes:
        index: position in execution order.
        name: display name: the module path, "(call 2)" for a repeated call, or
            "<owner>: <Op>" for an op outside any layer ("layer1.0: Add").
        kind: "layer" (a leaf module that ran ops), "identity" (a layer that ran no op
            and returned its input, e.g. Dropout in eval mode) or "op" (an op outside any layer).
        type: the module's class name, or the op's name without the "Op" suffix.
        path: the module's dotted path; for an "op" unit, the module whose forward ran it
            ("" for the model's own forward).
        call: 1 for the first call of this module, 2 for the second, ...
        module: the module (None for "op" units).
        ops: the Function objects it ran, in execution order.
        inputs: indices of the units whose outputs it reads (``INPUT`` for the model input).
        input_tensors: the tensors it read, one per entry of ``inputs``.
        output: its output tensor (kept alive with its graph).
    """

    index: int
    name: str
    kind: str
    type: str
    path: str | None
    call: int
    module: nn.Module | None
    ops: list[Any] = field(default_factory=list, repr=False)
    inputs: list[int] = field(default_factory=list)
    input_tensors: list[Tensor] = field(default_factory=list, repr=False)
    output: Tensor | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """The output's shape without the batch axis."""
        return tuple(self.output.shape[1:]) if self.output is not None else ()


@dataclass
class LayerTrace:
    """The units of one forward pass in execution order, the input and the model output."""

    units: list[LayerCall]
    input: Tensor
    output: Tensor

    def consumers(self, index: int) -> list[int]:
        """Indices of the units that read unit ``index``'s output (``INPUT`` for the input)."""
        return [u.index for u in self.units if index in u.inputs]


def _op_label(fn) -> str:
    name = type(fn).__name__
    if name == "ConcatOp":
        return "Concat"
    return name[:-2] if name.endswith("Op") and len(name) > 2 else name


def _ordered_ops(root) -> list:
    """Ops reachable from ``root`` in execution order: iterative post-order over inputs in order.

    For the forward code of the zoo (branches evaluated in the order their results are
    combined) this is the order in which the ops ran.
    """
    order, visited = [], set()
    stack = [(root, False)]
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


def _gets_unit(module: nn.Module) -> bool:
    """Leaf modules, and modules that own parameters directly (as ``summary``'s rows)."""
    has_children = next(module.children(), None) is not None
    return not has_children or next(module.parameters(recurse=False), None) is not None


def trace_layers(model: nn.Module, x: np.ndarray, *, input_requires_grad: bool = True) -> LayerTrace:
    """Run ``model`` on ``x`` in eval mode with grad mode on and keep every layer call's output.

    Args:
        model: any Module returning one Tensor.
        x: one batch (N, C, H, W) (or (N, D)); float32 is used.
        input_requires_grad: record the graph from the input, so ``backward`` reaches it.

    Returns:
        A LayerTrace. The model's training flags are restored; its parameters are not
        changed (their ``requires_grad`` decides whether a later backward fills ``.grad``).

    Raises:
        ShapeError: the model rejects the input (the message names the layer).
        ValueError: the model does not return a Tensor.
    """
    owner: dict[int, tuple[str, int]] = {}       # id(op) -> (module path, call number)
    calls: dict[str, int] = {}
    leaf_calls: list[tuple[str, int, nn.Module, tuple, Any]] = []
    keep: list[Any] = []                          # ops claimed, kept alive so ids stay unique
    units_of = {id(m): p for p, m in model.named_modules() if _gets_unit(m)}

    def claim(path: str):
        def hook(module, args, output):
            calls[path] = calls.get(path, 0) + 1
            call = calls[path]
            if id(module) in units_of:
                leaf_calls.append((path, call, module, args, output))
            stop = {id(a) for a in args if isinstance(a, Tensor)}
            if not isinstance(output, Tensor) or output.creator is None or id(output) in stop:
                return  # no op ran here (Dropout in eval returns its input): claim nothing
            stack, seen = [output.creator], set()
            while stack:
                fn = stack.pop()
                if id(fn) in seen:
                    continue
                seen.add(id(fn))
                if id(fn) not in owner:
                    owner[id(fn)] = (path, call)
                    keep.append(fn)
                for t in fn.inputs or ():
                    if id(t) not in stop and t.creator is not None:
                        stack.append(t.creator)
        return hook

    handles = [m.register_forward_hook(claim(p)) for p, m in model.named_modules()]
    xt = Tensor(np.asarray(x, np.float32), requires_grad=input_requires_grad)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with enable_grad():
            out = model(xt)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode
    if not isinstance(out, Tensor):
        raise ValueError(f"trace_layers expects the model to return a Tensor, got {type(out).__name__}")
    return _group(model, xt, out, owner, leaf_calls, set(units_of.values()))


def _group(model, xt: Tensor, out: Tensor, owner, leaf_calls, unit_paths: set[str]) -> LayerTrace:
    """Group the ops into units and connect them through the tensors they pass."""
    modules = dict(model.named_modules())
    units: list[LayerCall] = []
    unit_of_call: dict[tuple[str, int], LayerCall] = {}
    producer: dict[int, int] = {id(xt): INPUT}    # id(tensor) -> unit index
    tensors: dict[int, Tensor] = {id(xt): xt}      # keep what ``producer`` refers to

    def new_unit(**kw) -> LayerCall:
        unit = LayerCall(index=len(units), **kw)
        units.append(unit)
        return unit

    def add_inputs(unit: LayerCall, fn) -> None:
        for t in fn.inputs or ():
            src = producer.get(id(t))
            if src is None or src == unit.index:
                continue
            if not any(t is known for known in unit.input_tensors):
                unit.inputs.append(src)
                unit.input_tensors.append(t)

    # Identity-like layer calls (no op ran): each is placed after the unit that made its input.
    identities: dict[int, list[tuple[str, int, nn.Module]]] = {}
    for path, call, module, args, output in leaf_calls:
        if isinstance(output, Tensor) and args and isinstance(args[0], Tensor) and output is args[0]:
            identities.setdefault(id(output), []).append((path, call, module))

    def flush_identities(t: Tensor) -> None:
        for path, call, module in identities.pop(id(t), []):
            name = path + (f" (call {call})" if call > 1 else "")
            unit = new_unit(name=name, kind="identity", type=type(module).__name__, path=path, call=call,
                            module=module)
            unit.inputs, unit.input_tensors, unit.output = [producer[id(t)]], [t], t
            producer[id(t)] = unit.index

    flush_identities(xt)
    root = out.creator
    for fn in _ordered_ops(root) if root is not None else []:
        path, call = owner.get(id(fn), ("", 1))
        output = fn.output_ref() if fn.output_ref is not None else None
        if output is None:
            continue
        if path in unit_paths:
            unit = unit_of_call.get((path, call))
            if unit is None:
                name = path + (f" (call {call})" if call > 1 else "")
                unit = new_unit(name=name, kind="layer", type=type(modules[path]).__name__, path=path,
                                call=call, module=modules[path])
                unit_of_call[(path, call)] = unit
        else:
            label = _op_label(fn)
            unit = new_unit(name=f"{path}: {label}" if path else label, kind="op", type=label, path=path,
                            call=call, module=None)
        add_inputs(unit, fn)
        unit.ops.append(fn)
        unit.output = output
        producer[id(output)] = unit.index
        tensors[id(output)] = output
        flush_identities(output)
    # A layer whose last op is not its output's creator cannot happen (the output is the
    # last op's result); an identity at the model's output was flushed above.
    return LayerTrace(units, xt, out)
