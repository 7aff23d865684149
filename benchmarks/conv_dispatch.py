"""Direct convolution kernel vs im2col + BLAS, per layer shape: where the dispatch cut goes.

For each stride-1 layer shape, times conv2d forward + backward (input and weight
gradients) through both algorithms (``Conv2dDirectOp`` and ``Conv2dIm2colOp``, called
directly), alternating them, and prints the median time of each and the ratio.
``backend.dispatch.DIRECT_CONV_MAX_MACS`` (F*C*KH*KW) is set from this table.

Usage:
    python benchmarks/conv_dispatch.py [--batch 64] [--repeats 15] [--dtype float32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import cnnkit
from cnnkit.functional.conv import Conv2dDirectOp, Conv2dIm2colOp

# (C, F, K, H, padding): LeNet-5, small CIFAR nets, VGG/ResNet-style 3x3 layers
SHAPES = [
    (1, 6, 5, 28, 2), (6, 16, 5, 14, 0), (3, 16, 3, 32, 1), (3, 32, 3, 32, 1),
    (16, 16, 3, 32, 1), (16, 32, 3, 16, 1), (32, 32, 3, 16, 1), (32, 64, 3, 16, 1),
    (64, 64, 3, 8, 1), (64, 128, 3, 8, 1), (128, 128, 3, 8, 1), (3, 64, 3, 32, 1),
    (64, 64, 3, 32, 1),
]
ALGORITHMS = {"direct": Conv2dDirectOp, "im2col": Conv2dIm2colOp}


def step(op_class, x, w, b, padding):
    y = op_class((1, 1), (padding,) * 4, (1, 1), 1)(x, w, b)
    y.backward(np.ones(y.shape, y.dtype))
    x.grad = w.grad = b.grad = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"batch {args.batch}, {args.dtype}, {cnnkit.config.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| C | F | K | H | F*C*K*K | direct ms | im2col ms | im2col/direct |")
    print("|---|---|---|---|---|---|---|---|")
    for C, Fo, K, H, pad in SHAPES:
        x = cnnkit.Tensor(rng.standard_normal((args.batch, C, H, H)).astype(args.dtype), requires_grad=True)
        w = cnnkit.Tensor(rng.standard_normal((Fo, C, K, K)).astype(args.dtype), requires_grad=True)
        b = cnnkit.Tensor(np.zeros(Fo, args.dtype), requires_grad=True)
        times = {"direct": [], "im2col": []}
        for r in range(args.repeats + 1):
            for path in ("direct", "im2col") if r % 2 else ("im2col", "direct"):
                time.sleep(0.05)
                start = time.perf_counter()
                step(ALGORITHMS[path], x, w, b, pad)
                if r:  # the first round warms up (and compiles)
                    times[path].append(time.perf_counter() - start)
        d, i = (statistics.median(times[p]) * 1e3 for p in ("direct", "im2col"))
        print(f"| {C} | {Fo} | {K} | {H} | {Fo * C * K * K} | {d:.3f} | {i:.3f} | {i / d:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
