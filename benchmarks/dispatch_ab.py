"""A whole model with one dispatch threshold changed, against the same model as it is, in one process.

A dispatch change touches one layer; whether the model gains is a small difference that
runs minutes apart on a shared machine cannot show. This script builds ResNet-18 (or, with
``--model resnet20`` / ``vgg11_cifar``, ResNet-20 / VGG-11 (BN) at 32x32) once and runs it in alternating pairs with ``backend.dispatch``'s thresholds as they are ("as is")
and with the given ones changed ("changed"), a pause before each call; the figure is the
median over pairs of changed time / as-is time (above 1: the thresholds as they are win).
Before each call: a pause, then a short spin of cnnkit's threads (``timing.spin_cnnkit``).

Example (the 7x7/2 stem back on im2col + GEMM):
    python benchmarks/dispatch_ab.py POLYPHASE_MAX_CHANNELS=0 --batch 8 --threads 1 --clock cpu
    python benchmarks/dispatch_ab.py POLYPHASE_MAX_CHANNELS=0 --batch 16 --train --repeats 7
    (ResNet-20's 64-channel 8x8 layers back on the direct kernel:)
    python benchmarks/dispatch_ab.py WINOGRAD4_MIN_TILES=1000000000 --model resnet20 --batch 128 --train
    (LeNet-5 training, ReLU's mask applied in max pooling's backward or not, runs of 20 steps:)
    python benchmarks/dispatch_ab.py FUSE_RELU_INTO_MAX_POOL_BACKWARD=0 --model lenet5 --batch 64 --train --steps 20

Usage:
    python benchmarks/dispatch_ab.py NAME=VALUE ... [--model resnet18|resnet20|vgg11_cifar|lenet5] [--batch 8]
        [--train [--sgd] | --optimized] [--steps 1] [--repeats 11 | --quiet N] [--threads N] [--clock wall|cpu]

``--quiet N`` (two threads, wall clock, on a shared machine): pairs continue until N of them
ran without any thread of this process waiting for a CPU (``timing.runqueue_wait``).
``--layer C,F,H,K[,S]``: one convolution's forward (padding K // 2) instead of a model;
short calls find quiet moments on a loaded machine where whole models do not.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this tree's cnnkit
sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import (  # noqa: E402
    add_quiet_option,
    add_timing_options,
    blas_note,
    interleaved,
    set_threads,
    spin_cnnkit,
)

import cnnkit  # noqa: E402
import cnnkit.surgery  # noqa: E402
from cnnkit.backend import dispatch  # noqa: E402
from cnnkit.backend.prepack import ConvWeightPack, frozen  # noqa: E402

MODELS = {"resnet18": (224, 1000), "resnet20": (32, 10), "vgg11_cifar": (32, 10), "lenet5": (28, 10)}  # size, classes
CHANNELS = {"lenet5": 1}  # input channels where not 3


def model_call(name: str, batch: int, train: bool, optimized: bool = False, steps: int = 1,
               sgd: bool = False):
    """``steps`` inference batches of a zoo model (ResNet-18 at 224x224, ResNet-20 and VGG-11 (BN) at 32x32,
    LeNet-5 at 1x28x28), or ``steps`` forward + backward passes of a training step (and ``sgd``: an
    ``optim.SGD`` step, lr 0.01, momentum 0.9, after each). ``optimized``: the model as
    ``cnnkit.surgery.optimize_for_inference`` makes it (inference only)."""
    size, classes = MODELS[name]
    channels = CHANNELS.get(name, 3)
    model = cnnkit.models.get_model(name, generator=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, channels, size, size)).astype(np.float32)
    t = rng.integers(0, classes, batch)
    model.train(train)
    if optimized:
        model = cnnkit.surgery.optimize_for_inference(model, input_shape=(channels, size, size))
    if not train:
        def run():
            with cnnkit.no_grad():
                for _ in range(steps):
                    model(cnnkit.Tensor(x))
        return run

    opt = cnnkit.optim.SGD(model.parameters(), lr=0.01, momentum=0.9) if sgd else None

    def step():
        for _ in range(steps):
            loss = cnnkit.functional.cross_entropy(model(cnnkit.Tensor(x)), t)
            model.zero_grad()
            loss.backward()
            if opt is not None:
                opt.step()
    return step


def layer_call(shape: str, batch: int, optimized: bool):
    """One convolution forward (no_grad): ``shape`` "C,F,H,K[,S]" (padding K // 2) at ``batch``;
    ``optimized``: with the weight frozen and prepacked, as an optimized model's layer runs it."""
    C, Fo, H, K, *rest = (int(v) for v in shape.split(","))
    stride = rest[0] if rest else 1
    rng = np.random.default_rng(1)
    x = cnnkit.Tensor(rng.standard_normal((batch, C, H, H)).astype(np.float32))
    w = (rng.standard_normal((Fo, C, K, K)) / np.sqrt(C * K * K)).astype(np.float32)
    pack = ConvWeightPack(frozen(w)) if optimized else None
    weight = cnnkit.Tensor(pack.weight if optimized else w)

    def run():
        with cnnkit.no_grad():
            cnnkit.functional.conv2d(x, weight, stride=stride, padding=K // 2, prepacked=pack)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("changes", nargs="+", metavar="NAME=VALUE", help="dispatch thresholds to change")
    parser.add_argument("--model", choices=sorted(MODELS), default="resnet18")
    parser.add_argument("--layer", metavar="C,F,H,K[,S]", help="one convolution's forward instead of a model")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--train", action="store_true", help="time forward + backward in training mode")
    parser.add_argument("--optimized", action="store_true", help="the model optimized for inference")
    parser.add_argument("--sgd", action="store_true",
                        help="with --train: each step ends with an optim.SGD step (lr 0.01, momentum 0.9)")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--steps", type=int, default=1,
                        help="model calls per timed call (LeNet-5's 5 ms steps: a run of steps, as in training)")
    add_timing_options(parser)
    add_quiet_option(parser)
    args = parser.parse_args()
    if args.optimized and args.train:
        parser.error("--optimized is for inference; it cannot be combined with --train")
    changed = {}
    for item in args.changes:
        name, _, value = item.partition("=")
        if not hasattr(dispatch, name) or not value:
            parser.error(f"not a dispatch threshold NAME=VALUE: {item!r}")
        changed[name] = type(getattr(dispatch, name))(float(value))
    as_is = {name: getattr(dispatch, name) for name in changed}
    set_threads(args.threads)
    if args.layer and args.train:
        parser.error("--layer times a forward; it cannot be combined with --train")
    if args.sgd and not args.train:
        parser.error("--sgd adds an optimizer step to a training step: it needs --train")
    run = layer_call(args.layer, args.batch, args.optimized) if args.layer else model_call(
        args.model, args.batch, args.train, args.optimized, args.steps, args.sgd)

    def with_settings(settings):
        """One call of ``run`` under these thresholds (setting them costs well under a microsecond)."""
        def call():
            for name, value in settings.items():
                setattr(dispatch, name, value)
            run()
        return call

    # pairs alternate, each call after a pause and a spin of cnnkit's threads (an idle vCPU
    # takes up to ~10 ms to answer); two warm-up pairs (compilation, scratch buffers)
    try:
        result = interleaved(with_settings(as_is), with_settings(changed), args.repeats,
                             spin_theirs=spin_cnnkit, clock=args.clock, quiet=args.quiet)
    except RuntimeError as e:
        if "without waiting for a CPU" not in str(e):
            raise
        parser.error(str(e))  # --quiet: no pair ran without waiting for a CPU
    finally:
        for name, value in as_is.items():
            setattr(dispatch, name, value)
    times = {"as is": result["ours"], "changed": result["theirs"]}
    load, r, ratio = result["load"][0], result["pairs"], result["ratio"]
    print(blas_note())
    kept = f"{len(times['as is'])} pairs" + (f" kept of {r} (--quiet)" if args.quiet else "")
    print(f"{f'conv {args.layer}' if args.layer else args.model} "
          f"{'training forward + backward' if args.train else 'inference'}"
          f"{' + SGD' if args.train and args.sgd else ''}"
          f"{f' x {args.steps} steps per call' if args.steps > 1 else ''}"
          f"{' (optimized for inference)' if args.optimized else ''}, batch {args.batch}, "
          f"{cnnkit.config.get_num_threads()} threads, {args.clock} clock, {kept}, "
          f"load {load} / {result['load'][1]}")
    print(f"as is {as_is}: {statistics.median(times['as is']) * 1e3:.1f} ms; changed {changed}: "
          f"{statistics.median(times['changed']) * 1e3:.1f} ms; changed/as is (median of pairs) **{ratio:.3f}x**")


if __name__ == "__main__":
    main()
