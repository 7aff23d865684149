"""Every layer against torch.nn: same state dict in, same outputs and gradients out.

Each case builds the cnnkit layer and its torch.nn twin, loads the twin's ``state_dict()``
into ours, and compares the forward output, the input gradient and every parameter
gradient in float64. Also: BatchNorm's running statistics over several steps, Dropout and
BatchNorm in train/eval mode, the losses, and the error messages a user sees.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit
from cnnkit import ShapeError, Tensor, nn

torch = pytest.importorskip("torch")
tnn = torch.nn


def load_twin(ours: nn.Module, theirs) -> None:
    """Load the torch module's state dict into ours (tensors converted with .numpy())."""
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})


def run_both(ours: nn.Module, theirs, x: np.ndarray, rng: np.random.Generator):
    """Forward and backward (with one random upstream gradient) through both modules."""
    xo = Tensor(x, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    yo, yt = ours(xo), theirs(xt)
    g = rng.standard_normal(yt.shape)
    yo.backward(g)
    yt.backward(torch.tensor(g))
    return xo, xt, yo, yt


def assert_same_results(ours, theirs, xo, xt, yo, yt, tol: float = 1e-10) -> None:
    np.testing.assert_allclose(yo.data, yt.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=tol, atol=tol)
    torch_grads = {name: p.grad for name, p in theirs.named_parameters()}
    our_grads = {name: p.grad for name, p in ours.named_parameters()}
    assert our_grads.keys() == torch_grads.keys()
    for name, grad in torch_grads.items():
        np.testing.assert_allclose(our_grads[name], grad.numpy(), rtol=tol, atol=tol, err_msg=name)


# (id, cnnkit layer, torch layer, input shape); the input shape is (N, C, H, W) for images.
LAYERS = [
    ("conv", lambda: nn.Conv2d(3, 4, 3), lambda: tnn.Conv2d(3, 4, 3), (2, 3, 7, 6)),
    ("conv-stride-pad", lambda: nn.Conv2d(3, 4, (3, 2), stride=2, padding=(1, 2)),
     lambda: tnn.Conv2d(3, 4, (3, 2), stride=2, padding=(1, 2)), (2, 3, 8, 7)),
    ("conv3x3-stride2-phase-planes", lambda: nn.Conv2d(5, 8, 3, stride=2, padding=1),   # Conv2dStridedPlanesOp
     lambda: tnn.Conv2d(5, 8, 3, stride=2, padding=1), (3, 5, 6, 16)),
    ("conv-dilation-groups-nobias", lambda: nn.Conv2d(4, 6, 3, dilation=2, groups=2, bias=False),
     lambda: tnn.Conv2d(4, 6, 3, dilation=2, groups=2, bias=False), (2, 4, 9, 9)),
    ("conv-same-even-kernel", lambda: nn.Conv2d(2, 3, 4, padding="same"),
     lambda: tnn.Conv2d(2, 3, 4, padding="same"), (1, 2, 6, 5)),
    ("conv-reflect", lambda: nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"),
     lambda: tnn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), (2, 2, 5, 5)),
    ("conv-replicate", lambda: nn.Conv2d(2, 3, 3, padding=(2, 1), padding_mode="replicate"),
     lambda: tnn.Conv2d(2, 3, 3, padding=(2, 1), padding_mode="replicate"), (2, 2, 5, 5)),
    ("conv-circular-same", lambda: nn.Conv2d(2, 3, 3, padding="same", padding_mode="circular"),
     lambda: tnn.Conv2d(2, 3, 3, padding="same", padding_mode="circular"), (2, 2, 5, 5)),
    ("conv-unbatched", lambda: nn.Conv2d(3, 4, 3), lambda: tnn.Conv2d(3, 4, 3), (3, 6, 6)),
    ("convT", lambda: nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1),
     lambda: tnn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1), (2, 4, 5, 4)),
    ("convT-groups-dilation", lambda: nn.ConvTranspose2d(4, 6, 2, groups=2, dilation=2, bias=False),
     lambda: tnn.ConvTranspose2d(4, 6, 2, groups=2, dilation=2, bias=False), (2, 4, 4, 4)),
    ("maxpool", lambda: nn.MaxPool2d(2), lambda: tnn.MaxPool2d(2), (2, 3, 6, 6)),
    ("maxpool-pad-ceil", lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
     lambda: tnn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 3, 8, 7)),
    ("avgpool", lambda: nn.AvgPool2d(3, 2, 1, count_include_pad=False),
     lambda: tnn.AvgPool2d(3, 2, 1, count_include_pad=False), (2, 3, 7, 7)),
    ("avgpool-default", lambda: nn.AvgPool2d(2), lambda: tnn.AvgPool2d(2), (2, 3, 6, 6)),
    ("lppool", lambda: nn.LPPool2d(2, 2), lambda: tnn.LPPool2d(2, 2), (2, 3, 6, 6)),
    ("adaptive-avg", lambda: nn.AdaptiveAvgPool2d((2, 3)), lambda: tnn.AdaptiveAvgPool2d((2, 3)), (2, 3, 7, 8)),
    ("adaptive-max", lambda: nn.AdaptiveMaxPool2d(3), lambda: tnn.AdaptiveMaxPool2d(3), (2, 3, 7, 8)),
    ("relu", lambda: nn.ReLU(), lambda: tnn.ReLU(), (4, 5)),
    ("leaky-relu", lambda: nn.LeakyReLU(0.2), lambda: tnn.LeakyReLU(0.2), (4, 5)),
    ("elu", lambda: nn.ELU(0.5), lambda: tnn.ELU(0.5), (4, 5)),
    ("sigmoid", lambda: nn.Sigmoid(), lambda: tnn.Sigmoid(), (4, 5)),
    ("tanh", lambda: nn.Tanh(), lambda: tnn.Tanh(), (4, 5)),
    ("softmax", lambda: nn.Softmax(dim=1), lambda: tnn.Softmax(dim=1), (4, 5)),
    ("log-softmax", lambda: nn.LogSoftmax(dim=-1), lambda: tnn.LogSoftmax(dim=-1), (2, 3, 5)),
    ("gelu", lambda: nn.GELU(), lambda: tnn.GELU(), (4, 5)),
    ("gelu-tanh", lambda: nn.GELU("tanh"), lambda: tnn.GELU("tanh"), (4, 5)),
    ("silu", lambda: nn.SiLU(), lambda: tnn.SiLU(), (4, 5)),
    ("softplus", lambda: nn.Softplus(2.0, 3.0), lambda: tnn.Softplus(2.0, 3.0), (4, 5)),
    ("hardtanh", lambda: nn.Hardtanh(-0.5, 0.8), lambda: tnn.Hardtanh(-0.5, 0.8), (4, 5)),
    ("relu6", lambda: nn.ReLU6(), lambda: tnn.ReLU6(), (4, 5)),
    ("hardsigmoid", lambda: nn.Hardsigmoid(), lambda: tnn.Hardsigmoid(), (4, 5)),
    ("hardswish", lambda: nn.Hardswish(), lambda: tnn.Hardswish(), (4, 5)),
    ("linear", lambda: nn.Linear(5, 3), lambda: tnn.Linear(5, 3), (4, 5)),
    ("linear-3d-nobias", lambda: nn.Linear(5, 3, bias=False), lambda: tnn.Linear(5, 3, bias=False), (2, 4, 5)),
    ("flatten", lambda: nn.Flatten(), lambda: tnn.Flatten(), (2, 3, 4, 5)),
    ("flatten-0-2", lambda: nn.Flatten(0, 2), lambda: tnn.Flatten(0, 2), (2, 3, 4, 5)),
    ("identity", lambda: nn.Identity(7, key="ignored"), lambda: tnn.Identity(7, key="ignored"), (2, 3)),
    ("batchnorm1d", lambda: nn.BatchNorm1d(5), lambda: tnn.BatchNorm1d(5), (8, 5)),
    ("batchnorm1d-3d", lambda: nn.BatchNorm1d(5, affine=False), lambda: tnn.BatchNorm1d(5, affine=False), (4, 5, 3)),
    ("batchnorm2d", lambda: nn.BatchNorm2d(3), lambda: tnn.BatchNorm2d(3), (4, 3, 5, 5)),
    ("batchnorm2d-nobias", lambda: nn.BatchNorm2d(3, bias=False), lambda: tnn.BatchNorm2d(3, bias=False), (4, 3, 5, 5)),
    ("dropout-p0", lambda: nn.Dropout(0.0), lambda: tnn.Dropout(0.0), (4, 5)),
]


