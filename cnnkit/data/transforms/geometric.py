"""Geometric transforms on the last two axes (H, W): Resize, RandomCrop, flips, RandomAffine.

Resampling is NumPy: ``Resize`` is two matrix products per image with the (out, in)
weights of ``resize_weights`` (antialiased bilinear, built once per size pair; also used
by ``RandomResizedCrop``), ``affine`` an inverse-mapped nearest or bilinear gather, both
vectorized over a batch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from ...config import accepts_rng
from ...errors import ShapeError
from ...functional.args import pair
from .base import Transform, _RandomTransform

__all__ = ["RandomAffine", "RandomCrop", "RandomHorizontalFlip", "RandomVerticalFlip", "Resize", "affine",
           "resize_output_size", "resize_weights"]


def resize_output_size(height: int, width: int, size: int | Sequence[int], max_size: int | None = None) -> tuple[int, int]:
    """The (h, w) ``Resize(size, max_size=max_size)`` gives a height x width image (torchvision's rule).

    An int (or a one-element sequence) is the new length of the shorter side; the longer
    side keeps the aspect ratio, rounded down (``int(size * long / short)``). With
    ``max_size``, a longer side that would exceed it is set to ``max_size`` and the shorter
    one scaled to match. An (h, w) pair is the size itself.

    Raises:
        ValueError: ``max_size`` with an (h, w) pair, or ``max_size <= size``.
    """
    if isinstance(size, (int, np.integer)) or len(size) == 1:
        requested = int(size if isinstance(size, (int, np.integer)) else size[0])
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = requested, int(requested * long / short)
        if max_size is not None:
            if max_size <= requested:
                raise ValueError(f"Resize max_size must be larger than size, got max_size={max_size}, size={requested}")
            if new_long > max_size:
                new_short, new_long = int(max_size * new_short / new_long), max_size
        return (new_long, new_short) if width <= height else (new_short, new_long)
    if max_size is not None:
        raise ValueError(f"Resize max_size is only for an int size (the shorter side), got size={tuple(size)}")
    h, w = pair(tuple(size), "size", "Resize")
    return h, w


@functools.lru_cache(maxsize=256)
def resize_weights(n_in: int, n_out: int, antialias: bool = True) -> np.ndarray:
    """(n_out, n_in) float32 weights of bilinear resampling with half-pixel centres.

    Output pixel i has its centre at c = (i + 0.5) * n_in / n_out in input coordinates; the
    filter is max(0, 1 - |x|) stretched by s and its taps are the input pixels j with
    |j + 0.5 - c| < s, normalized to sum to 1. ``antialias``: s = max(n_in / n_out, 1), so a
    shrink averages every input pixel under the output one (Pillow's BILINEAR, PyTorch's
    ``interpolate(mode="bilinear", antialias=True)``); otherwise s = 1, plain bilinear
    (``align_corners=False``), which samples only the two nearest pixels. Enlarging, both agree.
    """
    scale = n_in / n_out
    support = max(scale, 1.0) if antialias else 1.0
    weights = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        centre = (i + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        j = np.arange(lo, hi)
        w = np.maximum(0.0, 1.0 - np.abs((j - centre + 0.5) / support))
        weights[i, lo:hi] = w / w.sum()
    return weights.astype(np.float32)


class Resize(Transform):
    """Resize the last two axes, as torchvision's ``Resize``.

    ``Resize(256)`` scales the shorter side to 256 and keeps the aspect ratio (a 300x500
    image becomes 256x426); ``Resize((h, w))`` gives exactly h x w (``resize_output_size``).
    Bilinear resampling uses half-pixel centres and, when shrinking, antialiasing (the
    default of torchvision's ``Resize``; PyTorch's ``interpolate(..., antialias=True)``).
    A PIL image is resized by Pillow (always antialiased) and stays a PIL image.

    Args:
        size: an int for the shorter side, or ``(h, w)``.
        interpolation: ``"bilinear"`` or ``"nearest"`` (PyTorch's ``"nearest"``).
        max_size: with an int ``size``, the most the longer side may be.
        antialias: average over the input when shrinking (bilinear only).

    Shape: (..., H, W) -> (..., h, w); the dtype is kept (uint8 results are rounded).
    """

    def __init__(self, size: int | Sequence[int], interpolation: str = "bilinear", max_size: int | None = None,
                 antialias: bool = True):
        if isinstance(size, (int, np.integer)) or len(size) == 1:
            side = int(size if isinstance(size, (int, np.integer)) else size[0])
            if side < 1:
                raise ValueError(f"Resize size must be positive, got {side}")
            self.size: int | tuple[int, int] = side
            resize_output_size(side, side, side, max_size)  # checks max_size
        else:
            self.size = pair(tuple(size), "size", "Resize")
            resize_output_size(1, 1, self.size, max_size)
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"Resize interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
        self.interpolation, self.max_size, self.antialias = interpolation, max_size, antialias

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) of a resized height x width image."""
        return resize_output_size(height, width, self.size, self.max_size)

    def __call__(self, x):
        if hasattr(x, "getbands"):
            from PIL import Image  # only for PIL input (x is already a PIL image)

            method = (
                Image.Resampling.BILINEAR if self.interpolation == "bilinear" else Image.Resampling.NEAREST
            )
            h, w = self.output_size(x.height, x.width)
            return x if (h, w) == (x.height, x.width) else x.resize((w, h), method)
        return self.batch(x)  # only the last two axes take part, so one sample is a batch

    def batch(self, xs: np.ndarray) -> np.ndarray:
        xs = np.asarray(xs)
        if xs.ndim < 2:
            raise ShapeError(f"Resize expects an image (..., H, W), got shape {xs.shape}")
        H, W = xs.shape[-2:]
        h, w = self.output_size(H, W)
        if (h, w) == (H, W):
            return xs
        if self.interpolation == "nearest":
            # source index of output pixel o: floor(o * H / h), as PyTorch's "nearest"
            rows = np.minimum((np.arange(h) * H) // h, H - 1)
            cols = np.minimum((np.arange(w) * W) // w, W - 1)
            return xs[..., rows[:, None], cols]
        wy, wx = resize_weights(H, h, self.antialias), resize_weights(W, w, self.antialias)  # (h, H), (w, W)
        f = xs.astype(np.float32) if xs.dtype != np.float32 else xs
        out = (wy @ f) @ wx.T                                                   # (..., h, w)
        if xs.dtype.kind in "ui":
            return np.clip(np.rint(out), np.iinfo(xs.dtype).min, np.iinfo(xs.dtype).max).astype(xs.dtype)
        return out.astype(xs.dtype, copy=False)


class RandomCrop(_RandomTransform):
    """Pad the image, then cut a ``size`` window at a uniformly random position.

    As torchvision's ``RandomCrop``: the top-left corner is drawn uniformly from every
    position where the window fits inside the padded image, so the output always has
    shape ``size`` and, with ``padding=p`` and ``size`` equal to the input size, is the
    input shifted by at most ``p`` pixels in each direction.

    Args:
        size: ``(h, w)`` of the crop, or an int for a square.
        padding: pixels added before cropping: an int for all sides, ``(left/right,
            top/bottom)``, or ``(left, top, right, bottom)``.
        fill: the value of constant padding.
        padding_mode: ``"constant"``, ``"edge"``, ``"reflect"`` or ``"symmetric"``.
        generator: the generator for crop positions (default: cnnkit's default generator).

    Shape: (..., H, W) -> (..., h, w).
    """

    @accepts_rng
    def __init__(
        self,
        size: int | Sequence[int],
        padding: int | Sequence[int] = 0,
        fill: float = 0,
        padding_mode: str = "constant",
        *,
        generator: np.random.Generator | None = None,
    ):
        super().__init__(generator)
        self.size = pair(size, "size", "RandomCrop")
        if isinstance(padding, (int, np.integer)):
            padding = (padding,) * 4
        elif len(padding) == 2:
            padding = (padding[0], padding[1], padding[0], padding[1])
        elif len(padding) != 4:
            raise ValueError(f"RandomCrop padding expects an int, 2 or 4 values, got {padding!r}")
        self.padding = tuple(int(p) for p in padding)  # (left, top, right, bottom)
        if padding_mode not in ("constant", "edge", "reflect", "symmetric"):
            raise ValueError(f"RandomCrop padding_mode is not supported: {padding_mode!r}")
        self.fill, self.padding_mode = fill, padding_mode

    def _pad(self, x: np.ndarray) -> np.ndarray:
        left, top, right, bottom = self.padding
        if not any(self.padding):
            return x
        widths = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
        if self.padding_mode == "constant":
            return np.pad(x, widths, mode="constant", constant_values=self.fill)
        return np.pad(x, widths, mode=self.padding_mode)

    def _corners(self, input_shape: tuple[int, ...], padded_shape: tuple[int, ...], n: int | None):
        Hp, Wp = padded_shape[-2:]
        h, w = self.size
        if h > Hp or w > Wp:
            raise ShapeError(
                f"RandomCrop(size={self.size}) does not fit the padded image of size {(Hp, Wp)} "
                f"(input shape {input_shape}, padding {self.padding})"
            )
        i = self.generator.integers(0, Hp - h + 1, size=n)
        j = self.generator.integers(0, Wp - w + 1, size=n)
        return i, j

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        padded = self._pad(x)
        i, j = self._corners(x.shape, padded.shape, None)
        h, w = self.size
        return padded[..., i : i + h, j : j + w]

    def batch(self, xs: np.ndarray) -> np.ndarray:
        xs = np.asarray(xs)
        padded = self._pad(xs)
        N = xs.shape[0]
        i, j = self._corners(xs.shape, padded.shape, N)
        h, w = self.size
        flat = padded.reshape(N, -1, *padded.shape[-2:])  # (N, C, Hp, Wp)
        # (N, C, Hp-h+1, Wp-w+1, h, w): every window, as a view; pick sample n's at (i[n], j[n])
        windows = np.lib.stride_tricks.sliding_window_view(flat, (h, w), axis=(2, 3))
        out = windows[np.arange(N), :, i, j]  # (N, C, h, w)
        return out.reshape(xs.shape[:-2] + (h, w))


class RandomHorizontalFlip(_RandomTransform):
    """Mirror the image left-right with probability ``p`` (the W axis is reversed).

    Shape: (..., H, W) -> (..., H, W).
    """

    axis = -1

    @accepts_rng
    def __init__(self, p: float = 0.5, *, generator: np.random.Generator | None = None):
        super().__init__(generator)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__} expects a probability p in [0, 1], got {p}")
        self.p = p

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        return np.flip(x, axis=self.axis).copy() if self.generator.random() < self.p else x

    def batch(self, xs: np.ndarray) -> np.ndarray:
        xs = np.array(xs)  # a copy: flipped rows are written in place
        flip = self.generator.random(xs.shape[0]) < self.p
        xs[flip] = np.flip(xs[flip], axis=self.axis)
        return xs


class RandomVerticalFlip(RandomHorizontalFlip):
    """Mirror the image top-bottom with probability ``p`` (the H axis is reversed)."""

    axis = -2


class RandomAffine(_RandomTransform):
    """Rotate and shift the image by a random small amount; uncovered pixels get ``fill``.

    Follows torchvision's ``RandomAffine(degrees, translate)``: the angle is uniform in
    ``[-degrees, degrees]`` (or in ``(lo, hi)``), positive angles turn the image
    counter-clockwise about its centre ((W-1)/2, (H-1)/2); the shift is uniform in
    ``[-a*W, a*W]`` x ``[-b*H, b*H]`` for ``translate=(a, b)``, rounded to whole pixels.

    Each output pixel p samples the input at the inverse map
        src = R(-angle) @ (p - c - t) + c,
    with nearest-neighbour (default, as torchvision) or bilinear interpolation.

    Args:
        degrees: maximum absolute angle, or a ``(lo, hi)`` range, in degrees.
        translate: ``(a, b)`` maximum shift as fractions of width and height, or None.
        interpolation: ``"nearest"`` or ``"bilinear"``.
        fill: value for pixels that come from outside the input.
        generator: the generator for angles and shifts (default: cnnkit's default generator).

    Shape: (..., H, W) -> (..., H, W).
    """

    @accepts_rng
    def __init__(
        self,
        degrees: float | Sequence[float],
        translate: Sequence[float] | None = None,
        interpolation: str = "nearest",
        fill: float = 0,
        *,
        generator: np.random.Generator | None = None,
    ):
        super().__init__(generator)
        if isinstance(degrees, (int, float, np.number)):
            if degrees < 0:
                raise ValueError(f"RandomAffine degrees must be >= 0 when a single number, got {degrees}")
            degrees = (-float(degrees), float(degrees))
        self.degrees = (float(degrees[0]), float(degrees[1]))
        if translate is not None:
            if len(translate) != 2 or not all(0.0 <= t <= 1.0 for t in translate):
                raise ValueError(f"RandomAffine translate expects two fractions in [0, 1], got {translate!r}")
            translate = (float(translate[0]), float(translate[1]))
        self.translate = translate
        if interpolation not in ("nearest", "bilinear"):
            raise ValueError(
                f"RandomAffine interpolation must be 'nearest' or 'bilinear', got {interpolation!r}"
            )
        self.interpolation, self.fill = interpolation, fill

    def _draw(self, n: int, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
        angles = self.generator.uniform(self.degrees[0], self.degrees[1], size=n)
        shifts = np.zeros((n, 2))
        if self.translate is not None:
            max_dx, max_dy = self.translate[0] * W, self.translate[1] * H
            shifts[:, 0] = np.round(self.generator.uniform(-max_dx, max_dx, size=n))
            shifts[:, 1] = np.round(self.generator.uniform(-max_dy, max_dy, size=n))
        return angles, shifts

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.batch(np.asarray(x)[None])[0]

    def batch(self, xs: np.ndarray) -> np.ndarray:
        xs = np.asarray(xs)
        if xs.ndim < 3:
            raise ShapeError(f"RandomAffine.batch expects images (N, ..., H, W), got shape {xs.shape}")
        N, (H, W) = xs.shape[0], xs.shape[-2:]
        angles, shifts = self._draw(N, H, W)
        return affine(xs, angles, shifts, self.interpolation, self.fill)


def affine(
    xs: np.ndarray, angles: np.ndarray, shifts: np.ndarray, interpolation: str = "nearest", fill: float = 0
) -> np.ndarray:
    """Rotate each image by ``angles[n]`` degrees (counter-clockwise) and shift it by ``shifts[n]``.

    Args:
        xs: images (N, ..., H, W).
        angles: (N,) degrees.
        shifts: (N, 2) pixel shifts (dx right, dy down).

    Returns:
        (N, ..., H, W), the dtype of ``xs``.
    """
    N, (H, W) = xs.shape[0], xs.shape[-2:]
    flat = xs.reshape(N, -1, H, W)  # (N, C, H, W)
    cy, cx = (H - 1) * 0.5, (W - 1) * 0.5
    theta = np.deg2rad(angles)[:, None, None]  # (N, 1, 1)
    cos, sin = np.cos(theta), np.sin(theta)
    py = np.arange(H, dtype=np.float64)[None, :, None] - cy - shifts[:, 1, None, None]  # (N, H, 1)
    px = np.arange(W, dtype=np.float64)[None, None, :] - cx - shifts[:, 0, None, None]  # (N, 1, W)
    # A counter-clockwise turn on screen (y pointing down) maps source (x, y) to
    # (x cos + y sin, -x sin + y cos); its inverse gives the source of each output pixel.
    sx = cos * px - sin * py + cx  # (N, H, W)
    sy = sin * px + cos * py + cy  # (N, H, W)
    n = np.arange(N)[:, None, None]
    if interpolation == "nearest":
        # round half away from zero so that 90-degree turns land exactly on pixels
        iy, ix = np.floor(sy + 0.5).astype(np.intp), np.floor(sx + 0.5).astype(np.intp)
        inside = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)  # (N, H, W)
        out = flat[n, :, np.clip(iy, 0, H - 1), np.clip(ix, 0, W - 1)]  # (N, H, W, C)
        out = np.where(inside[..., None], out, np.asarray(fill, dtype=xs.dtype))
    else:
        y0, x0 = np.floor(sy).astype(np.intp), np.floor(sx).astype(np.intp)
        wy, wx = (sy - y0)[..., None], (sx - x0)[..., None]  # (N, H, W, 1)
        out = 0.0
        for dy, fy in ((0, 1 - wy), (1, wy)):
            for dx, fx in ((0, 1 - wx), (1, wx)):
                yy, xx = y0 + dy, x0 + dx
                inside = ((yy >= 0) & (yy < H) & (xx >= 0) & (xx < W))[..., None]
                tap = flat[n, :, np.clip(yy, 0, H - 1), np.clip(xx, 0, W - 1)]  # (N, H, W, C)
                out = out + fy * fx * np.where(inside, tap, fill)
        if xs.dtype.kind in "ui":
            out = np.clip(np.rint(out), np.iinfo(xs.dtype).min, np.iinfo(xs.dtype).max)
        out = out.astype(xs.dtype)
    return np.moveaxis(out, -1, 1).reshape(xs.shape)  # (N, ..., H, W)
