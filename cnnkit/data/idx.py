"""Reader for the IDX format (MNIST's files): magic number, dimensions, then raw values.

A gzipped file is inflated with a cap, before its checksum is computed: never more than
the size its own IDX header declares (read from the first inflated bytes), and never more
than ``MAX_INFLATED_BYTES``. So a small file that would inflate to gigabytes (a gzip bomb
in a data folder) is refused after inflating at most what it claims to hold.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Callable

import numpy as np

from ..errors import IDXError
from ..files import format_bytes, open_regular, read_exactly

__all__ = ["IDXError", "read_idx", "inflate_gzip", "MAX_INFLATED_BYTES"]

# MNIST's largest file inflates to 47 MB; EMNIST's to about 650 MB.
MAX_INFLATED_BYTES = 2**30
_GZIP_MAGIC = b"\x1f\x8b"


def inflate_gzip(raw: bytes, source: str, limit: int | None = None,
                 declared_size: Callable[[bytes], int | None] | None = None) -> bytes:
    """Inflate gzip data (one or more members), refusing to produce more than ``limit`` bytes.

    Args:
        limit: the cap (default ``MAX_INFLATED_BYTES``).
        declared_size: called with the bytes inflated so far until it returns the total
            size the data declares about itself (e.g. from a header); the cap then becomes
            that size.

    Raises:
        IDXError: naming ``source``: not gzip data, a truncated or corrupt stream, trailing
            garbage, or more than ``limit`` bytes once inflated.
    """
    limit = MAX_INFLATED_BYTES if limit is None else limit
    declared = None
    out = bytearray()
    data = memoryview(raw)
    while True:
        if bytes(data[:2]) != _GZIP_MAGIC:
            what = "not gzip data" if not out else "trailing bytes after the gzip data"
            raise IDXError(f"{source}: cannot read as gzipped IDX ({what})")
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while not inflater.eof:
            try:
                chunk = inflater.decompress(data, max_length=min(1 << 22, limit + 1 - len(out)))
            except zlib.error as e:
                raise IDXError(f"{source}: cannot read as gzipped IDX (corrupt stream: {e})") from None
            out += chunk
            if declared is None and declared_size is not None:
                declared = declared_size(bytes(out[:1024]))
                if declared is not None and declared < limit:
                    limit = declared
            if len(out) > limit:
                claim = f"the {format_bytes(limit)} its header declares" if declared == limit else format_bytes(limit)
                raise IDXError(
                    f"{source}: inflates to more than {claim} (from {format_bytes(len(raw))} compressed); "
                    "refused as a likely gzip bomb"
                )
            data = memoryview(inflater.unconsumed_tail)
            if not chunk and not data and not inflater.eof:
                raise IDXError(f"{source}: cannot read as gzipped IDX (the stream is truncated)")
        data = memoryview(inflater.unused_data)
        if not any(bytes(data)):  # the end, or the zero padding some tools add
            return bytes(out)

# IDX type codes (third byte of the magic number) -> big-endian NumPy dtypes.
_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _declared_size(prefix: bytes, path: str) -> int | None:
    """The total size an IDX file's header declares, once its first bytes are known (else None)."""
    if len(prefix) < 4:
        return None
    if prefix[0] or prefix[1]:  # not IDX: stop inflating at once
        raise IDXError(f"{path}: not an IDX file (magic number {prefix[:4].hex()})")
    if prefix[2] not in _DTYPES:
        raise IDXError(f"{path}: unknown IDX type code 0x{prefix[2]:02x}")
    ndim = prefix[3]
    if len(prefix) < 4 + 4 * ndim:
        return None
    dims = [int.from_bytes(prefix[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    count = 1
    for d in dims:
        count *= d
    return 4 + 4 * ndim + count * _DTYPES[prefix[2]].itemsize


def read_idx(path: str | os.PathLike, sha256: str | None = None) -> np.ndarray:
    """Read an IDX file (gzipped when the name ends in .gz) into a NumPy array.

    Args:
        path: the file.
        sha256: expected SHA-256 hex digest of the *decompressed* bytes; checked when given.

    Raises:
        IDXError: naming the file and what is wrong (bad gzip stream, bad magic number,
            unknown type code, size not matching the header, checksum mismatch).
    """
    path = os.fspath(path)
    try:
        f, size = open_regular(path, "IDX file")
        with f:
            if size > MAX_INFLATED_BYTES:
                raise IDXError(f"{path}: {format_bytes(size)} is larger than an IDX file may be here "
                               f"({format_bytes(MAX_INFLATED_BYTES)})")
            raw = bytes(read_exactly(f, size, path, "IDX file"))
    except (OSError, EOFError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise IDXError(f"{path}: cannot read as {'gzipped ' if path.endswith('.gz') else ''}IDX ({reason})") from None
    if path.endswith(".gz"):
        raw = inflate_gzip(raw, path, declared_size=lambda prefix: _declared_size(prefix, path))
    if sha256 is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != sha256:
            raise IDXError(f"{path}: SHA-256 of the decompressed data is {digest}, expected {sha256}")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise IDXError(f"{path}: not an IDX file (magic number {raw[:4].hex() or 'missing'})")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _DTYPES:
        raise IDXError(f"{path}: unknown IDX type code 0x{type_code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXError(f"{path}: truncated header ({len(raw)} bytes for {ndim} dimensions)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _DTYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise IDXError(
            f"{path}: header says {dims} values of {dtype} ({expected} bytes), "
            f"file holds {len(raw) - header} bytes of data"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))
