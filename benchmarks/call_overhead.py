"""Per-call fixed cost of module calls under no_grad, two revisions of cnnkit side by side.

Both revisions are imported as copies (``cnnkit_versions.import_revision``; pass the same
revision twice for an A/A) and each call is timed in blocks of ``--calls`` calls, the blocks
alternating between the two copies; the figure per call is the median over blocks of
(first revision's block median) / (second's): above 1, the second is faster. One thread,
wall clock, on a 1x64x4x4 input, so the kernels' work is next to nothing.

Usage:
    python benchmarks/call_overhead.py OLD_REV NEW_REV [--blocks 20] [--calls 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cnnkit_versions import import_revision  # noqa: E402


def calls_of(ck) -> dict:
    """name -> a no-argument call of one module on a small input, for the copy ``ck``."""
    ck.config.set_num_threads(1)
    x = ck.Tensor(np.ones((1, 64, 4, 4), np.float32))
    identity, relu = ck.nn.Identity(), ck.nn.ReLU()
    seq = ck.nn.Sequential(ck.nn.Identity(), ck.nn.Identity(), ck.nn.Identity())
    conv1 = ck.nn.Conv2d(64, 64, 1, 1, 0, bias=False)
    conv3 = ck.nn.Conv2d(64, 64, 3, 1, 1, bias=False)
    return {"identity": lambda: identity(x), "sequential3": lambda: seq(x), "relu": lambda: relu(x),
            "conv1x1": lambda: conv1(x), "conv3x3": lambda: conv3(x), "add": lambda: x + x}


def block(fn, calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    copies = {"old": import_revision(args.old), "new": import_revision(args.new)}
    calls = {name: calls_of(ck) for name, ck in copies.items()}
    ratios: dict[str, list[float]] = {k: [] for k in calls["old"]}
    times: dict[tuple[str, str], list[float]] = {}
    for i in range(args.blocks):
        for key in ratios:
            t = {}
            for name in ("old", "new") if i % 2 else ("new", "old"):
                with copies[name].no_grad():
                    for _ in range(50):
                        calls[name][key]()
                    t[name] = block(calls[name][key], args.calls)
                times.setdefault((key, name), []).append(t[name])
            ratios[key].append(t["old"] / t["new"])
    print(f"{args.old} (old) against {args.new} (new), one thread, {args.blocks} blocks of {args.calls} calls")
    print("| call | old us | new us | old/new (median of blocks) |\n|---|---|---|---|")
    for key, r in ratios.items():
        old, new = (statistics.median(times[(key, n)]) / 1e3 for n in ("old", "new"))
        print(f"| {key} | {old:.2f} | {new:.2f} | **{statistics.median(r):.3f}x** |")


if __name__ == "__main__":
    main()
