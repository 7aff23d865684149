"""The one owner of the cores: cnnkit's kernel thread pool and the BLAS thread switch.

Two kinds of code keep the CPU's cores busy inside cnnkit: the compiled kernels
(``backend/kernels``), which this module's pool splits over threads (``parallel_for``),
and NumPy's BLAS, which runs matrix products on its own threads. They must never both
be busy at once: with both, the two pools fight for the same cores (LeNet-5 training fell
12x in an early prototype). Both are driven from the calling thread, one call after the
other, so they never overlap by construction; what remains is each pool's idle behaviour:

- the kernel pool's helpers, after a parallel region, wait for the next one by spinning
  without the GIL for at most ``dispatch.POOL_SPIN_US`` microseconds (``kernels/spin.py``),
  then sleep on a queue: an idle process burns nothing once the bound has passed. They spin
  only while pinned to a CPU of their own (below), never while BLAS runs on its own threads
  (``blas_threads`` with more than one), nor for ``dispatch.POOL_SPIN_BACKOFF_S`` after a
  spinning thread found it had lost its CPU (more runnable threads than cores: spinning
  would only take time from the others). A helper that sees a job goes on spinning until
  the GIL is free (``dispatch.POOL_SPIN_GIL``, ``_gil_word``), since asking for it while the
  caller holds it puts the helper to sleep until the caller's first chunk lets it go. The
  caller of a pinned region waits for a helper's last chunk the same way. Spinning changes when a thread
  starts, never what it computes: chunks are handed out as before, the caller takes every
  chunk no helper has taken, and a job's end (``_Job.wait``) remains the truth when a spin gives up;
- during a parallel region the calling thread stays on its current CPU and the helpers on
  the caller's other CPUs (``dispatch.POOL_PIN``; the caller's CPU set comes back when the
  region ends), unless other processes keep the CPUs busy: left to the scheduler, the two
  threads of a region often shared one CPU of this machine while the other stayed idle;
- BLAS's threads spin for a while after each multi-threaded call, which slows whatever
  runs next. So matrix products go through ``matmul``, which runs small products (where
  waking BLAS's helpers costs more than they save) on one BLAS thread and the others on
  ``config.get_num_threads()`` threads. The cut is ``dispatch.SMALL_PRODUCT_MACS``.

BLAS's thread count belongs to the user between cnnkit's products. The rule (``blas_threads``):
BLAS's count is one per process, so the blocks open in all Python threads form one list; while
any is open BLAS runs on the count of the one entered last, and when the last closes every
library gets back the count it had before the first opened. So NumPy code run by the user, in
this thread or another, sees its own count whenever no cnnkit product runs; a second Python
thread's product never runs on BLAS's threads because the first thread's block closed; a
forked child drops the blocks of threads it does not have. The count is set and read through
OpenBLAS's own functions (ctypes) and changed only where it differs: ~1.7 us per product in all
(against ~3.5 us through threadpoolctl). Restoring at a later boundary (once per op or per
backward pass) would save at most the two sets (~0.3 us per product) and let user code (hooks)
run on one BLAS thread: not done.

The number of threads is ``config.get_num_threads()`` (``config.num_threads(n)`` changes
it inside a block; the environment variable CNNKIT_NUM_THREADS sets its initial value).
"""

from __future__ import annotations

import itertools
import os
import queue
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np

from .. import config
from . import dispatch
from .arrays import get_array_module
from .kernels import AVAILABLE
from .kernels.spin import cycles, gil_word, spin_until

__all__ = ["parallel_for", "chunk_bounds", "blas_threads", "matmul", "matmuls"]


# The shared int64 words of a pool's ``state`` array, each on its own 64-byte line.
_POSTED, _DONE, _STOP = 0, 8, 16      # jobs posted so far; the last job finished; no spinning


