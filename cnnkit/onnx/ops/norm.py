"""BatchNormalization and Dropout, with their training flags across opset versions."""

from __future__ import annotations

import numpy as np

from ... import functional as F
from ...tensor import Tensor
from . import TRANSLATORS, Node

__all__ = ["batch_norm_training", "dropout_settings", "RANDOM_MASK"]

RANDOM_MASK = (
    "training-mode dropout with ratio > 0 draws a random mask; cnnkit's numpy Generator "
    "cannot reproduce the mask another runtime draws from the same seed"
)


def batch_norm_training(node: Node) -> bool:
    """Whether a BatchNormalization node normalizes with the batch's own statistics.

    Opset 14 says so with ``training_mode``; opsets 7 to 13 by asking for the running
    statistics as extra outputs; opset 6 with ``is_test=0`` (its default).
    """
    if node.opset >= 14:
        return bool(node.attr("training_mode", 0))
    if node.opset < 7:
        return not node.attr("is_test", 0)
    return node.n_outputs > 1


def batch_normalization(node: Node):
    x, scale, bias, mean, var = node.inputs[:5]
    eps = float(node.attr("epsilon", 1e-5))
    if node.opset < 9 and node.attr("spatial", 1) != 1:
        raise node.unsupported("spatial=0 (statistics per element, not per channel)")
    if not batch_norm_training(node):
        return F.batch_norm(x, mean.data, var.data, scale, bias, training=False, eps=eps)
    if node.opset < 14:
        raise node.unsupported(
            "training outputs before opset 14 (saved mean and saved inverse standard deviation)"
        )
    m = float(node.attr("momentum", 0.9))  # ONNX's momentum weighs the old running value
    running_mean, running_var = mean.data.copy(), var.data.copy()
    y = F.batch_norm(x, running_mean, running_var, scale, bias, training=True, momentum=1 - m, eps=eps)
    if node.n_outputs == 1:
        return y
    # NOTE: cnnkit (like PyTorch) blends the *unbiased* batch variance into running_var:
    #   cnnkit:  rv' = m*rv + (1 - m) * var_batch * n / (n - 1)
    #   ONNX-15: rv' = m*rv + (1 - m) * var_batch
    # Undo the Bessel factor n / (n - 1) on cnnkit's batch term to give ONNX's value.
    n = x.size // x.shape[1]
    old = m * var.data
    onnx_var = old + (running_var - old) * ((n - 1) / n)
    return y, Tensor(running_mean), Tensor(onnx_var.astype(var.dtype))


def dropout_settings(node: Node) -> tuple[float, bool]:
    """(ratio, training) of a Dropout node: attributes before opset 12, inputs from 12."""
    if node.opset >= 12:
        ratio = float(node.input(1).data) if node.input(1) is not None else 0.5
        training = bool(node.input(2).data) if node.input(2) is not None else False
        return ratio, training
    # Opset 6 says is_test=1 for inference; opsets 7 to 11 have no training mode.
    return float(node.attr("ratio", 0.5)), node.opset < 7 and not node.attr("is_test", 0)


def dropout(node: Node):
    x = node.input(0)
    ratio, training = dropout_settings(node)
    if training and ratio > 0:
        raise node.unsupported(RANDOM_MASK)
    y = F.dropout(x, ratio, training=False)
    if node.n_outputs == 1:
        return y
    return y, Tensor(np.ones(x.shape, dtype=bool))  # nothing dropped: the mask keeps everything


TRANSLATORS.update({
    "BatchNormalization": batch_normalization,
    "Dropout": dropout,
})
