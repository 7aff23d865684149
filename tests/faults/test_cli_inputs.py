"""The command line as a careless or hostile user types it: one line, the fix, the right exit status.

Exit statuses (README "When things go wrong"): 1 an error, 2 a usage error, 130 interrupted.
Every case checks that stderr is exactly one line and holds no traceback.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from cnnkit.cli.main import build_parser, main
from tests.conftest import subprocess_env

CKPT = "{ckpt}"  # replaced by the lenet_checkpoint fixture's path

CASES = [
    # numeric options: their name, what was expected, what was given
    (["explain", "graph", "--x", "nan"], 2, "argument --x: expected a finite number, got 'nan'"),
    (["explain", "graph", "--x", "1e308"], 2, "argument --x: expected a number between -1e6 and 1e6"),
    (["explain", "graph", "--y", "0"], 2, "--y 0: z divides by y (x / y), so |y| must be at least 1e-6"),
    (["explain", "graph", "--y", "inf"], 2, "argument --y: expected a finite number, got 'inf'"),
    (["explain", "conv", "--input", "0x5", "--filters", "2", "--kernel", "3"], 2,
     "argument --input: expected HxWxC (e.g. 32x32x1) with positive integers, got '0x5'"),
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
    (["summary", "lenet5", "--input-shape", "1,0,28"], 2,
     "argument --input-shape: expected C,H,W with positive integers, got '1,0,28'"),
    (["summary", "lenet5", "--input-shape", "1,28"], 2, "argument --input-shape: expected C,H,W with positive integers"),
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


# ---------------------------------------------------------------- every numeric option, checked when parsed

POSITIVE_INT, NON_NEGATIVE_INT = "a positive integer", "a non-negative integer"
POSITIVE, SHAPE = "a finite positive number", "C,H,W with positive integers"

# (command, option, a value out of its range, what the message says is expected)
NUMERIC_OPTIONS = [
    ("train", "--val-split", "1", "a number in [0, 1)"),
    ("train", "--threshold", "1", "a number in (0, 1)"),
    ("train", "--image-size", "0", POSITIVE_INT),
    ("train", "--in-channels", "2", "1 or 3"),
    ("train", "--epochs", "0", POSITIVE_INT),
    ("train", "--batch-size", "0", POSITIVE_INT),
    ("train", "--lr", "0", POSITIVE),
    ("train", "--seed", "-1", NON_NEGATIVE_INT),
    ("train", "--crop-scale", "0", "a number in (0, 1]"),
    ("train", "--color-jitter", "101", "a number in [0, 100]"),
    ("train", "--workers", "257", "an integer in [0, 256]"),
    ("train", "--freeze", "-1", "backbone, none or a number of layers"),
    ("train", "--backbone-lr-scale", "0", POSITIVE),
    ("train", "--limit", "0", POSITIVE_INT),
    ("train", "--nproc", "0", POSITIVE_INT),
    ("train", "--hosts", "node1:0", "host or host:ranks (a positive integer) for each machine"),
    ("train", "--warmup-epochs", "0", POSITIVE),
    ("evaluate", "--batch-size", "0", POSITIVE_INT),
    ("evaluate", "--workers", "-1", "an integer in [0, 256]"),
    ("predict", "--top-k", "0", POSITIVE_INT),
    ("predict", "--batch-size", "0", POSITIVE_INT),
    ("summary", "--input-shape", "1,0,28", SHAPE),
    ("visualize filters", "--input-shape", "1,28", SHAPE),
    ("visualize filters", "--max-filters", "0", POSITIVE_INT),
    ("visualize feature-maps", "--input-shape", "0,28,28", SHAPE),
    ("visualize feature-maps", "--max-channels", "0", POSITIVE_INT),
    ("visualize graph", "--input-shape", "1,28,28,1", SHAPE),
    ("visualize saliency", "--input-shape", "1,-28,28", SHAPE),
    ("visualize saliency", "--class", "-1", NON_NEGATIVE_INT),
    ("kernels", "--stride", "0", POSITIVE_INT),
    ("kernels", "--padding", "-1", NON_NEGATIVE_INT),
    ("kernels", "--max-side", "0", POSITIVE_INT),
    ("explain conv", "--input", "0x5", "HxWxC (e.g. 32x32x1) with positive integers"),
    ("explain conv", "--filters", "0", POSITIVE_INT),
    ("explain conv", "--kernel", "3x0", "K or KHxKW with positive integers"),
    ("explain conv", "--stride", "0", POSITIVE_INT),
    ("explain conv", "--padding", "-1", NON_NEGATIVE_INT),
    ("explain conv", "--dilation", "0", POSITIVE_INT),
    ("explain conv", "--groups", "0", POSITIVE_INT),
    ("explain graph", "--x", "1e7", "a number between -1e6 and 1e6"),
    ("explain graph", "--y", "-1e7", "a number between -1e6 and 1e6"),
    ("fcn", "--mnist-digits", "0", POSITIVE_INT),
    ("fcn", "--indices", "1,-2", NON_NEGATIVE_INT),
    ("fcn", "--seed", "-1", NON_NEGATIVE_INT),
    ("fcn", "--height", "0", POSITIVE_INT),
    ("prune", "--amount", "1", "a number in [0, 1)"),
    ("prune", "--finetune-epochs", "-1", NON_NEGATIVE_INT),
    ("prune", "--lr", "0", POSITIVE),
    ("prune", "--batch-size", "0", POSITIVE_INT),
    ("prune", "--seed", "-1", NON_NEGATIVE_INT),
    ("prune", "--limit", "0", POSITIVE_INT),
    ("prune", "--eval-limit", "0", POSITIVE_INT),
    ("prune", "--sweep", "0.5,1", "a number in [0, 1)"),
    ("import", "--num-classes", "0", POSITIVE_INT),
    ("export", "--opset", "5", "an integer in [11, "),
    ("export", "--input-shape", "1,0,28", SHAPE),
    ("explore", "--port", "65536", "an integer in [0, 65535]"),
    ("explore", "--input-shape", "1,0,28", SHAPE),
    ("explore", "--num-classes", "0", POSITIVE_INT),
]

# Options whose values are names, paths or addresses: nothing numeric to check.
TEXT_OPTIONS = {"--classes", "--csv", "--data", "--data-dir", "--dataset", "--export", "--host", "--hostfile",
                "--layer", "--layers", "--model", "--out", "--output", "--plot", "--positive-class", "--skip",
                "--weights"}


def _options(parser, command=()):
    """(command, option, action) of every option that takes a value, in every (sub-)command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*command, name))
        elif action.option_strings and action.nargs != 0 and action.dest != "help":
            yield " ".join(command), action.option_strings[-1], action


