"""Time to accuracy: `cnnkit train lenet5`'s default recipe vs the same recipe in PyTorch.

The recipe (cnnkit.train.recipe_for("lenet5", "mnist")): LeNet-5 (ReLU, max pooling),
MNIST normalized with mean 0.1307 / std 0.3081, batch 64 reshuffled each epoch, SGD with
Nesterov momentum 0.9 and weight decay 5e-4, a one-cycle learning rate peaking at 0.05,
10 epochs. Both frameworks train side by side in one process, one epoch each in turn
(alternating who goes first), and are evaluated on the 10,000 test images after every
epoch. Reported: wall time of the training epochs, final test accuracy, the ratio.

The helpers below (the PyTorch twin of a cnnkit SGD + one-cycle optimizer, a PyTorch
training epoch, test accuracy, the same-start check) are shared with
``train_resnet20_vs_torch.py``.

Usage:
    python benchmarks/train_recipe_vs_torch.py [--epochs 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable

import numpy as np
import torch

import cnnkit
from cnnkit import models, optim
from cnnkit.data import load_mnist
from cnnkit.train import recipe_for

__all__ = ["TorchLeNet5", "torch_sgd_like", "torch_epoch", "accuracy", "predict_cnnkit", "predict_torch",
           "load_into_torch", "assert_same_start"]

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


def load_into_torch(ours, theirs: torch.nn.Module) -> None:
    """Copy cnnkit model ``ours``'s parameters and buffers into its torch twin (the same keys, strict)."""
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})


def torch_sgd_like(ours, opt_ours: optim.SGD, sched_ours: optim.lr_scheduler.OneCycleLR,
                   theirs: torch.nn.Module) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.OneCycleLR]:
    """A new torch.optim.SGD + OneCycleLR with the settings of cnnkit's, group for group, at step 0.

    Each cnnkit parameter group becomes a torch group of the same parameters (matched by
    name through ``ours``'s ``named_parameters``) with its Nesterov flag, dampening and
    weight decay; the schedule gets cnnkit's total steps, warm-up share, peak, initial and
    final learning rates, momentum range and annealing. Only settings that stepping does
    not change are read, so ``opt_ours`` may already have trained.
    """
    if not isinstance(opt_ours, optim.SGD) or not isinstance(sched_ours, optim.lr_scheduler.OneCycleLR):
        raise NotImplementedError(f"torch_sgd_like copies SGD + OneCycleLR, got {type(opt_ours).__name__} + "
                                  f"{type(sched_ours).__name__}")
    name_of = {id(p): name for name, p in ours.named_parameters()}
    tensors = dict(theirs.named_parameters())
    keys = ("momentum", "nesterov", "dampening", "weight_decay")
    groups = [{"params": [tensors[name_of[id(p)]] for p in g["params"]], "lr": g["max_lr"],
               **{k: g[k] for k in keys}} for g in opt_ours.param_groups]
    opt = torch.optim.SGD(groups)
    first = opt_ours.param_groups[0]
    phases = sched_ours._schedule_phases
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["max_lr"] for g in opt_ours.param_groups], total_steps=sched_ours.total_steps,
        pct_start=(phases[0]["end_step"] + 1) / sched_ours.total_steps, anneal_strategy=sched_ours._anneal_func_type,
        cycle_momentum=sched_ours.cycle_momentum,
        base_momentum=[g.get("base_momentum", 0.85) for g in opt_ours.param_groups],
        max_momentum=[g.get("max_momentum", 0.95) for g in opt_ours.param_groups],
        div_factor=first["max_lr"] / first["initial_lr"], final_div_factor=first["initial_lr"] / first["min_lr"],
        three_phase=len(phases) == 3)
    return opt, sched


def torch_epoch(model: torch.nn.Module, opt, sched, batches: Iterable[tuple[np.ndarray, np.ndarray]]
                ) -> tuple[list[float], list[float]]:
    """One training epoch over (x, labels) NumPy batches; returns each step's (loss, learning rate of group 0)."""
    model.train()
    losses, lrs = [], []
    for x, y in batches:
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses, lrs


def predict_cnnkit(model) -> Callable[[np.ndarray], np.ndarray]:
    def predict(x):
        model.eval()
        with cnnkit.no_grad():
            return model(cnnkit.Tensor(x)).data
    return predict


def predict_torch(model: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    def predict(x):
        model.eval()
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()
    return predict


def accuracy(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, batch: int = 1000) -> float:
    """Share of ``x`` whose arg-max logit is the label, predicted ``batch`` images at a time."""
    correct = sum(int((predict(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
                  for i in range(0, len(x), batch))
    return correct / len(x)


def assert_same_start(ours, theirs: torch.nn.Module, x: np.ndarray) -> float:
    """Check both models give the same eval-mode logits on ``x`` (to 1e-4); return the max abs difference."""
    a, b = predict_cnnkit(ours)(x), predict_torch(theirs)(x)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()),
                               err_msg="cnnkit and PyTorch do not start from the same model")
    return float(np.abs(a - b).max())


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
    load_into_torch(ours, theirs)
    difference = assert_same_start(ours, theirs, xt[:1000])
    opt_ours = optim.SGD(ours.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=True,
                         weight_decay=recipe.weight_decay)
    sched_ours = optim.lr_scheduler.OneCycleLR(opt_ours, max_lr=recipe.lr, epochs=epochs, steps_per_epoch=steps)
    opt_theirs, sched_theirs = torch_sgd_like(ours, opt_ours, sched_ours, theirs)
    rng = np.random.default_rng(args.seed)

    def batches(order):
        for i in range(steps):
            idx = order[i * recipe.batch_size : (i + 1) * recipe.batch_size]
            yield x[idx], y[idx]

    def epoch_ours(order):
        ours.train()
        for xb, yb in batches(order):
            loss = cnnkit.functional.cross_entropy(ours(cnnkit.Tensor(xb)), yb)
            opt_ours.zero_grad()
            loss.backward()
            opt_ours.step()
            sched_ours.step()

    def epoch_theirs(order):
        torch_epoch(theirs, opt_theirs, sched_theirs, batches(order))

    wall = {"cnnkit": 0.0, "torch": 0.0}
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}; "
          f"{epochs} epochs, batch {recipe.batch_size}, SGD nesterov lr {recipe.lr} one-cycle; "
          f"same start: max |logit difference| {difference:.1e}")
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
        acc_ours, acc_theirs = accuracy(predict_cnnkit(ours), xt, yt), accuracy(predict_torch(theirs), xt, yt)
        print(f"| {epoch + 1} | {seconds['cnnkit']:.1f} | {seconds['torch']:.1f} | {acc_ours:.4f} | {acc_theirs:.4f} |",
              flush=True)
    print(f"\ntraining wall time: cnnkit {wall['cnnkit']:.1f}s, PyTorch {wall['torch']:.1f}s "
          f"(cnnkit takes {wall['cnnkit'] / wall['torch']:.2f}x PyTorch's time); "
          f"final test accuracy cnnkit {acc_ours:.4f}, PyTorch {acc_theirs:.4f}")


if __name__ == "__main__":
    main()
