"""Batch-norm folding of whole models: which pairs fold, equal outputs, the original untouched, checkpoints;
optimize_for_inference (the fold, then frozen and prepacked weights)."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import Tensor, models, nn, no_grad
from cnnkit.errors import CheckpointError, InferenceOnlyError
from cnnkit.io.checkpoint import load, load_checkpoint, save
from cnnkit.surgery import (
    fold_batchnorm,
    fold_for_inference,
    foldable_pairs,
    optimize_for_inference,
    prune_channels,
)


def randomize_batch_norms(model: nn.Module, rng) -> nn.Module:
    """Running statistics and affine parameters far from the defaults (mean 0, var 1, gamma 1, beta 0)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            F = m.num_features
            if m.running_mean is not None:
                m.running_mean[...] = rng.normal(0.0, 0.5, F)
                m.running_var[...] = rng.uniform(0.5, 2.0, F)
            if m.weight is not None:
                m.weight.data[...] = rng.uniform(0.5, 1.5, F)
                m.bias.data[...] = rng.normal(0.0, 0.2, F)
    return model


def run(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with no_grad():
        return model(Tensor(x)).data


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def batch_norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def snapshot(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: np.array(getattr(v, "data", v)) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_sequential_conv_bn_relu_folds_to_the_same_outputs(rng, dtype, rtol):
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, generator=rng, dtype=dtype), nn.BatchNorm2d(8, dtype=dtype), nn.ReLU(),
        nn.Conv2d(8, 8, 3, groups=2, bias=False, generator=rng, dtype=dtype), nn.BatchNorm2d(8, dtype=dtype),
        nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5, generator=rng, dtype=dtype),
    )
    randomize_batch_norms(model, rng)
    x = rng.standard_normal((2, 3, 8, 8)).astype(dtype)
    expected = run(model.eval(), x)
    folded = fold_batchnorm(model, (3, 8, 8))
    assert folded.folded_batchnorm == [("0", "1"), ("3", "4")]
    assert [type(m).__name__ for m in folded] == ["Conv2d", "Identity", "ReLU", "Conv2d", "Identity", "ReLU",
                                                 "Flatten", "Linear"]
    assert folded[3].bias.dtype == dtype
    assert relative_error(run(folded, x), expected) <= rtol


# Every BatchNorm of these models follows a convolution that nothing else reads.
@pytest.mark.parametrize("name, size, pairs", [
    ("resnet18", 64, 20), ("resnet20", 32, 19), ("vgg11_bn", 32, 8), ("googlenet", 48, 57),
])
def test_zoo_models_fold_every_batch_norm_to_the_same_outputs(rng, name, size, pairs):
    model = randomize_batch_norms(models.get_model(name, generator=rng), rng).eval()
    x = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    expected = run(model, x)
    folded = fold_batchnorm(model, (3, size, size))
    assert len(folded.folded_batchnorm) == pairs == batch_norms(model)
    assert batch_norms(folded) == 0
    assert relative_error(run(folded, x), expected) <= 1e-5


def test_resnet_blocks_fold_the_shortcut_and_leave_the_adds(rng):
    model = models.resnet18(generator=rng).eval()
    pairs = dict(foldable_pairs(model, (3, 64, 64)))
    assert pairs["layer2.0.downsample.0"] == "layer2.0.downsample.1"
    assert pairs["layer1.1.conv2"] == "layer1.1.bn2"            # bn2 feeds the residual add: still folded
    assert type(fold_batchnorm(model, (3, 64, 64)).layer2[0].downsample[1]) is nn.Identity


def test_float64_resnet20_folds_to_1e_10(rng):
    model = randomize_batch_norms(models.resnet20(generator=rng).double(), rng).eval()
    x = rng.standard_normal((2, 3, 32, 32))
    folded = fold_batchnorm(model)
    assert folded.conv1.weight.dtype == np.float64
    assert relative_error(run(folded, x), run(model, x)) <= 1e-10


