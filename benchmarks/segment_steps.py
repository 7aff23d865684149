"""cnnkit's step times within lenet5_vs_torch.py's training segments, by position in the segment.

Runs the benchmark's own training order (its trainers, data, segments and who-goes-first
alternation: cnnkit, PyTorch | PyTorch, cnnkit | ...) and times each cnnkit step on its own.
A cnnkit segment starts right after PyTorch's segment (odd segments) or right after cnnkit's
own (even ones, from the third on), and PyTorch's the other way round (its steps are timed
one by one too); the table gives the median step time by the step's index in its segment
for each framework and kind, so the first steps of a segment can be set against the steady
state. Beside it: the kernel pool's state seen after each step (spin backoff active, helpers
pinned, other processes busy: ``backend/cores.py``), and the CPU time the process's other
threads (not the calling thread, not cnnkit's helpers: PyTorch's OpenMP workers) burnt from
the end of PyTorch's segment to the end of cnnkit's first three steps (``/proc/self/task/*/schedstat``).
Nothing here changes how lenet5_vs_torch.py times the two frameworks.

Usage:
    python benchmarks/segment_steps.py [--batch 64] [--segments 10] [--epochs 1] [--threads 2]

Measured: docs/performance.md, "LeNet-5 b64: the first steps of a segment (Dec 6)".
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this tree's cnnkit
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lenet5_vs_torch as bench  # noqa: E402
from timing import set_threads  # noqa: E402

from cnnkit.backend import cores  # noqa: E402

BANDS = ((0, 1), (1, 2), (2, 3), (3, 6), (6, 25), (25, 50), (50, 10**9))


def thread_cpu_ns() -> dict[int, int]:
    """Each thread of this process: its CPU time so far (ns, schedstat's first field)."""
    out = {}
    for path in glob.glob("/proc/self/task/*/schedstat"):
        try:
            with open(path) as f:
                out[int(path.split("/")[4])] = int(f.read().split()[0])
        except (OSError, ValueError):
            continue
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--segments", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads, torch)
    batch = args.batch

    images, labels = bench.load_mnist("train")
    x = ((images.astype(np.float32) / 255 - bench.MEAN) / bench.STD)[:, None]
    t = labels.astype(np.int64)
    rng = np.random.default_rng(args.seed)
    params = bench.init_params(rng)
    ours, theirs = bench.CnnkitTrainer(params), bench.TorchTrainer(params)
    warm = rng.permutation(len(x))[: batch * 5]
    for trainer in (ours, theirs):          # the benchmark's warm-up
        bench.run_segment(trainer, x, t, warm, batch)

    me = threading.get_native_id()
    steps: list[tuple[str, int, float]] = []          # (what ran before, index in segment, seconds)
    torch_steps: list[tuple[str, int, float]] = []    # the same for PyTorch's steps
    state = {"n": 0, "backoff": 0, "unpinned": 0, "others_busy": 0}
    spin_ms: list[float] = []                         # other threads' CPU after PyTorch's segments
    seg_times = {"cnnkit": 0.0, "torch": 0.0}

    def timed_steps(trainer, seg, before, out, name):
        """Run a segment's steps on ``trainer``, timing each into ``out``; yield (k, start)."""
        for k, i in enumerate(range(0, len(seg) - batch + 1, batch)):
            idx = seg[i : i + batch]
            start = time.perf_counter()
            trainer.step(x[idx], t[idx])
            end = time.perf_counter()
            out.append((before, k, end - start))
            seg_times[name] += end - start
            yield k, start

    def cnnkit_segment(seg, before, cpu0):
        for k, start in timed_steps(ours, seg, before, steps, "cnnkit"):
            state["n"] += 1
            state["backoff"] += cores._helpers.calm_after > start
            state["unpinned"] += not cores._helpers.pinned
            state["others_busy"] += bool(cores._others["busy"])
            if k == 2 and cpu0 is not None:
                cpu1, skip = thread_cpu_ns(), {me, *cores._helpers.tids}
                spin_ms.append(sum(v - cpu0.get(tid, 0) for tid, v in cpu1.items() if tid not in skip) / 1e6)

    def torch_segment(seg, before):
        for _ in timed_steps(theirs, seg, before, torch_steps, "torch"):
            pass
        return thread_cpu_ns()

    before = None
    for _ in range(args.epochs):
        order = rng.permutation(len(x))
        bounds = np.linspace(0, len(order) // batch, args.segments + 1).astype(int) * batch
        for s in range(args.segments):
            seg = order[bounds[s] : bounds[s + 1]]
            if s % 2 == 0:                    # the benchmark's order: cnnkit first in even segments
                cnnkit_segment(seg, before, None)
                torch_segment(seg, "cnnkit")
                before = "PyTorch"
            else:
                cpu0 = torch_segment(seg, before)
                cnnkit_segment(seg, "PyTorch", cpu0)
                before = "cnnkit"

    omp = {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "GOMP_"))}
    print(f"batch {batch}, {args.threads} threads; environment {omp or '{}'}; load average {os.getloadavg()[0]:.2f}")
    print(f"steps {state['n']}: spin backoff active after {state['backoff']}, helpers unpinned after "
          f"{state['unpinned']}, other processes busy after {state['others_busy']}")
    print("| steps, segment | " + " | ".join(f"step {lo}" if hi == lo + 1 else f"steps {lo}-{hi - 1}" if hi < 10**9
                                         else f"steps {lo}+" for lo, hi in BANDS) + " | segments |")
    print("|---" * (len(BANDS) + 2) + "|")
    for who, rows in (("cnnkit", steps), ("PyTorch", torch_steps)):
        for kind in ("PyTorch", "cnnkit"):
            cells = []
            for lo, hi in BANDS:
                v = [d for b, k, d in rows if b == kind and lo <= k < hi]
                cells.append(f"{statistics.median(v) * 1e3:.3f} ms" if v else "-")
            count = sum(1 for b, k, _ in rows if b == kind and k == 0)
            print(f"| {who}'s, after {kind}'s | " + " | ".join(cells) + f" | {count} |")
    if spin_ms:
        print(f"other threads' CPU from the end of PyTorch's segment to the end of cnnkit's step 2: "
              f"median {statistics.median(spin_ms):.1f} ms (min {min(spin_ms):.1f}, max {max(spin_ms):.1f})")
    print(f"training time: cnnkit {seg_times['cnnkit']:.3f} s, PyTorch {seg_times['torch']:.3f} s, "
          f"ratio {seg_times['torch'] / seg_times['cnnkit']:.2f}x")


if __name__ == "__main__":
    main()
