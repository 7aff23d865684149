"""Saliency: where a class score is most sensitive to the input pixels.

The gradient of the class score (logit) with respect to the input (Simonyan, Vedaldi and
Zisserman, 2014, "Deep Inside Convolutional Networks").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import nn
from ..config import enable_grad
from ..functional import softmax
from ..tensor import Tensor

__all__ = ["Saliency", "saliency", "saliency_map"]


@dataclass
class Saliency:
    """Where the top class's score is most sensitive to the input.

    Attributes:
        map: (H, W) max over channels of |d score / d x| (Simonyan et al., 2014).
        gradient: (C, H, W) the signed gradient d score / d x.
        target: the class whose score was differentiated; score: its logit.
        probabilities: (K,) softmax of the logits.
    """

    map: np.ndarray
    gradient: np.ndarray
    target: int
    score: float
    probabilities: np.ndarray


def saliency_map(gradient: np.ndarray) -> np.ndarray:
    """(C, H, W) gradient d score / d x -> (H, W) map: the largest |gradient| over the channels."""
    return np.abs(np.asarray(gradient)).max(axis=0)


def saliency(model: nn.Module, x: np.ndarray, target: int | None = None) -> Saliency:
    """Differentiate the score (logit) of ``target`` (default: the top class) w.r.t. the input.

    The model runs in eval mode with its parameters frozen for the pass (so no parameter
    gradient is computed or left behind); both are restored afterwards.

    Args:
        model: maps (1, C, H, W) to logits (1, K).
        x: one input (C, H, W), already normalized as the model expects.
        target: class index; None for the model's top class.

    Raises:
        ShapeError: the model cannot take x; ValueError: target out of range.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad = False
        with nn.eval_mode(model), enable_grad():
            dtype = flags[0][0].dtype if flags else np.float32             # the model's dtype
            xt = Tensor(np.asarray(x, dtype)[None], requires_grad=True)       # (1, C, H, W)
            logits = model(xt)                                                # (1, K)
            top = backward_from_class(logits, target, "saliency")
        gradient = np.asarray(xt.grad[0])                                    # (C, H, W)
        probabilities = np.asarray(softmax(logits.detach(), dim=1).data[0])
    finally:
        for p, flag in flags:
            p.requires_grad = flag
    return Saliency(saliency_map(gradient), gradient, top, float(logits.data[0, top]), probabilities)


def backward_from_class(logits: Tensor, target: int | None, who: str) -> int:
    """Back-propagate the score of one class of the first image; return that class.

    ``logits`` (1, K); ``target`` None means the top-scoring class. The seed gradient is 1 at
    (0, target) and 0 elsewhere, so every leaf's ``.grad`` is d score / d leaf. ``who`` names
    the caller in the error for a class outside 0..K-1.
    """
    K = logits.shape[1]
    top = int(logits.data[0].argmax()) if target is None else int(target)
    if not 0 <= top < K:
        raise ValueError(f"{who}: target class {top} is out of range for {K} classes")
    seed = np.zeros(logits.shape, logits.dtype)
    seed[0, top] = 1.0
    logits.backward(seed)
    return top
