"""Convolution layers: Conv2d and ConvTranspose2d, with PyTorch's arguments, layouts and init."""

from __future__ import annotations

import math
import numbers

from .. import config
from .. import functional as F
from ..backend.prepack import ConvWeightPack
from ..config import accepts_rng
from ..errors import InferenceOnlyError, ShapeError
from ..functional.args import conv_padding, pad_widths, pair, size_arg, window_args
from ..tensor import Tensor
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["Conv2d", "ConvTranspose2d"]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _check_channels(x, channels: int) -> None:
    """Raise unless x is (N, channels, H, W) or (channels, H, W)."""
    if x.ndim not in (3, 4) or x.shape[-3] != channels:
        raise ShapeError(
            f"expected input with {channels} channel{'s' if channels != 1 else ''}, of shape (N, {channels}, H, W) or "
            f"({channels}, H, W); got shape {tuple(x.shape)}"
        )


class _ConvNd(Module):
    """Arguments, parameters and repr shared by Conv2d and ConvTranspose2d."""

    @accepts_rng
    def __init__(
        self, name: str, in_channels: int, out_channels: int, kernel_size, stride, padding,
        dilation, transposed: bool, output_padding, groups: int, bias: bool, padding_mode: str,
        generator, dtype,
    ):
        super().__init__()
        size_arg(in_channels, "in_channels", name)
        size_arg(out_channels, "out_channels", name)
        window_args(name, kernel_size, stride, padding, dilation)
        if not isinstance(groups, numbers.Integral) or isinstance(groups, bool):
            raise TypeError(f"{name} expects groups to be an int, got {type(groups).__name__} {groups!r}")
        if groups <= 0:
            raise ShapeError(f"{name} expects groups > 0, got {groups}")
        if in_channels % groups or out_channels % groups:
            raise ShapeError(
                f"{name} expects in_channels ({in_channels}) and out_channels ({out_channels}) "
                f"divisible by groups ({groups})"
            )
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"{name} expects padding_mode in {_PADDING_MODES}, got {padding_mode!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = pair(kernel_size, "kernel_size", name)
        self.stride = pair(stride, "stride", name)
        self.dilation = pair(dilation, "dilation", name)
        conv_padding(padding, self.kernel_size, self.stride, self.dilation, name)  # the checks of F.conv2d
        self.padding = padding if isinstance(padding, str) else pair(padding, "padding", name)
        self.output_padding = pair(output_padding, "output_padding", name)
        self.transposed, self.groups, self.padding_mode = transposed, groups, padding_mode

        # Weight layout (PyTorch's): conv (F, C/groups, KH, KW); transposed (C, F/groups, KH, KW).
        KH, KW = self.kernel_size
        if transposed:
            shape = (in_channels, out_channels // groups, KH, KW)
        else:
            shape = (out_channels, in_channels // groups, KH, KW)
        generator = generator if generator is not None else config.default_generator()
        # PyTorch's default: kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
        # and the bias from the same bound; fan_in = weight.shape[1] * KH * KW.
        self.weight = Parameter(init.kaiming_uniform(shape, a=math.sqrt(5), generator=generator, dtype=dtype))
        if bias:
            fan_in, _ = init.fan_in_and_fan_out(shape)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            self.bias = Parameter(init.uniform((out_channels,), -bound, bound, generator=generator, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.output_padding != (0, 0):
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class Conv2d(_ConvNd):
    """2-D convolution (cross-correlation) over a batch of images.

    Args:
        in_channels, out_channels: C and F.
        kernel_size, stride, dilation: int or pair.
        padding: int, pair, "valid" or "same" (stride 1 only).
        groups: split channels into groups convolved separately (C = groups: depthwise).
        bias: learn a per-filter bias.
        padding_mode: "zeros", "reflect", "replicate" or "circular".
        generator: generator for the initial weights (default: cnnkit's default generator).
        dtype: parameter dtype (default: ``cnnkit.get_default_dtype()``).

    Attributes:
        weight: (F, C/groups, KH, KW), init U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
            fan_in = C/groups * KH * KW (PyTorch's default).
        bias: (F,) with the same bound, or None.
        prepacked: None, or the weight's forms prepared once for inference
            (``nn.utils.prepack_for_inference``: the weight is then frozen, and the layer
            runs in eval mode only).

    Shape: x (N, C, H, W) or (C, H, W) -> y (N, F, OH, OW),
    OH = floor((H + 2*PH - DH*(KH - 1) - 1) / SH) + 1 (likewise OW).

    Raises:
        ShapeError: the input is not (N, in_channels, H, W) or (in_channels, H, W).
        InferenceOnlyError: a prepacked layer called in training mode.
    """

    prepacked: ConvWeightPack | None = None

    @accepts_rng
    def __init__(
        self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
        groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *, generator=None, dtype=None,
    ):
        super().__init__(
            "Conv2d", in_channels, out_channels, kernel_size, stride, padding, dilation, False, 0,
            groups, bias, padding_mode, generator, dtype,
        )

    def padding_sides(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right): the zero padding of each side (PyTorch's split for "same")."""
        return conv_padding(self.padding, self.kernel_size, self.stride, self.dilation, "Conv2d")

    def forward(self, x: Tensor) -> Tensor:
        _check_channels(x, self.in_channels)
        packed = self.prepacked
        if packed is not None and self.training:
            where = f"{packed.layer} ({type(self).__name__})" if packed.layer else type(self).__name__
            raise InferenceOnlyError(
                f"{where} has weights frozen for inference "
                "(optimize_for_inference / prepack_for_inference) and runs in eval mode only, got "
                "training mode; call model.eval(), or train a model that was not optimized"
            )
        if self.padding_mode != "zeros":
            x = F.pad(x, pad_widths(self.padding_sides()), mode=self.padding_mode)
            return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups, prepacked=packed)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                        prepacked=packed)


class ConvTranspose2d(_ConvNd):
    """2-D transposed convolution ("deconvolution"): the gradient of Conv2d w.r.t. its input.

    Args:
        in_channels, out_channels: C and F.
        kernel_size, stride, padding, output_padding, dilation: int or pair.
        groups, bias: as Conv2d. padding_mode: only "zeros" (as PyTorch).
        generator, dtype: as Conv2d.

    Attributes:
        weight: (C, F/groups, KH, KW) (PyTorch's layout), init U(-b, b) with
            b = 1/sqrt(fan_in), fan_in = weight.shape[1] * KH * KW = F/groups * KH * KW.
        bias: (F,) with the same bound, or None.

    Shape: x (N, C, H, W) or (C, H, W) -> y (N, F, OH, OW),
    OH = (H - 1)*SH - 2*PH + DH*(KH - 1) + OPH + 1 (likewise OW).
    """

    @accepts_rng
    def __init__(
        self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
        output_padding=0, groups: int = 1, bias: bool = True, dilation=1,
        padding_mode: str = "zeros", *, generator=None, dtype=None,
    ):
        if padding_mode != "zeros":
            raise ValueError(f'ConvTranspose2d only supports padding_mode="zeros", got {padding_mode!r}')
        if isinstance(padding, str):
            raise ShapeError(f"ConvTranspose2d expects padding as an int or a pair, got {padding!r}")
        super().__init__(
            "ConvTranspose2d", in_channels, out_channels, kernel_size, stride, padding, dilation,
            True, output_padding, groups, bias, padding_mode, generator, dtype,
        )

    def _output_padding_for(self, x, output_size) -> tuple[int, int]:
        """The output_padding that makes the output (OH, OW) = output_size (PyTorch's rule)."""
        size = tuple(output_size)[-2:]
        if len(output_size) not in (2, x.ndim) or len(size) != 2:
            raise ShapeError(f"expected output_size (OH, OW) or a full shape, got {tuple(output_size)}")
        padding = []
        for d in range(2):
            smallest = (
                (x.shape[-2 + d] - 1) * self.stride[d] - 2 * self.padding[d]
                + self.dilation[d] * (self.kernel_size[d] - 1) + 1
            )
            largest = smallest + self.stride[d] - 1
            if not smallest <= size[d] <= largest:
                raise ShapeError(
                    f"output_size {size} is not reachable from input shape {tuple(x.shape)}: "
                    f"dimension {d} must lie in [{smallest}, {largest}]"
                )
            padding.append(size[d] - smallest)
        return tuple(padding)

    def forward(self, x: Tensor, output_size=None) -> Tensor:
        _check_channels(x, self.in_channels)
        output_padding = self.output_padding if output_size is None else self._output_padding_for(x, output_size)
        return F.conv_transpose2d(
            x, self.weight, self.bias, self.stride, self.padding, output_padding, self.groups, self.dilation
        )
