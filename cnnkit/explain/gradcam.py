"""Grad-CAM: where in the image a convolutional layer saw evidence for a class.

Selvaraju et al., 2017, "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", eq. 1 and 2: for class c with score y_c (the logit) and a
layer's feature maps A (F, h, w),

    alpha_k = mean over (i, j) of d y_c / d A[k, i, j]          (one weight per channel)
    L_c     = ReLU( sum over k of alpha_k * A[k] )              (h, w)

and L_c is upsampled (bilinearly) to the input's size to be laid over the image. The
paper's layer is the last convolutional one, whose maps keep the most semantic content
and still some spatial detail; ``grad_cam`` defaults to the last layer whose output is
an image of more than one pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import nn
from ..data.prepare import resize_picture
from ..functional import softmax
from ..tensor import Tensor
from .saliency import backward_from_class

__all__ = ["GradCAM", "grad_cam", "grad_cam_map"]


@dataclass
class GradCAM:
    """A Grad-CAM map and what it was computed from.

    Attributes:
        map: (H, W) the map upsampled to the input's size, >= 0 (not normalized).
        cam: (h, w) the map at the layer's resolution.
        weights: (F,) alpha_k, the spatially averaged gradient of each channel.
        layer: the module path of the layer; target: the class; score: its logit.
        probabilities: (K,) softmax of the logits.
    """

    map: np.ndarray
    cam: np.ndarray
    weights: np.ndarray
    layer: str
    target: int
    score: float
    probabilities: np.ndarray


def grad_cam_map(
    activation: np.ndarray, gradient: np.ndarray, size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Combine a layer's feature maps and their gradients into a Grad-CAM map.

    Args:
        activation: A, (F, h, w), the layer's output for one image.
        gradient: d y_c / d A, (F, h, w).
        size: (H, W) to upsample to; None keeps (h, w).

    Returns:
        (cam (h, w), weights (F,), upsampled (H, W)), all float32.

    Raises:
        ValueError: the shapes differ or are not (F, h, w).
    """
    activation, gradient = np.asarray(activation, np.float64), np.asarray(gradient, np.float64)
    if activation.ndim != 3 or activation.shape != gradient.shape:
        raise ValueError(
            f"grad_cam_map expects activation and gradient of one shape (F, h, w), got "
            f"{activation.shape} and {gradient.shape}"
        )
    weights = gradient.mean(axis=(1, 2))                                   # (F,)
    cam = np.maximum(np.tensordot(weights, activation, axes=1), 0.0)       # (h, w)
    cam = cam.astype(np.float32)
    return cam, weights.astype(np.float32), resize_picture(cam, size or cam.shape)


def _default_layer(outputs: list[tuple[str, Tensor]]) -> tuple[str, Tensor]:
    images = [(p, t) for p, t in outputs if t.ndim == 4 and t.shape[2] * t.shape[3] > 1]
    if not images:
        raise ValueError("grad_cam: the model has no layer whose output is an image of more than one pixel")
    return images[-1]


def grad_cam(model: nn.Module, x: np.ndarray, target: int | None = None, layer: str | None = None) -> GradCAM:
    """Grad-CAM of class ``target`` (default: the top class) at ``layer`` for one input.

    The model runs in eval mode with its parameters frozen for the pass (no parameter
    gradient is computed or left behind); both are restored afterwards.

    Args:
        model: maps (1, C, H, W) to logits (1, K).
        x: one input (C, H, W), normalized as the model expects.
        target: class index; None for the model's top class.
        layer: a module path (its last call is used); None for the last layer whose
            output is an image of more than one pixel.

    Raises:
        ValueError: an unknown layer, a layer without an image output, or a target out of range.
    """
    if layer is not None and (not layer or layer not in dict(model.named_modules())):
        raise ValueError(f"grad_cam: no layer named {layer!r}")
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad = False
        dtype = flags[0][0].dtype if flags else np.float32
        xt = Tensor(np.asarray(x, dtype)[None], requires_grad=True)         # (1, C, H, W)
        with nn.trace_layers(model, [layer] if layer is not None else None, grad=True) as traced:
            logits = model(xt)                                              # (1, K)
        outputs = [(c.path, c.output) for c in traced.calls if isinstance(c.output, Tensor)]
        if layer is not None:
            if not outputs or outputs[-1][1].ndim != 4:
                raise ValueError(f"grad_cam: layer {layer!r} does not output an image (N, C, H, W)")
            path, a = outputs[-1]
        else:
            path, a = _default_layer(outputs)
        a.retain_grad()
        top = backward_from_class(logits, target, "grad_cam")
        cam, weights, big = grad_cam_map(a.data[0], a.grad[0], tuple(x.shape[-2:]))
        probabilities = np.asarray(softmax(logits.detach(), dim=1).data[0])
    finally:
        for p, flag in flags:
            p.requires_grad = flag
    return GradCAM(big, cam, weights, path, top, float(logits.data[0, top]), probabilities)
