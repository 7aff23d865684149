"""Real clients: PyTorch models, written here in torchvision's layout, exported by
``torch.onnx.export`` (the TorchScript exporter at opset 11, which spells out flatten with
Shape/Gather/Unsqueeze/Concat nodes, and the torch.export-based one at opset 18), load in
cnnkit and give PyTorch's outputs at two batch sizes."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest

from cnnkit import Tensor
from cnnkit.onnx import OnnxModel, load

from .conftest import assert_close_to_scale, run_cnnkit

torch = pytest.importorskip("torch")
nn = torch.nn
pytest.importorskip("onnxscript")  # the torch.export-based exporter needs it

EXPORTERS = {"torchscript-opset11": (False, 11), "dynamo-opset18": (True, 18)}


# --------------------------------------------------------------------------- the models
class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (self.downsample(x) if self.downsample is not None else x))


class ResNet18(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class VGG11(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        layers, c = [], 3
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(True),
            nn.Dropout(), nn.Linear(4096, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class AlexNet(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin, cout, **kwargs):
        super().__init__(nn.Conv2d(cin, cout, bias=False, **kwargs), nn.BatchNorm2d(cout, eps=0.001), nn.ReLU())


class Inception(nn.Module):
    """GoogLeNet's block: four branches concatenated, one after a ceil-mode max pool."""

    def __init__(self, cin, c1, c3r, c3, c5r, c5, pool_proj):
        super().__init__()
        self.branch1 = ConvBNReLU(cin, c1, kernel_size=1)
        self.branch2 = nn.Sequential(ConvBNReLU(cin, c3r, kernel_size=1), ConvBNReLU(c3r, c3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(ConvBNReLU(cin, c5r, kernel_size=1), ConvBNReLU(c5r, c5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), ConvBNReLU(cin, pool_proj, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNetBlock(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = ConvBNReLU(3, 32, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception = Inception(32, 16, 24, 32, 4, 8, 8)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.maxpool2(self.inception(self.maxpool1(self.conv1(x))))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


class DenseLayer(nn.Module):
    def __init__(self, cin, growth, bn_size=4):
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(bn_size * growth), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features):
        x = torch.cat(features, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseNetBlocks(nn.Module):
    """DenseNet-BC's stem, two dense blocks with a transition, and its head."""

    def __init__(self, num_classes=10, growth=8):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 16, 7, 2, 3, bias=False)
        self.norm0, self.relu0, self.pool0 = nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        self.block1 = nn.ModuleList([DenseLayer(16 + i * growth, growth) for i in range(3)])
        self.transition = nn.Sequential(nn.BatchNorm2d(40), nn.ReLU(inplace=True), nn.Conv2d(40, 20, 1, bias=False),
                                        nn.AvgPool2d(2, 2))
        self.block2 = nn.ModuleList([DenseLayer(20 + i * growth, growth) for i in range(3)])
        self.norm5 = nn.BatchNorm2d(44)
        self.classifier = nn.Linear(44, num_classes)

    @staticmethod
    def _block(layers, x):
        features = [x]
        for layer in layers:
            features.append(layer(features))
        return torch.cat(features, 1)

    def forward(self, x):
        x = self.pool0(self.relu0(self.norm0(self.conv0(x))))
        x = self.norm5(self._block(self.block2, self.transition(self._block(self.block1, x))))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(x), (1, 1)), 1)
        return self.classifier(x)


CLIENTS = {  # name -> (constructor, input shape)
    "resnet18": (lambda: ResNet18(), (3, 224, 224)),
    "vgg11": (lambda: VGG11(), (3, 224, 224)),
    "alexnet": (lambda: AlexNet(), (3, 224, 224)),
    "googlenet_block": (lambda: GoogLeNetBlock(), (3, 64, 64)),
    "densenet_blocks": (lambda: DenseNetBlocks(), (3, 64, 64)),
}


@pytest.fixture(scope="module")
def torch_models():
    """Each client model once, with BatchNorm statistics far from the identity, in eval mode."""
    built = {}
    torch.manual_seed(0)
    for name, (make, _) in CLIENTS.items():
        model = make().eval()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.2)
        built[name] = model
    return built


def _torch_export(model, shape, path, dynamo: bool, opset: int) -> None:
    example = (torch.randn(2, *shape),)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, example, str(path), opset_version=opset, dynamo=True,
                              input_names=["x"], dynamic_shapes=({0: torch.export.Dim("N", min=1, max=64)},))
        else:
            torch.onnx.export(model, example, str(path), opset_version=opset, dynamo=False,
                              input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "N"}})


