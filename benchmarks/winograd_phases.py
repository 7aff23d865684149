"""Where a Winograd convolution's forward time goes: filter transform, input transform, products, output transform.

Runs ``backend/kernels/winograd.py``'s forward phase by phase on one thread (the kernels
called over their whole range, the products with one BLAS thread), CPU time of the
process, median of ``--repeats`` runs of each phase, on ResNet-18's 3x3 layers (64
channels at 56x56 and 512 at 7x7, batch 1 and 8, by default). Prints each phase's time and
share, the products' GFLOP/s (their own multiply-adds) and the whole forward's GFLOP/s
counted as a direct convolution (9 multiply-adds per tap).

Usage:
    python benchmarks/winograd_phases.py [--repeats 7] [--shapes N,C,F,H ...]
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
from timing import blas_note, set_threads  # noqa: E402

from cnnkit.backend.cores import blas_threads  # noqa: E402
from cnnkit.backend.kernels import as_planes, winograd  # noqa: E402

# ResNet-18 at 224x224: the 64-channel 56x56 and 512-channel 7x7 layers, batch 8 and 1.
SHAPES = [(8, 64, 64, 56), (8, 512, 512, 7), (1, 64, 64, 56), (1, 512, 512, 7)]


def phases(N: int, C: int, F: int, H: int, m: int, rng):
    """{phase: callable} running one forward of a 3x3 padding-1 convolution on one thread."""
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    w = (rng.standard_normal((F, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)
    a = m + 2
    TH = TW = -(-H // m)
    T = N * TH * TW
    planes, sn, sc = as_planes(x)
    V = np.empty((a * a, C, T), np.float32)
    M = np.empty((a * a, F, T), np.float32)
    y = np.empty((F, N, H, H), np.float32)
    bias = np.zeros(F, np.float32)
    U = winograd.winograd_filters(w, m)

    def filters():
        winograd.winograd_filters(w, m)

    def input_transform():
        winograd.winograd_input(0, C, planes, sn, sc, N, 0, 1, 1, 0, TH, TW, m, V)

    def products():
        np.matmul(U, V, out=M)

    def output_transform():
        winograd.winograd_output(0, F, M, N, 0, 0, TH, TW, m, bias, y)

    run = {"filter transform": filters, "input transform": input_transform, "products": products,
           "output transform": output_transform}
    run["whole forward"] = lambda: winograd.conv2d_winograd(x, w, None, (1, 1, 1, 1), m)
    return run, 2 * a * a * F * C * T, 2 * 9 * F * C * N * H * H


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--shapes", nargs="+", default=None, help="N,C,F,H ...")
    args = parser.parse_args()
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes else SHAPES
    set_threads(1)
    rng = np.random.default_rng(0)
    print(f"Winograd forward by phase, float32, 1 thread, CPU time, median of {args.repeats}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(blas_note())
    print("| N | C | F | H | m | filter transform | input transform | products | output transform | "
          "sum of phases | whole forward | products GFLOP/s | direct-equivalent GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    with blas_threads(1):
        for N, C, F, H in shapes:
            for m in (2, 4):
                run, product_flops, direct_flops = phases(N, C, F, H, m, rng)
                for fn in run.values():  # warm-up, compilation
                    fn()
                ms = {}
                for name, fn in run.items():
                    times = []
                    for _ in range(args.repeats):
                        start = time.process_time()
                        fn()
                        times.append(time.process_time() - start)
                    ms[name] = statistics.median(times) * 1e3
                parts = [k for k in run if k != "whole forward"]
                total = sum(ms[k] for k in parts)
                cells = " | ".join(f"{ms[k]:.2f} ({ms[k] / total:.0%})" for k in parts)
                print(f"| {N} | {C} | {F} | {H} | {m} | {cells} | {total:.2f} | {ms['whole forward']:.2f} | "
                      f"{product_flops / ms['products'] / 1e6:.0f} | {direct_flops / ms['whole forward'] / 1e6:.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
