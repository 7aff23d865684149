"""Named weights: the registry, and the real download code against a local HTTP server.

The server on 127.0.0.1 serves files the tests make (good, truncated, wrong checksum, 404);
``CNNKIT_WEIGHTS_URL`` (or ``mirror=``) points the weights' address at it. No other address
is contacted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import threading

import numpy as np
import pytest

from cnnkit import models
from cnnkit.data.download import DownloadError
from cnnkit.io.weights import WEIGHTS_URL_ENV, WeightsError, fetch_weights, load_weights, read_safetensors
from cnnkit.models import weights as named

torch = pytest.importorskip("torch")


# Caches in tmp_path (CNNKIT_DATA, TORCH_HOME), no CNNKIT_WEIGHTS_URL, no proxy for 127.0.0.1;
# the `server` fixture (tests/local_server.py) is the only address contacted.
pytestmark = pytest.mark.usefixtures("isolated_downloads")


@pytest.fixture(scope="module")
def googlenet_file():
    """A torch.save file shaped like torchvision's googlenet-1378be20.pth: zoo keys plus aux heads."""
    model = models.googlenet(generator=np.random.default_rng(0))
    state = {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()}
    state["aux1.conv.conv.weight"] = torch.ones(128, 512, 1, 1)
    state["aux2.fc2.bias"] = torch.ones(1000)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue(), {k: np.array(v) for k, v in model.state_dict().items()}


def served_weights(data: bytes, model: str = "googlenet", name: str = "TEST") -> named.Weights:
    """The real ``model`` DEFAULT entry, renamed ``name``, with the SHA-256 prefix of ``data``: the
    entry a test serves ``data`` as (its file name is ``<model>-<prefix>.pth``, as torchvision's).
    Put it in the registry with ``monkeypatch.setitem(named._REGISTRY[model], name, entry)``."""
    real = named.get_weights(model, "DEFAULT")
    prefix = hashlib.sha256(data).hexdigest()[:8]
    return dataclasses.replace(real, name=name, url=f"https://example.invalid/models/{model}-{prefix}.pth",
                               sha256=prefix)


def test_download_converts_once_and_the_model_gets_the_weights(tmp_path, server, googlenet_file, monkeypatch):
    data, state = googlenet_file
    entry = served_weights(data)
    server.files[f"/{entry.filename}"] = data
    path = fetch_weights(entry, mirror=server.url, progress=False)
    assert path == tmp_path / "cache" / "weights" / "googlenet-TEST.safetensors"
    assert server.requests == [f"/{entry.filename}"]
    assert not (path.parent / entry.filename).exists()  # the download is replaced by the checkpoint
    arrays, meta = read_safetensors(path)
    extra = json.loads(meta["cnnkit"])["extra"]
    assert extra["classes"][281] == "tabby" and len(extra["classes"]) == 1000
    assert extra["preprocessing"] == {"resize_size": 256, "crop_size": 224, "mean": [0.485, 0.456, 0.406],
                                      "std": [0.229, 0.224, 0.225], "interpolation": "bilinear"}
    assert extra["metrics"] == {"ImageNet-1K": {"acc@1": 69.778, "acc@5": 89.53}}
    assert sorted(extra["dropped_keys"]) == ["aux1.conv.conv.weight", "aux2.fc2.bias"]
    assert extra["source_sha256"] == hashlib.sha256(data).hexdigest()
    assert json.loads(meta["cnnkit"])["model"]["config"] == {"num_classes": 1000, "transform_input": True}
    # A second request is served from the cache, without the network.
    assert fetch_weights(entry, mirror=server.url, progress=False) == path
    assert len(server.requests) == 1
    # The weights name resolves through the registry for the model it belongs to.
    monkeypatch.setitem(named._REGISTRY["googlenet"], "TEST", entry)
    model = models.googlenet(transform_input=True)
    report = load_weights(model, "TEST", model_name="googlenet")
    assert report.kind == "named weights" and report.meta["weights"] == "googlenet.TEST"
    for key, value in state.items():
        np.testing.assert_array_equal(np.asarray(model.state_dict()[key]), value, err_msg=key)
    import cnnkit

    rebuilt = cnnkit.load(path)  # a regular checkpoint: the zoo model with its config
    assert rebuilt.transform_input is True
    # The constructor: models.googlenet(weights=...) builds, fetches (cached) and loads.
    net = models.googlenet(weights="TEST")
    assert net.transform_input is True and net.weights is entry and len(server.requests) == 1
    assert net.zoo_config == {"num_classes": 1000, "transform_input": True}  # cnnkit.save/load rebuild it so
    for key, value in state.items():
        np.testing.assert_array_equal(np.asarray(net.state_dict()[key]), value, err_msg=key)
    with pytest.raises(ValueError, match=r"googlenet: weights TEST have 1000 classes, got num_classes=10; to "
                                         r"fine-tune, build googlenet\(num_classes=10\)"):
        models.googlenet(num_classes=10, weights="TEST")


