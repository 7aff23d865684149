"""Image transforms: ToTensor, Normalize, Resize, random crops, flips and affine jitter.

Each transform is a callable on one sample. Those that subclass ``Transform`` also have
``batch(xs)``, which transforms a whole stack at once (leading axis ``N``); the
DataLoader uses it for array-backed datasets, so augmentation costs a few vectorized
NumPy calls per batch instead of a Python loop over images.

Layouts follow torchvision: ``ToTensor`` turns a uint8 image (H, W) or (H, W, C), or a
PIL image, into float32 (C, H, W) in [0, 1]. Every other transform works on arrays whose
last two axes are (H, W): (C, H, W) after ``ToTensor``, or (H, W) before it.

Random transforms take ``rng``, a ``numpy.random.Generator``; without one they use
cnnkit's default generator (``cnnkit.manual_seed`` seeds it) at call time. One sample
and a batch draw from the same distributions, but not the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import config
from ..errors import ShapeError

__all__ = [
    "Compose",
    "Lambda",
    "Normalize",
    "RandomAffine",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomVerticalFlip",
    "Resize",
    "ToTensor",
    "Transform",
    "apply_batch",
]


class Transform:
    """Base class: ``__call__`` transforms one sample, ``batch`` a stack of them.

    The default ``batch`` loops over the samples; subclasses override it with a
    vectorized version.
    """

    def __call__(self, x: Any) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not define __call__")

    def batch(self, xs: np.ndarray) -> np.ndarray:
        """Transform a stack of samples (leading axis N) at once."""
        return np.stack([self(x) for x in xs])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def apply_batch(transform: Callable | None, xs: np.ndarray) -> np.ndarray:
    """Apply ``transform`` to a stack: vectorized for a ``Transform``, else one sample at a time."""
    if transform is None:
        return xs
    if isinstance(transform, Transform):
        return transform.batch(xs)
    return np.stack([np.asarray(transform(x)) for x in xs])


class _RandomTransform(Transform):
    """A transform that draws from ``rng``, or from cnnkit's default generator at call time."""

    def __init__(self, rng: np.random.Generator | None):
        self._rng = rng

    @property
    def rng(self) -> np.random.Generator:
        return self._rng if self._rng is not None else config.default_generator()


