"""Every op call of a workload with its inputs' memory layouts: where slow paths hide.

Wraps ``forward`` and ``backward`` of every ``Function`` subclass and records, per call,
the arrays' shapes, dtypes and layouts ("C": C-contiguous; else the axis order by
decreasing stride, e.g. "1023" for the direct convolution's (C, N, H, W) memory in an
(N, C, H, W) array, with "~" when the array has gaps in that order) and the output's
layout, with the call's self time. Rows group calls of the same op, phase, shapes and
layouts, so an op seen with two layouts shows as two rows. ``--numpy-calls`` also counts
the NumPy functions each op calls (sys.setprofile: slow, a separate run from the timings)
that copy or allocate (ascontiguousarray, copy, where, astype, empty, zeros, ...).

Usage:
    python benchmarks/op_layouts.py [--model lenet5] [--batch 64] [--train | --optimized | --functional]
        [--steps 10] [--threads N] [--clock wall|cpu] [--serial] [--micro R] [--light] [--numpy-calls]

``--functional``: LeNet-5 as ``lenet5_vs_torch.py`` trains it (functional model, SGD with
momentum in NumPy), instead of the zoo model (``dispatch_ab.model_call``, no optimizer).
``--serial``: the parallel regions are traced (``cores.tracing``) and each row gets the wall
time of its outermost calls during which no region was open (the time the second core
cannot help with as the code stands), the run its serial total.
``--micro R``: each row's first call is copied (a run of its own) and timed alone R times on
the same arrays (median): an op much slower in the model than alone pays for something the
model does around it (cold caches, memory, a helper's spin), not for its own path.
The "median us per call" column is robust to the spikes of a shared machine; the first
column sums every call. Measured on Dec 4 (LeNet-5, ResNet-18 b1, VGG-11 training): the CPU
clock of one thread showed in-model times 2-4x the alone times for small ops that the wall
clock's medians did not; prefer ``--clock wall`` with enough ``--steps``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import functools
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this tree's cnnkit
sys.path.insert(0, str(Path(__file__).resolve().parent))
from dispatch_ab import MODELS, model_call  # noqa: E402
from timing import CLOCKS, set_threads, subclasses  # noqa: E402

import cnnkit  # noqa: E402
from cnnkit.backend import cores  # noqa: E402
from cnnkit.function import Function  # noqa: E402

NOW = time.perf_counter
RECORDING = False
MICRO = False
LIGHT = False
ROWS: dict = collections.defaultdict(lambda: [0, 0.0, collections.Counter(), []])  # key -> calls, seconds, numpy calls, times
SPANS: dict = collections.defaultdict(list)  # key -> (start_ns, end_ns) of outermost calls: --serial
STACK: list = []  # [_, start, child time, numpy calls] of the ops being timed (an op may call another)
SAMPLES: dict = {}  # key -> (op copy before the call, method, copied args): --micro's standalone calls
NUMPY_NAMES = {"ascontiguousarray", "asfortranarray", "copy", "where", "astype", "empty", "zeros", "ones",
               "empty_like", "zeros_like", "ones_like", "full", "full_like", "copyto", "concatenate",
               "pad", "require", "array", "asarray", "transpose", "reshape", "sum", "add", "multiply",
               "maximum", "einsum", "matmul", "dot", "tensordot", "broadcast_to"}


def layout(a) -> str:
    """"C", "F" or the axis order by decreasing stride ("~" when not dense in that order)."""
    if not isinstance(a, np.ndarray):
        return type(a).__name__
    if a.ndim <= 1 or a.flags.c_contiguous:
        return "C"
    if a.flags.f_contiguous:
        return "F"
    order = sorted(range(a.ndim), key=lambda k: (-abs(a.strides[k]), k))
    size = a.itemsize
    dense = True
    for k in reversed(order):
        if a.shape[k] != 1 and a.strides[k] != size:
            dense = False
        size *= a.shape[k]
    return "".join(map(str, order)) + ("" if dense else "~")


def _copy(a):
    """A copy of ``a`` in the same memory order (dense), other values as they are."""
    if not isinstance(a, np.ndarray):
        return a
    out = np.empty_like(a, order="K")
    np.copyto(out, a)
    return out


def describe(arrays) -> str:
    parts = []
    for a in arrays:
        if isinstance(a, np.ndarray):
            parts.append(f"{a.dtype.str[1:]}{list(a.shape)}{layout(a)}")
        elif a is None:
            parts.append("None")
        else:
            parts.append(type(a).__name__)
    return " ".join(parts)


def _profile(frame, event, arg):
    if event == "c_call" and STACK:
        name = getattr(arg, "__name__", "")
        if name in NUMPY_NAMES:
            STACK[-1][3][name] += 1


def _wrap(cls, method: str) -> None:
    original = cls.__dict__[method]

    @functools.wraps(original)
    def recorded(self, *args):
        if not RECORDING:
            return original(self, *args)
        if LIGHT:
            inputs = ""
        elif method == "forward":
            inputs = describe(args)
        else:
            saved = getattr(self, "_layout_inputs", "?")
            inputs = f"gy {describe(args)} | fwd in {saved}"
        before = copy.copy(self) if MICRO else None
        span_start = time.perf_counter_ns()
        frame = [None, NOW(), 0.0, collections.Counter()]
        STACK.append(frame)
        try:
            result = original(self, *args)
        finally:
            elapsed = NOW() - frame[1]
            STACK.pop()
            if STACK:
                STACK[-1][2] += elapsed
        if method == "forward" and not LIGHT:
            self._layout_inputs = describe(args)
        out = "" if LIGHT else describe(result if isinstance(result, tuple) else (result,))
        key = (type(self).__name__, method, inputs, out)
        row = ROWS[key]
        if MICRO and key not in SAMPLES:  # copies: holding the arrays would keep pooled blocks out of reuse
            SAMPLES[key] = (before, method, tuple(_copy(a) for a in args))
        row[0] += 1
        row[1] += elapsed - frame[2]
        row[3].append(elapsed - frame[2])
        row[2].update(frame[3])
        if not STACK:  # an outermost op: its wall-clock span, for --serial
            SPANS[key].append((span_start, time.perf_counter_ns()))
        return result

    setattr(cls, method, recorded)


def instrument() -> None:
    for cls in subclasses(Function):
        for method in ("forward", "backward"):
            if method in cls.__dict__:
                _wrap(cls, method)


def _serial(events, start_ns: int, end_ns: int) -> dict:
    """Nanoseconds with no parallel region open: of the whole run ("all") and of each row's outermost calls."""
    regions = sorted((e[3], e[4]) for e in events if e[0] == "region")

    def uncovered(a: int, b: int) -> int:
        return (b - a) - sum(max(0, min(b, r1) - max(a, r0)) for r0, r1 in regions)

    out = {key: sum(uncovered(a, b) for a, b in spans) for key, spans in SPANS.items()}
    out["all"] = uncovered(start_ns, end_ns)
    return out


