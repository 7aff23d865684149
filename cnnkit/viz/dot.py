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
from pathlib import Path

import numpy as np

from ..explain.graph import INPUT, Graph, TensorNode, layer_units
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


def layer_graph_to_dot(graph: Graph, model=None, *, title: str | None = None, rankdir: str = "TB") -> str:
    """Write the layer-level view: one node per layer call, one per op outside any layer.

    The units are ``cnnkit.explain.graph.layer_units``: a layer (a leaf module) that runs
    several ops (a padded conv) is one node; modules that run no op in eval mode (Dropout,
    Identity) do not appear. Edges follow the data, so skip connections and branch merges show.

    Args:
        model: the traced model, to print each layer's parameter count (optional).
    """
    params = {}
    if model is not None:
        for path, m in model.named_modules():
            params[path] = sum(int(p.size) for p in m.parameters(recurse=False))
    units = layer_units(graph, identities=False)
    lines = _header(title, rankdir)
    t_, _ = _numbering(graph)
    for inp in graph.inputs:
        t = graph.tensors[inp]
        lines.append(f"  {t_[inp]} [label={_quote('input ' + _shape(t.shape))}, {_STYLE['input']}];")
    ids = {u.index: f"u{u.index}" for u in units}
    for u in units:
        shape = _shape(graph.tensors[u.output_id].shape)
        if u.kind == "layer":
            count = params.get(u.path, 0) if u.call == 1 else 0
            extra = f"\n{count:,} params" if count else ""
            label, style = f"{u.name}\n{u.type}  {shape}{extra}", _STYLE["layer"]
        else:
            label, style = f"{u.name}  {shape}", _STYLE["loose"]
        lines.append(f"  {ids[u.index]} [label={_quote(label)}, {style}];")
    edges = [(t_[tid] if src == INPUT else ids[src], ids[u.index])
             for u in units for src, tid in zip(u.inputs, u.input_ids, strict=True)]
    for src, dst in dict.fromkeys(edges):  # unique, in order
        lines.append(f"  {src} -> {dst};")
    producer = {u.output_id: u.index for u in units}
    for out in graph.outputs:
        if out in producer:
            t = graph.tensors[out]
            lines.append(f"  {t_[out]} [label={_quote('output ' + _shape(t.shape))}, {_STYLE['output']}];")
            lines.append(f"  {ids[producer[out]]} -> {t_[out]};")
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
