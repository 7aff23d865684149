"""Eval batch norm + ReLU (and a residual sum) in one pass: the same bits as the separate ops.

``F.batch_norm_relu`` (kernel ``batchnorm._affine_relu``) against relu(batch_norm(x) + r)
run op by op (``dispatch.FUSE_BATCH_NORM_RELU`` / ``FUSE_BATCH_NORM_ADD_RELU`` = 0), and
against PyTorch; ``nn.norm.batch_norm_relu`` (the modules' gate) fuses only where nothing
observes the batch norm's output.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cnnkit.functional as F
from cnnkit import Tensor, config, models, nn, no_grad
from cnnkit.backend import dispatch, kernels
from cnnkit.backend.kernels import batchnorm as batchnorm_kernels
from cnnkit.backend.kernels import winograd
from cnnkit.functional.activation import ReLUOp
from cnnkit.nn.norm import batch_norm_relu
from tests.backend.arrays import cnhw

pytestmark = [
    pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed"),
    pytest.mark.filterwarnings("ignore:invalid value encountered"),   # inf - inf in NumPy's sum
]

SPECIAL = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-40, -1e-40]


def bits(a: np.ndarray) -> np.ndarray:
    """The bytes of a (NaN payloads and the sign of zero included)."""
    return np.ascontiguousarray(a).view(np.uint8)


def inputs(rng, shape, dtype, layout, special: bool):
    N, C = shape[:2]
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    r = (rng.standard_normal(shape)).astype(dtype)
    if special:
        for a in (x, r):
            flat = a.reshape(-1)
            idx = rng.choice(flat.size, size=min(flat.size, 3 * len(SPECIAL)), replace=False)
            flat[idx] = np.resize(np.array(SPECIAL, dtype), idx.size)
    rm, rv = (rng.standard_normal(C) * 0.5).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype)
    gamma, beta = rng.uniform(-1.5, 1.5, C).astype(dtype), (rng.standard_normal(C) * 0.3).astype(dtype)
    # a channel whose batch norm yields -0.0 from x = -0.0 (shift -0.0): ReLU makes it +0.0
    rm[0], beta[0] = 0, -0.0
    if layout == "cnhw":
        x, r = cnhw(x), cnhw(r)
    return x, r, rm, rv, gamma, beta


def unfused(x, r, rm, rv, gamma, beta, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(dispatch, "FUSE_BATCH_NORM_RELU", 0)
        m.setattr(dispatch, "FUSE_BATCH_NORM_ADD_RELU", 0)
        return F.batch_norm_relu(x, rm, rv, gamma, beta, residual=r).data


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("params", ["both", "none"])
@pytest.mark.parametrize("shape, layout, threads", [
    ((1, 64, 56, 56), "nchw", 2), ((2, 5, 7, 3), "cnhw", 3), ((3, 4, 13, 17), "nchw", 3),
    ((1, 3, 1, 1), "nchw", 1), ((4, 6, 5, 5), "cnhw", 2), ((2, 7, 9, 9), "cnhw", 1),
])
def test_fused_is_the_separate_ops_bit_for_bit(dtype, residual, params, shape, layout, threads, rng, monkeypatch):
    x, r, rm, rv, gamma, beta = inputs(rng, shape, dtype, layout, special=True)
    if params == "none":
        gamma = beta = None
    r = r if residual else None
    with no_grad():
        expected = unfused(x, r, rm, rv, gamma, beta, monkeypatch)
        monkeypatch.setattr(dispatch, "INFERENCE_MIN_ELEMENTS", 1)     # every plane its own piece
        with config.num_threads(threads):
            y = F.batch_norm_relu(x, rm, rv, gamma, beta, residual=r)
    assert y.creator is None and y.dtype == dtype and y.shape == shape
    np.testing.assert_array_equal(bits(y.data), bits(expected))
    assert y.data.strides == x.strides                                  # x's memory layout
    assert not np.signbit(y.data[~np.isnan(y.data)]).any()               # ReLU: no -0.0, no negatives


def test_the_split_changes_no_bit(rng, monkeypatch):
    x, r, rm, rv, gamma, beta = inputs(rng, (2, 9, 11, 13), np.float32, "nchw", special=True)
    monkeypatch.setattr(dispatch, "INFERENCE_MIN_ELEMENTS", 1)
    outs = []
    with no_grad():
        for threads in (1, 2, 3):
            with config.num_threads(threads):
                outs.append(bits(F.batch_norm_relu(x, rm, rv, gamma, beta, residual=r).data))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


@pytest.mark.parametrize("residual", [False, True])
def test_fused_matches_pytorch(residual, rng):
    x, r, rm, rv, gamma, beta = inputs(rng, (2, 5, 6, 7), np.float32, "nchw", special=False)
    r = r if residual else None
    with no_grad():
        y = F.batch_norm_relu(x, rm, rv, gamma, beta, eps=1e-3, residual=r).data
    t = torch.nn.functional.batch_norm(torch.tensor(x), torch.tensor(rm), torch.tensor(rv), torch.tensor(gamma),
                                       torch.tensor(beta), training=False, eps=1e-3)
    t = torch.relu(t if r is None else t + torch.tensor(r))
    np.testing.assert_allclose(y, t.numpy(), rtol=1e-6, atol=1e-6)


def counting(monkeypatch) -> list:
    """Count the fused kernel's calls (``batch_norm_relu_eval``)."""
    calls = []
    real = batchnorm_kernels.batch_norm_relu_eval

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(batchnorm_kernels, "batch_norm_relu_eval", spy)
    return calls


