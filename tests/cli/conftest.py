"""Fixtures of the command-line tests."""

from __future__ import annotations

import pytest

from cnnkit.cli.main import main


@pytest.fixture(scope="package")
def trained(tmp_path_factory):
    """A LeNet-5 trained by `cnnkit train` for one short epoch on 6,000 images (once for tests/cli)."""
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "lenet5", "--epochs", "1", "--limit", "6000", "--out", str(out)]) == 0
    return out
