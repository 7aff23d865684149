"""The page's questions and their answers, as JSON-ready dicts (and bytes for files).

The server maps each route to one function here; ``report.py`` calls the same functions
to build the static report, so the page reads identical answers from either. Every
function validates its arguments and raises ``ExploreError`` (with an HTTP status) for
a request it cannot answer; none reads a path given by a request.

Heat maps travel as base64 uint8 arrays on one colour scale per layer: "sequential"
from 0 (or the layer's minimum) to its maximum when the layer has no negative value,
else "diverging", symmetric around 0 with the largest magnitude at either end.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np

from ..errors import ExploreError
from .images import LIMITS, picture_png, read_training_log
from .session import Explorer, ImageRun

__all__ = [
    "model_info", "run_info", "maps", "neuron", "decision", "statistics", "filters", "training",
    "npy_bytes", "encode_u8", "quantize", "finite", "MAX_TOP_K",
]

MAX_TOP_K = 64          # channels per layer in one answer
MAX_FILTERS = 256
MAX_CHANNELS = 64


def finite(payload: Any) -> Any:
    """The payload with every NaN or infinite float replaced by None (JSON has neither)."""
    if isinstance(payload, float):
        return payload if math.isfinite(payload) else None
    if isinstance(payload, dict):
        return {k: finite(v) for k, v in payload.items()}
    if isinstance(payload, (list, tuple)):
        return [finite(v) for v in payload]
    return payload


def encode_u8(a: np.ndarray) -> str:
    """base64 of a uint8 array's bytes (C order)."""
    return base64.b64encode(np.ascontiguousarray(a, np.uint8).tobytes()).decode("ascii")


