"""Shape ops (reshape, transpose, permute, flatten, squeeze, indexing, pad, cat, stack) against PyTorch.

PyTorch is the reference (a test-only dependency): this module is skipped without it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cnnkit.functional as F  # noqa: E402
from cnnkit import Tensor, nn  # noqa: E402
from cnnkit.errors import DimensionError, ShapeError  # noqa: E402

from .inputs import channel_major, normal  # noqa: E402
from .torch_compare import TF, Case, cases, check_op, dtypes, inputs_of, same_error, unary  # noqa: E402


def _shape_cases() -> list[Case]:
    out = [
        unary("reshape", lambda x: x.reshape(4, -1), lambda x: x.reshape(4, -1), normal(2, 3, 4)),
        unary("reshape-tuple", lambda x: x.reshape((6, 2, 2)), lambda x: x.reshape(6, 2, 2), normal(2, 3, 4)),
        unary("F.reshape", lambda x: F.reshape(x, (24,)), lambda x: x.reshape(24), normal(2, 3, 4)),
        unary("reshape-empty", lambda x: x.reshape(3, 0, 2), lambda x: x.reshape(3, 0, 2), normal(0, 3, 2)),
        unary("view", lambda x: x.view(3, 8), lambda x: x.view(3, 8), normal(2, 3, 4)),
        # transpose swaps two dims, as PyTorch (it used to mean NumPy's permutation)
        unary("transpose(0,1)-2d", lambda x: x.transpose(0, 1), lambda x: x.transpose(0, 1), normal(3, 5)),
        unary("transpose(1,-1)", lambda x: x.transpose(1, -1), lambda x: x.transpose(1, -1), normal(2, 3, 4)),
        unary("transpose(2,2)", lambda x: x.transpose(2, 2), lambda x: x.transpose(2, 2), normal(2, 3, 4)),
        unary("F.transpose", lambda x: F.transpose(x, 0, 2), lambda x: torch.transpose(x, 0, 2), normal(2, 3, 4)),
        unary("transpose-0d", lambda x: x.transpose(0, -1), lambda x: x.transpose(0, -1), normal()),
        unary("transpose-empty", lambda x: x.transpose(0, 1), lambda x: x.transpose(0, 1), normal(0, 3)),
        unary("permute", lambda x: x.permute(1, 0, 2), lambda x: x.permute(1, 0, 2), normal(2, 3, 4)),
        unary("permute-tuple", lambda x: x.permute((2, 0, 1)), lambda x: x.permute((2, 0, 1)), normal(2, 3, 4)),
        unary("F.permute", lambda x: F.permute(x, (0, 2, 3, 1)), lambda x: x.permute(0, 2, 3, 1),
              normal(2, 3, 4, 5)),
        unary("permute-negative", lambda x: x.permute(-1, 0, 1), lambda x: x.permute(-1, 0, 1), normal(2, 3, 4)),
        unary("permute-0d", lambda x: x.permute(()), lambda x: x.permute(()), normal()),
        unary("T-2d", lambda x: x.T, lambda x: x.T, normal(3, 5)),
        unary("T-1d", lambda x: x.T, lambda x: x.T, normal(5)),
        unary("t-2d", lambda x: x.t(), lambda x: x.t(), normal(3, 5)),
        unary("t-1d", lambda x: x.t(), lambda x: x.t(), normal(5)),
        unary("t-0d", lambda x: x.t(), lambda x: x.t(), normal()),
        unary("mT-3d", lambda x: x.mT, lambda x: x.mT, normal(2, 3, 4)),
        unary("mT-2d", lambda x: x.mT, lambda x: x.mT, normal(3, 4)),
        # F.flatten flattens everything by default, as torch.flatten (nn.Flatten keeps the batch)
        unary("F.flatten-default", F.flatten, torch.flatten, normal(2, 3, 4, 5)),
        unary("F.flatten(1)", lambda x: F.flatten(x, 1), lambda x: torch.flatten(x, 1), normal(2, 3, 4, 5)),
        unary("F.flatten(1,2)", lambda x: F.flatten(x, 1, 2), lambda x: torch.flatten(x, 1, 2), normal(2, 3, 4, 5)),
        unary("F.flatten(-3,-2)", lambda x: F.flatten(x, -3, -2), lambda x: torch.flatten(x, -3, -2),
              normal(2, 3, 4, 5)),
        unary("F.flatten(2,2)", lambda x: F.flatten(x, 2, 2), lambda x: torch.flatten(x, 2, 2), normal(2, 3, 4)),
        unary("flatten-0d", F.flatten, torch.flatten, normal()),
        unary("flatten-0d(0,-1)", lambda x: x.flatten(0, -1), lambda x: x.flatten(0, -1), normal()),
        unary("flatten-empty", lambda x: x.flatten(1), lambda x: x.flatten(1), normal(2, 0, 3)),
        unary("flatten-method", lambda x: x.flatten(), lambda x: x.flatten(), normal(2, 3, 4)),
        unary("flatten-channel-major", lambda x: F.flatten(x, 1), lambda x: torch.flatten(x, 1),
              lambda rng: channel_major(rng.standard_normal((2, 3, 4, 5)))),
        unary("squeeze", lambda x: x.squeeze(), lambda x: x.squeeze(), normal(1, 3, 1, 2)),
        unary("squeeze(dim)", lambda x: x.squeeze(2), lambda x: x.squeeze(2), normal(1, 3, 1, 2)),
        unary("squeeze(not-1)", lambda x: x.squeeze(1), lambda x: x.squeeze(1), normal(1, 3, 1, 2)),
        unary("squeeze(dims)", lambda x: F.squeeze(x, (0, -2)), lambda x: x.squeeze((0, -2)), normal(1, 3, 1, 2)),
        unary("squeeze-0d", lambda x: x.squeeze(0), lambda x: x.squeeze(0), normal()),
        unary("unsqueeze(0)", lambda x: x.unsqueeze(0), lambda x: x.unsqueeze(0), normal(3, 2)),
        unary("unsqueeze(-1)", lambda x: F.unsqueeze(x, -1), lambda x: x.unsqueeze(-1), normal(3, 2)),
        unary("unsqueeze-0d", lambda x: x.unsqueeze(-1), lambda x: x.unsqueeze(-1), normal()),
    ]
    for dim, shapes in [(0, [(2, 3), (4, 3), (1, 3)]), (1, [(2, 3, 4), (2, 1, 4)]), (-1, [(2, 2), (2, 5)]),
                        (1, [(3, 2, 2, 2)]), (0, [(0, 3), (2, 3)])]:
        gens = [normal(*s) for s in shapes]
        out.append(Case(f"cat(dim={dim}){shapes}".replace(" ", ""), lambda *xs, d=dim: F.cat(xs, d),
                        lambda *xs, d=dim: torch.cat(xs, d), inputs_of(*gens)))
    for dim, shape, n in [(0, (2, 3), 3), (1, (2, 3), 2), (-1, (2, 3), 4), (2, (1, 2, 3), 2), (-2, (4,), 2),
                          (0, (), 3)]:
        gens = [normal(*shape)] * n
        out.append(Case(f"stack(dim={dim}){shape}x{n}".replace(" ", ""), lambda *xs, d=dim: F.stack(xs, d),
                        lambda *xs, d=dim: torch.stack(xs, d), inputs_of(*gens)))
    return out


@cases(_shape_cases())
@dtypes()
def test_shape_ops_match_torch(case, dtype, rng, xp):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # .T on 1-D warns in neither, but stay quiet
        case.run(dtype, rng, xp)


@pytest.mark.parametrize("shape", [(), (2, 3, 4)], ids=["0d", "3d"])
def test_T_on_other_than_2d_warns_like_torch(shape, rng):
    """PyTorch deprecates .T except on 2-D (and 1-D) tensors, with a UserWarning; so does cnnkit.

    (PyTorch warns about the N-D case once per process, so only the 0-d warning is compared.)
    """
    x = rng.standard_normal(shape)
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        expected = torch.from_numpy(x).T
    with pytest.warns(UserWarning, match="deprecat") as ours:
        actual = Tensor(x).T
    assert len(ours) == 1
    if not shape:
        assert [w.category for w in theirs] == [UserWarning]
    np.testing.assert_array_equal(actual.data, expected.numpy())


def test_shape_errors_match_torch():
    x, tx = Tensor(np.ones((2, 3, 4))), torch.ones(2, 3, 4)
    same_error(lambda: x.transpose(0, 3), lambda: tx.transpose(0, 3), DimensionError,
               r"transpose: dimension out of range \(expected to be in range of \[-3, 2\], but got 3\)")
    same_error(lambda: Tensor(np.array(1.0)).transpose(0, 1), lambda: torch.tensor(1.0).transpose(0, 1),
               DimensionError, r"\[-1, 0\], but got 1")
    same_error(lambda: x.transpose(0, 1, 2), lambda: tx.transpose(0, 1, 2), TypeError, "positional")
    same_error(lambda: x.transpose(), lambda: tx.transpose(), TypeError, "dim0")
    same_error(lambda: x.permute(0, 1), lambda: tx.permute(0, 1), ShapeError,
               r"permute expects 3 dims for an input of shape \(2, 3, 4\), got dims=\(0, 1\)")
    same_error(lambda: x.permute(0, 0, 1), lambda: tx.permute(0, 0, 1), ShapeError, "a dimension twice")
    same_error(lambda: x.t(), lambda: tx.t(), ShapeError, "at most 2 dimensions")
    same_error(lambda: Tensor(np.ones(3)).mT, lambda: torch.ones(3).mT, ShapeError,
               r"matrix or a batch of matrices, got a 1-D tensor \(shape \(3,\)\)")
    same_error(lambda: F.flatten(x, 2, 1), lambda: torch.flatten(tx, 2, 1), ShapeError,
               "start_dim <= end_dim, got start_dim=2 and end_dim=1")
    same_error(lambda: F.flatten(x, 0, 3), lambda: torch.flatten(tx, 0, 3), DimensionError, "out of range")
    same_error(lambda: x.unsqueeze(4), lambda: tx.unsqueeze(4), DimensionError, r"\[-4, 3\], but got 4")


# Each index is written once and used on both sides (numpy arrays index torch tensors too).
GETITEM_INDICES = {
    "int": 1,
    "negative-int": -1,
    "slice": slice(1, None),
    "step-slice": (slice(None), slice(0, None, 2)),
    "int-slice-int": (0, slice(1, 3), 2),
    "ellipsis": (Ellipsis, 1),
    "newaxis": (None, slice(None), 0),
    "empty-slice": slice(2, 2),
    "int-array-repeats": np.array([0, 2, 0, 1, 0]),  # repeated rows: gradients must accumulate
    "two-int-arrays": (np.array([0, 1, 1, 2]), np.array([3, 0, 3, 3])),
    "array-and-slice": (slice(None), np.array([2, 2, 0])),
    "bool-mask": np.array([True, False, True]),
    "bool-mask-2d": np.array([[True, False, True, True], [False, False, True, False], [True] * 4]),
    # PyTorch selects by integers first, then applies the advanced indices (NumPy counts the
    # integers among the advanced ones and would move their dimensions to the front)
    "int-slice-array": (0, slice(None), np.array([0, 2, 2])),
    "int-newaxis-array": (1, None, np.array([0, 3])),
    "int-ellipsis-array": (0, Ellipsis, np.array([1, 4])),
    "int-slice-mask": (2, slice(None), np.array([True, False, True, True, False])),
    "0d-int-slice-array": (np.array(1), slice(1, None), np.array([4, 0])),
    "array-int-array": (np.array([0, 2]), 1, np.array([3, 3])),
}


@pytest.mark.parametrize("index", list(GETITEM_INDICES.values()), ids=list(GETITEM_INDICES))
@dtypes()
def test_getitem_matches_torch(index, dtype, rng, xp):
    def th_index(i):
        if isinstance(i, tuple):
            return tuple(th_index(j) for j in i)
        return torch.from_numpy(i) if isinstance(i, np.ndarray) else i

    x = rng.standard_normal((3, 4, 5))
    check_op(lambda t: t[index], lambda t: t[th_index(index)], [x], dtype=dtype, rng=rng, xp=xp)
    check_op(lambda t: F.getitem(t, index), lambda t: t[th_index(index)], [x], dtype=dtype, rng=rng, xp=xp)


PAD_CASES = [
    # (input shape, pad, mode, value)
    ((2, 3, 4, 5), (1, 2), "constant", 0.0),
    ((2, 3, 4, 5), (1, 2, 0, 3), "constant", 1.5),
    ((2, 3, 4, 5), (1, 1, 1, 1, 1, 0), "constant", -2.0),
    ((2, 3, 4, 5), (-1, 2, 1, -2), "constant", 0.0),  # negative widths crop
    ((2, 3, 4, 5), (-5, 2), "constant", 0.0),  # crop the whole axis, then pad it
    ((3, 5), (2, 0), "constant", 0.0),
    ((1, 2, 0), (1, 1), "constant", 3.0),  # an empty axis padded with the value
    ((), (), "constant", 0.0),
    ((2, 3, 4, 5), (1, 2, 3, 1), "reflect", None),
    ((2, 3, 4, 5), (4, 4, 3, 3), "reflect", None),  # widths up to size - 1
    ((2, 3, 6), (2, 3), "reflect", None),
    ((2, 3, 4, 5), (-1, 2, 1, -2), "reflect", None),
    ((0, 2, 3, 5), (1, 1, 1, 1), "reflect", None),  # an empty, unpadded batch axis
    ((2, 3, 4, 5), (1, 2, 3, 1), "replicate", None),
    ((2, 3, 4, 5), (6, 0, 0, 7), "replicate", None),  # wider than the input
    ((2, 3, 6), (0, 4), "replicate", None),
    ((2, 3, 4, 5), (-1, 2, 1, -2), "replicate", None),
    ((1, 2, 4, 5), (-3, -2, 1, 1), "replicate", None),  # negative widths that empty an axis
    ((1, 2, 4, 5), (-5, 2, 0, 0), "replicate", None),  # ... and pad it again: copies the edge
    ((1, 2, 4, 5), (1, -5, 0, 0), "replicate", None),
    ((0, 2, 3, 5), (1, 1, 1, 1), "replicate", None),
    ((2, 3, 4, 5), (1, 2, 3, 1), "circular", None),
    ((2, 3, 4, 5), (5, 5, 4, 4), "circular", None),  # the whole input wraps once
    ((2, 3, 6), (3, 1), "circular", None),
    ((1, 1, 1, 3), (2, 2, 0, 0), "circular", None),
    ((2, 3, 4, 5), (-1, 2, 1, -1), "circular", None),
    ((1, 0, 5), (1, 1), "circular", None),
    ((1, 1, 2, 3), (-2, -1, 0, 0), "circular", None),  # negative widths that empty an axis
    ((1, 1, 4, 3), (-1, -2, 1, 1), "circular", None),
    ((1, 1, 2, 3), (-2, -1, 0, 0), "reflect", None),
]


@pytest.mark.parametrize("shape, widths, mode, value", PAD_CASES,
                         ids=[f"{m}{w}{s}".replace(" ", "") for s, w, m, _ in PAD_CASES])
@dtypes()
def test_pad_matches_torch(shape, widths, mode, value, dtype, rng, xp):
    check_op(lambda x: F.pad(x, widths, mode, value), lambda x: TF.pad(x, widths, mode, value),
             [rng.standard_normal(shape)], dtype=dtype, rng=rng, xp=xp)


def test_pad_errors_match_torch():
    x, tx = Tensor(np.ones((1, 2, 4, 5))), torch.ones(1, 2, 4, 5)
    same_error(lambda: F.pad(x, (1,)), lambda: TF.pad(tx, (1,)), ValueError, r"even number of widths, got \(1,\)")
    same_error(lambda: F.pad(x, (1, 1) * 5), lambda: TF.pad(tx, (1, 1) * 5), ShapeError, "pad got 5 pairs")
    same_error(lambda: F.pad(x, (-4, -3)), lambda: TF.pad(tx, (-4, -3)), ShapeError,
               r"pad widths \(-4, -3\) crop more than the 5 elements of dimension 3")
    same_error(lambda: F.pad(x, (5, 0, 0, 0), "reflect"), lambda: TF.pad(tx, (5, 0, 0, 0), "reflect"), ShapeError,
               r"needs widths smaller than the dimension, got \(5, 0\) for size 5")
    same_error(lambda: F.pad(Tensor(np.ones((1, 2, 0))), (1, 1), "reflect"),
               lambda: TF.pad(torch.ones(1, 2, 0), (1, 1), "reflect"), ShapeError, "for size 0")
    same_error(lambda: F.pad(Tensor(np.ones((1, 2, 0))), (1, 1), "replicate"),
               lambda: TF.pad(torch.ones(1, 2, 0), (1, 1), "replicate"), ShapeError, "empty dimension 2")
    same_error(lambda: F.pad(x, (1, 1), "reflect", 1.0), lambda: TF.pad(tx, (1, 1, 0, 0), "reflect", 1.0),
               ValueError, "takes no fill value")
    same_error(lambda: F.pad(x, (1.5, 1)), lambda: TF.pad(tx, (1.5, 1)), ValueError, "integer widths")
    same_error(lambda: F.pad(x, (1, 1), "wrap"), lambda: TF.pad(tx, (1, 1), "wrap"), ValueError, "pad mode must be")


@pytest.mark.parametrize("widths, message", [
    ((0, 0, 5, 0), r"widths \(5, 0\) exceed the 4 elements of dimension 2"),
    ((6, 6, 0, 0), r"widths \(6, 6\) exceed the 5 elements of dimension 3"),
    ((0, 6, 1, 1), r"widths \(0, 6\) exceed the 5 elements of dimension 3"),
])
def test_circular_pad_wraps_at_most_once_like_torch(widths, message):
    """PyTorch refuses a circular width larger than its dimension ("wrapping around more than once")."""
    x, tx = Tensor(np.ones((1, 2, 4, 5))), torch.ones(1, 2, 4, 5)
    same_error(lambda: F.pad(x, widths, "circular"), lambda: TF.pad(tx, widths, "circular"), ShapeError,
               r"pad\(mode='circular'\) wraps around at most once: " + message)


def test_conv2d_circular_padding_wider_than_the_input_is_refused_like_torch():
    x, tx = Tensor(np.ones((1, 2, 4, 5))), torch.ones(1, 2, 4, 5)
    same_error(lambda: nn.Conv2d(2, 1, 3, padding=5, padding_mode="circular")(x),
               lambda: torch.nn.Conv2d(2, 1, 3, padding=5, padding_mode="circular")(tx), ShapeError,
               r"widths \(5, 5\) exceed the 4 elements of dimension 2")


@pytest.mark.parametrize("op", ["cat", "stack"])
def test_cat_and_stack_promote_dtypes_like_torch(op, rng):
    parts = [np.arange(6, dtype=np.int32).reshape(2, 3), rng.standard_normal((2, 3)).astype(np.float32)]
    ours = getattr(F, op)([Tensor(p) for p in parts])
    theirs = getattr(torch, op)([torch.from_numpy(p) for p in parts])
    assert ours.dtype == np.float32 and theirs.dtype == torch.float32
    np.testing.assert_array_equal(ours.data, theirs.numpy())
    # a float32 and a float64 input that requires grad: float64 out, each gradient in its dtype
    a, b = Tensor(parts[1], requires_grad=True), Tensor(parts[1].astype(np.float64), requires_grad=True)
    y = getattr(F, op)([a, b])
    assert y.dtype == np.float64
    y.sum().backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64


def test_cat_skips_1d_empty_tensors_like_torch(rng):
    """PyTorch's legacy rule: a tensor of shape (0,) joins tensors of any shape (it is skipped)."""
    x = rng.standard_normal((2, 3)).astype(np.float32)
    for parts in ([x, np.zeros(0, np.float32)], [np.zeros(0, np.float32), x, x], [np.zeros(0, np.float32)] * 2):
        for dim in (0, -1):
            ours = F.cat([Tensor(p) for p in parts], dim)
            theirs = torch.cat([torch.from_numpy(p) for p in parts], dim)
            assert ours.shape == tuple(theirs.shape)
            np.testing.assert_array_equal(ours.data, theirs.numpy())


