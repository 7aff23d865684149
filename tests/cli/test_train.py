"""The `cnnkit` command: train, evaluate, predict, summary, models, resume, Ctrl-C, bad input."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from cnnkit.cli.main import main
from cnnkit.data import load_mnist
from cnnkit.io.checkpoint import load_checkpoint
from tests.conftest import subprocess_env


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LeNet-5 trained for one short epoch on 6,000 images."""
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "lenet5", "--epochs", "1", "--limit", "6000", "--out", str(out)]) == 0
    return out


def test_train_writes_checkpoints_and_prints_the_test_accuracy(trained, capsys):
    assert (trained / "last.safetensors").exists() and (trained / "best.safetensors").exists()
    assert (trained / "log.csv").read_text().startswith("epoch,")
    ckpt = load_checkpoint(trained / "last.safetensors")
    assert ckpt.model_name == "lenet5" and ckpt.meta["extra"]["dataset"] == "mnist"
    assert ckpt.meta["epoch"] == 0


def test_evaluate_prints_accuracy_per_class_scores_and_the_confusion_matrix(trained, capsys):
    assert main(["evaluate", str(trained / "last.safetensors")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("accuracy: ")
    assert "precision  recall  support" in out and "confusion matrix" in out
    accuracy = float(out.split()[1].rstrip("%"))
    assert accuracy > 80.0


def test_predict_reads_white_on_black_and_dark_on_light_digits(trained, tmp_path, capsys):
    images, labels = load_mnist("test")
    picks = [i for i in range(50) if labels[i] in (0, 1, 7)][:3]
    paths = []
    for i in picks:
        big = Image.fromarray(images[i]).resize((112, 112), Image.BILINEAR)
        white_on_black = tmp_path / f"digit{i}.png"
        big.save(white_on_black)
        dark_on_light = tmp_path / f"digit{i}_paper.jpg"
        Image.fromarray(255 - np.asarray(big)).convert("RGB").save(dark_on_light)
        paths += [white_on_black, dark_on_light]
    assert main(["predict", str(trained / "best.safetensors"), *map(str, paths), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(paths)
    correct = sum(line.split(": ")[1].startswith(str(labels[picks[k // 2]])) for k, line in enumerate(lines))
    assert correct >= len(paths) - 1
    assert "%" in lines[0] and ", " in lines[0]  # two ranked classes with probabilities


def test_summary_and_models(capsys):
    assert main(["summary", "lenet5"]) == 0
    out = capsys.readouterr().out
    assert "61,706" in out or "61706" in out
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "lenet5" in out and "resnet18" in out and "11,689,512" in out


@pytest.mark.parametrize(
    "argv, status, message",
    [
        (["train", "nosuchnet"], 2, "cnnkit train: unknown model 'nosuchnet'"),
        (["train", "lenet5", "--epochs", "0"], 2, "expected a positive integer, got '0'"),
        (["train", "lenet5", "--dataset", "imagenet"], 2, "unknown dataset 'imagenet'"),
        (["evaluate", "missing.safetensors"], 1, "missing.safetensors: no such checkpoint file"),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_arguments_and_files_end_with_one_clear_line(argv, status, message, capsys):
    assert main(argv) == status
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unreadable_image_and_foreign_checkpoint_are_refused(trained, tmp_path, capsys):
    bad = tmp_path / "notanimage.png"
    bad.write_bytes(b"this is text")
    assert main(["predict", str(trained / "last.safetensors"), str(bad)]) == 1
    err = capsys.readouterr().err
    assert "notanimage.png: cannot read as an image" in err and len(err.strip().splitlines()) == 1
    foreign = tmp_path / "weights.pt"
    foreign.write_bytes(b"\x80\x04\x95" + b"\x00" * 100)
    assert main(["evaluate", str(foreign)]) == 1
    assert "not a cnnkit checkpoint" in capsys.readouterr().err


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes_the_run(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cnnkit", "train", "lenet5", "--epochs", "3", "--limit", "1024",
           "--batch-size", "32", "--seed", "5", "--out", str(out)]
    env = subprocess_env()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 240
    while not (out / "last.safetensors").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert (out / "last.safetensors").exists(), proc.communicate()[1]
    time.sleep(0.3)  # inside epoch 2
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("training finished before the interrupt arrived")
    assert proc.returncode == 130, stderr
    assert "interrupted: weights saved to" in stderr and "--resume" in stderr
    assert (out / "interrupted.safetensors").exists()
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=240, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and "test accuracy:" in resumed.stdout

    straight = tmp_path / "straight"
    cmd_straight = [c if c != str(out) else str(straight) for c in cmd]
    assert subprocess.run(cmd_straight, capture_output=True, text=True, timeout=240, env=env).returncode == 0
    a = load_checkpoint(out / "last.safetensors").model_state
    b = load_checkpoint(straight / "last.safetensors").model_state
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
