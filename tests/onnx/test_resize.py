"""Resize (opset 10+) and Upsample (opset 7-9) imported as F.interpolate, against onnxruntime;
the attribute values with no PyTorch mode are refused by name. (ONNX's own Resize cases run in
test_backend.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from cnnkit import Tensor
from cnnkit.errors import OnnxUnsupportedError
from cnnkit.onnx.importer import from_model_proto

from .conftest import assert_close_to_scale, ort, run_cnnkit


def _resize_model(x_shape, opset, scales=None, sizes=None, op="Resize", **attrs):
    inits, inputs = [], ["x"]
    if op == "Resize" and opset >= 11:
        roi = "roi" if opset < 13 else ""  # required (possibly empty) before opset 13
        if roi:
            inits.append(numpy_helper.from_array(np.zeros(0, np.float32), "roi"))
        inputs += [roi, "scales" if scales is not None else "", "sizes" if sizes is not None else ""]
        inputs = inputs if sizes is not None else inputs[:3]
    elif opset >= 9:
        inputs.append("scales")
    else:
        attrs["scales"] = [float(v) for v in scales]
    if scales is not None and (op == "Resize" or opset >= 9):
        inits.append(numpy_helper.from_array(np.asarray(scales, np.float32), "scales"))
    elif op == "Resize" and 11 <= opset < 13:
        inits.append(numpy_helper.from_array(np.zeros(0, np.float32), "scales"))
        inputs[2] = "scales"
    if sizes is not None:
        inits.append(numpy_helper.from_array(np.asarray(sizes, np.int64), "sizes"))
    node = helper.make_node(op, inputs, ["y"], name="up", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"o{i}" for i in range(len(x_shape))])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _ort(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("shape, opset, kw", [
    ((2, 3, 4, 5), 13, dict(scales=[1, 1, 2, 3], mode="nearest", coordinate_transformation_mode="asymmetric",
                            nearest_mode="floor")),
    ((1, 2, 5, 7), 13, dict(sizes=[1, 2, 8, 4], mode="nearest", coordinate_transformation_mode="asymmetric",
                            nearest_mode="floor")),
    ((1, 2, 5, 7), 13, dict(sizes=[1, 2, 9, 3], mode="nearest", coordinate_transformation_mode="half_pixel",
                            nearest_mode="round_prefer_ceil")),
    ((2, 1, 4, 6), 11, dict(scales=[1, 1, 2, 2], mode="nearest")),  # the default: half_pixel, round_prefer_floor
    ((2, 3, 5, 7), 13, dict(scales=[1, 1, 1.5, 0.5], mode="linear")),
    ((2, 3, 5, 7), 13, dict(sizes=[2, 3, 9, 4], mode="linear", coordinate_transformation_mode="pytorch_half_pixel")),
    ((1, 2, 4, 6), 13, dict(scales=[1, 1, 2, 0.5], mode="linear", coordinate_transformation_mode="align_corners")),
    ((1, 2, 5, 6), 18, dict(sizes=[11, 3], axes=[2, 3], mode="linear")),
    ((1, 2, 3, 4), 10, dict(scales=[1, 1, 2, 3], mode="nearest")),
    ((1, 2, 3, 4), 9, dict(op="Upsample", scales=[1, 1, 2, 2], mode="nearest")),
    ((1, 2, 3, 4), 7, dict(op="Upsample", scales=[1, 1, 3, 2], mode="nearest")),
    ((2, 3, 7), 13, dict(sizes=[2, 3, 12], mode="linear")),
])
def test_resize_is_imported_as_onnxruntime_computes_it(shape, opset, kw, rng):
    model = _resize_model(shape, opset, **kw)
    x = rng.standard_normal(shape).astype(np.float32)
    assert_close_to_scale(run_cnnkit(from_model_proto(model), x), _ort(model, x), rtol=1e-5)
    y = from_model_proto(model)(Tensor(x, requires_grad=True))
    assert type(y.creator).__name__ == "InterpolateOp"  # F.interpolate, so gradients flow as in cnnkit


@pytest.mark.parametrize("kw, match", [
    (dict(scales=[1, 1, 2, 2], mode="cubic"), r"Resize node 'up' \(opset 13\): mode='cubic'"),
    (dict(scales=[1, 1, 2, 2], mode="nearest", coordinate_transformation_mode="align_corners"),
     r"coordinate_transformation_mode='align_corners', nearest_mode='round_prefer_floor'"),
    (dict(sizes=[1, 2, 7, 8], mode="nearest"), r"round_prefer_floor' with a tie"),
    (dict(scales=[1, 1, 2, 2], mode="linear", coordinate_transformation_mode="asymmetric"),
     r"mode='linear', coordinate_transformation_mode='asymmetric'"),
    (dict(scales=[1, 2, 2, 2], mode="nearest"), r"resize N or C"),
    (dict(scales=[1, 1, 2, 2], mode="linear", antialias=1), r"antialias=1"),
])
def test_resize_without_a_pytorch_mode_is_refused_by_name(kw, match):
    with pytest.raises(OnnxUnsupportedError, match=match):
        from_model_proto(_resize_model((1, 2, 2, 2), 13 if "antialias" not in kw else 18, **kw))(
            Tensor(np.zeros((1, 2, 2, 2), np.float32)))
