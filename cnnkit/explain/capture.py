"""Capture what layers produce, with forward hooks, and pick the layers worth showing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..backend import as_numpy
from ..errors import LayerNotFoundError
from ..nn import Conv2d, LayerCall, trace_layers
from ..tensor import Tensor

__all__ = [
    "LayerNotFoundError", "layer_names", "conv_layers", "leaf_layers", "find_conv", "capture",
    "default_layers",
]


def layer_names(model) -> list[str]:
    """Every sub-module's dotted path, in registration order ("" for the model itself excluded)."""
    return [name for name, _ in model.named_modules() if name]


def conv_layers(model) -> list[str]:
    """Paths of the model's Conv2d layers, in registration order."""
    return [name for name, m in model.named_modules() if isinstance(m, Conv2d)]


def find_conv(model, name: str | None = None):
    """Return (path, Conv2d): the layer called ``name``, or the first Conv2d.

    Raises:
        LayerNotFoundError: no such layer, or it is not a Conv2d (lists the conv layers).
    """
    convs = conv_layers(model)
    if not convs:
        raise LayerNotFoundError(f"the model ({type(model).__name__}) has no Conv2d layer")
    if name is None:
        return convs[0], model.get_submodule(convs[0])
    modules = dict(model.named_modules())
    if name not in modules or not name:
        raise LayerNotFoundError(f"no layer named {name!r}; conv layers: {', '.join(convs)}")
    if name not in convs:
        raise LayerNotFoundError(
            f"layer {name!r} is a {type(modules[name]).__name__}, not a Conv2d; "
            f"conv layers: {', '.join(convs)}"
        )
    return name, modules[name]


def capture(
    model, x: np.ndarray, layers: Sequence[str]
) -> tuple[list[tuple[str, str, np.ndarray]], np.ndarray]:
    """Run ``model`` on ``x`` (eval mode, no grad) and keep the outputs of ``layers``.

    Args:
        x: one batch (N, C, H, W); the first sample's activations are kept.
        layers: module paths. A module called more than once yields one entry per call.

    Returns:
        ([(path, module class name, activation of sample 0)] in execution order, model output).

    Raises:
        LayerNotFoundError: a name is not a module of the model (lists the valid names).
    """
    found: list[tuple[str, str, np.ndarray]] = []

    def keep(call: LayerCall) -> None:
        output = call.output
        data = output.data if isinstance(output, Tensor) else getattr(output, "data", None)
        if data is not None:
            found.append((call.path, type(call.module).__name__, np.array(as_numpy(data)[0])))

    with trace_layers(model, list(dict.fromkeys(layers)), on_call=keep, keep=False):
        out = model(Tensor(np.asarray(x, np.float32)))
    return found, np.asarray(as_numpy(out.data))


def default_layers(found: Sequence[tuple[str, str, np.ndarray]], limit: int = 8) -> list[str]:
    """Pick layers worth showing from ``capture``'s output: image-shaped ones, spread over depth.

    Image-shaped: (C, H, W) with more than one pixel (a global pool's (C, 1, 1) is left out).
    All of them when there are at most ``limit`` (LeNet-5: conv, ReLU, pool, twice); in a
    deeper network, ``limit`` evenly spaced conv layers, first and last included.
    """
    images = [(path, kind) for path, kind, a in found if a.ndim == 3 and a.shape[1] * a.shape[2] > 1]
    names = list(dict.fromkeys(path for path, _ in images))
    if len(names) <= limit:
        return names
    convs = list(dict.fromkeys(path for path, kind in images if kind == "Conv2d"))
    if len(convs) >= limit:
        names = convs
    picks = np.linspace(0, len(names) - 1, limit).round().astype(int)
    return [names[i] for i in dict.fromkeys(picks.tolist())]


def leaf_layers(model) -> list[str]:
    """Paths of the modules without sub-modules (the layers that compute)."""
    return [n for n, m in model.named_modules() if n and not any(True for _ in m.children())]
