"""Pooling (max, average, sum, Lp, adaptive) against PyTorch: hand-picked geometries, seeded sweeps,
ties, NaNs and the Lp edge cases.

PyTorch is the reference (a test-only dependency): this module is skipped without it.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cnnkit.functional as F  # noqa: E402

from .inputs import away_from_zero, channel_major, integers, normal, positive, with_nans  # noqa: E402
from .torch_compare import TF, Case, cases, dtypes  # noqa: E402


def _pool_case(name, cn, th, shape, gen=None, layout=None) -> Case:
    gen = gen or normal

    def make(rng):
        x = gen(*shape)(rng)
        return [channel_major(x) if layout == "channel-major" else x], []

    return Case(f"{name}-{shape}".replace(" ", ""), cn, th, make)


def _max_pool(name, shape, gen=None, layout=None, **kw) -> Case:
    return _pool_case(f"{name}-{kw}", lambda x: F.max_pool2d(x, **kw), lambda x: TF.max_pool2d(x, **kw), shape, gen,
                      layout)


def _avg_pool(name, shape, gen=None, layout=None, **kw) -> Case:
    return _pool_case(f"{name}-{kw}", lambda x: F.avg_pool2d(x, **kw), lambda x: TF.avg_pool2d(x, **kw), shape, gen,
                      layout)


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
        HW = [max(1, d * (k - 1) + 1 - 2 * p) + int(r.integers(0, 7)) for k, p, d in zip(K, P, D, strict=True)]
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


def zeros(*shape):
    return lambda rng: np.zeros(shape)


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
    # one-element tuples stand for both dimensions, as in PyTorch
    _max_pool("one-element-tuples", (1, 2, 7, 6), kernel_size=(3,), stride=(2,), padding=(1,), dilation=(1,)),
    _max_pool("stride-empty-tuple", (1, 2, 6, 6), kernel_size=2, stride=()),
    # ceil_mode: the last window hangs past the input ...
    _max_pool("ceil", (1, 2, 5, 5), kernel_size=2, ceil_mode=True),
    _max_pool("ceil-3x3s2", (2, 2, 6, 8), kernel_size=3, stride=2, ceil_mode=True),
    # ... but a window that would start inside the right padding is dropped
    _max_pool("ceil-last-window-in-pad", (1, 1, 5, 5), kernel_size=2, stride=2, padding=1, ceil_mode=True),
    _max_pool("ceil-reduce-by-one", (1, 1, 4, 4), kernel_size=3, stride=2, padding=1, ceil_mode=True),
    _max_pool("ceil-pad-dilated", (1, 2, 6, 7), kernel_size=2, stride=3, padding=1, dilation=2, ceil_mode=True),
    # padding is -inf, never 0: all-negative inputs must not pick the padding
    _max_pool("negative-padded", (2, 2, 5, 5), lambda *s: lambda rng: -rng.uniform(1, 2, s), kernel_size=3,
              stride=2, padding=1),
    # ties: the gradient goes to the FIRST maximum of each window (row-major)
    _max_pool("ties-zeros", (2, 2, 6, 6), zeros, kernel_size=2),
    _max_pool("ties-zeros-overlap", (1, 2, 6, 5), zeros, kernel_size=3, stride=1),
    _max_pool("ties-zeros-padded", (1, 1, 5, 5), zeros, kernel_size=3, padding=1),
    _max_pool("ties-integers", (2, 3, 8, 8), integers, kernel_size=2),
    _max_pool("ties-integers-overlap", (2, 2, 7, 7), integers, kernel_size=3, stride=1, padding=1),
    _max_pool("ties-binary-overlap", (1, 2, 9, 6), lambda *s: integers(*s, low=0, high=2), kernel_size=(3, 2),
              stride=(2, 1), ceil_mode=True),
    _max_pool("ties-dilated", (1, 2, 9, 9), integers, kernel_size=3, stride=2, dilation=2, padding=1),
    _max_pool("channel-major", (2, 3, 6, 6), layout="channel-major", kernel_size=2),
    # a NaN is the maximum of its window and the last NaN takes the gradient, as in PyTorch
    _max_pool("nan-2x2", (2, 3, 6, 6), with_nans, kernel_size=2),
    _max_pool("nan-overlap-padded", (2, 2, 7, 6), with_nans, kernel_size=3, stride=1, padding=1),
    # 2x2/2 in vectors of 8 or 16 windows (kernels/pool.py): rows of several chunks, a masked
    # last chunk, odd last row and column, LeNet-5's first pooling
    _max_pool("2x2-wide-odd-nan", (1, 2, 7, 69), with_nans, kernel_size=2),
    _max_pool("2x2-wide-odd-ties", (2, 2, 9, 35), integers, kernel_size=2),
    _max_pool("2x2-lenet-ties", (2, 6, 28, 28), integers, kernel_size=2),
    _max_pool("empty-batch", (0, 2, 6, 6), kernel_size=2),
] + _random_max_pool_cases(80, seed=31)


@cases(MAX_POOL_CASES)
@dtypes()
def test_max_pool2d_matches_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)


@pytest.mark.parametrize("kernels", [True, False], ids=["fused", "reference"])
@pytest.mark.parametrize("pool", [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2, stride=2, padding=1),
                                  dict(kernel_size=3, stride=2, padding=1, dilation=2),
                                  dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)],
                         ids=lambda kw: str(kw).replace(" ", ""))
@dtypes()
def test_a_window_of_minus_infinity_sends_its_gradient_to_its_first_input_element_as_torch(pool, kernels, dtype,
                                                                                          rng):
    """Padding counts as -inf; where every input element of a window is -inf too, PyTorch's maximum is the
    window's first element inside the input, and the gradient goes there (not into the padding)."""
    import cnnkit
    from cnnkit import Tensor

    x = np.full((2, 3, 5, 6), -np.inf, dtype)
    x[rng.random(x.shape) < 0.2] = 1.0                                 # a few finite maxima, the rest -inf
    g = rng.standard_normal(tuple(TF.max_pool2d(torch.from_numpy(x), **pool).shape)).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    TF.max_pool2d(xt, **pool).backward(torch.from_numpy(g))
    with cnnkit.config.kernels(kernels):
        xc = Tensor(x, requires_grad=True)
        F.max_pool2d(xc, **pool).backward(Tensor(g))
    expected = xt.grad.numpy()
    np.testing.assert_array_equal(xc.grad != 0, expected != 0)            # the same elements get gradient
    np.testing.assert_allclose(xc.grad, expected, rtol=1e-6)              # (overlapping windows: summation order)


