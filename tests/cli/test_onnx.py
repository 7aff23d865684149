"""`cnnkit export`, and `predict`, `summary`, `visualize feature-maps`, `evaluate` on .onnx files.

The ONNX file of a checkpoint behaves like the checkpoint: same predictions, same layer
table; it runs in onnxruntime; bad files end in one line on stderr, no traceback.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cnnkit import Tensor, models, no_grad
from cnnkit.cli.main import main
from cnnkit.io.checkpoint import load_checkpoint

from ..conftest import MNIST_EXTRA
from .test_owndata import make_signs

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture
def digit_png(tmp_path):
    path = tmp_path / "digit.png"
    Image.fromarray((np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8)).save(path)
    return path


def ok(argv, capsys) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def fails(argv, capsys, code: int = 1) -> str:
    assert main([str(a) for a in argv]) == code
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_export_writes_a_file_onnxruntime_runs_with_the_checkpoint_metadata(lenet_checkpoint, tmp_path, capsys):
    path = tmp_path / "lenet5.onnx"
    out = ok(["export", lenet_checkpoint, "-o", path], capsys)
    assert out.strip() == f"wrote {path} (opset 17, 61,706 parameters, input 1x28x28, any batch size)"
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["cnnkit.classes"]) == MNIST_EXTRA["classes"]
    pre = json.loads(meta["cnnkit.preprocessing"])
    assert (pre["mean"], pre["std"], pre["dataset"], pre["input_shape"]) == ([0.1307], [0.3081], "mnist", [1, 28, 28])
    model = load_checkpoint(lenet_checkpoint).build_model()
    x = np.random.default_rng(1).standard_normal((3, 1, 28, 28)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with no_grad():
        expected = model(Tensor(x)).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, atol=1e-5)


def test_export_options(lenet_checkpoint, tmp_path, capsys):
    path = tmp_path / "fixed.onnx"
    ok(["export", lenet_checkpoint, "-o", path, "--opset", "13", "--fixed-batch"], capsys)
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == 13
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 1, 28, 28]
    err = fails(["export", lenet_checkpoint, "-o", tmp_path / "x.onnx", "--opset", "5"], capsys, code=2)
    assert err == f"cnnkit export: argument --opset: expected an integer in [11, {onnx.defs.onnx_opset_version()}], got '5'\n"
    assert not (tmp_path / "x.onnx").exists()


def test_predict_summary_and_feature_maps_of_an_onnx_file_match_the_checkpoint(
    lenet_checkpoint, digit_png, tmp_path, capsys
):
    path = tmp_path / "lenet5.onnx"
    ok(["export", lenet_checkpoint, "-o", path], capsys)
    assert ok(["predict", path, digit_png], capsys) == ok(["predict", lenet_checkpoint, digit_png], capsys)
    table = ok(["summary", path], capsys)
    assert "Total params: 61,706" in table and "features.0    Conv2d" in table
    assert table.splitlines()[3:] == ok(["summary", lenet_checkpoint], capsys).splitlines()[3:]
    ok(["visualize", "feature-maps", path, digit_png, "-o", tmp_path / "maps.png"], capsys)
    with Image.open(tmp_path / "maps.png") as image:
        assert image.format == "PNG"


def test_evaluate_an_onnx_file_on_its_dataset(lenet_checkpoint, tmp_path, capsys):
    path = tmp_path / "lenet5.onnx"
    ok(["export", lenet_checkpoint, "-o", path], capsys)
    mine, theirs = ok(["evaluate", path], capsys), ok(["evaluate", lenet_checkpoint], capsys)
    assert mine.splitlines()[0] == "lenet5.onnx on the mnist test split (10,000 images):"
    assert mine.splitlines()[1:] == theirs.splitlines()[1:]


def _graph_file(path, nodes, initializers=(), opset=13):
    """A one-input (1, 1, 28, 28) ONNX file of ``nodes`` reading "x" and writing "y"."""
    helper = onnx.helper
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 28, 28])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1, 28, 28])
    graph = helper.make_graph(nodes, "g", [x], [y], list(initializers))
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def _external_weight(path, nbytes: int, dims) -> onnx.TensorProto:
    t = onnx.TensorProto(name="w", data_type=onnx.TensorProto.FLOAT, dims=list(dims))
    t.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", path.name), ("offset", "0"), ("length", str(nbytes))):
        t.external_data.add(key=key, value=value)
    return t


def _bad_file(kind: str, folder, good):
    """The issue's list of bad inputs (and two more), each as a file named after it."""
    helper = onnx.helper
    path = folder / f"{kind}.onnx"
    if kind == "not-onnx":
        path.write_text("not a model\n")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:5000])
    elif kind == "cycle":
        _graph_file(path, [helper.make_node("Add", ["x", "b"], ["a"], name="first"),
                           helper.make_node("Relu", ["a"], ["b"], name="second"),
                           helper.make_node("Relu", ["a"], ["y"], name="out")])
    elif kind == "missing-external-data":
        weight = _external_weight(folder / "weights.bin", 28 * 28 * 4, (28, 28))
        _graph_file(path, [helper.make_node("Add", ["x", "w"], ["y"], name="add")], [weight])
    elif kind == "initializer-size":
        weight = onnx.numpy_helper.from_array(np.ones((28, 28), np.float32), "w")
        weight.raw_data = weight.raw_data[:-8]
        _graph_file(path, [helper.make_node("Add", ["x", "w"], ["y"], name="add")], [weight])
    elif kind == "larger-than-memory":
        huge = 2**40  # a sparse 1 TiB weights file: nothing of it is read
        with open(folder / "huge.bin", "wb") as f:
            f.truncate(huge)
        _graph_file(path, [helper.make_node("Add", ["x", "w"], ["y"], name="add")],
                    [_external_weight(folder / "huge.bin", huge, (huge // 4,))])
    elif kind == "unsupported-op":
        _graph_file(path, [helper.make_node("Acos", ["x"], ["y"], name="acos0")])
    return path


BAD_FILES = {  # kind -> (command, what its one line says)
    "not-onnx": ("predict", "not-onnx.onnx is not an ONNX model"),
    "truncated": ("summary", "truncated.onnx is a truncated ONNX file"),
    "cycle": ("visualize", "cycle.onnx: the graph has a cycle: node 'first' -> 'second' -> 'first' (each reads the one before)"),
    "missing-external-data": ("evaluate", "the external data file 'weights.bin' of tensor 'w' is missing"),
    "initializer-size": ("predict", "initializer 'w' of shape [28, 28] and type FLOAT needs 3136 bytes but holds 3128"),
    "larger-than-memory": ("summary", "the external weights need 1024.0 GiB, more than the"),
    "unsupported-op": ("export", "operator 'Acos' (node 'acos0', opset 13) is not supported"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_onnx_files_end_in_one_line(kind, tmp_path, digit_png, capsys, lenet_checkpoint):
    good = tmp_path / "lenet5.onnx"
    ok(["export", lenet_checkpoint, "-o", good], capsys)
    path = _bad_file(kind, tmp_path, good)
    command, message = BAD_FILES[kind]
    argv = {
        "predict": ["predict", path, digit_png],
        "summary": ["summary", path],
        "visualize": ["visualize", "feature-maps", path, digit_png, "-o", tmp_path / "maps.png"],
        "evaluate": ["evaluate", path, "--data", tmp_path],
        "export": ["export", path, "-o", tmp_path / "again.onnx"],
    }[command]
    err = fails(argv, capsys)
    assert err.startswith(f"cnnkit {argv[0]}: ") and message in err, err
    assert not (tmp_path / "maps.png").exists() and not (tmp_path / "again.onnx").exists()


def test_a_missing_onnx_file(tmp_path, capsys):
    assert "missing.onnx: no such file" in fails(["evaluate", tmp_path / "missing.onnx"], capsys)


def test_export_of_a_zoo_model_by_name(tmp_path, capsys):
    """A zoo name exports its random weights (seed 0), as `cnnkit summary resnet20` shows them."""
    ok(["export", "resnet20", "-o", tmp_path / "r.onnx"], capsys)
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "r.onnx"), providers=["CPUExecutionProvider"])
    with no_grad():
        expected = models.resnet20(generator=np.random.default_rng(0)).eval()(Tensor(x)).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-4, atol=1e-4)


def test_export_with_a_dynamic_size(tmp_path, capsys):
    """--dynamic-size: a model ending in global pooling takes any image size in onnxruntime."""
    out = ok(["export", "resnet20", "-o", tmp_path / "r.onnx", "--dynamic-size"], capsys)
    assert out.strip().endswith("input 3xHxW, any size (checked at 32x32 and larger), any batch size)")
    x = np.random.default_rng(3).standard_normal((2, 3, 40, 56)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "r.onnx"), providers=["CPUExecutionProvider"])
    with no_grad():
        expected = models.resnet20(generator=np.random.default_rng(0)).eval()(Tensor(x)).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-4, atol=1e-4)
    err = fails(["export", "lenet5", "-o", tmp_path / "l.onnx", "--dynamic-size"], capsys)
    assert err.startswith("cnnkit export: cannot export LeNet5 with a dynamic size: it does not run on a 1x45x47 input")


def test_a_folder_trained_binary_model_predicts_and_evaluates_the_same_from_onnx(tmp_path, capsys):
    """The export carries the checkpoint's task (binary, threshold) and image spec (RGB 30x30)."""
    root = make_signs(tmp_path / "signs", 12)
    out = tmp_path / "run"
    ok(["train", "lenet5", "--data", root, "--task", "binary", "--epochs", "1", "--batch-size", "8", "--out", out,
        "--workers", "0"], capsys)
    ckpt, path = out / "best.safetensors", tmp_path / "signs.onnx"
    ok(["export", ckpt, "-o", path], capsys)
    pre = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["cnnkit.preprocessing"])
    assert pre["task"] == {"type": "binary", "threshold": 0.5} and pre["image"]["size"] == [30, 30]
    assert ok(["predict", path, root / "sign"], capsys) == ok(["predict", ckpt, root / "sign"], capsys)
    mine, theirs = ok(["evaluate", path, "--data", root], capsys), ok(["evaluate", ckpt, "--data", root], capsys)
    assert mine.splitlines()[1:] == theirs.splitlines()[1:]
