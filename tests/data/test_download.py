"""Downloads against a local HTTP server on 127.0.0.1: caching, truncation, checksums, offline use.

The server serves small files the tests make (tiny IDX files in Fashion-MNIST's layout,
a tiny CIFAR-10 binary tar.gz) and counts requests; no other address is contacted.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cnnkit.data import CIFAR10, KMNIST, CIFARError, DownloadError, FashionMNIST, data_root, download
from cnnkit.data.download import fetch
from tests.conftest import subprocess_env

# Caches in tmp_path (CNNKIT_DATA, TORCH_HOME), no CNNKIT_WEIGHTS_URL, no proxy for 127.0.0.1;
# the `server` fixture (tests/local_server.py) is the only address contacted.
pytestmark = pytest.mark.usefixtures("isolated_downloads")


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_data_root_prefers_root_then_env_then_home(tmp_path, monkeypatch):
    assert data_root(tmp_path / "x") == tmp_path / "x"
    assert data_root() == tmp_path / "cache"
    monkeypatch.delenv("CNNKIT_DATA")
    assert data_root().parts[-2:] == (".cache", "cnnkit")


def test_good_download_is_verified_and_then_cached(server, tmp_path):
    payload = bytes(range(256)) * 1000
    server.files["/blob.bin"] = payload
    dest = tmp_path / "d" / "blob.bin"
    assert download(server.url + "blob.bin", dest, sha256=_sha256(payload)) == dest  # tqdm if installed
    assert dest.read_bytes() == payload
    assert not (tmp_path / "d" / "blob.bin.part").exists()
    download(server.url + "blob.bin", dest, sha256=_sha256(payload), progress=False)
    download(server.url + "blob.bin", dest, md5=_md5(payload), progress=True)
    assert server.requests == ["/blob.bin"]  # the second and third calls found the verified copy


def test_progress_is_shown_and_a_stale_partial_file_is_overwritten(server, tmp_path, monkeypatch, capsys):
    payload = b"y" * 3_000_000
    server.files["/big.bin"] = payload
    dest = tmp_path / "big.bin"
    (tmp_path / "big.bin.part").write_bytes(b"left by a killed process")
    monkeypatch.setitem(sys.modules, "tqdm", None)  # the plain text line, without tqdm
    download(server.url + "big.bin", dest, md5=_md5(payload))
    assert dest.read_bytes() == payload and not (tmp_path / "big.bin.part").exists()
    err = capsys.readouterr().err
    assert f"Downloading {server.url}big.bin" in err and "big.bin: 3.0 MB of 3.0 MB (100%)" in err


def test_truncated_download_is_refused_and_leaves_no_partial_file(server, tmp_path):
    server.files["/cut.bin"] = b"x" * 10_000
    server.truncate.add("/cut.bin")
    dest = tmp_path / "cut.bin"
    with pytest.raises(
        DownloadError, match=r"cut\.bin to .*cut\.bin is truncated: received 5000 of 10000 bytes"
    ):
        download(server.url + "cut.bin", dest, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_wrong_checksum_is_refused_and_leaves_no_partial_file(server, tmp_path):
    server.files["/f.gz"] = b"tampered content"
    dest = tmp_path / "f.gz"
    with pytest.raises(
        DownloadError,
        match=rf"download of {server.url}f\.gz to .*f\.gz failed its checksum: MD5 is "
        rf"{_md5(b'tampered content')}, expected 0+ \(16 bytes received\)",
    ):
        download(server.url + "f.gz", dest, md5="0" * 32, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_http_errors_and_unreachable_hosts_name_the_url(server, tmp_path):
    with pytest.raises(DownloadError, match=rf"cannot download {server.url}missing\.gz to .*: HTTP 404"):
        download(server.url + "missing.gz", tmp_path / "missing.gz", progress=False)
    server.close()  # nothing listens on that port any more
    with pytest.raises(DownloadError, match=rf"cannot download {server.url}x\.gz to "):
        download(server.url + "x.gz", tmp_path / "x.gz", progress=False, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_cached_file_is_replaced(server, tmp_path, capsys):
    payload = b"the real file"
    server.files["/f.bin"] = payload
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"stale")
    download(server.url + "f.bin", dest, md5=_md5(payload), progress=False)
    assert dest.read_bytes() == payload
    assert "downloading it again" in capsys.readouterr().err


def test_a_lock_file_that_cannot_be_made_is_a_download_error(server, tmp_path):
    server.files["/f.bin"] = b"content"
    (tmp_path / "f.bin.lock").mkdir()  # something in the way of the lock file
    with pytest.raises(DownloadError, match=rf"cannot download {server.url}f\.bin to .*f\.bin: \[Errno 21\] "
                                            rf"cannot lock it: Is a directory: '.*f\.bin\.lock'"):
        download(server.url + "f.bin", tmp_path / "f.bin", progress=False)
    assert server.requests == []


# ---- datasets through a mirror ------------------------------------------------------


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def _tiny_idx_split(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


@pytest.fixture
def tiny_fashion(server, monkeypatch, rng):
    """Serve a 5 + 3 image Fashion-MNIST (and KMNIST) with matching MD5s; return the arrays."""
    train, test = _tiny_idx_split(rng, 5), _tiny_idx_split(rng, 3)
    files = {
        "train-images-idx3-ubyte.gz": _idx(train[0]),
        "train-labels-idx1-ubyte.gz": _idx(train[1]),
        "t10k-images-idx3-ubyte.gz": _idx(test[0]),
        "t10k-labels-idx1-ubyte.gz": _idx(test[1]),
    }
    for name, data in files.items():
        server.files["/" + name] = data
    sums = {name: _md5(data) for name, data in files.items()}
    monkeypatch.setattr(FashionMNIST, "resources", sums)
    monkeypatch.setattr(KMNIST, "resources", sums)
    return train, test, files


def test_fashion_mnist_downloads_once_then_reads_the_cache(server, tiny_fashion, tmp_path):
    (train_x, train_y), (test_x, test_y), _ = tiny_fashion
    ds = FashionMNIST(train=True, mirror=server.url, progress=False)
    np.testing.assert_array_equal(ds.data, train_x)
    np.testing.assert_array_equal(ds.targets, train_y)
    assert ds.targets.dtype == np.int64 and ds.classes[9] == "Ankle boot"
    assert (tmp_path / "cache" / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file()
    FashionMNIST(train=True, mirror=server.url, progress=False)
    test = FashionMNIST(train=False, mirror=server.url, progress=False)
    np.testing.assert_array_equal(test.data, test_x)
    assert sorted(server.requests) == sorted(
        f"/{p}-{k}-idx{d}-ubyte.gz" for p in ("train", "t10k") for k, d in (("images", 3), ("labels", 1))
    )


def test_kmnist_honours_root_over_the_environment(server, tiny_fashion, tmp_path):
    ds = KMNIST(root=tmp_path / "mine", train=False, mirror=server.url, progress=False)
    assert len(ds) == 3
    assert (tmp_path / "mine" / "kmnist" / "t10k-labels-idx1-ubyte.gz").is_file()
    assert not (tmp_path / "cache").exists()


def test_offline_user_with_files_in_place_needs_no_network(server, tiny_fashion, tmp_path, monkeypatch):
    _, (test_x, _), files = tiny_fashion
    offline = tmp_path / "offline"
    offline.mkdir()
    for name, data in files.items():  # files dropped straight into the folder, no subfolder
        (offline / name).write_bytes(data)
    monkeypatch.setenv("CNNKIT_DATA", str(offline))
    ds = FashionMNIST(train=False, mirror="http://127.0.0.1:9/unreachable/", download=False)
    np.testing.assert_array_equal(ds.data, test_x)
    torchvision_layout = tmp_path / "tv" / "KMNIST" / "raw"
    torchvision_layout.mkdir(parents=True)
    for name, data in files.items():
        (torchvision_layout / name).write_bytes(data)
    assert len(KMNIST(root=tmp_path / "tv", mirror="http://127.0.0.1:9/unreachable/")) == 5
    assert server.requests == []


def test_missing_files_without_download_give_a_clear_error(tmp_path):
    with pytest.raises(DownloadError, match=r"train-images-idx3-ubyte\.gz: not found in .*allow downloading"):
        FashionMNIST(root=tmp_path, download=False)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not it")
    with pytest.raises(
        DownloadError, match=r"train-images-idx3-ubyte\.gz has MD5 [0-9a-f]{32}, expected 8d4fb7e6"
    ):
        FashionMNIST(root=tmp_path, download=False)


def test_real_upstream_addresses_and_published_sums_are_in_place():
    assert FashionMNIST.mirror.startswith("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/")
    assert FashionMNIST.resources["train-images-idx3-ubyte.gz"] == "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    assert KMNIST.resources["t10k-labels-idx1-ubyte.gz"] == "7320c461ea6c1c855c0b718fb2a4b134"
    assert CIFAR10.mirror + CIFAR10.archive == "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    assert CIFAR10.archive_md5 == "c32a1d4ab5d03f1284b67883e8d87530"


# ---- CIFAR-10 binary ----------------------------------------------------------------


def _cifar_batch(rng, n: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    # record: label byte, then the red, green and blue planes, each row-major
    records = np.concatenate([labels[:, None], images.transpose(0, 3, 1, 2).reshape(n, -1)], axis=1)
    return records.tobytes(), images, labels


def _tar_gz(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture
def tiny_cifar(server, monkeypatch, rng):
    batches = {f"data_batch_{i}.bin": _cifar_batch(rng, 2) for i in range(1, 6)}
    batches["test_batch.bin"] = _cifar_batch(rng, 3)
    archive = _tar_gz({f"cifar-10-batches-bin/{name}": b[0] for name, b in batches.items()})
    server.files["/cifar-10-binary.tar.gz"] = archive
    monkeypatch.setattr(CIFAR10, "archive_md5", _md5(archive))
    return batches, archive


def test_cifar10_binary_archive_is_read_without_unpickling(server, tiny_cifar, tmp_path):
    batches, _ = tiny_cifar
    train = CIFAR10(train=True, mirror=server.url, progress=False)
    assert train.data.shape == (10, 32, 32, 3) and train.data.dtype == np.uint8
    expected = np.concatenate([batches[f"data_batch_{i}.bin"][1] for i in range(1, 6)])
    np.testing.assert_array_equal(train.data, expected)
    np.testing.assert_array_equal(
        train.targets, np.concatenate([batches[f"data_batch_{i}.bin"][2] for i in range(1, 6)])
    )
    test = CIFAR10(train=False, mirror=server.url, progress=False)
    np.testing.assert_array_equal(test.data, batches["test_batch.bin"][1])
    assert server.requests == ["/cifar-10-binary.tar.gz"]
    assert (tmp_path / "cache" / "cifar-10" / "cifar-10-binary.tar.gz").is_file()


def test_cifar10_truncated_archive_is_refused_and_not_cached(server, tiny_cifar, tmp_path):
    server.truncate.add("/cifar-10-binary.tar.gz")
    with pytest.raises(
        DownloadError, match=r"cifar-10-binary\.tar\.gz is truncated: received \d+ of \d+ bytes"
    ):
        CIFAR10(mirror=server.url, progress=False)
    assert list((tmp_path / "cache" / "cifar-10").iterdir()) == []


def test_cifar10_extracted_folder_is_used_offline(server, tiny_cifar, tmp_path):
    batches, _ = tiny_cifar
    folder = tmp_path / "mine" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name, (raw, _, _) in batches.items():
        (folder / name).write_bytes(raw)
    test = CIFAR10(root=tmp_path / "mine", train=False, download=False)
    np.testing.assert_array_equal(test.targets, batches["test_batch.bin"][2])
    assert server.requests == []


def test_corrupt_cifar_files_are_refused_with_the_file_named(tmp_path, rng, monkeypatch):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    (folder / "test_batch.bin").write_bytes(b"\x00" * 3072)
    with pytest.raises(CIFARError, match=r"test_batch\.bin: 3072 bytes is not a whole number of 3073-byte"):
        CIFAR10(root=tmp_path, train=False)
    archive_dir = tmp_path / "a" / "cifar-10"
    archive_dir.mkdir(parents=True)
    wrong = _tar_gz({"cifar-10-batches-bin/readme.txt": b"hello"})
    (archive_dir / "cifar-10-binary.tar.gz").write_bytes(wrong)
    monkeypatch.setattr(CIFAR10, "archive_md5", _md5(wrong))
    with pytest.raises(CIFARError, match=r"archive has no member cifar-10-batches-bin/test_batch\.bin"):
        CIFAR10(root=tmp_path / "a", train=False, download=False)


def test_fetch_prefers_a_verified_copy_in_the_dataset_folder(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "f").write_bytes(b"abc")
    found = fetch("f", folder="ds", mirror="http://127.0.0.1:9/", md5=_md5(b"abc"), root=tmp_path)
    assert found == tmp_path / "ds" / "f"


# ---- several processes, one download ------------------------------------------------
#
# Real processes (python -c) load one dataset file into one empty cache, as the ranks of
# `mpiexec -n 4 cnnkit train --dataset cifar10` do. The server holds the first response
# part-way (server.hold) until every other process has said it waits for the lock, so
# the processes overlap for certain, however loaded the machine; timeouts only guard
# against a hang.

_HANG_GUARD = 180.0  # seconds

_LOAD_CIFAR = """
import json, sys
from cnnkit.data import CIFAR10, DownloadError
from cnnkit.data.download import data_root, file_digest
CIFAR10.archive_md5 = sys.argv[2]
try:
    test = CIFAR10(train=False, mirror=sys.argv[1], progress=False)
