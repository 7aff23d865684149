"""Channel pruning: remove whole filters, and every weight that reads them, for a smaller dense model.

Removing output channel f of a convolution removes row f of its weight (F, C, KH, KW)
and its bias, entry f of the BatchNorm after it (weight, bias, running mean and
variance), and input channel f of every layer that reads the channel: column f of the
next convolution's weight, or, after a Flatten of a (C, H, W) map, the H*W columns
f*H*W ... (f+1)*H*W - 1 of the first Linear layer. Hidden Linear layers lose neurons the
same way (row f, and column f of the next Linear). The result is an ordinary model with
fewer channels, not a mask: fewer parameters, fewer MACs, a smaller file.

Which layers are tied together comes from a trace: one forward pass on a zero input,
recording the define-by-run graph, groups the tensors whose channels are the same
channels. A group is pruned as one: the same channel indices leave every layer that
writes it and every layer that reads it.

- BatchNorm (1d and 2d), activations, Dropout, pooling, spatial slicing and spatial
  padding keep channels: they are pruned along with the group.
- Depthwise convolutions (groups == in_channels == out_channels) keep channels too:
  channel f of the output is made from channel f of the input, so a depthwise
  convolution loses the same channels as its input (and its groups shrink).
- Other grouped convolutions (1 < groups < in_channels) are left alone: their input
  and output channels are not pruned (removing channels unevenly would break the
  groups).
- Residual connections: the channels of the tensors added together (ResNet's block
  output and its shortcut) are one group, pruned together, the same indices from every
  convolution and BatchNorm that writes into the sum, ranked by the sum of their filters'
  norms (``residual="together"``, the default); ``residual="keep"`` leaves them alone.
  Channels that meet a channel padding or a concatenation (CIFAR ResNet's parameter-free
  shortcut, DenseNet, GoogLeNet) or any operation the tracer does not know are left alone.
- The model's input channels and its outputs (the class scores) are never pruned.

Criteria (Li et al., 2017, "Pruning filters for efficient ConvNets"): a channel's
importance is the L1 norm (``"l1"``) or L2 norm (``"l2"``) of the filter that makes it,
summed over the layers that write the group; ``"random"`` draws the channels to remove.
Each prunable group loses round(amount * channels) of its channels, at least one kept.

    small = prune_channels(model, 0.5, input_shape=(1, 28, 28))     # then fine-tune
    thin = uniform_width(model, 0.5, input_shape=(1, 28, 28))       # same shapes, new weights
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import config, nn
from ..config import accepts_rng
from ..errors import LayerNotFoundError, ShapeError
from ..function import Function, op_name
from ..graph import input_values, post_order, value_at
from ..nn.resize import set_array, sync_sizes
from ..tensor import Tensor

__all__ = ["ChannelGroup", "channel_groups", "prune_channels", "uniform_width", "conv_parameters",
           "trace_input_shape"]

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_TRACED = _CONVS + _NORMS + (nn.Linear,)

# Ops that act on each channel separately (elementwise, pooling over H and W).
_PER_CHANNEL_OPS = {
    "ReLUOp", "LeakyReLUOp", "ELUOp", "SigmoidOp", "TanhOp", "DropoutOp", "NegOp", "ExpOp",
    "LogOp", "SqrtOp", "AbsOp", "CastOp", "MaxPool2dOp", "AvgPool2dOp", "AdaptiveAvgPool2dOp",
    "AdaptiveMaxPool2dOp",
}
_BINARY_OPS = {"AddOp", "SubOp", "MulOp", "DivOp", "PowOp"}
_REDUCE_OPS = {"SumOp", "MeanOp", "MaxOp"}
_REASONS = {
    "PadOp": "a channel padding (such as the parameter-free shortcut of a CIFAR ResNet)",
    "ConcatOp": "a concatenation (DenseNet, GoogLeNet)",
    "Conv2dOp": "a convolution outside a Conv2d layer",
    "LinearOp": "a fully connected op outside a Linear layer",
}


@dataclass
class ChannelGroup:
    """Channels that are pruned together, and the layers that write, carry and read them.

    Attributes:
        size: the number of channels.
        sources: paths of the layers whose outputs these channels are (conv, Linear).
        members: paths of the layers that carry them (BatchNorm, depthwise conv).
        consumers: paths of the layers that read them (the next conv, the first Linear).
        tied: True when a residual add (or another elementwise op of two branches) ties
            the outputs of several layers.
        frozen: why the group cannot be pruned, or None when it can.
    """

    size: int
    sources: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    tied: bool = False
    frozen: str | None = None


# ----------------------------------------------------------------------- the graph
class _Space:
    """A union-find node: one set of channels that must be pruned together."""

    def __init__(self, size: int, frozen: str | None = None):
        self.parent: _Space | None = None
        self.size = size
        self.sources: list[nn.Module] = []
        self.members: list[tuple[nn.Module, int]] = []      # (module, features per channel)
        self.consumers: list[tuple[nn.Module, int]] = []    # (module, features per channel)
        self.tied = False
        self.frozen = frozen

    def root(self) -> _Space:
        node = self
        while node.parent is not None:
            node = node.parent
        return node


def _union(a: _Space, b: _Space, tied: bool = False) -> _Space:
    a, b = a.root(), b.root()
    if a is b:
        a.tied = a.tied or tied
        return a
    b.parent = a
    a.sources += b.sources
    a.members += b.members
    a.consumers += b.consumers
    a.tied = a.tied or b.tied or tied
    if a.size != b.size:
        a.frozen = a.frozen or f"channel counts {a.size} and {b.size} meet"
    a.frozen = a.frozen or b.frozen
    return a


def _freeze(space: _Space | None, reason: str) -> None:
    if space is not None:
        root = space.root()
        root.frozen = root.frozen or reason


class _Tracer:
    """Group the channels of one traced forward pass (see the module docstring)."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int]):
        self.model = model
        self.paths = {id(m): p for p, m in model.named_modules()}
        self.info: dict[int, tuple[_Space, int]] = {}     # id(tensor) -> (space, features per channel)
        self.module_out: dict[int, _Space] = {}            # id(module) -> its output space
        self.module_in: dict[int, _Space] = {}             # id(module) -> its input space
        self.spaces: list[_Space] = []
        self._run(tuple(int(s) for s in input_shape))

    def path(self, module: nn.Module) -> str:
        return self.paths.get(id(module), type(module).__name__) or type(module).__name__

    def new_space(self, size: int, frozen: str | None = None) -> _Space:
        space = _Space(size, frozen)
        self.spaces.append(space)
        return space

    # -- trace
    def _run(self, shape: tuple[int, ...]) -> None:
        first = next(self.model.parameters(), None)
        dtype = first.dtype if first is not None else config.get_default_dtype()
        x = Tensor(np.zeros((1,) + shape, dtype=dtype), requires_grad=True)
        seen: list[tuple[nn.Module, Tensor, Function | None, Tensor, Function | None]] = []

        def record(c: nn.LayerCall) -> None:  # with the creators then: x[mask] = v may change them later
            if c.inputs and isinstance(c.inputs[0], Tensor) and isinstance(c.output, Tensor):
                seen.append((c.module, c.inputs[0], c.inputs[0].creator, c.output, c.output.creator))

        # without the identity ops of full backward hooks: the layers' own data flow
        with config.skip_backward_hooks(), nn.trace_layers(
                self.model, lambda path, m: isinstance(m, _TRACED), on_call=record, keep=False, grad=True):
            y = self.model(x)
        calls: dict[int, tuple[nn.Module, Tensor, Tensor]] = {}
        for module, xin, xin_creator, out, out_creator in seen:
            out = value_at(out, out_creator)
            calls[id(out)] = (module, value_at(xin, xin_creator), out)
        if not isinstance(y, Tensor):
            raise TypeError(f"prune: expected the model to return a Tensor, got {type(y).__name__}")
        self.info[id(x)] = (self.new_space(shape[0], "the model's input channels"), 1)
        for node in _topological(y, x, calls):
            self._visit(node, calls)
        if id(y) in self.info:
            _freeze(self.info[id(y)][0], "the model's outputs")

    def _visit(self, t: Tensor, calls) -> None:
        if id(t) in calls:
            module, xin, _ = calls[id(t)]
            self._module(module, xin, t)
        else:
            self._op(t.creator, t)

    def _input(self, t: Tensor) -> tuple[_Space, int] | None:
        return self.info.get(id(t))

    # -- layers
    def _module(self, m: nn.Module, xin: Tensor, y: Tensor) -> None:
        got = self._input(xin)
        name = self.path(m)
        if got is None:   # the layer reads a constant: nothing upstream to prune
            got = (self.new_space(xin.shape[1] if xin.ndim > 1 else 1, f"{name} reads a constant"), 1)
        space, per = got
        if isinstance(m, _NORMS):
            self._register(self.module_in, m, space, members=(m, per))
            self.info[id(y)] = (space, per)
            return
        if isinstance(m, nn.Linear):
            if xin.ndim != 2:
                _freeze(space, f"{name} is applied to the last axis of a {xin.ndim}-d tensor")
                self._register(self.module_in, m, space)
            else:
                self._register(self.module_in, m, space, consumers=(m, per))
            self.info[id(y)] = (self._output_space(m, m.out_features), 1)
            return
        # Conv2d / ConvTranspose2d
        if per != 1 or xin.ndim != 4:
            _freeze(space, f"{name} reads channels that are not a (N, C, H, W) map")
        depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
        if depthwise and isinstance(m, nn.Conv2d):
            self._register(self.module_in, m, space, members=(m, 1))
            self.info[id(y)] = (space, 1)
            return
        out = self._output_space(m, m.out_channels)
        if m.groups != 1:
            reason = f"{name} is a grouped convolution (groups={m.groups})"
            _freeze(space, reason)
            _freeze(out, reason)
            self._register(self.module_in, m, space)
        else:
            self._register(self.module_in, m, space, consumers=(m, 1))
        self.info[id(y)] = (out, 1)

    def _register(self, table, m, space, members=None, consumers=None) -> None:
        """Record ``space`` as what ``m`` reads; a layer called twice ties its inputs."""
        if id(m) in table:
            _union(table[id(m)], space)
            return
        table[id(m)] = space
        if members is not None:
            space.root().members.append(members)
        if consumers is not None:
            space.root().consumers.append(consumers)

    def _output_space(self, m: nn.Module, size: int) -> _Space:
        if id(m) not in self.module_out:
            space = self.new_space(size)
            space.sources.append(m)
            self.module_out[id(m)] = space
        return self.module_out[id(m)]

    # -- functional ops between layers
    def _op(self, op, y: Tensor) -> None:
        name = op_name(op)  # the op, not its algorithm: Conv2dDirectOp is a Conv2dOp
        graph_inputs = [t for t in input_values(op) if id(t) in self.info]
        if name in _PER_CHANNEL_OPS and len(graph_inputs) == 1:
            xin = graph_inputs[0]
            if xin.ndim == y.ndim and xin.ndim >= 2 and xin.shape[1] == y.shape[1]:
                self.info[id(y)] = self.info[id(xin)]
                return
        elif name in _BINARY_OPS and graph_inputs and y.ndim >= 2:
            if self._binary(op, y, graph_inputs):
                return
        elif name == "ReshapeOp" and len(graph_inputs) == 1:
            xin = graph_inputs[0]
            space, per = self.info[id(xin)]
            if xin.ndim == 4 and y.ndim == 2 and y.shape[1] == xin.shape[1] * xin.shape[2] * xin.shape[3]:
                self.info[id(y)] = (space, per * xin.shape[2] * xin.shape[3])   # a flatten
                return
            if y.ndim >= 2 and xin.shape[:2] == y.shape[:2]:
                self.info[id(y)] = (space, per)
                return
        elif name == "GetItemOp" and len(graph_inputs) == 1:
            index = op.index if isinstance(op.index, tuple) else (op.index,)
            xin = graph_inputs[0]
            keeps = len(index) < 2 or (index[1] == slice(None) and index[0] == slice(None))
            if keeps and xin.ndim == y.ndim and xin.shape[:2] == y.shape[:2]:
                self.info[id(y)] = self.info[id(xin)]
                return
        elif name == "PadOp" and len(graph_inputs) == 1:
            xin = graph_inputs[0]
            if xin.ndim == y.ndim and xin.shape[:2] == y.shape[:2]:
                self.info[id(y)] = self.info[id(xin)]
                return
        elif name in _REDUCE_OPS and len(graph_inputs) == 1:
            xin = graph_inputs[0]
            axes = getattr(op, "axes", ())
            if y.ndim >= 2 and 0 not in axes and 1 not in axes and self.info[id(xin)][1] == 1:
                self.info[id(y)] = self.info[id(xin)]
                return
        # Anything else: the channels it reads and makes are left alone.
        reason = _REASONS.get(name, f"an operation the tracer does not prune through ({name.removesuffix('Op')})")
        for t in graph_inputs:
            _freeze(self.info[id(t)][0], reason)
        self.info[id(y)] = (self.new_space(y.shape[1] if y.ndim > 1 else 1, reason), 1)

    def _binary(self, op, y: Tensor, graph_inputs: list[Tensor]) -> bool:
        """Elementwise op of tensors: same-channel operands are one group (a residual add)."""
        C = y.shape[1]
        for t in input_values(op):
            if id(t) in self.info:
                continue
            aligned = (1,) * (y.ndim - t.ndim) + tuple(t.shape)
            if len(aligned) > 1 and aligned[1] != 1:
                return False   # a per-channel constant or parameter used outside a layer
        tied = [t for t in graph_inputs if t.ndim >= 2 and t.shape[1] == C and C > 1]
        if not tied:
            return False
        pers = {self.info[id(t)][1] for t in tied}
        if len(pers) != 1:
            return False
        space = self.info[id(tied[0])][0]
        for t in tied[1:]:
            space = _union(space, self.info[id(t)][0], tied=True)
        self.info[id(y)] = (space, pers.pop())
        return True

    # -- results
    def roots(self) -> list[_Space]:
        seen, out = set(), []
        for space in self.spaces:
            root = space.root()
            if id(root) not in seen:
                seen.add(id(root))
                out.append(root)
        return out


