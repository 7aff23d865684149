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

__all__ = ["CLOCKS", "add_quiet_option", "add_timing_options", "blas_note", "interleaved", "load_average",
           "runqueue_wait", "set_threads", "settled_wait", "spin_cnnkit", "spin_torch", "waited"]

PAUSE_S = 0.2
SPIN_S = 0.02

# --quiet: a call counts only if this process's threads together waited for a CPU less than
# this share of its time (other processes had the cores), and a run gives up after
# QUIET_MAX_TRIES times the pairs asked for.
QUIET_WAIT_SHARE = 0.02
QUIET_MAX_TRIES = 30
# The kernel adds a thread's run-queue delay when the thread gets a CPU, not while it waits:
# a helper still waiting when the call ends shows its delay only later. So the second
# reading comes this long after the call (the helper then has run, or the call waited).
QUIET_SETTLE_S = 0.005

# --clock: wall time, or the CPU time of the whole process (with one thread per framework it
# does not count the time the process waited for a core: meaningful on a loaded machine).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}

_WHOLE_RUN: list = []  # thread settings entered for the rest of the process


def subclasses(cls) -> set:
    """Every subclass of ``cls``, at any depth (the op classes a profiler wraps: ``subclasses(Function)``)."""
    found = set()
    for sub in cls.__subclasses__():
        found.add(sub)
        found |= subclasses(sub)
    return found


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


def add_quiet_option(parser) -> None:
    """The --quiet N option: wall-clock pairs on a shared machine, kept only when no core was taken."""
    parser.add_argument("--quiet", type=int, default=0, metavar="N",
                        help="repeat until N pairs in which no thread of this process waited for a CPU "
                             f"(more than {QUIET_WAIT_SHARE * 100:.0f}%% of the call's time; Linux schedstat); "
                             "for two-thread wall-clock figures on a shared machine")


def runqueue_wait() -> float | None:
    """Seconds the live threads of this process have spent runnable but without a CPU, or None.

    The sum over ``/proc/self/task/*/schedstat`` of the run-queue delay (Linux with
    schedstats). A call during which it grows had a thread ready to run while other
    processes held the cores: its wall time is not what a quiet machine gives.
    Reading it costs ~0.1 ms: call it outside the timed interval.
    """
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    total, found = 0, False
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
            found = True
        except (OSError, IndexError, ValueError):  # a thread that ended, or no schedstats
            continue
    return total / 1e9 if found else None


def settled_wait() -> float | None:
    """``runqueue_wait()`` read QUIET_SETTLE_S after a call, once every thread that was waiting has run."""
    time.sleep(QUIET_SETTLE_S)
    return runqueue_wait()


def waited(before: float | None, after: float | None, elapsed: float) -> bool:
    """True when the threads waited for a CPU more than QUIET_WAIT_SHARE of ``elapsed`` (unknown: False)."""
    return before is not None and after is not None and after - before > QUIET_WAIT_SHARE * elapsed


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
    spin_theirs: Callable[[], None] = spin_torch, warmup: int = 2, clock: str = "wall", quiet: int = 0,
) -> dict:
    """Time ``ours`` and ``theirs`` in alternating pairs; return times and the ratio.

    ``quiet``: when above 0, pairs continue until ``quiet`` of them ran with neither call
    waiting for a CPU (``waited``), at most QUIET_MAX_TRIES * quiet pairs, and only those
    count; ``repeats`` is then ignored.

    ``clock``: "wall" (``time.perf_counter``) or "cpu" (``time.process_time``: the CPU
    time of the whole process). With one thread in both frameworks, CPU time does not
    count the time the process waited for a core, so it stays meaningful on a loaded
    machine; with several threads it adds up their time and is not comparable.

    Returns a dict: ``ours`` and ``theirs`` (lists of seconds), ``ratio`` (median over
    pairs of theirs/ours: above 1 means cnnkit is faster), ``load`` (before, after),
    ``pairs`` (the pairs run; with ``quiet``, more than were kept).
    """
    now = CLOCKS[clock]
    load_before = load_average()
    for _ in range(warmup):
        ours()
        theirs()
    times = {"ours": [], "theirs": []}
    tries = QUIET_MAX_TRIES * quiet if quiet else repeats
    r = 0
    while r < tries and (len(times["ours"]) < quiet if quiet else True):
        pair = [("ours", ours, spin_cnnkit), ("theirs", theirs, spin_theirs)]
        if r % 2:
            pair.reverse()
        kept = {}
        for name, fn, spin in pair:
            time.sleep(PAUSE_S)
            spin()
            before = runqueue_wait() if quiet else None
            start = now()
            fn()
            kept[name] = now() - start
            if quiet and waited(before, settled_wait(), kept[name]):
                break
        else:
            for name, t in kept.items():
                times[name].append(t)
        r += 1
    if not times["ours"]:
        raise RuntimeError(f"no pair of calls ran without waiting for a CPU in {r} tries (--quiet)")
    ratios = [t / o for o, t in zip(times["ours"], times["theirs"])]
    return {**times, "ratio": statistics.median(ratios), "load": (load_before, load_average()), "pairs": r}
