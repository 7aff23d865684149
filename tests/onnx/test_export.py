"""cnnkit.onnx.export: every zoo model, pruned and fully convolutional models, and each op's
ONNX counterpart, run in onnxruntime (an independent runtime) at two batch sizes and
compared with cnnkit: max abs difference <= 1e-4 of the output's scale."""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest

import cnnkit
import cnnkit.functional as F
from cnnkit import Function, Tensor, models, nn
from cnnkit.errors import OnnxExportError
from cnnkit.functional.reduction import SelectAlongDimOp
from cnnkit.functional.shape import PadOp
from cnnkit.functional.trig import cos, sin
from cnnkit.onnx import export, load
from cnnkit.surgery.fcn import to_fully_convolutional
from cnnkit.surgery.prune import prune_channels

from .conftest import (
    Fn,
    assert_close_to_scale,
    onnx,
    onnxruntime_session,
    randomize_batchnorm,
    run_cnnkit,
    run_onnxruntime,
)

try:
    import torch
except ImportError:  # PyTorch is one reference among three in the op tests below: the others still run
    torch = None

BATCHES = (1, 3)

# Sizes the zoo models run at here: their design size, or a smaller one with the same
# graph (ImageNet models at 64x64; their adaptive pooling then takes the unequal-window
# path, which AlexNet at 224x224 and ResNet-18 at 224x224 do not).
_SMALL = {"resnet18": (3, 224, 224), "alexnet": (3, 224, 224)}


def _input_shape(name: str) -> tuple[int, ...]:
    shape = models.default_input_shape(name)
    return _SMALL.get(name, shape if shape[1] < 224 else (3, 64, 64))


def _check_in_onnxruntime(model, path, shape, rng, batches=BATCHES, sizes=None) -> None:
    """onnxruntime's outputs equal cnnkit's at each batch size (and each (H, W) of ``sizes``)."""
    session = onnxruntime_session(path)
    for n in batches:
        for hw in sizes or [tuple(shape[1:])]:
            x = rng.standard_normal((n, shape[0]) + tuple(hw)).astype(np.float32)
            assert_close_to_scale(run_onnxruntime(session, x), run_cnnkit(model, x))


def _check_file(path) -> None:
    """The file as written passes ONNX's full check and strict shape inference."""
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path), load_external_data=False)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)


@pytest.mark.parametrize("name", models.list_models())
def test_every_zoo_model_runs_in_onnxruntime_like_cnnkit(name, tmp_path, rng):
    model = randomize_batchnorm(models.get_model(name, num_classes=10, generator=rng), rng).eval()
    shape = _input_shape(name)
    # onnxruntime is the judge here; export's own check by cnnkit's importer runs in the
    # round-trip tests (test_import.py) and everywhere else.
    path = export(model, tmp_path / f"{name}.onnx", shape, verify=False)
    _check_file(path)
    _check_in_onnxruntime(model, path, shape, rng)


def test_pruned_models_run_in_onnxruntime(tmp_path, rng):
    for name in ("lenet5", "resnet20"):
        model = randomize_batchnorm(models.get_model(name, generator=rng), rng).eval()
        shape = models.default_input_shape(name)
        pruned = prune_channels(model, 0.5, input_shape=shape, generator=rng).eval()
        assert sum(p.size for p in pruned.parameters()) < sum(p.size for p in model.parameters())
        path = export(pruned, tmp_path / f"{name}_pruned.onnx", shape)
        _check_file(path)
        _check_in_onnxruntime(pruned, path, shape, rng)


def test_fully_convolutional_model_runs_in_onnxruntime_on_larger_images(tmp_path, rng):
    fcn = to_fully_convolutional(models.lenet5(generator=rng).eval(), (1, 28, 28)).eval()
    path = export(fcn, tmp_path / "lenet5_fcn.onnx", (1, 36, 44))
    _check_file(path)
    x = rng.standard_normal((2, 1, 36, 44)).astype(np.float32)
    scores = run_onnxruntime(path, x)
    assert scores.shape == (2, 10, 3, 5)  # a score map: one window every 4 pixels
    _check_in_onnxruntime(fcn, path, (1, 36, 44), rng)


def _dims(path) -> list[list]:
    graph = onnx.load(str(path)).graph
    return [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in (graph.input[0], graph.output[0])]


def test_dynamic_size_fully_convolutional_models_run_at_any_size(tmp_path, rng):
    """With dynamic_size the image's height and width are symbols: one file scores any image."""
    lenet = to_fully_convolutional(models.lenet5(generator=rng).eval(), (1, 28, 28)).eval()
    path = export(lenet, tmp_path / "lenet5_fcn.onnx", (1, 28, 28), dynamic_size=True)
    assert _dims(path) == [["N", 1, "H", "W"], ["N", 10, "OH", "OW"]]
    _check_file(path)
    _check_in_onnxruntime(lenet, path, (1, 28, 28), rng, sizes=[(28, 28), (36, 44), (61, 30)])
    vgg = randomize_batchnorm(models.vgg11_cifar(generator=rng), rng).eval()
    vgg = to_fully_convolutional(vgg, (3, 32, 32)).eval()
    path = export(vgg, tmp_path / "vgg_fcn.onnx", (3, 32, 32), dynamic_size=True)
    _check_in_onnxruntime(vgg, path, (3, 32, 32), rng, sizes=[(32, 32), (64, 48)])


