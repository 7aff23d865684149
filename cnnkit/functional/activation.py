"""Activation functions and (log-)softmax."""

from __future__ import annotations

import numpy as np

from ..backend import dispatch
from ..backend.kernels import elementwise
from ..function import Function
from ..tensor import Tensor
from .dims import normalize_dim
from .dtypes import as_floating, cast

__all__ = ["relu", "leaky_relu", "elu", "sigmoid", "tanh", "softmax", "log_softmax"]


class ReLUOp(Function):
    """Rectified linear unit.

    forward:  y = max(x, 0)       (NaN stays NaN)
    backward: gx = gy where y > 0 or y is NaN, else 0   (0 at x = 0; selected, not
              multiplied, so an inf or NaN upstream at x <= 0 gives 0: PyTorch's
              threshold_backward)

    Large NumPy arrays take one parallel pass each way (``backend/kernels/elementwise.py``)
    when ``backend.dispatch.relu_kernel_applies``; without a backward to come (no grad, or
    an input that needs none) the forward writes y alone, no mask; outputs of at most
    ``dispatch.RELU_KEEPS_OUTPUT_MAX_BYTES`` keep y itself as the mask (nonzero where the mask
    is set), so an in-place write into such an output is refused at backward, as PyTorch does.
    """

    def forward(self, x):
        if dispatch.relu_kernel_applies(self.xp, x):
            if not self.saves_for_backward:   # (inference) there is no mask to write
                y, mask = elementwise.relu_only(x), None
            elif dispatch.relu_keeps_output(x):
                # NOTE: y is nonzero (> 0 or NaN) exactly where the mask is set (y is +0.0 elsewhere),
                # so y serves as the mask: no mask written (backward selects where y != 0)
                y = elementwise.relu_only(x, training=True)
                mask = y
            else:
                y, mask = elementwise.relu_with_mask(x)
        else:
            y = self.xp.maximum(x, 0, dtype=x.dtype)
            mask = ~(y <= 0) if self.saves_for_backward else None
        if self.saves_for_backward:
            self.mask = mask
        return y

    premasked = None  # an array max pooling's backward already masked (pool.py, _relu_before)

    def backward(self, gy):
        premasked, self.premasked = self.premasked, None
        if gy is premasked:  # the only gradient of y, made with this op's mask applied
            return gy
        gx = elementwise.relu_grad(gy, self.mask) if dispatch.kernels_usable(self.xp, gy.dtype) else None
        return self.xp.where(self.mask, gy, gy.dtype.type(0)) if gx is None else gx


class LeakyReLUOp(Function):
    """Leaky ReLU.

    forward:  y = x if x > 0 else slope * x
    backward: gx = gy if x > 0 else slope * gy
    """

    def __init__(self, negative_slope: float):
        self.negative_slope = negative_slope

    def forward(self, x):
        self.positive = x > 0
        return self.xp.where(self.positive, x, x * x.dtype.type(self.negative_slope))

    def backward(self, gy):
        return self.xp.where(self.positive, gy, gy * gy.dtype.type(self.negative_slope))


class ELUOp(Function):
    """Exponential linear unit.

    forward:  y = x if x > 0 else alpha * (exp(x) - 1)
    backward: gx = gy if x > 0 else gy * (y + alpha)   (a NaN input takes the second
              branch: NaN in, NaN gradient out, as PyTorch's vectorized elu_backward)
    """

    def __init__(self, alpha: float):
        self.alpha = alpha

    def forward(self, x):
        xp = self.xp
        a = x.dtype.type(self.alpha)
        self.positive = x > 0
        self.y = xp.where(self.positive, x, a * xp.expm1(xp.minimum(x, 0)))
        return self.y

    def backward(self, gy):
        a = gy.dtype.type(self.alpha)
        return self.xp.where(self.positive, gy, gy * (self.y + a))


class SigmoidOp(Function):
    """Logistic sigmoid.

    forward:  y = 1 / (1 + exp(-x))   (evaluated as (1 + tanh(x/2)) / 2: no overflow)
    backward: gx = gy * y * (1 - y)
    """

    def forward(self, x):
        half = x.dtype.type(0.5)
        self.y = half * (self.xp.tanh(half * x) + 1)
        return self.y

    def backward(self, gy):
        return gy * self.y * (1 - self.y)


