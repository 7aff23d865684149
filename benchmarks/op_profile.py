"""Where a cnnkit workload's time goes: self time per op algorithm, forward and backward.

Wraps the ``forward`` and ``backward`` of every ``Function`` subclass (in this process
only) with a timer, runs a workload of ``cnn_vs_torch.py`` a few times (cnnkit's side
only) and prints each algorithm's share of the wall time, with the convolutions also
split by layer shape. What no op accounts for (the optimizer, the graph walk, Python
glue) is the "outside ops" row.

Usage:
    python benchmarks/op_profile.py WORKLOAD [--repeats 3] [--threads N] [--shapes] [--clock wall|cpu]

On a loaded machine use ``--threads 1 --clock cpu`` (the process's CPU time).
"""

from __future__ import annotations

import argparse
import collections
import functools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import CLOCKS, add_timing_options, set_threads, subclasses  # noqa: E402

import cnnkit  # noqa: E402
from cnnkit.function import Function  # noqa: E402

TIMES: collections.Counter = collections.Counter()
CALLS: collections.Counter = collections.Counter()
SHAPES: bool = False
NOW = time.perf_counter  # --clock cpu: time.process_time


def _key(fn_self, phase: str, arrays) -> str:
    name = type(fn_self).__name__
    if SHAPES and name.startswith("Conv2d") and len(arrays) >= 2 and hasattr(arrays[0], "shape"):
        x, w = arrays[0], arrays[1]
        return f"{name}.{phase} x{tuple(x.shape)} w{tuple(w.shape)}"
    return f"{name}.{phase}"


def _wrap(cls, method: str) -> None:
    original = cls.__dict__[method]

    @functools.wraps(original)
    def timed(self, *args):
        if method == "forward":
            key = _key(self, "forward", args)
            self._profile_key = key.replace(".forward", ".backward", 1)
        else:
            key = getattr(self, "_profile_key", f"{type(self).__name__}.backward")
        start = NOW()
        try:
            return original(self, *args)
        finally:
            TIMES[key] += NOW() - start
            CALLS[key] += 1

    setattr(cls, method, timed)


def instrument() -> None:
    for cls in subclasses(Function):
        for method in ("forward", "backward"):
            if method in cls.__dict__:
                _wrap(cls, method)


def main() -> None:
    global SHAPES
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shapes", action="store_true", help="split convolutions by layer shape")
    add_timing_options(parser)
    args = parser.parse_args()
    SHAPES = args.shapes
    global NOW
    NOW = CLOCKS[args.clock]
    from cnn_vs_torch import WORKLOADS

    set_threads(args.threads)
    ours = WORKLOADS[args.workload]()[0]
    ours()  # warm-up: compilation, scratch buffers
    instrument()
    # release() clears the instance dict, so keys saved in forward for backward would
    # vanish only after backward has read them: fine.
    start = NOW()
    for _ in range(args.repeats):
        ours()
    wall = NOW() - start
    inside = sum(TIMES.values())
    import os

    print(f"{args.workload}: {wall / args.repeats * 1e3:.1f} ms per call, {args.repeats} calls, "
          f"{cnnkit.config.get_num_threads()} threads, {args.clock} clock, load {os.getloadavg()[0]:.2f}")
    print("| op.phase | ms per call | share | calls per call |")
    print("|---|---|---|---|")
    for key, t in TIMES.most_common():
        print(f"| {key} | {t / args.repeats * 1e3:.1f} | {t / wall:.1%} | {CALLS[key] // args.repeats} |")
    print(f"| outside ops | {(wall - inside) / args.repeats * 1e3:.1f} | {(wall - inside) / wall:.1%} | |")


if __name__ == "__main__":
    main()