def _topological(y: Tensor, x: Tensor, calls) -> list[Tensor]:
    """Tensors between x and y in forward order; a layer's output stands for the whole layer."""

    def parents(t: Tensor) -> list[Tensor]:
        if id(t) in calls:
            return [calls[id(t)][1]]          # the layer's input: its inner ops are skipped
        if t is x or t.creator is None or t.creator.inputs is None:
            return []                         # the input, a parameter or a constant
        return input_values(t.creator)        # the values it read (x[mask] = v may have changed x since)

    return [t for t in post_order([y], parents) if t is not x and parents(t)]


# ---------------------------------------------------------------------- public API
# The square sizes tried, in this order, on a model that declares no input shape.
_GUESSED_SIZES = (28, 32, 224)


def trace_input_shape(model: nn.Module, input_shape: Sequence[int] | None = None,
                      caller: str = "prune_channels") -> tuple[int, ...]:
    """The shape of one input to trace ``model`` with: ``input_shape``, else the model's own, else a guess.

    The model's own shape is the ``input_shape`` attribute it declares: a zoo model's (the
    (C, H, W) it was designed for, with the channels it was built for; a checkpoint rebuilds
    its model with its ``in_channels``), an imported ONNX model's (when the file fixes it),
    or one set by hand. Only when it declares none is a size guessed: the first of 28x28,
    32x32 and 224x224 that runs, with the channels of the first convolution.

    Raises:
        ValueError: nothing declared and no guess runs; the message says what was tried.
    """
    if input_shape:
        return tuple(int(s) for s in input_shape)
    declared = getattr(model, "input_shape", None)
    if declared:
        return tuple(int(s) for s in declared)
    name = type(model).__name__
    nothing = f"{caller}: cannot tell the input shape of {name}: it declares none (no model.input_shape)"
    first = next(((p, m) for p, m in model.named_modules() if isinstance(m, _CONVS)), None)
    if first is None:
        raise ValueError(f"{nothing}, and it has no convolution to guess the channels from; pass input_shape")
    path, conv = first
    C = conv.in_channels
    for size in _GUESSED_SIZES:
        try:
            with config.no_grad(), nn.eval_mode(model):
                model(Tensor(np.zeros((1, C, size, size), conv.weight.dtype)))
            return (C, size, size)
        except ShapeError:
            continue
    tried = ", ".join(f"({C}, {s}, {s})" for s in _GUESSED_SIZES)
    raise ValueError(f"{nothing}, and it takes none of {tried} (C from its first convolution, "
                     f"{path or name}); pass input_shape=(C, H, W) or set model.input_shape")