AVG_POOL_CASES = [
    _avg_pool("2x2", (2, 3, 6, 6), kernel_size=2),
    _avg_pool("odd-input", (1, 2, 7, 5), kernel_size=2),
    _avg_pool("3x3s2p1", (2, 2, 7, 8), kernel_size=3, stride=2, padding=1),
    _avg_pool("3x3s2p1-exclude-pad", (2, 2, 7, 8), kernel_size=3, stride=2, padding=1, count_include_pad=False),
    _avg_pool("nonsquare", (1, 3, 9, 7), kernel_size=(3, 2), stride=(2, 1), padding=(1, 1)),
    _avg_pool("nonsquare-exclude-pad", (1, 3, 9, 7), kernel_size=(3, 2), stride=(2, 1), padding=(1, 1),
              count_include_pad=False),
    _avg_pool("1x1", (2, 2, 4, 5), kernel_size=1),
    _avg_pool("stride>kernel", (2, 2, 10, 9), kernel_size=2, stride=3),
    _avg_pool("overlapping", (2, 2, 6, 6), kernel_size=3, stride=1),
    _avg_pool("global", (2, 3, 4, 5), kernel_size=(4, 5)),
    _avg_pool("ceil", (1, 2, 5, 5), kernel_size=2, ceil_mode=True),
    _avg_pool("ceil-exclude-pad", (1, 2, 5, 5), kernel_size=2, ceil_mode=True, count_include_pad=False),
    # the divisor of a ceil_mode window hanging past the padding counts only up to the padding
    _avg_pool("ceil-pad-include", (1, 2, 6, 6), kernel_size=3, stride=2, padding=1, ceil_mode=True),
    _avg_pool("ceil-pad-exclude", (1, 2, 6, 6), kernel_size=3, stride=2, padding=1, ceil_mode=True,
              count_include_pad=False),
    _avg_pool("ceil-last-window-in-pad", (1, 1, 5, 5), kernel_size=2, stride=2, padding=1, ceil_mode=True),
    _avg_pool("ceil-last-window-in-pad-exclude", (1, 1, 5, 5), kernel_size=2, stride=2, padding=1, ceil_mode=True,
              count_include_pad=False),
    _avg_pool("ceil-reduce-by-one", (1, 1, 4, 4), kernel_size=3, stride=2, padding=1, ceil_mode=True),
    _avg_pool("divisor_override", (2, 2, 6, 7), kernel_size=3, stride=2, padding=1, divisor_override=2),
    _avg_pool("divisor_override-ceil", (1, 2, 5, 5), kernel_size=2, ceil_mode=True, divisor_override=7),
    _avg_pool("divisor_override-exclude", (1, 2, 5, 6), kernel_size=3, padding=1, count_include_pad=False,
              divisor_override=3),
    _avg_pool("divisor_override-negative", (1, 2, 5, 6), kernel_size=2, divisor_override=-3),  # flips signs
    _avg_pool("channel-major", (2, 3, 6, 6), layout="channel-major", kernel_size=2),
    _avg_pool("one-element-tuples", (1, 2, 7, 6), kernel_size=(3,), stride=(2,), padding=(1,)),
    _avg_pool("nan", (1, 2, 6, 6), with_nans, kernel_size=2),
    _avg_pool("empty-batch", (0, 2, 6, 6), kernel_size=2),
] + _random_avg_pool_cases(80, seed=41)


