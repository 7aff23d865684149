"""conv2d's per-shape plans (``functional/conv.py``, ``dispatch.CONV_PLANS``) and the no_grad
direct call of ``Function.__call__`` (``dispatch.NO_GRAD_DIRECT``): the same algorithm, the
same bits and the same errors as deriving everything on every call."""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit
import cnnkit.functional as F
from cnnkit import Tensor
from cnnkit.backend import dispatch
from cnnkit.errors import ShapeError
from cnnkit.functional import conv as conv_module


def _algorithm_used(monkeypatch, call):
    """The algorithm class name ``conv2d`` ran for ``call()``."""
    seen = []
    original = conv_module.Conv2dOp.check

    def spy(self, *args):
        seen.append(type(self).__name__)
        return original(self, *args)

    monkeypatch.setattr(conv_module.Conv2dOp, "check", spy)
    y = call()
    monkeypatch.setattr(conv_module.Conv2dOp, "check", original)
    return seen[-1], y


CASES = [  # (x shape, w shape, stride, padding, dilation, groups, dtype)
    ((1, 64, 28, 28), (64, 64, 3, 3), 1, 1, 1, 1, np.float32),     # winograd2
    ((1, 64, 14, 14), (64, 64, 3, 3), 2, 1, 1, 1, np.float32),     # strided / gemm
    ((1, 64, 7, 7), (64, 64, 3, 3), 1, 1, 1, 1, np.float32),       # a small map
    ((1, 64, 14, 14), (64, 64, 3, 3), 1, 1, 1, 1, np.float64),     # the dtype is in the key
    ((2, 8, 9, 9), (8, 4, 3, 3), (1, 2), (0, 1), (2, 1), 2, np.float32),  # groups, dilation, pairs
    ((1, 3, 40, 40), (16, 3, 7, 7), 2, 3, 1, 1, np.float32),       # polyphase
    ((1, 16, 8, 8), (16, 16, 1, 1), 1, "same", 1, 1, np.float32),  # a string padding
]


@pytest.mark.parametrize("case", CASES)
def test_plans_run_what_the_dispatch_picks_with_the_same_bits(case, monkeypatch, rng):
    x_shape, w_shape, stride, padding, dilation, groups, dtype = case
    x = Tensor(rng.standard_normal(x_shape).astype(dtype))
    w = Tensor(rng.standard_normal(w_shape).astype(dtype))
    results = {}
    for plans in (0, 1, 1):  # derived; planned (first call fills the plan); planned (from it)
        monkeypatch.setattr(dispatch, "CONV_PLANS", plans)
        with cnnkit.no_grad():
            results.setdefault(plans, []).append(_algorithm_used(
                monkeypatch, lambda: F.conv2d(x, w, None, stride, padding, dilation, groups)))
    (derived_name, derived), = results[0]
    for name, y in results[1]:
        assert name == derived_name
        assert y.shape == derived.shape and np.array_equal(y.data, derived.data)


def test_a_changed_switch_changes_the_plan(monkeypatch, rng):
    x = Tensor(rng.standard_normal((1, 64, 28, 28)).astype(np.float32))
    w = Tensor(rng.standard_normal((64, 64, 3, 3)).astype(np.float32))
    with cnnkit.no_grad():
        name, _ = _algorithm_used(monkeypatch, lambda: F.conv2d(x, w, padding=1))
        assert name == "Conv2dWinogradOp"
        before = dispatch.generation
        monkeypatch.setattr(dispatch, "WINOGRAD_MIN_CHANNELS", 10**6)    # Winograd nowhere
        assert dispatch.generation > before
        name, _ = _algorithm_used(monkeypatch, lambda: F.conv2d(x, w, padding=1))
        assert name == "Conv2dGemmOp"
        monkeypatch.undo()
        name, _ = _algorithm_used(monkeypatch, lambda: F.conv2d(x, w, padding=1))
        assert name == "Conv2dWinogradOp"


def test_kernels_off_is_in_the_key(monkeypatch, rng):
    x = Tensor(rng.standard_normal((1, 64, 28, 28)).astype(np.float32))
    w = Tensor(rng.standard_normal((64, 64, 3, 3)).astype(np.float32))
    with cnnkit.no_grad():
        fast = F.conv2d(x, w, padding=1)
        with cnnkit.config.kernels(False):
            name, slow = _algorithm_used(monkeypatch, lambda: F.conv2d(x, w, padding=1))
    assert name == "Conv2dIm2colOp"
    # the fast path here is F(4x4) Winograd at batch 1: its float32 budget, 1e-4 of the largest output
    np.testing.assert_allclose(slow.data, fast.data, rtol=0, atol=1e-4 * np.abs(slow.data).max())


@pytest.mark.parametrize("bad", [1.0, True, (1, 1.0), (True, 1)])
def test_arguments_equal_to_a_planned_int_are_still_refused(bad, rng):
    x = Tensor(rng.standard_normal((1, 4, 8, 8)).astype(np.float32))
    w = Tensor(rng.standard_normal((4, 4, 3, 3)).astype(np.float32))
    F.conv2d(x, w, stride=1, padding=1, dilation=1)                   # planned with ints
    for name in ("stride", "padding", "dilation"):
        with pytest.raises(ShapeError):
            F.conv2d(x, w, **{"stride": 1, "padding": 1, "dilation": 1, name: bad})


def test_an_input_that_fails_its_checks_fails_again(rng):
    x = Tensor(rng.standard_normal((1, 5, 8, 8)).astype(np.float32))
    w = Tensor(rng.standard_normal((4, 4, 3, 3)).astype(np.float32))
    for _ in range(2):
        with pytest.raises(ShapeError, match="C = weight.shape"):
            F.conv2d(x, w, padding=1)


def test_unbatched_input_and_lists(rng):
    x = rng.standard_normal((4, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    y = F.conv2d(Tensor(x), Tensor(w), stride=[1, 1], padding=[1, 1])  # lists: derived each call
    y2 = F.conv2d(Tensor(x), Tensor(w), stride=1, padding=1)
    assert y.shape == (4, 8, 8) and np.array_equal(y.data, y2.data)


@pytest.mark.parametrize("direct", [0, 1])
def test_no_grad_direct_call_gives_the_same_tensor(direct, monkeypatch, rng):
    monkeypatch.setattr(dispatch, "NO_GRAD_DIRECT", direct)
    x = Tensor(rng.standard_normal((2, 3, 9, 9)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((5, 3, 3, 3)).astype(np.float32), requires_grad=True)
    with cnnkit.no_grad():
        y = F.relu(F.conv2d(x, w, padding=1) + 1.5)                   # a Python number among the inputs
        s = (x * 2).sum()
    assert y.creator is None and not y.requires_grad and s.creator is None
    assert isinstance(s.data, np.ndarray) and s.data.shape == ()     # a 0-d array, not a NumPy scalar
    ref = F.relu(F.conv2d(x, w, padding=1) + 1.5)
    assert ref.creator is not None and np.array_equal(y.data, ref.data)
