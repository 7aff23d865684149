"""Time to accuracy: `cnnkit train lenet5`'s default recipe vs the same recipe in PyTorch.

The recipe (cnnkit.train.recipe_for("lenet5", "mnist")): LeNet-5 (ReLU, max pooling),
MNIST normalized with mean 0.1307 / std 0.3081, batch 64 reshuffled each epoch, SGD with
Nesterov momentum 0.9 and weight decay 5e-4, a one-cycle learning rate peaking at 0.05,
10 epochs. Both frameworks train side by side in one process, one epoch each in turn
(alternating who goes first), and are evaluated on the 10,000 test images after every
epoch. Reported: wall time of the training epochs, final test accuracy, the ratio.

Usage:
    python benchmarks/train_recipe_vs_torch.py [--epochs 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import cnnkit
from cnnkit import models, optim
from cnnkit.data import load_mnist
from cnnkit.train import recipe_for

MEAN, STD = 0.1307, 0.3081


class TorchLeNet5(torch.nn.Module):
    """The torch.nn twin of cnnkit.models.lenet5 (same state_dict keys)."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.features = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                                        nn.Linear(84, 10))

    def forward(self, x):
        return self.classifier(self.flatten(self.features(x)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    recipe = recipe_for("lenet5", "mnist")
    epochs = args.epochs or recipe.epochs
    x, y = load_mnist("train")
    xt, yt = load_mnist("test")
    x = ((x.astype(np.float32) / 255 - MEAN) / STD)[:, None]
    xt = ((xt.astype(np.float32) / 255 - MEAN) / STD)[:, None]
    y, yt = y.astype(np.int64), yt.astype(np.int64)
    steps = len(x) // recipe.batch_size  # drop the last partial batch in both

    cnnkit.manual_seed(args.seed)
    ours = models.lenet5()
    theirs = TorchLeNet5()
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    kw = dict(momentum=recipe.momentum, nesterov=True, weight_decay=recipe.weight_decay)
    opt_ours = optim.SGD(ours.parameters(), lr=recipe.lr, **kw)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=recipe.lr, **kw)
    sched_ours = optim.lr_scheduler.OneCycleLR(opt_ours, max_lr=recipe.lr, epochs=epochs, steps_per_epoch=steps)
    sched_theirs = torch.optim.lr_scheduler.OneCycleLR(opt_theirs, max_lr=recipe.lr, epochs=epochs,
                                                       steps_per_epoch=steps)
    rng = np.random.default_rng(args.seed)

    def epoch_ours(order):
        ours.train()
        for i in range(steps):
            idx = order[i * recipe.batch_size : (i + 1) * recipe.batch_size]
            loss = cnnkit.functional.cross_entropy(ours(cnnkit.Tensor(x[idx])), y[idx])
            opt_ours.zero_grad()
            loss.backward()
            opt_ours.step()
            sched_ours.step()

    def epoch_theirs(order):
        theirs.train()
        for i in range(steps):
            idx = order[i * recipe.batch_size : (i + 1) * recipe.batch_size]
            loss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x[idx])), torch.from_numpy(y[idx]))
            opt_theirs.zero_grad()
            loss.backward()
            opt_theirs.step()
            sched_theirs.step()

    def accuracy(model_fn):
        correct = 0
        for i in range(0, len(xt), 1000):
            correct += int((model_fn(xt[i : i + 1000]).argmax(1) == yt[i : i + 1000]).sum())
        return correct / len(xt)

    def predict_ours(b):
        ours.eval()
        with cnnkit.no_grad():
            return ours(cnnkit.Tensor(b)).data

    def predict_theirs(b):
        theirs.eval()
        with torch.no_grad():
            return theirs(torch.from_numpy(b)).numpy()

    wall = {"cnnkit": 0.0, "torch": 0.0}
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}; "
          f"{epochs} epochs, batch {recipe.batch_size}, SGD nesterov lr {recipe.lr} one-cycle")
    print("| epoch | cnnkit s | PyTorch s | cnnkit test acc | PyTorch test acc |")
    print("|---|---|---|---|---|")
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        runs = [("cnnkit", epoch_ours), ("torch", epoch_theirs)]
        if epoch % 2:
            runs.reverse()
        seconds = {}
        for name, fn in runs:
            start = time.perf_counter()
            fn(order)
            seconds[name] = time.perf_counter() - start
            wall[name] += seconds[name]
        acc_ours, acc_theirs = accuracy(predict_ours), accuracy(predict_theirs)
        print(f"| {epoch + 1} | {seconds['cnnkit']:.1f} | {seconds['torch']:.1f} | {acc_ours:.4f} | {acc_theirs:.4f} |",
              flush=True)
    print(f"\ntraining wall time: cnnkit {wall['cnnkit']:.1f}s, PyTorch {wall['torch']:.1f}s "
          f"(cnnkit takes {wall['cnnkit'] / wall['torch']:.2f}x PyTorch's time); "
          f"final test accuracy cnnkit {acc_ours:.4f}, PyTorch {acc_theirs:.4f}")


if __name__ == "__main__":
    main()
