"""The explorer's state: one model, the images run through it, and the numbers every view shows.

Nothing here knows about HTTP. ``Explorer`` holds the model and what is needed to feed
it (input shape, normalization, class names), the network's overview (computed once),
the sample images, and the last few ``ImageRun``s. An ``ImageRun`` is one image's
forward pass kept whole (``explain.graph.forward_pass``), so that heat maps, neuron explanations,
saliency, Grad-CAM and gradient statistics are all read from the same pass.

One lock serializes the work on the model: the server answers from several threads.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ExploreError, NeuronError
from ..explain.gradcam import grad_cam_map
from ..explain.graph import INPUT, ForwardPass, forward_pass
from ..explain.neuron import explain_neuron
from ..explain.saliency import saliency_map
from ..explain.summary import summary
from ..io.targets import Target
from ..nn import Conv2d, ConvTranspose2d

__all__ = ["Sample", "Explorer", "ImageRun", "class_logits", "output_probabilities"]

KEPT_RUNS = 3          # image runs kept at once (each holds a whole forward pass)
HISTOGRAM_BINS = 40


@dataclass
class Sample:
    """An image offered on the page: a name, a true label if known, and how to get its pixels."""

    name: str
    label: str | None
    load: Any  # () -> picture (C, H, W) float32 in [0, 1], prepared for the model


def _stats(a: np.ndarray, bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """min, max, mean, std, share of zeros and of negatives, and a histogram of ``a``."""
    a = np.asarray(a, np.float64).reshape(-1)
    if a.size == 0:
        return {"count": 0}
    finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    counts, edges = np.histogram(finite, bins=bins, range=(lo, hi if hi > lo else lo + 1e-12))
    return {
        "count": int(a.size), "min": lo, "max": hi, "mean": float(finite.mean()) if finite.size else 0.0,
        "std": float(finite.std()) if finite.size else 0.0, "zeros": float(np.mean(a == 0)),
        "negative": float(np.mean(a < 0)), "nonfinite": int(a.size - finite.size),
        "histogram": {"counts": counts.tolist(), "edges": [float(edges[0]), float(edges[-1])]},
    }


def class_logits(logits: np.ndarray) -> np.ndarray:
    """The logits per class: a one-logit (binary) output z becomes (-z, z), the two classes'
    logits, so that their sigmoids are P(label 0) = 1 - p and P(label 1) = p."""
    z = np.asarray(logits, np.float64)
    return np.concatenate([-z, z]) if z.shape[0] == 1 else z


def output_probabilities(logits: np.ndarray, task: str) -> np.ndarray:
    """Per class: softmax over axis 0 for "multiclass", the sigmoid of each class logit otherwise
    ("binary": one logit, two classes; "multilabel": independent classes)."""
    z = class_logits(logits)
    if task != "multiclass" or np.asarray(logits).shape[0] == 1:
        return 1.0 / (1.0 + np.exp(-z))
    e = np.exp(z - z.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


class ImageRun:
    """One image's forward pass, kept, and everything computed from it on demand."""

    def __init__(self, explorer: Explorer, run_id: int, picture: np.ndarray, name: str):
        self.explorer, self.id, self.picture, self.name = explorer, run_id, picture, name
        target = explorer.target
        mean = np.asarray(target.mean, np.float32).reshape(-1, 1, 1)
        std = np.asarray(target.std, np.float32).reshape(-1, 1, 1)
        self.x = ((picture - mean) / std)[None].astype(np.float32)                   # (1, C, H, W)
        model = target.model
        flags = [(p, p.requires_grad) for p in model.parameters()]
        try:
            for p, _ in flags:  # record the graph from the input only: backward stays cheap
                p.requires_grad = False
            self.trace: ForwardPass = forward_pass(model, self.x)
        finally:
            for p, flag in flags:
                p.requires_grad = flag
        for u in self.trace.units:
            if u.output is not None and u.output.creator is not None:
                u.output.retain_grad()
        raw = np.asarray(self.trace.output.data[0], np.float64)                      # (K,) or (K, h, w)
        self.binary = raw.shape[0] == 1                                              # one logit, two classes
        self.logits = class_logits(raw)
        self.probabilities = output_probabilities(raw, target.task)
        self.ranges: dict[int, dict[str, Any]] = {}
        self._gradients: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._stats: dict[str, Any] | None = None

    # ------------------------------------------------------------------ per-unit
    def unit_output(self, unit: int) -> np.ndarray:
        if unit == INPUT:
            return self.x[0]
        self._check_unit(unit)
        return np.asarray(self.trace.units[unit].output.data[0])

    def _check_unit(self, unit: int) -> None:
        n = len(self.trace.units)
        if not 0 <= unit < n:
            raise ExploreError(f"no layer {unit}: this model has layers 0 to {n - 1}", 404)

    def layer_range(self, unit: int) -> dict[str, Any]:
        """The colour scale of one layer and its channels ranked by mean and by max activation."""
        if unit in self.ranges:
            return self.ranges[unit]
        a = self.unit_output(unit).astype(np.float32)
        fin = a[np.isfinite(a)]                                                       # a diverged model: skip NaN/inf
        lo, hi = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 0.0)
        info: dict[str, Any] = {"lo": lo, "hi": hi, "scale": "sequential" if lo >= 0 else "diverging"}
        if a.ndim == 3:
            flat = a.reshape(a.shape[0], -1)                                          # (C, H*W)
            info["channel_mean"] = flat.mean(axis=1)
            info["channel_max"] = flat.max(axis=1)
        self.ranges[unit] = info
        return info

    def ranked_channels(self, unit: int, order: str = "mean") -> np.ndarray:
        info = self.layer_range(unit)
        key = {"mean": "channel_mean", "max": "channel_max"}.get(order)
        if key is None:
            raise ExploreError(f"order must be 'mean' or 'max', got {order!r}")
        if key not in info:
            return np.arange(0)
        return np.argsort(-info[key], kind="stable")

    def neuron(self, unit: int, index: tuple[int, ...]) -> dict[str, Any]:
        self._check_unit(unit)
        try:
            return explain_neuron(self.trace, unit, index)
        except NeuronError as e:
            raise ExploreError(str(e), 400) from None

    # ------------------------------------------------------------------ the decision
    def class_gradients(self, target: int) -> dict[str, Any]:
        """d score[target] / d (input and every unit's output), from one backward pass.

        The score is the target's logit (summed over positions for a fully convolutional
        output); for a one-logit (binary) output, z for class 1 and -z for class 0.
        """
        K = self.logits.shape[0]
        if not 0 <= target < K:
            raise ExploreError(f"class {target} is out of range: the model has {K} classes")
        if target in self._gradients:
            self._gradients.move_to_end(target)
            return self._gradients[target]
        trace = self.trace
        for u in trace.units:
            if u.output is not None:
                u.output.grad = None
        trace.input.grad = None
        seed = np.zeros(trace.output.shape, trace.output.dtype)
        if self.binary:
            seed[0, 0] = 1.0 if target == 1 else -1.0
        else:
            seed[0, target] = 1.0
        trace.output.backward(seed, retain_graph=True)
        result = {
            "input": np.asarray(trace.input.grad[0]),
            "units": {u.index: np.asarray(u.output.grad[0]) for u in trace.units
                      if u.output is not None and u.output.grad is not None},
        }
        self._gradients[target] = result
        while len(self._gradients) > 4:
            self._gradients.popitem(last=False)
        return result

    def saliency(self, target: int) -> np.ndarray:
        """max over channels of |d score / d x| (Simonyan et al., 2014), (H, W)."""
        return saliency_map(self.class_gradients(target)["input"])

    def default_cam_unit(self) -> int | None:
        """Grad-CAM's layer: the last unit whose output is an image of more than one pixel,
        other than the output itself (a fully convolutional model's score map)."""
        last = self.trace.units[-1].index if self.trace.units else None
        images = [u.index for u in self.trace.units
                  if len(u.shape) == 3 and u.shape[1] * u.shape[2] > 1 and u.index != last]
        return images[-1] if images else None

    def grad_cam(self, target: int, unit: int | None = None) -> dict[str, Any]:
        unit = self.default_cam_unit() if unit is None else unit
        if unit is None:
            raise ExploreError("Grad-CAM needs a layer whose output is an image; this model has none")
        self._check_unit(unit)
        a = self.unit_output(unit)
        if a.ndim != 3:
            raise ExploreError(f"Grad-CAM needs a layer whose output is an image (C, H, W); "
                               f"{self.trace.units[unit].name} outputs {tuple(a.shape)}")
        grads = self.class_gradients(target)["units"]
        if unit not in grads:
            raise ExploreError(f"{self.trace.units[unit].name}: the class score does not depend on this layer")
        cam, weights, big = grad_cam_map(a, grads[unit], tuple(self.picture.shape[1:]))
        return {"unit": unit, "cam": cam, "weights": weights, "map": big}

    # ------------------------------------------------------------------ statistics
    def statistics(self) -> dict[str, Any]:
        """Per unit: activation statistics; gradients of the loss for the top class (activations and weights)."""
        if self._stats is not None:
            return self._stats
        target = int(np.argmax(self.probabilities.reshape(self.probabilities.shape[0], -1).max(axis=1)))
        activation = {u.index: _stats(self.unit_output(u.index)) for u in self.trace.units}
        gradient, weight_grads = self._loss_gradients(target)
        self._stats = {"target": target, "activation": activation, "gradient": gradient,
                       "weight_gradient": weight_grads}
        return self._stats

    def _loss_gradients(self, target: int) -> tuple[dict[int, Any], dict[str, Any]]:
        """Gradients of the loss (cross-entropy, or binary cross-entropy) with the label ``target``.

        A second forward pass with the parameters recording, so their gradients exist;
        the model's ``.grad`` fields are restored afterwards.
        """
        model = self.explorer.target.model
        params = dict(model.named_parameters())
        saved = {n: p.grad for n, p in params.items()}
        for p in params.values():
            p.grad = None
        try:
            trace = forward_pass(model, self.x, input_requires_grad=False)
            for u in trace.units:
                if u.output is not None and u.output.creator is not None:
                    u.output.retain_grad()
            logits = np.asarray(trace.output.data[0], np.float64)
            p = output_probabilities(logits, self.explorer.target.task)
            onehot = np.zeros_like(p)
            onehot[target] = 1.0
            # d loss / d logits: softmax cross-entropy and sigmoid BCE both give p - y (mean over
            # positions); a one-logit (binary) output: p(label 1) - y on its one logit
            scale = 1.0 / max(1, int(np.prod(logits.shape[1:])))
            delta = (p - onehot)[1:] if logits.shape[0] == 1 else p - onehot
            seed = (delta * scale)[None].astype(trace.output.dtype)
            if trace.output.creator is None:
                return {}, {}
            trace.output.backward(seed)
            gradient = {u.index: _stats(u.output.grad[0]) for u in trace.units
                        if u.output is not None and u.output.grad is not None}
            weights = {n: _stats(q.grad) for n, q in params.items() if q.grad is not None}
        finally:
            for n, q in params.items():
                q.grad = saved[n]
        return gradient, weights


