"""Checks the commands run before any real work: will one step fit in memory?

A batch (or an input) too large for the machine used to end, after minutes, in a
MemoryError traceback or in the kernel's OOM killer. ``check_step_memory`` measures one
small step first (``cnnkit.train.memory``) and refuses with the estimate and the largest
batch that fits.
"""

from __future__ import annotations

from ..errors import UsageError
from ..files import format_bytes
from ..train.memory import available_memory, estimate_step_memory

__all__ = ["check_step_memory"]

# Leave room for the rest of the process (the data, Python, the other copies).
_USABLE_SHARE = 0.9


def check_step_memory(model, input_shape: tuple[int, ...], batch_size: int, *, train: bool, name: str,
                      batch_option: str | None = "--batch-size", optimizer_slots: int = 1, sharers: int = 1) -> None:
    """Refuse (UsageError) a step of ``model`` on ``batch_size`` inputs that will not fit in memory.

    Args:
        name: what runs, for the message ("training resnet18").
        batch_option: the option that sets the batch size (None: the batch is fixed).
        sharers: processes on this machine that each take such a step at once (the ranks of a
            data-parallel job on one machine): each may use its share of the memory.
    """
    available = available_memory()
    if available is None:
        return
    estimate = estimate_step_memory(model, input_shape, batch_size, train=train, optimizer_slots=optimizer_slots)
    usable = int(available * _USABLE_SHARE / max(sharers, 1))
    if estimate.total <= usable:
        return
    shape = "x".join(str(d) for d in input_shape)
    fits = estimate.largest_batch(usable)
    if batch_option and fits >= 1:
        fix = f"use {batch_option} {fits} or less"
    else:
        fix = "use a smaller input" + (f" (not even {batch_option} 1 fits)" if batch_option else "")
    raise UsageError(f"{name} on {batch_size:,} input(s) of {shape} needs {estimate} of memory; "
                     f"{format_bytes(available)} is available"
                     f"{f', shared by the {sharers} ranks on this machine' if sharers > 1 else ''}: {fix}")
