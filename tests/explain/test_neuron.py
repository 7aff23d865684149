"""explain_neuron rebuilds every output number from its inputs; input_boxes is the true receptive field."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import functional as F
from cnnkit import models, nn
from cnnkit.errors import NeuronError
from cnnkit.explain.graph import INPUT, forward_pass
from cnnkit.explain.neuron import explain_neuron, input_boxes


class Zoo(nn.Module):
    """One of everything the explanations cover: grouped, dilated, strided, "same" and
    reflect-padded convolutions; max/avg/sum/adaptive pools with padding, dilation and
    ceil_mode; BatchNorm with running statistics; several activations; a residual add,
    a concatenation, a flatten and a linear layer."""

    def __init__(self, rng):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1, generator=rng)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.LeakyReLU(0.1)
        self.b = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4, generator=rng)
        self.c = nn.Conv2d(8, 6, 3, padding="same", padding_mode="reflect", generator=rng)
        self.d = nn.Conv2d(8, 6, 5, stride=2, padding=1, bias=False, generator=rng)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1, dilation=1, ceil_mode=True)
        self.avg = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.sum = nn.SumPool2d(2)
        self.adapt = nn.AdaptiveAvgPool2d((3, 2))
        self.amax = nn.AdaptiveMaxPool2d(3)
        self.elu, self.sig, self.tanh = nn.ELU(), nn.Sigmoid(), nn.Tanh()
        self.fc = nn.Linear(6 * 3 * 2 + 12 * 3 * 3, 5, generator=rng)

    def forward(self, x):
        y = self.act(self.bn(self.a(x)))                   # (8, 13, 13)
        y = y + self.elu(self.b(y))                        # residual add
        c, d = self.c(y), self.d(y)                        # (6, 13, 13), (6, 6, 6)
        p = F.cat([self.pool(self.sig(c)), self.avg(self.tanh(c))], 1)   # (12, 7, 7)
        s = self.sum(p)                                    # (12, 3, 3)
        z = F.cat([F.flatten(self.adapt(d), 1), F.flatten(self.amax(s), 1)], 1)
        return self.fc(z)


def _zoo(rng):
    model = Zoo(rng)
    model.bn.running_mean.data[:] = rng.standard_normal(8).astype(np.float32)
    model.bn.running_var.data[:] = rng.uniform(0.5, 2.0, 8).astype(np.float32)
    model.bn.weight.data[:] = rng.uniform(0.5, 1.5, 8).astype(np.float32)
    return model, (3, 13, 13)


MODELS = {
    "zoo": _zoo,
    "lenet5": lambda rng: (models.lenet5(generator=rng), (1, 28, 28)),
    "lenet5-tanh-avg": lambda rng: (models.lenet5(activation="tanh", pooling="avg", generator=rng), (1, 28, 28)),
    "resnet20": lambda rng: (models.resnet20(generator=rng), (3, 32, 32)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_layer_rebuilds_its_forward_values(name, rng):
    model, shape = MODELS[name](rng)
    model.eval()
    tr = forward_pass(model, rng.standard_normal((1,) + shape).astype(np.float32))
    rebuilt = set()
    for u in tr.units:
        out = np.asarray(u.output.data[0])
        for _ in range(4):
            index = tuple(int(rng.integers(0, n)) for n in out.shape)
            a = explain_neuron(tr, u.index, index)
            assert a["value"] == pytest.approx(float(out[index]))
            if a["computed"] is not None:
                rebuilt.add(a["kind"])
                assert a["computed"] == pytest.approx(a["value"], rel=1e-4, abs=1e-5), (u.name, index, a["kind"])
    expected = {"zoo": {"conv", "batchnorm", "pointwise", "add", "maxpool", "avgpool", "concat", "reshape", "linear"},
                "lenet5": {"conv", "pointwise", "maxpool", "reshape", "linear"},
                "lenet5-tanh-avg": {"conv", "pointwise", "avgpool", "reshape", "linear"},
                "resnet20": {"conv", "batchnorm", "pointwise", "add", "avgpool", "reshape", "linear"}}[name]
    assert expected <= rebuilt


def test_a_convolution_neuron_reads_its_window_and_filter(rng):
    model, shape = _zoo(rng)
    model.eval()
    x = rng.standard_normal((1,) + shape).astype(np.float32)
    tr = forward_pass(model, x)
    unit = next(u for u in tr.units if u.path == "d")           # 5x5, stride 2, padding 1, no bias
    a = explain_neuron(tr, unit.index, (4, 0, 3))
    assert a["kind"] == "conv" and a["bias"] is None and a["input_channels"] == 8
    assert a["rows"] == [-1, 0, 1, 2, 3] and a["cols"] == [5, 6, 7, 8, 9]
    assert a["inside"][0] == [False] * 5 and all(a["inside"][1])
    y_in = np.asarray(unit.input_tensors[0].data[0], np.float64)          # (8, 13, 13)
    w = np.asarray(model.d.weight.data[4], np.float64)
    for ch in a["channels"]:
        c = ch["channel"]
        window = np.zeros((5, 5))
        window[1:] = y_in[c, 0:4, 5:10]
        np.testing.assert_allclose(ch["x"], window, rtol=1e-12)
        np.testing.assert_allclose(ch["w"], w[c])
        np.testing.assert_allclose(ch["products"], window * w[c], rtol=1e-12)
    shown = sum(ch["sum"] for ch in a["channels"])
    assert shown + a["other_channels"]["sum"] == pytest.approx(a["sum"])
    assert a["window_box"] == [0, 3, 5, 9]


def test_grouped_convolution_reads_only_its_group(rng):
    model, shape = _zoo(rng)
    model.eval()
    tr = forward_pass(model, rng.standard_normal((1,) + shape).astype(np.float32))
    unit = next(u for u in tr.units if u.path == "b")            # 8 -> 8 channels in 4 groups of 2
    a = explain_neuron(tr, unit.index, (5, 6, 6))
    assert sorted(ch["channel"] for ch in a["channels"]) == [4, 5]


def test_max_pool_names_the_first_maximum(rng):
    model, shape = _zoo(rng)
    model.eval()
    tr = forward_pass(model, rng.standard_normal((1,) + shape).astype(np.float32))
    unit = next(u for u in tr.units if u.path == "pool")
    a = explain_neuron(tr, unit.index, (2, 0, 0))
    assert a["kind"] == "maxpool" and a["rows"] == [-1, 0, 1]
    assert a["window"][0] == [None, None, None]                 # padding
    i, j = a["winner"]
    assert a["window"][i][j] == pytest.approx(a["value"])
    assert a["value"] == max(v for row in a["window"] for v in row if v is not None)


def test_a_linear_neuron_lists_its_largest_inputs_with_their_image_positions(rng):
    model = models.lenet5(generator=rng)
    model.eval()
    tr = forward_pass(model, rng.standard_normal((1, 1, 28, 28)).astype(np.float32))
    fc = next(u for u in tr.units if u.path == "classifier.0")
    a = explain_neuron(tr, fc.index, (7,))
    assert a["kind"] == "linear" and a["in_features"] == 400 and a["source_shape"] == [16, 5, 5]
    magnitudes = [abs(t["product"]) for t in a["terms"]]
    assert magnitudes == sorted(magnitudes, reverse=True) and len(magnitudes) == 12
    t = a["terms"][0]
    assert t["source"] == list(np.unravel_index(t["input"], (16, 5, 5)))


def test_the_activation_chain_follows_a_convolution(rng):
    model = models.resnet20(generator=rng)
    model.eval()
    tr = forward_pass(model, rng.standard_normal((1, 3, 32, 32)).astype(np.float32))
    conv = tr.units[0]
    a = explain_neuron(tr, conv.index, (3, 10, 10))
    assert [s["type"] for s in a["after"]] == ["BatchNorm2d", "ReLU"]
    assert a["after"][-1]["value"] == pytest.approx(max(0.0, a["after"][0]["value"]))


def test_bad_indices_are_refused(rng):
    model = models.lenet5(generator=rng)
    model.eval()
    tr = forward_pass(model, np.zeros((1, 1, 28, 28), np.float32))
    with pytest.raises(NeuronError, match=r"features.0: index \(6, 0, 0\) is outside its output of shape \(6, 28, 28\)"):
        explain_neuron(tr, 0, (6, 0, 0))
    with pytest.raises(NeuronError, match="index \\(1, 2\\) is outside"):
        explain_neuron(tr, 0, (1, 2))
    with pytest.raises(NeuronError, match="unit 12 does not exist; the trace has units 0 to 11"):
        explain_neuron(tr, 12, (0,))


# --------------------------------------------------------------------------- receptive fields
def _support(model, x, unit_index, index):
    """Bounding box of the input pixels whose gradient is non-zero: an independent receptive field."""
    tr = forward_pass(model, x)
    u = tr.units[unit_index]
    seed = np.zeros(u.output.shape, np.float32)
    seed[(0,) + tuple(index)] = 1.0
    u.output.backward(seed)
    g = np.abs(np.asarray(tr.input.grad[0])).sum(axis=0)
    rows, cols = np.nonzero(g.any(axis=1))[0], np.nonzero(g.any(axis=0))[0]
    return tr, (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max()))


class Linear2d(nn.Module):
    """Convolutions and average pools only: every input pixel in the field has a non-zero gradient."""

    def __init__(self, rng):
        super().__init__()
        self.a = nn.Conv2d(2, 4, 3, padding=1, generator=rng)
        self.b = nn.Conv2d(4, 4, 3, stride=2, padding=1, dilation=2, generator=rng)
        self.pool = nn.AvgPool2d(2)
        self.c = nn.Conv2d(4, 3, 5, padding=2, generator=rng)
        self.skip = nn.Conv2d(2, 3, 3, stride=4, generator=rng)

    def forward(self, x):
        return self.c(self.pool(self.b(self.a(x)))) + self.skip(x)


@pytest.mark.parametrize("index", [(0, 0, 0), (1, 3, 4), (2, 6, 6), (0, 5, 1)])
def test_the_input_box_is_exactly_where_the_gradient_reaches(rng, index):
    model = Linear2d(rng)
    model.eval()
    x = rng.standard_normal((1, 2, 30, 30)).astype(np.float32)            # -> (3, 7, 7)
    tr, support = _support(model, x, unit_index=-1, index=index)
    assert tr.units[-1].type == "Add"
    boxes = input_boxes(tr, len(tr.units) - 1, (index[1], index[1], index[2], index[2]))
    assert tuple(boxes[INPUT]) == support


@pytest.mark.parametrize("unit_name", ["layer1.2: Add", "layer2.0.conv2", "layer3.2.relu (call 2)"])
def test_the_input_box_contains_every_pixel_that_matters_in_a_resnet(rng, unit_name):
    model = models.resnet20(generator=rng)
    model.eval()
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    tr = forward_pass(model, x)
    u = next(v for v in tr.units if v.name == unit_name)
    c, H, W = u.shape
    index = (c // 2, H // 2, W // 3)
    _, support = _support(model, x, u.index, index)
    box = input_boxes(tr, u.index, (index[1], index[1], index[2], index[2]))[INPUT]
    assert box[0] <= support[0] and support[1] <= box[1] and box[2] <= support[2] and support[3] <= box[3]


def test_a_vector_output_sees_the_whole_image(rng):
    model = models.lenet5(generator=rng)
    model.eval()
    tr = forward_pass(model, np.zeros((1, 1, 28, 28), np.float32))
    a = explain_neuron(tr, len(tr.units) - 1, (3,))
    assert a["input_box"] == [0, 27, 0, 27]
