"""Before and after: what pruning changed (parameters, MACs, accuracy, speed, file size).

``measure`` gives a model's figures, ``images_per_second`` the throughput of several
models measured interleaved (median of repeats), ``format_comparison`` the table that
``cnnkit prune`` prints.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import config, nn
from ..data import DataLoader
from ..explain.summary import summary
from ..io.checkpoint import save
from ..tensor import Tensor
from ..train.loop import evaluate
from .prune import conv_parameters

__all__ = ["measure", "images_per_second", "channel_counts", "weights_file_size", "format_comparison"]


def measure(model, input_shape, test_set) -> dict[str, Any]:
    """Parameters, conv parameters, MACs per image and test accuracy of ``model``."""
    macs = summary(model, input_shape, print_fn=None).total_macs
    accuracy = evaluate(model, DataLoader(test_set, batch_size=500), confusion=False)["accuracy"]
    return {
        "params": sum(p.size for p in model.parameters()),
        "conv_params": conv_parameters(model),
        "macs": int(macs),
        "accuracy": float(accuracy),
    }


def images_per_second(models: list, test_set, batch: int = 1000, repeats: int = 9) -> list[float]:
    """Inference throughput of each model on one batch of test images, interleaved, median of repeats."""
    x, _ = _first_batch(test_set, batch)
    times: list[list[float]] = [[] for _ in models]
    for m in models:
        m.eval()
    with config.no_grad():
        for m in models:                     # warm-up
            m(Tensor(x))
        for _ in range(repeats):
            for i, m in enumerate(models):
                start = time.perf_counter()
                m(Tensor(x))
                times[i].append(time.perf_counter() - start)
    return [len(x) / statistics.median(t) for t in times]


def _first_batch(test_set, batch: int) -> tuple[np.ndarray, np.ndarray]:
    return next(iter(DataLoader(test_set, batch_size=min(batch, len(test_set)))))


def channel_counts(model) -> dict[str, int]:
    """Output channels (conv) and output features (Linear) of every layer, by path."""
    counts = {}
    for path, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            counts[path] = m.out_channels
        elif isinstance(m, nn.Linear):
            counts[path] = m.out_features
    return counts


def weights_file_size(model, ckpt) -> int:
    """The size of ``model`` saved alone (training checkpoints also hold optimizer state)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "weights.safetensors"
        save(model, path, model_name=ckpt.model_name, model_config=ckpt.model_config,
                        extra=ckpt.meta.get("extra", {}))
        return path.stat().st_size


def format_comparison(before: dict[str, Any], after: dict[str, Any]) -> str:
    """The before/after table of ``cnnkit prune``."""
    def ratio(key: str) -> str:
        return f"{after[key] / before[key]:.2f}x" if before.get(key) else ""

    rows = [
        ("parameters", f"{before['params']:,}", f"{after['params']:,}", ratio("params")),
        ("  in conv layers", f"{before['conv_params']:,}", f"{after['conv_params']:,}", ratio("conv_params")),
        ("MACs per image", f"{before['macs']:,}", f"{after['macs']:,}", ratio("macs")),
        ("test accuracy", f"{100 * before['accuracy']:.2f}%", f"{100 * after['accuracy']:.2f}%",
         f"{100 * (after['accuracy'] - before['accuracy']):+.2f} pp"),
    ]
    if "ips" in before:
        rows.append(("inference images/s (batch 1000)", f"{before['ips']:,.0f}", f"{after['ips']:,.0f}",
                     ratio("ips")))
    if "file" in before:
        rows.append(("file size (weights)", f"{before['file'] / 1024:,.1f} KiB", f"{after['file'] / 1024:,.1f} KiB",
                     ratio("file")))
    width = [max(len(r[i]) for r in rows + [("", "before", "after", "after/before")]) for i in range(4)]
    lines = [f"{'':<{width[0]}}  {'before':>{width[1]}}  {'after':>{width[2]}}  {'after/before':>{width[3]}}"]
    for r in rows:
        lines.append(f"{r[0]:<{width[0]}}  {r[1]:>{width[1]}}  {r[2]:>{width[2]}}  {r[3]:>{width[3]}}")
    return "\n".join(lines)
