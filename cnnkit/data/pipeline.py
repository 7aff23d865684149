"""Image files as model inputs: the preprocessing a model was trained with, and datasets of files.

    spec = ImageSpec(channels=3, size=(64, 64), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x = spec.load(["a.jpg", "b.png"])             # (2, 3, 64, 64) float32, normalized

``ImageSpec`` is what a checkpoint stores so that ``evaluate``, ``predict``, ``visualize``,
``fcn`` and ``prune`` feed a model exactly as it was trained: channels, size, the resize
policy and the normalization. The resize policy:

- ``"crop"`` (default): the shorter side is scaled to the target size and the centre kept
  (the aspect ratio is preserved; the edges of non-square images are cut);
- ``"squash"``: the whole image is scaled to the target size (nothing is cut; the aspect
  ratio changes).

Resampling is Pillow's antialiased bilinear; large JPEGs are decoded at a reduced scale
first when that still leaves at least the target size (libjpeg's DCT scaling).

``ImageFiles`` reads files as they are needed (``get_batch`` decodes a batch; the
DataLoader's worker threads run it). ``decode_all`` decodes every file once into one uint8
array (the in-memory cache), with a progress callback and worker threads; ``CachedImages``
serves batches from it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from . import transforms as T
from .dataset import ArrayDataset, Dataset
from .folder import open_image

__all__ = ["ImageSpec", "ImageFiles", "CachedImages", "decode_all", "channel_stats", "normalization_for_channels",
           "RESIZE_POLICIES"]

RESIZE_POLICIES = ("crop", "squash")


@dataclass(frozen=True)
class ImageSpec:
    """How an image file becomes a model input: channels, size, resize policy, normalization.

    Attributes:
        channels: 1 (grayscale) or 3 (RGB); files are converted to it.
        size: (H, W) of the model input.
        mean, std: per-channel normalization of pixels in [0, 1]: (x - mean) / std.
        resize: ``"crop"`` or ``"squash"`` (module docstring).
    """

    channels: int
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = "crop"

    def __post_init__(self):
        if self.channels not in (1, 3):
            raise ValueError(f"ImageSpec channels must be 1 or 3, got {self.channels}")
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"resize policy must be one of {RESIZE_POLICIES}, got {self.resize!r}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.size)

    @property
    def mode(self) -> str:
        return "L" if self.channels == 1 else "RGB"

    def geometry(self, image):
        """A PIL image brought to ``size`` by the resize policy (one Pillow call)."""
        from PIL import Image

        H, W = self.size
        w, h = image.size
        if (h, w) == (H, W):
            return image
        box = (0.0, 0.0, float(w), float(h))
        if self.resize == "crop":
            scale = max(H / h, W / w)
            ch, cw = H / scale, W / scale                           # the kept part, in input pixels
            box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
        return image.resize((W, H), Image.Resampling.BILINEAR, box=box)

    def decode(self, path: str | os.PathLike) -> np.ndarray:
        """One file as uint8 (H, W, C) at ``size``, upright (EXIF), converted to ``channels``."""
        H, W = self.size
        image = self.geometry(open_image(path, self.mode, draft=(H, W)))
        array = np.asarray(image, dtype=np.uint8)
        return array[:, :, None] if array.ndim == 2 else array

    def normalize(self) -> T.Normalize:
        return T.Normalize(self.mean, self.std)

    def to_inputs(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C) -> normalized float32 (N, C, H, W), (v / 255 - mean) / std per channel."""
        std = np.asarray(self.std, np.float64)
        return _scale_shift(images, 1.0 / (255.0 * std), np.asarray(self.mean, np.float64) / std)

    def load(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """Files as a normalized model input batch (N, C, H, W) float32."""
        return self.to_inputs(np.stack([self.decode(p) for p in paths]))

    def describe(self) -> str:
        H, W = self.size
        policy = "shorter side scaled, centre kept" if self.resize == "crop" else "squashed"
        return f"{'RGB' if self.channels == 3 else 'grayscale'} {H}x{W} ({policy})"

    def to_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "size": list(self.size), "mean": list(self.mean),
                "std": list(self.std), "resize": self.resize}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageSpec:
        return cls(int(d["channels"]), (int(d["size"][0]), int(d["size"][1])),
                   tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]),
                   str(d.get("resize", "crop")))


