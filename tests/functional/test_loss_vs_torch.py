"""Losses against PyTorch: every reduction, class weights, ignore_index, label smoothing,
probability targets (with their gradient), spatial inputs and empty batches.

PyTorch is the reference (a test-only dependency): this module is skipped without it.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cnnkit.functional as F  # noqa: E402
from cnnkit import Tensor  # noqa: E402
from cnnkit.errors import ShapeError  # noqa: E402

from .inputs import probabilities  # noqa: E402
from .torch_compare import DTYPES, TF, check_op, dtypes, same_error  # noqa: E402


def _check_class_loss(name, x, t, w, kw, **check):
    """check_op for a class-index loss (F.<name> vs torch's), with class weights w when given."""
    ours, theirs = getattr(F, name), getattr(TF, name)
    if w is None:
        check_op(lambda x, t: ours(x, t, **kw), lambda x, t: theirs(x, t, **kw), [x], [t], **check)
    else:
        check_op(lambda x, t, w: ours(x, t, weight=w, **kw), lambda x, t, w: theirs(x, t, weight=w, **kw),
                 [x], [t, w], **check)


def _targets(rng, K, shape, ignore_index=None):
    t = rng.integers(0, K, shape)
    if ignore_index is not None:
        t[rng.random(shape) < 0.3] = ignore_index
        t.flat[0] = 0  # keep at least one row counted
    return t


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("ignore_index", [-100, 2], ids=["ignore-100", "ignore2"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("shape", [(5, 4), (1, 3), (2, 4, 3, 2), (2, 3, 5)], ids=["NK", "1K", "NKHW", "NKL"])
@dtypes()
def test_cross_entropy_class_targets_match_torch(shape, label_smoothing, ignore_index, weighted, reduction, dtype,
                                                 rng, xp):
    K = shape[1]
    x = rng.standard_normal(shape) * 3
    t = _targets(rng, K, shape[:1] + shape[2:], ignore_index)
    w = rng.uniform(0.2, 2.0, K)
    kw = dict(ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
    _check_class_loss("cross_entropy", x, t, w if weighted else None, kw, dtype=dtype, rng=rng, xp=xp)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 2, 3)], ids=["NK", "NKHW"])
@pytest.mark.parametrize("target_grad", [True, False], ids=["target-grad", "target-const"])
@dtypes()
def test_cross_entropy_probability_targets_match_torch(shape, label_smoothing, weighted, reduction, target_grad,
                                                       dtype, rng, xp):
    """Soft targets are differentiable too (distillation): their gradient is compared."""
    q = probabilities(*shape)(rng)
    x = rng.standard_normal(shape) * 3
    w = rng.uniform(0.2, 2.0, shape[1]) if weighted else None
    kw = dict(reduction=reduction, label_smoothing=label_smoothing)

    def theirs(x, q):
        return TF.cross_entropy(x, q, weight=None if w is None else torch.from_numpy(w).to(x.dtype), **kw)

    check_op(lambda x, q: F.cross_entropy(x, q, weight=w, **kw), theirs, [x, q], dtype=dtype, rng=rng, xp=xp,
             requires_grad=[True, target_grad])


def test_cross_entropy_large_logits_and_unbatched_match_torch(rng):
    x = rng.standard_normal((4, 5)) * 1000  # stability: log-sum-exp must not overflow
    t = rng.integers(0, 5, 4)
    for dtype in DTYPES:
        check_op(F.cross_entropy, TF.cross_entropy, [x], [t], dtype=dtype, rng=rng)
    check_op(F.cross_entropy, TF.cross_entropy, [rng.standard_normal(5)], [np.array(3)], dtype=np.float64, rng=rng)
    check_op(F.cross_entropy, TF.cross_entropy, [rng.standard_normal(5), probabilities(1, 5)(rng)[0]],
             dtype=np.float64, rng=rng)


@pytest.mark.parametrize("target_dtype", [np.uint8, np.int32, np.int64])
def test_cross_entropy_and_nll_loss_accept_narrow_integer_targets(target_dtype, rng, xp):
    """MNIST labels are uint8: cnnkit takes them as they are, PyTorch needs int64."""
    x, t = rng.standard_normal((2, 4, 3)), rng.integers(0, 4, (2, 3))
    for cn, th in [(F.cross_entropy, TF.cross_entropy), (F.nll_loss, TF.nll_loss)]:
        check_op(lambda x, t, f=cn: f(x, t.astype(target_dtype)), th, [x], [t], dtype=np.float32, rng=rng, xp=xp)


def test_cross_entropy_with_every_target_ignored_is_nan_like_torch(rng):
    x, t = rng.standard_normal((3, 4)), np.full(3, -100)
    check_op(F.cross_entropy, TF.cross_entropy, [x], [t], dtype=np.float64, rng=rng, grad=False)
    assert np.isnan(F.cross_entropy(Tensor(x), t).item())


@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("shape", [(3, 4), (4,), (2, 3, 2)], ids=["NK", "unbatched", "NKd"])
def test_every_target_ignored_gives_a_zero_gradient_like_torch(shape, loss, label_smoothing, rng):
    """The mean over no rows is NaN, but the gradient of ignored rows stays exactly 0 (not 0 / 0)."""
    t = np.full(shape[:1] + shape[2:] if len(shape) > 1 else (), 1)
    kw = dict(ignore_index=1) | (dict(label_smoothing=label_smoothing) if loss == "cross_entropy" else {})
    check_op(lambda x, t: getattr(F, loss)(x, t, **kw), lambda x, t: getattr(TF, loss)(x, t, **kw),
             [rng.standard_normal(shape)], [t], dtype=np.float64, rng=rng)


def test_zero_class_weights_give_nan_gradients_like_torch(rng):
    """Rows that count but weigh 0 in total are 0 / 0 in the mean: NaN in the gradient too."""
    w, t = np.array([1.0, 0.0, 1.0]), np.array([1, 1])
    for loss in ["cross_entropy", "nll_loss"]:
        check_op(lambda x, t, w, f=loss: getattr(F, f)(x, t, weight=w),
                 lambda x, t, w, f=loss: getattr(TF, f)(x, t, weight=w), [rng.standard_normal((2, 3))], [t, w],
                 dtype=np.float64, rng=rng)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_unbatched_probability_targets_match_torch_in_every_reduction(reduction, rng):
    q = probabilities(1, 5)(rng)[0]
    check_op(lambda x, q: F.cross_entropy(x, q, reduction=reduction, label_smoothing=0.1),
             lambda x, q: TF.cross_entropy(x, q, reduction=reduction, label_smoothing=0.1),
             [rng.standard_normal(5), q], dtype=np.float64, rng=rng)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
def test_class_losses_of_an_empty_batch_match_torch(loss, reduction, rng):
    """Mean over no rows is NaN, the sum 0, and 'none' empty, as PyTorch."""
    check_op(lambda x, t: getattr(F, loss)(x, t, reduction=reduction),
             lambda x, t: getattr(TF, loss)(x, t, reduction=reduction), [np.zeros((0, 4))],
             [np.zeros(0, dtype=np.int64)], dtype=np.float64, rng=rng)


@pytest.mark.parametrize("ignore_index", [-1, -5, -100])
def test_probability_targets_accept_a_negative_ignore_index_like_torch(ignore_index, rng):
    q = probabilities(3, 4)(rng)
    check_op(lambda x: F.cross_entropy(x, q, ignore_index=ignore_index),
             lambda x: TF.cross_entropy(x, torch.from_numpy(q), ignore_index=ignore_index),
             [rng.standard_normal((3, 4))], dtype=np.float64, rng=rng)


@pytest.mark.parametrize("ignore_index", [0, 3])
def test_probability_targets_refuse_a_class_to_ignore_like_torch(ignore_index, rng):
    x, q = rng.standard_normal((3, 4)), probabilities(3, 4)(rng)
    same_error(lambda: F.cross_entropy(Tensor(x), q, ignore_index=ignore_index),
               lambda: TF.cross_entropy(torch.from_numpy(x), torch.from_numpy(q), ignore_index=ignore_index),
               ValueError, f"probability \\(floating\\) targets does not support ignore_index, got "
                           f"ignore_index={ignore_index}")


@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("shape", [(4, 1), (3,), (5,), ()])
def test_class_weights_of_another_shape_are_refused_like_torch(loss, shape, rng):
    x, t, w = rng.standard_normal((3, 4)), np.array([0, 1, 3]), np.ones(shape)
    same_error(lambda: getattr(F, loss)(Tensor(x), t, weight=w),
               lambda: getattr(TF, loss)(torch.from_numpy(x), torch.from_numpy(t), weight=torch.from_numpy(w)),
               ShapeError, rf"{loss} expects weight of shape \(4,\), got {re.escape(str(shape))}")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("ignore_index", [-100, 1], ids=["ignore-100", "ignore1"])
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 2, 3)], ids=["NK", "NKHW"])
@dtypes()
def test_nll_loss_matches_torch(shape, ignore_index, weighted, reduction, dtype, rng, xp):
    K = shape[1]
    x = rng.standard_normal(shape)
    t = _targets(rng, K, shape[:1] + shape[2:], ignore_index)
    w = rng.uniform(0.2, 2.0, K)
    kw = dict(ignore_index=ignore_index, reduction=reduction)
    _check_class_loss("nll_loss", x, t, w if weighted else None, kw, dtype=dtype, rng=rng, xp=xp)


