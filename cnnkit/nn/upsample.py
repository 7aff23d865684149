"""Upsampling layers: ``F.interpolate`` with its arguments held (as ``torch.nn.Upsample``). No parameters."""

from __future__ import annotations

from .. import functional as F
from ..config import accepts_rng
from ..functional.interpolate import MODES
from ..tensor import Tensor
from .module import Module

__all__ = ["Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d"]


class Upsample(Module):
    """Resample to ``size`` or by ``scale_factor`` (see ``cnnkit.functional.interpolate``).

    Args:
        size: output spatial size (int or one per axis); or
        scale_factor: multiplier (float or one per axis); exactly one of the two.
        mode: 'nearest' (default), 'nearest-exact', 'linear' (3-D input) or 'bilinear'.
        align_corners: linear modes only; default False.
        recompute_scale_factor: with ``scale_factor``, index with in / out instead of 1 / scale.
        generator: unused (every layer accepts it).

    Shape: (N, C, H, W) -> (N, C, OH, OW), OH = size or floor(H * scale_factor);
    (N, C, W) -> (N, C, OW).
    """

    @accepts_rng
    def __init__(self, size=None, scale_factor=None, mode: str = "nearest", align_corners=None,
                 recompute_scale_factor=None, *, generator=None):
        super().__init__()
        if mode not in MODES:
            raise NotImplementedError(f"{type(self).__name__} supports mode in {MODES}, got mode={mode!r}")
        self.size = size
        if isinstance(scale_factor, (tuple, list)):
            self.scale_factor = tuple(float(f) for f in scale_factor)
        else:
            self.scale_factor = float(scale_factor) if scale_factor is not None else None
        self.mode, self.align_corners = mode, align_corners
        self.recompute_scale_factor = recompute_scale_factor

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners,
                             recompute_scale_factor=self.recompute_scale_factor)

    def extra_repr(self) -> str:
        what = f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None else f"size={self.size!r}"
        return f"{what}, mode={self.mode!r}"


class UpsamplingNearest2d(Upsample):
    """``Upsample(size, scale_factor, mode='nearest')`` for (N, C, H, W) inputs."""

    @accepts_rng
    def __init__(self, size=None, scale_factor=None, *, generator=None):
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    """``Upsample(size, scale_factor, mode='bilinear', align_corners=True)`` (as PyTorch's)."""

    @accepts_rng
    def __init__(self, size=None, scale_factor=None, *, generator=None):
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)
