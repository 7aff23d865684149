"""cnnkit.onnx.load: round trips through ONNX give identical models, and an imported model is
a cnnkit Module like any other: summarized, visualized, pruned, fine-tuned."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import cnnkit.functional as F
from cnnkit import Tensor, models, nn, optim
from cnnkit.errors import OnnxFileError, OnnxUnsupportedError, ShapeError
from cnnkit.explain.capture import conv_layers
from cnnkit.explain.graph import model_graph
from cnnkit.explain.summary import summary
from cnnkit.graph import op_order
from cnnkit.onnx import OnnxModel, export, load
from cnnkit.surgery.prune import prune_channels

from .conftest import assert_close_to_scale, onnx, randomize_batchnorm, run_cnnkit, run_onnxruntime

ROUND_TRIPS = {  # model -> input shape (small inputs: the same graph as at 224x224)
    "lenet5": (1, 28, 28), "resnet20": (3, 32, 32), "vgg11_cifar": (3, 32, 32),
    "resnet18": (3, 64, 64), "googlenet": (3, 64, 64),
}


@pytest.mark.parametrize("name", list(ROUND_TRIPS))
def test_round_trip_gives_identical_outputs_and_state_dict_keys(name, tmp_path, rng):
    model = randomize_batchnorm(models.get_model(name, num_classes=10, generator=rng), rng).eval()
    shape = ROUND_TRIPS[name]
    imported = load(export(model, tmp_path / f"{name}.onnx", shape))
    assert isinstance(imported, OnnxModel) and not imported.training
    for n in (1, 2):
        x = rng.standard_normal((n,) + shape).astype(np.float32)
        np.testing.assert_array_equal(run_cnnkit(imported, x), run_cnnkit(model, x))
    assert set(imported.state_dict()) == set(model.state_dict())
    for key, value in model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(imported.state_dict()[key], value, err_msg=key)


@pytest.fixture
def lenet_onnx(tmp_path, rng):
    model = models.lenet5(generator=rng).eval()
    return model, export(model, tmp_path / "lenet5.onnx", (1, 28, 28))


def test_imported_model_is_summarized_like_the_original(lenet_onnx):
    model, path = lenet_onnx
    imported = load(path)
    mine = summary(imported, (1, 28, 28), print_fn=None)
    theirs = summary(model, (1, 28, 28), print_fn=None)
    assert mine.total_params == theirs.total_params == 61_706
    assert mine.total_macs == theirs.total_macs
    assert [type(m).__name__ for _, m in imported.named_modules() if not list(m.children())][:3] == [
        "Conv2d", "ReLU", "MaxPool2d"]


def test_imported_model_is_visualized_and_traced(lenet_onnx):
    imported = load(lenet_onnx[1])
    assert conv_layers(imported) == ["features.0", "features.3"]
    graph = model_graph(imported, (1, 28, 28))
    assert [op.label for op in graph.ops][:3] == ["Conv2d", "ReLU", "MaxPool2d"]


def test_imported_model_can_be_pruned_and_exported_again(lenet_onnx, tmp_path, rng):
    imported = load(lenet_onnx[1])
    pruned = prune_channels(imported, 0.5, input_shape=(1, 28, 28), generator=rng)
    assert pruned.get_submodule("features.0").out_channels == 3
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    path = export(pruned, tmp_path / "pruned.onnx", (1, 28, 28))
    assert_close_to_scale(run_onnxruntime(path, x), run_cnnkit(pruned, x))


def test_imported_model_can_be_fine_tuned(lenet_onnx, rng):
    imported = load(lenet_onnx[1]).train()
    params = list(imported.parameters())
    assert sum(p.size for p in params) == 61_706 and all(p.requires_grad for p in params)
    x = Tensor(rng.standard_normal((16, 1, 28, 28)).astype(np.float32))
    t = rng.integers(0, 10, 16)
    opt = optim.SGD(params, lr=0.05)
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(imported(x), t)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in params)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_batchnorm_and_dropout_train_after_import(tmp_path, rng):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, generator=rng), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Dropout(0.5), nn.Linear(4 * 4 * 4, 3, generator=rng)).eval()
    imported = load(export(model, tmp_path / "m.onnx", (1, 6, 6)))
    assert isinstance(imported.get_submodule("1"), nn.BatchNorm2d)
    assert isinstance(imported.get_submodule("4"), nn.Dropout) and imported.get_submodule("4").p == 0.5
    imported.train()
    x = Tensor(rng.standard_normal((8, 1, 6, 6)).astype(np.float32))
    imported(x)  # batch statistics move the running mean
    assert not np.allclose(imported.get_submodule("1").running_mean, 0)


# --------------------------------------------------------------------------- graphs by hand
def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _save(model, path):
    onnx.save_model(model, str(path))
    return path


def test_an_unsupported_operator_is_refused_naming_op_node_and_opset(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    path = _save(_model([helper.make_node("Acos", ["x"], ["h"], name="acos"),
                         helper.make_node("Relu", ["h"], ["y"], name="after")], [x], [y], opset=13),
                 tmp_path / "clip.onnx")
    with pytest.raises(OnnxUnsupportedError, match=r"operator 'Acos' \(node 'acos', opset 13\) is not supported"):
        load(path)


def test_a_custom_domain_is_refused(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    node = helper.make_node("Gelu", ["x"], ["y"], name="act", domain="com.example")
    model = _model([node], [x], [x.__class__.FromString(x.SerializeToString())], opset=17)
    model.graph.output[0].name = "y"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(OnnxUnsupportedError, match=r"'com\.example::Gelu' \(node 'act', opset 17\)"):
        load(_save(model, tmp_path / "custom.onnx"))


@pytest.mark.parametrize("opset, ok", [(5, False), (6, True), (7, True), (onnx.defs.onnx_opset_version(), True),
                                       (onnx.defs.onnx_opset_version() + 1, False)])
def test_opset_range(opset, ok, tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    path = _save(_model([helper.make_node("Relu", ["x"], ["y"])], [x],
                        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], opset=opset),
                 tmp_path / "m.onnx")
    if not ok:
        with pytest.raises(OnnxFileError, match=rf"opset {opset} of the default domain; cnnkit imports opsets 6 to"):
            load(path)
        return
    out = load(path)(Tensor(np.array([[-1.0, 0.0, 2.0]] * 2, np.float32)))
    np.testing.assert_array_equal(out.numpy(), [[0.0, 0.0, 2.0]] * 2)


def test_an_older_opset_is_read_when_its_operators_did_not_change(tmp_path):
    """Not and Xor kept their opset-1 definitions; Relu changed in opset 6 (consumed_inputs went)."""
    x = helper.make_tensor_value_info("x", TensorProto.BOOL, [2])
    y = helper.make_tensor_value_info("y", TensorProto.BOOL, [2])
    nodes = [helper.make_node("Not", ["x"], ["n"]), helper.make_node("Xor", ["x", "n"], ["y"])]
    path = _save(_model(nodes, [x], [y], opset=1), tmp_path / "m.onnx")
    out = load(path)(Tensor(np.array([True, False])))
    np.testing.assert_array_equal(out.numpy(), [True, True])
    f = helper.make_tensor_value_info("f", TensorProto.FLOAT, [2])
    nodes.append(helper.make_node("Relu", ["f"], ["g"]))
    path = _save(_model(nodes, [x, f], [y, helper.make_tensor_value_info("g", TensorProto.FLOAT, [2])], opset=1),
                 tmp_path / "m.onnx")
    with pytest.raises(OnnxFileError, match=r"opset 1 of the default domain; cnnkit imports opsets 6 to \d+, and "
                                            r"older files whose operators have not changed since \(Relu did\)"):
        load(path)


def test_selections_carry_gradients_as_in_pytorch(tmp_path, rng):
    """Where, Max, Min and Clip (ReLU6) give each output's gradient to the operand it came from."""
    torch = pytest.importorskip("torch")
    w = rng.standard_normal((4, 6)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Clip", ["h", "zero", "six"], ["relu6"], name="relu6"),
        helper.make_node("Greater", ["h", "zero"], ["positive"]),
        helper.make_node("Where", ["positive", "h", "relu6"], ["picked"]),
        helper.make_node("Max", ["picked", "x2"], ["high"]),
        helper.make_node("Min", ["high", "relu6", "cap"], ["y"]),
    ]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.float32(0), "zero"),
             numpy_helper.from_array(np.float32(6), "six"), numpy_helper.from_array(np.float32(1.5), "cap")]
    x2 = helper.make_tensor_value_info("x2", TensorProto.FLOAT, [3, 6])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 6])
    imported = load(_save(_model(nodes, [x, x2], [y], inits), tmp_path / "m.onnx"))
    xs = (rng.standard_normal((3, 4)) * 3).astype(np.float32), rng.standard_normal((3, 6)).astype(np.float32)
    ours = [Tensor(a, requires_grad=True) for a in xs]
    out = imported(*ours)
    (out * out).sum().backward()
    theirs = [torch.tensor(a, requires_grad=True) for a in xs]
    tw = torch.tensor(w, requires_grad=True)
    th = theirs[0] @ tw
    relu6 = torch.clamp(th, 0.0, 6.0)
    high = torch.maximum(torch.where(th > 0, th, relu6), theirs[1])
    expected = torch.minimum(torch.minimum(high, relu6), torch.tensor(1.5))
    (expected * expected).sum().backward()
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-6)
    for mine, ref in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(mine.grad, ref.grad.numpy(), rtol=1e-5, atol=1e-6)
    weight = next(p for p in imported.parameters() if p.shape == (4, 6))
    np.testing.assert_allclose(weight.grad, tw.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["Where", "Max", "Min", "Clip"])
