"""Export: a cnnkit model becomes an ONNX file that any ONNX runtime can run.

    cnnkit.onnx.export(model, "resnet18.onnx", input_shape=(3, 224, 224),
                       class_names=names, preprocessing={"mean": [...], "std": [...]})

How: one forward pass in eval mode records cnnkit's define-by-run graph (the graph
``visualize graph`` draws: every op is the ``creator`` of its output and holds its
inputs), with each op attributed to the module that ran it. Each op, in execution order,
is written as its ONNX counterpart (the emitters of ``cnnkit/onnx/emit``): Conv2dOp -> Conv, LinearOp -> Gemm,
BatchNormOp (eval) -> BatchNormalization, MaxPool2dOp -> MaxPool with ceil_mode, adaptive
pools -> GlobalAveragePool / AveragePool / slices, sum / mean / amax / amin and the values of
max(dim) / min(dim) -> ReduceSum / ReduceMean / ReduceMax / ReduceMin (axes an attribute or an
input, by opset), div(rounding_mode=...) -> Div, Sign, Abs and Floor (trunc) or NumPy's exact
floor division spelled in Mod, Div, Floor and Where (floor), sin / cos -> Sin / Cos, hardtanh /
relu6 -> Clip, clamp between tensor bounds -> Max / Min, silu -> x * Sigmoid, softplus ->
Softplus (threshold >= 15), interpolate -> Resize, hardsigmoid -> HardSigmoid, hardswish -> HardSwish (x * HardSigmoid
before opset 14), gelu -> Gelu (opset 20+; before, 0.5 * x * (1 + Erf(x / sqrt 2)) or the tanh form), erf -> Erf, var / std -> the sum of squares over the count
read from the shape, comparisons and logic (==, <, &, ~, ...) -> Equal / Less / Greater / And /
Or / Xor / Not (the trace records them: ``config.record_logic``), where / masked_fill / x[mask] = v
(a v the same at every selected position) -> Where, ...
Parameters and buffers become initializers under their ``state_dict`` names; other
constants become Constant nodes.
An op ONNX cannot express raises ``OnnxExportError`` naming the layer.

Node names are the module paths of the layers ("features.0"; "layer1.0.add" for the
residual addition a block's forward computes; "layer1.0.relu_2" for a module's second
call), so ``cnnkit.onnx.load`` of the file rebuilds a model with the same ``state_dict``
keys.

Dynamic batch: the input's first dimension is the symbol "N". The trace runs at batch 2,
and a second trace at batch 3 (and, with a dynamic size, a larger image) shows which
dimensions of each op follow the input: a reshape writes those from the shape of its input
or of an earlier value (0, -1, or a product of its dimensions; so GroupNorm's
x.view(N, G, -1) ... .view(N, C, H, W) follows both), var / std divide by the count read from the shape,
and interpolate with a recomputed scale computes its output size from it. Dynamic size (``dynamic_size=True``, for fully convolutional
models and others that take any image size, such as a ResNet ending in global pooling):
the input's height and width are the symbols "H" and "W", and the output's dimensions
that follow them "OH", "OW". After writing, the file is checked three ways: ONNX's checker
(``full_check``), strict shape inference, and a run of the exported graph by cnnkit's own
importer at another batch size (and, with a dynamic size, another image size), compared
with the model: a forward that depends on the batch or the size in a way the trace cannot
see (a reshape to fixed sizes, adaptive pooling to a fixed grid) fails here, loudly. The
error says which failure it is: a node cnnkit's importer cannot run, a graph that differs
even on the traced input (an exporter bug), a forward that depends on the input's values,
or one that depends on the batch or the size.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .. import nn
from ..errors import OnnxExportError
from .build import build, version
from .emit import EMITTERS as _EMITTERS  # noqa: F401 - the registry, by its former name
from .reader import PROTOBUF_LIMIT, skeleton
from .tracing import TRACE_BATCH
from .verify import self_check
from .writer import simple as _simple  # noqa: F401 - by its former name

__all__ = ["export", "export_opsets", "MIN_EXPORT_OPSET", "TRACE_BATCH"]

MIN_EXPORT_OPSET = 11  # Pad, Slice and Gather with the input forms used below


def _metadata(class_names, preprocessing, input_shape, model) -> dict[str, str]:
    meta = {"cnnkit.version": version(), "cnnkit.model": type(model).__name__}
    if class_names is not None:
        meta["cnnkit.classes"] = json.dumps([str(c) for c in class_names])
    pre = dict(preprocessing or {})
    pre.update({"input_shape": list(input_shape), "layout": "NCHW"})  # what the file really takes
    meta["cnnkit.preprocessing"] = json.dumps(pre, default=lambda v: np.asarray(v).tolist())
    return meta


def export_opsets() -> tuple[int, int]:
    """The oldest and newest ONNX opset ``export`` writes (the newest: the installed onnx's)."""
    return MIN_EXPORT_OPSET, onnx.defs.onnx_opset_version()


def _check_arguments(model, input_shape, opset) -> tuple[int, ...]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"export expects a cnnkit Module, got {type(model).__name__}")
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"export expects input_shape as a tuple of ints like (3, 224, 224), got {input_shape!r}") from None
    if not shape or min(shape) <= 0:
        raise ValueError(f"export expects input_shape of positive sizes, one sample's (C, H, W), got {input_shape!r}")
    oldest, newest = export_opsets()
    if not isinstance(opset, (int, np.integer)) or not oldest <= opset <= newest:
        raise ValueError(f"export supports opsets {oldest} to {newest}, got {opset!r}")
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes - {np.dtype(np.float32)}:
        raise OnnxExportError(
            f"export writes float32 models; this one has {sorted(str(d) for d in dtypes)} parameters "
            "(call model.float() first)"
        )
    return shape


