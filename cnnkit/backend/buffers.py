"""Large arrays whose memory is kept for the next array of the same size.

A training step allocates the same large arrays every step: the activations it keeps for
backward, their gradients, the outputs of batch norm and ReLU. Freed, they go back to the
C library, which returns large blocks to the kernel (arrays above glibc's mmap threshold
are memory maps of their own; the top of the heap is trimmed once more than the trim
threshold is free), and the next step faults every page in again: ResNet-18 training at
batch 16 took ~20,000 minor page faults and 0.1-0.2 s of system time per step that way,
with or without ``backend.malloc.tune_malloc`` (its 51 MB arrays are above any mmap
threshold glibc accepts).

``empty`` and ``empty_like`` hand out such arrays from a pool of blocks sorted by size.
A block goes back to the pool only when nothing can read it any more: the array handed
out has a private base object (a lease), every view of the array keeps that lease alive
(NumPy's views keep their base), and the lease returns its block when it is collected.
So an output held by the user, a tensor saved for backward or a view of either keeps its
memory for as long as it lives; the pool never hands out memory that is still reachable.
The values of an array do not depend on where its memory came from: with the pool on or
off (``dispatch.BUFFER_POOL``), results are bit-identical.

Bounds: blocks of at least ``dispatch.POOL_MIN_BYTES`` (smaller arrays are left to the C
library, which reuses them well), sized to whole pages, and at most
``dispatch.POOL_MAX_IDLE_BYTES`` of returned blocks are kept; a block returned beyond that
is freed. ``release_buffers`` frees every idle block. The blocks are anonymous memory maps
of their own (page-aligned; huge pages advised where the system has them, as NumPy does
for its large arrays), outside the C library's heap, so keeping them never pins the heap.

``tracemalloc`` sees the pooled arrays as it sees NumPy's own: while it traces, each array
handed out is reported to it (``PyTraceMalloc_Track``, in a domain of its own) with the
bytes it takes, and untracked when its block returns. Memory maps are invisible to it
otherwise, and ``train.memory`` measures a step's memory with it: the arrays of a step,
pooled or not, count the same.
"""

from __future__ import annotations

import bisect
import ctypes
import math
import mmap
import threading
import tracemalloc

import numpy as np

from . import dispatch

__all__ = ["empty", "empty_like", "empty_ordered", "axis_order", "add", "release_buffers", "pool_stats", "TRACE_DOMAIN"]

_PAGE = mmap.PAGESIZE
# Private, not Python's default MAP_SHARED for anonymous maps: a forked process (a data
# loader's worker) must get its own copy of the pages, never write into this process's.
_PRIVATE = ({"flags": mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS} if hasattr(mmap, "MAP_ANONYMOUS") else {})

# tracemalloc's domain for pooled arrays (NumPy's own arrays are domain 389047); its
# statistics add every domain, ``tracemalloc.DomainFilter(True, TRACE_DOMAIN)`` selects these.
TRACE_DOMAIN = 0x636E6B70
try:  # CPython's C API (PyPy has no tracemalloc to report to)
    _track, _untrack = ctypes.pythonapi.PyTraceMalloc_Track, ctypes.pythonapi.PyTraceMalloc_Untrack
    _track.argtypes, _track.restype = (ctypes.c_uint, ctypes.c_size_t, ctypes.c_size_t), ctypes.c_int
    _untrack.argtypes, _untrack.restype = (ctypes.c_uint, ctypes.c_size_t), ctypes.c_int
except AttributeError:  # pragma: no cover
    _track = _untrack = None


class _Chunk:
    """One anonymous memory map and its free ranges [offset, size], sorted by offset."""

    def __init__(self, size: int) -> None:
        region = mmap.mmap(-1, size, **_PRIVATE)
        if hasattr(region, "madvise") and hasattr(mmap, "MADV_HUGEPAGE"):
            region.madvise(mmap.MADV_HUGEPAGE)
        self.memory = np.frombuffer(region, np.uint8)
        self.address = self.memory.ctypes.data   # (``ndarray.ctypes`` builds an object per access)
        self.size = size
        self.free = [[0, size]]

    def carve(self, nbytes: int) -> int | None:
        """The offset of nbytes taken from the lowest free range that holds them, or None."""
        for i, (offset, size) in enumerate(self.free):
            if size >= nbytes:
                if size == nbytes:
                    del self.free[i]
                else:
                    self.free[i] = [offset + nbytes, size - nbytes]
                return offset
        return None

    def give_back(self, offset: int, nbytes: int) -> None:
        """Return a range, merged with the free ranges right before and after it."""
        free = self.free
        i = bisect.bisect_left(free, [offset, 0])
        if i < len(free) and free[i][0] == offset + nbytes:
            nbytes += free.pop(i)[1]
        if i > 0 and free[i - 1][0] + free[i - 1][1] == offset:
            free[i - 1][1] += nbytes
        else:
            free.insert(i, [offset, nbytes])

    def unused(self) -> bool:
        return self.free == [[0, self.size]]