def test_dynamic_size_models_with_global_pooling(tmp_path, rng):
    """A CIFAR ResNet (its shortcuts slice with ::2) and GoogLeNet take any size through global pooling."""
    for name, shape, sizes in (("resnet20", (3, 32, 32), [(32, 32), (40, 56)]),
                               ("googlenet", (3, 64, 64), [(64, 64), (96, 80)])):
        model = randomize_batchnorm(models.get_model(name, num_classes=10, generator=rng), rng).eval()
        path = export(model, tmp_path / f"{name}.onnx", shape, dynamic_size=True)
        assert _dims(path) == [["N", 3, "H", "W"], ["N", 10]]
        _check_in_onnxruntime(model, path, shape, rng, batches=(1, 2), sizes=sizes)


class _FlattensTheMap(nn.Module):
    """Pools each channel by a reshape to (N, C, H*W) (the traced H*W was baked into the graph)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return F.reshape(y, (y.shape[0], 4, -1)).mean(axis=2)


def test_dynamic_size_refuses_what_depends_on_the_size(tmp_path, rng):
    with pytest.raises(OnnxExportError, match=r"cannot export LeNet5 with a dynamic size: it does not run on a "
                                              r"1x45x47 input \(ShapeError: classifier\.0 \(Linear\)"):
        export(models.lenet5(generator=rng), tmp_path / "m.onnx", (1, 28, 28), dynamic_size=True)
    with pytest.raises(OnnxExportError, match=r"cannot export AdaptiveAvgPool2d in layer 'avgpool' "
                                              r"\(AdaptiveAvgPool2d\): adaptive pooling to a 6x6 grid"):
        export(models.alexnet(num_classes=10, generator=rng), tmp_path / "m.onnx", (3, 64, 64), dynamic_size=True)
    with pytest.raises(ValueError, match=r"dynamic_size needs an image input_shape \(C, H, W\), got \(4,\)"):
        export(nn.Linear(4, 2), tmp_path / "m.onnx", (4,), dynamic_size=True)
    assert not (tmp_path / "m.onnx").exists()


def test_a_reshape_to_the_flattened_map_follows_a_dynamic_size(tmp_path, rng):
    # was refused by the self-check ("does not reproduce the model at batch 1, input 1x15x17"):
    # the Reshape held the traced 64; now its last dimension is -1
    model = _FlattensTheMap()
    path = export(model, tmp_path / "m.onnx", (1, 8, 8), dynamic_size=True)
    _check_in_onnxruntime(model, path, (1, 8, 8), rng, sizes=[(8, 8), (15, 17), (3, 30)])


def test_file_passes_onnx_checks_and_says_its_shapes(tmp_path, rng):
    path = export(models.lenet5(generator=rng), tmp_path / "lenet5.onnx", (1, 28, 28))
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (proto.graph.input[0], proto.graph.output[0])]
    assert dims == [["N", 1, 28, 28], ["N", 10]]
    assert proto.producer_name == "cnnkit" and proto.opset_import[0].version == 17
    inits = {t.name for t in proto.graph.initializer}
    assert inits == set(models.lenet5().state_dict())  # weights keep their state_dict names
    assert {n.name for n in proto.graph.node} >= {"features.0", "features.1", "classifier.4"}


def test_metadata_carries_class_names_and_preprocessing(tmp_path, rng):
    names = [f"digit {i}" for i in range(10)]
    path = export(models.lenet5(generator=rng), tmp_path / "m.onnx", (1, 28, 28), class_names=names,
                  preprocessing={"mean": [0.1307], "std": [0.3081], "scale": 1 / 255})
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["cnnkit.classes"]) == names
    assert json.loads(meta["cnnkit.preprocessing"]) == {
        "input_shape": [1, 28, 28], "layout": "NCHW", "mean": [0.1307], "std": [0.3081], "scale": 1 / 255}
    imported = load(path)
    assert imported.class_names == names and imported.preprocessing["std"] == [0.3081]


def test_fixed_batch(tmp_path, rng):
    model = models.lenet5(generator=rng)
    path = export(model, tmp_path / "m.onnx", (1, 28, 28), dynamic_batch=False)
    dims = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 1, 28, 28]
    _check_in_onnxruntime(model, path, (1, 28, 28), rng, batches=(1,))


@pytest.mark.parametrize("opset", [11, 13, 17, 18, 21])
def test_opsets(opset, tmp_path, rng):
    model = _Kitchen(rng).eval()
    path = export(model, tmp_path / "k.onnx", (3, 12, 12), opset=opset)
    assert onnx.load(str(path)).opset_import[0].version == opset
    _check_in_onnxruntime(model, path, (3, 12, 12), rng)


_amax = getattr(F, "amax", F.max)  # the largest values over an axis (F.max before torch's API)


class _Kitchen(nn.Module):
    """One layer or op of each kind the exporter writes, in one graph."""

    def __init__(self, rng):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, generator=rng)
        self.strided = nn.Conv2d(8, 8, 3, stride=2, padding=(1, 2), dilation=(1, 2), groups=2, generator=rng)
        self.bn = nn.BatchNorm2d(8)
        self.up = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1, generator=rng)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.avg = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.lp = nn.LPPool2d(2, 2)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(8, 5, generator=rng)
        self.head = nn.Linear(5 * 3, 6, generator=rng)
        randomize_batchnorm(self, rng)

    def forward(self, x):
        x = x * 0.5 + 0.1                                          # before any layer
        y = F.relu(self.bn(self.conv(x)))                          # (N, 8, 12, 12)
        y = F.leaky_relu(y, 0.2) - F.elu(y) + F.sigmoid(y) * F.tanh(y)
        z = self.strided(y)                                        # (N, 8, 6, 5)
        t = self.up(z)                                             # (N, 4, 12, 10)
        t = F.pad(t, (1, 1, 0, 1), mode="reflect") + F.pad(t, (1, 1, 0, 1), mode="replicate")
        p = self.pool(y)[:, :, 1:, :6] + self.avg(y)[:, :, :6, 1:] + F.avg_pool2d(y, 2, 2, divisor_override=3)
        p = p + F.sum_pool2d(y, 2)[..., ::-1, :] + self.lp(F.abs(y) + 0.1)   # (N, 8, 6, 6)
        a = F.adaptive_avg_pool2d(p, (4, 5)) + F.adaptive_max_pool2d(p, (4, 5))  # unequal windows
        v = F.cat([F.adaptive_avg_pool2d(t, 1), F.adaptive_max_pool2d(t, 1),
                   F.adaptive_max_pool2d(t, (2, 2))[:, :, :1, 1:]], 1)
        w = self.drop(F.flatten(F.adaptive_avg_pool2d(a, 1), 1))   # (N, 8)
        w = self.fc(w + F.flatten(v, 1).sum(axis=1, keepdims=True))  # (N, 5)
        s = F.stack([w, F.exp(-F.abs(w)), F.sqrt(w * w + 1.0)], 1)  # (N, 3, 5)
        s = F.softmax(s, 1) + F.log_softmax(s, -1) / 10.0
        s = s.permute(0, 2, 1).mean(axis=1) + _amax(s, 2)         # (N, 3)
        h = self.head(F.reshape(F.stack([s] * 5, 2), (-1, 15)))    # (N, 6)
        g = F.linear(s[:, None, :], self.head.weight[:, :3])       # a Linear on 3-D input
        return h + F.reshape(g, (-1, 6)) + F.log(F.pow(F.abs(h) + 1.0, 2.0)) / (h * h + 1.0)


def test_each_op_kind_exported_runs_in_onnxruntime(tmp_path, rng):
    model = _Kitchen(rng).eval()
    path = export(model, tmp_path / "k.onnx", (3, 12, 12))
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ops >= {"Conv", "ConvTranspose", "BatchNormalization", "MaxPool", "AveragePool", "Pad",
                   "Dropout", "Gemm", "MatMul", "Softmax", "LogSoftmax", "ReduceMean", "ReduceMax",
                   "ReduceSum", "Concat", "Slice", "GlobalAveragePool", "GlobalMaxPool", "Pow"}
    _check_in_onnxruntime(model, path, (3, 12, 12), rng)


def test_clone_contiguous_clamp_var_and_std_export_and_run_in_onnxruntime(tmp_path, rng):
    class Stats(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, generator=rng)

        def forward(self, x):
            y = self.conv(x).clone()                                        # (N, 4, 10, 10)
            z = y.transpose(2, 3).contiguous()
            y = y.clamp(-0.5, 0.5) + y.clamp(min=0.1) + y.clip(max=-0.2)
            return F.flatten(y.std((2, 3)) + z.var(-1, correction=0).mean(-1), 1)   # (N, 4)

    model = Stats().eval()
    path = export(model, tmp_path / "stats.onnx", (3, 12, 12))
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Identity", "Sqrt", "ReduceMean", "ReduceSum", "Clip"} <= ops
    _check_in_onnxruntime(model, path, (3, 12, 12), rng)


class _Wrap(nn.Module):
    def __init__(self, rng):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, generator=rng)
        self.wrapped = nn.Conv2d(2, 2, (3, 2), padding=(1, 2), padding_mode="circular", generator=rng)

    def forward(self, x):
        return self.wrapped(self.conv(F.pad(x, (1, 2, 2, 1), mode="circular")))


@pytest.mark.parametrize("opset", [11, 17, 19])
@pytest.mark.parametrize("dynamic_size", [False, True])
def test_circular_padding_runs_in_onnxruntime_at_every_opset(opset, dynamic_size, tmp_path, rng):
    # Pad's "wrap" mode arrived in opset 19; before, slices and a concat (it was refused)
    model = _Wrap(rng).eval()
    path = export(model, tmp_path / "w.onnx", (2, 5, 6), opset=opset, dynamic_size=dynamic_size)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ("Pad" in ops) == (opset >= 19)
    _check_in_onnxruntime(model, path, (2, 5, 6), rng, sizes=[(5, 6), (7, 9)] if dynamic_size else None)


def test_circular_padding_wrapping_more_than_once_needs_opset_19(tmp_path):
    # F.pad refuses it; PadOp (the importer's "wrap") computes it, which Slice cannot
    model = Fn(lambda x: PadOp((3, 3, 0, 0), "circular", 0.0)(x))
    with pytest.raises(OnnxExportError, match=r"circular padding \(3, 3, 0, 0\) that crops or wraps more than "
                                              r"once needs opset 19 or newer \(exporting opset 17\)"):
        export(model, tmp_path / "w.onnx", (2, 3, 2))


@pytest.mark.parametrize("stride, padding, output_padding, dilation, bias", [
    (1, 0, 1, 2, True),    # output_padding >= stride (allowed below the dilation): rows past the full output
    (1, 0, 1, 2, False),
    (1, 2, 1, 2, True),    # ... folded into the end padding
    (2, 1, 1, 1, True),    # the usual upsampling: folded too
    (2, 0, 2, 3, True),    # partly past the stride
])
def test_conv_transpose_output_padding_runs_in_onnxruntime(stride, padding, output_padding, dilation, bias,
                                                           tmp_path, rng):
    # onnxruntime refuses an output_padding not below the stride, which PyTorch and cnnkit
    # allow below max(stride, dilation)
    model = nn.ConvTranspose2d(3, 4, 3, stride, padding, output_padding, bias=bias, dilation=dilation,
                               generator=rng).eval()
    for opset in (11, 17):
        path = export(model, tmp_path / f"up{opset}.onnx", (3, 5, 4), opset=opset)
        _check_in_onnxruntime(model, path, (3, 5, 4), rng)


# --------------------------------------------------------------------------- reductions, rounding division, sin, cos
NEWEST_OPSET = onnx.defs.onnx_opset_version()


@pytest.mark.parametrize("pool", [
    nn.MaxPool2d((3, 1), 2, (1, 0), ceil_mode=True),
    nn.MaxPool2d((3, 1), 2, (1, 0), dilation=(2, 1), ceil_mode=True),
    nn.AvgPool2d((3, 1), 2, (1, 0), ceil_mode=True),
    nn.AvgPool2d((3, 1), 2, (1, 0), ceil_mode=True, count_include_pad=False),
    nn.AvgPool2d(1, 2, ceil_mode=True, divisor_override=3),
])
@pytest.mark.parametrize("opset", [11, 17, NEWEST_OPSET])
def test_ceil_mode_pools_whose_last_window_starts_in_the_padding(pool, opset, tmp_path, rng):
    # On 7x6, the last ceil_mode column window starts in the end padding and is dropped;
    # ONNX's shape inference kept it before opset 22, so the export failed ONNX's checks.
    path = export(pool, tmp_path / "pool.onnx", (2, 7, 6), opset=opset)
    assert pool(Tensor(np.zeros((1, 2, 7, 6), np.float32))).shape[3] == 3
    _check_in_onnxruntime(pool, path, (2, 7, 6), rng)


@pytest.mark.parametrize("pool", [
    nn.SumPool2d(3, 2, ceil_mode=True),                         # 7x6: the last windows run past the input
    nn.AvgPool2d((3, 2), (2, 3), (1, 1), ceil_mode=True, divisor_override=5),
])
@pytest.mark.parametrize("opset", [11, 17])
def test_divisor_override_windows_past_the_padding_are_summed_whole(pool, opset, tmp_path, rng):
    # was refused ("ONNX's average would divide that window by its clipped area")
    path = export(pool, tmp_path / "pool.onnx", (2, 7, 6), opset=opset)
    _check_in_onnxruntime(pool, path, (2, 7, 6), rng)


def test_divisor_override_with_ceil_mode_needs_a_fixed_size(tmp_path, rng):
    # 12x5 traced: no ceil_mode window past the padding; 13x5 has one, which
    # onnxruntime's average divided by its clipped area (the export was accepted, and wrong)
    pool = nn.AvgPool2d((3, 2), (3, 1), (0, 1), ceil_mode=True, divisor_override=3)
    with pytest.raises(OnnxExportError, match=r"in the model \(AvgPool2d\): divisor_override with ceil_mode and a dynamic "
                                              r"size.*export with dynamic_size=False"):
        export(pool, tmp_path / "pool.onnx", (1, 12, 5), dynamic_size=True)
    path = export(pool, tmp_path / "pool.onnx", (1, 12, 5))
    _check_in_onnxruntime(pool, path, (1, 12, 5), rng)


@pytest.mark.parametrize("pool, output", [
    (nn.MaxPool2d((2, 1), 2, ceil_mode=True), (4, 3)),                    # columns: input cropped
    (nn.AvgPool2d((2, 1), 2, ceil_mode=True, count_include_pad=False), (4, 3)),
    (nn.MaxPool2d((2, 4), (2, 5), (0, 2), ceil_mode=True), (4, 2)),       # columns: end padding 1
    (nn.AvgPool2d((2, 4), (2, 5), (0, 2), ceil_mode=True), (4, 2)),
    (nn.AvgPool2d((2, 4), (2, 5), (0, 2), ceil_mode=True, count_include_pad=False), (4, 2)),
])
@pytest.mark.parametrize("opset", [11, 21, NEWEST_OPSET])
def test_ceil_mode_pools_dropping_a_window_on_one_axis_only(pool, output, opset, tmp_path, rng):
    # On 7x6 the rows need ceil_mode and the columns drop their last window: ceil_mode stays
    # and the columns' padding (or input) ends where their last window does.
    path = export(pool, tmp_path / "pool.onnx", (2, 7, 6), opset=opset)
    assert pool(Tensor(np.zeros((1, 2, 7, 6), np.float32))).shape[2:] == output
    _check_in_onnxruntime(pool, path, (2, 7, 6), rng)


def _tricky(n: int) -> np.ndarray:
    """(n, 3, 8) float32: negatives, exact halves, tied extremes, signed zeros, and 1.0, 0.1
    (1 // 0.1 is 9, though 1 / 0.1 rounds to 10.0)."""
    rows = np.array([[2.5, -2.5, 0.5, -0.5, 1.0, -1.0, 0.0, -0.0],
                     [3.0, 3.0, -1.5, -1.5, 7.5, -7.5, 0.1, 1.0],
                     [-4.0, 2.0, -4.0, 2.0, 0.25, -0.75, 5.0, -0.0]], np.float32)
    return np.stack([rows * (k + 1) * (-1) ** k for k in range(n)])


_DIVISORS = [np.float32(d) for d in (0.5, -1.5, 0.1, 3.0)]


def _divisions(div, cat, scalar, mode: str):
    """x divided by scalars and by its own first row (zeros included: inf and NaN), and its
    second row divided by x: (N, 18, 8). ``div``, ``cat``, ``scalar`` are cnnkit's or PyTorch's."""
    def fn(x):
        parts = [div(x, scalar(d), rounding_mode=mode) for d in _DIVISORS]
        return cat(parts + [div(x, x[:, :1], rounding_mode=mode), div(x[:, 1:2], x, rounding_mode=mode)], 1)

    return fn


def _remainders(rem, cat, scalar):
    """As _divisions, for fmod or remainder (x % d): (N, 18, 8)."""
    def fn(x):
        parts = [rem(x, scalar(d)) for d in _DIVISORS]
        return cat(parts + [rem(x, x[:, :1]), rem(x[:, 1:2], x)], 1)

    return fn


# name -> (cnnkit's forward, PyTorch's, ONNX operators the file must hold, whether the outputs are equal
# bit for bit: max, min and rounded quotients are; sums and sines may differ in the last bit)
_EXACT_CASES = {
    "amin": (lambda x: F.amin(x, 1), lambda t: torch.amin(t, 1), {"ReduceMin"}, True),
    "amin-keepdim-two-dims": (lambda x: F.amin(x, (1, 2), keepdim=True),
                              lambda t: torch.amin(t, (1, 2), keepdim=True), {"ReduceMin"}, True),
    "amax": (lambda x: F.amax(x, -1), lambda t: torch.amax(t, -1), {"ReduceMax"}, True),
    "min-of-all": (lambda x: x - x.min(), lambda t: t - t.min(), {"ReduceMin"}, True),
    "max-of-all-then-a-0d-amin": (lambda x: x - F.amin(F.max(x), 0), lambda t: t - torch.amin(torch.max(t), 0),
                                  {"ReduceMax", "Identity"}, True),
    "min-dim-values": (lambda x: F.min(x, 2).values, lambda t: torch.min(t, 2).values, {"ReduceMin"}, True),
    "max-dim-values-keepdim": (lambda x: x.max(1, keepdim=True).values,
                               lambda t: t.max(1, keepdim=True).values, {"ReduceMax"}, True),
    "sum-mean": (lambda x: x.sum(1) + F.mean(x, (1, 2), keepdim=True)[:, 0],
                 lambda t: t.sum(1) + torch.mean(t, (1, 2), keepdim=True)[:, 0], {"ReduceSum", "ReduceMean"}, False),
    "div-floor": (_divisions(F.div, F.cat, Tensor, "floor"),
                  lambda t: _divisions(torch.div, torch.cat, torch.tensor, "floor")(t), {"Mod", "Floor"}, True),
    "div-trunc": (_divisions(F.div, F.cat, Tensor, "trunc"),
                  lambda t: _divisions(torch.div, torch.cat, torch.tensor, "trunc")(t), {"Sign", "Floor"}, True),
    # x % d and fmod had no ONNX counterpart (export refused RemainderOp)
    "remainder": (_remainders(F.remainder, F.cat, Tensor),
                  lambda t: _remainders(torch.remainder, torch.cat, torch.tensor)(t), {"Mod", "Where"}, True),
    "fmod": (_remainders(F.fmod, F.cat, Tensor), lambda t: _remainders(torch.fmod, torch.cat, torch.tensor)(t),
             {"Mod"}, True),
    # maximum / minimum (added this afternoon) had no emitter; NaN (0 / 0 of the first row) wins
    "maximum-minimum": (lambda x: F.cat([F.maximum(x, x[:, :1] / x[:, :1]), F.minimum(x[:, 1:2], x)], 1),
                        lambda t: torch.cat([torch.maximum(t, t[:, :1] / t[:, :1]), torch.minimum(t[:, 1:2], t)], 1),
                        {"Max", "Min"}, True),
    "sin-cos": (lambda x: F.cat([sin(x), cos(x)], 1), lambda t: torch.cat([torch.sin(t), torch.cos(t)], 1),
                {"Sin", "Cos"}, False),
}




@pytest.mark.parametrize("opset", [13, 17, NEWEST_OPSET])
@pytest.mark.parametrize("case", list(_EXACT_CASES))
def test_reductions_rounding_division_sin_cos_match_cnnkit_torch_and_the_reimport(case, opset, tmp_path):
    ours, theirs, written, exact = _EXACT_CASES[case]
    model = Fn(ours)
    path = export(model, tmp_path / "m.onnx", (3, 8), opset=opset)
    _check_file(path)
    assert written <= {n.op_type for n in onnx.load(str(path)).graph.node}
    x = _tricky(3)
    expected = run_cnnkit(model, x)
    outputs = {"onnxruntime": run_onnxruntime(path, x), "cnnkit.onnx.load": run_cnnkit(load(path), x)}
    if torch is not None:
        outputs["torch"] = theirs(torch.from_numpy(x)).numpy()
    for who, got in outputs.items():
        assert got.shape == expected.shape, who
        if exact:  # NaN equals NaN here; a signed zero equals either zero
            np.testing.assert_array_equal(got, expected, err_msg=who)
        else:
            np.testing.assert_allclose(got, expected, rtol=2e-6, atol=2e-6, err_msg=who)


def test_floor_division_is_not_the_floor_of_the_rounded_quotient(tmp_path):
    """The case Div-then-Floor gets wrong: 1 / 0.1 rounds to 10.0 in float32, 1 // 0.1 is 9."""
    model = Fn(lambda x: F.div(x, Tensor(np.float32(0.1)), rounding_mode="floor"))
    path = export(model, tmp_path / "m.onnx", (2,))
    x = np.array([[1.0, -1.0]], np.float32)
    assert (x / np.float32(0.1)).tolist() == [[10.0, -10.0]]
    np.testing.assert_array_equal(run_onnxruntime(path, x), [[9.0, -10.0]])


# --------------------------------------------------------------------------- errors
class _Cube(Function):
    """A user-defined op ONNX export does not know. forward: y = x**3."""

    def forward(self, x):
        return x**3

    def backward(self, gy):
        raise NotImplementedError


class _CubeLayer(nn.Module):
    def forward(self, x):
        return _Cube()(x)


class _Net(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.block = nn.Sequential(nn.ReLU(), inner)

    def forward(self, x):
        return F.flatten(self.block(self.conv(x)), 1)


class _TrainingDropout(nn.Module):
    def forward(self, x):
        return F.dropout(x, 0.5, training=True)


class _BatchStats(nn.Module):
    def forward(self, x):
        return F.batch_norm(x, None, None, training=True)


class _Loss(nn.Module):
    """A loss inside the forward (the losses added this afternoon had no entry: 'no counterpart')."""

    def __init__(self, loss):
        super().__init__()
        self.loss = loss

    def forward(self, x):
        return self.loss(F.sigmoid(x), F.sigmoid(x * 2)) + x


@pytest.mark.parametrize("inner, message", [
    (_CubeLayer(), r"cannot export _Cube in layer 'block\.1' \(_CubeLayer\): ONNX export has no counterpart"),
    (_Loss(F.binary_cross_entropy), r"cannot export BinaryCrossEntropy in layer 'block\.1' \(_Loss\): a loss is not"),
    (_Loss(F.huber_loss), r"cannot export Huber in layer 'block\.1' \(_Loss\): a loss is not part of an inference"),
    (_Loss(F.smooth_l1_loss), r"cannot export SmoothL1 in layer 'block\.1' \(_Loss\): a loss is not part"),
    (_TrainingDropout(), r"cannot export Dropout in layer 'block\.1' \(_TrainingDropout\): dropout in training mode"),
    (_BatchStats(), r"cannot export BatchNorm in layer 'block\.1' \(_BatchStats\): BatchNorm normalizing with batch statistics"),
])
def test_an_op_onnx_cannot_express_is_refused_naming_the_layer(inner, message, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"the previous file")
    with pytest.raises(OnnxExportError, match=message):
        export(_Net(inner), path, (1, 6, 6))
    assert path.read_bytes() == b"the previous file"  # nothing half-written
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


class _Reshaped(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.fc, self.shape = nn.Linear(3, 3), shape

    def forward(self, x):
        return F.reshape(self.fc(x), self.shape)


def test_a_reshape_mixing_the_batch_needs_a_fixed_batch(tmp_path):
    # (N, 4, 3) -> (4, 3N): the output does not start with the batch (the second trace, at
    # batch 3, shows which dimension holds it; this was "mixes the batch", from batch 2 alone)
    with pytest.raises(OnnxExportError, match=r"the output's shape \(4, 6\) does not start with the batch \(2\)"):
        export(_Reshaped((4, -1)), tmp_path / "m.onnx", (4, 3))
    export(_Reshaped((4, -1)), tmp_path / "m.onnx", (4, 3), dynamic_batch=False)


def test_a_forward_that_depends_on_the_batch_size_fails_the_self_check(tmp_path):
    # (N, 4, 3) -> (2, 6N): at batch 2 alone this looks like a reshape keeping the batch (it was
    # refused by the self-check); the second trace, at batch 3, shows the output's first dimension stays 2.
    with pytest.raises(OnnxExportError, match=r"the output's first dimension does not follow the batch \(shape "
                                              r"\(2, 12\) at batch 2, \(2, 18\) at batch 3\); export with "
                                              r"dynamic_batch=False"):
        export(_Reshaped((2, -1)), tmp_path / "m.onnx", (4, 3))

    class CountsTheBatch(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x) + Tensor(np.full((x.shape[0], 1), float(x.shape[0]), np.float32))

    with pytest.raises(OnnxExportError, match=r"does not reproduce the model at batch 1"):
        export(CountsTheBatch(), tmp_path / "m.onnx", (4,))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"input_shape": (1, 0, 28)}, ValueError, r"input_shape of positive sizes"),
    ({"input_shape": "28x28"}, ValueError, r"input_shape as a tuple of ints"),
    ({"opset": 9}, ValueError, r"export supports opsets 11 to \d+, got 9"),
])
def test_bad_arguments(kwargs, error, message, tmp_path):
    args = {"input_shape": (1, 28, 28)} | kwargs
    with pytest.raises(error, match=message):
        export(models.lenet5(), tmp_path / "m.onnx", **args)


