"""``cnnkit explore CHECKPOINT IMAGE --export report.html``: the page as one self-contained file.

The report is the same page (the same HTML, CSS and scripts, inlined) with the answers
it needs written into it: ``window.CNNKIT_SNAPSHOT = {"responses": {url: answer}, "run": ...}``.
The page's ``CK.api`` reads from there instead of the server, so the overview, the
image's path through every layer (its top channels), the decision with saliency and
Grad-CAM, the filters, the statistics and the training curves all show without a
server; what needs one (other images, other channels, clicking a neuron) says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExploreError
from ..io.checkpoint import atomic_write_bytes
from . import api
from .server import SCRIPTS, read_assets
from .session import Explorer

__all__ = ["snapshot", "write_report"]


def snapshot(explorer: Explorer, picture: np.ndarray, name: str, k: int = 8) -> dict[str, Any]:
    """Run ``picture`` and collect every answer the static page asks for, keyed by its URL."""
    with explorer.lock:
        run = explorer.run(picture, name)
        responses: dict[str, Any] = {"/api/model": api.model_info(explorer)}
        responses["/api/model"]["samples"] = []
        info = api.run_info(run)
        base = f"/api/images/{run.id}"
        for u in run.trace.units:
            if u.kind != "identity":
                responses[f"{base}/maps/{u.index}?k={k}&order=mean"] = api.maps(run, u.index, k, "mean")
        responses[f"{base}/decision"] = api.decision(run)
        responses[f"{base}/statistics"] = api.statistics(run)
        seen: set[str | None] = set()
        for u in run.trace.units:
            if u.type in ("Conv2d", "ConvTranspose2d") and u.kind == "layer" and u.path not in seen:
                seen.add(u.path)
                responses[f"/api/filters/{u.index}?filters=64&channels=16"] = api.filters(explorer, u.index, 64, 16)
        if explorer.target.run_folder is not None:
            try:
                responses["/api/training"] = api.training(explorer)
            except ExploreError as e:
                responses["/api/training"] = {"epochs": [], "logs": {}, "file": None, "message": str(e)}
    return {"responses": responses, "run": info}


def _script(text: str) -> str:
    return "<script>\n" + text.replace("</script", "<\\/script") + "\n</script>"


def render_report(explorer: Explorer, picture: np.ndarray, name: str) -> str:
    """The report's HTML text."""
    assets = {k: v.decode("utf-8") for k, v in read_assets().items()}
    html = assets["index.html"]
    data = json.dumps(api.finite(snapshot(explorer, picture, name)), separators=(",", ":"), allow_nan=False)
    data = data.replace("</", "<\\/")                     # no "</script>" inside the data
    html = html.replace('<link rel="stylesheet" href="/static/style.css">', "<style>\n" + assets["style.css"] + "\n</style>")
    scripts = [_script("window.CNNKIT_SNAPSHOT = " + data + ";")]
    for name_ in SCRIPTS:
        tag = f'<script src="/static/{name_}"></script>'
        if tag not in html:
            raise RuntimeError(f"index.html does not load {name_}")  # pragma: no cover - a packaging error
        html = html.replace(tag, "")
        scripts.append(_script(assets[name_]))
    html = html.replace("</body>", "\n".join(scripts) + "\n</body>")
    return html.replace("<title>cnnkit explore</title>", f"<title>cnnkit explore report: {_escape(explorer.target.label)}</title>")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_report(explorer: Explorer, picture: np.ndarray, name: str, path: str | os.PathLike) -> Path:
    """Write the static report to ``path`` (atomically) and return the path."""
    path = Path(path)
    atomic_write_bytes(path, render_report(explorer, picture, name).encode("utf-8"))
    return path
