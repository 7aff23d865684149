"""CIFAR-10 from its *binary* archive: plain bytes, read straight out of the tar.gz.

The archive ``cifar-10-binary.tar.gz`` holds ``cifar-10-batches-bin/data_batch_{1..5}.bin``
and ``test_batch.bin``. Each file is a run of 3073-byte records: one label byte (0..9),
then 3072 pixel bytes, the 32x32 red plane, then green, then blue, each row-major
(www.cs.toronto.edu/~kriz/cifar.html). The python version of the archive is a pickle,
which can run code when loaded, so cnnkit never reads it.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import CIFARError
from ..files import open_regular, read_exactly
from .dataset import ArrayDataset
from .download import data_root, fetch

__all__ = ["CIFAR10", "CIFARError", "read_cifar_batch"]

_RECORD = 1 + 3 * 32 * 32
_MEMBER_DIR = "cifar-10-batches-bin"
_MAX_BATCH_BYTES = 10_000 * _RECORD  # each of the six batch files holds 10,000 records


def read_cifar_batch(raw: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one binary batch file into (images (N, 32, 32, 3) uint8, labels (N,) int64).

    Args:
        raw: the file's bytes, N records of 1 label byte + 3072 pixel bytes.
        source: the file's name, for error messages.

    Raises:
        CIFARError: the size is not a whole number of records, or a label is not 0..9.
    """
    if len(raw) == 0 or len(raw) % _RECORD:
        raise CIFARError(
            f"{source}: {len(raw)} bytes is not a whole number of {_RECORD}-byte CIFAR-10 records"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _RECORD)  # (N, 3073)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise CIFARError(f"{source}: label {labels.max()} out of range 0..9 (not a CIFAR-10 binary batch?)")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)
    return np.ascontiguousarray(images), labels


class CIFAR10(ArrayDataset):
    """CIFAR-10: 50,000 training and 10,000 test 32x32 colour images in 10 classes.

    Args:
        root: the data folder (default ``$CNNKIT_DATA`` or ``~/.cache/cnnkit``). The archive
            is kept in ``<root>/cifar-10/``; an already extracted ``cifar-10-batches-bin/``
            folder there (or directly in ``root``) is used as it is, with no download.
        train: the five training batches (True) or the test batch (False).
        transform: applied to each image, uint8 (32, 32, 3) as torchvision's; e.g.
            ``ToTensor()`` gives float32 (3, 32, 32).
        target_transform: applied to each label.
        download: fetch the archive when missing (default True).
        mirror: a URL prefix replacing the official one.
        progress: show download progress.

    Raises:
        CIFARError: the archive or a batch is truncated, corrupt or missing a member.
        DownloadError: the archive is missing and cannot be downloaded or verified.
    """

    folder = "cifar-10"
    mirror = "https://www.cs.toronto.edu/~kriz/"
    archive = "cifar-10-binary.tar.gz"
    # MD5 published on www.cs.toronto.edu/~kriz/cifar.html ("CIFAR-10 binary version")
    archive_md5 = "c32a1d4ab5d03f1284b67883e8d87530"
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

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
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] if train else ["test_batch.bin"]
        base = data_root(root)
        extracted = [
            d / _MEMBER_DIR for d in (base / self.folder, base) if (d / _MEMBER_DIR / names[0]).is_file()
        ]
        if extracted:
            parts = [read_cifar_batch(_read_file(extracted[0] / n), str(extracted[0] / n)) for n in names]
        else:
            archive = fetch(
                self.archive,
                folder=self.folder,
                mirror=mirror if mirror is not None else self.mirror,
                md5=self.archive_md5,
                root=root,
                download_missing=download,
                progress=progress,
            )
            parts = _read_archive(archive, names)
        self.train = train
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        super().__init__(images, labels, transform, target_transform)


def _read_file(path: Path) -> bytes:
    """A batch file's bytes: a regular file of at most 10,000 records (checked before reading)."""
    try:
        f, size = open_regular(path, "CIFAR-10 batch file")
        with f:
            if size > _MAX_BATCH_BYTES:
                raise CIFARError(f"{path}: {size} bytes is more than a CIFAR-10 batch holds ({_MAX_BATCH_BYTES})")
            return bytes(read_exactly(f, size, path, "CIFAR-10 batch file"))
    except (OSError, EOFError) as e:
        raise CIFARError(f"{path}: cannot read ({e.strerror if isinstance(e, OSError) and e.strerror else e})") from None


def _read_archive(path: Path, names: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Decode the named batches from the tar.gz without extracting anything to disk."""
    parts = []
    try:
        with tarfile.open(path, "r:gz") as tar:
            for name in names:
                member_name = f"{_MEMBER_DIR}/{name}"
                try:
                    member = tar.getmember(member_name)
                except KeyError:
                    raise CIFARError(f"{path}: archive has no member {member_name}") from None
                if not member.isfile():
                    raise CIFARError(f"{path}: {member_name} is not a regular file")
                if member.size > _MAX_BATCH_BYTES:
                    raise CIFARError(f"{path}: {member_name} is {member.size} bytes, more than a CIFAR-10 batch "
                                     f"holds ({_MAX_BATCH_BYTES})")
                raw = tar.extractfile(member).read()
                parts.append(read_cifar_batch(raw, f"{path}:{member_name}"))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise CIFARError(f"{path}: cannot read as a tar.gz archive ({e})") from None
    return parts
