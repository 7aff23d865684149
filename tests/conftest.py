"""Fixtures shared by test files: a seeded random generator, the array module, a LeNet-5 checkpoint,
a local HTTP server (``server``) and isolation from the user's caches and proxies for downloads."""

from __future__ import annotations

import os
import signal
import zlib
from pathlib import Path

import numpy as np
import pytest

import cnnkit
from cnnkit import models
from cnnkit.explain.graph import model_graph
from cnnkit.io.checkpoint import save
from tests.local_server import LocalServer

# The Ctrl-C tests send SIGINT to a `cnnkit train` they start. A test run started in the
# background by a non-interactive shell (`(pytest &)`) inherits SIGINT ignored, and so would every
# process it starts (an ignored signal stays ignored across exec): each Ctrl-C would be lost and
# the run would go to its end. A Python handler is reset to the default on exec, so with this
# one the processes the tests start take SIGINT as a terminal's Ctrl-C.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

try:  # pragma: no cover - only on machines with a GPU
    import cupy
except ImportError:
    cupy = None


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A ``numpy.random.Generator`` seeded from the test's id.

    Every test (and every parametrized case) gets its own reproducible stream, so a
    failure reruns with the same numbers and cases do not share data by accident.
    """
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(params=["numpy"] + (["cupy"] if cupy is not None else []))
def xp(request):
    """The array module under test: numpy always, cupy too when a GPU is present."""
    return np if request.param == "numpy" else cupy


@pytest.fixture(scope="module")
def lenet_graph():
    """A LeNet-5 (seed 0) and the op graph of one forward pass of a (1, 1, 28, 28) input."""
    model = models.lenet5(generator=np.random.default_rng(0))
    return model, model_graph(model, (1, 28, 28))


# What `cnnkit train` stores about MNIST in a checkpoint's metadata.
MNIST_EXTRA = {"dataset": "mnist", "input_shape": [1, 28, 28], "mean": [0.1307], "std": [0.3081],
               "classes": list("0123456789")}


@pytest.fixture
def lenet_checkpoint(tmp_path, rng):
    """A LeNet-5 checkpoint with random weights, saved the way `cnnkit train` saves one."""
    path = tmp_path / "lenet5.safetensors"
    save(models.lenet5(generator=rng), path, model_name="lenet5", model_config={"num_classes": 10},
                    extra=MNIST_EXTRA)
    return path


@pytest.fixture
def server():
    """A ``LocalServer`` on 127.0.0.1 (tests/local_server.py), stopped after the test."""
    s = LocalServer()
    yield s
    s.close()


@pytest.fixture
def isolated_downloads(tmp_path, monkeypatch):
    """Downloads land in tmp_path: ``CNNKIT_DATA`` = tmp_path/cache, ``TORCH_HOME`` = tmp_path/torch,
    no weights mirror set, and no proxy for 127.0.0.1. Never touches the real caches."""
    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("CNNKIT_WEIGHTS_URL", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    return tmp_path


def subprocess_env() -> dict[str, str]:
    """The environment for a child Python that must import the cnnkit under test (not another install)."""
    root = str(Path(cnnkit.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def epochs_logged(run: Path) -> int:
    """The epochs a training run has finished, by its log.csv's rows (0 before the first)."""
    try:
        text = (run / "log.csv").read_text()
    except FileNotFoundError:
        return 0
    return max(len([line for line in text.splitlines() if line.strip()]) - 1, 0)


def interrupt_training(proc, signum: int, run: Path, epochs: int, pid: int | None = None) -> bool:
    """Send ``signum`` to a training run's process (or to ``pid``, one of its ranks).

    Returns whether the run still had epochs to train when the signal left: a run that then
    exits 0 lost the signal (a test must fail, not skip); False when it had finished them
    (the signal came too late to mean anything).
    """
    pending = proc.poll() is None and epochs_logged(run) < epochs
    if pid is None:
        proc.send_signal(signum)
    else:
        os.kill(pid, signum)
    return pending