def test_float64_models_are_refused_with_the_fix(tmp_path):
    with cnnkit.default_dtype(np.float64):
        model = models.lenet5()
    with pytest.raises(OnnxExportError, match=r"writes float32 models.*model\.float\(\)"):
        export(model, tmp_path / "m.onnx", (1, 28, 28))


class _IntegerFloor(nn.Module):
    """Floors x / 0.5 through integers: a cast to int64 ends the recorded graph."""

    def forward(self, x):
        q = F.div(F.cast(x * 4, np.int64), 2, rounding_mode="floor")
        return x + F.cast(q, np.float32)


@pytest.mark.parametrize("dynamic_batch", [True, False])
def test_a_forward_that_depends_on_unrecorded_values_fails_the_self_check_saying_so(dynamic_batch, tmp_path):
    batch = 2 if dynamic_batch else 1
    with pytest.raises(OnnxExportError, match=rf"of _IntegerFloor does not reproduce the model on another input of "
                                              rf"the traced shape \(batch {batch}: output .*\): its forward depends "
                                              r"on the input's values .*integer tensors"):
        export(_IntegerFloor(), tmp_path / "m.onnx", (5,), dynamic_batch=dynamic_batch)


def test_the_self_check_says_when_cnnkit_cannot_import_a_node_it_exported(monkeypatch, tmp_path):
    from cnnkit.onnx.ops import TRANSLATORS

    monkeypatch.delitem(TRANSLATORS, "ReduceMin")
    with pytest.raises(OnnxExportError) as caught:
        export(Fn(lambda x: F.amin(x, 1)), tmp_path / "m.onnx", (3, 4))
    message = str(caught.value)
    assert message.startswith("cnnkit's own importer cannot run the exported graph of Fn at batch 1, so the "
                              "self-check cannot compare it with the model: ONNX operator 'ReduceMin' (node 'amax', "
                              "opset 17) is not supported by cnnkit")
    assert message.endswith("(a gap in cnnkit, not in the model; verify=False writes the file unchecked)")
    assert "batch size" not in message
    path = export(Fn(lambda x: F.amin(x, 1)), tmp_path / "m.onnx", (3, 4), verify=False)
    x = _tricky(2)[:, :, :4]
    np.testing.assert_array_equal(run_onnxruntime(path, x), x.min(1))


