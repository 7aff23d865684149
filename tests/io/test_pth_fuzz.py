"""Seeded fuzzing of the .pth reader: random byte mutations of real torch.save files.

Every mutated file must either load (a dict of arrays and plain values) or be refused with
PthError; any other exception, or a case slower than a second, fails the test with the
seed and case number to reproduce it. CI runs a bounded number of cases;
``CNNKIT_FUZZ_CASES=100000`` runs more (the counts are printed with ``-s``).
"""

from __future__ import annotations

import io
import os
import time
import zipfile
from collections import Counter

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cnnkit.io.pth import PthError, read_pth  # noqa: E402

CASES = int(os.environ.get("CNNKIT_FUZZ_CASES", "1500"))  # per family and file


def _original(path, protocol):
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3))
    obj = {
        "state_dict": net.state_dict(),
        "extra": {"half": torch.randn(4, generator=g).half(), "bf16": torch.randn(3, generator=g).bfloat16(),
                  "view": torch.arange(12.0).reshape(3, 4).t(), "ints": torch.arange(5), "flag": True},
        "epoch": 7, "names": ["a", "b"], "lr": 0.01, "pair": (1, None),
    }
    torch.save(obj, path, pickle_protocol=protocol)
    return path.read_bytes()


def _mutate_bytes(raw: bytes, rng: np.random.Generator) -> bytes:
    data = bytearray(raw)
    kind = rng.integers(5)
    if kind == 0:  # flip a few bytes
        for i in rng.integers(0, len(data), size=rng.integers(1, 9)):
            data[i] = rng.integers(256)
    elif kind == 1:  # truncate
        del data[rng.integers(0, len(data)):]
    elif kind == 2:  # overwrite a span with random bytes
        start = rng.integers(0, len(data))
        span = rng.integers(1, 64)
        data[start:start + span] = rng.integers(0, 256, size=span, dtype=np.uint8).tobytes()
    elif kind == 3:  # delete a span
        start = rng.integers(0, len(data))
        del data[start:start + rng.integers(1, 32)]
    else:  # duplicate a span elsewhere
        start, at = rng.integers(0, len(data), size=2)
        chunk = data[start:start + rng.integers(1, 32)]
        data[at:at] = chunk
    return bytes(data)


def _rezip(raw: bytes, mutate) -> bytes:
    """The archive with data.pkl replaced by ``mutate(data.pkl)`` (CRC recomputed: the walker sees it)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            payload = src.read(info)
            if info.filename.endswith("/data.pkl"):
                payload = mutate(payload)
            dst.writestr(info.filename, payload)
    return out.getvalue()


PLAIN = (str, bytes, int, float, bool, type(None), np.ndarray)


def _assert_plain(value, where):
    """A loaded file is plain data: containers, numbers, strings and arrays, nothing else."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        else:
            assert isinstance(item, PLAIN), f"{where}: loaded a {type(item).__name__}"


def _run(path, rng_seed, family, case, counts):
    start = time.perf_counter()
    try:
        result = read_pth(path, mmap=bool(case % 2))
    except PthError:
        counts["refused"] += 1
    except Exception as e:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{family} seed {rng_seed} case {case}: {type(e).__name__}: {e}")
    else:
        _assert_plain(result, f"{family} seed {rng_seed} case {case}")
        counts["loaded"] += 1
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"{family} seed {rng_seed} case {case} took {elapsed:.2f} s"


@pytest.mark.parametrize("protocol", [2, 4])
def test_mutated_files_load_or_are_refused_cleanly(tmp_path, protocol):
    raw = _original(tmp_path / "original.pth", protocol)
    counts: Counter = Counter()
    seed = 1234 + protocol
    rng = np.random.default_rng(seed)
    path = tmp_path / "mutant.pth"
    for case in range(CASES):
        path.write_bytes(_mutate_bytes(raw, rng))
        _run(path, seed, "file bytes", case, counts)
    for case in range(CASES):
        path.write_bytes(_rezip(raw, lambda pkl: _mutate_bytes(pkl, rng)))
        _run(path, seed, "pickle bytes", case, counts)
    print(f"\nfuzz protocol {protocol}: {2 * CASES} mutants, {counts['loaded']} loaded, {counts['refused']} refused")
    assert counts["loaded"] + counts["refused"] == 2 * CASES
    assert counts["refused"] > CASES // 2  # most mutations break something, and are caught
