"""Bad dataset files: gzip bombs, oversized batches, FIFOs, truncated and garbled streams."""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np
import pytest

from cnnkit.data import MNIST, read_idx
from cnnkit.data import idx as idx_module
from cnnkit.data.cifar import _read_file
from cnnkit.errors import CIFARError, IDXError


def _bomb(path, dims, zeros: int):
    """A gzipped IDX file whose header declares ``dims`` and whose body is ``zeros`` zero bytes."""
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    with open(path, "wb") as f:
        f.write(c.compress(bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)))
        block = b"\0" * (1 << 20)
        for _ in range(zeros >> 20):
            f.write(c.compress(block))
        f.write(c.flush())
    return path


def test_a_gzip_bomb_is_refused_after_inflating_no_more_than_its_header_declares(tmp_path):
    """64 MiB of zeros behind a header that declares 10 images: refused after ~8 KB, before any checksum."""
    path = _bomb(tmp_path / "train-images-idx3-ubyte.gz", (10, 28, 28), 64 << 20)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(IDXError, match=r"train-images-idx3-ubyte.gz: inflates to more than the 7.7 KiB its header "
                                       r"declares \(from \d+\.\d KiB compressed\); refused as a likely gzip bomb"):
        read_idx(path, sha256="0" * 64)


def test_a_gzip_bomb_declaring_a_huge_size_is_stopped_by_the_overall_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(idx_module, "MAX_INFLATED_BYTES", 4 << 20)
    path = _bomb(tmp_path / "t.idx.gz", (2**31 - 1, 28, 28), 16 << 20)
    with pytest.raises(IDXError, match=r"t.idx.gz: inflates to more than 4.0 MiB \(from .*\); refused as a likely gzip"):
        read_idx(path)


def test_a_gzip_bomb_in_a_data_folder_never_reaches_the_checksum(tmp_path):
    """`cnnkit train --data-dir DIR`: MNIST files found there are read with the cap too."""
    _bomb(tmp_path / "train-images-idx3-ubyte.gz", (60000, 28, 28), 64 << 20)
    with pytest.raises(IDXError, match=r"inflates to more than the 44.9 MiB its header declares"):
        MNIST(root=tmp_path, train=True)


@pytest.mark.parametrize("raw, message", [
    (b"", r"not gzip data"),
    (b"plain text, not gzip", r"not gzip data"),
    (gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]))[:-6], r"the stream is truncated"),
    (gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])) + b"junk", r"trailing bytes after the gzip data"),
    (gzip.compress(b"\xff\xff\x08\x01"), r"not an IDX file \(magic number ffff0801\)"),
    (gzip.compress(bytes([0, 0, 0x42, 1, 0, 0, 0, 3])), r"unknown IDX type code 0x42"),
    (b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"garbage!", r"corrupt stream"),
])
def test_garbled_gzip_streams_are_refused_by_name(tmp_path, raw, message):
    path = tmp_path / "bad.idx.gz"
    path.write_bytes(raw)
    with pytest.raises(IDXError, match=rf"bad.idx.gz: .*{message}"):
        read_idx(path)


def test_gzip_members_and_zero_padding_still_read(tmp_path):
    payload = bytes([0, 0, 8, 1, 0, 0, 0, 4, 9, 8, 7, 6])
    path = tmp_path / "ok.idx.gz"
    path.write_bytes(gzip.compress(payload[:6]) + gzip.compress(payload[6:]) + b"\0" * 8)
    np.testing.assert_array_equal(read_idx(path), [9, 8, 7, 6])


def test_an_idx_fifo_or_folder_is_refused_without_hanging(tmp_path):
    os.mkfifo(tmp_path / "pipe.idx")
    with pytest.raises(IDXError, match=r"pipe.idx: cannot read as IDX \(is a FIFO \(named pipe\), not an IDX file\)"):
        read_idx(tmp_path / "pipe.idx")
    with pytest.raises(IDXError, match=r"cannot read as IDX \(is a folder"):
        read_idx(tmp_path)


def test_an_oversized_cifar_batch_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "data_batch_1.bin"
    with open(path, "wb") as f:
        f.truncate(50 * 10_000 * 3073)  # sparse: 1.5 GB that take no room
    with pytest.raises(CIFARError, match=r"data_batch_1.bin: 1536500000 bytes is more than a CIFAR-10 batch holds"):
        _read_file(path)


def test_a_training_log_that_is_a_fifo_binary_or_huge_is_refused(tmp_path):
    from cnnkit.train import read_history

    os.mkfifo(tmp_path / "log.csv")
    with pytest.raises(OSError, match=r"is a FIFO \(named pipe\), not a CSV log"):
        read_history(tmp_path / "log.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match=r"bin.csv: not a CSV log \(not text\)"):
        read_history(tmp_path / "bin.csv")
    with open(tmp_path / "big.csv", "wb") as f:
        f.truncate(100 << 20)
    with pytest.raises(ValueError, match=r"big.csv: 104,857,600 bytes is too large for a training log"):
        read_history(tmp_path / "big.csv")


def test_a_download_onto_a_fifo_is_refused_without_reading_it(tmp_path):
    from cnnkit.data import download
    from cnnkit.errors import DownloadError

    os.mkfifo(tmp_path / "file.gz")
    with pytest.raises(DownloadError, match=r"file.gz: it exists and is not a regular file"):
        download("http://127.0.0.1:9/file.gz", tmp_path / "file.gz", md5="0" * 32)
