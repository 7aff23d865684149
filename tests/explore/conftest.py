"""Fixtures of the explorer's tests: a LeNet-5 trained by `cnnkit train` in its run folder, and its explorer."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from cnnkit.cli import main
from cnnkit.explore.images import build_samples
from cnnkit.explore.loaders import checkpoint_source
from cnnkit.explore.session import Explorer


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A run folder of `cnnkit train lenet5` (one epoch on 2,000 MNIST digits): checkpoints and log.csv."""
    out = tmp_path_factory.mktemp("runs") / "lenet5-mnist"
    with contextlib.redirect_stdout(io.StringIO()):
        status = main(["train", "lenet5", "--epochs", "1", "--limit", "2000", "--seed", "0", "--out", str(out)])
    assert status == 0
    return out


@pytest.fixture(scope="session")
def checkpoint(trained_run) -> Path:
    return trained_run / "best.safetensors"


@pytest.fixture
def explorer(checkpoint) -> Explorer:
    source = checkpoint_source(checkpoint)
    return Explorer(source, build_samples(source))
