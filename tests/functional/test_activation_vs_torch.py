"""Activations and (log-)softmax against PyTorch: values and gradients, NaN and empty inputs included.

PyTorch is the reference (a test-only dependency): this module is skipped without it.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cnnkit.functional as F  # noqa: E402
from cnnkit import Tensor  # noqa: E402
from cnnkit.errors import DimensionError  # noqa: E402

from .inputs import channel_major, normal, with_nans, with_zeros  # noqa: E402
from .torch_compare import TF, TORCH_DTYPE, Case, cases, check_op, dtypes, same_error, unary  # noqa: E402


def _activation_cases() -> list[Case]:
    out = [
        unary("relu", F.relu, TF.relu, normal(3, 7)),
        unary("relu-at-zero", F.relu, TF.relu, with_zeros(2, 3, 4, 5)),  # gradient 0 at x = 0
        unary("relu-4d-channel-major", F.relu, TF.relu, lambda rng: channel_major(rng.standard_normal((2, 3, 4, 5)))),
        unary("sigmoid", F.sigmoid, torch.sigmoid, normal(4, 6)),
        unary("sigmoid-saturated", F.sigmoid, torch.sigmoid, lambda rng: 40 * rng.standard_normal((3, 8))),
        unary("tanh", F.tanh, torch.tanh, normal(4, 6)),
        unary("tanh-saturated", F.tanh, torch.tanh, lambda rng: 30 * rng.standard_normal((3, 8))),
        unary("tanh-4d", F.tanh, torch.tanh, normal(2, 3, 3, 2)),
        # NaN in, NaN out; at a NaN input relu passes the gradient on, elu's is NaN, as
        # PyTorch's. (PyTorch's elu gives gy instead in the scalar tail of its vectorized
        # loop, so elu's case has a size its vector loop covers whole.)
        unary("relu-nan", F.relu, TF.relu, with_nans(4, 6)),
        unary("elu-nan", F.elu, TF.elu, with_nans(4, 16)),
        unary("leaky_relu-nan", F.leaky_relu, TF.leaky_relu, with_nans(4, 6)),
        unary("sigmoid-nan", F.sigmoid, torch.sigmoid, with_nans(4, 6)),
        unary("tanh-nan", F.tanh, torch.tanh, with_nans(4, 6)),
        # large enough for the compiled relu (one parallel pass each way)
        unary("relu-nan-large", F.relu, TF.relu, with_nans(64, 1024)),
        unary("relu-empty", F.relu, TF.relu, normal(0, 3)),
        unary("relu-0d", F.relu, TF.relu, normal()),
    ]
    for slope in [0.01, 0.2, 1.5, -0.3]:
        out.append(unary(f"leaky_relu({slope})", lambda x, s=slope: F.leaky_relu(x, s),
                         lambda x, s=slope: TF.leaky_relu(x, s), with_zeros(3, 5, 2)))
    out.append(unary("leaky_relu-default", F.leaky_relu, TF.leaky_relu, normal(4, 5)))
    for alpha in [1.0, 0.5, 2.0]:
        out.append(unary(f"elu({alpha})", lambda x, a=alpha: F.elu(x, a), lambda x, a=alpha: TF.elu(x, a),
                         with_zeros(3, 5, 2)))
    out.append(unary("elu-large-negative", F.elu, TF.elu, lambda rng: -50 * rng.random((3, 4))))
    for fn, tfn in [(F.softmax, TF.softmax), (F.log_softmax, TF.log_softmax)]:
        name = fn.__name__
        for shape, dim in [((4, 7), -1), ((4, 7), 0), ((1, 5), 1), ((2, 3, 4, 5), 1), ((2, 3, 4, 5), -2),
                           ((6,), 0), ((3, 1, 2), 1), ((), 0), ((), -1), ((2, 0), 1), ((0, 3), 1),
                           ((2, 0, 3), 1)]:
            out.append(unary(f"{name}{shape}dim={dim}".replace(" ", ""), lambda x, f=fn, d=dim: f(x, d),
                             lambda x, f=tfn, d=dim: f(x, d), normal(*shape)))
        # large logits must not overflow; NaN spreads along its row only
        out.append(unary(f"{name}-large", lambda x, f=fn: f(x, 1), lambda x, f=tfn: f(x, 1),
                         lambda rng: 500 * rng.standard_normal((3, 6))))
        out.append(unary(f"{name}-nan", lambda x, f=fn: f(x, 1), lambda x, f=tfn: f(x, 1),
                         lambda rng: np.where(np.arange(6) == 2, np.array([[np.nan], [0.0], [0.0]]),
                                              rng.standard_normal((3, 6)))))
        out.append(unary(f"{name}-default-dim", fn, lambda x, f=tfn: f(x, -1), normal(3, 4)))
    return out


@cases(_activation_cases())
@dtypes()
def test_activations_match_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)


@pytest.mark.parametrize("fn", ["relu", "elu", "leaky_relu"])
@pytest.mark.parametrize("size", [24, 64 * 1024], ids=["small", "large"])
def test_nonfinite_upstream_gradients_follow_torch(fn, size, rng):
    """relu selects its gradient (inf or NaN upstream at x <= 0 gives 0); elu/leaky_relu multiply."""
    x = rng.standard_normal(size) * (rng.random(size) > 0.2)
    gy = rng.choice([np.nan, np.inf, -np.inf, 1.0], size)
    check_op(getattr(F, fn), getattr(TF, fn), [x], dtype=np.float64, rng=rng, grad=False)
    ours, theirs = Tensor(x, requires_grad=True), torch.from_numpy(x).requires_grad_()
    getattr(F, fn)(ours).backward(gy)
    getattr(TF, fn)(theirs).backward(torch.from_numpy(gy))
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-14, atol=0)


def test_softmax_errors_match_torch():
    same_error(lambda: F.softmax(Tensor(np.ones(3)), 1), lambda: TF.softmax(torch.ones(3), 1), DimensionError,
               r"softmax: dimension out of range \(expected to be in range of \[-1, 0\], but got 1\)")
    same_error(lambda: F.log_softmax(Tensor(np.array(1.0)), 1), lambda: TF.log_softmax(torch.tensor(1.0), 1),
               DimensionError, "log_softmax: dimension out of range")


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax_of_integers_is_the_softmax_of_their_float32_values(fn):
    """PyTorch refuses integer input; cnnkit converts it to the default float dtype first, as torch.exp does."""
    x = np.arange(-3, 3, dtype=np.int64).reshape(2, 3)
    ours = getattr(F, fn)(Tensor(x), 1)
    theirs = getattr(TF, fn)(torch.from_numpy(x).float(), 1)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=1e-6)


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@pytest.mark.parametrize("source, target", [(np.float32, np.float64), (np.float64, np.float32), (np.int64, np.float64)])
def test_softmax_dtype_argument_casts_first_like_torch(fn, source, target, rng):
    x = (rng.standard_normal((3, 4)) * 3).astype(source)
    grad = source != np.int64  # the cast is differentiable: the gradient comes back in the input's dtype
    cx, tx = Tensor(x, requires_grad=grad), torch.from_numpy(x)
    tx = (tx.double() if source == np.int64 else tx).requires_grad_(grad)
    ours = getattr(F, fn)(cx, 1, dtype=target)
    theirs = getattr(TF, fn)(tx, 1, dtype=TORCH_DTYPE[np.dtype(target)])
    assert ours.dtype == np.dtype(target)
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-6, atol=1e-7)
    if grad:
        gy = rng.standard_normal((3, 4)).astype(target)
        ours.backward(gy)
        theirs.backward(torch.from_numpy(gy))
        assert cx.grad.dtype == np.dtype(source)
        np.testing.assert_allclose(cx.grad, tx.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_softmax_refuses_an_integer_dtype_like_torch():
    same_error(lambda: F.softmax(Tensor(np.ones(3)), 0, dtype=np.int64),
               lambda: TF.softmax(torch.ones(3), 0, dtype=torch.int64), TypeError, "floating dtype")


# ------------------------------------------------------------------ gelu, silu, softplus, hard activations
def _kinks_and_nonfinite(*points, nonfinite=(np.nan, np.inf, -np.inf)):
    """Random values around the kinks with the kinks themselves, NaN and +-inf; 64 elements, so
    PyTorch's vectorized loops cover them whole (its scalar tails differ at NaN for hardtanh)."""
    def make(rng):
        x = rng.standard_normal((4, 16)) * 4
        special = [*nonfinite, 0.0, *points]
        x.flat[:len(special)] = special
        return x
    return make


