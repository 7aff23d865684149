"""Batch normalization."""

from __future__ import annotations

from .. import config
from ..backend import dispatch, get_array_module
from ..backend.kernels import batchnorm as batchnorm_kernels
from ..errors import ShapeError
from ..function import Function
from ..tensor import Tensor
from .activation import relu

__all__ = ["batch_norm", "batch_norm_relu", "BatchNormOp", "BatchNorm2dFusedOp"]


class BatchNormOp(Function):
    """Batch normalization over every axis but the channel axis 1.

    forward (training): mu, var = mean and biased variance of x over (N, *spatial)
              x_hat = (x - mu) / sqrt(var + eps);  y = gamma * x_hat + beta
              running_mean <- (1 - m) running_mean + m mu
              running_var  <- (1 - m) running_var  + m var * n / (n - 1)   (unbiased)
    forward (eval):     the same with running_mean / running_var for mu / var.
    backward (training): NOTE: closed form (Ioffe & Szegedy, 2015), averaged over the
              normalized axes:  gx = gamma / std * (gy - mean(gy) - x_hat * mean(gy * x_hat))
    backward (eval):    gx = gy * gamma / std (the statistics are constants).
    Both: ggamma = sum(gy * x_hat), gbeta = sum(gy).

    Shapes: x (N, C) or (N, C, L) or (N, C, H, W); gamma, beta, running stats (C,).
    """

    def __init__(self, running_mean, running_var, training: bool, momentum, eps: float):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps

    def check(self, x, gamma, beta) -> None:
        """Validate the input, parameters and running statistics against each other."""
        if x.ndim < 2:
            raise ShapeError(f"batch_norm expects input of shape (N, C, ...), got {x.shape}")
        shape = x.shape[1:2]                                           # (C,)
        mean, var = self.running_mean, self.running_var
        if ((gamma is not None and gamma.shape != shape) or (beta is not None and beta.shape != shape)
                or (mean is not None and mean.shape != shape) or (var is not None and var.shape != shape)):
            for name, a in (("weight", gamma), ("bias", beta), ("running_mean", mean), ("running_var", var)):
                if a is not None and a.shape != shape:
                    raise ShapeError(f"batch_norm expects {name} of shape ({shape[0]},), got {a.shape} "
                                     f"(input shape {x.shape})")
        C = shape[0]
        if self.training and x.size // C <= 1:
            raise ShapeError(
                f"batch_norm in training needs more than one value per channel, got input shape {x.shape}"
            )
        if not self.training and (self.running_mean is None or self.running_var is None):
            raise ValueError("batch_norm in eval mode needs running_mean and running_var")

    def forward(self, x, gamma=None, beta=None):
        xp = self.xp
        self.check(x, gamma, beta)
        C = x.shape[1]
        axes = (0,) + tuple(range(2, x.ndim))
        bshape = (1, C) + (1,) * (x.ndim - 2)
        n = x.size // C
        if self.training:
            mu = x.mean(axis=axes)
            xc = x - mu.reshape(bshape)
            var = (xc * xc).mean(axis=axes)
            if self.running_mean is not None:
                m = self.momentum
                self.running_mean *= 1 - m
                self.running_mean += m * mu.astype(self.running_mean.dtype)
            if self.running_var is not None:
                m = self.momentum
                self.running_var *= 1 - m
                self.running_var += m * (var * (n / (n - 1))).astype(self.running_var.dtype)
        else:
            mu, var = self.running_mean.astype(x.dtype), self.running_var.astype(x.dtype)
            xc = x - mu.reshape(bshape)
        inv_std = 1 / xp.sqrt(var + x.dtype.type(self.eps))           # (C,)
        x_hat = xc * inv_std.reshape(bshape)
        y = x_hat * gamma.reshape(bshape) if gamma is not None else x_hat
        if beta is not None:
            y = y + beta.reshape(bshape)
        if self.saves_for_backward:
            self.x_hat, self.inv_std, self.gamma = x_hat, inv_std, gamma
            self.axes, self.bshape = axes, bshape
        return y

    def backward(self, gy):
        axes, bshape = self.axes, self.bshape
        x_hat = self.x_hat
        need = self.needs_input_grad
        scale = self.inv_std if self.gamma is None else self.gamma * self.inv_std
        gx = None
        if need[0]:
            if self.training:
                mean_gy = gy.mean(axis=axes, keepdims=True)
                mean_gy_xhat = (gy * x_hat).mean(axis=axes, keepdims=True)
                gx = scale.reshape(bshape) * (gy - mean_gy - x_hat * mean_gy_xhat)
            else:
                gx = gy * scale.reshape(bshape)
        grads = [gx]
        if len(need) > 1:
            grads.append((gy * x_hat).sum(axis=axes) if need[1] else None)
        if len(need) > 2:
            grads.append(gy.sum(axis=axes) if need[2] else None)
        return tuple(grads)


# ------------------------------------------------------------------------------------------
# The compiled algorithm (speed, issue 16): the same op in a few passes per channel.
# ------------------------------------------------------------------------------------------


