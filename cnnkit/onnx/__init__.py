"""Export cnnkit models to ONNX and import ONNX models into cnnkit (``pip install cnnkit[onnx]``).

    import cnnkit.onnx
    cnnkit.onnx.export(model, "lenet5.onnx", input_shape=(1, 28, 28))   # run it in onnxruntime
    model = cnnkit.onnx.load("resnet18.onnx")                           # a cnnkit Module

The ``onnx`` package is imported when one of these is first used, never by ``import cnnkit``.
"""

from __future__ import annotations

from typing import Any

from ..errors import OnnxError, OnnxExportError, OnnxFileError, OnnxUnsupportedError, OptionalDependencyError

__all__ = [
    "export", "export_opsets", "load", "OnnxModel", "CnnkitBackend", "supported_ops",
    "OnnxError", "OnnxExportError", "OnnxFileError", "OnnxUnsupportedError",
]

_LAZY = {
    "export": ("exporter", "export"),
    "export_opsets": ("exporter", "export_opsets"),
    "load": ("importer", "load"),
    "OnnxModel": ("importer", "OnnxModel"),
    "CnnkitBackend": ("backend", "CnnkitBackend"),
    "supported_ops": ("ops", "supported_ops"),
}


def require_onnx() -> None:
    """Raise OptionalDependencyError (an ImportError) saying what to install when ``onnx`` is missing."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise OptionalDependencyError(
            "ONNX export and import need the onnx package: pip install 'cnnkit[onnx]'"
        ) from None


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'cnnkit.onnx' has no attribute {name!r}")
    require_onnx()
    import importlib

    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value
    return value
