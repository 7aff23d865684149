"""Export of masks and selections: comparisons, logic, F.where and masked_fill.

The export trace records comparisons and logical ops (``config.record_logic``), so a mask
computed from the input is written as Equal / Less / Greater / Not / And / Or / Xor nodes
feeding Where. Before, WhereOp had no emitter (and its condition was not in the graph at
all), so such models were refused. Each file is run by onnxruntime and by cnnkit's importer
at two batch sizes, on inputs with NaN, infinities, signed zeros and exact ties, against PyTorch.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit
from cnnkit import Tensor
from cnnkit import functional as F
from cnnkit.onnx import export, load

from .conftest import Fn, onnxruntime_session, run_onnxruntime

torch = pytest.importorskip("torch")


# name -> (cnnkit forward, PyTorch forward); x is (N, 3, 5)
CASES = {
    "where x > 0": (lambda x: F.where(x > 0, x, x * 0.1), lambda x: torch.where(x > 0, x, x * 0.1)),
    "masked_fill x < -0.5": (lambda x: x.masked_fill(x < -0.5, 2.0), lambda x: x.masked_fill(x < -0.5, 2.0)),
    "masked_fill by ==": (lambda x: x.masked_fill(x == 0.5, -1.0), lambda x: x.masked_fill(x == 0.5, -1.0)),
    "&, |, ~, != and >=, <=": (
        lambda x: F.where(((x >= 0.2) & (x <= 1.0)) | ~(x != x[:, :1]), x, -x),
        lambda x: torch.where(((x >= 0.2) & (x <= 1.0)) | ~(x != x[:, :1]), x, -x),
    ),
    "logical ops on floats": (
        lambda x: F.where(F.logical_xor(x, x - 1) | F.logical_not(F.relu(x)), 1.0, x),
        lambda x: torch.where(torch.logical_xor(x, x - 1) | torch.logical_not(torch.relu(x)), 1.0, x),
    ),
    "logical_and, logical_or": (
        lambda x: F.where(F.logical_and(x > -1, x < 1) ^ F.logical_or(x > 2, x < -2), x, 0.0),
        lambda x: torch.where(torch.logical_and(x > -1, x < 1) ^ torch.logical_or(x > 2, x < -2), x, 0.0),
    ),
    "a mask as a factor": (lambda x: x * (x > 0.3) + F.eq(x, 0.5), lambda x: x * (x > 0.3) + torch.eq(x, 0.5)),
    "where between two computed tensors": (
        lambda x: F.where(F.relu(x) > F.sigmoid(x), F.exp(-x), F.tanh(x)),
        lambda x: torch.where(torch.relu(x) > torch.sigmoid(x), torch.exp(-x), torch.tanh(x)),
    ),
}


def _inputs(n: int, rng) -> np.ndarray:
    x = rng.standard_normal((n, 3, 5)).astype(np.float32)
    x[0, 0] = [np.nan, 0.5, 0.0, -0.0, np.inf]
    x[0, 1, :2] = [-np.inf, 0.2]
    return x


@pytest.mark.parametrize("opset", [11, 13, 17])
@pytest.mark.parametrize("name", list(CASES))
def test_masks_and_selections_run_in_onnxruntime_and_cnnkit_like_pytorch(name, opset, tmp_path, rng):
    ours, theirs = CASES[name]
    path = export(Fn(ours), tmp_path / "m.onnx", (3, 5), opset=opset)   # with the self-check
    session, imported = onnxruntime_session(path), load(path)
    for n in (1, 3):
        x = _inputs(n, rng)
        expected = theirs(torch.from_numpy(x)).numpy()
        with cnnkit.no_grad():
            again = imported(Tensor(x)).numpy()
        for got in (run_onnxruntime(session, x), again):
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_where_is_written_as_the_nodes_that_compute_its_mask(tmp_path):
    import onnx

    path = export(Fn(CASES["&, |, ~, != and >=, <="][0]), tmp_path / "m.onnx", (3, 5), opset=11)
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    # >= and <= before opset 12: Or of the strict comparison and Equal; != is Not(Equal); ~ is Not
    assert {"Greater", "Less", "Equal", "Not", "And", "Or", "Where"} <= set(ops)
    constants = [onnx.numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"]
    assert not [c for c in constants if c.dtype == np.bool_]   # no traced mask baked in


# -------------------------------------------------------------- x[mask] = v (SetItemOp -> Where)
def _assigned(x, index, value):
    """x[index] = value on a copy of x (cnnkit or PyTorch: the same lines)."""
    y = x.clone()
    y[index(y) if callable(index) else index] = value(y) if callable(value) else value
    return y


def _both(index, value, torch_value=None):
    """(cnnkit forward, PyTorch forward) of one assignment; ``value`` a number or a function of y."""
    return (lambda x: _assigned(x, index, value),
            lambda x: _assigned(x, index, value if torch_value is None else torch_value))


# name -> (cnnkit forward, PyTorch forward); x is (N, 3, 5)
ASSIGNMENTS = {
    "x[x > 0.5] = 0.5": _both(lambda y: y > 0.5, 0.5),
    "a mask of logic ops, a 0-d float64 value": _both(
        lambda y: (y < -0.5) | (y == 0.5), lambda y: cnnkit.tensor(np.array(2.5)),
        lambda y: torch.tensor(2.5, dtype=torch.float64)),
    "a value computed from x (its mean)": _both(lambda y: y < 0, lambda y: y.mean()),
    "a mask over the leading dims, a row of the last dim": _both(
        lambda y: y[:, :, 0] > 0, lambda y: y[0, 0] * 2 + 1),
    "a mask over the leading dims, a (1, 5) row": _both(
        lambda y: y[:, :, 1] < 0.1, lambda y: y[:1, 1] - 3),
    "a one-element value": _both(
        lambda y: y != y, lambda y: cnnkit.tensor(np.array([7.0], np.float32)), lambda y: torch.tensor([7.0])),
    "masked_fill with a 0-d tensor": (
        lambda x: x.masked_fill(x > 1, cnnkit.tensor(np.float32(-1.0))),
        lambda x: x.masked_fill(x > 1, torch.tensor(-1.0))),
}


@pytest.mark.parametrize("opset", [11, 13, 17])
@pytest.mark.parametrize("name", list(ASSIGNMENTS))
def test_mask_assignment_runs_in_onnxruntime_and_cnnkit_like_pytorch(name, opset, tmp_path, rng):
    """Refused before (SetItemOp had no emitter); written as Where on the mask's own nodes."""
    import onnx

    ours, theirs = ASSIGNMENTS[name]
    path = export(Fn(ours), tmp_path / "m.onnx", (3, 5), opset=opset)   # with the self-check
    assert "Where" in [n.op_type for n in onnx.load(str(path)).graph.node]
    session, imported = onnxruntime_session(path), load(path)
    for n in (1, 3):
        x = _inputs(n, rng)
        expected = theirs(torch.from_numpy(x)).numpy()
        with cnnkit.no_grad():
            direct, again = ours(Tensor(x)).numpy(), imported(Tensor(x)).numpy()
        np.testing.assert_allclose(direct, expected, rtol=1e-6, atol=1e-7)
        for got in (run_onnxruntime(session, x), again):
            np.testing.assert_allclose(got, direct, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("index, value, message", [
    (0, 1.0, r"x\[index\] = v with index 0: only a bool mask index"),
    ((slice(None), 1), 0.0, r"x\[index\] = v with index \(slice\(None, None, None\), 1\): only a bool mask index"),
    ((slice(None), np.array([0, 0])), 2.0, r"with index \(slice\(None, None, None\), array\(\[0, 0\]\)\).*duplicate"),
    (np.eye(2, 3, dtype=bool), lambda y: cnnkit.tensor(np.array([[1.0] * 5, [2.0] * 5], np.float32)),
     r"v of shape \(2, 5\) for the 2 selected entries of shape \(5,\) .* one value per selected entry is a scatter"),
])
def test_assignments_without_a_where_form_are_refused_naming_the_index(index, value, message, tmp_path):
    with pytest.raises(cnnkit.errors.OnnxExportError, match=r"cannot export SetItem in the model's forward .*" + message):
        export(Fn(lambda x: _assigned(x, index, value)), tmp_path / "m.onnx", (3, 5))