class BatchNorm2dFusedOp(BatchNormOp):
    """``BatchNormOp`` for (N, C, H, W) NumPy arrays, in compiled passes per channel.

    The same forward and backward formulas (``backend/kernels/batchnorm.py``): each
    direction reads the activation once from memory and writes one array. Backward
    recomputes x_hat from x (the op's input) and the per-channel statistics instead of
    keeping an x_hat as large as x. ``batch_norm`` picks it through
    ``backend.dispatch.batch_norm_algorithm``; results equal ``BatchNormOp``'s up to
    float rounding (its sums run in float64).
    """

    def forward(self, x, gamma=None, beta=None):
        self.check(x, gamma, beta)
        C = x.shape[1]
        n = x.size // C
        if self.training:
            y, mean, var, inv_std = batchnorm_kernels.batch_norm_train(x, gamma, beta, self.eps)
            m = self.momentum
            if self.running_mean is not None:
                self.running_mean *= 1 - m
                self.running_mean += m * mean.astype(x.dtype).astype(self.running_mean.dtype)
            if self.running_var is not None:
                self.running_var *= 1 - m
                self.running_var += m * (var.astype(x.dtype) * (n / (n - 1))).astype(self.running_var.dtype)
        else:
            y, mean, inv_std = batchnorm_kernels.batch_norm_eval(
                x, self.running_mean, self.running_var, gamma, beta, self.eps
            )
        if self.saves_for_backward:
            self.x, self.mean, self.inv_std, self.gamma = x, mean, inv_std, gamma
        return y

    def backward(self, gy):
        need = self.needs_input_grad
        gx, ggamma, gbeta = batchnorm_kernels.batch_norm_grads(
            self.x, gy, self.mean, self.inv_std, self.gamma, self.training, need[0]
        )
        grads = [gx]
        if len(need) > 1:
            grads.append(ggamma if need[1] else None)
        if len(need) > 2:
            grads.append(gbeta if need[2] else None)
        return tuple(grads)


_BATCH_NORM_ALGORITHMS = {"reference": BatchNormOp, "fused": BatchNorm2dFusedOp}


def _array(a):
    return a.data if isinstance(a, Tensor) else a


def batch_norm(
    input, running_mean, running_var, weight=None, bias=None, training: bool = False,
    momentum: float = 0.1, eps: float = 1e-5,
) -> Tensor:
    """Batch normalization, as ``torch.nn.functional.batch_norm``.

    ``running_mean`` / ``running_var`` (arrays or Tensors, or None) are updated in place
    when ``training``. ``momentum`` is the weight of the new batch statistic.

    Raises:
        ValueError: eps <= 0 in training (eps < 0 in eval), as PyTorch.
    """
    # As PyTorch: eps keeps 1 / sqrt(var + eps) finite for a constant channel (var = 0),
    # so training refuses eps <= 0; the running variance of eval mode may meet eps = 0.
    if training and not eps > 0:
        raise ValueError(f"batch_norm expects eps > 0 in training, got eps={eps}")
    if not eps >= 0:
        raise ValueError(f"batch_norm expects eps >= 0, got eps={eps}")
    input = input if isinstance(input, Tensor) else Tensor(input)
    xp = get_array_module(input.data)
    if weight is None and bias is not None and input.ndim >= 2:  # a bias alone: weight 1, as PyTorch
        weight = Tensor._wrap(xp.ones(input.shape[1], dtype=input.dtype))
    algorithm = dispatch.batch_norm_algorithm(xp, input.dtype, input.ndim)
    op = _BATCH_NORM_ALGORITHMS[algorithm](_array(running_mean), _array(running_var), training, momentum, eps)
    inputs = [input] + [a for a in (weight, bias) if a is not None]
    return op(*inputs)


def _recorded(tensors) -> bool:
    """True when an op on ``tensors`` would be recorded for backward (``Function.__call__``)."""
    if not config.is_grad_enabled():
        return False
    logic = config.is_logic_recorded()
    return any(t.requires_grad or (logic and t.creator is not None) for t in tensors)


def batch_norm_relu(
    input, running_mean, running_var, weight=None, bias=None, eps: float = 1e-5, residual=None,
) -> Tensor:
    """relu(batch_norm(input, training=False) + residual) (residual None: without the sum).

    Eval mode only (the running statistics; nothing is updated). Where no op would be
    recorded (grad off, or no input requiring grad) and the compiled kernels apply to a
    4-D NumPy input, one pass computes it (``kernels.batchnorm.batch_norm_relu_eval``) with
    the very expressions of the three ops, so the same bits, NaN, inf and -0.0 included;
    otherwise it is those ops (``dispatch.FUSE_BATCH_NORM_RELU``, ``FUSE_BATCH_NORM_ADD_RELU``).

    Shape: input, residual and output (N, C, H, W); statistics, weight, bias (C,).
    """
    input = input if isinstance(input, Tensor) else Tensor(input)
    switch = dispatch.FUSE_BATCH_NORM_RELU if residual is None else dispatch.FUSE_BATCH_NORM_ADD_RELU
    if switch and input.ndim == 4 and dispatch.kernels_usable(get_array_module(input.data), input.dtype):
        tensors = [input] + [a for a in (weight, bias, residual) if isinstance(a, Tensor)]
        mean, var, w, b = _array(running_mean), _array(running_var), _array(weight), _array(bias)
        if (not _recorded(tensors) and mean is not None and var is not None and eps >= 0
                and all(a is None or a.shape == (input.shape[1],) for a in (mean, var, w, b))):
            y = batchnorm_kernels.batch_norm_relu_eval(input.data, mean, var, w, b, eps, _array(residual))
            if y is not None:
                return Tensor._wrap(y)
    y = batch_norm(input, running_mean, running_var, weight, bias, training=False, eps=eps)
    return relu(y if residual is None else y + residual)