def test_cat_and_stack_errors_match_torch():
    x, tx = Tensor(np.ones((2, 3))), torch.ones(2, 3)
    same_error(lambda: F.cat([x, x], 2), lambda: torch.cat([tx, tx], 2), DimensionError,
               r"cat: dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)")
    same_error(lambda: F.stack([x, x], 3), lambda: torch.stack([tx, tx], 3), DimensionError, r"\[-3, 2\], but got 3")
    same_error(lambda: F.cat([]), lambda: torch.cat([]), ValueError, "cat expects a non-empty sequence")
    same_error(lambda: F.cat([Tensor(np.array(1.0))] * 2), lambda: torch.cat([torch.tensor(1.0)] * 2), ShapeError,
               "cannot concatenate 0-d tensors")
    same_error(lambda: F.cat([x, Tensor(np.ones((2, 3, 1)))]), lambda: torch.cat([tx, torch.ones(2, 3, 1)]),
               ShapeError, r"cat\(dim=0\) needs inputs equal in every other dimension")
    same_error(lambda: F.stack([x, Tensor(np.ones((3, 2)))]), lambda: torch.stack([tx, torch.ones(3, 2)]),
               ShapeError, "stack needs inputs of one shape")


@pytest.mark.parametrize("op, torch_op, forward_keeps", [
    (lambda x: F.pad(x, (0, 0, 0, 0, 3, 2)), lambda x: TF.pad(x, (0, 0, 0, 0, 3, 2)), True),  # ResNet-20's shortcut
    (lambda x: F.pad(x, (1, 2, -1, 1), value=0.5), lambda x: TF.pad(x, (1, 2, -1, 1), value=0.5), True),  # crops
    (lambda x: x[:, :, ::2, 1::2], lambda x: x[:, :, ::2, 1::2], True),  # a view
    (lambda x: F.adaptive_avg_pool2d(x, 1), lambda x: TF.adaptive_avg_pool2d(x, 1), False),
], ids=["pad-channels", "pad-crop", "getitem", "global-avg-pool"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_channel_major_maps_keep_their_layout_forward_and_backward(op, torch_op, forward_keeps, dtype, rng):
    """A channel-major map (the direct convolution's output layout) padded, sliced or pooled
    gives its gradient in that layout (and a padded map keeps it): the sums with its other
    branch are then adds of one layout. Values equal PyTorch's."""
    x = rng.standard_normal((4, 5, 7, 6)).astype(dtype)
    xs = Tensor(channel_major(x), requires_grad=True)
    y = op(xs)
    gy = rng.standard_normal(y.shape).astype(dtype)
    y.backward(channel_major(gy))
    X = torch.tensor(x, requires_grad=True)
    Y = torch_op(X)
    Y.backward(torch.tensor(gy))
    tol = 1e-6 if dtype == np.float32 else 1e-14  # the mean's sums in another order
    np.testing.assert_allclose(y.data, Y.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(xs.grad, X.grad.numpy(), rtol=tol)
    channel_first = [1, 0, 2, 3]
    assert sorted(range(4), key=lambda i: -xs.grad.strides[i]) == channel_first
    if forward_keeps:
        assert sorted(range(4), key=lambda i: -y.data.strides[i]) == channel_first
