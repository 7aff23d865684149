"""The Tensor methods a PyTorch user types, against torch 2.13's behaviour (skipped without PyTorch).

Shape and reduction methods are compared op by op in tests/functional/; here: conversions
(item, tolist, numpy, np.asarray, to, float/double/long, detach, int/float/bool) and how
``transpose``, ``permute``, ``.T``, ``.mT`` and reductions read their arguments.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cnnkit  # noqa: E402
from cnnkit import Tensor  # noqa: E402
from cnnkit.errors import DimensionError, ShapeError  # noqa: E402


@pytest.mark.parametrize("value", [np.array(2.5), np.array([7.0]), np.array([[3]]), np.array(True)],
                         ids=["0d-float", "1-element", "1x1-int", "bool"])
def test_item_and_python_numbers_match_torch(value):
    ours, theirs = Tensor(value), torch.from_numpy(value)
    assert ours.item() == theirs.item() and type(ours.item()) is type(theirs.item())
    assert float(ours) == float(theirs) and int(ours) == int(theirs) and bool(ours) == bool(theirs)


def test_item_of_several_elements_is_refused_like_torch():
    with pytest.raises(RuntimeError):
        torch.ones(2).item()
    with pytest.raises(ShapeError, match=r"item\(\) needs a tensor with one element, got shape \(2,\) \(2 elements\)"):
        Tensor(np.ones(2)).item()
    message = "Boolean value of Tensor with more than one value is ambiguous"
    with pytest.raises(RuntimeError, match=message):
        bool(torch.ones(2))
    with pytest.raises(ValueError, match=message + r" \(shape \(2,\)\): reduce it first with .any\(\) or .all\(\)"):
        bool(Tensor(np.ones(2)))


@pytest.mark.parametrize("value", [np.array(2.5), np.arange(6.0).reshape(2, 3), np.zeros((2, 0)),
                                   np.arange(4, dtype=np.int32)], ids=["0d", "2d", "empty", "int32"])
def test_tolist_matches_torch(value):
    assert Tensor(value).tolist() == torch.from_numpy(value).tolist()


def test_numpy_refuses_a_tensor_that_requires_grad_like_torch():
    x = np.arange(3.0)
    with pytest.raises(RuntimeError, match="detach"):
        torch.from_numpy(x.copy()).requires_grad_().numpy()
    ours = Tensor(x, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"use tensor.detach\(\).numpy\(\)"):
        ours.numpy()
    with pytest.raises(RuntimeError, match="requires grad"):
        np.asarray(ours)  # torch's __array__ refuses too
    np.testing.assert_array_equal(ours.detach().numpy(), x)
    np.testing.assert_array_equal(ours.numpy(force=True), torch.from_numpy(x).requires_grad_().numpy(force=True))
    plain = Tensor(x)
    assert np.shares_memory(plain.numpy(), x) and np.shares_memory(torch.from_numpy(x).numpy(), x)
    np.testing.assert_array_equal(np.asarray(plain, dtype=np.float32), np.asarray(torch.from_numpy(x), np.float32))


def test_detach_shares_data_and_leaves_the_graph_like_torch():
    x = Tensor(np.ones(3), requires_grad=True)
    y = (x * 2).detach()
    t = (torch.ones(3, requires_grad=True) * 2).detach()
    assert y.requires_grad == t.requires_grad is False and y.creator is None and t.grad_fn is None


@pytest.mark.parametrize("target", ["float64", "float32", "int64", "bool"])
def test_to_dtype_matches_torch_and_is_differentiable_between_floats(target, rng):
    x = rng.standard_normal(4).astype(np.float32)
    ours, theirs = Tensor(x, requires_grad=True), torch.from_numpy(x).requires_grad_()
    y, t = ours.to(np.dtype(target)), theirs.to(getattr(torch, target))
    np.testing.assert_array_equal(y.data, t.detach().numpy())
    assert y.requires_grad == t.requires_grad
    if t.requires_grad:
        y.backward(np.ones(4))
        t.backward(torch.ones(4, dtype=t.dtype))
        assert ours.grad.dtype == np.float32
        np.testing.assert_array_equal(ours.grad, theirs.grad.numpy())


def test_half_is_refused_as_module_half_naming_the_dtypes_cnnkit_computes_in():
    # Tensor.half() was missing (AttributeError); PyTorch computes in float16, cnnkit does not
    assert torch.ones(2).half().dtype == torch.float16
    with pytest.raises(NotImplementedError, match=r"Tensor.half\(\): cnnkit's ops compute in float32 and float64 "
                                                  r"only \(no float16 kernels or mixed precision\); use float\(\) "
                                                  r"or double\(\)"):
        Tensor(np.ones(2, np.float32)).half()


def test_to_the_same_dtype_or_the_cpu_returns_the_tensor_itself_like_torch():
    x, t = Tensor(np.ones(2, np.float32)), torch.ones(2)
    assert (x.to(np.float32) is x) == (t.to(torch.float32) is t) is True
    assert (x.to("cpu") is x) == (t.to("cpu") is t) is True
    assert (x.to(np.float32, copy=True) is x) == (t.to(torch.float32, copy=True) is t) is False
    assert x.to(Tensor(np.ones(1))).dtype == np.float64 and x.double().dtype == np.float64
    assert x.double().float().dtype == np.float32 and x.long().dtype == np.int64
    with pytest.raises(ValueError, match="supports device 'cpu' only, got 'cuda'"):
        x.to("cuda")


def test_transpose_and_permute_read_their_arguments_like_torch(rng):
    x = rng.standard_normal((2, 3, 4))
    ours, theirs = Tensor(x), torch.from_numpy(x)
    for args in [(0, 1), (-1, 0), (1, 1)]:
        np.testing.assert_array_equal(ours.transpose(*args).data, theirs.transpose(*args).numpy())
    for dims in [(2, 0, 1), ((2, 0, 1),), ([1, 2, 0],)]:
        np.testing.assert_array_equal(ours.permute(*dims).data, theirs.permute(*dims).numpy())
    np.testing.assert_array_equal(ours.mT.data, theirs.mT.numpy())
    m = rng.standard_normal((3, 5))
    np.testing.assert_array_equal(Tensor(m).T.data, torch.from_numpy(m).T.numpy())
    np.testing.assert_array_equal(Tensor(m).transpose(0, 1).data, m.T)  # it used to return m unchanged


def test_reductions_read_dim_keepdim_axis_keepdims_like_torch(rng):
    x = rng.standard_normal((2, 3, 4))
    ours, theirs = Tensor(x), torch.from_numpy(x)
    for name in ["sum", "mean", "amax", "amin"]:
        for kw in [dict(dim=1), dict(dim=(0, 2), keepdim=True), dict(axis=-1), dict(axis=(0, 1), keepdims=True),
                   dict(dim=[2, 0])]:
            np.testing.assert_allclose(getattr(ours, name)(**kw).data, getattr(theirs, name)(**kw).numpy(),
                                       rtol=1e-12, err_msg=f"{name}({kw})")
    for name in ["max", "min"]:
        for kw in [dict(dim=1), dict(dim=-1, keepdim=True), dict(axis=0), dict(axis=2, keepdims=True)]:
            (values, indices), expected = getattr(ours, name)(**kw), getattr(theirs, name)(**kw)
            np.testing.assert_array_equal(values.data, expected.values.numpy())
            np.testing.assert_array_equal(indices.data, expected.indices.numpy())
    for name in ["argmax", "argmin"]:
        for kw in [dict(), dict(dim=1), dict(dim=-1, keepdim=True), dict(axis=0)]:
            np.testing.assert_array_equal(getattr(ours, name)(**kw).data, getattr(theirs, name)(**kw).numpy())


def test_dim_and_numel_match_torch():
    x = np.zeros((2, 3, 4))
    assert Tensor(x).dim() == torch.from_numpy(x).dim() == 3
    assert Tensor(x).numel() == torch.from_numpy(x).numel() == 24


@pytest.mark.parametrize("shape", [(2, 3, 4), (5,), (), (0, 3)], ids=["3d", "1d", "0d", "empty"])
def test_size_answers_as_torch_when_called_and_as_numpy_when_read(shape):
    """``x.size()`` / ``x.size(dim)`` as PyTorch; ``x.size`` itself stays NumPy's element count."""
    x = np.zeros(shape)
    ours, theirs = Tensor(x), torch.from_numpy(x)
    assert ours.size() == tuple(theirs.size())
    for dim in range(-len(shape), len(shape)):
        assert ours.size(dim) == theirs.size(dim)
    assert ours.size == x.size == theirs.numel() and isinstance(ours.size, int)
    for dim in (len(shape), -len(shape) - 1):
        with pytest.raises(IndexError):
            theirs.size(dim)
        with pytest.raises(DimensionError):
            ours.size(dim)


