"""Remainders of a division: fmod (the sign of the dividend) and remainder (the sign of the divisor).

``fmod`` is C's fmod, ``torch.fmod`` and ONNX's ``Mod(fmod=1)``; ``remainder`` is Python's
``%``, ``torch.remainder`` and ONNX's ``Mod(fmod=0)``. Both are exact for floats (NumPy's
fmod and remainder compute the remainder without rounding). ``div(rounding_mode=...)`` is
in ``math.py``.
"""

from __future__ import annotations

import numpy as np

from ..function import Function
from ..tensor import Tensor
from .math import _binary, sum_to

__all__ = ["fmod", "remainder"]


class RemainderOp(Function):
    """What is left of a after taking away a whole multiple of b, with broadcasting.

    forward:  y = a - b * q,  q = trunc(a / b) (fmod) or floor(a / b) (remainder);
              floats: y has a's sign (fmod) or b's (remainder), x % 0 is NaN;
              integers stay integers (a zero divisor raises)
    backward: ga = sum_to(gy, a.shape), gb = sum_to(-gy * q, b.shape)  (PyTorch's rule)

    Shapes: y and gy have the broadcast shape of a and b.
    """

    def __init__(self, rounding: str):
        self.rounding = rounding  # "trunc" (fmod) or "floor" (remainder)

    def forward(self, a, b):
        xp = self.xp
        name = "fmod" if self.rounding == "trunc" else "remainder"
        if a.dtype.kind == "b":
            raise TypeError(f"{name} is not defined for bool tensors, as in PyTorch")
        if a.dtype.kind in "iu" and (b == 0).any():
            raise ZeroDivisionError(f"{name}: integer division by zero")
        self.a_shape = a.shape
        if self.saves_for_backward:
            self.a, self.b = a, b
        with np.errstate(divide="ignore", invalid="ignore"):  # x % 0: NaN, silently as PyTorch
            return xp.fmod(a, b) if self.rounding == "trunc" else xp.remainder(a, b)

    def backward(self, gy):
        need_a, need_b = self.needs_input_grad
        gb = None
        if need_b:
            xp = self.xp
            with np.errstate(divide="ignore", invalid="ignore"):
                q = xp.trunc(self.a / self.b) if self.rounding == "trunc" else xp.floor_divide(self.a, self.b)
                gb = sum_to(-gy * q, self.b.shape)
        return (sum_to(gy, self.a_shape) if need_a else None), gb


def fmod(a, b) -> Tensor:
    """The remainder of a / b with a's sign (C's fmod), as torch.fmod."""
    return _binary(lambda: RemainderOp("trunc"), a, b)


def remainder(a, b) -> Tensor:
    """The remainder of a / b with b's sign (Python's %), as torch.remainder."""
    return _binary(lambda: RemainderOp("floor"), a, b)
