"""The one image decoder: every file cnnkit reads as a picture goes through ``open_image``.

It reads any format Pillow reads and gives an 8-bit ``"L"`` or ``"RGB"`` picture, upright
(EXIF orientation), converted correctly or refused with a reason:

- only a regular file is opened (a FIFO or a device is refused, never waited on);
- more than ``MAX_IMAGE_PIXELS`` pixels is refused from the header, before decoding (a
  decompression bomb: a small file that decodes to gigabytes); fewer than
  ``MIN_IMAGE_SIDE`` pixels on a side is refused (nothing to recognise in a 1x1 image;
  ``prepare_image``, the input of predictions, asks for 1/8 of the model's input side);
- 16-bit images (``I;16``) are scaled to 8 bits (65535 -> 255), not clipped to white;
  32-bit integer images (``I``) are read as 16-bit data and refused outside 0..65535;
- floating-point images (``F``) must hold values in [0, 1]; NaN or Inf pixels are refused,
  with their count;
- transparency (RGBA, LA, PA, a palette or a colour key with transparency) is composited
  onto a background: by default (``background="auto"``) the one that contrasts with the
  picture's opaque pixels (white under dark ink, black under light ink), so a drawing
  whose ink is in the alpha channel keeps its ink; ``"white"``, ``"black"`` or a grey
  level in [0, 1] choose it;
- palette, CMYK and YCbCr images are converted by Pillow; modes it does not convert
  correctly (LAB, HSV: no colour management) are refused.

Errors are ``DataError`` (a ``ValueError``) naming the file, or ``FileNotFoundError``.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from ..errors import DataError
from ..files import open_regular

__all__ = ["open_image", "load_image", "read_header", "MIN_IMAGE_SIDE", "MAX_IMAGE_PIXELS", "GRAY_MODES"]

MIN_IMAGE_SIDE = 4               # pixels, the shorter side: below it there is nothing to recognise
MAX_IMAGE_PIXELS = 100_000_000   # width x height (Pillow's own warning starts at 89 million)

# Pillow modes of single-channel files (1-bit, 8-bit, with alpha, 32-bit int, 16-bit, float).
GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_EXIF_ORIENTATION = 0x0112
# 8-bit modes Pillow converts to L and RGB correctly
_CONVERTIBLE = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr")


def _background(value, rgb: np.ndarray, alpha: np.ndarray, path) -> float:
    """The grey level (0..1) to composite onto (see the module doc)."""
    if value == "white":
        return 1.0
    if value == "black":
        return 0.0
    if value == "auto":
        weight = alpha.sum()
        if weight == 0:
            return 0.0
        luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)          # (H, W)
        ink = float((luma * alpha).sum() / weight)
        return 1.0 if ink < 0.5 else 0.0
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    raise ValueError(f"background must be 'auto', 'white', 'black' or a grey level in [0, 1], got {value!r}")


def _quantize(values: np.ndarray) -> np.ndarray:
    return np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)


def _to_float(image, path) -> np.ndarray | None:
    """Pixels in [0, 1] of the modes Pillow's 8-bit conversion gets wrong; None for the others."""
    if image.mode in _SIXTEEN_BIT:
        return np.asarray(image).astype(np.float32) / 65535.0                 # (H, W)
    if image.mode == "I":
        values = np.asarray(image)
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi > 65535:
            raise DataError(f"{path}: a 32-bit integer image with values from {lo} to {hi}; cnnkit reads "
                            "integer images as 16-bit (0..65535): convert it to 8 or 16 bits")
        return values.astype(np.float32) / 65535.0
    if image.mode == "F":
        values = np.asarray(image, np.float32)
        bad = ~np.isfinite(values)
        if bad.any():
            nan = int(np.isnan(values).sum())
            raise DataError(f"{path}: {int(bad.sum())} of its {values.size} pixels are not finite "
                            f"({nan} NaN, {int(bad.sum()) - nan} Inf)")
        lo, hi = float(values.min()), float(values.max())
        if lo < 0 or hi > 1:
            raise DataError(f"{path}: a floating-point image with values from {lo:g} to {hi:g}; cnnkit reads "
                            "floating-point images as [0, 1]: rescale it or save it as 8 or 16 bits")
        return values
    return None


def _has_alpha(image) -> bool:
    return image.mode in _ALPHA_MODES or (image.mode in ("P", "L", "RGB") and "transparency" in image.info)


def _convert(image, mode: str, background, path):
    """``image`` as an 8-bit ``mode`` ("L" or "RGB") picture, converted as the module doc says."""
    from PIL import Image

    values = _to_float(image, path)
    if values is not None:
        if mode == "RGB":
            values = np.repeat(values[..., None], 3, axis=2)                 # (H, W, 3)
        return Image.fromarray(_quantize(values), mode)
    if _has_alpha(image):
        rgba = np.asarray(image.convert("RGBA"), np.float32) / 255.0        # (H, W, 4)
        rgb, alpha = rgba[..., :3], rgba[..., 3]
        if alpha.min() < 1.0:
            bg = _background(background, rgb, alpha, path)
            rgb = rgb * alpha[..., None] + bg * (1.0 - alpha[..., None])
        picture = Image.fromarray(_quantize(rgb), "RGB")
        return picture if mode == "RGB" else picture.convert("L")
    if image.mode not in _CONVERTIBLE:
        # e.g. LAB and HSV: Pillow converts them without colour management, to wrong colours
        raise DataError(f"{path}: cannot convert a {image.mode} image to {mode}; save it as RGB")
    return image.convert(mode)


