"""Reader for the IDX format (MNIST's files): magic number, dimensions, then raw values."""

from __future__ import annotations

import gzip
import hashlib
import os

import numpy as np

from ..errors import IDXError

__all__ = ["IDXError", "read_idx"]

# IDX type codes (third byte of the magic number) -> big-endian NumPy dtypes.
_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


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
        with open(path, "rb") as f:
            raw = f.read()
        if path.endswith(".gz"):
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise IDXError(
            f"{path}: cannot read as {'gzipped ' if path.endswith('.gz') else ''}IDX ({e})"
        ) from None
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
