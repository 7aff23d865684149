"""Tracing for export: one eval-mode forward pass recorded as cnnkit's op graph.

The pass runs through ``explain.graph.model_graph``, which attributes each op to the module
that ran it, inside ``nn.trace_layers`` (the one forward-hook tracer) with two output
rewrites of the exporter's own: a Dropout layer's output is replaced by a
``DropoutMarkerOp`` (eval-mode dropout is the identity and records no op, yet the file
should hold a Dropout node in its place), and a model that returns its input gets a clone
of it (an op of its own, so the graph has an output to follow). Comparisons and logical ops
are recorded too (``config.record_logic``), so a mask is written as the nodes computing it.
"""

from __future__ import annotations

import numpy as np

from .. import config, nn
from ..errors import OnnxExportError
from ..explain.graph import Graph, model_graph
from ..function import Function
from ..functional.shape import clone
from ..graph import op_order
from ..nn.tracer import LayerCall, trace_layers
from ..tensor import Tensor

__all__ = ["TRACE_BATCH", "DropoutMarkerOp", "trace", "sample", "other_size", "size_symbols"]

TRACE_BATCH = 2  # with a dynamic batch the trace runs at 2, so batch-keeping reshapes show


class DropoutMarkerOp(Function):
    """The identity, standing in an eval-mode trace for a Dropout layer (written as Dropout).

    forward: y = x;  backward: gx = gy.  Shapes: y, gy, gx have x.shape.
    """

    def __init__(self, p: float):
        self.p = p

    def forward(self, x):
        return x.view()

    def backward(self, gy):
        return gy



def trace(model, shape: tuple[int, ...], batch: int) -> tuple[Graph, dict[int, Function], Tensor]:
    """Run the model once in eval mode; return its op graph, the ops by id and the output."""
    x = sample(batch, shape, 0)
    captured: list = []

    def substitute(call: LayerCall):
        out = call.output
        if not isinstance(out, Tensor):
            return None
        if isinstance(call.module, nn.Dropout):
            return DropoutMarkerOp(call.module.p)(out)
        # A model that returns its input (nn.Identity, an empty Sequential) records no op: its
        # graph is one Identity node (an op of its own, so the trace has an output to follow).
        if call.module is model and out.creator is None:
            return clone(out)
        return None

    def capture(call: LayerCall) -> None:
        if call.module is model:
            captured.append(call.output)

    hooked = trace_layers(model, lambda path, m: m is model or isinstance(m, nn.Dropout), rewrite=substitute,
                          on_call=capture, keep=False, grad=True)
    try:
        # comparisons too (config.record_logic), so masks (F.where, masked_fill) are followed
        with hooked, config.record_logic():
            graph = model_graph(model, shape, x)
    except ValueError:
        if captured and not isinstance(captured[-1], Tensor):
            raise OnnxExportError(f"cannot export {type(model).__name__}: its forward returns a "
                                  f"{type(captured[-1]).__name__}, not one Tensor") from None
        raise  # the model's own error (a ShapeError names the layer)
    out = captured[-1]
    return graph, {id(fn): fn for fn in op_order([out.creator])}, out


def other_size(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The sample shape the self-check of a dynamic-size export runs at: larger H and W."""
    C, H, W = shape
    return (C, H + H // 2 + 3, W + W // 2 + 5)  # far enough that a feature map grows too


def size_symbols(model, shape, out: Tensor) -> list:
    """Per output dimension: "OH"/"OW"-style symbols where it follows the input's size."""
    other = other_size(shape)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with config.no_grad():
            moved = model(Tensor(np.zeros((1,) + other, np.float32))).shape
    except Exception as error:  # the model's own refusal of another size
        raise OnnxExportError(
            f"cannot export {type(model).__name__} with a dynamic size: it does not run on a "
            f"{'x'.join(map(str, other))} input ({type(error).__name__}: {error}); export with "
            "dynamic_size=False"
        ) from None
    finally:
        for m, mode in modes:
            m.training = mode
    names = {out.ndim - 2: "OH", out.ndim - 1: "OW"}
    return [names.get(i, f"out{i}") if a != b and i > 0 else a
            for i, (a, b) in enumerate(zip(out.shape, moved, strict=True))]



def sample(batch: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A standard normal float32 input: the trace's (seed 0) or a self-check's (other seeds)."""
    return np.random.default_rng(seed).standard_normal((batch,) + shape).astype(np.float32)