def test_size_is_usable_where_pytorch_code_uses_it(rng):
    x = rng.standard_normal((4, 3, 2, 2))
    assert Tensor(x).view(Tensor(x).size(0), -1).shape == tuple(torch.from_numpy(x).view(x.shape[0], -1).shape)
    assert str(Tensor(x).size) == "48" and int(Tensor(x).size) + 1 == 49


@pytest.mark.parametrize("name, args, kwargs", [
    ("add", (1.5,), dict(alpha=2)), ("sub", ("other",), dict(alpha=-0.5)), ("mul", ("other",), {}),
    ("div", ("other",), {}), ("div", (0.7,), dict(rounding_mode="floor")), ("pow", (2,), {}),
    ("neg", (), {}), ("clone", (), {}), ("contiguous", (), {}),
])
def test_arithmetic_and_copy_methods_match_torch(name, args, kwargs, rng):
    x, other = rng.standard_normal((3, 4)), rng.uniform(0.5, 2.0, (3, 4))
    cx, tx = Tensor(x, requires_grad=True), torch.from_numpy(x).requires_grad_()
    cargs = [Tensor(other) if a == "other" else a for a in args]
    targs = [torch.from_numpy(other) if a == "other" else a for a in args]
    ours, theirs = getattr(cx, name)(*cargs, **kwargs), getattr(tx, name)(*targs, **kwargs)
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-12)
    gy = rng.standard_normal((3, 4))
    ours.backward(gy)
    theirs.backward(torch.from_numpy(gy))
    np.testing.assert_allclose(cx.grad, tx.grad.numpy(), rtol=1e-12)


