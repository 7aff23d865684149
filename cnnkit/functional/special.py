"""Special functions: the error function erf (GELU's Phi is 0.5 * (1 + erf(x / sqrt(2))))."""

from __future__ import annotations

import math

import numpy as np

from ..backend.kernels import elementwise
from ..function import Function
from ..tensor import Tensor
from .dtypes import as_floating

__all__ = ["ErfOp", "erf"]

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


class ErfOp(Function):
    """Elementwise error function, as torch.erf.

    forward:   y = erf(x) = 2 / sqrt(pi) * integral from 0 to x of exp(-t**2) dt
    backward: gx = gy * 2 / sqrt(pi) * exp(-x**2)

    Shapes: x, y, gy and gx all have x.shape.
    """

    def forward(self, x):
        self.x = x
        return elementwise.erf(x)

    def backward(self, gy):
        x = self.x
        with np.errstate(over="ignore"):  # exp(-inf) = 0: the gradient at +-inf is 0, as PyTorch's
            return gy * (x.dtype.type(_TWO_OVER_SQRT_PI) * self.xp.exp(-x * x))


def erf(input: Tensor) -> Tensor:  # noqa: A002 - PyTorch's argument name
    """The error function of each element (integers become the default float dtype, as torch.erf)."""
    return ErfOp()(as_floating(input))
