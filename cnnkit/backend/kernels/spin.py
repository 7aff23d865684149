"""Bounded busy-waits without the GIL, for the kernel pool (``backend.cores``).

A thread that sleeps in the kernel (a futex: ``queue.SimpleQueue.get``, ``Event.wait``,
CPython's GIL) is woken by an interrupt to its CPU; on this machine's virtual CPUs, which
halt as soon as they are idle, that took 40-170 microseconds per parallel region. A
thread that waits here instead keeps running: it watches one int64 of a shared array
(``state[index] >= target``) with the GIL released, for at most ``ticks`` cycles of the
time-stamp counter, and returns False when the bound passes (the caller then sleeps as
before), ``state[stop]`` is set (someone else wants the cores: BLAS on its own threads)
or the thread was descheduled while it spun.

Each loop iteration issues ``pause`` and reads ``state[index]`` with an atomic (acquire)
load, which the compiler may not hoist out of the loop: the other thread's store is seen
within a fraction of a microsecond. A thread that finds it lost its CPU while spinning
stops (the machine is oversubscribed: spinning there takes time from other threads).
"""

from __future__ import annotations

from . import AVAILABLE, njit

__all__ = ["cycles", "gil_word", "spin_until"]

if AVAILABLE:
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def _cycle_counter(typingctx):
        """The time-stamp counter (``llvm.readcyclecounter``: rdtsc on x86-64)."""
        def codegen(context, builder, signature, args):
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(64), []),
                                                "llvm.readcyclecounter")
            return builder.call(fn, [])
        return types.int64(), codegen

    @intrinsic
    def _relax(typingctx):
        """``pause``: tells the core this is a spin loop (a hyper-threaded sibling keeps the core)."""
        def codegen(context, builder, signature, args):
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse2.pause")
            builder.call(fn, [])
            return context.get_dummy_value()
        return types.void(), codegen

    @intrinsic
    def _load(typingctx, array, index):
        """array[index] as an atomic (acquire) load: repeated on every loop iteration, never hoisted."""
        def codegen(context, builder, signature, args):
            arraytype = signature.args[0]
            view = context.make_array(arraytype)(context, builder, args[0])
            pointer = cgutils.get_item_pointer(context, builder, arraytype, view, [args[1]], wraparound=False)
            return builder.load_atomic(pointer, "acquire", 8)
        return types.int64(array, index), codegen

else:  # pragma: no cover - without numba the pool never spins
    def _cycle_counter():
        return 0

    def _relax():
        return None

    def _load(array, index):
        return array[index]


@njit(nogil=True, cache=True)
def cycles():
    """The time-stamp counter (cycles at a constant rate), to calibrate the bounds."""
    return _cycle_counter()


@njit(nogil=True, cache=True)
def gil_word(gil):
    """gil[0] read with the GIL released by this call (to check ``cores._gil_word``'s find)."""
    return _load(gil, 0) & 0xFFFFFFFF


@njit(nogil=True, cache=True)
def _until_free(gil, start, ticks, free):
    """Spin until gil[0]'s low 32 bits have read 0 for ``free`` cycles in a row, or until ``ticks``
    cycles after ``start`` have passed."""
    since = _cycle_counter()
    while True:
        now = _cycle_counter()
        if _load(gil, 0) & 0xFFFFFFFF != 0:
            since = now
        elif now - since >= free:
            return
        if now - start > ticks:
            return
        _relax()


@njit(nogil=True, cache=True)
def spin_until(state, index, target, ticks, gap, stop, done, done_value, gil, free):
    """Wait, with the GIL released, until state[index] >= target.

    Returns 1 when it is, 0 after ``ticks`` cycles, -1 when state[stop] != 0 or when two
    loop iterations lie more than ``gap`` cycles apart: the thread lost its CPU to another
    one, the machine has more runnable threads than cores, and a spinning thread there
    only takes time from the others. First, when ``done_value`` > 0, store it in
    state[done] (a finished job announced once the GIL is free for whoever waits on it).

    ``gil``: an int64 array whose first word's low 32 bits are the interpreter's "GIL held"
    flag (``cores._gil_word``), or a zero. Once the target is reached the thread goes on
    spinning, within the same bound, until the flag has read 0 for ``free`` cycles (a holder
    that let the GIL go for a short call only is back before then): returning to Python then takes
    the GIL at once, where a thread that asks while another holds it sleeps on a condition
    variable and pays a wake-up of its CPU (~20 us here) when it is released.
    """
    if done_value > 0:
        state[done] = done_value
    start = _cycle_counter()
    if _load(state, index) >= target:
        _until_free(gil, start, ticks, free)
        return 1
    last = start
    while True:
        _relax()
        if _load(state, index) >= target:
            _until_free(gil, start, ticks, free)
            return 1
        if _load(state, stop) != 0:
            return -1
        now = _cycle_counter()
        if now - last > gap:
            return -1
        if now - start > ticks:
            return 0
        last = now