@pytest.mark.parametrize("make_ours, make_theirs, shape", [c[1:] for c in LAYERS], ids=[c[0] for c in LAYERS])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_layer_matches_torch_forward_and_backward(rng, make_ours, make_theirs, shape, mode):
    theirs = make_theirs().double()
    with torch.no_grad():  # non-trivial BatchNorm affine parameters and running statistics
        for name, p in theirs.named_parameters():
            if "weight" in name and p.ndim == 1:
                p.copy_(torch.tensor(rng.uniform(0.5, 1.5, p.shape)))
        for name, b in theirs.named_buffers():
            if name == "running_mean":
                b.copy_(torch.tensor(rng.standard_normal(b.shape)))
            elif name == "running_var":
                b.copy_(torch.tensor(rng.uniform(0.5, 2.0, b.shape)))
    ours = make_ours().double()
    load_twin(ours, theirs)
    ours.train(mode == "train")
    theirs.train(mode == "train")
    x = rng.standard_normal(shape)
    assert_same_results(ours, theirs, *run_both(ours, theirs, x, rng))
    for (name, ours_buffer), (_, torch_buffer) in zip(ours.named_buffers(), theirs.named_buffers(), strict=True):
        np.testing.assert_allclose(ours_buffer, torch_buffer.numpy(), rtol=1e-12, err_msg=name)


