"""The explorer's HTTP API, through Starlette's test client, on a LeNet-5 trained by `cnnkit train`."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shutil

import numpy as np
import pytest

pytest.importorskip("starlette")   # the explore extra; its TestClient runs on httpx2 (the test extra) or httpx

from PIL import Image  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

BASE = "http://127.0.0.1:8765"  # the Host the page's own requests carry

from cnnkit import models  # noqa: E402
from cnnkit.cli.main import main  # noqa: E402
from cnnkit.cli.targets import load_target  # noqa: E402
from cnnkit.data import compose_mnist_strip, load_mnist  # noqa: E402
from cnnkit.explore import Explorer, build_samples  # noqa: E402
from cnnkit.explore.report import render_report  # noqa: E402
from cnnkit.explore.server import ASSETS, create_app  # noqa: E402
from cnnkit.io.checkpoint import load_checkpoint, save  # noqa: E402
from cnnkit.io.targets import Target  # noqa: E402
from cnnkit.surgery.compare import channel_counts  # noqa: E402
from cnnkit.surgery.fcn import to_fully_convolutional  # noqa: E402
from cnnkit.surgery.prune import prune_channels  # noqa: E402


@pytest.fixture
def client(explorer):
    with TestClient(create_app(explorer), base_url=BASE) as c:
        yield c


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def digit_png(index: int, dark_on_light: bool = True) -> bytes:
    """An MNIST test digit as a PNG, drawn as a person would: dark ink on white, larger."""
    images, _ = load_mnist("test")
    img = images[index]
    if dark_on_light:
        img = 255 - img
    return png_bytes(np.asarray(Image.fromarray(img).resize((112, 112), Image.BILINEAR)))


def predict_top(checkpoint, path) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["predict", str(checkpoint), str(path), "--top-k", "1"]) == 0
    return re.search(r": (\S+) \(", out.getvalue()).group(1)


def test_the_page_and_its_assets(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ASSETS[1:]:
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and r.content, name
        assert r.headers["x-content-type-options"] == "nosniff"
    assert "cdn" not in page.text.lower() and "http://" not in page.text and "https://" not in page.text


def test_model_overview(client):
    m = client.get("/api/model").json()
    assert m["model_name"] == "lenet5" and m["input_shape"] == [1, 28, 28] and m["classes"] == list("0123456789")
    assert m["can_draw"] and m["has_training"] and len(m["samples"]) == 24 and m["samples"][0]["label"] == "7"
    o = m["overview"]
    assert o["total_params"] == 61_706 and o["total_macs"] == 416_520
    units = o["units"]
    assert [u["type"] for u in units][:3] == ["Conv2d", "ReLU", "MaxPool2d"]
    assert units[0]["arithmetic"] == "H: (28 - 5 + 2*2)/1 + 1 = 28; W: (28 - 5 + 2*2)/1 + 1 = 28"
    assert units[0]["params"] == 156 and units[0]["macs"] == 6 * 28 * 28 * 25
    assert units[3]["receptive_field"] == [14, 14] and units[3]["jump"] == [2, 2]


def test_a_sample_runs_and_its_layers_answer(client, explorer):
    run = client.post("/api/samples/0/run").json()
    assert run["shape"] == [1, 28, 28] and run["picture"].startswith("data:image/png;base64,")
    assert len(run["units"]) == 12 and run["prediction"]["top"][0] == 7          # MNIST test #0 is a 7
    rid = run["id"]
    maps = client.get(f"/api/images/{rid}/maps/0?k=4&order=max").json()
    assert maps["shape"] == [6, 28, 28] and len(maps["channels"]) == 4
    data = np.frombuffer(base64.b64decode(maps["data"]), np.uint8).reshape(4, 28, 28)
    a = np.asarray(explorer.get_run(rid).trace.units[0].output.data[0])
    order = np.argsort(-a.reshape(6, -1).max(axis=1), kind="stable")[:4]
    assert [c["index"] for c in maps["channels"]] == order.tolist()
    m = max(abs(maps["lo"]), abs(maps["hi"]))                                  # diverging: symmetric
    expected = np.clip(np.round((a[order] + m) / (2 * m) * 255), 0, 255)
    assert np.abs(data.astype(int) - expected).max() <= 1
    vec = client.get(f"/api/images/{rid}/maps/11").json()
    assert vec["shape"] == [10] and vec["top"][0] == 7 and len(vec["values"]) == 10


def test_a_neuron_answers_with_the_forward_value(client, explorer):
    rid = client.post("/api/samples/1/run").json()["id"]
    a = client.get(f"/api/images/{rid}/neuron/3?index=5,4,6").json()
    forward = float(np.asarray(explorer.get_run(rid).trace.units[3].output.data[0])[5, 4, 6])
    assert a["kind"] == "conv" and a["value"] == pytest.approx(forward)
    assert a["computed"] == pytest.approx(forward, rel=1e-5, abs=1e-6)
    assert a["input_box"] == [6, 19, 10, 23]                    # the 14x14 field of conv2 + pool + conv1
    assert a["boxes"]["2"] == [4, 8, 6, 10]                     # the 5x5 window on features.2


def test_decision_saliency_and_grad_cam(client):
    rid = client.post("/api/samples/0/run").json()["id"]
    d = client.get(f"/api/images/{rid}/decision").json()
    assert d["top"] == d["target"] == 7 and sum(d["probabilities"]) == pytest.approx(1.0)
    assert d["saliency"]["shape"] == [28, 28] and d["grad_cam"]["shape"] == [28, 28]
    assert d["grad_cam"]["unit"] == 5 and d["cam_units"] == [0, 1, 2, 3, 4, 5]
    other = client.get(f"/api/images/{rid}/decision?target=3&cam=0").json()
    assert other["target"] == 3 and other["grad_cam"]["unit"] == 0
    assert client.get(f"/api/images/{rid}/decision?cam=7").status_code == 400     # Flatten: not an image


def test_statistics_filters_and_training(client, trained_run):
    rid = client.post("/api/samples/2/run").json()["id"]
    s = client.get(f"/api/images/{rid}/statistics").json()
    assert len(s["units"]) == 12 and s["target"] == 1
    relu = s["units"][1]["activation"]
    assert relu["min"] == 0.0 and relu["zeros"] > 0 and sum(relu["histogram"]["counts"]) == 6 * 28 * 28
    names = [w["name"] for w in s["weights"]]
    assert names[:2] == ["features.0.weight", "features.0.bias"]
    assert s["weights"][0]["gradient"]["count"] == 150 and s["units"][11]["gradient"]["count"] == 10
    f = client.get("/api/filters/0?filters=6").json()
    assert f["shape"] == [6, 1, 5, 5] and f["shown"] == [6, 1] and "rgb" not in f
    assert client.get("/api/filters/1").status_code == 404          # a ReLU has no filters
    t = client.get("/api/training").json()
    assert t["epochs"] == [1] and set(t["logs"]) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert t["checkpoint"] == {"name": "best.safetensors", "changed": False}


def test_a_checkpoint_rewritten_on_disk_is_reported_as_changed(checkpoint, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    copy = run / "best.safetensors"
    shutil.copy(checkpoint, copy)
    target = load_target(str(copy))
    assert target.file == copy.resolve()
    explorer = Explorer(target, build_samples(target))
    client = TestClient(create_app(explorer), base_url="http://127.0.0.1:8765")
    assert client.get("/api/training").json()["checkpoint"]["changed"] is False
    shutil.copy(checkpoint, run / "newer.safetensors")
    os.replace(run / "newer.safetensors", copy)          # as a training run saves: a new file renamed over it
    os.utime(copy, ns=(1, 1))
    assert client.get("/api/training").json()["checkpoint"]["changed"] is True


def test_npy_downloads_hold_the_arrays(client, explorer):
    rid = client.post("/api/samples/3/run").json()["id"]
    run = explorer.get_run(rid)
    for url, expected in [
        (f"/api/images/{rid}/layers/2.npy", np.asarray(run.trace.units[2].output.data[0])),
        (f"/api/images/{rid}/input.npy", run.x[0]),
        ("/api/parameters/features.3.weight.npy", np.asarray(explorer.target.model.features[3].weight.data)),
    ]:
        r = client.get(url)
        assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
        np.testing.assert_array_equal(np.load(io.BytesIO(r.content), allow_pickle=False), expected)
    g = np.load(io.BytesIO(client.get(f"/api/images/{rid}/layers/5.npy?what=gradient&target=2").content))
    np.testing.assert_array_equal(g, run.class_gradients(2)["units"][5])


@pytest.mark.parametrize("index, dark_on_light", [(0, True), (1, False), (8, True)])
def test_an_upload_predicts_what_cnnkit_predict_says(client, checkpoint, tmp_path, index, dark_on_light):
    body = digit_png(index, dark_on_light)
    path = tmp_path / f"digit{index}.png"
    path.write_bytes(body)
    run = client.post("/api/images?name=digit.png", content=body, headers={"Content-Type": "image/png"}).json()
    names = client.get("/api/model").json()["classes"]
    assert names[run["prediction"]["top"][0]] == predict_top(checkpoint, path)
    assert run["name"] == "digit.png"


def test_runs_are_kept_three_at_a_time(client):
    ids = [client.post("/api/samples/0/run").json()["id"] for _ in range(4)]
    assert client.get(f"/api/images/{ids[-1]}/maps/0").status_code == 200
    r = client.get(f"/api/images/{ids[0]}/maps/0")
    assert r.status_code == 404 and "no longer held" in r.json()["error"]


def test_the_static_report_holds_every_answer_it_needs(explorer):
    picture = explorer.samples[0].load()
    html = render_report(explorer, picture, "mnist test #0")
    assert html.count("<script") == 9 and "/static/" not in html.replace("/static/report", "")
    assert 'src="' not in html and "<link" not in html.replace('<link rel="icon" href="data:,">', "")
    data = html[html.index("window.CNNKIT_SNAPSHOT = ") + 25 : html.index(";\n</script>")]
    snap = json.loads(data.replace("<\\/", "</"))
    rid = snap["run"]["id"]
    urls = set(snap["responses"])
    assert {"/api/model", f"/api/images/{rid}/decision", f"/api/images/{rid}/statistics", "/api/training",
            "/api/filters/0?filters=64&channels=16", "/api/filters/3?filters=64&channels=16"} <= urls
    assert all(f"/api/images/{rid}/maps/{u}?k=8&order=mean" in urls for u in range(12))


def test_a_fully_convolutional_model_reads_a_strip(checkpoint, tmp_path):
    strip, labels = compose_mnist_strip(4, np.random.default_rng(1))
    path = tmp_path / "strip.png"
    Image.fromarray((strip[0] * 255).astype(np.uint8)).save(path)
    target = load_target(str(checkpoint))
    target.model = to_fully_convolutional(target.model, target.input_shape)
    explorer = Explorer(target, build_samples(target, path, fully_convolutional=True), fully_convolutional=True)
    with TestClient(create_app(explorer), base_url=BASE) as client:
        run = client.post("/api/samples/0/run").json()
        assert run["shape"][1] == 28 and run["shape"][2] > 2 * 28                 # the strip keeps its width
        d = client.get(f"/api/images/{run['id']}/decision").json()
        positions = len(d["class_map"][0])
        assert len(d["class_map"]) == 1 and positions > 1 and len(d["position"]) == 2
        assert sum(d["probabilities"]) == pytest.approx(1.0)
        assert d["grad_cam"]["unit"] != len(run["units"]) - 1                   # not the score map itself
        assert d["saliency"]["shape"] == run["shape"][1:]


def test_a_pruned_checkpoint_is_explored_with_its_thinner_layers(checkpoint, tmp_path):
    target = load_target(str(checkpoint))
    pruned = prune_channels(target.model, 0.5, input_shape=(1, 28, 28))
    path = tmp_path / "pruned.safetensors"
    extra = dict(load_checkpoint(checkpoint).meta["extra"], pruned={"amount": 0.5, "channels": channel_counts(pruned)})
    save(pruned, path, model_name="lenet5", model_config={"num_classes": 10}, extra=extra)
    pruned_target = load_target(str(path))
    assert "pruned" in pruned_target.label
    explorer = Explorer(pruned_target, build_samples(pruned_target))
    with TestClient(create_app(explorer), base_url=BASE) as client:
        units = client.get("/api/model").json()["overview"]["units"]
        assert units[0]["shape"] == [3, 28, 28] and units[3]["shape"] == [8, 10, 10]
        rid = client.post("/api/samples/0/run").json()["id"]
        a = client.get(f"/api/images/{rid}/neuron/3?index=7,2,2").json()
        assert a["input_channels"] == 3 and a["computed"] == pytest.approx(a["value"], rel=1e-5, abs=1e-6)


def test_a_one_logit_binary_model_shows_two_classes():
    model = models.lenet5(num_classes=1, generator=np.random.default_rng(3))
    target = Target(model, "binary lenet", (1, 28, 28), (0.1307,), (0.3081,), ["no", "yes"], task="binary")
    explorer = Explorer(target, build_samples(target))
    with TestClient(create_app(explorer), base_url=BASE) as client:
        assert client.get("/api/model").json()["classes"] == ["no", "yes"]
        rid = client.post("/api/samples/0/run").json()["id"]
        run = explorer.get_run(rid)
        z = float(np.asarray(run.trace.output.data)[0, 0])
        d = client.get(f"/api/images/{rid}/decision?target=1").json()
        assert d["task"] == "binary" and d["logits"] == pytest.approx([-z, z])
        assert d["probabilities"] == pytest.approx([1 / (1 + np.exp(z)), 1 / (1 + np.exp(-z))])
        positive, negative = run.class_gradients(1)["input"], run.class_gradients(0)["input"]
        np.testing.assert_allclose(negative, -positive)
        s = client.get(f"/api/images/{rid}/statistics").json()
        assert s["units"][-1]["gradient"]["count"] == 1


def test_a_folder_trained_model_reads_uploads_with_its_own_preprocessing(tmp_path, rng):
    data = tmp_path / "shapes"
    for k, name in enumerate(["bright", "dark"]):
        (data / name).mkdir(parents=True)
        for i in range(6):
            pixels = (rng.uniform(0.5, 1.0, (30 + i, 40, 3)) * (255 if k == 0 else 90)).astype(np.uint8)
            Image.fromarray(pixels).save(data / name / f"{i}.png")
    out = tmp_path / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "lenet5", "--data", str(data), "--epochs", "1", "--in-channels", "3",
                     "--image-size", "28", "--seed", "0", "--out", str(out)]) == 0
    checkpoint = out / "best.safetensors"
    target = load_target(str(checkpoint))
    assert target.spec is not None and target.input_shape == (3, 28, 28)
    explorer = Explorer(target, build_samples(target, data))
    photo = tmp_path / "photo.jpg"
    Image.fromarray((rng.uniform(0, 1, (61, 47, 3)) * 255).astype(np.uint8)).save(photo)
    with TestClient(create_app(explorer), base_url=BASE) as client:
        run = client.post("/api/images", content=photo.read_bytes(), headers={"Content-Type": "image/jpeg"}).json()
        names = client.get("/api/model").json()["classes"]
        assert names == ["bright", "dark"]
        assert names[run["prediction"]["top"][0]] == predict_top(checkpoint, photo)
        x = explorer.get_run(run["id"]).x[0]
        np.testing.assert_allclose(x, target.spec.to_inputs(target.spec.decode(photo)[None])[0], rtol=1e-5, atol=1e-5)


def test_an_onnx_export_is_explored_as_its_checkpoint(checkpoint, explorer, tmp_path):
    pytest.importorskip("onnx")
    onnx_file = tmp_path / "lenet5.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["export", str(checkpoint), "-o", str(onnx_file)]) == 0
    target = load_target(str(onnx_file))
    assert target.classes == list("0123456789") and target.input_shape == (1, 28, 28) and target.dataset == "mnist"
    onnx_explorer = Explorer(target, build_samples(target))
    with TestClient(create_app(onnx_explorer), base_url=BASE) as client:
        overview = client.get("/api/model").json()["overview"]
        assert overview["total_params"] == 61_706 and overview["total_macs"] == 416_520
        run = client.post("/api/samples/3/run").json()
        sample = explorer.samples[3]
        reference = explorer.run(sample.load(), sample.name)
        assert run["prediction"]["top"][0] == int(np.argmax(reference.probabilities))
        np.testing.assert_allclose(onnx_explorer.get_run(run["id"]).probabilities, reference.probabilities,
                                   rtol=1e-4, atol=1e-6)
        a = client.get(f"/api/images/{run['id']}/neuron/3?index=5,4,6").json()
        assert a["kind"] == "conv" and a["computed"] == pytest.approx(a["value"], rel=1e-5, abs=1e-6)
        assert a["value"] == pytest.approx(float(np.asarray(reference.trace.units[3].output.data[0])[5, 4, 6]), rel=1e-4)


def test_named_weights_read_uploads_with_their_own_preprocessing(tmp_path, monkeypatch):
    """A weights name (its cached checkpoint): the upload is resized and cropped as `cnnkit predict` does it."""
    from cnnkit.io.weights import write_checkpoint
    from cnnkit.models.weights import get_weights

    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path / "cache"))
    state = {k: np.array(v) for k, v in models.resnet18(generator=np.random.default_rng(0)).state_dict().items()}
    state["fc.weight"][:] = 0
    state["fc.weight"][281, :] = 0.05                      # "tabby" grows with the last features
    entry = get_weights("resnet18", "IMAGENET1K_V1")
    p = entry.preprocessing
    extra = {"weights": entry.full_name, "classes": list(entry.categories), "preprocessing": p.to_dict(),
             "input_shape": [3, 224, 224], "mean": list(p.mean), "std": list(p.std)}
    write_checkpoint(tmp_path / "cache" / "weights" / "resnet18-IMAGENET1K_V1.safetensors", state,
                     model_name="resnet18", model_config={"num_classes": 1000}, extra=extra)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 420, 3), dtype=np.uint8)).save(photo)
    target = load_target("resnet18.IMAGENET1K_V1")
    assert target.weights_preprocessing is not None and target.input_shape == (3, 224, 224)
    explorer = Explorer(target, build_samples(target, photo))
    with TestClient(create_app(explorer), base_url=BASE) as client:
        run = client.post("/api/images", content=photo.read_bytes(), headers={"Content-Type": "image/jpeg"}).json()
        assert run["shape"] == [3, 224, 224]
        assert client.get("/api/model").json()["classes"][run["prediction"]["top"][0]] == "tabby"
        x = explorer.get_run(run["id"]).x[0]
        np.testing.assert_allclose(x, p(str(photo)), rtol=1e-4, atol=1e-4)   # predict's preprocessing exactly


def test_a_pytorch_onnx_file_shows_its_merges_and_rebuilds_them(tmp_path):
    """torch.onnx.export's Add and Concat nodes are merges, explained element by element."""
    import warnings

    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.fc = torch.nn.Linear(16, 5)

        def forward(self, x):
            y = torch.relu(self.conv1(x))
            y = torch.relu(self.conv2(y) + y)                              # a residual addition
            y = torch.cat([y, torch.nn.functional.max_pool2d(y, 3, 1, 1)], 1)   # a concatenation
            return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(y, 1), 1))

    torch.manual_seed(0)
    path = tmp_path / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Net().eval(), torch.randn(1, 3, 16, 16), str(path), opset_version=13, dynamo=False,
                          input_names=["x"])
    target = load_target(str(path))
    assert target.input_shape == (3, 16, 16) and target.label.startswith("net.onnx (ONNX, pytorch")
    explorer = Explorer(target, build_samples(target))
    with TestClient(create_app(explorer), base_url=BASE) as client:
        units = client.get("/api/model").json()["overview"]["units"]
        add = next(u for u in units if u["type"] == "Add")
        concat = next(u for u in units if u["type"] == "Concat")
        assert len(add["inputs"]) == 2 and len(concat["inputs"]) == 2
        rid = client.post("/api/samples/0/run").json()["id"]
        a = client.get(f"/api/images/{rid}/neuron/{add['index']}?index=3,5,7").json()
        assert a["kind"] == "add" and len(a["terms"]) == 2 and a["computed"] == pytest.approx(a["value"], rel=1e-6)
        c = client.get(f"/api/images/{rid}/neuron/{concat['index']}?index=12,5,7").json()
        assert c["kind"] == "concat" and c["source"] == concat["inputs"][1] and c["source_index"] == [4, 5, 7]
        assert c["computed"] == c["value"]
