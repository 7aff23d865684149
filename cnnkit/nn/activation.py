"""Activation layers: ReLU, LeakyReLU, ELU, Sigmoid, Tanh, Softmax, LogSoftmax, GELU, SiLU,
Softplus, Hardtanh, ReLU6, Hardsigmoid, Hardswish.

Each wraps its op in ``cnnkit.functional``. ``inplace=True`` is accepted for PyTorch
compatibility (torchvision's models pass it) but the result is always a new tensor:
an in-place update would corrupt arrays saved for backward.
"""

from __future__ import annotations

from .. import functional as F
from ..config import accepts_rng
from ..tensor import Tensor
from .module import Module

__all__ = [
    "ReLU", "LeakyReLU", "ELU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "GELU", "SiLU", "Softplus",
    "Hardtanh", "ReLU6", "Hardsigmoid", "Hardswish",
]


def _inplace(inplace: bool) -> str:
    return "inplace=True" if inplace else ""


class ReLU(Module):
    """y = max(x, 0).  Shape: any, unchanged. ``generator`` is unused (every layer accepts it)."""

    @accepts_rng
    def __init__(self, inplace: bool = False, *, generator=None):
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)

    def extra_repr(self) -> str:
        return _inplace(self.inplace)


class LeakyReLU(Module):
    """y = x if x > 0 else negative_slope * x.  Shape: any, unchanged."""

    @accepts_rng
    def __init__(self, negative_slope: float = 0.01, inplace: bool = False, *, generator=None):
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class ELU(Module):
    """y = x if x > 0 else alpha * (exp(x) - 1).  Shape: any, unchanged."""

    @accepts_rng
    def __init__(self, alpha: float = 1.0, inplace: bool = False, *, generator=None):
        super().__init__()
        self.alpha, self.inplace = alpha, inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.elu(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class Sigmoid(Module):
    """y = 1 / (1 + exp(-x)).  Shape: any, unchanged."""

    @accepts_rng
    def __init__(self, *, generator=None):
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)


class Tanh(Module):
    """y = tanh(x).  Shape: any, unchanged."""

    @accepts_rng
    def __init__(self, *, generator=None):
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return F.tanh(x)


def _implicit_dim(ndim: int) -> int:
    """PyTorch's legacy choice when Softmax(dim=None): 0 for 0-, 1- and 3-d inputs, else 1."""
    return 0 if ndim in (0, 1, 3) else 1


class Softmax(Module):
    """Probabilities along ``dim``: y = exp(x) / sum(exp(x)).

    Args:
        dim: the class axis; None picks PyTorch's legacy default (1 for (N, K) input).

    Shape: any, unchanged; slices along ``dim`` sum to 1.
    """

    @accepts_rng
    def __init__(self, dim: int | None = None, *, generator=None):
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return F.softmax(x, self.dim if self.dim is not None else _implicit_dim(x.ndim))

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """Log-probabilities along ``dim``: y = x - log(sum(exp(x))), computed stably.

    Args:
        dim: the class axis; None picks PyTorch's legacy default (1 for (N, K) input).

    Shape: any, unchanged.
    """

    @accepts_rng
    def __init__(self, dim: int | None = None, *, generator=None):
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return F.log_softmax(x, self.dim if self.dim is not None else _implicit_dim(x.ndim))

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class GELU(Module):
    """y = x * Phi(x) (Phi the standard normal CDF; approximate="tanh": PyTorch's tanh form).

    Shape: any, unchanged.
    """

    @accepts_rng
    def __init__(self, approximate: str = "none", *, generator=None):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU expects approximate in ('none', 'tanh'), got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(Module):
    """y = x * sigmoid(x).  Shape: any, unchanged."""

    @accepts_rng
    def __init__(self, inplace: bool = False, *, generator=None):
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x)

    def extra_repr(self) -> str:
        return _inplace(self.inplace)


class Softplus(Module):
    """y = log(1 + exp(beta * x)) / beta, and x where x * beta > threshold.  Shape: any, unchanged."""

    @accepts_rng
    def __init__(self, beta: float = 1.0, threshold: float = 20.0, *, generator=None):
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, x: Tensor) -> Tensor:
        return F.softplus(x, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class Hardtanh(Module):
    """y = min(max(x, min_val), max_val).  Shape: any, unchanged."""

    @accepts_rng
    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False, *, generator=None):
        super().__init__()
        if min_val > max_val:
            raise ValueError(f"Hardtanh expects min_val <= max_val, got min_val={min_val}, max_val={max_val}")
        self.min_val, self.max_val, self.inplace = min_val, max_val, inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.hardtanh(x, self.min_val, self.max_val)

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}" + (", inplace=True" if self.inplace else "")


class ReLU6(Hardtanh):
    """y = min(max(x, 0), 6).  Shape: any, unchanged."""

    @accepts_rng
    def __init__(self, inplace: bool = False, *, generator=None):
        super().__init__(0.0, 6.0, inplace)

    def extra_repr(self) -> str:
        return _inplace(self.inplace)


class Hardsigmoid(Module):
    """y = min(max(x + 3, 0), 6) / 6.  Shape: any, unchanged."""

    @accepts_rng
    def __init__(self, inplace: bool = False, *, generator=None):
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.hardsigmoid(x)

    def extra_repr(self) -> str:
        return _inplace(self.inplace)


class Hardswish(Module):
    """y = x * min(max(x + 3, 0), 6) / 6.  Shape: any, unchanged."""

    @accepts_rng
    def __init__(self, inplace: bool = False, *, generator=None):
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return F.hardswish(x)

    def extra_repr(self) -> str:
        return _inplace(self.inplace)
