"""The command line as a careless or hostile user types it: one line, the fix, the right exit status.

Exit statuses (README "When things go wrong"): 1 an error, 2 a usage error, 130 interrupted.
Every case checks that stderr is exactly one line and holds no traceback.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from cnnkit.cli.main import main
from tests.conftest import subprocess_env

CKPT = "{ckpt}"  # replaced by the lenet_checkpoint fixture's path

CASES = [
    # numeric options: their name, what was expected, what was given
    (["explain", "graph", "--x", "nan"], 2, "argument --x: expected a finite number, got 'nan'"),
    (["explain", "graph", "--x", "1e308"], 2, "argument --x: expected a number between -1e6 and 1e6"),
    (["explain", "graph", "--y", "0"], 2, "--y 0: z divides by y (x / y), so |y| must be at least 1e-6"),
    (["explain", "graph", "--y", "inf"], 2, "argument --y: expected a finite number, got 'inf'"),
    (["explain", "conv", "--input", "0x5", "--filters", "2", "--kernel", "3"], 2, "--input expects HxWxC"),
    (["explain", "conv", "--input", "8x8", "--filters", "-2", "--kernel", "3"], 2,
     "argument --filters: expected a positive integer, got '-2'"),
    (["prune", CKPT, "--amount", "0.5", "--lr", "inf"], 2, "argument --lr: expected a finite positive number, got 'inf'"),
    (["prune", CKPT, "--amount", "0.5", "--lr", "-1"], 2, "argument --lr: expected a finite positive number, got '-1'"),
    (["prune", CKPT, "--amount", "0.5", "--lr", "nan"], 2, "argument --lr: expected a finite positive number, got 'nan'"),
    (["prune", CKPT, "--amount", "1.0"], 2, "argument --amount: expected a number in [0, 1), got '1.0'"),
    (["prune", CKPT, "--amount", "0.5", "--seed", "-1"], 2, "argument --seed: expected a non-negative integer, got '-1'"),
    (["prune", CKPT, "--amount", "0.5", "--batch-size", "0"], 2,
     "argument --batch-size: expected a positive integer, got '0'"),
    (["fcn", CKPT, "--mnist-digits", "100000"], 1, "asked for 100000 MNIST test digits; the test split has 10,000"),
    (["fcn", CKPT, "--seed", "-3", "--mnist-digits", "3"], 2, "argument --seed: expected a non-negative integer"),
    (["evaluate", CKPT, "--batch-size", "0"], 2, "argument --batch-size: expected a positive integer, got '0'"),
    (["predict", CKPT, "x.png", "--top-k", "0"], 2, "argument --top-k: expected a positive integer, got '0'"),
    (["summary", "lenet5", "--input-shape", "1,0,28"], 2, "--input-shape expects C,H,W with positive integers, got '1,0,28'"),
    (["summary", "lenet5", "--input-shape", "1,28"], 2, "--input-shape expects C,H,W with positive integers"),
    (["summary", "resnet18", "--input-shape", "3,30000,30000"], 2,
     "a forward pass of resnet18 on 1 input(s) of 3x30000x30000 needs about"),
    (["visualize", "saliency", CKPT, "--class", "99"], 1, "target class 99 is out of range for 10 classes"),
    (["kernels", "--max-side", "0"], 2, "argument --max-side: expected a positive integer, got '0'"),
    # files and folders that are not what they should be
    (["summary", "{tmp}"], 2, "is a folder; pass a checkpoint file in it"),
    (["evaluate", "{tmp}"], 1, "is a folder, not a checkpoint file"),
    (["evaluate", "/dev/zero"], 1, "/dev/zero: is a character device, not a checkpoint file"),
    (["evaluate", "{tmp}/missing.safetensors"], 1, "missing.safetensors: no such checkpoint file"),
    (["predict", CKPT, "{tmp}/missing.png"], 1, "missing.png: no such image file"),
    (["visualize", "curves", "{tmp}"], 1, "no log.csv or last.safetensors in this run folder"),
]


@pytest.mark.parametrize("argv, status, message", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_a_bad_command_line_gets_one_line_and_its_exit_status(argv, status, message, lenet_checkpoint, tmp_path,
                                                               capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [a.replace(CKPT, str(lenet_checkpoint)).replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == status
    err = capsys.readouterr().err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_debug_or_the_environment_variable_shows_the_traceback(lenet_checkpoint, tmp_path, capsys, monkeypatch):
    argv = ["evaluate", str(tmp_path / "missing.safetensors")]
    assert main(argv + ["--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().endswith("no such checkpoint file")
    monkeypatch.setenv("CNNKIT_DEBUG", "1")
    assert main(argv) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err
    monkeypatch.setenv("CNNKIT_DEBUG", "0")
    assert main(argv) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_an_unexpected_error_is_one_line_that_says_how_to_see_more(monkeypatch, capsys):
    import cnnkit.cli.models as models_cli

    def broken(args):
        raise IndexError("list index out of range")

    monkeypatch.setattr(models_cli, "models_command", broken)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("cnnkit models: unexpected error: IndexError: list index out of range (run again "
                           "with --debug for the traceback; if your input was valid, please report it as a bug)")


def test_a_closed_pipe_ends_the_output_quietly(tmp_path):
    """`cnnkit models | head -1` used to print a BrokenPipeError traceback."""
    shell = (f"{sys.executable} -m cnnkit models | {sys.executable} -c "
             "\"import sys; sys.stdout.write(sys.stdin.readline())\"")
    done = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, timeout=300,
                          env=subprocess_env())
    assert done.stdout.startswith("model") and done.stderr == "", done.stderr


def test_sigterm_is_handled_like_ctrl_c_and_exits_143(tmp_path):
    script = ("import os, signal, sys\n"
              "from cnnkit.cli import main as m\n"
              "def handler(args):\n"
              "    os.kill(os.getpid(), signal.SIGTERM)\n"
              "    import time; time.sleep(30)\n"
              "m.build_parser_real = m.build_parser\n"
              "def build():\n"
              "    p = m.build_parser_real()\n"
              "    p._subparsers._group_actions[0].choices['models'].set_defaults(handler=handler)\n"
              "    return p\n"
              "m.build_parser = build\n"
              "sys.exit(m.main(['models']))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=subprocess_env())
    assert done.returncode == 143 and done.stderr.strip() == "cnnkit models: terminated", done.stderr
