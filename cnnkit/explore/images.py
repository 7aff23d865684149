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

from .session import ExploreError, ModelSource, Sample

__all__ = ["LIMITS", "decode_upload", "picture_png", "build_samples", "read_training_log", "IMAGE_TYPES"]

# MIME type -> the Pillow format name it must decode as
IMAGE_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/bmp": "BMP",
               "image/webp": "WEBP"}
LIMITS = {"max_bytes": 10 * 2**20, "max_pixels": 40_000_000, "types": sorted(IMAGE_TYPES)}
MAX_SAMPLES = 500           # images listed from a folder
MNIST_SAMPLES = 24          # test digits offered for an MNIST model


def _check_image_bytes(body: bytes, content_type: str | None) -> None:
    """Raise ExploreError (413/415/400) unless ``body`` is an acceptable image."""
    from PIL import Image, UnidentifiedImageError

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


def decode_upload(body: bytes, content_type: str | None, source: ModelSource, invert: str = "auto") -> np.ndarray:
    """Check an uploaded image and prepare it for the model as ``cnnkit predict`` would.

    Returns:
        The picture (C, H, W) float32 in [0, 1].

    Raises:
        ExploreError: 400 (empty), 413 (too large), 415 (not an accepted image), 422
            (an image, but it cannot be prepared for this model).
    """
    _check_image_bytes(body, content_type)
    try:
        return _prepare(io.BytesIO(body), source, invert)
    except (ValueError, OSError) as e:
        raise ExploreError(f"the image cannot be prepared for this model: {e}", 422) from None


def _prepare(file, source: ModelSource, invert: str = "auto") -> np.ndarray:
    from ..runner import prepare_image  # LAYOUT: cnnkit.data.prepare after the layout lands
    from ..surgery_cli import load_strip

    if source.fully_convolutional:
        return np.asarray(load_strip(file, source.input_shape, invert=invert), np.float32)
    return np.asarray(prepare_image(file, source.input_shape, invert), np.float32)


def picture_png(picture: np.ndarray, scale: int = 1) -> bytes:
    """PNG bytes of a (C, H, W) picture in [0, 1] (C = 1 grey, 3 RGB; others: their mean)."""
    from PIL import Image

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
def _file_sample(path: Path, source: ModelSource, label: str | None) -> Sample:
    def load() -> np.ndarray:
        with open(path, "rb") as f:
            return _prepare(io.BytesIO(f.read()), source)
    return Sample(path.name, label, load)


def _array_sample(name: str, label: str | None, picture: Callable[[], np.ndarray]) -> Sample:
    return Sample(name, label, lambda: np.asarray(picture(), np.float32))


def build_samples(source: ModelSource, image_or_folder: str | os.PathLike | None = None) -> list[Sample]:
    """The images offered on the page.

    Args:
        image_or_folder: a PNG/JPEG file, or a folder searched (recursively, sorted, at most
            ``MAX_SAMPLES``) for them; a file's label is its folder's name when it sits in a
            class subfolder. None: the test split of the checkpoint's dataset when it is on
            this machine (MNIST always is), else a built-in picture.

    Raises:
        FileNotFoundError: ``image_or_folder`` does not exist.
    """
    from ..data.folder import IMAGE_EXTENSIONS

    if image_or_folder is not None:
        path = Path(image_or_folder)
        if path.is_file():
            return [_file_sample(path, source, None)]
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such image file or folder")
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise FileNotFoundError(f"{path}: the folder holds no PNG or JPEG image")
        return [_file_sample(p, source, p.parent.name if p.parent != path else None) for p in files[:MAX_SAMPLES]]
    samples = _dataset_samples(source)
    if samples:
        return samples
    return [_builtin_sample(source)]


def _dataset_samples(source: ModelSource) -> list[Sample]:
    C, H, W = source.input_shape
    dataset = source.dataset or ("mnist" if (C, H, W) == (1, 28, 28) and not source.fully_convolutional else None)
    if dataset is None or source.fully_convolutional:
        return []
    try:
        if dataset == "mnist":
            from ..data import load_mnist

            images, labels = load_mnist("test")
            images, labels = images[:MNIST_SAMPLES], labels[:MNIST_SAMPLES]
        else:
            from .. import data

            names = {"fashion-mnist": "FashionMNIST", "kmnist": "KMNIST", "cifar10": "CIFAR10"}
            if dataset not in names:
                return []
            ds = getattr(data, names[dataset])(train=False, download=False)
            pairs = [ds[i] for i in range(min(MNIST_SAMPLES, len(ds)))]
            images = np.stack([np.asarray(img) for img, _ in pairs])
            labels = np.asarray([t for _, t in pairs])
    except Exception:  # noqa: BLE001 - a dataset that is not on this machine: offer no samples from it
        return []
    if images.ndim == 3:
        images = images[:, None]                                              # (N, 1, H, W)
    elif images.shape[-1] in (1, 3):
        images = images.transpose(0, 3, 1, 2)                                 # (N, C, H, W)
    if tuple(images.shape[1:]) != (C, H, W):
        return []
    classes = source.classes
    samples = []
    for i, (img, t) in enumerate(zip(images, labels, strict=True)):
        label = classes[int(t)] if int(t) < len(classes) else str(int(t))
        samples.append(_array_sample(f"{dataset} test #{i}", label, lambda img=img: img.astype(np.float32) / 255.0))
    return samples


def _builtin_sample(source: ModelSource) -> Sample:
    from ..viz.kernels import sample_image

    C, H, W = source.input_shape

    def load() -> np.ndarray:
        from PIL import Image

        picture = sample_image("digit" if C == 1 else "scene")                # (c, h, w) in [0, 1]
        if C == 1 and picture.shape[0] == 3:
            picture = picture.mean(axis=0, keepdims=True)
        if C not in (1, picture.shape[0]):
            picture = np.repeat(picture.mean(axis=0, keepdims=True), C, axis=0)
        if source.fully_convolutional:
            return picture
        # centre-crop to the model's aspect ratio, then resize each channel (no 8-bit rounding)
        _, h, w = picture.shape
        if h / w > H / W:
            keep = max(1, round(w * H / W))
            picture = picture[:, (h - keep) // 2 : (h - keep) // 2 + keep]
        else:
            keep = max(1, round(h * W / H))
            picture = picture[:, :, (w - keep) // 2 : (w - keep) // 2 + keep]
        chans = [np.asarray(Image.fromarray(c.astype(np.float32)).resize((W, H), Image.BILINEAR)) for c in picture]
        return np.clip(np.stack(chans), 0, 1).astype(np.float32)

    return Sample("built-in " + ("digit" if C == 1 else "scene"), None, load)


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
    from ..viz.cli import read_history

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
