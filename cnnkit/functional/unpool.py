"""Max unpooling: a max pool's outputs put back where their maxima were, zeros elsewhere."""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..function import Function
from ..tensor import Tensor
from .args import pair

__all__ = ["max_unpool2d", "MaxUnpool2dOp"]


class MaxUnpool2dOp(Function):
    """The partial inverse of max pooling: each value goes to the flat index its maximum came from.

    forward:  y[n, c, indices[n, c, i, j]] = x[n, c, i, j] (y viewed as (N, C, OH*OW)), 0 elsewhere
    backward: gx[n, c, i, j] = gy[n, c, indices[n, c, i, j]] (a gather; indices get no gradient)

    Shapes: x and indices (N, C, H, W) -> y (N, C, OH, OW).
    """

    def __init__(self, indices, out_hw: tuple[int, int]):
        self.indices, self.out_hw = indices, out_hw

    def forward(self, x):
        N, C, H, W = x.shape
        OH, OW = self.out_hw
        flat = self.indices.reshape(N, C, H * W)                      # (N, C, H*W)
        y = self.xp.zeros((N, C, OH * OW), dtype=x.dtype)
        self.xp.put_along_axis(y, flat, x.reshape(N, C, H * W), axis=2)
        if self.saves_for_backward:
            self.flat, self.x_shape = flat, x.shape
        return y.reshape(N, C, OH, OW)                                # (N, C, OH, OW)

    def backward(self, gy):
        N, C = gy.shape[:2]
        g = gy.reshape(N, C, -1)                                      # (N, C, OH*OW)
        return self.xp.take_along_axis(g, self.flat, axis=2).reshape(self.x_shape)


def _output_hw(x_hw, kernel, stride, padding, output_size) -> tuple[int, int]:
    """(OH, OW): (H - 1)*SH - 2*PH + KH by default; a given size must be within a stride of that (PyTorch's rule)."""
    default = tuple((n - 1) * s - 2 * p + k for n, k, s, p in zip(x_hw, kernel, stride, padding, strict=True))
    if output_size is None:
        if min(default) < 1:
            raise ShapeError(f"max_unpool2d output size {default} is not positive for input size {tuple(x_hw)}, "
                             f"kernel_size {kernel}, stride {stride}, padding {padding}")
        return default
    size = tuple(output_size)
    if len(size) == 4:                                                # (N, C, OH, OW): the last two count
        size = size[2:]
    if len(size) != 2:
        raise ValueError(f"max_unpool2d expects output_size of 2 or 4 elements, got {tuple(output_size)}")
    for d, (wanted, base, s) in enumerate(zip(size, default, stride, strict=True)):
        if not base - s < wanted < base + s:
            raise ValueError(f"max_unpool2d expects output_size {tuple(output_size)} within a stride of the "
                             f"default {default}: dimension {d} must be between {base - s} and {base + s}, "
                             "exclusive")
    return (int(size[0]), int(size[1]))


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None) -> Tensor:
    """Undo a ``max_pool2d(..., return_indices=True)``: its values at its indices, zeros elsewhere, as PyTorch's.

    Args:
        input: the pooled values (N, C, H, W) or (C, H, W).
        indices: the pool's indices, int64, of the input's shape (flat h * W + w per plane).
        kernel_size, stride (default: kernel_size), padding: the pool's, int or pair.
        output_size: (OH, OW) or (N, C, OH, OW), to recover an input size the pool rounded
            down; default (H - 1)*SH - 2*PH + KH.

    Shape: (N, C, H, W) -> (N, C, OH, OW).

    Raises:
        TypeError: indices that are not integers. ShapeError: indices of another shape than
        the input. ValueError: an index outside the output plane, or an output_size too far
        from the default.
    """
    x = input if isinstance(input, Tensor) else Tensor(input)
    idx = indices.data if isinstance(indices, Tensor) else np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"max_unpool2d expects integer (int64) indices, got dtype {idx.dtype}")
    if x.ndim not in (3, 4):
        raise ShapeError(f"max_unpool2d expects input of shape (N, C, H, W) or (C, H, W), got {x.shape}")
    if idx.shape != x.shape:
        raise ShapeError(f"max_unpool2d expects indices of the input's shape {x.shape}, got {idx.shape}")
    kernel = pair(kernel_size, "kernel_size", "max_unpool2d")
    stride = kernel if stride is None else pair(stride, "stride", "max_unpool2d")
    padding = pair(padding, "padding", "max_unpool2d")
    OH, OW = _output_hw(x.shape[-2:], kernel, stride, padding, output_size)
    outside = (idx < 0) | (idx >= OH * OW)
    if outside.any():
        bad = int(idx.reshape(-1)[outside.reshape(-1).argmax()])        # the first, in memory order
        raise ValueError(f"max_unpool2d found index {bad}, outside the output plane of {OH}x{OW} "
                         f"(indices 0 to {OH * OW - 1})")
    if x.ndim == 3:
        y = MaxUnpool2dOp(idx.reshape((1,) + idx.shape), (OH, OW))(x.reshape((1,) + x.shape))
        return y.reshape(y.shape[1:])
    return MaxUnpool2dOp(idx, (OH, OW))(x)
