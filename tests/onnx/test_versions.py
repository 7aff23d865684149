"""Operators whose meaning or form changed between opsets, each version against onnxruntime.

One small model per (operator, opset), written the way that opset spells it; cnnkit's
import and onnxruntime (which implements every version) run it on the same input.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from cnnkit.onnx import load

from .conftest import onnx, run_cnnkit, run_onnxruntime

X = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)


def _ints(name, values):
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def _floats(name, values):
    return numpy_helper.from_array(np.asarray(values, np.float32), name)


# (case, opset, nodes, initializers); the graph reads "x" (shape of X) and writes "y".
CASES = [
    # Softmax: a 2-D coercion at `axis` before 13 (normalizes over axes 1..3), one axis from 13.
    ("softmax", 11, [helper.make_node("Softmax", ["x"], ["y"], axis=1)], []),
    ("softmax", 13, [helper.make_node("Softmax", ["x"], ["y"], axis=1)], []),
    ("logsoftmax", 12, [helper.make_node("LogSoftmax", ["x"], ["y"], axis=2)], []),
    ("logsoftmax", 13, [helper.make_node("LogSoftmax", ["x"], ["y"], axis=2)], []),
    # Pad: pads and value as attributes before 11, as inputs from 11; axes from 18.
    ("pad", 10, [helper.make_node("Pad", ["x"], ["y"], pads=[0, 0, 1, 2, 0, 0, 0, 1], value=0.5)], []),
    ("pad", 11, [helper.make_node("Pad", ["x", "pads", "v"], ["y"], mode="reflect")],
     [_ints("pads", [0, 0, 1, 2, 0, 0, 2, 1]), _floats("v", 0.0)]),
    ("pad", 18, [helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"], mode="edge")],
     [_ints("pads", [1, 2, 0, 3]), _ints("axes", [-1, 2])]),
    # Reshape: 0 copies a dimension; allowzero (14) would keep it 0 (not used on data).
    ("reshape", 7, [helper.make_node("Reshape", ["x", "s"], ["y"])], [_ints("s", [0, -1, 5])]),
    ("reshape", 14, [helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=0)], [_ints("s", [0, 3, -1])]),
    # BatchNormalization: spatial (7), no spatial (9), training_mode (14), types (15).
    ("batchnorm", 7, [helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"], spatial=1, epsilon=1e-3)],
     [_floats("g", [1.0, 2.0, 0.5]), _floats("b", [0.1, -0.2, 0.0]), _floats("m", [0.5, -0.5, 1.0]), _floats("v", [1.0, 2.0, 0.5])]),
    ("batchnorm", 9, [helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"])],
     [_floats("g", [1.0, 2.0, 0.5]), _floats("b", [0.1, -0.2, 0.0]), _floats("m", [0.5, -0.5, 1.0]), _floats("v", [1.0, 2.0, 0.5])]),
    ("batchnorm", 15, [helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"], training_mode=0, momentum=0.8)],
     [_floats("g", [1.0, 2.0, 0.5]), _floats("b", [0.1, -0.2, 0.0]), _floats("m", [0.5, -0.5, 1.0]), _floats("v", [1.0, 2.0, 0.5])]),
    # Slice: attributes before 10, inputs (with steps) from 10.
    ("slice", 9, [helper.make_node("Slice", ["x"], ["y"], starts=[1, -3], ends=[100, -1], axes=[2, 3])], []),
    ("slice", 13, [helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])],
     [_ints("st", [-1, 0]), _ints("en", [-(2**63), 5]), _ints("ax", [3, 1]), _ints("sp", [-2, 2])]),
    # Unsqueeze / Squeeze / ReduceSum: axes as attributes before 13, as inputs from 13.
    ("unsqueeze", 11, [helper.make_node("Unsqueeze", ["x"], ["u"], axes=[0, 5]),
                       helper.make_node("Squeeze", ["u"], ["y"], axes=[0])], []),
    ("unsqueeze", 13, [helper.make_node("Unsqueeze", ["x", "a"], ["u"]), helper.make_node("Squeeze", ["u", "b"], ["y"])],
     [_ints("a", [0, -1]), _ints("b", [0])]),
    ("reducesum", 11, [helper.make_node("ReduceSum", ["x"], ["y"], axes=[1, 3], keepdims=0)], []),
    ("reducesum", 13, [helper.make_node("ReduceSum", ["x", "a"], ["y"], keepdims=1)], [_ints("a", [-1])]),
    # ReduceMean / ReduceMax: axes as inputs from 18.
    ("reducemean", 17, [helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3])], []),
    ("reducemean", 18, [helper.make_node("ReduceMean", ["x", "a"], ["y"], keepdims=0)], [_ints("a", [2, 3])]),
    ("reducemax", 18, [helper.make_node("ReduceMax", ["x", "a"], ["y"])], [_ints("a", [1])]),
    # Dropout: ratio attribute (7), ratio and training_mode inputs (12); the identity at inference.
    ("dropout", 7, [helper.make_node("Dropout", ["x"], ["y"], ratio=0.3)], []),
    ("dropout", 12, [helper.make_node("Dropout", ["x", "r"], ["y"])], [_floats("r", 0.3)]),
    # Pooling: ceil_mode from 10; auto_pad; count_include_pad (7).
    ("maxpool", 8, [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")], []),
    ("maxpool", 12, [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 3], strides=[2, 2], ceil_mode=1)], []),
    ("averagepool", 7, [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)], []),
    ("averagepool", 19, [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 2], auto_pad="SAME_LOWER", strides=[2, 2])], []),
    ("conv", 11, [helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_LOWER", strides=[2, 1])],
     [numpy_helper.from_array(np.random.default_rng(1).standard_normal((4, 3, 2, 3)).astype(np.float32), "w")]),
    # Flatten: any axis from 9, negative from 11.
    ("flatten", 9, [helper.make_node("Flatten", ["x"], ["y"], axis=3)], []),
    ("flatten", 13, [helper.make_node("Flatten", ["x"], ["y"], axis=-3)], []),
    # Gather with negative indices (11); Shape start/end (15); Cast; Concat.
    ("shape", 15, [helper.make_node("Shape", ["x"], ["s"], start=1, end=-1),
                   helper.make_node("Gather", ["s", "i"], ["n"], axis=0),
                   helper.make_node("Cast", ["n"], ["f"], to=TensorProto.FLOAT),
                   helper.make_node("Mul", ["x", "f"], ["y"])], [_ints("i", [-1])]),
    # ReduceProd: axes as an attribute before 18, an input from 18; of shape dimensions (how
    # PyTorch's TorchScript exporter counts the elements of x.std) and of floats.
    ("reduceprod", 13, [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "i"], ["d"], axis=0),
                        helper.make_node("ReduceProd", ["d"], ["n"], keepdims=0),
                        helper.make_node("Cast", ["n"], ["f"], to=TensorProto.FLOAT),
                        helper.make_node("ReduceProd", ["x"], ["p"], axes=[1, 3]),
                        helper.make_node("Div", ["p", "f"], ["y"])], [_ints("i", [2, 3])]),
    ("reduceprod", 18, [helper.make_node("ReduceProd", ["x", "a"], ["y"], keepdims=0)], [_ints("a", [-1])]),
    # Expand: broadcasts both ways (a 1 in the shape keeps the input's size).
    ("expand", 13, [helper.make_node("ReduceMean", ["x"], ["m"], axes=[3]),
                    helper.make_node("Expand", ["m", "s"], ["e"]), helper.make_node("Sub", ["x", "e"], ["y"])],
     [_ints("s", [1, 1, 5])]),
    # GatherND (11; batch_dims from 12): what torch.export writes for x[:, [2, 0]].
    ("gathernd", 11, [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2, 3]),
                      helper.make_node("GatherND", ["t", "i"], ["g"]),
                      helper.make_node("Transpose", ["g"], ["y"], perm=[1, 0, 2, 3])], [_ints("i", [[2], [-3]])]),
    ("gathernd", 13, [helper.make_node("GatherND", ["x", "i"], ["y"], batch_dims=1)],
     [_ints("i", [[[0, 1], [2, -1]], [[1, 0], [0, 3]]])]),
    # Clip: bounds as attributes before 11, optional inputs from 11 (here only the upper one).
    ("clip", 6, [helper.make_node("Clip", ["x"], ["y"], min=-0.5, max=0.7)], []),
    ("clip", 13, [helper.make_node("Clip", ["x", "", "hi"], ["y"])], [_floats("hi", 0.3)]),
    # Max/Min: two inputs before 8, any number with broadcasting from 8; Where from 9.
    ("maxmin", 7, [helper.make_node("Max", ["x", "x2"], ["m"]), helper.make_node("Min", ["m", "x3"], ["y"])],
     [_floats("x2", np.full(X.shape, 0.1)), _floats("x3", np.full(X.shape, 0.8))]),
    ("maxmin", 13, [helper.make_node("Max", ["x", "c", "r"], ["y"])], [_floats("c", 0.2), _floats("r", [[-1.0], [0.5], [2.0], [0.0]])]),
    ("where", 16, [helper.make_node("Less", ["x", "t"], ["c"]), helper.make_node("Neg", ["x"], ["n"]),
                   helper.make_node("Where", ["c", "n", "x"], ["y"])], [_floats("t", [0.5])]),
    ("gemm", 7, [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w", "c"], ["y"], alpha=0.5, beta=2.0)],
     [numpy_helper.from_array(np.random.default_rng(2).standard_normal((60, 4)).astype(np.float32), "w"), _floats("c", [[1.0, 2.0, 3.0, 4.0]])]),
]


@pytest.mark.parametrize("case, opset, nodes, initializers", CASES,
                         ids=[f"{c[0]}-opset{c[1]}" for c in CASES])
def test_each_version_as_onnxruntime_runs_it(case, opset, nodes, initializers, tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(X.shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, case, [x], [y], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = max(4, helper.find_min_ir_version_for(list(model.opset_import)))  # IR 4: initializers need not be inputs
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)  # fills in y's shape
    path = tmp_path / f"{case}.onnx"
    onnx.save_model(model, str(path))
    expected = run_onnxruntime(path, X)
    actual = run_cnnkit(load(path), X)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