@dtypes()
def test_log_softmax_then_nll_loss_equals_cross_entropy(dtype, rng, xp):
    x, t = rng.standard_normal((6, 5)), rng.integers(0, 5, 6)
    check_op(lambda x, t: F.nll_loss(F.log_softmax(x, 1), t), TF.cross_entropy, [x], [t], dtype=dtype, rng=rng,
             xp=xp)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4, 2), (0, 3)], ids=["1d", "2d", "4d", "empty"])
@dtypes()
def test_mse_loss_matches_torch(shape, reduction, dtype, rng, xp):
    check_op(lambda x, y: F.mse_loss(x, y, reduction=reduction), lambda x, y: TF.mse_loss(x, y, reduction=reduction),
             [rng.standard_normal(shape), rng.standard_normal(shape)], dtype=dtype, rng=rng, xp=xp)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weight", [None, "row", "full"])
@pytest.mark.parametrize("pos_weight", [None, "per-class"])
@dtypes()
def test_binary_cross_entropy_with_logits_matches_torch(pos_weight, weight, reduction, dtype, rng, xp):
    shape = (4, 3)
    x = rng.standard_normal(shape) * 4
    x[0, 0], x[1, 1] = 60.0, -60.0  # saturated logits stay finite
    t = rng.random(shape)  # soft targets; their gradient is compared too
    consts = []
    if weight is not None:
        consts.append(rng.uniform(0.2, 2, shape if weight == "full" else shape[1:]))
    if pos_weight is not None:
        consts.append(rng.uniform(0.2, 3, shape[1:]))

    def split(cs):
        cs = list(cs)
        w = cs.pop(0) if weight is not None else None
        pw = cs.pop(0) if pos_weight is not None else None
        return w, pw

    def cn(x, t, *cs):
        w, pw = split(cs)
        return F.binary_cross_entropy_with_logits(x, t, weight=w, reduction=reduction, pos_weight=pw)

    def th(x, t, *cs):
        w, pw = split(cs)
        return TF.binary_cross_entropy_with_logits(x, t, weight=w, reduction=reduction, pos_weight=pw)

    check_op(cn, th, [x, t], consts, dtype=dtype, rng=rng, xp=xp)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_binary_cross_entropy_with_logits_of_nothing_matches_torch(reduction, rng):
    check_op(lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction=reduction),
             lambda x, t: TF.binary_cross_entropy_with_logits(x, t, reduction=reduction),
             [np.zeros((0, 3)), np.zeros((0, 3))], dtype=np.float64, rng=rng)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shapes", [((4, 1), (4,)), ((3,), (2, 3)), ((2, 3, 1), (1, 4))], ids=["N1-N", "row", "outer"])
