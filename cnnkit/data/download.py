"""Downloads with a progress display, checksum verification and atomic writes; the data cache.

A file is fetched into a temporary of its own process beside ``dest``
(``.<name>.<host>-<pid>.<random>.tmp``, see ``cnnkit.files``), checked (byte count against
Content-Length, then the SHA-256 or MD5 digest), and only then renamed onto ``dest`` with
``os.replace``, which is atomic on POSIX and Windows. Any failure, including Ctrl-C,
removes the temporary, so ``dest`` either does not exist or is complete and verified; the
temporary of a killed process is removed by the next download into its folder.

Several processes loading one dataset into an empty cache (the ranks of ``mpiexec -n 4
cnnkit train --dataset cifar10``, two runs started together) download it once: a
``cnnkit.files.file_lock`` on ``<dest>.lock`` lets one process download while the others
wait (printing who they wait for), and then find the verified file. The kernel drops the
lock of a process that dies, so a killed download never blocks the next one.

Where data lives: ``data_root(root)`` is ``root`` when given, else the ``CNNKIT_DATA``
environment variable, else ``~/.cache/cnnkit``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.client import HTTPException
from pathlib import Path

from ..errors import DownloadError
from ..files import clean_stale_temporaries, file_lock, temporary_path

__all__ = ["DownloadError", "cache_lock", "data_root", "download", "fetch", "file_digest"]

_CHUNK = 1 << 20  # 1 MiB


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Return the folder datasets are read from and downloaded to.

    Args:
        root: an explicit folder (a ``--data-dir``); wins over everything else.

    Returns:
        ``root``, else ``$CNNKIT_DATA``, else ``~/.cache/cnnkit`` (not created here).
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("CNNKIT_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "cnnkit"


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """Return the hex digest (``"sha256"`` or ``"md5"``) of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _expected_digest(sha256: str | None, md5: str | None) -> tuple[str, str] | None:
    if sha256 is not None and md5 is not None:
        raise ValueError("download takes sha256 or md5, not both")
    if sha256 is not None:
        if not 8 <= len(sha256) <= 64:
            raise ValueError(f"download: sha256 must be 8 to 64 hex digits (a full digest or a prefix), got {sha256!r}")
        return "sha256", sha256.lower()
    if md5 is not None:
        return "md5", md5.lower()
    return None


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Fetch ``url`` to ``dest`` unless a verified copy is already there; return ``dest``.

    One process downloads a given ``dest`` at a time (a lock on ``<dest>.lock``); the
    others wait, saying so on stderr after a second, then find its verified file and use
    it. When its download failed, the next one in line tries itself.

    Args:
        url: an http(s) or file URL.
        dest: the final path; its folder is created when missing.
        sha256: expected SHA-256 hex digest of the file (or give ``md5``); when neither
            is given only the byte count is checked. A prefix of at least 8 digits is
            accepted where only a prefix is published (torchvision's weights file names).
        md5: expected MD5 hex digest (what most datasets publish).
        progress: show a progress bar on stderr (tqdm when installed, else one text line).
        timeout: seconds to wait for the server on connect and on each read.

    Returns:
        The path of the verified file.

    Raises:
        DownloadError: naming the URL and the file, with what went wrong (HTTP or network
            error, fewer bytes than announced, checksum mismatch, the lock file cannot be
            made). No partial file remains.
    """
    dest = Path(dest)
    expected = _expected_digest(sha256, md5)
    if dest.exists() and not dest.is_file():
        raise DownloadError(f"cannot download {url} to {dest}: it exists and is not a regular file")
    if dest.is_file() and _mismatch(dest, expected) is None:
        return dest  # files appear whole (os.replace), so a verified one needs no lock
    with cache_lock(dest.with_name(dest.name + ".lock"), f"download {url} to {dest}"):
        if dest.is_file():  # another process may have downloaded it while we waited
            problem = _mismatch(dest, expected)
            if problem is None:
                return dest
            print(f"cnnkit: {dest} has {problem}; downloading it again", file=sys.stderr)
        _download(url, dest, expected, progress, timeout)
    return dest


@contextlib.contextmanager
def cache_lock(lock: Path, doing: str) -> Iterator[None]:
    """Do the block in one process at a time: ``cnnkit.files.file_lock`` on ``lock``.

    A process that waits more than a second says so on stderr: ``cnnkit: waiting for
    process 1234 to <doing> (lock file <lock>)``.

    Args:
        lock: the lock file, beside what the block writes (removed when the block ends).
        doing: what the block does, for the messages ("download <url> to <dest>").

    Raises:
        DownloadError: the lock file cannot be made ("cannot <doing>: ...").
    """

    def waiting(holder: str) -> None:
        print(f"cnnkit: waiting for {holder} to {doing} (lock file {lock})", file=sys.stderr, flush=True)

    with contextlib.ExitStack() as held:
        try:
            held.enter_context(file_lock(lock, on_wait=waiting))
        except OSError as e:
            raise DownloadError(f"cannot {doing}: {e}") from None
        yield


def _mismatch(path: Path, expected: tuple[str, str] | None) -> str | None:
    """None when the file has the expected digest (or none is expected), else what it has instead."""
    if expected is None:
        return None
    algorithm, want = expected
    got = file_digest(path, algorithm)
    if got.startswith(want):  # equal for a full digest; a published prefix otherwise
        return None
    return f"{algorithm.upper()} {got}, expected {want}"


def _download(url: str, dest: Path, expected: tuple[str, str] | None, progress: bool, timeout: float) -> None:
    """Download ``url`` into a temporary of this process, check it and rename it onto ``dest``.

    Called with ``dest``'s lock held; the temporary is still this process's own (the
    ``.<name>.<host>-<pid>.<random>.tmp`` of ``cnnkit.files``), so that no two processes
    ever write one file, even where no lock can be taken. Those of killed processes are
    removed here, by the next download into the folder.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(dest.parent)
    dest.with_name(dest.name + ".part").unlink(missing_ok=True)  # earlier versions downloaded into <dest>.part
    part = temporary_path(dest)
    hasher = hashlib.new(expected[0]) if expected else None
    received = 0
    try:
        try:
            response = urllib.request.urlopen(url, timeout=timeout)
        except urllib.error.HTTPError as e:
            raise DownloadError(f"cannot download {url} to {dest}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, HTTPException, OSError) as e:
            reason = getattr(e, "reason", e)
            raise DownloadError(f"cannot download {url} to {dest}: {reason}") from None
        with response, open(part, "xb") as f:
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None and length.isdigit() else None
            bar = _Progress(url, total) if progress else None
            try:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    received += len(chunk)
                    if hasher is not None:
                        hasher.update(chunk)
                    if bar is not None:
                        bar.update(received)
            except (HTTPException, OSError) as e:
                raise DownloadError(
                    f"download of {url} to {dest} broke off after {received} bytes: {e}"
                ) from None
            finally:
                if bar is not None:
                    bar.close(received)
        if total is not None and received != total:
            raise DownloadError(
                f"download of {url} to {dest} is truncated: received {received} of {total} bytes"
            )
        if expected is not None:
            algorithm, want = expected
            got = hasher.hexdigest()
            if not got.startswith(want):  # equal for a full digest; a published prefix otherwise
                raise DownloadError(
                    f"download of {url} to {dest} failed its checksum: {algorithm.upper()} is "
                    f"{got}, expected {want} ({received} bytes received)"
                )
        os.replace(part, dest)
    except BaseException:  # NOTE: Ctrl-C too: never leave a partial file behind
        part.unlink(missing_ok=True)
        raise


def fetch(
    name: str,
    *,
    folder: str,
    mirror: str,
    md5: str,
    root: str | os.PathLike | None = None,
    download_missing: bool = True,
    progress: bool = True,
    also_look_in: tuple[str, ...] = (),
) -> Path:
    """Return a verified local copy of a dataset file, downloading it only when needed.

    Looks for ``name`` in ``data_root(root)/folder``, then directly in ``data_root(root)``,
    then in ``data_root(root)/<each of also_look_in>`` (e.g. torchvision's layout), and
    uses the first copy whose MD5 matches. Otherwise downloads ``mirror + name`` into
    ``data_root(root)/folder``.

    Raises:
        DownloadError: the file is missing (or fails its checksum) and ``download_missing``
            is False, or the download fails.
    """
    base = data_root(root)
    target = base / folder / name
    candidates = [target, base / name] + [base / extra / name for extra in also_look_in]
    mismatched = []
    for path in candidates:
        if path.is_file():
            digest = file_digest(path, "md5")
            if digest == md5:
                return path
            mismatched.append(f"{path} has MD5 {digest}, expected {md5}")
    if not download_missing:
        found = (
            "; ".join(mismatched)
            if mismatched
            else f"not found in {', '.join(str(c.parent) for c in candidates)}"
        )
        raise DownloadError(
            f"{name}: {found}. Download it from {mirror}{name} into {target.parent} "
            "or allow downloading (download=True)"
        )
    return download(mirror + name, target, md5=md5, progress=progress)


class _Progress:
    """A download progress display: tqdm when installed, else a text line on stderr.

    The text line redraws in place (at most ten times a second) when stderr is a
    terminal; otherwise it prints one line at the start and one at the end, so logs
    stay readable.
    """

    def __init__(self, url: str, total: int | None):
        self.url, self.total = url, total
        self.name = url.rsplit("/", 1)[-1] or url
        try:
            from tqdm import tqdm  # the progress bar library loads only for a download
        except ImportError:
            self.tqdm = None
        else:
            self.tqdm = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=self.name)
        self.shown = 0
        self.last_draw = 0.0
        self.tty = sys.stderr.isatty()
        if self.tqdm is None:
            print(f"Downloading {url}", file=sys.stderr, flush=True)

    def update(self, received: int) -> None:
        if self.tqdm is not None:
            self.tqdm.update(received - self.shown)
            self.shown = received
            return
        now = time.monotonic()
        if self.tty and now - self.last_draw >= 0.1:
            self.last_draw = now
            print(f"\r{self._line(received)}", end="", file=sys.stderr, flush=True)

    def close(self, received: int) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
            return
        print(f"\r{self._line(received)}" if self.tty else self._line(received), file=sys.stderr, flush=True)

    def _line(self, received: int) -> str:
        done = f"{received / 1e6:.1f} MB"
        if self.total:
            return f"  {self.name}: {done} of {self.total / 1e6:.1f} MB ({100 * received // self.total}%)"
        return f"  {self.name}: {done}"