def test_the_constructor_offline_names_the_file_its_address_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv(WEIGHTS_URL_ENV, "http://127.0.0.1:9")  # the discard port: nothing answers
    with pytest.raises(DownloadError, match=r"resnet18\.IMAGENET1K_V1 weights: cannot download "
                                            r"http://127\.0\.0\.1:9/resnet18-f37072fd\.pth to .*\. Looked for "
                                            r"resnet18-f37072fd\.pth in .*put resnet18-f37072fd\.pth \(SHA-256 "
                                            r"starting f37072fd\) in " + re.escape(str(tmp_path / "cache" / "weights"))):
        models.resnet18(weights="DEFAULT")


def _where(entry, tmp_path) -> str:
    return (rf"Looked for {entry.filename} in {tmp_path / 'cache' / 'weights'} and {tmp_path / 'torch' / 'hub' / 'checkpoints'}\. "
            rf"To use a copy downloaded by hand, put {entry.filename} \(SHA-256 starting {entry.sha256}\) in "
            rf"{tmp_path / 'cache' / 'weights'}, or set CNNKIT_WEIGHTS_URL to a mirror holding it\.")


def test_processes_fetching_the_same_weights_at_once_download_them_once(tmp_path, server, googlenet_file):
    """The ranks of `cnnkit train --nproc 2 --weights NAME` fetch together: one downloads and
    converts while the other waits for the lock, then finds the converted file (both used to
    download into one .part file, and one failed renaming it)."""
    data, _ = googlenet_file
    entry = served_weights(data)
    server.files[f"/{entry.filename}"] = data
    start, results = threading.Barrier(3), {}

    def fetch(rank):
        start.wait()
        try:
            results[rank] = fetch_weights(entry, mirror=server.url, progress=False)
        except Exception as e:  # noqa: BLE001 (reported by the assertion below)
            results[rank] = e

    threads = [threading.Thread(target=fetch, args=(rank,)) for rank in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    converted = tmp_path / "cache" / "weights" / "googlenet-TEST.safetensors"
    assert results == {0: converted, 1: converted, 2: converted}
    assert server.requests == [f"/{entry.filename}"]
    assert sorted(p.name for p in converted.parent.iterdir()) == [converted.name]  # no lock or .part left


def test_a_truncated_download_fails_and_leaves_nothing(tmp_path, server, googlenet_file):
    data, _ = googlenet_file
    entry = served_weights(data)
    server.files[f"/{entry.filename}"] = data
    server.truncate.add(f"/{entry.filename}")
    with pytest.raises(DownloadError, match=r"googlenet\.TEST weights: download of .* is truncated: received \d+ of "
                                            rf"{len(data)} bytes\. " + _where(entry, tmp_path)):
        fetch_weights(entry, mirror=server.url, progress=False)
    assert not any((tmp_path / "cache" / "weights").iterdir())


def test_a_wrong_checksum_fails_naming_both_digests(tmp_path, server, googlenet_file):
    data, _ = googlenet_file
    entry = served_weights(data)
    server.files[f"/{entry.filename}"] = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(DownloadError, match=rf"failed its checksum: SHA256 is [0-9a-f]{{64}}, expected {entry.sha256}"):
        fetch_weights(entry, mirror=server.url, progress=False)
    assert not any((tmp_path / "cache" / "weights").iterdir())


def test_real_entries_refuse_a_file_that_is_not_theirs(tmp_path, server, monkeypatch):
    entry = named.get_weights("resnet18", "IMAGENET1K_V1")
    server.files["/resnet18-f37072fd.pth"] = b"not the weights"
    monkeypatch.setenv(WEIGHTS_URL_ENV, server.url)  # the documented override
    with pytest.raises(DownloadError, match=rf"resnet18\.IMAGENET1K_V1 weights: download of {server.url}resnet18-"
                                            r"f37072fd\.pth .* failed its checksum: SHA256 is [0-9a-f]{64}, expected f37072fd"):
        fetch_weights(entry, progress=False)
    assert server.requests == ["/resnet18-f37072fd.pth"]


def test_404_and_offline_errors_say_where_to_put_a_manual_copy(tmp_path, server, googlenet_file):
    data, _ = googlenet_file
    entry = served_weights(data)
    with pytest.raises(DownloadError, match=r"HTTP 404 Not Found\. " + _where(entry, tmp_path)):
        fetch_weights(entry, mirror=server.url, progress=False)
    with pytest.raises(DownloadError, match=r"not cached and downloading is off \(https://example\.invalid/models/"
                                            r"googlenet-\w+\.pth\)\. " + _where(entry, tmp_path)):
        fetch_weights(entry, download=False)
    server.close()  # nobody listens any more: the network is "down"
    with pytest.raises(DownloadError, match=r"cannot download .*" + _where(entry, tmp_path)):
        fetch_weights(entry, mirror=server.url, progress=False)


@pytest.mark.parametrize("where", ["cache", "torch hub"])
def test_a_manually_placed_copy_is_used_without_the_network(tmp_path, googlenet_file, where):
    data, state = googlenet_file
    entry = served_weights(data)
    folder = tmp_path / "cache" / "weights" if where == "cache" else tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / entry.filename).write_bytes(data)
    path = fetch_weights(entry, download=False)
    arrays, _ = read_safetensors(path)
    np.testing.assert_array_equal(arrays["model/fc.weight"], state["fc.weight"])
    assert (folder / entry.filename).exists() == (where == "torch hub")  # torch's cache is never modified


