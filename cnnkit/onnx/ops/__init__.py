"""ONNX operators computed with cnnkit's own ops: one translator function per operator.

A translator receives a ``Node``: the ONNX node's operator, name, attributes, the opset
of the default domain, and its input values as cnnkit ``Tensor``s (``None`` for an
omitted optional input). It returns the node's output tensor, or a tuple of them, built
only from ``cnnkit.functional`` calls, so gradients flow through an imported model as
through any other. Values with no gradient (shapes, indices, integer arithmetic) are
computed with NumPy and wrapped as constant tensors.

Version differences are handled where the operator is translated, from ``node.opset``:
Softmax's axis (a 2-D coercion before opset 13, one axis from 13), Pad's pads (an
attribute before 11, an input from 11), the axes of Unsqueeze/Squeeze/ReduceSum (inputs
from 13) and ReduceMean/ReduceMax/ReduceMin (inputs from 18), Slice's starts/ends (inputs
from 10), BatchNormalization's and Dropout's training flags (is_test in opset 6; 7, 14 for
BatchNormalization; inputs from 12 for Dropout), the ceil_mode of pooling (from 10), and
opset 6's explicit broadcasting of binary operators (``broadcast``, ``axis``). A feature cnnkit cannot compute exactly raises
``OnnxUnsupportedError`` naming the operator, the node, the opset and the feature.

1-D convolution and pooling run as 2-D ones on an (N, C, 1, L) view; 3-D ones are refused
(cnnkit's convolution and pooling are 2-D).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...errors import OnnxUnsupportedError
from ...tensor import Tensor

__all__ = ["Node", "TRANSLATORS", "translate", "supported_ops", "unsupported_op"]


@dataclass
class Node:
    """One ONNX node with its input values, ready for a translator.

    Attributes:
        op_type: the operator ("Conv").
        name: the node's name in the graph (may be empty).
        inputs: one Tensor per input slot, None for an omitted optional input.
        attrs: attribute name -> Python value (ints, floats, bytes, lists, TensorProto).
        opset: the model's opset of the default ONNX domain.
        n_outputs: how many outputs the graph asks for (optional outputs may be omitted).
    """

    op_type: str
    name: str
    inputs: list
    attrs: dict = field(default_factory=dict)
    opset: int = 0
    n_outputs: int = 1

    def attr(self, name: str, default: Any = None) -> Any:
        value = self.attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    def input(self, i: int) -> Tensor | None:
        return self.inputs[i] if i < len(self.inputs) else None

    def where(self) -> str:
        return f"{self.op_type} node {self.name!r} (opset {self.opset})"

    def unsupported(self, reason: str) -> OnnxUnsupportedError:
        """The error for a feature of this node that cnnkit cannot compute exactly."""
        return OnnxUnsupportedError(f"{self.where()}: {reason}")


def unsupported_op(op_type: str, name: str, opset: int, domain: str = "") -> OnnxUnsupportedError:
    """The error for an operator cnnkit has no translator for."""
    qualified = f"{domain}::{op_type}" if domain not in ("", "ai.onnx") else op_type
    return OnnxUnsupportedError(
        f"ONNX operator {qualified!r} (node {name!r}, opset {opset}) is not supported by cnnkit; "
        f"supported operators: {', '.join(supported_ops())}"
    )


TRANSLATORS: dict[str, Callable[[Node], Tensor | tuple]] = {}


def supported_ops() -> list[str]:
    """The ONNX operators cnnkit can import, sorted."""
    return sorted(TRANSLATORS)


def translate(node: Node) -> tuple:
    """Run ``node`` with cnnkit's ops; always return a tuple of outputs."""
    fn = TRANSLATORS.get(node.op_type)
    if fn is None:
        raise unsupported_op(node.op_type, node.name, node.opset)
    out = fn(node)
    return out if isinstance(out, tuple) else (out,)


# Imported last: each module registers its translators in TRANSLATORS.
from . import conv, logic, math, norm, resize, shape  # noqa: E402, F401