@cases(AVG_POOL_CASES)
@dtypes()
def test_avg_pool2d_matches_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)


def _sum_pool_cases():
    """sum_pool2d is avg_pool2d with divisor 1 (and zero padding counted as zeros)."""
    out = []
    for shape, kw in [((2, 3, 6, 6), dict(kernel_size=2)), ((1, 2, 7, 5), dict(kernel_size=3, stride=2, padding=1)),
                      ((2, 2, 7, 8), dict(kernel_size=(3, 2), stride=(1, 3), padding=(1, 0))),
                      ((1, 2, 5, 5), dict(kernel_size=2, ceil_mode=True)),
                      ((1, 1, 5, 5), dict(kernel_size=2, stride=2, padding=1, ceil_mode=True)),
                      ((2, 1, 4, 4), dict(kernel_size=1, stride=3))]:
        out.append(_pool_case(f"sum_pool2d-{kw}", lambda x, kw=kw: F.sum_pool2d(x, **kw),
                              lambda x, kw=kw: TF.avg_pool2d(x, **kw, divisor_override=1), shape))
    return out


def _lp(p, shape, gen, name=None, **kw):
    return _pool_case(name or f"lp_pool2d(p={p})-{kw}", lambda x: F.lp_pool2d(x, p, **kw),
                      lambda x: TF.lp_pool2d(x, p, **kw), shape, gen)


def _lp_pool_cases():
    """lp_pool2d = (sign(s) relu(|s|) KH*KW) ** (1/p), s = avg_pool2d(x ** p), as PyTorch computes it."""
    out = [
        _lp(2, (2, 3, 6, 6), normal, kernel_size=2),
        _lp(2, (1, 2, 7, 5), normal, kernel_size=3, stride=2),
        _lp(3, (2, 2, 6, 7), positive, kernel_size=(2, 3), stride=(2, 1)),
        _lp(1, (2, 2, 6, 6), normal, kernel_size=3, stride=1),
        _lp(1.5, (1, 2, 5, 6), positive, kernel_size=2, stride=(1, 2)),
        _lp(4, (1, 1, 8, 8), normal, kernel_size=(1, 3), stride=3),
        _lp(float("inf"), (2, 2, 4, 6), away_from_zero, kernel_size=2),  # max pooling of |x|
        _lp(-float("inf"), (2, 2, 4, 6), away_from_zero, kernel_size=2),  # the smallest |x|
        # a window whose power sum is 0: gradient 0 (PyTorch documents it)
        _lp(2, (1, 2, 4, 4), lambda *s: lambda rng: rng.standard_normal(s) * (np.arange(s[-1]) < 2),
            name="lp_pool2d(p=2)-zero-window", kernel_size=2),
        # odd p and a negative window sum: NaN, as PyTorch (x**p is not |x|**p)
        _lp(3, (2, 2, 6, 6), normal, name="lp_pool2d(p=3)-negative-sums", kernel_size=2),
        _lp(1.5, (2, 2, 6, 6), normal, name="lp_pool2d(p=1.5)-negative-inputs", kernel_size=2),
        # NaN in, NaN out, with PyTorch's gradients around it
        _lp(2, (2, 2, 6, 6), with_nans, name="lp_pool2d(p=2)-nan", kernel_size=2),
        _lp(1, (2, 2, 6, 6), with_nans, name="lp_pool2d(p=1)-nan", kernel_size=2),
        _lp(float("inf"), (2, 2, 6, 6), with_nans, name="lp_pool2d(p=inf)-nan", kernel_size=2),
        _lp(2, (1, 2, 6, 6), normal, name="lp_pool2d-one-element-tuple", kernel_size=2, stride=(1,)),
    ]
    # ceil_mode: PyTorch computes avg_pool2d(x**p) * KH*KW, so a window clipped at the border
    # comes out scaled by area / clipped area; cnnkit does the same
    for p, shape, kw, gen in [(2, (1, 2, 5, 5), dict(kernel_size=2, ceil_mode=True), normal),
                              (3, (2, 1, 7, 6), dict(kernel_size=3, stride=2, ceil_mode=True), positive),
                              (1, (1, 2, 5, 7), dict(kernel_size=(2, 3), stride=2, ceil_mode=True), normal)]:
        out.append(_lp(p, shape, gen, **kw))
    return out


