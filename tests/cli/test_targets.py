"""load_target: the one loader of the commands that look into a model (files through load_inference)."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import models
from cnnkit.cli.targets import load_target
from cnnkit.errors import CheckpointError, UsageError
from cnnkit.io.checkpoint import save
from tests.conftest import MNIST_EXTRA


def test_a_checkpoint_brings_its_shape_normalization_classes_and_run_folder(lenet_checkpoint):
    t = load_target(str(lenet_checkpoint))
    assert t.label == "lenet5.safetensors (lenet5, mnist)" and t.model_name == "lenet5" and t.dataset == "mnist"
    assert t.input_shape == (1, 28, 28) and t.mean == (0.1307,) and t.std == (0.3081,)
    assert t.classes == list("0123456789") and t.task == "multiclass"
    assert t.run_folder == lenet_checkpoint.resolve().parent and not t.model.training
    assert t.extra["dataset"] == "mnist"


def test_a_zoo_name_gives_random_weights_and_the_default_normalization():
    t = load_target("resnet20")
    assert t.label == "resnet20 (random weights)" and t.input_shape == (3, 32, 32)
    assert t.mean == (0.485, 0.456, 0.406) and t.classes == [] and t.run_folder is None
    assert load_target("lenet5", "1,32,32").input_shape == (1, 32, 32)
    assert load_target("lenet5", "3,32,32").mean == (0.485, 0.456, 0.406)   # another channel count


def test_any_suffix_is_read_as_a_checkpoint(tmp_path):
    other = tmp_path / "m.weights"
    save(models.lenet5(generator=np.random.default_rng(0)), other, model_name="lenet5", extra=MNIST_EXTRA)
    assert load_target(str(other)).model_name == "lenet5"


def test_unreadable_things_are_named(tmp_path):
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    with pytest.raises(UsageError, match="model.pt holds weights, not a network: name the zoo model"):
        load_target(str(pt))
    other = tmp_path / "model.weights"
    other.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    with pytest.raises(CheckpointError, match="looks like a zip or pickle file"):
        load_target(str(other))                           # an unknown suffix is read as a checkpoint
    with pytest.raises(UsageError, match="--model: unknown model 'resnet99'"):
        load_target(str(pt), model="resnet99")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_target(str(tmp_path / "missing.safetensors"))
    with pytest.raises(UsageError, match="is a folder; pass a checkpoint file in it"):
        load_target(str(tmp_path))
    with pytest.raises(UsageError, match="'resnet99' is neither a checkpoint file nor a zoo model"):
        load_target("resnet99")
    with pytest.raises(UsageError, match="--input-shape expects C,H,W with positive integers, got '3,0,2'"):
        load_target("lenet5", "3,0,2")
