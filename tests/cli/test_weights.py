"""``cnnkit import``, ``cnnkit weights`` and ``cnnkit predict`` on pretrained-style checkpoints."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

import cnnkit
from cnnkit import models
from cnnkit.cli.main import main
from cnnkit.io.weights import write_checkpoint
from cnnkit.models.weights import get_weights

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


@pytest.fixture(scope="module")
def tabby_state():
    """ResNet-18 weights whose head always answers class 281 ("tabby")."""
    state = {k: np.array(v) for k, v in models.resnet18(generator=np.random.default_rng(0)).state_dict().items()}
    state["fc.weight"][:] = 0
    state["fc.bias"][:] = 0
    state["fc.bias"][281] = 5.0
    state["fc.bias"][282] = 4.0
    return state


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 420, 3), dtype=np.uint8)).save(path)
    return path


def test_import_a_torch_file_then_predict_prints_imagenet_names(tmp_path, tabby_state, photo, capsys):
    wrapped = {"model": {f"module.{k}": torch.from_numpy(v) for k, v in tabby_state.items()}, "epoch": 90}
    torch.save(wrapped, tmp_path / "resnet18.pth")
    out = tmp_path / "resnet18.safetensors"
    assert main(["import", str(tmp_path / "resnet18.pth"), "--model", "resnet18", "-o", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"wrote {out}: resnet18, 122 tensors") and "[pth, torchvision keys]" in line
    assert "classes and preprocessing attached" in line
    model = cnnkit.load(out)
    np.testing.assert_array_equal(np.asarray(model.state_dict()["conv1.weight"]), tabby_state["conv1.weight"])
    assert main(["predict", str(out), str(photo), "--top-k", "2"]) == 0
    printed = capsys.readouterr().out.strip()
    p281 = np.exp(5) / (np.exp(5) + np.exp(4) + 998)
    assert printed == f"{photo}: tabby ({100 * p281:.1f}%), tiger cat ({100 * p281 / np.e:.1f}%)"


def test_import_reports_keys_that_do_not_fit_on_one_line(tmp_path, tabby_state, capsys):
    torch.save({k: torch.from_numpy(v) for k, v in tabby_state.items()}, tmp_path / "r18.pth")
    assert main(["import", str(tmp_path / "r18.pth"), "--model", "resnet34", "-o", str(tmp_path / "x.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cnnkit import: ")
    assert "the weights do not fit ResNet (resnet34) [pth, torchvision keys]: missing from the weights (80): " \
           "layer1.2.conv1.weight, layer1.2.bn1.weight" in err
    assert not (tmp_path / "x.safetensors").exists()
    # A new 10-class head: everything else is imported, and the line says what was left out.
    assert main(["import", str(tmp_path / "r18.pth"), "--model", "resnet18", "--num-classes", "10", "--skip", "fc",
                 "-o", str(tmp_path / "ft.safetensors")]) == 0
    assert "left out fc.weight, fc.bias (kept the model's initial values)" in capsys.readouterr().out
    assert cnnkit.load(tmp_path / "ft.safetensors").fc.weight.shape == (10, 512)
    assert main(["import", str(tmp_path / "r18.pth"), "--model", "resnet99", "-o", "x"]) == 2
    assert "unknown model 'resnet99'" in capsys.readouterr().err


def test_import_refuses_an_unsafe_file_in_one_line(tmp_path, capsys):
    import os

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'PWNED'}",)

    torch.save({"w": Evil()}, tmp_path / "evil.pth")
    assert main(["import", str(tmp_path / "evil.pth"), "--model", "resnet18", "-o", str(tmp_path / "o.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refused global posix.system (GLOBAL)" in err
    assert not (tmp_path / "PWNED").exists()


def test_predict_with_a_weights_name_uses_the_cached_checkpoint(tmp_path, tabby_state, photo, capsys):
    entry = get_weights("resnet18", "IMAGENET1K_V1")
    p = entry.preprocessing
    extra = {"weights": entry.full_name, "classes": list(entry.categories), "preprocessing": p.to_dict(),
             "input_shape": [3, 224, 224], "mean": list(p.mean), "std": list(p.std)}
    write_checkpoint(tmp_path / "cache" / "weights" / "resnet18-IMAGENET1K_V1.safetensors", tabby_state,
                     model_name="resnet18", model_config={"num_classes": 1000}, extra=extra)
    assert main(["predict", "resnet18.IMAGENET1K_V1", str(photo), "--top-k", "1"]) == 0
    assert capsys.readouterr().out.strip().startswith(f"{photo}: tabby (")
    # Feature-extraction weights (no class names) are refused for predict.
    write_checkpoint(tmp_path / "features.safetensors", tabby_state, model_name="resnet18",
                     extra={"preprocessing": p.to_dict(), "classes": None})
    assert main(["predict", str(tmp_path / "features.safetensors"), str(photo)]) == 2
    assert "these weights are for feature extraction (no class names)" in capsys.readouterr().err


def test_weights_lists_the_named_weights(capsys):
    assert main(["weights", "resnet50"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"resnet50\.IMAGENET1K_V1 +76\.13 +92\.86 +97\.8  resize 256, crop 224 +no", out)
    assert re.search(r"resnet50\.IMAGENET1K_V2 +80\.86 +95\.43 +97\.8  resize 232, crop 224 +no", out)
    assert main(["weights", "lenet5"]) == 2
    assert "no named weights for 'lenet5'" in capsys.readouterr().err
