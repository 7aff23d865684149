"""MNIST (bundled) and the datasets in its IDX format: Fashion-MNIST and KMNIST (downloaded).

Each split is a pair of gzipped IDX files: images (N, 28, 28) uint8 and labels (N,).
MNIST's four files ship inside the package and are checked by the SHA-256 of their
decompressed bytes. Fashion-MNIST and KMNIST are downloaded once into the data folder
(``~/.cache/cnnkit``, ``$CNNKIT_DATA`` or ``root``) and checked by the MD5 sums their
authors publish.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .dataset import ArrayDataset
from .download import fetch
from .idx import IDXError, read_idx

__all__ = ["FashionMNIST", "KMNIST", "MNIST", "MNIST_FILES", "load_mnist"]

_BUNDLED = Path(__file__).with_name("mnist")

# file name -> SHA-256 of the decompressed IDX bytes
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def _split_files(train: bool) -> tuple[str, str]:
    prefix = "train" if train else "t10k"
    return f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"


def _read_pair(
    images_path: Path, labels_path: Path, sha256: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    sums = sha256 or {}
    images = read_idx(images_path, sums.get(images_path.name))
    labels = read_idx(labels_path, sums.get(labels_path.name))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise IDXError(
            f"{images_path} and {labels_path} do not pair up: images {images.shape}, labels {labels.shape}"
        )
    return images, labels


def load_mnist(split: str = "train", root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (images (N, 28, 28) uint8, labels (N,) uint8) of the ``"train"`` or ``"test"`` split.

    Args:
        root: a folder holding the four gzipped IDX files; defaults to the copy bundled
            with cnnkit. Every file's checksum is verified.
    """
    if split not in ("train", "test"):
        raise ValueError(f"load_mnist expects split 'train' or 'test', got {split!r}")
    folder = Path(root) if root is not None else _BUNDLED
    images_name, labels_name = _split_files(split == "train")
    return _read_pair(folder / images_name, folder / labels_name, MNIST_FILES)


class MNIST(ArrayDataset):
    """MNIST handwritten digits: 60,000 training and 10,000 test images, 28x28 grayscale.

    Args:
        root: a folder with the four gzipped IDX files (directly, or in ``mnist/`` or
            torchvision's ``MNIST/raw/``); when it holds none of them, or by default, the
            copy bundled with cnnkit is read, so no download is ever needed.
        train: the training split (True) or the test split (False).
        transform: applied to each image, uint8 (28, 28); e.g. ``ToTensor()``.
        target_transform: applied to each label.

    Raises:
        IDXError: a file is missing, truncated, corrupt or fails its SHA-256.
    """

    classes = [str(d) for d in range(10)]

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        train: bool = True,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
    ):
        folder = _BUNDLED
        if root is not None:
            # A --data-dir shared with other datasets need not hold MNIST: the bundled
            # copy is the same canonical data (same SHA-256 sums), so fall back to it.
            base = Path(root).expanduser()
            images_name = _split_files(train)[0]
            found = [f for f in (base, base / "mnist", base / "MNIST" / "raw") if (f / images_name).is_file()]
            folder = found[0] if found else _BUNDLED
        self.train = train
        images, labels = load_mnist("train" if train else "test", folder)
        super().__init__(images, labels, transform, target_transform)


class _DownloadedIDX(ArrayDataset):
    """An MNIST-format dataset fetched from ``mirror`` and checked against ``resources``' MD5s.

    Subclasses set ``folder`` (the cache subfolder), ``mirror`` (URL prefix),
    ``resources`` (file name -> published MD5 of the .gz file) and ``classes``.
    """

    folder: str
    mirror: str
    resources: dict[str, str]
    torchvision_name: str

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        train: bool = True,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        download: bool = True,
        mirror: str | None = None,
        progress: bool = True,
    ):
        mirror = mirror if mirror is not None else self.mirror
        paths = [
            fetch(
                name,
                folder=self.folder,
                mirror=mirror,
                md5=self.resources[name],
                root=root,
                download_missing=download,
                progress=progress,
                also_look_in=(f"{self.torchvision_name}/raw",),
            )
            for name in _split_files(train)
        ]
        self.train = train
        images, labels = _read_pair(*paths)
        super().__init__(images, labels, transform, target_transform)


class FashionMNIST(_DownloadedIDX):
    """Fashion-MNIST (Zalando): 70,000 28x28 grayscale images of 10 kinds of clothing.

    Same layout and arguments as ``MNIST`` plus ``download`` (fetch missing files,
    default True), ``mirror`` (a URL prefix replacing the official one) and ``progress``.
    Files are kept in ``<root>/fashion-mnist/``; ``root`` defaults to ``$CNNKIT_DATA`` or
    ``~/.cache/cnnkit``. Sums and URL: github.com/zalandoresearch/fashion-mnist.
    """

    folder = "fashion-mnist"
    torchvision_name = "FashionMNIST"
    mirror = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    resources = {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }
    classes = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]


class KMNIST(_DownloadedIDX):
    """Kuzushiji-MNIST (ROIS-DS CODH): 70,000 28x28 grayscale images of 10 cursive hiragana.

    Same arguments as ``FashionMNIST``; files are kept in ``<root>/kmnist/``.
    Sums and URL: github.com/rois-codh/kmnist.
    """

    folder = "kmnist"
    torchvision_name = "KMNIST"
    mirror = "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"
    resources = {
        "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
        "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
        "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
        "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
    }
    classes = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]
