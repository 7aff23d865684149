"""Interleaved timing of cnnkit against another framework, with this machine's hygiene.

Facts measured here (``../shared/PERF_NOTES.md``): OpenBLAS's threads spin ~0.1 s after a
call, so whatever runs right after a NumPy BLAS call is slowed (a PyTorch convolution
went from 18 to 62 ms); the first parallel region after an idle moment waits ~10 ms for
the second vCPU. So before each timed call: a pause (the other framework's threads go
idle), then a short spin of the framework about to run (its threads wake up); who goes
first alternates; the figure is the median of per-pair ratios. The load average is
reported beside every figure: the machine is shared.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import numpy as np

__all__ = ["CLOCKS", "add_timing_options", "blas_note", "interleaved", "load_average", "set_threads", "spin_cnnkit",
           "spin_torch"]

PAUSE_S = 0.2
SPIN_S = 0.02

# --clock: wall time, or the CPU time of the whole process (with one thread per framework it
# does not count the time the process waited for a core: meaningful on a loaded machine).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}

_WHOLE_RUN: list = []  # thread settings entered for the rest of the process


def add_timing_options(parser, threads_help: str = "threads for cnnkit (default: all CPUs)") -> None:
    """The benchmarks' --threads N and --clock wall|cpu options."""
    parser.add_argument("--threads", type=int, default=None, help=threads_help)
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                        help="wall time, or the process's CPU time (meaningful with --threads 1 only: "
                             "robust to a loaded machine)")


def set_threads(threads: int | None, torch=None) -> None:
    """Run cnnkit (and ``torch``, when given) on ``threads`` threads for the rest of the process.

    None leaves each framework's default (all CPUs).
    """
    if threads is None:
        return
    import cnnkit

    if torch is not None:
        torch.set_num_threads(threads)
    setting = cnnkit.config.num_threads(threads)
    setting.__enter__()
    _WHOLE_RUN.append(setting)


def load_average() -> str:
    """The 1-minute load average, as text."""
    return f"{os.getloadavg()[0]:.2f}"


def blas_note() -> str:
    """NumPy's BLAS and the kernels it runs, and whether the environment forced them.

    This machine's environment sets OPENBLAS_CORETYPE=Haswell (AVX2 kernels: ~100
    GFLOP/s per core on sgemm) where OpenBLAS would pick its SkylakeX (AVX-512) kernels
    (~180 GFLOP/s per core). Benchmarks of cnnkit as users run it unset the variable in
    their command (``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python ...``); say which.
    """
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "BLAS: unknown (threadpoolctl not installed)"
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    arch = ", ".join(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} kernels" for i in blas)
    forced = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    return f"NumPy BLAS: {arch or 'none found'}; " + (
        f"forced by the environment: {forced}" if forced else "as detected (no OPENBLAS_CORETYPE)")


def spin_cnnkit() -> None:
    """Wake cnnkit's threads: a parallel kernel pass for about SPIN_S seconds."""
    import cnnkit.functional as F
    from cnnkit import Tensor, no_grad

    x = Tensor(np.ones(2**21, np.float32) - 2)
    end = time.perf_counter() + SPIN_S
    with no_grad():
        while time.perf_counter() < end:
            F.relu(x)


def spin_torch() -> None:
    """Wake PyTorch's threads: a parallel pass for about SPIN_S seconds."""
    import torch

    x = torch.ones(2**21) - 2
    end = time.perf_counter() + SPIN_S
    with torch.no_grad():
        while time.perf_counter() < end:
            torch.relu(x)


def interleaved(
    ours: Callable[[], object], theirs: Callable[[], object], repeats: int,
    spin_theirs: Callable[[], None] = spin_torch, warmup: int = 2, clock: str = "wall",
) -> dict:
    """Time ``ours`` and ``theirs`` in alternating pairs; return times and the ratio.

    ``clock``: "wall" (``time.perf_counter``) or "cpu" (``time.process_time``: the CPU
    time of the whole process). With one thread in both frameworks, CPU time does not
    count the time the process waited for a core, so it stays meaningful on a loaded
    machine; with several threads it adds up their time and is not comparable.

    Returns a dict: ``ours`` and ``theirs`` (lists of seconds), ``ratio`` (median over
    pairs of theirs/ours: above 1 means cnnkit is faster), ``load`` (before, after).
    """
    now = CLOCKS[clock]
    load_before = load_average()
    for _ in range(warmup):
        ours()
        theirs()
    times = {"ours": [], "theirs": []}
    for r in range(repeats):
        pair = [("ours", ours, spin_cnnkit), ("theirs", theirs, spin_theirs)]
        if r % 2:
            pair.reverse()
        for name, fn, spin in pair:
            time.sleep(PAUSE_S)
            spin()
            start = now()
            fn()
            times[name].append(now() - start)
    ratios = [t / o for o, t in zip(times["ours"], times["theirs"])]
    return {**times, "ratio": statistics.median(ratios), "load": (load_before, load_average())}