def test_float32_model_matches_torch_float32(rng):
    """Default dtype end to end: a small CNN in float32 against torch in float32."""
    ours = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 3),
    )
    theirs = tnn.Sequential(
        tnn.Conv2d(1, 4, 3, padding=1), tnn.BatchNorm2d(4), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Flatten(), tnn.Linear(4 * 4 * 4, 3),
    )
    ours.load_state_dict(theirs.state_dict())  # torch tensors directly, via np.asarray
    x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    xo, xt, yo, yt = run_both(ours, theirs, x, rng)
    assert yo.dtype == np.float32 and all(p.dtype == np.float32 for p in ours.parameters())
    assert_same_results(ours, theirs, xo, xt, yo, yt, tol=2e-5)


def test_sum_pool_is_average_pool_times_window_area(rng):
    x = rng.standard_normal((2, 3, 7, 7))
    ours = nn.SumPool2d(3, stride=2, padding=1)
    theirs = tnn.AvgPool2d(3, stride=2, padding=1)
    xo = Tensor(x, requires_grad=True)
    y = ours(xo)
    y.backward(np.ones(y.shape))
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt) * 9
    yt.backward(torch.ones(yt.shape, dtype=torch.float64))
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=1e-12)


def test_conv_transpose_output_size_picks_output_padding(rng):
    ours = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1)
    theirs = tnn.ConvTranspose2d(2, 3, 3, stride=2, padding=1)
    load_twin(ours, theirs)
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    y = ours(Tensor(x), output_size=(8, 7))
    expected = theirs(torch.tensor(x), output_size=[8, 7]).detach().numpy()
    assert y.shape == (1, 3, 8, 7)
    np.testing.assert_allclose(y.data, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ShapeError, match=r"output_size \(9, 7\) is not reachable .* must lie in \[7, 8\]"):
        ours(Tensor(x), output_size=(9, 7))


# ------------------------------------------------------------------ BatchNorm running statistics
@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
@pytest.mark.parametrize("kind, shape", [("1d", (6, 4)), ("1d", (6, 4, 3)), ("2d", (5, 4, 3, 3))])
def test_batchnorm_running_stats_follow_torch_over_steps(rng, momentum, kind, shape):
    ours = (nn.BatchNorm1d if kind == "1d" else nn.BatchNorm2d)(4, momentum=momentum, dtype=np.float64)
    theirs = (tnn.BatchNorm1d if kind == "1d" else tnn.BatchNorm2d)(4, momentum=momentum).double()
    for step in range(1, 5):
        x = rng.standard_normal(shape) * step + step  # each batch has its own statistics
        ours(Tensor(x))
        theirs(torch.tensor(x))
        assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == step
        np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), rtol=1e-12)
        np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), rtol=1e-12)
    ours.eval()
    theirs.eval()
    x = rng.standard_normal(shape)
    np.testing.assert_allclose(ours(Tensor(x)).data, theirs(torch.tensor(x)).detach().numpy(), rtol=1e-12)
    assert int(ours.num_batches_tracked) == 4  # eval does not count batches


