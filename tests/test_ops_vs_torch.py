"""Every functional op and Tensor operator against PyTorch: forward and every input's gradient.

One helper, ``check_op``, runs a case through cnnkit and through PyTorch with the same
inputs and the same random upstream gradient, and compares the output and the gradient
of every differentiable input. Each section below is a table of cases (hand-picked edge
cases plus seeded random sweeps over shapes and arguments) and one parametrized test,
run in float32 (rtol 1e-4, atol 1e-5) and float64 (1e-10, relative to the magnitudes).

PyTorch is a reference only (an optional dev dependency): this file is skipped without it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import cnnkit
import cnnkit.functional as F
from cnnkit import Tensor
from cnnkit.backend import as_numpy

torch = pytest.importorskip("torch")
TF = torch.nn.functional

# PyTorch warns that padding="same" with an even kernel copies its input: not our concern.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")

DTYPES = [np.float32, np.float64]
TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


# --------------------------------------------------------------------------- the helper
def assert_close(actual, expected, dtype, what: str) -> None:
    """float32: rtol 1e-4, atol 1e-5. float64: rtol 1e-10, atol 1e-10 times the magnitude."""
    expected = np.asarray(expected)
    if np.dtype(dtype) == np.float32:
        rtol, atol = 1e-4, 1e-5
    else:
        finite = np.abs(expected[np.isfinite(expected)])
        rtol, atol = 1e-10, 1e-10 * max(1.0, float(finite.max()) if finite.size else 1.0)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != torch's {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def check_op(
    cn_fn: Callable,
    torch_fn: Callable,
    inputs,
    consts=(),
    *,
    dtype,
    rng,
    xp=np,
    grad=True,
    requires_grad=None,
    check_no_grad=True,
) -> None:
    """Compare cnnkit with PyTorch on one case: the output and the gradient of every input.

    Args:
        cn_fn, torch_fn: called as fn(*inputs, *consts), with Tensors for cnnkit and torch
            tensors for PyTorch; each returns one tensor.
        inputs: float arrays, cast to ``dtype`` and differentiated. Their memory layout is
            kept (tests pass channel-major views, the layout conv and pool ops hand on).
        consts: arrays passed after the inputs and never differentiated (integer targets,
            class weights); floating ones are cast to ``dtype``. cnnkit receives them as
            plain arrays.
        xp: the array module cnnkit computes with (numpy, or cupy on a GPU).
        grad: also run backward with one random upstream gradient and compare input grads.
        requires_grad: one bool per input (default: all True); the others are constants,
            which exercises each op's "this input needs no gradient" paths.
        check_no_grad: also run cnnkit's forward under ``no_grad`` (nothing saved for
            backward) and require the same output. Off for ops with side effects.
    """
    xs = [np.asarray(x).astype(dtype) for x in inputs]
    cs = [np.asarray(c).astype(dtype) if np.asarray(c).dtype.kind == "f" else np.asarray(c) for c in consts]
    flags = [grad] * len(xs) if requires_grad is None else [grad and r for r in requires_grad]
    cn_in = [Tensor(xp.asarray(x.copy()), requires_grad=f) for x, f in zip(xs, flags, strict=True)]
    th_in = [torch.from_numpy(x.copy()).requires_grad_(f) for x, f in zip(xs, flags, strict=True)]

    cn_out = cn_fn(*cn_in, *[xp.asarray(c.copy()) for c in cs])
    th_out = torch_fn(*th_in, *[torch.from_numpy(c.copy()) for c in cs])
    expected = th_out.detach().numpy()
    assert cn_out.dtype == np.dtype(dtype), f"output dtype {cn_out.dtype}, expected {np.dtype(dtype)}"
    assert_close(as_numpy(cn_out.data), expected, dtype, "forward")
    if check_no_grad:
        with cnnkit.no_grad():
            plain = cn_fn(*[Tensor(xp.asarray(x.copy())) for x in xs], *[xp.asarray(c.copy()) for c in cs])
        assert not plain.requires_grad and plain.creator is None
        assert_close(as_numpy(plain.data), expected, dtype, "forward under no_grad")
    if any(flags):
        gy = rng.standard_normal(th_out.shape).astype(dtype)
        cn_out.backward(xp.asarray(gy))
        th_out.backward(torch.from_numpy(gy))
        for i, (c, t, x) in enumerate(zip(cn_in, th_in, xs, strict=True)):
            if not flags[i]:
                assert c.grad is None, f"input {i} does not require grad but got one"
                continue
            expected = np.zeros_like(x) if t.grad is None else t.grad.numpy()
            actual = np.zeros_like(x) if c.grad is None else as_numpy(c.grad)
            assert actual.dtype == np.dtype(dtype), f"grad of input {i}: dtype {actual.dtype}"
            assert_close(actual, expected, dtype, f"gradient of input {i} (shape {x.shape})")
    for i, (c, x) in enumerate(zip(cn_in, xs, strict=True)):
        np.testing.assert_array_equal(as_numpy(c.data), x, err_msg=f"input {i} was modified in place")


@dataclass(frozen=True)
class Case:
    """One comparison: cnnkit fn, torch fn, and ``make(rng) -> (inputs, consts)``."""

    id: str
    cn: Callable
    th: Callable
    make: Callable

    def run(self, dtype, rng, xp=np) -> None:
        inputs, consts = self.make(rng)
        check_op(self.cn, self.th, inputs, consts, dtype=dtype, rng=rng, xp=xp)


def cases(table: list[Case]):
    return pytest.mark.parametrize("case", table, ids=[c.id for c in table])


def dtypes():
    return pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])


def normal(*shape):
    return lambda rng: rng.standard_normal(shape)


def positive(*shape):
    return lambda rng: rng.uniform(0.5, 2.0, shape)


def away_from_zero(*shape):
    """Values with |x| >= 0.1: kinks (relu, abs) stay out of reach of rounding."""
    return lambda rng: rng.choice([-1.0, 1.0], shape) * rng.uniform(0.1, 2.0, shape)


def with_zeros(*shape):
    """Normal values with exact zeros mixed in: tests the gradient convention at a kink."""
    return lambda rng: rng.standard_normal(shape) * (rng.random(shape) > 0.25)


def integers(*shape, low=-2, high=3):
    """Small integers as floats: max-pool windows full of ties."""
    return lambda rng: rng.integers(low, high, shape).astype(np.float64)


def channel_major(x):
    """The same values in (C, N, H, W) memory: the (N, C, H, W) view conv/pool ops return."""
    return np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)


def unary(name, cn, th, gen) -> Case:
    return Case(name, cn, th, lambda rng: ([gen(rng)], []))


def inputs_of(*gens, consts=()):
    """make(rng) from input generators and constant generators."""
    return lambda rng: ([g(rng) for g in gens], [c(rng) for c in consts])


# --------------------------------------------------------------------------- Tensor operators
def _operator_cases() -> list[Case]:
    shapes = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1, 5), (4, 1)), ((1,), (2, 3)), ((), (2, 3))]
    out = []
    for a, b in shapes:
        tag = f"{a}x{b}".replace(" ", "")
        out += [
            Case(f"add{tag}", lambda x, y: x + y, lambda x, y: x + y, inputs_of(normal(*a), normal(*b))),
            Case(f"sub{tag}", lambda x, y: x - y, lambda x, y: x - y, inputs_of(normal(*a), normal(*b))),
            Case(f"mul{tag}", lambda x, y: x * y, lambda x, y: x * y, inputs_of(normal(*a), normal(*b))),
            Case(
                f"div{tag}", lambda x, y: x / y, lambda x, y: x / y, inputs_of(normal(*a), away_from_zero(*b))
            ),
            Case(f"pow{tag}", lambda x, y: x**y, lambda x, y: x**y, inputs_of(positive(*a), normal(*b))),
        ]
    out += [
        # functional names and reflected operators with Python scalars and constant arrays
        Case("F.add", F.add, torch.add, inputs_of(normal(2, 3), normal(3))),
        Case("F.sub", F.sub, torch.sub, inputs_of(normal(2, 3), normal(2, 1))),
        Case("F.mul", F.mul, torch.mul, inputs_of(normal(2, 3), normal(1, 3))),
        Case("F.div", F.div, torch.div, inputs_of(normal(2, 3), away_from_zero(3))),
        Case("F.pow", F.pow, torch.pow, inputs_of(positive(2, 3), normal(2, 3))),
        Case("F.neg", F.neg, torch.neg, inputs_of(normal(2, 3))),
        Case("neg", lambda x: -x, lambda x: -x, inputs_of(normal(4, 5))),
        Case("pos", lambda x: +x * 1.0, lambda x: +x * 1.0, inputs_of(normal(4))),
        Case("scalar+x", lambda x: 2.5 + x, lambda x: 2.5 + x, inputs_of(normal(3, 2))),
        Case("x-scalar", lambda x: x - 1.5, lambda x: x - 1.5, inputs_of(normal(3, 2))),
        Case("scalar-x", lambda x: 1.5 - x, lambda x: 1.5 - x, inputs_of(normal(3, 2))),
        Case("scalar*x", lambda x: 3.0 * x, lambda x: 3.0 * x, inputs_of(normal(3, 2))),
        Case("x/scalar", lambda x: x / 3.0, lambda x: x / 3.0, inputs_of(normal(3, 2))),
        Case("scalar/x", lambda x: 3.0 / x, lambda x: 3.0 / x, inputs_of(away_from_zero(3, 2))),
        Case("x**2", lambda x: x**2, lambda x: x**2, inputs_of(normal(3, 4))),
        Case("x**3", lambda x: x**3, lambda x: x**3, inputs_of(normal(3, 4))),
        Case("x**-1.5", lambda x: x**-1.5, lambda x: x**-1.5, inputs_of(positive(3, 4))),
        Case("x**0.5", lambda x: x**0.5, lambda x: x**0.5, inputs_of(positive(3, 4))),
        Case("2**x", lambda x: 2.0**x, lambda x: 2.0**x, inputs_of(normal(3, 4))),
        Case("x*x (reuse)", lambda x: x * x + x, lambda x: x * x + x, inputs_of(normal(3, 4))),
        Case(
            "array+x", lambda x, c: c + x, lambda x, c: c + x, inputs_of(normal(2, 3), consts=[normal(2, 3)])
        ),
        Case("array*x", lambda x, c: c * x, lambda x, c: c * x, inputs_of(normal(2, 3), consts=[normal(3)])),
        Case(
            "array-x", lambda x, c: c - x, lambda x, c: c - x, inputs_of(normal(2, 3), consts=[normal(2, 3)])
        ),
        Case(
            "array/x",
            lambda x, c: c / x,
            lambda x, c: c / x,
            inputs_of(away_from_zero(2, 3), consts=[normal(2, 3)]),
        ),
    ]
    for a, b in [
        ((3, 4), (4, 5)),
        ((4,), (4,)),
        ((4,), (4, 2)),
        ((3, 4), (4,)),
        ((2, 3, 4), (4, 5)),
        ((2, 1, 3, 4), (5, 4, 2)),
        ((5,), (2, 5, 3)),
        ((2, 3, 4), (4,)),
    ]:
        tag = f"{a}@{b}".replace(" ", "")
        out.append(
            Case(f"matmul{tag}", lambda x, y: x @ y, lambda x, y: x @ y, inputs_of(normal(*a), normal(*b)))
        )
    out += [
        Case("F.matmul", F.matmul, torch.matmul, inputs_of(normal(3, 4), normal(4, 2))),
        Case(
            "array@x", lambda x, c: c @ x, lambda x, c: c @ x, inputs_of(normal(4, 2), consts=[normal(3, 4)])
        ),
    ]
    return out


OPERATOR_CASES = _operator_cases()


@cases(OPERATOR_CASES)
@dtypes()
def test_tensor_operators_match_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)


def _reduction_cases() -> list[Case]:
    out = []
    for axis, keep in itertools.product([None, 0, 1, -1, (0, 2), (-1, -3)], [False, True]):
        dims = tuple(range(3)) if axis is None else axis

        def th_sum(x, dims=dims, keep=keep):
            return x.sum(dim=dims, keepdim=keep)

        def th_mean(x, dims=dims, keep=keep):
            return x.mean(dim=dims, keepdim=keep)

        def th_max(x, dims=dims, keep=keep):
            return x.amax(dim=dims, keepdim=keep)

        tag = f"(axis={axis},keepdims={keep})"
        out += [
            Case(f"sum{tag}", lambda x, a=axis, k=keep: x.sum(a, k), th_sum, inputs_of(normal(2, 3, 4))),
            Case(f"mean{tag}", lambda x, a=axis, k=keep: x.mean(a, k), th_mean, inputs_of(normal(2, 3, 4))),
            Case(f"max{tag}", lambda x, a=axis, k=keep: x.max(a, k), th_max, inputs_of(normal(2, 3, 4))),
            # NOTE: ties share the gradient evenly, as torch.amax does.
            Case(
                f"max-ties{tag}",
                lambda x, a=axis, k=keep: F.max(x, a, k),
                th_max,
                inputs_of(integers(2, 3, 4, low=0, high=2)),
            ),
        ]
    out += [
        Case("sum-1d", lambda x: F.sum(x), lambda x: x.sum(), inputs_of(normal(7))),
        Case("mean-scalar-of-4d", lambda x: F.mean(x), lambda x: x.mean(), inputs_of(normal(2, 3, 4, 5))),
    ]
    return out


REDUCTION_CASES = _reduction_cases()


@cases(REDUCTION_CASES)
@dtypes()
def test_reductions_match_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)


ELEMENTWISE_CASES = [
    unary("exp", lambda x: x.exp(), torch.exp, normal(3, 5)),
    unary("F.exp", F.exp, torch.exp, normal(2, 3, 4)),
    unary("log", lambda x: x.log(), torch.log, positive(3, 5)),
    unary("F.log", F.log, torch.log, lambda rng: rng.uniform(1e-3, 10.0, (4, 4))),
    unary("sqrt", lambda x: x.sqrt(), torch.sqrt, positive(3, 5)),
    unary("F.sqrt", F.sqrt, torch.sqrt, lambda rng: rng.uniform(1e-2, 100.0, (4, 4))),
    unary("abs", lambda x: x.abs(), torch.abs, away_from_zero(3, 5)),
    unary("F.abs-at-zero", F.abs, torch.abs, with_zeros(4, 6)),  # gradient 0 at x = 0
    unary(
        "cast-f64",
        lambda x: F.cast(x, np.float64).astype(x.dtype),
        lambda x: x.double().to(x.dtype),
        normal(3, 4),
    ),
]


@cases(ELEMENTWISE_CASES)
@dtypes()
def test_elementwise_math_matches_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)


def test_comparisons_return_plain_arrays(rng):
    a, b = rng.integers(-2, 3, (3, 4)).astype(np.float32), rng.integers(-2, 3, (3, 4)).astype(np.float32)
    x, y = Tensor(a, requires_grad=True), Tensor(b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    for ours, theirs in [
        (x < y, ta < tb),
        (x <= y, ta <= tb),
        (x > y, ta > tb),
        (x >= y, ta >= tb),
        (x == y, ta == tb),
        (x != y, ta != tb),
        (x > 0.5, ta > 0.5),
        (x == 1, ta == 1),
    ]:
        assert type(ours) is np.ndarray and ours.dtype == bool
        np.testing.assert_array_equal(ours, theirs.numpy())


@pytest.mark.parametrize(
    "scalar",
    [np.float64(1.5), np.float32(1.5), np.int64(3), 2, 0.5],
    ids=["np.float64", "np.float32", "np.int64", "int", "float"],
)
def test_scalars_do_not_change_a_float32_tensors_dtype(scalar, rng):
    """Python and NumPy scalars are weakly typed, as in PyTorch: float32 stays float32."""
    x = rng.standard_normal((2, 3)).astype(np.float32)
    for op in [
        lambda a, s: a * s,
        lambda a, s: s * a,
        lambda a, s: a + s,
        lambda a, s: s - a,
        lambda a, s: a / s,
        lambda a, s: s / (a * a + 1),
        lambda a, s: a**s,
    ]:
        check_op(
            lambda a, op=op: op(a, scalar),
            lambda a, op=op: op(a, scalar),
            [np.abs(x) + 0.5],
            dtype=np.float32,
            rng=rng,
        )


def test_mixed_float32_float64_ops_give_each_input_its_own_gradient_dtype(rng):
    a, b = rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal(3)
    ca, cb = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    ta, tb = torch.from_numpy(a).requires_grad_(), torch.from_numpy(b).requires_grad_()
    cy, ty = (ca * cb + ca / (cb * cb + 1)).sum(), (ta * tb + ta / (tb * tb + 1)).sum()
    assert cy.dtype == np.float64
    cy.backward()
    ty.backward()
    assert ca.grad.dtype == np.float32 and cb.grad.dtype == np.float64
    assert_close(ca.grad, ta.grad.numpy(), np.float32, "float32 input's gradient")
    assert_close(cb.grad, tb.grad.numpy(), np.float64, "float64 input's gradient")


# --------------------------------------------------------------------------- activations
def _activation_cases() -> list[Case]:
    out = [
        unary("relu", F.relu, TF.relu, normal(3, 7)),
        unary("relu-at-zero", F.relu, TF.relu, with_zeros(2, 3, 4, 5)),  # gradient 0 at x = 0
        unary(
            "relu-4d-channel-major",
            F.relu,
            TF.relu,
            lambda rng: channel_major(rng.standard_normal((2, 3, 4, 5))),
        ),
        unary("sigmoid", F.sigmoid, torch.sigmoid, normal(4, 6)),
        unary("sigmoid-saturated", F.sigmoid, torch.sigmoid, lambda rng: 40 * rng.standard_normal((3, 8))),
        unary("tanh", F.tanh, torch.tanh, normal(4, 6)),
        unary("tanh-saturated", F.tanh, torch.tanh, lambda rng: 30 * rng.standard_normal((3, 8))),
        unary("tanh-4d", F.tanh, torch.tanh, normal(2, 3, 3, 2)),
    ]
    for slope in [0.01, 0.2, 1.5, -0.3]:
        out.append(
            unary(
                f"leaky_relu({slope})",
                lambda x, s=slope: F.leaky_relu(x, s),
                lambda x, s=slope: TF.leaky_relu(x, s),
                with_zeros(3, 5, 2),
            )
        )
    out.append(unary("leaky_relu-default", F.leaky_relu, TF.leaky_relu, normal(4, 5)))
    for alpha in [1.0, 0.5, 2.0]:
        out.append(
            unary(
                f"elu({alpha})",
                lambda x, a=alpha: F.elu(x, a),
                lambda x, a=alpha: TF.elu(x, a),
                with_zeros(3, 5, 2),
            )
        )
    out.append(unary("elu-large-negative", F.elu, TF.elu, lambda rng: -50 * rng.random((3, 4))))
    for fn, tfn in [(F.softmax, TF.softmax), (F.log_softmax, TF.log_softmax)]:
        name = fn.__name__
        for shape, dim in [
            ((4, 7), -1),
            ((4, 7), 0),
            ((1, 5), 1),
            ((2, 3, 4, 5), 1),
            ((2, 3, 4, 5), -2),
            ((6,), 0),
            ((3, 1, 2), 1),
        ]:
            out.append(
                unary(
                    f"{name}{shape}dim={dim}".replace(" ", ""),
                    lambda x, f=fn, d=dim: f(x, d),
                    lambda x, f=tfn, d=dim: f(x, d),
                    normal(*shape),
                )
            )
        # large logits: must not overflow
        out.append(
            unary(
                f"{name}-large",
                lambda x, f=fn: f(x, 1),
                lambda x, f=tfn: f(x, 1),
                lambda rng: 500 * rng.standard_normal((3, 6)),
            )
        )
        out.append(unary(f"{name}-default-dim", fn, lambda x, f=tfn: f(x, -1), normal(3, 4)))
    return out


ACTIVATION_CASES = _activation_cases()


@cases(ACTIVATION_CASES)
@dtypes()
def test_activations_match_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)


# --------------------------------------------------------------------------- linear and shape ops
def _linear_and_shape_cases() -> list[Case]:
    out = []
    for x_shape, out_f, bias in [
        ((5, 4), 3, True),
        ((5, 4), 3, False),
        ((1, 1), 1, True),
        ((4,), 6, True),
        ((2, 3, 7), 5, True),
        ((2, 3, 1, 4), 2, False),
    ]:
        tag = f"linear{x_shape}->{out_f}{'' if bias else '-nobias'}".replace(" ", "")
        d = x_shape[-1]
        if bias:
            out.append(
                Case(tag, F.linear, TF.linear, inputs_of(normal(*x_shape), normal(out_f, d), normal(out_f)))
            )
        else:
            out.append(Case(tag, F.linear, TF.linear, inputs_of(normal(*x_shape), normal(out_f, d))))

    out += [
        unary("reshape", lambda x: x.reshape(4, -1), lambda x: x.reshape(4, -1), normal(2, 3, 4)),
        unary("reshape-tuple", lambda x: x.reshape((6, 2, 2)), lambda x: x.reshape(6, 2, 2), normal(2, 3, 4)),
        unary("F.reshape", lambda x: F.reshape(x, (24,)), lambda x: x.reshape(24), normal(2, 3, 4)),
        unary("view", lambda x: x.view(3, 8), lambda x: x.reshape(3, 8), normal(2, 3, 4)),
        unary("transpose-default", lambda x: x.transpose(), lambda x: x.permute(2, 1, 0), normal(2, 3, 4)),
        unary(
            "transpose-axes", lambda x: x.transpose(1, 0, 2), lambda x: x.permute(1, 0, 2), normal(2, 3, 4)
        ),
        unary(
            "F.transpose",
            lambda x: F.transpose(x, (0, 2, 3, 1)),
            lambda x: x.permute(0, 2, 3, 1),
            normal(2, 3, 4, 5),
        ),
        unary(
            "permute-negative", lambda x: x.permute(-1, 0, 1), lambda x: x.permute(2, 0, 1), normal(2, 3, 4)
        ),
        unary("T", lambda x: x.T, lambda x: x.t(), normal(3, 5)),
        # F.flatten's default start_dim is 1, like nn.Flatten (torch.flatten's is 0)
        unary("F.flatten-default", F.flatten, lambda x: torch.flatten(x, 1), normal(2, 3, 4, 5)),
        unary(
            "F.flatten(0,-1)",
            lambda x: F.flatten(x, 0, -1),
            lambda x: torch.flatten(x, 0, -1),
            normal(2, 3, 4),
        ),
        unary(
            "F.flatten(1,2)",
            lambda x: F.flatten(x, 1, 2),
            lambda x: torch.flatten(x, 1, 2),
            normal(2, 3, 4, 5),
        ),
        unary(
            "F.flatten(-3,-2)",
            lambda x: F.flatten(x, -3, -2),
            lambda x: torch.flatten(x, -3, -2),
            normal(2, 3, 4, 5),
        ),
        unary("flatten-method", lambda x: x.flatten(), lambda x: x.flatten(), normal(2, 3, 4)),
        unary(
            "flatten-channel-major",
            F.flatten,
            lambda x: torch.flatten(x, 1),
            lambda rng: channel_major(rng.standard_normal((2, 3, 4, 5))),
        ),
    ]
    for dim, shapes in [
        (0, [(2, 3), (4, 3), (1, 3)]),
        (1, [(2, 3, 4), (2, 1, 4)]),
        (-1, [(2, 2), (2, 5)]),
        (1, [(3, 2, 2, 2)]),
    ]:
        gens = [normal(*s) for s in shapes]
        out.append(
            Case(
                f"cat(dim={dim}){shapes}".replace(" ", ""),
                lambda *xs, d=dim: F.cat(xs, d),
                lambda *xs, d=dim: torch.cat(xs, d),
                inputs_of(*gens),
            )
        )
    for dim, shape, n in [(0, (2, 3), 3), (1, (2, 3), 2), (-1, (2, 3), 4), (2, (1, 2, 3), 2), (-2, (4,), 2)]:
        gens = [normal(*shape)] * n
        out.append(
            Case(
                f"stack(dim={dim}){shape}x{n}".replace(" ", ""),
                lambda *xs, d=dim: F.stack(xs, d),
                lambda *xs, d=dim: torch.stack(xs, d),
                inputs_of(*gens),
            )
        )
    return out


LINEAR_AND_SHAPE_CASES = _linear_and_shape_cases()


@cases(LINEAR_AND_SHAPE_CASES)
@dtypes()
def test_linear_and_shape_ops_match_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)


# Each index is written once and used on both sides (numpy arrays index torch tensors too).
GETITEM_INDICES = {
    "int": 1,
    "negative-int": -1,
    "slice": slice(1, None),
    "step-slice": (slice(None), slice(0, None, 2)),
    "int-slice-int": (0, slice(1, 3), 2),
    "ellipsis": (Ellipsis, 1),
    "newaxis": (None, slice(None), 0),
    "int-array-repeats": np.array([0, 2, 0, 1, 0]),  # repeated rows: gradients must accumulate
    "two-int-arrays": (np.array([0, 1, 1, 2]), np.array([3, 0, 3, 3])),
    "array-and-slice": (slice(None), np.array([2, 2, 0])),
    "bool-mask": np.array([True, False, True]),
    "bool-mask-2d": np.array([[True, False, True, True], [False, False, True, False], [True] * 4]),
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
    ((3, 5), (2, 0), "constant", 0.0),
    ((2, 3, 4, 5), (1, 2, 3, 1), "reflect", 0.0),
    ((2, 3, 4, 5), (4, 4, 3, 3), "reflect", 0.0),  # widths up to size - 1
    ((2, 3, 6), (2, 3), "reflect", 0.0),
    ((2, 3, 4, 5), (1, 2, 3, 1), "replicate", 0.0),
    ((2, 3, 4, 5), (6, 0, 0, 7), "replicate", 0.0),  # wider than the input
    ((2, 3, 6), (0, 4), "replicate", 0.0),
    ((2, 3, 4, 5), (1, 2, 3, 1), "circular", 0.0),
    ((2, 3, 4, 5), (5, 5, 4, 4), "circular", 0.0),  # the whole input wraps once
    ((2, 3, 6), (3, 1), "circular", 0.0),
    ((1, 1, 1, 3), (2, 2, 0, 0), "circular", 0.0),
]


@pytest.mark.parametrize(
    "shape, widths, mode, value", PAD_CASES, ids=[f"{m}{w}{s}".replace(" ", "") for s, w, m, _ in PAD_CASES]
)
@dtypes()
def test_pad_matches_torch(shape, widths, mode, value, dtype, rng, xp):
    check_op(
        lambda x: F.pad(x, widths, mode, value),
        lambda x: TF.pad(x, widths, mode, value),
        [rng.standard_normal(shape)],
        dtype=dtype,
        rng=rng,
        xp=xp,
    )


# --------------------------------------------------------------------------- convolution
def _conv_case(name, N, C, H, W, F_out, KH, KW, bias=True, layout=None, **kw) -> Case:
    groups = kw.get("groups", 1)
    shapes = [(N, C, H, W), (F_out, C // groups, KH, KW)] + ([(F_out,)] if bias else [])

    def make(rng):
        xs = [rng.standard_normal(s) for s in shapes]
        if layout == "channel-major":
            xs[0] = channel_major(xs[0])
        return xs, []

    return Case(
        f"{name}-x{shapes[0]}-w{shapes[1]}-{kw}".replace(" ", ""),
        lambda x, w, b=None: F.conv2d(x, w, b, **kw),
        lambda x, w, b=None: TF.conv2d(x, w, b, **kw),
        make,
    )


def _random_conv_cases(count: int, seed: int) -> list[Case]:
    """Seeded sweep: groups, non-square kernels, stride up to 4 (often > kernel), padding up
    to the kernel size, dilation up to 3, odd sizes, batch 1..3, pair arguments."""
    r = np.random.default_rng(seed)
    out = []
    for i in range(count):
        G = int(r.choice([1, 1, 2, 3]))
        C, F_out = G * int(r.integers(1, 4)), G * int(r.integers(1, 4))
        KH, KW = (int(k) for k in r.integers(1, 6, 2))
        SH, SW = (int(s) for s in r.integers(1, 5, 2))
        DH, DW = (int(d) for d in r.integers(1, 4, 2))
        PH, PW = int(r.integers(0, KH // 2 + 2)), int(r.integers(0, KW // 2 + 2))
        H = max(1, DH * (KH - 1) + 1 - 2 * PH) + int(r.integers(0, 7))
        W = max(1, DW * (KW - 1) + 1 - 2 * PW) + int(r.integers(0, 7))
        out.append(
            _conv_case(
                f"sweep{i}",
                int(r.integers(1, 4)),
                C,
                H,
                W,
                F_out,
                KH,
                KW,
                bias=bool(r.random() < 0.7),
                layout="channel-major" if i % 3 == 0 else None,
                stride=(SH, SW),
                padding=(PH, PW),
                dilation=(DH, DW),
                groups=G,
            )
        )
    return out


CONV_CASES = [
    _conv_case("basic", 2, 3, 7, 7, 4, 3, 3),
    _conv_case("batch1-nonsquare", 1, 3, 9, 6, 5, 3, 2, stride=(2, 1), padding=(1, 0)),
    _conv_case("1x1", 2, 4, 5, 3, 6, 1, 1),
    _conv_case("1x1-stride2", 1, 3, 6, 7, 2, 1, 1, stride=2),
    _conv_case("stride>kernel", 2, 2, 11, 9, 3, 2, 2, stride=3),
    _conv_case("stride>kernel-padded", 1, 2, 8, 8, 2, 3, 3, stride=5, padding=1),
    _conv_case("pad-half-kernel", 2, 2, 5, 5, 3, 5, 5, padding=2),
    _conv_case("pad-full-kernel", 1, 2, 2, 3, 3, 3, 3, padding=3),
    _conv_case("kernel-equals-input", 2, 3, 4, 5, 2, 4, 5),
    _conv_case("dilation", 2, 2, 9, 9, 3, 3, 3, dilation=2),
    _conv_case("dilation-pair", 1, 2, 10, 8, 2, 3, 2, dilation=(3, 1), padding=(2, 1), stride=(1, 2)),
    _conv_case("groups2", 2, 4, 6, 6, 6, 3, 3, groups=2),
    _conv_case("groups3-strided", 1, 6, 7, 8, 3, 2, 3, groups=3, stride=2, padding=1),
    _conv_case("depthwise", 2, 4, 6, 7, 4, 3, 3, groups=4, padding=1),
    _conv_case("depthwise-multiplier2", 1, 3, 5, 5, 6, 3, 3, groups=3),
    _conv_case("depthwise-nobias", 2, 5, 6, 6, 5, 3, 3, bias=False, groups=5, stride=2),
    _conv_case("no-bias", 2, 3, 5, 6, 2, 2, 3, bias=False),
    _conv_case("same-odd", 2, 3, 6, 5, 2, 3, 3, padding="same"),
    _conv_case("same-even", 1, 2, 5, 6, 3, 4, 2, padding="same"),  # the extra row/column goes last
    _conv_case("same-dilated", 2, 2, 7, 6, 2, 3, 2, padding="same", dilation=(2, 3)),
    _conv_case("same-1x1", 1, 2, 3, 3, 2, 1, 1, padding="same"),
    _conv_case("valid", 2, 3, 6, 7, 2, 3, 2, padding="valid"),
    _conv_case("valid-strided", 1, 2, 9, 9, 2, 3, 3, padding="valid", stride=2),
    _conv_case("channel-major-input", 3, 2, 5, 5, 4, 3, 3, layout="channel-major", padding=1),
    _conv_case("1x1-image", 2, 3, 1, 1, 4, 1, 1),
    _conv_case("single-row", 2, 2, 1, 9, 3, 1, 3, stride=(1, 2)),
] + _random_conv_cases(80, seed=20240)


@cases(CONV_CASES)
@dtypes()
def test_conv2d_matches_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)


def test_conv2d_and_conv_transpose2d_take_unbatched_input_like_torch(rng, xp):
    x, w, b = rng.standard_normal((3, 6, 5)), rng.standard_normal((2, 3, 3, 3)), rng.standard_normal(2)
    check_op(
        lambda x, w, b: F.conv2d(x, w, b, padding=1),
        lambda x, w, b: TF.conv2d(x, w, b, padding=1),
        [x, w, b],
        dtype=np.float64,
        rng=rng,
        xp=xp,
    )
    w = rng.standard_normal((3, 2, 3, 3))
    check_op(
        lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2),
        lambda x, w, b: TF.conv_transpose2d(x, w, b, stride=2),
        [x, w, b],
        dtype=np.float64,
        rng=rng,
        xp=xp,
    )


def _conv_t_case(name, N, Cin, H, W, Cout, KH, KW, bias=True, **kw) -> Case:
    groups = kw.get("groups", 1)
    shapes = [(N, Cin, H, W), (Cin, Cout // groups, KH, KW)] + ([(Cout,)] if bias else [])
    return Case(
        f"{name}-x{shapes[0]}-w{shapes[1]}-{kw}".replace(" ", ""),
        lambda x, w, b=None: F.conv_transpose2d(x, w, b, **kw),
        lambda x, w, b=None: TF.conv_transpose2d(x, w, b, **kw),
        lambda rng: ([rng.standard_normal(s) for s in shapes], []),
    )


def _random_conv_t_cases(count: int, seed: int) -> list[Case]:
    """Seeded sweep over conv_transpose2d: stride, padding, output_padding, dilation, groups."""
    r = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        G = int(r.choice([1, 1, 2, 3]))
        Cin, Cout = G * int(r.integers(1, 3)), G * int(r.integers(1, 4))
        K, S, D = r.integers(1, 5, 2), r.integers(1, 4, 2), r.integers(1, 3, 2)
        P = [int(r.integers(0, d * (k - 1) + 1)) for k, d in zip(K, D, strict=True)]
        OP = [int(r.integers(0, max(s, d))) for s, d in zip(S, D, strict=True)]
        H, W = (int(v) for v in r.integers(1, 6, 2))
        sizes = [
            (n - 1) * s - 2 * p + d * (k - 1) + op + 1
            for n, s, p, d, k, op in zip((H, W), S, P, D, K, OP, strict=True)
        ]
        if min(sizes) <= 0:
            continue
        out.append(
            _conv_t_case(
                f"sweep{len(out)}",
                int(r.integers(1, 3)),
                Cin,
                H,
                W,
                Cout,
                int(K[0]),
                int(K[1]),
                bias=bool(r.random() < 0.7),
                stride=tuple(int(s) for s in S),
                padding=tuple(P),
                output_padding=tuple(OP),
                dilation=tuple(int(d) for d in D),
                groups=G,
            )
        )
    return out


CONV_T_CASES = [
    _conv_t_case("basic", 2, 3, 4, 4, 2, 3, 3),
    _conv_t_case("stride2", 1, 2, 3, 5, 3, 3, 3, stride=2),
    _conv_t_case("stride2-pad1-outpad1", 2, 2, 4, 3, 2, 3, 3, stride=2, padding=1, output_padding=1),
    _conv_t_case("nonsquare", 1, 3, 3, 5, 2, 2, 4, stride=(2, 3), padding=(0, 1), output_padding=(1, 2)),
    _conv_t_case("dilation", 2, 2, 4, 4, 3, 3, 2, dilation=2, padding=1),
    _conv_t_case("dilation-outpad", 1, 2, 3, 3, 2, 3, 3, dilation=3, output_padding=2),  # OP < dilation
    _conv_t_case("groups", 2, 4, 3, 4, 6, 3, 3, groups=2, stride=2),
    _conv_t_case("depthwise", 1, 3, 4, 4, 3, 3, 3, groups=3, padding=1),
    _conv_t_case("1x1", 2, 4, 3, 3, 2, 1, 1),
    _conv_t_case("1x1-stride3", 1, 2, 2, 3, 2, 1, 1, stride=3, output_padding=2),
    _conv_t_case("stride>kernel", 1, 2, 3, 3, 2, 2, 2, stride=3),
    _conv_t_case("1x1-image", 2, 2, 1, 1, 3, 3, 3),
    _conv_t_case("no-bias", 2, 2, 3, 3, 2, 2, 2, bias=False, stride=2),
] + _random_conv_t_cases(50, seed=777)


@cases(CONV_T_CASES)
@dtypes()
def test_conv_transpose2d_matches_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)


# --------------------------------------------------------------------------- pooling
def _pool_case(name, cn, th, shape, gen=None, layout=None) -> Case:
    gen = gen or normal

    def make(rng):
        x = gen(*shape)(rng)
        return [channel_major(x) if layout == "channel-major" else x], []

    return Case(f"{name}-{shape}".replace(" ", ""), cn, th, make)


def _max_pool(name, shape, gen=None, layout=None, **kw) -> Case:
    return _pool_case(
        f"{name}-{kw}", lambda x: F.max_pool2d(x, **kw), lambda x: TF.max_pool2d(x, **kw), shape, gen, layout
    )


def _avg_pool(name, shape, gen=None, layout=None, **kw) -> Case:
    return _pool_case(
        f"{name}-{kw}", lambda x: F.avg_pool2d(x, **kw), lambda x: TF.avg_pool2d(x, **kw), shape, gen, layout
    )


def _every_window_sees_input(size, k, s, p, d, ceil_mode) -> bool:
    """False when a dilated window lies wholly in the padding (its taps skip the input).

    PyTorch's max_pool2d returns -inf there and its backward then writes through an
    invalid index (heap corruption, the process aborts), so the sweep avoids that geometry.
    """
    room = size + 2 * p - d * (k - 1) - 1
    out = (-(-room // s) if ceil_mode else room // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return all(any(0 <= i * s - p + j * d < size for j in range(k)) for i in range(out))


def _random_pool_geometry(r, dilation: bool):
    while True:
        K = [int(k) for k in r.integers(1, 5, 2)]
        S = [int(s) for s in r.integers(1, 6, 2)]  # often > kernel
        S = S if r.random() < 0.8 else None  # None: stride = kernel
        P = [int(r.integers(0, k // 2 + 1)) for k in K]  # PyTorch allows up to half the kernel
        D = [int(d) for d in r.integers(1, 4, 2)] if dilation else [1, 1]
        HW = [
            max(1, d * (k - 1) + 1 - 2 * p) + int(r.integers(0, 7)) for k, p, d in zip(K, P, D, strict=True)
        ]
        ceil_mode = bool(r.random() < 0.5)
        if all(_every_window_sees_input(*g, ceil_mode) for g in zip(HW, K, S or K, P, D, strict=True)):
            break
    kw = dict(kernel_size=tuple(K), stride=S and tuple(S), padding=tuple(P), ceil_mode=ceil_mode)
    if dilation:
        kw["dilation"] = tuple(D)
    return (int(r.integers(1, 4)), int(r.integers(1, 4)), *HW), kw


def _random_max_pool_cases(count, seed):
    r = np.random.default_rng(seed)
    out = []
    for i in range(count):
        shape, kw = _random_pool_geometry(r, dilation=True)
        gen = integers if i % 2 else None  # half with ties everywhere
        out.append(_max_pool(f"sweep{i}", shape, gen, "channel-major" if i % 3 == 0 else None, **kw))
    return out


def _random_avg_pool_cases(count, seed):
    r = np.random.default_rng(seed)
    out = []
    for i in range(count):
        shape, kw = _random_pool_geometry(r, dilation=False)
        kw["count_include_pad"] = bool(r.random() < 0.5)
        if r.random() < 0.2:
            kw["divisor_override"] = int(r.integers(1, 10))
        out.append(_avg_pool(f"sweep{i}", shape, layout="channel-major" if i % 3 == 0 else None, **kw))
    return out


MAX_POOL_CASES = [
    _max_pool("2x2", (2, 3, 6, 6), kernel_size=2),
    _max_pool("odd-input", (1, 2, 7, 5), kernel_size=2),
    _max_pool("3x3s2", (2, 2, 7, 7), kernel_size=3, stride=2),
    _max_pool("3x3s2p1", (2, 2, 8, 9), kernel_size=3, stride=2, padding=1),
    _max_pool("nonsquare", (1, 3, 9, 7), kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)),
    _max_pool("1x1", (2, 2, 4, 5), kernel_size=1),
    _max_pool("1x1-stride2", (2, 2, 5, 5), kernel_size=1, stride=2),
    _max_pool("stride>kernel", (2, 2, 10, 9), kernel_size=2, stride=3),
    _max_pool("stride>kernel-ceil", (1, 2, 10, 10), kernel_size=2, stride=4, ceil_mode=True),
    _max_pool("overlapping", (2, 2, 6, 6), kernel_size=3, stride=1),
    _max_pool("dilation", (2, 2, 9, 9), kernel_size=3, dilation=2),
    _max_pool("dilation-pad", (1, 2, 8, 7), kernel_size=3, stride=2, padding=1, dilation=(2, 3)),
    _max_pool("global", (2, 3, 4, 5), kernel_size=(4, 5)),
    _max_pool("global-300-taps", (2, 2, 15, 20), kernel_size=(15, 20)),  # tap index past uint8
    _max_pool("300-taps-ties", (1, 2, 16, 21), integers, kernel_size=(15, 20), stride=1),
    # ceil_mode: the last window hangs past the input ...
    _max_pool("ceil", (1, 2, 5, 5), kernel_size=2, ceil_mode=True),
    _max_pool("ceil-3x3s2", (2, 2, 6, 8), kernel_size=3, stride=2, ceil_mode=True),
    # ... but a window that would start inside the right padding is dropped
    _max_pool("ceil-last-window-in-pad", (1, 1, 5, 5), kernel_size=2, stride=2, padding=1, ceil_mode=True),
    _max_pool("ceil-reduce-by-one", (1, 1, 4, 4), kernel_size=3, stride=2, padding=1, ceil_mode=True),
    _max_pool(
        "ceil-pad-dilated", (1, 2, 6, 7), kernel_size=2, stride=3, padding=1, dilation=2, ceil_mode=True
    ),
    # padding is -inf, never 0: all-negative inputs must not pick the padding
    _max_pool(
        "negative-padded",
        (2, 2, 5, 5),
        lambda *s: lambda rng: -rng.uniform(1, 2, s),
        kernel_size=3,
        stride=2,
        padding=1,
    ),
    # ties: the gradient goes to the FIRST maximum of each window (row-major)
    _max_pool("ties-zeros", (2, 2, 6, 6), lambda *s: lambda rng: np.zeros(s), kernel_size=2),
    _max_pool(
        "ties-zeros-overlap", (1, 2, 6, 5), lambda *s: lambda rng: np.zeros(s), kernel_size=3, stride=1
    ),
    _max_pool(
        "ties-zeros-padded", (1, 1, 5, 5), lambda *s: lambda rng: np.zeros(s), kernel_size=3, padding=1
    ),
    _max_pool("ties-integers", (2, 3, 8, 8), integers, kernel_size=2),
    _max_pool("ties-integers-overlap", (2, 2, 7, 7), integers, kernel_size=3, stride=1, padding=1),
    _max_pool(
        "ties-binary-overlap",
        (1, 2, 9, 6),
        lambda *s: integers(*s, low=0, high=2),
        kernel_size=(3, 2),
        stride=(2, 1),
        ceil_mode=True,
    ),
    _max_pool("ties-dilated", (1, 2, 9, 9), integers, kernel_size=3, stride=2, dilation=2, padding=1),
    _max_pool("channel-major", (2, 3, 6, 6), layout="channel-major", kernel_size=2),
] + _random_max_pool_cases(80, seed=31)


@cases(MAX_POOL_CASES)
@dtypes()
def test_max_pool2d_matches_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)


AVG_POOL_CASES = [
    _avg_pool("2x2", (2, 3, 6, 6), kernel_size=2),
    _avg_pool("odd-input", (1, 2, 7, 5), kernel_size=2),
    _avg_pool("3x3s2p1", (2, 2, 7, 8), kernel_size=3, stride=2, padding=1),
    _avg_pool(
        "3x3s2p1-exclude-pad", (2, 2, 7, 8), kernel_size=3, stride=2, padding=1, count_include_pad=False
    ),
    _avg_pool("nonsquare", (1, 3, 9, 7), kernel_size=(3, 2), stride=(2, 1), padding=(1, 1)),
    _avg_pool(
        "nonsquare-exclude-pad",
        (1, 3, 9, 7),
        kernel_size=(3, 2),
        stride=(2, 1),
        padding=(1, 1),
        count_include_pad=False,
    ),
    _avg_pool("1x1", (2, 2, 4, 5), kernel_size=1),
    _avg_pool("stride>kernel", (2, 2, 10, 9), kernel_size=2, stride=3),
    _avg_pool("overlapping", (2, 2, 6, 6), kernel_size=3, stride=1),
    _avg_pool("global", (2, 3, 4, 5), kernel_size=(4, 5)),
    _avg_pool("ceil", (1, 2, 5, 5), kernel_size=2, ceil_mode=True),
    _avg_pool("ceil-exclude-pad", (1, 2, 5, 5), kernel_size=2, ceil_mode=True, count_include_pad=False),
    # the divisor of a ceil_mode window hanging past the padding counts only up to the padding
    _avg_pool("ceil-pad-include", (1, 2, 6, 6), kernel_size=3, stride=2, padding=1, ceil_mode=True),
    _avg_pool(
        "ceil-pad-exclude",
        (1, 2, 6, 6),
        kernel_size=3,
        stride=2,
        padding=1,
        ceil_mode=True,
        count_include_pad=False,
    ),
    _avg_pool("ceil-last-window-in-pad", (1, 1, 5, 5), kernel_size=2, stride=2, padding=1, ceil_mode=True),
    _avg_pool(
        "ceil-last-window-in-pad-exclude",
        (1, 1, 5, 5),
        kernel_size=2,
        stride=2,
        padding=1,
        ceil_mode=True,
        count_include_pad=False,
    ),
    _avg_pool("ceil-reduce-by-one", (1, 1, 4, 4), kernel_size=3, stride=2, padding=1, ceil_mode=True),
    _avg_pool("divisor_override", (2, 2, 6, 7), kernel_size=3, stride=2, padding=1, divisor_override=2),
    _avg_pool("divisor_override-ceil", (1, 2, 5, 5), kernel_size=2, ceil_mode=True, divisor_override=7),
    _avg_pool(
        "divisor_override-exclude",
        (1, 2, 5, 6),
        kernel_size=3,
        padding=1,
        count_include_pad=False,
        divisor_override=3,
    ),
    _avg_pool("channel-major", (2, 3, 6, 6), layout="channel-major", kernel_size=2),
] + _random_avg_pool_cases(80, seed=41)


@cases(AVG_POOL_CASES)
@dtypes()
def test_avg_pool2d_matches_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)


def _sum_pool_cases():
    """sum_pool2d is avg_pool2d with divisor 1 (and zero padding counted as zeros)."""
    out = []
    for shape, kw in [
        ((2, 3, 6, 6), dict(kernel_size=2)),
        ((1, 2, 7, 5), dict(kernel_size=3, stride=2, padding=1)),
        ((2, 2, 7, 8), dict(kernel_size=(3, 2), stride=(1, 3), padding=(1, 0))),
        ((1, 2, 5, 5), dict(kernel_size=2, ceil_mode=True)),
        ((1, 1, 5, 5), dict(kernel_size=2, stride=2, padding=1, ceil_mode=True)),
        ((2, 1, 4, 4), dict(kernel_size=1, stride=3)),
    ]:
        out.append(
            _pool_case(
                f"sum_pool2d-{kw}",
                lambda x, kw=kw: F.sum_pool2d(x, **kw),
                lambda x, kw=kw: TF.avg_pool2d(x, **kw, divisor_override=1),
                shape,
            )
        )
    return out


def _lp_pool_cases():
    """lp_pool2d = (sum x**p)**(1/p) per window. Inputs are positive for odd p: PyTorch's root
    of a negative window sum is NaN, where cnnkit returns sign(s) |s|**(1/p)."""
    out = []
    for p, shape, kw, gen in [
        (2, (2, 3, 6, 6), dict(kernel_size=2), normal),
        (2, (1, 2, 7, 5), dict(kernel_size=3, stride=2), normal),
        (3, (2, 2, 6, 7), dict(kernel_size=(2, 3), stride=(2, 1)), positive),
        (1, (2, 2, 6, 6), dict(kernel_size=3, stride=1), normal),
        (1.5, (1, 2, 5, 6), dict(kernel_size=2, stride=(1, 2)), positive),
        (4, (1, 1, 8, 8), dict(kernel_size=(1, 3), stride=3), normal),
    ]:
        out.append(
            _pool_case(
                f"lp_pool2d(p={p})-{kw}",
                lambda x, p=p, kw=kw: F.lp_pool2d(x, p, **kw),
                lambda x, p=p, kw=kw: TF.lp_pool2d(x, p, **kw),
                shape,
                gen,
            )
        )
    # p = inf is max pooling of |x|
    out.append(
        _pool_case(
            "lp_pool2d(p=inf)",
            lambda x: F.lp_pool2d(x, float("inf"), 2),
            lambda x: TF.lp_pool2d(x, float("inf"), 2),
            (2, 2, 4, 6),
            away_from_zero,
        )
    )
    # a window whose power sum is 0: PyTorch documents the gradient as 0 there
    out.append(
        _pool_case(
            "lp_pool2d(p=2)-zero-window",
            lambda x: F.lp_pool2d(x, 2, 2),
            lambda x: TF.lp_pool2d(x, 2, 2),
            (1, 2, 4, 4),
            lambda *s: lambda rng: rng.standard_normal(s) * (np.arange(s[-1]) < 2),
        )
    )
    # ceil_mode: PyTorch computes avg_pool2d(x**p) * KH*KW, so a window clipped at the border
    # comes out scaled by area / clipped area; cnnkit does the same
    for p, shape, kw, gen in [
        (2, (1, 2, 5, 5), dict(kernel_size=2, ceil_mode=True), normal),
        (3, (2, 1, 7, 6), dict(kernel_size=3, stride=2, ceil_mode=True), positive),
        (1, (1, 2, 5, 7), dict(kernel_size=(2, 3), stride=2, ceil_mode=True), normal),
    ]:
        out.append(
            _pool_case(
                f"lp_pool2d(p={p})-{kw}",
                lambda x, p=p, kw=kw: F.lp_pool2d(x, p, **kw),
                lambda x, p=p, kw=kw: TF.lp_pool2d(x, p, **kw),
                shape,
                gen,
            )
        )
    return out


def _adaptive_cases():
    out = []
    for shape, size in [
        ((2, 3, 6, 6), 1),
        ((2, 3, 6, 6), (1, 1)),
        ((2, 3, 6, 6), 2),
        ((2, 3, 6, 6), 3),
        ((1, 2, 7, 5), (3, 2)),
        ((2, 2, 10, 7), (4, 3)),
        ((1, 2, 5, 5), 4),
        ((1, 2, 3, 4), (5, 7)),
        ((2, 1, 9, 8), (None, 3)),
        ((2, 1, 9, 8), (4, None)),
        ((1, 3, 1, 1), 2),
        ((3, 2, 11, 13), (5, 6)),
    ]:
        out.append(
            _pool_case(
                f"adaptive_avg_pool2d({size})",
                lambda x, s=size: F.adaptive_avg_pool2d(x, s),
                lambda x, s=size: TF.adaptive_avg_pool2d(x, s),
                shape,
            )
        )
        out.append(
            _pool_case(
                f"adaptive_max_pool2d({size})",
                lambda x, s=size: F.adaptive_max_pool2d(x, s),
                lambda x, s=size: TF.adaptive_max_pool2d(x, s),
                shape,
            )
        )
        # ties: the first maximum of each (possibly overlapping) window takes the gradient
        out.append(
            _pool_case(
                f"adaptive_max_pool2d({size})-ties",
                lambda x, s=size: F.adaptive_max_pool2d(x, s),
                lambda x, s=size: TF.adaptive_max_pool2d(x, s),
                shape,
                integers,
            )
        )
    out.append(
        _pool_case(
            "adaptive_max_pool2d-zeros",
            lambda x: F.adaptive_max_pool2d(x, (3, 2)),
            lambda x: TF.adaptive_max_pool2d(x, (3, 2)),
            (2, 2, 7, 5),
            lambda *s: lambda rng: np.zeros(s),
        )
    )
    out.append(
        _pool_case(
            "adaptive_avg_pool2d-channel-major",
            lambda x: F.adaptive_avg_pool2d(x, (2, 3)),
            lambda x: TF.adaptive_avg_pool2d(x, (2, 3)),
            (2, 3, 5, 7),
            layout="channel-major",
        )
    )
    out.append(
        _pool_case(
            "adaptive_max_pool2d-channel-major",
            lambda x: F.adaptive_max_pool2d(x, (2, 3)),
            lambda x: TF.adaptive_max_pool2d(x, (2, 3)),
            (2, 3, 5, 7),
            layout="channel-major",
        )
    )
    return out


OTHER_POOL_CASES = (
    _sum_pool_cases()
    + _lp_pool_cases()
    + _adaptive_cases()
    + [
        _pool_case(
            "max_pool2d-unbatched", lambda x: F.max_pool2d(x, 2), lambda x: TF.max_pool2d(x, 2), (3, 6, 5)
        ),
        _pool_case(
            "avg_pool2d-unbatched",
            lambda x: F.avg_pool2d(x, 3, 2, 1),
            lambda x: TF.avg_pool2d(x, 3, 2, 1),
            (2, 6, 5),
        ),
        _pool_case(
            "adaptive_max_pool2d-unbatched",
            lambda x: F.adaptive_max_pool2d(x, (2, 3)),
            lambda x: TF.adaptive_max_pool2d(x, (2, 3)),
            (2, 5, 5),
        ),
        _pool_case(
            "adaptive_avg_pool2d-unbatched",
            lambda x: F.adaptive_avg_pool2d(x, 2),
            lambda x: TF.adaptive_avg_pool2d(x, 2),
            (2, 5, 5),
        ),
    ]
)


@cases(OTHER_POOL_CASES)
@dtypes()
def test_sum_lp_and_adaptive_pools_match_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)


# --------------------------------------------------------------------------- losses
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
def test_cross_entropy_class_targets_match_torch(
    shape, label_smoothing, ignore_index, weighted, reduction, dtype, rng, xp
):
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
@dtypes()
def test_cross_entropy_probability_targets_match_torch(
    shape, label_smoothing, weighted, reduction, dtype, rng, xp
):
    K = shape[1]
    x = rng.standard_normal(shape) * 3
    q = np.moveaxis(rng.dirichlet(np.ones(K), shape[:1] + shape[2:]), -1, 1)  # rows sum to 1 over K
    w = rng.uniform(0.2, 2.0, K) if weighted else None
    kw = dict(reduction=reduction, label_smoothing=label_smoothing)
    check_op(
        lambda x, q: F.cross_entropy(x, q, weight=w, **kw),
        lambda x, q: TF.cross_entropy(
            x, q, weight=None if w is None else torch.from_numpy(w).to(x.dtype), **kw
        ),
        [x],
        [q],
        dtype=dtype,
        rng=rng,
        xp=xp,
    )


def test_cross_entropy_large_logits_and_unbatched_match_torch(rng):
    x = rng.standard_normal((4, 5)) * 1000  # stability: log-sum-exp must not overflow
    t = rng.integers(0, 5, 4)
    for dtype in DTYPES:
        check_op(F.cross_entropy, TF.cross_entropy, [x], [t], dtype=dtype, rng=rng)
    check_op(
        F.cross_entropy, TF.cross_entropy, [rng.standard_normal(5)], [np.array(3)], dtype=np.float64, rng=rng
    )


@pytest.mark.parametrize("target_dtype", [np.uint8, np.int32, np.int64])
def test_cross_entropy_and_nll_loss_accept_narrow_integer_targets(target_dtype, rng, xp):
    """MNIST labels are uint8: cnnkit takes them as they are, PyTorch needs int64."""
    x, t = rng.standard_normal((2, 4, 3)), rng.integers(0, 4, (2, 3))
    for cn, th in [(F.cross_entropy, TF.cross_entropy), (F.nll_loss, TF.nll_loss)]:
        check_op(
            lambda x, t, f=cn: f(x, t.astype(target_dtype)), th, [x], [t], dtype=np.float32, rng=rng, xp=xp
        )


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_cross_entropy_with_every_target_ignored_is_nan_like_torch(rng):
    x, t = rng.standard_normal((3, 4)), np.full(3, -100)
    check_op(F.cross_entropy, TF.cross_entropy, [x], [t], dtype=np.float64, rng=rng, grad=False)
    assert np.isnan(F.cross_entropy(Tensor(x), t).item())


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
    check_op(
        lambda x, t: F.nll_loss(F.log_softmax(x, 1), t),
        TF.cross_entropy,
        [x],
        [t],
        dtype=dtype,
        rng=rng,
        xp=xp,
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4, 2)], ids=["1d", "2d", "4d"])
@dtypes()
def test_mse_loss_matches_torch(shape, reduction, dtype, rng, xp):
    check_op(
        lambda x, y: F.mse_loss(x, y, reduction),
        lambda x, y: TF.mse_loss(x, y, reduction=reduction),
        [rng.standard_normal(shape), rng.standard_normal(shape)],
        dtype=dtype,
        rng=rng,
        xp=xp,
    )


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


# --------------------------------------------------------------------------- batch norm
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine", ["weight-bias", "weight", "none"])
@pytest.mark.parametrize("shape", [(8, 3), (1, 4, 5, 3), (4, 2, 3, 3), (3, 5, 7), (2, 1, 1, 2)])
@dtypes()
def test_batch_norm_matches_torch_including_running_stats(shape, affine, training, dtype, rng, xp):
    C = shape[1]
    x = rng.standard_normal(shape) * 2 + 0.5
    mean0, var0 = rng.standard_normal(C).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype)
    cn_stats = [xp.asarray(mean0.copy()), xp.asarray(var0.copy())]
    th_stats = [torch.from_numpy(mean0.copy()), torch.from_numpy(var0.copy())]
    kw = dict(training=training, momentum=0.3, eps=1e-3)
    inputs = [x, rng.uniform(0.5, 2, C), rng.standard_normal(C)][
        : {"weight-bias": 3, "weight": 2, "none": 1}[affine]
    ]
    # In training the forward updates the running statistics: run it exactly once.
    check_op(
        lambda x, *wb: F.batch_norm(x, *cn_stats, *wb, **kw),
        lambda x, *wb: TF.batch_norm(x, *th_stats, *wb, **kw),
        inputs,
        dtype=dtype,
        rng=rng,
        xp=xp,
        check_no_grad=not training,
    )
    # running_var is updated with the unbiased batch variance, as PyTorch does
    assert_close(as_numpy(cn_stats[0]), th_stats[0].numpy(), dtype, "running_mean")
    assert_close(as_numpy(cn_stats[1]), th_stats[1].numpy(), dtype, "running_var")
    if not training:
        np.testing.assert_array_equal(as_numpy(cn_stats[0]), mean0)
        np.testing.assert_array_equal(as_numpy(cn_stats[1]), var0)


@dtypes()
def test_batch_norm_running_stats_over_several_steps_match_torch(dtype, rng):
    C = 3
    cn_m, cn_v = np.zeros(C, dtype), np.ones(C, dtype)
    th_m, th_v = (
        torch.zeros(C, dtype=TORCH_DTYPE[np.dtype(dtype)]),
        torch.ones(C, dtype=TORCH_DTYPE[np.dtype(dtype)]),
    )
    for step in range(4):
        x = (rng.standard_normal((5, C, 2, 3)) * (step + 1) + step).astype(dtype)
        F.batch_norm(Tensor(x), cn_m, cn_v, training=True)
        TF.batch_norm(torch.from_numpy(x), th_m, th_v, training=True)
    assert_close(cn_m, th_m.numpy(), dtype, "running_mean")
    assert_close(cn_v, th_v.numpy(), dtype, "running_var")


@dtypes()
def test_batch_norm_training_without_running_stats_matches_torch(dtype, rng, xp):
    x, w, b = rng.standard_normal((4, 3, 2, 2)), rng.uniform(0.5, 2, 3), rng.standard_normal(3)
    check_op(
        lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
        lambda x, w, b: TF.batch_norm(x, None, None, w, b, training=True),
        [x, w, b],
        dtype=dtype,
        rng=rng,
        xp=xp,
    )


# --------------------------------------------------------------------------- dropout
@dtypes()
def test_dropout_is_identity_with_p0_and_in_eval(dtype, rng):
    x = rng.standard_normal((4, 5)).astype(dtype)
    for kw in [dict(p=0.0, training=True), dict(p=0.5, training=False), dict(p=1.0, training=False)]:
        check_op(
            lambda x, kw=kw: F.dropout(x, generator=np.random.default_rng(0), **kw),
            lambda x, kw=kw: TF.dropout(x, **kw),
            [x],
            dtype=dtype,
            rng=rng,
        )


@dtypes()
def test_dropout_with_p1_zeroes_everything(dtype, rng):
    x = rng.standard_normal((3, 4))
    check_op(
        lambda x: F.dropout(x, 1.0, generator=np.random.default_rng(0)),
        lambda x: TF.dropout(x, 1.0),
        [x],
        dtype=dtype,
        rng=rng,
    )


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
@dtypes()
def test_dropout_mask_statistics_scaling_and_gradient(p, dtype, rng):
    n = 200_000
    x = Tensor(rng.uniform(0.5, 1.5, (n // 500, 500)).astype(dtype), requires_grad=True)
    y = F.dropout(x, p, training=True, generator=np.random.default_rng(1))
    assert y.dtype == np.dtype(dtype)
    dropped = y.data == 0
    # the number of zeros is Binomial(n, p): within 5 standard deviations
    assert abs(dropped.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    # survivors are scaled by 1 / (1 - p)
    scale = dtype(1 / (1 - p))
    np.testing.assert_allclose(
        y.data[~dropped], x.data[~dropped] * scale, rtol=1e-6 if dtype == np.float32 else 1e-15
    )
    # the gradient is the same mask times the same scaling
    gy = rng.standard_normal(x.shape).astype(dtype)
    y.backward(gy)
    assert x.grad.dtype == np.dtype(dtype)
    np.testing.assert_allclose(
        x.grad, np.where(dropped, 0, gy * scale), rtol=1e-6 if dtype == np.float32 else 1e-15
    )


def test_dropout_mask_comes_from_the_generator(rng):
    x = Tensor(rng.standard_normal((50, 40)))
    a = F.dropout(x, 0.5, generator=np.random.default_rng(7))
    b = F.dropout(x, 0.5, generator=np.random.default_rng(7))
    c = F.dropout(x, 0.5, generator=np.random.default_rng(8))
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)
    cnnkit.manual_seed(3)
    d = F.dropout(x, 0.5)
    cnnkit.manual_seed(3)
    np.testing.assert_array_equal(d.data, F.dropout(x, 0.5).data)


# --------------------------------------------------------------------------- inputs needing no gradient
# Ops save only what backward reads for the inputs that require grad (a network's input
# image never does): every subset of inputs, the others as constants.
PARTIAL_GRAD_OPS = {
    "conv2d": (
        lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1, groups=2),
        lambda x, w, b: TF.conv2d(x, w, b, stride=2, padding=1, groups=2),
        [(2, 4, 7, 6), (6, 2, 3, 3), (6,)],
    ),
    "conv_transpose2d": (
        lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1),
        lambda x, w, b: TF.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1),
        [(2, 3, 4, 3), (3, 2, 3, 3), (2,)],
    ),
    "linear": (F.linear, TF.linear, [(4, 5), (3, 5), (3,)]),
    "batch_norm": (
        lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
        lambda x, w, b: TF.batch_norm(x, None, None, w, b, training=True),
        [(4, 3, 2, 2), (3,), (3,)],
    ),
    "mul": (lambda a, b, c: a * b * c, lambda a, b, c: a * b * c, [(2, 3), (3,), (2, 1)]),
    "div-pow": (lambda a, b, c: a / b**c, lambda a, b, c: a / b**c, [(2, 3), (3,), (2, 1)]),
    "matmul": (lambda a, b, c: a @ b @ c, lambda a, b, c: a @ b @ c, [(2, 3), (3, 4), (4,)]),
    "cat": (
        lambda a, b, c: F.cat([a, b, c], 1),
        lambda a, b, c: torch.cat([a, b, c], 1),
        [(2, 1), (2, 3), (2, 2)],
    ),
    "stack": (lambda a, b, c: F.stack([a, b, c], 0), lambda a, b, c: torch.stack([a, b, c], 0), [(2, 3)] * 3),
    "bce_with_logits": (
        lambda x, t, c: F.binary_cross_entropy_with_logits(x * c, t),
        lambda x, t, c: TF.binary_cross_entropy_with_logits(x * c, t),
        [(3, 4), (3, 4), (4,)],
    ),
    "mse_loss": (
        lambda x, t, c: F.mse_loss(x * c, t),
        lambda x, t, c: TF.mse_loss(x * c, t),
        [(3, 4), (3, 4), (4,)],
    ),
}
SUBSETS = [
    (True, False, False),
    (False, True, False),
    (False, False, True),
    (True, True, False),
    (False, True, True),
]


@pytest.mark.parametrize("subset", SUBSETS, ids=["".join("xo"[not f] for f in s) for s in SUBSETS])
@pytest.mark.parametrize("name", list(PARTIAL_GRAD_OPS))
def test_gradients_of_some_inputs_only_match_torch(name, subset, rng, xp):
    cn, th, shapes = PARTIAL_GRAD_OPS[name]
    inputs = [rng.uniform(0.5, 1.5, s) if name == "div-pow" else rng.standard_normal(s) for s in shapes]
    if name == "bce_with_logits":
        inputs[1] = rng.random(shapes[1])
    check_op(cn, th, inputs, dtype=np.float64, rng=rng, xp=xp, requires_grad=subset)


# --------------------------------------------------------------------------- convolution in chunks
@pytest.mark.parametrize(
    "kw",
    [dict(padding=1), dict(stride=2, groups=2), dict(dilation=2, padding="same")],
    ids=["pad1", "stride2-groups2", "dilated-same"],
)
@dtypes()
def test_conv2d_in_batch_chunks_matches_torch(kw, dtype, rng, xp, monkeypatch):
    """Big batches build the column matrix a few samples at a time: force that path."""
    import cnnkit.functional.conv as conv_module

    monkeypatch.setattr(conv_module, "IM2COL_LIMIT_BYTES", 4096)
    x, w, b = (
        rng.standard_normal((7, 4, 6, 5)),
        rng.standard_normal((6, 4 // kw.get("groups", 1), 3, 3)),
        rng.standard_normal(6),
    )
    check_op(
        lambda x, w, b: F.conv2d(x, w, b, **kw),
        lambda x, w, b: TF.conv2d(x, w, b, **kw),
        [x, w, b],
        dtype=dtype,
        rng=rng,
        xp=xp,
    )
    check_op(
        lambda x, w: F.conv2d(x, w, **kw),
        lambda x, w: TF.conv2d(x, w, **kw),
        [x, w],
        dtype=dtype,
        rng=rng,
        xp=xp,
        requires_grad=[False, True],
    )


# --------------------------------------------------------------------------- graphs of several ops
# Each graph is written once against a namespace `nn` (cnnkit.functional or
# torch.nn.functional): ops hand each other channel-major views, tensors feed several
# consumers (gradients add up), and the loss ends the graph.
def lenet_like(nn, x, w1, b1, w2, b2, w3, b3, w4, b4, t):
    y = nn.max_pool2d(nn.relu(nn.conv2d(x, w1, b1, padding=2)), 2)
    y = nn.max_pool2d(nn.relu(nn.conv2d(y, w2, b2)), 2, ceil_mode=True)
    y = nn.relu(nn.linear(y.reshape(y.shape[0], -1), w3, b3))
    return nn.cross_entropy(nn.linear(y, w4, b4), t)


def residual_block(nn, x, w1, w2, gamma, beta, w3, t):
    y = nn.conv2d(x, w1, padding=1)
    z = nn.batch_norm(nn.conv2d(nn.relu(y), w2, padding="same"), None, None, gamma, beta, training=True)
    z = nn.relu(z + y)  # y feeds two consumers
    z = nn.adaptive_avg_pool2d(z, 1)
    return nn.nll_loss(nn.log_softmax(nn.linear(z.reshape(z.shape[0], -1), w3), 1), t, reduction="sum")


def two_pools(nn, x, w, v):
    y = nn.conv2d(x, w, stride=(1, 2))
    a = nn.max_pool2d(y, 3, 2, 1) + nn.avg_pool2d(y, 3, 2, 1, count_include_pad=False)
    b = nn.adaptive_max_pool2d(y, (a.shape[2], a.shape[3]))
    return (nn.sigmoid(a) * nn.tanh(b) * v).sum()


def separable_and_cat(nn, x, dw, pw, target):
    y = nn.conv2d(x, dw, groups=x.shape[1], padding=1)
    y = nn.elu(nn.conv2d(y, pw))
    y = nn.leaky_relu(nn.softmax(nn.cat([y, x], 1) if nn is F else torch.cat([y, x], 1), 1), 0.1)
    return nn.mse_loss(y, target)


def upsample(nn, x, w1, w2, b2):
    y = nn.conv_transpose2d(x, w1, stride=2, padding=1, output_padding=1)
    y = nn.pad(y, (1, 2, 2, 1), mode="reflect")
    y = nn.conv2d(y, w2, b2, dilation=2)
    return nn.dropout(nn.tanh(y), p=0.3, training=False)


GRAPHS = {
    "lenet_like": (
        lenet_like,
        [(3, 1, 12, 12), (4, 1, 5, 5), (4,), (6, 4, 3, 3), (6,), (10, 24), (10,), (5, 10), (5,)],
        lambda rng: [rng.integers(0, 5, 3)],
    ),
    "residual_block": (
        residual_block,
        [(2, 3, 6, 5), (4, 3, 3, 3), (4, 4, 3, 3), (4,), (4,), (3, 4)],
        lambda rng: [rng.integers(0, 3, 2)],
    ),
    "two_pools": (two_pools, [(2, 2, 9, 10), (3, 2, 2, 3), (3, 4, 2)], lambda rng: []),
    "separable_and_cat": (
        separable_and_cat,
        [(2, 3, 5, 6), (3, 1, 3, 3), (4, 3, 1, 1)],
        lambda rng: [rng.random((2, 7, 5, 6))],
    ),
    "upsample": (upsample, [(2, 3, 3, 4), (3, 2, 3, 3), (4, 2, 2, 3), (4,)], lambda rng: []),
}


@pytest.mark.parametrize("name", list(GRAPHS))
@dtypes()
def test_graphs_of_several_ops_match_torch(name, dtype, rng, xp):
    graph, shapes, make_consts = GRAPHS[name]
    inputs = [rng.standard_normal(s) * 0.5 for s in shapes]
    check_op(
        lambda *a: graph(F, *a),
        lambda *a: graph(TF, *a),
        inputs,
        make_consts(rng),
        dtype=dtype,
        rng=rng,
        xp=xp,
    )
