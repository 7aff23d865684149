"""`cnnkit train --resume` means what it says: the stored recipe, exactly, or a clear refusal.

Before: --resume with fewer epochs printed "done" having trained nothing; --resume --lr X
ignored X but recorded it; more epochs ended in "OneCycleLR was stepped 33 times"; two
runs into one --out both succeeded and overwrote each other; the Ctrl-C hint failed when
run as printed.
"""

from __future__ import annotations

import csv
import json
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cnnkit.cli.main import main
from cnnkit.io.checkpoint import _write as write_checkpoint
from cnnkit.io.checkpoint import load_checkpoint
from cnnkit.train.run_folder import read_recipe
from tests.conftest import interrupt_training, subprocess_env

# A small, quick run: 256 training images (4 batches), 1,200 validation images.
RUN = ["--limit", "256", "--batch-size", "64", "--val-split", "0.02", "--seed", "3"]


def train(*argv) -> int:
    return main(["train", *argv])


def weights(path):
    return load_checkpoint(path).model_state


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        np.testing.assert_array_equal(wa[key], wb[key], err_msg=key)


def log_rows(folder):
    with open(folder / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """A finished two-epoch run, and a straight three-epoch run of the same recipe (the references)."""
    base = tmp_path_factory.mktemp("runs")
    assert train("lenet5", "--epochs", "2", *RUN, "--out", str(base / "two")) == 0
    assert train("lenet5", "--epochs", "3", *RUN, "--out", str(base / "three")) == 0
    return base


def copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_the_recipe_is_stored_before_the_first_epoch_and_in_every_checkpoint(two_epochs):
    recipe = read_recipe(two_epochs / "two")
    assert recipe["model"] == "lenet5" and recipe["epochs"] == 2 and recipe["lr"] == 0.05
    assert recipe["batch_size"] == 64 and recipe["seed"] == 3 and recipe["limit"] == 256
    assert recipe["dataset"] == "mnist" and recipe["train_images"] == 256 and recipe["val_images"] == 1200
    stored = load_checkpoint(two_epochs / "two" / "last.safetensors").extra["recipe"]
    assert {k: stored[k] for k in recipe} == recipe


def test_resuming_a_finished_run_trains_nothing_and_says_so(two_epochs, tmp_path, capsys):
    run = copy_run(two_epochs / "two", tmp_path / "run")
    assert train("--out", str(run), "--resume") == 2
    err = one_line(capsys)
    assert "has finished its 2 epochs: nothing to resume. To train it longer, add --epochs N with N > 2" in err
    assert train("lenet5", "--out", str(run), "--resume", "--epochs", "1") == 2
    err = one_line(capsys)
    assert "--epochs 1: the run in" in err and "has already trained 2 epochs; give more than 2" in err
    assert len(log_rows(run)) == 2  # nothing happened


@pytest.mark.parametrize("extra, named", [
    (["--lr", "0.1"], "--lr 0.1 (the run has 0.05)"),
    (["--batch-size", "32"], "--batch-size 32 (the run has 64)"),
    (["--seed", "4"], "--seed 4 (the run has 3)"),
    (["--augment"], "--augment on (the run has off)"),
    (["--optimizer", "adam"], "--optimizer adam (the run has sgd)"),
    (["--limit", "512"], "--limit 512 (the run has 256)"),
    (["--dataset", "kmnist"], "--dataset kmnist (the run has mnist)"),
    (["--val-split", "0.1"], "--val-split 0.1 (the run has 0.02)"),
    (["--task", "binary"], "--task binary (the run has auto)"),
])
def test_resume_refuses_options_that_contradict_the_run(two_epochs, tmp_path, capsys, extra, named):
    run = copy_run(two_epochs / "two", tmp_path / "run")
    assert train("--out", str(run), "--resume", "--epochs", "3", *extra) == 2
    err = one_line(capsys)
    assert named in err and "Drop that option to continue it, or start a new run with another --out" in err
    assert load_checkpoint(run / "last.safetensors").meta["epoch"] == 1  # untouched


def test_resume_refuses_another_model(two_epochs, tmp_path, capsys):
    run = copy_run(two_epochs / "two", tmp_path / "run")
    assert train("resnet20", "--out", str(run), "--resume", "--epochs", "3") == 2
    assert "MODEL resnet20 (the run has lenet5)" in one_line(capsys)


def test_extending_a_finished_run_replans_the_schedule_and_keeps_one_log(two_epochs, tmp_path, capsys):
    run = copy_run(two_epochs / "two", tmp_path / "run")
    assert train("lenet5", "--out", str(run), "--resume", "--epochs", "3", "--lr", "0.05", *RUN) == 0  # same values: fine
    out = capsys.readouterr().out
    assert "extended from 2 to 3 epochs: the one-cycle schedule is re-planned over 3 epochs from step 8" in out
    assert [r["epoch"] for r in log_rows(run)] == ["1", "2", "3"]
    recipe = read_recipe(run)
    assert recipe["epochs"] == 3 and recipe["extended"] == [{"after_epoch": 2, "epochs": [2, 3]}]
    history = load_checkpoint(run / "last.safetensors").meta["history"]
    assert history["epoch"] == [0, 1, 2]
    best = load_checkpoint(run / "best.safetensors").meta["epoch"]
    accuracies = history["history"]["val_accuracy"]
    assert accuracies[best] == max(accuracies)


def test_a_new_run_into_a_folder_holding_one_is_refused_unless_overwrite(two_epochs, tmp_path, capsys):
    run = copy_run(two_epochs / "two", tmp_path / "run")
    before = (run / "last.safetensors").read_bytes()
    assert train("lenet5", "--epochs", "1", *RUN, "--out", str(run)) == 2
    err = one_line(capsys)
    assert "already holds a run (recipe.json, last.safetensors, best.safetensors, log.csv)" in err
    assert f"`cnnkit train --out {run} --resume`" in err and "--overwrite" in err
    assert (run / "last.safetensors").read_bytes() == before
    assert train("lenet5", "--epochs", "1", *RUN, "--out", str(run), "--overwrite") == 0
    assert read_recipe(run)["epochs"] == 1 and [r["epoch"] for r in log_rows(run)] == ["1"]


def test_resume_rebuilds_a_lost_or_garbled_log_from_the_checkpoint(two_epochs, tmp_path):
    run = copy_run(two_epochs / "two", tmp_path / "run")
    (run / "log.csv").write_bytes(b"\xff\x00 not a log")
    assert train("--out", str(run), "--resume", "--epochs", "3") == 0
    assert [r["epoch"] for r in log_rows(run)] == ["1", "2", "3"]


def test_resume_without_recipe_json_uses_the_checkpoint_s_recipe(two_epochs, tmp_path):
    run = copy_run(two_epochs / "two", tmp_path / "run")
    (run / "recipe.json").unlink()
    assert train("--out", str(run), "--resume", "--epochs", "3") == 0
    assert read_recipe(run)["limit"] == 256


def test_resume_refuses_when_the_data_changed(two_epochs, tmp_path, capsys):
    run = copy_run(two_epochs / "two", tmp_path / "run")
    recipe = json.loads((run / "recipe.json").read_text())
    recipe["train_images"] = 300
    (run / "recipe.json").write_text(json.dumps(recipe))
    assert train("--out", str(run), "--resume", "--epochs", "3") == 2
    err = one_line(capsys)
    assert "the data of the run in" in err and "train images: 300 then, 256 now" in err


@pytest.mark.parametrize("key, value", [("epochs", "three"), ("lr", [0.05]), ("batch_size", 0.5), ("augment", "yes"),
                                        ("model", 5)])
def test_an_edited_or_damaged_recipe_is_refused_by_name(two_epochs, tmp_path, capsys, key, value):
    run = copy_run(two_epochs / "two", tmp_path / "run")
    recipe = json.loads((run / "recipe.json").read_text())
    recipe[key] = value
    (run / "recipe.json").write_text(json.dumps(recipe))
    assert train("--out", str(run), "--resume", "--epochs", "3") == 2
    assert f"recipe.json: {key} is {value!r}, which no run stores" in one_line(capsys)


def folder_bytes(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# A value the parser refuses for the option is refused in recipe.json by the same type (raw JSON text).
@pytest.mark.parametrize("key, raw, message", [
    ("lr", "-1", "lr is -1, expected a finite positive number (as --lr takes)"),
    ("batch_size", "0", "batch_size is 0, expected a positive integer (as --batch-size takes)"),
    ("val_split", "1.5", "val_split is 1.5, expected a number in [0, 1) (as --val-split takes)"),
    ("color_jitter", "1e309", "color_jitter is inf (a number too large for a float), expected a number in [0, 100] "
                              "(as --color-jitter takes)"),
    ("threshold", "0", "threshold is 0, expected a number in (0, 1) (as --threshold takes)"),
    ("in_channels", "2", "in_channels is 2, expected 1 or 3 (as --in-channels takes)"),
    ("freeze", "-1", "freeze is -1, expected backbone, none or a number of layers (as --freeze takes)"),
    ("optimizer", '"rmsprop"', "optimizer is 'rmsprop', expected one of sgd, adam, adamw (as --optimizer takes)"),
])
def test_a_recipe_value_out_of_the_option_s_range_is_refused_and_nothing_changes(two_epochs, tmp_path, capsys,
                                                                                 key, raw, message):
    run = copy_run(two_epochs / "two", tmp_path / "run")
    recipe = json.loads((run / "recipe.json").read_text())
    recipe[key] = "RAW"
    (run / "recipe.json").write_text(json.dumps(recipe).replace('"RAW"', raw))
    before = folder_bytes(run)
    assert train("--out", str(run), "--resume", "--epochs", "3") == 2
    err = one_line(capsys)
    assert f"{run / 'recipe.json'}: {message}; the file was edited or damaged" in err, err
    assert folder_bytes(run) == before


def test_a_checkpoint_s_recipe_out_of_range_is_refused_naming_the_checkpoint(two_epochs, tmp_path, capsys):
    """A run from before recipe.json: its checkpoint's copy of the recipe is checked the same way."""
    run = copy_run(two_epochs / "two", tmp_path / "run")
    (run / "recipe.json").unlink()
    ckpt = load_checkpoint(run / "last.safetensors")
    ckpt.meta["extra"]["recipe"]["lr"] = -0.5
    tensors = {**{f"model/{k}": v for k, v in ckpt.model_state.items()},
               **{f"optimizer/{k}": v for k, v in ckpt.optimizer_arrays.items()}}
    write_checkpoint(run / "last.safetensors", tensors, ckpt.meta)  # a valid digest: only the value is wrong
    before = folder_bytes(run)
    assert train("--out", str(run), "--resume", "--epochs", "3") == 2
    assert (f"{run / 'last.safetensors'}: lr is -0.5, expected a finite positive number (as --lr takes)"
            in one_line(capsys))
    assert folder_bytes(run) == before


def test_resume_of_a_run_stopped_before_its_first_epoch_starts_it_from_the_beginning(two_epochs, tmp_path):
    run = copy_run(two_epochs / "two", tmp_path / "run")
    for name in ("last.safetensors", "best.safetensors", "log.csv"):
        (run / name).unlink()
    assert train("--out", str(run), "--resume") == 0
    assert_same_weights(run / "last.safetensors", two_epochs / "two" / "last.safetensors")


def test_a_corrupt_last_checkpoint_is_named_when_resuming(two_epochs, tmp_path, capsys):
    run = copy_run(two_epochs / "two", tmp_path / "run")
    raw = bytearray((run / "last.safetensors").read_bytes())
    raw[-10] ^= 1
    (run / "last.safetensors").write_bytes(bytes(raw))
    assert train("--out", str(run), "--resume", "--epochs", "3") == 1
    assert "--resume: " in (err := one_line(capsys)) and "last.safetensors: corrupt checkpoint" in err


@pytest.mark.parametrize("argv, message", [
    (["--resume"], "--resume needs --out RUN, the run folder to continue"),
    ([], "give a MODEL (see `cnnkit models`), or --resume --out RUN to continue a run"),
    (["--out", "{tmp}/x"], "give a MODEL (see `cnnkit models`), or --resume --out RUN to continue a run"),
    (["--out", "{tmp}/none", "--resume"], "--resume: there is no run folder"),
    (["lenet5", "--out", "{tmp}/afile"], "is a file, not a folder; choose another --out"),
    (["--out", "{tmp}/x", "--resume", "--overwrite"], "--resume continues the run in --out and --overwrite replaces it"),
    (["lenet5", "--seed", "-1"], "argument --seed: expected a non-negative integer, got '-1'"),
    (["lenet5", "--lr", "inf"], "argument --lr: expected a finite positive number, got 'inf'"),
    (["lenet5", "--lr", "nan"], "argument --lr: expected a finite positive number, got 'nan'"),
    (["lenet5", "--epochs", "0"], "argument --epochs: expected a positive integer, got '0'"),
    (["lenet5", "--batch-size", "-5"], "argument --batch-size: expected a positive integer, got '-5'"),
    (["lenet5", "--limit", "0"], "argument --limit: expected a positive integer, got '0'"),
    (["lenet5", "--val-split", "1.5"], "argument --val-split"),
])
def test_bad_train_options_are_refused_before_any_work(tmp_path, capsys, argv, message):
    (tmp_path / "afile").write_text("x")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert train(*argv) == 2
    assert message in one_line(capsys)


def test_a_batch_that_cannot_fit_in_memory_is_refused_with_the_estimate(tmp_path, capsys):
    assert train("resnet20", "--batch-size", "55000", "--out", str(tmp_path / "run")) == 2
    err = one_line(capsys)
    assert "training resnet20 on 55,000 input(s) of 1x28x28 needs about" in err
    assert "GiB is available: use --batch-size" in err and "or less" in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_ctrl_c_then_the_printed_command_continues_to_the_same_weights(two_epochs, tmp_path):
    """The hint is run exactly as printed (only `cnnkit` becomes `python -m cnnkit`)."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cnnkit", "train", "lenet5", "--epochs", "3", *RUN, "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    deadline = time.time() + 300
    while not (out / "last.safetensors").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    pending = interrupt_training(proc, signal.SIGINT, out, 3)
    _, stderr = proc.communicate(timeout=300)
    if proc.returncode == 0:
        assert not pending, f"Ctrl-C arrived with epochs left and the run went on to its end: lost\n{stderr}"
        pytest.skip("training finished before the interrupt arrived")
    assert proc.returncode == 130, stderr
    hint = stderr.split("`")[1]
    assert hint == f"cnnkit train --out {out} --resume"
    words = shlex.split(hint)
    resumed = subprocess.run([sys.executable, "-m", *words], capture_output=True, text=True, timeout=300,
                             env=subprocess_env())
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(out / "last.safetensors", two_epochs / "three" / "last.safetensors")
    straight = [{k: v for k, v in r.items() if k != "images_per_sec"} for r in log_rows(two_epochs / "three")]
    assert [{k: v for k, v in r.items() if k != "images_per_sec"} for r in log_rows(out)] == straight


def test_sigterm_saves_like_ctrl_c_and_exits_143(tmp_path):
    """A scheduler's SIGTERM (a cluster job's time limit): the same save and hint as Ctrl-C."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cnnkit", "train", "lenet5", "--epochs", "50", *RUN, "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    deadline = time.time() + 300
    while not (out / "last.safetensors").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr
    assert f"interrupted: weights saved to {out / 'interrupted.safetensors'}" in stderr
    assert f"`cnnkit train --out {out} --resume` continues the run" in stderr
    assert load_checkpoint(out / "interrupted.safetensors") and not (out / ".lock").exists()
