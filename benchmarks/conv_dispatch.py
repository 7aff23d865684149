"""Every convolution algorithm on each layer shape: where the dispatch thresholds go.

For each layer shape, times conv2d (forward, or forward + both gradients with
``--backward``) through every algorithm that handles it, called directly
(``Conv2dDirectOp``, ``Conv2dGemmOp``, ``Conv2dWinogradOp`` with m = 2 and 4,
``Conv2dIm2colOp``), in alternating order with a pause before each call, and prints the
median time of each and the winner. ``backend.dispatch``'s thresholds
(``DIRECT_CONV_MAX_MACS``, ``WINOGRAD_MIN_CHANNELS``, ``WINOGRAD4_MIN_SIZE``,
``WINOGRAD_MIN_TILES``) are set from these tables (docs/performance.md).

Usage:
    python benchmarks/conv_dispatch.py [--backward] [--repeats 7] [--threads N] [--shapes N,C,F,H,K ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this tree's cnnkit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import CLOCKS, add_timing_options, blas_note, set_threads  # noqa: E402

import cnnkit  # noqa: E402
from cnnkit.functional.conv import Conv2dDirectOp, Conv2dGemmOp, Conv2dWinogradOp  # noqa: E402

# (N, C, F, H, K): LeNet-5; the CIFAR nets (batch 128); ResNet-18 (batch 8 and 1) and
# VGG-16 (batch 4) at 224x224. Padding keeps the size (K // 2).
SHAPES = [
    (64, 1, 6, 28, 5), (64, 6, 16, 14, 5),
    (128, 3, 16, 32, 3), (128, 16, 16, 32, 3), (128, 32, 32, 16, 3), (128, 64, 64, 8, 3),
    (128, 64, 64, 32, 3), (128, 128, 128, 16, 3), (128, 256, 256, 8, 3), (128, 512, 512, 4, 3), (128, 512, 512, 2, 3),
    (8, 64, 64, 56, 3), (8, 128, 128, 28, 3), (8, 256, 256, 14, 3), (8, 512, 512, 7, 3),
    (1, 64, 64, 56, 3), (1, 128, 128, 28, 3), (1, 256, 256, 14, 3), (1, 512, 512, 7, 3),
    (4, 64, 64, 224, 3), (4, 128, 128, 112, 3), (4, 256, 256, 56, 3), (4, 512, 512, 28, 3), (4, 512, 512, 14, 3),
]


def algorithms(K: int, macs: int):
    """The algorithms that handle a stride-1 K x K convolution."""
    found = {"gemm": lambda p: Conv2dGemmOp((1, 1), p, (1, 1), 1)}
    if K == 3:
        found["winograd4"] = lambda p: Conv2dWinogradOp((1, 1), p, (1, 1), 1, m=4)
        found["winograd2"] = lambda p: Conv2dWinogradOp((1, 1), p, (1, 1), 1, m=2)
    if K > 1 and macs <= 2**16:
        found["direct"] = lambda p: Conv2dDirectOp((1, 1), p, (1, 1), 1)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backward", action="store_true", help="time forward + both gradients")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--shapes", nargs="+", default=None, help="N,C,F,H,K ...")
    add_timing_options(parser)
    args = parser.parse_args()
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes else SHAPES
    set_threads(args.threads)
    now = CLOCKS[args.clock]
    rng = np.random.default_rng(0)
    print(f"{'forward + backward' if args.backward else 'forward'}, float32, {cnnkit.config.get_num_threads()} "
          f"threads, {args.repeats} repeats, median ms ({args.clock} clock); load average {os.getloadavg()[0]:.2f}")
    print(blas_note())
    print("| N | C | F | H | K | " + " | ".join(("gemm", "winograd4", "winograd2", "direct")) + " | fastest | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for N, C, Fo, H, K in shapes:
        pads = (K // 2,) * 4
        x = rng.standard_normal((N, C, H, H)).astype(np.float32)
        w = (rng.standard_normal((Fo, C, K, K)) / np.sqrt(C * K * K)).astype(np.float32)
        gy = rng.standard_normal((N, Fo, H, H)).astype(np.float32)
        algs = algorithms(K, Fo * C * K * K)

        def run(name, algs=algs, x=x, w=w, gy=gy, pads=pads):
            if not args.backward:
                with cnnkit.no_grad():
                    return algs[name](pads)(x, w)
            xs, ws = cnnkit.Tensor(x, requires_grad=True), cnnkit.Tensor(w, requires_grad=True)
            algs[name](pads)(xs, ws).backward(gy)

        times = {name: [] for name in algs}
        for name in algs:  # warm-up (and compilation)
            run(name)
        load = os.getloadavg()[0]
        for r in range(args.repeats):
            for name in list(algs) if r % 2 == 0 else list(algs)[::-1]:
                time.sleep(0.05)
                start = now()
                run(name)
                times[name].append(now() - start)
        med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        cells = [f"{med[n]:.2f}" if n in med else "" for n in ("gemm", "winograd4", "winograd2", "direct")]
        print(f"| {N} | {C} | {Fo} | {H} | {K} | " + " | ".join(cells) + f" | {min(med, key=med.get)} | {load:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
