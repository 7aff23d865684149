"""Every convolution algorithm on each layer shape: where the dispatch thresholds go.

For each layer shape, times conv2d (forward, or forward + both gradients with
``--backward``) through every algorithm that handles it, called directly
(``Conv2dDirectOp`` with its "rows" kernel as ``direct`` and its register-blocked kernel
as ``blocked``, ``Conv2dGemmOp``, ``Conv2dWinogradOp`` with m = 2 and 4,
``Conv2dPolyphaseOp`` for strided shapes), in alternating order with a pause and a warm-up
spin of the framework's threads before each call (since Dec 3 night; two-thread figures
taken before then include the threads' wake-up, ~10 ms for PyTorch), and prints the
median time of each and the winner. ``--torch`` adds PyTorch's conv2d on the same arrays
(``torch`` column, same threads; not a candidate for "fastest"); ``--gflops`` prints
GFLOP/s (2*N*F*C*KH*KW*OH*OW per forward, three times that for forward + backward)
instead of milliseconds. ``backend.dispatch``'s thresholds
(``DIRECT_CONV_MAX_MACS``, ``WINOGRAD_MIN_CHANNELS``, ``WINOGRAD4_MIN_SIZE``,
``WINOGRAD_MIN_TILES``, ``POLYPHASE_MAX_CHANNELS``) are set from these tables
(docs/performance.md). A shape N,C,F,H,K,S has stride S (default 1); ``--strided`` runs
the strided table (ResNet's 7x7/2 stem and its 3x3/2 and 1x1/2 layers, the stem on 1 to
64 channels). ``--weight-grad-only`` times the backward of a first layer (the input
needs no gradient). ``--prepacked`` (forward only) gives Winograd its transformed filters
computed beforehand, as an inference layer's prepack does
(``surgery.optimize_for_inference``): the ``*_PREPACKED`` thresholds come from that table.

Usage:
    python benchmarks/conv_dispatch.py [--backward [--weight-grad-only] | --prepacked] [--repeats 7] [--threads N]
                                       [--clock wall|cpu] [--torch] [--gflops]
                                       [--strided | --shapes N,C,F,H,K[,S[,P]] ...]
    (P: padding, default K // 2; LeNet-5's conv2 is 64,6,16,14,5,1,0)
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
from timing import CLOCKS, add_timing_options, blas_note, set_threads, spin_cnnkit, spin_torch  # noqa: E402

import cnnkit  # noqa: E402
from cnnkit.backend.kernels.winograd import winograd_filters  # noqa: E402
from cnnkit.functional.conv import Conv2dDirectOp, Conv2dGemmOp, Conv2dPolyphaseOp, Conv2dWinogradOp  # noqa: E402

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

# Strided (N, C, F, H, K, S): ResNet's 7x7/2 stem at batch 1, 8, 16 and on 1 to 64 input
# channels; ResNet-18's 3x3/2 and 1x1/2 layers at batch 8.
STRIDED = [
    (1, 3, 64, 224, 7, 2), (8, 3, 64, 224, 7, 2), (16, 3, 64, 224, 7, 2),
    (8, 1, 64, 224, 7, 2), (8, 4, 64, 224, 7, 2), (8, 8, 64, 224, 7, 2), (8, 16, 64, 224, 7, 2),
    (8, 32, 64, 112, 7, 2), (8, 64, 64, 112, 7, 2),
    (8, 3, 32, 224, 3, 2), (8, 16, 32, 112, 3, 2),
    (8, 64, 128, 56, 3, 2), (8, 128, 256, 28, 3, 2), (8, 256, 512, 14, 3, 2), (8, 64, 128, 56, 1, 2),
]
COLUMNS = ("gemm", "winograd4", "winograd2", "direct", "blocked", "polyphase")


def algorithms(K: int, macs: int, S: int = 1, w=None):
    """The algorithms that handle a K x K convolution of stride S (Winograd with w's filters prepacked when given)."""
    if S > 1:
        return {"gemm": lambda p: Conv2dGemmOp((S, S), p, (1, 1), 1),
                "polyphase": lambda p: Conv2dPolyphaseOp((S, S), p, (1, 1), 1)}
    found = {"gemm": lambda p: Conv2dGemmOp((1, 1), p, (1, 1), 1)}
    if K == 3:
        U = {m: None if w is None else winograd_filters(w, m) for m in (2, 4)}
        found["winograd4"] = lambda p: Conv2dWinogradOp((1, 1), p, (1, 1), 1, m=4, filters=U[4])
        found["winograd2"] = lambda p: Conv2dWinogradOp((1, 1), p, (1, 1), 1, m=2, filters=U[2])
    if K > 1 and macs <= 2**16:
        found["direct"] = lambda p: Conv2dDirectOp((1, 1), p, (1, 1), 1, kernel="rows")
    if K > 1 and macs <= 2**20:                  # up to ResNet-18's 256-channel 3x3 layers
        found["blocked"] = lambda p: Conv2dDirectOp((1, 1), p, (1, 1), 1, kernel="blocked")
    return found


def torch_conv(x, w, gy, pads, backward: bool, weight_grad_only: bool):
    """PyTorch's conv2d on the same arrays (forward, or forward + the same gradients)."""
    import torch

    xt, wt, gyt = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(gy)
    pt, pb, pl, pr = pads
    symmetric = pt == pb and pl == pr

    def run():
        if not backward:
            with torch.no_grad():
                xin = xt if symmetric else torch.nn.functional.pad(xt, (pl, pr, pt, pb))
                return torch.nn.functional.conv2d(xin, wt, padding=(pt, pl) if symmetric else 0)
        xs = xt.detach().requires_grad_(not weight_grad_only)
        ws = wt.detach().requires_grad_(True)
        xin = xs if symmetric else torch.nn.functional.pad(xs, (pl, pr, pt, pb))
        torch.nn.functional.conv2d(xin, ws, padding=(pt, pl) if symmetric else 0).backward(gyt)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backward", action="store_true", help="time forward + both gradients")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--shapes", nargs="+", default=None, help="N,C,F,H,K[,S] ...")
    parser.add_argument("--strided", action="store_true", help="the strided table (STRIDED)")
    parser.add_argument("--weight-grad-only", action="store_true",
                        help="with --backward: the input needs no gradient (a first layer)")
    parser.add_argument("--prepacked", action="store_true",
                        help="forward with Winograd's filters transformed beforehand (inference prepack)")
    parser.add_argument("--torch", action="store_true", help="add PyTorch's conv2d (same threads)")
    parser.add_argument("--gflops", action="store_true", help="print GFLOP/s instead of ms")
    add_timing_options(parser)
    args = parser.parse_args()
    if args.prepacked and args.backward:
        parser.error("--prepacked times the forward (inference) only")
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes else (
        STRIDED if args.strided else SHAPES)
    torch = None
    if args.torch:
        import torch
    set_threads(args.threads, torch)
    now = CLOCKS[args.clock]
    rng = np.random.default_rng(0)
    phase = "forward + backward" + (" (weight gradient only)" if args.weight_grad_only else "")
    columns = COLUMNS + (("torch",) if args.torch else ())
    unit = "GFLOP/s" if args.gflops else "median ms"
    print(f"{phase if args.backward else 'forward'}{', Winograd filters prepacked' if args.prepacked else ''}, float32, {cnnkit.config.get_num_threads()} "
          f"threads, {args.repeats} repeats, {unit} ({args.clock} clock); load average {os.getloadavg()[0]:.2f}")
    print(blas_note())
    print("| N | C | F | H | K | S | P | " + " | ".join(columns) + " | fastest | load |")
    print("|---|---|---|---|---|---|---|" + "---|" * len(columns) + "---|---|")
    for shape in shapes:
        N, C, Fo, H, K = shape[:5]
        S = shape[5] if len(shape) > 5 else 1
        P = shape[6] if len(shape) > 6 else K // 2
        pads = (P,) * 4
        OH = (H + 2 * P - K) // S + 1
        x = rng.standard_normal((N, C, H, H)).astype(np.float32)
        w = (rng.standard_normal((Fo, C, K, K)) / np.sqrt(C * K * K)).astype(np.float32)
        gy = rng.standard_normal((N, Fo, OH, OH)).astype(np.float32)
        algs = algorithms(K, Fo * C * K * K, S, w if args.prepacked else None)

        def run(name, algs=algs, x=x, w=w, gy=gy, pads=pads):
            if not args.backward:
                with cnnkit.no_grad():
                    return algs[name](pads)(x, w)
            xs = cnnkit.Tensor(x, requires_grad=not args.weight_grad_only)
            ws = cnnkit.Tensor(w, requires_grad=True)
            algs[name](pads)(xs, ws).backward(gy)

        runs = {name: (lambda name=name: run(name)) for name in algs}
        if args.torch:
            runs["torch"] = torch_conv(x, w, gy, pads, args.backward, args.weight_grad_only)
        times = {name: [] for name in runs}
        for name in runs:  # warm-up (and compilation)
            runs[name]()
        load = os.getloadavg()[0]
        for r in range(args.repeats):
            for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
                time.sleep(0.05)  # OpenBLAS's threads stop spinning (timing.py's header)
                # then wake the threads of the framework about to run, as the other benchmarks
                # do: without it the torch column timed OpenMP's wake-up after the pause
                # (1x64x56x56 two threads: 11.9 ms against ~1.2 warm)
                (spin_torch if name == "torch" else spin_cnnkit)()
                start = now()
                runs[name]()
                times[name].append(now() - start)
        med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        flops = 2 * N * Fo * C * K * K * OH * OH * (3 if args.backward else 1)
        if args.gflops:
            cells = [f"{flops / med[n] / 1e6:.0f}" if n in med else "" for n in columns]
        else:
            cells = [f"{med[n]:.2f}" if n in med else "" for n in columns]
        ours = {n: t for n, t in med.items() if n != "torch"}
        print(f"| {N} | {C} | {Fo} | {H} | {K} | {S} | {P} | " + " | ".join(cells)
              + f" | {min(ours, key=ours.get)} | {load:.1f} |", flush=True)


if __name__ == "__main__":
    main()