def test_densenet_folds_only_the_batch_norms_after_a_convolution(rng):
    model = randomize_batch_norms(models.densenet121(generator=rng), rng).eval()
    folded_paths = [bn for _, bn in foldable_pairs(model, (3, 32, 32))]
    # norm0 after the stem and norm2 after each layer's 1x1 conv; norm1 (after a concatenation),
    # the transitions' norm and norm5 read no convolution.
    assert len(folded_paths) == 1 + 58
    assert all(p == "features.norm0" or p.endswith(".norm2") for p in folded_paths)
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    folded = fold_batchnorm(model, (3, 32, 32))
    assert batch_norms(folded) == batch_norms(model) - 59
    assert relative_error(run(folded, x), run(model, x)) <= 1e-5


class ConvReadTwice(nn.Module):
    """bn(c) + c: the convolution's output is read by the BatchNorm and by the add."""

    def __init__(self, rng):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, generator=rng), nn.BatchNorm2d(4)

    def forward(self, x):
        c = self.conv(x)
        return self.bn(c) + c


class BatchNormAfterAdd(nn.Module):
    def __init__(self, rng):
        super().__init__()
        self.a, self.b, self.bn = nn.Conv2d(3, 4, 3, generator=rng), nn.Conv2d(3, 4, 3, generator=rng), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.a(x) + self.b(x))


class SharedConv(nn.Module):
    """One convolution called twice; ``same_bn``: each call read by the same BatchNorm."""

    def __init__(self, rng, same_bn: bool):
        super().__init__()
        self.conv, self.bn, self.same_bn = nn.Conv2d(4, 4, 3, padding=1, generator=rng), nn.BatchNorm2d(4), same_bn

    def forward(self, x):
        y = self.bn(self.conv(x))
        y = self.conv(y)
        return self.bn(y) if self.same_bn else y.relu()


@pytest.mark.parametrize("build, expected", [
    (lambda rng: ConvReadTwice(rng), []),
    (lambda rng: BatchNormAfterAdd(rng), []),
    (lambda rng: nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3, generator=rng)), []),   # BN before conv
    (lambda rng: nn.Sequential(nn.Conv2d(3, 4, 3, generator=rng), nn.BatchNorm2d(4, track_running_stats=False)), []),
    (lambda rng: nn.Sequential(nn.Conv2d(3, 4, 3, generator=rng), nn.Identity(), nn.BatchNorm2d(4)), []),
    (lambda rng: nn.Sequential(nn.Conv2d(3, 4, 3, generator=rng), nn.BatchNorm2d(4)), [("0", "1")]),
    (lambda rng: SharedConv(rng, same_bn=True), [("conv", "bn")]),
    (lambda rng: SharedConv(rng, same_bn=False), []),
])
def test_only_a_batch_norm_that_alone_reads_a_convolution_is_folded(rng, build, expected):
    model = randomize_batch_norms(build(rng), rng)
    C = next(m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)))
    C = C.in_channels if isinstance(C, nn.Conv2d) else C.num_features
    x = rng.standard_normal((2, C, 8, 8)).astype(np.float32)
    folded = fold_batchnorm(model, (C, 8, 8))
    assert folded.folded_batchnorm == expected
    model.eval()
    assert relative_error(run(folded, x), run(model, x)) <= 1e-5


def test_the_original_model_is_untouched(rng):
    model = randomize_batch_norms(models.resnet20(generator=rng), rng)
    model.layer1.eval()   # mixed modes come back as they were
    before, types = snapshot(model), [type(m) for m in model.modules()]
    modes = [m.training for m in model.modules()]
    folded = fold_batchnorm(model)
    assert [type(m) for m in model.modules()] == types
    assert [m.training for m in model.modules()] == modes
    after = snapshot(model)
    assert list(after) == list(before)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    assert model.conv1.bias is None and not hasattr(model, "folded_batchnorm")
    assert not any(m.training for m in folded.modules())


def test_folded_state_dict_loads_as_a_normal_model(rng):
    model = randomize_batch_norms(models.resnet20(generator=rng), rng).eval()
    folded = fold_batchnorm(model)
    state = folded.state_dict()
    assert not any(".bn" in k or k.startswith("bn") for k in state)
    assert "conv1.bias" in state and "layer3.2.conv2.bias" in state
    # The same structure built by hand (a fresh resnet20 folded) takes the state strictly.
    twin = fold_batchnorm(models.resnet20().eval())
    twin.load_state_dict(state)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(run(twin, x), run(folded, x))


