"""Batch normalization layers; they read the module's own ``training`` flag."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import config
from .. import functional as F
from ..config import accepts_rng
from ..errors import ShapeError
from ..functional.args import size_arg
from ..tensor import Tensor
from .activation import ReLU
from .containers import Sequential
from .conv import Conv2d
from .module import Module, has_hooks
from .parameter import Parameter
from .shape import Identity

__all__ = ["BatchNorm1d", "BatchNorm2d", "batch_norm_relu", "conv_batch_norm", "conv_batch_norm_relu",
           "sequential_conv_batch_norm"]


class _BatchNorm(Module):
    """Parameters, buffers and the running-statistics bookkeeping shared by BatchNorm1d/2d.

    Training:  normalize by the batch statistics; update the running ones,
               running <- (1 - m) * running + m * batch  (unbiased batch variance),
               m = momentum, or 1 / num_batches_tracked when momentum is None (a
               cumulative average over every batch seen).
    Eval:      normalize by the running statistics (by the batch ones when
               track_running_stats=False).
    """

    _shapes = ""  # the accepted input shapes, for error messages
    _ranks: tuple[int, ...] = ()

    @accepts_rng
    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
        track_running_stats: bool = True, *, bias: bool = True, generator=None, dtype=None,
    ):
        super().__init__()
        size_arg(num_features, "num_features", type(self).__name__)
        if not (isinstance(eps, (int, float, np.floating)) and eps > 0 and np.isfinite(eps)):
            raise ValueError(f"{type(self).__name__} expects eps > 0, got {eps!r}")
        if momentum is not None and not (isinstance(momentum, (int, float, np.floating)) and 0 <= momentum <= 1):
            raise ValueError(f"{type(self).__name__} expects momentum in [0, 1] or None, got {momentum!r}")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        dtype = np.dtype(dtype) if dtype is not None else config.get_default_dtype()
        # PyTorch's init: weight 1, bias 0 (no randomness; generator is accepted for uniformity).
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype=dtype))
        else:
            self.register_parameter("weight", None)
        if affine and bias:
            self.bias = Parameter(np.zeros(num_features, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def reset_running_stats(self) -> None:
        """Forget the running statistics: mean 0, variance 1, no batches tracked."""
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def _optional_state_keys(self) -> tuple[str, ...]:
        # Old checkpoints lack num_batches_tracked; PyTorch loads them and keeps the counter.
        return ("num_batches_tracked",) if self.track_running_stats else ()

    def forward(self, x: Tensor) -> Tensor:
        C = self.num_features
        if x.ndim not in self._ranks or x.shape[1] != C:
            raise ShapeError(
                f"expected input with {C} feature{'s' if C != 1 else ''}, of shape {self._shapes.format(C=C)}; "
                f"got shape {tuple(x.shape)}"
            )
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or not self.track_running_stats
        return self._normalize(x, use_batch_stats, momentum)

    def _normalize(self, x: Tensor, use_batch_stats: bool, momentum: float) -> Tensor:
        """The op itself (``distributed.SyncBatchNorm2d`` takes its statistics over every rank)."""
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias,
            training=use_batch_stats, momentum=momentum, eps=self.eps,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """Batch normalization of features (after Linear) or of channels of sequences.

    Args:
        num_features: C.
        eps: added to the variance.
        momentum: weight of the new batch in the running statistics; None: cumulative average.
        affine: learn a per-feature scale (weight, init 1) and shift (bias, init 0).
        track_running_stats: keep running_mean / running_var / num_batches_tracked buffers.
        bias: with affine, learn the shift too (keyword, as in PyTorch 2.13).
        generator: unused (the init is constant); dtype: parameter and buffer dtype.

    Shape: (N, C) or (N, C, L) -> same.
    """

    _shapes = "(N, {C}) or (N, {C}, L)"
    _ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalization of image channels, statistics over (N, H, W).

    Args: as BatchNorm1d.

    Shape: (N, C, H, W) -> same.
    """

    _shapes = "(N, {C}, H, W)"
    _ranks = (4,)


def _unobserved(module: Module, kind: type) -> bool:
    """True when ``module`` is exactly a ``kind`` whose call is its plain forward: no hooks
    of any sort (``module.has_hooks``) and no forward replaced on the instance."""
    return type(module) is kind and "forward" not in module.__dict__ and not has_hooks(module)


def _eval_batch_norm(bn: Module) -> bool:
    """True when ``bn`` is an exact, unhooked ``BatchNorm2d`` in eval mode with running statistics."""
    return not bn.training and _unobserved(bn, BatchNorm2d) and bn.track_running_stats


def _fusable(bn: Module, relu: Module) -> bool:
    """True when nothing can see ``bn``'s output on its way into ``relu`` (``batch_norm_relu``)."""
    return _eval_batch_norm(bn) and _unobserved(relu, ReLU)


