"""Loss functions, with PyTorch's arguments and reductions ("mean", "sum", "none")."""

from __future__ import annotations

import warnings

import numpy as np

from ..backend import dispatch
from ..backend.kernels import loss as loss_kernels
from ..errors import ShapeError
from ..function import Function
from ..tensor import Tensor, as_array
from .dtypes import to_dtype

__all__ = ["cross_entropy", "nll_loss", "mse_loss", "binary_cross_entropy_with_logits", "legacy_reduction"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(op: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op} expects reduction in {_REDUCTIONS}, got {reduction!r}")


def legacy_reduction(op: str, size_average, reduce, reduction: str) -> str:
    """The reduction a loss applies, from PyTorch's deprecated ``size_average``/``reduce`` when either is given.

    PyTorch's mapping (``torch.nn._Reduction.legacy_get_string``): each of the two counts as
    True when None; both True give "mean", ``reduce`` alone "sum", ``reduce=False`` "none";
    ``reduction`` is then ignored, and a UserWarning names the ``reduction`` to use instead.
    Unlike PyTorch, a string in ``size_average`` (the third positional argument of most losses,
    where earlier cnnkit took ``reduction``) is refused instead of read as True.

    Raises:
        TypeError: ``size_average`` or ``reduce`` that is not a bool or None.
    """
    if size_average is None and reduce is None:
        return reduction
    for name, value in (("size_average", size_average), ("reduce", reduce)):
        if value is not None and not isinstance(value, (bool, np.bool_, int)):
            hint = f": pass reduction={value!r}" if isinstance(value, str) else ""
            raise TypeError(f"{op} expects {name} (deprecated, as in PyTorch) to be True, False or None, got "
                            f"{value!r}{hint}")
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    legacy = "mean" if size_average and reduce else "sum" if reduce else "none"
    warnings.warn(f"size_average and reduce args will be deprecated, please use reduction='{legacy}' instead.",
                  UserWarning, stacklevel=3)
    return legacy


def _classes_last(op: str, x, target, float_target: bool):
    """(N, K, d1, ...) logits -> (M, K) rows; targets -> (M,) or (M, K)."""
    if x.ndim < 1 or x.ndim == 0:
        raise ShapeError(f"{op} expects input of shape (N, K) or (N, K, d1, ...), got {x.shape}")
    if x.ndim == 1:  # a single unbatched sample (K,)
        x = x[None]
        target = target[None]
    K = x.shape[1]
    if K == 0:
        raise ShapeError(f"{op} expects at least one class (input shape {x.shape} has K = 0)")
    expected = x.shape if float_target else x.shape[:1] + x.shape[2:]
    if target.shape != expected:
        raise ShapeError(
            f"{op} expects target of shape {expected} for input of shape {x.shape}, "
            f"got {target.shape}"
        )
    xs = x if x.ndim == 2 else x.reshape(x.shape[0], K, -1).transpose(0, 2, 1).reshape(-1, K)
    if float_target:
        ts = target if target.ndim == 2 else target.reshape(x.shape[0], K, -1).transpose(0, 2, 1).reshape(-1, K)
    else:
        ts = target.reshape(-1)
    return xs, ts                                                     # (M, K), (M,) | (M, K)


def _restore(xp, g_rows, x_shape):
    """(M, K) gradient rows back to the input's (N, K, d1, ...) layout."""
    if len(x_shape) <= 2:
        return g_rows.reshape(x_shape)
    N, K = x_shape[:2]
    return g_rows.reshape(N, -1, K).transpose(0, 2, 1).reshape(x_shape)


class CrossEntropyOp(Function):
    """Softmax cross-entropy fused with log-softmax (numerically stable).

    Class-index targets t (with class weights w, label smoothing e, K classes):
      forward:  loss_i = -(1 - e) * w[t_i] * logp[i, t_i] - (e / K) * sum_k w[k] logp[i, k]
                mean reduction divides by sum_i w[t_i] over non-ignored rows.
      backward: g[i, m] = s_i * (p[i, m] * ((1 - e) w[t_i] + (e / K) sum_k w[k])
                                 - (1 - e) w[t_i] [m == t_i] - (e / K) w[m])
                with p = softmax(x) and s_i the upstream gradient of loss_i; 0 on ignored rows.
    Probability targets q (same shape as the input): loss_i = -sum_k w[k] q'[i, k] logp[i, k],
    q' = (1 - e) q + e / K; g[i, m] = s_i * (p[i, m] sum_k w[k] q'[i, k] - w[m] q'[i, m]);
      the target's gradient: gq[i, m] = -s_i * (1 - e) * w[m] * logp[i, m]  (PyTorch
      differentiates the loss with respect to soft targets too, e.g. for distillation).

    Shapes: x (N, K) or (N, K, d1, ...); t (N,) / (N, d1, ...) integer, or like x.
    """

    def __init__(self, weight, ignore_index: int, reduction: str, label_smoothing: float):
        self.weight, self.ignore_index = weight, ignore_index
        self.reduction, self.eps = reduction, label_smoothing

    def _kernel_applies(self, x, target) -> bool:
        """The compiled pass (``backend/kernels/loss.py``): (M, K) NumPy float logits, C order,
        (M,) signed integer targets, no class weights, no label smoothing, M and K above 0; switch
        ``dispatch.CROSS_ENTROPY_KERNEL``."""
        return (dispatch.CROSS_ENTROPY_KERNEL and self.weight is None and not self.eps
                and x.ndim == 2 and target.ndim == 1
                and target.dtype.kind == "i" and x.shape[0] == target.shape[0] and x.size > 0
                and x.flags.c_contiguous and target.flags.c_contiguous and dispatch.kernels_usable(self.xp, x.dtype))

    def forward(self, x, target):
        xp = self.xp
        if self._kernel_applies(x, target):
            losses, self.p, denom = loss_kernels.cross_entropy_forward(
                x, target, self.ignore_index, self.saves_for_backward)
            self.target = target if self.saves_for_backward else None
            return self._reduce(x, target, losses, denom, False)
        float_target = target.dtype.kind == "f"
        if not float_target and target.dtype.kind not in "iu":
            raise TypeError(f"cross_entropy expects integer class targets or float probabilities, got {target.dtype}")
        xs, ts = _classes_last("cross_entropy", x, target, float_target)
        M, K = xs.shape
        eps = xs.dtype.type(self.eps)
        w = None if self.weight is None else self.weight.astype(xs.dtype)
        if w is not None and w.shape != (K,):
            raise ShapeError(f"cross_entropy expects weight of shape ({K},), got {w.shape}")
        shifted = xs - xs.max(axis=1, keepdims=True)
        logp = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))    # (M, K)
        if float_target:
            ts = ts.astype(xs.dtype, copy=False)
            q = (1 - eps) * ts + eps / K if self.eps else ts
            wq = q * w if w is not None else q                                  # (M, K)
            losses = -(wq * logp).sum(axis=1)                                   # (M,)
            denom = M
            self.wq = wq
            if self.saves_for_backward and self.needs_input_grad[1]:
                self.logp, self.w = logp, w
        else:
            valid = ts != self.ignore_index
            safe_t = xp.where(valid, ts, 0)
            if M and (safe_t.min() < 0 or safe_t.max() >= K):
                bad = ts[valid & ((safe_t < 0) | (safe_t >= K))][0]
                raise ValueError(f"cross_entropy target {bad} is out of range for {K} classes")
            # without weights w_t is valid as 1.0 / 0.0 (what ones * valid gives, in one call)
            w_t = w[safe_t] * valid if w is not None else valid.astype(xs.dtype)    # (M,)
            picked = logp[xp.arange(M), safe_t]                                     # (M,)
            losses = -(1 - eps) * w_t * picked
            if self.eps:
                per_class = logp * w if w is not None else logp
                losses = losses - (eps / K) * valid * per_class.sum(axis=1)
            denom = w_t.sum()
            self.safe_t, self.w_t, self.valid = safe_t, w_t, valid
        self.p = xp.exp(logp) if self.saves_for_backward else None
        return self._reduce(x, target, losses, denom, float_target)

    def _reduce(self, x, target, losses, denom, float_target: bool):
        """The reduction of the per-row ``losses`` (M,); ``denom`` is the mean's divisor."""
        self.float_target, self.x_shape, self.t_shape = float_target, x.shape, target.shape
        self.denom = denom
        if self.reduction == "sum":
            return losses.sum()
        if self.reduction == "mean":
            total, denom = losses.sum(), losses.dtype.type(denom)
            if denom != 0:  # (a nonzero divisor raises no flag errstate would silence)
                return total / denom
            with np.errstate(invalid="ignore", divide="ignore"):  # no counted row: NaN, as PyTorch
                return total / denom
        # per-row losses: the target's shape, or the input's without K; () unbatched
        rows_shape = self.x_shape[:1] + self.x_shape[2:] if x.ndim > 1 else ()
        return losses.reshape(self.t_shape if not float_target else rows_shape)

    def backward(self, gy):
        xp = self.xp
        p = self.p                                                    # (M, K)
        M, K = p.shape
        eps = p.dtype.type(self.eps)
        compiled = self.__dict__.get("target") is not None           # the compiled forward ran
        if self.reduction == "none":
            s = gy.reshape(-1)[:, None]                               # (M, 1)
        elif self.reduction == "mean" and compiled and self.denom:
            s = gy / p.dtype.type(self.denom)   # a count of rows >= 1: no flag for errstate to silence
        elif self.reduction == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                s = gy / p.dtype.type(self.denom)
        else:
            s = gy
        if compiled:  # the same arithmetic, one pass
            return loss_kernels.cross_entropy_backward(p, self.target, self.ignore_index, s), None
        w = None if self.weight is None else self.weight.astype(p.dtype)
        g_target = None
        if self.float_target and self.needs_input_grad[1]:
            gq = self.logp * self.w if self.w is not None else self.logp  # (M, K)
            gq = gq * (-(1 - eps) * s)
            g_target = _restore(xp, gq.astype(p.dtype, copy=False), self.x_shape)
        if self.float_target:
            g = p * self.wq.sum(axis=1, keepdims=True) - self.wq
        else:
            coeff = (1 - eps) * self.w_t                              # (M,)
            if self.eps:
                total_w = w.sum() if w is not None else p.dtype.type(K)
                coeff = coeff + (eps / K) * total_w * self.valid
            g = p * coeff[:, None]
            rows = xp.arange(M)
            g[rows, self.safe_t] -= (1 - eps) * self.w_t
            if self.eps:
                g -= (eps / K) * self.valid[:, None] * (w if w is not None else 1)
        with np.errstate(invalid="ignore"):  # 0 * inf: the mean over no counted row
            g = g * s
        if not self.float_target:
            # NOTE: an ignored row's gradient is exactly 0, also when the mean's divisor is 0
            # (every row ignored: s is inf or NaN), as PyTorch's.
            g = xp.where(self.valid[:, None], g, 0)
        return _restore(xp, g.astype(p.dtype, copy=False), self.x_shape), g_target