def test_mse_loss_broadcasts_a_target_of_another_shape_with_a_warning_like_torch(shapes, reduction, rng):
    def ours(x, y):
        with pytest.warns(UserWarning, match="broadcast together"):
            return F.mse_loss(x, y, reduction=reduction)

    def theirs(x, y):
        with pytest.warns(UserWarning, match="likely lead to incorrect results"):
            return TF.mse_loss(x, y, reduction=reduction)

    check_op(ours, theirs, [rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])], dtype=np.float64,
             rng=rng, check_no_grad=False)


def test_mse_loss_refuses_shapes_that_do_not_broadcast_like_torch(rng):
    x, y = rng.standard_normal((3, 2)), rng.standard_normal(3)
    with pytest.warns(UserWarning):
        same_error(lambda: F.mse_loss(Tensor(x), Tensor(y)), lambda: TF.mse_loss(torch.from_numpy(x), torch.from_numpy(y)),
                   ShapeError, r"\(3, 2\) and \(3,\)")


@pytest.mark.parametrize("dtypes", [(np.float32, np.float64), (np.float64, np.float32)], ids=["f32-f64", "f64-f32"])
def test_binary_cross_entropy_with_logits_computes_in_the_targets_dtype_like_torch(dtypes, rng):
    x, t = rng.standard_normal((3, 4)).astype(dtypes[0]), rng.random((3, 4)).astype(dtypes[1])
    ours, theirs = Tensor(x, requires_grad=True), torch.from_numpy(x).requires_grad_()
    y = F.binary_cross_entropy_with_logits(ours, t, reduction="none")
    expected = TF.binary_cross_entropy_with_logits(theirs, torch.from_numpy(t), reduction="none")
    assert y.dtype == expected.detach().numpy().dtype == dtypes[1]
    np.testing.assert_allclose(y.data, expected.detach().numpy(), rtol=1e-6)
    g = rng.standard_normal((3, 4))
    y.backward(g)
    expected.backward(torch.from_numpy(g))
    assert ours.grad.dtype == theirs.grad.numpy().dtype == dtypes[0]
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-5)



