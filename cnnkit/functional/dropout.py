"""Dropout."""

from __future__ import annotations

import numpy as np

from .. import config
from ..function import Function
from ..tensor import Tensor

__all__ = ["dropout", "DropoutOp"]


class DropoutOp(Function):
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p).

    forward:  y = x * mask / (1 - p),  mask ~ Bernoulli(1 - p)
    backward: gx = gy * mask / (1 - p)

    Shapes: y, gy, gx all have x.shape.
    """

    def __init__(self, p: float, generator: np.random.Generator):
        self.p, self.generator = p, generator

    def forward(self, x):
        keep = self.generator.random(x.shape, dtype=np.float64 if x.dtype == np.float64 else np.float32) >= self.p
        self.scale = keep * x.dtype.type(1.0 / (1.0 - self.p)) if self.p < 1 else keep.astype(x.dtype)
        return x * self.scale

    def backward(self, gy):
        return gy * self.scale


def dropout(
    input, p: float = 0.5, training: bool = True, inplace: bool = False, *,
    generator: np.random.Generator | None = None,
) -> Tensor:
    """Zero elements with probability ``p`` while ``training``; identity otherwise.

    Args:
        inplace: accepted for PyTorch compatibility; the result is always a new tensor.
        generator: the ``numpy.random.Generator`` drawing the mask; defaults to cnnkit's
            default generator (``cnnkit.manual_seed`` seeds it).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout expects p in [0, 1], got {p}")
    input = input if isinstance(input, Tensor) else Tensor(input)
    if not training or p == 0.0:
        return input
    if input.dtype.kind != "f":
        raise TypeError(f"dropout expects a floating input (its survivors are scaled by 1/(1-p)), got {input.dtype}")
        return input
    return DropoutOp(p, generator if generator is not None else config.default_generator())(input)
