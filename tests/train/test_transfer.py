"""Transfer learning: weights from every source into a zoo model with a new head, stems adapted.

The sources are PyTorch's own: the torch.nn reference networks of tests/models/test_models.py
(torchvision's architectures and keys) with random weights, written by ``torch.save`` or as
safetensors in timm's and Hugging Face's key conventions, or as a cnnkit checkpoint.
"""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

from cnnkit import models
from cnnkit.data.pipeline import normalization_for_channels
from cnnkit.errors import CheckpointError
from cnnkit.io.weights import SourceWeights, read_weights, write_checkpoint
from cnnkit.models.weights import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.train.transfer import adapt_stem, freeze, init_backbone, param_groups, pretrained_normalization

torch = pytest.importorskip("torch")

from tests.io.test_weights import _to_huggingface  # noqa: E402
from tests.models.test_models import ZOO, reference_model, torch_state  # noqa: E402


@pytest.fixture(scope="module")
def torch_resnet18():
    """A torch.nn ResNet-18 (torchvision's layout) with random weights, and its state as arrays."""
    tmodel = reference_model(ZOO["resnet18"][0], seed=7)
    return tmodel, torch_state(tmodel)


def _arrays(model) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in model.state_dict().items()}


def _write(kind: str, tmodel, state: dict[str, np.ndarray], path):
    if kind == "pth":
        torch.save(tmodel.state_dict(), path)
    elif kind == "timm safetensors":
        save_file(state, str(path))
    elif kind == "huggingface safetensors":
        save_file(_to_huggingface(state), str(path))
    else:
        write_checkpoint(path, state, model_name="resnet18", extra={"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]})
    return path


@pytest.mark.parametrize("kind, expected", [
    ("pth", ("pth", "torchvision")),
    ("timm safetensors", ("safetensors", "torchvision")),
    ("huggingface safetensors", ("safetensors", "huggingface-resnet")),
    ("cnnkit checkpoint", ("cnnkit checkpoint", "torchvision")),
])
def test_every_source_initialises_the_backbone_and_the_head_stays_new(tmp_path, torch_resnet18, kind, expected):
    tmodel, state = torch_resnet18
    path = _write(kind, tmodel, state, tmp_path / "weights.bin")
    model = models.resnet18(num_classes=5, generator=np.random.default_rng(0))
    head = {k: v for k, v in _arrays(model).items() if k.startswith("fc.")}
    report = init_backbone(model, "resnet18", path)
    assert (report.weights.kind, report.weights.convention) == expected
    assert report.head == ["fc.bias", "fc.weight"] and sorted(report.weights.skipped) == ["fc.bias", "fc.weight"]
    got = _arrays(model)
    for key, value in state.items():
        if not key.startswith("fc."):
            np.testing.assert_array_equal(got[key], value, err_msg=key)  # the source's, bit for bit
    for key, value in head.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)   # untouched: a new 5-class head
    assert got["fc.weight"].shape == (5, 512)
    assert f"{len(state) - 2} tensors from {path} ({expected[0]}, {expected[1]} keys); new head (fc.bias, fc.weight)" \
        == report.describe()


def test_the_stem_adapts_to_one_channel_and_back_as_timm_does(tmp_path):
    tmodel = reference_model(ZOO["resnet20"][0], seed=3)
    state = torch_state(tmodel)
    torch.save(tmodel.state_dict(), tmp_path / "r20.pth")
    gray = models.resnet20(num_classes=2, in_channels=1)
    report = init_backbone(gray, "resnet20", tmp_path / "r20.pth")
    assert report.weights.adapted == [("conv1.weight", (16, 3, 3, 3), (16, 1, 3, 3))]
    assert "conv1.weight adapted from 3 to 1 input channels" in report.describe()
    # A gray image seen as three equal channels gives the same first feature maps.
    np.testing.assert_allclose(np.asarray(gray.conv1.weight.data), state["conv1.weight"].sum(1, keepdims=True), rtol=1e-6)
    x = np.random.default_rng(0).random((2, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = tmodel.conv1(torch.from_numpy(np.repeat(x, 3, axis=1))).numpy()
    np.testing.assert_allclose(torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(
        np.asarray(gray.conv1.weight.data)), padding=1).numpy(), want, rtol=1e-5, atol=1e-5)
    # One channel's weights spread evenly over three.
    np.testing.assert_allclose(adapt_stem(state["conv1.weight"][:, :1], 3), np.repeat(state["conv1.weight"][:, :1], 3, 1) / 3)
    with pytest.raises(ValueError, match="cannot adapt 3-channel weights to 4 channels"):
        adapt_stem(state["conv1.weight"], 4)


def test_weights_of_another_model_are_refused_listing_the_keys(tmp_path, torch_resnet18):
    tmodel, _ = torch_resnet18
    torch.save(tmodel.state_dict(), tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match=r"r18\.pth: the weights do not fit .*\(resnet34\) \[pth, torchvision "
                                              r"keys\]:\nmissing from the weights \(\d+\): layer1\.2\.conv1\.weight"):
        init_backbone(models.resnet34(num_classes=3), "resnet34", tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match=r"nope\.pth: no such file or a weights name of resnet18 \(its weights: "
                                              r"IMAGENET1K_V1, DEFAULT\)$"):
        read_weights("nope.pth", "resnet18")
    with pytest.raises(CheckpointError, match=r"IMAGENET1K_V1: no such file or a weights name of lenet5 \(it has no "
                                              r"named weights\)$"):
        read_weights(tmp_path / "IMAGENET1K_V1", "lenet5")


def test_the_weights_own_normalization_and_its_channel_conversions(tmp_path, torch_resnet18):
    named = SourceWeights("DEFAULT", {}, "named weights", {"weights": "resnet18.IMAGENET1K_V1",
                                                          "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)})
    assert pretrained_normalization(named) == (IMAGENET_MEAN, IMAGENET_STD, "the weights' own: resnet18.IMAGENET1K_V1")
    tmodel, state = torch_resnet18
    checkpoint = read_weights(_write("cnnkit checkpoint", tmodel, state, tmp_path / "c.safetensors"))
    assert pretrained_normalization(checkpoint) == ((0.5, 0.4, 0.3), (0.2, 0.2, 0.2),
                                                     f"the weights' own, from {tmp_path / 'c.safetensors'}")
    assert pretrained_normalization(read_weights(_write("pth", tmodel, state, tmp_path / "p.pth"))) is None
    mean, std, how = normalization_for_channels(IMAGENET_MEAN, IMAGENET_STD, 1)
    np.testing.assert_allclose((mean[0], std[0]), (np.mean(IMAGENET_MEAN), np.mean(IMAGENET_STD)))
    assert how == "averaged over R, G and B for one channel"
    assert normalization_for_channels((0.1307,), (0.3081,), 3) == ((0.1307,) * 3, (0.3081,) * 3, "repeated for 3 channels")
    assert normalization_for_channels(IMAGENET_MEAN, IMAGENET_STD, 3)[2] == ""


def test_freeze_n_takes_the_first_layers_of_the_backbone_and_never_the_head():
    model = models.get_model("lenet5", num_classes=3)
    named = [(path, m) for path, m in model.named_modules() if path and any(True for _ in m.parameters(recurse=False))]
    assert [p for p, _ in named][-1] == "classifier.4"  # the head, declared by the zoo entry
    frozen_bn, line = freeze(model, "lenet5", 4)  # every layer before the head
    assert frozen_bn == [] and "froze the first 4 layers with weights (up to classifier.2)" in line
    trainable = [path for path, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["classifier.4.weight", "classifier.4.bias"]
    groups = param_groups(model, "lenet5", 0.1, backbone_lr_scale=0.1)
    assert len(groups) == 1 and groups[0]["lr"] == 0.1 and len(groups[0]["params"]) == 2
    with pytest.raises(ValueError, match=r"--freeze 5: lenet5 has 4 layers with weights before its head "
                                         r"\(classifier.4\), which always trains; give at most 4"):
        freeze(models.get_model("lenet5", num_classes=3), "lenet5", 5)


def test_freeze_n_keeps_the_frozen_batchnorm_layers_listed_for_eval_mode():
    model = models.get_model("resnet20", num_classes=2)
    frozen_bn, line = freeze(model, "resnet20", 2)  # conv1, bn1
    assert frozen_bn == [model.bn1] and "(up to bn1)" in line and "1 BatchNorm layers kept in eval mode" in line
    assert not model.conv1.weight.requires_grad and model.layer1[0].conv1.weight.requires_grad
