"""cli/train.py: cnnkit train: checkpoints, the log, the accuracy line, Ctrl-C and --resume."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from cnnkit.cli.main import main
from cnnkit.io.checkpoint import load_checkpoint
from tests.conftest import interrupt_training, subprocess_env


def test_train_writes_checkpoints_and_prints_the_test_accuracy(trained, capsys):
    assert (trained / "last.safetensors").exists() and (trained / "best.safetensors").exists()
    assert (trained / "log.csv").read_text().startswith("epoch,")
    ckpt = load_checkpoint(trained / "last.safetensors")
    assert ckpt.model_name == "lenet5" and ckpt.meta["extra"]["dataset"] == "mnist"
    assert ckpt.meta["epoch"] == 0


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes_the_run(tmp_path):
    out = tmp_path / "run"
    # 8,192 images a epoch: about half a second of training on a quiet machine, so 0.3 s after
    # epoch 1's checkpoint is inside epoch 2 (with 1,024 the whole run ended before the signal)
    cmd = [sys.executable, "-m", "cnnkit", "train", "lenet5", "--epochs", "3", "--limit", "8192",
           "--batch-size", "32", "--seed", "5", "--out", str(out)]
    env = subprocess_env()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 240
    while not (out / "last.safetensors").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert (out / "last.safetensors").exists(), proc.communicate()[1]
    time.sleep(0.3)  # inside epoch 2
    pending = interrupt_training(proc, signal.SIGINT, out, 3)
    stdout, stderr = proc.communicate(timeout=120)
    if proc.returncode == 0:
        assert not pending, f"Ctrl-C arrived with epochs left and the run went on to its end: lost\n{stderr}"
        pytest.skip("training finished before the interrupt arrived")
    assert proc.returncode == 130, stderr
    assert "interrupted: weights saved to" in stderr and "--resume" in stderr
    assert (out / "interrupted.safetensors").exists()
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=240, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and "test accuracy" in resumed.stdout

    straight = tmp_path / "straight"
    cmd_straight = [c if c != str(out) else str(straight) for c in cmd]
    assert subprocess.run(cmd_straight, capture_output=True, text=True, timeout=240, env=env).returncode == 0
    a = load_checkpoint(out / "last.safetensors").model_state
    b = load_checkpoint(straight / "last.safetensors").model_state
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# A real SIGINT, sent by the process to itself as the final report starts its second evaluation
# (the last model's test, after its validation): deterministic, unlike a timed signal.
_INTERRUPT_THE_FINAL_TEST = textwrap.dedent(
    """
    import os, signal, sys
    signal.signal(signal.SIGINT, signal.default_int_handler)  # ignored in a shell's background job
    from cnnkit.cli import parallel

    real, calls = parallel.Ranks.evaluate, [0]

    def evaluate(self, model, loader, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, model, loader, **kwargs)

    parallel.Ranks.evaluate = evaluate
    from cnnkit.cli.main import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_ctrl_c_in_the_final_evaluation_says_what_is_saved_and_that_the_evaluation_did_not_finish(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-c", _INTERRUPT_THE_FINAL_TEST, "train", "lenet5", "--epochs", "1", "--limit", "256",
           "--batch-size", "64", "--val-split", "0.02", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=subprocess_env())
    assert done.returncode == 130, done.stderr
    last, best = out / "last.safetensors", out / "best.safetensors"
    assert done.stderr.strip().splitlines()[-1] == (
        f"interrupted during the final evaluation: the training finished and is saved (last epoch: {last}; "
        f"best epoch on validation: {best}; log: {out / 'log.csv'}), but the final evaluation did not finish "
        f"(its results are missing or incomplete); `cnnkit evaluate {best}` tests the best model"
    )
    assert "cnnkit train: interrupted" not in done.stderr and "test accuracy" not in done.stdout
    assert load_checkpoint(last).meta["epoch"] == 0 and load_checkpoint(best)
    assert not (out / "interrupted.safetensors").exists() and not (out / ".lock").exists()


# A real SIGINT, sent by the process to itself once recipe.json is written (the training has not
# started): deterministic, unlike a timed signal.
_INTERRUPT_AFTER_THE_RECIPE = textwrap.dedent(
    """
    import os, signal, sys
    signal.signal(signal.SIGINT, signal.default_int_handler)  # ignored in a shell's background job
    from cnnkit.cli import train

    real = train.write_recipe

    def write_recipe(*args, **kwargs):
        real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)

    train.write_recipe = write_recipe
    from cnnkit.cli.main import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_ctrl_c_once_the_recipe_is_written_says_no_epoch_was_trained_and_how_to_start(tmp_path):
    out = tmp_path / "run"
    argv = ["train", "lenet5", "--epochs", "1", "--limit", "128", "--batch-size", "64", "--val-split", "0",
            "--out", str(out)]
    env = subprocess_env()
    done = subprocess.run([sys.executable, "-c", _INTERRUPT_AFTER_THE_RECIPE, *argv], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"interrupted before the training started: no epoch was trained; the run's recipe is saved in "
        f"{out / 'recipe.json'}; `cnnkit train --out {out} --resume` starts the run"
    )
    assert "cnnkit train: interrupted" not in done.stderr and not (out / "last.safetensors").exists()
    # what it says works: --resume starts the run from its recipe and finishes it
    resumed = subprocess.run([sys.executable, "-m", "cnnkit", "train", "--out", str(out), "--resume"],
                             capture_output=True, text=True, timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "no epoch had finished, so it starts from the first" in resumed.stdout
    assert load_checkpoint(out / "last.safetensors").meta["epoch"] == 0
    # a longer --resume interrupted the same way: the finished epoch is kept, and said so
    longer = subprocess.run([sys.executable, "-c", _INTERRUPT_AFTER_THE_RECIPE, "train", "--out", str(out),
                             "--resume", "--epochs", "2"], capture_output=True, text=True, timeout=300, env=env)
    assert longer.returncode == 130, longer.stderr
    assert longer.stderr.strip().splitlines()[-1] == (
        f"interrupted before the training started again: nothing was lost, the last finished epoch (epoch 1) is "
        f"still in {out / 'last.safetensors'}; `cnnkit train --out {out} --resume` continues the run"
    )
    assert load_checkpoint(out / "last.safetensors").meta["epoch"] == 0


def test_a_batch_larger_than_the_training_set_is_said(tmp_path, capsys):
    """--batch-size beyond the data is one full batch per epoch, as PyTorch's loader: said, not silent."""
    argv = ["train", "lenet5", "--epochs", "1", "--limit", "40", "--batch-size", "100000000", "--val-split", "0",
            "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "--batch-size 100,000,000 is more than the 40 training images: each epoch is one step on all of them" in out
