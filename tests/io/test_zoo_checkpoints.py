"""cnnkit.save / cnnkit.load over the zoo: every zoo model knows its name, and load rebuilds it."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

import cnnkit
from cnnkit import Tensor, models, nn

# Rebuilt from a real file: one model of each architecture class (LeNet5, CifarResNet,
# VGGCifar, ResNet with basic and with bottleneck blocks, GoogLeNet, DenseNet). Left out for
# CI time: resnet34 (resnet18's class and builder), AlexNet and the eight ImageNet VGGs (61 to
# 144 million parameters, 1 to 9 s apiece just to build on this machine); every registered
# builder is checked to be labelled by the same decorator below.
ROUND_TRIP = ["lenet5", "resnet20", "vgg11_cifar", "resnet18", "resnet50", "googlenet", "densenet121"]
SMALL_INPUT = {"resnet18": (3, 32, 32), "resnet50": (3, 32, 32), "googlenet": (3, 32, 32),
               "densenet121": (3, 32, 32)}


def build(name: str, **kwargs) -> nn.Module:
    builder = getattr(models, name)
    if "init_weights" in inspect.signature(builder).parameters:
        kwargs.setdefault("init_weights", False)       # weights are overwritten by load anyway
    return builder(generator=np.random.default_rng(0), **kwargs)


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_load_rebuilds_every_zoo_model_that_save_wrote(name, tmp_path):
    model = build(name, num_classes=7)
    assert model.zoo_name == name and model.zoo_config["num_classes"] == 7
    json.dumps(model.zoo_config)                       # stored in the checkpoint's JSON header
    head = model.get_submodule(model.head_name)
    assert isinstance(head, nn.Linear) and head.out_features == 7
    path = cnnkit.save(model, tmp_path / f"{name}.safetensors")
    loaded = cnnkit.load(path)
    assert type(loaded) is type(model) and loaded.zoo_name == name and not loaded.training
    saved, rebuilt = model.state_dict(), loaded.state_dict()
    assert rebuilt.keys() == saved.keys()
    for key, value in saved.items():
        np.testing.assert_array_equal(np.asarray(rebuilt[key]), np.asarray(value), err_msg=key)
    shape = SMALL_INPUT.get(name, model.input_shape)
    x = Tensor(np.random.default_rng(1).standard_normal((1,) + shape).astype(np.float32))
    with cnnkit.no_grad(), nn.eval_mode(model):
        np.testing.assert_array_equal(loaded(x).data, model(x).data)


def test_every_registered_builder_labels_its_models():
    names = models.list_models()
    assert set(ROUND_TRIP) < set(names) and len(names) == 17
    for name in names:
        info = models.model_info(name)
        builder = getattr(models, name)
        assert info.builder is builder and builder.__name__ == name
        assert info.input_shape in {(1, 28, 28), (3, 32, 32), (3, 224, 224)}
        assert info.head in ("classifier.4", "classifier.6", "fc", "classifier")
    assert models.model_info("VGG16").head == "classifier.6" and models.default_input_shape("vgg16") == (3, 224, 224)


def test_zoo_config_records_the_arguments_that_shape_the_model(tmp_path):
    model = models.lenet5(5, "tanh", pooling="avg", generator=np.random.default_rng(0))
    assert model.zoo_config == {"num_classes": 5, "activation": "tanh", "pooling": "avg"}
    loaded = cnnkit.load(cnnkit.save(model, tmp_path / "m.safetensors"))
    assert isinstance(loaded.features[1], nn.Tanh) and isinstance(loaded.features[2], nn.AvgPool2d)


def test_save_takes_torch_saves_order_and_still_reads_the_old_one(tmp_path):
    model = models.lenet5(generator=np.random.default_rng(0))
    with pytest.warns(DeprecationWarning, match=r"use cnnkit.save\(model, path\)"):
        old = cnnkit.save(tmp_path / "old.safetensors", model)
    assert cnnkit.load(old).zoo_name == "lenet5"


def test_a_pruned_zoo_model_keeps_its_name_and_loads(tmp_path):
    from cnnkit.surgery import prune_channels

    pruned = prune_channels(models.lenet5(generator=np.random.default_rng(0)), 0.5, input_shape=(1, 28, 28))
    loaded = cnnkit.load(cnnkit.save(pruned, tmp_path / "p.safetensors"))
    assert loaded.features[0].out_channels == 3


def test_load_declares_the_trained_input_size_stored_beside_the_weights(tmp_path):
    from cnnkit.surgery import fold_batchnorm

    model = build("resnet20", num_classes=3)
    assert model.input_shape == (3, 32, 32)                    # what the zoo entry was designed for
    path = cnnkit.save(model, tmp_path / "r.safetensors", extra={"input_shape": [3, 16, 16]})
    loaded = cnnkit.load(path)
    assert loaded.input_shape == (3, 16, 16)                   # what it was trained at
    # folded (traced at the declared size) and saved again without an extra: the size is kept
    folded = fold_batchnorm(loaded)
    again = cnnkit.load(cnnkit.save(folded, tmp_path / "f.safetensors"))
    assert again.input_shape == (3, 16, 16) and again.folded_batchnorm
    # no stored size: the designed one, as before
    assert cnnkit.load(cnnkit.save(build("lenet5"), tmp_path / "l.safetensors")).input_shape == (1, 28, 28)


@pytest.mark.parametrize("stored, message", [
    ([3, 16], r"corrupt checkpoint \(stored input_shape \[3, 16\]; expected \[C, H, W\] of positive integers\)"),
    ([3, 0, 16], r"corrupt checkpoint \(stored input_shape \[3, 0, 16\]"),
    ("3,16,16", r"corrupt checkpoint \(stored input_shape '3,16,16'"),
    ([1, 16, 16], r"the stored input_shape \[1, 16, 16\] has 1 channels, but model 'resnet20' as rebuilt takes 3"),
])
def test_a_bad_stored_input_size_is_refused_naming_it(tmp_path, stored, message):
    path = cnnkit.save(build("resnet20"), tmp_path / "r.safetensors", extra={"input_shape": stored})
    with pytest.raises(cnnkit.io.CheckpointError, match=message):
        cnnkit.load(path)
