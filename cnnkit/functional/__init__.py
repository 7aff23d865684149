"""Stateless differentiable ops, with PyTorch's names and argument semantics.

Import as ``import cnnkit.functional as F``. Every op is a ``Function`` subclass with its
forward beside its backward; the snake_case function below each class is the public API.

Shape vocabulary used in every docstring and shape comment:

- ``N`` batch; ``C`` input channels; ``F`` output channels (filters); ``G`` groups;
- ``H, W`` input height and width; ``KH, KW`` kernel; ``OH, OW`` output;
- ``SH, SW`` stride; ``PH, PW`` padding (``PT, PB, PL, PR`` when asymmetric);
  ``DH, DW`` dilation;
- ``D`` features; ``K`` classes; ``M`` rows of a flattened batch.

Activations are NCHW to the user. Convolution and pooling produce their output in
channel-major (C, N, H, W) memory and hand it on as a transposed (N, C, H, W) view, so
consecutive conv/pool/activation ops never pay for a layout copy.
"""

from .activation import elu, leaky_relu, log_softmax, relu, sigmoid, softmax, tanh
from .conv import conv2d, conv2d_batch_norm, conv2d_batch_norm_relu, conv2d_relu, conv_transpose2d
from .dropout import dropout
from .hard_activation import hardsigmoid, hardswish, hardtanh, relu6
from .interpolate import interpolate
from .linear import linear
from .logic import (
    bitwise_and,
    bitwise_not,
    bitwise_or,
    bitwise_xor,
    eq,
    ge,
    gt,
    le,
    logical_and,
    logical_not,
    logical_or,
    logical_xor,
    lt,
    masked_fill,
    maximum,
    minimum,
    ne,
    where,
)
from .loss import binary_cross_entropy_with_logits, cross_entropy, mse_loss, nll_loss
from .math import abs, add, cast, clamp, div, exp, log, matmul, mul, neg, pow, sign, sqrt, sub
from .norm import batch_norm, batch_norm_relu
from .pointwise_loss import binary_cross_entropy, huber_loss, l1_loss, smooth_l1_loss
from .pool import (
    adaptive_avg_pool2d,
    adaptive_max_pool2d,
    avg_pool2d,
    lp_pool2d,
    max_pool2d,
    sum_pool2d,
)
from .reduction import amax, amin, argmax, argmin, max, mean, min, std, sum, var
from .remainder import fmod, remainder
from .shape import cat, flatten, getitem, pad, permute, reshape, squeeze, stack, transpose, unsqueeze
from .smooth_activation import gelu, silu, softplus
from .special import erf
from .unpool import max_unpool2d

__all__ = [
    "abs", "adaptive_avg_pool2d", "adaptive_max_pool2d", "add", "amax", "amin", "argmax", "argmin",
    "avg_pool2d", "batch_norm", "batch_norm_relu", "binary_cross_entropy", "binary_cross_entropy_with_logits",
    "bitwise_and", "bitwise_not", "bitwise_or", "bitwise_xor", "cast", "cat", "clamp", "conv2d", "conv2d_batch_norm", "conv2d_batch_norm_relu", "conv2d_relu",
    "conv_transpose2d", "cross_entropy", "div", "dropout", "elu", "eq", "erf", "exp", "flatten", "fmod", "ge",
    "gelu", "getitem", "gt", "hardsigmoid", "hardswish", "hardtanh", "huber_loss", "interpolate", "l1_loss",
    "le",
    "leaky_relu", "linear", "log", "log_softmax", "logical_and", "logical_not", "logical_or",
    "logical_xor", "lp_pool2d", "lt", "masked_fill", "matmul", "max", "max_pool2d", "max_unpool2d", "maximum",
    "mean",
    "min", "minimum", "mse_loss", "mul", "ne", "neg", "nll_loss", "pad", "permute", "pow", "relu",
    "relu6", "remainder", "reshape", "sigmoid", "sign", "silu", "smooth_l1_loss", "softmax", "softplus",
    "sqrt", "squeeze", "stack", "std", "sub", "sum", "sum_pool2d", "tanh", "transpose", "unsqueeze",
    "var", "where",
]
