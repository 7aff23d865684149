"""A run folder: what ``cnnkit train`` keeps in ``RUN/``, and the rules that keep it whole.

    RUN/recipe.json            the run's recipe: every option that decides the result
    RUN/.lock                  who is training into the folder (PID, host, command)
    RUN/last.safetensors       the state after the last finished epoch (what --resume continues)
    RUN/best.safetensors       the best epoch so far (by validation accuracy)
    RUN/interrupted.safetensors  the weights at Ctrl-C (mid-epoch; for looking at, not resuming)
    RUN/log.csv                one row per finished epoch, rebuilt from last.safetensors on resume

- ``RunLock``: one run per folder. The lock is a file holding the owner's PID, locked
  with ``flock``: a second run is refused, naming the PID; the kernel drops the lock when
  its process dies (even by SIGKILL), so a stale lock file is recognised and taken over.
- ``write_recipe`` / ``read_recipe``: the recipe, a flat JSON object keyed by the
  command's option names, written atomically before the first epoch.
- ``preflight``: before any training, the folder must be a folder, writable, and have
  room for the checkpoints (``checkpoint_bytes``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import RunFolderError
from ..files import atomic_write_bytes, format_bytes, open_regular, pid_alive, read_exactly

__all__ = [
    "RunLock", "RECIPE_FILE", "LOCK_FILE", "RUN_FILES", "write_recipe", "read_recipe", "preflight",
    "checkpoint_bytes", "holds_a_run",
]

RECIPE_FILE = "recipe.json"
LOCK_FILE = ".lock"
RECIPE_FORMAT = "cnnkit-run"
RECIPE_VERSION = 1
# The files of a run; a folder holding any of them holds a run.
RUN_FILES = ("recipe.json", "last.safetensors", "best.safetensors", "interrupted.safetensors", "log.csv")
_MAX_RECIPE_BYTES = 1 << 20


def holds_a_run(folder: str | os.PathLike) -> list[str]:
    """The run files present in ``folder`` (empty: no run there)."""
    folder = Path(folder)
    return [name for name in RUN_FILES if (folder / name).exists()]


class RunLock:
    """An exclusive lock on a run folder, held while a process trains into it.

    Use as a context manager, or ``acquire()`` / ``release()``. ``note`` tells about a
    stale lock that was taken over (its process no longer runs).

    Raises (acquire):
        RunFolderError: another live process holds the lock; the message names its PID,
            the time it started and its command.
    """

    def __init__(self, folder: str | os.PathLike, command: str = ""):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.command = command or " ".join(["cnnkit", *sys.argv[1:]])
        self.note = ""
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl  # POSIX; imported here so that the module imports everywhere

        for _ in range(10):  # retried only when the lock file is replaced under us
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
            except OSError as e:
                raise RunFolderError(f"cannot lock the run folder {self.folder}: {e.strerror or e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                owner = _read_owner(fd)
                os.close(fd)
                raise RunFolderError(_locked_message(self.folder, owner)) from None
            # The holder may have removed the file between our open and our flock: then we
            # hold a lock on a file nobody else sees; open the current one again.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            previous = _read_owner(fd)
            if previous.get("pid") and previous.get("pid") != os.getpid():
                alive = previous.get("host") == socket.gethostname() and pid_alive(int(previous["pid"]))
                state = "was killed or crashed" if not alive else "released it without removing the file"
                self.note = (f"took over a stale lock in {self.folder}: process {previous['pid']} "
                             f"({previous.get('command', '?')}) {state}")
            record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                      "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
            self._fd = fd
            return self
        raise RunFolderError(f"{self.path}: the lock file keeps being replaced; is another run starting?")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still locked, so nobody locks the old file after us
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_owner(fd: int) -> dict[str, Any]:
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace")
        owner = json.loads(text) if text.strip() else {}
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):
        return {}


def _locked_message(folder: Path, owner: dict[str, Any]) -> str:
    who = f"process {owner['pid']}" if owner.get("pid") else "another process"
    since = f" since {owner['started']}" if owner.get("started") else ""
    what = f" ({owner['command']})" if owner.get("command") else ""
    return (f"{folder} is in use: {who}{what} has been training into it{since}. Wait for it to finish, "
            "or choose another --out")


def write_recipe(folder: str | os.PathLike, recipe: dict[str, Any]) -> Path:
    """Write ``RUN/recipe.json`` atomically (the recipe plus its format and version).

    Raises:
        RunFolderError: a value is NaN or infinite (JSON has no such numbers, and a recipe
            holding one could not be resumed); nothing is written.
    """
    path = Path(folder) / RECIPE_FILE
    document = {"format": RECIPE_FORMAT, "version": RECIPE_VERSION, **recipe}
    try:
        text = json.dumps(document, indent=2, sort_keys=False, allow_nan=False) + "\n"
    except ValueError:
        bad = [f"{k}={v}" for k, v in recipe.items() if isinstance(v, float) and not math.isfinite(v)]
        raise RunFolderError(f"{path}: not written: {', '.join(bad) or 'a value'} is not a finite number") from None
    return atomic_write_bytes(path, text.encode())


def read_recipe(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The recipe stored in a run folder (without format and version), or None if there is none.

    Raises:
        RunFolderError: the file is not a regular file, too large, not JSON, or not a recipe.
    """
    path = Path(folder) / RECIPE_FILE
    try:
        f, size = open_regular(path, "recipe file")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RunFolderError(f"{path}: {e.strerror or e}") from None
    with f:
        if size > _MAX_RECIPE_BYTES:
            raise RunFolderError(f"{path}: {format_bytes(size)} is too large for a recipe")
        try:
            raw = bytes(read_exactly(f, size, path, "recipe file"))
        except (OSError, EOFError) as e:
            raise RunFolderError(f"{path}: cannot read it ({e})") from None
    try:
        document = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise RunFolderError(f"{path}: not a valid recipe (not JSON; NaN and Infinity are not JSON "
                             "numbers); fix or delete it") from None
    if not isinstance(document, dict) or document.get("format") != RECIPE_FORMAT:
        raise RunFolderError(f"{path}: not a cnnkit run recipe (no format {RECIPE_FORMAT!r})")
    if not isinstance(document.get("version"), int) or document["version"] > RECIPE_VERSION:
        raise RunFolderError(f"{path}: recipe version {document.get('version')!r} is newer than this cnnkit "
                             f"reads ({RECIPE_VERSION}); upgrade cnnkit")
    return {k: v for k, v in document.items() if k not in ("format", "version")}


