"""Fold an eval-mode BatchNorm into the convolution before it: one layer instead of two.

In eval mode a BatchNorm2d is a fixed affine map per channel f, so a convolution followed
by it is again a convolution (Ioffe & Szegedy, 2015, section 3.2; the fold oneDNN,
onnxruntime and TensorRT apply to inference graphs):

    bn(conv(x))[f] = gamma[f] * (conv(x)[f] - mean[f]) / sqrt(var[f] + eps) + beta[f]
                   = conv'(x)[f]   with   s[f] = gamma[f] / sqrt(var[f] + eps),
                                          W'[f] = W[f] * s[f]                    (every tap of filter f)
                                          b'[f] = (b[f] - mean[f]) * s[f] + beta[f]

(b = 0 for a convolution without bias; gamma = 1 and beta = 0 for ``affine=False``). A
ConvTranspose2d's output channel f is column f % (F/groups) of group f // (F/groups) of
its weight (C, F/groups, KH, KW), so the scale goes along that axis instead.

The fold is computed in float64 and cast to the convolution's parameter dtype, so the
fused layer differs from the pair by rounding only (one float32 rounding of W' and b'
instead of the pair's separate roundings). It is exact only in eval mode: in training
mode BatchNorm normalizes by the batch's own statistics, which no fixed weight can do.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from ...backend import get_array_module
from ...errors import ConversionError, LayerNotFoundError, ShapeError
from ..conv import Conv2d, ConvTranspose2d
from ..module import Module
from ..norm import BatchNorm2d
from ..parameter import Parameter
from ..shape import Identity

__all__ = ["fuse_conv_bn_eval", "fuse_conv_bn_weights", "fuse_conv_bn_pairs"]


def _array(value):
    """The array of a Parameter, a grad-free Tensor buffer or a plain array (None stays None)."""
    return getattr(value, "data", value)


def fuse_conv_bn_weights(
    conv_w, conv_b, bn_rm, bn_rv, bn_eps: float, bn_w, bn_b, transpose: bool = False, *, groups: int = 1,
) -> tuple[Parameter, Parameter]:
    """Return the weight and bias of the convolution that computes bn(conv(x)) in eval mode.

    Arguments as ``torch.nn.utils.fusion.fuse_conv_bn_weights``: arrays or Tensors.

    Args:
        conv_w: the convolution's weight, (F, C/groups, KH, KW), or (C, F/groups, KH, KW)
            with ``transpose``.
        conv_b: its bias (F,), or None.
        bn_rm, bn_rv: the BatchNorm's running mean and variance, (F,).
        bn_eps: its eps.
        bn_w, bn_b: its weight (gamma) and bias (beta), (F,), or None (``affine=False``).
        transpose: the convolution is a ConvTranspose2d.
        groups: the transposed convolution's groups (its weight does not say them).

    Returns:
        (weight, bias) Parameters: W' = W * s per output channel, b' = (b - mean) * s + beta,
        s = gamma / sqrt(var + eps); computed in float64, in conv_w's dtype, ``requires_grad``
        as conv_w's (True for a plain array).

    Raises:
        ShapeError: the statistics, gamma, beta or the bias do not have one entry per output
            channel of the weight.
    """
    requires_grad = getattr(conv_w, "requires_grad", True)
    w = _array(conv_w)
    xp = get_array_module(w)
    dtype = w.dtype
    if w.ndim != 4:
        raise ShapeError(f"fuse_conv_bn_weights expects a 4-D convolution weight, got shape {tuple(w.shape)}")
    F = w.shape[1] * groups if transpose else w.shape[0]
    named = {"running_mean": bn_rm, "running_var": bn_rv, "weight (gamma)": bn_w, "bias (beta)": bn_b,
             "convolution bias": conv_b}
    for name, value in named.items():
        a = _array(value)
        if a is not None and tuple(a.shape) != (F,):
            raise ShapeError(
                f"fuse_conv_bn_weights: the convolution has {F} output channels (weight shape "
                f"{tuple(w.shape)}{', transposed' if transpose else ''}); the batch norm's {name} "
                f"has shape {tuple(a.shape)}, expected ({F},)"
            )

    def f64(value, default: float):
        a = _array(value)
        return xp.full(F, default, xp.float64) if a is None else xp.asarray(a, dtype=xp.float64)

    gamma, beta, bias = f64(bn_w, 1.0), f64(bn_b, 0.0), f64(conv_b, 0.0)
    mean, var = f64(bn_rm, 0.0), f64(bn_rv, 1.0)
    scale = gamma / xp.sqrt(var + float(bn_eps))                     # (F,)
    w64 = xp.asarray(w, dtype=xp.float64)
    if transpose:
        C, Fg, KH, KW = w.shape
        grouped = w64.reshape(groups, C // groups, Fg, KH, KW)         # (groups, C/groups, F/groups, KH, KW)
        fused_w = grouped * scale.reshape(groups, 1, Fg, 1, 1)
        fused_w = fused_w.reshape(C, Fg, KH, KW)                       # (C, F/groups, KH, KW)
    else:
        fused_w = w64 * scale.reshape(F, 1, 1, 1)                      # (F, C/groups, KH, KW)
    fused_b = (bias - mean) * scale + beta                             # (F,)
    return (Parameter(fused_w.astype(dtype), requires_grad),
            Parameter(fused_b.astype(dtype), requires_grad))


def _describe(module: Module) -> str:
    return f"{type(module).__name__}({module.extra_repr()})"


def _fold(conv: Module, bn: Module, transpose: bool, conv_name: str, bn_name: str) -> Module:
    """The checks of ``fuse_conv_bn_eval`` with the layers' names for messages, then the fold."""
    if not isinstance(conv, (Conv2d, ConvTranspose2d)):
        raise TypeError(f"fuse_conv_bn_eval expects a Conv2d or ConvTranspose2d as {conv_name}, "
                        f"got {type(conv).__name__}")
    if not isinstance(bn, BatchNorm2d):
        raise TypeError(f"fuse_conv_bn_eval expects a BatchNorm2d as {bn_name}, got {type(bn).__name__}")
    if isinstance(conv, ConvTranspose2d) and not transpose:
        raise ConversionError(f"fuse_conv_bn_eval: {conv_name} is a ConvTranspose2d; pass transpose=True "
                              "(its weight is laid out (C, F/groups, KH, KW))")
    if transpose and not isinstance(conv, ConvTranspose2d):
        raise ConversionError(f"fuse_conv_bn_eval: transpose=True expects a ConvTranspose2d as {conv_name}, "
                              f"got {type(conv).__name__}")
    for name, m in ((conv_name, conv), (bn_name, bn)):
        if m.training:
            raise ConversionError(
                f"fuse_conv_bn_eval folds eval-mode layers only: {name} is in training mode "
                "(call model.eval() first; in training mode BatchNorm uses each batch's own statistics)"
            )
    if bn.running_mean is None or bn.running_var is None:
        raise ConversionError(
            f"fuse_conv_bn_eval: {bn_name} has no running statistics (track_running_stats=False): "
            "it normalizes every batch by the batch's own statistics, which no fixed weight computes"
        )
    if bn.num_features != conv.out_channels:
        raise ShapeError(f"fuse_conv_bn_eval: {conv_name} has {conv.out_channels} output channels but "
                         f"{bn_name} normalizes {bn.num_features}")
    fused = copy.deepcopy(conv)
    fused.weight, fused.bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias, transpose,
        groups=conv.groups,
    )
    return fused


