"""cnnkit vs PyTorch on ResNet, VGG, the CIFAR nets and single convolutions (issue 16).

Each workload runs in both frameworks on the same data and weights, timed in
alternating pairs with a pause and a warm-up spin before each call (``timing.py``); the
figure is the median over pairs of PyTorch's time / cnnkit's time (above 1: cnnkit is
faster), with the load average before and after. Single convolutions also report
GFLOP/s (2 * multiply-adds; forward + backward counts three convolutions' work).

Batch-norm folding (inference): ``-folded`` rows time cnnkit with every BatchNorm folded
into its convolution (``cnnkit.surgery.fold_batchnorm``) against PyTorch eager as is;
``-folded-both`` rows against PyTorch with the same pairs folded
(``torch.nn.utils.fusion.fuse_conv_bn_eval``), the fair comparison of the two frameworks;
``-fold-gain`` rows time folded cnnkit against unfolded cnnkit (the "PyTorch" columns
then hold unfolded cnnkit): the fold's own effect.

Inference transforms (``cnnkit.surgery.optimize_for_inference``: the fold, then frozen
weights with Winograd's filters prepacked on first use): ``-optimized`` rows against
PyTorch eager as is; ``-optimized-jit`` rows against PyTorch's own inference path,
``torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.script(model)))`` (its BN
fold, oneDNN prepacked weights); ``-optimize-gain`` rows optimized cnnkit against folded
cnnkit (the "PyTorch" columns hold folded cnnkit): what the prepack adds to the fold.

Usage:
    python benchmarks/cnn_vs_torch.py [--workloads NAME ...] [--repeats 7] [--list]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.fusion import fuse_conv_bn_eval

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import (  # noqa: E402  # noqa: E402
    add_quiet_option,
    add_timing_options,
    blas_note,
    interleaved,
    set_threads,
    spin_cnnkit,
    spin_torch,
)
from torch_models import matching_pair  # noqa: E402

import cnnkit  # noqa: E402
import cnnkit.functional as F  # noqa: E402
import cnnkit.surgery  # noqa: E402


def fold_torch(model: torch.nn.Module, pairs) -> torch.nn.Module:
    """PyTorch's own fold of the (conv path, bn path) pairs, in place (the twins share cnnkit's paths)."""
    for conv_path, bn_path in pairs:
        fused = fuse_conv_bn_eval(model.get_submodule(conv_path), model.get_submodule(bn_path))
        model.set_submodule(conv_path, fused)
        model.set_submodule(bn_path, torch.nn.Identity())
    return model


def model_workload(name: str, batch: int, size: int, train: bool, classes: int, fold: str | None = None):
    """(ours, theirs) callables: one inference batch or one SGD training step.

    fold (inference only): "ours" folds cnnkit's batch norms, "both" PyTorch's as well,
    "gain" makes theirs unfolded cnnkit; "optimized" runs cnnkit's optimize_for_inference,
    "optimized-jit" also PyTorch's, "optimize-gain" makes theirs folded cnnkit.
    """
    ours, theirs = matching_pair(name)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    t = rng.integers(0, classes, batch)
    tx, tt = torch.from_numpy(x), torch.from_numpy(t)
    if not train:
        ours.eval()
        theirs.eval()
        if fold is not None:
            unfolded, ours = ours, cnnkit.surgery.fold_batchnorm(ours, (3, size, size))
            if fold.startswith("optimize"):
                folded, ours = ours, cnnkit.surgery.optimize_for_inference(unfolded, input_shape=(3, size, size))
            with torch.no_grad(), cnnkit.no_grad():  # the fold changes the time, not the result
                ours_y, ref_y = ours(cnnkit.Tensor(x)).data, theirs(tx).numpy()
            assert np.abs(ours_y - ref_y).max() <= 1e-4 * np.abs(ref_y).max(), "folded outputs differ"
        if fold == "both":
            theirs = fold_torch(theirs, ours.folded_batchnorm)
        if fold == "optimized-jit":
            theirs = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.script(theirs)))
            with torch.no_grad():
                jit_y = theirs(tx).numpy()
            assert np.abs(jit_y - ref_y).max() <= 1e-4 * np.abs(ref_y).max(), "PyTorch's optimized outputs differ"
        if fold in ("gain", "optimize-gain"):
            other = unfolded if fold == "gain" else folded

            def run_other():
                with cnnkit.no_grad():
                    return other(cnnkit.Tensor(x)).data

            theirs_fn = run_other

        def run_ours():
            with cnnkit.no_grad():
                return ours(cnnkit.Tensor(x)).data

        def run_theirs():
            with torch.no_grad():
                return theirs(tx).numpy()

        return run_ours, theirs_fn if fold in ("gain", "optimize-gain") else run_theirs
    ours.train()
    theirs.train()
    opt_ours = cnnkit.optim.SGD(ours.parameters(), lr=0.01, momentum=0.9)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=0.01, momentum=0.9)

    def step_ours():
        loss = F.cross_entropy(ours(cnnkit.Tensor(x)), t)
        opt_ours.zero_grad()
        loss.backward()
        opt_ours.step()

    def step_theirs():
        loss = torch.nn.functional.cross_entropy(theirs(tx), tt)
        opt_theirs.zero_grad()
        loss.backward()
        opt_theirs.step()

    return step_ours, step_theirs


def conv_workload(N, C, Fo, H, K, stride, pad, backward: bool, input_grad: bool = True):
    """(ours, theirs, flops) for one convolution, forward or forward + both gradients
    (+ the weight gradient only without ``input_grad``: a first layer)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    w = (rng.standard_normal((Fo, C, K, K)) / np.sqrt(C * K * K)).astype(np.float32)
    OH = (H + 2 * pad - K) // stride + 1
    gy = rng.standard_normal((N, Fo, OH, OH)).astype(np.float32)
    flops = 2 * N * Fo * C * K * K * OH * OH * (1 + backward + (backward and input_grad))
    tx, tw, tgy = (torch.from_numpy(a) for a in (x, w, gy))
    if not backward:
        def run_ours():
            with cnnkit.no_grad():
                return F.conv2d(cnnkit.Tensor(x), cnnkit.Tensor(w), stride=stride, padding=pad).data

        def run_theirs():
            with torch.no_grad():
                return torch.nn.functional.conv2d(tx, tw, stride=stride, padding=pad)

        return run_ours, run_theirs, flops

    def run_ours():
        xs, ws = cnnkit.Tensor(x, requires_grad=input_grad), cnnkit.Tensor(w, requires_grad=True)
        F.conv2d(xs, ws, stride=stride, padding=pad).backward(gy)
        return xs.grad, ws.grad

    def run_theirs():
        xs, ws = tx.clone().requires_grad_(input_grad), tw.clone().requires_grad_()
        torch.nn.functional.conv2d(xs, ws, stride=stride, padding=pad).backward(tgy)
        return xs.grad, ws.grad

    return run_ours, run_theirs, flops


