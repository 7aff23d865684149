"""The self-check of an export: the written graph, run by cnnkit's own importer, against the model.

It runs at another batch size (and, with a dynamic size, another image size); when they
differ, two more runs say why (an op written wrongly, a forward depending on the input's
values, or one depending on the batch or the size).
"""

from __future__ import annotations

import numpy as np
import onnx

from .. import config
from ..errors import CnnkitError, OnnxExportError, OnnxUnsupportedError
from ..tensor import Tensor
from .importer import from_model_proto
from .tracing import TRACE_BATCH, other_size, sample

__all__ = ["self_check"]

_RTOL = 1e-4  # the self-check: max abs difference <= _RTOL * max(1, max |output|)


def compare(proto: onnx.ModelProto, model, x: np.ndarray) -> str | None:
    """Run the exported graph (with cnnkit's importer) and the model on ``x``: None when they
    agree, else what differs.

    Raises:
        OnnxUnsupportedError: the importer cannot run a node of the graph.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with config.no_grad():
            expected = model(Tensor(x)).data
            try:
                got = from_model_proto(proto, "the exported graph", checked=True)(Tensor(x)).data
            except OnnxUnsupportedError:
                raise
            except (CnnkitError, ValueError, IndexError) as error:  # e.g. a size baked into the graph
                return f"it fails there: {error}"
    finally:
        for m, mode in modes:
            m.training = mode
    if got.shape != expected.shape:
        return f"output {got.shape} vs {expected.shape}"
    # NaN and infinities (log(0), sqrt(-1), a max pool over padding only) agree where both hold
    # the same one; the scale is the finite values'.
    got = got.astype(np.float64)
    same = (got == expected) | (np.isnan(got) & np.isnan(expected))
    finite = np.abs(expected[np.isfinite(expected)])
    scale = max(1.0, float(finite.max(initial=0.0)))
    diff = float(np.abs(np.where(same, 0.0, got - expected)).max(initial=0.0))
    if diff <= _RTOL * scale:
        return None
    return f"output {got.shape} vs {expected.shape}, max abs difference {diff:.3g}"


def self_check(proto: onnx.ModelProto, model, shape, dynamic: bool, dynamic_size: bool = False) -> None:
    """Run the exported graph with cnnkit's importer and compare with the model.

    The check runs at batch 1 (the trace ran at TRACE_BATCH when the batch is dynamic) and,
    with a dynamic size, at a larger image. When they differ, two more runs say why: on the
    trace's own input only a wrongly written op can differ; on another input of the traced
    shape, a forward that depends on the input's values; otherwise the batch (or size).
    """
    name = type(model).__name__
    batch, traced_batch = 1, TRACE_BATCH if dynamic else 1
    other = other_size(shape) if dynamic_size else shape
    where = f"batch {batch}" + (f", input {'x'.join(map(str, other))}" if dynamic_size else "")
    try:
        failure = compare(proto, model, sample(batch, other, 1))
        if failure is None:
            return
        on_trace = compare(proto, model, sample(traced_batch, shape, 0))
    except OnnxUnsupportedError as error:
        raise OnnxExportError(
            f"cnnkit's own importer cannot run the exported graph of {name} at {where}, so the "
            f"self-check cannot compare it with the model: {error} (a gap in cnnkit, not in the "
            "model; verify=False writes the file unchecked)"
        ) from None
    if on_trace is not None:
        raise OnnxExportError(
            f"the exported graph of {name} does not reproduce the model even on the input it was "
            f"traced with (batch {traced_batch}: {on_trace}): an op is written wrongly, a bug in "
            "cnnkit's exporter (verify=False writes the file unchecked)"
        )
    same_shape = (batch, other) == (traced_batch, shape)
    values = failure if same_shape else compare(proto, model, sample(traced_batch, shape, 2))
    if values is not None:
        raise OnnxExportError(
            f"the exported graph of {name} does not reproduce the model on another input of the "
            f"traced shape (batch {traced_batch}: {values}): its forward depends on the input's "
            "values in a way one trace cannot record (a Python branch on values, or values "
            "the graph does not hold: integer tensors, .data, NumPy), which ONNX cannot express"
        )
    fix = ("export with dynamic_size=False (a fixed input size)" if dynamic_size
           else "export with dynamic_batch=False")
    raise OnnxExportError(
        f"the exported graph of {name} does not reproduce the model at {where} ({failure}), "
        f"though it does at the traced batch {traced_batch}: its forward depends on the batch "
        f"size{' or the input size' if dynamic_size else ''} in a way one trace cannot record ({fix})"
    )
