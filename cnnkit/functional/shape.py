"""Ops that move values around without arithmetic: reshape, transpose, index, pad, cat, stack."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ShapeError
from ..function import Function
from ..tensor import Tensor

__all__ = ["reshape", "transpose", "getitem", "flatten", "pad", "cat", "stack"]


class ReshapeOp(Function):
    """forward: y = x.reshape(shape);  backward: gx = gy.reshape(x.shape)"""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(shape)

    def forward(self, x):
        self.x_shape = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ShapeError(
                f"reshape cannot turn an input of shape {x.shape} ({x.size} elements) "
                f"into shape {self.shape}"
            ) from None

    def backward(self, gy):
        return gy.reshape(self.x_shape)


class TransposeOp(Function):
    """forward: y = x.transpose(axes);  backward: gx = gy.transpose(inverse(axes))"""

    def __init__(self, axes: Sequence[int] | None):
        self.axes = None if axes is None else tuple(axes)

    def forward(self, x):
        if self.axes is None:
            self.axes = tuple(reversed(range(x.ndim)))
        if sorted(a % x.ndim for a in self.axes) != list(range(x.ndim)):
            raise ShapeError(
                f"transpose expects a permutation of {x.ndim} axes, got {self.axes} "
                f"for input shape {x.shape}"
            )
        return x.transpose(self.axes)

    def backward(self, gy):
        return gy.transpose(np.argsort([a % gy.ndim for a in self.axes]))


class GetItemOp(Function):
    """Indexing and slicing.

    forward:  y = x[index]
    backward: gx = zeros_like(x); gx[index] += gy  (np.add.at for advanced indices, so
              repeated indices accumulate)
    """

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.x_shape, self.x_dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, gy):
        xp = self.xp
        gx = xp.zeros(self.x_shape, dtype=self.x_dtype)
        if _is_basic_index(self.index):
            gx[self.index] = gy  # basic indices select each element at most once
        else:
            xp.add.at(gx, self.index, gy)
        return gx


def _is_basic_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, (int, np.integer, slice)) for i in items)


class PadOp(Function):
    """Pad the last dimensions (PyTorch's ``F.pad`` argument order).

    forward:  y = np.pad(x, widths, mode)   pad = (left, right, top, bottom, ...) from the
              last dimension backwards; negative widths crop.
    backward: constant: gx = gy cropped back;  reflect/replicate/circular: each padded
              element's gradient is added to the input element it copied.
    """

    _MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}

    def __init__(self, pad: Sequence[int], mode: str, value: float):
        if len(pad) % 2:
            raise ValueError(f"pad expects an even number of widths, got {tuple(pad)}")
        if mode not in self._MODES:
            raise ValueError(f"pad mode must be one of {sorted(self._MODES)}, got {mode!r}")
        self.pad, self.mode, self.value = tuple(int(p) for p in pad), mode, value

    def forward(self, x):
        k = len(self.pad) // 2
        if k > x.ndim:
            raise ShapeError(f"pad got {k} pairs of widths for an input of shape {x.shape}")
        self.x_shape = x.shape
        # widths per axis, first axis first
        widths = [(0, 0)] * (x.ndim - k) + [
            (self.pad[2 * i], self.pad[2 * i + 1]) for i in reversed(range(k))
        ]
        self.widths = widths
        crop = tuple(
            slice(max(-lo, 0), n - max(-hi, 0)) for (lo, hi), n in zip(widths, x.shape)
        )
        x = x[crop]
        pos = [(max(lo, 0), max(hi, 0)) for lo, hi in widths]
        if self.mode == "constant":
            return self.xp.pad(x, pos, mode="constant", constant_values=self.value)
        for (lo, hi), n in zip(pos, x.shape):
            if self.mode == "reflect" and (lo >= n or hi >= n):
                raise ShapeError(
                    f"pad(mode='reflect') needs widths smaller than the dimension, got "
                    f"{(lo, hi)} for size {n} (input shape {self.x_shape})"
                )
        return self.xp.pad(x, pos, mode=self._MODES[self.mode])

    def backward(self, gy):
        xp = self.xp
        cropped = [n - max(-lo, 0) - max(-hi, 0) for (lo, hi), n in zip(self.widths, self.x_shape)]
        g = gy
        for axis, ((lo, hi), n) in enumerate(zip(self.widths, cropped)):
            lo, hi = max(lo, 0), max(hi, 0)
            if lo == 0 and hi == 0:
                continue
            if self.mode == "constant":
                g = xp.take(g, xp.arange(lo, lo + n), axis=axis)
                continue
            # source index in the unpadded axis of every padded position
            src = np.pad(np.arange(n), (lo, hi), mode=self._MODES[self.mode])
            moved = xp.moveaxis(g, axis, 0)
            acc = xp.zeros((n,) + moved.shape[1:], dtype=g.dtype)
            xp.add.at(acc, xp.asarray(src), moved)
            g = xp.moveaxis(acc, 0, axis)
        gx = xp.zeros(self.x_shape, dtype=gy.dtype)
        crop = tuple(
            slice(max(-lo, 0), n - max(-hi, 0)) for (lo, hi), n in zip(self.widths, self.x_shape)
        )
        gx[crop] = g
        return gx


class ConcatOp(Function):
    """forward: y = concatenate(xs, axis);  backward: gx_i = gy split at the inputs' sizes"""

    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, *xs):
        try:
            y = self.xp.concatenate(xs, axis=self.axis)
        except ValueError:
            raise ShapeError(
                f"cat(dim={self.axis}) needs inputs equal in every other dimension, got "
                f"shapes {[x.shape for x in xs]}"
            ) from None
        self.sizes = [x.shape[self.axis] for x in xs]
        return y

    def backward(self, gy):
        splits = np.cumsum(self.sizes)[:-1]
        return tuple(self.xp.split(gy, splits, axis=self.axis))