class NLLLossOp(Function):
    """Negative log-likelihood of log-probabilities.

    forward:  loss_i = -w[t_i] * logp[i, t_i]  (0 for ignored rows); mean divides by sum w[t_i]
    backward: g[i, t_i] = -w[t_i] * s_i, 0 elsewhere and on ignored rows

    Shapes: logp (N, K) or (N, K, d1, ...), t (N,) or (N, d1, ...).
    """

    def __init__(self, weight, ignore_index: int, reduction: str):
        self.weight, self.ignore_index, self.reduction = weight, ignore_index, reduction

    def forward(self, logp, target):
        xp = self.xp
        if target.dtype.kind not in "iu":
            raise TypeError(f"nll_loss expects integer class targets, got {target.dtype}")
        xs, ts = _classes_last("nll_loss", logp, target, False)
        M, K = xs.shape
        valid = ts != self.ignore_index
        safe_t = xp.where(valid, ts, 0)
        if (safe_t < 0).any() or (safe_t >= K).any():
            raise ValueError(f"nll_loss target out of range for {K} classes")
        w = None if self.weight is None else self.weight.astype(xs.dtype)
        if w is not None and w.shape != (K,):
            raise ShapeError(f"nll_loss expects weight of shape ({K},), got {w.shape}")
        w_t = (w[safe_t] if w is not None else xp.ones(M, dtype=xs.dtype)) * valid
        losses = -w_t * xp.take_along_axis(xs, safe_t[:, None], axis=1)[:, 0]
        self.safe_t, self.w_t, self.valid = safe_t, w_t, valid
        self.x_shape, self.t_shape, self.M_K = logp.shape, target.shape, (M, K)
        self.denom = w_t.sum()
        if self.reduction == "sum":
            return losses.sum()
        if self.reduction == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):  # no counted row: NaN, as PyTorch
                return losses.sum() / xs.dtype.type(self.denom)
        return losses.reshape(target.shape)

    def backward(self, gy):
        xp = self.xp
        M, K = self.M_K
        if self.reduction == "none":
            s = gy.reshape(-1)
        elif self.reduction == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                s = gy / gy.dtype.type(self.denom)
        else:
            s = gy
        g = xp.zeros((M, K), dtype=gy.dtype)
        # an ignored row's gradient is exactly 0, also when every row is ignored (s = inf)
        with np.errstate(invalid="ignore"):
            g[xp.arange(M), self.safe_t] = xp.where(self.valid, -self.w_t * s, 0)
        return _restore(xp, g, self.x_shape), None


