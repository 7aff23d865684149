"""Disks that fill up or are read-only, umasks, stray temporaries, run locks: nothing is lost, all is said.

The full-disk and read-only tests mount a small tmpfs, which needs root (CI runs as root);
elsewhere they are skipped, saying so.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from contextlib import contextmanager

import numpy as np
import pytest

from cnnkit import nn
from cnnkit.errors import RunFolderError
from cnnkit.files import atomic_write_bytes, clean_stale_temporaries
from cnnkit.io.checkpoint import load_checkpoint, save
from cnnkit.train.run_folder import RunLock, preflight, read_recipe, write_recipe
from tests.conftest import subprocess_env


@contextmanager
def tmpfs(path, size: str):
    """Mount a tmpfs of ``size`` at ``path`` (root only); skip the test, saying why, where that fails."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (a disk that fills up) needs root; CI runs as root")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mount is not permitted here ({mounted.stderr.strip() or mounted.returncode}); "
                    "the full-disk tests need a tmpfs")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _remount_read_only(path):
    done = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _model(n=4000):
    model = nn.Sequential(nn.Linear(n, 64, rng=np.random.default_rng(0)))  # ~1 MiB of weights
    return model


def test_a_full_disk_keeps_the_previous_checkpoint_and_names_the_file(tmp_path):
    with tmpfs(tmp_path / "disk", "1600k") as disk:
        first = save(_model(), disk / "last.safetensors", epoch=1)
        before = first.read_bytes()
        with pytest.raises(OSError) as info:  # the new one and the old one do not both fit
            save(_model(), disk / "last.safetensors", epoch=2)
        message = str(info.value)
        assert "last.safetensors" in message and "No space left on device" in message
        assert "needed" in message and "free on that disk" in message and "the previous last.safetensors is unchanged" in message
        assert (disk / "last.safetensors").read_bytes() == before
        assert load_checkpoint(disk / "last.safetensors").meta["epoch"] == 1
        assert sorted(p.name for p in disk.iterdir()) == ["last.safetensors"]  # no temporary left


def test_a_read_only_folder_refuses_the_write_naming_the_file(tmp_path):
    with tmpfs(tmp_path / "ro", "1m") as disk:
        save(_model(10), disk / "c.safetensors", epoch=1)
        _remount_read_only(disk)
        with pytest.raises(OSError, match=r"Read-only file system") as info:
            save(_model(10), disk / "c.safetensors", epoch=2)
        assert info.value.filename == str(disk / "c.safetensors")
        assert load_checkpoint(disk / "c.safetensors").meta["epoch"] == 1
        with pytest.raises(RunFolderError, match=r"cannot write into the run folder .*: Read-only file system"):
            preflight(disk, 1000)


def test_preflight_refuses_a_folder_without_room_for_the_checkpoints(tmp_path):
    with tmpfs(tmp_path / "small", "1m") as disk:
        with pytest.raises(RunFolderError, match=r"not enough free space in .*small: 1.0 MiB free, the checkpoints "
                                                 r"need about 6.0 MiB \(3 x 2.0 MiB\)"):
            preflight(disk, 2 << 20)
        preflight(disk, 100 << 10)


