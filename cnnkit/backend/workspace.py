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

Buffers of at least ``dispatch.POOL_MIN_BYTES`` come from the buffer pool
(``backend/buffers.py``) and are not kept once the caller drops them
(``dispatch.SCRATCH_FROM_POOL``): the thread remembers such a buffer only by a weak
reference, so a loop that asks again while it still holds the last one gets the same
memory, and after the call the range goes back to the pool, whose memory is already
faulted in, for the activations of the next layers. Kept, ResNet-18 training at batch 16
held ~110 MB of Winograd's and im2col's buffers on top of the pool through the whole step
(docs/performance.md, "Scratch buffers from the pool (Dec 6)").
"""

from __future__ import annotations

import math
import threading
import weakref

import numpy as np

from . import buffers, dispatch

__all__ = ["scratch", "release_scratch", "scratch_bytes", "scratch_sizes"]


class _Buffers(threading.local):
    def __init__(self) -> None:
        self.by_name: dict[str, np.ndarray] = {}
        self.offsets: dict[str, int] = {}  # bytes from each buffer's start to its first 64-byte boundary
        self.pooled: dict[str, weakref.ref] = {}  # pooled buffers, alive while a caller holds them


_buffers = _Buffers()


def scratch(name: str, shape: tuple[int, ...], dtype, kept: bool = False) -> np.ndarray:
    """An uninitialized C-contiguous array of ``shape`` and ``dtype``, reused across calls.

    The buffer starts on a 64-byte boundary (a cache line, so vector loads are aligned).
    ``kept``: kept per name and thread at any size, never from the pool: a thread's small
    working set that each call writes and reads again (Winograd's per-thread filter blocks,
    1 MiB at ResNet-18's 256x14x14; from the pool each call took another range, cold, and the
    first such layer of a pass 0.5 ms longer).
    """
    dtype = np.dtype(dtype)
    count = math.prod(int(s) for s in shape)  # (np.prod of a tuple and .ctypes cost ~3 us a call each)
    nbytes = count * dtype.itemsize + 64
    if not kept and dispatch.SCRATCH_FROM_POOL and dispatch.BUFFER_POOL and nbytes >= dispatch.POOL_MIN_BYTES:
        return _pooled(name, count, nbytes, dtype, shape)
    buf = _buffers.by_name.get(name)
    if buf is None or buf.nbytes < nbytes:
        _buffers.by_name.pop(name, None)  # free the old one before taking the new one
        buf = np.empty(nbytes, np.uint8)
        _buffers.by_name[name] = buf
        _buffers.offsets[name] = (-buf.ctypes.data) % 64
    offset = _buffers.offsets[name]
    return buf[offset : offset + count * dtype.itemsize].view(dtype).reshape(shape)


def _pooled(name: str, count: int, nbytes: int, dtype: np.dtype, shape) -> np.ndarray:
    """``scratch`` from the buffer pool: the buffer of ``name`` if a caller still holds one
    large enough, else a new pooled one (its range returns to the pool when dropped)."""
    ref = _buffers.pooled.get(name)
    buf = None if ref is None else ref()
    if buf is None or buf.nbytes < nbytes:
        buf = buffers.empty((nbytes,), np.uint8)
        _buffers.pooled[name] = weakref.ref(buf)
        _buffers.offsets[name] = (-buf.ctypes.data) % 64
    offset = _buffers.offsets[name]
    return buf[offset : offset + count * dtype.itemsize].view(dtype).reshape(shape)


def _live_pooled() -> dict[str, np.ndarray]:
    return {name: buf for name, ref in _buffers.pooled.items() if (buf := ref()) is not None}


def release_scratch() -> None:
    """Free every scratch buffer of the calling thread (a pooled one still held by a caller
    returns to the pool when the caller drops it)."""
    _buffers.by_name.clear()
    _buffers.offsets.clear()
    _buffers.pooled.clear()


def scratch_bytes() -> int:
    """Bytes held by the calling thread's scratch buffers (pooled ones while a caller holds them)."""
    return sum(b.nbytes for b in _buffers.by_name.values()) + sum(b.nbytes for b in _live_pooled().values())


def scratch_sizes() -> dict[str, int]:
    """Bytes of each of the calling thread's scratch buffers, by name (pooled ones while held)."""
    return {name: b.nbytes for name, b in {**_buffers.by_name, **_live_pooled()}.items()}