def quantize(a: np.ndarray, lo: float, hi: float, scale: str) -> np.ndarray:
    """Map values to 0..255 on a layer's colour scale (NaN -> 0)."""
    a = np.asarray(a, np.float64)
    if scale == "diverging":
        m = max(abs(lo), abs(hi)) or 1.0
        q = (a + m) / (2 * m)
    else:
        q = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return np.clip(np.nan_to_num(q) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _scale_of(lo: float, hi: float) -> str:
    return "sequential" if lo >= 0 else "diverging"


def _png_data_url(picture: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(picture_png(picture)).decode("ascii")


# --------------------------------------------------------------------------- the model
def model_info(ex: Explorer) -> dict[str, Any]:
    """The page's first question: what model, which images to offer, and the network overview."""
    s = ex.target
    K = ex.overview()["output_shape"][0] if ex.overview()["output_shape"] else 0
    K = 2 if K == 1 else K                                           # one logit: two classes
    classes = list(s.classes) if len(s.classes) >= K else list(s.classes) + [str(i) for i in range(len(s.classes), K)]
    return {
        "label": s.label, "model_name": s.model_name, "input_shape": list(s.input_shape),
        "mean": list(s.mean), "std": list(s.std), "classes": classes, "task": s.task,
        "dataset": s.dataset, "fully_convolutional": ex.fully_convolutional,
        "can_draw": s.input_shape[0] == 1,
        "samples": [{"index": i, "name": sm.name, "label": sm.label} for i, sm in enumerate(ex.samples)],
        "has_training": s.run_folder is not None,
        "overview": {k: v for k, v in ex.overview().items() if k != "table"},
        "summary_table": ex.overview()["table"],
        "limits": LIMITS,
    }


# --------------------------------------------------------------------------- one image
def run_info(run: ImageRun) -> dict[str, Any]:
    """What the page needs right after an image ran: the picture, the prediction, every layer's scale."""
    units = []
    for u in run.trace.units:
        info = run.layer_range(u.index)
        units.append({"index": u.index, "shape": list(u.shape), "lo": info["lo"], "hi": info["hi"],
                      "scale": info["scale"]})
    probs = run.probabilities.reshape(run.probabilities.shape[0], -1).max(axis=1)
    top = [int(k) for k in np.argsort(-probs, kind="stable")[:5]]
    return {
        "id": run.id, "name": run.name, "shape": list(run.picture.shape),
        "picture": _png_data_url(run.picture), "units": units,
        "prediction": {"top": top, "probabilities": [float(probs[k]) for k in top]},
        "input_range": {"lo": float(run.x.min()), "hi": float(run.x.max())},
        "cam_default": run.default_cam_unit(),
    }


def maps(run: ImageRun, unit: int, k: int = 8, order: str = "mean", channels: list[int] | None = None) -> dict[str, Any]:
    """Heat maps of the top-``k`` channels of one layer (or of ``channels``), on the layer's scale."""
    a = run.unit_output(unit)
    info = run.layer_range(unit)
    if not 1 <= k <= MAX_TOP_K:
        raise ExploreError(f"k must be between 1 and {MAX_TOP_K}, got {k}")
    if a.ndim == 3:
        C = a.shape[0]
        if channels is not None:
            bad = [c for c in channels if not 0 <= c < C]
            if bad or len(channels) > MAX_TOP_K:
                raise ExploreError(f"channels must be at most {MAX_TOP_K} indices in 0..{C - 1}, got {channels}")
            chosen = np.asarray(channels, int)
        else:
            chosen = run.ranked_channels(unit, order)[:k]
        data = quantize(a[chosen], info["lo"], info["hi"], info["scale"])           # (k, H, W)
        return {
            "unit": unit, "shape": list(a.shape), "lo": info["lo"], "hi": info["hi"], "scale": info["scale"],
            "order": order, "channels": [{"index": int(c), "mean": float(info["channel_mean"][c]),
                                          "max": float(info["channel_max"][c])} for c in chosen],
            "data": encode_u8(data),
        }
    flat = a.reshape(-1)
    return {
        "unit": unit, "shape": list(a.shape), "lo": info["lo"], "hi": info["hi"], "scale": info["scale"],
        "order": order, "channels": [], "values": [float(v) for v in flat[:4096]],
        "top": [int(i) for i in np.argsort(-flat, kind="stable")[:k]],
        "data": encode_u8(quantize(flat, info["lo"], info["hi"], info["scale"])),
    }


def neuron(run: ImageRun, unit: int, index: list[int]) -> dict[str, Any]:
    """One output number rebuilt from its inputs (see ``neuron.explain_neuron``)."""
    return run.neuron(unit, tuple(index))


def decision(run: ImageRun, target: int | None = None, cam_unit: int | None = None) -> dict[str, Any]:
    """Logits and probabilities with class names; saliency and Grad-CAM of ``target``."""
    logits = run.logits
    K = logits.shape[0]
    probs = run.probabilities
    position = None
    if logits.ndim == 3:                       # a fully convolutional output: one answer per position
        flat = probs.reshape(K, -1)
        best = int(np.argmax(flat.max(axis=0)))
        position = [int(v) for v in np.unravel_index(best, logits.shape[1:])]
        shown_logits, shown_probs = logits[:, position[0], position[1]], probs[:, position[0], position[1]]
    else:
        shown_logits, shown_probs = logits, probs
    top = int(np.argmax(shown_probs))
    target = top if target is None else int(target)
    if not 0 <= target < K:
        raise ExploreError(f"class {target} is out of range: the model has {K} classes")
    sal = run.saliency(target)
    result: dict[str, Any] = {
        "id": run.id, "task": "binary" if run.binary else run.explorer.target.task, "logits": [float(v) for v in shown_logits],
        "probabilities": [float(v) for v in shown_probs], "top": top, "target": target,
        "position": position,
        "class_map": np.argmax(probs, axis=0).tolist() if logits.ndim == 3 else None,
        "saliency": {"shape": list(sal.shape), "hi": float(sal.max()), "data": encode_u8(quantize(sal, 0.0, float(sal.max()), "sequential"))},
        "cam_units": [u.index for u in run.trace.units if len(u.shape) == 3 and u.shape[1] * u.shape[2] > 1],
    }
    try:
        cam = run.grad_cam(target, cam_unit)
    except ExploreError as e:
        if cam_unit is not None:
            raise
        result["grad_cam"] = {"error": str(e)}
    else:
        hi = float(cam["map"].max())
        result["grad_cam"] = {
            "unit": cam["unit"], "shape": list(cam["map"].shape), "hi": hi, "cam_shape": list(cam["cam"].shape),
            "data": encode_u8(quantize(cam["map"], 0.0, hi, "sequential")),
        }
    return result


def statistics(run: ImageRun) -> dict[str, Any]:
    """Per layer: activation and gradient statistics with histograms; per parameter: weights and gradients."""
    stats = run.statistics()
    return {
        "id": run.id, "target": stats["target"],
        "units": [{"index": u.index, "activation": stats["activation"].get(u.index),
                   "gradient": stats["gradient"].get(u.index)} for u in run.trace.units],
        "weights": [{"name": n, **w, "gradient": stats["weight_gradient"].get(n)}
                    for n, w in run.explorer.weight_statistics().items()],
    }


def filters(ex: Explorer, unit: int, max_filters: int = 64, max_channels: int = 16) -> dict[str, Any]:
    """A convolution's filters on one symmetric scale; three-channel filters also as RGB tiles."""
    if not 1 <= max_filters <= MAX_FILTERS or not 1 <= max_channels <= MAX_CHANNELS:
        raise ExploreError(f"max_filters must be in 1..{MAX_FILTERS} and max_channels in 1..{MAX_CHANNELS}")
    w = ex.conv_weight(unit)                                                           # (F, C, KH, KW)
    F, C, KH, KW = w.shape
    nf, nc = min(F, max_filters), min(C, max_channels)
    m = float(np.abs(w).max()) or 1.0
    shown = w[:nf, :nc]
    result = {"unit": unit, "shape": list(w.shape), "shown": [nf, nc], "max_abs": m,
              "data": encode_u8(quantize(shown, -m, m, "diverging"))}
    if C == 3:
        rgb = np.clip(w[:nf] / m * 0.5 + 0.5, 0, 1).transpose(0, 2, 3, 1)               # (nf, KH, KW, 3)
        result["rgb"] = encode_u8((rgb * 255 + 0.5).astype(np.uint8))
    return result


def training(ex: Explorer) -> dict[str, Any]:
    """Loss and accuracy per epoch from the run folder's log (or its last checkpoint)."""
    folder = ex.target.run_folder
    if folder is None:
        raise ExploreError("the checkpoint's run folder is not known, so there is no training log", 404)
    log = read_training_log(folder)
    # the page shows the weights it loaded: say when a training run has saved newer ones over that file
    log["checkpoint"] = {"name": ex.target.file.name if ex.target.file else None, "changed": ex.file_changed()}
    return log


def npy_bytes(a: np.ndarray) -> bytes:
    """An array as a .npy file (NumPy's format, no pickled objects)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()
