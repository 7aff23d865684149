"""Tensor.__setitem__ (x[index] = value) against PyTorch: values and the gradients of x's history and
of value (masks, slices, index arrays, broadcast and scalar values), ops that read x before the
assignment, no-grad writes in place, the leaf refusal; float64 finite differences.

PyTorch is the reference (a test-only dependency): this module is skipped without it.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cnnkit  # noqa: E402
from cnnkit import Tensor  # noqa: E402
from cnnkit.gradcheck import gradcheck  # noqa: E402

INDICES = {
    "mask": lambda x: x > 0,
    "row-slice": lambda x: (slice(1, 3),),
    "column": lambda x: (slice(None), 2),
    "index-array": lambda x: np.array([2, 0]),
    "mask-rows": lambda x: np.array([True, False, True]),
}
VALUES = {                                       # value's shape, for an x of shape (3, 4)
    "scalar": lambda sel: (),
    "broadcast": lambda sel: sel[-1:] if len(sel) > 1 else (),
    "full": lambda sel: sel,
}


def _run(lib, index_name, value_name, x0, v0_for, dtype, v_grad):
    """w -> x = 2w (a non-leaf); early = sum(3x); x[index] = v; loss = sum(x * x) + early."""
    as_t = (lambda a, g: torch.tensor(a, requires_grad=g)) if lib == "torch" else \
        (lambda a, g: Tensor(np.array(a), requires_grad=g))
    w = as_t(x0, True)
    x = w * 2
    early = (x * 3).sum()                        # read before the assignment: keeps its gradient
    index = INDICES[index_name](x.detach().numpy() if lib == "torch" else x.data)
    if lib == "torch" and isinstance(index, np.ndarray):
        index = torch.from_numpy(index)
    selected_shape = tuple(x0[INDICES[index_name](2 * x0)].shape)
    v0 = v0_for(VALUES[value_name](selected_shape))
    v = as_t(v0, v_grad)
    x[index] = v
    loss = (x * x).sum() + early
    loss.backward()
    to_np = (lambda t: None if t is None else t.detach().numpy()) if lib == "torch" else (lambda t: t)
    values = x.detach().numpy() if lib == "torch" else x.data
    return values, to_np(w.grad), to_np(v.grad)


@pytest.mark.parametrize("v_grad", [True, False], ids=["value-grad", "value-constant"])
@pytest.mark.parametrize("value_name", list(VALUES))
@pytest.mark.parametrize("index_name", list(INDICES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_assignment_values_and_gradients_match_torch(index_name, value_name, v_grad, dtype, rng):
    x0 = rng.standard_normal((3, 4)).astype(dtype)
    v_seed = int(rng.integers(1 << 30))

    def v0_for(shape):
        return np.random.default_rng(v_seed).standard_normal(shape).astype(dtype)

    expected = _run("torch", index_name, value_name, x0, v0_for, dtype, v_grad)
    actual = _run("cnnkit", index_name, value_name, x0, v0_for, dtype, v_grad)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for mine, theirs, what in zip(actual, expected, ("x", "w.grad", "v.grad"), strict=True):
        assert (mine is None) == (theirs is None), what
        if theirs is not None:
            assert mine.dtype == theirs.dtype and mine.shape == theirs.shape, what
            np.testing.assert_allclose(mine, theirs, rtol=rtol, atol=rtol, err_msg=what)


def test_gradients_match_finite_differences_even_where_an_op_saved_the_old_value(rng):
    """PyTorch refuses a backward through an op that saved x (x * x) before x changed in place; cnnkit's
    assignment works on a copy, so that op's gradient is taken at the value it read: checked in float64."""
    w0, v0 = rng.standard_normal((3, 4)), rng.standard_normal(4)

    def f(w, v):
        x = w * 2
        before = x * x                           # saves x
        x[1:] = v                                # rows 1 and 2 from v (broadcast)
        return before.sum() + (x * x * x).sum()

    assert gradcheck(f, [w0, v0])
    w, v = torch.tensor(w0, requires_grad=True), torch.tensor(v0, requires_grad=True)
    x = w * 2
    before = x * x
    x[1:] = v
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (before.sum() + (x * x * x).sum()).backward()


def test_without_a_graph_the_array_is_written_in_place_as_torch(rng):
    a = rng.standard_normal((3, 4))
    t, tt = Tensor(a), torch.from_numpy(a.copy())
    t[t < 0] = 0.0
    tt[tt < 0] = 0.0
    np.testing.assert_array_equal(t.data, tt.numpy())
    assert (a >= 0).all()                        # the tensor's array itself, as torch.from_numpy's
    w = Tensor(rng.standard_normal((2, 2)), requires_grad=True)
    with cnnkit.no_grad():                       # a parameter changed under no_grad (pruning, init)
        w[0] = 1.0
    np.testing.assert_array_equal(w.data[0], 1.0)
    assert w.is_leaf and w.requires_grad