# ------------------------------------------------------------------ binary cross-entropy on probabilities
def _probabilities_with_edges(shape):
    """Probabilities in (0, 1) with exact 0s and 1s and a denormal (each log clamped at -100)."""
    def make(rng):
        x = rng.uniform(0.01, 0.99, shape)
        x.flat[:4] = [0.0, 1.0, 1e-44, 0.5]
        return x
    return make


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weight", [None, "row", "full"])
@pytest.mark.parametrize("target_grad", [True, False], ids=["target-grad", "target-const"])
@dtypes()
def test_binary_cross_entropy_matches_torch(target_grad, weight, reduction, dtype, rng, xp):
    shape = (4, 3)
    x = _probabilities_with_edges(shape)(rng)
    t = rng.random(shape)
    t.flat[:4] = [1.0, 0.0, 0.3, 0.5]  # the wrong side of 0 and 1: a loss of 100, gradient 1e12
    consts = [] if weight is None else [rng.uniform(0.2, 2, shape if weight == "full" else shape[1:])]
    check_op(lambda x, t, *w: F.binary_cross_entropy(x, t, *w, reduction=reduction),
             lambda x, t, *w: TF.binary_cross_entropy(x, t, *w, reduction=reduction),
             [x, t], consts, dtype=dtype, rng=rng, xp=xp, requires_grad=[True, target_grad])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_binary_cross_entropy_of_nothing_matches_torch(reduction, rng):
    check_op(lambda x, t: F.binary_cross_entropy(x, t, reduction=reduction),
             lambda x, t: TF.binary_cross_entropy(x, t, reduction=reduction),
             [np.zeros((0, 3)), np.zeros((0, 3))], dtype=np.float64, rng=rng)


@pytest.mark.parametrize("bad", [1.5, -0.1, np.nan])
def test_binary_cross_entropy_refuses_inputs_outside_0_1_like_torch(bad):
    x = np.array([0.5, bad])
    same_error(lambda: F.binary_cross_entropy(Tensor(x), np.ones(2)),
               lambda: TF.binary_cross_entropy(torch.from_numpy(x), torch.ones(2, dtype=torch.float64)),
               ValueError, r"binary_cross_entropy expects every input element in \[0, 1\]")


def test_binary_cross_entropy_refuses_a_target_of_another_shape_like_torch():
    same_error(lambda: F.binary_cross_entropy(Tensor(np.full(2, 0.5)), np.ones(1)),
               lambda: TF.binary_cross_entropy(torch.full((2,), 0.5), torch.ones(1)),
               ShapeError, r"binary_cross_entropy expects target of the input's shape \(2,\), got \(1,\)")


