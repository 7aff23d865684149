"""SIGKILL at random moments of training and inside saves: every file on disk loads or is absent,
and `--resume` still ends with exactly the weights of an uninterrupted run.

Each killed process is a real `cnnkit train` (a child Python). Kills inside saves are placed
by a wrapper that makes the process kill itself at a chosen point of its n-th atomic write:
half-way through the temporary file, after it is complete but before the rename, or right
after the rename. The number of kills is bounded (CI budget).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from cnnkit.cli.main import main
from cnnkit.io.checkpoint import load_checkpoint
from cnnkit.train.run_folder import read_recipe
from tests.conftest import subprocess_env

RUN = ["--limit", "4096", "--batch-size", "64", "--val-split", "0.02", "--seed", "3"]
EPOCHS = "4"

_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from cnnkit import files
    from cnnkit.io import safetensors

    n, where = os.environ["CNNKIT_TEST_KILL"].split(":")
    n, count = int(n), [0]
    real_write, real_replace = files.atomic_write, os.replace

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def atomic_write(path, chunks, size=None):
        count[0] += 1
        if count[0] == n:
            print(f"killing inside save {n} ({where}) of {path}", file=sys.stderr, flush=True)
            if where == "mid":
                chunks = list(chunks)
                def half():
                    yield from chunks[: max(1, len(chunks) // 2)]
                    die()
                return real_write(path, half(), size)
            if where == "before-rename":
                files.os.replace = lambda a, b: die()
            if where == "after-rename":
                def replace_then_die(a, b):
                    real_replace(a, b)
                    die()
                files.os.replace = replace_then_die
        return real_write(path, chunks, size)

    files.atomic_write = safetensors.atomic_write = atomic_write
    from cnnkit.cli.main import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run every killed-and-resumed run must end up equal to."""
    out = tmp_path_factory.mktemp("straight") / "run"
    assert main(["train", "lenet5", "--epochs", EPOCHS, *RUN, "--out", str(out)]) == 0
    return out


def _rows(folder):
    with open(folder / "log.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "images_per_sec"} for r in csv.DictReader(f)]


def check_every_file(out):
    """Whatever the moment of the kill: each file loads or is absent; the log matches the checkpoint."""
    last = None
    for name in ("last.safetensors", "best.safetensors", "interrupted.safetensors"):
        if (out / name).exists():
            ckpt = load_checkpoint(out / name)  # raises on a torn or corrupt file
            last = ckpt if name == "last.safetensors" else last
    if (out / "recipe.json").exists():
        assert read_recipe(out)["epochs"] == int(EPOCHS)
    if (out / "log.csv").exists():
        rows = _rows(out)  # parses: an old whole file or a new whole file, never half
        if last is not None:
            done = last.meta["epoch"] + 1
            assert len(rows) in (done - 1, done, done + 1), (len(rows), done)  # at most one save apart
    return last


def finish_and_compare(out, straight):
    """Resume to the end; weights bit-identical to the straight run, the log the same, no temporaries."""
    done = subprocess.run([sys.executable, "-m", "cnnkit", "train", "--out", str(out), "--resume"],
                          capture_output=True, text=True, timeout=600, env=subprocess_env())
    if "has finished its" not in done.stderr:
        assert done.returncode == 0, done.stderr
    a, b = load_checkpoint(out / "last.safetensors"), load_checkpoint(straight / "last.safetensors")
    for key in b.model_state:
        np.testing.assert_array_equal(a.model_state[key], b.model_state[key], err_msg=key)
    assert _rows(out) == _rows(straight)
    best = load_checkpoint(out / "best.safetensors").meta["epoch"]
    assert best == load_checkpoint(straight / "best.safetensors").meta["epoch"]
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def _start(out, resume: bool, env=None, wrapper=None):
    args = ["--out", str(out), "--resume"] if resume else ["lenet5", "--epochs", EPOCHS, *RUN, "--out", str(out)]
    head = [sys.executable, "-c", wrapper] if wrapper else [sys.executable, "-m", "cnnkit"]
    return subprocess.Popen([*head, "train", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env or subprocess_env())


def _wait_for_training(out, proc) -> None:
    """Until ``proc`` holds the run's lock and has written the recipe: training starts right after."""
    deadline = time.time() + 300
    while not (_holds_lock(out, proc) and (out / "recipe.json").exists()) and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.005)


def _seconds_of_training(out) -> float:
    """How long a run like the killed ones takes from the moment the kills are timed from to its end.

    Measured on a process of its own, as they are: the set-up before that moment (imports, data, the
    memory estimate, and compiling kernels in a fresh install) is not in the window, which must stay
    about one epoch long on a quiet machine as on a loaded one (a window drawn from the whole in-process
    run let one process finish the run before the first kill).
    """
    proc = _start(out, resume=False)
    _wait_for_training(out, proc)
    start = time.perf_counter()
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    return time.perf_counter() - start


def _holds_lock(out, proc) -> bool:
    """Whether ``proc`` has taken the run folder's lock (the lock file records the holder's PID)."""
    try:
        return json.loads((out / ".lock").read_text()).get("pid") == proc.pid
    except (OSError, ValueError):
        return False


def test_sigkill_at_random_moments_of_training_loses_nothing(straight, tmp_path):
    out = tmp_path / "run"
    rng = np.random.default_rng(13)
    epoch_seconds = _seconds_of_training(tmp_path / "timed") / (int(EPOCHS) + 1)
    kills = 0
    for _ in range(8):
        proc = _start(out, resume=(out / "recipe.json").exists())
        # then a random moment within about one epoch, so that each try advances the run by at most an
        # epoch or so
        _wait_for_training(out, proc)
        time.sleep(float(rng.uniform(0.0, 1.0)) * epoch_seconds)
        if proc.poll() is not None:
            break  # it finished first: the run is complete
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        last = check_every_file(out)
        if not (out / ".lock").exists():  # SIGKILL leaves the lock file, unless the run had just ended
            assert last is not None and last.meta["epoch"] + 1 == int(EPOCHS)
            break
    assert kills >= 3, f"only {kills} kills landed before the run finished"
    finish_and_compare(out, straight)


# save 1 is recipe.json; each epoch then saves best (if better), last and log.csv
def test_sigkill_inside_saves_leaves_old_or_new_files_and_resume_continues(straight, tmp_path):
    out = tmp_path / "run"
    # best.safetensors half written; last.safetensors complete but not renamed; log.csv renamed, then death
    for step in ["2:mid", "3:before-rename", "4:after-rename"]:
        env = {**subprocess_env(), "CNNKIT_TEST_KILL": step}
        proc = _start(out, resume=(out / "recipe.json").exists(), env=env, wrapper=_KILLER)
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == -signal.SIGKILL, stderr
        assert "killing inside save" in stderr
        check_every_file(out)
    finish_and_compare(out, straight)


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_trains(tmp_path, capsys):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "cnnkit", "train", "lenet5", "--epochs", "50", *RUN, "--out",
                              str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env())
    try:
        deadline = time.time() + 300
        while not (out / "recipe.json").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert first.poll() is None, "the first run ended early"
        for argv in (["--out", str(out), "--resume"], ["lenet5", "--epochs", "1", *RUN, "--out", str(out), "--overwrite"]):
            assert main(["train", *argv]) == 1
            err = capsys.readouterr().err
            assert f"is in use: process {first.pid} (cnnkit train lenet5 --epochs 50" in err, err
            assert "Wait for it to finish, or choose another --out" in err and len(err.strip().splitlines()) == 1
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        first.kill()
        first.wait()
    assert (out / ".lock").exists()
    assert main(["train", "--out", str(out), "--resume", "--lr", "0.1"]) == 2  # refused, after taking the lock
    err = capsys.readouterr().err
    assert f"note: took over a stale lock in {out}: process {first.pid} (cnnkit train lenet5 --epochs 50" in err
    assert "was killed or crashed" in err and "--lr 0.1 (the run has 0.05)" in err
    assert not (out / ".lock").exists()


