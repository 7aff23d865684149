"""Trigonometric ops: sine and cosine (the explainer articles' toy graph uses them)."""

from __future__ import annotations

from ..function import Function
from ..tensor import Tensor

__all__ = ["SinOp", "CosOp", "sin", "cos"]


class CosOp(Function):
    """Elementwise cosine.

    forward:   y = cos(x)
    backward: gx = -gy * sin(x)

    Shapes: x, y, gy and gx all have x.shape.
    """

    def forward(self, x):
        self.x = x
        return self.xp.cos(x)

    def backward(self, gy):
        return -gy * self.xp.sin(self.x)


class SinOp(Function):
    """Elementwise sine.

    forward:   y = sin(x)
    backward: gx = gy * cos(x)

    Shapes: x, y, gy and gx all have x.shape.
    """

    def forward(self, x):
        self.x = x
        return self.xp.sin(x)

    def backward(self, gy):
        return gy * self.xp.cos(self.x)


def cos(x: Tensor) -> Tensor:
    return CosOp()(x)


def sin(x: Tensor) -> Tensor:
    return SinOp()(x)
