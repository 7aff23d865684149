"""Weights sources and key maps: torchvision, timm (ResNet, VGG), Hugging Face, cnnkit checkpoints."""

from __future__ import annotations

import json
import re
import struct

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from cnnkit import models, nn
from cnnkit.io.pth import PthError
from cnnkit.io.weights import (
    WeightsError,
    load_weights,
    map_keys,
    read_safetensors,
    resolve_weights,
    write_checkpoint,
    write_safetensors,
)
from cnnkit.tensor import Tensor

from .pth_files import torch_save


def _state(model) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in model.state_dict().items()}


def _assert_same_state(model, expected: dict[str, np.ndarray]):
    got = _state(model)
    assert set(got) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


@pytest.fixture(scope="module")
def resnet18_state():
    return _state(models.resnet18(generator=np.random.default_rng(1)))


def test_torchvision_pth_loads_into_the_zoo_model(tmp_path, resnet18_state):
    pytest.importorskip("torch")
    path = torch_save(resnet18_state, tmp_path / "resnet18.pth")
    model = models.resnet18(generator=np.random.default_rng(2))
    report = load_weights(model, path)
    assert (report.kind, report.convention, report.complete) == ("pth", "torchvision", True)
    _assert_same_state(model, resnet18_state)


def test_timm_resnet_safetensors_are_identity_mapped(tmp_path, resnet18_state):
    # timm's torchvision-compatible ResNets (resnet18/34/50 and their .tv_/.a1_ weights on the
    # Hugging Face hub as model.safetensors) use torchvision's keys: conv1, bn1, layer1.0.conv1, ..., fc.
    save_file(resnet18_state, str(tmp_path / "model.safetensors"))
    model = models.resnet18(generator=np.random.default_rng(3))
    report = load_weights(model, tmp_path / "model.safetensors")
    assert (report.kind, report.convention) == ("safetensors", "torchvision")
    _assert_same_state(model, resnet18_state)


