"""Loss layers: CrossEntropyLoss, NLLLoss, MSELoss, BCEWithLogitsLoss, BCELoss, L1Loss,
SmoothL1Loss, HuberLoss.

Class weights are buffers (they appear in ``state_dict``), as in PyTorch. The constructors
take PyTorch's arguments in PyTorch's order, the deprecated ``size_average`` and ``reduce``
included: given, they set ``reduction`` by PyTorch's mapping, with its warning
(``functional.loss.legacy_reduction``).
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..functional.loss import legacy_reduction
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
        self, weight=None, size_average=None, ignore_index: int = -100, reduce=None, reduction: str = "mean",
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.register_buffer("weight", _optional_array(weight))
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing
        self.reduction = legacy_reduction("CrossEntropyLoss", size_average, reduce, reduction)

    def forward(self, input: Tensor, target) -> Tensor:
        return F.cross_entropy(input, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction,
                               label_smoothing=self.label_smoothing)


class NLLLoss(Module):
    """Negative log-likelihood of log-probabilities (pair with LogSoftmax).

    Args: weight, ignore_index, reduction as CrossEntropyLoss.

    Shape: log-probabilities (N, K) or (N, K, d1, ...), target (N,) or (N, d1, ...) -> a scalar.
    """

    def __init__(self, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
                 reduction: str = "mean"):
        super().__init__()
        self.register_buffer("weight", _optional_array(weight))
        self.ignore_index = ignore_index
        self.reduction = legacy_reduction("NLLLoss", size_average, reduce, reduction)

    def forward(self, input: Tensor, target) -> Tensor:
        return F.nll_loss(input, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction)


class MSELoss(Module):
    """Mean squared error: mean((input - target) ** 2).

    Args:
        reduction: "mean", "sum" or "none".

    Shape: input and target of one shape -> a scalar ("none": that shape).
    """

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__()
        self.reduction = legacy_reduction("MSELoss", size_average, reduce, reduction)

    def forward(self, input: Tensor, target) -> Tensor:
        return F.mse_loss(input, target, reduction=self.reduction)


class BCEWithLogitsLoss(Module):
    """Binary cross-entropy on logits (sigmoid fused in, numerically stable).

    Args:
        weight: optional weights broadcast against the input.
        reduction: "mean", "sum" or "none".
        pos_weight: optional weight of the positive term, per class (broadcast).

    Shape: input and target of one shape -> a scalar ("none": that shape).
    """

    def __init__(self, weight=None, size_average=None, reduce=None, reduction: str = "mean", pos_weight=None):
        super().__init__()
        self.register_buffer("weight", _optional_array(weight))
        self.register_buffer("pos_weight", _optional_array(pos_weight))
        self.reduction = legacy_reduction("BCEWithLogitsLoss", size_average, reduce, reduction)

    def forward(self, input: Tensor, target) -> Tensor:
        return F.binary_cross_entropy_with_logits(input, target, self.weight, reduction=self.reduction,
                                                  pos_weight=self.pos_weight)


class BCELoss(Module):
    """Binary cross-entropy of probabilities (each log clamped at -100, as PyTorch).

    Args:
        weight: optional weights broadcast against the input.
        reduction: "mean", "sum" or "none".

    Shape: input (probabilities in [0, 1]) and target of one shape -> a scalar ("none": that shape).
    """

    def __init__(self, weight=None, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__()
        self.register_buffer("weight", _optional_array(weight))
        self.reduction = legacy_reduction("BCELoss", size_average, reduce, reduction)

    def forward(self, input: Tensor, target) -> Tensor:
        return F.binary_cross_entropy(input, target, self.weight, reduction=self.reduction)


class L1Loss(Module):
    """Mean absolute error: mean(|input - target|).

    Args:
        reduction: "mean", "sum" or "none".

    Shape: input and target of one shape -> a scalar ("none": that shape).
    """

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__()
        self.reduction = legacy_reduction("L1Loss", size_average, reduce, reduction)

    def forward(self, input: Tensor, target) -> Tensor:
        return F.l1_loss(input, target, reduction=self.reduction)


class SmoothL1Loss(Module):
    """Smooth L1: 0.5 d**2 / beta where |d| < beta, |d| - 0.5 beta elsewhere (d = input - target).

    Args:
        reduction: "mean", "sum" or "none".
        beta: where the quadratic part ends (>= 0; 0 is L1Loss).

    Shape: input and target of one shape -> a scalar ("none": that shape).
    """

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean", beta: float = 1.0):
        super().__init__()
        self.reduction, self.beta = legacy_reduction("SmoothL1Loss", size_average, reduce, reduction), beta

    def forward(self, input: Tensor, target) -> Tensor:
        return F.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


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