def _scale_shift(images: np.ndarray, scale, shift) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) = images * scale[c] - shift[c], in one strided pass.

    Writing the channel-first result straight from the channel-last bytes is about twice as
    fast as ToTensor then Normalize (a float copy, a transpose copy, two more passes).
    """
    N, H, W, C = images.shape
    out = np.empty((N, C, H, W), np.float32)
    np.multiply(images.transpose(0, 3, 1, 2), np.asarray(scale, np.float32).reshape(1, -1, 1, 1),
                out=out, casting="unsafe")
    out -= np.asarray(shift, np.float32).reshape(1, -1, 1, 1)
    return out


class ImageFiles(Dataset):
    """Image files and labels, decoded when asked for (a batch at a time in ``get_batch``).

    Args:
        samples: ``(path, label)`` pairs.
        spec: the preprocessing (size, channels, resize policy, normalization).
        crop: a ``RandomResizedCrop`` for training: cut from the full-size decoded image
            instead of ``spec``'s resize; None: ``spec``'s resize.
        transform: applied to the float batch (N, C, H, W) in [0, 1] before normalization
            (flips, ``ColorJitter``); a ``Transform``.

    A sample is ``(normalized float32 (C, H, W), label)``.
    """

    def __init__(self, samples: Sequence[tuple[Path, int]], spec: ImageSpec,
                 crop: T.RandomResizedCrop | None = None, transform: T.Transform | None = None):
        self.samples = list(samples)
        self.targets = np.asarray([label for _, label in self.samples], np.int64)
        self.spec, self.crop, self.transform = spec, crop, transform
        self.random = crop is not None or transform is not None

    def __len__(self) -> int:
        return len(self.samples)

    def _decode(self, path: Path) -> np.ndarray:
        if self.crop is None:
            return self.spec.decode(path)
        array = np.asarray(self.crop(open_image(path, self.spec.mode)), dtype=np.uint8)
        return array[:, :, None] if array.ndim == 2 else array

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = []
        for i in indices:
            path = self.samples[int(i)][0]
            try:
                images.append(self._decode(path))
            except (ValueError, OSError) as e:
                raise DataError(f"{e}; remove the file or fix it, then run again") from None
        images = np.stack(images)                                          # (N, H, W, C) uint8
        if self.transform is None:
            return self.spec.to_inputs(images), self.targets[np.asarray(indices)]
        x = self.transform.batch(_scale_shift(images, [1 / 255] * images.shape[-1], [0.0] * images.shape[-1]))
        return self.spec.normalize().batch(x), self.targets[np.asarray(indices)]

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        x, t = self.get_batch(np.array([index]))
        return x[0], int(t[0])


class CachedImages(ArrayDataset):
    """Decoded images held in memory, uint8 (N, H, W, C), served with the training transforms.

    The batch transform is: ``ToTensor``, then ``crop`` (a ``RandomResizedCrop`` of the
    cached image), then ``transform`` (flips, ``ColorJitter``), then ``spec``'s normalization.
    """

    def __init__(self, data: np.ndarray, targets: np.ndarray, spec: ImageSpec,
                 crop: T.RandomResizedCrop | None = None, transform: T.Transform | None = None):
        steps: list[Any] = [T.ToTensor()]
        steps += [t for t in (crop, transform) if t is not None]
        steps.append(spec.normalize())
        super().__init__(data, targets, transform=T.Compose(steps))
        self.spec = spec
        self.random = crop is not None or transform is not None

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.random:
            return super().get_batch(indices)
        return self.spec.to_inputs(self.data[indices]), self.targets[indices]


def decode_all(
    paths: Sequence[Path], spec: ImageSpec, workers: int = 0,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, list[tuple[Path, str]]]:
    """Decode every file at ``spec``'s size into one array: the in-memory cache.

    Args:
        workers: threads decoding in parallel (0: this thread).
        progress: called with the number of files done so far, now and then.

    Returns:
        (uint8 (N', H, W, C) of the readable files in order, [(path, reason) of unreadable ones]).
    """
    H, W = spec.size
    out = np.empty((len(paths), H, W, spec.channels), np.uint8)
    ok = np.ones(len(paths), bool)
    failures: list[tuple[Path, str]] = []

    def work(i: int) -> None:
        try:
            out[i] = spec.decode(paths[i])
        except (ValueError, OSError) as e:
            ok[i] = False
            failures.append((paths[i], str(e).split(": ", 1)[-1]))

    chunk = 64
    starts = range(0, len(paths), chunk)
    if workers > 0:
        with ThreadPoolExecutor(workers, thread_name_prefix="cnnkit-decode") as pool:
            done = 0
            for start in starts:
                list(pool.map(work, range(start, min(start + chunk, len(paths)))))
                done = min(start + chunk, len(paths))
                if progress:
                    progress(done)
    else:
        for start in starts:
            for i in range(start, min(start + chunk, len(paths))):
                work(i)
            if progress:
                progress(min(start + chunk, len(paths)))
    return (out if ok.all() else out[ok]), sorted(failures)


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images (N, H, W, C), in [0, 1] units."""
    x = images.reshape(-1, images.shape[-1])
    total = np.zeros(x.shape[1])
    squares = np.zeros(x.shape[1])
    for start in range(0, len(x), 1 << 22):                  # in chunks: no float copy of everything
        part = x[start : start + (1 << 22)].astype(np.float64)
        total += part.sum(axis=0)
        squares += (part * part).sum(axis=0)
    n = max(len(x), 1)
    mean = total / n / 255.0
    std = np.sqrt(np.maximum(squares / n / 65025.0 - mean**2, 0))
    std = np.where(std > 1e-6, std, 1.0)                     # a constant channel: no division by 0
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def normalization_for_channels(
    mean: Sequence[float], std: Sequence[float], channels: int,
) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """Per-channel ``mean``/``std`` for ``channels`` channels, and what was done ("" if nothing).

    RGB statistics become one channel's by averaging the three (the match of a first
    convolution summed over its RGB weights); one channel's are repeated for three.

    Raises:
        ValueError: no such conversion (e.g. 2 -> 3 channels).
    """
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if len(mean) == channels:
        return mean, std, ""
    if len(mean) == 3 and channels == 1:
        return (sum(mean) / 3,), (sum(std) / 3,), "averaged over R, G and B for one channel"
    if len(mean) == 1:
        return mean * channels, std * channels, f"repeated for {channels} channels"
    raise ValueError(f"cannot convert {len(mean)}-channel normalization to {channels} channels")
