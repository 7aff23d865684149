"""Value and layout conversions: ToTensor (uint8 HWC -> float32 CHW in [0, 1]) and Normalize."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import ShapeError
from .base import Transform

__all__ = ["Normalize", "ToTensor"]


class ToTensor(Transform):
    """Convert an image to float32 (C, H, W); uint8 values 0..255 are scaled to [0, 1].

    As torchvision's ``ToTensor``: a uint8 array (H, W) or (H, W, C), or a PIL image,
    becomes (C, H, W) divided by 255; arrays of other dtypes are only converted to
    float32 and transposed, not scaled.

    Shape: (H, W) -> (1, H, W); (H, W, C) -> (C, H, W). ``batch``: (N, H, W) -> (N, 1, H, W),
    (N, H, W, C) -> (N, C, H, W).
    """

    def __call__(self, x) -> np.ndarray:
        x = _as_array(x)
        if x.ndim == 2:
            x = x[None]  # (1, H, W)
        elif x.ndim == 3:
            x = x.transpose(2, 0, 1)  # (C, H, W)
        else:
            raise ShapeError(f"ToTensor expects an image (H, W) or (H, W, C), got shape {x.shape}")
        return _to_float(x)

    def batch(self, xs: np.ndarray) -> np.ndarray:
        xs = np.asarray(xs)
        if xs.ndim == 3:
            xs = xs[:, None]  # (N, 1, H, W)
        elif xs.ndim == 4:
            xs = xs.transpose(0, 3, 1, 2)  # (N, C, H, W)
        else:
            raise ShapeError(f"ToTensor.batch expects images (N, H, W) or (N, H, W, C), got shape {xs.shape}")
        return _to_float(xs)


def _as_array(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "getbands"):  # a PIL image; mode "1" comes out as bool
        array = np.asarray(x)
        return array.astype(np.uint8) * 255 if array.dtype == bool else array
    return np.asarray(x)


def _to_float(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x, dtype=np.float32) * np.float32(1 / 255)
    return np.ascontiguousarray(x, dtype=np.float32)


class Normalize(Transform):
    """Subtract a per-channel mean and divide by a per-channel std: y = (x - mean[c]) / std[c].

    Args:
        mean: one value per channel (or one value for all).
        std: one value per channel (or one value for all); no zeros.

    Shape: (C, H, W) -> (C, H, W); ``batch``: (N, C, H, W) -> (N, C, H, W). Input must be
    floating (use ``ToTensor`` first).
    """

    def __init__(self, mean: Sequence[float] | float, std: Sequence[float] | float):
        self.mean = tuple(float(m) for m in np.atleast_1d(mean))
        self.std = tuple(float(s) for s in np.atleast_1d(std))
        if len(self.mean) != len(self.std):
            raise ValueError(f"Normalize needs as many means as stds, got {self.mean} and {self.std}")
        if any(s == 0 for s in self.std):
            raise ValueError(f"Normalize received a zero std: {self.std}")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._normalize(x, channel_axis=0, what="(C, H, W)")

    def batch(self, xs: np.ndarray) -> np.ndarray:
        return self._normalize(xs, channel_axis=1, what="(N, C, H, W)")

    def _normalize(self, x: np.ndarray, channel_axis: int, what: str) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind != "f":
            raise TypeError(f"Normalize expects a floating image (apply ToTensor first), got dtype {x.dtype}")
        if x.ndim != channel_axis + 3:
            raise ShapeError(f"Normalize expects {what}, got shape {x.shape}")
        C = x.shape[channel_axis]
        if len(self.mean) not in (1, C):
            raise ShapeError(
                f"Normalize has {len(self.mean)} channel means but the input has C={C} (shape {x.shape})"
            )
        mean = np.asarray(self.mean, dtype=x.dtype).reshape(-1, 1, 1)  # (C, 1, 1)
        std = np.asarray(self.std, dtype=x.dtype).reshape(-1, 1, 1)  # (C, 1, 1)
        return (x - mean) / std