def channel_groups(model: nn.Module, input_shape: Sequence[int] | None = None) -> list[ChannelGroup]:
    """Trace ``model`` and list its channel groups: what can be pruned, and what is left alone, why.

    Args:
        model: any Module.
        input_shape: (C, H, W) of one input; default: the model's own, else a guess (``trace_input_shape``).

    Returns:
        One ChannelGroup per set of channels written by at least one layer, in the order
        the layers run.
    """
    tracer = _Tracer(model, trace_input_shape(model, input_shape, "channel_groups"))
    return [_describe(tracer, s) for s in tracer.roots() if s.sources]


def _describe(tracer: _Tracer, space: _Space) -> ChannelGroup:
    order = {p: i for i, p in enumerate(tracer.paths.values())}

    def paths(modules) -> list[str]:
        return sorted({tracer.path(m) for m in modules}, key=lambda p: order.get(p, -1))

    return ChannelGroup(
        size=space.size,
        sources=paths(space.sources),
        members=paths(m for m, _ in space.members),
        consumers=paths(m for m, _ in space.consumers),
        tied=space.tied,
        frozen=space.frozen,
    )


def _selected(layers, model: nn.Module) -> Any:
    """A predicate on (module, path) from the ``layers`` argument."""
    if layers is None or layers == "all":
        return lambda m, p: True
    if layers == "conv":
        return lambda m, p: isinstance(m, _CONVS)
    if layers == "linear":
        return lambda m, p: isinstance(m, nn.Linear)
    if isinstance(layers, str):
        raise ValueError(f"prune: layers must be 'all', 'conv', 'linear' or a list of layers, got {layers!r}")
    chosen = list(layers)
    names = {p for p, _ in model.named_modules()}
    ids, paths = set(), set()
    for item in chosen:
        if isinstance(item, str):
            if item not in names:
                valid = ", ".join(p for p, m in model.named_modules() if isinstance(m, _CONVS + (nn.Linear,)))
                raise LayerNotFoundError(f"prune: the model has no layer named {item!r}; prunable layers: {valid}")
            paths.add(item)
        else:
            ids.add(id(item))
    return lambda m, p: id(m) in ids or p in paths


