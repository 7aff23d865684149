"""Argument normalization shared by ops, layers and tools: pairs, padding, output sizes.

One place for the arithmetic every convolution and pooling needs, so a layer, the op it
calls, ``summary``, the FCN converter and the articles' tools accept the same arguments,
split "same" padding the same way and refuse bad values with the same error type
(``ShapeError``, a ``ValueError``) and message.

Conventions: pairs are (height, width); explicit paddings are (top, bottom, left, right)
(``F.pad``'s order is (left, right, top, bottom): see ``pad_widths``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ShapeError

__all__ = [
    "pair",
    "size_arg",
    "window_args",
    "conv_padding",
    "same_padding",
    "pad_widths",
    "output_size",
    "output_size_formula",
]


def _is_int(value) -> bool:
    if type(value) is int:  # the common case first: a call per argument of every conv and pool
        return True
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def pair(value, name: str, where: str) -> tuple[int, int]:
    """Normalize an int, or a sequence of one or two ints, to an (h, w) pair.

    As PyTorch's 2-D ops: ``3`` and ``(3,)`` mean ``(3, 3)``; ``(3, 5)`` is itself.

    Args:
        value: the argument as given.
        name: its name ("kernel_size", "stride", ...); where: the op or layer, for the message.

    Raises:
        ShapeError: anything else (a float, a bool, a string, three numbers), named in the message.
    """
    if type(value) is int:
        return value, value
    if type(value) is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
        return value
    if _is_int(value):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) in (1, 2) and all(_is_int(v) for v in value):
        return int(value[0]), int(value[-1])
    raise ShapeError(f"{where} expects {name} as an int or a pair of ints, got {value!r}")


def size_arg(value, name: str, where: str, minimum: int = 1) -> int:
    """Check a size argument of a layer (channels, features): an int >= ``minimum``.

    Raises:
        TypeError: not an int (a float, a bool, a string), as PyTorch.
        ShapeError: smaller than ``minimum``; the message names the layer and the argument.
    """
    if not _is_int(value):
        raise TypeError(f"{where} expects {name} to be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ShapeError(f"{where} expects {name} >= {minimum}, got {value}")
    return int(value)


def window_args(
    where: str, kernel_size, stride=None, padding=0, dilation=1, *, pool: bool = False,
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Check a sliding window's arguments when a layer is built: (kernel, stride, padding, dilation).

    Kernel, stride and dilation must be > 0 and padding >= 0; for pooling (``pool``) the
    padding may be at most half the (dilated) kernel, PyTorch's rule. ``stride=None`` means
    the kernel size (pooling's default). String paddings ("same", "valid") are checked by
    ``conv_padding``.

    Raises:
        ShapeError: naming the layer, the argument and the value.
    """
    kernel = pair(kernel_size, "kernel_size", where)
    strides = kernel if stride is None else pair(stride, "stride", where)
    dilations = pair(dilation, "dilation", where)
    for name, value in (("kernel_size", kernel), ("stride", strides), ("dilation", dilations)):
        if min(value) < 1:  # the wording of the ops' own checks (F.conv2d, F.max_pool2d)
            raise ShapeError(f"{where} expects {name} > 0, got {value}")
    pads = (0, 0) if isinstance(padding, str) else pair(padding, "padding", where)
    if min(pads) < 0:
        raise ShapeError(f"{where} expects padding >= 0, got {pads}")
    if pool and any(2 * p > d * (k - 1) + 1 for p, k, d in zip(pads, kernel, dilations)):
        raise ShapeError(
            f"{where} expects padding at most half the kernel size, got padding {pads} for kernel_size {kernel}"
        )
    return kernel, strides, pads, dilations


def same_padding(kernel: Sequence[int], dilation: Sequence[int] = (1, 1)) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding that keeps the size at stride 1 ("same").

    The total per axis is D*(K - 1); PyTorch puts the odd extra row (column) at the
    bottom (right), so an even kernel pads one more after than before.
    """
    total_h, total_w = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
    return (total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2)


def conv_padding(
    padding, kernel: Sequence[int], stride: Sequence[int] = (1, 1), dilation: Sequence[int] = (1, 1),
    where: str = "conv2d",
) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding from an int, a pair, "valid" or "same".

    Raises:
        ShapeError: "same" with a stride other than 1, another string, a negative padding,
            or a value that is not an int or a pair of ints.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if tuple(stride) != (1, 1):
                raise ShapeError(f"{where}(padding='same') needs stride 1, got stride {tuple(stride)}")
            return same_padding(kernel, dilation)
        raise ShapeError(f"{where} expects padding 'same', 'valid', an int or a pair, got {padding!r}")
    ph, pw = pair(padding, "padding", where)
    if ph < 0 or pw < 0:
        raise ShapeError(f"{where} expects padding >= 0, got {(ph, pw)}")
    return (ph, ph, pw, pw)


def pad_widths(pads: Sequence[int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) -> ``F.pad``'s (left, right, top, bottom)."""
    top, bottom, left, right = pads
    return (left, right, top, bottom)


def output_size(
    size: int, kernel: int, stride: int = 1, padding: int | Sequence[int] = 0, dilation: int = 1,
    ceil_mode: bool = False,
) -> int:
    """The number of window positions along one axis (PyTorch's rule).

    out = floor_or_ceil((size + pad_lo + pad_hi - dilation*(kernel-1) - 1) / stride) + 1,
    the articles' (W - F + 2P)/S + 1 with dilation folded into F. With ``ceil_mode`` a
    last window that would start inside the right padding is dropped.

    Args:
        padding: P on both sides, or (pad_lo, pad_hi).
    """
    pad_lo, pad_hi = (padding, padding) if _is_int(padding) else (padding[0], padding[1])
    span = dilation * (kernel - 1) + 1
    room = size + pad_lo + pad_hi - span
    if ceil_mode:
        out = -(-room // stride) + 1
        if (out - 1) * stride >= size + pad_lo:
            out -= 1
        return out
    return room // stride + 1


def output_size_formula(size: int, kernel: int, stride: int = 1, padding: int = 0) -> str:
    """``"(W - F + 2P)/S + 1"`` with the numbers filled in, e.g. ``"(28 - 5 + 2*0)/1 + 1 = 24"``."""
    exact = (size - kernel + 2 * padding) / stride + 1
    result = output_size(size, kernel, stride, padding)
    text = f"({size} - {kernel} + 2*{padding})/{stride} + 1"
    if exact != result:
        return f"floor({text}) = floor({exact:g}) = {result}"
    return f"{text} = {result}"