class _Pool:
    """Chunks of memory that pooled arrays are carved from, lowest address first."""

    def __init__(self) -> None:
        # Re-entrant: a lease collected while the lock is held (its last reference dropped
        # by code running under the lock) returns its range in the same thread.
        self.lock = threading.RLock()
        self.chunks: list[_Chunk] = []
        self.live_bytes = 0
        self.carved = 0       # arrays handed out (statistics)

    def take(self, nbytes: int) -> tuple[_Chunk, int]:
        with self.lock:
            self.carved += 1
            self.live_bytes += nbytes
            for chunk in self.chunks:
                offset = chunk.carve(nbytes)
                if offset is not None:
                    return chunk, offset
            chunk = _Chunk(max(nbytes, dispatch.POOL_CHUNK_BYTES))
            self.chunks.append(chunk)
            return chunk, chunk.carve(nbytes)

    def give_back(self, chunk: _Chunk, offset: int, nbytes: int) -> None:
        with self.lock:
            self.live_bytes -= nbytes
            chunk.give_back(offset, nbytes)
            if chunk.unused() and self.idle_bytes() > dispatch.POOL_MAX_IDLE_BYTES and chunk in self.chunks:
                self.chunks.remove(chunk)  # unmapped with its last reference

    def idle_bytes(self) -> int:
        return sum(size for chunk in self.chunks for _, size in chunk.free)

    def clear(self) -> None:
        with self.lock:
            self.chunks = [chunk for chunk in self.chunks if not chunk.unused()]


_pool = _Pool()


