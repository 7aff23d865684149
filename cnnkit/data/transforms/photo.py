"""Transforms for photos, as torchvision names them: RandomResizedCrop, CenterCrop, ColorJitter.

They work on float images (C, H, W) in [0, 1] (after ``ToTensor``) and, vectorized, on
batches (N, C, H, W). ``RandomResizedCrop`` also takes a PIL image (cropped and resized
by Pillow in one call, so a large photo is never resized whole).

Resampling is antialiased bilinear with half-pixel centres: each output pixel averages
the input under a triangle filter stretched by the scale factor when shrinking, which is
Pillow's BILINEAR and PyTorch's ``interpolate(mode="bilinear", antialias=True)``
(``geometric.resize_weights`` builds the (out, in) matrix once per size pair; a resize is
then two matrix products per image, as ``Resize``'s).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ...config import accepts_rng
from ...errors import ShapeError
from ...functional.args import pair
from .base import Transform, _RandomTransform
from .geometric import resize_weights

__all__ = ["RandomResizedCrop", "CenterCrop", "ColorJitter", "resized_crop",
           "rgb_to_hsv", "hsv_to_rgb"]


def _size(value, where: str) -> tuple[int, int]:
    """An output size: an int or an (h, w) pair of positive ints (``functional.args.pair``)."""
    h, w = pair(value, "size", where)
    if h < 1 or w < 1:
        raise ShapeError(f"{where} expects a positive size, got {value!r}")
    return h, w


def resized_crop(image: np.ndarray, top: int, left: int, height: int, width: int, size: tuple[int, int]) -> np.ndarray:
    """Cut ``image[..., top:top+height, left:left+width]`` and resize it to ``size`` (antialiased).

    Shape: (..., H, W) float -> (..., h, w) float32.
    """
    crop = np.asarray(image, np.float32)[..., top : top + height, left : left + width]
    wy, wx = resize_weights(height, size[0]), resize_weights(width, size[1])
    return (wy @ crop) @ wx.T                                               # (..., h, w)


class RandomResizedCrop(_RandomTransform):
    """Crop a random part of the image and resize it to ``size`` (torchvision's parameters).

    The part covers a share of the area drawn uniformly from ``scale`` and has an aspect
    ratio (width / height) drawn log-uniformly from ``ratio``; after ten tries that do not
    fit, the centre crop closest to ``ratio`` is taken (torchvision's ``get_params``).

    Args:
        size: ``(h, w)`` of the output, or an int for a square.
        scale: range of the area share.
        ratio: range of the aspect ratio.
        generator: the generator (default: cnnkit's default generator at call time).

    Shape: (C, H, W) -> (C, h, w); ``batch``: (N, C, H, W) -> (N, C, h, w); a PIL image -> a
    PIL image of ``size``.
    """

    @accepts_rng
    def __init__(
        self, size: int | Sequence[int], scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3), *, generator: np.random.Generator | None = None,
    ):
        super().__init__(generator)
        self.size = _size(size, "RandomResizedCrop")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"RandomResizedCrop scale must be 0 < lo <= hi <= 1, got {tuple(scale)}")
        if not 0 < ratio[0] <= ratio[1] < math.inf:
            raise ValueError(f"RandomResizedCrop ratio must be 0 < lo <= hi < inf, got {tuple(ratio)}")
        self.scale, self.ratio = (float(scale[0]), float(scale[1])), (float(ratio[0]), float(ratio[1]))

    def params(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, h, w) of a random crop of a height x width image."""
        rng = self.generator
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, x):
        if hasattr(x, "getbands"):  # a PIL image: crop and resize in one Pillow call
            from PIL import Image

            top, left, h, w = self.params(x.height, x.width)
            return x.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR,
                            box=(left, top, left + w, top + h))
        x = np.asarray(x)
        if x.ndim < 2:
            raise ShapeError(f"RandomResizedCrop expects an image (..., H, W), got shape {x.shape}")
        return resized_crop(x, *self.params(*x.shape[-2:]), self.size)

    def batch(self, xs: np.ndarray) -> np.ndarray:
        xs = np.asarray(xs)
        return np.stack([resized_crop(x, *self.params(*x.shape[-2:]), self.size) for x in xs])


class CenterCrop(Transform):
    """Keep the central ``size`` window (torchvision's rounding; pads with zeros when smaller).

    Shape: (..., H, W) -> (..., h, w).
    """

    def __init__(self, size: int | Sequence[int]):
        self.size = _size(size, "CenterCrop")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.batch(x)  # only the last two axes take part

    def batch(self, xs: np.ndarray) -> np.ndarray:
        xs = np.asarray(xs)
        H, W = xs.shape[-2:]
        h, w = self.size
        if h > H or w > W:
            pad = [(0, 0)] * (xs.ndim - 2) + [((h - H) // 2 if h > H else 0, (h - H + 1) // 2 if h > H else 0),
                                               ((w - W) // 2 if w > W else 0, (w - W + 1) // 2 if w > W else 0)]
            xs = np.pad(xs, pad)
            H, W = xs.shape[-2:]
        top, left = int(round((H - h) / 2.0)), int(round((W - w) / 2.0))
        return xs[..., top : top + h, left : left + w]


# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale
_LUMA = np.array([0.2989, 0.587, 0.114], np.float32)


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """(..., 3, H, W) RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of a turn)."""
    r, g, b = rgb[..., 0, :, :], rgb[..., 1, :, :], rgb[..., 2, :, :]
    maxc, minc = rgb.max(axis=-3), rgb.min(axis=-3)
    delta = maxc - minc
    safe = np.where(delta > 0, delta, 1)
    s = np.where(maxc > 0, delta / np.where(maxc > 0, maxc, 1), 0)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = np.where(maxc == r, bc - gc, np.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = np.where(delta > 0, (h / 6.0) % 1.0, 0)
    return np.stack([h, s, maxc], axis=-3).astype(rgb.dtype)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """The inverse of ``rgb_to_hsv``."""
    h, s, v = hsv[..., 0, :, :], hsv[..., 1, :, :], hsv[..., 2, :, :]
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.astype(np.int64) % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-3).astype(hsv.dtype)


class ColorJitter(_RandomTransform):
    """Randomly change brightness, contrast, saturation and hue (torchvision's ColorJitter).

    Each factor is drawn uniformly: brightness, contrast and saturation from
    [max(0, 1 - v), 1 + v], hue from [-v, v] (v <= 0.5, a fraction of a turn); the four
    adjustments run in a random order, each clamped to [0, 1]:

        brightness: x * f
        contrast:   f * x + (1 - f) * mean(gray(x))        gray = 0.2989 R + 0.587 G + 0.114 B
        saturation: f * x + (1 - f) * gray(x)
        hue:        rotate the hue of HSV by f turns

    One-channel images take brightness and contrast only. Input: float (C, H, W) in [0, 1];
    ``batch``: (N, C, H, W), every image with its own factors and order.
    """

    @accepts_rng
    def __init__(self, brightness: float = 0, contrast: float = 0, saturation: float = 0, hue: float = 0,
                 *, generator: np.random.Generator | None = None):
        super().__init__(generator)
        for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"ColorJitter {name} must be a finite number >= 0, got {v}")
        if not 0 <= hue <= 0.5:
            raise ValueError(f"ColorJitter hue must lie in [0, 0.5], got {hue}")
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.batch(np.asarray(x)[None])[0]

    def batch(self, xs: np.ndarray) -> np.ndarray:
        xs = np.asarray(xs, np.float32)
        if xs.ndim != 4:
            raise ShapeError(f"ColorJitter.batch expects images (N, C, H, W), got shape {xs.shape}")
        N, C = xs.shape[:2]
        rng = self.generator
        ranges = [(max(0.0, 1 - v), 1 + v) if v else None for v in (self.brightness, self.contrast, self.saturation)]
        ranges.append((-self.hue, self.hue) if self.hue else None)
        factors = [rng.uniform(r[0], r[1], size=N).astype(np.float32) if r else None for r in ranges]
        order = np.argsort(rng.random((N, 4)), axis=1)  # a random permutation per image
        out = xs.copy()
        for position in range(4):
            for op in range(4):
                if factors[op] is None or (op >= 2 and C != 3):
                    continue
                chosen = order[:, position] == op
                if chosen.any():
                    out[chosen] = self._apply(op, out[chosen], factors[op][chosen])
        return out

    @staticmethod
    def _apply(op: int, x: np.ndarray, f: np.ndarray) -> np.ndarray:
        f4 = f[:, None, None, None]
        if op == 0:
            return np.clip(x * f4, 0, 1)
        gray = x[:, 0] if x.shape[1] == 1 else np.tensordot(x, _LUMA, axes=([1], [0]))   # (n, H, W)
        if op == 1:
            mean = gray.mean(axis=(1, 2))[:, None, None, None]
            return np.clip(f4 * x + (1 - f4) * mean, 0, 1)
        if op == 2:
            return np.clip(f4 * x + (1 - f4) * gray[:, None], 0, 1)
        hsv = rgb_to_hsv(x)
        hsv[:, 0] = (hsv[:, 0] + f[:, None, None]) % 1.0
        return hsv_to_rgb(hsv)
