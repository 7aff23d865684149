"""ResNet-18 (or VGG-16) inference layer by layer, cnnkit against PyTorch, same weights, one process.

Each leaf layer (convolution, batch norm, ReLU, pooling, linear) of both models gets a
forward pre-hook and a forward hook that read the clock; a layer called several times in
one pass (ResNet's shared ``relu``) is one row per call. Whole passes of the two models
alternate with the hygiene of ``timing.py`` (a pause, a spin of the framework about to
run, who goes first alternating); each row is the median over passes. The time of a
pass outside the layers (the residual additions, ``flatten``, the model's own Python) is
the "between layers" row.

Columns: the layer's input shape, the algorithm cnnkit's dispatch picked for a
convolution (``backend/dispatch.py``), cnnkit ms, PyTorch ms, PyTorch/cnnkit (above 1:
cnnkit is faster) and GFLOP/s (2 * multiply-adds) of both for convolutions and linear layers.

``--optimized``: cnnkit's side is ``cnnkit.surgery.optimize_for_inference`` (batch norms
folded, Winograd filters prepacked; its batch-norm rows are then empty), PyTorch's is eager
as is, as the ``-optimized`` rows of ``cnn_vs_torch.py``.

Usage:
    python benchmarks/layers_vs_torch.py [--model resnet18|vgg16] [--batch 1] [--optimized] \
        [--repeats 11 | --quiet N] [--threads N] [--clock wall|cpu]

On a loaded machine use ``--threads 1 --clock cpu`` (the process's CPU time), or for two
threads ``--quiet N`` (only passes during which no thread of the process waited for a CPU).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this tree's cnnkit
sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import (  # noqa: E402
    CLOCKS,
    PAUSE_S,
    QUIET_MAX_TRIES,
    add_quiet_option,
    add_timing_options,
    blas_note,
    load_average,
    runqueue_wait,
    set_threads,
    settled_wait,
    spin_cnnkit,
    spin_torch,
    waited,
)
from torch_models import matching_pair  # noqa: E402

import cnnkit  # noqa: E402
import cnnkit.surgery  # noqa: E402
from cnnkit.backend import dispatch  # noqa: E402
from cnnkit.functional import conv as conv_ops  # noqa: E402

LEAVES = ("Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "AdaptiveAvgPool2d", "Linear")
SIZES = {"resnet18": 224, "vgg16": 224}


class LayerClock:
    """Forward hooks on a model's leaf layers that add each call's time to ``times[key]``.

    key = "path#k" for the k-th call of the layer at ``path`` in the pass. ``also``: a
    second counter, whose growth over each call goes to ``also_times[key]``.
    """

    def __init__(self, model, now, named_modules, also=None):
        self.now, self.times, self.shapes = now, {}, {}
        self.also, self.also_times, self._also_start = also, {}, 0.0
        self.macs: dict[str, int] = {}
        self.calls: collections.Counter = collections.Counter()
        self.algorithm: dict[str, str] = {}
        self._start = 0.0
        for path, module in named_modules(model):
            if type(module).__name__ in LEAVES:
                module.register_forward_pre_hook(self._pre(path))
                module.register_forward_hook(self._post(path))

    def begin_pass(self) -> None:
        self.times, self.also_times, self.calls = {}, {}, collections.Counter()

    def _pre(self, path):
        def hook(module, args):
            if self.also is not None:
                self._also_start = self.also()
            self._start = self.now()
        return hook

    def _post(self, path):
        def hook(module, args, output):
            elapsed = self.now() - self._start
            self.calls[path] += 1
            key = f"{path}#{self.calls[path]}"
            self.times[key] = elapsed
            if self.also is not None:
                self.also_times[key] = self.also() - self._also_start
            if key not in self.shapes:
                self.shapes[key] = (tuple(args[0].shape), tuple(output.shape))
                self.macs[key] = _macs(module, tuple(output.shape))
                if LAST_ALGORITHM and type(module).__name__ == "Conv2d":
                    self.algorithm[key] = LAST_ALGORITHM.pop()
        return hook


def _macs(module, out_shape) -> int:
    name = type(module).__name__
    if name == "Conv2d":
        w = module.weight
        F, Cg, KH, KW = tuple(w.shape)
        return int(np.prod(out_shape)) * Cg * KH * KW
    if name == "Linear":
        return int(np.prod(out_shape)) * int(module.weight.shape[1])
    return 0


LAST_ALGORITHM: list[str] = []
_conv2d_algorithm = dispatch.conv2d_algorithm


def _recording_algorithm(*args, **kwargs):
    algorithm = _conv2d_algorithm(*args, **kwargs)
    LAST_ALGORITHM[:] = [algorithm]
    return algorithm


def record_algorithms(on: bool = True) -> None:
    """Let ``LayerClock`` see which algorithm the dispatch picked for each convolution."""
    conv_ops.dispatch.conv2d_algorithm = _recording_algorithm if on else _conv2d_algorithm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(SIZES), default="resnet18")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--optimized", action="store_true", help="cnnkit's side optimized for inference")
    parser.add_argument("--repeats", type=int, default=11)
    add_timing_options(parser, "threads for both frameworks (default: each framework's default, all CPUs)")
    add_quiet_option(parser)
    args = parser.parse_args()
    set_threads(args.threads, torch)
    now = CLOCKS[args.clock]
    size = SIZES[args.model]
    ours, theirs = matching_pair(args.model)
    ours.eval()
    theirs.eval()
    if args.optimized:
        ours = cnnkit.surgery.optimize_for_inference(ours, input_shape=(3, size, size))
    x = np.random.default_rng(1).standard_normal((args.batch, 3, size, size)).astype(np.float32)
    tx = torch.from_numpy(x)
    record_algorithms()
    clocks = {"cnnkit": LayerClock(ours, now, lambda m: m.named_modules()),
              "torch": LayerClock(theirs, now, lambda m: m.named_modules())}

    def run_ours():
        with cnnkit.no_grad():
            return ours(cnnkit.Tensor(x)).data

    def run_theirs():
        with torch.no_grad():
            return theirs(tx).numpy()

    runs = {"cnnkit": (run_ours, spin_cnnkit), "torch": (run_theirs, spin_torch)}
    for clock in clocks.values():
        clock.begin_pass()
    y_ours, y_theirs = run_ours(), run_theirs()
    error = np.abs(y_ours - y_theirs).max() / np.abs(y_theirs).max()
    for _ in range(2):  # warm-up: compilation, scratch buffers, prepacked filters
        for name, (fn, _) in runs.items():
            clocks[name].begin_pass()
            fn()
    per_layer = {name: collections.defaultdict(list) for name in runs}
    totals = {name: [] for name in runs}
    load_before = load_average()
    passes = args.quiet or args.repeats
    r = 0
    while len(totals["cnnkit"]) < passes and r < (QUIET_MAX_TRIES * passes if args.quiet else passes):
        order = ["cnnkit", "torch"] if r % 2 == 0 else ["torch", "cnnkit"]
        r += 1
        kept = {}
        for name in order:
            fn, spin = runs[name]
            time.sleep(PAUSE_S)
            spin()
            clocks[name].begin_pass()
            before = runqueue_wait() if args.quiet else None
            start = now()
            fn()
            elapsed = now() - start
            if args.quiet and waited(before, settled_wait(), elapsed):
                break
            kept[name] = (elapsed, dict(clocks[name].times))
        else:
            for name, (elapsed, times) in kept.items():
                totals[name].append(elapsed)
                for key, t in times.items():
                    per_layer[name][key].append(t)
    if not totals["cnnkit"]:
        parser.error(f"no pair of passes ran without waiting for a CPU in {r} tries (--quiet)")
    record_algorithms(False)

    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), cnnkit "
          f"({cnnkit.config.get_num_threads()} threads); {args.model} inference batch {args.batch}"
          f"{', cnnkit optimized for inference' if args.optimized else ''}; {len(totals['cnnkit'])} passes each"
          f"{f' kept of {r} (--quiet)' if args.quiet else ''}, "
          f"{args.clock} clock, load {load_before} / {load_average()}; max |diff| / max |y| {error:.1e}")
    print(blas_note())
    print("| layer | input | cnnkit algorithm | cnnkit ms | PyTorch ms | PyTorch/cnnkit | GFLOP/s cnnkit / PyTorch |")
    print("|---|---|---|---|---|---|---|")
    keys = list(clocks["torch"].shapes)
    keys += [k for k in clocks["cnnkit"].shapes if k not in clocks["torch"].shapes]
    sums = {"cnnkit": 0.0, "torch": 0.0}
    for key in keys:
        med = {}
        for name in runs:
            ts = per_layer[name].get(key)
            med[name] = statistics.median(ts) if ts else None
            sums[name] += med[name] or 0.0
        clock = clocks["cnnkit"] if key in clocks["cnnkit"].shapes else clocks["torch"]
        shape, macs = clock.shapes[key][0], clock.macs.get(key, 0)
        cells = [f"{med[n] * 1e3:.3f}" if med[n] is not None else "-" for n in runs]
        ratio = f"{med['torch'] / med['cnnkit']:.2f}x" if None not in med.values() else ""
        gflops = " / ".join(f"{2 * macs / med[n] / 1e9:.0f}" if med[n] else "-" for n in runs) if macs else ""
        print(f"| {key.replace('#1', '')} | {'x'.join(map(str, shape[1:]))} | "
              f"{clocks['cnnkit'].algorithm.get(key, '')} | {cells[0]} | {cells[1]} | {ratio} | {gflops} |")
    whole = {n: statistics.median(totals[n]) for n in runs}
    between = {n: whole[n] - sums[n] for n in runs}
    print(f"| between layers | | | {between['cnnkit'] * 1e3:.3f} | {between['torch'] * 1e3:.3f} | | |")
    print(f"| **whole pass** | | | {whole['cnnkit'] * 1e3:.2f} | {whole['torch'] * 1e3:.2f} | "
          f"**{statistics.median(t / o for o, t in zip(totals['cnnkit'], totals['torch'])):.2f}x** | |")


if __name__ == "__main__":
    main()
