"""Compiled CPU kernels (numba), one module per op family.

NumPy cannot express a small convolution without materializing im2col columns, nor a
first-maximum max pooling without one pass per kernel tap. These kernels do such work
in one pass per image, with the per-image working set in cache, split over the cores by
``backend.cores.parallel_for``. The ops in ``cnnkit.functional`` reach them through
``backend.dispatch``; the NumPy code there stays the reference path (CuPy arrays, no
numba, ``config.kernels(False)``) and the oracle that tests/backend compares them with.

- ``conv_direct``: direct stride-1 convolution over flat rows, forward and backward.
- ``conv_blocked``: the same over flat rows with output tiles held in vector registers
  over every tap (``simd``: explicit 64-byte vectors as numba intrinsics).
- ``pool``: max pooling with the first-maximum index, forward and backward.
- ``elementwise``: ReLU forward (with its mask) and backward in one pass.

Layout. A 4-D activation (N, C, H, W) reaches a kernel as ``planes`` (P, H, W), a
C-contiguous stack of its N*C image planes, plus two plane strides: plane (n, c) is
``planes[n*sn + c*sc]``. Both layouts the library produces are covered without a copy:
NCHW memory (sn = C, sc = 1) and the channel-major CNHW memory of conv/pool outputs
(sn = 1, sc = N). ``as_planes`` and ``unplanes`` convert.

Threads. Kernels are serial ``nogil`` functions over a range [i0, i1) of images (or
planes, or elements); ``parallel_for`` splits the range over the threads.

Numerics. ``fastmath`` is limited to reassociation and contraction (FMA) in the
convolutions (``FASTMATH``): results differ from the NumPy path only by float rounding
order, and partial sums over images are added in a fixed order, so results do not depend
on the number of threads. Pooling and ReLU are exact: same maximum, same first maximum,
same NaN and inf behaviour as the reference. No nnan/ninf/nsz flags: those could change
results on non-finite inputs, not only their rounding. Loops index 1-D slices from 0:
numba's negative-index wraparound on any other index would turn vector loads into gathers.

Compilation. Kernels compile on first use per dtype (float32, float64) and are cached
on disk (``cache=True``, in ``__pycache__`` beside each module or under
``NUMBA_CACHE_DIR``): the first call in a fresh install costs a few seconds, later
processes load the cache in well under a second. A cached kernel is reused only while its
module and every package module it imports (``simd``'s intrinsics are inlined into the
kernels that use them) are unchanged: ``stamps``.
"""

from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; the NumPy path still works

    def njit(*args, **kwargs):
        """Without numba the kernels stay plain Python; dispatch never picks them."""
        if args and callable(args[0]):
            return args[0]
        return lambda fn: fn

    AVAILABLE = False
else:
    AVAILABLE = True
    from . import stamps

    stamps.install()  # before any kernel below is decorated: cache stamps include imported kernel modules

__all__ = ["AVAILABLE", "FASTMATH", "FLOATS", "njit", "as_planes", "unplanes", "flat", "aligned_zeros"]

# Reassociation lets reductions vectorize; contraction allows FMA (see "Numerics" above).
FASTMATH = {"reassoc", "contract"}

# The dtypes the kernels are compiled for.
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def as_planes(x):
    """View a 4-D array (N, C, H, W) as C-contiguous planes (P, H, W) with plane strides.

    Returns (planes, sn, sc): plane (n, c) is planes[n*sn + c*sc]. Copies only when
    neither NCHW nor CNHW memory order holds.
    """
    N, C, H, W = x.shape
    if x.flags.c_contiguous:
        return x.reshape(N * C, H, W), C, 1                            # (N*C, H, W)
    xc = x.transpose(1, 0, 2, 3)                                      # (C, N, H, W)
    if xc.flags.c_contiguous:
        return xc.reshape(C * N, H, W), 1, N                           # (C*N, H, W)
    return np.ascontiguousarray(x).reshape(N * C, H, W), C, 1


def unplanes(planes, N: int, C: int, sc: int):
    """(N, C, h, w) view of planes stored NCHW (sc == 1) or CNHW (sc == N)."""
    h, w = planes.shape[1:]
    if sc == 1:
        return planes.reshape(N, C, h, w)
    return planes.reshape(C, N, h, w).transpose(1, 0, 2, 3)


def flat(a):
    """The elements of ``a`` in memory order as a 1-D view, or None if a has gaps."""
    if a.flags.c_contiguous:                                      # the common case
        return a.reshape(a.size)
    # ravel("K") gives a view where a's elements lie in one block in some axis order, else a
    # copy, which owns its memory (base None): the test np.shares_memory made, without its cost
    view = a.ravel("K")
    return None if view.base is None else view


@njit(cache=True)
def aligned_zeros(n, dtype_like):
    """np.zeros(n) like dtype_like's dtype, starting on a 64-byte boundary.

    Flat-row slices at multiples of 16 entries then never straddle cache lines.
    """
    size = dtype_like.itemsize
    buf = np.zeros(n + 64 // size, dtype_like.dtype)
    off = ((64 - buf.ctypes.data % 64) % 64) // size
    return buf[off : off + n]
