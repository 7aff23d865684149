"""`cnnkit explore`: the address it serves on (loopback unless told), the static report, its errors."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

pytest.importorskip("uvicorn")

from cnnkit import models  # noqa: E402
from cnnkit.cli import explore as explore_cli  # noqa: E402
from cnnkit.cli.main import main  # noqa: E402
from cnnkit.explore.server import DEFAULT_PORT  # noqa: E402
from cnnkit.io.checkpoint import save  # noqa: E402
from tests.conftest import MNIST_EXTRA, subprocess_env  # noqa: E402


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "lenet5.safetensors"
    save(models.lenet5(generator=np.random.default_rng(0)), path, model_name="lenet5",
                    model_config={"num_classes": 10}, extra=MNIST_EXTRA)
    return path


def start(args: list[str], port: tuple[str, ...] = ("--port", "0")) -> tuple[subprocess.Popen, str]:
    """Run `cnnkit explore ARGS --no-browser --port 0`; return the process and the URL it printed."""
    proc = subprocess.Popen([sys.executable, "-m", "cnnkit", "explore", *args, "--no-browser", *port],
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise AssertionError(f"cnnkit explore printed nothing; stderr: {proc.stderr.read()}")
    proc.first_line = line
    return proc, line.split(" at ")[1].split()[0]


def stop(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, err


def other_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))          # no packet is sent: this only picks a route
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_it_serves_on_loopback_only_and_says_where(checkpoint):
    proc, url = start([str(checkpoint)])
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        port = int(url.rsplit(":", 1)[1].strip("/"))
        with urllib.request.urlopen(url + "api/model", timeout=30) as r:
            assert json.load(r)["model_name"] == "lenet5"
        address = other_address()
        if address is not None:                       # the same port on another interface: refused
            with pytest.raises(OSError):
                socket.create_connection((address, port), timeout=5).close()
    finally:
        status, err = stop(proc)
    assert status == 0 and "Traceback" not in err and "warning" not in err


def test_a_taken_default_port_gives_a_free_one_and_says_so(checkpoint):
    blocker = socket.socket()
    try:
        blocker.bind(("127.0.0.1", DEFAULT_PORT))
        blocker.listen(1)
    except OSError:                                   # taken by something else already: the same case
        pass
    try:
        proc, url = start([str(checkpoint)], port=())
        try:
            assert not url.endswith(f":{DEFAULT_PORT}/")
            assert f"port {DEFAULT_PORT} is taken" in proc.first_line
            with urllib.request.urlopen(url + "api/model", timeout=30) as r:
                assert json.load(r)["model_name"] == "lenet5"
        finally:
            stop(proc)
    finally:
        blocker.close()


def test_another_host_is_served_with_a_warning(checkpoint):
    proc, url = start([str(checkpoint), "--host", "0.0.0.0"])
    try:
        with urllib.request.urlopen(url + "api/model", timeout=30) as r:
            assert r.status == 200
    finally:
        status, err = stop(proc)
    assert status == 0
    assert "warning: listening on 0.0.0.0, not only on this machine" in err


def test_export_writes_one_self_contained_file(checkpoint, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["explore", str(checkpoint), "--export", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    html = out.read_text()
    assert html.startswith("<!doctype html>") and "window.CNNKIT_SNAPSHOT" in html
    assert "/static/" not in html and 'src="' not in html


def test_errors_are_one_line(checkpoint, tmp_path, capsys, monkeypatch):
    assert main(["explore", str(tmp_path / "missing.safetensors")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such checkpoint file" in err[0]
    assert main(["explore", str(checkpoint), str(tmp_path / "nope.png"), "--export", str(tmp_path / "r.html")]) == 1
    assert "no such image file or folder" in capsys.readouterr().err
    monkeypatch.setattr(explore_cli.importlib.util, "find_spec", lambda name: None)
    assert main(["explore", str(checkpoint), "--no-browser"]) == 2
    assert capsys.readouterr().err.strip() == (
        "cnnkit explore: the page needs starlette and uvicorn: pip install 'cnnkit[explore]'")


def test_an_onnx_file_and_a_pth_with_its_model_are_explored(checkpoint, tmp_path, capsys):
    from tests.io.pth_files import torch_save

    pytest.importorskip("onnx")
    onnx_file = tmp_path / "lenet5.onnx"
    assert main(["export", str(checkpoint), "-o", str(onnx_file)]) == 0
    assert main(["explore", str(onnx_file), "--export", str(tmp_path / "onnx.html")]) == 0
    html = (tmp_path / "onnx.html").read_text()
    assert "lenet5.onnx (ONNX" in html
    state = {k: np.asarray(v.data) for k, v in models.lenet5(generator=np.random.default_rng(0)).state_dict().items()}
    pth = torch_save(state, tmp_path / "lenet5.pth")
    assert main(["explore", str(pth), "--model", "lenet5", "--num-classes", "10",
                 "--export", str(tmp_path / "pth.html")]) == 0
    assert "lenet5.pth (lenet5, " in (tmp_path / "pth.html").read_text()
    capsys.readouterr()
    assert main(["explore", str(pth), "--no-browser"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lenet5.pth holds weights, not a network: name the zoo model they are for (--model NAME)" in err[0]
    assert main(["explore", str(pth), "--model", "lenet5", "--no-browser"]) == 1     # 1000 classes: the head does not fit
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "classifier.4" in err[0]