def test_a_recorded_graph_takes_the_separate_ops(rng, monkeypatch):
    x, r, rm, rv, gamma, beta = inputs(rng, (2, 3, 5, 5), np.float64, "nchw", special=False)
    calls = counting(monkeypatch)
    xs = Tensor(x, requires_grad=True)
    y = F.batch_norm_relu(xs, rm, rv, gamma, beta, residual=r)
    assert isinstance(y.creator, ReLUOp) and not calls
    y.sum().backward()
    expected = Tensor(x, requires_grad=True)
    F.relu(F.batch_norm(expected, rm, rv, gamma, beta) + r).sum().backward()
    np.testing.assert_array_equal(xs.grad, expected.grad)
    with no_grad():
        F.batch_norm_relu(xs, rm, rv, gamma, beta, residual=r)
    F.batch_norm_relu(Tensor(x), rm, rv, gamma, beta, residual=r)      # grad on, nothing requires it
    assert len(calls) == 2


def test_switches_off_take_the_separate_ops(rng, monkeypatch):
    x, r, rm, rv, gamma, beta = inputs(rng, (1, 3, 4, 4), np.float32, "nchw", special=False)
    calls = counting(monkeypatch)
    with no_grad():
        monkeypatch.setattr(dispatch, "FUSE_BATCH_NORM_ADD_RELU", 0)
        F.batch_norm_relu(x, rm, rv, gamma, beta, residual=r)
        assert not calls
        F.batch_norm_relu(x, rm, rv, gamma, beta)
        assert len(calls) == 1
        monkeypatch.setattr(dispatch, "FUSE_BATCH_NORM_RELU", 0)
        F.batch_norm_relu(x, rm, rv, gamma, beta)
        assert len(calls) == 1


def test_a_residual_in_another_layout_is_summed_as_given(rng, monkeypatch):
    x, r, rm, rv, gamma, beta = inputs(rng, (3, 4, 5, 6), np.float32, "nchw", special=True)
    with no_grad():
        expected = unfused(x, r, rm, rv, gamma, beta, monkeypatch)
        y = F.batch_norm_relu(x, rm, rv, gamma, beta, residual=cnhw(r))
    np.testing.assert_array_equal(bits(y.data), bits(expected))


# ------------------------------------------------------------------------ the modules' gate
def block(rng, C=4):
    bn = nn.BatchNorm2d(C)
    bn.running_mean[...] = rng.standard_normal(C)
    bn.running_var[...] = rng.uniform(0.5, 2, C)
    bn.weight.data[...] = rng.uniform(0.5, 1.5, C)
    bn.bias.data[...] = rng.standard_normal(C)
    return bn.eval(), nn.ReLU(inplace=True)


