"""Fully convolutional conversion: a classifier's fully connected head rewritten as convolutions.

A Linear layer that reads a flattened (C, H, W) feature map computes, for each output
feature f,

    y[f] = b[f] + sum over c, i, j of W[f, c*H*W + i*W + j] * x[c, i, j],

which is exactly a Conv2d with kernel (H, W), C input and F output channels and weights
W.reshape(F, C, H, W), evaluated at the single position where the kernel fits. Every
later Linear sees a 1x1 "map" and becomes a 1x1 convolution with W.reshape(F, D, 1, 1).
LeNet-5's 400 -> 120 layer becomes a 5x5 convolution from 16 to 120 channels (48,120
parameters either way).

On the training-size input the converted network gives the same numbers as the original
(as a (N, K, 1, 1) map). On a larger input every layer just produces a larger map, and
output position (i, j) scores the window of the input that starts at (i*SH, j*SW), where
(SH, SW) is the network's total stride (the product of the strides of its layers): one
forward pass replaces running the classifier on every window, sharing the convolutions
of overlapping windows.

NOTE: the pass equals cropping each window and classifying it only where the crop sees
what the big pass sees. Zero padding inside the classifier pads each crop's borders with
zeros, while the big pass sees the neighbouring pixels there. For a network without
padding the two agree exactly; when only the first layer pads (LeNet-5's conv1, pad 2),
they agree exactly once the padding is applied to the whole image and the crops are taken
from the padded image (``sliding_window`` on ``F.pad(x, ...)`` with a copy of the model
whose first layer does not pad). Networks that pad every layer (VGG) agree at the
training size and differ only near the window borders on larger inputs.

    fcn = to_fully_convolutional(lenet, (1, 28, 28))
    scores = fcn(strip)            # strip (1, 1, 28, 280) -> scores (1, 10, 1, 64), stride 4
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import config, nn
from ..errors import ConversionError, ShapeError
from ..functional.args import pair
from ..tensor import Tensor

__all__ = ["ConversionError", "FullyConvolutional", "to_fully_convolutional", "sliding_window"]

# Layers that may follow the Flatten: they act per feature, so on a (N, D, OH, OW) map
# they act per channel at every position.
_ELEMENTWISE = (
    nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Sigmoid, nn.Tanh, nn.Dropout, nn.Identity,
    nn.Softmax, nn.LogSoftmax,
)
# Layers whose meaning depends on a fixed input size: the converter opens up every module
# that contains one and looks at it layer by layer.
_HEAD_TYPES = (nn.Linear, nn.Flatten, nn.BatchNorm1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.SumPool2d, nn.LPPool2d)


class FullyConvolutional(nn.Sequential):
    """A classifier rewritten as convolutions: logits (N, K) become score maps (N, K, OH, OW).

    Built by ``to_fully_convolutional``; its modules are copies of the original layers
    (Linear layers as Conv2d) at their paths in the original: the Conv2d made of
    ``model.classifier[0]`` is ``fcn.classifier[0]``, with state_dict key
    "classifier.0.weight" (each container of the original is an nn.Sequential of its
    converted layers). Until Dec 2026 the layers sat side by side as "classifier_0";
    ``load_state_dict`` still reads state dicts with those keys (``legacy_names``).

    Attributes:
        window: (H, W), the training input size: output position (i, j) classifies the
            window of this size starting at (i*SH, j*SW) (less the first layer's padding).
        stride: (SH, SW), the network's total stride: the input distance between
            neighbouring output positions.
        first_centre: (y, x), input coordinates of the centre of output (0, 0)'s window.

    Shape: x (N, C, H', W') with H' >= H and W' >= W -> scores (N, K, OH, OW);
    OH = 1 + (H' - H) // SH for networks whose padding keeps sizes (LeNet-5, VGG).
    """

    window: tuple[int, int]
    stride: tuple[int, int]
    first_centre: tuple[float, float]
    legacy_names: dict[str, str]

    def load_state_dict(self, state_dict, *args, **kwargs):
        """Module.load_state_dict, also reading keys of the flat names used before ("classifier_0.weight")."""
        renames = getattr(self, "legacy_names", {})
        if renames:
            renamed = type(state_dict)() if isinstance(state_dict, OrderedDict) else {}
            for key, value in state_dict.items():
                head, dot, rest = key.partition(".")
                renamed[renames[head] + dot + rest if dot and head in renames else key] = value
            state_dict = renamed
        return super().load_state_dict(state_dict, *args, **kwargs)

    def window_centres(self, out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Input coordinates (ys, xs) of the centres of the windows of an (OH, OW) score map."""
        OH, OW = out_hw
        ys = self.first_centre[0] + self.stride[0] * np.arange(OH)
        xs = self.first_centre[1] + self.stride[1] * np.arange(OW)
        return ys, xs


@dataclass
class _Call:
    """One call of one unit during the trace (or the implicit flatten between two calls)."""

    path: str
    module: nn.Module | None   # None: a flatten done by forward() outside any module
    x: Any
    y: Any

    @property
    def label(self) -> str:
        kind = type(self.module).__name__ if self.module is not None else "flatten in forward()"
        return f"{self.path!r} ({kind})" if self.path else f"the model ({kind})"


def to_fully_convolutional(
    model: nn.Module, input_shape: Sequence[int], *, verify: bool = True
) -> FullyConvolutional:
    """Return a copy of ``model`` whose fully connected head is made of equivalent convolutions.

    The first Linear after the Flatten becomes a Conv2d whose kernel covers the whole
    incoming feature map, the next ones 1x1 convolutions, all with the same weights;
    the Flatten is dropped. Adaptive pooling that is the identity at the training size
    (VGG's and AlexNet's ``avgpool`` at 224x224) is dropped; global adaptive pooling
    becomes a stride-1 pool over the training-size map (ResNet-style heads). BatchNorm1d
    after a Linear becomes BatchNorm2d with the same statistics. Anything else keeps its
    weights (copied; ``model`` is not changed).

    The layer order comes from a trace: one forward pass in eval mode on a fixed probe
    input of ``input_shape`` records the calls of the model's layers. The model must be a
    chain of layers (a Sequential, or a module whose ``forward`` calls its layers one
    after the other, with at most a flatten in between: LeNet-5, AlexNet, the VGG family).
    Blocks without any fully connected layer (a ResNet's residual blocks) are kept whole.

    Args:
        model: the classifier, for inputs of ``input_shape``.
        input_shape: (C, H, W) of the training images, e.g. (1, 28, 28).
        verify: run the result on the probe input and check it matches the model.

    Returns:
        A FullyConvolutional (an nn.Sequential) in eval mode, with ``window``,
        ``stride`` and ``first_centre`` set.

    Raises:
        ConversionError: a layer cannot be converted (its path and type are named): an
            operation in ``forward()`` outside any layer (a residual add, a reshape),
            a layer after the Flatten that is not Linear/BatchNorm1d/an activation/
            Dropout, adaptive pooling that is neither global nor the identity.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3:
        raise ShapeError(f"to_fully_convolutional expects input_shape (C, H, W), got {tuple(input_shape)}")
    calls, x, y = _trace(model, shape)
    calls = _check_chain(model, calls, x, y)
    layers, window_geometry = _convert(calls, shape)
    top, legacy = _nest(layers)
    fcn = FullyConvolutional(OrderedDict(top))
    fcn.legacy_names = {old: new for old, new in legacy.items() if old != new}
    fcn.window = shape[1:]
    fcn.stride, fcn.first_centre = window_geometry
    fcn.eval()
    if verify:
        with config.no_grad():
            got = fcn(x).data
        expected = y.data
        if got.shape != expected.shape + (1, 1) or not np.allclose(got[..., 0, 0], expected, rtol=1e-4, atol=1e-4):
            raise ConversionError(
                f"to_fully_convolutional: the converted {type(model).__name__} does not reproduce the "
                f"model at input shape {shape}: got output shape {got.shape} for {expected.shape}"
            )
    return fcn


# ----------------------------------------------------------------------------- trace
def _contains_head(module: nn.Module) -> bool:
    return any(isinstance(m, _HEAD_TYPES) for m in module.modules())


def _units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules the converter handles as one step, in registration order.

    Sequentials and modules that contain a head layer (Linear, Flatten, BatchNorm1d,
    adaptive pooling) are opened up; every other module is a unit: a layer, or a block
    without a head (a residual block: size-agnostic already, kept whole).
    """
    units: list[tuple[str, nn.Module]] = []

    def visit(path: str, module: nn.Module) -> None:
        children = [(n, m) for n, m in module.named_children() if m is not None]
        opened = isinstance(module, nn.Sequential) or _contains_head(module)
        if isinstance(module, _HEAD_TYPES) or not opened or not children:
            units.append((path, module))
            return
        for name, child in children:
            visit(f"{path}.{name}" if path else name, child)

    visit("", model)
    return units


def _trace(model: nn.Module, shape: tuple[int, ...]) -> tuple[list[_Call], Tensor, Tensor]:
    """Run ``model`` once on a probe input and record each unit call: (path, module, input, output)."""
    first = next(model.parameters(), None)
    dtype = first.dtype if first is not None else config.get_default_dtype()
    # A fixed, non-constant probe (no randomness): a flatten is recognized by its values.
    x = Tensor(np.sin(0.7 * np.arange(int(np.prod(shape)))).reshape((1,) + shape).astype(dtype))
    try:
        with nn.trace_layers(model, [unit for _, unit in _units(model)]) as trace:
            y = model(x)
    except ShapeError as e:
        raise ConversionError(
            f"to_fully_convolutional: {type(model).__name__} does not take inputs of shape {shape}: {e}"
        ) from None
    calls = [_Call(c.path, c.module, c.inputs[0] if c.inputs else None, c.output) for c in trace.calls]
    if not isinstance(y, Tensor) or y.ndim != 2:
        got = y.shape if isinstance(y, Tensor) else type(y).__name__
        raise ConversionError(
            f"to_fully_convolutional expects a classifier with (N, K) outputs, "
            f"{type(model).__name__} returned {got}"
        )
    return calls, x, y


def _is_flatten_of(before: Any, after: Any) -> bool:
    """True when ``after`` is ``before`` (N, C, H, W) flattened to (N, C*H*W)."""
    if not (isinstance(before, Tensor) and isinstance(after, Tensor)):
        return False
    if before.ndim != 4 or after.shape != (before.shape[0], int(np.prod(before.shape[1:]))):
        return False
    return bool(np.array_equal(after.data, before.data.reshape(after.shape)))


def _check_chain(model: nn.Module, calls: list[_Call], x: Tensor, y: Tensor) -> list[_Call]:
    """Check that each call's input is the previous call's output; insert implicit flattens."""
    chained: list[_Call] = []
    previous: Any = x
    previous_label = "the model's input"
    for call in calls:
        if call.x is not previous:
            if _is_flatten_of(previous, call.x):
                chained.append(_Call(call.path, None, previous, call.x))
            else:
                raise ConversionError(
                    f"to_fully_convolutional: cannot convert {call.label} in {type(model).__name__}: "
                    f"its input is not the output of {previous_label} (nor that output flattened), so "
                    "forward() computes something between them outside any layer (a residual add, a "
                    "concatenation, a functional activation); only chains of layers can be converted"
                )
        chained.append(call)
        previous, previous_label = call.y, call.label
    if y is not previous:
        raise ConversionError(
            f"to_fully_convolutional: cannot convert {type(model).__name__}: its output is not the output "
            f"of its last layer {previous_label}; forward() changes it outside any layer"
        )
    return chained


# --------------------------------------------------------------------------- convert
def _flat_name(path: str, taken: set[str]) -> str:
    """The name a converted layer had before its original path was kept ("classifier_0")."""
    base = path.replace(".", "_") or "layer"
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def _nest(layers: list[tuple[str, nn.Module]]) -> tuple[list[tuple[str, nn.Module]], dict[str, str]]:
    """Place the converted layers at their paths in the original model, in call order.

    Each container of the original ("features", "classifier") becomes an nn.Sequential of
    the layers converted from it, so the model's own names stay: the Conv2d made of
    ``model.classifier[0]`` is ``fcn.classifier[0]`` and its weight "classifier.0.weight".
    A container whose layers do not run one after the other, or a layer called twice,
    gets a suffix the second time ("relu_2", as the summary's second call).

    Returns:
        The top-level (name, module) pairs, and the earlier flat name of each converted layer
        ("classifier_0") -> its path ("classifier.0"), for loading older state dicts.
    """
    root = nn.Sequential()
    containers: dict[str, nn.Sequential] = {"": root}
    last: dict[str, str] = {}   # container path -> the name of its last child
    legacy: dict[str, str] = {}
    taken_flat: set[str] = set()

    def child(parent: str, name: str, reuse: bool) -> str:
        box = containers[parent]
        if reuse and last.get(parent) == name:
            return name
        unique, k = name, 2
        while unique in dict(box.named_children()):
            unique, k = f"{name}_{k}", k + 1
        return unique

    for path, module in layers:
        parts = path.split(".") if path else ["layer"]
        parent = ""
        for part in parts[:-1]:
            name = child(parent, part, reuse=True)
            full = f"{parent}.{name}" if parent else name
            if full not in containers:
                containers[full] = nn.Sequential()
                containers[parent].add_module(name, containers[full])
            last[parent] = name
            parent = full
        name = child(parent, parts[-1], reuse=False)
        containers[parent].add_module(name, module)
        last[parent] = name
        legacy[_flat_name(path, taken_flat)] = f"{parent}.{name}" if parent else name
    return list(root.named_children()), legacy


def _linear_as_conv(linear: nn.Linear, C: int, H: int, W: int) -> nn.Conv2d:
    """The Conv2d equal to ``linear`` on a flattened (C, H, W) map: kernel (H, W)."""
    F = linear.out_features
    conv = nn.Conv2d(C, F, (H, W), bias=linear.bias is not None, dtype=linear.weight.dtype)
    conv.weight.data[...] = linear.weight.data.reshape(F, C, H, W)   # (F, C, H, W)
    if linear.bias is not None:
        conv.bias.data[...] = linear.bias.data
    return conv


def _batchnorm2d_from(bn: nn.BatchNorm1d) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    new.load_state_dict(bn.state_dict())
    return new


def _convert(calls: list[_Call], shape: tuple[int, int, int]):
    """Build the converted layer list and the window geometry (stride, first centre)."""
    layers: list[tuple[str, nn.Module]] = []
    copies: dict[int, nn.Module] = {}
    geometry = _Geometry()
    flat_from: tuple[int, int, int] | None = None   # the (C, H, W) map awaiting the first Linear
    flattened = False

    def keep(path: str, module: nn.Module) -> None:
        if id(module) not in copies:
            copies[id(module)] = copy.deepcopy(module)
        layers.append((path, copies[id(module)]))

    for call in calls:
        m = call.module
        if m is None or isinstance(m, nn.Flatten):
            if flattened:
                continue
            if call.x.ndim != 4 or call.y.ndim != 2:
                raise ConversionError(
                    f"to_fully_convolutional: cannot convert {call.label}: it must flatten (N, C, H, W) "
                    f"to (N, C*H*W), got {tuple(call.x.shape)} -> {tuple(call.y.shape)}"
                )
            flat_from, flattened = tuple(call.x.shape[1:]), True
            continue
        if isinstance(m, nn.Linear):
            if not flattened:
                raise ConversionError(
                    f"to_fully_convolutional: cannot convert {call.label}: a Linear layer must follow a "
                    f"Flatten of a (N, C, H, W) map, got input shape {tuple(call.x.shape)}"
                )
            C, H, W = flat_from if flat_from is not None else (m.in_features, 1, 1)
            conv = _linear_as_conv(m, C, H, W)
            geometry.add_kernel((H, W))
            layers.append((call.path, conv))
            flat_from = None
            continue
        if isinstance(m, nn.BatchNorm1d):
            if not flattened or flat_from is not None:
                raise ConversionError(
                    f"to_fully_convolutional: cannot convert {call.label}: BatchNorm1d is converted only "
                    "after a Linear layer (its statistics are per feature, not per channel)"
                )
            layers.append((call.path, _batchnorm2d_from(m)))
            continue
        if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            if flattened:
                raise ConversionError(f"to_fully_convolutional: cannot convert {call.label} after the flatten")
            (h, w), (oh, ow) = call.x.shape[-2:], call.y.shape[-2:]
            if (h, w) == (oh, ow):
                continue   # the identity at the training size
            if (oh, ow) != (1, 1):
                raise ConversionError(
                    f"to_fully_convolutional: cannot convert {call.label}: it maps {h}x{w} to {oh}x{ow} at "
                    f"input shape {shape}; only global pooling (to 1x1) or the identity (the training size, "
                    "e.g. 224x224 for VGG and AlexNet) have a sliding equivalent"
                )
            pool_cls = nn.AvgPool2d if isinstance(m, nn.AdaptiveAvgPool2d) else nn.MaxPool2d
            layers.append((call.path, pool_cls((h, w), stride=1)))
            geometry.add_kernel((h, w))
            continue
        if flattened:
            if not isinstance(m, _ELEMENTWISE):
                raise ConversionError(
                    f"to_fully_convolutional: cannot convert {call.label}: after the flatten only Linear, "
                    "BatchNorm1d, activations, Softmax, Dropout and Identity can be made convolutional"
                )
            if isinstance(m, (nn.Softmax, nn.LogSoftmax)):
                layers.append((call.path, type(m)(dim=1)))
            else:
                keep(call.path, m)
            continue
        geometry.add_layer(m, call)
        keep(call.path, m)
    if flat_from is not None and flat_from[1:] != (1, 1):
        raise ConversionError(
            f"to_fully_convolutional: the model ends with a flatten of a {flat_from} map and no Linear "
            "layer after it; there is nothing to slide"
        )
    return layers, (geometry.stride(), geometry.centre())


class _Geometry:
    """Total stride and first window centre along the chain, per axis (H, W).

    A layer with kernel K, stride S, padding P and dilation D maps the window centre c
    and jump j of its input to c' = c + j * ((D*(K - 1)) / 2 - P) and j' = j * S
    (Dumoulin and Visin, 2016), starting from c = (0, 0) (the first pixel) and j = (1, 1).
    """

    def __init__(self):
        self.c = [0.0, 0.0]
        self.j = [1, 1]

    def _apply(self, kernel, stride, pad_before, dilation=(1, 1)) -> None:
        for a in range(2):
            self.c[a] += self.j[a] * (dilation[a] * (kernel[a] - 1) / 2 - pad_before[a])
            self.j[a] *= stride[a]

    def add_kernel(self, kernel: tuple[int, int]) -> None:
        self._apply(kernel, (1, 1), (0, 0))

    def add_layer(self, m: nn.Module, call: _Call) -> None:
        if isinstance(m, nn.Conv2d):
            top, _, left, _ = m.padding_sides()
            self._apply(m.kernel_size, m.stride, (top, left), m.dilation)
        elif isinstance(m, _POOLS):
            where = type(m).__name__
            kernel = pair(m.kernel_size, "kernel_size", where)
            stride = pair(m.stride, "stride", where)
            pad = pair(getattr(m, "padding", 0), "padding", where)
            self._apply(kernel, stride, pad, pair(getattr(m, "dilation", 1), "dilation", where))
        elif isinstance(call.x, Tensor) and isinstance(call.y, Tensor) and call.x.ndim == 4:
            if call.x.shape[-2:] != call.y.shape[-2:]:
                self._opaque(m, call)

    def _opaque(self, m: nn.Module, call: _Call) -> None:
        """A block that changes the size (a residual block): measure its stride by probing.

        Its output size as a function of its input size n is floor((n + a) / S) + b; the
        distance between the first two sizes where it grows is S. The window centre moves
        as for a block that pads evenly ("same" padding): by ((n - 1) - (out - 1) * S) / 2.
        """
        C, h, w = call.x.shape[1:]
        out = tuple(call.y.shape[-2:])
        growth: list[list[int]] = [[], []]
        size = list(out)
        with config.no_grad():
            for t in range(1, 4 * max(h, w) + 2):
                got = m(Tensor(np.zeros((1, C, h + t, w + t), call.x.dtype))).shape[-2:]
                for a in range(2):
                    if got[a] > size[a]:
                        growth[a].append(t)
                        size[a] = got[a]
                if min(len(g) for g in growth) >= 2:
                    break
        for a, n in enumerate((h, w)):
            stride = growth[a][1] - growth[a][0] if len(growth[a]) >= 2 else 1
            self.c[a] += self.j[a] * ((n - 1) - (out[a] - 1) * stride) / 2
            self.j[a] *= stride

    def stride(self) -> tuple[int, int]:
        return (int(self.j[0]), int(self.j[1]))

    def centre(self) -> tuple[float, float]:
        return (float(self.c[0]), float(self.c[1]))


# ---------------------------------------------------------------------- sliding window
def sliding_window(
    model: nn.Module, x: Tensor | np.ndarray, window: Sequence[int], stride: Sequence[int],
    *, batch_size: int = 256,
) -> Tensor:
    """Classify every window of ``x`` at ``stride`` by cropping it: what one FCN pass replaces.

    Args:
        model: a classifier taking (N, C, WH, WW) crops.
        x: images (N, C, H, W).
        window: (WH, WW), the crop size (the model's training input size).
        stride: (SH, SW) between neighbouring crops.
        batch_size: crops per forward pass (1: the naive loop, one window per call).

    Returns:
        The logits of every crop as a map, in eval mode and without grad.

    Shape: x (N, C, H, W) -> scores (N, K, OH, OW), OH = (H - WH) // SH + 1 (likewise OW).
    """
    data = x.data if isinstance(x, Tensor) else np.asarray(x)
    N, C, H, W = data.shape
    WH, WW = (int(v) for v in window)
    SH, SW = (int(v) for v in stride)
    if H < WH or W < WW:
        raise ShapeError(f"sliding_window: window {(WH, WW)} is larger than the input {data.shape}")
    views = np.lib.stride_tricks.sliding_window_view(data, (WH, WW), axis=(2, 3))   # (N, C, H-WH+1, W-WW+1, WH, WW)
    views = views[:, :, ::SH, ::SW]                                               # (N, C, OH, OW, WH, WW)
    OH, OW = views.shape[2:4]
    crops = views.transpose(0, 2, 3, 1, 4, 5).reshape(N * OH * OW, C, WH, WW)     # (N*OH*OW, C, WH, WW)
    with config.no_grad(), nn.eval_mode(model):
        outs = [model(Tensor(np.ascontiguousarray(crops[i : i + batch_size]))).data
                for i in range(0, len(crops), batch_size)]
    scores = np.concatenate(outs)                                                 # (N*OH*OW, K)
    return Tensor(scores.reshape(N, OH, OW, -1).transpose(0, 3, 1, 2))           # (N, K, OH, OW)