# ------------------------------------------------------------------ l1, smooth l1, huber
def _differences_at_the_kinks(shape, kink):
    """(input, target) whose differences hit 0 and +-kink exactly (integer targets, exact kinks)."""
    def make(rng):
        t = rng.integers(-3, 4, shape).astype(np.float64)
        d = rng.standard_normal(shape) * 2 * max(kink, 1.0)
        d.flat[:5] = [0.0, kink, -kink, 0.5 * kink, -2 * kink]
        return [t + d, t], []
    return make


_ELEMENTWISE_LOSSES = [
    ("l1_loss", {}, 0.0),
    ("smooth_l1_loss", dict(beta=1.0), 1.0),
    ("smooth_l1_loss", dict(beta=0.5), 0.5),
    ("smooth_l1_loss", dict(beta=0.0), 1.0),  # beta = 0: L1, gradient 0 at d = 0
    ("huber_loss", dict(delta=1.0), 1.0),
    ("huber_loss", dict(delta=2.0), 2.0),
    ("huber_loss", dict(delta=0.5), 0.5),
]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name, kw, kink", _ELEMENTWISE_LOSSES, ids=[f"{n}{kw}" for n, kw, _ in _ELEMENTWISE_LOSSES])
@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 2, 2), (0, 3)], ids=["2d", "4d", "empty"])
@dtypes()
def test_elementwise_losses_match_torch_at_their_kinks(shape, name, kw, kink, reduction, dtype, rng, xp):
    inputs, _ = _differences_at_the_kinks(shape, kink)(rng) if shape[0] else ([rng.standard_normal(shape)] * 2, [])
    check_op(lambda x, t: getattr(F, name)(x, t, reduction=reduction, **kw),
             lambda x, t: getattr(TF, name)(x, t, reduction=reduction, **kw), inputs, dtype=dtype, rng=rng, xp=xp)


@pytest.mark.parametrize("name, kw, kink", _ELEMENTWISE_LOSSES, ids=[f"{n}{kw}" for n, kw, _ in _ELEMENTWISE_LOSSES])
@dtypes()
def test_elementwise_losses_of_nonfinite_differences_match_torch(name, kw, kink, dtype, rng):
    """NaN and +-inf differences: l1's (and beta = 0's) gradient is 0 at NaN, the others' NaN."""
    x = np.array([np.nan, np.inf, -np.inf, 0.0, 1.0, np.nan])
    t = np.array([0.0, 0.0, 0.0, np.nan, 0.5, np.nan])
    check_op(lambda x, t: getattr(F, name)(x, t, reduction="none", **kw),
             lambda x, t: getattr(TF, name)(x, t, reduction="none", **kw), [x, t], dtype=dtype, rng=rng)


@pytest.mark.parametrize("name", ["l1_loss", "smooth_l1_loss", "huber_loss"])
def test_elementwise_losses_broadcast_a_target_of_another_shape_with_a_warning_like_torch(name, rng):
    def ours(x, y):
        with pytest.warns(UserWarning, match=f"{name}: target shape .* broadcast together"):
            return getattr(F, name)(x, y)

    def theirs(x, y):
        with pytest.warns(UserWarning, match="likely lead to incorrect results"):
            return getattr(TF, name)(x, y)

    check_op(ours, theirs, [rng.standard_normal((4, 1)), rng.standard_normal(4)], dtype=np.float64, rng=rng,
             check_no_grad=False)


@pytest.mark.parametrize("name, kw, message", [
    ("smooth_l1_loss", dict(beta=-0.5), r"smooth_l1_loss expects beta >= 0, got beta=-0.5"),
    ("huber_loss", dict(delta=0.0), r"huber_loss expects delta > 0, got delta=0.0"),
    ("huber_loss", dict(delta=-1.0), r"huber_loss expects delta > 0, got delta=-1.0"),
    ("l1_loss", dict(reduction="avg"), r"l1_loss expects reduction in .*, got 'avg'"),
    ("binary_cross_entropy", dict(reduction="avg"), r"binary_cross_entropy expects reduction in .*, got 'avg'"),
], ids=["beta<0", "delta=0", "delta<0", "l1-reduction", "bce-reduction"])
def test_elementwise_loss_arguments_are_checked_like_torch(name, kw, message):
    same_error(lambda: getattr(F, name)(Tensor(np.ones(2)), np.ones(2), **kw),
               lambda: getattr(TF, name)(torch.ones(2), torch.ones(2), **kw), ValueError, message)


