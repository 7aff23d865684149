"""``cnnkit explore``: a local web page that explains your own trained network, neuron by neuron.

- ``session.py``: ``Explorer`` (one model, its overview, its samples, the images run
  through it) and ``ImageRun`` (one image's forward pass kept whole); no HTTP here.
- ``images.py``: uploads checked (size, pixels, image types) and prepared as ``cnnkit
  predict`` prepares a file; the sample images; PNGs; the run folder's training log.
- ``api.py``: the page's questions and their JSON answers (one function per route).
- ``server.py``: the Starlette application and ``serve`` (uvicorn), loopback by default.
- ``report.py``: ``--export report.html``, the page and its answers in one static file.
- ``static/``: the page itself, plain JavaScript, SVG and canvas (no build step, no CDN).

The web framework and server are the optional extra ``cnnkit[explore]`` (Starlette and
uvicorn), imported only when a server starts, so ``import cnnkit.explore`` needs neither.
The numbers come from ``cnnkit.explain`` (the layer trace, neuron rebuilds, receptive
fields, saliency, Grad-CAM, the summary).
"""

from __future__ import annotations

from .images import LIMITS, build_samples, decode_upload
from .report import render_report, snapshot, write_report
from .server import create_app, serve
from .session import Explorer, ImageRun, Sample

__all__ = [
    "Explorer", "ImageRun", "Sample", "LIMITS", "build_samples", "decode_upload", "create_app", "serve",
    "render_report", "snapshot", "write_report",
]