class _Job:
    """One kernel call split into chunks [i0, i1) that any thread may take, in order.

    With ``dispatch.POOL_LEAN_JOB`` the job counts finished chunks with ``next()`` on an
    ``itertools.count`` (atomic under the GIL, like the chunks' iterator) and announces the
    last one by releasing a lock taken when the job was made: ~0.7 us to make with its chunk
    list (``_chunks``) instead of ~5 (a ``threading.Event`` is a Condition and a Lock built in
    Python, and its set and wait are Python too), and no lock per chunk. Otherwise (0, for A/B runs) a lock guards the count of chunks left and an Event
    marks the end. Either way the same chunks are handed out in the same order.
    """

    __slots__ = ("fn", "args", "seq", "chunks", "total", "left", "lock", "done", "finished", "error")

    def __init__(self, fn, chunks, args, seq):
        self.fn, self.args, self.seq = fn, args, seq
        self.chunks = iter(chunks)  # next() on a list iterator is atomic under the GIL
        self.total = self.left = len(chunks)
        if dispatch.POOL_LEAN_JOB:
            self.lock = None
            self.finished = itertools.count(1)   # the k-th chunk to finish draws k
            self.done = threading.Lock()
            self.done.acquire()                  # released by whoever finishes the last chunk
        else:
            self.lock, self.done = threading.Lock(), threading.Event()
        self.error: BaseException | None = None

    def drain(self) -> bool:
        """Run chunks until none are left; True when this thread finished the job's last one."""
        trace = _trace
        last = False
        for i0, i1 in self.chunks:
            if trace is not None:
                t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            try:
                self.fn(i0, i1, *self.args)
            except BaseException as error:  # re-raised in the calling thread
                self.error = error
            if trace is not None:
                trace.append(("chunk", self.seq, threading.get_ident(), t0, time.perf_counter_ns(),
                              c0, time.thread_time_ns()))
            if self.lock is None:
                if next(self.finished) == self.total:
                    self.done.release()
                    last = True
                continue
            with self.lock:
                self.left -= 1
                if self.left == 0:
                    self.done.set()
                    last = True
        return last

    def wait(self) -> None:
        """Return once every chunk has finished (on whichever thread)."""
        if self.lock is None:
            self.done.acquire()
            self.done.release()      # open for any later wait, as an Event stays set
        else:
            self.done.wait()


class _Helpers:
    """Daemon threads that help drain jobs: after a job each waits ``dispatch.POOL_SPIN_US``
    for the next one without the GIL (``kernels.spin``), then sleeps on a queue."""

    def __init__(self):
        self.count, self.jobs = 0, queue.SimpleQueue()
        self.lock = threading.Lock()
        self.state = np.zeros(24 + 8, np.int64)     # _POSTED, _DONE, _STOP
        self.posted = 0
        self.calm_after = 0.0     # perf_counter time before which helpers do not spin (a loaded machine)
        self.tids: list[int] = []           # the helpers' native thread ids, in start order
        self.idents: set[int] = set()       # their threading idents (a helper's own regions are not pinned)
        self.pinned: dict[int, frozenset] = {}   # tid -> the CPUs it was pinned to

    def pin(self, cpus: list[int]) -> None:
        """Helper k on cpus[k % len(cpus)]; [] gives them back ``os.sched_getaffinity(0)`` of the caller."""
        for k, tid in enumerate(list(self.tids)):
            want = frozenset({cpus[k % len(cpus)]}) if cpus else None
            if self.pinned.get(tid) != want:
                try:
                    os.sched_setaffinity(tid, want if want is not None else os.sched_getaffinity(0))
                except OSError:      # a CPU taken away since (cgroups): leave this helper as it is
                    continue
                self.pinned[tid] = want

    def ensure(self, count: int) -> None:
        """Start helpers until there are at least ``count`` (they are never stopped)."""
        if self.count >= count:
            return
        with self.lock:
            while self.count < count:
                threading.Thread(target=self._serve, daemon=True, name="cnnkit-kernel").start()
                self.count += 1

    def post(self, job: _Job, copies: int) -> None:
        for _ in range(copies):
            self.jobs.put(job)
        self.state[_POSTED] = job.seq   # after the puts: a helper that sees it finds the job queued

    def _serve(self) -> None:
        state, finished = self.state, 0
        self.idents.add(threading.get_ident())
        tid = threading.get_native_id()
        self.tids.append(tid)
        while True:
            ticks = _spin_ticks() if self.pinned.get(tid) else 0   # spin only on a CPU of its own
            if ticks:
                seen = int(state[_POSTED])
                if self.jobs.empty() and time.perf_counter() > self.calm_after:
                    found = spin_until(state, _POSTED, seen + 1, ticks, _gap_ticks, _STOP, _DONE, finished,
                                       _gil_spin, _gil_free_ticks)
                    if found < 0:
                        self.calm_after = time.perf_counter() + dispatch.POOL_SPIN_BACKOFF_S
                    if _trace is not None:
                        _trace.append(("spin", found))
                elif finished:
                    state[_DONE] = finished
            job = self.jobs.get()
            if _trace is not None:
                _trace.append(("start", job.seq, threading.get_ident(), time.perf_counter_ns()))
            finished = job.seq if job.drain() else 0


