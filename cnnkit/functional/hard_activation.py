"""Piecewise-linear activations: hardtanh, relu6, hardsigmoid, hardswish.

Gradients at the kinks and at NaN are PyTorch's. At NaN PyTorch's CPU kernels disagree with
themselves (its scalar tail passes gy on for hardtanh / relu6 / hardswish); cnnkit follows its
vectorized loops, which every element of a large tensor takes: a NaN input gets gradient 0
from hardtanh / relu6 / hardsigmoid and NaN from hardswish.
"""

from __future__ import annotations

import numpy as np

from ..function import Function
from ..tensor import Tensor
from .dtypes import as_floating

__all__ = ["hardtanh", "relu6", "hardsigmoid", "hardswish"]

_ONE_SIXTH_F32 = float(np.float32(1.0) / np.float32(6.0))


class HardtanhOp(Function):
    """Clip to [min_val, max_val].

    forward:  y = min(max(x, min_val), max_val)   (NaN stays NaN)
    backward: gx = gy where min_val < x < max_val, else 0   (0 at both kinks and at NaN)

    Shapes: x, y, gy and gx all have x.shape.
    """

    def __init__(self, min_val: float, max_val: float):
        self.min_val, self.max_val = min_val, max_val

    def forward(self, x):
        lo, hi = x.dtype.type(self.min_val), x.dtype.type(self.max_val)
        self.inside = (x > lo) & (x < hi)
        return self.xp.minimum(self.xp.maximum(x, lo), hi)

    def backward(self, gy):
        return self.xp.where(self.inside, gy, gy.dtype.type(0))


class HardsigmoidOp(Function):
    """Piecewise-linear sigmoid.

    forward:  y = min(max(x + 3, 0), 6) / 6       (NaN stays NaN)
    backward: gx = gy * c where -3 < x < 3, else 0  (0 at both kinks and at NaN), c = 1/6 as a
              float32 number (0.16666667163...), in float64 too: PyTorch's constant

    Shapes: x, y, gy and gx all have x.shape.
    """

    def forward(self, x):
        three, six = x.dtype.type(3), x.dtype.type(6)
        self.inside = (x > -three) & (x < three)
        return self.xp.minimum(self.xp.maximum(x + three, 0), six) / six

    def backward(self, gy):
        return self.xp.where(self.inside, gy * gy.dtype.type(_ONE_SIXTH_F32), gy.dtype.type(0))


class HardswishOp(Function):
    """x * hardsigmoid(x) (Howard et al., 2019, MobileNetV3).

    forward:  y = x * min(max(x + 3, 0), 6) / 6
    backward: gx = 0 where x <= -3, gy where x >= 3, gy * (x / 3 + 0.5) elsewhere
              (so NaN at a NaN input)

    Shapes: x, y, gy and gx all have x.shape.
    """

    def forward(self, x):
        xp = self.xp
        three, six = x.dtype.type(3), x.dtype.type(6)
        self.x = x
        with np.errstate(invalid="ignore"):  # -inf * 0 = NaN, as PyTorch
            return x * xp.minimum(xp.maximum(x + three, 0), six) / six

    def backward(self, gy):
        xp, x = self.xp, self.x
        three = x.dtype.type(3)
        middle = gy * (x / three + x.dtype.type(0.5))
        return xp.where(x <= -three, gy.dtype.type(0), xp.where(x >= three, gy, middle))


def hardtanh(input, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> Tensor:
    """min(max(x, min_val), max_val) (``inplace``: accepted, the result is a new tensor).

    Raises:
        ValueError: min_val > max_val.
    """
    if min_val > max_val:
        raise ValueError(f"hardtanh expects min_val <= max_val, got min_val={min_val}, max_val={max_val}")
    return HardtanhOp(min_val, max_val)(as_floating(input))


def relu6(input, inplace: bool = False) -> Tensor:
    """min(max(x, 0), 6): hardtanh(x, 0, 6), gradients included, as PyTorch."""
    return HardtanhOp(0.0, 6.0)(as_floating(input))


def hardsigmoid(input, inplace: bool = False) -> Tensor:
    """min(max(x + 3, 0), 6) / 6."""
    return HardsigmoidOp()(as_floating(input))


def hardswish(input, inplace: bool = False) -> Tensor:
    """x * min(max(x + 3, 0), 6) / 6."""
    return HardswishOp()(as_floating(input))
