"""Layers that pass their input on unchanged or reshaped: Identity and Flatten."""

from __future__ import annotations

from typing import Any

from .. import functional as F
from ..config import accepts_rng
from ..errors import ShapeError
from ..tensor import Tensor
from .module import Module

__all__ = ["Identity", "Flatten"]


class Identity(Module):
    """Return the input unchanged (a placeholder, e.g. for a removed classifier head).

    Accepts and ignores any constructor arguments, as PyTorch's. Shape: any, unchanged.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__()

    def forward(self, x: Any) -> Any:
        return x


class Flatten(Module):
    """Merge dimensions ``start_dim`` to ``end_dim`` into one.

    Shape: (N, C, H, W) -> (N, C*H*W) with the defaults.
    """

    @accepts_rng
    def __init__(self, start_dim: int = 1, end_dim: int = -1, *, generator=None):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: Tensor) -> Tensor:
        nd = max(x.ndim, 1)
        if not (-nd <= self.start_dim < nd and -nd <= self.end_dim < nd):
            raise ShapeError(
                f"expected input with dimensions {self.start_dim} and {self.end_dim}, got shape {tuple(x.shape)}"
            )
        return F.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
