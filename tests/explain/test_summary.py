"""cnnkit.explain.summary: parameter and MAC totals, the table, output-size arithmetic, receptive fields."""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit
from cnnkit import models, nn
from cnnkit.explain.summary import SummaryResult


def quiet(model, shape, **kwargs) -> SummaryResult:
    return cnnkit.summary(model, shape, print_fn=None, **kwargs)


def rows_by_path(result: SummaryResult) -> dict:
    return {row.path: row for row in result.rows}


# ---------------------------------------------------------------------- totals
# torchvision's published figures: parameters and "GFLOPS" (which are MACs) at 224x224.
PUBLISHED = [
    ("alexnet", 61_100_840, 0.714e9),
    ("vgg16", 138_357_544, 15.47e9),
    ("resnet18", 11_689_512, 1.81e9),
    ("resnet50", 25_557_032, 4.089e9),
    ("densenet121", 7_978_856, 2.83e9),
    ("googlenet", 6_624_904, 1.50e9),
]


@pytest.mark.parametrize("name, params, macs", PUBLISHED)
def test_totals_at_224_match_torchvisions_published_figures(name, params, macs):
    kwargs = {"init_weights": False} if name in ("vgg16", "googlenet") else {}  # weights do not matter here
    model = models.get_model(name, generator=np.random.default_rng(0), **kwargs)
    result = quiet(model, (3, 224, 224))
    assert result.total_params == result.trainable_params == params
    assert result.non_trainable_params == 0
    assert result.total_macs == pytest.approx(macs, rel=0.01)
    assert result.input_shape == (1, 3, 224, 224)
    assert result.rows[-1].output_shape == (1, 1000)


def test_lenet5_table_counts_every_layer():
    result = quiet(models.lenet5(generator=np.random.default_rng(0)), (1, 28, 28))
    assert [(r.path, r.type, r.output_shape, r.params, r.macs) for r in result.rows] == [
        ("features.0", "Conv2d", (1, 6, 28, 28), 156, 28 * 28 * 6 * 25),
        ("features.1", "ReLU", (1, 6, 28, 28), 0, 0),
        ("features.2", "MaxPool2d", (1, 6, 14, 14), 0, 0),
        ("features.3", "Conv2d", (1, 16, 10, 10), 2_416, 10 * 10 * 16 * 6 * 25),
        ("features.4", "ReLU", (1, 16, 10, 10), 0, 0),
        ("features.5", "MaxPool2d", (1, 16, 5, 5), 0, 0),
        ("flatten", "Flatten", (1, 400), 0, 0),
        ("classifier.0", "Linear", (1, 120), 48_120, 48_000),
        ("classifier.1", "ReLU", (1, 120), 0, 0),
        ("classifier.2", "Linear", (1, 84), 10_164, 10_080),
        ("classifier.3", "ReLU", (1, 84), 0, 0),
        ("classifier.4", "Linear", (1, 10), 850, 840),
    ]
    assert result.total_params == 61_706 and result.total_macs == 416_520


def test_macs_equal_half_of_torchs_flop_counter_for_conv_transposed_conv_and_linear():
    torch = pytest.importorskip("torch", reason="torch.utils.flop_counter is the independent oracle")
    from torch.utils.flop_counter import FlopCounterMode

    def layers(lib):
        return [
            lib.Conv2d(4, 6, 3, stride=2, padding=1, groups=2),
            lib.ConvTranspose2d(6, 8, 4, stride=2, padding=1, groups=2),
            lib.ReLU(), lib.Flatten(), lib.Linear(8 * 10 * 10, 5),
        ]

    with FlopCounterMode(display=False) as counter:
        torch.nn.Sequential(*layers(torch.nn))(torch.zeros(2, 4, 10, 10))
    result = quiet(nn.Sequential(*layers(nn)), (2, 4, 10, 10))
    assert result.total_macs * 2 == counter.get_total_flops()
    assert result.rows[1].output_shape == (2, 8, 10, 10)