def _new_activation_cases() -> list[Case]:
    out = [
        # +inf: see test_exact_gelu_of_inf_is_inf
        unary("gelu", F.gelu, TF.gelu, _kinks_and_nonfinite(20.0, -20.0, 40.0, -40.0, nonfinite=(np.nan, -np.inf))),
        unary("gelu-tanh", lambda x: F.gelu(x, "tanh"), lambda x: TF.gelu(x, approximate="tanh"),
              _kinks_and_nonfinite(20.0, -20.0, 40.0, -40.0)),
        unary("gelu-4d-channel-major", F.gelu, TF.gelu, lambda rng: channel_major(rng.standard_normal((2, 3, 4, 5)))),
        unary("gelu-0d", F.gelu, TF.gelu, normal()),
        unary("erf", F.erf, torch.erf, _kinks_and_nonfinite(6.0, -6.0, 30.0, -30.0)),
        unary("erf-4d-channel-major", F.erf, torch.erf, lambda rng: channel_major(rng.standard_normal((2, 3, 4, 5)))),
        unary("erf-0d", F.erf, torch.erf, normal()),
        unary("silu", F.silu, TF.silu, _kinks_and_nonfinite(-50.0, 50.0, -800.0, 800.0)),
        unary("relu6", F.relu6, TF.relu6, _kinks_and_nonfinite(6.0, -6.0, 3.0)),
        unary("hardtanh", F.hardtanh, TF.hardtanh, _kinks_and_nonfinite(1.0, -1.0, 0.5)),
        unary("hardsigmoid", F.hardsigmoid, TF.hardsigmoid, _kinks_and_nonfinite(3.0, -3.0, 2.5)),
        unary("hardswish", F.hardswish, TF.hardswish, _kinks_and_nonfinite(3.0, -3.0, 2.5)),
        unary("silu-empty", F.silu, TF.silu, normal(0, 3)),
    ]
    for lo, hi in [(-2.0, 0.5), (0.0, 0.0), (1.0, 3.0)]:
        out.append(unary(f"hardtanh({lo},{hi})", lambda x, a=lo, b=hi: F.hardtanh(x, a, b),
                         lambda x, a=lo, b=hi: TF.hardtanh(x, a, b), _kinks_and_nonfinite(lo, hi)))
    for beta, threshold in [(1.0, 20.0), (2.0, 3.0), (0.5, 1.0), (-1.0, 2.0)]:
        # x * beta = threshold exactly stays on the log branch; just above, the linear one
        out.append(unary(f"softplus({beta},{threshold})", lambda x, b=beta, t=threshold: F.softplus(x, b, t),
                         lambda x, b=beta, t=threshold: TF.softplus(x, b, t),
                         _kinks_and_nonfinite(threshold / beta, 1.001 * threshold / beta, 800.0, -800.0)))
    return out