def _save(proto: onnx.ModelProto, path: Path, external: bool) -> None:
    """Write atomically (a temporary file in the same folder, then a rename); weights go to
    ``<name>.data`` beside it when the model is too big for one protobuf message."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        tmp_model = Path(tmp) / path.name
        if external:
            onnx.save_model(proto, tmp_model, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=f"{path.name}.data", size_threshold=1024)
            os.replace(Path(tmp) / f"{path.name}.data", path.parent / f"{path.name}.data")
        else:
            onnx.save_model(proto, tmp_model)
        os.replace(tmp_model, path)


def export(
    model: nn.Module, path: str | os.PathLike, input_shape: Sequence[int], opset: int = 17,
    dynamic_batch: bool = True, *, dynamic_size: bool = False, class_names: Sequence[str] | None = None,
    preprocessing: Mapping[str, Any] | None = None, verify: bool = True,
) -> Path:
    """Write ``model`` as an ONNX file that onnxruntime (or any ONNX runtime) can run.

    Args:
        model: a cnnkit Module taking one (N, *input_shape) float32 tensor and returning one tensor.
        path: the .onnx file to write (atomically; weights over 2 GiB go to ``<path>.data``).
        input_shape: one sample's shape, (C, H, W).
        opset: the ONNX opset to write, 11 to the newest the installed onnx knows.
        dynamic_batch: name the batch dimension "N" so any batch size runs; False fixes it to 1.
        dynamic_size: name the input's height and width "H" and "W" so any image size runs
            (fully convolutional models, global pooling); input_shape is then the size traced.
        class_names: stored in the file's metadata ("cnnkit.classes", JSON).
        preprocessing: stored as "cnnkit.preprocessing" (JSON) beside input_shape, e.g.
            {"mean": [0.1307], "std": [0.3081], "scale": 1 / 255}.
        verify: run the written graph with cnnkit's importer at another batch size (and
            image size, with dynamic_size) and compare with the model (max abs difference
            <= 1e-4 of the output's scale).

    Returns:
        The path written.

    Raises:
        OnnxExportError: an op ONNX cannot express (the message names the layer), or the
            written graph does not reproduce the model.
        ValueError: a bad input_shape or opset.
    """
    shape = _check_arguments(model, input_shape, opset)
    if dynamic_size and len(shape) != 3:
        raise ValueError(f"dynamic_size needs an image input_shape (C, H, W), got {input_shape!r}")
    proto, weight_bytes = build(model, shape, int(opset), dynamic_batch, dynamic_size)
    for key, value in _metadata(class_names, preprocessing, shape, model).items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"{type(model).__name__} exported by cnnkit"
    light = skeleton(proto)  # the checks need shapes and types, not gigabytes of weights
    try:
        onnx.checker.check_model(light, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(light, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise OnnxExportError(f"the exported graph of {type(model).__name__} fails ONNX's checks: {error}") from None
    proto.graph.value_info.extend(inferred.graph.value_info)  # intermediate shapes, for viewers
    if verify:
        self_check(proto, model, shape, dynamic_batch, dynamic_size)
    path = Path(path)
    _save(proto, path, external=weight_bytes >= PROTOBUF_LIMIT - 2**24)  # room for the graph itself
    return path