def test_a_disk_that_fills_up_during_training_keeps_the_last_epoch_and_says_how_to_go_on(straight, tmp_path,
                                                                                         capsys, monkeypatch):
    from cnnkit.train import callbacks
    from tests.faults.test_disk import tmpfs

    with tmpfs(tmp_path / "disk", "4m") as disk:
        out = disk / "run"
        real_save, saves = callbacks.save, [0]

        def save_then_fill(model, path, **kwargs):
            saves[0] += 1
            if saves[0] == 3:  # epoch 2's first save: fill the disk just before it
                free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
                with open(disk / "filler", "wb") as f:
                    f.write(b"\0" * max(free - 64 * 1024, 0))
            return real_save(model, path, **kwargs)

        monkeypatch.setattr(callbacks, "save", save_then_fill)
        assert main(["train", "lenet5", "--epochs", EPOCHS, *RUN, "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert "safetensors: cannot write it: No space left on device" in err and "free on that disk" in err
        assert f"the last finished epoch is safe in {out / 'last.safetensors'}" in err
        assert f"`cnnkit train --out {out} --resume` continues the run once that is fixed" in err
        assert load_checkpoint(out / "last.safetensors").meta["epoch"] == 0
        monkeypatch.setattr(callbacks, "save", real_save)
        (disk / "filler").unlink()
        assert main(["train", "--out", str(out), "--resume"]) == 0
        a, b = load_checkpoint(out / "last.safetensors"), load_checkpoint(straight / "last.safetensors")
        for key in b.model_state:
            np.testing.assert_array_equal(a.model_state[key], b.model_state[key], err_msg=key)


@pytest.mark.parametrize("case, message", [
    ("small", "not enough free space in"),
    ("read-only", "Read-only file system"),
])
def test_a_run_folder_without_room_or_write_access_is_refused_before_the_first_epoch(tmp_path, capsys, case, message):
    from tests.faults.test_disk import _remount_read_only, tmpfs

    with tmpfs(tmp_path / "disk", "1m") as disk:
        if case == "read-only":
            _remount_read_only(disk)
        started = time.time()
        assert main(["train", "lenet5", "--epochs", "1", *RUN, "--out", str(disk / "run")]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not (disk / "run" / "log.csv").exists()
        assert time.time() - started < 120
