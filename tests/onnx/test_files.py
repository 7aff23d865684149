"""Bad ONNX files: one clear OnnxFileError each, naming the file; nothing from the file runs."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from cnnkit import models
from cnnkit.errors import OnnxFileError
from cnnkit.onnx import export, load
from cnnkit.onnx.reader import available_memory

from .conftest import onnx


@pytest.fixture
def lenet_path(tmp_path, rng):
    return export(models.lenet5(generator=rng), tmp_path / "lenet5.onnx", (1, 28, 28))


def _relu_model(opset=17, **graph_kwargs):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = graph_kwargs.pop("nodes", [helper.make_node("Relu", ["x"], ["y"], name="relu")])
    graph = helper.make_graph(nodes, "g", [x], [y], **graph_kwargs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("content, message", [
    (b"", r"is empty: not an ONNX model"),
    (b"hello, this is a text file\n" * 20, r"is not an ONNX model"),
    (b"\x89PNG\r\n\x1a\n" + bytes(100), r"is not an ONNX model: it is a PNG image"),
    (bytes(range(256)) * 4, r"is not an ONNX model"),
])
def test_not_onnx(content, message, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(OnnxFileError, match=rf"model\.onnx {message}"):
        load(path)


def test_a_pytorch_zip_and_a_cnnkit_checkpoint_are_named(tmp_path, lenet_checkpoint):
    pth = tmp_path / "model.pth"
    with zipfile.ZipFile(pth, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(OnnxFileError, match=r"it is a zip archive \(a PyTorch \.pth checkpoint"):
        load(pth)
    with pytest.raises(OnnxFileError, match=r"it is a safetensors file \(a cnnkit checkpoint\? load it with cnnkit\.load\)"):
        load(lenet_checkpoint)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(OnnxFileError, match=r"nothing\.onnx: no such file"):
        load(tmp_path / "nothing.onnx")
    with pytest.raises(OnnxFileError, match=r"is not a file"):
        load(tmp_path)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated(keep, lenet_path):
    data = lenet_path.read_bytes()
    lenet_path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(OnnxFileError, match=r"lenet5\.onnx is a truncated ONNX file: field \d+ declares \d+ bytes"):
        load(lenet_path)


def test_a_cycle(tmp_path):
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="first"),
             helper.make_node("Relu", ["a"], ["b"], name="second"),
             helper.make_node("Relu", ["a"], ["y"], name="out")]
    path = tmp_path / "cycle.onnx"
    onnx.save_model(_relu_model(nodes=nodes), str(path))
    with pytest.raises(OnnxFileError, match=r"cycle\.onnx: the graph has a cycle: node 'first' -> 'second' -> 'first' \(each reads the one before\)"):
        load(path)
    # A longer loop of unnamed nodes behind a node that only waits for it: the loop is named.
    nodes = [helper.make_node("Relu", ["c"], ["y"], name="waits"), helper.make_node("Add", ["x", "c"], ["a"]),
             helper.make_node("Relu", ["a"], ["b"]), helper.make_node("Neg", ["b"], ["c"])]
    onnx.save_model(_relu_model(nodes=nodes), str(path))
    with pytest.raises(OnnxFileError, match=r"cycle: node 'Add #1' -> 'Relu #2' -> 'Neg #3' -> 'Add #1' \("):
        load(path)


def test_a_value_nothing_produces(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save_model(_relu_model(nodes=[helper.make_node("Add", ["x", "ghost"], ["y"], name="add")]), str(path))
    with pytest.raises(OnnxFileError, match=r"node 'add' \(Add\) reads 'ghost', which no node, graph input or initializer provides"):
        load(path)


def test_a_value_written_twice(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="a"), helper.make_node("Relu", ["x"], ["y"], name="b")]
    path = tmp_path / "m.onnx"
    onnx.save_model(_relu_model(nodes=nodes), str(path))
    with pytest.raises(OnnxFileError, match=r"value 'y' is written twice \(by 'a' and node 'b'\)"):
        load(path)


def _with_weight(tensor: onnx.TensorProto) -> onnx.ModelProto:
    nodes = [helper.make_node("Add", ["x", tensor.name], ["y"], name="add")]
    return _relu_model(nodes=nodes, initializer=[tensor])


def test_initializer_size_mismatch(tmp_path):
    t = numpy_helper.from_array(np.ones(4, np.float32), "w")
    t.raw_data = t.raw_data[:12]
    path = tmp_path / "m.onnx"
    onnx.save_model(_with_weight(t), str(path))
    with pytest.raises(OnnxFileError, match=r"initializer 'w' of shape \[4\] and type FLOAT needs 16 bytes but holds 12"):
        load(path)
    t = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], float_data=[1.0, 2.0, 3.0])
    onnx.save_model(_with_weight(t), str(path))
    with pytest.raises(OnnxFileError, match=r"initializer 'w' of shape \[4\] needs 4 values but holds 3"):
        load(path)


def _external(tmp_path, location: str, nbytes: int = 16, dims=(4,)) -> onnx.ModelProto:
    t = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=list(dims))
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(nbytes))):
        t.external_data.add(key=key, value=value)
    path = tmp_path / "m.onnx"
    onnx.save_model(_with_weight(t), str(path))
    return path


def test_external_data_round_trip_and_missing(tmp_path, rng):
    model = models.lenet5(generator=rng)
    path = export(model, tmp_path / "a" / "lenet5.onnx", (1, 28, 28))
    proto = onnx.load(str(path))
    onnx.save_model(proto, str(tmp_path / "b.onnx"), save_as_external_data=True, location="b.weights",
                    size_threshold=0)
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    from .conftest import run_cnnkit

    np.testing.assert_array_equal(run_cnnkit(load(tmp_path / "b.onnx"), x), run_cnnkit(model, x))
    os.remove(tmp_path / "b.weights")
    with pytest.raises(OnnxFileError, match=r"b\.onnx: the external data file 'b\.weights' of tensor '[\w.]+' is missing"):
        load(tmp_path / "b.onnx")


def test_external_data_too_short_or_outside_the_folder(tmp_path):
    (tmp_path / "w.bin").write_bytes(bytes(8))
    with pytest.raises(OnnxFileError, match=r"'w\.bin' has 8 bytes; tensor 'w' needs bytes 0 to 16"):
        load(_external(tmp_path, "w.bin"))
    with pytest.raises(OnnxFileError, match=r"external data at '\.\./secret', outside the model's folder"):
        load(_external(tmp_path, "../secret"))
    with pytest.raises(OnnxFileError, match=r"external data at '/etc/passwd'; a location must be a path relative"):
        load(_external(tmp_path, "/etc/passwd"))
    with pytest.raises(OnnxFileError, match=r"needs 16 bytes but its external data declares 12"):
        load(_external(tmp_path, "w.bin", nbytes=12))


def test_a_model_far_larger_than_memory(tmp_path):
    memory = available_memory()
    if memory is None:
        pytest.skip("this system does not say how much memory is available")
    # Weights declared in a sparse external file of 1 TiB: refused before a byte is read.
    huge = 2**40
    with open(tmp_path / "w.bin", "wb") as f:
        f.truncate(huge)
    with pytest.raises(OnnxFileError, match=r"the external weights need 1024\.0 GiB, more than the [\d.]+ GiB of memory"):
        load(_external(tmp_path, "w.bin", nbytes=huge, dims=(huge // 4,)))
    # A (sparse) file itself larger than the memory.
    big = tmp_path / "big.onnx"
    with open(big, "wb") as f:
        f.write(_relu_model().SerializeToString())
        f.truncate(memory + 2**34)
    with pytest.raises(OnnxFileError, match=r"big\.onnx: the file is [\d.]+ GiB, more than the [\d.]+ GiB of memory"):
        load(big)


def test_tensor_of_unknown_type(tmp_path):
    t = onnx.TensorProto(name="w", data_type=999, dims=[4], raw_data=bytes(16))
    path = tmp_path / "m.onnx"
    onnx.save_model(_with_weight(t), str(path))
    with pytest.raises(OnnxFileError, match=r"m\.onnx"):
        load(path)
