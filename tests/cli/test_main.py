"""cli/main.py: bad arguments and bad files end with one clear line and an exit status."""

from __future__ import annotations

import pytest

from cnnkit.cli.main import main


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
