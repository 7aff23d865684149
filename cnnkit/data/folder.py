"""ImageFolder: a user's own images, one subfolder per class, read with Pillow.

    root/cat/001.png
    root/cat/002.jpg
    root/dog/a.jpeg

Class names are the subfolder names sorted, and label k is ``classes[k]``.

``scan_folder`` reads only the files' headers (format, size, mode, EXIF orientation) and
reports what it found: the images per class, files that are not images (skipped, counted),
files with an image name that Pillow cannot read (skipped, counted, named), and refuses a
folder without class folders, a class folder without images, or (for training) one class.
``open_image`` and ``load_image`` (from ``cnnkit.data.image``, the one decoder) decode one file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .dataset import Dataset
from .image import load_image, open_image, read_header

__all__ = [
    "IMAGE_EXTENSIONS", "ImageFolder", "load_image", "open_image", "scan_folder", "FolderScan",
    "list_images",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

@dataclass
class FolderScan:
    """What ``scan_folder`` found in an image folder (headers only, nothing decoded).

    Attributes:
        root: the folder.
        classes: the class (subfolder) names, sorted; label k is ``classes[k]``.
        samples: ``(path, label)`` of every readable image, by class then path.
        sizes: ``(h, w)`` of each sample, upright (EXIF orientation applied).
        grayscale: True when every image is single-channel (so the data is grayscale).
        not_images: files skipped because their names are not image names (.txt, ...).
        unreadable: ``(path, reason)`` of files with an image name Pillow cannot read.
    """

    root: Path
    classes: list[str]
    samples: list[tuple[Path, int]]
    sizes: list[tuple[int, int]]
    grayscale: bool
    not_images: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def targets(self) -> np.ndarray:
        return np.asarray([label for _, label in self.samples], np.int64)

    def counts(self) -> np.ndarray:
        """Images per class, (K,)."""
        return np.bincount(self.targets, minlength=len(self.classes))

    def skipped_note(self) -> str:
        """One line on the skipped files ("" when none were skipped)."""
        parts = []
        if self.unreadable:
            names = ", ".join(f"{p.relative_to(self.root)} ({why})" for p, why in self.unreadable[:3])
            more = f" and {len(self.unreadable) - 3} more" if len(self.unreadable) > 3 else ""
            parts.append(f"skipped {len(self.unreadable)} unreadable image file(s): {names}{more}")
        if self.not_images:
            names = ", ".join(str(p.relative_to(self.root)) for p in self.not_images[:3])
            more = f" and {len(self.not_images) - 3} more" if len(self.not_images) > 3 else ""
            parts.append(f"ignored {len(self.not_images)} file(s) that are not images: {names}{more}")
        return "; ".join(parts)


def _image_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under ``folder``, recursively, sorted; hidden files ignored."""
    images, others = [], []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        (images if path.suffix.lower() in IMAGE_EXTENSIONS else others).append(path)
    return images, others


def _header(path: Path) -> tuple[tuple[int, int], bool]:
    """((h, w) upright, single-channel?) from the file's header; ValueError if unusable.

    The checks of the one image decoder apply (``cnnkit.data.image``): regular files only
    (a FIFO is skipped, not waited on), decompression bombs and images below the minimum
    size are reported as unreadable, with the reason.
    """
    try:
        header = read_header(path)
    except (OSError, ValueError) as e:
        raise ValueError(str(e).removeprefix(f"{path}: ") or type(e).__name__) from None
    return header.size, header.grayscale


def _header_is_gray(path: Path) -> bool:
    try:
        return _header(path)[1]
    except ValueError:
        return True  # an unreadable file does not decide the mode; reading it will fail by name


def scan_folder(
    root: str | os.PathLike, *, classes: Sequence[str] | None = None, min_classes: int = 1, what: str = "",
) -> FolderScan:
    """Find the class folders and images under ``root``, reading only the files' headers.

    Args:
        root: a folder with one subfolder per class.
        classes: the class names expected (e.g. a ``val/`` folder must have ``train/``'s).
        min_classes: refuse fewer class folders (2 for training).
        what: how to call the folder in messages (default: its path).

    Raises:
        DataError: ``root`` is not a folder; it has no class folders, fewer than
            ``min_classes``, classes other than ``classes``; a class folder holds no
            readable image; no file at all is readable.
    """
    root = Path(root).expanduser()
    label = what or str(root)
    if not root.exists():
        raise DataError(f"{label}: no such folder")
    if not root.is_dir():
        raise DataError(f"{label}: not a folder")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        loose, _ = _image_files(root)
        hint = f" (it holds {len(loose)} images directly: put them in one subfolder per class)" if loose else ""
        raise DataError(f"{label}: no class folders; expected one subfolder per class{hint}")
    if classes is not None and found != list(classes):
        missing = sorted(set(classes) - set(found))
        extra = sorted(set(found) - set(classes))
        detail = "; ".join(x for x in (f"lacks {missing}" if missing else "", f"has extra {extra}" if extra else "") if x)
        raise DataError(f"{label}: its class folders differ from the training classes {list(classes)}: {detail}")
    if len(found) < min_classes:
        raise DataError(
            f"{label}: found {len(found)} class folder ({found[0]!r}); a classifier needs at least "
            f"{min_classes} classes, one subfolder each"
        )
    samples, sizes, not_images, unreadable = [], [], [], []
    grayscale = True
    for k, name in enumerate(found):
        images, others = _image_files(root / name)
        not_images += others
        readable = 0
        for path in images:
            try:
                size, gray = _header(path)
            except ValueError as e:
                unreadable.append((path, str(e)))
                continue
            samples.append((path, k))
            sizes.append(size)
            grayscale = grayscale and gray
            readable += 1
        if not readable:
            why = f" ({len(images)} unreadable)" if images else ""
            raise DataError(
                f"{label}: class folder {name!r} holds no readable images{why} "
                f"(image files: {', '.join(IMAGE_EXTENSIONS)})"
            )
    return FolderScan(root, found, samples, sizes, grayscale, not_images, unreadable)


def list_images(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files named by ``paths``: files as given, folders searched recursively (sorted).

    Raises:
        FileNotFoundError: a path does not exist. DataError: a folder holds no image files.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            images, _ = _image_files(p)
            if not images:
                raise DataError(f"{p}: no image files in this folder ({', '.join(IMAGE_EXTENSIONS)})")
            out += images
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such image file or folder")
    return out


class ImageFolder(Dataset):
    """Images sorted into one subfolder per class (PNG/JPEG), loaded lazily one by one.

    Args:
        root: the folder holding one subfolder per class.
        transform: applied to each image array, e.g. ``ToTensor()``.
        target_transform: applied to each label.
        mode: ``"auto"`` (default): RGB unless every image is grayscale (read from the files'
            headers); ``"L"`` for grayscale (H, W) or ``"RGB"`` for (H, W, 3) uint8 images.
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
        mode: str = "auto",
        size: int | Sequence[int] | None = None,
    ):
        if mode not in ("auto", "L", "RGB"):
            raise ValueError(f"ImageFolder mode must be 'auto', 'L' or 'RGB', got {mode!r}")
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
        if mode == "auto":
            mode = "L" if all(_header_is_gray(path) for path, _ in self.samples) else "RGB"
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