def _importance(space: _Space, criterion: str) -> np.ndarray:
    """The summed L1 or L2 norm of the filters that write each channel of the group."""
    total = np.zeros(space.size)
    for m in space.sources:
        w = np.asarray(m.weight.data, np.float64)
        if isinstance(m, nn.ConvTranspose2d):
            w = w.transpose(1, 0, 2, 3)                          # (F, C, KH, KW)
        w = w.reshape(w.shape[0], -1)                            # (F, fan_in)
        total += np.abs(w).sum(axis=1) if criterion == "l1" else np.sqrt((w * w).sum(axis=1))
    return total


def _keep_indices(space: _Space, amount: float, criterion: str, generator: np.random.Generator) -> np.ndarray:
    n_keep = max(1, space.size - int(round(amount * space.size)))
    if criterion == "random":
        return np.sort(generator.permutation(space.size)[:n_keep])
    if criterion == "first":
        return np.arange(n_keep)
    order = np.argsort(-_importance(space, criterion), kind="stable")   # most important first
    return np.sort(order[:n_keep])


def _expand(keep: np.ndarray, per: int) -> np.ndarray:
    """Channel indices -> feature indices when each channel is ``per`` flattened features."""
    if per == 1:
        return keep
    return (keep[:, None] * per + np.arange(per)[None, :]).reshape(-1)   # (len(keep) * per,)