class TanhOp(Function):
    """Hyperbolic tangent.

    forward:  y = tanh(x)
    backward: gx = gy * (1 - y**2)
    """

    def forward(self, x):
        self.y = self.xp.tanh(x)
        return self.y

    def backward(self, gy):
        return gy * (1 - self.y * self.y)


class SoftmaxOp(Function):
    """Softmax along one axis: probabilities that sum to 1.

    forward:  y = exp(x - max(x)) / sum(exp(x - max(x)))
    backward: gx = y * (gy - sum(gy * y))

    Shapes: any; a 0-d input is a single logit (y = 1) and a zero-length axis gives an
    empty output, as PyTorch.
    """

    def __init__(self, dim: int):
        self.dim = dim

    def forward(self, x):
        xp = self.xp
        axis = normalize_dim(self.dim, x.ndim, "softmax")
        self.axis = axis if x.ndim else None
        if x.size == 0:
            e = x.copy()
        else:
            e = xp.exp(x - x.max(axis=self.axis, keepdims=True))
            e /= e.sum(axis=self.axis, keepdims=True)
        self.y = e
        return e

    def backward(self, gy):
        y = self.y
        return y * (gy - (gy * y).sum(axis=self.axis, keepdims=True))


class LogSoftmaxOp(Function):
    """Log of softmax along one axis, computed stably.

    forward:  y = x - max(x) - log(sum(exp(x - max(x))))
    backward: gx = gy - exp(y) * sum(gy)

    Shapes: any; a 0-d input gives 0 and a zero-length axis an empty output, as PyTorch.
    """

    def __init__(self, dim: int):
        self.dim = dim

    def forward(self, x):
        xp = self.xp
        axis = normalize_dim(self.dim, x.ndim, "log_softmax")
        self.axis = axis if x.ndim else None
        if x.size == 0:
            self.y = x.copy()
            return self.y
        shifted = x - x.max(axis=self.axis, keepdims=True)
        self.y = shifted - xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))
        return self.y

    def backward(self, gy):
        return gy - self.xp.exp(self.y) * gy.sum(axis=self.axis, keepdims=True)


def relu(input, inplace: bool = False) -> Tensor:
    """max(x, 0). ``inplace`` is accepted for PyTorch compatibility; the result is always a new
    tensor (an in-place update would corrupt arrays saved for backward), as in ``nn.ReLU``."""
    return ReLUOp()(input)


def leaky_relu(input, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """x if x > 0 else negative_slope * x (``inplace``: as ``relu``'s)."""
    return LeakyReLUOp(negative_slope)(input)


def elu(input, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """x if x > 0 else alpha * (exp(x) - 1) (``inplace``: as ``relu``'s)."""
    return ELUOp(alpha)(input)


def sigmoid(input) -> Tensor:
    return SigmoidOp()(as_floating(input))


def tanh(input) -> Tensor:
    return TanhOp()(as_floating(input))


def softmax(input, dim: int = -1, dtype=None) -> Tensor:
    """Softmax along ``dim`` (PyTorch requires dim; cnnkit defaults to the last axis).

    Integer inputs become the default float dtype first; with ``dtype`` (a float dtype)
    the input is cast to it first, differentiably, as torch.softmax(x, dim, dtype=...).
    """
    return SoftmaxOp(dim)(_input_as(input, dtype, "softmax"))


def log_softmax(input, dim: int = -1, dtype=None) -> Tensor:
    """Log-softmax along ``dim``, computed stably (integer inputs become the default float
    dtype; ``dtype`` casts the input first, as in PyTorch)."""
    return LogSoftmaxOp(dim)(_input_as(input, dtype, "log_softmax"))


def _input_as(x, dtype, op: str) -> Tensor:
    if dtype is None:
        return as_floating(x)
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"{op} expects a floating dtype, got {dtype}")
    return cast(x, dtype)
