"""The base of every schedule (``LRScheduler``: epochs, base lrs, state_dict) and its
argument checks."""

from __future__ import annotations

import copy
from typing import Any

from ..optimizer import Optimizer

__all__ = ["LRScheduler", "check_optimizer", "per_group"]


def check_optimizer(scheduler: object, optimizer: object) -> None:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"{type(scheduler).__name__} expects a cnnkit.optim.Optimizer, got {type(optimizer).__name__}"
        )


def per_group(scheduler: object, name: str, optimizer: Optimizer, value: Any) -> list[Any]:
    """Return ``value`` once per parameter group; a list or tuple must have one per group."""
    n = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(
                f"{type(scheduler).__name__} expects {n} values of {name} (one per parameter "
                f"group), got {len(value)}"
            )
        return list(value)
    return [value] * n


class LRScheduler:
    """Base class of the schedules: sets ``group['lr']`` from ``get_lr()`` on each ``step()``.

    Args:
        optimizer: the optimizer whose learning rates to set.
        last_epoch: index of the last epoch done; -1 starts a new schedule. Another
            value resumes one, which needs ``group['initial_lr']`` in every group (it
            is in a loaded optimizer state_dict).

    Attributes:
        base_lrs: each group's ``initial_lr``, the lr the schedule started from.
        last_epoch: how many times ``step()`` was called since epoch 0.

    Subclasses implement ``get_lr()``, which reads ``self.last_epoch`` (already
    advanced) and returns the new lr of each group.
    """

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        check_optimizer(self, optimizer)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"{type(self).__name__}(last_epoch={last_epoch}) resumes a schedule and "
                        f"needs 'initial_lr' in param_groups[{i}], got keys {sorted(group)}; load "
                        "the optimizer's state_dict first"
                    )
        self.base_lrs: list[float] = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self) -> None:
        """The first step, which applies epoch 0. Some schedules keep the optimizer's lr there
        instead of computing it (PyTorch's "initial" step); SequentialLR restarts its first
        schedule with it."""
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self) -> list[float]:
        """Return the lr of each parameter group for ``self.last_epoch``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement get_lr")

    def step(self) -> None:
        """Advance the schedule by one epoch (or batch) and write the new lrs."""
        self._step_count += 1
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """Return the lrs written by the last ``step()``, one per parameter group."""
        return list(self._last_lr)

    def _current_lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Return a copy of the scheduler's attributes, without the optimizer."""
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore attributes saved by ``state_dict()`` (load the optimizer's state too)."""
        self.__dict__.update(copy.deepcopy(state_dict))
