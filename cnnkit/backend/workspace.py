"""Scratch buffers that outlive one call, so big temporaries are not mapped afresh each time.

glibc serves allocations above its mmap threshold (at most 32 MiB) with fresh memory
maps, and every page of a fresh map faults on first touch: ResNet-18 training took
~47,000 page faults and 232 ms of system time per step that way. Kernels whose
temporaries never leave the call (Winograd's transformed tiles, for instance) take them
from here instead: one buffer per name and thread, grown when a larger one is asked for
and kept for the next call.

A buffer is valid until the next ``scratch`` call with the same name in the same thread;
callers use distinct names for temporaries that are alive at the same time, and never
return a scratch buffer or save it for backward.
"""

from __future__ import annotations

import math
import threading

import numpy as np

__all__ = ["scratch", "release_scratch", "scratch_bytes", "scratch_sizes"]


class _Buffers(threading.local):
    def __init__(self) -> None:
        self.by_name: dict[str, np.ndarray] = {}
        self.offsets: dict[str, int] = {}  # bytes from each buffer's start to its first 64-byte boundary


_buffers = _Buffers()


def scratch(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialized C-contiguous array of ``shape`` and ``dtype``, reused across calls.

    The buffer starts on a 64-byte boundary (a cache line, so vector loads are aligned).
    """
    dtype = np.dtype(dtype)
    count = math.prod(int(s) for s in shape)  # (np.prod of a tuple and .ctypes cost ~3 us a call each)
    nbytes = count * dtype.itemsize + 64
    buf = _buffers.by_name.get(name)
    if buf is None or buf.nbytes < nbytes:
        _buffers.by_name.pop(name, None)  # free the old one before taking the new one
        buf = np.empty(nbytes, np.uint8)
        _buffers.by_name[name] = buf
        _buffers.offsets[name] = (-buf.ctypes.data) % 64
    offset = _buffers.offsets[name]
    return buf[offset : offset + count * dtype.itemsize].view(dtype).reshape(shape)


def release_scratch() -> None:
    """Free every scratch buffer of the calling thread."""
    _buffers.by_name.clear()
    _buffers.offsets.clear()


def scratch_bytes() -> int:
    """Bytes held by the calling thread's scratch buffers."""
    return sum(b.nbytes for b in _buffers.by_name.values())


def scratch_sizes() -> dict[str, int]:
    """Bytes of each of the calling thread's scratch buffers, by name."""
    return {name: b.nbytes for name, b in _buffers.by_name.items()}