def test_batch_axis_is_added_unless_given_and_macs_scale_with_it():
    net = models.lenet5(generator=np.random.default_rng(0))
    assert quiet(net, (4, 1, 28, 28)).total_macs == 4 * quiet(net, (1, 28, 28)).total_macs
    mlp = nn.Sequential(nn.Linear(6, 3))
    assert quiet(mlp, (6,)).rows[0].output_shape == (1, 3)
    assert quiet(mlp, (5, 6)).rows[0].output_shape == (5, 3)


def test_shared_modules_and_tied_weights_are_counted_once_but_run_twice():
    conv = nn.Conv2d(2, 2, 3, padding=1, bias=False, generator=np.random.default_rng(0))
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.weight = a.weight  # tied
    model = nn.Sequential(conv, nn.ReLU(), conv, nn.Flatten(2), a, b)
    result = quiet(model, (2, 2, 2))
    assert result.total_params == 36 + 16 + 4 + 4
    assert [r.params for r in result.rows] == [36, 0, 0, 0, 16 + 4, 4]
    assert [r.shared for r in result.rows] == [False, False, True, False, False, False]
    assert result.total_macs == 2 * (4 * 2 * 2 * 9) + 2 * (2 * 4 * 4)
    assert "0 (again)" in result.table and "(shared)" in result.table


def test_frozen_parameters_are_non_trainable():
    net = models.lenet5(generator=np.random.default_rng(0))
    net.features.requires_grad_(False)
    result = quiet(net, (1, 28, 28))
    assert (result.trainable_params, result.non_trainable_params) == (61_706 - 2_572, 2_572)


def test_summary_runs_in_eval_mode_and_restores_every_flag():
    net = models.resnet20(generator=np.random.default_rng(0))
    net.train()
    net.layer1.eval()
    before = {k: v.copy() for k, v in net.state_dict().items()}
    quiet(net, (3, 32, 32))
    assert net.training and net.layer2.training and not net.layer1.training and not net.layer1[0].bn1.training
    after = net.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # BatchNorm statistics untouched


def test_memory_figures_are_in_mebibytes():
    result = quiet(models.lenet5(generator=np.random.default_rng(0)), (1, 28, 28))
    assert result.input_mb == pytest.approx(28 * 28 * 4 / 2**20)
    assert result.params_mb == pytest.approx(61_706 * 4 / 2**20)
    activations = sum(np.prod(r.output_shape) for r in result.rows) * 4 / 2**20
    assert result.activations_mb == pytest.approx(activations)
    assert result.total_mb == pytest.approx(result.input_mb + result.activations_mb + result.params_mb)


def test_table_is_printed_once_and_states_its_units():
    printed = []
    result = cnnkit.summary(models.lenet5(generator=np.random.default_rng(0)), (1, 28, 28), print_fn=printed.append)
    assert printed == [result.table] == [str(result)]
    for text in ("Layer (path)", "Output shape", "Params", "MACs", "Total params: 61,706",
                 "Trainable params: 61,706", "Non-trainable params: 0",
                 "Total MACs: 416,520 (416.52 KMACs, multiply-accumulates, not FLOPs; batch 1)",
                 "not counted: biases, BatchNorm", "Input size (MB): 0.00", "Params size (MB): 0.24",
                 "features.3    Conv2d     (1, 16, 10, 10)   2,416  240,000"):
        assert text in result.table, text
    assert "receptive field" not in result.table


def test_a_wrong_input_shape_names_the_layer():
    message = r"classifier\.0 \(Linear\): expected input with 400 features"
    with pytest.raises(cnnkit.ShapeError, match=message):
        quiet(models.lenet5(generator=np.random.default_rng(0)), (1, 32, 32))


# ---------------------------------------------------------------------- arithmetic, receptive fields
def fields(result: SummaryResult) -> list:
    return [(r.path, r.receptive_field[0], r.jump[0]) for r in result.rows if r.receptive_field is not None]


def test_lenet5_receptive_fields():
    # r_out = r + (K - 1) * j, j_out = j * S, from r = j = 1:
    # conv 5x5: 5, j 1; pool 2/2: 6, j 2; conv 5x5: 6 + 4*2 = 14; pool 2/2: 14 + 1*2 = 16, j 4.
    result = quiet(models.lenet5(generator=np.random.default_rng(0)), (1, 28, 28), show_arithmetic=True)
    assert fields(result) == [
        ("features.0", 5, 1), ("features.2", 6, 2), ("features.3", 14, 2), ("features.5", 16, 4)
    ]
    assert "    H: (28 - 5 + 2*2)/1 + 1 = 28; W: (28 - 5 + 2*2)/1 + 1 = 28" in result.table
    assert "    receptive field 16x16, jump 4x4" in result.table


