"""The model zoo against PyTorch: parameter counts, state_dict layouts, outputs, gradients, init.

torchvision does not install beside torch 2.13 here, so the reference networks below are
written with torch.nn, mirroring torchvision's public architectures (module names,
layer order, shapes). Each zoo model must have the published parameter count, the same
state_dict keys in the same order with the same shapes, and, after loading the torch
model's weights, the same outputs.
"""

from __future__ import annotations

import inspect
import time
from collections import OrderedDict

import numpy as np
import pytest

import cnnkit
from cnnkit import Tensor, models, nn

torch = pytest.importorskip("torch", reason="PyTorch is the reference here (pip install -e .[test])")
tnn, tF = torch.nn, torch.nn.functional

# torchvision's published counts (and the CIFAR ones computed by hand in the docstrings).
PARAMETERS = {
    "lenet5": 61_706, "alexnet": 61_100_840,
    "vgg11": 132_863_336, "vgg13": 133_047_848, "vgg16": 138_357_544, "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840, "vgg13_bn": 133_053_736, "vgg16_bn": 138_365_992, "vgg19_bn": 143_678_248,
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "googlenet": 6_624_904, "densenet121": 7_978_856, "resnet20": 269_722, "vgg11_cifar": 9_756_426,
}


def count(model) -> int:
    return sum(p.size for p in model.parameters())


# ---------------------------------------------------------------------- torch references
class Net(tnn.Module):
    """A torch module with the given children (in order) and forward function."""

    def __init__(self, forward, **children):
        super().__init__()
        for name, child in children.items():
            setattr(self, name, child)
        self._forward = forward

    def forward(self, x):
        return self._forward(self, x)


def _pool_flat_classify(m, x):
    return m.classifier(torch.flatten(m.avgpool(m.features(x)), 1))


def t_lenet5(activation="relu", pooling="max"):
    act = {"relu": tnn.ReLU, "tanh": tnn.Tanh}[activation]
    pool = {"max": tnn.MaxPool2d, "avg": tnn.AvgPool2d}[pooling]
    return Net(
        lambda m, x: m.classifier(m.flatten(m.features(x))),
        features=tnn.Sequential(
            tnn.Conv2d(1, 6, 5, padding=2), act(), pool(2), tnn.Conv2d(6, 16, 5), act(), pool(2)
        ),
        flatten=tnn.Flatten(),
        classifier=tnn.Sequential(
            tnn.Linear(400, 120), act(), tnn.Linear(120, 84), act(), tnn.Linear(84, 10)
        ),
    )


def t_alexnet():
    c = tnn.Conv2d
    return Net(
        _pool_flat_classify,
        features=tnn.Sequential(
            c(3, 64, 11, 4, 2), tnn.ReLU(), tnn.MaxPool2d(3, 2), c(64, 192, 5, padding=2), tnn.ReLU(),
            tnn.MaxPool2d(3, 2), c(192, 384, 3, padding=1), tnn.ReLU(), c(384, 256, 3, padding=1), tnn.ReLU(),
            c(256, 256, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(3, 2),
        ),
        avgpool=tnn.AdaptiveAvgPool2d((6, 6)),
        classifier=tnn.Sequential(
            tnn.Dropout(), tnn.Linear(9216, 4096), tnn.ReLU(),
            tnn.Dropout(), tnn.Linear(4096, 4096), tnn.ReLU(),
            tnn.Linear(4096, 1000),
        ),
    )


VGG_CFG = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M"] + [256] * 4 + ["M"] + [512] * 4 + ["M"] + [512] * 4 + ["M"],
}


def t_vgg_features(depth, bn):
    layers, c = [], 3
    for v in VGG_CFG[depth]:
        if v == "M":
            layers.append(tnn.MaxPool2d(2, 2))
        else:
            layers += [tnn.Conv2d(c, v, 3, padding=1)] + ([tnn.BatchNorm2d(v)] if bn else []) + [tnn.ReLU()]
            c = v
    return tnn.Sequential(*layers)


