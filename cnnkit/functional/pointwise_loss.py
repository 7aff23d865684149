"""Elementwise losses: binary cross-entropy on probabilities, L1, smooth L1 and Huber.

Each has PyTorch's name, arguments and reductions ("mean", "sum", "none"); mse_loss and the
class losses live in ``loss.py``.
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..function import Function
from ..tensor import Tensor, as_array
from .loss import _broadcast_pair, _check_reduction, _reduce, _weight_array, legacy_reduction
from .math import abs as _abs

__all__ = ["binary_cross_entropy", "l1_loss", "smooth_l1_loss", "huber_loss"]

# PyTorch clamps each log term of binary cross-entropy at -100 (so a probability of exactly
# 0 or 1 on the wrong side costs 100, not inf) and the denominator of its gradient at 1e-12,
# a float32 constant there even in float64 (9.99999996e-13): the same value here.
_LOG_FLOOR = -100.0
_GRAD_EPS = float(np.float32(1e-12))


class BinaryCrossEntropyOp(Function):
    """Binary cross-entropy of probabilities x against targets t, elementwise.

    forward:  loss = -w * (t * max(log(x), -100) + (1 - t) * max(log(1 - x), -100))
    backward: gx = gy * w * (x - t) / max(x * (1 - x), eps)   (eps = float32(1e-12))
              gt = gy * w * (log(1 - x) - log(x))     (not clamped: +-inf at x = 0 or 1)

    Shapes: x, t and the loss one shape; w broadcasts against it.
    """

    def __init__(self, weight):
        self.weight = weight

    def forward(self, x, t):
        xp = self.xp
        if bool(((x < 0) | (x > 1) | (x != x)).any()):
            raise ValueError(
                "binary_cross_entropy expects every input element in [0, 1] (probabilities; "
                f"use binary_cross_entropy_with_logits for logits), got values in "
                f"[{x.min()}, {x.max()}]"
            )
        t = t.astype(x.dtype, copy=False)
        floor = x.dtype.type(_LOG_FLOOR)
        with np.errstate(divide="ignore"):  # log(0) = -inf, then clamped
            log_x, log_1mx = xp.log(x), xp.log1p(-x)
        losses = -(t * xp.maximum(log_x, floor) + (1 - t) * xp.maximum(log_1mx, floor))
        self.w = None if self.weight is None else xp.asarray(self.weight).astype(x.dtype)
        if self.w is not None:
            losses = losses * self.w
        self.x, self.t = x, t
        if self.needs_input_grad[1]:
            self.log_x, self.log_1mx = log_x, log_1mx
        return xp.broadcast_to(losses, x.shape).astype(x.dtype, copy=False)

    def backward(self, gy):
        xp, x = self.xp, self.x
        s = gy if self.w is None else gy * self.w
        gx = s * (x - self.t) / xp.maximum(x * (1 - x), x.dtype.type(_GRAD_EPS))
        gt = None
        if self.needs_input_grad[1]:
            with np.errstate(invalid="ignore"):  # a zero upstream times inf at x = 0 or 1: NaN, as torch
                gt = s * (self.log_1mx - self.log_x)
            gt = xp.broadcast_to(gt, x.shape).astype(x.dtype, copy=False)
        return xp.broadcast_to(gx, x.shape).astype(x.dtype, copy=False), gt


class SmoothL1Op(Function):
    """Smooth L1 of a difference d (beta > 0; beta = 0 is L1, ``abs``).

    forward:  y = 0.5 * d**2 / beta    if |d| < beta
              y = |d| - 0.5 * beta     otherwise
    backward: gx = -gy if d < -beta, gy if d > beta, gy * d / beta otherwise
              (so gy at d = beta, and NaN at a NaN d, as PyTorch)

    Shapes: d, y, gy and gx all have d.shape.
    """

    def __init__(self, beta: float):
        self.beta = beta

    def forward(self, d):
        beta = d.dtype.type(self.beta)
        self.d = d
        ad = self.xp.abs(d)
        return self.xp.where(ad < beta, d.dtype.type(0.5) * d * d / beta, ad - d.dtype.type(0.5) * beta)

    def backward(self, gy):
        xp, d = self.xp, self.d
        beta = d.dtype.type(self.beta)
        return xp.where(d < -beta, -gy, xp.where(d > beta, gy, gy * d / beta))


class HuberOp(Function):
    """Huber loss of a difference d (delta > 0).

    forward:  y = 0.5 * d**2                    if |d| < delta
              y = delta * (|d| - 0.5 * delta)   otherwise
    backward: gx = -delta * gy if d < -delta, delta * gy if d > delta, gy * d otherwise
              (NaN at a NaN d, as PyTorch)

    Shapes: d, y, gy and gx all have d.shape.
    """

    def __init__(self, delta: float):
        self.delta = delta

    def forward(self, d):
        delta, half = d.dtype.type(self.delta), d.dtype.type(0.5)
        self.d = d
        ad = self.xp.abs(d)
        return self.xp.where(ad < delta, half * d * d, delta * (ad - half * delta))

    def backward(self, gy):
        xp, d = self.xp, self.d
        delta = d.dtype.type(self.delta)
        return xp.where(d < -delta, -delta * gy, xp.where(d > delta, delta * gy, gy * d))


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,
                         reduction: str = "mean") -> Tensor:
    """Binary cross-entropy between probabilities ``input`` and ``target``, as PyTorch's.

    Each log is clamped at -100, as PyTorch does. ``target`` may require grad (it receives
    w * (log(1 - x) - log(x))). For logits use ``binary_cross_entropy_with_logits``.

    Args:
        input: probabilities in [0, 1], any shape.
        target: the input's shape.
        weight: optional weights broadcast against the input.
        reduction: "mean", "sum" or "none".
        size_average, reduce: PyTorch's deprecated forms of ``reduction`` (it warns).

    Raises:
        ShapeError: a target of another shape. ValueError: an input outside [0, 1] (NaN too).
    """
    reduction = legacy_reduction("binary_cross_entropy", size_average, reduce, reduction)
    _check_reduction("binary_cross_entropy", reduction)
    input = input if isinstance(input, Tensor) else Tensor(input)
    target = target if isinstance(target, Tensor) else Tensor._wrap(as_array(target))
    if input.shape != target.shape:
        raise ShapeError(
            f"binary_cross_entropy expects target of the input's shape {input.shape}, got {target.shape}"
        )
    return _reduce(BinaryCrossEntropyOp(_weight_array(weight))(input, target), reduction)


def l1_loss(input, target, size_average=None, reduce=None, reduction: str = "mean") -> Tensor:
    """Mean absolute error |input - target| (gradient sign(d), 0 at d = 0 and at NaN, as PyTorch).

    A target of another shape is broadcast with a warning, as ``mse_loss``.
    ``size_average``, ``reduce``: PyTorch's deprecated forms of ``reduction`` (it warns).
    """
    reduction = legacy_reduction("l1_loss", size_average, reduce, reduction)
    _check_reduction("l1_loss", reduction)
    input, target = _broadcast_pair("l1_loss", input, target)
    return _reduce(_abs(input - target), reduction)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction: str = "mean",
                   beta: float = 1.0) -> Tensor:
    """Smooth L1: quadratic (0.5 d**2 / beta) below |d| = beta, linear above; beta = 0 is l1_loss.

    ``size_average``, ``reduce``: PyTorch's deprecated forms of ``reduction`` (it warns).

    Raises:
        ValueError: a negative beta.
    """
    reduction = legacy_reduction("smooth_l1_loss", size_average, reduce, reduction)
    _check_reduction("smooth_l1_loss", reduction)
    if beta < 0:
        raise ValueError(f"smooth_l1_loss expects beta >= 0, got beta={beta}")
    input, target = _broadcast_pair("smooth_l1_loss", input, target)
    d = input - target
    return _reduce(_abs(d) if beta == 0 else SmoothL1Op(beta)(d), reduction)


def huber_loss(input, target, reduction: str = "mean", delta: float = 1.0) -> Tensor:
    """Huber loss: 0.5 d**2 below |d| = delta, delta * (|d| - 0.5 delta) above.

    Raises:
        ValueError: delta <= 0.
    """
    _check_reduction("huber_loss", reduction)
    if not delta > 0:
        raise ValueError(f"huber_loss expects delta > 0, got delta={delta}")
    input, target = _broadcast_pair("huber_loss", input, target)
    return _reduce(HuberOp(delta)(input - target), reduction)