def test_preflight_refuses_a_file_where_the_folder_should_be(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RunFolderError, match=r"afile exists and is not a folder; choose another --out"):
        preflight(tmp_path / "afile", 1000)
    with pytest.raises(RunFolderError, match=r"cannot create the run folder .*afile/run"):
        preflight(tmp_path / "afile" / "run", 1000)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoints_and_logs_respect_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        path = save(_model(10), tmp_path / "c.safetensors")
        log = atomic_write_bytes(tmp_path / "log.csv", b"epoch\n1\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert stat.S_IMODE(log.stat().st_mode) == mode


def test_temporaries_of_killed_saves_are_removed_by_the_next_save(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    host = __import__("re").sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40]
    stray = tmp_path / f".last.safetensors.{host}-{dead.pid}.0123456789abcdef.tmp"
    stray.write_bytes(b"half a checkpoint")
    live = tmp_path / f".best.safetensors.{host}-1.0123456789abcdef.tmp"      # PID 1 runs: a save in progress
    live.write_bytes(b"another save")
    other_host = tmp_path / ".x.safetensors.otherhost-12345.0123456789abcdef.tmp"
    other_host.write_bytes(b"")
    user_file = tmp_path / "notes.tmp"
    user_file.write_bytes(b"not ours")
    save(_model(10), tmp_path / "last.safetensors")
    assert not stray.exists()
    assert live.exists() and other_host.exists() and user_file.exists()
    assert clean_stale_temporaries(tmp_path) == []


_KILL_IN_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from cnnkit import files
    from cnnkit.io.checkpoint import save

    real_replace = os.replace
    def die_before_rename(src, dst):   # the worst moment: the temporary is complete, not yet renamed
        os.kill(os.getpid(), signal.SIGKILL)
    files.os.replace = die_before_rename

    class Big:
        def state_dict(self):
            return {"w": np.ones(1000, np.float32)}
    save(Big(), sys.argv[1], epoch=1)
    """
)


def test_a_save_killed_before_its_rename_leaves_a_temporary_that_the_next_save_removes(tmp_path):
    path = tmp_path / "last.safetensors"
    save(_model(10), path, epoch=0)
    script = tmp_path / "kill.py"
    script.write_text(_KILL_IN_SAVE)
    run = subprocess.run([sys.executable, str(script), str(path)], env=subprocess_env(), timeout=120)
    assert run.returncode == -signal.SIGKILL
    strays = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(strays) == 1 and load_checkpoint(path).meta["epoch"] == 0
    save(_model(10), path, epoch=1)
    assert not strays[0].exists() and load_checkpoint(path).meta["epoch"] == 1


# ------------------------------------------------------------------------------- run lock

def test_a_second_lock_on_a_run_folder_is_refused_naming_the_owner(tmp_path):
    with RunLock(tmp_path, command="cnnkit train lenet5 --out run") as first:
        owner = json.loads((tmp_path / ".lock").read_text())
        assert owner["pid"] == os.getpid() and owner["command"] == "cnnkit train lenet5 --out run"
        with pytest.raises(RunFolderError, match=rf"is in use: process {os.getpid()} \(cnnkit train lenet5 --out "
                                                 r"run\) has been training into it since \S+ \S+\. Wait for it to "
                                                 r"finish, or choose another --out"):
            RunLock(tmp_path).acquire()
        assert first.note == ""
    assert not (tmp_path / ".lock").exists()  # released and removed
    RunLock(tmp_path).acquire().release()     # free again


_HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from cnnkit.train.run_folder import RunLock
    RunLock(sys.argv[1], command="cnnkit train (killed)").acquire()
    print("locked", flush=True)
    time.sleep(600)
    """
)


def test_a_lock_left_by_a_killed_run_is_detected_as_stale_and_taken_over(tmp_path):
    script = tmp_path / "hold.py"
    script.write_text(_HOLD_LOCK)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "run")], stdout=subprocess.PIPE, text=True,
                            env=subprocess_env())
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=rf"process {proc.pid} \(cnnkit train \(killed\)\)"):
            RunLock(tmp_path / "run").acquire()
    finally:
        proc.kill()
        proc.wait()
    assert (tmp_path / "run" / ".lock").exists()  # SIGKILL: no chance to remove it
    lock = RunLock(tmp_path / "run").acquire()
    assert f"took over a stale lock in {tmp_path / 'run'}: process {proc.pid} (cnnkit train (killed)) was " \
           "killed or crashed" == lock.note
    lock.release()


@pytest.mark.parametrize("recipe, message", [
    ({"model": "lenet5", "color_jitter": float("nan")}, r"recipe.json: not written: color_jitter=nan is not a finite"),
    ({"model": "lenet5", "lr": float("inf")}, r"recipe.json: not written: lr=inf is not a finite number"),
    ({"model": "lenet5", "extended": [{"epochs": [3, float("-inf")]}]},
     r"recipe.json: not written: a value is not a finite number"),
])
def test_a_recipe_holding_nan_or_inf_is_never_written(tmp_path, recipe, message):
    """JSON has no NaN: Python would write one that later runs there cannot use."""
    with pytest.raises(RunFolderError, match=message):
        write_recipe(tmp_path, recipe)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_recipe_json_holding_nan_or_inf_is_refused(tmp_path, constant):
    (tmp_path / "recipe.json").write_text(f'{{"format": "cnnkit-run", "version": 1, "color_jitter": {constant}}}')
    with pytest.raises(RunFolderError, match=r"recipe.json: not a valid recipe \(not JSON; NaN and Infinity are "
                                             r"not JSON numbers\)"):
        read_recipe(tmp_path)


def test_a_recipe_round_trips_and_a_bad_one_is_refused(tmp_path):
    write_recipe(tmp_path, {"model": "lenet5", "epochs": 3, "lr": 0.05})
    assert read_recipe(tmp_path) == {"model": "lenet5", "epochs": 3, "lr": 0.05}
    assert read_recipe(tmp_path / "none") is None
    for text, message in [("{", "not a valid recipe \\(not JSON"), ('{"a": 1}', "not a cnnkit run recipe"),
                          ('{"format": "cnnkit-run", "version": 9}', "recipe version 9 is newer")]:
        (tmp_path / "recipe.json").write_text(text)
        with pytest.raises(RunFolderError, match=message):
            read_recipe(tmp_path)
    (tmp_path / "recipe.json").unlink()
    os.mkfifo(tmp_path / "recipe.json")
    with pytest.raises(RunFolderError, match=r"recipe.json: is a FIFO \(named pipe\), not a recipe file"):
        read_recipe(tmp_path)
