"""Stateful layers: modules hold Parameters and buffers and call ``cnnkit.functional``.

Names, constructor arguments, defaults, ``state_dict`` keys and array layouts follow
``torch.nn``, so a PyTorch model's ``state_dict()`` (converted with ``.numpy()``) loads
into the equivalent cnnkit model. Layers never compute gradients themselves.

    import cnnkit.nn as nn
    model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(6 * 14 * 14, 10))

``nn.init`` holds the initializers, as ``torch.nn.init`` (``cnnkit.init`` is the same module);
``nn.utils`` folds an eval-mode BatchNorm into the convolution before it
(``fuse_conv_bn_eval``, as ``torch.nn.utils``).
"""

from . import init, utils
from .activation import (
    ELU,
    GELU,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from .containers import ModuleDict, ModuleList, Sequential
from .conv import Conv2d, ConvTranspose2d
from .dropout import Dropout
from .linear import Linear
from .loss import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    HuberLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)
from .module import IncompatibleKeys, Module, RemovableHandle, StateDictError
from .norm import BatchNorm1d, BatchNorm2d
from .parameter import Parameter
from .pool import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, LPPool2d, MaxPool2d, MaxUnpool2d, SumPool2d
from .resize import RESIZABLE, set_array, sync_sizes
from .shape import Flatten, Identity
from .tracer import LayerCall, LayerTrace, eval_mode, trace_layers
from .upsample import Upsample, UpsamplingBilinear2d, UpsamplingNearest2d

__all__ = [
    # the base classes and containers
    "Module", "Parameter", "Sequential", "ModuleList", "ModuleDict",
    "RemovableHandle", "IncompatibleKeys", "StateDictError",
    # layers
    "Conv2d", "ConvTranspose2d",
    "MaxPool2d", "MaxUnpool2d", "AvgPool2d", "SumPool2d", "LPPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d",
    "ReLU", "LeakyReLU", "ELU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax",
    "GELU", "SiLU", "Softplus", "Hardtanh", "ReLU6", "Hardsigmoid", "Hardswish",
    "Linear", "Flatten", "Identity", "Dropout", "BatchNorm1d", "BatchNorm2d",
    "Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d",
    # losses
    "CrossEntropyLoss", "NLLLoss", "MSELoss", "BCEWithLogitsLoss", "BCELoss", "L1Loss", "SmoothL1Loss",
    "HuberLoss",
    # looking inside: the forward-hook tracer
    "trace_layers", "eval_mode", "LayerCall", "LayerTrace",
    # changing a layer's size in place (pruning, loading pruned checkpoints)
    "set_array", "sync_sizes", "RESIZABLE",
    "init",
    # folding eval-mode BatchNorm into the convolution before it (as torch.nn.utils)
    "utils",
]
