"""`cnnkit train/evaluate/predict` on folders of images: tasks, honest splits, transfer, bad input."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image, ImageDraw

import cnnkit
from cnnkit.cli.main import main
from cnnkit.io.checkpoint import load_checkpoint
from cnnkit.io.weights import read_weights


def make_signs(root, n_per_class=60, size=30, seed=0):
    """The articles' example: 30x30x3 scenes with and without a drawn sign board on a post."""
    rng = np.random.default_rng(seed)
    for cls in ("no_sign", "sign"):
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            bg = rng.integers(60, 200, 3)
            pixels = np.clip(bg + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            img = Image.fromarray(pixels)
            if cls == "sign":
                draw = ImageDraw.Draw(img)
                w, h = int(rng.integers(10, 16)), int(rng.integers(7, 11))
                x, y = int(rng.integers(1, size - w - 1)), int(rng.integers(1, size - h - 8))
                draw.line([(x + w // 2, y + h), (x + w // 2, size - 1)], fill=(90, 60, 30), width=2)
                face = (230, 200, 20) if rng.random() < 0.5 else tuple(int(v) for v in rng.integers(0, 60, 3))
                draw.rectangle([x, y, x + w, y + h], fill=face, outline=(255, 255, 255))
            img.save(d / f"{i:03d}.png")
    return root


def make_shapes(root, classes=("circle", "square", "triangle"), n=12, size=24, seed=1, gray=False):
    """Three classes of drawn shapes (RGB, or grayscale PNGs)."""
    rng = np.random.default_rng(seed)
    for k, cls in enumerate(classes):
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = Image.new("L" if gray else "RGB", (size, size), 0 if gray else (20, 20, 20))
            draw = ImageDraw.Draw(img)
            c = int(rng.integers(8, size - 8))
            r = int(rng.integers(4, 7))
            fill = 255 if gray else tuple(int(v) for v in rng.integers(120, 255, 3))
            if k == 0:
                draw.ellipse([c - r, c - r, c + r, c + r], fill=fill)
            elif k == 1:
                draw.rectangle([c - r, c - r, c + r, c + r], fill=fill)
            else:
                draw.polygon([(c, c - r), (c - r, c + r), (c + r, c + r)], fill=fill)
            img.save(d / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def signs_run(tmp_path_factory):
    root = make_signs(tmp_path_factory.mktemp("signs"), 80)
    out = tmp_path_factory.mktemp("signs_run")
    argv = ["train", "lenet5", "--data", str(root), "--task", "binary", "--epochs", "10", "--optimizer", "adam",
            "--lr", "0.003", "--batch-size", "32", "--out", str(out), "--workers", "2"]
    return root, out, argv


def test_the_articles_sign_board_example_end_to_end(signs_run, capsys, tmp_path):
    root, out, argv = signs_run
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "task binary, positive class 'sign' (label 1), threshold 0.5" in text
    assert "classes (2): no_sign (72), sign (72)" in text
    assert "RGB (3 channels: the images have colour)" in text and "30x30 (the images' own size)" in text
    assert "validation: 16 images (0.1 of each class held out" in text
    assert "test: none (no test/ folder" in text
    ckpt = load_checkpoint(out / "best.safetensors")
    extra = ckpt.meta["extra"]
    assert extra["task"] == {"type": "binary", "threshold": 0.5} and extra["classes"] == ["no_sign", "sign"]
    assert extra["preprocessing"]["size"] == [30, 30] and extra["preprocessing"]["channels"] == 3
    assert ckpt.model_config == {"num_classes": 1, "in_channels": 3}
    logs = ckpt.meta["history"]["history"]
    for key in ("val_accuracy", "val_precision", "val_recall", "val_f1", "val_roc_auc"):
        assert logs[key][-1] >= 0.9, key
    assert "val_top5_accuracy" not in logs

    assert main(["evaluate", str(out / "best.safetensors"), "--data", str(root)]) == 0
    report = capsys.readouterr().out
    assert "positive class 'sign' (probability > 0.5): precision" in report and "ROC AUC" in report
    accuracy = float(report.splitlines()[1].split()[1].rstrip("%"))
    assert accuracy >= 95.0
    assert "macro avg" in report

    csv_path = tmp_path / "predictions.csv"
    images = [root / "sign" / "000.png", root / "no_sign"]
    assert main(["predict", str(out / "best.safetensors"), *map(str, images), "--csv", str(csv_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    predictions = [line for line in lines if "P(sign) = " in line]
    assert len(predictions) == 81  # one probability per image
    probability = float(predictions[0].split("P(sign) = ")[1].rstrip(")"))
    assert predictions[0].startswith(f"{images[0]}: sign") and probability > 0.5
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 81 and set(rows[0]) == {"path", "predicted", "probability_sign"}
    assert sum(r["predicted"] == "no_sign" for r in rows[1:]) >= 76


def test_split_folders_multiclass_resnet18_with_test_evaluated_once_for_best_and_last(tmp_path, capsys):
    for split, n in (("train", 8), ("val", 3), ("test", 3)):
        make_shapes(tmp_path / "data" / split, n=n, seed=len(split))
    argv = ["train", "resnet18", "--data", str(tmp_path / "data"), "--image-size", "16", "--epochs", "2",
            "--batch-size", "8", "--out", str(tmp_path / "run"), "--workers", "0", "--cache", "off"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "task multiclass" in text and "16x16 (--image-size)" in text
    assert "train: 24 images" in text and f"validation: 9 images ({tmp_path / 'data' / 'val'}" in text
    assert f"test: 9 images ({tmp_path / 'data' / 'test'}; evaluated once, at the end)" in text
    assert "decoded from the files each epoch (--cache off)" in text
    last_line = [line for line in text.splitlines() if line.startswith("last: ")][0]
    best_line = [line for line in text.splitlines() if line.startswith("best (epoch ")][0]
    assert "; test accuracy" in last_line and "; test accuracy" in best_line
    assert "top5" not in text  # 3 classes: no top-5
    assert cnnkit.load(tmp_path / "run" / "best.safetensors").input_shape == (3, 16, 16)  # trained, not designed


def test_grayscale_folders_train_a_one_channel_model_and_say_so(tmp_path, capsys):
    make_shapes(tmp_path / "gray", n=10, gray=True)
    argv = ["train", "resnet20", "--data", str(tmp_path / "gray"), "--epochs", "1", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "grayscale (1 channel: every image is grayscale)" in text and "24x24 (the images' own size)" in text
    ckpt = load_checkpoint(tmp_path / "r" / "last.safetensors")
    assert ckpt.model_config["in_channels"] == 1 and len(ckpt.meta["extra"]["mean"]) == 1


def test_transfer_learning_replaces_the_head_and_freezes_the_backbone(tmp_path, capsys):
    make_shapes(tmp_path / "three", n=8)
    make_shapes(tmp_path / "two", classes=("circle", "square"), n=8, seed=5)
    first = ["train", "resnet20", "--data", str(tmp_path / "three"), "--epochs", "1", "--out", str(tmp_path / "a")]
    assert main(first) == 0
    source = load_checkpoint(tmp_path / "a" / "last.safetensors").model_state
    argv = ["train", "resnet20", "--data", str(tmp_path / "two"), "--task", "multiclass", "--epochs", "2",
            "--weights", str(tmp_path / "a" / "last.safetensors"), "--freeze", "backbone",
            "--out", str(tmp_path / "b")]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "new head (fc.bias, fc.weight)" in text and "froze the backbone" in text
    tuned = load_checkpoint(tmp_path / "b" / "last.safetensors").model_state
    assert tuned["fc.weight"].shape == (2, 64)
    for key in ("conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.running_mean", "layer3.2.conv2.weight"):
        np.testing.assert_array_equal(tuned[key], source[key], err_msg=key)  # frozen, BatchNorm in eval mode
    assert not np.array_equal(tuned["fc.weight"][:, :5], np.zeros((2, 5)))
    # a checkpoint of another zoo model is refused by name, before any image is decoded
    wrong = ["train", "lenet5", "--data", str(tmp_path / "two"), "--weights", str(tmp_path / "a" / "last.safetensors"),
             "--out", str(tmp_path / "w")]
    assert main(wrong) == 2
    captured = capsys.readouterr()
    assert (f"--weights {tmp_path / 'a' / 'last.safetensors'} is a checkpoint of resnet20, not of lenet5: fine-tune "
            "resnet20 (cnnkit train resnet20 --weights ...), or give weights of lenet5") in captured.err
    assert "decoding" not in captured.out + captured.err
    # --freeze N counts the layers before the head (which is new, and always trains)
    argv[argv.index("backbone")] = "39"
    assert main(argv + ["--overwrite"]) == 2
    assert ("--freeze 39: resnet20 has 38 layers with weights before its head (fc), which always trains; give at "
            "most 38") in capsys.readouterr().err


def test_weights_from_a_safetensors_state_dict_with_pytorch_keys_and_a_lower_backbone_lr(tmp_path, capsys):
    from safetensors.numpy import save_file

    from cnnkit import models

    net = models.get_model("resnet20", num_classes=10, generator=np.random.default_rng(3))
    state = {k: np.array(getattr(v, "data", v), order="C") for k, v in net.state_dict().items()}
    save_file(state, str(tmp_path / "plain.safetensors"))
    make_shapes(tmp_path / "gray", n=6, gray=True)
    argv = ["train", "resnet20", "--data", str(tmp_path / "gray"), "--epochs", "1", "--out", str(tmp_path / "c"),
            "--weights", str(tmp_path / "plain.safetensors"), "--backbone-lr-scale", "0.1"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "conv1.weight adapted from 3 to 1 input channels" in text and "backbone lr x0.1" in text


@pytest.mark.parametrize("layout, message", [
    ("missing", "--data {d}: no such folder"),
    ("empty", "no class folders; expected one subfolder per class"),
    ("one_class", "found 1 class folder ('only'); a classifier needs at least 2 classes"),
    ("empty_class", "class folder 'b' holds no readable images"),
    ("mismatch", "its class folders differ from the training classes ['a', 'b']: lacks ['b']; has extra ['c']"),
    ("loose", "no class folders; expected one subfolder per class (it holds 2 images directly"),
])
def test_bad_folders_are_one_line_errors(tmp_path, capsys, layout, message):
    d = tmp_path / "d"

    def image(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (28, 28), (200, 10, 10)).save(path)

    if layout == "empty":
        d.mkdir()
    elif layout == "one_class":
        image(d / "only" / "x.png")
    elif layout == "empty_class":
        image(d / "a" / "x.png")
        (d / "b").mkdir()
        (d / "b" / "notes.txt").write_text("no images here")
    elif layout == "mismatch":
        for split, classes in (("train", "ab"), ("val", "ac")):
            for c in classes:
                image(d / split / c / "x.png")
    elif layout == "loose":
        image(d / "x.png")
        image(d / "y.png")
    assert main(["train", "lenet5", "--data", str(d), "--epochs", "1", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message.format(d=d) in err
    assert not (tmp_path / "o").exists()  # nothing started


def test_unreadable_and_non_image_files_are_skipped_with_a_count(tmp_path, capsys):
    make_shapes(tmp_path / "d", classes=("a", "b"), n=6)
    (tmp_path / "d" / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "d" / "b" / "readme.txt").write_text("hello")
    argv = ["train", "lenet5", "--data", str(tmp_path / "d"), "--epochs", "1", "--in-channels", "1",
            "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "skipped 1 unreadable image file(s): a/broken.jpg" in text
    assert "ignored 1 file(s) that are not images: b/readme.txt" in text
    assert "classes (2): a (5), b (5)" in text  # 6 minus the one held out for validation
    assert "converted by --in-channels 1" in text


@pytest.mark.parametrize("argv, status, message", [
    (["train", "vgg11", "--image-size", "16"], 2, "vgg11 takes images of at least 32x32 pixels; 16x16 (--image-size) is too small: pass --image-size 32"),
    (["train", "lenet5", "--image-size", "40"], 2, "lenet5 takes images of 28x28 to 31x31 pixels; 40x40 (--image-size) is too large: pass --image-size 31"),
    (["train", "lenet5", "--task", "binary", "--val-split", "0.5", "--data-dir", "."], 2, "--data-dir is where a named dataset's files are"),
    (["train", "lenet5", "--freeze", "backbone"], 2, "--freeze and --backbone-lr-scale need --weights"),
    (["train", "lenet5", "--weights", "DEFAULT", "--freeze", "backbone", "--backbone-lr-scale", "0.1"], 2,
     "--backbone-lr-scale 0.1 does nothing with --freeze backbone (the backbone does not train): drop one of them"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, argv, status, message):
    make_shapes(tmp_path / "d", classes=("a", "b"), n=3)
    assert main(argv + ["--data", str(tmp_path / "d"), "--out", str(tmp_path / "o")]) == status
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_a_missing_data_dir_is_an_error_not_mnist(tmp_path, capsys):
    assert main(["train", "lenet5", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 1
    assert f"--data-dir {tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err
    assert main(["train", "lenet5", "--dataset", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "(a folder of images? pass it as --data)" in capsys.readouterr().err


def test_visualize_fcn_and_prune_read_the_checkpoints_preprocessing(signs_run, capsys, tmp_path):
    root, out, argv = signs_run
    if not (out / "best.safetensors").exists():
        assert main(argv) == 0
    best = str(out / "best.safetensors")
    image = str(root / "sign" / "001.png")
    assert main(["visualize", "feature-maps", best, image, "-o", str(tmp_path / "maps.png")]) == 0
    assert (tmp_path / "maps.png").stat().st_size > 0
    wide = Image.new("RGB", (90, 30), (120, 120, 120))
    wide.paste(Image.open(image), (30, 0))
    wide.save(tmp_path / "wide.png")
    assert main(["fcn", best, str(tmp_path / "wide.png"), "-o", str(tmp_path / "heat.png")]) == 0
    assert main(["prune", best, "--amount", "0.5", "--finetune-epochs", "1", "-o", str(tmp_path / "p.safetensors")]) == 0
    text = capsys.readouterr().out
    assert f"data: {root}: training 144 images, measuring on the validation share (16 images)" in text
    pruned = load_checkpoint(tmp_path / "p.safetensors")
    assert pruned.meta["extra"]["task"]["type"] == "binary"


def test_evaluate_refuses_to_put_mnist_into_an_rgb_model(tmp_path, capsys):
    from cnnkit import models
    from cnnkit.io.checkpoint import save_checkpoint

    net = models.get_model("resnet20", num_classes=10, generator=np.random.default_rng(0))
    save_checkpoint(tmp_path / "rgb.safetensors", net, model_name="resnet20", model_config={"num_classes": 10})
    assert main(["evaluate", str(tmp_path / "rgb.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "takes (3, 32, 32) images; the mnist test split holds (1, 28, 28): pass --data DIR" in err


def test_fine_tuning_from_named_weights_downloaded_from_a_local_server(tmp_path, server, isolated_downloads,
                                                                       monkeypatch, capsys):
    """`--weights resnet18.IMAGENET1K_V1`: fetched through the real download code from 127.0.0.1 (the
    documented CNNKIT_WEIGHTS_URL), converted once, loaded but for the head; ImageNet's normalization."""
    torch = pytest.importorskip("torch")
    import io as _io

    from cnnkit.cli.targets import file_preprocessing
    from cnnkit.models import weights as named
    from tests.io.test_weights_download import served_weights
    from tests.models.test_models import ZOO, reference_model, torch_state

    tmodel = reference_model(ZOO["resnet18"][0], seed=11)  # a torch.nn ResNet-18, random weights
    buffer = _io.BytesIO()
    torch.save(tmodel.state_dict(), buffer)
    entry = served_weights(buffer.getvalue(), "resnet18", "IMAGENET1K_V1")  # the real prefix cannot match
    monkeypatch.setitem(named._REGISTRY["resnet18"], "IMAGENET1K_V1", entry)
    server.files[f"/{entry.filename}"] = buffer.getvalue()
    monkeypatch.setenv("CNNKIT_WEIGHTS_URL", server.url)
    make_shapes(tmp_path / "d", n=4)
    argv = ["train", "resnet18", "--data", str(tmp_path / "d"), "--image-size", "64", "--weights",
            "resnet18.IMAGENET1K_V1", "--epochs", "1", "--freeze", "backbone", "--val-split", "0",
            "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert server.requests == [f"/{entry.filename}"]
    assert ("normalization: mean (0.4850, 0.4560, 0.4060), std (0.2290, 0.2240, 0.2250) (the weights' own: "
            "resnet18.IMAGENET1K_V1)") in text
    assert ("weights: 120 tensors from resnet18.IMAGENET1K_V1 (named weights, torchvision keys); new head "
            "(fc.bias, fc.weight); froze the backbone") in text
    ckpt = load_checkpoint(tmp_path / "run" / "last.safetensors")
    source = torch_state(tmodel)
    for key, value in source.items():
        if not key.startswith("fc."):  # frozen, BatchNorm in eval mode: still the source's arrays
            np.testing.assert_array_equal(ckpt.model_state[key], value, err_msg=key)
    assert ckpt.model_state["fc.weight"].shape == (3, 512)
    extra = ckpt.meta["extra"]
    assert extra["weights"]["name"] == "resnet18.IMAGENET1K_V1" and extra["weights"]["kind"] == "named weights"
    spec = file_preprocessing(extra)  # what evaluate and predict read the images with
    assert spec.mean == named.IMAGENET_MEAN and spec.std == named.IMAGENET_STD and spec.size == (64, 64)
    # predict applies it: the printed probability is the torch reference's (source backbone, the
    # trained head) on the image resized to 64x64 and normalized with ImageNet's statistics.
    image = tmp_path / "d" / "circle" / "00.png"
    assert main(["predict", str(tmp_path / "run" / "last.safetensors"), str(image)]) == 0
    printed = capsys.readouterr().out
    tmodel.fc = torch.nn.Linear(512, 3)
    tmodel.fc.load_state_dict({"weight": torch.from_numpy(np.array(ckpt.model_state["fc.weight"])),
                               "bias": torch.from_numpy(np.array(ckpt.model_state["fc.bias"]))})
    with torch.no_grad():
        p = torch.softmax(tmodel.eval()(torch.from_numpy(spec.load([image]))), 1)[0].numpy()
    best = int(np.argmax(p))
    assert f"{['circle', 'square', 'triangle'][best]} ({100 * p[best]:.1f}%)" in printed
    # DEFAULT names the same weights: served from the cache, no second request.
    assert read_weights("DEFAULT", "resnet18").meta["weights"] == "resnet18.IMAGENET1K_V1"
    assert len(server.requests) == 1


def test_fine_tuning_from_a_torch_save_file_on_grayscale_images(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from tests.models.test_models import ZOO, reference_model, torch_state

    tmodel = reference_model(ZOO["resnet20"][0], seed=5)
    torch.save(tmodel.state_dict(), tmp_path / "resnet20.pth")
    make_shapes(tmp_path / "gray", n=6, gray=True)
    argv = ["train", "resnet20", "--data", str(tmp_path / "gray"), "--epochs", "1", "--out", str(tmp_path / "r"),
            "--weights", str(tmp_path / "resnet20.pth"), "--freeze", "backbone"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert (f"weights: 114 tensors from {tmp_path / 'resnet20.pth'} (pth, torchvision keys); new head (fc.bias, "
            "fc.weight); conv1.weight adapted from 3 to 1 input channels; froze the backbone") in text
    assert "the weights carry no normalization: the images' own is used (--normalize imagenet for ImageNet's)" in text
    state = load_checkpoint(tmp_path / "r" / "last.safetensors").model_state
    source = torch_state(tmodel)
    np.testing.assert_allclose(state["conv1.weight"], source["conv1.weight"].sum(1, keepdims=True), rtol=1e-6)
    for key in ("bn1.running_var", "layer2.0.conv1.weight", "layer3.2.bn2.bias"):
        np.testing.assert_array_equal(state[key], source[key], err_msg=key)
    assert state["fc.weight"].shape == (3, 64)


def test_normalize_imagenet_for_a_plain_pth_and_images_to_ignore_the_weights_own(tmp_path, capsys):
    """A torch.save file says nothing of its inputs: --normalize imagenet gives ImageNet's statistics
    (stored, so evaluate/predict and --resume use them); --normalize images ignores the weights' own."""
    torch = pytest.importorskip("torch")
    from cnnkit.cli.targets import file_preprocessing
    from cnnkit.models.weights import IMAGENET_MEAN, IMAGENET_STD
    from tests.models.test_models import ZOO, reference_model

    torch.save(reference_model(ZOO["resnet20"][0], seed=5).state_dict(), tmp_path / "resnet20.pth")
    make_shapes(tmp_path / "d", n=6)
    run = tmp_path / "run"
    argv = ["train", "resnet20", "--data", str(tmp_path / "d"), "--epochs", "1", "--out", str(run),
            "--weights", str(tmp_path / "resnet20.pth"), "--normalize", "imagenet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    line = ("normalization: mean (0.4850, 0.4560, 0.4060), std (0.2290, 0.2240, 0.2250) (ImageNet's: --normalize "
            "imagenet)")
    assert line in text and "the weights carry no normalization" not in text
    extra = load_checkpoint(run / "last.safetensors").meta["extra"]
    assert (tuple(extra["mean"]), tuple(extra["std"])) == (IMAGENET_MEAN, IMAGENET_STD)
    assert extra["recipe"]["normalize"] == "imagenet"
    spec = file_preprocessing(extra)  # what evaluate and predict read the images with
    assert (spec.mean, spec.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2"]) == 0  # the recipe's, again
    assert line in capsys.readouterr().out
    assert main(["train", "--out", str(run), "--resume", "--epochs", "3", "--normalize", "images"]) == 2
    assert "--normalize images (the run has imagenet)" in capsys.readouterr().err
    # --normalize images: the training images' own statistics even when the weights carry some
    argv = ["train", "resnet20", "--data", str(tmp_path / "d"), "--epochs", "1", "--out", str(tmp_path / "own"),
            "--weights", str(run / "last.safetensors"), "--normalize", "images", "--val-split", "0"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "(of the 18 training images)" in text and "ImageNet's" not in text


def test_a_named_dataset_takes_the_weights_normalization_and_evaluate_applies_it(tmp_path, capsys):
    from cnnkit import models
    from cnnkit.io.checkpoint import save

    source = tmp_path / "src.safetensors"
    save(models.lenet5(generator=np.random.default_rng(0)), source, model_name="lenet5",
         model_config={"num_classes": 10}, extra={"mean": [0.5], "std": [0.25], "input_shape": [1, 28, 28]})
    argv = ["train", "lenet5", "--weights", str(source), "--limit", "300", "--epochs", "1", "--val-split", "0",
            "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"normalization: mean (0.5000), std (0.2500) (the weights' own, from {source})" in text
    extra = load_checkpoint(tmp_path / "run" / "last.safetensors").meta["extra"]
    assert (extra["mean"], extra["std"]) == ([0.5], [0.25])
    test_loss = text.split("last: ")[1].split("test accuracy ")[1].split(")")[0]    # "9.80% (loss 2.2955"
    assert main(["evaluate", str(tmp_path / "run" / "last.safetensors")]) == 0
    report = capsys.readouterr().out
    accuracy, loss = test_loss.split(" (loss ")
    assert f"accuracy: {accuracy}  loss: {loss}" in report  # the same images as the run's test: same numbers
    # Resumed (the source file gone: the run's checkpoint holds the weights), the images are
    # normalized as the run started.
    source.unlink()
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--epochs", "2"]) == 0
    text = capsys.readouterr().out
    assert "normalization: mean (0.5000), std (0.2500) (the weights' own, as the run started)" in text
    assert f"weights: from {tmp_path / 'run' / 'last.safetensors'} (first from {source})" in text
    extra = load_checkpoint(tmp_path / "run" / "last.safetensors").meta["extra"]
    assert (extra["mean"], extra["std"], extra["weights"]["kind"]) == ([0.5], [0.25], "cnnkit checkpoint")


def test_an_image_that_goes_bad_mid_run_keeps_the_last_epoch_and_says_how_to_go_on(tmp_path, capsys, monkeypatch):
    """A picture overwritten while the run trains (after epoch 1 was saved): one line naming it, the
    safe checkpoint and the command that continues; --resume does once the file is fixed."""
    from cnnkit.train import callbacks

    root = make_shapes(tmp_path / "d", classes=("a", "b"), n=6)
    victim = root / "a" / "00.png"
    good = victim.read_bytes()
    real_save, saves = callbacks.save, [0]

    def save_then_break(model, path, **kwargs):
        result = real_save(model, path, **kwargs)
        saves[0] += 1
        if saves[0] == 1:  # epoch 1's first file written: garble one image for epoch 2
            victim.write_bytes(b"garbled, not a picture any more")
        return result

    monkeypatch.setattr(callbacks, "save", save_then_break)
    out = tmp_path / "o"
    argv = ["train", "lenet5", "--data", str(root), "--epochs", "2", "--workers", "0", "--cache", "off",
            "--out", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"{victim}: cannot read as an image (not a picture in a format Pillow reads); remove the file or fix it; " in err
    assert "run again" not in err  # the way on is --resume, not a new run
    assert f"the last finished epoch is safe in {out / 'last.safetensors'}" in err
    assert f"`cnnkit train --out {out} --resume` continues the run once that is fixed" in err
    assert load_checkpoint(out / "last.safetensors").meta["epoch"] == 0
    monkeypatch.setattr(callbacks, "save", real_save)
    victim.write_bytes(good)
    assert main(["train", "--out", str(out), "--resume", "--workers", "0"]) == 0
    assert load_checkpoint(out / "last.safetensors").meta["epoch"] == 1
