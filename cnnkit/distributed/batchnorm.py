"""Synchronized batch normalization: the statistics of every rank's batch, as one batch.

With plain BatchNorm each rank normalizes by its own small batch; with SyncBatchNorm2d
the mean and variance are those of the global batch (all ranks together), forward and
backward, so N ranks x batch b compute what one process computes with BatchNorm on
batch N*b, running statistics included.

    model = convert_sync_batchnorm(models.resnet20(), comm)   # every BatchNorm, in place

In eval mode (and in a single process) it is plain BatchNorm: the running statistics
need no communication.
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..function import Function
from ..nn import BatchNorm1d, BatchNorm2d, Module
from ..tensor import Tensor
from .comm import Communicator, world

__all__ = ["SyncBatchNormOp", "sync_batch_norm", "SyncBatchNorm1d", "SyncBatchNorm2d", "convert_sync_batchnorm"]


class SyncBatchNormOp(Function):
    """Batch normalization (training) with statistics over the batches of every rank.

    forward:  on rank r, with n_r values per channel, its mean mu_r and its sum of
              squared deviations M2_r (two passes, in the input's dtype), gathered from
              every rank and combined exactly (Chan, Golub & LeVeque, 1979):
                  n = sum n_r,  mu = sum n_r mu_r / n,
                  var = sum (M2_r + n_r (mu_r - mu)^2) / n        (biased)
              x_hat = (x - mu) / sqrt(var + eps);  y = gamma * x_hat + beta
              running_mean <- (1 - m) running_mean + m mu
              running_var  <- (1 - m) running_var  + m var * n / (n - 1)
    backward: NOTE: the means of BatchNorm's closed form run over the global batch, so
              they need the sums of every rank (one allreduce of 2C values):
                  gx = gamma / std * (gy - S(gy) / n - x_hat * S(gy * x_hat) / n),
              S = the sum over (N, *spatial) of every rank. ggamma = sum(gy * x_hat) and
              gbeta = sum(gy) stay this rank's own: the gradient averaging of data
              parallelism combines them as it does every other parameter's gradient.

    Shapes: x (N, C) or (N, C, L) or (N, C, H, W) on each rank (N may differ between
    ranks); gamma, beta, running stats (C,).
    """

    def __init__(self, comm: Communicator, running_mean, running_var, momentum: float, eps: float):
        self.comm = comm
        self.running_mean, self.running_var = running_mean, running_var
        self.momentum, self.eps = momentum, eps

    def forward(self, x, gamma=None, beta=None):
        xp = self.xp
        if x.ndim < 2:
            raise ShapeError(f"sync_batch_norm expects input of shape (N, C, ...), got {x.shape}")
        C = x.shape[1]
        axes = (0,) + tuple(range(2, x.ndim))
        bshape = (1, C) + (1,) * (x.ndim - 2)
        n_local = x.size // C
        if n_local > 0:
            mu_local = x.mean(axis=axes)                                  # (C,)
            xc = x - mu_local.reshape(bshape)                             # (N, C, ...)
            m2_local = (xc * xc).sum(axis=axes)                           # (C,)
        else:  # a rank with an empty batch still takes part in the collective
            mu_local = m2_local = xp.zeros(C, x.dtype)
            xc = x
        row = np.concatenate([[n_local], np.asarray(mu_local, np.float64), np.asarray(m2_local, np.float64)])
        every = self.comm.allgather(row[None, :])                         # (ranks, 1 + 2C)
        counts, means, m2s = every[:, :1], every[:, 1 : 1 + C], every[:, 1 + C :]
        n = float(counts.sum())
        if n <= 1:
            raise ShapeError(
                f"sync_batch_norm in training needs more than one value per channel over all ranks, "
                f"got {int(n)} (input shape {x.shape} on rank {self.comm.rank})"
            )
        mu = (counts * means).sum(axis=0) / n                             # (C,) float64
        var = (m2s + counts * (means - mu) ** 2).sum(axis=0) / n          # (C,) float64, biased
        m = self.momentum
        if self.running_mean is not None:
            self.running_mean *= 1 - m
            self.running_mean += (m * mu).astype(self.running_mean.dtype)
        if self.running_var is not None:
            self.running_var *= 1 - m
            self.running_var += (m * var * (n / (n - 1))).astype(self.running_var.dtype)
        inv_std = (1 / np.sqrt(var + self.eps)).astype(x.dtype)          # (C,)
        shift = (np.asarray(mu_local, np.float64) - mu).astype(x.dtype)   # (C,) mu_r - mu
        x_hat = (xc + shift.reshape(bshape)) * inv_std.reshape(bshape)    # (N, C, ...)
        y = x_hat * gamma.reshape(bshape) if gamma is not None else x_hat
        if beta is not None:
            y = y + beta.reshape(bshape)
        if self.saves_for_backward:
            self.x_hat, self.inv_std, self.gamma, self.n = x_hat, inv_std, gamma, n
            self.axes, self.bshape = axes, bshape
        return y

    def backward(self, gy):
        axes, bshape, x_hat = self.axes, self.bshape, self.x_hat
        need = self.needs_input_grad
        sum_gy = gy.sum(axis=axes)                                        # (C,) this rank
        sum_gy_xhat = (gy * x_hat).sum(axis=axes)                         # (C,) this rank
        gx = None
        if need[0]:
            C = sum_gy.shape[0]
            sums = np.concatenate([np.asarray(sum_gy, np.float64), np.asarray(sum_gy_xhat, np.float64)])
            self.comm.allreduce(sums)                                     # (2C,) over every rank
            mean_gy = (sums[:C] / self.n).astype(gy.dtype).reshape(bshape)
            mean_gy_xhat = (sums[C:] / self.n).astype(gy.dtype).reshape(bshape)
            scale = self.inv_std if self.gamma is None else self.gamma * self.inv_std
            gx = scale.reshape(bshape) * (gy - mean_gy - x_hat * mean_gy_xhat)
        grads = [gx]
        if len(need) > 1:
            grads.append(sum_gy_xhat if need[1] else None)
        if len(need) > 2:
            grads.append(sum_gy if need[2] else None)
        return tuple(grads)


def _array(a):
    return a.data if isinstance(a, Tensor) else a


def sync_batch_norm(x, running_mean, running_var, weight=None, bias=None, momentum: float = 0.1,
                    eps: float = 1e-5, comm: Communicator | None = None) -> Tensor:
    """Training-mode batch normalization with the statistics of every rank's batch.

    ``running_mean`` / ``running_var`` (arrays, Tensors or None) are updated in place, the
    same way on every rank. Collective: every rank of ``comm`` must call it.
    """
    if weight is None and bias is not None:
        raise ValueError("sync_batch_norm with a bias needs a weight too (pass ones)")
    op = SyncBatchNormOp(comm or world(), _array(running_mean), _array(running_var), momentum, eps)
    inputs = [x] + [a for a in (weight, bias) if a is not None]
    return op(*inputs)


class _SyncStatistics:
    """Training-mode statistics over every rank (mixed into the BatchNorm layers)."""

    comm: Communicator | None = None

    def _normalize(self, x: Tensor, use_batch_stats: bool, momentum: float) -> Tensor:
        comm = self.comm or world()
        if not use_batch_stats or comm.size == 1:
            return super()._normalize(x, use_batch_stats, momentum)
        return sync_batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                               momentum=momentum, eps=self.eps, comm=comm)


class SyncBatchNorm1d(_SyncStatistics, BatchNorm1d):
    """BatchNorm1d whose training statistics are those of every rank's batch together.

    Args: as ``BatchNorm1d``, plus ``comm`` (keyword; default ``world()`` at each call).

    Shape: (N, C) or (N, C, L) -> same.
    """

    def __init__(self, *args, comm: Communicator | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.comm = comm


class SyncBatchNorm2d(_SyncStatistics, BatchNorm2d):
    """BatchNorm2d whose training statistics are those of every rank's batch together.

    Equal, forward and backward and in its running statistics, to ``BatchNorm2d`` on the
    concatenation of every rank's batch. Its state dict is BatchNorm2d's, so checkpoints
    load into either.

    Args: as ``BatchNorm2d``, plus ``comm`` (keyword; default ``world()`` at each call).

    Shape: (N, C, H, W) -> same.
    """

    def __init__(self, *args, comm: Communicator | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.comm = comm


def convert_sync_batchnorm(model: Module, comm: Communicator | None = None) -> Module:
    """Replace every BatchNorm1d/2d in ``model`` by its synchronized twin, in place; return ``model``.

    The new layers take over the old ones' parameters, buffers and mode (no copies: the
    arrays are the same objects, so an optimizer built before still updates them).
    A BatchNorm that is the model itself is returned converted (the only case where the
    caller must use the return value).
    """
    if isinstance(model, (BatchNorm1d, BatchNorm2d)) and not isinstance(model, _SyncStatistics):
        return _converted(model, comm)
    for name, child in list(model.named_children()):
        if isinstance(child, (BatchNorm1d, BatchNorm2d)) and not isinstance(child, _SyncStatistics):
            setattr(model, name, _converted(child, comm))
        else:
            convert_sync_batchnorm(child, comm)
    return model


def _converted(bn, comm: Communicator | None):
    cls = SyncBatchNorm2d if isinstance(bn, BatchNorm2d) else SyncBatchNorm1d
    new = cls.__new__(cls)
    Module.__init__(new)
    for key, value in vars(bn).items():  # parameters, buffers and settings: the same objects
        object.__setattr__(new, key, value)
    new.comm = comm
    return new