def _take(module: nn.Module, name: str, index: np.ndarray, axis: int) -> None:
    """Keep entries ``index`` of ``module.name`` along ``axis`` (a parameter or a buffer)."""
    value = getattr(module, name, None)
    if value is not None:
        set_array(module, name, np.take(np.asarray(getattr(value, "data", value)), index, axis=axis).copy())


def _apply(space: _Space, keep: np.ndarray) -> None:
    """Cut every layer of the group down to the ``keep`` channels; their sizes follow (``sync_sizes``)."""
    for m in space.sources:
        _take(m, "weight", keep, 1 if isinstance(m, nn.ConvTranspose2d) else 0)
        _take(m, "bias", keep, 0)
    for m, per in space.members:
        idx = _expand(keep, per)
        if isinstance(m, _NORMS):
            for name in ("weight", "bias", "running_mean", "running_var"):
                _take(m, name, idx, 0)
            if m.weight is None and m.running_mean is None:   # nothing to read the size from
                m.num_features = len(idx)
        else:   # depthwise conv
            _take(m, "weight", keep, 0)
            _take(m, "bias", keep, 0)
    for m, per in space.consumers:
        if isinstance(m, nn.Linear):
            _take(m, "weight", _expand(keep, per), 1)
        else:
            _take(m, "weight", keep, 0 if isinstance(m, nn.ConvTranspose2d) else 1)
    for m in {id(m): m for m in space.sources + [m for m, _ in space.members + space.consumers]}.values():
        sync_sizes(m)


