"""float64 finite-difference gradient checks (``cnnkit.gradcheck``) for every op.

``cnnkit.gradcheck`` compares backward with central differences for every element of
every floating input; integer inputs (class targets) pass through as constants. Shapes
are small so the 2 forward passes per element stay fast. Inputs stay away from kinks
(relu, abs at 0) and ties (max, max pooling), where finite differences are meaningless;
the tie and kink conventions are checked against PyTorch in test_ops_vs_torch.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import cnnkit
import cnnkit.functional as F
from cnnkit import GradcheckError, Tensor


# --------------------------------------------------------------------------- input makers
def normal(*shape):
    return lambda rng: rng.standard_normal(shape)


def positive(*shape):
    return lambda rng: rng.uniform(0.5, 2.0, shape)


def away_from_zero(*shape):
    """|x| >= 0.1: no kink (relu, abs, leaky_relu, elu) within reach of the step."""
    return lambda rng: rng.choice([-1.0, 1.0], shape) * rng.uniform(0.1, 2.0, shape)


def distinct(*shape):
    """Values 0.1 apart in random order: every max (and max-pool window) has one winner."""
    return lambda rng: rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1 - 1.0


def classes(k, *shape):
    return lambda rng: rng.integers(0, k, shape)


def const(array):
    return lambda rng: np.asarray(array)


@dataclass(frozen=True)
class Check:
    """``fn`` applied to the arrays ``makers`` draw; floating ones are gradient-checked."""

    id: str
    fn: Callable[..., Tensor]
    makers: tuple

    def __init__(self, id: str, fn: Callable[..., Tensor], *makers):
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "makers", makers)


def run(check: Check, rng) -> None:
    assert cnnkit.gradcheck(check.fn, [make(rng) for make in check.makers])


def checks(table: list[Check]):
    return pytest.mark.parametrize("check", table, ids=[c.id for c in table])


# --------------------------------------------------------------------------- math and operators
MATH = [
    Check("add-broadcast", lambda a, b: a + b, normal(2, 3), normal(3)),
    Check("sub-broadcast", lambda a, b: a - b, normal(2, 1, 3), normal(4, 1)),
    Check("mul-broadcast", lambda a, b: a * b, normal(3, 1), normal(1, 4)),
    Check("div-broadcast", lambda a, b: a / b, normal(2, 3), away_from_zero(2, 1)),
    Check("pow-tensor-exponent", lambda a, b: a**b, positive(2, 3), normal(3)),
    Check("pow-scalar", lambda a: a**3, normal(2, 3)),
    Check("pow-fractional", lambda a: a**-0.5, positive(2, 3)),
    Check("rpow", lambda a: 1.7**a, normal(2, 3)),
    Check("scalar-ops", lambda a: (2.0 - a) / 3.0 + 1.5 * a - 4.0 / (a + 3.0), positive(3, 2)),
    Check("neg", lambda a: -a, normal(4)),
    Check("reuse", lambda a: a * a * a + a, normal(2, 3)),
    Check("F.add-F.mul", lambda a, b: F.mul(F.add(a, b), F.sub(a, F.div(b, 2.0))), normal(3), normal(2, 3)),
    Check("F.pow-F.neg", lambda a, b: F.neg(F.pow(a, b)), positive(3), normal(3)),
    Check("matmul", lambda a, b: a @ b, normal(3, 4), normal(4, 2)),
    Check("matmul-vec-vec", lambda a, b: a @ b, normal(4), normal(4)),
    Check("matmul-vec-mat", lambda a, b: a @ b, normal(3), normal(3, 2)),
    Check("matmul-mat-vec", lambda a, b: F.matmul(a, b), normal(2, 3), normal(3)),
    Check("matmul-batched-broadcast", lambda a, b: a @ b, normal(2, 1, 2, 3), normal(3, 3, 2)),
    Check("sum-all", lambda a: a.sum(), normal(2, 3, 2)),
    Check("sum-axis", lambda a: a.sum(1), normal(2, 3, 2)),
    Check("sum-axes-keepdims", lambda a: F.sum(a, (0, 2), keepdims=True), normal(2, 3, 2)),
    Check("mean-all", lambda a: a.mean(), normal(2, 3, 2)),
    Check("mean-negative-axis", lambda a: F.mean(a, -1, keepdims=True), normal(2, 3, 2)),
    Check("max-all", lambda a: a.max(), distinct(2, 3, 2)),
    Check("max-axis", lambda a: a.max(1), distinct(2, 3, 2)),
    Check("max-axes-keepdims", lambda a: F.max(a, (0, -1), keepdims=True), distinct(2, 3, 2)),
    Check("exp", F.exp, normal(2, 3)),
    Check("log", F.log, positive(2, 3)),
    Check("sqrt", F.sqrt, positive(2, 3)),
    Check("abs", F.abs, away_from_zero(2, 3)),
    Check("tensor-methods", lambda a: a.exp().log().sqrt().abs(), positive(2, 3)),
    Check("cast", lambda a: F.cast(a, np.float64) * 2.0, normal(3)),
]


@checks(MATH)
def test_math_ops_gradcheck(check, rng):
    run(check, rng)


# --------------------------------------------------------------------------- shape ops
SHAPE = [
    Check("reshape", lambda a: a.reshape(3, -1) * F.reshape(a, (6, 2)).reshape(3, 4), normal(2, 3, 2)),
    Check("transpose", lambda a: a.transpose() * 1.0, normal(2, 3, 4)),
    Check("transpose-axes", lambda a: F.transpose(a, (1, 2, 0)), normal(2, 3, 4)),
    Check("T", lambda a: a.T, normal(2, 3)),
    Check("flatten", F.flatten, normal(2, 2, 2, 3)),
    Check("flatten-range", lambda a: F.flatten(a, 0, 1), normal(2, 2, 3)),
    Check("getitem-basic", lambda a: a[1:, ::2, 1], normal(3, 4, 2)),
    Check("getitem-negative-step", lambda a: a[::-1, 3:0:-2], normal(3, 4)),
    Check("getitem-none-ellipsis", lambda a: a[None, ..., 0], normal(3, 2)),
    Check("getitem-repeated-indices", lambda a: a[np.array([0, 2, 0, 0])], normal(3, 2)),
    Check(
        "getitem-two-arrays", lambda a: F.getitem(a, (np.array([0, 1, 1]), np.array([2, 2, 0]))), normal(2, 3)
    ),
    Check(
        "getitem-bool-mask", lambda a: a[np.array([[True, False, True], [False, True, True]])], normal(2, 3)
    ),
    Check("cat", lambda a, b, c: F.cat([a, b, c], 1), normal(2, 1), normal(2, 3), normal(2, 2)),
    Check("cat-reuse", lambda a, b: F.cat([a, b, a], -1), normal(2, 2), normal(2, 1)),
    Check("stack", lambda a, b: F.stack([a, b], 1), normal(2, 3), normal(2, 3)),
    Check("stack-negative-dim", lambda a, b, c: F.stack([a, b, c], -1), normal(3), normal(3), normal(3)),
    Check("pad-constant", lambda a: F.pad(a, (1, 2, 0, 1), value=0.5), normal(1, 2, 2, 3)),
    Check("pad-constant-crop", lambda a: F.pad(a, (-1, 1, 1, -1)), normal(1, 1, 3, 3)),
    Check("pad-reflect", lambda a: F.pad(a, (2, 1, 1, 2), mode="reflect"), normal(1, 2, 3, 4)),
    Check("pad-replicate", lambda a: F.pad(a, (3, 0, 1, 2), mode="replicate"), normal(1, 2, 2, 3)),
    Check("pad-circular", lambda a: F.pad(a, (3, 2, 2, 1), mode="circular"), normal(1, 1, 3, 3)),
    Check("pad-reflect-3d", lambda a: F.pad(a, (2, 3), mode="reflect"), normal(2, 1, 4)),
]


@checks(SHAPE)
def test_shape_ops_gradcheck(check, rng):
    run(check, rng)


# --------------------------------------------------------------------------- activations and linear
ACTIVATIONS = [
    Check("relu", F.relu, away_from_zero(2, 3, 2)),
    Check("leaky_relu", lambda a: F.leaky_relu(a, 0.1), away_from_zero(2, 5)),
    Check("leaky_relu-negative-slope", lambda a: F.leaky_relu(a, -0.4), away_from_zero(2, 5)),
    Check("elu", lambda a: F.elu(a, 0.7), away_from_zero(2, 5)),
    Check("sigmoid", F.sigmoid, lambda rng: 3 * rng.standard_normal((2, 5))),
    Check("tanh", F.tanh, lambda rng: 2 * rng.standard_normal((2, 5))),
    Check("softmax-last", F.softmax, normal(3, 4)),
    Check("softmax-dim0", lambda a: F.softmax(a, 0), normal(3, 4)),
    Check("softmax-channels", lambda a: F.softmax(a, 1), normal(2, 3, 2, 2)),
    Check("log_softmax-last", F.log_softmax, normal(3, 4)),
    Check("log_softmax-channels", lambda a: F.log_softmax(a, 1), normal(2, 3, 2, 2)),
    Check("log_softmax-large", lambda a: F.log_softmax(a, 1), lambda rng: 50 * rng.standard_normal((2, 4))),
    Check("linear", F.linear, normal(3, 4), normal(2, 4), normal(2)),
    Check("linear-nobias", F.linear, normal(3, 4), normal(2, 4)),
    Check("linear-3d", F.linear, normal(2, 2, 3), normal(4, 3), normal(4)),
    Check("linear-1d", F.linear, normal(3), normal(2, 3), normal(2)),
]


@checks(ACTIVATIONS)
def test_activations_and_linear_gradcheck(check, rng):
    run(check, rng)


# --------------------------------------------------------------------------- convolution
def conv(**kw):
    return lambda x, w, b=None: F.conv2d(x, w, b, **kw)


def conv_t(**kw):
    return lambda x, w, b=None: F.conv_transpose2d(x, w, b, **kw)


CONV = [
    Check("conv2d", conv(), normal(2, 2, 4, 4), normal(3, 2, 3, 3), normal(3)),
    Check(
        "conv2d-stride-pad-nonsquare",
        conv(stride=(2, 1), padding=(1, 2)),
        normal(1, 2, 5, 4),
        normal(2, 2, 3, 2),
        normal(2),
    ),
    Check("conv2d-stride>kernel", conv(stride=3), normal(2, 1, 7, 6), normal(2, 1, 2, 2), normal(2)),
    Check("conv2d-dilation", conv(dilation=(2, 1), padding=1), normal(1, 2, 5, 4), normal(2, 2, 2, 3)),
    Check("conv2d-groups", conv(groups=2, padding=1), normal(2, 4, 3, 3), normal(4, 2, 2, 2), normal(4)),
    Check(
        "conv2d-depthwise",
        conv(groups=3, stride=2, padding=1),
        normal(1, 3, 5, 5),
        normal(3, 1, 3, 3),
        normal(3),
    ),
    Check("conv2d-1x1", conv(), normal(2, 3, 2, 3), normal(2, 3, 1, 1), normal(2)),
    Check("conv2d-same-even-kernel", conv(padding="same"), normal(1, 2, 4, 5), normal(2, 2, 2, 4)),
    Check("conv2d-valid", conv(padding="valid"), normal(1, 2, 4, 4), normal(2, 2, 3, 2), normal(2)),
    Check("conv2d-unbatched", conv(padding=1), normal(2, 3, 3), normal(2, 2, 3, 3), normal(2)),
    Check("conv_transpose2d", conv_t(), normal(2, 2, 3, 3), normal(2, 3, 2, 2), normal(3)),
    Check(
        "conv_transpose2d-stride-outpad",
        conv_t(stride=2, padding=1, output_padding=1),
        normal(1, 2, 3, 2),
        normal(2, 2, 3, 3),
        normal(2),
    ),
    Check(
        "conv_transpose2d-nonsquare",
        conv_t(stride=(1, 3), padding=(1, 0), output_padding=(0, 2)),
        normal(1, 2, 3, 2),
        normal(2, 1, 3, 2),
    ),
    Check(
        "conv_transpose2d-dilation",
        conv_t(dilation=2, output_padding=1, stride=1),
        normal(1, 1, 3, 3),
        normal(1, 2, 2, 2),
        normal(2),
    ),
    Check(
        "conv_transpose2d-groups",
        conv_t(groups=2, stride=2),
        normal(1, 4, 2, 2),
        normal(4, 1, 2, 2),
        normal(2),
    ),
]


@checks(CONV)
def test_convolution_gradcheck(check, rng):
    run(check, rng)


# --------------------------------------------------------------------------- pooling
POOL = [
    Check("max_pool2d", lambda x: F.max_pool2d(x, 2), distinct(2, 2, 4, 4)),
    Check("max_pool2d-overlap-pad", lambda x: F.max_pool2d(x, 3, 1, 1), distinct(1, 2, 4, 3)),
    Check("max_pool2d-stride>kernel", lambda x: F.max_pool2d(x, (2, 1), (3, 2)), distinct(1, 2, 7, 5)),
    Check("max_pool2d-dilation", lambda x: F.max_pool2d(x, 2, 1, 0, (2, 1)), distinct(1, 2, 5, 4)),
    Check("max_pool2d-ceil", lambda x: F.max_pool2d(x, 2, ceil_mode=True), distinct(1, 2, 5, 3)),
    Check("max_pool2d-ceil-pad", lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True), distinct(1, 1, 6, 6)),
    Check("avg_pool2d", lambda x: F.avg_pool2d(x, 2), normal(2, 2, 4, 4)),
    Check("avg_pool2d-pad-include", lambda x: F.avg_pool2d(x, 3, 2, 1), normal(1, 2, 5, 4)),
    Check(
        "avg_pool2d-pad-exclude",
        lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
        normal(1, 2, 5, 4),
    ),
    Check(
        "avg_pool2d-ceil",
        lambda x: F.avg_pool2d(x, (2, 3), (2, 2), (1, 1), ceil_mode=True),
        normal(1, 2, 4, 5),
    ),
    Check("avg_pool2d-divisor", lambda x: F.avg_pool2d(x, 2, 1, divisor_override=3), normal(1, 2, 3, 4)),
    Check("sum_pool2d", lambda x: F.sum_pool2d(x, 2, 1, 1), normal(1, 2, 3, 4)),
    Check("lp_pool2d-p2", lambda x: F.lp_pool2d(x, 2, 2), normal(1, 2, 4, 4)),
    Check("lp_pool2d-p3", lambda x: F.lp_pool2d(x, 3, (2, 3), 1), positive(1, 2, 3, 4)),
    Check("lp_pool2d-p1", lambda x: F.lp_pool2d(x, 1, 2), normal(1, 2, 4, 4)),
    Check("adaptive_avg_pool2d", lambda x: F.adaptive_avg_pool2d(x, (2, 3)), normal(2, 2, 5, 4)),
    Check("adaptive_avg_pool2d-global", lambda x: F.adaptive_avg_pool2d(x, 1), normal(2, 2, 3, 3)),
    Check("adaptive_avg_pool2d-upsample", lambda x: F.adaptive_avg_pool2d(x, (3, 4)), normal(1, 2, 2, 3)),
    Check("adaptive_max_pool2d", lambda x: F.adaptive_max_pool2d(x, (2, 3)), distinct(2, 2, 5, 4)),
    Check("adaptive_max_pool2d-global", lambda x: F.adaptive_max_pool2d(x, 1), distinct(2, 2, 3, 3)),
    Check("adaptive_max_pool2d-upsample", lambda x: F.adaptive_max_pool2d(x, (3, 4)), distinct(1, 2, 2, 3)),
]


@checks(POOL)
def test_pooling_gradcheck(check, rng):
    run(check, rng)


def _random_geometry_checks(count: int, seed: int) -> list[Check]:
    """Seeded sweep, small shapes: conv2d, conv_transpose2d, max and avg pooling with random
    kernels, strides (often > kernel), padding, dilation, groups and ceil_mode."""
    r = np.random.default_rng(seed)

    def ints(low, high):
        return tuple(int(v) for v in r.integers(low, high, 2))

    out = []
    for i in range(count):
        G = int(r.choice([1, 2]))
        C, Fo = G * int(r.integers(1, 3)), G * int(r.integers(1, 3))
        K, S, D = ints(1, 4), ints(1, 4), ints(1, 3)
        P = tuple(int(r.integers(0, k // 2 + 1)) for k in K)
        HW = tuple(
            max(1, d * (k - 1) + 1 - 2 * p) + int(r.integers(0, 3)) for k, p, d in zip(K, P, D, strict=True)
        )
        kw = dict(stride=S, padding=P, dilation=D, groups=G)
        out.append(
            Check(
                f"conv2d-sweep{i}-{kw}",
                conv(**kw),
                normal(1 + i % 2, C, *HW),
                normal(Fo, C // G, *K),
                normal(Fo),
            )
        )

        OP = tuple(int(r.integers(0, max(s, d))) for s, d in zip(S, D, strict=True))
        HW = ints(1, 4)
        P = tuple(
            min(p, (h - 1) * s // 2) for p, h, s in zip(P, HW, S, strict=True)
        )  # keep the output non-empty
        kw = dict(stride=S, padding=P, output_padding=OP, dilation=D, groups=G)
        out.append(
            Check(
                f"conv_transpose2d-sweep{i}-{kw}",
                conv_t(**kw),
                normal(1, C, *HW),
                normal(C, Fo // G, *K),
                normal(Fo),
            )
        )

        # dilation only without padding: a dilated window may otherwise skip the input entirely
        D = D if not any(P) else (1, 1)
        HW = tuple(
            max(1, d * (k - 1) + 1 - 2 * p) + int(r.integers(0, 4)) for k, p, d in zip(K, P, D, strict=True)
        )
        kw = dict(kernel_size=K, stride=S, padding=P, dilation=D, ceil_mode=bool(i % 2))
        out.append(
            Check(f"max_pool2d-sweep{i}-{kw}", lambda x, kw=kw: F.max_pool2d(x, **kw), distinct(1, C, *HW))
        )
        kw = dict(kernel_size=K, stride=S, padding=P, ceil_mode=bool(i % 2), count_include_pad=bool(i % 3))
        out.append(
            Check(f"avg_pool2d-sweep{i}-{kw}", lambda x, kw=kw: F.avg_pool2d(x, **kw), normal(1, C, *HW))
        )
    return out


@checks(_random_geometry_checks(12, seed=99))
def test_random_conv_and_pool_geometries_gradcheck(check, rng):
    run(check, rng)


# --------------------------------------------------------------------------- losses, norm, dropout
def probabilities(*shape):
    """Soft targets (rows sum to 1 over axis 1), closed over: cross_entropy has no target grad."""
    return lambda rng: np.moveaxis(rng.dirichlet(np.ones(shape[1]), shape[:1] + shape[2:]), -1, 1)


W4 = np.array([0.5, 2.0, 1.0, 1.5])

LOSSES = [
    Check("cross_entropy", F.cross_entropy, normal(4, 3), classes(3, 4)),
    Check(
        "cross_entropy-weight-sum",
        lambda x, t: F.cross_entropy(x, t, weight=W4, reduction="sum"),
        normal(5, 4),
        classes(4, 5),
    ),
    Check(
        "cross_entropy-ignore-none",
        lambda x, t: F.cross_entropy(x, t, ignore_index=1, reduction="none"),
        normal(5, 3),
        const([0, 1, 2, 1, 0]),
    ),
    Check(
        "cross_entropy-smoothing-weight-ignore",
        lambda x, t: F.cross_entropy(x, t, weight=W4, ignore_index=-100, label_smoothing=0.2),
        normal(4, 4),
        const([3, -100, 0, 2]),
    ),
    Check(
        "cross_entropy-spatial",
        lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1),
        normal(2, 3, 2, 2),
        classes(3, 2, 2, 2),
    ),
]
_Q = probabilities(3, 4)(np.random.default_rng(5))
_Q_SPATIAL = probabilities(2, 4, 2, 1)(np.random.default_rng(6))
LOSSES += [
    Check(
        "cross_entropy-probabilities",
        lambda x: F.cross_entropy(x, _Q, weight=W4, label_smoothing=0.3),
        normal(3, 4),
    ),
    Check(
        "cross_entropy-probabilities-spatial-none",
        lambda x: F.cross_entropy(x, _Q_SPATIAL, reduction="none"),
        normal(2, 4, 2, 1),
    ),
    Check("nll_loss", F.nll_loss, normal(4, 3), classes(3, 4)),
    Check(
        "nll_loss-weight-ignore-spatial",
        lambda x, t: F.nll_loss(x, t, weight=W4[:3], ignore_index=2),
        normal(2, 3, 2, 2),
        classes(3, 2, 2, 2),
    ),
    Check("nll_loss-none", lambda x, t: F.nll_loss(x, t, reduction="none"), normal(4, 3), classes(3, 4)),
    Check("mse_loss", F.mse_loss, normal(3, 4), normal(3, 4)),
    Check("mse_loss-sum", lambda x, t: F.mse_loss(x, t, "sum"), normal(2, 3), normal(2, 3)),
    Check("mse_loss-none", lambda x, t: F.mse_loss(x, t, "none"), normal(2, 3), normal(2, 3)),
    Check(
        "bce_with_logits", F.binary_cross_entropy_with_logits, normal(3, 4), lambda rng: rng.random((3, 4))
    ),
    Check(
        "bce_with_logits-weight-pos_weight-sum",
        lambda x, t: F.binary_cross_entropy_with_logits(
            x, t, weight=W4, reduction="sum", pos_weight=W4[::-1]
        ),
        lambda rng: 3 * rng.standard_normal((3, 4)),
        lambda rng: rng.random((3, 4)),
    ),
    Check(
        "bce_with_logits-none",
        lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction="none"),
        normal(2, 3),
        lambda rng: rng.random((2, 3)),
    ),
]


@checks(LOSSES)
def test_losses_gradcheck(check, rng):
    run(check, rng)


def batch_norm_train(x, gamma, beta):
    return F.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-3)


def batch_norm_eval(x, gamma, beta):
    stats = np.array([0.2, -0.1, 0.5]), np.array([0.7, 1.3, 2.0])
    return F.batch_norm(x, *stats, gamma, beta, training=False)


def batch_norm_train_with_stats(x, gamma, beta):
    # fresh running statistics per call: the update is a side effect, not an output
    return F.batch_norm(x, np.zeros(3), np.ones(3), gamma, beta, training=True, momentum=0.5)


NORM_AND_DROPOUT = [
    Check("batch_norm-train-2d", batch_norm_train, normal(5, 3), positive(3), normal(3)),
    Check("batch_norm-train-4d", batch_norm_train, normal(2, 3, 2, 2), positive(3), normal(3)),
    Check(
        "batch_norm-train-3d-running-stats",
        batch_norm_train_with_stats,
        normal(3, 3, 2),
        positive(3),
        normal(3),
    ),
    Check(
        "batch_norm-train-no-affine", lambda x: F.batch_norm(x, None, None, training=True), normal(4, 3, 2, 1)
    ),
    Check("batch_norm-eval-2d", batch_norm_eval, normal(4, 3), positive(3), normal(3)),
    Check("batch_norm-eval-4d", batch_norm_eval, normal(2, 3, 2, 2), positive(3), normal(3)),
    # a fresh generator with one seed per call: the same mask in every forward pass
    Check("dropout", lambda x: F.dropout(x, 0.4, generator=np.random.default_rng(3)), normal(4, 5)),
    Check("dropout-eval", lambda x: F.dropout(x, 0.4, training=False) * 1.0, normal(4, 5)),
]


@checks(NORM_AND_DROPOUT)
def test_batch_norm_and_dropout_gradcheck(check, rng):
    run(check, rng)


def test_gradcheck_catches_a_wrong_backward(rng):
    """The harness is live: an op whose backward is off by a factor must fail."""

    class WrongSquare(cnnkit.Function):
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, gy):
            return gy * 2.1 * self.x  # should be 2 x

    with pytest.raises(GradcheckError, match=r"input 0 \(shape \(2, 3\)\) element"):
        cnnkit.gradcheck(lambda x: WrongSquare()(x), [rng.standard_normal((2, 3))])
