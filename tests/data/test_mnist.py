"""The bundled MNIST files and the IDX reader."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from cnnkit.data import IDXError, load_mnist, read_idx


def test_bundled_mnist_has_the_canonical_label_counts():
    images, labels = load_mnist("train")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(
        np.bincount(labels), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    )
    images, labels = load_mnist("test")
    assert images.shape == (10000, 28, 28)
    np.testing.assert_array_equal(
        np.bincount(labels), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_read_idx_round_trips_and_checks_the_checksum(tmp_path):
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x.idx.gz"
    path.write_bytes(gzip.compress(_idx_bytes(data)))
    np.testing.assert_array_equal(read_idx(path), data)
    with pytest.raises(
        IDXError, match=r"x.idx.gz: SHA-256 of the decompressed data is [0-9a-f]{64}, expected 00"
    ):
        read_idx(path, sha256="00" * 32)


def test_truncated_corrupt_and_foreign_files_are_refused(tmp_path):
    data = np.zeros((3, 4), np.uint8)
    truncated = tmp_path / "t.idx"
    truncated.write_bytes(_idx_bytes(data)[:-2])
    with pytest.raises(
        IDXError, match=r"t.idx: header says \(3, 4\) values of uint8 \(12 bytes\), file holds 10"
    ):
        read_idx(truncated)
    foreign = tmp_path / "f.idx"
    foreign.write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(IDXError, match=r"f.idx: not an IDX file \(magic number 504b0304\)"):
        read_idx(foreign)
    corrupt = tmp_path / "c.idx.gz"
    corrupt.write_bytes(gzip.compress(_idx_bytes(data))[:-6])
    with pytest.raises(IDXError, match=r"c.idx.gz: cannot read as gzipped IDX"):
        read_idx(corrupt)


def test_mnist_dataset_yields_float_batches_through_to_tensor():
    from cnnkit.data import MNIST, DataLoader
    from cnnkit.data import transforms as T

    test = MNIST(train=False, transform=T.ToTensor())
    assert len(test) == 10000 and test.classes[3] == "3"
    image, label = test[0]
    assert image.shape == (1, 28, 28) and image.dtype == np.float32 and isinstance(label, int)
    x, t = next(iter(DataLoader(test, batch_size=32)))
    assert x.shape == (32, 1, 28, 28) and x.dtype == np.float32 and t.dtype == np.int64
    np.testing.assert_allclose(x[0], image)
    assert x.max() == 1.0 and x.min() == 0.0


def test_mnist_reads_a_user_folder_and_checks_it(tmp_path):
    import shutil

    from cnnkit.data import MNIST
    from cnnkit.data.mnist import _BUNDLED

    (tmp_path / "mnist").mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(_BUNDLED / name, tmp_path / "mnist" / name)
    assert len(MNIST(root=tmp_path, train=False)) == 10000
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(_idx_bytes(np.zeros(10000, np.uint8)))
    )
    with pytest.raises(IDXError, match=r"t10k-labels-idx1-ubyte.gz: SHA-256 of the decompressed data is"):
        MNIST(root=tmp_path, train=False)


def test_mnist_falls_back_to_the_bundled_copy_when_root_has_no_mnist(tmp_path):
    from cnnkit.data import MNIST

    assert len(MNIST(root=tmp_path, train=False)) == 10000
