"""Fully convolutional conversion: equal at the training size, equal to sliding windows, errors, CLI."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from PIL import Image

import cnnkit.functional as F
from cnnkit import Tensor, models, nn, no_grad
from cnnkit.cli.main import main
from cnnkit.data import load_mnist
from cnnkit.io.checkpoint import save
from cnnkit.surgery import ConversionError, read_sequence, sliding_window, to_fully_convolutional


def run(model, x: np.ndarray) -> np.ndarray:
    model.eval()
    with no_grad():
        return model(Tensor(x.astype(np.float32))).data


def small_chain(rng) -> nn.Sequential:
    """A user model without padding: 14x14 -> conv 3x3 -> pool 2 -> conv 3x3 -> pool 2 -> 2x2."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, generator=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, generator=rng), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(6 * 2 * 2, 12, generator=rng), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(12, 5, generator=rng), nn.LogSoftmax(dim=1),
    )


@pytest.mark.parametrize("name, shape", [
    ("lenet5", (1, 28, 28)),
    ("vgg11_cifar", (3, 32, 32)),
    ("resnet20", (3, 32, 32)),
    ("alexnet", (3, 224, 224)),
])
def test_zoo_model_equals_its_fcn_at_the_training_size(rng, name, shape):
    model = models.get_model(name, num_classes=10, generator=rng)
    x = rng.standard_normal((2,) + shape)
    fcn = to_fully_convolutional(model, shape, verify=False)
    expected = run(model, x)
    got = run(fcn, x)
    assert got.shape == (2, 10, 1, 1)
    np.testing.assert_allclose(got[:, :, 0, 0], expected, rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, (nn.Linear, nn.Flatten)) for m in fcn.modules())


def test_lenet5_head_becomes_a_5x5_conv_with_the_same_parameters(rng):
    lenet = models.lenet5(generator=rng)
    fcn = to_fully_convolutional(lenet, (1, 28, 28))
    fc1 = fcn.classifier[0]
    assert isinstance(fc1, nn.Conv2d) and fc1.weight.shape == (120, 16, 5, 5)
    assert fc1.weight.size + fc1.bias.size == 48_120
    assert fcn.classifier[2].weight.shape == (84, 120, 1, 1)
    assert sum(p.size for p in fcn.parameters()) == 61_706
    assert fcn.stride == (4, 4) and fcn.window == (28, 28) and fcn.first_centre == (13.5, 13.5)


@pytest.mark.parametrize("name, shape", [("lenet5", (1, 28, 28)), ("vgg11_cifar", (3, 32, 32))])
def test_converted_layers_keep_the_names_they_have_in_the_model(name, shape, rng):
    # they were "classifier_0", "features_3": now the model's own paths, so the Conv2d made
    # of model.classifier[0] is fcn.classifier[0] and its weight "classifier.0.weight"
    model = models.get_model(name, num_classes=10, generator=rng)
    fcn = to_fully_convolutional(model, shape)
    ours = dict(fcn.state_dict())
    theirs = model.state_dict()
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        np.testing.assert_array_equal(ours[key].reshape(value.shape), value)   # Linear (F, C*H*W) = conv (F, C, H, W)
    assert {n for n, _ in fcn.named_modules()} <= {n for n, _ in model.named_modules()}


def test_state_dicts_of_the_former_flat_names_still_load(rng):
    lenet = models.lenet5(generator=rng)
    fcn = to_fully_convolutional(lenet, (1, 28, 28))
    old = {key.replace(".", "_", 1): value + 1 for key, value in fcn.state_dict().items()}  # "classifier_0.weight"
    assert "classifier_0.weight" in old and "features_0.bias" in old
    fresh = to_fully_convolutional(models.lenet5(generator=rng), (1, 28, 28))
    fresh.load_state_dict(old)
    for key, value in fcn.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key], value + 1)


def test_conversion_copies_and_leaves_the_model_alone(rng):
    lenet = models.lenet5(generator=rng)
    before = {k: v.copy() for k, v in lenet.state_dict().items()}
    fcn = to_fully_convolutional(lenet, (1, 28, 28))
    fcn.classifier[0].weight.data[...] = 0
    for key, value in lenet.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    assert isinstance(lenet.classifier[0], nn.Linear)


def test_one_pass_equals_the_classifier_on_every_window_at_the_total_stride(rng):
    model = small_chain(rng)
    fcn = to_fully_convolutional(model, (1, 14, 14))
    assert fcn.stride == (4, 4)
    x = rng.standard_normal((2, 1, 22, 30)).astype(np.float32)
    got = run(fcn, x)                                                  # (2, 5, 3, 5)
    expected = sliding_window(model, x, (14, 14), fcn.stride).data
    assert got.shape == expected.shape == (2, 5, 3, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    one_by_one = sliding_window(model, x, (14, 14), fcn.stride, batch_size=1).data
    np.testing.assert_allclose(one_by_one, expected, rtol=1e-6, atol=1e-6)


def test_lenet5_on_a_strip_equals_sliding_over_the_padded_strip(rng):
    # LeNet-5 pads only its first layer (2 pixels): with that padding applied once to
    # the whole strip, the one pass equals the classifier on every 32x32 window, stride 4.
    lenet = models.lenet5(generator=rng)
    fcn = to_fully_convolutional(lenet, (1, 28, 28))
    strip = rng.standard_normal((1, 1, 28, 280)).astype(np.float32)
    got = run(fcn, strip)
    assert got.shape == (1, 10, 1, 64)
    unpadded = copy.deepcopy(lenet)
    unpadded.features[0].padding = (0, 0)
    padded = F.pad(Tensor(strip), (2, 2, 2, 2)).data                     # (1, 1, 32, 284)
    expected = sliding_window(unpadded, padded, (32, 32), fcn.stride).data
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_vgg11_cifar_gives_a_3x3_map_at_96x96(rng):
    fcn = to_fully_convolutional(models.vgg11_cifar(generator=rng), (3, 32, 32))
    assert fcn.stride == (32, 32)
    assert run(fcn, rng.standard_normal((1, 3, 96, 96))).shape == (1, 10, 3, 3)


def test_softmax_after_the_head_acts_on_the_class_channels(rng):
    model = small_chain(rng)
    fcn = to_fully_convolutional(model, (1, 14, 14))
    out = run(fcn, rng.standard_normal((1, 1, 18, 18)))
    np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0, rtol=1e-5)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        y = self.conv1(x)
        return self.fc(self.flatten(self.conv2(y) + y))


