"""Initializers: PyTorch's gains, fans and distributions; layer defaults; seeded reproducibility.

Distributions are checked statistically on large arrays: the range of a uniform draw and
the standard deviation of every draw against PyTorch's formula (the sample std of n
draws is within 1% of the true std with overwhelming probability for n >= 2**18).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import cnnkit
from cnnkit import Tensor, init, nn

torch = pytest.importorskip("torch")

BIG = (512, 128, 2, 2)  # 262,144 draws; fan_in 512, fan_out 2048


def assert_uniform(values: np.ndarray, bound: float) -> None:
    assert np.abs(values).max() <= bound
    assert np.abs(values).max() > 0.99 * bound
    assert values.std() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    assert abs(values.mean()) < 5 * bound / math.sqrt(3 * values.size)


def assert_normal(values: np.ndarray, std: float) -> None:
    assert values.std() == pytest.approx(std, rel=0.01)
    assert abs(values.mean()) < 5 * std / math.sqrt(values.size)


@pytest.mark.parametrize(
    "nonlinearity, param",
    [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None), ("relu", None),
     ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", math.sqrt(5)), ("selu", None)],
)
def test_calculate_gain_equals_torch(nonlinearity, param):
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(
        torch.nn.init.calculate_gain(nonlinearity, param), rel=1e-12
    )


@pytest.mark.parametrize("shape", [(5, 3), (8, 4, 3, 3), (4, 2, 5, 1), (6, 7, 2)])
def test_fans_equal_torch(shape):
    assert init.fan_in_and_fan_out(shape) == torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("a, nonlinearity", [(0, "relu"), (0.2, "leaky_relu"), (math.sqrt(5), "leaky_relu")])
def test_kaiming_follows_pytorch_formula(rng, mode, a, nonlinearity):
    fan = init.fan_in_and_fan_out(BIG)[0 if mode == "fan_in" else 1]
    std = init.calculate_gain(nonlinearity, a) / math.sqrt(fan)
    w = Tensor(np.empty(BIG, dtype=np.float32))
    assert init.kaiming_uniform_(w, a=a, mode=mode, nonlinearity=nonlinearity, generator=rng) is w
    assert_uniform(w.data, math.sqrt(3) * std)
    init.kaiming_normal_(w, a=a, mode=mode, nonlinearity=nonlinearity, generator=rng)
    assert_normal(w.data, std)


@pytest.mark.parametrize("gain", [1.0, init.calculate_gain("tanh")])
def test_xavier_follows_pytorch_formula(rng, gain):
    fan_in, fan_out = init.fan_in_and_fan_out(BIG)
    std = gain * math.sqrt(2 / (fan_in + fan_out))
    w = nn.Parameter(np.empty(BIG, dtype=np.float32))
    init.xavier_uniform_(w, gain=gain, generator=rng)
    assert_uniform(w.data, math.sqrt(3) * std)
    init.xavier_normal_(w, gain=gain, generator=rng)
    assert_normal(w.data, std)


def test_uniform_normal_and_constants(rng):
    w = nn.Parameter(np.empty(2**18, dtype=np.float32))
    init.uniform_(w, -0.5, 0.5, generator=rng)
    assert_uniform(w.data, 0.5)
    init.normal_(w, 2.0, 0.1, generator=rng)
    assert w.data.mean() == pytest.approx(2.0, abs=1e-3) and w.data.std() == pytest.approx(0.1, rel=0.01)
    assert not init.zeros_(w).data.any()
    assert (init.ones_(w).data == 1).all()
    assert (init.constant_(w, 0.25).data == 0.25).all()
    assert w.dtype == np.float32 and w.requires_grad  # filled in place
    array = np.empty((3, 3))
    assert init.constant_(array, 2.0) is array and (array == 2).all()


def test_array_initializers_use_the_default_dtype(rng):
    assert init.kaiming_normal((4, 3), generator=rng).dtype == np.float32
    with cnnkit.default_dtype(np.float64):
        assert init.xavier_uniform((4, 3), generator=rng).dtype == np.float64


def test_initializer_errors():
    with pytest.raises(ValueError, match=r"at least 2 dimensions, got shape \(5,\)"):
        init.xavier_uniform((5,))
    with pytest.raises(ValueError, match="does not know the nonlinearity 'swish'"):
        init.kaiming_uniform((4, 4), nonlinearity="swish")
    with pytest.raises(ValueError, match="mode must be 'fan_in' or 'fan_out', got 'fan_avg'"):
        init.kaiming_normal((4, 4), mode="fan_avg")


# ------------------------------------------------------------------ layer defaults vs PyTorch
@pytest.mark.parametrize(
    "make_ours, make_theirs, fan_in",
    [
        (lambda: nn.Conv2d(64, 128, 5), lambda: torch.nn.Conv2d(64, 128, 5), 64 * 25),
        (lambda: nn.Conv2d(64, 256, 4, groups=4), lambda: torch.nn.Conv2d(64, 256, 4, groups=4), 16 * 16),
        # transposed: weight (in, out/groups, KH, KW), fan_in = out/groups * KH * KW
        (lambda: nn.ConvTranspose2d(256, 64, 4, groups=2), lambda: torch.nn.ConvTranspose2d(256, 64, 4, groups=2), 32 * 16),
        (lambda: nn.Linear(600, 500), lambda: torch.nn.Linear(600, 500), 600),
    ],
    ids=["conv", "conv-groups", "conv-transpose", "linear"],
)
def test_layer_default_init_matches_torch_distribution(make_ours, make_theirs, fan_in):
    cnnkit.manual_seed(0)
    torch.manual_seed(0)
    ours, theirs = make_ours(), make_theirs()
    bound = 1 / math.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)) and PyTorch's bias rule
    for name in ("weight", "bias"):
        w, tw = getattr(ours, name).data, getattr(theirs, name).detach().numpy()
        assert w.shape == tw.shape and w.dtype == tw.dtype == np.float32
        assert np.abs(w).max() <= bound and np.abs(tw).max() <= bound
        if w.size > 10_000:
            assert_uniform(w.astype(np.float64), bound)
            assert w.std() == pytest.approx(tw.std(), rel=0.02)


def test_batchnorm_default_init_is_ones_and_zeros():
    bn = nn.BatchNorm2d(5)
    assert (bn.weight.data == 1).all() and (bn.bias.data == 0).all()
    assert (bn.running_mean == 0).all() and (bn.running_var == 1).all() and bn.num_batches_tracked == 0


# ------------------------------------------------------------------ reproducibility
def _model(rng=None):
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, generator=rng), nn.BatchNorm2d(4), nn.ConvTranspose2d(4, 2, 2, generator=rng),
        nn.Flatten(), nn.Linear(2 * 8 * 8, 10, generator=rng),
    )


def test_manual_seed_makes_construction_exactly_reproducible():
    states = []
    for seed in (123, 123, 124):
        cnnkit.manual_seed(seed)
        states.append(_model().state_dict())
    for key in states[0]:
        np.testing.assert_array_equal(states[0][key], states[1][key])
    assert not np.array_equal(states[0]["0.weight"], states[2]["0.weight"])


def test_explicit_rng_makes_construction_reproducible_whatever_the_default():
    cnnkit.manual_seed(1)
    first = _model(np.random.default_rng(5)).state_dict()
    cnnkit.manual_seed(2)
    second = _model(np.random.default_rng(5)).state_dict()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