def test_matmul_method_matches_torch(rng):
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5))
    np.testing.assert_allclose(Tensor(a).matmul(Tensor(b)).data, torch.from_numpy(a).matmul(torch.from_numpy(b)).numpy())


def test_clone_owns_its_memory_and_contiguous_copies_only_when_needed(rng):
    x = Tensor(rng.standard_normal((3, 4)))
    c = x.clone()
    c.data[0, 0] = 99.0
    assert x.data[0, 0] != 99.0 and c.data.flags.c_contiguous
    assert x.contiguous() is x
    t = x.transpose(0, 1)
    assert not t.data.flags.c_contiguous and t.contiguous().data.flags.c_contiguous
    np.testing.assert_array_equal(t.contiguous().data, torch.from_numpy(x.data).t().contiguous().numpy())


@pytest.mark.parametrize("name, args", [("relu", ()), ("sigmoid", ()), ("tanh", ()), ("softmax", (1,)),
                                        ("log_softmax", (-1,)), ("softmax", (0,))])
def test_activation_methods_match_torch(name, args, rng):
    x = rng.standard_normal((3, 4)) * 2
    x[0, 0] = np.nan
    cx, tx = Tensor(x, requires_grad=True), torch.from_numpy(x).requires_grad_()
    ours, theirs = getattr(cx, name)(*args), getattr(tx, name)(*args)
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-12)
    gy = rng.standard_normal((3, 4))
    ours.backward(gy)
    theirs.backward(torch.from_numpy(gy))
    np.testing.assert_allclose(cx.grad, tx.grad.numpy(), rtol=1e-12)