def test_each_selection_is_one_where_of_cnnkit_functional(op, tmp_path, rng):
    """The importer selects with F.where (broadcasting, gradients), not a copy of it of its own."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [3, 1])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])
    inputs = {"Where": ["positive", "a", "b"], "Max": ["a", "b"], "Min": ["a", "b"], "Clip": ["a", "low", "b"]}[op]
    nodes = [helper.make_node("Greater", ["a", "b"], ["positive"]), helper.make_node(op, inputs, ["y"])]
    low = numpy_helper.from_array(np.float32(-0.5), "low")
    imported = load(_save(_model(nodes, [a, b], [y], [low]), tmp_path / "m.onnx"))
    xa, xb = rng.standard_normal((3, 1)).astype(np.float32), rng.standard_normal((1, 4)).astype(np.float32)
    ta, tb = Tensor(xa, requires_grad=True), Tensor(xb, requires_grad=True)
    out = imported(ta, tb)
    expected = {"Where": np.where(xa > xb, xa, xb), "Max": np.maximum(xa, xb), "Min": np.minimum(xa, xb),
                "Clip": np.minimum(np.maximum(xa, np.float32(-0.5)), xb)}[op]
    np.testing.assert_array_equal(out.detach().numpy(), expected)
    assert out.dtype == np.float32
    ops = [type(fn).__name__ for fn in op_order([out.creator])]
    assert ops == ["WhereOp"] * (2 if op == "Clip" else 1), ops
    out.sum().backward()
    picked_a = {"Where": xa > xb, "Max": xa >= xb, "Min": xa <= xb,
                "Clip": (xa >= np.float32(-0.5)) & (np.maximum(xa, np.float32(-0.5)) <= xb)}[op]
    np.testing.assert_array_equal(ta.grad, picked_a.sum(axis=1, keepdims=True))


def test_input_shape_and_dtype_are_checked(lenet_onnx):
    imported = load(lenet_onnx[1])
    assert imported.input_shape == (1, 28, 28) and imported.input_shapes == [(None, 1, 28, 28)]
    with pytest.raises(ShapeError, match=r"input 'input' expects shape \(N, 1, 28, 28\), got \(2, 3, 28, 28\)"):
        imported(Tensor(np.zeros((2, 3, 28, 28), np.float32)))
    with pytest.raises(TypeError, match=r"input 'input' expects float32, got float64"):
        imported(Tensor(np.zeros((2, 1, 28, 28), np.float64)))


def test_shape_computing_nodes_of_an_exporter(tmp_path, rng):
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape, as PyTorch's exporter writes flatten."""
    w = rng.standard_normal((3, 12)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "k"], ["c"], name="/features/conv", pads=[1, 1, 1, 1]),
        helper.make_node("Shape", ["c"], ["s"]),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
        helper.make_node("Constant", [], ["minus1"], value=numpy_helper.from_array(np.array([-1], np.int64))),
        helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["c", "shape"], ["flat"]),
        helper.make_node("Cast", ["flat"], ["flat64"], to=TensorProto.DOUBLE),
        helper.make_node("Cast", ["flat64"], ["flat32"], to=TensorProto.FLOAT),
        helper.make_node("Gemm", ["flat32", "w"], ["y"], name="fc", transB=1),
    ]
    k = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(k, "k"), numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.array([0], np.int64), "axes")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    path = _save(_model(nodes, [x], [y], inits, opset=13), tmp_path / "m.onnx")
    imported = load(path)
    assert isinstance(imported.get_submodule("features_conv"), nn.Conv2d)
    assert isinstance(imported.get_submodule("fc"), nn.Linear)
    for n in (1, 4):
        xs = rng.standard_normal((n, 2, 2, 2)).astype(np.float32)
        assert_close_to_scale(run_cnnkit(imported, xs), run_onnxruntime(path, xs))


@pytest.mark.parametrize("op, attrs", [
    ("MaxPool", {}),
    ("AveragePool", {"count_include_pad": 1}),
    ("AveragePool", {"count_include_pad": 0}),
])
@pytest.mark.parametrize("opset", [11, 19, 22])
def test_ceil_mode_pools_with_asymmetric_pads_match_onnxruntime(op, attrs, opset, tmp_path, rng):
    # Columns: 6 + 0 + 2 pads, kernel 3, stride 2: ceil_mode's fourth window would start in
    # the end padding, which ONNX drops (cnnkit, padding explicitly, would keep it).
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 7, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "C", "OH", "OW"])
    node = helper.make_node(op, ["x"], ["y"], name="pool", kernel_shape=[3, 3], strides=[2, 2],
                            pads=[1, 0, 0, 2], ceil_mode=1, **attrs)
    path = _save(_model([node], [x], [y], opset=opset), tmp_path / "pool.onnx")
    data = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    expected = run_onnxruntime(path, data)
    assert expected.shape == (2, 3, 4, 3)
    assert_close_to_scale(run_cnnkit(load(path), data), expected, rtol=1e-6)
