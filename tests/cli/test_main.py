"""cli/main.py: bad arguments and bad files end with one clear line and an exit status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from cnnkit.cli.main import main
from tests.conftest import subprocess_env


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


# A sitecustomize for the child below: the import of one module (CNNKIT_TEST_SLOW_IMPORT) first
# writes a marker file, then waits, so that the test can send SIGINT while it is under way.
# SIGINT is made Python's default first: a background job of a non-interactive shell (nohup
# pytest ... &) starts with it ignored, and Python keeps it ignored.
_SLOW_IMPORT = '''
import os, signal, sys, time

signal.signal(signal.SIGINT, signal.default_int_handler)

class SlowImport:
    def find_spec(self, name, path=None, target=None):
        if name == os.environ.get("CNNKIT_TEST_SLOW_IMPORT"):
            open(os.environ["CNNKIT_TEST_MARKER"], "w").close()
            time.sleep(float(os.environ["CNNKIT_TEST_SLOW_SECONDS"]))
        return None

sys.meta_path.insert(0, SlowImport())
'''


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT")
@pytest.mark.parametrize("module, presses", [("numpy", 1), ("numba", 1), ("cnnkit.tensor", 1), ("cnnkit.cli.train", 1),
                                             ("cnnkit.io.weights", 1), ("numpy", 2)])
def test_ctrl_c_while_the_command_imports_ends_in_one_line_and_130(tmp_path, module, presses):
    """The console script (``cnnkit.cli.main:main``, run as pip's wrapper runs it) interrupted while
    it imports NumPy, numba, the autograd core, a command module: no traceback, status 130. Once
    the imports end (a KeyboardInterrupt inside NumPy's import came out as an ImportError), or at
    once on a second Ctrl-C (the import waits 60 s then)."""
    (tmp_path / "sitecustomize.py").write_text(_SLOW_IMPORT)
    marker = tmp_path / "importing"
    env = subprocess_env()
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path), env["PYTHONPATH"]]),
               CNNKIT_TEST_SLOW_IMPORT=module, CNNKIT_TEST_MARKER=str(marker),
               CNNKIT_TEST_SLOW_SECONDS="2" if presses == 1 else "60")
    script = "import sys\nfrom cnnkit.cli.main import main\nsys.exit(main())\n"
    child = subprocess.Popen([sys.executable, "-c", script, "models"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, f"the child ended before importing {module}: {child.communicate()}"
            assert time.monotonic() < deadline, f"the child never imported {module}"
            time.sleep(0.05)
        for _ in range(presses):
            child.send_signal(signal.SIGINT)
            time.sleep(0.2)
        try:
            out, err = child.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            with open(f"/proc/{child.pid}/status") as f:
                masks = [line.strip() for line in f if line.startswith(("SigBlk", "SigIgn", "SigCgt"))]
            pytest.fail(f"SIGINT did not stop the child importing {module}: {masks}")
    finally:
        if child.poll() is None:
            child.kill()
    assert "Traceback" not in err, err
    assert err.strip() == "cnnkit: interrupted" and child.returncode == 130, (child.returncode, err)
