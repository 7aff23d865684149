"""Export at a dynamic batch and image size: every value that depends on the size follows it.

Each forward is exported once (traced at batch 2 and 5x6) with ``verify=False``, so the file
itself is judged: onnxruntime runs it at other batches and sizes and must agree with PyTorch.
Before, the divisor of var / std (n - correction) and the target shapes of reshapes were the
traced numbers, so such files gave wrong values (or failed) at any other size.
"""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import functional as F
from cnnkit import nn
from cnnkit.errors import OnnxExportError
from cnnkit.onnx import export

from .conftest import Fn, onnxruntime_session, run_onnxruntime

torch = pytest.importorskip("torch")
TF = torch.nn.functional

SHAPE = (3, 5, 6)                                   # traced: one sample's (C, H, W)
RUNS = [(1, (5, 6)), (3, (7, 4)), (4, (9, 11))]     # (batch, (H, W)) onnxruntime runs at


# name -> (cnnkit forward, PyTorch forward)
CASES = {
    "var over H, W": (lambda x: F.var(x, (2, 3)), lambda x: x.var((2, 3))),
    "std over the batch": (lambda x: x - F.std(x, 0, keepdim=True), lambda x: x - x.std(0, keepdim=True)),
    "std with correction 2": (lambda x: F.std(x, (1, 3), correction=2), lambda x: x.std((1, 3), correction=2)),
    "instance norm (biased var)": (
        lambda x: (x - F.mean(x, (2, 3), keepdim=True)) / F.sqrt(F.var(x, (2, 3), keepdim=True, unbiased=False) + 1e-5),
        lambda x: (x - x.mean((2, 3), keepdim=True)) / torch.sqrt(x.var((2, 3), keepdim=True, unbiased=False) + 1e-5),
    ),
    "var of everything per sample": (lambda x: F.var(F.flatten(x, 1), 1), lambda x: torch.flatten(x, 1).var(1)),
    "mean over H, W": (lambda x: F.mean(x, (2, 3)), lambda x: x.mean((2, 3))),
    "flatten H, W": (lambda x: F.flatten(x, 2) * 2, lambda x: torch.flatten(x, 2) * 2),
    "flatten H, W, transposed": (lambda x: F.flatten(x, 2).transpose(1, 2), lambda x: torch.flatten(x, 2).transpose(1, 2)),
    "unsqueeze": (lambda x: F.unsqueeze(F.mean(x, (2, 3)), 2), lambda x: x.mean((2, 3)).unsqueeze(2)),
    "squeeze": (lambda x: F.squeeze(F.mean(x, 3, keepdim=True), 3), lambda x: x.mean(3, keepdim=True).squeeze(3)),
    "interpolate, recomputed scale (bilinear)": (
        lambda x: F.interpolate(x, scale_factor=1.7, mode="bilinear", recompute_scale_factor=True),
        lambda x: TF.interpolate(x, scale_factor=1.7, mode="bilinear", recompute_scale_factor=True),
    ),
    "interpolate, recomputed scale (nearest)": (
        lambda x: F.interpolate(x, scale_factor=(2.5, 0.6), mode="nearest", recompute_scale_factor=True),
        lambda x: TF.interpolate(x, scale_factor=(2.5, 0.6), mode="nearest", recompute_scale_factor=True),
    ),
}


def _assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    """Equal shapes; values within 1e-5 of the scale, NaN where PyTorch has NaN (std of one sample)."""
    assert got.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    scale = max(1.0, float(np.abs(expected[np.isfinite(expected)]).max(initial=0.0)))
    np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(expected), rtol=0, atol=1e-5 * scale)


@pytest.mark.filterwarnings("ignore:.*degrees of freedom")
@pytest.mark.parametrize("opset", [11, 17, 18])
@pytest.mark.parametrize("name", list(CASES))
def test_values_that_depend_on_the_size_follow_a_dynamic_batch_and_size(name, opset, tmp_path, rng):
    ours, theirs = CASES[name]
    path = export(Fn(ours), tmp_path / "m.onnx", SHAPE, opset=opset, dynamic_size=True, verify=False)
    session = onnxruntime_session(path)
    for n, hw in RUNS:
        x = rng.standard_normal((n, SHAPE[0]) + hw).astype(np.float32)
        _assert_same(run_onnxruntime(session, x), theirs(torch.from_numpy(x)).numpy())


@pytest.mark.filterwarnings("ignore:.*degrees of freedom")
@pytest.mark.parametrize("name", ["var over H, W", "std over the batch", "flatten H, W, transposed"])
def test_the_self_check_now_accepts_them(name, tmp_path):
    # before, export(verify=True) refused these: "depends on the batch size or the input size"
    export(Fn(CASES[name][0]), tmp_path / "m.onnx", SHAPE, dynamic_size=True)


class _GroupStats(nn.Module):
    """GroupNorm without affine terms, written as PyTorch users write it: x.view(N, G, -1),
    normalized, then back to (N, C, H, W) with N, C, H, W read from x.shape; after a strided
    convolution, so H and W are not the input's."""

    def __init__(self, rng):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, generator=rng)

    def forward(self, x):
        x = self.conv(x)
        N, C, H, W = x.shape
        groups = x.view(N, 2, -1)                                            # (N, G, C/G*H*W)
        mean, var = F.mean(groups, 2, keepdim=True), F.var(groups, 2, keepdim=True, unbiased=False)
        return ((groups - mean) / F.sqrt(var + 1e-5)).view(N, C, H, W)


