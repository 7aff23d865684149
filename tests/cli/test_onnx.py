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
    err = fails(["export", lenet_checkpoint, "-o", tmp_path / "x.onnx", "--opset", "5"], capsys)
    assert err == f"cnnkit export: export supports opsets 11 to {onnx.defs.onnx_opset_version()}, got 5\n"
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


def test_bad_onnx_files_end_in_one_line(tmp_path, digit_png, capsys, lenet_checkpoint):
    text = tmp_path / "notes.onnx"
    text.write_text("not a model\n")
    assert "notes.onnx is not an ONNX model" in fails(["predict", text, digit_png], capsys)
    good = tmp_path / "lenet5.onnx"
    ok(["export", lenet_checkpoint, "-o", good], capsys)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good.read_bytes()[:5000])
    assert "cut.onnx is a truncated ONNX file" in fails(["summary", cut], capsys)
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 28, 28])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Clip", ["x"], ["y"], name="clip0")], "g", [x],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1, 28, 28])])
    clip = tmp_path / "clip.onnx"
    onnx.save_model(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)]), str(clip))
    assert "operator 'Clip' (node 'clip0', opset 13) is not supported" in fails(["summary", clip], capsys)
    assert "missing.onnx: no such file" in fails(["evaluate", tmp_path / "missing.onnx"], capsys)


def test_export_of_a_zoo_model_by_name(tmp_path, capsys):
    """A zoo name exports its random weights (seed 0), as `cnnkit summary resnet20` shows them."""
    ok(["export", "resnet20", "-o", tmp_path / "r.onnx"], capsys)
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "r.onnx"), providers=["CPUExecutionProvider"])
    with no_grad():
        expected = models.resnet20(generator=np.random.default_rng(0)).eval()(Tensor(x)).numpy()
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-4, atol=1e-4)


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