def test_batchnorm_without_running_stats_uses_batch_statistics_in_eval(rng):
    ours = nn.BatchNorm2d(3, track_running_stats=False).eval()
    theirs = tnn.BatchNorm2d(3, track_running_stats=False).eval()
    assert ours.running_mean is None and ours.num_batches_tracked is None
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight", "bias"]
    x = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    np.testing.assert_allclose(ours(Tensor(x)).data, theirs(torch.tensor(x)).detach().numpy(), atol=1e-5)


def test_batchnorm_eval_mode_leaves_running_stats_alone(rng):
    bn = nn.BatchNorm1d(3).eval()
    bn(Tensor(rng.standard_normal((4, 3)).astype(np.float32)))
    np.testing.assert_array_equal(bn.running_mean, 0)
    np.testing.assert_array_equal(bn.running_var, 1)
    assert int(bn.num_batches_tracked) == 0


# ------------------------------------------------------------------ Dropout
def test_dropout_drops_in_training_and_passes_through_in_eval():
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(0.25, generator=np.random.default_rng(0))))
    drop = model[1][0]
    x = Tensor(np.ones((200, 500), dtype=np.float32))
    y = drop(x).data
    assert abs((y == 0).mean() - 0.25) < 0.01
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.75], rtol=1e-6)
    model.eval()
    assert drop.training is False
    assert drop(x) is x


def test_dropout_masks_are_reproducible_with_a_seed():
    x = Tensor(np.ones((4, 6), dtype=np.float32))
    masks = []
    for _ in range(2):
        cnnkit.manual_seed(7)
        drop = nn.Dropout(0.5)  # no rng: the default generator, looked up at each call
        masks.append(drop(x).data)
    np.testing.assert_array_equal(masks[0], masks[1])
    a, b = nn.Dropout(generator=np.random.default_rng(3)), nn.Dropout(generator=np.random.default_rng(3))
    np.testing.assert_array_equal(a(x).data, b(x).data)


def test_dropout_rejects_a_probability_outside_0_1():
    with pytest.raises(ValueError, match=r"Dropout expects p in \[0, 1\], got 1.5"):
        nn.Dropout(1.5)


# ------------------------------------------------------------------ losses
def test_losses_match_torch(rng):
    logits = rng.standard_normal((6, 4))
    target = np.array([0, 3, 1, -100, 2, 3])
    weight = rng.uniform(0.5, 2.0, 4)
    probs = rng.uniform(size=(6, 4))
    cases = [
        (nn.CrossEntropyLoss(), tnn.CrossEntropyLoss(), logits, np.where(target < 0, 0, target)),
        (nn.CrossEntropyLoss(weight, ignore_index=-100, label_smoothing=0.1),
         tnn.CrossEntropyLoss(torch.tensor(weight), ignore_index=-100, label_smoothing=0.1), logits, target),
        (nn.CrossEntropyLoss(reduction="sum"), tnn.CrossEntropyLoss(reduction="sum"), logits,
         probs / probs.sum(1, keepdims=True)),
        (nn.NLLLoss(weight), tnn.NLLLoss(torch.tensor(weight)), logits, target),
        (nn.MSELoss(), tnn.MSELoss(), logits, probs),
        (nn.MSELoss(reduction="none"), tnn.MSELoss(reduction="none"), logits, probs),
        (nn.BCEWithLogitsLoss(pos_weight=weight), tnn.BCEWithLogitsLoss(pos_weight=torch.tensor(weight)),
         logits, (probs > 0.5).astype(np.float64)),
        (nn.BCELoss(weight), tnn.BCELoss(torch.tensor(weight)), probs, (probs > 0.5).astype(np.float64)),
        (nn.BCELoss(reduction="sum"), tnn.BCELoss(reduction="sum"), probs, probs[::-1].copy()),
        (nn.L1Loss(), tnn.L1Loss(), logits, probs),
        (nn.SmoothL1Loss(reduction="none", beta=0.5), tnn.SmoothL1Loss(reduction="none", beta=0.5), logits, probs),
        (nn.HuberLoss("sum", 0.7), tnn.HuberLoss("sum", 0.7), logits, probs),
    ]
    for ours, theirs, x, t in cases:
        xo, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        lo, lt = ours(xo, t), theirs(xt, torch.tensor(t))
        np.testing.assert_allclose(lo.data, lt.detach().numpy(), rtol=1e-10, err_msg=repr(ours))
        g = rng.standard_normal(lt.shape)
        lo.backward(g)
        lt.backward(torch.tensor(g))
        np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=repr(ours))
    weighted = nn.CrossEntropyLoss(weight)
    assert list(weighted.state_dict()) == list(tnn.CrossEntropyLoss(torch.tensor(weight)).state_dict())
    assert list(nn.BCELoss(weight).state_dict()) == list(tnn.BCELoss(torch.tensor(weight)).state_dict())