def test_a_file_with_other_weights_is_refused_listing_the_keys(tmp_path, server):
    buffer = io.BytesIO()
    torch.save({"conv1.weight": torch.ones(64, 3, 7, 7)}, buffer)
    entry = served_weights(buffer.getvalue())
    server.files[f"/{entry.filename}"] = buffer.getvalue()
    with pytest.raises(WeightsError, match=r"does not hold googlenet\.TEST's weights:\nmissing from the weights "
                                           r"\(\d+\): conv1\.conv\.weight, .*\nnot in the model \(1\): conv1\.weight"):
        fetch_weights(entry, mirror=server.url, progress=False)
    assert not list((tmp_path / "cache" / "weights").glob("*.safetensors"))


def test_the_registry_holds_torchvisions_weights_for_every_zoo_model_that_has_some():
    expected = {
        "alexnet": "7be5be79", "vgg11": "8a719046", "vgg11_bn": "6002323d", "vgg13": "19584684",
        "vgg13_bn": "abd245e5", "vgg16": "397923af", "vgg16_bn": "6c64b313", "vgg19": "dcbb9e9d",
        "vgg19_bn": "c79401a0", "resnet18": "f37072fd", "resnet34": "b627a593", "resnet50": "11ad3fa6",
        "googlenet": "1378be20", "densenet121": "a639ec97",
    }
    for model, prefix in expected.items():
        w = named.get_weights(model, "DEFAULT")
        assert w.sha256 == prefix and w.url == f"https://download.pytorch.org/models/{w.filename}"
        assert w.url.endswith(f"-{prefix}.pth") and len(w.categories) == 1000
        assert w.preprocessing.crop_size == 224 and 50 < w.metrics["acc@1"] < 85
        assert model in models.list_models()
    assert named.get_weights("resnet50", "IMAGENET1K_V1").url.endswith("resnet50-0676ba61.pth")
    assert named.get_weights("resnet50", "DEFAULT").preprocessing.resize_size == 232
    features = named.get_weights("vgg16", "IMAGENET1K_FEATURES")
    assert features.categories is None and features.preprocessing.std == (1 / 255,) * 3
    assert named.find_weights("resnet18", "ResNet18_Weights.IMAGENET1K_V1") is named.find_weights(None, "resnet18.imagenet1k_v1")
    assert named.find_weights("resnet18", "resnet34.IMAGENET1K_V1") is None
    assert named.find_weights("lenet5", "DEFAULT") is None
    with pytest.raises(ValueError, match=r"resnet18: no pretrained weights named 'V9'; available: resnet18\.IMAGENET1K_V1, DEFAULT"):
        named.get_weights("resnet18", "V9")
    classes = named.imagenet_classes()
    assert len(classes) == 1000 and classes[0] == "tench" and classes[207] == "golden retriever"
    assert classes[999] == "toilet tissue" and classes[914] == "yawl"


def test_preprocessing_resizes_the_short_side_crops_the_center_and_normalizes():
    from PIL import Image

    p = named.get_weights("resnet18", "DEFAULT").preprocessing
    flat = np.full((300, 500, 3), (255, 128, 0), np.uint8)
    x = p(flat)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    want = (np.array([255, 128, 0]) / 255 - np.array(p.mean)) / np.array(p.std)
    np.testing.assert_allclose(x[:, 100, 100], want, rtol=1e-6)
    # Columns keep their order: a horizontal ramp stays increasing, centered on the middle.
    ramp = np.repeat(np.repeat(np.arange(512, dtype=np.float64)[None, :, None] / 2, 256, 0), 3, 2).astype(np.uint8)
    y = p(Image.fromarray(ramp))
    assert (np.diff(y[0, 112]) >= 0).all()
    # 512x256 -> 512x256 (short side already 256), center crop starts at column 144.
    np.testing.assert_allclose(y[0, 0, 0], (144 / 2 // 1 / 255 - p.mean[0]) / p.std[0], atol=0.01)
