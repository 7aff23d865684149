"""Run a model once and see what its layers do: the one forward-hook tracer.

Looking inside a network means running it once with a forward hook on some of its
layers, in eval mode, and then putting everything back: ``summary`` (a row per layer
call), pruning (which layers write and read which channels), the fully convolutional
converter (the chain of layers), ``capture`` (feature maps), the op graph (which layer
ran each op), TensorBoard's pictures and ``NaNGuard`` (the first layer whose output is
not finite) all do it through ``trace_layers``:

    with trace_layers(model, lambda path, m: isinstance(m, nn.Conv2d)) as trace:
        logits = model(x)
    for call in trace.calls:                   # in execution order
        print(call.path, call.number, call.output.shape)

``eval_mode`` is the part without hooks: run in eval mode, then give every module back
the mode it had (a model may mix modes, such as frozen BatchNorm layers in a training
model, so each module's flag is restored, not the model's alone).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .. import config
from ..errors import LayerNotFoundError
from .module import Module

__all__ = ["LayerCall", "LayerTrace", "trace_layers", "eval_mode"]


@dataclass
class LayerCall:
    """One call of one traced layer.

    Attributes:
        path: the layer's dotted path in the model ("" for the model itself).
        module: the layer.
        inputs: the positional arguments of the call (usually one Tensor).
        output: what the layer returned.
        number: 1 for the layer's first call in the pass, 2 for the second, ...
    """

    path: str
    module: Module
    inputs: tuple
    output: Any
    number: int = 1


@dataclass
class LayerTrace:
    """The calls recorded by ``trace_layers``, in execution order (empty with ``keep=False``)."""

    calls: list[LayerCall] = field(default_factory=list)


@contextmanager
def eval_mode(model: Module) -> Iterator[Module]:
    """Put ``model`` in eval mode for the block; on exit give every module its own mode back."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


def _select(model: Module, layers) -> dict[int, tuple[str, Module]]:
    """id(module) -> (path, module) of the layers to trace (see ``trace_layers``)."""
    named = list(model.named_modules())
    if layers is None:
        return {id(m): (p, m) for p, m in named if p and next(m.children(), None) is None}
    if callable(layers):
        return {id(m): (p, m) for p, m in named if layers(p, m)}
    by_path = dict(named)
    paths = {id(m): p for p, m in named}
    chosen: dict[int, tuple[str, Module]] = {}
    for item in layers:
        if isinstance(item, str):
            if not item or item not in by_path:  # "" would be the model itself: pass the model
                valid = ", ".join(p for p, _ in named if p)
                raise LayerNotFoundError(f"no layer named {item!r}; valid layers: {valid}")
            chosen.setdefault(id(by_path[item]), (item, by_path[item]))
        else:
            chosen.setdefault(id(item), (paths.get(id(item), type(item).__name__), item))
    return chosen


@contextmanager
def trace_layers(
    model: Module,
    layers: Iterable[str | Module] | Callable[[str, Module], bool] | None = None,
    *,
    on_call: Callable[[LayerCall], Any] | None = None,
    rewrite: Callable[[LayerCall], Any] | None = None,
    keep: bool = True,
    grad: bool = False,
    mode: str | None = "eval",
) -> Iterator[LayerTrace]:
    """Hook ``layers`` of ``model`` for the ``with`` block; the block runs the model.

    Args:
        model: the model to look inside.
        layers: which modules to hook: None for every leaf module (a module without
            sub-modules), a predicate ``(path, module) -> bool`` over
            ``model.named_modules()`` (the model itself has path ""), or an iterable of
            dotted paths and/or modules.
        on_call: called with each ``LayerCall`` as it happens (inside the forward pass).
        rewrite: called first with each ``LayerCall``; a non-None result replaces the
            layer's output (as a forward hook's would) for the rest of the pass, and is the
            ``output`` that ``on_call`` and the trace see (ONNX export puts a marker op after
            each Dropout this way).
        keep: record the calls in the yielded ``LayerTrace`` (False keeps nothing alive).
        grad: run with grad mode on (to walk the graph afterwards) or off (the default).
        mode: "eval" (the default) or "train" for the block, or None to leave the modes;
            every module's mode is restored on exit.

    Yields:
        A ``LayerTrace`` whose ``calls`` fill in as the model runs.

    Raises:
        LayerNotFoundError: a path that is not a module of the model (the message lists
            the valid paths).
    """
    if mode not in ("eval", "train", None):
        raise ValueError(f"trace_layers expects mode 'eval', 'train' or None, got {mode!r}")
    selected = _select(model, layers)
    trace = LayerTrace()
    counts: dict[int, int] = {}

    def hook(module, inputs, output):
        counts[id(module)] = counts.get(id(module), 0) + 1
        call = LayerCall(selected[id(module)][0], module, inputs, output, counts[id(module)])
        replaced = rewrite(call) if rewrite is not None else None
        if replaced is not None:
            call.output = replaced
        if keep:
            trace.calls.append(call)
        if on_call is not None:
            on_call(call)
        return replaced

    modes = [(m, m.training) for m in model.modules()]
    handles = [m.register_forward_hook(hook) for _, m in selected.values()]
    try:
        if mode is not None:
            model.train(mode == "train")
        with config.enable_grad() if grad else config.no_grad():
            yield trace
    finally:
        for handle in handles:
            handle.remove()
        for m, was in modes:
            m.training = was