# ResNet-18 inference at batch 1 and 8: as is ("resnet18-infer-bN"), and with the batch
# norms folded or the model optimized for inference, against PyTorch or against cnnkit
# itself (the "fold" argument of model_workload).
_RESNET18_INFERENCE_MODES = {
    "": None, "-folded": "ours", "-folded-both": "both", "-fold-gain": "gain",
    "-optimized": "optimized", "-optimized-jit": "optimized-jit", "-optimize-gain": "optimize-gain",
}
WORKLOADS = {
    f"resnet18-infer-b{batch}{suffix}": (lambda batch=batch, fold=fold: model_workload("resnet18", batch, 224, False, 1000, fold=fold))
    for suffix, fold in _RESNET18_INFERENCE_MODES.items() for batch in (1, 8)
}
WORKLOADS |= {
    "resnet18-train-b16": lambda: model_workload("resnet18", 16, 224, True, 1000),
    "vgg16-infer-b4": lambda: model_workload("vgg16", 4, 224, False, 1000),
    "vgg16-infer-b4-optimized": lambda: model_workload("vgg16", 4, 224, False, 1000, fold="optimized"),
    "resnet20-train-b128": lambda: model_workload("resnet20", 128, 32, True, 10),
    "vgg11-train-b128": lambda: model_workload("vgg11_cifar", 128, 32, True, 10),
    "conv3x3-64-56-b16-fwd": lambda: conv_workload(16, 64, 64, 56, 3, 1, 1, False),
    "conv3x3-64-56-b16-fwdbwd": lambda: conv_workload(16, 64, 64, 56, 3, 1, 1, True),
    "conv3x3-16-32-b128-fwdbwd": lambda: conv_workload(128, 16, 16, 32, 3, 1, 1, True),
    "conv3x3-64-8-b128-fwd": lambda: conv_workload(128, 64, 64, 8, 3, 1, 1, False),
    # ResNet-20's other two stages in training
    "conv3x3-32-16-b128-fwdbwd": lambda: conv_workload(128, 32, 32, 16, 3, 1, 1, True),
    "conv3x3-64-8-b128-fwdbwd": lambda: conv_workload(128, 64, 64, 8, 3, 1, 1, True),
    # ... and its two stride-2 layers (each stage's first convolution)
    "conv3x3s2-16-32-b128-fwdbwd": lambda: conv_workload(128, 16, 32, 32, 3, 2, 1, True),
    "conv3x3s2-32-64-b128-fwdbwd": lambda: conv_workload(128, 32, 64, 16, 3, 2, 1, True),
    "conv7x7s2-3-64-224-b1-fwd": lambda: conv_workload(1, 3, 64, 224, 7, 2, 3, False),
    "conv7x7s2-3-64-224-b8-fwd": lambda: conv_workload(8, 3, 64, 224, 7, 2, 3, False),
    "conv7x7s2-3-64-224-b16-fwd": lambda: conv_workload(16, 3, 64, 224, 7, 2, 3, False),
    # ResNet's stem in training: the images need no gradient, the weights do
    "conv7x7s2-3-64-224-b8-fwdbwd-w": lambda: conv_workload(8, 3, 64, 224, 7, 2, 3, True, input_grad=False),
    "conv7x7s2-3-64-224-b16-fwdbwd-w": lambda: conv_workload(16, 3, 64, 224, 7, 2, 3, True, input_grad=False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS), metavar="NAME")
    parser.add_argument("--repeats", type=int, default=7)
    add_timing_options(parser, "threads for both frameworks (default: each framework's default, all CPUs)")
    add_quiet_option(parser)
    parser.add_argument("--list", action="store_true", help="print the workload names and exit")
    args = parser.parse_args()
    if args.list:
        print("\n".join(WORKLOADS))
        return
    set_threads(args.threads, torch)
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}, "
          f"cnnkit kernels {'on' if cnnkit.config.kernels_enabled() else 'off'} "
          f"({cnnkit.config.get_num_threads()} threads); "
          f"{f'{args.quiet} quiet' if args.quiet else args.repeats} pairs per workload; {args.clock} clock")
    print(blas_note())
    print("| workload | cnnkit ms | PyTorch ms | PyTorch/cnnkit (median of pairs) | cnnkit GFLOP/s | PyTorch GFLOP/s "
          "| load before/after | pairs |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.workloads:
        built = WORKLOADS[name]()
        ours, theirs = built[:2]
        spin = spin_cnnkit if name.endswith("-gain") else spin_torch  # theirs is cnnkit there
        r = interleaved(ours, theirs, args.repeats, spin_theirs=spin, clock=args.clock, quiet=args.quiet)
        o, t = statistics.median(r["ours"]), statistics.median(r["theirs"])
        pairs = f"{len(r['ours'])} of {r['pairs']} (--quiet)" if args.quiet else f"{len(r['ours'])}"
        gflops = ("", "")
        if len(built) == 3:
            gflops = (f"{built[2] / o / 1e9:.0f}", f"{built[2] / t / 1e9:.0f}")
        print(f"| {name} | {o * 1e3:.1f} | {t * 1e3:.1f} | **{r['ratio']:.2f}x** | {gflops[0]} | {gflops[1]} "
              f"| {r['load'][0]} / {r['load'][1]} | {pairs} |", flush=True)


if __name__ == "__main__":
    main()
