"""MNIST, bundled: 60,000 training and 10,000 test images of handwritten digits, 28x28 uint8."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .idx import read_idx

__all__ = ["load_mnist", "MNIST_FILES"]

_BUNDLED = Path(__file__).with_name("mnist")

# file name -> SHA-256 of the decompressed IDX bytes
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def load_mnist(split: str = "train", root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (images (N, 28, 28) uint8, labels (N,) uint8) of the ``"train"`` or ``"test"`` split.

    Args:
        root: a folder holding the four gzipped IDX files; defaults to the copy bundled
            with cnnkit. Every file's checksum is verified.
    """
    if split not in ("train", "test"):
        raise ValueError(f"load_mnist expects split 'train' or 'test', got {split!r}")
    folder = Path(root) if root is not None else _BUNDLED
    prefix = "train" if split == "train" else "t10k"
    images_name, labels_name = f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"
    images = read_idx(folder / images_name, MNIST_FILES[images_name])
    labels = read_idx(folder / labels_name, MNIST_FILES[labels_name])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"MNIST {split} files in {folder} do not pair up: images {images.shape}, labels {labels.shape}"
        )
    return images, labels
