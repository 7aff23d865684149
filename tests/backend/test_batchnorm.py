"""The compiled batch norm (``BatchNorm2dFusedOp``) against the NumPy reference and PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cnnkit.functional as F
from cnnkit import Tensor, config
from cnnkit.backend import dispatch, kernels
from cnnkit.functional.norm import BatchNorm2dFusedOp, BatchNormOp
from tests.backend.arrays import cnhw

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")

TOL = {np.float32: 2e-6, np.float64: 1e-13}



def run(x, gamma, beta, rm, rv, training, gy, kernels_on, needs=(True, True, True)):
    with config.kernels(kernels_on):
        rm, rv = (None if a is None else a.copy() for a in (rm, rv))
        xs = Tensor(x.copy(order="K"), requires_grad=needs[0])  # layout kept
        params = [Tensor(a.copy(), requires_grad=n) if a is not None else None for a, n in zip((gamma, beta), needs[1:])]
        y = F.batch_norm(xs, rm, rv, *params, training=training)
        op = type(y.creator) if y.creator is not None else None
        y.backward(gy)
        grads = [xs.grad] + [p.grad if p is not None else None for p in params]
        return op, y.data, grads, rm, rv


def close(a, b, dtype):
    scale = max(1.0, float(np.abs(b).max()))
    np.testing.assert_allclose(a, b, rtol=0, atol=TOL[dtype] * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("layout", ["nchw", "cnhw"])
@pytest.mark.parametrize("affine", [True, False])
def test_fused_batch_norm_matches_the_reference(dtype, training, layout, affine, rng):
    x = (rng.standard_normal((5, 3, 7, 6)) * 3 + 2).astype(dtype)
    x = cnhw(x) if layout == "cnhw" else x
    gamma = rng.standard_normal(3).astype(dtype) if affine else None
    beta = rng.standard_normal(3).astype(dtype) if affine else None
    rm, rv = rng.standard_normal(3).astype(dtype), rng.uniform(0.5, 2, 3).astype(dtype)
    gy = rng.standard_normal(x.shape).astype(dtype)
    fused = run(x, gamma, beta, rm, rv, training, gy, True)
    ref = run(x, gamma, beta, rm, rv, training, gy, False)
    assert fused[0] is BatchNorm2dFusedOp and ref[0] is BatchNormOp
    close(fused[1], ref[1], dtype)
    for a, b in zip(fused[2], ref[2]):
        assert (a is None) == (b is None)
        if a is not None:
            close(a, b, dtype)
    close(fused[3], ref[3], dtype)                              # running statistics
    close(fused[4], ref[4], dtype)


@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_norm_matches_pytorch(training, rng):
    x = rng.standard_normal((4, 5, 6, 7)) * 2 - 1
    gamma, beta = rng.standard_normal(5), rng.standard_normal(5)
    rm, rv = rng.standard_normal(5), rng.uniform(0.5, 2, 5)
    gy = rng.standard_normal(x.shape)
    op, y, grads, rm_out, rv_out = run(x, gamma, beta, rm, rv, training, gy, True)
    assert op is BatchNorm2dFusedOp
    X, G, B = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    ty = torch.nn.functional.batch_norm(X, trm, trv, G, B, training=training)
    ty.backward(torch.tensor(gy))
    for ours, theirs in zip([y, *grads, rm_out, rv_out], [ty, X.grad, G.grad, B.grad, trm, trv]):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, True), (False, True, False)])
def test_fused_batch_norm_computes_only_the_gradients_asked_for(needs, rng):
    x, gamma, beta = rng.standard_normal((3, 2, 4, 4)), rng.standard_normal(2), rng.standard_normal(2)
    gy = rng.standard_normal(x.shape)
    fused = run(x, gamma, beta, np.zeros(2), np.ones(2), True, gy, True, needs)
    ref = run(x, gamma, beta, np.zeros(2), np.ones(2), True, gy, False, needs)
    for a, b, need in zip(fused[2], ref[2], needs):
        assert (a is None) == (not need)
        if need:
            close(a, b, np.float64)


def test_batch_norm_dispatch():
    assert dispatch.batch_norm_algorithm(np, np.float32, 4) == "fused"
    assert dispatch.batch_norm_algorithm(np, np.float32, 2) == "reference"
    assert dispatch.batch_norm_algorithm(np, np.float16, 4) == "reference"
    with config.kernels(False):
        assert dispatch.batch_norm_algorithm(np, np.float32, 4) == "reference"


def test_fused_batch_norm_keeps_no_normalized_copy_for_backward(rng):
    """Backward recomputes x_hat from the input: the op saves x and (C,) statistics only."""
    x = Tensor(rng.standard_normal((2, 3, 4, 4)).astype(np.float32), requires_grad=True)
    y = F.batch_norm(x, np.zeros(3, np.float32), np.ones(3, np.float32), training=True)
    saved = [v for v in vars(y.creator).values() if isinstance(v, np.ndarray) and v.size >= x.size]
    assert len(saved) == 1 and saved[0] is x.data


@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_norm_adds_eps_in_the_input_dtype_as_the_reference(training, rng):
    """An eps read from a float32 file (ONNX's epsilon) and Python's 1e-5 round to the same
    float32 eps, so a model and its ONNX round trip give identical outputs."""
    x = rng.standard_normal((2, 8, 5, 5)).astype(np.float32)
    rm, rv = rng.standard_normal(8).astype(np.float32), rng.uniform(1e-6, 1e-4, 8).astype(np.float32)
    outs = []
    for eps in (1e-5, float(np.float32(1e-5))):
        op = BatchNorm2dFusedOp(rm.copy(), rv.copy(), training, 0.1, eps)
        outs.append(op(Tensor(x)).data)
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("params", ["both", "gamma", "none"])
@pytest.mark.parametrize("shape, layout, threads", [((3, 5, 7, 7), "nchw", 1), ((3, 5, 7, 7), "cnhw", 2),
                                                    ((2, 7, 1, 1), "nchw", 3), ((1, 4, 9, 6), "cnhw", 3),
                                                    ((5, 3, 4, 4), "cnhw", 3), ((7, 2, 3, 5), "cnhw", 1)])
def test_eval_batch_norm_constants_are_numpys_bit_for_bit(dtype, params, shape, layout, threads, rng, monkeypatch):
    """Eval mode's per-channel constants come from one compiled call: the same bits as the
    NumPy formulas (statistics rounded to x's dtype, float64 arithmetic, scale and shift
    rounded to x's dtype); y = x*scale + shift over every plane, in any layout and split."""
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    x = cnhw(x) if layout == "cnhw" else x
    C = shape[1]
    rm, rv = rng.standard_normal(C), rng.uniform(0.5, 2, C)            # float64 running statistics
    gamma = rng.standard_normal(C).astype(dtype) if params != "none" else None
    beta = rng.standard_normal(C).astype(dtype) if params == "both" else None
    eps = 1e-5
    monkeypatch.setattr(dispatch, "INFERENCE_MIN_ELEMENTS", 1)         # every plane its own piece
    with config.num_threads(threads):
        y, mean, inv_std = kernels.batchnorm.batch_norm_eval(x, rm, rv, gamma, beta, eps)
    m = rm.astype(dtype).astype(np.float64)
    s = 1 / np.sqrt(rv.astype(dtype).astype(np.float64) + float(np.dtype(dtype).type(eps)))
    k = s if gamma is None else gamma * s
    b = -m * k if beta is None else beta - m * k
    np.testing.assert_array_equal(mean, m)
    np.testing.assert_array_equal(inv_std, s)
    k, b = k.astype(dtype)[:, None, None], b.astype(dtype)[:, None, None]
    expected = x * k + b                                                # two roundings; the kernel's FMA one
    bound = 2 * np.finfo(dtype).eps * (np.abs(x * k) + np.abs(b))
    assert np.all(np.abs(y - expected) <= bound)
    assert y.strides == x.strides