_helpers = _Helpers()
_trace: list | None = None          # events of parallel regions while ``tracing`` runs
_ticks_per_us = 0.0                  # time-stamp counter rate, measured on first use


_gap_ticks = 0                       # dispatch.POOL_SPIN_PREEMPTED_US in cycles
_NO_GIL_WORD = np.zeros(1, np.int64)  # "the GIL is free": spin_until does not wait for it
_gil_spin = _NO_GIL_WORD             # with dispatch.POOL_SPIN_GIL: the GIL's flag (_gil_word), if found
_gil_found: list = []                # [the flag's array or None], once looked for
_gil_free_ticks = 0                  # dispatch.POOL_SPIN_GIL_FREE_US in cycles


def _spin_ticks() -> int:
    """dispatch.POOL_SPIN_US in time-stamp counter cycles (0: no spinning)."""
    global _ticks_per_us, _gap_ticks, _gil_spin, _gil_free_ticks
    if dispatch.POOL_SPIN_US <= 0 or not AVAILABLE:
        return 0
    if not dispatch.POOL_SPIN_GIL:
        _gil_spin = _NO_GIL_WORD
    else:
        if not _gil_found:
            _gil_found.append(_gil_word())
        _gil_spin = _gil_found[0] if _gil_found[0] is not None else _NO_GIL_WORD
    if not _ticks_per_us:
        c0, t0 = cycles(), time.perf_counter()
        time.sleep(0.002)
        _ticks_per_us = (cycles() - c0) / ((time.perf_counter() - t0) * 1e6)
    _gap_ticks = int(dispatch.POOL_SPIN_PREEMPTED_US * _ticks_per_us)
    _gil_free_ticks = int(dispatch.POOL_SPIN_GIL_FREE_US * _ticks_per_us)
    return int(dispatch.POOL_SPIN_US * _ticks_per_us)