def test_folding_a_folded_model_changes_nothing(rng):
    folded = fold_batchnorm(models.vgg11_cifar(generator=rng))
    again = fold_batchnorm(folded)
    assert again.folded_batchnorm == folded.folded_batchnorm and len(folded.folded_batchnorm) == 8


@pytest.mark.parametrize("pruned", [False, True])
def test_save_and_load_rebuild_a_folded_zoo_model(tmp_path, rng, pruned):
    model = randomize_batch_norms(models.resnet20(generator=rng), rng).eval()
    if pruned:
        model = prune_channels(model, 0.5, input_shape=(3, 32, 32)).eval()
    folded = fold_batchnorm(model)
    save(folded, tmp_path / "folded.safetensors")
    loaded = load(tmp_path / "folded.safetensors")
    assert loaded.folded_batchnorm == folded.folded_batchnorm
    assert type(loaded.bn1) is nn.Identity and not loaded.training
    assert loaded.layer1[0].conv1.weight.shape == folded.layer1[0].conv1.weight.shape
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(run(loaded, x), run(folded, x))
    assert relative_error(run(loaded, x), run(model, x)) <= 1e-5


def test_load_names_a_recorded_fold_that_does_not_fit(tmp_path, rng):
    folded = fold_batchnorm(models.resnet20(generator=rng))
    folded.folded_batchnorm = [("conv1", "no.such.bn")]
    save(folded, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match=r"bad.safetensors: cannot fold the batch norms of model 'resnet20' "
                                              r"as saved: fuse_conv_bn_pairs: no layer named 'no.such.bn'"):
        load(tmp_path / "bad.safetensors")


def test_fold_for_inference_keeps_a_fold_with_the_same_outputs(rng):
    model = randomize_batch_norms(models.resnet20(generator=rng), rng)
    fast = fold_for_inference(model)
    assert fast is not model and len(fast.folded_batchnorm) == 19 and model.training
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    assert relative_error(run(fast, x), run(model.eval(), x)) <= 1e-5


def test_fold_for_inference_returns_a_model_without_batch_norm_itself(rng):
    lenet = models.lenet5(generator=rng)
    assert fold_for_inference(lenet) is lenet


class ChangesAfterItsFirstCall(nn.Module):
    """bn(conv(x)) on its first call (the trace), bn(conv(x)) + conv(x) afterwards."""

    def __init__(self, rng):
        super().__init__()
        self.conv, self.bn, self.calls = nn.Conv2d(3, 4, 3, generator=rng), nn.BatchNorm2d(4), 0

    def forward(self, x):
        self.calls += 1
        c = self.conv(x)
        return self.bn(c) if self.calls == 1 else self.bn(c) + c


def test_fold_for_inference_drops_a_fold_that_changes_the_outputs(rng):
    model = randomize_batch_norms(ChangesAfterItsFirstCall(rng), rng)
    assert fold_batchnorm(model, (3, 8, 8)).folded_batchnorm == [("conv", "bn")]   # the trace was fooled
    assert fold_for_inference(model, (3, 8, 8)) is model                          # the probe was not


# ------------------------------------------------------------------ optimize_for_inference


def conv_algorithms(model) -> set[str]:
    """The prepared forms the model's convolutions hold (which Winograd tile sizes ran)."""
    return {form for m in model.modules() if getattr(m, "prepacked", None) for form in m.prepacked.forms()}