def _to_huggingface(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """torchvision ResNet keys -> transformers' ResNetForImageClassification keys (written from
    its module names: embedder.embedder.{convolution,normalization}, encoder.stages.S.layers.B.
    layer.I.{convolution,normalization}, ...shortcut.{convolution,normalization}, classifier.1)."""
    out = {}
    for key, value in state.items():
        if key.startswith(("conv1.", "bn1.")):
            part, leaf = key.split(".", 1)
            new = "resnet.embedder.embedder." + {"conv1": "convolution", "bn1": "normalization"}[part] + "." + leaf
        elif key.startswith("fc."):
            new = "classifier.1." + key[3:]
        else:
            m = re.match(r"layer(\d)\.(\d+)\.(conv|bn|downsample\.)(\d)\.(.+)", key)
            stage, block, kind, index, leaf = m.groups()
            base = f"resnet.encoder.stages.{int(stage) - 1}.layers.{block}."
            if kind == "downsample.":
                new = base + "shortcut." + ("convolution." if index == "0" else "normalization.") + leaf
            else:
                new = base + f"layer.{int(index) - 1}." + ("convolution." if kind == "conv" else "normalization.") + leaf
        out[new] = value
    return out


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_hugging_face_resnet_safetensors_map_to_the_zoo(tmp_path, name):
    source = _state(models.get_model(name, generator=np.random.default_rng(4)))
    hf = _to_huggingface(source)
    assert "resnet.encoder.stages.0.layers.0.layer.0.convolution.weight" in hf
    save_file(hf, str(tmp_path / "model.safetensors"))
    model = models.get_model(name, generator=np.random.default_rng(5))
    report = load_weights(model, tmp_path / "model.safetensors")
    assert report.convention == "huggingface-resnet"
    _assert_same_state(model, source)


class _TinyVGG(nn.Module):
    """VGG's key structure (features.N, classifier.0/3/6) at a test-friendly width."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(8 * 7 * 7, 16), nn.ReLU(), nn.Dropout(0.5),
                                        nn.Linear(16, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 10))

    def forward(self, x):
        from cnnkit import functional as F

        return self.classifier(F.flatten(self.avgpool(self.features(x)), 1))


def test_timm_vgg_convolutional_pre_logits_become_the_linear_classifier(tmp_path):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    timm = {"features.0.weight": f32(8, 3, 3, 3), "features.0.bias": f32(8),
            "pre_logits.fc1.weight": f32(16, 8, 7, 7), "pre_logits.fc1.bias": f32(16),
            "pre_logits.fc2.weight": f32(16, 16, 1, 1), "pre_logits.fc2.bias": f32(16),
            "head.fc.weight": f32(10, 16), "head.fc.bias": f32(10)}
    save_file(timm, str(tmp_path / "model.safetensors"))
    model = _TinyVGG()
    report = load_weights(model, tmp_path / "model.safetensors")
    assert report.convention == "timm-vgg"
    model.eval()
    x = rng.standard_normal((2, 3, 14, 14)).astype(np.float32)
    # Reference: timm's own computation, in PyTorch: pre_logits as convolutions on the 7x7 map.
    t = {k: torch.from_numpy(v) for k, v in timm.items()}
    y = torch.nn.functional.conv2d(torch.from_numpy(x), t["features.0.weight"], t["features.0.bias"], padding=1)
    y = torch.nn.functional.max_pool2d(torch.relu(y), 2)                       # (2, 8, 7, 7)
    y = torch.relu(torch.nn.functional.conv2d(y, t["pre_logits.fc1.weight"], t["pre_logits.fc1.bias"]))
    y = torch.relu(torch.nn.functional.conv2d(y, t["pre_logits.fc2.weight"], t["pre_logits.fc2.bias"]))
    y = torch.nn.functional.linear(y.flatten(1), t["head.fc.weight"], t["head.fc.bias"])
    np.testing.assert_allclose(model(Tensor(x)).data, y.numpy(), rtol=1e-5, atol=1e-5)


def test_timm_vgg16_key_names_and_shapes_map_to_the_zoo_vgg16():
    # Real timm vgg16 names and shapes (zero-cost broadcast arrays), against the zoo's vgg16 keys.
    conv = [(64, 3), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256), (256, 256), (512, 256),
            (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    indices = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    zero = lambda *s: np.broadcast_to(np.float32(0), s)  # noqa: E731
    timm = {}
    for i, (f, c) in zip(indices, conv):
        timm[f"features.{i}.weight"], timm[f"features.{i}.bias"] = zero(f, c, 3, 3), zero(f)
    timm |= {"pre_logits.fc1.weight": zero(4096, 512, 7, 7), "pre_logits.fc1.bias": zero(4096),
             "pre_logits.fc2.weight": zero(4096, 4096, 1, 1), "pre_logits.fc2.bias": zero(4096),
             "head.fc.weight": zero(1000, 4096), "head.fc.bias": zero(1000)}
    mapped, convention, _ = map_keys(timm)
    assert convention == "timm-vgg"
    zoo = {}
    for i, (f, c) in zip(indices, conv):
        zoo[f"features.{i}.weight"], zoo[f"features.{i}.bias"] = (f, c, 3, 3), (f,)
    zoo |= {"classifier.0.weight": (4096, 25088), "classifier.0.bias": (4096,),
            "classifier.3.weight": (4096, 4096), "classifier.3.bias": (4096,),
            "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,)}
    assert {k: v.shape for k, v in mapped.items()} == zoo


def test_torchvision_densenet_checkpoint_keys_are_renamed(tmp_path):
    pytest.importorskip("torch")
    source = _state(models.densenet121(generator=np.random.default_rng(7)))
    # torchvision's published densenet121-a639ec97.pth spells denselayer norms/convs "norm.1", "conv.2".
    legacy = {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v for k, v in source.items()}
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    path = torch_save(legacy, tmp_path / "densenet121.pth")
    model = models.densenet121(generator=np.random.default_rng(8))
    report = load_weights(model, path)
    assert report.convention == "torchvision-densenet"
    _assert_same_state(model, source)


def test_googlenet_auxiliary_heads_are_dropped_and_reported(tmp_path):
    pytest.importorskip("torch")
    source = _state(models.googlenet(generator=np.random.default_rng(9)))
    aux = {"aux1.conv.conv.weight": np.ones((128, 512, 1, 1), np.float32), "aux1.fc1.weight": np.ones((1024, 2048), np.float32),
           "aux2.fc2.bias": np.ones(1000, np.float32)}
    path = torch_save(source | aux, tmp_path / "googlenet.pth")
    model = models.googlenet(generator=np.random.default_rng(10))
    report = load_weights(model, path)
    assert sorted(report.dropped) == sorted(aux) and report.complete
    _assert_same_state(model, source)


def test_missing_unexpected_and_mismatched_keys_are_listed_precisely(tmp_path, resnet18_state):
    state = dict(resnet18_state)
    del state["layer4.1.bn2.running_var"]
    state["extra.weight"] = np.zeros(3, np.float32)
    save_file(state, str(tmp_path / "w.safetensors"))
    model = models.resnet18(num_classes=7)
    with pytest.raises(WeightsError) as info:
        load_weights(model, tmp_path / "w.safetensors")
    message = str(info.value)
    assert "missing from the weights (1): layer4.1.bn2.running_var" in message
    assert "not in the model (1): extra.weight" in message
    assert "shape mismatch for fc.weight: weights have [1000, 512], model has [7, 512]" in message
    assert "shape mismatch for fc.bias: weights have [1000], model has [7]" in message
    # Fine-tuning: skip the head, load the rest, report what was left out.
    state["layer4.1.bn2.running_var"] = resnet18_state["layer4.1.bn2.running_var"]
    del state["extra.weight"]
    save_file(state, str(tmp_path / "w.safetensors"))
    before = _state(model)["fc.weight"].copy()
    report = load_weights(model, tmp_path / "w.safetensors", skip=("fc",))
    assert sorted(report.skipped) == ["fc.bias", "fc.weight"] and report.complete
    np.testing.assert_array_equal(_state(model)["fc.weight"], before)
    np.testing.assert_array_equal(_state(model)["conv1.weight"], resnet18_state["conv1.weight"])


def test_cnnkit_checkpoints_are_a_source_too(tmp_path, resnet18_state):
    write_checkpoint(tmp_path / "ck.safetensors", resnet18_state, model_name="resnet18",
                     extra={"classes": ["a"] * 1000})
    model = models.resnet18()
    report = load_weights(model, tmp_path / "ck.safetensors")
    assert report.kind == "cnnkit checkpoint" and report.meta["classes"][0] == "a"
    _assert_same_state(model, resnet18_state)
    import cnnkit

    loaded = cnnkit.load(tmp_path / "ck.safetensors")  # the streamed file is a regular checkpoint
    _assert_same_state(loaded, resnet18_state)


def test_unknown_sources_are_refused_clearly(tmp_path):
    model = models.lenet5()
    with pytest.raises(WeightsError, match=r"nope\.pth: no such file"):
        resolve_weights(tmp_path / "nope.pth", model)
    (tmp_path / "w.bin").write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="not a weights file cnnkit reads"):
        resolve_weights(tmp_path / "w.bin", model)
    (tmp_path / "evil.pth").write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(PthError, match="evil.pth: not a readable zip archive"):
        resolve_weights(tmp_path / "evil.pth", model)


def test_safetensors_are_memory_mapped_and_written_by_streaming(tmp_path):
    rng = np.random.default_rng(11)
    tensors = {"a": rng.standard_normal((3, 4)).astype(np.float32), "b": np.arange(5, dtype=np.int64),
               "c": np.array(2.5, np.float64), "d": np.zeros((0, 3), np.float16), "t": np.arange(6.0).reshape(2, 3).T}
    write_safetensors(tmp_path / "x.safetensors", tensors, {"k": "v"})
    official = load_file(str(tmp_path / "x.safetensors"))  # the reference reader agrees
    arrays, meta = read_safetensors(tmp_path / "x.safetensors")
    assert meta == {"k": "v"}
    for key, value in tensors.items():
        np.testing.assert_array_equal(official[key], value)
        np.testing.assert_array_equal(arrays[key], value)
        assert arrays[key].shape == value.shape
    base = arrays["a"]
    while isinstance(base, np.ndarray):
        base = base.base
    assert type(base.obj).__name__ == "mmap"


def test_safetensors_with_lying_headers_are_refused(tmp_path):
    good = tmp_path / "good.safetensors"
    write_safetensors(good, {"w": np.ones((4, 4), np.float32)})
    raw = good.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(raw[:-10])
    with pytest.raises(WeightsError, match=r"tensor 'w' \(F32 \[4, 4\]\) needs 64 bytes at \[0, 64\) of a 54-byte "
                                           r"data section \(truncated or corrupt\)"):
        read_safetensors(tmp_path / "trunc.safetensors")
    header = json.dumps({"w": {"dtype": "F32", "shape": [-4, 4], "data_offsets": [0, 64]}}).encode()
    (tmp_path / "neg.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(64))
    with pytest.raises(WeightsError, match="tensor 'w' has a malformed header entry"):
        read_safetensors(tmp_path / "neg.safetensors")
    (tmp_path / "big.safetensors").write_bytes(struct.pack("<Q", 2**60) + b"{}")
    with pytest.raises(WeightsError, match="header claims"):
        read_safetensors(tmp_path / "big.safetensors")