def test_the_gate_fuses_an_unobserved_eval_pair(rng, monkeypatch):
    bn, relu = block(rng)
    x, r = Tensor(rng.standard_normal((2, 4, 5, 5)).astype(np.float32)), rng.standard_normal((2, 4, 5, 5))
    r = Tensor(r.astype(np.float32))
    calls = counting(monkeypatch)
    with no_grad():
        y = batch_norm_relu(bn, relu, x, lambda: r)
        expected = relu(bn(x) + r)
    assert len(calls) == 1
    np.testing.assert_array_equal(bits(y.data), bits(expected.data))


class MyReLU(nn.ReLU):
    pass


@pytest.mark.parametrize("observer", ["bn forward hook", "bn pre hook", "relu forward hook", "relu pre hook",
                                      "bn backward hook", "training", "no running stats", "grad",
                                      "relu subclass", "forward replaced", "channels"])
def test_the_gate_keeps_the_module_calls_where_something_observes(observer, rng, monkeypatch):
    bn, relu = block(rng)
    x = Tensor(rng.standard_normal((2, 4, 5, 5)))
    seen = []
    hook = lambda m, i, o=None: seen.append(type(m).__name__)  # noqa: E731
    if observer == "bn forward hook":
        bn.register_forward_hook(hook)
    elif observer == "bn pre hook":
        bn.register_forward_pre_hook(hook)
    elif observer == "relu forward hook":
        relu.register_forward_hook(hook)
    elif observer == "relu pre hook":
        relu.register_forward_pre_hook(hook)
    elif observer == "bn backward hook":
        bn.register_full_backward_hook(lambda m, gi, go: None)
    elif observer == "training":
        bn.train()
    elif observer == "no running stats":
        bn.track_running_stats = False
    elif observer == "relu subclass":
        relu = MyReLU()
    elif observer == "forward replaced":
        bn.forward = lambda t: t
    elif observer == "channels":
        bn = nn.BatchNorm2d(3).eval()
    calls = counting(monkeypatch)
    batches = int(bn.num_batches_tracked)
    if observer == "grad":
        y = batch_norm_relu(bn, relu, x, lambda: x)
        assert isinstance(y.creator, ReLUOp)
    elif observer == "channels":
        with no_grad(), pytest.raises(ValueError, match="expected input with 3 features"):
            batch_norm_relu(bn, relu, x)
    else:
        with no_grad():
            y = batch_norm_relu(bn, relu, x, lambda: x)
    assert not calls
    if "hook" in observer and "backward" not in observer:
        assert seen == ["BatchNorm2d" if observer.startswith("bn") else "ReLU"]
    if observer == "training":
        assert int(bn.num_batches_tracked) == batches + 1


