"""One fully convolutional pass vs sliding the classifier: time, MACs, and how well it reads.

Cases (the machine is shared and noisy: the three ways are interleaved in every repeat and
the medians are compared):

- LeNet-5 on a 28x280 strip of ten MNIST test digits: 64 windows of 28x28 at stride 4;
  one strip, then a batch of 16 strips.
- VGG-11 (CIFAR-style, BatchNorm) on a 96x96 input: 3x3 windows of 32x32 at stride 32;
  one image, then a batch of 4.

For each: the FCN's one pass on the whole input; the classifier on all windows cropped
and stacked into one batch; the classifier on one window at a time (the naive loop).
The score maps are compared (exactly equal for LeNet-5 once its first-layer padding is
applied to the whole strip; VGG pads every layer, so only the predicted classes are
compared). With a trained LeNet-5 checkpoint it also reads --strips random strips of ten
test digits and counts the digits read correctly.

Usage:
    python benchmarks/fcn_speedup.py [--checkpoint runs/lenet5-mnist/best.safetensors]
                                     [--repeats 21] [--vgg-repeats 9] [--strips 100] [--vgg16]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import numpy as np

import cnnkit
import cnnkit.functional as F
from cnnkit import Tensor, models, no_grad
from cnnkit.data import compose_mnist_strip
from cnnkit.explain.summary import summary
from cnnkit.surgery import read_sequence, sliding_window, to_fully_convolutional

MEAN, STD = 0.1307, 0.3081


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(name: str, model, fcn, x: np.ndarray, window, repeats: int) -> dict:
    """Interleave the three ways `repeats` times; return medians and MACs."""
    model.eval()
    fcn.eval()
    ways = {
        "fcn one pass": lambda: fcn(Tensor(x)),
        "sliding, one batch": lambda: sliding_window(model, x, window, fcn.stride, batch_size=10_000),
        "sliding, one window per call": lambda: sliding_window(model, x, window, fcn.stride, batch_size=1),
    }
    times = {k: [] for k in ways}
    with no_grad():
        for fn in ways.values():      # warm-up
            fn()
        for _ in range(repeats):
            for k, fn in ways.items():
                times[k].append(timed(fn))
    OH, OW = fcn(Tensor(x)).shape[-2:]
    one = summary(model, x.shape[1:2] + tuple(window), print_fn=None).total_macs
    whole = summary(fcn, (1,) + x.shape[1:], print_fn=None).total_macs
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    print(f"\n{name}: batch of {len(x)}, input {x.shape[2]}x{x.shape[3]}, {OH}x{OW} = {OH * OW} windows of "
          f"{window[0]}x{window[1]} per image at stride {fcn.stride[1]}, {repeats} interleaved repeats")
    print(f"  MACs per image: fcn {whole:,}; {OH * OW} windows x {one:,} = {OH * OW * one:,} "
          f"({OH * OW * one / whole:.2f}x)")
    for k in ways:
        print(f"  {k:<30} median {1000 * med[k]:9.2f} ms  min {1000 * best[k]:9.2f} ms  "
              f"fcn speed-up: median {med[k] / med['fcn one pass']:5.2f}x, min {best[k] / best['fcn one pass']:5.2f}x")
    return med


def lenet_case(args) -> None:
    rng = np.random.default_rng(args.seed)
    if args.checkpoint and Path(args.checkpoint).exists():
        lenet = cnnkit.load(args.checkpoint)
        trained = True
        print(f"LeNet-5 weights: {args.checkpoint}")
    else:
        lenet = models.lenet5(generator=rng)
        trained = False
        print("LeNet-5 weights: random (no checkpoint given): timings only")
    fcn = to_fully_convolutional(lenet, (1, 28, 28))
    strips = [compose_mnist_strip(10, rng)[0] for _ in range(16)]
    batch = ((np.stack(strips) - MEAN) / STD).astype(np.float32)                 # (16, 1, 28, 280)
    x = batch[:1]                                                                 # (1, 1, 28, 280)
    compare("LeNet-5", lenet, fcn, x, (28, 28), args.repeats)
    compare("LeNet-5", lenet, fcn, batch, (28, 28), args.repeats)

    # exactness: the pass equals the classifier on every 32x32 window of the padded strip
    unpadded = copy.deepcopy(lenet)
    unpadded.features[0].padding = (0, 0)
    with no_grad():
        one = fcn(Tensor(x)).data
    slid = sliding_window(unpadded, F.pad(Tensor(x), (2, 2, 2, 2)).data, (32, 32), fcn.stride).data
    print(f"  max |fcn - sliding over the padded strip| = {np.abs(one - slid).max():.2e}")
    crops = sliding_window(lenet, x, (28, 28), fcn.stride).data
    print(f"  vs. crops padded one by one: max |diff| = {np.abs(one - crops).max():.2e}, "
          f"same class at {100 * (one.argmax(1) == crops.argmax(1)).mean():.1f}% of the positions")
    if not trained:
        return
    correct = total = full = at_least_8 = 0
    for s in range(args.strips):
        strip, labels = compose_mnist_strip(10, np.random.default_rng(1000 + s))
        x = ((strip - MEAN) / STD)[None].astype(np.float32)
        with no_grad():
            probs = F.softmax(fcn(Tensor(x)), dim=1).data[0, :, 0, :]                # (10, 64)
        _, xs = fcn.window_centres((1, probs.shape[1]))
        ink = np.where(strip[0] > 0.2, strip[0], 0).sum(axis=0)
        read = [k for k, _, _ in read_sequence(probs, xs, ink, char_width=20)]
        hits = sum(int(a == b) for a, b in zip(read, labels, strict=True)) if len(read) == len(labels) else 0
        correct, total = correct + hits, total + len(labels)
        full += hits == 10
        at_least_8 += hits >= 8
    print(f"  reading {args.strips} random strips of 10 test digits: {correct}/{total} digits "
          f"({100 * correct / total:.2f}%), {at_least_8} strips with >= 8 of 10, {full} with 10 of 10")


def vgg_case(args) -> None:
    rng = np.random.default_rng(args.seed)
    vgg = models.vgg11_cifar(generator=rng)
    fcn = to_fully_convolutional(vgg, (3, 32, 32))
    batch = rng.standard_normal((4, 3, 96, 96)).astype(np.float32)
    x = batch[:1]
    compare("VGG-11 (CIFAR-style, BatchNorm), random weights", vgg, fcn, x, (32, 32), args.vgg_repeats)
    compare("VGG-11 (CIFAR-style, BatchNorm), random weights", vgg, fcn, batch, (32, 32), args.vgg_repeats)
    with no_grad():
        one = fcn(Tensor(x)).data
    crops = sliding_window(vgg, x, (32, 32), fcn.stride).data
    print(f"  vs. crops: max |diff| = {np.abs(one - crops).max():.2e} (every conv pads: windows see their "
          f"neighbours), same class at {100 * (one.argmax(1) == crops.argmax(1)).mean():.1f}% of the positions")


def vgg16_case(args) -> None:
    """REFERENCES.md: VGG-16's first FC as a 7x7 conv gives 1x1 at 224 and a 6x6 map at 384."""
    rng = np.random.default_rng(args.seed)
    vgg = models.vgg16(generator=rng)
    start = time.perf_counter()
    fcn = to_fully_convolutional(vgg, (3, 224, 224))
    print(f"\nVGG-16 (ImageNet, random weights): converted and verified at 224 in "
          f"{time.perf_counter() - start:.1f}s; first head layer {tuple(fcn.classifier_0.weight.shape)}")
    with no_grad():
        big = fcn(Tensor(rng.standard_normal((1, 3, 384, 384)).astype(np.float32)))
    print(f"  output at 384x384: {tuple(big.shape)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="runs/lenet5-mnist/best.safetensors")
    parser.add_argument("--repeats", type=int, default=21, help="LeNet-5 repeats")
    parser.add_argument("--vgg-repeats", type=int, default=9)
    parser.add_argument("--strips", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vgg16", action="store_true", help="also check VGG-16's 224 -> 1x1, 384 -> 6x6 (slow)")
    args = parser.parse_args()
    cnnkit.manual_seed(args.seed)
    lenet_case(args)
    vgg_case(args)
    if args.vgg16:
        vgg16_case(args)


if __name__ == "__main__":
    main()
