"""LeNet-5 channel pruning on MNIST: prune + fine-tune vs the original, and vs the thin net from scratch.

Starts from a LeNet-5 trained by ``cnnkit train lenet5`` and

1. prunes --amount of the channels of both conv layers (L1 filter norm), measures the
   test accuracy right away, fine-tunes for --finetune-epochs and measures it again;
2. checks the issue's bar: within 0.5 percentage points of the original's test accuracy
   with at most half the conv parameters;
3. optionally (--scratch-epochs E > 0) trains ``uniform_width(lenet5, amount)`` (the same
   thin shapes, new weights) from scratch for E epochs with ``cnnkit train``'s recipe
   (SGD Nesterov, one-cycle lr 0.05, batch 64), for the articles' comparison;
4. times inference of the original and the pruned model, interleaved (batch 1000).

Usage:
    python benchmarks/prune_lenet5.py [--checkpoint runs/lenet5-mnist/best.safetensors]
        [--amount 0.5] [--finetune-epochs 2] [--scratch-epochs 0] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import cnnkit
from cnnkit import optim
from cnnkit.data import MNIST, DataLoader
from cnnkit.data import transforms as T
from cnnkit.surgery import conv_parameters, images_per_second, measure, prune_channels, uniform_width
from cnnkit.train import finetune, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="runs/lenet5-mnist/best.safetensors")
    parser.add_argument("--amount", type=float, default=0.5)
    parser.add_argument("--criterion", default="l1")
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--scratch-epochs", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cnnkit.manual_seed(args.seed)

    steps = T.Compose([T.ToTensor(), T.Normalize((0.1307,), (0.3081,))])
    train_set, test_set = MNIST(train=True, transform=steps), MNIST(train=False, transform=steps)
    shape = (1, 28, 28)

    original = cnnkit.load(args.checkpoint)
    before = measure(original, shape, test_set)
    print(f"original {args.checkpoint}: {before['params']:,} parameters ({before['conv_params']:,} in conv "
          f"layers), {before['macs']:,} MACs, test accuracy {100 * before['accuracy']:.2f}%")

    pruned = prune_channels(original, args.amount, args.criterion, "conv", input_shape=shape)
    right_away = measure(pruned, shape, test_set)
    print(f"pruned {100 * args.amount:g}% of the conv channels ({args.criterion}): "
          f"{right_away['params']:,} parameters ({right_away['conv_params']:,} in conv layers), "
          f"{right_away['macs']:,} MACs, test accuracy {100 * right_away['accuracy']:.2f}% before fine-tuning")
    start = time.perf_counter()
    finetune(pruned, train_set, args.finetune_epochs, args.lr, 64, args.seed)
    after = measure(pruned, shape, test_set)
    print(f"after {args.finetune_epochs} fine-tuning epoch(s) ({time.perf_counter() - start:.0f}s, "
          f"lr {args.lr} one-cycle): test accuracy {100 * after['accuracy']:.2f}%")

    drop = 100 * (before["accuracy"] - after["accuracy"])
    conv_share = after["conv_params"] / before["conv_params"]
    ok = drop <= 0.5 and conv_share <= 0.5
    print(f"bar: accuracy change {-drop:+.2f} pp (allowed -0.50), conv parameters kept {100 * conv_share:.1f}% "
          f"(allowed 50%): {'PASS' if ok else 'FAIL'}")

    ips = images_per_second([original, pruned], test_set, batch=1000, repeats=9)
    print(f"inference (batch 1000, 9 interleaved repeats, median): original {ips[0]:,.0f} images/s, "
          f"pruned {ips[1]:,.0f} images/s ({ips[1] / ips[0]:.2f}x)")

    if args.scratch_epochs > 0:
        thin = uniform_width(original, args.amount, input_shape=shape, generator=np.random.default_rng(args.seed))
        loader = DataLoader(train_set, batch_size=64, shuffle=True, generator=np.random.default_rng(args.seed + 1))
        opt = optim.SGD(thin.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
        scheduler = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, epochs=args.scratch_epochs,
                                                  steps_per_epoch=len(loader))
        start = time.perf_counter()
        fit(thin, loader, epochs=args.scratch_epochs, optimizer=opt, scheduler=scheduler)
        scratch = measure(thin, shape, test_set)
        print(f"uniform_width({args.amount}) from scratch, {args.scratch_epochs} epochs "
              f"({time.perf_counter() - start:.0f}s): {scratch['params']:,} parameters "
              f"({conv_parameters(thin):,} in conv layers), test accuracy {100 * scratch['accuracy']:.2f}%")


if __name__ == "__main__":
    main()