class _Lease:
    """The base object of one pooled array: returns its range to the pool when collected."""

    __slots__ = ("__array_interface__", "chunk", "offset", "nbytes", "traced")

    def __init__(self, chunk: _Chunk, offset: int, nbytes: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.chunk, self.offset, self.nbytes = chunk, offset, nbytes
        address = chunk.address + offset
        # "typestr" alone describes a dtype without fields (the optional "descr" costs a list per
        # array, built and parsed: in a LeNet-5 step, after the kernels' memory traffic, ~3 us)
        self.__array_interface__ = (
            {"version": 3, "shape": shape, "typestr": dtype.str, "data": (address, False)}
            if dtype.fields is None and dtype.subdtype is None else
            {"version": 3, "shape": shape, "typestr": dtype.str, "descr": dtype.descr, "data": (address, False)}
        )
        # reported to tracemalloc only while it traces (0: it does not; the call costs ~1 us)
        self.traced = _track is not None and tracemalloc.is_tracing() and _track(TRACE_DOMAIN, address, nbytes) == 0

    def __del__(self) -> None:
        pool = _pool
        if pool is not None and dispatch is not None:  # None while the interpreter shuts down
            if self.traced and _untrack is not None:  # a no-op if tracing stopped (or restarted) since
                _untrack(TRACE_DOMAIN, self.__array_interface__["data"][0])
            pool.give_back(self.chunk, self.offset, self.nbytes)


def _pooled(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    """A pooled C-contiguous array, or None when the pool does not serve this size."""
    nbytes = math.prod(shape) * dtype.itemsize
    if not dispatch.BUFFER_POOL or nbytes < dispatch.POOL_MIN_BYTES or dtype.hasobject:
        return None
    nbytes = -(-nbytes // _PAGE) * _PAGE
    chunk, offset = _pool.take(nbytes)
    return np.asarray(_Lease(chunk, offset, nbytes, shape, dtype))


def empty(shape, dtype) -> np.ndarray:
    """``np.empty(shape, dtype)`` (C order), its memory from the pool when large enough."""
    try:
        shape = tuple(map(int, shape))   # (not a generator and np.isscalar: ~1 us per call less)
    except TypeError:                    # one int (Python's or NumPy's)
        shape = (int(shape),)
    dtype = np.dtype(dtype)
    if math.prod(shape) * dtype.itemsize < dispatch.POOL_MIN_BYTES:   # (_pooled's floor, without its call)
        return np.empty(shape, dtype)
    out = _pooled(shape, dtype)
    return np.empty(shape, dtype) if out is None else out


def axis_order(a: np.ndarray) -> tuple[int, ...]:
    """The axes of ``a`` from outermost to innermost in memory, as NumPy's order "K" sees
    them: C order for a C-contiguous ``a``, Fortran order for a Fortran-contiguous one, else
    by decreasing stride (ties keep the axis order)."""
    if a.flags.c_contiguous or a.ndim < 2:
        return tuple(range(a.ndim))
    if a.flags.f_contiguous:
        return tuple(reversed(range(a.ndim)))
    strides = a.strides                 # (read once: each read builds a tuple)
    return tuple(sorted(range(a.ndim), key=lambda i: -abs(strides[i])))  # stable


def empty_ordered(shape, dtype, order: tuple[int, ...]) -> np.ndarray:
    """An empty array of ``shape`` whose axes lie in memory in ``order`` (outermost first,
    as ``axis_order`` gives it): ``empty_ordered(a.shape, a.dtype, axis_order(a))`` is laid
    out as ``a``; an array of another shape can so take ``a``'s layout (a padded copy)."""
    shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
    stored = tuple(shape[i] for i in order)
    base = _pooled(stored, dtype)
    if base is None:
        base = np.empty(stored, dtype)
    return base if order == tuple(range(len(shape))) else base.transpose(_inverse(order))


def empty_like(a: np.ndarray, dtype=None) -> np.ndarray:
    """``np.empty_like(a, dtype)``: the same shape and the same memory order as ``a``
    (NumPy's order "K", ``axis_order``)."""
    dtype = a.dtype if dtype is None else np.dtype(dtype)
    if a.size * dtype.itemsize < dispatch.POOL_MIN_BYTES:  # the pool's floor, decided before the layout (~4 us)
        return np.empty_like(a, dtype=dtype)
    if a.flags.c_contiguous:            # (no order to find, no transpose: ~2 us a call less)
        base = _pooled(a.shape, dtype)
        return np.empty_like(a, dtype=dtype) if base is None else base
    order = axis_order(a)
    shape = a.shape
    base = _pooled(tuple([shape[i] for i in order]), dtype)
    if base is None:
        return np.empty_like(a, dtype=dtype)
    return base.transpose(_inverse(order))


def _inverse(order: tuple[int, ...]) -> list[int]:
    """The inverse permutation of ``order`` (``np.argsort(order)``, without NumPy's call: ~2 us
    after a step's kernels have run)."""
    inverse = [0] * len(order)
    for k, axis in enumerate(order):
        inverse[axis] = k
    return inverse


def add(a, b):
    """``a + b``, into a pooled array when both are NumPy arrays of one shape, dtype and layout.

    Then the sum is NumPy's own (``np.add`` with ``out=``), laid out as ``a + b`` would be;
    any other pair (broadcasting, mixed dtypes, scalars, CuPy arrays) is left to ``a + b``.
    """
    if (type(a) is np.ndarray and type(b) is np.ndarray and a.shape == b.shape and a.dtype == b.dtype
            and a.strides == b.strides and a.nbytes >= dispatch.POOL_MIN_BYTES and dispatch.BUFFER_POOL):
        return np.add(a, b, out=empty_like(a))
    return a + b


def release_buffers() -> None:
    """Unmap every chunk of the pool that holds no array (chunks in use stay)."""
    _pool.clear()


def pool_stats() -> dict[str, int]:
    """Bytes mapped by the pool, in arrays handed out and not yet collected, idle; chunks; arrays carved."""
    with _pool.lock:
        return {"mapped_bytes": sum(c.size for c in _pool.chunks), "live_bytes": _pool.live_bytes,
                "idle_bytes": _pool.idle_bytes(), "chunks": len(_pool.chunks), "carved": _pool.carved}
