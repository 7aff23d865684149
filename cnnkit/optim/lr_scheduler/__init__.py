"""Learning-rate schedules that write ``group['lr']`` of an optimizer, as ``torch.optim.lr_scheduler``.

Usage: build the scheduler after the optimizer, call ``optimizer.step()`` for each batch
and ``scheduler.step()`` once per epoch (or per batch for ``OneCycleLR``), after the
optimizer step. Building a scheduler already applies the schedule's value for epoch 0.

Each schedule reproduces PyTorch's numbers, including its recursive forms: a schedule
that multiplies the current lr (``StepLR``, ``CosineAnnealingLR``, ...) composes with
another scheduler or a manual change of ``group['lr']`` the way PyTorch's does.

One module per family: ``base.py`` (``LRScheduler``), ``step.py`` (LambdaLR, StepLR,
MultiStepLR, ExponentialLR, LinearLR), ``cosine.py`` (CosineAnnealingLR,
CosineAnnealingWarmRestarts, OneCycleLR), ``plateau.py`` (ReduceLROnPlateau),
``sequential.py`` (SequentialLR); all are imported from here, as PyTorch's one module.
"""

from __future__ import annotations

from .base import LRScheduler
from .cosine import CosineAnnealingLR, CosineAnnealingWarmRestarts, OneCycleLR
from .plateau import ReduceLROnPlateau
from .sequential import SequentialLR
from .step import ExponentialLR, LambdaLR, LinearLR, MultiStepLR, StepLR

__all__ = [
    "LRScheduler",
    "LambdaLR",
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "LinearLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "OneCycleLR",
    "ReduceLROnPlateau",
    "SequentialLR",
]
