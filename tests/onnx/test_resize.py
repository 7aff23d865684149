"""Resize (opset 10+) and Upsample (opset 7-9) imported as F.interpolate, against onnxruntime;
the attribute values with no PyTorch mode are refused by name. (ONNX's own Resize cases run in
test_backend.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from cnnkit import Tensor, nn
from cnnkit.errors import OnnxUnsupportedError
from cnnkit.onnx import export
from cnnkit.onnx.importer import from_model_proto

from .conftest import assert_close_to_scale, onnx, onnxruntime_session, ort, run_cnnkit, run_onnxruntime


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


class _Upsampler(nn.Module):
    def __init__(self, rng, **kw):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1, generator=rng)
        self.up = nn.Upsample(**kw)

    def forward(self, x):
        return self.up(self.conv(x))


@pytest.mark.parametrize("kw", [
    dict(scale_factor=2), dict(scale_factor=(1.5, 0.7), mode="nearest"), dict(size=(9, 4)),
    dict(scale_factor=2.5, mode="nearest-exact"), dict(size=(7, 11), mode="nearest-exact"),
    dict(scale_factor=(1.7, 2.0), mode="bilinear"), dict(size=(1, 5), mode="bilinear"),
    dict(scale_factor=3, mode="bilinear", align_corners=True), dict(size=(6, 13), mode="bilinear", align_corners=True),
    dict(scale_factor=1.7, mode="bilinear", recompute_scale_factor=True),
], ids=str)
@pytest.mark.parametrize("opset", [11, 17])
def test_upsample_exports_as_resize_and_runs_in_onnxruntime(kw, opset, tmp_path, rng):
    model = _Upsampler(rng, **kw).eval()
    path = export(model, tmp_path / "up.onnx", (2, 5, 6), opset=opset)
    assert "Resize" in {n.op_type for n in onnx.load(str(path)).graph.node}
    session = onnxruntime_session(path)
    for n in (1, 3):
        x = rng.standard_normal((n, 2, 5, 6)).astype(np.float32)
        assert_close_to_scale(run_onnxruntime(session, x), run_cnnkit(model, x))


@pytest.mark.parametrize("kw", [dict(scale_factor=2.5, mode="bilinear"), dict(size=(9, 4)),
                                dict(scale_factor=(1.5, 2), mode="nearest-exact")], ids=str)
def test_upsample_at_a_dynamic_size_runs_at_other_sizes(kw, tmp_path, rng):
    model = _Upsampler(rng, **kw).eval()
    path = export(model, tmp_path / "up.onnx", (2, 5, 6), dynamic_size=True)
    session = onnxruntime_session(path)
    for hw in [(5, 6), (8, 11), (3, 4)]:
        x = rng.standard_normal((2, 2) + hw).astype(np.float32)
        assert_close_to_scale(run_onnxruntime(session, x), run_cnnkit(model, x))
