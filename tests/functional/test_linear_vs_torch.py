"""F.linear against PyTorch (skipped without it)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import cnnkit.functional as F  # noqa: E402

from .inputs import normal  # noqa: E402
from .torch_compare import TF, Case, cases, dtypes, inputs_of  # noqa: E402


def _linear_cases() -> list[Case]:
    out = []
    for x_shape, out_f, bias in [((5, 4), 3, True), ((5, 4), 3, False), ((1, 1), 1, True), ((4,), 6, True),
                                 ((2, 3, 7), 5, True), ((2, 3, 1, 4), 2, False), ((0, 4), 3, True)]:
        tag = f"linear{x_shape}->{out_f}{'' if bias else '-nobias'}".replace(" ", "")
        d = x_shape[-1]
        gens = [normal(*x_shape), normal(out_f, d)] + ([normal(out_f)] if bias else [])
        out.append(Case(tag, F.linear, TF.linear, inputs_of(*gens)))
    return out


@cases(_linear_cases())
@dtypes()
def test_linear_matches_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("float64", 1e-12)])
@pytest.mark.parametrize("threads", [1, 2])
def test_linear_backward_with_products_side_by_side_matches_torch(dtype, tol, threads, rng):
    """LeNet-5's fc1 at batch 256: gx and gW large enough to run on two threads at once."""
    import numpy as np

    from cnnkit import Tensor, config

    x, w, b = rng.standard_normal((256, 400)), rng.standard_normal((120, 400)), rng.standard_normal(120)
    x, w, b = (a.astype(dtype) for a in (x, w, b))
    gy = rng.standard_normal((256, 120)).astype(dtype)
    ts = [Tensor(a.copy(), requires_grad=True) for a in (x, w, b)]
    with config.num_threads(threads):
        y = F.linear(*ts)
        y.backward(gy)
    T = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    Y = torch.nn.functional.linear(*T)
    Y.backward(torch.tensor(gy))
    np.testing.assert_allclose(y.data, Y.detach().numpy(), rtol=tol, atol=tol * 10)
    for t, T_ in zip(ts, T):
        np.testing.assert_allclose(t.grad, T_.grad.numpy(), rtol=tol, atol=tol * 10 * np.abs(T_.grad.numpy()).max())
