"""Graphs as Graphviz DOT text, and rendering with Graphviz's ``dot``.

``graph_to_dot`` writes the op graph of ``cnnkit.explain.graph`` (op nodes with output
shapes, parameters as inputs); ``layer_graph_to_dot`` a compact view with one node per
layer call (and per op run outside any layer, such as ResNet's residual additions);
``toy_graph_to_dot`` the articles' toy graph with values and gradients. ``render_dot``
calls the ``dot`` program when it is installed (Graphviz is optional).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..explain.graph import Graph, TensorNode
from ..explain.toy_graph import ToyGraph

__all__ = ["graph_to_dot", "layer_graph_to_dot", "toy_graph_to_dot", "render_dot", "dot_available"]


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


def toy_graph_to_dot(toy: ToyGraph) -> str:
    """The toy graph as Graphviz DOT: values and gradients on every tensor node."""
    return graph_to_dot(
        toy.graph(), show_tensors=True, show_values=True,
        title="z = cos(x) * sin(x) + x / y: values (forward) and dz/d(node) (backward)",
    )
