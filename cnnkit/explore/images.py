"""Images in and out of the explorer: uploads (checked), samples to pick from, PNGs, the training log.

An upload is accepted only when it is small enough (``LIMITS["max_bytes"]``), declares
an image type, is an image Pillow can read of one of the accepted formats, and has at
most ``LIMITS["max_pixels"]`` pixels (checked from the header, before decoding). It is
then prepared exactly as ``cnnkit predict`` prepares a file, so the page and the command
agree on every prediction. Nothing a request sends is used as a path.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..data import DATASETS, load_mnist
from ..data.folder import IMAGE_EXTENSIONS
from ..data.prepare import load_strip
from ..errors import ExploreError
from ..io.targets import Target
from ..train.history import read_history
from ..viz.image_filters import sample_picture
from .session import Sample

__all__ = ["LIMITS", "IMAGE_TYPES", "decode_upload", "prepare", "picture_png", "build_samples", "log_file",
           "read_training_log"]

# MIME type -> the Pillow format name it must decode as
IMAGE_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/bmp": "BMP",
               "image/webp": "WEBP"}
LIMITS = {"max_bytes": 10 * 2**20, "max_pixels": 40_000_000, "types": sorted(IMAGE_TYPES)}
MAX_SAMPLES = 500           # images listed from a folder
DATASET_SAMPLES = 24        # test images offered from the checkpoint's dataset


def _check_image_bytes(body: bytes, content_type: str | None) -> None:
    """Raise ExploreError (413/415/400) unless ``body`` is an acceptable image."""
    from PIL import Image, UnidentifiedImageError  # Pillow loads only when an image comes in

    if not body:
        raise ExploreError("the upload is empty; send the image file's bytes as the request body", 400)
    if len(body) > LIMITS["max_bytes"]:
        raise ExploreError(f"the upload has {len(body):,} bytes; the limit is {LIMITS['max_bytes']:,}", 413)
    declared = (content_type or "").split(";")[0].strip().lower()
    if declared not in IMAGE_TYPES:
        raise ExploreError(
            f"only images are accepted ({', '.join(sorted(IMAGE_TYPES))}); the request declares "
            f"{declared or 'no type'!r}", 415)
    try:
        with Image.open(io.BytesIO(body)) as image:
            fmt, (w, h) = image.format, image.size
    except Image.DecompressionBombError:
        raise ExploreError(f"the image has too many pixels; the limit is {LIMITS['max_pixels']:,}", 413) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise ExploreError(f"the upload is not a readable image (declared {declared})", 415) from None
    if fmt not in IMAGE_TYPES.values():
        raise ExploreError(f"{fmt} images are not accepted; send one of {', '.join(sorted(IMAGE_TYPES))}", 415)
    if w * h > LIMITS["max_pixels"]:
        raise ExploreError(
            f"the image is {w}x{h} = {w * h:,} pixels; the limit is {LIMITS['max_pixels']:,}", 413)


def decode_upload(body: bytes, content_type: str | None, target: Target, *, fully_convolutional: bool = False,
                  invert: str = "auto", name: str | None = None) -> np.ndarray:
    """Check an uploaded image and prepare it for the model as ``cnnkit predict`` would.

    Returns:
        The picture (C, H, W) float32 in [0, 1].

    Raises:
        ExploreError: 400 (empty), 413 (too large), 415 (not an accepted image), 422
            (an image, but it cannot be prepared for this model).
    """
    _check_image_bytes(body, content_type)
    try:
        return prepare(io.BytesIO(body), target, fully_convolutional=fully_convolutional, invert=invert)
    except (ValueError, OSError) as e:
        reason = str(e)
        if name and reason.startswith("the image: "):       # the decoder's name for bytes: say which upload
            reason = f"{name}: {reason[len('the image: '):]}"
        raise ExploreError(f"the image cannot be prepared for this model: {reason}", 422) from None


def prepare(file, target: Target, *, fully_convolutional: bool = False, invert: str = "auto") -> np.ndarray:
    """An image file (path or binary file) as the model's input picture, exactly as ``cnnkit
    predict`` prepares it (``Target.picture``), or ``load_strip`` for a fully convolutional
    model (any width)."""
    if fully_convolutional:
        return np.asarray(load_strip(file, target.input_shape, invert=invert), np.float32)
    return target.picture(file, invert)


def picture_png(picture: np.ndarray, scale: int = 1) -> bytes:
    """PNG bytes of a (C, H, W) picture in [0, 1] (C = 1 grey, 3 RGB; others: their mean)."""
    from PIL import Image  # Pillow loads only when a picture is written

    p = np.clip(np.asarray(picture, np.float64), 0, 1)
    if p.shape[0] not in (1, 3):
        p = p.mean(axis=0, keepdims=True)
    arr = (p * 255 + 0.5).astype(np.uint8)
    image = Image.fromarray(arr[0]) if arr.shape[0] == 1 else Image.fromarray(arr.transpose(1, 2, 0))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- samples
def _file_sample(path: Path, target: Target, fully_convolutional: bool, label: str | None) -> Sample:
    return Sample(path.name, label, lambda: prepare(path, target, fully_convolutional=fully_convolutional))


def _array_sample(name: str, label: str | None, picture: Callable[[], np.ndarray]) -> Sample:
    return Sample(name, label, lambda: np.asarray(picture(), np.float32))


def build_samples(target: Target, image_or_folder: str | os.PathLike | None = None, *,
                  fully_convolutional: bool = False) -> list[Sample]:
    """The images offered on the page.

    Args:
        image_or_folder: a PNG/JPEG file, or a folder searched (recursively, sorted, at most
            ``MAX_SAMPLES``) for them; a file's label is its folder's name when it sits in a
            class subfolder. None: the test split of the checkpoint's dataset when it is on
            this machine (MNIST always is), else the built-in picture.

    Raises:
        FileNotFoundError: ``image_or_folder`` does not exist or holds no image.
    """
    if image_or_folder is not None:
        path = Path(image_or_folder)
        if path.is_file():
            return [_file_sample(path, target, fully_convolutional, None)]
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such image file or folder")
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise FileNotFoundError(f"{path}: the folder holds no PNG or JPEG image")
        return [_file_sample(p, target, fully_convolutional, p.parent.name if p.parent != path else None)
                for p in files[:MAX_SAMPLES]]
    samples = [] if fully_convolutional else _dataset_samples(target)
    if samples:
        return samples
    shape = target.input_shape
    return [_array_sample("built-in " + ("digit" if shape[0] == 1 else "scene"), None, lambda: sample_picture(shape))]


def _dataset_samples(target: Target) -> list[Sample]:
    """The first test images of the checkpoint's dataset, if its files are on this machine (never downloaded)."""
    C, H, W = target.input_shape
    dataset = target.dataset or ("mnist" if (C, H, W) == (1, 28, 28) else None)
    if dataset not in DATASETS:
        return []
    try:
        if dataset == "mnist":
            images, labels = load_mnist("test")
            images, labels = images[:DATASET_SAMPLES], labels[:DATASET_SAMPLES]
        else:
            ds = DATASETS[dataset].cls(train=False, download=False)
            pairs = [ds[i] for i in range(min(DATASET_SAMPLES, len(ds)))]
            images = np.stack([np.asarray(img) for img, _ in pairs])
            labels = np.asarray([t for _, t in pairs])
    except (OSError, ValueError):  # not on this machine (DataError, DownloadError): offer none
        return []
    if images.ndim == 3:
        images = images[:, None]                                              # (N, 1, H, W)
    elif images.shape[-1] in (1, 3):
        images = images.transpose(0, 3, 1, 2)                                 # (N, C, H, W)
    if tuple(images.shape[1:]) != (C, H, W):
        return []
    names = target.classes
    return [_array_sample(f"{dataset} test #{i}", names[int(t)] if int(t) < len(names) else str(int(t)),
                          lambda img=img: img.astype(np.float32) / 255.0)
            for i, (img, t) in enumerate(zip(images, labels, strict=True))]


# --------------------------------------------------------------------------- training log
def log_file(folder: Path) -> Path | None:
    """The file the curves come from: the run folder's log.csv, else its last checkpoint."""
    for name in ("log.csv", "last.safetensors"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_training_log(folder: Path) -> dict[str, Any]:
    """{"epochs": [...], "logs": {name: [...]}, "file": name} from a run folder (empty lists before the first epoch).

    Raises:
        ExploreError: 422 when the log exists but cannot be read.
    """
    found = log_file(folder)
    if found is None:
        return {"epochs": [], "logs": {}, "file": None, "message": f"{folder}: no log.csv yet"}
    try:
        epochs, logs = read_history(found)
    except ValueError as e:
        if "no epochs yet" in str(e):
            return {"epochs": [], "logs": {}, "file": found.name, "message": str(e)}
        raise ExploreError(f"the training log cannot be read: {e}", 422) from None
    except OSError as e:
        raise ExploreError(f"the training log cannot be read: {e}", 422) from None
    return {"epochs": epochs, "logs": logs, "file": found.name}