def standalone(key, repeats: int) -> float:
    """Median time of the op call recorded under ``key``, run alone on the same arrays."""
    before, method, args = SAMPLES[key]
    times = []
    for _ in range(repeats):
        op = copy.copy(before)
        start = NOW()
        getattr(op, method)(*args)
        times.append(NOW() - start)
    return sorted(times)[len(times) // 2]


def functional_lenet5(batch: int, steps: int):
    """``steps`` SGD steps of lenet5_vs_torch.py's functional LeNet-5 on random MNIST-sized data."""
    import lenet5_vs_torch as bench

    rng = np.random.default_rng(0)
    trainer = bench.CnnkitTrainer(bench.init_params(rng))
    x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    t = rng.integers(0, 10, batch)

    def run():
        for _ in range(steps):
            trainer.step(x, t)
    return run


def main() -> None:
    global NOW, RECORDING, MICRO, LIGHT
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="lenet5")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--optimized", action="store_true")
    parser.add_argument("--functional", action="store_true", help="lenet5_vs_torch.py's functional LeNet-5 + SGD")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall")
    parser.add_argument("--numpy-calls", action="store_true")
    parser.add_argument("--light", action="store_true",
                        help="no layouts (rows by op and phase): the least overhead, for the outside-ops figure")
    parser.add_argument("--top", type=int, default=60)
    parser.add_argument("--serial", action="store_true",
                        help="trace the parallel regions (cores.tracing): each row's wall time with no region open")
    parser.add_argument("--micro", type=int, default=0, metavar="R",
                        help="also time each row's first call alone, R times, same arrays (median)")
    args = parser.parse_args()
    NOW = CLOCKS[args.clock]
    set_threads(args.threads)
    if args.functional:
        run = functional_lenet5(args.batch, args.steps)
    else:
        run = model_call(args.model, args.batch, args.train, args.optimized, args.steps)
    run()
    run()
    instrument()
    LIGHT = args.light
    RECORDING = True
    if args.numpy_calls:
        sys.setprofile(_profile)
    with cores.tracing() if args.serial else contextlib.nullcontext([]) as events:
        start, start_ns = NOW(), time.perf_counter_ns()
        run()
        wall, end_ns = NOW() - start, time.perf_counter_ns()
    sys.setprofile(None)
    serial = _serial(events, start_ns, end_ns) if args.serial else {}
    RECORDING = False
    alone = {}
    if args.micro > 0:  # a run of its own that keeps a copy of each row's first call, then those calls alone
        saved = {key: list(row) for key, row in ROWS.items()}
        MICRO = RECORDING = True
        run()
        MICRO = RECORDING = False
        ROWS.clear()
        ROWS.update(saved)
        alone = {key: standalone(key, args.micro) for key in SAMPLES}
    inside = sum(r[1] for r in ROWS.values())
    median_inside = sum(sorted(r[3])[len(r[3]) // 2] * r[0] for r in ROWS.values())
    calls = sum(r[0] for r in ROWS.values())
    what = "functional + SGD" if args.functional else ("optimized" if args.optimized else "")
    print(f"{args.model} {what} {'train' if args.train or args.functional else 'infer'} b{args.batch}: "
          f"{wall / args.steps * 1e3:.2f} ms per step, {calls / args.steps:.0f} op calls per step, "
          f"outside ops {(wall - inside) / args.steps * 1e3:.2f} ms per step; ops by medians "
          f"{median_inside / args.steps * 1e3:.2f} ms per step; "
          f"{cnnkit.config.get_num_threads()} threads, {args.clock} clock, load {os.getloadavg()[0]:.2f}")
    if serial:
        outside = serial["all"] - sum(v for k, v in serial.items() if k != "all")
        print(f"serial (no parallel region open): {serial['all'] / args.steps / 1e3:.0f} us per step, "
              f"{outside / args.steps / 1e3:.0f} of it outside ops")
    print("| us per step | median us per call | calls per step | alone us per call | serial us per step "
          "| op.phase | inputs | output | numpy calls |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, method, inputs, out), (n, t, counts, times) in sorted(ROWS.items(), key=lambda kv: -kv[1][1])[: args.top]:
        numpy_calls = " ".join(f"{k}:{v // n}" for k, v in counts.most_common())
        solo = f"{alone[key] * 1e6:.0f}" if (key := (name, method, inputs, out)) in alone else ""
        median = sorted(times)[len(times) // 2]
        alone_serial = f"{serial[key] / args.steps / 1e3:.0f}" if key in serial else ""
        print(f"| {t / args.steps * 1e6:.0f} | {median * 1e6:.0f} | {n / args.steps:g} | {solo} | {alone_serial} | {name}.{method} | {inputs} | {out} | {numpy_calls} |")


if __name__ == "__main__":
    main()