class BCEWithLogitsOp(Function):
    """Binary cross-entropy on logits, fused with the sigmoid (numerically stable).

    forward:  loss = w * ((1 - t) * x + l * softplus(-x)),  l = 1 + (pos_weight - 1) * t,
              softplus(-x) = log(1 + exp(-|x|)) + max(-x, 0)
    backward: gx = s * w * ((1 - t) - l * sigmoid(-x))
              gt = s * w * (-x + (pos_weight - 1) * softplus(-x))

    Shapes: x and t any one shape; weight and pos_weight broadcast against it.
    """

    def __init__(self, weight, pos_weight, reduction: str):
        self.weight, self.pos_weight, self.reduction = weight, pos_weight, reduction

    def forward(self, x, t):
        xp = self.xp
        if x.shape != t.shape:
            raise ShapeError(
                f"binary_cross_entropy_with_logits expects target of the input's shape {x.shape}, "
                f"got {t.shape}"
            )
        t = t.astype(x.dtype, copy=False)
        softplus_neg = xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(-x, 0)
        pw = None if self.pos_weight is None else self.pos_weight.astype(x.dtype)
        lw = 1 + (pw - 1) * t if pw is not None else 1
        losses = (1 - t) * x + lw * softplus_neg
        w = None if self.weight is None else self.weight.astype(x.dtype)
        if w is not None:
            losses = losses * w
        self.x, self.t, self.lw, self.w, self.pw, self.sp = x, t, lw, w, pw, softplus_neg
        if self.reduction == "sum":
            return losses.sum()
        if self.reduction == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):  # the mean of nothing: NaN, as PyTorch
                return losses.sum() / losses.dtype.type(losses.size)
        return losses

    def backward(self, gy):
        xp = self.xp
        x = self.x
        with np.errstate(invalid="ignore", divide="ignore"):
            s = gy / gy.dtype.type(x.size) if self.reduction == "mean" else gy
        if self.w is not None:
            s = s * self.w
        sig_neg = 0.5 * (xp.tanh(-0.5 * x) + 1)                       # sigmoid(-x)
        gx = s * ((1 - self.t) - self.lw * sig_neg)
        gt = None
        if self.needs_input_grad[1]:
            extra = (self.pw - 1) * self.sp if self.pw is not None else 0
            gt = s * (-x + extra)
        return xp.broadcast_to(gx, x.shape).astype(x.dtype), (
            None if gt is None else xp.broadcast_to(gt, x.shape).astype(x.dtype)
        )


