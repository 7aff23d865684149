"""cnnkit's two-thread time per layer, modelled on one core: for a shared machine.

On a machine whose other core is taken by other jobs, a two-thread wall-clock time says
more about the other jobs than about cnnkit. This script runs a model with cnnkit's
dispatch set for N threads (every grain and split as with N threads) but runs every chunk
of every parallel region on the calling thread, timing each with the process's CPU clock;
then it schedules the chunks on N virtual threads as ``cores.parallel_for`` hands them out
(the next chunk to the first thread free) and adds ``WAKE_S`` per region (a helper's
wake-up, ~20-70 us measured here). The modelled time of a layer is its CPU time minus what
the other threads would have taken off its regions. Not modelled: two cores sharing the
memory bus, and a core reading what the other wrote (both make a split of a memory-bound
phase gain less than modelled); a quiet-machine wall clock (``--quiet`` of the other
benchmarks) is the measurement, this is the estimate when there is none.

Columns: each leaf layer's CPU time (all its work on one core), its modelled N-thread time,
and their ratio (the speed-up the dispatch's splits give that layer).

Usage:
    python benchmarks/two_thread_model.py [--model resnet18] [--batch 1] [--optimized] [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this tree's cnnkit
sys.path.insert(0, str(Path(__file__).resolve().parent))
from layers_vs_torch import LayerClock, record_algorithms  # noqa: E402
from timing import load_average  # noqa: E402

import cnnkit  # noqa: E402
import cnnkit.surgery  # noqa: E402
from cnnkit.backend import cores, dispatch  # noqa: E402
from cnnkit.backend import kernels as kernel_package  # noqa: E402

WAKE_S = 30e-6
NOW = time.process_time


class Model:
    """What the virtual threads would have saved, accumulated over regions."""

    def __init__(self, threads: int):
        self.threads, self.saved, self.regions, self.depth = threads, 0.0, 0, 0

    def parallel_for(self, fn, count: int, *args, grain: int = 1, per_thread: int = 4, piece_grain: bool = False) -> None:
        """``cores.parallel_for``'s chunks (the same ones), run here one after the other."""
        threads = min(self.threads, count // max(grain, 1))
        if threads <= 1 or self.depth:
            fn(0, count, *args)
            return
        pieces = min(count // max(grain, 1) if piece_grain else count, per_thread * threads)
        bounds = cores.chunk_bounds(count, pieces)
        free = [0.0] * threads
        self.depth += 1
        try:
            start = NOW()
            for i0, i1 in zip(bounds[:-1], bounds[1:]):
                t = NOW()
                fn(i0, i1, *args)
                free[free.index(min(free))] += NOW() - t
            elapsed = NOW() - start
        finally:
            self.depth -= 1
        self.saved += max(0.0, elapsed - max(free) - WAKE_S)
        self.regions += 1


def install(model: Model) -> None:
    """Route every parallel_for of cnnkit's kernels and products through the model."""
    import importlib
    import pkgutil

    cores.parallel_for = model.parallel_for
    for info in pkgutil.iter_modules(kernel_package.__path__):
        module = importlib.import_module(f"{kernel_package.__name__}.{info.name}")
        if hasattr(module, "parallel_for"):
            module.parallel_for = model.parallel_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--optimized", action="store_true", help="the model optimized for inference")
    parser.add_argument("--threads", type=int, default=2, help="threads modelled")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="dispatch thresholds to change")
    args = parser.parse_args()
    for item in args.set:
        name, _, value = item.partition("=")
        setattr(dispatch, name, type(getattr(dispatch, name))(float(value)))
    model = cnnkit.models.get_model(args.model, generator=np.random.default_rng(0))
    model.eval()
    if args.optimized:
        model = cnnkit.surgery.optimize_for_inference(model, input_shape=(3, args.size, args.size))
    x = cnnkit.Tensor(np.random.default_rng(1).standard_normal((args.batch, 3, args.size, args.size))
                      .astype(np.float32))
    virtual = Model(args.threads)
    install(virtual)
    record_algorithms()
    clock = LayerClock(model, NOW, lambda m: m.named_modules(), also=lambda: virtual.saved)
    modelled = collections.defaultdict(list)
    cpu = collections.defaultdict(list)
    whole, whole_cpu = [], []
    with cnnkit.config.num_threads(args.threads), cnnkit.no_grad():
        for r in range(args.repeats + 2):  # two warm-up passes: compilation, scratch, prepacked filters
            clock.begin_pass()
            saved0, start = virtual.saved, NOW()
            model(x)
            elapsed = NOW() - start
            if r < 2:
                continue
            whole_cpu.append(elapsed)
            whole.append(elapsed - (virtual.saved - saved0))
            for key, t in clock.times.items():
                cpu[key].append(t)
                modelled[key].append(t - clock.also_times[key])
    print(f"cnnkit {args.model} inference batch {args.batch}{' (optimized for inference)' if args.optimized else ''}: "
          f"one core, CPU clock, {args.threads} threads modelled ({WAKE_S * 1e6:.0f} us per region), "
          f"{args.repeats} passes, load {load_average()}")
    print(f"| layer | input | algorithm | CPU ms (one core) | modelled ms ({args.threads} threads) | speed-up |")
    print("|---|---|---|---|---|---|")
    for key in clock.shapes:
        if key not in cpu:
            continue
        c, m = statistics.median(cpu[key]), statistics.median(modelled[key])
        shape = "x".join(map(str, clock.shapes[key][0][1:]))
        print(f"| {key.replace('#1', '')} | {shape} | {clock.algorithm.get(key, '')} | {c * 1e3:.3f} | {m * 1e3:.3f} "
              f"| {c / m:.2f}x |")
    c, m = statistics.median(whole_cpu), statistics.median(whole)
    print(f"| **whole pass** | | | {c * 1e3:.2f} | {m * 1e3:.2f} | {c / m:.2f}x |")


if __name__ == "__main__":
    main()
