"""Training recipes: the defaults of ``cnnkit train`` and the fine-tuning after pruning.

``recipe_for(model, dataset)`` gives epochs, batch size, optimizer and learning rate;
LeNet-5 on MNIST reaches >= 99.0% test accuracy with its recipe (BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import optim
from ..data import DataLoader
from .loop import fit

__all__ = ["Recipe", "recipe_for", "make_optimizer", "default_lr", "finetune"]


@dataclass
class Recipe:
    """A training recipe: the defaults of ``cnnkit train``."""

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    weight_decay: float = 5e-4
    momentum: float = 0.9


def recipe_for(model_name: str, dataset: str) -> Recipe:
    """The default recipe; LeNet-5 on MNIST reaches >= 99.0% test accuracy with it."""
    if model_name.startswith("lenet"):
        return Recipe(epochs=10, batch_size=64, optimizer="sgd", lr=0.05, weight_decay=5e-4)
    return Recipe(epochs=30, batch_size=128, optimizer="sgd", lr=0.1, weight_decay=5e-4)


def make_optimizer(name: str, params, recipe: Recipe, lr: float) -> optim.Optimizer:
    """The recipe's optimizer: "sgd" (Nesterov momentum, the recipe's weight decay), "adam" or "adamw"."""
    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=recipe.momentum, nesterov=True, weight_decay=recipe.weight_decay)
    if name == "adam":
        return optim.Adam(params, lr=lr)
    return optim.AdamW(params, lr=lr, weight_decay=0.01)


def default_lr(name: str, recipe: Recipe) -> float:
    """The recipe's learning rate for SGD; 1e-3 for Adam and AdamW."""
    return recipe.lr if name == "sgd" else 1e-3


def finetune(model, train_set, epochs: int, lr: float, batch_size: int = 64, seed: int = 0) -> None:
    """Train ``model`` for ``epochs`` epochs: SGD (Nesterov momentum 0.9, weight decay 5e-4), one-cycle lr."""
    if epochs <= 0:
        return
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=np.random.default_rng(seed + 1))
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scheduler = optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs, steps_per_epoch=len(loader))
    fit(model, loader, epochs=epochs, optimizer=opt, scheduler=scheduler)
    model.eval()