except DownloadError as e:
    print(f"DownloadError: {e}", file=sys.stderr)
    sys.exit(1)
archive = data_root() / "cifar-10" / "cifar-10-binary.tar.gz"
print(json.dumps({"md5": file_digest(archive, "md5"), "labels": test.targets.tolist()}))
"""


def _start(script: str, args: list[str], err: Path) -> subprocess.Popen:
    with open(err, "w") as f:
        return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=f,
                                text=True, env=subprocess_env())


def _wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + _HANG_GUARD
    while not condition():
        assert time.monotonic() < deadline, f"hang guard: still waiting for {what}"
        time.sleep(0.05)


def _race(server, tmp_path, path: str, md5: str, n: int = 3) -> list[tuple[subprocess.Popen, str, str]]:
    """Start ``n`` processes loading CIFAR-10's test split at once; let the first request
    through only when the other ``n - 1`` processes wait for the lock. Returns (process,
    stdout, stderr) of each, finished."""
    gate = threading.Event()
    server.hold[path] = (len(server.files[path]) // 2, gate)
    errs = [tmp_path / f"stderr{i}.txt" for i in range(n)]
    procs = [_start(_LOAD_CIFAR, [server.url, md5], err) for err in errs]

    def others_wait() -> bool:
        assert server.requests == [path][: len(server.requests)], "a second download began during the first"
        return sum("cnnkit: waiting for" in e.read_text() for e in errs) == n - 1

    try:
        _wait_until(others_wait, f"{n - 1} processes to wait for the lock")
        assert server.requests == [path]  # held: the holder's request, and no other
        gate.set()
        outs = [p.communicate(timeout=_HANG_GUARD)[0] for p in procs]
    finally:
        gate.set()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [(p, out, err.read_text()) for p, out, err in zip(procs, outs, errs)]


def test_processes_loading_one_dataset_at_once_download_it_once(server, tiny_cifar, tmp_path):
    batches, archive = tiny_cifar
    server.chunk_delay = 0.02  # a slow server
    results = _race(server, tmp_path, "/cifar-10-binary.tar.gz", _md5(archive))
    assert server.requests == ["/cifar-10-binary.tar.gz"]  # one download for the three processes
    for proc, out, err in results:
        assert proc.returncode == 0, err
        assert json.loads(out) == {"md5": _md5(archive), "labels": batches["test_batch.bin"][2].tolist()}
    # The two that waited said for whom: the process that downloaded, by its PID.
    (holder,) = [proc for proc, _, err in results if "waiting for" not in err]
    dest = tmp_path / "cache" / "cifar-10" / "cifar-10-binary.tar.gz"
    for proc, _, err in results:
        if proc is not holder:
            assert f"cnnkit: waiting for process {holder.pid} to download {server.url}cifar-10-binary.tar.gz " \
                   f"to {dest} (lock file {dest}.lock)" in err
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # no lock file, no temporary


def test_a_checksum_failure_is_reported_by_every_waiting_process(server, tiny_cifar, tmp_path):
    """Each process, once it has the lock and finds no verified file, downloads itself (a
    transient failure of one does not fail the others), and each reports the mismatch."""
    _, archive = tiny_cifar
    results = _race(server, tmp_path, "/cifar-10-binary.tar.gz", "0" * 32)
    assert server.requests == ["/cifar-10-binary.tar.gz"] * 3
    for proc, out, err in results:
        assert proc.returncode == 1 and out == ""
        assert re.search(rf"DownloadError: download of {server.url}cifar-10-binary\.tar\.gz to .*cifar-10-binary"
                         rf"\.tar\.gz failed its checksum: MD5 is {_md5(archive)}, expected 0{{32}}", err), err
    assert list((tmp_path / "cache" / "cifar-10").iterdir()) == []


_DOWNLOAD = "import sys; from cnnkit.data import download; download(*sys.argv[1:3], md5=sys.argv[3], progress=False)"


def test_a_download_killed_midway_leaves_no_file_and_does_not_block_the_next(server, tmp_path):
    payload = np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    server.files["/big.bin"] = payload
    gate = threading.Event()
    server.hold["/big.bin"] = (3 << 19, gate)  # 1.5 MiB, then wait: the first 1 MiB is on disk
    dest = tmp_path / "d" / "big.bin"
    proc = _start(_DOWNLOAD, [server.url + "big.bin", str(dest), _md5(payload)], tmp_path / "stderr.txt")
    try:
        _wait_until(lambda: any(p.suffix == ".tmp" and p.stat().st_size >= 1 << 20
                                for p in dest.parent.glob(".big.bin.*")), "the first MiB on disk")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=_HANG_GUARD)
    finally:
        gate.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    left = sorted(p.name for p in dest.parent.iterdir())
    assert not dest.exists() and "big.bin.lock" in left and len(left) == 2  # the lock file and the temporary
    assert (dest.parent / "big.bin.lock").read_text().split()[0] == str(proc.pid)
    # The kernel dropped the dead process's lock: the next download takes it and succeeds.
    assert download(server.url + "big.bin", dest, md5=_md5(payload), progress=False) == dest
    assert dest.read_bytes() == payload
    assert server.requests == ["/big.bin", "/big.bin"]
    assert [p.name for p in dest.parent.iterdir()] == ["big.bin"]  # the killed one's temporary is gone too
