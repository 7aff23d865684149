"""Smooth activations: GELU (exact and tanh-approximated), SiLU, Softplus.

Each follows PyTorch's formulas literally, so values at +-inf and NaN match too: e.g.
gelu(-inf) = -inf * 0 = NaN and its gradient at +-inf NaN, as PyTorch's.
"""

from __future__ import annotations

import math

import numpy as np

from ..backend.kernels import elementwise
from ..function import Function
from ..tensor import Tensor
from .dtypes import as_floating

__all__ = ["gelu", "silu", "softplus"]

_GELU_APPROXIMATIONS = ("none", "tanh")
_SQRT_1_2 = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_PI = math.sqrt(2.0 / math.pi)
_KAPPA = 0.044715  # the cubic coefficient of the tanh approximation (Hendrycks & Gimpel, 2016)


class GELUOp(Function):
    """Gaussian error linear unit, y = x * Phi(x) with Phi the standard normal CDF.

    approximate="none":
      forward:  y = x * cdf,  cdf = 0.5 * (1 + erf(x / sqrt(2)))
      backward: gx = gy * (cdf + x * pdf),  pdf = exp(-x**2 / 2) / sqrt(2 pi)
    approximate="tanh":
      forward:  y = 0.5 * x * (1 + t),  t = tanh(u),  u = sqrt(2/pi) * (x + 0.044715 x**3)
      backward: gx = gy * (0.5 * (1 + t) + 0.5 * x * (1 - t**2) * sqrt(2/pi) * (1 + 3 * 0.044715 x**2))

    Shapes: x, y, gy and gx all have x.shape.
    """

    def __init__(self, approximate: str):
        self.approximate = approximate

    def forward(self, x):
        xp = self.xp
        half = x.dtype.type(0.5)
        self.x = x
        if self.approximate == "tanh":
            self.t = xp.tanh(x.dtype.type(_SQRT_2_PI) * (x + x.dtype.type(_KAPPA) * x * x * x))
            with np.errstate(invalid="ignore"):  # -inf * 0 = NaN, as PyTorch
                return half * x * (1 + self.t)
        self.cdf = half * (1 + elementwise.erf(x * x.dtype.type(_SQRT_1_2)))
        with np.errstate(invalid="ignore"):
            return x * self.cdf

    def backward(self, gy):
        xp, x = self.xp, self.x
        half = x.dtype.type(0.5)
        with np.errstate(invalid="ignore", over="ignore"):
            if self.approximate == "tanh":
                t = self.t
                du = x.dtype.type(_SQRT_2_PI) * (1 + x.dtype.type(3 * _KAPPA) * x * x)
                return gy * (half * (1 + t) + half * x * (1 - t * t) * du)
            pdf = x.dtype.type(_INV_SQRT_2PI) * xp.exp(-half * x * x)
            return gy * (self.cdf + x * pdf)


class SiLUOp(Function):
    """Sigmoid linear unit (swish), y = x * sigmoid(x).

    forward:  y = x / (1 + exp(-x))
    backward: gx = gy * s * (1 + x * (1 - s)),  s = 1 / (1 + exp(-x))

    Shapes: x, y, gy and gx all have x.shape.
    """

    def forward(self, x):
        with np.errstate(over="ignore", invalid="ignore"):  # exp(-x) = inf: y = 0 (or NaN at -inf)
            self.s = 1 / (1 + self.xp.exp(-x))
            self.x = x
            return x / (1 + self.xp.exp(-x))

    def backward(self, gy):
        s = self.s
        with np.errstate(invalid="ignore"):  # inf * 0 at x = +-inf: NaN, as PyTorch
            return gy * s * (1 + self.x * (1 - s))


class SoftplusOp(Function):
    """Softplus, a smooth ReLU; linear where x * beta > threshold (for numerical stability).

    forward:  y = x                             if x * beta > threshold
              y = log(1 + exp(beta * x)) / beta otherwise
    backward: gx = gy                           if x * beta > threshold
              gx = gy * z / (z + 1),  z = exp(beta * x),  otherwise

    Shapes: x, y, gy and gx all have x.shape.
    """

    def __init__(self, beta: float, threshold: float):
        self.beta, self.threshold = beta, threshold

    def forward(self, x):
        xp = self.xp
        beta = x.dtype.type(self.beta)
        bx = x * beta
        self.linear = bx > x.dtype.type(self.threshold)
        with np.errstate(over="ignore"):  # exp overflows only where the linear branch is taken
            self.z = xp.exp(bx)
            return xp.where(self.linear, x, xp.log1p(self.z) / beta)

    def backward(self, gy):
        with np.errstate(invalid="ignore"):  # inf / inf where the linear branch is taken
            return self.xp.where(self.linear, gy, gy * self.z / (self.z + 1))


def gelu(input, approximate: str = "none") -> Tensor:
    """x * Phi(x) (Phi the standard normal CDF); approximate="tanh" uses PyTorch's tanh form.

    Raises:
        ValueError: approximate other than "none" or "tanh".
    """
    if approximate not in _GELU_APPROXIMATIONS:
        raise ValueError(f"gelu expects approximate in {_GELU_APPROXIMATIONS}, got {approximate!r}")
    return GELUOp(approximate)(as_floating(input))


def silu(input, inplace: bool = False) -> Tensor:
    """x * sigmoid(x) (``inplace``: accepted, the result is a new tensor, as ``relu``'s)."""
    return SiLUOp()(as_floating(input))


def softplus(input, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """log(1 + exp(beta * x)) / beta, and x itself where x * beta > threshold."""
    return SoftplusOp(beta, threshold)(as_floating(input))