def test_the_self_check_says_when_an_op_is_written_wrongly(monkeypatch, tmp_path):
    from cnnkit.onnx import exporter

    monkeypatch.setitem(exporter._EMITTERS, "SinOp", exporter._simple("Cos"))
    with pytest.raises(OnnxExportError, match=r"of Fn does not reproduce the model even on the input it was traced "
                                              r"with \(batch 2: output \(2, 3, 4\) vs \(2, 3, 4\), max abs "
                                              r"difference .*\): an op is written wrongly, a bug in cnnkit's exporter"):
        export(Fn(sin), tmp_path / "m.onnx", (3, 4))


@pytest.mark.parametrize("index, traced", [
    (lambda x: x[:, :, -1:], (2, 1, 5)),       # the whole axis at the traced height 1: was no Slice
    (lambda x: x[:, :, -1], (2, 3, 5)),        # was row 2 of any height
    (lambda x: x[..., -2, 1:], (2, 3, 5)),     # was row 1 of any height
])
def test_indexing_from_the_end_follows_a_dynamic_size(index, traced, tmp_path, rng):
    model = Fn(index)
    path = export(model, tmp_path / "index.onnx", traced, dynamic_size=True)
    _check_in_onnxruntime(model, path, traced, rng, sizes=[traced[1:], (4, 6), (7, 3)])


