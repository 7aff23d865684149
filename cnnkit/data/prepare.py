"""Photos and drawings as model inputs: digits centred as MNIST's, strips of digits.

- ``prepare_image``: one PNG/JPEG -> (C, H, W) in [0, 1]; for one-channel models the
  digit is inverted if dark on light and centred by its centre of mass in a 20x20 box,
  as MNIST's digits were prepared.
- ``load_strip``: a wide PNG/JPEG (a row of handwritten digits) -> (C, H, W') for a
  fully convolutional classifier.
- ``compose_mnist_strip``: MNIST test digits side by side, with their labels.
- ``resize_picture``, ``crop_to_aspect``: float pictures and maps resized bilinearly
  (no rounding to 8 bits) and centre-cropped to an aspect ratio.

The image functions read a path or an open binary file (``io.BytesIO`` of an upload).
"""

from __future__ import annotations

import math
import os
from typing import BinaryIO

import numpy as np

from ..config import accepts_rng
from ..errors import DataError
from .image import MIN_IMAGE_SIDE, load_image
from .mnist import load_mnist

__all__ = ["prepare_image", "load_strip", "compose_mnist_strip", "resize_picture", "crop_to_aspect"]


def _name(path) -> str:
    """How an error names the image: its path, or "the image" for an open binary file (an upload)."""
    return str(path) if isinstance(path, (str, os.PathLike)) else "the image"


