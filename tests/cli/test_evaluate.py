"""cli/evaluate.py: cnnkit evaluate and cnnkit predict on a trained checkpoint."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cnnkit.cli.main import main
from cnnkit.data import load_mnist


def test_evaluate_prints_accuracy_per_class_scores_and_the_confusion_matrix(trained, capsys):
    assert main(["evaluate", str(trained / "last.safetensors")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("last.safetensors on the mnist test split (10,000 images):\naccuracy: ")
    assert "precision  recall      F1  support" in out and "macro avg" in out and "confusion matrix" in out
    accuracy = float(out.splitlines()[1].split()[1].rstrip("%"))
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
