"""Shared helpers of the ONNX tests: onnxruntime as the reference runtime, informative weights."""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit
from cnnkit import Tensor, nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


class Fn(nn.Module):
    """A module whose forward is ``fn``: one function of x exported as a model."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def onnxruntime_session(path):
    """An onnxruntime session of the ONNX file at ``path``: one thread, the graph as written."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    # The graph as written, not onnxruntime's rewrite of it (and a quicker load).
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnxruntime(path_or_session, x: np.ndarray) -> np.ndarray:
    """The first output of an ONNX file (or a session of one) on input ``x``, computed by onnxruntime."""
    session = path_or_session
    if not isinstance(session, ort.InferenceSession):
        session = onnxruntime_session(path_or_session)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def run_cnnkit(model, x: np.ndarray) -> np.ndarray:
    with cnnkit.no_grad():
        return model(Tensor(x)).numpy()


def assert_close_to_scale(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-4) -> None:
    """Max abs difference <= rtol times the output's scale (max |expected|, at least 1)."""
    assert actual.shape == expected.shape, f"shape {actual.shape}, expected {expected.shape}"
    scale = max(1.0, float(np.abs(expected).max()))
    diff = float(np.abs(actual.astype(np.float64) - expected).max())
    assert diff <= rtol * scale, f"max abs difference {diff:.3g} > {rtol} * scale {scale:.3g}"


def randomize_batchnorm(model, rng: np.random.Generator):
    """Give every BatchNorm statistics and affine terms far from the identity, so exports of
    BatchNorm are really exercised (a fresh model's BatchNorm is nearly the identity)."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            C = m.num_features
            m.running_mean[...] = rng.normal(0, 0.5, C)
            m.running_var[...] = rng.uniform(0.5, 2.0, C)
            m.weight.data[...] = rng.uniform(0.5, 1.5, C)
            m.bias.data[...] = rng.normal(0, 0.2, C)
    return model
