"""Schedules by epoch count: a function of the epoch (``LambdaLR``), a factor every step_size
epochs or at milestones (``StepLR``, ``MultiStepLR``), every epoch (``ExponentialLR``), and a
linear ramp (``LinearLR``)."""

from __future__ import annotations

import copy
import types
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from ..optimizer import Optimizer
from .base import LRScheduler, check_optimizer, per_group

__all__ = ["LambdaLR", "StepLR", "MultiStepLR", "ExponentialLR", "LinearLR"]


class LambdaLR(LRScheduler):
    """Set each lr to its initial value times a function of the epoch.

        lr(t) = initial_lr * lr_lambda(t)

    Args:
        optimizer: the optimizer to schedule.
        lr_lambda: a function of the epoch index, or a list of them, one per group.
        last_epoch: see ``LRScheduler``.

    ``state_dict`` cannot save plain functions: it stores None for them, and the
    ``__dict__`` of callable objects.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        lr_lambda: Callable[[int], float] | list[Callable[[int], float]],
        last_epoch: int = -1,
    ) -> None:
        check_optimizer(self, optimizer)
        self.lr_lambdas = per_group(self, "lr_lambda", optimizer, lr_lambda)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [base * fn(self.last_epoch) for base, fn in zip(self.base_lrs, self.lr_lambdas, strict=True)]

    def state_dict(self) -> dict[str, Any]:
        state = {
            k: copy.deepcopy(v) for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")
        }
        state["lr_lambdas"] = [
            None if isinstance(fn, types.FunctionType) else copy.deepcopy(fn.__dict__)
            for fn in self.lr_lambdas
        ]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = copy.deepcopy(state_dict)
        saved_lambdas = state.pop("lr_lambdas")
        self.__dict__.update(state)
        for fn, saved in zip(self.lr_lambdas, saved_lambdas, strict=True):
            if saved is not None:
                fn.__dict__.update(saved)


class StepLR(LRScheduler):
    """Multiply the lr by gamma every ``step_size`` epochs.

        lr(t) = initial_lr * gamma ** (t // step_size)

    Args:
        optimizer: the optimizer to schedule.
        step_size: period of the decay, in epochs.
        gamma: multiplicative factor of the decay.
        last_epoch: see ``LRScheduler``.
    """

    def __init__(
        self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1
    ) -> None:
        if step_size < 1:
            raise ValueError(f"StepLR expects step_size >= 1, got {step_size}")
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        # Recursive form: multiply the current lr at each multiple of step_size.
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]

    def _closed_form_lrs(self) -> list[float]:
        """The lrs at ``last_epoch`` from the initial ones (``SequentialLR`` restarts a schedule so)."""
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiply the lr by gamma at each milestone epoch.

        lr(t) = initial_lr * gamma ** (number of milestones <= t)

    Args:
        optimizer: the optimizer to schedule.
        milestones: epoch indices (a milestone listed twice decays twice).
        gamma: multiplicative factor of the decay.
        last_epoch: see ``LRScheduler``.
    """

    def __init__(
        self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1, last_epoch: int = -1
    ) -> None:
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch not in self.milestones:
            return self._current_lrs()
        factor = self.gamma ** self.milestones[self.last_epoch]
        return [lr * factor for lr in self._current_lrs()]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        # A JSON round trip turns the epochs into strings; get_lr looks them up as ints.
        self.milestones = Counter({int(epoch): count for epoch, count in self.milestones.items()})

    def _closed_form_lrs(self) -> list[float]:
        """The lrs at ``last_epoch`` from the initial ones (``SequentialLR`` restarts a schedule so)."""
        passed = sum(n for epoch, n in self.milestones.items() if epoch <= self.last_epoch)
        return [base * self.gamma**passed for base in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Multiply the lr by gamma every epoch.

        lr(t) = initial_lr * gamma ** t

    Args:
        optimizer: the optimizer to schedule.
        gamma: multiplicative factor per epoch.
        last_epoch: see ``LRScheduler``.
    """

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self._is_initial:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]

    def _closed_form_lrs(self) -> list[float]:
        """The lrs at ``last_epoch`` from the initial ones (``SequentialLR`` restarts a schedule so)."""
        return [base * self.gamma**self.last_epoch for base in self.base_lrs]


class LinearLR(LRScheduler):
    """Scale the lr by a factor that moves linearly from start_factor to end_factor.

        lr(t) = initial_lr * (start_factor + (end_factor - start_factor) * min(t, total_iters) / total_iters)

    computed recursively (each step multiplies the current lr by the ratio of
    consecutive factors), as PyTorch does. A common warm-up.

    Args:
        optimizer: the optimizer to schedule.
        start_factor: factor at epoch 0, in (0, 1].
        end_factor: factor from epoch ``total_iters`` on, in [0, 1].
        total_iters: number of epochs of the ramp.
        last_epoch: see ``LRScheduler``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        if not 0 < start_factor <= 1:
            raise ValueError(f"LinearLR expects 0 < start_factor <= 1, got {start_factor}")
        if not 0 <= end_factor <= 1:
            raise ValueError(f"LinearLR expects 0 <= end_factor <= 1, got {end_factor}")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        t = self.last_epoch
        if t == 0:
            return [lr * self.start_factor for lr in self._current_lrs()]
        if self._is_initial or t > self.total_iters:
            return self._current_lrs()
        slope = self.end_factor - self.start_factor
        ratio = 1.0 + slope / (self.total_iters * self.start_factor + (t - 1) * slope)
        return [lr * ratio for lr in self._current_lrs()]

    def _closed_form_lrs(self) -> list[float]:
        """The lrs at ``last_epoch`` from the initial ones (``SequentialLR`` restarts a schedule so)."""
        done = min(self.total_iters, self.last_epoch) / self.total_iters
        factor = self.start_factor + (self.end_factor - self.start_factor) * done
        return [base * factor for base in self.base_lrs]
