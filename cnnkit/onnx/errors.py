"""The errors of ONNX export and import (to move into ``cnnkit.errors`` with the layout)."""

from __future__ import annotations

__all__ = ["OnnxError", "OnnxFileError", "OnnxUnsupportedError", "OnnxExportError"]


class OnnxError(ValueError):
    """The base of the ONNX errors: a model cannot be exported, read or run."""


class OnnxFileError(OnnxError):
    """A file is not a readable ONNX model: not ONNX, truncated, inconsistent, too large.

    The message names the file and what is wrong with it. Nothing in the file has run.
    """


class OnnxUnsupportedError(OnnxError):
    """An ONNX node cnnkit cannot run: the message names the operator, the node and the opset."""


class OnnxExportError(OnnxError):
    """A cnnkit model cannot be written as ONNX: the message names the layer and the op."""