@cases(_new_activation_cases())
@dtypes()
def test_gelu_silu_softplus_and_hard_activations_match_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)


@pytest.mark.parametrize("fn", ["gelu", "silu", "softplus", "hardtanh", "relu6", "hardsigmoid", "hardswish", "erf"])
def test_new_activations_of_integers_are_those_of_their_float32_values(fn):
    x = np.arange(-4, 5, dtype=np.int64)
    ours = getattr(F, fn)(Tensor(x))
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours.data, getattr(torch if fn == "erf" else TF, fn)(torch.from_numpy(x).float()).numpy(), rtol=1e-6, atol=1e-6)


def test_gelu_and_hardtanh_arguments_are_checked_like_torch():
    same_error(lambda: F.gelu(Tensor(np.ones(2)), approximate="erf"), lambda: TF.gelu(torch.ones(2), approximate="erf"),
               ValueError, r"gelu expects approximate in \('none', 'tanh'\), got 'erf'")
    same_error(lambda: F.hardtanh(Tensor(np.ones(2)), 2.0, 1.0), lambda: TF.hardtanh(torch.ones(2), 2.0, 1.0),
               ValueError, r"hardtanh expects min_val <= max_val, got min_val=2.0, max_val=1.0")


def test_gelu_without_compiled_kernels_matches_torch(rng):
    """erf falls back to Python's math.erf when the kernels are off: the same values."""
    from cnnkit import config

    with config.kernels(False):
        check_op(F.gelu, TF.gelu, [_kinks_and_nonfinite()(rng)], dtype=np.float64, rng=rng)


@dtypes()
def test_exact_gelu_of_inf_is_inf(dtype):
    """gelu(+inf) = inf with gradient NaN (inf * 0), as PyTorch in float64 and on a lone float32
    element; PyTorch's vectorized float32 loop gives NaN there instead (3 elements and more)."""
    x = Tensor(np.array([np.inf], dtype=dtype), requires_grad=True)
    y = F.gelu(x)
    y.backward(np.ones(1, dtype=dtype))
    t = torch.tensor([np.inf], dtype=TORCH_DTYPE[np.dtype(dtype)], requires_grad=True)
    TF.gelu(t).sum().backward()
    assert y.data[0] == TF.gelu(t).item() == np.inf
    assert np.isnan(x.grad[0]) and np.isnan(t.grad[0].item())
