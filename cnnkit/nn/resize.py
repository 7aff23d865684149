"""Changing a layer's size in place: new arrays for its parameters and buffers, and the size
attributes (``in_channels``, ``out_features``, ``num_features``, ...) that follow from them.

Channel pruning (``cnnkit.surgery.prune``) cuts arrays down; loading a pruned checkpoint
(``cnnkit.io``) gives a freshly built model the checkpoint's shapes. Both replace arrays
with ``set_array`` and then let ``sync_sizes`` read each layer's sizes off its weights, so
the weight layouts (PyTorch's) are spelled out once, here:

- Linear: weight (out_features, in_features);
- Conv2d: weight (out_channels, in_channels / groups, KH, KW); a depthwise convolution
  (groups == in_channels == out_channels) stays depthwise;
- ConvTranspose2d: weight (in_channels, out_channels / groups, KH, KW);
- BatchNorm: running_mean, running_var, weight, bias all (num_features,).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tensor import Tensor
from .conv import Conv2d, ConvTranspose2d
from .linear import Linear
from .module import Module
from .norm import BatchNorm1d, BatchNorm2d
from .parameter import Parameter

__all__ = ["set_array", "sync_sizes", "RESIZABLE"]

# The layers whose size follows from their arrays.
RESIZABLE = (Linear, Conv2d, ConvTranspose2d, BatchNorm1d, BatchNorm2d)


def set_array(module: Module, name: str, array: Any) -> None:
    """Replace parameter or buffer ``name`` of ``module`` by ``array`` (a Parameter stays a Parameter,
    keeping ``requires_grad``); nothing happens when the module has no such array (None)."""
    value = getattr(module, name, None)
    if value is None:
        return
    if isinstance(value, Parameter):
        setattr(module, name, Parameter(np.asarray(array), value.requires_grad))
    else:
        setattr(module, name, np.asarray(array.data if isinstance(array, Tensor) else array))


def sync_sizes(module: Module) -> Module:
    """Set ``module``'s size attributes from the shapes of its arrays (see the module docstring).

    Other modules, and BatchNorm layers without any array (no affine parameters, no running
    statistics), are left as they are.

    Returns:
        ``module``.
    """
    if isinstance(module, Linear):
        module.out_features, module.in_features = (int(n) for n in module.weight.shape)
    elif isinstance(module, ConvTranspose2d):
        module.in_channels = int(module.weight.shape[0])
        module.out_channels = int(module.weight.shape[1]) * module.groups
    elif isinstance(module, Conv2d):
        depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
        if depthwise:
            module.in_channels = module.out_channels = module.groups = int(module.weight.shape[0])
        else:
            module.out_channels = int(module.weight.shape[0])
            module.in_channels = int(module.weight.shape[1]) * module.groups
    elif isinstance(module, (BatchNorm1d, BatchNorm2d)):
        ref = next((a for a in (module.running_mean, module.weight) if a is not None), None)
        if ref is not None:
            module.num_features = int(np.shape(ref)[0])
    return module
