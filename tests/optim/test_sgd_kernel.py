"""SGD's compiled update (backend/kernels/optim.py) against torch.optim.SGD, bit for bit.

PyTorch's per-tensor SGD makes each ``add_(other, alpha=a)`` one fused multiply-add; the
kernel makes the same ones in the same order, so parameters and momentum buffers equal
PyTorch's exactly, float32 and float64, on any thread count. The NumPy update (kernels off)
rounds twice per term and stays within test_optim.py's tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import Tensor, config, optim
from cnnkit.backend import dispatch
from cnnkit.backend.kernels import AVAILABLE
from cnnkit.backend.kernels.optim import sgd_kernel_on, sgd_step

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not AVAILABLE, reason="numba is not installed")


@pytest.fixture(autouse=True)
def kernels_on():
    """Also under CNNKIT_KERNELS=0: these tests are about the kernel."""
    with config.kernels(True):
        yield

OPTIONS = [
    dict(lr=0.01, momentum=0.9),                      # the LeNet-5 benchmark's
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.8, nesterov=True),
    dict(lr=0.1, weight_decay=0.05),
    dict(lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True),
    dict(lr=0.02, momentum=0.5, dampening=0.1, weight_decay=0.01, maximize=True),
    dict(lr=0.1, weight_decay=0.05, maximize=True),
]
# LeNet-5's parameter shapes, odd sizes (a vector's tail), and a Fortran-ordered matrix
SHAPES = [(6, 1, 5, 5), (6,), (120, 400), (10,), (7, 13), (1,)]


def run(kwargs, dtype, shapes=SHAPES, steps=6, fortran=(), grads=None, seed=0):
    """Both optimizers over ``steps`` steps on the same gradients; returns (ours, theirs, optimizers)."""
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(dtype) for s in shapes]
    arrays = [np.asfortranarray(a) if k in fortran else a for k, a in enumerate(arrays)]
    ours = [Tensor(a.copy(order="K"), requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    opt = optim.SGD(ours, **kwargs)
    topt = torch.optim.SGD(theirs, foreach=False, **kwargs)
    for step in range(steps):
        for k, (p, tp) in enumerate(zip(ours, theirs, strict=True)):
            g = grads(step, k, p.data) if grads else rng.standard_normal(p.shape).astype(dtype)
            p.grad = np.empty_like(p.data)   # the parameter's layout (another one takes the NumPy update)
            p.grad[...] = g
            tp.grad = torch.from_numpy(np.array(g))
        opt.step()
        topt.step()
    return ours, theirs, opt, topt


def bits(a):
    """The array's values as unsigned integers of their size: signed zeros compare unequal."""
    a = np.asarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def assert_same_bits(ours, theirs, opt, topt):
    for p, tp in zip(ours, theirs, strict=True):
        assert p.data.dtype == tp.detach().numpy().dtype
        np.testing.assert_array_equal(bits(p.data), bits(tp.detach().numpy()))
        if p in opt.state:
            np.testing.assert_array_equal(bits(opt.state[p]["momentum_buffer"]),
                                          bits(topt.state[tp]["momentum_buffer"].numpy()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", OPTIONS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_sgd_equals_torch_bit_for_bit(kwargs, dtype):
    assert_same_bits(*run(kwargs, dtype, fortran=(4,)))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_a_parameter_split_over_threads_equals_torch_bit_for_bit(threads, monkeypatch):
    monkeypatch.setattr(dispatch, "PARALLEL_MIN_ELEMENTS", 1000)   # a 4,003-element parameter in 4 chunks
    with config.num_threads(threads):
        for dtype in (np.float32, np.float64):
            assert_same_bits(*run(dict(lr=0.03, momentum=0.9, weight_decay=0.01, nesterov=True), dtype,
                                  shapes=[(4003,), (3,)]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_gradients_propagate_as_in_torch(dtype):
    def grads(step, k, p):
        g = np.full(p.shape, 0.5, dtype)
        flat = g.reshape(-1)
        flat[:: 3] = [np.nan, np.inf, -np.inf, -0.0][step % 4]
        return g

    ours, theirs, opt, topt = run(dict(lr=0.1, momentum=0.9, weight_decay=0.01), dtype, steps=5, grads=grads)
    for p, tp in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(p.data, tp.detach().numpy())     # NaN where PyTorch has NaN


def test_the_numpy_update_runs_where_the_kernel_does_not_apply():
    w = np.ones((3, 4), np.float32)
    assert not sgd_step(w, np.ones((3, 4), np.float64), None, 0.1, 0.0, 1.0, 0.0, False, False, False)  # dtypes
    assert not sgd_step(w, np.ones((4, 3), np.float32).T, None, 0.1, 0.0, 1.0, 0.0, False, False, False)  # layouts
    assert not sgd_step(w, np.ones((3, 4), np.float32), np.ones((3, 4), np.float64), 0.1, 0.9, 1.0, 0.0, False,
                        False, False)
    assert not sgd_step(np.ones((3, 8), np.float32)[:, ::2], np.ones((3, 8), np.float32)[:, ::2], None, 0.1, 0.0,
                        1.0, 0.0, False, False, False)                                           # gaps
    assert not sgd_step(np.ones(3, np.float16), np.ones(3, np.float16), None, 0.1, 0.0, 1.0, 0.0, False, False,
                        False)
    with config.kernels(False):
        assert not sgd_step(w, np.ones((3, 4), np.float32), None, 0.1, 0.0, 1.0, 0.0, False, False, False)
    with pytest.MonkeyPatch.context() as mp:                             # the A/B switch
        mp.setattr(dispatch, "SGD_KERNEL", 0)
        assert not sgd_step(w, np.ones((3, 4), np.float32), None, 0.1, 0.0, 1.0, 0.0, False, False, False)
    assert not sgd_step(w, np.ones((3, 4), np.float32), None, 0.1, 0.0, 1.0, 0.0, False, False, False,
                        False)                                           # on: the caller's sgd_kernel_on()
    assert sgd_kernel_on()
    frozen = np.ones(3, np.float32)
    frozen.flags.writeable = False                                       # NumPy's update names the error
    assert not sgd_step(frozen, np.ones(3, np.float32), None, 0.1, 0.0, 1.0, 0.0, False, False, False)
    np.testing.assert_array_equal(w, 1.0)                                # nothing written
    assert sgd_step(w, np.ones((3, 4), np.float32), None, 0.5, 0.0, 1.0, 0.0, False, False, False)
    np.testing.assert_array_equal(w, 0.5)


def test_with_kernels_off_the_numpy_update_matches_torch_closely():
    """The reference path rounds twice per term: the last bits may differ."""
    kwargs = dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)
    with config.kernels(False):
        ours, theirs, _, _ = run(kwargs, np.float32)
    for p, tp in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-5, atol=1e-6)
