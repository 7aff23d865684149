"""`cnnkit visualize ...`, `cnnkit kernels`, `cnnkit explain ...` and `cnnkit evaluate --plot`.

Every picture command runs from a checkpoint made by `cnnkit train lenet5` and from a zoo
model with random weights; every bad input ends in one line on stderr, no traceback.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnkit.cli.main import main
from cnnkit.viz.dot import dot_available

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real `cnnkit train lenet5` run (one epoch on 64 images: the weights are barely trained)."""
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "lenet5", "--epochs", "1", "--limit", "64", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory):
    """A dark-on-light digit, as a user would draw it."""
    path = tmp_path_factory.mktemp("img") / "seven.png"
    a = np.full((60, 50), 255, np.uint8)
    a[10:16, 8:42] = 0
    for i in range(16, 52):
        a[i, 38 - (i - 16) // 2 : 44 - (i - 16) // 2] = 0
    Image.fromarray(a).save(path)
    return path


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def ok(argv, capsys) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_filters_from_a_trained_checkpoint_and_from_a_zoo_model(run, tmp_path, capsys):
    ckpt = run / "last.safetensors"
    out = ok(["visualize", "filters", ckpt, "-o", tmp_path / "f1.png"], capsys)
    assert out.strip() == f"wrote {tmp_path / 'f1.png'}"
    ok(["visualize", "filters", ckpt, "--layer", "features.3", "-o", tmp_path / "f2.png"], capsys)
    ok(["visualize", "filters", "resnet18", "--max-filters", "16", "-o", tmp_path / "f3.png"], capsys)
    w1, _ = png_size(tmp_path / "f1.png")
    w2, h2 = png_size(tmp_path / "f2.png")
    assert w2 > w1 and w2 > h2  # 16 filters x 6 channels: wide
    assert png_size(tmp_path / "f3.png")[0] > 300  # 16 of its 64 colour filters


def test_feature_maps_from_a_checkpoint_with_a_sample_an_image_and_chosen_layers(
    run, digit_png, tmp_path, capsys
):
    ckpt = run / "last.safetensors"
    out = ok(["visualize", "feature-maps", ckpt, "-o", tmp_path / "m1.png"], capsys)
    assert "layers: features.0, features.1, features.2, features.3, features.4, features.5" in out
    ok(["visualize", "feature-maps", ckpt, digit_png, "--layers", "features.0,features.2", "classifier.0",
        "-o", tmp_path / "m2.png"], capsys)
    assert png_size(tmp_path / "m1.png")[1] > png_size(tmp_path / "m2.png")[1]  # 7 blocks vs 4


def test_feature_maps_saliency_and_graph_from_zoo_models(tmp_path, capsys):
    # resnet20 (CIFAR, 3x32x32 by default) keeps the forward passes cheap; resnet18 at 32x32 for the graph
    out = ok(["visualize", "feature-maps", "resnet20", "--max-channels", "4", "-o", tmp_path / "m.png"],
             capsys)
    assert out.startswith("layers: conv1, ")
    out = ok(["visualize", "saliency", "resnet20", "-o", tmp_path / "s.png"], capsys)
    assert out.startswith("class ") and "probability" in out
    out = ok(["visualize", "graph", "resnet18", "--input-shape", "3,32,32", "--level", "layers",
              "-o", tmp_path / "g.dot"], capsys)
    assert out.splitlines()[0] == "69 ops, 62 parameter tensors"
    dot = (tmp_path / "g.dot").read_text()
    assert dot.count("Add  (1, ") == 8  # ResNet-18's eight residual additions
    assert png_size(tmp_path / "s.png")[0] > 600


def test_saliency_and_graph_from_a_checkpoint(run, digit_png, tmp_path, capsys):
    ckpt = run / "best.safetensors"
    out = ok(["visualize", "saliency", ckpt, digit_png, "-o", tmp_path / "s.png"], capsys)
    assert out.startswith("class ")
    out = ok(["visualize", "graph", ckpt, "-o", tmp_path / "g.svg"], capsys)
    dot = (tmp_path / "g.dot").read_text()
    assert r"features.0: Conv2d\n(1, 6, 28, 28)" in dot
    assert (tmp_path / "g.svg").exists() == dot_available()


def test_graph_without_graphviz_writes_the_dot_file_and_says_why(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["visualize", "graph", "lenet5", "-o", str(tmp_path / "g.png")]) == 0
    out, err = capsys.readouterr()
    assert (tmp_path / "g.dot").exists() and not (tmp_path / "g.png").exists()
    assert "Graphviz 'dot' is not installed" in err and len(err.strip().splitlines()) == 1


def test_curves_from_the_run_folder_its_log_and_its_checkpoint(run, tmp_path, capsys):
    out = ok(["visualize", "curves", run, "-o", tmp_path / "c1.png"], capsys)
    assert out.startswith("last epoch (1): loss ")
    ok(["visualize", "curves", run / "log.csv", "-o", tmp_path / "c2.png"], capsys)
    ok(["visualize", "curves", run / "last.safetensors", "-o", tmp_path / "c3.png"], capsys)
    assert png_size(tmp_path / "c1.png") == png_size(tmp_path / "c3.png")


def test_evaluate_plot_draws_the_confusion_matrix(run, tmp_path, capsys):
    out = ok(["evaluate", run / "last.safetensors", "--plot", tmp_path / "cm.png"], capsys)
    assert "confusion matrix" in out and out.strip().endswith(f"wrote {tmp_path / 'cm.png'}")
    assert png_size(tmp_path / "cm.png")[0] > 400


def test_kernels_on_the_sample_and_on_a_file(digit_png, tmp_path, capsys):
    out = ok(["kernels", "--kernel", "sobel-x", "-o", tmp_path / "k1.png"], capsys)
    assert "output height (H - F + 2P)/S + 1: (96 - 3 + 2*0)/1 + 1 = 94" in out
    assert "output width  (W - F + 2P)/S + 1: (128 - 3 + 2*0)/1 + 1 = 126" in out
    out = ok(["kernels", digit_png, "--kernel", "gaussian-blur-5x5", "--stride", "2", "--padding", "1",
              "-o", tmp_path / "k2.png"], capsys)
    assert "(60 - 5 + 2*1)/2 + 1" in out and "feature map 29x24x1" in out
    out = ok(["kernels", "--kernel", "all", "--sample", "digit", "-o", tmp_path / "k3.png"], capsys)
    assert out.count("feature map") == 11


def test_explain_conv_prints_the_articles_comparison(tmp_path, capsys):
    out = ok(["explain", "conv", "--input", "32x32x1", "--filters", "6", "--kernel", "5"], capsys)
    assert "output 28x28x6 = 4,704 neurons" in out
    assert "6*1*5*5 = 150 weights + 6 biases = 156" in out
    assert "4,816,896 weights" in out
    out = ok(["explain", "conv", "--input", "4x4", "--filters", "1", "--kernel", "2",
              "--plot", tmp_path / "d.png"], capsys)
    assert "4 weights (its filter) and sees at most 4 of the 16 inputs" in out
    assert "9 x 16 = 144 entries: 36 non-zero" in out
    png_size(tmp_path / "d.png")


def test_explain_graph_prints_values_and_gradients(tmp_path, capsys):
    out = ok(["explain", "graph", "-o", tmp_path / "toy.dot"], capsys)
    assert "x               0.50000    1.04030" in out
    assert "check: dz/dx = cos(2x) + 1/y = 1.04030, dz/dy = -x/y^2 = -0.12500" in out
    assert (tmp_path / "toy.dot").read_text().startswith("digraph G {")


@pytest.fixture(scope="module")
def bad_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "notes.png"
    path.write_text("this is not a picture")
    return path


@pytest.mark.parametrize("argv, message", [
    (["visualize", "filters", "{dir}/missing.safetensors"], r"missing.safetensors: no such checkpoint file"),
    (["visualize", "filters", "{ckpt}", "--layer", "nope"],
     r"no layer named 'nope'; conv layers: features.0, features.3$"),
    (["visualize", "filters", "{ckpt}", "--layer", "classifier.0"],
     r"'classifier.0' is a Linear, not a Conv2d"),
    (["visualize", "filters", "resnet20", "--layer", "layer9"], r"conv layers: conv1, layer1.0.conv1, "),
    (["visualize", "feature-maps", "{ckpt}", "--layers", "features.9"],
     r"no layer named 'features.9'; valid layers: features, features.0, .*classifier.4$"),
    (["visualize", "feature-maps", "{ckpt}", "{bad}"], r"notes.png: cannot read as an image"),
    (["visualize", "saliency", "{ckpt}", "{dir}/missing.png"], r"missing.png: no such image file"),
    (["visualize", "saliency", "lenet5", "{bad}"], r"notes.png: cannot read as an image"),
    (["visualize", "curves", "{dir}/nowhere"], r"nowhere: no such run folder or log file"),
    (["visualize", "curves", "{bad}"], r"notes.png: the log has no epochs yet|not a CSV"),
    (["visualize", "graph", "alexnett"],
     r"'alexnett' is neither a checkpoint file nor a zoo model; zoo models: alexnet"),
    (["visualize", "graph", "{bad}"], r"notes.png: not a cnnkit checkpoint"),
    (["visualize", "graph", "{dir}"], r"is a folder; pass a checkpoint file in it"),
    (["visualize", "feature-maps", "resnet18", "--input-shape", "3,64"], r"argument --input-shape: expected C,H,W"),
    (["kernels", "{dir}/missing.png"], r"missing.png: no such image file"),
    (["kernels", "{bad}"], r"notes.png: cannot read as an image"),
    (["kernels", "--kernel", "blur"], r"argument --kernel: invalid choice: 'blur'"),
    (["explain", "conv", "--input", "32x32", "--filters", "6", "--kernel", "40"],
     r"kernel \(40, 40\) is larger"),
    (["explain", "conv", "--input", "32by32", "--filters", "6", "--kernel", "5"], r"argument --input: expected HxWxC"),
])
def test_bad_input_fails_with_one_line(run, bad_png, tmp_path, capsys, argv, message):
    import re

    fill = {"{dir}": str(tmp_path), "{ckpt}": str(run / "last.safetensors"), "{bad}": str(bad_png)}
    args = []
    for a in argv:
        for key, value in fill.items():
            a = a.replace(key, value)
        args.append(a)
    code = main(args + ["-o", str(tmp_path / "out.png")] if args[0] != "explain" else args)
    out, err = capsys.readouterr()
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("cnnkit ")
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "out.png").exists()