def test_softmax_method_takes_dtype_and_requires_dim_like_torch(rng):
    x = rng.standard_normal((2, 3)).astype(np.float32)
    ours, theirs = Tensor(x).softmax(1, dtype=np.float64), torch.from_numpy(x).softmax(1, dtype=torch.float64)
    assert ours.dtype == np.float64 and theirs.dtype == torch.float64
    np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=1e-12)
    with pytest.raises(TypeError):
        torch.from_numpy(x).softmax()
    with pytest.raises(TypeError):
        Tensor(x).softmax()


# --------------------------------------------------------------------------- comparisons as PyTorch users write them
# (op by op, with broadcasting and promotion: tests/functional/test_logic_vs_torch.py)
@pytest.mark.parametrize("method", ["float", "double", "long", "int", "bool"])
@pytest.mark.parametrize("value", [np.array([True, False, True]), np.array([-1.7, 0.0, 2.5], np.float32),
                                   np.array([3, 0, -2])], ids=["bool", "float32", "int64"])
def test_dtype_conversion_methods_match_torch(method, value):
    ours, theirs = getattr(Tensor(value), method)(), getattr(torch.from_numpy(value), method)()
    assert ours.dtype == theirs.numpy().dtype and not ours.requires_grad
    np.testing.assert_array_equal(ours.data, theirs.numpy())


def _idioms(lib, logits, labels, x):
    """The everyday PyTorch idioms on comparisons; the same code runs on cnnkit and on torch."""
    pred = logits.argmax(1)
    mask = x > 0
    return {
        "accuracy": (pred == labels).float().mean().item(),
        "correct": (logits.argmax(1) == labels).sum().item(),
        "correct-eq": pred.eq(labels).sum().item(),
        "errors-ne-long": pred.ne(labels).long().sum().item(),
        "positive-float": (x > 0).float().sum(1).tolist(),
        "positive-double": (x >= 0).to(x.double().dtype).mean().item(),
        "masked-values": x[mask].tolist(),
        "where": lib.where(mask, x, 0.0).sum().item(),
        "where-int": lib.where(mask, 1, 0).sum().item(),
        "masked_fill": x.masked_fill(~mask, -1.0).tolist(),
        "all": (labels == labels).all().item(),
        "any": (x > 100).any().item(),
        "all-dim": (x > -1).all(1).tolist(),
        "and-or-xor": ((x > 0) & (x < 1) | (x < -1) ^ (x > 2)).sum().item(),
        "if": bool((x > 0).sum() > 3),
        "truthy-one": bool((x > 0)[0, 0]),
    }


def test_comparison_idioms_give_torch_numbers(rng):
    logits = rng.standard_normal((16, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 16)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    ours = _idioms(cnnkit, Tensor(logits, requires_grad=True), Tensor(labels), Tensor(x))
    theirs = _idioms(torch, torch.from_numpy(logits).requires_grad_(), torch.from_numpy(labels),
                     torch.from_numpy(x))
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert type(ours[key]) is type(theirs[key]), key
        np.testing.assert_allclose(np.array(ours[key], np.float64), np.array(theirs[key], np.float64), rtol=1e-6,
                                   err_msg=key)


def test_a_comparison_does_not_break_backward_of_the_other_branches(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)

    def loss(v):
        keep = (v.abs() < 1.0).float()         # a mask from the input itself: no gradient through it
        return (v * keep).pow(2).sum() + (v > 0).sum() * 0.0 + v.where(v > 0, v * 0.1).sum()

    ours, theirs = Tensor(x, requires_grad=True), torch.from_numpy(x).requires_grad_()
    loss(ours).backward()
    loss(theirs).backward()
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-6)


def test_truth_value_of_an_empty_tensor_is_refused_like_torch():
    with pytest.raises(RuntimeError, match="Boolean value of Tensor with no values is ambiguous"):
        bool(torch.ones(0) > 0)
    with pytest.raises(ValueError, match=r"Boolean value of Tensor with no values is ambiguous \(shape \(0,\)\)"):
        bool(Tensor(np.ones(0)) > 0)
