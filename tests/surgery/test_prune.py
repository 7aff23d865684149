"""Channel pruning: exact shapes and counts, no-ops, zero channels, residuals, depthwise, checkpoints, CLI."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import Tensor, models, nn, no_grad
from cnnkit.cli.main import main
from cnnkit.io.checkpoint import load, load_checkpoint, save
from cnnkit.models.resnet import BasicBlock, conv1x1
from cnnkit.surgery.prune import (
    channel_groups,
    conv_parameters,
    prune_channels,
    trace_input_shape,
    uniform_width,
)
from tests.conftest import MNIST_EXTRA


def run(model, x: np.ndarray) -> np.ndarray:
    model.eval()
    with no_grad():
        return model(Tensor(x.astype(np.float32))).data


def count(model) -> int:
    return sum(p.size for p in model.parameters())


@pytest.mark.parametrize("layers, channels, params", [
    # conv1 6->3, conv2 16->8, fc1 400->200 inputs: 78 + 608 + 24,120 + 10,164 + 850
    ("conv", [3, 8, 120, 84, 10], 35_820),
    # and the hidden Linear layers 120->60, 84->42: 78 + 608 + 12,060 + 2,562 + 430
    ("all", [3, 8, 60, 42, 10], 15_738),
])
def test_pruned_lenet5_has_exactly_the_expected_shapes_and_parameters(rng, layers, channels, params):
    lenet = models.lenet5(generator=rng)
    pruned = prune_channels(lenet, 0.5, layers=layers, input_shape=(1, 28, 28))
    convs = [pruned.features[0], pruned.features[3]]
    linears = [pruned.classifier[0], pruned.classifier[2], pruned.classifier[4]]
    assert [m.out_channels for m in convs] + [m.out_features for m in linears] == channels
    assert pruned.features[3].weight.shape == (8, 3, 5, 5)
    assert pruned.classifier[0].weight.shape == (channels[2], 8 * 5 * 5)
    assert count(pruned) == params
    assert conv_parameters(pruned) == 686 <= conv_parameters(lenet) // 2
    assert run(pruned, rng.standard_normal((2, 1, 28, 28))).shape == (2, 10)
    assert count(lenet) == 61_706                       # the original is left alone


def test_pruning_nothing_changes_nothing(rng):
    lenet = models.lenet5(generator=rng)
    pruned = prune_channels(lenet, 0.0, input_shape=(1, 28, 28))
    x = rng.standard_normal((3, 1, 28, 28))
    np.testing.assert_array_equal(run(pruned, x), run(lenet, x))
    assert {k: v.shape for k, v in pruned.state_dict().items()} == {k: v.shape for k, v in lenet.state_dict().items()}


def zero_channels(conv, bn, channels) -> None:
    conv.weight.data[channels] = 0
    conv.bias.data[channels] = 0
    if bn is not None:
        bn.weight.data[channels] = 0
        bn.bias.data[channels] = 0


def test_removing_all_zero_channels_keeps_the_outputs(rng):
    # conv -> BN -> pool -> conv -> BN -> flatten -> Linear -> Linear: with half the
    # channels (and hidden neurons) all-zero, pruning half removes exactly those.
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, generator=rng), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, generator=rng), nn.BatchNorm2d(12), nn.ReLU(),
        nn.Flatten(), nn.Linear(12 * 3 * 3, 16, generator=rng), nn.ReLU(), nn.Linear(16, 4, generator=rng),
    )
    for bn in (model[1], model[5]):
        bn.running_mean[...] = rng.standard_normal(bn.num_features)
        bn.running_var[...] = rng.uniform(0.5, 2.0, bn.num_features)
        bn.weight.data[...] = rng.uniform(0.5, 1.5, bn.num_features)
        bn.bias.data[...] = rng.standard_normal(bn.num_features)
    zero_channels(model[0], model[1], [1, 2, 5, 6])
    zero_channels(model[4], model[5], [0, 3, 4, 7, 10, 11])
    zero_channels(model[8], None, list(range(0, 16, 2)))
    pruned = prune_channels(model, 0.5, input_shape=(1, 10, 10))
    assert (pruned[0].out_channels, pruned[4].out_channels, pruned[8].out_features) == (4, 6, 8)
    assert pruned[8].in_features == 6 * 9 and pruned[5].running_var.shape == (6,)
    x = rng.standard_normal((4, 1, 10, 10))
    np.testing.assert_allclose(run(pruned, x), run(model, x), rtol=1e-5, atol=1e-6)


def test_depthwise_convolutions_lose_the_channels_of_their_input(rng):
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, generator=rng), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, generator=rng), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 1, generator=rng), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 4, generator=rng),
    )
    dead = [0, 2, 3, 7]
    zero_channels(model[0], model[1], dead)
    model[3].bias.data[dead] = 0
    model[4].weight.data[dead] = 0
    model[4].bias.data[dead] = 0
    pruned = prune_channels(model, 0.5, layers="conv", input_shape=(3, 8, 8))
    depthwise = pruned[3]
    assert (depthwise.in_channels, depthwise.out_channels, depthwise.groups) == (4, 4, 4)
    assert depthwise.weight.shape == (4, 1, 3, 3) and pruned[6].weight.shape == (8, 4, 1, 1)
    x = rng.standard_normal((2, 3, 8, 8))
    assert run(pruned, x).shape == (2, 4)
    one_source = prune_channels(model, 0.5, layers=["0"], input_shape=(3, 8, 8))
    np.testing.assert_allclose(run(one_source, x), run(model, x), rtol=1e-5, atol=1e-6)


def test_grouped_convolutions_are_left_alone(rng):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, generator=rng), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2, generator=rng),
                          nn.ReLU(), nn.Conv2d(8, 6, 1, generator=rng), nn.Flatten(), nn.Linear(6 * 4 * 4, 2, generator=rng))
    groups = channel_groups(model, (3, 8, 8))
    assert [(g.sources, g.frozen) for g in groups[:2]] == [
        (["0"], "2 is a grouped convolution (groups=2)"),
        (["2"], "2 is a grouped convolution (groups=2)"),
    ]
    pruned = prune_channels(model, 0.5, input_shape=(3, 8, 8))
    assert [pruned[i].out_channels for i in (0, 2, 4)] == [8, 8, 3]


class TinyResNet(nn.Module):
    """Stem, an identity block and a downsampling block with a 1x1 conv shortcut (torchvision's)."""

    def __init__(self, rng):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False, generator=rng)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.block1 = BasicBlock(8, 8, generator=rng)
        down = nn.Sequential(conv1x1(8, 16, 2, generator=rng), nn.BatchNorm2d(16))
        self.block2 = BasicBlock(8, 16, 2, down, generator=rng)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5, generator=rng)

    def forward(self, x):
        x = self.block2(self.block1(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(self.pool(x).flatten(1))


def test_channels_tied_by_residual_adds_are_pruned_together(rng):
    model = TinyResNet(rng)
    groups = {tuple(g.sources): g for g in channel_groups(model, (3, 8, 8))}
    stem = groups[("conv1", "block1.conv2")]
    assert stem.tied and stem.frozen is None
    assert stem.members == ["bn1", "block1.bn2"]
    assert stem.consumers == ["block1.conv1", "block2.conv1", "block2.downsample.0"]
    assert groups[("block2.conv2", "block2.downsample.0")].tied
    pruned = prune_channels(model, 0.5, input_shape=(3, 8, 8))
    assert [pruned.conv1.out_channels, pruned.block1.conv1.out_channels, pruned.block1.conv2.out_channels,
            pruned.block2.conv2.out_channels, pruned.block2.downsample[0].out_channels] == [4, 4, 4, 8, 8]
    assert pruned.fc.weight.shape == (5, 8)
    assert run(pruned, rng.standard_normal((2, 3, 8, 8))).shape == (2, 5)
    kept = prune_channels(model, 0.5, input_shape=(3, 8, 8), residual="keep")
    assert [kept.conv1.out_channels, kept.block1.conv1.out_channels, kept.block2.conv2.out_channels] == [8, 4, 16]


def test_cifar_resnet_prunes_inside_blocks_and_leaves_padded_shortcuts_alone(rng):
    model = models.resnet20(generator=rng)
    frozen = [g for g in channel_groups(model, (3, 32, 32)) if g.frozen]
    assert any("channel padding" in g.frozen and "layer1.0.conv2" in g.sources for g in frozen)
    pruned = prune_channels(model, 0.5, input_shape=(3, 32, 32))
    assert pruned.layer1[0].conv1.out_channels == 8 and pruned.layer1[0].conv2.out_channels == 16
    assert pruned.layer3[2].conv1.out_channels == 32 and pruned.layer3[2].bn1.num_features == 32
    assert run(pruned, rng.standard_normal((1, 3, 32, 32))).shape == (1, 10)


def test_l1_and_l2_rank_filters_by_their_norms(rng):
    model = nn.Sequential(nn.Conv2d(1, 2, (1, 4), bias=False), nn.Flatten(), nn.Linear(2, 1))
    model[0].weight.data[0, 0, 0] = [1, 1, 1, 1]     # L1 4, L2 2
    model[0].weight.data[1, 0, 0] = [3, 0, 0, 0]     # L1 3, L2 3
    by_l1 = prune_channels(model, 0.5, "l1", input_shape=(1, 1, 4))
    by_l2 = prune_channels(model, 0.5, "l2", input_shape=(1, 1, 4))
    np.testing.assert_array_equal(by_l1[0].weight.data.ravel(), [1, 1, 1, 1])
    np.testing.assert_array_equal(by_l2[0].weight.data.ravel(), [3, 0, 0, 0])
    first = prune_channels(model, 0.5, "random", input_shape=(1, 1, 4), generator=np.random.default_rng(3))
    again = prune_channels(model, 0.5, "random", input_shape=(1, 1, 4), generator=np.random.default_rng(3))
    np.testing.assert_array_equal(first[0].weight.data, again[0].weight.data)


@pytest.mark.parametrize("kwargs, message", [
    ({"amount": 1.0}, r"prune_channels expects amount in \[0, 1\), got 1.0"),
    ({"amount": 0.5, "criterion": "l3"}, r"expects criterion 'l1', 'l2' or 'random', got 'l3'"),
    ({"amount": 0.5, "layers": ["features.9"]}, r"the model has no layer named 'features.9'"),
])
def test_bad_arguments(rng, kwargs, message):
    with pytest.raises(ValueError, match=message):
        prune_channels(models.lenet5(generator=rng), input_shape=(1, 28, 28), **kwargs)


def test_uniform_width_builds_the_thinner_network_with_new_weights(rng):
    lenet = models.lenet5(generator=rng)
    thin = uniform_width(lenet, 0.5, input_shape=(1, 28, 28), generator=np.random.default_rng(1))
    assert count(thin) == 35_820 and thin.features[0].out_channels == 3 and thin.classifier[0].in_features == 200
    bound = 1 / np.sqrt(3 * 25)                          # PyTorch's init for the new fan-in
    w = thin.features[3].weight.data
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound
    assert not np.allclose(thin.classifier[4].weight.data, lenet.classifier[4].weight.data)
    assert thin.training


def test_pruned_checkpoint_reloads_and_runs(rng, tmp_path):
    pruned = prune_channels(models.lenet5(generator=rng), 0.5, input_shape=(1, 28, 28))
    path = save(pruned, tmp_path / "p.safetensors", model_name="lenet5",
                           model_config={"num_classes": 10}, extra={**MNIST_EXTRA, "pruned": {"amount": 0.5}})
    x = rng.standard_normal((2, 1, 28, 28))
    loaded = load(path)
    np.testing.assert_array_equal(run(loaded, x), run(pruned, x))
    assert count(loaded) == 15_738


def test_pruned_checkpoint_loads_with_cnnkit_load(rng, tmp_path):
    pruned = prune_channels(models.lenet5(generator=rng), 0.5, input_shape=(1, 28, 28))
    path = save(pruned, tmp_path / "p.safetensors", model_name="lenet5",
                           model_config={"num_classes": 10}, extra={**MNIST_EXTRA, "pruned": {"amount": 0.5}})
    x = rng.standard_normal((2, 1, 28, 28))
    np.testing.assert_array_equal(run(load(path), x), run(pruned, x))


def test_prune_command_prints_a_before_after_table_and_saves_a_loadable_model(lenet_checkpoint, tmp_path, capsys):
    out = tmp_path / "pruned.safetensors"
    assert main(["prune", str(lenet_checkpoint), "--amount", "0.5", "--finetune-epochs", "1", "--limit", "128",
                 "--eval-limit", "200", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    for row in ("parameters", "in conv layers", "MACs per image", "test accuracy", "inference images/s",
                "file size (weights)"):
        assert row in text
    assert "61,706" in text and "35,820" in text and "2,572" in text and "686" in text
    model = load(out)
    assert model.features[0].out_channels == 3
    meta = load_checkpoint(out).meta
    assert meta["extra"]["pruned"]["channels"]["features.3"] == 8 and meta["extra"]["dataset"] == "mnist"


def test_prune_sweep_plots_accuracy_against_parameters_kept(lenet_checkpoint, tmp_path, capsys):
    plot = tmp_path / "sweep.png"
    assert main(["prune", str(lenet_checkpoint), "--sweep", "0.25,0.5", "--finetune-epochs", "0",
                 "--eval-limit", "100", "--plot", str(plot)]) == 0
    text = capsys.readouterr().out
    assert "amount 0.50: 35,820 parameters (58.0% kept)" in text
    assert plot.stat().st_size > 10_000


def test_prune_command_needs_an_amount_and_an_output(lenet_checkpoint, capsys):
    assert main(["prune", str(lenet_checkpoint), "--amount", "0.5"]) == 2
    assert "give -o PATH" in capsys.readouterr().err
    assert main(["prune", str(lenet_checkpoint), "--amount", "1.5", "-o", "x"]) == 2
    assert "expected a number in [0, 1), got '1.5'" in capsys.readouterr().err


def _forty_pixel_net(rng, declared):
    """A net that takes 40x40 inputs only (its Linear reads 4 x 38 x 38), declaring them or not."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, generator=rng), nn.ReLU(), nn.Conv2d(4, 4, 1, generator=rng),
                          nn.Flatten(), nn.Linear(4 * 38 * 38, 2, generator=rng))
    if declared:
        model.input_shape = (3, 40, 40)
    return model


def test_the_model_s_declared_input_shape_is_traced_before_any_guess(rng):
    """None of 28, 32 and 224 fits this net: the shape it declares is read, not guessed."""
    model = _forty_pixel_net(rng, declared=True)
    assert trace_input_shape(model) == (3, 40, 40)
    pruned = prune_channels(model, 0.5, layers="conv")
    assert [m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d)] == [2, 2]
    assert run(pruned, rng.standard_normal((1, 3, 40, 40))).shape == (1, 2)
    assert [g.size for g in channel_groups(model)][:2] == [4, 4]


def test_a_zoo_model_and_a_rebuilt_checkpoint_declare_their_input_shape(tmp_path, rng):
    assert trace_input_shape(models.resnet20(generator=rng)) == (3, 32, 32)
    path = save(models.lenet5(in_channels=3, generator=rng), tmp_path / "lenet.safetensors")
    assert trace_input_shape(load(path)) == (3, 28, 28)  # the channels the checkpoint was built with


def test_a_shape_is_guessed_only_when_none_is_declared_and_the_error_says_what_was_tried(rng):
    assert trace_input_shape(models.lenet5(generator=rng), (1, 30, 30)) == (1, 30, 30)   # given: used
    unlabelled = nn.Sequential(nn.Conv2d(1, 2, 3, generator=rng), nn.Flatten(), nn.Linear(2 * 30 * 30, 2))
    assert trace_input_shape(unlabelled) == (1, 32, 32)                                   # the guess that runs
    with pytest.raises(ValueError, match=r"^prune_channels: cannot tell the input shape of Sequential: it declares "
                                         r"none \(no model.input_shape\), and it takes none of \(3, 28, 28\), "
                                         r"\(3, 32, 32\), \(3, 224, 224\) \(C from its first convolution, 0\); "
                                         r"pass input_shape=\(C, H, W\) or set model.input_shape$"):
        prune_channels(_forty_pixel_net(rng, declared=False), 0.5)
    with pytest.raises(ValueError, match=r"channel_groups: cannot tell the input shape of Linear: it declares none "
                                         r"\(no model.input_shape\), and it has no convolution to guess the channels "
                                         r"from; pass input_shape$"):
        channel_groups(nn.Linear(3, 2))


class _AssignsIntoAChannel(nn.Module):
    """conv1's output is read (z), then one of its channels is assigned in place: conv1's
    channels cannot be pruned (channel 5 is named), conv2's can."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv3 = nn.Conv2d(8, 2, 3)

    def forward(self, x):
        y = self.conv1(x)
        z = y * 2.0
        y[:, 5] = 0.0
        return self.conv3(self.relu(self.conv2(z + y)))


def test_an_assignment_into_a_layers_output_is_seen_by_the_pruning_trace(rng):
    # the trace took the assigned tensor for conv1's output and pruned conv1 to 3 channels: the
    # pruned model then failed at y[:, 5] (IndexError)
    torch = pytest.importorskip("torch")
    pruned = prune_channels(_AssignsIntoAChannel().eval(), 0.5, input_shape=(3, 8, 8))
    assert pruned.conv1.weight.shape == (6, 3, 3, 3) and pruned.conv2.weight.shape == (4, 6, 3, 3)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    with no_grad():
        ours = pruned(Tensor(x)).numpy()
    w = {n: torch.from_numpy(np.asarray(p.data)) for n, p in pruned.named_parameters()}
    tf = torch.nn.functional
    y = tf.conv2d(torch.from_numpy(x), w["conv1.weight"], w["conv1.bias"], padding=1)
    z = y * 2.0
    y[:, 5] = 0.0
    h = torch.relu(tf.conv2d(z + y, w["conv2.weight"], w["conv2.bias"], padding=1))
    np.testing.assert_allclose(ours, tf.conv2d(h, w["conv3.weight"], w["conv3.bias"]).numpy(), rtol=1e-4, atol=1e-5)
