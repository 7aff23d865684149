"""Training recipes: the defaults of ``cnnkit train`` and the fine-tuning after pruning.

``recipe_for(model, dataset)`` gives epochs, batch size, optimizer and learning rate;
LeNet-5 on MNIST reaches >= 99.0% test accuracy with its recipe (BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import optim
from ..data import DataLoader
from .callbacks import NaNGuard
from .loop import fit

__all__ = ["Recipe", "recipe_for", "make_optimizer", "default_lr", "finetune", "replan_schedule"]


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
    """Train ``model`` for ``epochs`` epochs: SGD (Nesterov momentum 0.9, weight decay 5e-4), one-cycle lr.

    Raises:
        NonFiniteError: the loss went NaN or Inf (e.g. too high a learning rate); the model's
            weights are then those of the last finite step, never NaN.
    """
    if epochs <= 0:
        return
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=np.random.default_rng(seed + 1))
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scheduler = optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs, steps_per_epoch=len(loader))
    fit(model, loader, epochs=epochs, optimizer=opt, scheduler=scheduler, callbacks=[NaNGuard()])
    model.eval()


def replan_schedule(scheduler, saved_state: dict) -> None:
    """Resume ``scheduler`` from ``saved_state`` but keep its own plan (a run extended or shortened).

    ``scheduler`` was built for the run's new length (e.g. ``OneCycleLR`` over more epochs);
    ``saved_state`` is its ``state_dict()`` from the checkpoint, planned for the old
    length. The steps already taken are kept; the plan (for ``OneCycleLR``: the total
    number of steps and its phases) is the new one, and the optimizer's learning rates
    (and momentum) are set to the new plan's values at the current step, so the next
    batch follows the new plan as a run planned that long from the start would at that
    step. The optimizer's state must be loaded first.
    """
    plan_keys = [k for k in ("total_steps", "_schedule_phases") if k in scheduler.__dict__]
    plan = {k: scheduler.__dict__[k] for k in plan_keys}
    scheduler.load_state_dict(saved_state)
    scheduler.__dict__.update(plan)
    if scheduler.last_epoch >= 0:
        lrs = scheduler.get_lr()  # OneCycleLR's get_lr also sets the cycled momentum
        for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        scheduler._last_lr = list(lrs)