def _adaptive_cases():
    out = []
    for shape, size in [((2, 3, 6, 6), 1), ((2, 3, 6, 6), (1, 1)), ((2, 3, 6, 6), 2), ((2, 3, 6, 6), 3),
                        ((1, 2, 7, 5), (3, 2)), ((2, 2, 10, 7), (4, 3)), ((1, 2, 5, 5), 4), ((1, 2, 3, 4), (5, 7)),
                        ((2, 1, 9, 8), (None, 3)), ((2, 1, 9, 8), (4, None)), ((1, 3, 1, 1), 2),
                        ((3, 2, 11, 13), (5, 6))]:
        out += [
            _pool_case(f"adaptive_avg_pool2d({size})", lambda x, s=size: F.adaptive_avg_pool2d(x, s),
                       lambda x, s=size: TF.adaptive_avg_pool2d(x, s), shape),
            _pool_case(f"adaptive_max_pool2d({size})", lambda x, s=size: F.adaptive_max_pool2d(x, s),
                       lambda x, s=size: TF.adaptive_max_pool2d(x, s), shape),
            # ties: the first maximum of each (possibly overlapping) window takes the gradient
            _pool_case(f"adaptive_max_pool2d({size})-ties", lambda x, s=size: F.adaptive_max_pool2d(x, s),
                       lambda x, s=size: TF.adaptive_max_pool2d(x, s), shape, integers),
        ]
    out += [
        _pool_case("adaptive_max_pool2d-zeros", lambda x: F.adaptive_max_pool2d(x, (3, 2)),
                   lambda x: TF.adaptive_max_pool2d(x, (3, 2)), (2, 2, 7, 5), zeros),
        _pool_case("adaptive_max_pool2d-nan", lambda x: F.adaptive_max_pool2d(x, (3, 2)),
                   lambda x: TF.adaptive_max_pool2d(x, (3, 2)), (2, 2, 7, 5), with_nans),
        _pool_case("adaptive_avg_pool2d-channel-major", lambda x: F.adaptive_avg_pool2d(x, (2, 3)),
                   lambda x: TF.adaptive_avg_pool2d(x, (2, 3)), (2, 3, 5, 7), layout="channel-major"),
        _pool_case("adaptive_max_pool2d-channel-major", lambda x: F.adaptive_max_pool2d(x, (2, 3)),
                   lambda x: TF.adaptive_max_pool2d(x, (2, 3)), (2, 3, 5, 7), layout="channel-major"),
        _pool_case("adaptive_avg_pool2d-empty-batch", lambda x: F.adaptive_avg_pool2d(x, 2),
                   lambda x: TF.adaptive_avg_pool2d(x, 2), (0, 2, 4, 4)),
    ]
    return out


OTHER_POOL_CASES = _sum_pool_cases() + _lp_pool_cases() + _adaptive_cases() + [
    _pool_case("max_pool2d-unbatched", lambda x: F.max_pool2d(x, 2), lambda x: TF.max_pool2d(x, 2), (3, 6, 5)),
    _pool_case("avg_pool2d-unbatched", lambda x: F.avg_pool2d(x, 3, 2, 1), lambda x: TF.avg_pool2d(x, 3, 2, 1),
               (2, 6, 5)),
    _pool_case("adaptive_max_pool2d-unbatched", lambda x: F.adaptive_max_pool2d(x, (2, 3)),
               lambda x: TF.adaptive_max_pool2d(x, (2, 3)), (2, 5, 5)),
    _pool_case("adaptive_avg_pool2d-unbatched", lambda x: F.adaptive_avg_pool2d(x, 2),
               lambda x: TF.adaptive_avg_pool2d(x, 2), (2, 5, 5)),
]


@cases(OTHER_POOL_CASES)
@dtypes()
def test_sum_lp_and_adaptive_pools_match_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)
