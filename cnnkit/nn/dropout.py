"""Dropout: reads the module's own ``training`` flag."""

from __future__ import annotations

import numpy as np

from .. import config
from .. import functional as F
from ..config import accepts_rng
from ..tensor import Tensor
from .module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    """In training, zero each element with probability p and scale the rest by 1/(1-p).

    In eval mode (``model.eval()``) it returns the input unchanged.

    Args:
        p: drop probability in [0, 1].
        inplace: accepted for PyTorch compatibility; the result is always a new tensor.
        generator: generator for the masks. None draws from cnnkit's default generator, looked up
            at each call, so ``cnnkit.manual_seed`` governs it.

    Shape: any, unchanged.
    """

    @accepts_rng
    def __init__(self, p: float = 0.5, inplace: bool = False, *, generator: np.random.Generator | None = None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout expects p in [0, 1], got {p}")
        self.p, self.inplace, self.generator = p, inplace, generator

    def forward(self, x: Tensor) -> Tensor:
        generator = self.generator if self.generator is not None else config.default_generator()
        return F.dropout(x, self.p, self.training, generator=generator)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"