@accepts_rng
def prune_channels(
    model: nn.Module, amount: float, criterion: str = "l1", layers: str | Iterable | None = None,
    *, input_shape: Sequence[int] | None = None, residual: str = "together",
    generator: np.random.Generator | None = None,
) -> nn.Module:
    """Return a copy of ``model`` with a share of the channels of each prunable layer removed.

    Args:
        model: any Module (``model`` itself is not changed).
        amount: the share of each group's channels to remove, in [0, 1); each group
            loses round(amount * channels) and keeps at least one.
        criterion: "l1" or "l2" (the smallest filter norms go), or "random".
        layers: whose output channels may be pruned: None or "all" (every conv and hidden
            Linear), "conv", "linear", or a list of layer paths or modules. A group written
            by several layers (a residual add) is pruned only if all of them are chosen.
        input_shape: (C, H, W) of one input, for the trace; default: the model's own
            ``input_shape`` (zoo models, imported ONNX files), else the first of 28x28,
            32x32 and 224x224 that it takes (``trace_input_shape``).
        residual: "together" prunes channels tied by a residual add as one group; "keep"
            leaves them alone.
        generator: generator for ``criterion="random"`` (default: cnnkit's default generator).

    Returns:
        The pruned model (a smaller dense model of the same classes), in the mode
        ``model`` was in.

    Raises:
        ValueError: amount outside [0, 1), an unknown criterion or layer name.
    """
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"prune_channels expects amount in [0, 1), got {amount}")
    if criterion not in ("l1", "l2", "random", "first"):
        raise ValueError(f"prune_channels expects criterion 'l1', 'l2' or 'random', got {criterion!r}")
    if residual not in ("together", "keep"):
        raise ValueError(f"prune_channels expects residual 'together' or 'keep', got {residual!r}")
    generator = generator if generator is not None else config.default_generator()
    pruned = copy.deepcopy(model)
    tracer = _Tracer(pruned, trace_input_shape(pruned, input_shape))
    chosen = _selected(layers, pruned)
    plans = []
    for space in tracer.roots():
        if space.frozen or not space.sources or space.size < 2:
            continue
        if residual == "keep" and space.tied:
            continue
        if not all(chosen(m, tracer.path(m)) for m in space.sources):
            continue
        plans.append((space, _keep_indices(space, amount, criterion, generator)))
    for space, keep in plans:   # rank every group before any weight changes
        if len(keep) < space.size:
            _apply(space, keep)
    return pruned


@accepts_rng
def uniform_width(
    model: nn.Module, fraction: float, layers: str | Iterable | None = "conv",
    *, input_shape: Sequence[int] | None = None, generator: np.random.Generator | None = None,
) -> nn.Module:
    """Build the thinner network: each layer's channels reduced by ``fraction``, weights new.

    The articles' alternative to pruning: the same architecture with round(fraction * C)
    fewer channels in every (chosen) layer, trained from scratch. The channel counts are
    those ``prune_channels(model, fraction, layers=layers)`` would leave; every Conv2d and
    Linear gets its default (PyTorch) initialization for its new shape, every BatchNorm
    weight 1, bias 0 and fresh running statistics.

    Args:
        model: the full-width model (not changed).
        fraction: the share of channels removed from each layer, in [0, 1).
        layers: as ``prune_channels``; default "conv" (every convolutional layer).
        input_shape, generator: as ``prune_channels``; generator draws the new weights.

    Returns:
        The thinner model, untrained, in training mode.
    """
    generator = generator if generator is not None else config.default_generator()
    thin = prune_channels(model, fraction, "first", layers, input_shape=input_shape)
    for m in thin.modules():
        if isinstance(m, nn.Conv2d):
            fresh = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, groups=m.groups,
                              bias=m.bias is not None, generator=generator, dtype=m.weight.dtype)
        elif isinstance(m, nn.ConvTranspose2d):
            fresh = nn.ConvTranspose2d(m.in_channels, m.out_channels, m.kernel_size, groups=m.groups,
                                       bias=m.bias is not None, generator=generator, dtype=m.weight.dtype)
        elif isinstance(m, nn.Linear):
            fresh = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, generator=generator,
                              dtype=m.weight.dtype)
        elif isinstance(m, _NORMS):
            if m.weight is not None:
                m.weight.data[...] = 1
            if m.bias is not None:
                m.bias.data[...] = 0
            m.reset_running_stats()
            continue
        else:
            continue
        m.weight = fresh.weight
        if m.bias is not None:
            m.bias = fresh.bias
    return thin.train()


def conv_parameters(model: nn.Module) -> int:
    """The number of parameters in the model's convolution layers (weights and biases)."""
    return sum(p.size for m in model.modules() if isinstance(m, _CONVS) for p in m.parameters(recurse=False))