def _bomb_message(path, size: str, max_pixels: int) -> str:
    return (f"{path}: {size} is more than the {max_pixels / 1e6:.0f} million pixels cnnkit decodes "
            "(a decompression bomb?); shrink the image first")


def _exif_orientation(image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a malformed EXIF block: treat the picture as upright
        return 1


@contextmanager
def _checked(path, min_side: int, max_pixels: int):
    """The lazily opened PIL image of a regular file whose size passed the checks (module doc)."""
    from PIL import Image, UnidentifiedImageError  # Pillow loads only when images are read

    if isinstance(path, (str, os.PathLike)):
        try:
            f, _ = open_regular(path, "image file")
            owned = f
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such image file") from None
        except OSError as e:
            raise DataError(f"{path}: {e.strerror or e}") from None
    else:  # an open binary file (e.g. io.BytesIO of an upload): the caller owns it
        f, owned, path = path, nullcontext(), "the image"
    try:
        with owned, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below
            with Image.open(f) as image:
                w, h = image.size
                if w * h > max_pixels:
                    raise DataError(_bomb_message(path, f"{w}x{h} pixels ({w * h / 1e6:.0f} million)", max_pixels))
                if min(w, h) < min_side:
                    raise DataError(f"{path}: {w}x{h} pixels is smaller than the {min_side}x{min_side} "
                                    "minimum; there is too little in it to recognise")
                yield image
    except Image.DecompressionBombError as e:  # Pillow's own limit, met while opening some formats
        found = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(found[1]) / 1e6:.0f} million pixels" if found else "its size"
        raise DataError(_bomb_message(path, size, max_pixels)) from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: cannot read as an image (not a picture in a format Pillow reads)") from None
    except (OSError, SyntaxError, EOFError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        reason = re.sub(r"\s*<_io\.\w+ name=\d+>", "", str(e)) or type(e).__name__  # Pillow names our file object
        raise DataError(f"{path}: cannot read as an image ({reason})") from None


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says: its size upright (EXIF orientation applied), its mode."""

    size: tuple[int, int]  # (h, w)
    mode: str

    @property
    def grayscale(self) -> bool:
        return self.mode in GRAY_MODES


def read_header(path: str | os.PathLike, *, min_side: int = MIN_IMAGE_SIDE,
                max_pixels: int = MAX_IMAGE_PIXELS) -> ImageHeader:
    """Read an image file's header only (no pixels decoded), with ``open_image``'s checks.

    Raises:
        FileNotFoundError, DataError: as ``open_image``.
    """
    with _checked(path, min_side, max_pixels) as image:
        w, h = image.size
        if _exif_orientation(image) in (5, 6, 7, 8):
            w, h = h, w
        return ImageHeader((h, w), image.mode)


def open_image(path: str | os.PathLike | BinaryIO, mode: str = "RGB", draft: tuple[int, int] | None = None, *,
               background="auto", min_side: int = MIN_IMAGE_SIDE, max_pixels: int = MAX_IMAGE_PIXELS):
    """Decode an image file into an 8-bit PIL image of ``mode``, upright and checked (module doc).

    Args:
        path: the image file, or an open binary file (``io.BytesIO`` of an upload; errors
            then name "the image").
        mode: ``"L"`` (grayscale), ``"RGB"``, or ``"auto"``: ``"L"`` for a grayscale file,
            ``"RGB"`` for anything else.
        draft: ``(h, w)``: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale while it stays at
            least this big (libjpeg's DCT scaling; much faster for large photos).
        background: what transparent pixels become: "auto", "white", "black" or a grey level.
        min_side, max_pixels: the size limits (``MIN_IMAGE_SIDE``, ``MAX_IMAGE_PIXELS``).

    Raises:
        FileNotFoundError: the file does not exist.
        DataError (a ValueError): naming the file and why it cannot be used.
    """
    from PIL import ImageOps  # Pillow loads only when images are read

    if mode not in ("L", "RGB", "auto"):
        raise ValueError(f"open_image mode must be 'L', 'RGB' or 'auto', got {mode!r}")
    with _checked(path, min_side, max_pixels) as image:
        if mode == "auto":
            mode = "L" if image.mode in GRAY_MODES else "RGB"
        if draft is not None and image.format == "JPEG":
            dh, dw = draft
            if _exif_orientation(image) in (5, 6, 7, 8):
                dh, dw = dw, dh
            image.draft(mode, (dw, dh))
        image = ImageOps.exif_transpose(image)
        return _convert(image, mode, background, path)


def load_image(
    path: str | os.PathLike | BinaryIO, mode: str = "L", size: int | Sequence[int] | None = None, *,
    background="auto", min_side: int = MIN_IMAGE_SIDE, max_pixels: int = MAX_IMAGE_PIXELS,
) -> np.ndarray:
    """Read an image file as a uint8 array, converted to ``mode``, upright, and resized.

    Args:
        path: the image file, or an open binary file (see ``open_image``).
        mode: ``"L"`` (grayscale), ``"RGB"``, or ``"auto"`` (see ``open_image``).
        size: ``(h, w)`` or an int for a square; resized bilinearly by Pillow. None keeps it.
        background, min_side, max_pixels: see ``open_image``.

    Returns:
        uint8 (H, W) for ``"L"``, (H, W, 3) for ``"RGB"``.

    Raises:
        FileNotFoundError: the file does not exist.
        DataError (a ValueError): naming the file and why it cannot be used.
    """
    from PIL import Image

    image = open_image(path, mode, background=background, min_side=min_side, max_pixels=max_pixels)
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        image = image.resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)