class Compose(Transform):
    """Apply transforms in order: ``Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])``."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def batch(self, xs: np.ndarray) -> np.ndarray:
        if not all(isinstance(t, Transform) for t in self.transforms):
            return super().batch(xs)
        for t in self.transforms:
            xs = t.batch(xs)
        return xs


class Lambda(Transform):
    """Wrap a function of one sample (and optionally ``batch_fn`` for a whole stack)."""

    def __init__(self, fn: Callable, batch_fn: Callable | None = None):
        self.fn, self.batch_fn = fn, batch_fn

    def __call__(self, x):
        return self.fn(x)

    def batch(self, xs: np.ndarray) -> np.ndarray:
        return self.batch_fn(xs) if self.batch_fn is not None else super().batch(xs)


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
            x = x[None]                                   # (1, H, W)
        elif x.ndim == 3:
            x = x.transpose(2, 0, 1)                      # (C, H, W)
        else:
            raise ShapeError(f"ToTensor expects an image (H, W) or (H, W, C), got shape {x.shape}")
        return _to_float(x)

    def batch(self, xs: np.ndarray) -> np.ndarray:
        xs = np.asarray(xs)
        if xs.ndim == 3:
            xs = xs[:, None]                              # (N, 1, H, W)
        elif xs.ndim == 4:
            xs = xs.transpose(0, 3, 1, 2)                 # (N, C, H, W)
        else:
            raise ShapeError(
                f"ToTensor.batch expects images (N, H, W) or (N, H, W, C), got shape {xs.shape}"
            )
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
        std = np.asarray(self.std, dtype=x.dtype).reshape(-1, 1, 1)    # (C, 1, 1)
        return (x - mean) / std


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    if len(value) == 2:
        return int(value[0]), int(value[1])
    raise ValueError(f"{name} expects an int or an (h, w) pair, got {value!r}")


class Resize(Transform):
    """Resize the last two axes to ``size`` with bilinear (or nearest) interpolation.

    Bilinear sampling uses half-pixel centres (PyTorch's ``align_corners=False``,
    without antialiasing). A PIL image is resized by Pillow and stays a PIL image.

    Args:
        size: ``(h, w)``, or an int for a square output.
        interpolation: ``"bilinear"`` or ``"nearest"``.

    Shape: (..., H, W) -> (..., h, w); the dtype is kept (uint8 results are rounded).
    """

    def __init__(self, size: int | Sequence[int], interpolation: str = "bilinear"):
        self.size = _pair(size, "Resize size")
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"Resize interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
        self.interpolation = interpolation

    def __call__(self, x):
        if hasattr(x, "getbands"):
            from PIL import Image

            method = Image.Resampling.BILINEAR if self.interpolation == "bilinear" else Image.Resampling.NEAREST
            return x.resize((self.size[1], self.size[0]), method)
        return self.batch(x)  # only the last two axes take part, so one sample is a batch

    def batch(self, xs: np.ndarray) -> np.ndarray:
        xs = np.asarray(xs)
        if xs.ndim < 2:
            raise ShapeError(f"Resize expects an image (..., H, W), got shape {xs.shape}")
        H, W = xs.shape[-2:]
        h, w = self.size
        if (h, w) == (H, W):
            return xs
        if self.interpolation == "nearest":
            # source index of output pixel o: floor(o * H / h), as PyTorch's "nearest"
            rows = np.minimum((np.arange(h) * H) // h, H - 1)
            cols = np.minimum((np.arange(w) * W) // w, W - 1)
            return xs[..., rows[:, None], cols]
        y0, y1, wy = _linear_taps(H, h)
        x0, x1, wx = _linear_taps(W, w)
        f = xs.astype(np.float32) if xs.dtype.kind != "f" else xs
        top = f[..., y0, :] * (1 - wy)[:, None] + f[..., y1, :] * wy[:, None]   # (..., h, W)
        out = top[..., x0] * (1 - wx) + top[..., x1] * wx                       # (..., h, w)
        if xs.dtype.kind in "ui":
            return np.clip(np.rint(out), np.iinfo(xs.dtype).min, np.iinfo(xs.dtype).max).astype(xs.dtype)
        return out.astype(xs.dtype, copy=False)


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour indices and weights for 1-D linear resampling with half-pixel centres."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (src - lo).astype(np.float32)


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
        rng: the generator for crop positions (default: cnnkit's default generator).

    Shape: (..., H, W) -> (..., h, w).
    """

    def __init__(
        self,
        size: int | Sequence[int],
        padding: int | Sequence[int] = 0,
        fill: float = 0,
        padding_mode: str = "constant",
        *,
        rng: np.random.Generator | None = None,
    ):
        super().__init__(rng)
        self.size = _pair(size, "RandomCrop size")
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

    def _corners(self, shape: tuple[int, ...], n: int | None):
        Hp, Wp = shape[-2:]
        h, w = self.size
        if h > Hp or w > Wp:
            raise ShapeError(
                f"RandomCrop(size={self.size}) does not fit the padded image of size {(Hp, Wp)} "
                f"(input shape {shape[:-2] + (Hp - self.padding[1] - self.padding[3], Wp - self.padding[0] - self.padding[2])})"
            )
        i = self.rng.integers(0, Hp - h + 1, size=n)
        j = self.rng.integers(0, Wp - w + 1, size=n)
        return i, j

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = self._pad(np.asarray(x))
        i, j = self._corners(x.shape, None)
        h, w = self.size
        return x[..., i : i + h, j : j + w]

    def batch(self, xs: np.ndarray) -> np.ndarray:
        xs = self._pad(np.asarray(xs))
        N = xs.shape[0]
        i, j = self._corners(xs.shape, N)
        h, w = self.size
        flat = xs.reshape(N, -1, *xs.shape[-2:])                             # (N, C, Hp, Wp)
        windows = np.lib.stride_tricks.sliding_window_view(flat, (h, w), axis=(2, 3))  # (N, C, Hp-h+1, Wp-w+1, h, w)
        out = windows[np.arange(N), :, i, j]                                 # (N, C, h, w)
        return out.reshape(xs.shape[:-2] + (h, w))


