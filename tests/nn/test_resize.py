"""nn/resize.py: new arrays for a layer, and the sizes that follow from them."""

from __future__ import annotations

import numpy as np

from cnnkit import Tensor, nn


def test_set_array_keeps_a_parameter_a_parameter_and_a_buffer_a_buffer():
    linear = nn.Linear(4, 3)
    linear.weight.requires_grad = False
    nn.set_array(linear, "weight", np.ones((2, 4), np.float32))
    assert isinstance(linear.weight, nn.Parameter) and not linear.weight.requires_grad
    bn = nn.BatchNorm2d(3)
    nn.set_array(bn, "running_mean", np.zeros(2, np.float32))
    assert not isinstance(bn.running_mean, nn.Parameter) and bn.running_mean.shape == (2,)
    assert dict(bn.named_buffers())["running_mean"].shape == (2,)


def test_sync_sizes_reads_each_layers_sizes_off_its_weights():
    layers = {
        "linear": (nn.Linear(8, 5), (3, 6), ("out_features", "in_features"), (3, 6)),
        "conv": (nn.Conv2d(8, 4, 3, groups=2), (6, 2, 3, 3), ("out_channels", "in_channels"), (6, 4)),
        "transposed": (nn.ConvTranspose2d(8, 4, 3, groups=2), (6, 1, 3, 3), ("in_channels", "out_channels"), (6, 2)),
        "depthwise": (nn.Conv2d(6, 6, 3, groups=6), (4, 1, 3, 3), ("in_channels", "out_channels", "groups"), (4, 4, 4)),
    }
    for name, (layer, shape, attrs, expected) in layers.items():
        nn.set_array(layer, "weight", np.zeros(shape, np.float32))
        nn.sync_sizes(layer)
        assert tuple(getattr(layer, a) for a in attrs) == expected, name
    depthwise = layers["depthwise"][0]
    nn.set_array(depthwise, "bias", np.zeros(4, np.float32))
    assert depthwise(Tensor(np.zeros((1, 4, 5, 5), np.float32))).shape == (1, 4, 3, 3)


def test_batchnorm_size_from_its_statistics_or_weight_and_left_alone_without_either():
    bn = nn.BatchNorm1d(5)
    for name in ("weight", "bias", "running_mean", "running_var"):
        nn.set_array(bn, name, np.ones(3, np.float32))
    assert nn.sync_sizes(bn).num_features == 3
    bare = nn.BatchNorm2d(5, affine=False, track_running_stats=False)
    assert nn.sync_sizes(bare).num_features == 5