def _no_constant(name: str):
    """``json.loads``' ``parse_constant``: NaN, Infinity and -Infinity are not JSON (Python writes them)."""
    raise ValueError(f"{name} is not a JSON number")


def checkpoint_bytes(model, optimizer_slots: int = 1) -> int:
    """A checkpoint's size: the model's state plus ``optimizer_slots`` copies of its parameters."""
    state = sum(int(getattr(v, "data", v).nbytes) for v in model.state_dict().values())
    params = sum(int(p.data.nbytes) for p in model.parameters())
    return state + optimizer_slots * params + 256 * 1024  # + the header (history, RNG states)


def preflight(folder: str | os.PathLike, checkpoint_size: int, copies: int = 3) -> None:
    """Check, before training, that checkpoints can be written into ``folder``.

    The folder must be a folder (or creatable), writable, and hold ``copies`` checkpoints
    of ``checkpoint_size`` bytes: last and best, plus the temporary file of a save.

    Raises:
        RunFolderError: naming the folder and what is wrong.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{folder} exists and is not a folder; choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunFolderError(f"cannot create the run folder {folder}: {e.strerror or e}") from None
    probe = folder / f".write-test.{os.getpid()}.tmp"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise RunFolderError(f"cannot write into the run folder {folder}: {e.strerror or e}") from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    needed = copies * checkpoint_size
    if free < needed:
        raise RunFolderError(
            f"not enough free space in {folder}: {format_bytes(free)} free, the checkpoints need about "
            f"{format_bytes(needed)} ({copies} x {format_bytes(checkpoint_size)}); free some space or choose "
            "another --out"
        )
