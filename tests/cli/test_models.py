"""cli/models.py: cnnkit summary and cnnkit models."""

from __future__ import annotations

from cnnkit.cli.main import main


def test_summary_and_models(capsys):
    assert main(["summary", "lenet5"]) == 0
    out = capsys.readouterr().out
    assert "61,706" in out or "61706" in out
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "lenet5" in out and "resnet18" in out and "11,689,512" in out
