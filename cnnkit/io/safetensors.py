"""The safetensors format, read and written by cnnkit itself, every field checked.

A safetensors file is an 8-byte little-endian header length, a JSON header, then the raw
little-endian bytes of every tensor (huggingface.co/docs/safetensors). The header maps
each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into
the data that follows the header) and may hold ``"__metadata__"``, a map of strings.

``read_safetensors`` trusts nothing in a file: only a regular file is opened (a FIFO or
a device is refused, never read or waited on), the header's size is bounded
(``MAX_HEADER_BYTES``) and so is the nesting of its JSON (``MAX_DEPTH``); every tensor's
dtype must be known, its shape a list of non-negative integers, its byte range exactly
``prod(shape) * itemsize`` long, and the ranges must tile the data without gap or
overlap up to the end of the file. Only then is the data read, exactly as many bytes as
the header declares. ``write_safetensors`` writes the same format atomically, so files
load in the ``safetensors`` library (and PyTorch) too.

``content_digest`` is the SHA-256 of a file's tensors (names, dtypes, shapes and bytes)
and of one metadata text; cnnkit's checkpoints store it, so a flipped bit, a relabelled
dtype or an edited shape is found on load.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from ..files import atomic_write, format_bytes, open_regular, read_exactly

__all__ = [
    "DTYPES", "MAX_HEADER_BYTES", "MAX_DEPTH", "SafetensorsFile", "TensorEntry",
    "read_safetensors", "write_safetensors", "encode_safetensors", "content_digest",
]

# safetensors dtype codes -> NumPy dtypes (always little-endian in the file)
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_CODES = {dt.newbyteorder("<") if dt.itemsize > 1 else dt: code for code, dt in DTYPES.items()}
# Known to the format but not to NumPy: refused with a reason rather than as "unknown".
_NO_NUMPY = {"BF16": "bfloat16", "F8_E4M3": "float8 e4m3", "F8_E5M2": "float8 e5m2", "C64": "complex64"}

MAX_HEADER_BYTES = 100 * 2**20  # the safetensors library's own limit
MAX_DEPTH = 64                  # nesting of the header's JSON (and of metadata documents)


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors header: its dtype code, shape and byte range in the data."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass
class SafetensorsFile:
    """A safetensors file read and checked: tensors (NumPy arrays), metadata, the header entries."""

    tensors: dict[str, np.ndarray]
    metadata: dict[str, str]
    entries: list[TensorEntry]
    data: bytearray


def _depth(value, limit: int) -> int:
    """The nesting depth of a JSON value (iterative; stops counting past ``limit``)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if deepest > limit:
                return deepest
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def parse_json(text: bytes | str, where: str, what: str, error: Callable[[str], Exception] = CheckpointError):
    """``json.loads`` that reports bad, non-UTF-8 and too deeply nested text, and repeated keys, as ``error``."""
    repeated: list[str] = []

    def unique_keys(pairs: list[tuple[str, object]]) -> dict:
        # json.loads would keep the last of two equal keys silently: note the first repeat
        value = dict(pairs)
        if len(value) != len(pairs) and not repeated:
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    repeated.append(key)
                    break
                seen.add(key)
        return value

    try:
        value = json.loads(text, object_pairs_hook=unique_keys)
    except RecursionError:
        raise error(f"{where}: {what} is nested too deeply (more than {MAX_DEPTH} levels)") from None
    except (UnicodeDecodeError, ValueError):
        raise error(f"{where}: {what} is not valid JSON") from None
    if _depth(value, MAX_DEPTH) > MAX_DEPTH:
        raise error(f"{where}: {what} is nested too deeply (more than {MAX_DEPTH} levels)")
    if repeated:
        raise error(f"{where}: {what} has the key {repeated[0]!r} twice")
    return value


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _entries(header: dict, where: str, data_len: int, data_start: int, what: str) -> list[TensorEntry]:
    """Check every tensor entry of a header against the format; return them in data order."""
    truncated = f"{where}: truncated or corrupt {what.removesuffix(' file')}"
    ends = [spec["data_offsets"][1] for spec in header.values() if isinstance(spec, dict)
            and isinstance(spec.get("data_offsets"), list) and len(spec["data_offsets"]) == 2
            and _is_int(spec["data_offsets"][1])]
    if ends and max(ends) > data_len:
        raise CheckpointError(f"{truncated} (expected {data_start + max(ends)} bytes, found {data_start + data_len})")
    entries = []
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
            raise CheckpointError(
                f"{where}: header entry {name!r} must be an object with exactly dtype, shape and "
                f"data_offsets, got {type(spec).__name__ if not isinstance(spec, dict) else sorted(spec)}"
            )
        dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
        if dtype in _NO_NUMPY:
            raise CheckpointError(f"{where}: tensor {name!r} is {_NO_NUMPY[dtype]}, which NumPy cannot hold; "
                                  "convert it to float32 where it was saved")
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise CheckpointError(f"{where}: tensor {name!r} has unknown dtype {dtype!r} "
                                  f"(known: {', '.join(DTYPES)})")
        if not isinstance(shape, list) or len(shape) > 32 or not all(_is_int(d) and d >= 0 for d in shape):
            raise CheckpointError(f"{where}: tensor {name!r} has shape {shape!r}; expected a list of at most "
                                  "32 non-negative integers")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data_len):
            raise CheckpointError(f"{where}: tensor {name!r} has data_offsets {offsets!r}; expected "
                                  f"[begin, end] with 0 <= begin <= end <= {data_len} (the data's size)")
        nbytes = math.prod(shape) * DTYPES[dtype].itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise CheckpointError(
                f"{where}: tensor {name!r} ({dtype}, shape {shape}) needs {nbytes} bytes, but its "
                f"data_offsets {offsets} span {offsets[1] - offsets[0]}"
            )
        entries.append(TensorEntry(name, dtype, tuple(shape), offsets[0], offsets[1]))
    entries.sort(key=lambda e: (e.begin, e.end))
    position = 0
    for e in entries:
        if e.begin != position:
            problem = "overlaps the one before" if e.begin < position else f"leaves a gap at byte {position}"
            raise CheckpointError(f"{where}: tensor {e.name!r} (bytes {e.begin}..{e.end}) {problem}; "
                                  "the header does not describe the data")
        position = e.end
    if position != data_len:
        raise CheckpointError(f"{truncated} (expected {data_start + position} bytes, found {data_start + data_len})")
    return entries