# ResNet-18 at 64x64: batch 2 runs F(4x4) on the 16x16 layers (32 tiles), batch 8 F(4x4) on the 8x8
# ones too and F(2x2) on the 4x4 ones; batch 1 gemm there; the 7x7/2 stem polyphase; odd sizes pad tiles.
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-4), (np.float64, 1e-10)])
@pytest.mark.parametrize("N, size, forms", [
    (1, 64, {"winograd2"}), (2, 64, {"winograd4", "winograd2"}), (8, 64, {"winograd4", "winograd2"}),
    (3, 45, {"winograd2"}), (1, 112, {"winograd4", "winograd2"}),
])
def test_optimized_resnet18_gives_the_outputs_of_the_eval_model(rng, dtype, rtol, N, size, forms):
    model = randomize_batch_norms(models.resnet18(num_classes=20, generator=rng), rng).eval().to(dtype)
    x = rng.standard_normal((N, 3, size, size)).astype(dtype)
    expected = run(model, x)
    optimized = optimize_for_inference(model, input_shape=(3, size, size))
    assert relative_error(run(optimized, x), expected) <= rtol
    assert conv_algorithms(optimized) == forms
    assert len(optimized.folded_batchnorm) == 20 and optimized.prepacked_for_inference


def test_optimized_resnet20_runs_its_direct_kernels_to_1e_10_in_float64(rng):
    model = randomize_batch_norms(models.resnet20(generator=rng), rng).eval().double()
    x = rng.standard_normal((4, 3, 32, 32))
    optimized = optimize_for_inference(model)
    assert relative_error(run(optimized, x), run(model, x)) <= 1e-10
    assert conv_algorithms(optimized) == set()          # 16-64 channels: direct and gemm, nothing to prepare


def test_optimize_for_inference_leaves_the_model_as_it_was(rng):
    model = randomize_batch_norms(models.resnet18(num_classes=10, generator=rng), rng)
    before = snapshot(model)
    optimized = optimize_for_inference(model, input_shape=(3, 32, 32))
    assert model.training and all(p.requires_grad and p.data.flags.writeable for p in model.parameters())
    assert all(getattr(m, "prepacked", None) is None for m in model.modules())
    for key, value in snapshot(model).items():
        np.testing.assert_array_equal(value, before[key])
    assert not optimized.training and batch_norms(optimized) == 0


def test_optimized_model_matches_pytorch(rng):
    torch = pytest.importorskip("torch")
    ours = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1, generator=rng), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.Conv2d(64, 64, 3, padding=1, generator=rng), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.Conv2d(64, 32, 1, generator=rng))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
                                 torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
                                 torch.nn.Conv2d(64, 32, 1))
    randomize_batch_norms(ours, rng).eval()
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    theirs.eval()
    optimized = optimize_for_inference(ours, input_shape=(3, 16, 16))
    for N, size in ((1, 16), (4, 16), (2, 27)):
        x = rng.standard_normal((N, 3, size, size)).astype(np.float32)
        with torch.no_grad():
            expected = theirs(torch.from_numpy(x)).numpy()
        assert relative_error(run(optimized, x), expected) <= 1e-4
    assert conv_algorithms(optimized) == {"winograd4", "winograd2"}


def test_optimized_model_refuses_training_mode_naming_the_layer(rng):
    optimized = optimize_for_inference(models.resnet20(generator=rng)).train()
    with pytest.raises(InferenceOnlyError, match=r"^conv1 \(Conv2d\) has weights frozen for inference"):
        optimized(Tensor(rng.standard_normal((1, 3, 32, 32)).astype(np.float32)))


def test_save_and_load_rebuild_an_optimized_zoo_model(tmp_path, rng):
    model = randomize_batch_norms(models.resnet18(num_classes=10, generator=rng), rng).eval()
    optimized = optimize_for_inference(model, input_shape=(3, 32, 32))
    save(optimized, tmp_path / "optimized.safetensors")
    loaded = load(tmp_path / "optimized.safetensors")
    assert loaded.prepacked_for_inference and loaded.folded_batchnorm == optimized.folded_batchnorm
    assert all(not p.data.flags.writeable and not p.requires_grad for p in loaded.parameters())
    assert loaded.layer4[1].conv2.prepacked is not None
    x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(run(loaded, x), run(optimized, x))
    assert conv_algorithms(loaded) == conv_algorithms(optimized)
    # its state dict is an ordinary folded one: it loads into a folded model that was never optimized
    twin = fold_batchnorm(models.resnet18(num_classes=10).eval(), (3, 32, 32))
    twin.load_state_dict(load_checkpoint(tmp_path / "optimized.safetensors").model_state)
    assert relative_error(run(twin, x), run(optimized, x)) <= 1e-5
