"""Pooling layers: max (and max unpooling), average, sum, Lp and adaptive pooling. None has parameters."""

from __future__ import annotations

from .. import functional as F
from ..config import accepts_rng
from ..errors import ShapeError
from ..functional.args import pair, window_args
from ..tensor import Tensor
from .module import Module

__all__ = [
    "MaxPool2d", "MaxUnpool2d", "AvgPool2d", "SumPool2d", "LPPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d",
]


def _check_image(x) -> None:
    if x.ndim not in (3, 4):
        raise ShapeError(f"expected input of shape (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")


def _check_output_size(layer: str, output_size) -> None:
    """An adaptive pooling's output size: an int >= 1, or a pair of them (None keeps a dimension)."""
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,)
    if not 1 <= len(sizes) <= 2 or not all(s is None or (isinstance(s, int) and not isinstance(s, bool) and s >= 1)
                                           for s in sizes):
        raise ShapeError(f"{layer} expects output_size as an int >= 1 or a pair of them (None keeps that "
                         f"dimension), got {output_size!r}")


class MaxPool2d(Module):
    """Max pooling over KH x KW windows (padding counts as -inf).

    Args:
        kernel_size, stride (default: kernel_size), padding, dilation: int or pair.
        ceil_mode: round the output size up instead of down.
        return_indices: also return each maximum's flat index in its input plane (int64,
            the output's shape), for ``MaxUnpool2d``.
        generator: unused (every layer accepts it).

    Shape: (N, C, H, W) or (C, H, W) -> (N, C, OH, OW),
    OH = floor((H + 2*PH - DH*(KH - 1) - 1) / SH) + 1 (likewise OW).
    """

    @accepts_rng
    def __init__(
        self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False,
        ceil_mode: bool = False, *, generator=None,
    ):
        super().__init__()
        window_args("MaxPool2d", kernel_size, stride, padding, dilation, pool=True)
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        _check_image(x)
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                            self.return_indices)

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )


class MaxUnpool2d(Module):
    """The partial inverse of MaxPool2d: each value back where its maximum was, zeros elsewhere.

    Args:
        kernel_size, stride (default: kernel_size), padding: the pool's, int or pair.
        generator: unused (every layer accepts it).

    ``forward(x, indices, output_size=None)``: ``indices`` from ``MaxPool2d(return_indices=True)``;
    ``output_size`` recovers an input size the pool rounded down.

    Shape: (N, C, H, W) or (C, H, W) -> (N, C, OH, OW), OH = (H - 1)*SH - 2*PH + KH by default.
    """

    @accepts_rng
    def __init__(self, kernel_size, stride=None, padding=0, *, generator=None):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size", "MaxUnpool2d")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", "MaxUnpool2d")
        self.padding = pair(padding, "padding", "MaxUnpool2d")

    def forward(self, x: Tensor, indices, output_size=None) -> Tensor:
        return F.max_unpool2d(x, indices, self.kernel_size, self.stride, self.padding, output_size)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(Module):
    """Average pooling over KH x KW windows.

    Args:
        kernel_size, stride (default: kernel_size), padding: int or pair.
        ceil_mode: round the output size up instead of down.
        count_include_pad: divide by the full window area including zero padding.
        divisor_override: divide by this number instead.
        generator: unused (every layer accepts it).

    Shape: (N, C, H, W) or (C, H, W) -> (N, C, OH, OW), OH = floor((H + 2*PH - KH) / SH) + 1.
    """

    @accepts_rng
    def __init__(
        self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
        count_include_pad: bool = True, divisor_override: int | None = None, *, generator=None,
    ):
        super().__init__()
        window_args("AvgPool2d", kernel_size, stride, padding, pool=True)
        if divisor_override is not None and (not isinstance(divisor_override, int) or divisor_override == 0):
            raise ValueError(f"AvgPool2d expects divisor_override to be a non-zero int or None, got {divisor_override!r}")
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.ceil_mode = padding, ceil_mode
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def forward(self, x: Tensor) -> Tensor:
        _check_image(x)
        return F.avg_pool2d(
            x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
            self.count_include_pad, self.divisor_override,
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class SumPool2d(Module):
    """Sum pooling: each output is the sum of its window (not in PyTorch; AvgPool2d times KH*KW).

    Args:
        kernel_size, stride (default: kernel_size), padding: int or pair; ceil_mode.
        generator: unused (every layer accepts it).

    Shape: (N, C, H, W) or (C, H, W) -> (N, C, OH, OW), OH = floor((H + 2*PH - KH) / SH) + 1.
    """

    @accepts_rng
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False, *, generator=None):
        super().__init__()
        window_args("SumPool2d", kernel_size, stride, padding, pool=True)
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.ceil_mode = padding, ceil_mode

    def forward(self, x: Tensor) -> Tensor:
        _check_image(x)
        return F.sum_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class LPPool2d(Module):
    """Power-average pooling: y = (sum over the window of x**p) ** (1/p).

    Args:
        norm_type: p (1 is sum pooling; large p approaches max pooling).
        kernel_size, stride (default: kernel_size): int or pair; ceil_mode.
        generator: unused (every layer accepts it).

    Shape: (N, C, H, W) or (C, H, W) -> (N, C, OH, OW), OH = floor((H - KH) / SH) + 1.
    """

    @accepts_rng
    def __init__(self, norm_type: float, kernel_size, stride=None, ceil_mode: bool = False, *, generator=None):
        super().__init__()
        window_args("LPPool2d", kernel_size, stride)
        if not (isinstance(norm_type, (int, float)) and not isinstance(norm_type, bool) and norm_type > 0):
            raise ValueError(f"LPPool2d expects norm_type > 0, got {norm_type!r}")
        self.norm_type, self.kernel_size, self.stride, self.ceil_mode = norm_type, kernel_size, stride, ceil_mode

    def forward(self, x: Tensor) -> Tensor:
        _check_image(x)
        return F.lp_pool2d(x, self.norm_type, self.kernel_size, self.stride, self.ceil_mode)

    def extra_repr(self) -> str:
        return (
            f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"ceil_mode={self.ceil_mode}"
        )


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size; (1, 1) is global average pooling.

    Args:
        output_size: int or (OH, OW); None in a pair keeps that input dimension.
        generator: unused (every layer accepts it).

    Shape: (N, C, H, W) or (C, H, W) -> (N, C, OH, OW).
    """

    @accepts_rng
    def __init__(self, output_size, *, generator=None):
        super().__init__()
        _check_output_size("AdaptiveAvgPool2d", output_size)
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        _check_image(x)
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(Module):
    """Max pooling to a fixed output size; (1, 1) is global max pooling.

    Args:
        output_size: int or (OH, OW); None in a pair keeps that input dimension.
        return_indices: also return each maximum's flat index in its input plane (int64,
            the output's shape), as PyTorch.
        generator: unused (every layer accepts it).

    Shape: (N, C, H, W) or (C, H, W) -> (N, C, OH, OW).
    """

    @accepts_rng
    def __init__(self, output_size, return_indices: bool = False, *, generator=None):
        super().__init__()
        _check_output_size("AdaptiveMaxPool2d", output_size)
        self.output_size, self.return_indices = output_size, return_indices

    def forward(self, x: Tensor) -> Tensor:
        _check_image(x)
        return F.adaptive_max_pool2d(x, self.output_size, self.return_indices)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"
