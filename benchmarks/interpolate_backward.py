"""F.interpolate's backward against PyTorch's, with a finite upstream gradient and with one inf in it.

A finite gradient runs the product with the (O, I) resampling matrices; an inf or NaN in it
makes cnnkit redo the sums over the taps only (``InterpolateOp.backward``), as PyTorch's
backward does, so that it reaches only the inputs its output read. This times both, each
against PyTorch's backward on the same gradient, interleaved in one process (``timing.py``);
the ratio is PyTorch's time over cnnkit's (above 1: cnnkit is faster).

Usage:
    python benchmarks/interpolate_backward.py [--repeats 7] [--threads 1] [--clock cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import add_timing_options, interleaved, set_threads  # noqa: E402

import cnnkit.functional as F  # noqa: E402
from cnnkit import Tensor  # noqa: E402

CASES = [
    ("bilinear x2, 8x64x28x28", (8, 64, 28, 28), dict(scale_factor=2, mode="bilinear")),
    ("nearest x2, 8x64x56x56", (8, 64, 56, 56), dict(scale_factor=2, mode="nearest")),
    ("bilinear 112 -> 64, 4x32", (4, 32, 112, 112), dict(size=(64, 64), mode="bilinear")),
]


def _pair(F, torch, xc, xt, g, kw):
    """(cnnkit's, PyTorch's) forward + backward of one case with upstream gradient g."""
    gc, gt = Tensor(g), torch.from_numpy(g)

    def ours():
        xc.grad = None
        F.interpolate(xc, **kw).backward(gc)

    def theirs():
        xt.grad = None
        torch.nn.functional.interpolate(xt, **kw).backward(gt)

    return ours, theirs


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    add_timing_options(parser)
    args = parser.parse_args()
    set_threads(args.threads, torch)
    print(f"threads {args.threads or 'all'}, clock {args.clock}, {args.repeats} interleaved pairs")
    print(f"{'case':28} {'gradient':8} {'cnnkit ms':>9} {'torch ms':>9} {'torch/cnnkit':>12} load")
    for label, shape, kw in CASES:
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        xt = torch.from_numpy(x).requires_grad_()
        xc = Tensor(x, requires_grad=True)
        out_shape = tuple(torch.nn.functional.interpolate(xt.detach(), **kw).shape)
        for kind in ("finite", "one inf"):
            g = np.ones(out_shape, np.float32)
            if kind == "one inf":
                g.flat[g.size // 2] = np.inf
            ours, theirs = _pair(F, torch, xc, xt, g, kw)
            r = interleaved(ours, theirs, args.repeats, clock=args.clock)
            print(f"{label:28} {kind:8} {statistics.median(r['ours']) * 1e3:9.1f} "
                  f"{statistics.median(r['theirs']) * 1e3:9.1f} {r['ratio']:12.2f} {'/'.join(r['load'])}")


if __name__ == "__main__":
    main()