# ------------------------------------------------------------------ errors a user can act on
def test_conv_names_the_expected_channels_and_the_received_shape():
    with pytest.raises(
        ShapeError,
        match=r"^Conv2d: expected input with 3 channels, of shape \(N, 3, H, W\) or \(3, H, W\); "
        r"got shape \(2, 1, 8, 8\)$",
    ):
        nn.Conv2d(3, 8, kernel_size=3)(Tensor(np.zeros((2, 1, 8, 8), dtype=np.float32)))


def _features_model() -> nn.Module:
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 8, 3)
            )
            self.classifier = nn.Linear(8, 2)

        def forward(self, x):
            return self.classifier(cnnkit.functional.flatten(self.features(x)))

    return Net()


def test_nested_error_names_the_full_path_once():
    model = _features_model()
    with pytest.raises(ShapeError) as info:
        model(Tensor(np.zeros((2, 1, 10, 10), dtype=np.float32)))
    message = str(info.value)
    assert message == (
        "features.3 (Conv2d): expected input with 3 channels, of shape (N, 3, H, W) or (3, H, W); "
        "got shape (2, 4, 4, 4)"
    )
    assert isinstance(info.value, ValueError)
    # calling the inner container directly gives the path relative to it
    with pytest.raises(ShapeError, match=r"^3 \(Conv2d\): expected input with 3 channels"):
        model.features(Tensor(np.zeros((2, 1, 10, 10), dtype=np.float32)))


@pytest.mark.parametrize(
    "layer, shape, message",
    [
        (nn.Linear(120, 84), (2, 100), r"^Linear: expected input with 120 features, of shape \(\*, 120\); got shape \(2, 100\)$"),
        (nn.BatchNorm2d(16), (2, 8, 4, 4), r"^BatchNorm2d: expected input with 16 features, of shape \(N, 16, H, W\); got shape \(2, 8, 4, 4\)$"),
        (nn.BatchNorm1d(4), (2, 4, 3, 3), r"^BatchNorm1d: expected input with 4 features, of shape \(N, 4\) or \(N, 4, L\); got shape \(2, 4, 3, 3\)$"),
        (nn.MaxPool2d(2), (8, 8), r"^MaxPool2d: expected input of shape \(N, C, H, W\) or \(C, H, W\), got shape \(8, 8\)$"),
        (nn.ConvTranspose2d(4, 2, 3), (1, 2, 5, 5), r"^ConvTranspose2d: expected input with 4 channels"),
    ],
    ids=["linear", "batchnorm2d", "batchnorm1d", "maxpool", "conv-transpose"],
)
def test_layers_check_their_own_input(layer, shape, message):
    with pytest.raises(ShapeError, match=message):
        layer(Tensor(np.zeros(shape, dtype=np.float32)))


def test_error_from_a_functional_op_gets_the_layer_path():
    model = nn.Sequential(nn.Sequential(nn.Identity(), nn.MaxPool2d(5)))
    with pytest.raises(ShapeError, match=r"^0\.1 \(MaxPool2d\): max_pool2d kernel \(5, 5\) .* is larger than"):
        model(Tensor(np.zeros((1, 1, 3, 3), dtype=np.float32)))


def test_error_path_uses_the_registered_path_when_forward_skips_a_level():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(4, 3), nn.Linear(4, 2))])

        def forward(self, x):
            return self.blocks[0](x)  # ModuleList.__call__ is never run

    with pytest.raises(ShapeError, match=r"^blocks\.0\.1 \(Linear\): expected input with 4 features"):
        Net()(Tensor(np.zeros((2, 4), dtype=np.float32)))
