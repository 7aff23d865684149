"""``backend.malloc.tune_malloc``: glibc keeps freed memory, and the cases where it is left alone.

The behaviour is process-wide, so it is measured in child processes: three rounds of
allocating six 8 MiB arrays, touching them and freeing them. Under glibc's default
policy the 48 MiB freed at the top of the heap is above the (dynamically raised, 16 MiB)
trim threshold and goes back to the kernel, so the third round faults its pages in again;
with the tuned 64 MiB threshold it stays, and the third round faults almost none.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from cnnkit.backend import malloc

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

CHILD = r"""
import json, resource, sys
import numpy as np
from cnnkit.backend.malloc import tune_malloc
status = tune_malloc() if sys.argv[1] == "1" else "plain"
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    arrays = [np.ones(2 << 20, dtype=np.float32) for _ in range(6)]  # six 8 MiB arrays, touched
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del arrays
print(json.dumps({"status": status, "faults": faults}))
"""


def run_child(tuned: bool, **extra_env) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.pop("CNNKIT_TUNE_MALLOC", None)
    env.update(extra_env)
    out = subprocess.run([sys.executable, "-c", CHILD, "1" if tuned else "0"], env=env,
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


@glibc
def test_tuned_process_keeps_freed_memory_where_the_default_returns_it():
    plain, tuned = run_child(False), run_child(True)
    # (the kernel maps several pages per fault: ~3,000 faults for the 48 MiB here)
    assert plain["faults"][2] > plain["faults"][0] // 2 > 100, plain  # faulted in again every round
    assert tuned["status"].startswith("set:"), tuned
    assert tuned["faults"][0] > 100 and tuned["faults"][2] < tuned["faults"][0] // 20, tuned


@glibc
@pytest.mark.parametrize(
    "env, reason",
    [
        ({"CNNKIT_TUNE_MALLOC": "0"}, "CNNKIT_TUNE_MALLOC=0"),
        ({"MALLOC_TRIM_THRESHOLD_": "1000000"}, "MALLOC_TRIM_THRESHOLD_"),
        ({"MALLOC_MMAP_THRESHOLD_": "1000000"}, "MALLOC_MMAP_THRESHOLD_"),
        ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000000"}, "GLIBC_TUNABLES"),
    ],
)
def test_the_users_own_setting_wins(env, reason):
    status = malloc.tune_malloc(environ=env) if malloc._applied is None else None
    if status is not None:  # this process is untuned: the call must leave it so
        assert status.startswith("left:") and reason in status
        assert malloc._applied is None
    child = run_child(True, **env)
    assert child["status"].startswith("left:") and reason in child["status"], child
    assert child["faults"][2] > child["faults"][0] // 2 > 100, child  # nothing changed: the default's faults


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    monkeypatch.setattr(malloc, "_applied", None)
    assert malloc.tune_malloc(environ={}) == "left: the C library is musl, not glibc"
    assert malloc._applied is None


def test_the_command_tunes_its_process(monkeypatch, capsys):
    from cnnkit.backend import malloc
    from cnnkit.cli import main as cli_main

    calls = []  # main imports tune_malloc when it runs (its header imports nothing of the library)
    monkeypatch.setattr(malloc, "tune_malloc", lambda: calls.append(1) or "set: test")
    assert cli_main.main(["models"]) == 0
    assert calls == [1]
    capsys.readouterr()
