"""Shape ops: float64 finite-difference gradients and the semantics PyTorch users rely on.

Runs without PyTorch (``test_shape_vs_torch.py`` compares with it).
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit.functional as F
from cnnkit import Tensor

from .inputs import Check, checks, normal

GRADCHECKS = [
    Check("reshape", lambda a: a.reshape(3, -1) * F.reshape(a, (6, 2)).reshape(3, 4), normal(2, 3, 2)),
    Check("transpose", lambda a: a.transpose(0, 2) * 1.0, normal(2, 3, 4)),
    Check("permute", lambda a: F.permute(a, (1, 2, 0)), normal(2, 3, 4)),
    Check("T", lambda a: a.T, normal(2, 3)),
    Check("mT", lambda a: a.mT @ a, normal(2, 3, 2)),
    Check("flatten", F.flatten, normal(2, 2, 2, 3)),
    Check("flatten-range", lambda a: F.flatten(a, 0, 1), normal(2, 2, 3)),
    Check("squeeze-unsqueeze", lambda a: a.squeeze(1).unsqueeze(0) * 2.0, normal(2, 1, 3)),
    Check("getitem-basic", lambda a: a[1:, ::2, 1], normal(3, 4, 2)),
    Check("getitem-negative-step", lambda a: a[::-1, 3:0:-2], normal(3, 4)),
    Check("getitem-none-ellipsis", lambda a: a[None, ..., 0], normal(3, 2)),
    Check("getitem-repeated-indices", lambda a: a[np.array([0, 2, 0, 0])], normal(3, 2)),
    Check("getitem-two-arrays", lambda a: F.getitem(a, (np.array([0, 1, 1]), np.array([2, 2, 0]))), normal(2, 3)),
    Check("getitem-bool-mask", lambda a: a[np.array([[True, False, True], [False, True, True]])], normal(2, 3)),
    Check("cat", lambda a, b, c: F.cat([a, b, c], 1), normal(2, 1), normal(2, 3), normal(2, 2)),
    Check("cat-reuse", lambda a, b: F.cat([a, b, a], -1), normal(2, 2), normal(2, 1)),
    Check("stack", lambda a, b: F.stack([a, b], 1), normal(2, 3), normal(2, 3)),
    Check("stack-negative-dim", lambda a, b, c: F.stack([a, b, c], -1), normal(3), normal(3), normal(3)),
    Check("pad-constant", lambda a: F.pad(a, (1, 2, 0, 1), value=0.5), normal(1, 2, 2, 3)),
    Check("pad-constant-crop", lambda a: F.pad(a, (-1, 1, 1, -1)), normal(1, 1, 3, 3)),
    Check("pad-reflect", lambda a: F.pad(a, (2, 1, 1, 2), mode="reflect"), normal(1, 2, 3, 4)),
    Check("pad-reflect-crop", lambda a: F.pad(a, (-1, 2, 1, -1), mode="reflect"), normal(1, 2, 3, 4)),
    Check("pad-replicate", lambda a: F.pad(a, (3, 0, 1, 2), mode="replicate"), normal(1, 2, 2, 3)),
    Check("pad-replicate-crop-all", lambda a: F.pad(a, (-3, 2), mode="replicate"), normal(1, 2, 3)),
    Check("pad-circular", lambda a: F.pad(a, (3, 2, 2, 1), mode="circular"), normal(1, 1, 3, 3)),
    Check("pad-circular-crop", lambda a: F.pad(a, (-1, 2), mode="circular"), normal(1, 2, 4)),
    Check("pad-reflect-3d", lambda a: F.pad(a, (2, 3), mode="reflect"), normal(2, 1, 4)),
]


@checks(GRADCHECKS)
def test_shape_ops_gradcheck(check, rng):
    check.run(rng)


def test_transpose_swaps_two_dimensions_and_permute_reorders_all():
    x = Tensor(np.arange(24.0).reshape(2, 3, 4))
    assert x.transpose(0, 1).shape == (3, 2, 4)
    assert x.transpose(-1, 0).shape == (4, 3, 2)
    assert x.permute(2, 0, 1).shape == (4, 2, 3) and x.permute([2, 0, 1]).shape == (4, 2, 3)
    m = Tensor(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(m.transpose(0, 1).data, m.data.T)  # was m itself, unchanged
    assert Tensor(np.array(5.0)).transpose(0, 0).shape == ()  # 0-d: was ZeroDivisionError


def test_F_flatten_flattens_everything_and_nn_flatten_keeps_the_batch():
    from cnnkit import nn

    x = Tensor(np.zeros((2, 3, 4, 5)))
    assert F.flatten(x).shape == (120,)
    assert F.flatten(x, 1).shape == (2, 60)
    assert nn.Flatten()(x).shape == (2, 60)


@pytest.mark.parametrize("widths, expected", [((-3, 2), [[2.0, 2.0]]), ((2, -3), [[0.0, 0.0]]),
                                              ((-1, 2), [[1.0, 2.0, 2.0, 2.0]])])
def test_replicate_padding_copies_the_edge_even_after_cropping_everything(widths, expected):
    """PyTorch's index rule: output j copies clip(j - left, 0, n - 1) of the original axis."""
    x = Tensor(np.array([[0.0, 1.0, 2.0]]))
    np.testing.assert_array_equal(F.pad(x[None], widths, "replicate").data[0], expected)
