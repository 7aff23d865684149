"""Helpers that write PyTorch-format files for the reader's tests (torch.save, or by hand)."""

from __future__ import annotations

import io
import pickletools
import struct
import zipfile
from pathlib import Path

import numpy as np


def torch_save(obj, path: Path, **kwargs) -> Path:
    """``torch.save(obj, path)``; numpy arrays anywhere in dicts/lists become torch tensors."""
    import torch

    def convert(value):
        if isinstance(value, np.ndarray):
            return torch.from_numpy(np.array(value, order="C"))  # (ascontiguousarray would make 0-d 1-d)
        if isinstance(value, dict):
            return type(value)((k, convert(v)) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return type(value)(convert(v) for v in value)
        return value

    torch.save(convert(obj), path, **kwargs)
    return path


def write_archive(path: Path, pickle_bytes: bytes, storages: dict[str, bytes] | None = None, *,
                  prefix: str = "archive", byteorder: bytes | None = b"little", extra: dict[str, bytes] | None = None,
                  compress: int = zipfile.ZIP_STORED) -> Path:
    """A torch.save-shaped zip: ``<prefix>/data.pkl``, ``<prefix>/data/<key>`` storages, byteorder."""
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        z.writestr(f"{prefix}/data.pkl", pickle_bytes)
        if byteorder is not None:
            z.writestr(f"{prefix}/byteorder", byteorder)
        for key, raw in (storages or {}).items():
            z.writestr(f"{prefix}/data/{key}", raw)
        for name, raw in (extra or {}).items():
            z.writestr(name, raw)
        z.writestr(f"{prefix}/version", b"3\n")
    return path


class Pickle:
    """Write pickle opcodes by hand (protocol 2), for files no pickler would produce."""

    def __init__(self):
        self.out = io.BytesIO()
        self.out.write(b"\x80\x02")

    def op(self, code: bytes) -> Pickle:
        self.out.write(code)
        return self

    def str(self, s: str) -> Pickle:
        raw = s.encode()
        self.out.write(b"X" + struct.pack("<I", len(raw)) + raw)
        return self

    def int(self, n: int) -> Pickle:
        if 0 <= n < 256:
            self.out.write(b"K" + bytes([n]))
        elif -(2**31) <= n < 2**31:
            self.out.write(b"J" + struct.pack("<i", n))
        else:
            raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
            self.out.write(b"\x8a" + bytes([len(raw)]) + raw)
        return self

    def glob(self, module: str, name: str) -> Pickle:
        self.out.write(b"c" + module.encode() + b"\n" + name.encode() + b"\n")
        return self

    def tuple(self, *items) -> Pickle:
        self.op(b"(")
        for item in items:
            self.value(item)
        return self.op(b"t")

    def value(self, v) -> Pickle:
        if isinstance(v, Pickle):
            self.out.write(v.out.getvalue()[2:])
        elif isinstance(v, bool):
            self.op(b"\x88" if v else b"\x89")
        elif isinstance(v, int):
            self.int(v)
        elif isinstance(v, str):
            self.str(v)
        elif isinstance(v, tuple):
            self.tuple(*v)
        elif v is None:
            self.op(b"N")
        else:
            raise TypeError(type(v))
        return self

    def tensor(self, key: str, numel: int, offset: int, size: tuple, stride: tuple, storage: str = "FloatStorage") -> Pickle:
        """Push ``_rebuild_tensor_v2(('storage', torch.<storage>, key, 'cpu', numel), offset, size, stride, False, OrderedDict())``."""
        self.glob("torch._utils", "_rebuild_tensor_v2").op(b"(")
        self.op(b"(").str("storage").glob("torch", storage).str(key).str("cpu").int(numel).op(b"t").op(b"Q")
        self.int(offset).tuple(*size).tuple(*stride).op(b"\x89")
        self.glob("collections", "OrderedDict").op(b")R")
        return self.op(b"t").op(b"R")

    def bytes(self) -> bytes:
        return self.out.getvalue() + b"."


def state_dict_pickle(tensors: dict[str, tuple]) -> bytes:
    """A pickle of ``{name: tensor}``; each value is ``(key, numel, offset, size, stride)``."""
    p = Pickle().op(b"}").op(b"(")
    for name, spec in tensors.items():
        p.str(name).tensor(*spec)
    return p.op(b"u").bytes()


def valid_pickle(data: bytes) -> bool:
    """True when pickletools can decode every opcode (used to sanity-check hand-made pickles)."""
    try:
        for _ in pickletools.genops(data):
            pass
    except ValueError:
        return False
    return True
