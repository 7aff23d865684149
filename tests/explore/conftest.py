"""Fixtures of the explorer's tests: a LeNet-5 trained by `cnnkit train` in its run folder, and its explorer."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from cnnkit.cli.main import main
from cnnkit.cli.targets import load_target
from cnnkit.explore import Explorer, build_samples
from cnnkit.explore.server import bind, create_app, url_of


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
    target = load_target(str(checkpoint))
    return Explorer(target, build_samples(target))


@contextlib.contextmanager
def running(explorer: Explorer):
    """Serve ``explorer`` with uvicorn on 127.0.0.1 (a free port) in a thread; yield the page's URL."""
    import threading
    import time

    import uvicorn  # the explore extra

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(explorer), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the explorer's server did not start")
        time.sleep(0.02)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