def _stamp(path) -> tuple[int, int] | None:
    """(modification time in ns, size) of a file, or None when there is none."""
    try:
        st = os.stat(path) if path is not None else None
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size) if st is not None else None


class Explorer:
    """One model, its overview, its samples and the images run through it.

    Args:
        target: the model and how to feed it (``cnnkit.io.load_target``).
        samples: the images offered on the page.
        fully_convolutional: the model takes any image size (``cnnkit.surgery.fcn``):
            images keep their own size instead of the target's input shape.
    """

    def __init__(self, target: Target, samples: list[Sample] | None = None, *, fully_convolutional: bool = False):
        self.target = target
        self.samples = list(samples or [])
        self.fully_convolutional = fully_convolutional
        self.lock = threading.RLock()
        self.runs: OrderedDict[int, ImageRun] = OrderedDict()
        self._next_id = 1
        self._overview: dict[str, Any] | None = None
        self._weights: dict[str, Any] | None = None
        self._file_stamp = _stamp(target.file)
        target.model.eval()

    def file_changed(self) -> bool:
        """Whether the file the model was read from changed on disk since (e.g. a training run
        saved a newer best.safetensors): the page still shows the weights it loaded."""
        return self.target.file is not None and _stamp(self.target.file) != self._file_stamp

    # ------------------------------------------------------------------ images
    def run(self, picture: np.ndarray, name: str) -> ImageRun:
        """Run one prepared picture (C, H, W) in [0, 1] through the model and keep the pass."""
        C, H, W = self.target.input_shape
        if picture.ndim != 3 or picture.shape[0] != C:
            raise ExploreError(f"the model takes {C}-channel images, got an array of shape {picture.shape}", 422)
        if not self.fully_convolutional and tuple(picture.shape[1:]) != (H, W):
            raise ExploreError(f"the model takes {H}x{W} images, got {picture.shape[1]}x{picture.shape[2]}", 422)
        with self.lock:
            run = ImageRun(self, self._next_id, picture.astype(np.float32), name)
            self._next_id += 1
            self.runs[run.id] = run
            while len(self.runs) > KEPT_RUNS:
                self.runs.popitem(last=False)
            return run

    def get_run(self, run_id: int) -> ImageRun:
        run = self.runs.get(run_id)
        if run is None:
            raise ExploreError(f"image {run_id} is no longer held (the last {KEPT_RUNS} are kept); "
                               "choose or upload it again", 404)
        return run

    # ------------------------------------------------------------------ the network
    def overview(self) -> dict[str, Any]:
        """Every layer call in order with its inputs, output shape, parameters, MACs and arithmetic."""
        if self._overview is None:
            with self.lock:
                self._overview = self._make_overview()
        return self._overview

    def _make_overview(self) -> dict[str, Any]:
        model, shape = self.target.model, self.target.input_shape
        x = np.zeros((1,) + tuple(shape), np.float32)
        flags = [(p, p.requires_grad) for p in model.parameters()]
        try:
            for p, _ in flags:
                p.requires_grad = False
            trace = forward_pass(model, x)
        finally:
            for p, flag in flags:
                p.requires_grad = flag
        result = summary(model, shape, show_arithmetic=True, print_fn=None)
        rows: dict[tuple[str, int], Any] = {}
        calls: dict[str, int] = {}
        for row in result.rows:
            calls[row.path] = calls.get(row.path, 0) + 1
            rows[(row.path, calls[row.path])] = row
        units = []
        for u in trace.units:
            row = rows.get((u.path, u.call)) if u.kind != "op" else None
            units.append({
                "index": u.index, "name": u.name, "kind": u.kind, "type": u.type, "path": u.path,
                "call": u.call, "inputs": u.inputs, "shape": list(u.shape),
                "params": int(row.params) if row is not None else 0,
                "macs": int(row.macs) if row is not None else 0,
                "arithmetic": row.arithmetic if row is not None else None,
                "receptive_field": list(row.receptive_field) if row is not None and row.receptive_field else None,
                "jump": list(row.jump) if row is not None and row.jump else None,
                "module": repr(u.module) if u.module is not None else None,
                "shared": bool(row.shared) if row is not None else False,
            })
        return {
            "units": units, "input_shape": list(shape), "output_shape": list(trace.output.shape[1:]),
            "total_params": int(result.total_params), "trainable_params": int(result.trainable_params),
            "total_macs": int(result.total_macs), "buffer_values": int(result.buffer_values),
            "params_mb": float(result.params_mb), "activations_mb": float(result.activations_mb),
            "model_class": type(model).__name__, "table": result.table,
        }

    # ------------------------------------------------------------------ what was learned
    def weight_statistics(self) -> dict[str, Any]:
        """Statistics and histograms of every parameter, by name."""
        if self._weights is None:
            self._weights = {n: {"shape": list(p.shape), **_stats(p.data)}
                             for n, p in self.target.model.named_parameters()}
        return self._weights

    def conv_weight(self, unit: int) -> np.ndarray:
        overview = self.overview()
        if not 0 <= unit < len(overview["units"]):
            raise ExploreError(f"no layer {unit}: this model has layers 0 to {len(overview['units']) - 1}", 404)
        path = overview["units"][unit]["path"]
        module = dict(self.target.model.named_modules()).get(path) if overview["units"][unit]["kind"] != "op" else None
        if not isinstance(module, (Conv2d, ConvTranspose2d)):
            raise ExploreError(f"layer {overview['units'][unit]['name']} is not a convolution", 404)
        return np.asarray(module.weight.data)

    def parameter(self, name: str) -> np.ndarray:
        params = dict(self.target.model.named_parameters())
        if name not in params:
            raise ExploreError(f"no parameter named {name!r}", 404)
        return np.asarray(params[name].data)