def read_safetensors(path: str | os.PathLike, what: str = "safetensors file") -> SafetensorsFile:
    """Read a safetensors file, checking everything first (see the module doc).

    Args:
        what: what the file should be, for messages ("checkpoint file").

    Raises:
        CheckpointError: naming the file and what is wrong with it (missing, not a regular
            file, truncated, a header that does not describe the data, ...).
    """
    where = os.fspath(path)
    try:
        f, size = open_regular(path, what)
    except FileNotFoundError:
        raise CheckpointError(f"{where}: no such {what}") from None
    except OSError as e:
        raise CheckpointError(f"{where}: {e.strerror or e}") from None
    with f:
        try:
            if size < 8:
                raise CheckpointError(f"{where}: not a {what} (only {size} bytes)")
            prefix = read_exactly(f, 8, where, what)
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > size - 8:
                if prefix[:2] == b"PK" or prefix[:1] == b"\x80":
                    raise CheckpointError(
                        f"{where}: not a cnnkit checkpoint (looks like a zip or pickle file, e.g. a PyTorch "
                        ".pt file; cnnkit never unpickles files)"
                    )
                raise CheckpointError(
                    f"{where}: not a cnnkit checkpoint or truncated (header claims {header_len} bytes, "
                    f"file has {size})"
                )
            if header_len > MAX_HEADER_BYTES:
                raise CheckpointError(f"{where}: header of {format_bytes(header_len)} is larger than the "
                                      f"{format_bytes(MAX_HEADER_BYTES)} a {what} may have")
            header = parse_json(bytes(read_exactly(f, header_len, where, what)), where, "its header")
            if not isinstance(header, dict):
                raise CheckpointError(f"{where}: its header is a JSON {type(header).__name__}, not an object")
            metadata = header.get("__metadata__", {})
            if not isinstance(metadata, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
                raise CheckpointError(f"{where}: __metadata__ must map strings to strings")
            data_len = size - 8 - header_len
            entries = _entries(header, where, data_len, 8 + header_len, what)
            data = read_exactly(f, data_len, where, what)
        except EOFError as e:  # the file shrank while it was read
            raise CheckpointError(str(e)) from None
        except OSError as e:
            raise CheckpointError(f"{where}: cannot read it ({e.strerror or e})") from None
    tensors = {}
    for e in entries:
        dtype = DTYPES[e.dtype]
        count = math.prod(e.shape)
        if count == 0:
            array = np.empty(0, dtype)
        elif e.begin % dtype.itemsize:  # a foreign file's unaligned tensor: copy it to aligned memory
            array = np.frombuffer(bytes(data[e.begin:e.end]), dtype, count).copy()
        else:
            array = np.frombuffer(data, dtype, count, e.begin)
        tensors[e.name] = array.reshape(e.shape).astype(dtype.newbyteorder("="), copy=False)
    return SafetensorsFile(tensors, dict(metadata), entries, data)


def content_digest(items: Iterable[tuple[str, str, tuple[int, ...], memoryview | bytes]], text: str) -> str:
    """SHA-256 of ``text`` and of each tensor's name, dtype code, shape and bytes (sorted by name)."""
    h = hashlib.sha256()
    h.update(b"cnnkit-content-sha256\0")
    h.update(text.encode())
    for name, dtype, shape, raw in sorted(items, key=lambda item: item[0]):
        h.update(b"\0" + json.dumps([name, dtype, list(shape)]).encode() + b"\0")
        h.update(raw)
    return h.hexdigest()


def _le_bytes(array: np.ndarray) -> tuple[str, np.ndarray]:
    """(dtype code, C-contiguous little-endian array) of an array to be stored."""
    a = np.asarray(array)
    dtype = a.dtype.newbyteorder("<") if a.dtype.itemsize > 1 else a.dtype
    if dtype not in _CODES:
        raise TypeError(f"safetensors cannot store dtype {a.dtype}")
    return _CODES[dtype], a.astype(dtype, order="C", copy=False)  # (ascontiguousarray would make 0-d 1-d)


def encode_safetensors(
    tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None,
    digest_key: str | None = None, digest_text: str = "",
) -> tuple[list[bytes | memoryview], int]:
    """The chunks of a safetensors file and its size.

    Tensors are laid out by decreasing item size, then name, after a header padded to a
    multiple of 8 bytes, so every tensor is aligned to its item size.

    Args:
        digest_key: when given, ``metadata[digest_key]`` is set to ``content_digest`` of the
            tensors and ``digest_text``.
    """
    prepared = []
    for name, array in tensors.items():
        code, a = _le_bytes(array)
        prepared.append((name, code, a))
    prepared.sort(key=lambda p: (-p[2].dtype.itemsize, p[0]))
    raws = [(name, code, a.shape, memoryview(a.reshape(-1)).cast("B")) for name, code, a in prepared]
    meta = dict(metadata or {})
    if digest_key is not None:
        meta[digest_key] = content_digest(raws, digest_text)
    header: dict = {"__metadata__": meta} if meta else {}
    offset = 0
    for name, code, shape, raw in raws:
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + raw.nbytes]}
        offset += raw.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    chunks: list[bytes | memoryview] = [struct.pack("<Q", len(text)), text] + [raw for *_, raw in raws]
    return chunks, 8 + len(text) + offset


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None, **digest) -> Path:
    """Write a safetensors file atomically (``cnnkit.files.atomic_write``); return its path."""
    chunks, size = encode_safetensors(tensors, metadata, **digest)
    return atomic_write(path, chunks, size)