def t_vgg(depth, bn):
    return Net(
        _pool_flat_classify,
        features=t_vgg_features(depth, bn),
        avgpool=tnn.AdaptiveAvgPool2d((7, 7)),
        classifier=tnn.Sequential(
            tnn.Linear(25088, 4096), tnn.ReLU(), tnn.Dropout(),
            tnn.Linear(4096, 4096), tnn.ReLU(), tnn.Dropout(),
            tnn.Linear(4096, 1000),
        ),
    )


def t_vgg11_cifar():
    return Net(
        lambda m, x: m.classifier(m.flatten(m.features(x))),
        features=t_vgg_features(11, True),
        flatten=tnn.Flatten(),
        classifier=tnn.Sequential(
            tnn.Linear(512, 512), tnn.ReLU(), tnn.Dropout(), tnn.Linear(512, 512), tnn.ReLU(), tnn.Dropout(),
            tnn.Linear(512, 10),
        ),
    )


class TBasicBlock(tnn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1, self.bn1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False), tnn.BatchNorm2d(planes)
        self.relu = tnn.ReLU()
        self.conv2, self.bn2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False), tnn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TBottleneck(tnn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1, self.bn1 = tnn.Conv2d(inplanes, planes, 1, bias=False), tnn.BatchNorm2d(planes)
        self.conv2, self.bn2 = tnn.Conv2d(planes, planes, 3, stride, 1, bias=False), tnn.BatchNorm2d(planes)
        self.conv3, self.bn3 = tnn.Conv2d(planes, planes * 4, 1, bias=False), tnn.BatchNorm2d(planes * 4)
        self.relu = tnn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn3(self.conv3(self.relu(self.bn2(self.conv2(out)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TShortcutA(tnn.Module):
    def __init__(self, pad):
        super().__init__()
        self.pad = pad

    def forward(self, x):
        return tF.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


def t_stages(block, widths, layers, inplanes, option_a=False):
    stages = []
    for i, (planes, n) in enumerate(zip(widths, layers, strict=True)):
        stride, out = (1 if i == 0 else 2), planes * block.expansion
        shortcut = None
        if stride != 1 or inplanes != out:
            shortcut = TShortcutA((out - inplanes) // 2) if option_a else tnn.Sequential(
                tnn.Conv2d(inplanes, out, 1, stride, bias=False), tnn.BatchNorm2d(out))
        rest = [block(out, planes) for _ in range(n - 1)]
        stages.append(tnn.Sequential(block(inplanes, planes, stride, shortcut), *rest))
        inplanes = out
    return {f"layer{i + 1}": s for i, s in enumerate(stages)}


def t_resnet(block, layers):
    def forward(m, x):
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        return m.fc(torch.flatten(m.avgpool(x), 1))

    return Net(
        forward, conv1=tnn.Conv2d(3, 64, 7, 2, 3, bias=False), bn1=tnn.BatchNorm2d(64), relu=tnn.ReLU(),
        maxpool=tnn.MaxPool2d(3, 2, 1), **t_stages(block, (64, 128, 256, 512), layers, 64),
        avgpool=tnn.AdaptiveAvgPool2d((1, 1)), fc=tnn.Linear(512 * block.expansion, 1000),
    )


def t_resnet20():
    def forward(m, x):
        x = m.layer3(m.layer2(m.layer1(m.relu(m.bn1(m.conv1(x))))))
        return m.fc(torch.flatten(m.avgpool(x), 1))

    return Net(
        forward, conv1=tnn.Conv2d(3, 16, 3, 1, 1, bias=False), bn1=tnn.BatchNorm2d(16), relu=tnn.ReLU(),
        **t_stages(TBasicBlock, (16, 32, 64), (3, 3, 3), 16, option_a=True),
        avgpool=tnn.AdaptiveAvgPool2d((1, 1)), fc=tnn.Linear(64, 10),
    )


class TBasicConv2d(tnn.Module):
    def __init__(self, cin, cout, **kwargs):
        super().__init__()
        self.conv = tnn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = tnn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return tF.relu(self.bn(self.conv(x)))


class TInception(tnn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pp):
        super().__init__()
        self.branch1 = TBasicConv2d(cin, c1, kernel_size=1)
        self.branch2 = tnn.Sequential(
            TBasicConv2d(cin, c3r, kernel_size=1), TBasicConv2d(c3r, c3, kernel_size=3, padding=1)
        )
        self.branch3 = tnn.Sequential(  # torchvision's "5x5" branch is a 3x3
            TBasicConv2d(cin, c5r, kernel_size=1), TBasicConv2d(c5r, c5, kernel_size=3, padding=1)
        )
        self.branch4 = tnn.Sequential(
            tnn.MaxPool2d(3, 1, 1, ceil_mode=True), TBasicConv2d(cin, pp, kernel_size=1)
        )

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


def t_googlenet():
    names = ["3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"]
    specs = [
        (192, 64, 96, 128, 16, 32, 32), (256, 128, 128, 192, 32, 96, 64),
        (480, 192, 96, 208, 16, 48, 64), (512, 160, 112, 224, 24, 64, 64),
        (512, 128, 128, 256, 24, 64, 64), (512, 112, 144, 288, 32, 64, 64),
        (528, 256, 160, 320, 32, 128, 128), (832, 256, 160, 320, 32, 128, 128),
        (832, 384, 192, 384, 48, 128, 128),
    ]
    blocks = {f"inception{n}": TInception(*s) for n, s in zip(names, specs, strict=True)}

    def forward(m, x):
        x = m.maxpool2(m.conv3(m.conv2(m.maxpool1(m.conv1(x)))))
        x = m.maxpool3(m.inception3b(m.inception3a(x)))
        for n in ["4a", "4b", "4c", "4d", "4e"]:
            x = getattr(m, f"inception{n}")(x)
        x = m.inception5b(m.inception5a(m.maxpool4(x)))
        return m.fc(m.dropout(torch.flatten(m.avgpool(x), 1)))

    pool = lambda k: tnn.MaxPool2d(k, 2, ceil_mode=True)  # noqa: E731
    return Net(
        forward, conv1=TBasicConv2d(3, 64, kernel_size=7, stride=2, padding=3), maxpool1=pool(3),
        conv2=TBasicConv2d(64, 64, kernel_size=1), conv3=TBasicConv2d(64, 192, kernel_size=3, padding=1),
        maxpool2=pool(3), inception3a=blocks["inception3a"], inception3b=blocks["inception3b"],
        maxpool3=pool(3),
        **{f"inception4{c}": blocks[f"inception4{c}"] for c in "abcde"}, maxpool4=pool(2),
        inception5a=blocks["inception5a"], inception5b=blocks["inception5b"],
        avgpool=tnn.AdaptiveAvgPool2d((1, 1)), dropout=tnn.Dropout(0.2), fc=tnn.Linear(1024, 1000),
    )


class TDenseLayer(tnn.Module):
    def __init__(self, cin, growth=32, bn_size=4):
        super().__init__()
        self.norm1, self.relu1 = tnn.BatchNorm2d(cin), tnn.ReLU()
        self.conv1 = tnn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2, self.relu2 = tnn.BatchNorm2d(bn_size * growth), tnn.ReLU()
        self.conv2 = tnn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features):
        x = self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))
        return self.conv2(self.relu2(self.norm2(x)))


class TDenseBlock(tnn.ModuleDict):
    def __init__(self, n, cin):
        super().__init__({f"denselayer{i + 1}": TDenseLayer(cin + 32 * i) for i in range(n)})

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


def t_densenet121():
    features = OrderedDict(
        conv0=tnn.Conv2d(3, 64, 7, 2, 3, bias=False), norm0=tnn.BatchNorm2d(64), relu0=tnn.ReLU(),
        pool0=tnn.MaxPool2d(3, 2, 1),
    )
    c = 64
    for i, n in enumerate((6, 12, 24, 16)):
        features[f"denseblock{i + 1}"] = TDenseBlock(n, c)
        c += 32 * n
        if i < 3:
            features[f"transition{i + 1}"] = tnn.Sequential(OrderedDict(
                norm=tnn.BatchNorm2d(c), relu=tnn.ReLU(), conv=tnn.Conv2d(c, c // 2, 1, bias=False),
                pool=tnn.AvgPool2d(2, 2)))
            c //= 2
    features["norm5"] = tnn.BatchNorm2d(c)

    def forward(m, x):
        x = tF.adaptive_avg_pool2d(tF.relu(m.features(x)), (1, 1))
        return m.classifier(torch.flatten(x, 1))

    return Net(forward, features=tnn.Sequential(features), classifier=tnn.Linear(c, 1000))


# name -> (torch reference builder, input shape for the output comparison)
ZOO = {
    "lenet5": (t_lenet5, (2, 1, 28, 28)),
    "alexnet": (t_alexnet, (2, 3, 224, 224)),
    **{f"vgg{d}": (lambda d=d: t_vgg(d, False), (2, 3, 32, 32)) for d in (11, 13, 16, 19)},
    **{f"vgg{d}_bn": (lambda d=d: t_vgg(d, True), (2, 3, 32, 32)) for d in (11, 13, 16, 19)},
    "resnet18": (lambda: t_resnet(TBasicBlock, [2, 2, 2, 2]), (2, 3, 64, 64)),
    "resnet34": (lambda: t_resnet(TBasicBlock, [3, 4, 6, 3]), (2, 3, 64, 64)),
    "resnet50": (lambda: t_resnet(TBottleneck, [3, 4, 6, 3]), (2, 3, 64, 64)),
    "googlenet": (t_googlenet, (2, 3, 64, 64)),
    "densenet121": (t_densenet121, (2, 3, 64, 64)),
    "resnet20": (t_resnet20, (2, 3, 32, 32)),
    "vgg11_cifar": (t_vgg11_cifar, (2, 3, 32, 32)),
}


def reference_model(build, seed: int = 0):
    """Build a torch reference with weights that keep the signal alive through deep stacks.

    It is built on the meta device (no default init: VGG's would cost seconds) and then
    filled: He-normal conv and linear weights, small random biases, random BatchNorm
    affine parameters and running statistics (so eval-mode BatchNorm is not an identity).
    """
    with torch.device("meta"):
        tmodel = build()
    tmodel.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in tmodel.modules():
            if isinstance(m, (tnn.Conv2d, tnn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=g)
                if m.bias is not None:
                    m.bias.uniform_(-0.1, 0.1, generator=g)
            elif isinstance(m, tnn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.num_batches_tracked.zero_()
    return tmodel


def build_cnnkit(name: str):
    """Build a zoo model, skipping the torchvision init where its weights get overwritten.

    VGG and GoogLeNet accept init_weights=False (as torchvision's): drawing VGG's 120M
    classifier weights again takes seconds; the init itself is tested once, below.
    """
    skip_init = name == "googlenet" or (name.startswith("vgg") and name != "vgg11_cifar")
    kwargs = {"init_weights": False} if skip_init else {}
    return models.get_model(name, generator=np.random.default_rng(0), **kwargs)


def torch_state(tmodel) -> dict:
    return {k: v.detach().numpy() for k, v in tmodel.state_dict().items()}


def assert_close(ours, ref, rtol=1e-4, atol_scale=1e-4):
    """float32 closeness with atol relative to the reference's magnitude."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol_scale * max(float(np.abs(ref).max()), 1e-12))


# ---------------------------------------------------------------------- registry
def test_list_models_names_every_constructor():
    assert models.list_models() == sorted(PARAMETERS)


def test_get_model_passes_arguments_and_ignores_case():
    net = models.get_model("ResNet20", num_classes=7, generator=np.random.default_rng(0))
    assert isinstance(net, models.CifarResNet) and net.fc.out_features == 7


def test_get_model_rejects_an_unknown_name_listing_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown model 'resnet19'; available: alexnet, densenet121"):
        models.get_model("resnet19")


def test_every_constructor_takes_num_classes_and_generator():
    for name in models.list_models():
        parameters = inspect.signature(getattr(models, name)).parameters
        assert "num_classes" in parameters and parameters["generator"].kind is inspect.Parameter.KEYWORD_ONLY, name
    for name in ("lenet5", "resnet20", "vgg11_cifar", "resnet18", "googlenet", "densenet121"):
        net = models.get_model(name, num_classes=3, generator=np.random.default_rng(0))
        assert [m for m in net.modules() if isinstance(m, nn.Linear)][-1].out_features == 3, name


# ---------------------------------------------------------------------- against torch
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_matches_torch(name, rng):
    """Parameter count, state_dict keys/order/shapes, and eval outputs with torch's weights."""
    build_torch, shape = ZOO[name]
    reference = reference_model(build_torch).eval()
    ours = build_cnnkit(name).eval()

    assert count(ours) == PARAMETERS[name]
    assert sum(p.numel() for p in reference.parameters()) == PARAMETERS[name]
    ours_layout = [(k, tuple(v.shape)) for k, v in ours.state_dict(keep_vars=True).items()]
    torch_layout = [(k, tuple(v.shape)) for k, v in reference.state_dict().items()]
    assert ours_layout == torch_layout

    ours.load_state_dict(torch_state(reference))
    x = rng.standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    with cnnkit.no_grad():
        actual = ours(Tensor(x)).data
    classes = 10 if name in ("lenet5", "resnet20", "vgg11_cifar") else 1000
    assert actual.shape == expected.shape == (shape[0], classes)
    assert_close(actual, expected)


def test_lenet5_tanh_avg_variant_matches_torch(rng):
    reference = reference_model(lambda: t_lenet5("tanh", "avg")).eval()
    ours = models.lenet5(activation="tanh", pooling="avg", generator=np.random.default_rng(0))
    assert count(ours) == 61_706
    assert isinstance(ours.features[1], nn.Tanh) and isinstance(ours.features[2], nn.AvgPool2d)
    ours.load_state_dict(torch_state(reference))
    x = rng.standard_normal((3, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    assert_close(ours(Tensor(x)).data, expected)


@pytest.mark.parametrize("name, shape", [
    ("lenet5", (4, 1, 28, 28)), ("resnet18", (2, 3, 64, 64)), ("vgg11_bn", (2, 3, 32, 32)),
])
def test_gradients_match_torch_in_training_mode(name, shape, rng):
    """Train-mode forward (BatchNorm on batch statistics) and backward equal torch's.

    In float64: with batch statistics over a few values per channel (VGG's last blocks see
    2x2 maps) and max pooling's argmax, float32 rounding differences of 1e-7 can flip a
    near-tie and move a gradient, which says nothing about correctness.
    """
    build_torch, _ = ZOO[name]
    reference = reference_model(build_torch).train().double()
    ours = build_cnnkit(name).train().double()
    ours.load_state_dict(torch_state(reference))
    for m in reference.modules():  # dropout masks are random: compare without them
        if isinstance(m, tnn.Dropout):
            m.eval()
    for m in ours.modules():
        if isinstance(m, nn.Dropout):
            m.eval()

    x = rng.standard_normal(shape)
    w = rng.standard_normal((shape[0], 10 if name == "lenet5" else 1000))
    (reference(torch.from_numpy(x)) * torch.from_numpy(w)).sum().backward()
    out = ours(Tensor(x))
    (out * Tensor(w)).sum().backward()

    torch_params = dict(reference.named_parameters())
    ours_params = dict(ours.named_parameters())
    first, last = next(iter(ours_params)), list(ours_params)[-2]  # first conv weight, last weight
    middle = [k for k in ours_params if k.endswith("weight")][len(ours_params) // 4]
    for key in (first, middle, last):
        assert_close(ours_params[key].grad, torch_params[key].grad.numpy(), rtol=1e-8, atol_scale=1e-9)
    for key, p in reference.named_buffers():  # running statistics were updated alike
        if key.endswith("running_var"):
            assert_close(ours.state_dict()[key], p.numpy())


# ---------------------------------------------------------------------- initialization
def _std(param) -> float:
    return float(np.std(param.data))


def test_resnet_init_is_torchvisions():
    net = models.resnet18(generator=np.random.default_rng(1))
    assert _std(net.conv1.weight) == pytest.approx((2 / (64 * 7 * 7)) ** 0.5, rel=0.05)  # fan_out
    assert _std(net.layer3[0].conv2.weight) == pytest.approx((2 / (256 * 9)) ** 0.5, rel=0.02)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(np.all(m.weight.data == 1) and np.all(m.bias.data == 0) for m in norms)
    # fc keeps PyTorch's default Linear init, U(-1/sqrt(512), 1/sqrt(512)) for weight and bias
    assert np.abs(net.fc.weight.data).max() <= 512**-0.5 and np.abs(net.fc.bias.data).max() > 0
    zero = models.resnet50(zero_init_residual=True, generator=np.random.default_rng(1))
    assert np.all(zero.layer1[0].bn3.weight.data == 0) and np.all(zero.layer1[0].bn2.weight.data == 1)


def test_vgg_init_is_torchvisions():
    net = models.vgg11(generator=np.random.default_rng(2))
    assert _std(net.features[0].weight) == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)
    assert _std(net.features[18].weight) == pytest.approx((2 / (512 * 9)) ** 0.5, rel=0.01)
    assert all(np.all(m.bias.data == 0) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert _std(net.classifier[0].weight) == pytest.approx(0.01, rel=0.01)
    assert _std(net.classifier[6].weight) == pytest.approx(0.01, rel=0.01)


def test_googlenet_init_is_torchvisions():
    net = models.googlenet(generator=np.random.default_rng(3))
    conv = net.inception4a.branch2[1].conv.weight
    assert _std(conv) == pytest.approx(0.01, rel=0.01) and np.abs(conv.data).max() <= 2
    assert _std(net.fc.weight) == pytest.approx(0.01, rel=0.02)
    assert all(m.eps == 0.001 for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert all(m.bias is None for m in net.modules() if isinstance(m, nn.Conv2d))
    assert np.abs(net.fc.bias.data).max() > 0  # torchvision leaves the fc bias at PyTorch's default


def test_densenet_init_is_torchvisions():
    net = models.densenet121(generator=np.random.default_rng(4))
    conv = net.features.denseblock3.denselayer5.conv1.weight  # fan_in = 256 + 4*32
    assert _std(conv) == pytest.approx((2 / 384) ** 0.5, rel=0.02)
    assert np.all(net.classifier.bias.data == 0)


def test_weights_come_from_the_given_generator_or_the_seeded_default():
    a = models.resnet20(generator=np.random.default_rng(5)).state_dict()
    b = models.resnet20(generator=np.random.default_rng(5)).state_dict()
    c = models.resnet20(generator=np.random.default_rng(6)).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["conv1.weight"], c["conv1.weight"])
    cnnkit.manual_seed(7)
    d = models.lenet5().state_dict()
    cnnkit.manual_seed(7)
    e = models.lenet5().state_dict()
    assert all(np.array_equal(d[k], e[k]) for k in d)


# ---------------------------------------------------------------------- structure
def test_lenet5_parts_are_separate_for_a_later_conversion():
    net = models.lenet5(generator=np.random.default_rng(0))
    assert isinstance(net.flatten, nn.Flatten)
    assert [type(m).__name__ for m in net.classifier] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert [p.size for p in net.parameters()] == [150, 6, 2400, 16, 48000, 120, 10080, 84, 840, 10]


def test_lenet5_rejects_unknown_options():
    with pytest.raises(ValueError, match=r"activation in \['relu', 'tanh'\], got 'sigmoid'"):
        models.lenet5(activation="sigmoid")
    with pytest.raises(ValueError, match=r"pooling in \['avg', 'max'\], got 'sum'"):
        models.lenet5(pooling="sum")


def test_vgg11_cifar_head_is_flatten_then_linear_layers():
    net = models.vgg11_cifar(generator=np.random.default_rng(0))
    linears = [m for m in net.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 512), (512, 512), (512, 10)]
    assert isinstance(net.flatten, nn.Flatten)


def test_resnet20_option_a_shortcut_subsamples_and_zero_pads_channels(rng):
    net = models.resnet20(generator=np.random.default_rng(0))
    shortcut = net.layer2[0].downsample
    assert isinstance(shortcut, models.cifar.ShortcutA) and not list(shortcut.parameters())
    x = rng.standard_normal((2, 16, 32, 32)).astype(np.float32)
    y = shortcut(Tensor(x)).data
    assert y.shape == (2, 32, 16, 16)
    np.testing.assert_array_equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert not y[:, :8].any() and not y[:, 24:].any()


def test_a_too_small_input_names_the_layer():
    net = models.alexnet(generator=np.random.default_rng(0))
    with pytest.raises(cnnkit.ShapeError, match=r"features\.12 \(MaxPool2d\)"):
        net(Tensor(np.zeros((1, 3, 62, 62), np.float32)))


def test_resnet18_runs_at_imagenet_size_in_batches_of_8():
    net = models.resnet18(generator=np.random.default_rng(0)).eval()
    x = Tensor(np.random.default_rng(1).standard_normal((8, 3, 224, 224)).astype(np.float32))
    start = time.perf_counter()
    with cnnkit.no_grad():
        y = net(x)
    assert y.shape == (8, 1000) and np.isfinite(y.data).all()
    assert time.perf_counter() - start < 10


def test_googlenet_transform_input_rescales_each_channel(rng):
    plain = models.googlenet(init_weights=False, generator=np.random.default_rng(0)).eval()
    moved = models.googlenet(transform_input=True, init_weights=False, generator=np.random.default_rng(0)).eval()
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    rescaled = (x * (std / 0.5)[:, None, None] + ((mean - 0.5) / 0.5)[:, None, None]).astype(np.float32)
    assert_close(moved(Tensor(x)).data, plain(Tensor(rescaled)).data)


def test_dropout_masks_come_from_the_models_generator(rng):
    x = Tensor(rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
    first = models.vgg11_cifar(generator=np.random.default_rng(8))(x).data  # training mode
    second = models.vgg11_cifar(generator=np.random.default_rng(8))(x).data
    np.testing.assert_array_equal(first, second)


# ---------------------------------------------------------------- the zoo's entries
@pytest.mark.parametrize("name", models.list_models())
def test_zoo_entries_declare_the_sizes_each_model_accepts(name):
    from cnnkit.errors import ShapeError

    entry = models.zoo_entry(name)
    net = models.get_model(name, num_classes=3, generator=np.random.default_rng(0))
    net.eval()
    C = entry.input_shape[0]

    def forward(size):
        with cnnkit.no_grad():
            return net(Tensor(np.zeros((1, C, size, size), np.float32)))

    assert forward(entry.min_size).shape == (1, 3)
    if entry.min_size > 1:
        with pytest.raises(ShapeError):
            forward(entry.min_size - 1)
    if entry.max_size is not None:
        assert forward(entry.max_size).shape == (1, 3)
        with pytest.raises(ShapeError):
            forward(entry.max_size + 1)
    assert entry.accepts(entry.input_shape[1])


@pytest.mark.parametrize("name", models.list_models())
def test_zoo_entries_name_the_classifier_head_and_the_first_convolution(name):
    entry = models.zoo_entry(name)
    net = models.get_model(name, num_classes=7, generator=np.random.default_rng(0))
    linears = [path for path, m in net.named_modules() if isinstance(m, nn.Linear)]
    convs = [path for path, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    assert entry.head == linears[-1] and net.get_submodule(entry.head).out_features == 7
    assert entry.stem == convs[0] and net.get_submodule(entry.stem).in_channels == entry.input_shape[0]


@pytest.mark.parametrize("name, channels", [("resnet18", 1), ("lenet5", 3), ("densenet121", 1), ("googlenet", 2)])
def test_in_channels_rebuilds_the_first_convolution(name, channels):
    entry = models.zoo_entry(name)
    net = models.get_model(name, num_classes=4, in_channels=channels, generator=np.random.default_rng(0))
    net.eval()
    size = max(entry.min_size, 32) if entry.max_size is None else entry.min_size
    stem = net.get_submodule(entry.stem)
    assert stem.in_channels == channels and stem.weight.shape[1] == channels
    with cnnkit.no_grad():
        assert net(Tensor(np.zeros((2, channels, size, size), np.float32))).shape == (2, 4)
