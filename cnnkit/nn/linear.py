"""The fully connected layer."""

from __future__ import annotations

import math

from .. import config
from .. import functional as F
from ..config import accepts_rng
from ..errors import ShapeError
from ..functional.args import size_arg
from ..tensor import Tensor
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["Linear"]


class Linear(Module):
    """Fully connected layer: y = x @ W.T + b.

    Args:
        in_features, out_features: D_in and D_out.
        bias: learn a bias.
        generator: generator for the initial weights (default: cnnkit's default generator).
        dtype: parameter dtype (default: ``cnnkit.get_default_dtype()``).

    Attributes:
        weight: (out_features, in_features), init U(-1/sqrt(in_features), 1/sqrt(in_features))
            (PyTorch's kaiming_uniform with a = sqrt(5)).
        bias: (out_features,) with the same bound, or None.

    Shape: x (*, in_features) -> y (*, out_features).

    Raises:
        ShapeError: the last dimension of the input is not in_features.
    """

    @accepts_rng
    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, generator=None, dtype=None):
        super().__init__()
        # zero features are allowed, as PyTorch (an empty weight); negative ones are not
        size_arg(in_features, "in_features", "Linear", minimum=0)
        size_arg(out_features, "out_features", "Linear", minimum=0)
        self.in_features, self.out_features = in_features, out_features
        generator = generator if generator is not None else config.default_generator()
        shape = (out_features, in_features)
        self.weight = Parameter(init.kaiming_uniform(shape, a=math.sqrt(5), generator=generator, dtype=dtype))
        if bias:
            bound = 1 / math.sqrt(in_features) if in_features > 0 else 0.0
            self.bias = Parameter(init.uniform((out_features,), -bound, bound, generator=generator, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ShapeError(
                f"expected input with {self.in_features} feature{'s' if self.in_features != 1 else ''}, of shape (*, {self.in_features}); "
                f"got shape {tuple(x.shape)}"
            )
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