def test_every_option_that_takes_a_number_is_in_the_table_and_has_a_checking_type():
    """A new numeric option without a range check (type=float: NaN, inf pass) fails here until it has one."""
    typed, untyped = set(), set()
    for command, option, action in _options(build_parser()):
        assert action.type not in (int, float), f"cnnkit {command} {option}: type={action.type.__name__} lets " \
                                                "NaN, inf and any size through; use a type of cli/main.py"
        if action.type is not None:
            typed.add((command, option))
        elif action.choices is None:
            untyped.add(option)
    assert typed == {(c, o) for c, o, _, _ in NUMERIC_OPTIONS}
    assert untyped <= TEXT_OPTIONS, untyped - TEXT_OPTIONS


@pytest.mark.parametrize("command, option, bad, expected", NUMERIC_OPTIONS,
                         ids=[f"{c} {o}" for c, o, _, _ in NUMERIC_OPTIONS])
def test_a_numeric_option_refuses_nan_inf_and_out_of_range_values_when_parsed(
        command, option, bad, expected, tmp_path, capsys, monkeypatch):
    """One line naming the option, what it expects and what it got; exit status 2; nothing written."""
    monkeypatch.chdir(tmp_path)
    form = "node1:{}" if option == "--hosts" else "{}"  # "nan" is a fine host name; its rank count is not
    for value in (bad, *(form.format(v) for v in ("nan", "inf", "-inf"))):
        assert main([*command.split(), f"{option}={value}"]) == 2, value
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert f"argument {option}: expected " in err and f"'{value}'" in err, err  # the value, as typed
        if value == bad:
            assert f"expected {expected}" in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option, value", [("--color-jitter", "nan"), ("--color-jitter", "inf"),
                                           ("--threshold", "nan"), ("--crop-scale", "inf"), ("--lr", "nan"),
                                           ("--warmup-epochs", "inf"), ("--val-split", "nan")])
def test_a_bad_train_option_leaves_the_run_folder_untouched(option, value, tmp_path, capsys):
    """--color-jitter nan used to end in an OverflowError after writing a recipe.json holding NaN."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.json").write_text('{"format": "cnnkit-run", "version": 1, "model": "lenet5"}\n')
    (run / "log.csv").write_text("epoch,loss\n0,1.5\n")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()}
    for argv in (["--out", str(run), "--overwrite"], ["--out", str(tmp_path / "new")]):
        assert main(["train", "lenet5", *argv, option, value]) == 2
        assert f"argument {option}: expected" in capsys.readouterr().err
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()} == before
    assert not (tmp_path / "new").exists()