# (loss name, its nn class, inputs, whether a weight argument comes before size_average)
_LEGACY = [
    ("cross_entropy", "CrossEntropyLoss", lambda rng: (rng.standard_normal((4, 3)), rng.integers(0, 3, 4)), True),
    ("nll_loss", "NLLLoss", lambda rng: (rng.standard_normal((4, 3)), rng.integers(0, 3, 4)), True),
    ("mse_loss", "MSELoss", lambda rng: (rng.standard_normal((2, 3)), rng.standard_normal((2, 3))), False),
    ("l1_loss", "L1Loss", lambda rng: (rng.standard_normal((2, 3)), rng.standard_normal((2, 3))), False),
    ("smooth_l1_loss", "SmoothL1Loss", lambda rng: (rng.standard_normal((2, 3)), rng.standard_normal((2, 3))), False),
    ("binary_cross_entropy", "BCELoss", lambda rng: (rng.uniform(0.1, 0.9, (2, 3)), rng.random((2, 3))), True),
    ("binary_cross_entropy_with_logits", "BCEWithLogitsLoss",
     lambda rng: (rng.standard_normal((2, 3)), rng.random((2, 3))), True),
]
_LEGACY_PAIRS = [(None, False), (None, True), (False, None), (True, None), (False, True), (True, False),
                 (False, False), (True, True)]


@pytest.mark.parametrize("size_average, reduce", _LEGACY_PAIRS)
@pytest.mark.parametrize("name, layer, make, weighted", _LEGACY, ids=[c[0] for c in _LEGACY])
def test_deprecated_size_average_and_reduce_map_and_warn_as_torch(name, layer, make, weighted, size_average,
                                                                  reduce, rng):
    import cnnkit.nn as nn

    x, t = make(rng)
    legacy = {"size_average": size_average, "reduce": reduce, "reduction": "sum"}  # reduction is overridden
    with pytest.warns(UserWarning, match=r"size_average and reduce args will be deprecated, please use "
                                         r"reduction='(\w+)' instead\.") as torch_warning:
        expected = getattr(TF, name)(torch.from_numpy(x), torch.from_numpy(t), **legacy).numpy()
    with pytest.warns(UserWarning) as ours_warning:
        actual = getattr(F, name)(Tensor(x), t, **legacy).data
    assert str(ours_warning[0].message) == str(torch_warning[0].message)
    np.testing.assert_allclose(actual, expected, rtol=1e-12)
    # positionally, in PyTorch's slots (weight=None first; cross_entropy/nll_loss: ignore_index between them)
    between = [-100] if name in ("cross_entropy", "nll_loss") else []
    slots = [None] * weighted + [size_average, *between, reduce]
    with pytest.warns(UserWarning, match="deprecated"):
        positional = getattr(F, name)(Tensor(x), t, *slots).data
    np.testing.assert_allclose(positional, expected, rtol=1e-12)
    # the layers map them when built, as PyTorch's (the warning names the same reduction)
    with pytest.warns(UserWarning, match="deprecated") as torch_layer_warning:
        theirs = getattr(torch.nn, layer)(*slots)
    with pytest.warns(UserWarning, match="deprecated") as ours_layer_warning:
        ours = getattr(nn, layer)(*slots)
    assert ours.reduction == theirs.reduction
    assert str(ours_layer_warning[0].message) == str(torch_layer_warning[0].message)
    np.testing.assert_allclose(ours(Tensor(x), t).data, theirs(torch.from_numpy(x), torch.from_numpy(t)).numpy(),
                               rtol=1e-12)


def test_a_reduction_string_in_the_size_average_slot_is_refused_naming_the_fix():
    x = Tensor(np.zeros((2, 3)))
    with pytest.raises(TypeError, match=r"mse_loss expects size_average \(deprecated, as in PyTorch\) to be True, "
                                        r"False or None, got 'sum': pass reduction='sum'"):
        F.mse_loss(x, x, "sum")
    with pytest.raises(TypeError, match=r"L1Loss expects reduce \(deprecated, as in PyTorch\) to be True, False or "
                                        r"None, got 'none': pass reduction='none'"):
        __import__("cnnkit").nn.L1Loss(None, "none")