# ------------------------------------------------------------------------------ the models
def randomized(net, rng):
    """Running statistics and affine parameters far from the init (eval batch norm not an identity)."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            C = m.num_features
            m.running_mean[...] = rng.standard_normal(C) * 0.2
            m.running_var[...] = rng.uniform(0.5, 1.5, C)
            m.weight.data[...] = rng.uniform(0.5, 1.5, C)
            m.bias.data[...] = rng.standard_normal(C) * 0.2
    return net.eval()


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_resnet_eval_is_the_unfused_pass_bit_for_bit(block, rng, monkeypatch):
    layers = models.BasicBlock if block == "basic" else models.Bottleneck
    net = randomized(models.ResNet(layers, [2, 1, 1, 1], generator=np.random.default_rng(0)), rng)
    x = Tensor(rng.standard_normal((2, 3, 48, 40)).astype(np.float32))
    calls = counting(monkeypatch)
    in_conv = conv_counting(monkeypatch)
    with no_grad():
        with monkeypatch.context() as m:
            for name in ("FUSE_CONV_BATCH_NORM_RELU", "FUSE_BATCH_NORM_RELU", "FUSE_BATCH_NORM_ADD_RELU",
                         "FUSE_CONV_BATCH_NORM"):
                m.setattr(dispatch, name, 0)
            expected = net(x).data
        assert not calls and not in_conv
        for threads in (1, 2, 3):
            with config.num_threads(threads):
                np.testing.assert_array_equal(bits(net(x).data), bits(expected))
    fused_per_pass = 1 + (2 if block == "basic" else 3) * 5                  # stem, then every block
    fused_per_pass += 3 if block == "basic" else 4                          # the shortcuts' conv + batch norm
    assert len(calls) + len(in_conv) == 3 * fused_per_pass and len(in_conv) > len(calls) > 0


def test_resnet_with_hooks_calls_every_module_in_the_plain_order(rng, monkeypatch):
    net = randomized(models.resnet18(generator=np.random.default_rng(0)), rng)
    seen = []
    for name, m in net.layer2[0].named_modules():
        if name:
            m.register_forward_hook(lambda m, i, o, name=name: seen.append(name))
    calls, in_conv = counting(monkeypatch), conv_counting(monkeypatch)
    with no_grad():
        net(Tensor(rng.standard_normal((1, 3, 32, 32)).astype(np.float32)))
    assert seen == ["conv1", "bn1", "relu", "conv2", "bn2", "downsample.0", "downsample.1", "downsample", "relu"]
    assert len(calls) + len(in_conv) == 1 + 2 * 8 - 2 + 2       # all but layer2.0's two pairs and shortcut fuse


# ------------------------------------------------------- in the convolution's output pass
def conv_inputs(rng, N, dtype, layout):
    x = rng.standard_normal((N, 5, 11, 9)).astype(dtype)
    x.reshape(-1)[[3, 50, 200]] = [np.nan, np.inf, -0.0]
    w = (rng.standard_normal((6, 5, 3, 3)) * 0.3).astype(dtype)
    _, r, rm, rv, gamma, beta = inputs(rng, (N, 6, 11, 9), dtype, layout, special=True)
    return (cnhw(x) if layout == "cnhw" else x), w, r, rm, rv, gamma, beta


PATHS = {  # algorithm, winograd_by_rows, gemm_by_rows, gemm_by_channels; images (filter blocks: by the name)
    "winograd2 by rows": ("winograd2", True, False, False, 2), "winograd2": ("winograd2", False, False, False, 2),
    "winograd2 by filter blocks": ("winograd2", False, False, False, 2),
    "winograd4 by rows": ("winograd4", True, False, False, 1), "winograd4": ("winograd4", False, False, False, 2),
    "winograd4 by filter blocks": ("winograd4", False, False, False, 2),
    "gemm by rows": ("gemm", False, True, False, 1), "gemm by channels": ("gemm", False, False, True, 1),
    "gemm": ("gemm", False, False, False, 2), "direct (conv, then the pass)": ("direct", False, False, False, 2),
}


def force_path(monkeypatch, path: str) -> tuple[str, int]:
    """Make the dispatch take ``PATHS[path]`` (algorithm and its splits, the eval passes split
    from one element on); returns its algorithm and batch size."""
    algorithm, wrows, grows, groups, N = PATHS[path]
    monkeypatch.setattr(dispatch, "conv2d_algorithm", lambda *args, **kwargs: algorithm)
    monkeypatch.setattr(dispatch, "winograd_by_rows", lambda *args: wrows)
    monkeypatch.setattr(dispatch, "gemm_by_rows", lambda *args: grows)
    monkeypatch.setattr(dispatch, "gemm_by_channels", lambda *args: groups)
    monkeypatch.setattr(dispatch, "winograd_filter_block", lambda *args: 4 if "filter blocks" in path else 0)
    monkeypatch.setattr(dispatch, "INFERENCE_MIN_ELEMENTS", 1)
    return algorithm, N


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("layout, threads", [("nchw", 1), ("cnhw", 2), ("nchw", 3)])
def test_conv_epilogue_is_the_separate_ops_bit_for_bit(path, dtype, residual, layout, threads, rng, monkeypatch):
    algorithm, N = force_path(monkeypatch, path)
    x, w, r, rm, rv, gamma, beta = conv_inputs(rng, N, dtype, layout)
    r = r if residual else None
    args = dict(running_mean=rm, running_var=rv, bn_weight=gamma, bn_bias=beta, residual=r)
    epilogues = []
    real = batchnorm_kernels.conv_epilogue
    monkeypatch.setattr(batchnorm_kernels, "conv_epilogue", lambda *a: epilogues.append(1) or real(*a))
    with no_grad(), config.num_threads(threads):
        y = F.conv2d_batch_norm_relu(x, w, 1, 1, **args)
        assert len(epilogues) == (algorithm != "direct")
        with monkeypatch.context() as m:
            for name in ("FUSE_CONV_BATCH_NORM_RELU", "FUSE_BATCH_NORM_RELU", "FUSE_BATCH_NORM_ADD_RELU"):
                m.setattr(dispatch, name, 0)
            expected = F.conv2d_batch_norm_relu(x, w, 1, 1, **args)
    assert len(epilogues) == (algorithm != "direct")
    np.testing.assert_array_equal(bits(y.data), bits(expected.data))
    if r is None:  # the conv's channel-major memory (with a residual the unfused sum may pick another)
        layout = [(n, st) for n, st in zip(y.shape, y.data.strides) if n > 1]     # (size-1 axes aside)
        assert layout == [(n, st) for n, st in zip(y.shape, expected.data.strides) if n > 1]


def test_conv_epilogue_matches_pytorch(rng):
    x, w, r, rm, rv, gamma, beta = conv_inputs(rng, 2, np.float64, "nchw")
    x, r = np.nan_to_num(x, posinf=1.0), np.nan_to_num(r, nan=0.5, posinf=2.0, neginf=-2.0)
    with no_grad():
        y = F.conv2d_batch_norm_relu(x, w, 1, 1, running_mean=rm, running_var=rv, bn_weight=gamma, bn_bias=beta,
                                     residual=r).data
    t = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), padding=1)
    t = torch.nn.functional.batch_norm(t, *(torch.tensor(a) for a in (rm, rv, gamma, beta)), training=False)
    np.testing.assert_allclose(y, torch.relu(t + torch.tensor(r)).numpy(), rtol=1e-10, atol=1e-10)


def conv_counting(monkeypatch) -> list:
    calls = []
    real = batchnorm_kernels.conv_epilogue
    monkeypatch.setattr(batchnorm_kernels, "conv_epilogue", lambda *a: calls.append(1) or real(*a))
    return calls


@pytest.mark.parametrize("observer", ["none", "conv forward hook", "conv pre hook", "bias", "bn hook", "grad",
                                      "prepacked"])
def test_the_conv_gate_fuses_only_where_the_conv_output_is_unobserved(observer, rng, monkeypatch):
    from cnnkit.nn.norm import conv_batch_norm_relu

    conv = nn.Conv2d(3, 4, 3, padding=1, bias=observer == "bias")
    bn, relu = block(rng)
    x = Tensor(rng.standard_normal((1, 3, 8, 8)).astype(np.float32))
    seen = []
    if observer == "conv forward hook":
        conv.register_forward_hook(lambda m, i, o: seen.append(o))
    elif observer == "conv pre hook":
        conv.register_forward_pre_hook(lambda m, i: seen.append(i))
    elif observer == "bn hook":
        bn.register_forward_hook(lambda m, i, o: seen.append(o))
    elif observer == "prepacked":
        conv.eval()
        nn.utils.prepack_for_inference(conv)
    calls = conv_counting(monkeypatch)
    monkeypatch.setattr(dispatch, "conv2d_algorithm", lambda *args, **kwargs: "gemm")
    if observer == "grad":
        y = conv_batch_norm_relu(conv, bn, relu, x)
        assert isinstance(y.creator, ReLUOp)
    else:
        with no_grad():
            y = conv_batch_norm_relu(conv, bn, relu, x)
            expected = relu(bn(conv(x)))
        np.testing.assert_array_equal(bits(y.data), bits(expected.data))
    assert len(calls) == (observer == "none")
    assert len(seen) == ("hook" in observer) * (2 if observer != "grad" else 1)


# ---------------------------------- a shortcut: the batch norm without ReLU in the convolution's output
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout, threads", [("nchw", 1), ("cnhw", 2), ("nchw", 3)])
def test_conv_batch_norm_epilogue_is_the_separate_ops_bit_for_bit(path, dtype, layout, threads, rng, monkeypatch):
    algorithm, N = force_path(monkeypatch, path)
    x, w, _, rm, rv, gamma, beta = conv_inputs(rng, N, dtype, layout)
    args = dict(running_mean=rm, running_var=rv, bn_weight=gamma, bn_bias=beta)
    calls = conv_counting(monkeypatch)
    with no_grad(), config.num_threads(threads):
        y = F.conv2d_batch_norm(x, w, 1, 1, **args)
        assert len(calls) == (algorithm != "direct")
        with monkeypatch.context() as m:
            m.setattr(dispatch, "FUSE_CONV_BATCH_NORM", 0)
            expected = F.conv2d_batch_norm(x, w, 1, 1, **args)
            plain = F.batch_norm(F.conv2d(x, w, None, 1, 1), rm, rv, gamma, beta, training=False)
    assert len(calls) == (algorithm != "direct")
    np.testing.assert_array_equal(bits(y.data), bits(expected.data))
    np.testing.assert_array_equal(bits(y.data), bits(plain.data))
    assert (y.data < 0).any()                                          # no ReLU


@pytest.mark.parametrize("stride, kernel", [(2, 1), (1, 3)])
def test_conv_batch_norm_matches_pytorch(stride, kernel, rng):
    x, _, _, rm, rv, gamma, beta = conv_inputs(rng, 1, np.float64, "nchw")
    x = np.nan_to_num(x, posinf=1.0)
    w = rng.standard_normal((6, 5, kernel, kernel))
    with no_grad():
        y = F.conv2d_batch_norm(x, w, stride, kernel // 2, running_mean=rm, running_var=rv, bn_weight=gamma,
                                bn_bias=beta).data
    t = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), stride=stride, padding=kernel // 2)
    t = torch.nn.functional.batch_norm(t, *(torch.tensor(a) for a in (rm, rv, gamma, beta)), training=False)
    np.testing.assert_allclose(y, t.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_batch_norm_of_an_empty_batch(dtype, rng, monkeypatch):
    """N = 0 on the fused path (GEMM by blocks) and the separate ops: the same empty output."""
    monkeypatch.setattr(dispatch, "conv2d_algorithm", lambda *args, **kwargs: "gemm")
    _, w, _, rm, rv, gamma, beta = conv_inputs(rng, 1, dtype, "nchw")
    x = np.zeros((0, 5, 11, 9), dtype)
    args = dict(running_mean=rm, running_var=rv, bn_weight=gamma, bn_bias=beta)
    with no_grad():
        y = F.conv2d_batch_norm(x, w, 2, 1, **args)
        monkeypatch.setattr(dispatch, "FUSE_CONV_BATCH_NORM", 0)
        expected = F.conv2d_batch_norm(x, w, 2, 1, **args)
    assert y.shape == expected.shape == (0, 6, 6, 5) and y.dtype == expected.dtype == dtype


@pytest.mark.parametrize("observer", ["none", "sequential hook", "conv hook", "bn hook", "training", "grad",
                                      "three modules"])
def test_the_shortcut_gate_fuses_only_where_nothing_observes_it(observer, rng, monkeypatch):
    from cnnkit.nn.norm import sequential_conv_batch_norm

    bn, _ = block(rng)
    seq = nn.Sequential(nn.Conv2d(3, 4, 1, stride=2, bias=False), bn)
    if observer == "three modules":
        seq.append(nn.Identity())
    x = Tensor(rng.standard_normal((1, 3, 9, 9)).astype(np.float32))
    seen = []
    hooked = {"sequential hook": seq, "conv hook": seq[0], "bn hook": seq[1]}.get(observer)
    if hooked is not None:
        hooked.register_forward_hook(lambda m, i, o: seen.append(m))
    if observer == "training":
        seq.train()
    calls = conv_counting(monkeypatch)
    monkeypatch.setattr(dispatch, "conv2d_algorithm", lambda *args, **kwargs: "gemm")
    if observer == "grad":
        y = sequential_conv_batch_norm(seq, x.requires_grad_())
        assert y.creator is not None
    else:
        with no_grad():
            y = sequential_conv_batch_norm(seq, x)
            n = len(calls)
            expected = seq(x)
        assert n == (observer == "none")
        np.testing.assert_array_equal(bits(y.data), bits(expected.data))
    assert len(calls) == (observer == "none")
    assert len(seen) == (2 if hooked is not None else 0)


# ------------------------------------- an optimized model: the ReLU in the convolution's output
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias, residual", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_conv_relu_epilogue_is_the_separate_ops_bit_for_bit(path, dtype, bias, residual, threads, rng, monkeypatch):
    algorithm, N = force_path(monkeypatch, path)
    x, w, r, *_ = conv_inputs(rng, N, dtype, "cnhw" if threads == 2 else "nchw")
    b = (rng.standard_normal(6) * 0.5).astype(dtype) if bias else None
    if bias:
        b[0] = -0.0
    r = r if residual else None
    calls = conv_counting(monkeypatch)
    with no_grad(), config.num_threads(threads):
        y = F.conv2d_relu(x, w, b, 1, 1, residual=r)
        with monkeypatch.context() as m:
            m.setattr(dispatch, "FUSE_CONV_RELU", 0)
            expected = F.conv2d_relu(x, w, b, 1, 1, residual=r)
    assert len(calls) == (algorithm != "direct")
    np.testing.assert_array_equal(bits(y.data), bits(expected.data))


@pytest.mark.parametrize("algorithm", ["winograd2", "winograd4", "gemm"])
def test_conv_relu_epilogue_uses_the_prepacked_filters(algorithm, rng, monkeypatch):
    conv = nn.Conv2d(5, 6, 3, padding=1).eval()
    nn.utils.prepack_for_inference(conv)
    x, _, r, *_ = conv_inputs(rng, 1, np.float32, "nchw")
    monkeypatch.setattr(dispatch, "conv2d_algorithm", lambda *args, **kwargs: algorithm)
    transforms = []
    real = winograd.winograd_filters
    monkeypatch.setattr(winograd, "winograd_filters", lambda *a: transforms.append(1) or real(*a))
    with no_grad():
        y = F.conv2d_relu(x, conv.weight, conv.bias, 1, 1, prepacked=conv.prepacked, residual=r)
        y = F.conv2d_relu(x, conv.weight, conv.bias, 1, 1, prepacked=conv.prepacked, residual=r)
        expected = F.relu(conv(Tensor(x)) + r)
    np.testing.assert_array_equal(bits(y.data), bits(expected.data))
    assert len(transforms) == (algorithm != "gemm")                    # once, for the pack


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_optimized_resnet_is_the_unfused_pass_bit_for_bit(block, rng, monkeypatch):
    from cnnkit.surgery import optimize_for_inference

    layers = models.BasicBlock if block == "basic" else models.Bottleneck
    net = randomized(models.ResNet(layers, [2, 1, 1, 1], generator=np.random.default_rng(0)), rng)
    net = optimize_for_inference(net, input_shape=(3, 48, 40))
    x = Tensor(rng.standard_normal((2, 3, 48, 40)).astype(np.float32))
    calls = conv_counting(monkeypatch)
    with no_grad():
        with monkeypatch.context() as m:
            m.setattr(dispatch, "FUSE_CONV_RELU", 0)
            expected = net(x).data
        assert not calls
        for threads in (1, 2, 3):
            with config.num_threads(threads):
                np.testing.assert_array_equal(bits(net(x).data), bits(expected))
    assert calls
    hooked = []
    net.layer1[0].bn1.register_forward_hook(lambda m, i, o: hooked.append(o))
    calls.clear()
    with no_grad():
        np.testing.assert_array_equal(bits(net(x).data), bits(expected))
    assert hooked and calls                                            # all but that block's first pair