class RandomHorizontalFlip(_RandomTransform):
    """Mirror the image left-right with probability ``p`` (the W axis is reversed).

    Shape: (..., H, W) -> (..., H, W).
    """

    axis = -1

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator | None = None):
        super().__init__(rng)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__} expects a probability p in [0, 1], got {p}")
        self.p = p

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        return np.flip(x, axis=self.axis).copy() if self.rng.random() < self.p else x

    def batch(self, xs: np.ndarray) -> np.ndarray:
        xs = np.array(xs)  # a copy: flipped rows are written in place
        flip = self.rng.random(xs.shape[0]) < self.p
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
        rng: the generator for angles and shifts (default: cnnkit's default generator).

    Shape: (..., H, W) -> (..., H, W).
    """

    def __init__(
        self,
        degrees: float | Sequence[float],
        translate: Sequence[float] | None = None,
        interpolation: str = "nearest",
        fill: float = 0,
        *,
        rng: np.random.Generator | None = None,
    ):
        super().__init__(rng)
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
            raise ValueError(f"RandomAffine interpolation must be 'nearest' or 'bilinear', got {interpolation!r}")
        self.interpolation, self.fill = interpolation, fill

    def _draw(self, n: int, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
        angles = self.rng.uniform(self.degrees[0], self.degrees[1], size=n)
        shifts = np.zeros((n, 2))
        if self.translate is not None:
            max_dx, max_dy = self.translate[0] * W, self.translate[1] * H
            shifts[:, 0] = np.round(self.rng.uniform(-max_dx, max_dx, size=n))
            shifts[:, 1] = np.round(self.rng.uniform(-max_dy, max_dy, size=n))
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
    flat = xs.reshape(N, -1, H, W)                                   # (N, C, H, W)
    cy, cx = (H - 1) * 0.5, (W - 1) * 0.5
    theta = np.deg2rad(angles)[:, None, None]                        # (N, 1, 1)
    cos, sin = np.cos(theta), np.sin(theta)
    py = np.arange(H, dtype=np.float64)[None, :, None] - cy - shifts[:, 1, None, None]  # (N, H, 1)
    px = np.arange(W, dtype=np.float64)[None, None, :] - cx - shifts[:, 0, None, None]  # (N, 1, W)
    # A counter-clockwise turn on screen (y pointing down) maps source (x, y) to
    # (x cos + y sin, -x sin + y cos); its inverse gives the source of each output pixel.
    sx = cos * px - sin * py + cx                                    # (N, H, W)
    sy = sin * px + cos * py + cy                                    # (N, H, W)
    n = np.arange(N)[:, None, None]
    if interpolation == "nearest":
        # round half away from zero so that 90-degree turns land exactly on pixels
        iy, ix = np.floor(sy + 0.5).astype(np.intp), np.floor(sx + 0.5).astype(np.intp)
        inside = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)         # (N, H, W)
        out = flat[n, :, np.clip(iy, 0, H - 1), np.clip(ix, 0, W - 1)]  # (N, H, W, C)
        out = np.where(inside[..., None], out, np.asarray(fill, dtype=xs.dtype))
    else:
        y0, x0 = np.floor(sy).astype(np.intp), np.floor(sx).astype(np.intp)
        wy, wx = (sy - y0)[..., None], (sx - x0)[..., None]          # (N, H, W, 1)
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
    return np.moveaxis(out, -1, 1).reshape(xs.shape)                 # (N, ..., H, W)
