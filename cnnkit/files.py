"""Files in and out, safely: atomic writes, regular files only, bounded reads.

Layer 0 (no cnnkit imports), so that ``data`` (images, IDX files) and ``io`` (checkpoints)
share it.

- ``atomic_write(path, chunks)`` / ``atomic_write_bytes(path, payload)``: the bytes go to a
  temporary file in the target's folder, which is flushed, fsynced and renamed over the
  target, so readers (and a crash, a kill or a full disk at any moment) see the old file
  or the new one, never half of one. The new file gets the permissions any new file of
  the user gets (0666 minus the umask). Temporaries are named
  ``.<name>.<host>-<pid>.<random>.tmp``; those of processes that no longer run (a save
  killed with SIGKILL) are removed by the next save into the same folder. A failed write
  (no space left, read-only folder) raises ``OSError`` naming the file, the size and the
  free space, and leaves no temporary behind.
- ``open_regular(path, what)``: open a file for reading only if it is a regular file, so a
  FIFO, a device (``/dev/zero``), a socket or a folder is refused at once instead of
  hanging or being read without end.
- ``read_exactly(f, n, ...)``: read exactly ``n`` bytes or say the file is truncated.
- ``file_lock(path)``: one process at a time in a block (a download into a cache, the
  conversion of named weights), across processes: an exclusive ``flock`` on ``path``,
  waited for, released by the kernel when its process dies (even by SIGKILL). The lock file
  holds the owner's PID and host, and is removed when the block ends.
- ``temporary_path(path)``: the name of a temporary beside ``path`` that only this process
  writes, in the form ``clean_stale_temporaries`` recognises.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl  # POSIX: file_lock's flock
except ImportError:  # Windows: file_lock takes no lock
    fcntl = None

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "clean_stale_temporaries",
    "temporary_path",
    "file_lock",
    "open_regular",
    "read_exactly",
    "file_kind",
    "pid_alive",
    "format_bytes",
]

_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"
# .<target name>.<host>-<pid>.<16 hex>.tmp
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[0-9a-f]{16}\.tmp$")
# the temporaries of cnnkit versions before this one: mkstemp's ".<name>.<8 random chars>.tmp"
_LEGACY_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
_LEGACY_AGE = 3600.0  # seconds; no PID in their name, so only old ones are known to be stray


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``; for messages."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop returns


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID runs on this machine (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    try:  # a killed child its parent has not reaped yet is still in the table: look at its state
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def clean_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that killed saves left in ``folder``; return what was removed.

    A temporary of a process still running on this machine, or of another machine, is
    left alone (it may be a save in progress).
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not entry.name.endswith(".tmp") or not entry.is_file(follow_symlinks=False):
            continue
        m = _TEMP.match(entry.name)
        if m:
            stale = m["host"] == _HOST and int(m["pid"]) != os.getpid() and not pid_alive(int(m["pid"]))
        else:
            try:
                stale = bool(_LEGACY_TEMP.match(entry.name)) and now - entry.stat().st_mtime > _LEGACY_AGE
            except OSError:
                stale = False
        if stale:
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def temporary_path(path: str | os.PathLike) -> Path:
    """A new name beside ``path`` for a temporary only this process writes.

    ``.<name>.<host>-<pid>.<16 random hex digits>.tmp``: unique, and once its process is gone
    ``clean_stale_temporaries`` removes it.
    """
    path = Path(path)
    return path.parent / f".{path.name}.{_HOST}-{os.getpid()}.{secrets.token_hex(8)}.tmp"


@contextlib.contextmanager
def file_lock(
    path: str | os.PathLike,
    *,
    on_wait: Callable[[str], None] | None = None,
    notice_after: float = 1.0,
) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the block; wait while another process holds it.

    The lock is a ``flock`` on the file ``path`` (created when missing, its folder too): it
    works across processes and the kernel releases it when its holder dies, even by SIGKILL,
    so a lock file a killed process left behind is simply taken. The holder writes
    ``<pid> <host>`` into the file for the others' messages, and removes the file when the
    block ends (while still holding it: a waiter then finds its file gone and locks the
    current one). Without ``fcntl`` (Windows) no lock is taken.

    Args:
        path: the lock file, e.g. ``<target>.lock`` beside the file the block writes.
        on_wait: called once when the lock is still held by another process after
            ``notice_after`` seconds, with who holds it (``"process 1234 on host"``, or
            ``"another process"`` when the file does not say yet).
        notice_after: seconds of waiting before ``on_wait`` is called.

    Raises:
        OSError: the lock file cannot be created or opened (the message names it).
    """
    if fcntl is None:
        yield
        return
    path = Path(path)
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as e:
            raise OSError(e.errno, f"cannot lock it: {e.strerror or e}", str(path)) from None
        try:
            if _wait_for_lock(fd, on_wait, notice_after):
                on_wait = None  # told once, even when the lock moves to a new file below
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:  # the holder before us removed the file we waited on
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {_HOST}\n".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # while still held: a waiter then retries on a new file
        os.close(fd)  # closing drops the flock