def resize_picture(picture: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (C, h, w) or (h, w) floats to (C, H, W) or (H, W) = ``size``, bilinearly, in float32.

    Each channel goes through Pillow as a 32-bit float image, so nothing is rounded to 8
    bits; values are not clipped (a [0, 1] picture may overshoot by rounding only).
    """
    from PIL import Image  # Pillow loads only when a picture is resized

    H, W = size
    a = np.asarray(picture, np.float32)
    if a.shape[-2:] == (H, W):
        return a.copy()
    channels = a[None] if a.ndim == 2 else a
    out = np.stack([np.asarray(Image.fromarray(c).resize((W, H), Image.BILINEAR), np.float32) for c in channels])
    return out[0] if a.ndim == 2 else out


def crop_to_aspect(picture: np.ndarray, ratio: float) -> np.ndarray:
    """Centre-crop (C, h, w) to height / width = ``ratio``, so that resizing does not distort it."""
    _, h, w = picture.shape
    if h / w > ratio:
        keep = max(1, round(w * ratio))
        top = (h - keep) // 2
        return picture[:, top : top + keep]
    keep = max(1, round(h / ratio))
    left = (w - keep) // 2
    return picture[:, :, left : left + keep]


def prepare_image(path: str | os.PathLike | BinaryIO, input_shape: tuple[int, int, int], invert: str = "auto") -> np.ndarray:
    """Load a PNG/JPEG and turn it into a model input in [0, 1], shape (C, H, W).

    For one-channel (MNIST-style) models the digit must be white on black, centred in a
    28x28 box: with ``invert="auto"`` a dark-on-light image (mean brightness above the
    middle) is inverted first; then, as in MNIST's own preparation, the ink's bounding box
    is scaled to fit 20x20 and pasted so its centre of mass is at the image centre.
    """
    from PIL import Image  # Pillow loads only when an image is prepared

    C, H, W = input_shape
    # a picture of fewer than 1/8 of the model's input side has too little in it to be upscaled
    min_side = max(MIN_IMAGE_SIDE, math.ceil(min(H, W) / 8))
    if C == 3:
        return load_image(path, "RGB", (H, W), min_side=min_side).astype(np.float32).transpose(2, 0, 1) / 255.0
    arr = load_image(path, "L", min_side=min_side).astype(np.float32) / 255.0
    if invert == "always" or (invert == "auto" and arr.mean() > 0.5):
        arr = 1.0 - arr
    flat = float(arr.max() - arr.min()) < 1.5 / 255          # one colour (white, black or any grey)
    ink = arr > 0.1 * arr.max() if arr.max() > 0 and not flat else np.zeros_like(arr, bool)
    if not ink.any():  # a blank page would be "classified" anyway: say so instead
        raise DataError(f"{_name(path)}: the image is blank (one flat colour): there is no digit to recognise")
    rows, cols = np.where(ink.any(axis=1))[0], np.where(ink.any(axis=0))[0]
    crop = arr[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    box = round(20 * H / 28)
    scale = box / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    small = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize(size, Image.LANCZOS), np.float32) / 255
    total = small.sum()
    cy = (small.sum(axis=1) * np.arange(small.shape[0])).sum() / total
    cx = (small.sum(axis=0) * np.arange(small.shape[1])).sum() / total
    top = int(round(H / 2 - cy - 0.5))
    left = int(round(W / 2 - cx - 0.5))
    top = min(max(top, 0), H - small.shape[0])
    left = min(max(left, 0), W - small.shape[1])
    out = np.zeros((H, W), np.float32)
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return out[None]                                                  # (1, H, W)


@accepts_rng
def compose_mnist_strip(
    n: int, generator: np.random.Generator, indices: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Put MNIST test digits side by side: image (1, 28, 28*n) in [0, 1] and their labels (n,)."""
    images, labels = load_mnist("test")
    if indices is None:
        if not 1 <= n <= len(images):
            raise ValueError(f"asked for {n} MNIST test digits; the test split has {len(images):,} (1 to "
                             f"{len(images):,} can be put side by side)")
        indices = generator.choice(len(images), size=n, replace=False)
    indices = np.asarray(indices)
    if indices.min() < 0 or indices.max() >= len(images):
        raise ValueError(f"MNIST test indices must lie in [0, {len(images)}), got {indices.tolist()}")
    strip = np.concatenate(list(images[indices]), axis=1).astype(np.float32) / 255   # (28, 28*n)
    return strip[None], labels[indices]


def load_strip(
    path: str | os.PathLike | BinaryIO, input_shape: tuple[int, int, int], invert: str = "auto", height: int | None = None,
) -> np.ndarray:
    """Load a PNG/JPEG as a model input in [0, 1], shape (C, H', W').

    One-channel (MNIST-style) models: dark-on-light images are inverted (``invert="auto"``),
    the ink's rows are scaled to 20/28 of ``height`` (default: the model's input height),
    as MNIST's digits, and centred, with a margin left and right. Three-channel models: the
    image is scaled to ``height`` (default: its own height, or the model's if larger).
    """
    from PIL import Image  # Pillow loads only when an image is prepared

    C, H, W = input_shape
    img = load_image(path, "L" if C == 1 else "RGB")
    if C == 3:
        new_h = height or max(H, img.shape[0])
        width = max(W, round(img.shape[1] * new_h / img.shape[0]))
        resized = Image.fromarray(img).resize((width, new_h), Image.BILINEAR)
        return np.asarray(resized, np.float32).transpose(2, 0, 1) / 255
    if height is not None:
        H, W = height, round(W * height / H)
    arr = img.astype(np.float32) / 255
    if invert == "always" or (invert == "auto" and arr.mean() > 0.5):
        arr = 1.0 - arr
    rows = np.where((arr > 0.1 * max(arr.max(), 1e-6)).any(axis=1))[0]
    if len(rows) == 0:
        raise DataError(f"{_name(path)}: the image has no ink")
    crop = arr[rows[0] : rows[-1] + 1]
    scale = (20 * H / 28) / crop.shape[0]
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    small = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize(size, Image.LANCZOS), np.float32) / 255
    margin = round(4 * W / 28)
    out = np.zeros((H, small.shape[1] + 2 * margin), np.float32)
    top = (H - small.shape[0]) // 2
    out[top : top + small.shape[0], margin : margin + small.shape[1]] = small
    if out.shape[1] < W:
        out = np.pad(out, ((0, 0), (0, W - out.shape[1])))
    return out[None]                                                              # (1, H, W')
