"""Folding an eval-mode BatchNorm2d into a convolution: outputs, PyTorch's fold, untouched inputs, errors."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import Tensor, nn, no_grad
from cnnkit.errors import ConversionError, LayerNotFoundError, ShapeError
from cnnkit.nn.utils import fuse_conv_bn_eval, fuse_conv_bn_pairs, fuse_conv_bn_weights

RTOL = {np.float64: 1e-10, np.float32: 1e-5}


def batch_norm(F: int, rng, dtype=np.float64, affine: bool = True, eps: float = 1e-5) -> nn.BatchNorm2d:
    """An eval-mode BatchNorm2d with running statistics and affine parameters far from the defaults."""
    bn = nn.BatchNorm2d(F, eps=eps, affine=affine, dtype=dtype)
    bn.running_mean[...] = rng.normal(0.0, 1.0, F)
    bn.running_var[...] = rng.uniform(0.05, 3.0, F)
    if affine:
        bn.weight.data[...] = rng.uniform(-2.0, 2.0, F)
        bn.bias.data[...] = rng.normal(0.0, 1.0, F)
    return bn.eval()


def run(layer_or_layers, x: np.ndarray) -> np.ndarray:
    with no_grad():
        y = Tensor(x)
        for layer in layer_or_layers if isinstance(layer_or_layers, (list, tuple)) else [layer_or_layers]:
            y = layer(y)
        return y.data


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float) -> None:
    """Max absolute error relative to the largest output (the fold moves rounding, not scale)."""
    error = np.abs(actual - expected).max() / np.abs(expected).max()
    assert error <= rtol, f"relative error {error:.3g} > {rtol:g}"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias, groups, affine, conv_kwargs", [
    (True, 1, True, {}),
    (False, 1, True, {"stride": 2, "padding": 1}),
    (False, 2, False, {"dilation": 2, "padding": 2}),
    (True, 6, True, {"padding": 1, "padding_mode": "reflect"}),   # depthwise
])
def test_fused_conv2d_computes_bn_of_conv(rng, dtype, bias, groups, affine, conv_kwargs):
    conv = nn.Conv2d(6, 6 if groups == 6 else 8, 3, groups=groups, bias=bias, generator=rng, dtype=dtype,
                     **conv_kwargs).eval()
    bn = batch_norm(conv.out_channels, rng, dtype, affine, eps=1e-3)
    x = rng.standard_normal((2, 6, 9, 8)).astype(dtype)
    fused = fuse_conv_bn_eval(conv, bn)
    assert type(fused) is nn.Conv2d and not fused.training
    assert fused.weight.dtype == fused.bias.dtype == dtype
    assert (fused.stride, fused.padding, fused.dilation, fused.groups, fused.padding_mode) == (
        conv.stride, conv.padding, conv.dilation, conv.groups, conv.padding_mode)
    assert_close(run(fused, x), run([conv, bn], x), RTOL[dtype])


@pytest.mark.parametrize("groups", [1, 2])
def test_fused_conv_transpose2d_computes_bn_of_conv(rng, groups):
    conv = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, groups=groups, bias=groups == 1, generator=rng,
                              dtype=np.float64).eval()
    bn = batch_norm(6, rng)
    x = rng.standard_normal((2, 4, 5, 5))
    fused = fuse_conv_bn_eval(conv, bn, transpose=True)
    assert type(fused) is nn.ConvTranspose2d
    assert_close(run(fused, x), run([conv, bn], x), 1e-10)


def test_the_fold_is_computed_in_float64_then_cast(rng):
    conv = nn.Conv2d(3, 4, 3, generator=rng, dtype=np.float32).eval()
    bn = batch_norm(4, rng, np.float32)
    fused = fuse_conv_bn_eval(conv, bn)
    scale = bn.weight.data.astype(np.float64) / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    w = conv.weight.data.astype(np.float64) * scale[:, None, None, None]
    b = (conv.bias.data.astype(np.float64) - bn.running_mean) * scale + bn.bias.data
    np.testing.assert_array_equal(fused.weight.data, w.astype(np.float32))
    np.testing.assert_array_equal(fused.bias.data, b.astype(np.float32))


def test_fuse_leaves_the_conv_and_the_bn_unchanged(rng):
    conv = nn.Conv2d(3, 4, 3, bias=False, generator=rng, dtype=np.float64).eval()
    bn = batch_norm(4, rng)
    conv.weight.requires_grad = False
    before = {k: np.array(v.data if hasattr(v, "data") else v) for k, v in
              {**conv.state_dict(), **{f"bn.{k}": v for k, v in bn.state_dict().items()}}.items()}
    fused = fuse_conv_bn_eval(conv, bn)
    after = {**conv.state_dict(), **{f"bn.{k}": v for k, v in bn.state_dict().items()}}
    assert conv.bias is None and list(after) == list(before)
    for key, value in before.items():
        np.testing.assert_array_equal(np.asarray(getattr(after[key], "data", after[key])), value)
    assert fused.weight is not conv.weight and list(fused.state_dict()) == ["weight", "bias"]
    assert not fused.weight.requires_grad  # as PyTorch: the fused parameters follow the conv weight's flag


@pytest.mark.parametrize("bias, groups, affine", [(True, 1, True), (False, 2, True), (False, 1, False)])
def test_fold_matches_pytorch_fuse_conv_bn_eval(rng, bias, groups, affine):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.fusion import fuse_conv_bn_eval as torch_fuse

    conv = nn.Conv2d(4, 6, 3, groups=groups, bias=bias, generator=rng, dtype=np.float64).eval()
    bn = batch_norm(6, rng, affine=affine, eps=1e-3)
    tconv = torch.nn.Conv2d(4, 6, 3, groups=groups, bias=bias).double().eval()
    tbn = torch.nn.BatchNorm2d(6, eps=1e-3, affine=affine).double().eval()
    tconv.load_state_dict({k: torch.from_numpy(np.asarray(v.data)) for k, v in conv.state_dict().items()})
    tbn.load_state_dict({k: torch.from_numpy(np.asarray(getattr(v, "data", v))) for k, v in bn.state_dict().items()})
    ours, theirs = fuse_conv_bn_eval(conv, bn), torch_fuse(tconv, tbn)
    np.testing.assert_allclose(ours.weight.data, theirs.weight.detach().numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ours.bias.data, theirs.bias.detach().numpy(), rtol=1e-13, atol=1e-15)


def test_transposed_fold_matches_pytorch(rng):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.fusion import fuse_conv_bn_eval as torch_fuse

    conv = nn.ConvTranspose2d(4, 6, 3, stride=2, generator=rng, dtype=np.float64).eval()
    bn = batch_norm(6, rng)
    tconv, tbn = torch.nn.ConvTranspose2d(4, 6, 3, stride=2).double().eval(), torch.nn.BatchNorm2d(6).double().eval()
    tconv.load_state_dict({k: torch.from_numpy(np.asarray(v.data)) for k, v in conv.state_dict().items()})
    tbn.load_state_dict({k: torch.from_numpy(np.asarray(getattr(v, "data", v))) for k, v in bn.state_dict().items()})
    ours, theirs = fuse_conv_bn_eval(conv, bn, transpose=True), torch_fuse(tconv, tbn, transpose=True)
    np.testing.assert_allclose(ours.weight.data, theirs.weight.detach().numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ours.bias.data, theirs.bias.detach().numpy(), rtol=1e-13, atol=1e-15)


def test_fuse_refuses_layers_in_training_mode(rng):
    conv, bn = nn.Conv2d(3, 4, 3, generator=rng), nn.BatchNorm2d(4)
    with pytest.raises(ConversionError, match=r"eval-mode layers only: Conv2d\(3, 4, kernel_size=\(3, 3\)"
                                              r".* is in training mode \(call model.eval\(\) first"):
        fuse_conv_bn_eval(conv, bn.eval())
    with pytest.raises(ConversionError, match=r"BatchNorm2d\(4, eps=1e-05.*\) is in training mode"):
        fuse_conv_bn_eval(conv.eval(), bn.train())


def test_fuse_refuses_a_bn_without_running_statistics(rng):
    conv, bn = nn.Conv2d(3, 4, 3, generator=rng).eval(), nn.BatchNorm2d(4, track_running_stats=False).eval()
    with pytest.raises(ConversionError, match=r"track_running_stats=False\) has no running statistics \("
                                              r"track_running_stats=False\): it normalizes every batch"):
        fuse_conv_bn_eval(conv, bn)


def test_fuse_refuses_a_channel_mismatch(rng):
    conv, bn = nn.Conv2d(3, 4, 3, generator=rng).eval(), nn.BatchNorm2d(5).eval()
    with pytest.raises(ShapeError, match=r"Conv2d\(3, 4, .*\) has 4 output channels but BatchNorm2d\(5, .*\) "
                                         r"normalizes 5$"):
        fuse_conv_bn_eval(conv, bn)
    with pytest.raises(ShapeError, match=r"the convolution has 4 output channels \(weight shape \(4, 3, 3, 3\)\); "
                                         r"the batch norm's running_var has shape \(5,\), expected \(4,\)"):
        fuse_conv_bn_weights(conv.weight, None, np.zeros(4), np.ones(5), 1e-5, None, None)


def test_fuse_refuses_other_layers_and_a_wrong_transpose(rng):
    conv, bn = nn.Conv2d(3, 4, 3, generator=rng).eval(), nn.BatchNorm2d(4).eval()
    with pytest.raises(TypeError, match="expects a BatchNorm2d as BatchNorm1d.*, got BatchNorm1d"):
        fuse_conv_bn_eval(conv, nn.BatchNorm1d(4).eval())
    with pytest.raises(TypeError, match="expects a Conv2d or ConvTranspose2d as Linear.*, got Linear"):
        fuse_conv_bn_eval(nn.Linear(3, 4).eval(), bn)
    transposed = nn.ConvTranspose2d(3, 4, 3, generator=rng).eval()
    with pytest.raises(ConversionError, match=r"ConvTranspose2d\(3, 4, .*\) is a ConvTranspose2d; pass transpose=True"):
        fuse_conv_bn_eval(transposed, bn)
    with pytest.raises(ConversionError, match=r"transpose=True expects a ConvTranspose2d as Conv2d\(3, 4.*got Conv2d"):
        fuse_conv_bn_eval(conv, bn, transpose=True)


def test_fuse_conv_bn_pairs_replaces_the_pair_in_place(rng):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, generator=rng), nn.BatchNorm2d(4), nn.ReLU()).eval()
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    expected = run(model, x)
    assert fuse_conv_bn_pairs(model, [("0", "1")]) is model
    assert [type(m).__name__ for m in model] == ["Conv2d", "Identity", "ReLU"]
    assert_close(run(model, x), expected, 1e-5)
    assert list(model.state_dict()) == ["0.weight", "0.bias"]


def test_fuse_conv_bn_pairs_names_the_missing_layer_and_the_wrong_one(rng):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, generator=rng), nn.ReLU(), nn.BatchNorm2d(4)).eval()
    conv = model[0]
    with pytest.raises(LayerNotFoundError, match=r"no layer named '5'; valid layers: 0, 1, 2"):
        fuse_conv_bn_pairs(model, [("0", "5")])
    with pytest.raises(TypeError, match=r"expects a BatchNorm2d as 1 \(ReLU\), got ReLU"):
        fuse_conv_bn_pairs(model, [("0", "1")])
    assert model[0] is conv and type(model[2]) is nn.BatchNorm2d  # nothing replaced