class StackOp(Function):
    """forward: y = stack(xs, axis);  backward: gx_i = gy.take(i, axis)"""

    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, *xs):
        if len({x.shape for x in xs}) > 1:
            raise ShapeError(f"stack needs inputs of one shape, got {[x.shape for x in xs]}")
        return self.xp.stack(xs, axis=self.axis)

    def backward(self, gy):
        return tuple(self.xp.moveaxis(gy, self.axis, 0))


def reshape(x, shape: Sequence[int]) -> Tensor:
    return ReshapeOp(tuple(shape))(x)


def transpose(x, axes: Sequence[int] | None = None) -> Tensor:
    return TransposeOp(axes)(x)


def getitem(x, index) -> Tensor:
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return GetItemOp(index)(x)


def flatten(x, start_dim: int = 1, end_dim: int = -1) -> Tensor:
    """Merge dimensions ``start_dim..end_dim`` into one (default: all but the batch axis).

    Shape: (N, C, H, W) -> (N, C*H*W) with the defaults.
    """
    shape = x.shape
    nd = len(shape)
    if nd == 0:
        return reshape(x, (1,))
    start, end = start_dim % nd, end_dim % nd
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {shape}")
    merged = 1
    for n in shape[start : end + 1]:
        merged *= n
    return reshape(x, shape[:start] + (merged,) + shape[end + 1 :])


def pad(x, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> Tensor:
    """Pad the last ``len(pad) // 2`` dimensions, as ``torch.nn.functional.pad``."""
    return PadOp(pad, mode, value)(x)


def cat(tensors: Sequence, dim: int = 0) -> Tensor:
    """Concatenate along an existing dimension."""
    return ConcatOp(dim)(*tensors)


def stack(tensors: Sequence, dim: int = 0) -> Tensor:
    """Stack along a new dimension."""
    return StackOp(dim)(*tensors)