def _weight_array(weight):
    return None if weight is None else (weight.data if isinstance(weight, Tensor) else weight)


def cross_entropy(
    input, target, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
    reduction: str = "mean", label_smoothing: float = 0.0,
) -> Tensor:
    """Softmax cross-entropy between logits and class indices (or class probabilities).

    Args:
        input: logits (N, K) or (N, K, d1, ...).
        target: class indices (N,) / (N, d1, ...), or probabilities shaped like input
            (differentiable: a target that requires grad receives its gradient).
        weight: optional per-class weights (K,).
        ignore_index: class index whose rows contribute neither loss nor gradient (class
            targets only; a non-negative value with probability targets is an error).
        reduction: "mean" (weighted mean over non-ignored rows), "sum" or "none".
        label_smoothing: e in [0, 1]: the target becomes (1 - e) * onehot + e / K.
        size_average, reduce: PyTorch's deprecated forms of ``reduction`` (it warns).
    """
    reduction = legacy_reduction("cross_entropy", size_average, reduce, reduction)
    _check_reduction("cross_entropy", reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy expects label_smoothing in [0, 1], got {label_smoothing}")
    target = target if isinstance(target, Tensor) else Tensor._wrap(as_array(target))
    if target.dtype.kind == "f" and ignore_index >= 0:
        # As PyTorch: a class index to ignore means nothing for probability targets.
        raise ValueError(
            f"cross_entropy with probability (floating) targets does not support ignore_index, "
            f"got ignore_index={ignore_index}; zero those rows' probabilities instead"
        )
    op = CrossEntropyOp(_weight_array(weight), ignore_index, reduction, label_smoothing)
    return op(input, target)


def nll_loss(input, target, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
             reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of log-probabilities (pair it with ``log_softmax``).

    ``size_average``, ``reduce``: PyTorch's deprecated forms of ``reduction`` (it warns).
    """
    reduction = legacy_reduction("nll_loss", size_average, reduce, reduction)
    _check_reduction("nll_loss", reduction)
    target = target if isinstance(target, Tensor) else Tensor._wrap(as_array(target))
    return NLLLossOp(_weight_array(weight), ignore_index, reduction)(input, target)


def _broadcast_pair(op: str, input, target) -> tuple[Tensor, Tensor]:
    """``input`` and ``target`` as Tensors; a target of another shape is broadcast with a warning.

    As PyTorch's elementwise losses: (N, 1) against (N,) makes an (N, N) difference, rarely
    what was meant, so it warns.

    Raises:
        ShapeError: shapes that do not broadcast together.
    """
    input = input if isinstance(input, Tensor) else Tensor(input)
    target = target if isinstance(target, Tensor) else Tensor._wrap(as_array(target))
    if input.shape != target.shape:
        try:
            np.broadcast_shapes(input.shape, target.shape)
        except ValueError:
            raise ShapeError(
                f"{op} expects a target that broadcasts against the input, got shapes "
                f"{input.shape} and {target.shape}"
            ) from None
        warnings.warn(
            f"{op}: target shape {target.shape} differs from input shape {input.shape}; they are "
            "broadcast together, as in PyTorch, which is likely not what was meant",
            UserWarning, stacklevel=3,
        )
    return input, target


def _reduce(losses: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


def mse_loss(input, target, size_average=None, reduce=None, reduction: str = "mean") -> Tensor:
    """Mean squared error: mean((input - target) ** 2) (or its sum, or elementwise).

    A target of another shape is broadcast against the input with a warning, as PyTorch
    does ((N, 1) against (N,) makes an (N, N) difference: rarely what was meant).
    ``size_average``, ``reduce``: PyTorch's deprecated forms of ``reduction`` (it warns).

    Raises:
        ShapeError: shapes that do not broadcast together.
    """
    reduction = legacy_reduction("mse_loss", size_average, reduce, reduction)
    _check_reduction("mse_loss", reduction)
    input, target = _broadcast_pair("mse_loss", input, target)
    d = input - target
    return _reduce(d * d, reduction)


def binary_cross_entropy_with_logits(
    input, target, weight=None, size_average=None, reduce=None, reduction: str = "mean", pos_weight=None
) -> Tensor:
    """Sigmoid + binary cross-entropy in one stable op, as PyTorch's function of that name.

    Floating logits and targets of two precisions are computed in the target's, as PyTorch
    2.13 does (float32 logits with float64 targets give a float64 loss, float64 logits
    with float32 targets a float32 one); the input's gradient keeps the input's dtype.
    ``size_average``, ``reduce``: PyTorch's deprecated forms of ``reduction`` (it warns).
    """
    reduction = legacy_reduction("binary_cross_entropy_with_logits", size_average, reduce, reduction)
    _check_reduction("binary_cross_entropy_with_logits", reduction)
    input = input if isinstance(input, Tensor) else Tensor(input)
    target = target if isinstance(target, Tensor) else Tensor._wrap(as_array(target))
    if input.dtype.kind == target.dtype.kind == "f" and input.dtype != target.dtype:
        input = to_dtype(input, target.dtype)
    op = BCEWithLogitsOp(_weight_array(weight), _weight_array(pos_weight), reduction)
    return op(input, target)
