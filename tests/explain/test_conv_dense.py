"""explain.conv_dense: a convolution as the dense (Toeplitz) layer it equals, and its counts."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import Tensor, nn
from cnnkit import functional as F
from cnnkit.explain import conv_as_dense, conv_stats


def conv_layer(rng, C, Fo, k, stride=1, padding=0, dilation=1, groups=1, bias=True):
    layer = nn.Conv2d(C, Fo, k, stride, padding, dilation, groups, bias=bias, generator=rng, dtype=np.float64)
    return layer


@pytest.mark.parametrize("C, Fo, k, stride, padding, dilation, groups, hw", [
    (1, 1, 2, 1, 0, 1, 1, (4, 4)),          # the articles' 4x4 input, 2x2 kernel
    (3, 4, 3, 2, 1, 1, 1, (7, 6)),          # stride and padding, not square
    (2, 4, 3, 1, 2, 2, 1, (6, 7)),          # dilation
    (4, 6, 3, 1, 1, 1, 2, (5, 5)),          # groups
    (4, 4, 3, 2, 1, 1, 4, (6, 6)),          # depthwise
    (2, 3, (2, 3), (1, 2), (1, 0), 1, 1, (5, 6)),  # rectangular kernel, stride and padding
    (2, 3, (2, 4), 1, "same", 1, 1, (5, 6)),       # "same": asymmetric padding
])
def test_dense_matrix_times_input_equals_conv2d(rng, C, Fo, k, stride, padding, dilation, groups, hw):
    layer = conv_layer(rng, C, Fo, k, stride, padding, dilation, groups)
    x = rng.standard_normal((3, C) + hw)                                 # float64, N = 3
    expected = layer(Tensor(x)).data                                      # (N, F, OH, OW)
    dense = conv_as_dense(layer, (C,) + hw)
    actual = x.reshape(3, -1) @ dense.matrix.T + dense.bias               # (N, F*OH*OW)
    assert dense.stats.output_shape == expected.shape[1:]
    np.testing.assert_allclose(actual, expected.reshape(3, -1), rtol=1e-10, atol=1e-12)
    # the counts computed without the matrix agree with the matrix
    assert dense.stats.nonzeros == int((dense.weight_index >= 0).sum())
    assert dense.uses.sum() == dense.stats.nonzeros
    for f in range(dense.uses.shape[0]):
        for c in range(dense.uses.shape[1]):
            np.testing.assert_array_equal(dense.uses[f, c], dense.stats.uses)


def test_the_articles_4x4_input_with_a_2x2_kernel(rng):
    layer = conv_layer(rng, 1, 1, 2)
    dense = conv_as_dense(layer, (1, 4, 4))
    s = dense.stats
    assert dense.matrix.shape == (9, 16)                      # 3x3 outputs, 16 inputs
    assert s.conv_weights == 4 and s.weights_per_output == 4  # 4 shared parameters ...
    assert s.inputs == 16                                     # ... vs 16 per output neuron in a dense layer
    assert s.dense_weights == 144 and s.nonzeros == 36 and s.zero_fraction == 0.75
    assert ((dense.weight_index >= 0).sum(axis=1) == 4).all()  # every row holds the 4 weights
    np.testing.assert_array_equal(s.uses, np.full((2, 2), 9))  # each weight shared by 9 outputs
    # row 0 is the kernel laid over the top-left corner: w00 w01 at pixels 0, 1 and w10 w11 at 4, 5
    w = layer.weight.data[0, 0]
    np.testing.assert_array_equal(dense.matrix[0, [0, 1, 4, 5]], w.reshape(-1))


def test_the_articles_32x32x1_to_28x28x6_with_5x5_filters(rng):
    stats = conv_stats((1, 32, 32), 6, 5)
    assert stats.output_shape == (6, 28, 28)
    assert stats.conv_weights == 150 and stats.conv_biases == 6
    assert stats.dense_weights == 32 * 32 * 28 * 28 * 6 == 4_816_896
    assert stats.dense_biases == 28 * 28 * 6
    assert stats.nonzeros == 28 * 28 * 6 * 25
    np.testing.assert_array_equal(stats.uses, np.full((5, 5), 28 * 28))
    layer = conv_layer(rng, 1, 6, 5)
    dense = conv_as_dense(layer, (1, 32, 32))
    x = rng.standard_normal((1, 1, 32, 32))
    np.testing.assert_allclose(dense.matrix @ x.reshape(-1) + dense.bias, layer(Tensor(x)).data.reshape(-1),
                               rtol=1e-10, atol=1e-12)
    report = stats.report()
    assert "6*1*5*5 = 150 weights + 6 biases = 156" in report
    assert "4,704 x 1,024 = 4,816,896 entries" in report
    assert "(32 - 5 + 2*0)/1 + 1 = 28" in report


def test_padding_makes_border_weights_used_less_often():
    stats = conv_stats((1, 5, 5), 1, 3, padding=1)
    # the centre tap reads a real pixel at all 25 positions, a corner tap at 4 x 4 = 16
    assert stats.uses[1, 1] == 25 and stats.uses[0, 0] == 16
    assert "used 16 to 25 times" in stats.report()


def test_conv_as_dense_refuses_huge_layers_and_other_padding_modes(rng):
    with pytest.raises(ValueError, match=r"would have 2,517,630,976 entries .*conv_stats gives the counts"):
        conv_as_dense(conv_layer(rng, 64, 64, 3, padding=1), (64, 56, 14))
    reflect = nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect", generator=rng)
    with pytest.raises(ValueError, match=r"zero padding only, got padding_mode='reflect'"):
        conv_as_dense(reflect, (1, 5, 5))
    with pytest.raises(ValueError, match=r"the layer takes C=1, input_shape has C=3"):
        conv_as_dense(conv_layer(rng, 1, 1, 3), (3, 5, 5))
    with pytest.raises(ValueError, match=r"kernel \(5, 5\) is larger than the padded input \(3, 3\)"):
        conv_stats((1, 3, 3), 1, 5)


def test_functional_conv_dense_agree_for_a_batch_of_one_with_no_bias(rng):
    layer = conv_layer(rng, 2, 2, 3, bias=False)
    dense = conv_as_dense(layer, (2, 5, 5))
    assert dense.bias is None and dense.stats.conv_biases == 0
    x = rng.standard_normal((1, 2, 5, 5))
    expected = F.conv2d(Tensor(x), layer.weight).data.reshape(-1)
    np.testing.assert_allclose(dense.matrix @ x.reshape(-1), expected, rtol=1e-10, atol=1e-12)
