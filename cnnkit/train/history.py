"""The per-epoch logs of training: ``History`` (what ``fit`` returns) and ``read_history``.

``read_history`` reads them back from where a run left them: a run folder's ``log.csv``
(``CSVLogger``) or the history stored in its checkpoint (``ModelCheckpoint``).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from ..files import open_regular
from ..io.checkpoint import load_checkpoint

_MAX_LOG_BYTES = 64 << 20  # a log of a million epochs is ~100 MB; anything larger is not a log

__all__ = ["History", "read_history"]


class History:
    """Per-epoch logs of a ``fit`` call, as Keras: ``history.history["val_loss"][-1]``."""

    def __init__(self) -> None:
        self.epoch: list[int] = []
        self.history: dict[str, list[float]] = {}

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": list(self.epoch), "history": {k: list(v) for k, v in self.history.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        h = cls()
        h.epoch = list(data.get("epoch", []))
        h.history = {k: list(v) for k, v in data.get("history", {}).items()}
        return h

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"


def read_history(run: str | Path) -> tuple[list[int], dict[str, list[float]]]:
    """Read per-epoch logs from a run folder (its log.csv, else its last checkpoint), a CSV or a checkpoint.

    Raises:
        FileNotFoundError: nothing to read there. ValueError: the log has no rows.
    """
    run = Path(run)
    if run.is_dir():
        candidates = [run / "log.csv", run / "last.safetensors"]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{run}: no log.csv or last.safetensors in this run folder")
        run = found
    elif not run.exists():
        raise FileNotFoundError(f"{run}: no such run folder or log file")
    if run.suffix == ".safetensors":
        history = load_checkpoint(run).meta.get("history", {})
        logs = {k: [float(v) for v in vs] for k, vs in history.get("history", {}).items()}
        epochs = [int(e) + 1 for e in history.get("epoch", [])]
    else:
        try:
            fh, size = open_regular(run, "CSV log")
            with fh:
                if size > _MAX_LOG_BYTES:
                    raise ValueError(f"{run}: {size:,} bytes is too large for a training log")
                text = fh.read(size).decode()
            rows = list(csv.DictReader(io.StringIO(text, newline="")))
        except UnicodeDecodeError:
            raise ValueError(f"{run}: not a CSV log (not text)") from None
        except csv.Error as e:
            raise ValueError(f"{run}: not a CSV log ({e})") from None
        logs: dict[str, list[float]] = {}
        for row in rows:
            for key, value in row.items():
                if key is None or value in (None, ""):
                    continue
                try:
                    logs.setdefault(key, []).append(float(value))
                except ValueError:
                    raise ValueError(f"{run}: column {key!r} holds {value!r}, not a number") from None
        epochs = [int(e) for e in logs.pop("epoch", [])]
    if not logs or not any(logs.values()):
        raise ValueError(f"{run}: the log has no epochs yet")
    return epochs or list(range(1, max(len(v) for v in logs.values()) + 1)), logs