@pytest.mark.parametrize("model", [nn.Identity(), nn.Sequential(), nn.Dropout(0.3)])
def test_a_model_returning_its_input_exports_as_identity(model, tmp_path, rng):
    # no op was recorded: the trace raised "the output has no creator op" (a ValueError)
    path = export(model, tmp_path / "id.onnx", (2, 3, 4))
    _check_file(path)
    x = rng.standard_normal((3, 2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(run_onnxruntime(path, x), x)


def test_an_output_holding_nan_and_infinities_passes_the_self_check(tmp_path, rng):
    # sqrt of negatives is NaN, log(relu(x)) -inf: the self-check compared NaN with NaN and
    # refused the export as "written wrongly"
    model = Fn(lambda x: F.cat([F.sqrt(x), F.log(F.relu(x))], 1))
    path = export(model, tmp_path / "m.onnx", (3, 4))
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    expected = run_cnnkit(model, x)
    assert np.isnan(expected).any() and np.isinf(expected).any()
    np.testing.assert_allclose(run_onnxruntime(path, x), expected, rtol=1e-5)


def test_values_at_positions_from_outside_the_graph_are_refused(tmp_path):
    index = np.zeros((2, 1, 4), np.int64)
    with pytest.raises(OnnxExportError, match=r"cannot export SelectAlongDim in the model's forward \(outside any "
                                              r"layer\): values picked at positions computed outside cnnkit's ops"):
        export(Fn(lambda x: SelectAlongDimOp(index, 1, False)(x)), tmp_path / "m.onnx", (3, 4))


class _Activations(nn.Module):
    """Each activation with an ONNX counterpart: Clip, Sigmoid * x, Softplus, HardSigmoid,
    HardSwish (x * HardSigmoid before opset 14) and Gelu (spelled with Erf and Tanh before opset 20)."""

    def __init__(self, rng):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, generator=rng)
        self.acts = nn.ModuleList([nn.Hardtanh(-0.5, 0.7), nn.ReLU6(), nn.SiLU(), nn.Softplus(), nn.Softplus(2.0, 20.0),
                                   nn.Hardsigmoid(), nn.Hardswish()])
        self.gelus = nn.ModuleList([nn.GELU(), nn.GELU("tanh")])

    def forward(self, x):
        y = self.conv(x) * 4.0                                     # (N, 4, 6, 6), past every kink
        return sum((act(y) for act in [*self.acts, *self.gelus]), F.relu6(x[:, :1] * 8.0))


@pytest.mark.parametrize("opset", [11, 14, 20, NEWEST_OPSET])
def test_gelu_silu_softplus_and_hard_activations_run_in_onnxruntime(opset, tmp_path, rng):
    model = _Activations(rng).eval()
    path = export(model, tmp_path / "a.onnx", (2, 6, 6), opset=opset)
    _check_file(path)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Clip", "Sigmoid", "Softplus", "HardSigmoid"} <= ops
    assert ("HardSwish" in ops) == (opset >= 14) and ("Gelu" in ops) == (opset >= 20)
    assert ("Erf" in ops) == (opset < 20)
    _check_in_onnxruntime(model, path, (2, 6, 6), rng)
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    assert_close_to_scale(run_cnnkit(load(path), x), run_cnnkit(model, x))  # and back into cnnkit


@pytest.mark.parametrize("layer, opset, message", [
    (nn.Softplus(threshold=5.0), 17, r"cannot export Softplus in layer 'act' \(Softplus\): ONNX's Softplus has no "
                                     r"threshold; Softplus\(threshold=5.0\) differs"),
])
def test_activations_onnx_cannot_write_at_that_opset_are_refused(layer, opset, message, tmp_path):
    model = nn.Sequential(OrderedDict(act=layer))
    with pytest.raises(OnnxExportError, match=message):
        export(model, tmp_path / "m.onnx", (1, 4, 4), opset=opset)


@pytest.mark.parametrize("opset", [11, NEWEST_OPSET])
def test_clamp_between_tensor_bounds_exports_as_max_and_min(opset, tmp_path, rng):
    class Clamped(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 3, padding=1, generator=rng)
            self.lo = nn.Parameter(Tensor(rng.standard_normal((3, 1, 1)).astype(np.float32) - 0.5))
            self.register_buffer("hi", np.abs(rng.standard_normal(5).astype(np.float32)))

        def forward(self, x):
            y = self.conv(x)                                            # (N, 3, 5, 5)
            return y.clamp(self.lo, self.hi) + F.clamp(y, min=self.lo) + F.clamp(y, max=Tensor(self.hi))

    model = Clamped().eval()
    path = export(model, tmp_path / "c.onnx", (2, 5, 5), opset=opset)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("Max") == 2 and ops.count("Min") == 2
    _check_in_onnxruntime(model, path, (2, 5, 5), rng)