def fuse_conv_bn_eval(conv: Conv2d | ConvTranspose2d, bn: BatchNorm2d, transpose: bool = False):
    """Return a new convolution that computes ``bn(conv(x))`` of the eval-mode pair (PyTorch's name).

    ``conv`` and ``bn`` are not changed. The new layer is a copy of ``conv`` (same class,
    stride, padding, dilation, groups, padding mode) with the folded weight and a bias
    (added when ``conv`` had none): W' = W * s, b' = (b - mean) * s + beta per output
    channel, s = gamma / sqrt(running_var + eps) (see the module docstring).

    Args:
        conv: a Conv2d, or a ConvTranspose2d with ``transpose=True``, in eval mode.
        bn: the BatchNorm2d that reads its output, in eval mode, with running statistics.
        transpose: ``conv`` is a ConvTranspose2d (as torch.nn.utils.fuse_conv_bn_eval).

    Returns:
        The fused convolution, in eval mode, with parameters in ``conv.weight``'s dtype.

    Raises:
        TypeError: ``conv`` is not a convolution or ``bn`` not a BatchNorm2d.
        ConversionError: a layer in training mode, a BatchNorm without running statistics
            (``track_running_stats=False``), or ``transpose`` that does not match ``conv``.
        ShapeError: ``bn.num_features`` differs from ``conv.out_channels``.
    """
    return _fold(conv, bn, transpose, _describe(conv), _describe(bn))


def fuse_conv_bn_pairs(model: Module, pairs: Iterable[tuple[str, str]]) -> Module:
    """Fold each named (convolution, BatchNorm2d) pair of ``model`` in place.

    The convolution at the first path becomes ``fuse_conv_bn_eval`` of the pair, the
    BatchNorm at the second an ``Identity``. The caller vouches that each BatchNorm reads
    exactly its convolution's output, which nothing else reads
    (``cnnkit.surgery.fold_batchnorm`` finds such pairs by tracing; a checkpoint of a folded
    model records them). The layers must be in eval mode.

    Returns:
        ``model``.

    Raises:
        LayerNotFoundError: a path that is not a module of ``model``.
        TypeError, ConversionError, ShapeError: as ``fuse_conv_bn_eval``, naming the paths.
    """
    for conv_path, bn_path in pairs:
        layers = []
        for path in (conv_path, bn_path):
            try:
                layers.append(model.get_submodule(path) if path else None)
            except AttributeError:
                layers.append(None)
            if layers[-1] is None:
                valid = ", ".join(p for p, _ in model.named_modules() if p)
                raise LayerNotFoundError(f"fuse_conv_bn_pairs: no layer named {path!r}; valid layers: {valid}")
        conv, bn = layers
        fused = _fold(conv, bn, isinstance(conv, ConvTranspose2d), f"{conv_path} ({type(conv).__name__})",
                      f"{bn_path} ({type(bn).__name__})")
        model.set_submodule(conv_path, fused)
        identity = Identity()
        identity.training = bn.training
        model.set_submodule(bn_path, identity)
    return model
