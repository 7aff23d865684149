"""The functional ops called the way PyTorch code calls them: by PyTorch's keyword names
(``input=``, ``weight=``, ...) and with the flags PyTorch's signatures have (``inplace``,
``return_indices=False``, ``dtype=``), compared with PyTorch (skipped without it).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cnnkit.functional as F  # noqa: E402
from cnnkit import Tensor  # noqa: E402

from .inputs import normal, positive  # noqa: E402
from .torch_compare import TF, Case, cases, dtypes, inputs_of  # noqa: E402


def _case(name, ours, theirs, *gens):
    return Case(name, ours, theirs, inputs_of(*gens))


KEYWORD_CASES = [
    _case("conv2d(input=, weight=, bias=)", lambda x, w, b: F.conv2d(input=x, weight=w, bias=b, padding=1, groups=1),
          lambda x, w, b: TF.conv2d(input=x, weight=w, bias=b, padding=1, groups=1),
          normal(2, 3, 5, 5), normal(4, 3, 3, 3), normal(4)),
    _case("conv_transpose2d(input=, weight=)", lambda x, w: F.conv_transpose2d(input=x, weight=w, stride=2),
          lambda x, w: TF.conv_transpose2d(input=x, weight=w, stride=2), normal(2, 3, 4, 4), normal(3, 2, 3, 3)),
    _case("linear(input=, weight=, bias=)", lambda x, w, b: F.linear(input=x, weight=w, bias=b),
          lambda x, w, b: TF.linear(input=x, weight=w, bias=b), normal(3, 4), normal(2, 4), normal(2)),
    _case("max_pool2d(input=, return_indices=False)",
          lambda x: F.max_pool2d(input=x, kernel_size=3, stride=2, padding=1, ceil_mode=True, return_indices=False),
          lambda x: TF.max_pool2d(input=x, kernel_size=3, stride=2, padding=1, ceil_mode=True, return_indices=False),
          normal(2, 3, 7, 6)),
    _case("max_pool2d positional return_indices=False",
          lambda x: F.max_pool2d(x, 2, 2, 0, 1, False, False), lambda x: TF.max_pool2d(x, 2, 2, 0, 1, False, False),
          normal(1, 2, 6, 6)),
    _case("avg_pool2d(input=)", lambda x: F.avg_pool2d(input=x, kernel_size=2, count_include_pad=False),
          lambda x: TF.avg_pool2d(input=x, kernel_size=2, count_include_pad=False), normal(2, 3, 6, 5)),
    _case("lp_pool2d(input=)", lambda x: F.lp_pool2d(input=x, norm_type=2, kernel_size=2),
          lambda x: TF.lp_pool2d(input=x, norm_type=2, kernel_size=2), positive(2, 3, 6, 6)),
    _case("adaptive_avg_pool2d(input=)", lambda x: F.adaptive_avg_pool2d(input=x, output_size=(2, 3)),
          lambda x: TF.adaptive_avg_pool2d(input=x, output_size=(2, 3)), normal(2, 3, 7, 7)),
    _case("adaptive_max_pool2d(input=, return_indices=False)",
          lambda x: F.adaptive_max_pool2d(input=x, output_size=2, return_indices=False),
          lambda x: TF.adaptive_max_pool2d(input=x, output_size=2, return_indices=False), normal(2, 3, 7, 7)),
    _case("relu(input=, inplace=False)", lambda x: F.relu(input=x, inplace=False),
          lambda x: TF.relu(input=x, inplace=False), normal(3, 4)),
    _case("leaky_relu(input=, negative_slope=, inplace=False)",
          lambda x: F.leaky_relu(input=x, negative_slope=0.2, inplace=False),
          lambda x: TF.leaky_relu(input=x, negative_slope=0.2, inplace=False), normal(3, 4)),
    _case("elu(input=, alpha=, inplace=False)", lambda x: F.elu(input=x, alpha=0.5, inplace=False),
          lambda x: TF.elu(input=x, alpha=0.5, inplace=False), normal(3, 4)),
    _case("sigmoid(input=)", lambda x: F.sigmoid(input=x), lambda x: TF.sigmoid(input=x), normal(3, 4)),
    _case("tanh(input=)", lambda x: F.tanh(input=x), lambda x: TF.tanh(input=x), normal(3, 4)),
    _case("softmax(input=, dim=)", lambda x: F.softmax(input=x, dim=0), lambda x: TF.softmax(input=x, dim=0),
          normal(3, 4)),
    _case("log_softmax(input=, dim=)", lambda x: F.log_softmax(input=x, dim=1),
          lambda x: TF.log_softmax(input=x, dim=1), normal(3, 4)),
    _case("pad(input=, pad=, mode=)", lambda x: F.pad(input=x, pad=(1, 2, 0, 1), mode="reflect"),
          lambda x: TF.pad(input=x, pad=(1, 2, 0, 1), mode="reflect"), normal(2, 3, 4, 5)),
    _case("dropout(input=, inplace=False)", lambda x: F.dropout(input=x, p=0.5, training=False, inplace=False),
          lambda x: TF.dropout(input=x, p=0.5, training=False, inplace=False), normal(3, 4)),
    _case("batch_norm(input=, ...)", lambda x, w, b: F.batch_norm(input=x, running_mean=None, running_var=None,
                                                                   weight=w, bias=b, training=True, eps=1e-3),
          lambda x, w, b: TF.batch_norm(input=x, running_mean=None, running_var=None, weight=w, bias=b,
                                        training=True, eps=1e-3), normal(4, 3, 2, 2), positive(3), normal(3)),
    # a bias without a weight: the weight is 1, as in PyTorch
    _case("batch_norm(bias only)", lambda x, b: F.batch_norm(x, None, None, None, b, training=True),
          lambda x, b: TF.batch_norm(x, None, None, None, b, training=True), normal(4, 3), normal(3)),
]


@cases(KEYWORD_CASES)
@dtypes()
def test_functional_ops_take_torchs_keywords(case, dtype, rng):
    case.run(dtype, rng)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_sum_and_mean_take_a_dtype_like_torch(reduction, rng):
    """dtype casts first: float32 in, float64 out, the gradient back in float32; integers can be averaged."""
    x = rng.standard_normal((3, 4)).astype(np.float32)
    ours, theirs = Tensor(x, requires_grad=True), torch.from_numpy(x).requires_grad_()
    y, t = getattr(ours, reduction)(1, dtype=np.float64), getattr(theirs, reduction)(1, dtype=torch.float64)
    assert y.dtype == np.float64 and t.dtype == torch.float64
    np.testing.assert_allclose(y.data, t.detach().numpy(), rtol=1e-12)
    g = rng.standard_normal(3)
    y.backward(g)
    t.backward(torch.from_numpy(g))
    assert ours.grad.dtype == np.float32
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-6)
    n = np.arange(6).reshape(2, 3)
    got = getattr(F, reduction)(Tensor(n), 0, dtype=np.float32)
    expected = getattr(torch, reduction)(torch.from_numpy(n), 0, dtype=torch.float32).numpy()
    assert got.dtype == expected.dtype
    np.testing.assert_allclose(got.data, expected)
