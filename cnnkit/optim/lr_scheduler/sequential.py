"""``SequentialLR``: one schedule after another, switching at milestones."""

from __future__ import annotations

import copy
from bisect import bisect_right
from typing import Any

from ..optimizer import Optimizer
from .base import LRScheduler, check_optimizer
from .plateau import ReduceLROnPlateau

__all__ = ["SequentialLR"]


class SequentialLR(LRScheduler):
    """Run schedules one after another, switching at the given epochs, as PyTorch's.

    ``schedulers[i]`` drives the lr from ``milestones[i - 1]`` up to ``milestones[i]``. At a
    milestone the next schedule starts over at its own epoch 0, from the initial lrs
    (``SequentialLR([warmup, cosine], milestones=[5])``: 5 warm-up epochs, then the cosine).
    A schedule with a closed form takes its epoch-0 value from it, as PyTorch's does.

    Args:
        optimizer: the optimizer every schedule was built on.
        schedulers: the schedules, built before (their construction steps are undone).
        milestones: the epochs at which the next schedule takes over, one fewer than schedules.
        last_epoch: see ``LRScheduler``.

    Raises:
        ValueError: no schedule, a ReduceLROnPlateau, a schedule of another optimizer, or a
            number of milestones that is not ``len(schedulers) - 1``.
    """

    def __init__(self, optimizer: Optimizer, schedulers: list[LRScheduler], milestones: list[int],
                 last_epoch: int = -1) -> None:
        check_optimizer(self, optimizer)
        schedulers = list(schedulers)
        if not schedulers:
            raise ValueError("SequentialLR expects at least one scheduler, got none")
        for i, scheduler in enumerate(schedulers):
            if isinstance(scheduler, ReduceLROnPlateau):
                raise ValueError(f"SequentialLR cannot run ReduceLROnPlateau (schedulers[{i}]): its step "
                                 "needs a metric")
            if getattr(scheduler, "optimizer", None) is not optimizer:
                raise ValueError(f"SequentialLR expects every scheduler on its optimizer; schedulers[{i}] "
                                 f"({type(scheduler).__name__}) schedules another")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR expects len(schedulers) - 1 = {len(schedulers) - 1} milestones, "
                             f"got {len(milestones)}")
        self.optimizer = optimizer
        self._schedulers, self._milestones = schedulers, list(milestones)
        self.last_epoch = last_epoch + 1
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        _undo_construction_step(self)
        first = schedulers[bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    def step(self) -> None:
        """Advance one epoch: the current schedule steps, or the next one starts at a milestone."""
        self.last_epoch += 1
        index = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[index]
        if index > 0 and self._milestones[index - 1] == self.last_epoch:
            scheduler.last_epoch = 0
            closed_form = getattr(scheduler, "_closed_form_lrs", None)
            lrs = closed_form() if closed_form is not None else scheduler.get_lr()
            for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
                group["lr"] = lr
            scheduler._last_lr = scheduler._current_lrs()
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        """The attributes without the optimizer, each schedule's own state under ``_schedulers``."""
        state = {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore ``state_dict()``'s attributes and each schedule's state."""
        state = dict(state_dict)
        for scheduler, saved in zip(self._schedulers, state.pop("_schedulers"), strict=True):
            scheduler.load_state_dict(saved)
        self.__dict__.update(copy.deepcopy(state))


def _undo_construction_step(scheduler) -> None:
    """Take back the epoch each schedule stepped when built (nested SequentialLRs included)."""
    for inner in getattr(scheduler, "_schedulers", ()):
        if hasattr(inner, "_schedulers"):
            _undo_construction_step(inner)
        else:
            inner.last_epoch -= 1
