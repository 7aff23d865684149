"""glibc's allocator policy for a process that trains: keep freed memory for the next step.

A training step frees and re-allocates the same activation-sized arrays every step. With
glibc's default policy, freed memory at the top of the heap above the trim threshold is
given back to the kernel (and arrays above the mmap threshold are fresh memory maps), so
the next step faults every page back in. Measured on the 2-core machine of
docs/performance.md ("The allocator", Dec 3 night), one thread, CPU time per training
step, a cnnkit-only process (``benchmarks/malloc_policy.py``):

    LeNet-5 b256      31 -> 19 ms,  3,756 -> 0 minor faults per step
    ResNet-20 b128    1,040 -> 820-920 ms,  42,000 -> 4 faults (174 -> 1 ms system time)
    VGG-11 (CIFAR)    level (1,114 vs 1,123 ms), faults 9,300 -> 9,000
    ResNet-18 b16     level (its 51 MB arrays stay above the largest mmap threshold)

Peak RSS did not grow (ResNet-20 570-613 vs 574 MB; LeNet-5 190 vs 191 MB).

``tune_malloc`` sets two of glibc's ``mallopt`` parameters: the mmap threshold to glibc's
largest, 32 MiB (which also stops its dynamic adjustment), and the trim threshold to
64 MiB, so at most 64 MiB of freed heap stays mapped. This is process-wide, so the
library never calls it by itself: the ``cnnkit`` command does (it owns its process), and
a program that trains through the Python API may call it at start. Results do not change,
only where memory comes from.

It does nothing, and says why, when the C library is not glibc, when the user set glibc's
own variables (``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TOP_PAD_``
or malloc tunables in ``GLIBC_TUNABLES``: theirs win), or when ``CNNKIT_TUNE_MALLOC=0``.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["tune_malloc", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

MMAP_THRESHOLD = 32 << 20  # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit
TRIM_THRESHOLD = 64 << 20

# mallopt's parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_USER_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")

_applied: str | None = None


def tune_malloc(environ=None) -> str:
    """Set glibc's mmap/trim thresholds for training (module doc); once set, a no-op.

    Returns one line saying what was done or why nothing was: "set: ..." or "left: ...".
    """
    global _applied
    if _applied is not None:
        return _applied
    reason = _reason_to_leave(os.environ if environ is None else environ)
    if reason is not None:
        return f"left: {reason}"
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    for name, param, value in (
        ("M_MMAP_THRESHOLD", _M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        ("M_TRIM_THRESHOLD", _M_TRIM_THRESHOLD, TRIM_THRESHOLD),
    ):
        if libc.mallopt(param, value) != 1:  # glibc refuses a value out of its range
            return f"left: glibc's mallopt refused {name}={value}"
    _applied = f"set: glibc mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB"
    return _applied


def _reason_to_leave(env) -> str | None:
    if env.get("CNNKIT_TUNE_MALLOC", "1").strip() == "0":
        return "CNNKIT_TUNE_MALLOC=0"
    library, _ = platform.libc_ver()
    if library != "glibc":
        return f"the C library is {library or 'not glibc'}, not glibc"
    chosen = [name for name in _USER_VARIABLES if name in env]
    if "glibc.malloc." in env.get("GLIBC_TUNABLES", ""):
        chosen.append("GLIBC_TUNABLES (glibc.malloc.*)")
    if chosen:
        return f"the environment sets {', '.join(chosen)}"
    return None