def test_a_leaf_that_requires_grad_is_refused_as_torch_refuses_it():
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place"):
        w = torch.ones(2, 2, requires_grad=True)
        w[w > 0] = 0
    w = Tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"x\[\.\.\.\] = value on a leaf tensor that requires grad \(shape "
                                           r"\(2, 2\)\), as PyTorch refuses"):
        w[w > 0] = 0.0
    np.testing.assert_array_equal(w.data, 1.0)   # nothing changed
    frozen = np.ones(3)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        Tensor(frozen)[0] = 2.0


def test_an_index_whose_order_differs_from_numpys_is_refused():
    x = Tensor(np.zeros((2, 3, 4)), requires_grad=True) * 1
    with pytest.raises(NotImplementedError, match=r"mixes integers and index arrays around a slice"):
        x[0, :, [0, 2]] = 1.0


def test_a_tensor_reused_after_its_assignment_accumulates_both_gradients():
    w = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    v = Tensor(np.array(5.0), requires_grad=True)
    x = w * 1
    x[1] = v
    (x * x + x).sum().backward()                 # d/dx (x^2 + x) = 2x + 1
    np.testing.assert_allclose(w.grad, [3.0, 0.0, 7.0])
    np.testing.assert_allclose(v.grad, 11.0)


# ------------------------------------------------------------------ writes without a graph into saved memory
def _torch_write(lib, t, index, value):
    with (torch.no_grad() if lib == "torch" else cnnkit.no_grad()):
        t[index] = value


def _mul_other(lib, x, w):            # mul saves both operands: w written -> refused
    y = (x * w).sum()
    _torch_write(lib, w, 0, 100.0)
    return y


def _add_other(lib, x, w):            # add saves nothing: w written -> the same gradient
    y = (x + w).sum()
    _torch_write(lib, w, 0, 100.0)
    return y


def _sigmoid_output(lib, x, w):       # sigmoid saves its output: the output written -> refused
    s = (torch.sigmoid if lib == "torch" else cnnkit.functional.sigmoid)(x * w)
    y = s.sum()
    _torch_write(lib, s, 0, 5.0)
    return y


def _through_detach(lib, x, w):       # detach() shares the memory (and PyTorch's counter)
    y = (x * w).sum()
    _torch_write(lib, w.detach(), 1, -1.0)
    return y


def _through_a_view(lib, x, w):       # a reshaped view of w shares its memory
    y = (x * w).sum()
    _torch_write(lib, w.reshape(1, 3), (0, 2), 7.0)
    return y


def _write_before(lib, x, w):         # written before the op read it: nothing to refuse
    _torch_write(lib, w, 0, 100.0)
    return (x * w).sum()


def _conv_weight(lib, x, w):          # a layer's weight edited between forward and backward
    conv = (torch.nn.Conv2d if lib == "torch" else cnnkit.nn.Conv2d)(1, 2, 2)
    with (torch.no_grad() if lib == "torch" else cnnkit.no_grad()):
        for p in conv.parameters():
            p[...] = 0.5
    y = conv(x.reshape(1, 1, 1, 3).repeat(1, 1, 3, 1) if lib == "torch" else
             cnnkit.functional.cat([x.float().reshape(1, 1, 1, 3)] * 3, 2)).sum()
    _torch_write(lib, conv.weight, (0, 0, 0, 0), 9.0)
    return y


@pytest.mark.parametrize("case, refused", [
    (_mul_other, True), (_add_other, False), (_sigmoid_output, True), (_through_detach, True),
    (_through_a_view, True), (_write_before, False), (_conv_weight, True),
], ids=lambda v: v.__name__.strip("_") if callable(v) else str(v))
def test_a_backward_through_memory_written_in_place_since_is_refused_as_torchs(case, refused):
    # cnnkit computed these backwards with the new values, silently (x.grad = [100, 4] for mul)
    grads = {}
    for lib in ("torch", "cnnkit"):
        make = (lambda a, g: torch.tensor(a, requires_grad=g)) if lib == "torch" else \
            (lambda a, g: Tensor(np.array(a), requires_grad=g))
        x, w = make([1.0, 2.0, 3.0], True), make([3.0, 4.0, 5.0], False)
        y = case(lib, x, w)
        if refused:
            with pytest.raises(RuntimeError, match="one of the variables needed for gradient computation has been "
                                                   "modified by an inplace operation"):
                y.backward()
        else:
            y.backward()
            grads[lib] = np.asarray(x.grad)
    if not refused:
        np.testing.assert_allclose(grads["cnnkit"], grads["torch"], rtol=1e-12)


def test_the_refusal_names_the_op_and_what_was_written():
    x, w = Tensor(np.ones(3), requires_grad=True), Tensor(np.full(3, 2.0))
    y = (x * w).sum()
    with cnnkit.no_grad():
        w[0] = 100.0
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation: input 1 of MulOp \(shape \(3,\)\), "
                                           r"which MulOp saved for its backward, was written in place after MulOp "
                                           r"ran \(x\[\.\.\.\] = v without a graph\)"):
        y.backward()