def _gil_word():
    """The interpreter's "GIL held" flag as a one-element int64 array (low 32 bits), or None.

    CPython 3.11 keeps its one GIL in ``_PyRuntime.ceval.gil``: the switch interval (an
    unsigned long, microseconds), the last holder's thread state, then the ``locked`` int.
    The three words are found by value (the interval ``sys.getswitchinterval`` gives, this
    thread's state from ``PyThreadState_Get``, and 1, since this thread holds the GIL) within
    the first 768 bytes of ``_PyRuntime``, and the find is accepted only if the flag also
    reads 0 from a compiled call that released the GIL. Other versions and interpreters
    (3.12 moved the GIL into each interpreter): None, and helpers return as soon as a job
    is posted. Only read, never written.
    """
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11) or not AVAILABLE:
        return None
    try:
        import ctypes

        api = ctypes.pythonapi
        tstate = ctypes.PYFUNCTYPE(ctypes.c_void_p)(("PyThreadState_Get", api))()  # (pythonapi's own left as it is)
        base = ctypes.addressof(ctypes.c_void_p.in_dll(api, "_PyRuntime"))
        words = (ctypes.c_uint64 * 96).from_address(base)
        interval = round(sys.getswitchinterval() * 1e6)
        for k in range(1, 95):
            if words[k] == tstate and words[k - 1] == interval and words[k + 1] & 0xFFFFFFFF == 1:
                flag = np.ctypeslib.as_array((ctypes.c_int64 * 1).from_address(base + 8 * (k + 1)))
                if any(gil_word(flag) == 0 for _ in range(20)):     # free while the call ran
                    return flag
    except (AttributeError, OSError, ValueError, TypeError):
        pass
    return None


def _forget_helpers() -> None:  # a forked child has none of the parent's threads
    global _helpers
    _helpers = _Helpers()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helpers)


_PIN_OK = hasattr(os, "sched_setaffinity") and hasattr(threading, "get_native_id")


def _pin(helpers: _Helpers, threads: int):
    """With ``dispatch.POOL_PIN``: the helpers on the caller's other CPUs (1), and the calling
    thread held on the CPU it runs on for the region (2); returns the caller's CPU set to
    restore, or None (the caller not pinned).

    Left to themselves, the two threads of a region often shared one CPU on this machine (the
    woken helper placed beside the running caller, the other vCPU idle): a region took the sum
    of both threads' time. Pinned, each runs on its own. Only when the caller's CPUs are at
    least the threads, and never from a helper (its own nested regions).
    """
    if threading.get_ident() in helpers.idents:
        return None
    mask = os.sched_getaffinity(0)
    if not dispatch.POOL_PIN or len(mask) < threads or _others_busy():
        if helpers.pinned:
            helpers.pin([])
            helpers.pinned.clear()
        return None
    cpus = sorted(mask)
    here = _current_cpu()
    if here in mask:                      # stay where the scheduler put the caller: no migration
        cpus.remove(here)
        cpus.insert(0, here)
    helpers.pin(cpus[1:threads])
    if dispatch.POOL_PIN < 2:
        return None
    try:
        os.sched_setaffinity(0, {cpus[0]})
    except OSError:
        return None
    return mask


_others = {"at": -1e9, "busy_s": None, "ours_s": 0.0, "busy": False}


def _others_busy() -> bool:
    """True when other processes kept more than ``dispatch.POOL_PIN_MAX_OTHERS`` CPUs busy over
    the last ``dispatch.POOL_PIN_CHECK_S`` seconds (``/proc/stat`` minus this process's CPU
    time; read at most once per period). A pinned thread cannot leave a CPU another process
    took: on a loaded machine the scheduler places the threads. Niced processes count too:
    with niced tests on both CPUs (load ~2), pinning both threads made ResNet-18 b1 1.10x
    and LeNet-5 b64 training 1.09x slower."""
    now = time.perf_counter()
    if now - _others["at"] < dispatch.POOL_PIN_CHECK_S:
        return _others["busy"]
    try:
        with open("/proc/stat", "rb") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return False
    busy = (sum(fields) - fields[3] - fields[4]) / _TICKS     # all but idle and iowait
    ours = time.process_time()
    if _others["busy_s"] is not None:
        others = (busy - _others["busy_s"]) - (ours - _others["ours_s"])
        _others["busy"] = others > dispatch.POOL_PIN_MAX_OTHERS * (now - _others["at"])
    _others.update(at=now, busy_s=busy, ours_s=ours)
    return _others["busy"]


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _current_cpu() -> int:
    """The CPU the calling thread runs on (glibc's sched_getcpu), or -1."""
    global _getcpu
    if _getcpu is None:
        try:
            import ctypes

            _getcpu = ctypes.CDLL(None, use_errno=True).sched_getcpu
        except (OSError, AttributeError):
            _getcpu = lambda: -1  # noqa: E731
    return _getcpu()


