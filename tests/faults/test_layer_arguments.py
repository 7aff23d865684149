"""Layer constructors refuse impossible arguments at once, naming the layer and the argument.

PyTorch refuses some of these only when the layer first runs (``Conv2d(3, 8, 0)``,
``MaxPool2d(2, padding=3)``), some with an obscure message (``Linear(-1, 3)``: "Trying to
create tensor with negative dimension"); cnnkit refuses all of them when the layer is built.
"""

from __future__ import annotations

import pytest

from cnnkit import nn
from cnnkit.errors import ShapeError

CASES = [
    (lambda: nn.Linear(-1, 3), ShapeError, r"Linear expects in_features >= 0, got -1"),
    (lambda: nn.Linear(3, -2), ShapeError, r"Linear expects out_features >= 0, got -2"),
    (lambda: nn.Linear(3.5, 2), TypeError, r"Linear expects in_features to be an int, got float 3.5"),
    (lambda: nn.Linear(True, 2), TypeError, r"Linear expects in_features to be an int, got bool True"),
    (lambda: nn.Linear("3", 2), TypeError, r"Linear expects in_features to be an int, got str '3'"),
    (lambda: nn.Conv2d(3, 8, 0), ShapeError, r"Conv2d expects kernel_size > 0, got \(0, 0\)"),
    (lambda: nn.Conv2d(3, 8, (3, 0)), ShapeError, r"Conv2d expects kernel_size > 0, got \(3, 0\)"),
    (lambda: nn.Conv2d(3, 8, -3), ShapeError, r"Conv2d expects kernel_size > 0"),
    (lambda: nn.Conv2d(0, 8, 3), ShapeError, r"Conv2d expects in_channels >= 1, got 0"),
    (lambda: nn.Conv2d(3, -8, 3), ShapeError, r"Conv2d expects out_channels >= 1, got -8"),
    (lambda: nn.Conv2d(3.0, 8, 3), TypeError, r"Conv2d expects in_channels to be an int, got float 3.0"),
    (lambda: nn.Conv2d(3, 8, 3, stride=0), ShapeError, r"Conv2d expects stride > 0, got \(0, 0\)"),
    (lambda: nn.Conv2d(3, 8, 3, padding=-1), ShapeError, r"Conv2d expects padding >= 0, got \(-1, -1\)"),
    (lambda: nn.Conv2d(3, 8, 3, dilation=0), ShapeError, r"Conv2d expects dilation > 0, got \(0, 0\)"),
    (lambda: nn.Conv2d(3, 8, 3, groups=0), ShapeError, r"Conv2d expects groups > 0, got 0"),
    (lambda: nn.Conv2d(3, 8, 3, groups=2), ShapeError, r"divisible by groups \(2\)"),
    (lambda: nn.Conv2d(3, 8, 3, groups=1.0), TypeError, r"Conv2d expects groups to be an int"),
    (lambda: nn.Conv2d(3, 8, 2.5), ShapeError, r"Conv2d expects kernel_size as an int or a pair of ints, got 2.5"),
    (lambda: nn.ConvTranspose2d(3, 8, 3, stride=0), ShapeError, r"ConvTranspose2d expects stride > 0"),
    (lambda: nn.ConvTranspose2d(0, 8, 3), ShapeError, r"ConvTranspose2d expects in_channels >= 1, got 0"),
    (lambda: nn.MaxPool2d(0), ShapeError, r"MaxPool2d expects kernel_size > 0, got \(0, 0\)"),
    (lambda: nn.MaxPool2d(2, stride=0), ShapeError, r"MaxPool2d expects stride > 0, got \(0, 0\)"),
    (lambda: nn.MaxPool2d(2, padding=3), ShapeError, r"MaxPool2d expects padding at most half the kernel size"),
    (lambda: nn.MaxPool2d(3, dilation=0), ShapeError, r"MaxPool2d expects dilation > 0"),
    (lambda: nn.AvgPool2d(2, padding=3), ShapeError, r"AvgPool2d expects padding at most half the kernel size"),
    (lambda: nn.AvgPool2d(2, padding=-1), ShapeError, r"AvgPool2d expects padding >= 0"),
    (lambda: nn.AvgPool2d(2, divisor_override=0), ValueError, r"AvgPool2d expects divisor_override to be a non-zero"),
    (lambda: nn.SumPool2d(0), ShapeError, r"SumPool2d expects kernel_size > 0"),
    (lambda: nn.LPPool2d(0, 2), ValueError, r"LPPool2d expects norm_type > 0, got 0"),
    (lambda: nn.LPPool2d(2, 0), ShapeError, r"LPPool2d expects kernel_size > 0"),
    (lambda: nn.AdaptiveAvgPool2d(0), ShapeError, r"AdaptiveAvgPool2d expects output_size as an int >= 1"),
    (lambda: nn.AdaptiveMaxPool2d((2, -1)), ShapeError, r"AdaptiveMaxPool2d expects output_size"),
    (lambda: nn.AdaptiveAvgPool2d((1, 2, 3)), ShapeError, r"AdaptiveAvgPool2d expects output_size"),
    (lambda: nn.BatchNorm2d(0), ShapeError, r"BatchNorm2d expects num_features >= 1, got 0"),
    (lambda: nn.BatchNorm1d(-4), ShapeError, r"BatchNorm1d expects num_features >= 1, got -4"),
    (lambda: nn.BatchNorm2d(4, eps=0), ValueError, r"BatchNorm2d expects eps > 0, got 0"),
    (lambda: nn.BatchNorm2d(4, eps=float("nan")), ValueError, r"BatchNorm2d expects eps > 0, got nan"),
    (lambda: nn.BatchNorm2d(4, momentum=2), ValueError, r"BatchNorm2d expects momentum in \[0, 1\] or None, got 2"),
    (lambda: nn.Dropout(1.5), ValueError, r"Dropout expects p in \[0, 1\], got 1.5"),
    (lambda: nn.Dropout(-0.1), ValueError, r"Dropout expects p in \[0, 1\], got -0.1"),
]


@pytest.mark.parametrize("build, error, message", CASES, ids=[m for _, _, m in CASES])
def test_a_layer_with_impossible_arguments_is_refused_when_it_is_built(build, error, message):
    with pytest.raises(error, match=message):
        build()


@pytest.mark.parametrize("build", [
    lambda: nn.Linear(0, 3), lambda: nn.Conv2d(3, 8, 3, padding="same"), lambda: nn.MaxPool2d(3, padding=1),
    lambda: nn.AdaptiveAvgPool2d((None, 7)), lambda: nn.BatchNorm2d(4, momentum=None), lambda: nn.Dropout(0.0),
])
def test_legal_edge_values_are_still_accepted(build):
    build()
