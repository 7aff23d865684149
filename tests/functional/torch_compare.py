"""``check_op``: one op case through cnnkit and through PyTorch, outputs and every gradient compared.

Imported only by the ``test_*_vs_torch.py`` modules, after their
``pytest.importorskip("torch")``: PyTorch is a test-only reference, and the modules that
use it are skipped, whole, where it is not installed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import cnnkit
from cnnkit import Tensor
from cnnkit.backend import as_numpy

TF = torch.nn.functional
DTYPES = [np.float32, np.float64]
TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def assert_close(actual, expected, dtype, what: str) -> None:
    """float32: rtol 1e-4, atol 1e-5. float64: rtol 1e-10, atol 1e-10 times the magnitude.

    NaNs must sit at the same places (NaN in, NaN out).
    """
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
    if any(flags) and th_out.requires_grad:
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


def unary(name, cn, th, gen) -> Case:
    return Case(name, cn, th, lambda rng: ([gen(rng)], []))


def inputs_of(*gens, consts=()):
    """make(rng) from input generators and constant generators."""
    return lambda rng: ([g(rng) for g in gens], [c(rng) for c in consts])


def same_error(cn_call: Callable, torch_call: Callable, cn_type, match: str) -> None:
    """Both raise: PyTorch (any exception) and cnnkit (``cn_type``, message matching ``match``)."""
    with pytest.raises(Exception):  # noqa: B017 - PyTorch's types vary (RuntimeError, IndexError, ...)
        torch_call()
    with pytest.raises(cn_type, match=match):
        cn_call()
