"""ImageFolder: a user's own images, one subfolder per class, read with Pillow.

    root/cat/001.png
    root/cat/002.jpg
    root/dog/a.jpeg

Class names are the subfolder names sorted, and label k is ``classes[k]``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .dataset import Dataset

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "load_image"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

# Pillow modes of single-channel files (1-bit, 8-bit, with alpha, 32-bit int, 16-bit, float).
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def load_image(
    path: str | os.PathLike, mode: str = "L", size: int | Sequence[int] | None = None
) -> np.ndarray:
    """Read a PNG or JPEG file as a uint8 array, converted to ``mode`` and resized.

    Args:
        path: the image file.
        mode: ``"L"`` (grayscale), ``"RGB"``, or ``"auto"``: ``"L"`` for a grayscale
            file, ``"RGB"`` for anything else.
        size: ``(h, w)`` or an int for a square; resized bilinearly by Pillow. None keeps it.

    Returns:
        uint8 (H, W) for ``"L"``, (H, W, 3) for ``"RGB"``.

    Raises:
        FileNotFoundError: the file does not exist.
        DataError (a ValueError): naming the file when Pillow cannot read it.
    """
    from PIL import Image, UnidentifiedImageError  # Pillow loads only when an image is read

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            if mode == "auto":
                mode = "L" if image.mode in _GRAY_MODES else "RGB"
            image = image.convert(mode)
            if size is not None:
                h, w = (size, size) if isinstance(size, int) else size
                image = image.resize((w, h), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{path}: cannot read as an image ({e})") from None


class ImageFolder(Dataset):
    """Images sorted into one subfolder per class (PNG/JPEG), loaded lazily one by one.

    Args:
        root: the folder holding one subfolder per class.
        transform: applied to each image array, e.g. ``ToTensor()``.
        target_transform: applied to each label.
        mode: ``"L"`` for grayscale (H, W) or ``"RGB"`` for (H, W, 3) uint8 images.
        size: resize every image to ``(h, w)`` (or a square int) so that they batch.

    Attributes:
        classes: sorted class (subfolder) names.
        class_to_idx: name -> label.
        samples: ``(path, label)`` pairs, sorted by class then file name.
        targets: the labels, int64 (N,).

    Raises:
        FileNotFoundError: ``root`` is not a folder, or it holds no class folder with images.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        mode: str = "L",
        size: int | Sequence[int] | None = None,
    ):
        if mode not in ("L", "RGB"):
            raise ValueError(f"ImageFolder mode must be 'L' or 'RGB', got {mode!r}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"ImageFolder root {self.root} is not a folder")
        self.classes = sorted(
            d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")
        )
        self.class_to_idx = {name: k for k, name in enumerate(self.classes)}
        self.samples = [
            (path, self.class_to_idx[name])
            for name in self.classes
            for path in sorted((self.root / name).rglob("*"))
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
        ]
        if not self.samples:
            raise FileNotFoundError(
                f"ImageFolder found no {'/'.join(IMAGE_EXTENSIONS)} images in class subfolders of "
                f"{self.root} (subfolders: {self.classes or 'none'})"
            )
        self.targets = np.asarray([label for _, label in self.samples], dtype=np.int64)
        self.transform, self.target_transform = transform, target_transform
        self.mode, self.size = mode, size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        path, target = self.samples[index]
        image = load_image(path, self.mode, self.size)
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def __repr__(self) -> str:
        return (
            f"ImageFolder({self.root}, {len(self)} images, {len(self.classes)} classes, mode={self.mode!r})"
        )
