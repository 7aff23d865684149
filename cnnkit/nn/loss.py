"""Loss layers: CrossEntropyLoss, NLLLoss, MSELoss, BCEWithLogitsLoss, BCELoss, L1Loss,
SmoothL1Loss, HuberLoss.

Class weights are buffers (they appear in ``state_dict``), as in PyTorch.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..tensor import Tensor
from .module import Module

__all__ = [
    "CrossEntropyLoss", "NLLLoss", "MSELoss", "BCEWithLogitsLoss", "BCELoss", "L1Loss", "SmoothL1Loss",
    "HuberLoss",
]


def _optional_array(value):
    if value is None or isinstance(value, Tensor):
        return value
    return np.asarray(value)


class CrossEntropyLoss(Module):
    """Softmax cross-entropy between logits and class indices (or class probabilities).

    Args:
        weight: optional per-class weights (K,).
        ignore_index: target value whose rows count neither in the loss nor the mean.
        reduction: "mean", "sum" or "none".
        label_smoothing: e in [0, 1]; the target becomes (1 - e) * onehot + e / K.

    Shape: logits (N, K) or (N, K, d1, ...); target (N,) / (N, d1, ...) integers, or
    probabilities shaped like the logits -> a scalar ("none": the per-row losses).
    """

    def __init__(
        self, weight=None, *, ignore_index: int = -100, reduction: str = "mean",
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.register_buffer("weight", _optional_array(weight))
        self.ignore_index, self.reduction, self.label_smoothing = ignore_index, reduction, label_smoothing

    def forward(self, input: Tensor, target) -> Tensor:
        return F.cross_entropy(
            input, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing
        )


class NLLLoss(Module):
    """Negative log-likelihood of log-probabilities (pair with LogSoftmax).

    Args: weight, ignore_index, reduction as CrossEntropyLoss.

    Shape: log-probabilities (N, K) or (N, K, d1, ...), target (N,) or (N, d1, ...) -> a scalar.
    """

    def __init__(self, weight=None, *, ignore_index: int = -100, reduction: str = "mean"):
        super().__init__()
        self.register_buffer("weight", _optional_array(weight))
        self.ignore_index, self.reduction = ignore_index, reduction

    def forward(self, input: Tensor, target) -> Tensor:
        return F.nll_loss(input, target, self.weight, self.ignore_index, self.reduction)


class MSELoss(Module):
    """Mean squared error: mean((input - target) ** 2).

    Args:
        reduction: "mean", "sum" or "none".

    Shape: input and target of one shape -> a scalar ("none": that shape).
    """

    def __init__(self, *, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, input: Tensor, target) -> Tensor:
        return F.mse_loss(input, target, self.reduction)


class BCEWithLogitsLoss(Module):
    """Binary cross-entropy on logits (sigmoid fused in, numerically stable).

    Args:
        weight: optional weights broadcast against the input.
        reduction: "mean", "sum" or "none".
        pos_weight: optional weight of the positive term, per class (broadcast).

    Shape: input and target of one shape -> a scalar ("none": that shape).
    """

    def __init__(self, weight=None, *, reduction: str = "mean", pos_weight=None):
        super().__init__()
        self.register_buffer("weight", _optional_array(weight))
        self.register_buffer("pos_weight", _optional_array(pos_weight))
        self.reduction = reduction

    def forward(self, input: Tensor, target) -> Tensor:
        return F.binary_cross_entropy_with_logits(input, target, self.weight, self.reduction, self.pos_weight)


class BCELoss(Module):
    """Binary cross-entropy of probabilities (each log clamped at -100, as PyTorch).

    Args:
        weight: optional weights broadcast against the input.
        reduction: "mean", "sum" or "none".

    Shape: input (probabilities in [0, 1]) and target of one shape -> a scalar ("none": that shape).
    """

    def __init__(self, weight=None, *, reduction: str = "mean"):
        super().__init__()
        self.register_buffer("weight", _optional_array(weight))
        self.reduction = reduction

    def forward(self, input: Tensor, target) -> Tensor:
        return F.binary_cross_entropy(input, target, self.weight, self.reduction)


class L1Loss(Module):
    """Mean absolute error: mean(|input - target|).

    Args:
        reduction: "mean", "sum" or "none".

    Shape: input and target of one shape -> a scalar ("none": that shape).
    """

    def __init__(self, *, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, input: Tensor, target) -> Tensor:
        return F.l1_loss(input, target, self.reduction)


class SmoothL1Loss(Module):
    """Smooth L1: 0.5 d**2 / beta where |d| < beta, |d| - 0.5 beta elsewhere (d = input - target).

    Args:
        reduction: "mean", "sum" or "none".
        beta: where the quadratic part ends (>= 0; 0 is L1Loss).

    Shape: input and target of one shape -> a scalar ("none": that shape).
    """

    def __init__(self, *, reduction: str = "mean", beta: float = 1.0):
        super().__init__()
        self.reduction, self.beta = reduction, beta

    def forward(self, input: Tensor, target) -> Tensor:
        return F.smooth_l1_loss(input, target, self.reduction, self.beta)


class HuberLoss(Module):
    """Huber: 0.5 d**2 where |d| < delta, delta * (|d| - 0.5 delta) elsewhere (d = input - target).

    Args:
        reduction: "mean", "sum" or "none".
        delta: where the quadratic part ends (> 0).

    Shape: input and target of one shape -> a scalar ("none": that shape).
    """

    def __init__(self, reduction: str = "mean", delta: float = 1.0):  # positional, as torch's
        super().__init__()
        self.reduction, self.delta = reduction, delta

    def forward(self, input: Tensor, target) -> Tensor:
        return F.huber_loss(input, target, self.reduction, self.delta)
