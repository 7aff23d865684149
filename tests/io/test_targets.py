"""Target: a model with its input shape, normalization, classes and task, from what its file says."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import models
from cnnkit.errors import UsageError
from cnnkit.io.targets import default_normalization, target_from, zoo_target


def test_a_checkpoint_extra_brings_shape_normalization_classes_and_task():
    extra = {"input_shape": [1, 28, 28], "mean": [0.1], "std": [0.2], "classes": list("0123456789"),
             "dataset": "mnist", "task": {"type": "multiclass"}}
    model = models.lenet5(generator=np.random.default_rng(0))
    model.train()
    t = target_from(model, extra, label="x (lenet5, mnist)", model_name="lenet5")
    assert t.input_shape == (1, 28, 28) and t.mean == (0.1,) and t.std == (0.2,) and t.dataset == "mnist"
    assert t.classes == list("0123456789") and t.task == "multiclass" and not t.model.training


def test_missing_statistics_and_shape_come_from_the_zoo_and_the_channel_count():
    t = target_from(models.resnet20(generator=np.random.default_rng(0)), {"task": "binary"}, label="r",
                    model_name="resnet20")
    assert t.input_shape == (3, 32, 32) and (t.mean, t.std) == default_normalization(3) and t.task == "binary"
    with pytest.raises(UsageError, match="does not fix its input's size; pass --input-shape"):
        target_from(models.lenet5(), {}, label="net.onnx")


def test_a_zoo_target_has_random_weights_and_the_default_normalization():
    t = zoo_target("resnet20")
    assert t.label == "resnet20 (random weights)" and t.input_shape == (3, 32, 32)
    assert t.mean == (0.485, 0.456, 0.406) and t.classes == [] and t.run_folder is None