@pytest.mark.parametrize("exporter", list(EXPORTERS))
@pytest.mark.parametrize("name", list(CLIENTS))
def test_pytorch_exports_load_in_cnnkit_and_match_pytorch(name, exporter, torch_models, tmp_path):
    model, (_, shape) = torch_models[name], CLIENTS[name]
    dynamo, opset = EXPORTERS[exporter]
    path = tmp_path / f"{name}.onnx"
    _torch_export(model, shape, path, dynamo, opset)
    imported = load(path)
    assert isinstance(imported, OnnxModel) and imported.opset == opset
    rng = np.random.default_rng(len(name))
    for n in (1, 3):
        x = rng.standard_normal((n,) + shape).astype(np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        assert_close_to_scale(run_cnnkit(imported, x), expected)


class _Pick(nn.Module):
    """x[:, [2, 0]]: torch.export writes GatherND, which cnnkit refused."""

    def forward(self, x):
        return x[:, [2, 0]] * x[:, 1:2]


class _Spread(nn.Module):
    """x.std and zeros_like: PyTorch's exporters write ReduceProd (TorchScript: the count of
    elements, from the shape) and Expand (torch.export: broadcasting), which cnnkit refused."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        y = y - y.mean((2, 3), keepdim=True)
        return y / y.std((2, 3), keepdim=True) + torch.maximum(y, torch.zeros_like(y) + 0.2)


@pytest.mark.parametrize("module", [_Spread, _Pick])
@pytest.mark.parametrize("exporter", list(EXPORTERS))
def test_std_broadcasting_and_picks_load_with_pytorch_values_and_gradients(exporter, module, tmp_path):
    torch.manual_seed(0)
    model = module().eval()
    path = tmp_path / "spread.onnx"
    _torch_export(model, (3, 6, 5), path, *EXPORTERS[exporter])
    imported = load(path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    gy = rng.standard_normal(tuple(model(torch.from_numpy(x)).shape)).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    (model(xt) * torch.from_numpy(gy)).sum().backward()
    xc = Tensor(x, requires_grad=True)
    y = imported(xc)
    (y * Tensor(gy)).sum().backward()
    assert_close_to_scale(y.detach().numpy(), model(torch.from_numpy(x)).detach().numpy())
    assert_close_to_scale(np.asarray(xc.grad.data), xt.grad.numpy(), rtol=1e-3)


class _ScoreMapHead(nn.Module):
    """An FCN-style head: a score map upsampled back (bilinear by a factor, nearest to a size)."""

    def __init__(self):
        super().__init__()
        self.score = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.to_size = nn.Upsample(size=(11, 13), mode="nearest")
        self.corners = nn.UpsamplingBilinear2d(size=(9, 7))

    def forward(self, x):
        s = self.up(self.score(x))
        return self.to_size(s) + self.corners(s)[:, :, :1, :1]


@pytest.mark.parametrize("exporter", list(EXPORTERS))
def test_pytorch_upsampling_exports_load_as_interpolate(exporter, tmp_path):
    torch.manual_seed(0)
    model, shape = _ScoreMapHead().eval(), (3, 8, 10)
    dynamo, opset = EXPORTERS[exporter]
    path = tmp_path / "head.onnx"
    _torch_export(model, shape, path, dynamo, opset)
    imported = load(path)
    rng = np.random.default_rng(5)
    for n in (1, 3):
        x = rng.standard_normal((n,) + shape).astype(np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        assert_close_to_scale(run_cnnkit(imported, x), expected)