_getcpu = None


@contextmanager
def tracing():
    """Record every parallel region while the block runs (for benchmarks/pool_trace.py).

    Yields a list of tuples: ("region", seq, caller, start_ns, end_ns, fn name, count) per region,
    ("start", seq, helper, ns) when a helper takes a job, ("chunk", seq, thread, start_ns,
    end_ns, thread_cpu_start_ns, thread_cpu_end_ns) per chunk (perf_counter_ns, thread_time_ns).
    Off by default; when off the only cost is one test of a global per chunk.
    """
    global _trace
    _trace = events = []
    try:
        yield events
    finally:
        _trace = None


def chunk_bounds(count: int, pieces: int) -> list[int]:
    """Bounds of ``pieces`` chunks covering range(count), sizes differing by at most one.

    With ``dispatch.POOL_LARGE_CHUNKS_FIRST`` the larger chunks come first: the threads take
    chunks in order, so the last ones handed out are the small ones and the threads end
    closer together. (Sizes 3, 4, 3, 4 of ResNet-18's 14 tile rows at batch 1 left the helper,
    which starts ~50 us after the caller, two rows more than the caller: ~300 us of one thread
    alone at the end of each of those regions.)
    """
    if not dispatch.POOL_LARGE_CHUNKS_FIRST:
        return [count * k // pieces for k in range(pieces + 1)]
    q, r = divmod(count, pieces)
    return [k * q + min(k, r) for k in range(pieces + 1)]


_chunk_lists: dict = {}      # (count, pieces, POOL_LARGE_CHUNKS_FIRST) -> [(i0, i1), ...]


def _chunks(count: int, pieces: int) -> list[tuple[int, int]]:
    """``chunk_bounds`` as (i0, i1) pairs; with ``dispatch.POOL_LEAN_JOB`` each list made once
    (~0.1 us a look-up against ~1.3 us to build; a job only iterates it)."""
    if not dispatch.POOL_LEAN_JOB:
        bounds = chunk_bounds(count, pieces)
        return list(zip(bounds[:-1], bounds[1:]))
    key = (count, pieces, dispatch.POOL_LARGE_CHUNKS_FIRST)
    chunks = _chunk_lists.get(key)
    if chunks is None:
        if len(_chunk_lists) >= 1024:      # many shapes: start again rather than grow
            _chunk_lists.clear()
        bounds = chunk_bounds(count, pieces)
        chunks = _chunk_lists[key] = list(zip(bounds[:-1], bounds[1:]))
    return chunks


def parallel_for(fn, count: int, *args, grain: int = 1, per_thread: int = 4, piece_grain: bool = False) -> None:
    """Run fn(i0, i1, *args) over chunks covering range(count), on up to get_num_threads() threads.

    ``fn`` is a ``nogil`` kernel (or Python that spends its time in such kernels and in
    BLAS, which release the GIL). The calling thread works too and never waits for a
    helper that has not started: if the helpers are busy or descheduled (a loaded
    machine), it takes their chunks itself. Chunks are handed out dynamically,
    ``per_thread`` per thread (four unless said), so a slowed thread takes fewer. Each
    thread gets at least ``grain`` items: waking a helper costs ~20-70 microseconds
    here, more than a small kernel. ``piece_grain``: each chunk too (a chunk with a fixed
    cost of its own, such as a BLAS call).
    """
    threads = min(config.get_num_threads(), count // max(grain, 1))
    if threads <= 1:
        fn(0, count, *args)
        return
    pieces = min(count // max(grain, 1) if piece_grain else count, per_thread * threads)
    helpers = _helpers
    helpers.posted += 1
    job = _Job(fn, _chunks(count, pieces), args, helpers.posted)
    trace = _trace
    if trace is not None:
        start = time.perf_counter_ns()
    helpers.ensure(threads - 1)
    mask = _pin(helpers, threads) if _PIN_OK and (dispatch.POOL_PIN or helpers.pinned) else None
    try:
        helpers.post(job, threads - 1)
        if not job.drain():
            ticks = _spin_ticks() if mask is not None else 0
            if ticks and time.perf_counter() > helpers.calm_after:
                if spin_until(helpers.state, _DONE, job.seq, ticks, _gap_ticks, _STOP, _DONE, 0, _NO_GIL_WORD, 0) < 0:
                    helpers.calm_after = time.perf_counter() + dispatch.POOL_SPIN_BACKOFF_S
            job.wait()
    finally:
        if mask is not None:
            os.sched_setaffinity(0, mask)
    if trace is not None:
        trace.append(("region", job.seq, threading.get_ident(), start, time.perf_counter_ns(),
                      getattr(fn, "__name__", "?"), count))
    if job.error is not None:
        raise job.error


_blas_pools = None  # threadpoolctl's controllers of NumPy's BLAS, found on first use
_blas_calls = None  # (gets, sets): each library's functions for its thread count, found on first use


def _blas_controllers():
    global _blas_pools
    if _blas_pools is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # without threadpoolctl BLAS keeps its own thread count
            _blas_pools = []
        else:
            _blas_pools = ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas_pools


def _blas_functions():
    """(gets, sets): each BLAS library's get and set of its thread count, found once.

    OpenBLAS on its own threads (pthreads): ``openblas_get/set_num_threads`` called directly
    (~0.1-0.2 us each, against ~0.3-0.6 us through threadpoolctl, whose set moreover lets only
    the first Python thread that used it change the count). Other libraries (MKL, BLIS,
    OpenMP builds): threadpoolctl's methods.
    """
    global _blas_calls
    if _blas_calls is None:
        gets, puts = [], []
        for pool in _blas_controllers():
            get = put = None
            if getattr(pool, "internal_api", "") == "openblas" and getattr(pool, "threading_layer", "") != "openmp":
                try:
                    get = pool._get_symbol("openblas_get_num_threads")
                    put = pool._get_symbol("openblas_set_num_threads")
                except Exception:  # another threadpoolctl: its methods below
                    get = put = None
            if get is None or put is None:
                get, put = pool.get_num_threads, pool.set_num_threads
            gets.append(get)
            puts.append(put)
        _blas_calls = (tuple(gets), tuple(puts))
    return _blas_calls


# The rule (docs/performance.md, "One owner of the cores"): BLAS's thread count is per process,
# so the open ``blas_threads`` blocks of every Python thread are one list, innermost (last
# entered) last, each as (count, thread ident). While any is open BLAS runs on the last one's
# count; when the last closes, each library gets back its count read when the first opened
# (``_blas_saved``), so NumPy code outside cnnkit's products always sees its own count.
# ``_blas_now``: the one count set on every library while blocks are open (a set only on a
# change). All under one lock. Plain loops, no helpers: this runs twice per matrix product.
_blas_open: list[tuple[int, int]] = []
_blas_saved: list = []
_blas_now = 0
_blas_lock = threading.Lock()


def _blas_enter(count: int) -> tuple[int, int]:
    """Open a ``blas_threads(count)`` block; returns its token for ``_blas_exit``."""
    global _blas_now
    token = (count, threading.get_ident())
    gets, puts = _blas_calls or _blas_functions()
    with _blas_lock:
        if not _blas_open:
            _blas_saved.clear()
            _blas_now = count
            for get, put in zip(gets, puts):
                n = get()
                _blas_saved.append(n)
                if n != count:
                    put(count)
        elif _blas_now != count:
            _blas_now = count
            for put in puts:
                put(count)
        _blas_open.append(token)
    if count > 1:
        _helpers.state[_STOP] += 1      # BLAS's threads own the cores: the pool's helpers do not spin
    return token


def _blas_exit(token: tuple[int, int]) -> None:
    """Close a block: BLAS on the innermost block still open (any thread's), else on its counts before the first."""
    if token[0] > 1:
        _helpers.state[_STOP] -= 1
    with _blas_lock:
        if _blas_open[-1] is token:
            _blas_open.pop()
        else:  # another thread's block opened since, and is still open
            del _blas_open[next(k for k, t in enumerate(_blas_open) if t is token)]
        _blas_settle()


def _blas_settle() -> None:
    """BLAS on the count of the innermost open block, or on its saved counts when none is open (lock held)."""
    global _blas_now
    puts = _blas_calls[1]
    if _blas_open:
        if _blas_open[-1][0] != _blas_now:
            _blas_now = _blas_open[-1][0]
            for put in puts:
                put(_blas_now)
    else:
        for put, n in zip(puts, _blas_saved):
            if n != _blas_now:
                put(n)


def _blas_after_fork() -> None:
    """A forked child runs only the forking thread: the blocks other threads had open never
    close, so they are dropped and BLAS follows the rest (its saved counts if none is left)."""
    global _blas_lock
    _blas_lock = threading.Lock()
    me = threading.get_ident()
    if any(token[1] != me for token in _blas_open):
        _blas_open[:] = [token for token in _blas_open if token[1] == me]
        _blas_settle()
    # the child's new pool (``_forget_helpers``, called before) starts at 0: count the blocks
    # of more than one thread still open, which ``_blas_exit`` will take off
    _helpers.state[_STOP] = sum(1 for token in _blas_open if token[0] > 1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_blas_after_fork)


class blas_threads:
    """Run the block with NumPy's BLAS limited to ``count`` threads, then restore it.

    For any number of Python threads: while blocks are open, BLAS runs on the count of the
    block entered last (of those still open); when the last one closes, BLAS gets back the
    count it had before the first opened. ~2 us per use (measured); a no-op when threadpoolctl
    is not installed. With ``count`` above 1 the kernel pool's helpers do not spin while the
    block runs.
    """

    __slots__ = ("count", "token")

    def __init__(self, count: int):
        self.count = count

    def __enter__(self):
        self.token = _blas_enter(self.count)
        return self

    def __exit__(self, *exc):
        _blas_exit(self.token)
        return False


def _matmul_batches(i0, i1, a, b, out):
    np.matmul(a[i0:i1], b[i0:i1], out=out[i0:i1])  # NumPy releases the GIL inside BLAS


def _matmul_columns(j0, j1, a, b, out, step):
    c0, c1 = j0 * step, min(j1 * step, out.shape[-1])
    np.matmul(a, b[..., c0:c1], out=out[..., c0:c1])


def _matmul_rows(i0, i1, a, b, out, step):
    r0, r1 = i0 * step, min(i1 * step, out.shape[-2])
    np.matmul(a[..., r0:r1, :], b, out=out[..., r0:r1, :])


def matmul(a, b, out=None):
    """a @ b (batched over a leading axis like ``xp.matmul``), on the cores' one pool.

    NumPy arrays: products of at most ``dispatch.SMALL_PRODUCT_MACS`` multiply-adds run
    on the calling thread with one BLAS thread. Larger ones are split over the kernel
    pool's threads, each running its share on one BLAS thread: a batch of products
    (3-D a and b with one batch size, at least one per thread) by batch, anything else
    by blocks of the result's columns (or rows, when there are more of those). BLAS's own threads therefore never run (nor spin
    after a call while the kernels run). Other array modules (CuPy) are called as they are.
    """
    if not isinstance(a, np.ndarray):
        return get_array_module(a).matmul(a, b, out=out)
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    if k == 1 and isinstance(b, np.ndarray) and b.shape[-2] == 1 and a.dtype.char in "fd" and b.dtype.char in "fd":
        return _outer(a, b, out)
    batch = a.shape[0] if a.ndim == 3 else (b.shape[0] if b.ndim == 3 else 1)
    threads = config.get_num_threads()
    small = threads == 1 or batch * m * k * n <= dispatch.SMALL_PRODUCT_MACS
    if out is None and not small:   # (a small product: NumPy allocates the same array)
        shape = (batch, m, n) if max(a.ndim, b.ndim) == 3 else (m, n)
        out = np.empty(shape, np.result_type(a, b))
    token = _blas_enter(1)   # not ``with blas_threads(1)``: the same, ~0.4 us less per product
    try:
        if small:
            return np.matmul(a, b, out=out)
        if a.ndim == 3 and b.ndim == 3 and a.shape[0] == b.shape[0] and batch >= threads:
            parallel_for(_matmul_batches, batch, a, b, out)
        elif n >= m:
            step = _block_step(n, threads)
            parallel_for(_matmul_columns, -(-n // step), a, b, out, step)
        else:
            step = _block_step(m, threads)
            parallel_for(_matmul_rows, -(-m // step), a, b, out, step)
    finally:
        _blas_exit(token)
    return out


def _outer(a, b, out):
    """a @ b for an inner dimension of 1 (a linear layer's weight gradient at batch 1): each
    entry 0 + a_i * b_j, as NumPy's matmul computes it (its loop without BLAS: it calls no
    BLAS when the inner dimension is 1), in two vector passes instead of one scalar loop.
    The same bits, signed zeros (0 + -0 is +0) and NaNs included (tests/backend/test_kernels.py).
    (120, 1) @ (1, 400): 16 us instead of 54 (one thread, CPU time)."""
    out = np.multiply(a, b, out=out)
    out += 0
    return out


def _matmul_pairs(i0, i1, products, outs):
    for k in range(i0, i1):
        np.matmul(*products[k], out=outs[k])  # NumPy releases the GIL inside BLAS


def matmuls(products):
    """[a @ b for (a, b) in products], independent 2-D products run side by side on the pool.

    NumPy arrays: when there are several threads and every product is small enough to run
    on one BLAS thread (``dispatch.SMALL_PRODUCT_MACS``) but has at least
    ``dispatch.PARALLEL_MIN_MACS`` multiply-adds, the products are the work items of one
    parallel region, each on one BLAS thread (a linear layer's gx = gy @ W and gW = gy^T @ x:
    two small products that ``matmul`` would run one after the other on the calling thread).
    Otherwise each goes through ``matmul``. The same BLAS calls either way: the same results.
    """
    products = list(products)
    threads = config.get_num_threads()
    if threads == 1 or len(products) < 2 or not all(
            isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.ndim == b.ndim == 2 for a, b in products):
        return [matmul(a, b) for a, b in products]
    macs = [a.shape[0] * a.shape[1] * b.shape[1] for a, b in products]
    if (max(macs) > dispatch.SMALL_PRODUCT_MACS
            or min(macs) < dispatch.PARALLEL_MIN_MACS):
        return [matmul(a, b) for a, b in products]
    outs = [np.empty((a.shape[0], b.shape[1]), np.result_type(a, b)) for a, b in products]
    with blas_threads(1):
        parallel_for(_matmul_pairs, len(products), products, outs, per_thread=1)
    return outs


def _block_step(extent: int, threads: int) -> int:
    """Columns (or rows) per block: at most MATMUL_BLOCK, and the blocks a multiple of the threads.

    A product with fewer than 2 * MATMUL_BLOCK rows (ResNet-18's 256-filter layers at batch
    1) would otherwise be one block on one thread, and 784 columns 256+256+256+16. Extents
    that are a multiple of MATMUL_BLOCK * threads keep blocks of MATMUL_BLOCK.
    """
    blocks = -(-max(-(-extent // dispatch.MATMUL_BLOCK), threads) // threads) * threads
    return -(-extent // blocks)                                       # ceil(extent / blocks)
