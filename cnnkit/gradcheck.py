"""Finite-difference gradient check (public: users test their own ops with it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .errors import GradcheckError
from .tensor import Tensor

__all__ = ["gradcheck"]


def gradcheck(
    fn: Callable[..., Tensor],
    inputs: Sequence,
    eps: float = 1e-6,
    atol: float = 1e-6,
    rtol: float = 1e-4,
    seed: int = 0,
) -> bool:
    """Compare ``backward()`` with float64 central differences for every input element.

    The scalar checked is ``sum(fn(*inputs) * v)`` for a fixed random ``v``, so every
    output element's gradient path is exercised.

    Args:
        fn: maps Tensors to one Tensor.
        inputs: arrays or Tensors; floating ones are converted to float64 and checked,
            others (integer targets) are passed through as constants.
        eps: finite-difference step.
        atol, rtol: an element fails when |analytic - numeric| > atol + rtol * |numeric|.
        seed: seed of the random projection ``v``.

    Returns:
        True when every element agrees.

    Raises:
        GradcheckError: naming the input, the worst element's index and both values.
    """
    arrays = [np.asarray(x.data if isinstance(x, Tensor) else x) for x in inputs]
    checked = [a.dtype.kind == "f" for a in arrays]
    arrays = [a.astype(np.float64) if c else a for a, c in zip(arrays, checked)]

    def run(values):
        return fn(*[Tensor(v, requires_grad=c) for v, c in zip(values, checked)])

    tensors = [Tensor(a.copy(), requires_grad=c) for a, c in zip(arrays, checked)]
    out = fn(*tensors)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck expects fn to return a Tensor, got {type(out).__name__}")
    v = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(v)

    def projected(values) -> float:
        return float((np.asarray(run(values).data, dtype=np.float64) * v).sum())

    for i, (t, c) in enumerate(zip(tensors, checked)):
        if not c:
            continue
        analytic = np.zeros_like(arrays[i]) if t.grad is None else np.asarray(t.grad, dtype=np.float64)
        numeric = np.empty_like(arrays[i])
        for idx in np.ndindex(*arrays[i].shape):
            values = [a.copy() for a in arrays]
            values[i][idx] += eps
            plus = projected(values)
            values[i][idx] -= 2 * eps
            minus = projected(values)
            numeric[idx] = (plus - minus) / (2 * eps)
        excess = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        if excess.size and excess.max() > 0:
            worst = np.unravel_index(np.argmax(excess), excess.shape)
            raise GradcheckError(
                f"gradcheck: input {i} (shape {arrays[i].shape}) element {tuple(int(j) for j in worst)}: "
                f"backward gives {analytic[worst]:.10g}, finite differences give {numeric[worst]:.10g} "
                f"(atol={atol}, rtol={rtol})"
            )
    return True