def _wait_for_lock(fd: int, on_wait: Callable[[str], None] | None, notice_after: float) -> bool:
    """``flock(fd, LOCK_EX)``, polled for ``notice_after`` seconds first; then ``on_wait(holder)``
    and a plain wait. Returns whether ``on_wait`` was called."""
    if on_wait is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return False
    deadline = time.monotonic() + notice_after
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            pass
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    on_wait(_lock_holder(fd))
    fcntl.flock(fd, fcntl.LOCK_EX)  # the kernel wakes us when the holder is done; Ctrl-C still stops it
    return True


def _lock_holder(fd: int) -> str:
    """Who holds the lock, as its file says (``"process 1234 on host"``)."""
    try:
        text = os.pread(fd, 128, 0).decode("ascii", "replace")
    except OSError:
        text = ""
    # Only a whole line counts: the holder may be writing it right now.
    m = re.fullmatch(r"(\d+) ([A-Za-z0-9_-]+)\n", text)
    if m is None:
        return "another process"
    return f"process {m[1]}" + ("" if m[2] == _HOST else f" on {m[2]}")


def _write_error(e: OSError, path: Path, size: int | None) -> OSError:
    """``e`` retold: which file, how big, and how much room there was."""
    reason = e.strerror or str(e)
    detail = ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = shutil.disk_usage(path.parent).free
            needed = f"{format_bytes(size)} needed, " if size is not None else ""
            detail = f" ({needed}{format_bytes(free)} free on that disk)"
        except OSError:
            pass
    keep = f"; the previous {path.name} is unchanged" if path.exists() else ""
    return OSError(e.errno, f"cannot write it: {reason}{detail}{keep}", str(path))


def atomic_write(path: str | os.PathLike, chunks: Iterable[bytes | memoryview], size: int | None = None) -> Path:
    """Write the byte chunks to ``path`` atomically (see the module doc); return the path.

    Args:
        size: the total size, if known, for the message of a full disk.

    Raises:
        OSError: the folder cannot be created or written, or the disk is full; the message
            names the file, and the previous file (if any) is unchanged.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_error(e, path, size) from None
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "cannot write it: it is a folder", str(path))
    clean_stale_temporaries(path.parent)
    tmp = temporary_path(path)
    try:
        # 0o666: the umask decides the permissions, as for any file the user creates
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        raise _write_error(e, path, size) from None
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise _write_error(e, path, size) from None
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # e.g. a folder we may write but not list; the rename is done
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` so readers see the old file or the new one, never half."""
    return atomic_write(path, [payload], len(payload))


def file_kind(mode: int) -> str:
    """'a folder', 'a FIFO (named pipe)', ... for a ``st_mode`` that is not a regular file."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | os.PathLike, what: str = "file") -> tuple[BinaryIO, int]:
    """Open ``path`` for reading if it is a regular file; return (binary file, size in bytes).

    The file is opened non-blocking and checked with ``fstat`` before any read, so a FIFO
    without a writer, a device or a socket is refused at once (never read, never waited on).

    Raises:
        FileNotFoundError: no such file. IsADirectoryError: a folder.
        OSError: not a regular file, or cannot be opened (the message names it and ``what``
            it should have been).
    """
    path = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = file_kind(st.st_mode)
            cls = IsADirectoryError if stat.S_ISDIR(st.st_mode) else OSError
            code = errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL
            article = "an" if what[:1].lower() in "aeiou" else "a"
            raise cls(code, f"is {kind}, not {article} {what}", path)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def read_exactly(f: BinaryIO, n: int, path: str | os.PathLike, what: str = "file") -> bytearray:
    """Read exactly ``n`` bytes from ``f`` (never more), or raise ``EOFError`` naming ``path``."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = f.readinto(view[got:])
        if not k:
            raise EOFError(f"{path}: truncated {what} (expected {n} more bytes, the file ended after {got})")
        got += k
    return buf
