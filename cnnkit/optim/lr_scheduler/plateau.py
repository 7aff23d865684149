"""``ReduceLROnPlateau``: a factor when a metric stops improving."""

from __future__ import annotations

import math
from typing import Any

from ...tensor import Tensor
from ..optimizer import Optimizer
from .base import LRScheduler, check_optimizer, per_group

__all__ = ["ReduceLROnPlateau"]


class ReduceLROnPlateau(LRScheduler):
    """Multiply the lr by ``factor`` when a metric has stopped improving for ``patience`` epochs.

    Call ``step(metric)`` once per epoch with, e.g., the validation loss. A value is an
    improvement when (mode, threshold_mode):

        (min, rel): metric < best * (1 - threshold)     (min, abs): metric < best - threshold
        (max, rel): metric > best * (1 + threshold)     (max, abs): metric > best + threshold

    After more than ``patience`` epochs without one, each lr becomes
    ``max(lr * factor, min_lr)`` (skipped when that changes it by eps or less), and the
    next ``cooldown`` epochs are not counted.

    Args:
        optimizer: the optimizer to schedule.
        mode: "min" (loss) or "max" (accuracy).
        factor: multiplier of the lr on a plateau, < 1.
        patience: epochs without improvement tolerated before reducing.
        threshold: least change that counts as an improvement.
        threshold_mode: "rel" or "abs" (see above).
        cooldown: epochs to wait after a reduction before counting again.
        min_lr: lower bound of the lr, or one per group.
        eps: smallest change of the lr worth applying.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float | list[float] = 0.0,
        eps: float = 1e-8,
    ) -> None:
        check_optimizer(self, optimizer)
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau expects factor < 1, got {factor}")
        self.optimizer = optimizer
        self.factor = factor
        self.default_min_lr = None if isinstance(min_lr, (list, tuple)) else min_lr
        self.min_lrs = per_group(self, "min_lr", optimizer, min_lr)
        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = self._current_lrs()
        self._init_is_better(mode, threshold, threshold_mode)
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def _init_is_better(self, mode: str, threshold: float, threshold_mode: str) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau expects mode 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(
                f"ReduceLROnPlateau expects threshold_mode 'rel' or 'abs', got {threshold_mode!r}"
            )
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode
        self.mode_worse = math.inf if mode == "min" else -math.inf

    def _is_better(self, current: float, best: float) -> bool:
        """Return True when ``current`` improves on ``best`` by more than the threshold."""
        if self.mode == "min" and self.threshold_mode == "rel":
            return current < best * (1.0 - self.threshold)
        if self.mode == "min":
            return current < best - self.threshold
        if self.threshold_mode == "rel":
            return current > best * (self.threshold + 1.0)
        return current > best + self.threshold

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def step(self, metrics: float | Tensor) -> None:  # type: ignore[override]
        """Record this epoch's metric and reduce the lrs after a plateau."""
        current = float(metrics.item() if isinstance(metrics, Tensor) else metrics)
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = self._current_lrs()

    def _reduce_lr(self) -> None:
        groups = self.optimizer.param_groups
        if len(self.min_lrs) != len(groups):
            if self.default_min_lr is None:
                raise RuntimeError(
                    f"ReduceLROnPlateau was built with {len(self.min_lrs)} min_lr values, the optimizer "
                    f"now has {len(groups)} parameter groups; set scheduler.min_lrs to one per group"
                )
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, min_lr in zip(groups, self.min_lrs, strict=True):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, min_lr)
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._init_is_better(self.mode, self.threshold, self.threshold_mode)
