"""Would a prepacked ConvTranspose2d weight help? Its product with W^T as the op runs it vs a prepared copy.

``F.conv_transpose2d`` multiplies the input by W^T per group (``ConvTranspose2dOp.forward``:
``cols = W^T @ x``), with W^T a transposed *view* of the weight. A prepack
(``nn.utils.prepack_for_inference``) pays only if the op transforms the weight on every call;
the one candidate here is making W^T contiguous once. This script times, interleaved in one
process, the product with the view (what runs) against the product with a contiguous copy
(what a prepack would hold), and the whole forward call for scale. A ratio near 1 means there
is nothing to cache.

Shapes: DCGAN-like generator layers (4x4 kernels, stride 2), an FCN upsampling layer and a
grouped one.

Usage:
    python benchmarks/conv_transpose_weight.py [--repeats 15] [--threads 1] [--clock cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import CLOCKS, add_timing_options, load_average, set_threads  # noqa: E402

import cnnkit.functional as F  # noqa: E402
from cnnkit import Tensor, no_grad  # noqa: E402
from cnnkit.backend.cores import matmul  # noqa: E402  (the op's product: BLAS on the cores' threads)

# (label, N, Cin, Cout, groups, K, H, stride, padding)
LAYERS = [
    ("dcgan 512->256 4x4 s2 at 4x4", 8, 512, 256, 1, 4, 4, 2, 1),
    ("dcgan 256->128 4x4 s2 at 8x8", 8, 256, 128, 1, 4, 8, 2, 1),
    ("dcgan 64->3 4x4 s2 at 32x32", 8, 64, 3, 1, 4, 32, 2, 1),
    ("fcn 21->21 4x4 s2 at 16x16", 1, 21, 21, 1, 4, 16, 2, 1),
    ("grouped 256->256 g4 3x3 s1 at 16x16", 8, 256, 256, 4, 3, 16, 1, 1),
]


def matmul_pair(N, Cin, Cout, G, K, H, rng):
    """The op's product (``_bmm``) with the transposed view, and the same with a contiguous W^T."""
    w = rng.standard_normal((Cin, Cout // G, K, K)).astype(np.float32)
    x = rng.standard_normal((G, Cin // G, N * H * H)).astype(np.float32)          # (G, Cin/G, N*H*W)
    view = w.reshape(G, Cin // G, Cout // G * K * K).transpose(0, 2, 1)             # (G, Cout/G*KH*KW, Cin/G)
    contiguous = np.ascontiguousarray(view)

    def product(a):
        return lambda: matmul(a[0], x[0]) if G == 1 else matmul(a, x)

    return product(view), product(contiguous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    add_timing_options(parser)
    args = parser.parse_args()
    set_threads(args.threads)
    now = CLOCKS[args.clock]
    rng = np.random.default_rng(0)
    print(f"threads {args.threads or 'all'}, clock {args.clock}, {args.repeats} interleaved pairs, "
          f"load {load_average()}")
    print(f"{'layer':38} {'view ms':>8} {'copy ms':>8} {'view/copy':>9} {'forward ms':>10}")
    for label, N, Cin, Cout, G, K, H, stride, padding in LAYERS:
        as_view, as_copy = matmul_pair(N, Cin, Cout, G, K, H, rng)
        x = Tensor(rng.standard_normal((N, Cin, H, H)).astype(np.float32))
        w = Tensor(rng.standard_normal((Cin, Cout // G, K, K)).astype(np.float32))

        def forward(x=x, w=w, stride=stride, padding=padding, G=G):
            with no_grad():
                F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=G)

        for fn in (as_view, as_copy, forward):
            fn()
        times: dict[str, list[float]] = {"view": [], "copy": [], "forward": []}
        for r in range(args.repeats):
            order = [("view", as_view), ("copy", as_copy)]
            for name, fn in (order if r % 2 == 0 else order[::-1]) + [("forward", forward)]:
                start = now()
                fn()
                times[name].append(now() - start)
        ratio = statistics.median(v / c for v, c in zip(times["view"], times["copy"], strict=True))
        median = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"{label:38} {median['view']:8.3f} {median['copy']:8.3f} {ratio:9.2f} {median['forward']:10.3f}")
    print(f"load after: {load_average()}")


if __name__ == "__main__":
    main()
