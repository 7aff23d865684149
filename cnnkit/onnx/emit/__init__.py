"""The exporter's emitters: one per cnnkit op, keyed by the op's ``Function`` class name.

An emitter writes one traced op as ONNX nodes, ``emit(w, fn, xs) -> the ONNX value of the
op's output``, with ``w`` the ``cnnkit.onnx.writer.Writer`` and ``xs`` the ONNX values of
``fn.inputs``; an op ONNX cannot express raises ``w.error(reason)``, naming the layer. One
module per op family, as the importer's ``onnx/ops``: ``conv`` (convolutions, pools),
``activation``, ``layers`` (linear, batch norm, dropout, losses), ``logic`` (comparisons,
Where), ``math`` (arithmetic, reductions), ``shape`` (reshape, indexing, padding, concatenation, resize).
"""

from __future__ import annotations

from collections.abc import Callable

from ...function import Function
from ..writer import Writer
from . import activation, conv, layers, logic, math, shape

__all__ = ["EMITTERS"]

EMITTERS: dict[str, Callable[[Writer, Function, list[str]], str]] = {
    **conv.EMITTERS, **activation.EMITTERS, **layers.EMITTERS, **logic.EMITTERS, **math.EMITTERS,
    **shape.EMITTERS,
}