def _conv_into(conv: Module, bn: Module, x: Tensor) -> bool:
    """True when ``conv`` can hand ``bn`` its output inside one fused call on ``x``: an exact,
    unhooked ``Conv2d`` without bias, prepacked weights or another padding mode than zeros, with
    ``x``'s channels in and ``bn``'s out."""
    return (_unobserved(conv, Conv2d) and conv.bias is None and conv.prepacked is None and conv.padding_mode == "zeros"
            and x.ndim == 4 and x.shape[1] == conv.in_channels and conv.out_channels == bn.num_features)


def batch_norm_relu(
    bn: Module, relu: Module, x: Tensor, residual: Tensor | Callable[[], Tensor] | None = None,
) -> Tensor:
    """``relu(bn(x))``, or ``relu(bn(x) + residual)``: a network's forward calls it in place of
    those module calls (ResNet's blocks and stem). ``residual`` may be a function of no
    arguments that returns it (a shortcut's modules): unfused, it runs after ``bn``, in the
    order of the plain forward ``relu(bn(x) + shortcut(...))``, which hooks see.

    When nothing can see the batch norm's output (``bn`` an exact ``BatchNorm2d`` in eval mode
    with running statistics, ``relu`` an exact ``ReLU``, neither with hooks; the input's
    channels bn's), it is one call of ``F.batch_norm_relu``, which computes it in one pass
    where no graph is recorded (the same bits as the separate ops); otherwise the module calls
    themselves, so hooks, training mode and subclasses see and do what they always did.

    Shape: x, residual and output (N, C, H, W).
    """
    if _fusable(bn, relu) and x.ndim == 4 and x.shape[1] == bn.num_features:
        if callable(residual):
            residual = residual()
        return F.batch_norm_relu(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps, residual=residual)
    y = bn(x)
    if callable(residual):
        residual = residual()
    return relu(y if residual is None else y + residual)


def conv_batch_norm(conv: Module, bn: Module, x: Tensor) -> Tensor:
    """``bn(conv(x))``; where nothing can see the convolution's output (``conv`` an exact
    ``Conv2d`` without hooks, bias, prepacked weights or another padding mode than zeros, ``bn``
    an exact ``BatchNorm2d`` in eval mode with running statistics, no hooks, in conv's output
    channels), one call of ``F.conv2d_batch_norm``, which applies the batch norm in the
    convolution's own output pass (ResNet's downsampling shortcut); otherwise the module calls."""
    if _eval_batch_norm(bn) and _conv_into(conv, bn, x):
        return F.conv2d_batch_norm(
            x, conv.weight, conv.stride, conv.padding, conv.dilation, conv.groups, running_mean=bn.running_mean,
            running_var=bn.running_var, bn_weight=bn.weight, bn_bias=bn.bias, eps=bn.eps,
        )
    return bn(conv(x))


def sequential_conv_batch_norm(seq: Module, x: Tensor) -> Tensor:
    """``seq(x)``; for an exact, unhooked ``Sequential`` of two modules (ResNet's shortcut: a
    1x1 convolution and a BatchNorm2d), ``conv_batch_norm`` on them: the same module calls,
    fused where nothing can see the convolution's output."""
    if _unobserved(seq, Sequential) and len(seq) == 2:
        return conv_batch_norm(seq[0], seq[1], x)
    return seq(x)


def conv_batch_norm_relu(
    conv: Module, bn: Module, relu: Module, x: Tensor, residual: Tensor | Callable[[], Tensor] | None = None,
) -> Tensor:
    """``relu(bn(conv(x)))`` or ``relu(bn(conv(x)) + residual)``, as ``batch_norm_relu``; where
    the convolution's output is unobserved too (``conv`` an exact ``Conv2d`` without hooks,
    bias, prepacked weights or another padding mode than zeros, in bn's channels), one call
    of ``F.conv2d_batch_norm_relu``, which applies the batch norm and ReLU in the
    convolution's own output pass. Unfused, a callable ``residual`` runs after ``bn``."""
    if _fusable(bn, relu) and _conv_into(conv, bn, x):
        if callable(residual):
            residual = residual()
        return F.conv2d_batch_norm_relu(
            x, conv.weight, conv.stride, conv.padding, conv.dilation, conv.groups, running_mean=bn.running_mean,
            running_var=bn.running_var, bn_weight=bn.weight, bn_bias=bn.bias, eps=bn.eps, residual=residual,
        )
    if (_unobserved(bn, Identity) and _unobserved(relu, ReLU) and _unobserved(conv, Conv2d)
            and conv.padding_mode == "zeros" and not (conv.training and conv.prepacked is not None)
            and x.ndim == 4 and x.shape[1] == conv.in_channels):     # an optimized model: bn folded into conv
        if callable(residual):
            residual = residual()
        return F.conv2d_relu(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups,
                             prepacked=conv.prepacked, residual=residual)
    return batch_norm_relu(bn, relu, conv(x), residual)