class Custom(nn.Module):
    def forward(self, x):
        return x * 2


@pytest.mark.parametrize("model, shape, message", [
    (Residual(), (1, 8, 8),
     r"cannot convert 'flatten' \(Flatten\) in Residual: its input is not the output of 'conv2' \(Conv2d\)"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8, 3)), (1, 8, 8),
     r"cannot convert '1' \(AdaptiveAvgPool2d\): it maps 6x6 to 2x2 at input shape \(1, 8, 8\)"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), Custom(), nn.Linear(72, 3)), (1, 8, 8),
     r"cannot convert '2' \(Custom\): after the flatten only Linear"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.BatchNorm1d(72), nn.Linear(72, 3)), (1, 8, 8),
     r"cannot convert '2' \(BatchNorm1d\): BatchNorm1d is converted only after a Linear"),
])
def test_models_it_cannot_convert_name_the_layer(model, shape, message):
    with pytest.raises(ConversionError, match=message):
        to_fully_convolutional(model, shape)


def test_global_pooling_head_becomes_a_stride_1_pool_and_batchnorm1d_a_batchnorm2d(rng):
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, generator=rng), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 6, generator=rng), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3, generator=rng),
    )
    model[5].running_mean[...] = rng.standard_normal(6)
    model[5].running_var[...] = rng.uniform(0.5, 2.0, 6)
    fcn = to_fully_convolutional(model, (2, 6, 6))
    assert isinstance(fcn[2], nn.AvgPool2d) and isinstance(fcn[4], nn.BatchNorm2d)
    x = rng.standard_normal((1, 2, 6, 9))
    np.testing.assert_allclose(run(fcn, x[..., :6])[..., 0, 0], run(model, x[..., :6]), rtol=1e-5, atol=1e-5)
    assert run(fcn, x).shape == (1, 3, 1, 4)      # the 6x6 average slides with stride 1


def test_read_sequence_reads_each_ink_blob_at_the_nearest_window():
    centres = np.arange(10) * 4 + 13.5
    probs = np.full((3, 10), 0.1)
    probs[2, 0], probs[1, 7] = 0.8, 0.8
    ink = np.zeros(64)
    ink[8:20] = 1.0       # centre 13.5 -> position 0
    ink[36:48] = 1.0      # centre 41.5 -> position 7
    ink[60] = 1.0         # one column: noise
    assert [(k, j) for k, _, j in read_sequence(probs, centres, ink, char_width=20)] == [(2, 0), (1, 7)]


def test_fcn_command_composes_mnist_digits_and_writes_a_heat_map(lenet_checkpoint, tmp_path, capsys):
    out = tmp_path / "heat.png"
    assert main(["fcn", str(lenet_checkpoint), "--mnist-digits", "4", "--indices", "0,1,2,3",
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "input 28x112, one pass -> 1x22 positions at stride 4" in text
    assert "reads (left to right): " in text and "true:                  7 2 1 0" in text
    assert out.stat().st_size > 10_000 and Image.open(out).format == "PNG"


def test_fcn_command_takes_a_dark_on_light_image(lenet_checkpoint, tmp_path, capsys):
    images, _ = load_mnist("test")
    strip = 255 - np.concatenate([np.pad(images[i], 6) for i in range(3)], axis=1)   # (40, 120)
    path = tmp_path / "paper.png"
    Image.fromarray(strip).save(path)
    assert main(["fcn", str(lenet_checkpoint), str(path), "-o", str(tmp_path / "h.png")]) == 0
    text = capsys.readouterr().out
    read = text.split("reads (left to right): ")[1].splitlines()[0].split()
    assert len(read) == 3


def test_fcn_command_needs_an_image_or_digits(lenet_checkpoint, capsys):
    assert main(["fcn", str(lenet_checkpoint)]) == 2
    assert "give either IMAGE or --mnist-digits N" in capsys.readouterr().err


def test_fcn_command_maps_a_colour_image_in_two_dimensions(tmp_path, rng, capsys):
    path = tmp_path / "vgg.safetensors"
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    save(models.vgg11_cifar(generator=rng), path, model_name="vgg11_cifar", model_config={"num_classes": 10},
                    extra={"dataset": "cifar10", "input_shape": [3, 32, 32], "mean": [0.5] * 3, "std": [0.25] * 3,
                           "classes": classes})
    image = tmp_path / "scene.png"
    Image.fromarray((rng.uniform(0, 255, (64, 96, 3))).astype(np.uint8)).save(image)
    assert main(["fcn", str(path), str(image), "-o", str(tmp_path / "map.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "input 64x96, one pass -> 2x3 positions at stride 32" in lines[0]
    assert len(lines[1].split()) == 3 and lines[1].split()[0] in classes
    assert (tmp_path / "map.png").stat().st_size > 10_000