@pytest.mark.parametrize("opset", [11, 17])
def test_a_groupnorm_style_reshape_back_to_n_c_h_w_follows_a_dynamic_batch_and_size(opset, tmp_path, rng):
    # was refused with dynamic_size=True: "splits dimensions that follow the input's batch or size"
    # (two of N, H, W change and ONNX's Reshape infers one); H and W now come from the shape of
    # the tensor that had them (here the convolution's output)
    model = _GroupStats(rng)
    path = export(model, tmp_path / "m.onnx", SHAPE, opset=opset, dynamic_size=True)
    session = onnxruntime_session(path)
    weight, bias = (torch.from_numpy(p.data) for p in (model.conv.weight, model.conv.bias))
    for n, hw in RUNS:
        x = rng.standard_normal((n, SHAPE[0]) + hw).astype(np.float32)
        expected = TF.group_norm(TF.conv2d(torch.from_numpy(x), weight, bias, stride=2, padding=1), 2).numpy()
        _assert_same(run_onnxruntime(session, x), expected)


def test_a_reshape_splitting_two_dimensions_no_shape_holds_is_refused_naming_the_layer(tmp_path):
    # (N, C, H, W) to (N, C, 2, H/2, 2, W/2): H/2 and W/2 are dimensions of no tensor of the
    # graph and ONNX's Reshape can infer one, so the file would hold the traced H/2 and W/2
    class Quadrants(nn.Module):
        def forward(self, x):
            N, C, H, W = x.shape
            return F.reshape(x, (N, C, 2, H // 2, 2, W // 2)) * 2

    with pytest.raises(OnnxExportError, match=r"cannot export Reshape in the model's forward \(outside any "
                                              r"layer\): a reshape from \(2, 3, 6, 6\) to \(2, 3, 2, 3, 2, 3\) "
                                              r"splits dimensions that follow the input's batch or size"):
        export(Quadrants(), tmp_path / "m.onnx", (3, 6, 6), dynamic_size=True)
    # with a fixed size (and a dynamic batch) it exports and runs
    path = export(Quadrants(), tmp_path / "m.onnx", (3, 6, 6))
    x = np.random.default_rng(1).standard_normal((3, 3, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(run_onnxruntime(path, x), (torch.from_numpy(x).reshape(3, 3, 2, 3, 2, 3) * 2).numpy())


@pytest.mark.parametrize("opset", [11, 14, 19, 20])
def test_tanh_gelu_exports_below_opset_20_like_pytorch(opset, tmp_path, rng):
    # was refused below opset 20 ("Gelu needs opset 20"); now spelled with Tanh there
    import cnnkit
    from cnnkit import Tensor
    from cnnkit.onnx import load

    path = export(nn.GELU("tanh"), tmp_path / "m.onnx", SHAPE, opset=opset, dynamic_size=True)
    session, imported = onnxruntime_session(path), load(path)
    for n, hw in RUNS:
        x = (3 * rng.standard_normal((n, SHAPE[0]) + hw)).astype(np.float32)
        x[0, 0, 0, :3] = [np.inf, 0.0, -0.0]
        expected = TF.gelu(torch.from_numpy(x), approximate="tanh").numpy()
        with cnnkit.no_grad():
            again = imported(Tensor(x)).numpy()
        for got in (run_onnxruntime(session, x), again):
            _assert_same(got, expected)


@pytest.mark.parametrize("opset", [11, 14, 19, 20])
def test_exact_gelu_exports_below_opset_20_with_erf_like_pytorch(opset, tmp_path, rng):
    # was refused below opset 20 ("Gelu needs opset 20 or newer"); now 0.5 * x * (1 + Erf(x / sqrt 2))
    import onnx

    import cnnkit
    from cnnkit import Tensor
    from cnnkit.onnx import load

    path = export(nn.GELU(), tmp_path / "m.onnx", SHAPE, opset=opset, dynamic_size=True)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ("Erf" in ops) == (opset < 20) and ("Gelu" in ops) == (opset >= 20)
    session, imported = onnxruntime_session(path), load(path)
    for n, hw in RUNS:
        x = (3 * rng.standard_normal((n, SHAPE[0]) + hw)).astype(np.float32)
        x[0, 0, 0, :4] = [np.inf, -np.inf, 0.0, -0.0]
        # PyTorch in float64 (its float32 kernel gives NaN at +inf, where x * 1 = inf)
        expected = TF.gelu(torch.from_numpy(x).double()).float().numpy()
        with cnnkit.no_grad():
            again = imported(Tensor(x)).numpy()
        for got in (run_onnxruntime(session, x), again):
            _assert_same(got, expected)


@pytest.mark.parametrize("opset", [11, 17])
def test_erf_exports_as_erf_and_comes_back(opset, tmp_path, rng):
    import cnnkit
    from cnnkit import Tensor
    from cnnkit.onnx import load

    path = export(Fn(lambda x: F.erf(x * 0.7) * x), tmp_path / "m.onnx", SHAPE, opset=opset, dynamic_size=True)
    session, imported = onnxruntime_session(path), load(path)
    for n, hw in RUNS[:2]:
        x = (2 * rng.standard_normal((n, SHAPE[0]) + hw)).astype(np.float32)
        expected = (torch.erf(torch.from_numpy(x) * 0.7) * torch.from_numpy(x)).numpy()
        with cnnkit.no_grad():
            again = imported(Tensor(x)).numpy()
        for got in (run_onnxruntime(session, x), again):
            _assert_same(got, expected)