def test_vgg16_receptive_fields():
    # Each 3x3 conv adds 2*j, each 2x2 pool adds j and doubles j. Stage by stage:
    # 3 5 | 6 (j2) | 10 14 | 16 (j4) | 24 32 40 | 44 (j8) | 60 76 92 | 100 (j16) | 132 164 196 | 212 (j32)
    vgg16 = models.vgg16(init_weights=False, generator=np.random.default_rng(0))
    result = quiet(vgg16, (3, 224, 224), show_arithmetic=True)
    windows = [f for f in fields(result) if f[0].startswith("features")]
    assert [r for _, r, _ in windows] == [
        3, 5, 6, 10, 14, 16, 24, 32, 40, 44, 60, 76, 92, 100, 132, 164, 196, 212
    ]
    by_path = rows_by_path(result)
    conv5_3, pool5 = by_path["features.28"], by_path["features.30"]
    assert (conv5_3.receptive_field, conv5_3.jump) == ((196, 196), (16, 16))
    assert (pool5.receptive_field, pool5.jump) == ((212, 212), (32, 32))
    assert by_path["avgpool"].arithmetic == "adaptive: H 7 -> 7, W 7 -> 7 (widest window 1x1)"


def test_resnet18_fields_take_the_union_of_merged_branches():
    # conv1 7 (j2), maxpool 11 (j4), layer1 4 convs -> 43; layer2.0: conv1/2 51 (j8), conv2 67;
    # the shortcut sees 43 (1x1 conv); after the add the field is 67, so layer2.1.conv1 is 83.
    result = quiet(models.resnet18(generator=np.random.default_rng(0)), (3, 224, 224), show_arithmetic=True)
    by_path = rows_by_path(result)
    assert by_path["layer1.1.conv2"].receptive_field == (43, 43)
    assert by_path["layer2.0.downsample.0"].receptive_field == (43, 43)
    assert by_path["layer2.0.downsample.0"].jump == (8, 8)
    assert by_path["layer2.1.conv1"].receptive_field == (83, 83)
    assert by_path["layer4.1.conv2"].receptive_field == (435, 435)


def test_arithmetic_shows_rounding_ceil_mode_dilation_and_both_axes():
    alex = quiet(models.alexnet(generator=np.random.default_rng(0)), (3, 224, 224), show_arithmetic=True)
    assert rows_by_path(alex)["features.0"].arithmetic == (
        "H: (224 - 11 + 2*2)/4 + 1 = 55.25 -> 55 (floor); W: (224 - 11 + 2*2)/4 + 1 = 55.25 -> 55 (floor)"
    )
    googlenet = models.googlenet(init_weights=False, generator=np.random.default_rng(0))
    goog = quiet(googlenet, (3, 224, 224), show_arithmetic=True)
    ceil = "H: (112 - 3 + 2*0)/2 + 1 = 55.5 -> 56 (ceil)"
    assert rows_by_path(goog)["maxpool1"].arithmetic.startswith(ceil)
    dilated = nn.Sequential(
        nn.Conv2d(1, 1, 3, padding=(2, 0), dilation=2), nn.MaxPool2d((2, 3), stride=(2, 1))
    )
    result = quiet(dilated, (1, 10, 12), show_arithmetic=True)
    conv, pool = result.rows
    assert conv.arithmetic == (
        "H: (10 - (2*(3 - 1) + 1) + 2*2)/1 + 1 = 10; W: (12 - (2*(3 - 1) + 1) + 2*0)/1 + 1 = 8"
    )
    assert (conv.receptive_field, conv.jump) == ((5, 5), (1, 1))
    assert pool.arithmetic == "H: (10 - 2 + 2*0)/2 + 1 = 5; W: (8 - 3 + 2*0)/1 + 1 = 6"
    assert (pool.receptive_field, pool.jump) == ((6, 7), (2, 1))
