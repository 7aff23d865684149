"""What computes one output number of one layer, recomputed from its inputs and weights.

``explain_neuron`` takes a ``ForwardPass`` (one forward pass kept whole, ``graph.forward_pass``), a unit and an index
into its output (channel, row, column for images; feature for vectors) and returns the
computation written out: for a convolution the window of the input it reads, the
kernel, the element-wise products, their sum with the bias; for pooling the window and
the winner (max) or the divisor (average); for a fully connected layer its largest
weighted inputs; for BatchNorm, activations, additions and concatenations the values
they combine. Every explanation carries ``value`` (the forward pass's number) and
``computed`` (the number rebuilt here, in float64), so a reader can check one against
the other.

``input_boxes`` follows a box of output positions back through the graph to every
earlier unit and to the input image: the part of each that can influence the box
(the receptive field, clipped to the image). Geometry per layer (Dumoulin and Visin,
2016): an output row i of a window layer with kernel K, stride S, padding P, dilation D
reads input rows i*S - P ... i*S - P + D*(K - 1).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import nn
from ..errors import NeuronError
from ..function import op_name
from .graph import INPUT, ForwardPass, LayerUnit
from .summary import adaptive_window, window_geometry

__all__ = ["explain_neuron", "input_boxes", "NeuronError", "Box"]

Box = tuple[int, int, int, int]  # (row0, row1, col0, col1), inclusive
_ALL: Box = (0, 0, 0, 0)         # the box of a tensor without rows and columns (a vector): all of it

_POINTWISE = {"ReLU": "max(0, x)", "LeakyReLU": "x if x > 0 else a*x", "ELU": "x if x > 0 else a*(exp(x) - 1)",
              "Sigmoid": "1 / (1 + exp(-x))", "Tanh": "tanh(x)", "Dropout": "x (identity in eval mode)",
              "Identity": "x"}
_TOP_INPUTS = 12      # fully connected: the largest weighted inputs shown one by one
_TOP_CHANNELS = 8     # convolution: input channels shown with all their products


def _sample(t) -> np.ndarray:
    """The first sample of a tensor's data, as a numpy array."""
    return np.asarray(t.data[0])


def _window_geometry(unit: LayerUnit):
    """(kernel, stride, ((pad_top, pad_bottom), (pad_left, pad_right)), dilation) of a window layer, or None."""
    if unit.module is not None:
        geometry = window_geometry(unit.module)
        return geometry[:4] if geometry is not None else None
    if unit.kind == "op" and unit.type in ("MaxPool2d", "AvgPool2d") and unit.functions:
        g = getattr(unit.functions[-1], "g", None)  # a functional pool's validated geometry
        if g is not None:
            return g.kernel, g.stride, tuple((p, p) for p in g.padding), g.dilation
    return None


def _is_adaptive(unit: LayerUnit) -> bool:
    return isinstance(unit.module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) or (
        unit.kind == "op" and unit.type in ("AdaptiveAvgPool2d", "AdaptiveMaxPool2d"))


# --------------------------------------------------------------------------- boxes
def _box_in(unit: LayerUnit, t_in, box: Box) -> Box | None:
    """The box of input ``t_in`` that output ``box`` of ``unit`` reads; None when it reads none.

    Tensors without rows and columns (vectors) have the one box ``_ALL``.
    """
    y = unit.output
    if t_in.ndim != 4:
        return _ALL                                   # a vector input: all of it
    H, W = t_in.shape[2:]
    full = (0, H - 1, 0, W - 1)
    if y.ndim != 4:
        return full                                   # Flatten, Linear: every input position
    OH, OW = y.shape[2:]
    r0, r1, c0, c1 = box
    geometry = _window_geometry(unit)
    if geometry is not None:
        (KH, KW), (SH, SW), ((PH, _), (PW, _)), (DH, DW) = geometry
        rows = (r0 * SH - PH, r1 * SH - PH + DH * (KH - 1))
        cols = (c0 * SW - PW, c1 * SW - PW + DW * (KW - 1))
    elif isinstance(unit.module, nn.ConvTranspose2d):
        m = unit.module
        (KH, KW), (SH, SW), (PH, PW), (DH, DW) = m.kernel_size, m.stride, m.padding, m.dilation
        rows = (math.ceil((r0 + PH - DH * (KH - 1)) / SH), (r1 + PH) // SH)
        cols = (math.ceil((c0 + PW - DW * (KW - 1)) / SW), (c1 + PW) // SW)
    elif (H, W) == (OH, OW):
        rows, cols = (r0, r1), (c0, c1)               # pointwise, additions, concatenations
    elif (H, W) == (1, 1):
        rows, cols = (0, 0), (0, 0)                   # a broadcast (C, 1, 1) input
    else:                                             # adaptive pools; other resizing: scale
        rows = (adaptive_window(r0, H, OH)[0], adaptive_window(r1, H, OH)[1] - 1)
        cols = (adaptive_window(c0, W, OW)[0], adaptive_window(c1, W, OW)[1] - 1)
    rows = (max(rows[0], 0), min(rows[1], H - 1))
    cols = (max(cols[0], 0), min(cols[1], W - 1))
    if rows[0] > rows[1] or cols[0] > cols[1]:
        return None                                   # the window lies in the padding
    return (rows[0], rows[1], cols[0], cols[1])


def input_boxes(trace: ForwardPass, unit: int, box: Box) -> dict[int, Box]:
    """Follow output ``box`` of ``unit`` back to every unit it depends on and to the input.

    Args:
        trace: the forward pass.
        unit: the unit's index.
        box: (row0, row1, col0, col1), inclusive, in the unit's output (for a vector output
            use (0, 0, 0, 0): every input position is reached).

    Returns:
        {unit index or INPUT: the box of that unit's output that can change the given
        outputs}, the union over every path (residual branches, concatenations).
    """
    boxes: dict[int, Box] = {unit: box}
    for u in reversed(trace.units[: unit + 1]):
        b = boxes.get(u.index)
        if b is None:
            continue
        for src, t_in in zip(u.inputs, u.input_tensors, strict=True):
            reached = _box_in(u, t_in, b) if u.output.ndim == 4 else _full(t_in)
            if reached is None:
                continue
            old = boxes.get(src)
            boxes[src] = reached if old is None else (
                min(old[0], reached[0]), max(old[1], reached[1]), min(old[2], reached[2]), max(old[3], reached[3]))
    return boxes


def _full(t) -> Box:
    if t.ndim != 4:
        return _ALL
    H, W = t.shape[2:]
    return (0, H - 1, 0, W - 1)


# --------------------------------------------------------------------------- explanations
def explain_neuron(trace: ForwardPass, unit: int, index: tuple[int, ...]) -> dict[str, Any]:
    """Rebuild output element ``index`` of unit ``unit`` from its inputs.

    Args:
        trace: the forward pass (sample 0 is explained).
        unit: the unit's index in ``trace.units``.
        index: (c, y, x) for an image-shaped output, (d,) for a vector.

    Returns:
        A dict with at least: ``unit``, ``index``, ``value`` (forward), ``computed``
        (rebuilt, or None where the layer type has no rebuild), ``kind``, ``formula``, and
        per kind the terms (see the module docstring).

    Raises:
        NeuronError: ``unit`` or ``index`` out of range.
    """
    if not 0 <= unit < len(trace.units):
        raise NeuronError(f"unit {unit} does not exist; the trace has units 0 to {len(trace.units) - 1}")
    u = trace.units[unit]
    out = _sample(u.output)
    index = tuple(int(i) for i in index)
    if len(index) != out.ndim or any(not 0 <= i < n for i, n in zip(index, out.shape, strict=False)):
        raise NeuronError(
            f"{u.name}: index {index} is outside its output of shape {tuple(out.shape)}"
        )
    result: dict[str, Any] = {
        "unit": unit, "name": u.name, "type": u.type, "index": list(index), "value": float(out[index]),
        "computed": None, "kind": "other", "formula": None,
    }
    m = u.module
    if isinstance(m, nn.Conv2d) and out.ndim == 3:
        result.update(_conv(u, index))
    elif isinstance(m, nn.Linear) or (u.kind == "op" and u.type == "Linear"):
        result.update(_linear(trace, u, index))
    elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.SumPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) \
            or (u.kind == "op" and u.type in ("MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d")):
        result.update(_pool(u, index))
    elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        result.update(_batch_norm(u, index))
    elif u.type in _POINTWISE or u.kind == "identity":
        result.update(_pointwise(u, index))
    elif u.type == "Add" and _runs(u, "AddOp"):
        result.update(_add(u, index))
    elif u.type == "Concat" and _runs(u, "ConcatOp"):
        result.update(_concat(u, index))
    elif u.type in ("Flatten", "Reshape"):
        result.update(_reshape(u, index))
    result["inputs"] = list(u.inputs)
    if out.ndim == 3:
        c, y, x = index
        boxes = input_boxes(trace, unit, (y, y, x, x))
        result["boxes"] = {str(k): list(v) for k, v in boxes.items() if k != unit}
        result["input_box"] = list(boxes[INPUT]) if INPUT in boxes else None
    else:
        boxes = input_boxes(trace, unit, (0, 0, 0, 0))
        result["boxes"] = {str(k): list(v) for k, v in boxes.items() if k != unit}
        result["input_box"] = list(boxes[INPUT]) if INPUT in boxes else None
    result["after"] = _activation_chain(trace, u, index)
    return result


def _conv(u: LayerUnit, index) -> dict[str, Any]:
    conv: nn.Conv2d = u.module
    f, i, j = index
    x = _sample(u.input_tensors[0]).astype(np.float64)                  # (C, H, W)
    w = np.asarray(conv.weight.data[f], np.float64)                      # (C/G, KH, KW)
    Cg, KH, KW = w.shape
    _, (SH, SW), ((pt, pb), (pl, pr)), (DH, DW), _ = window_geometry(conv)
    g = f // (conv.out_channels // conv.groups)
    channels = np.arange(g * Cg, (g + 1) * Cg)
    rows = i * SH - pt + np.arange(KH) * DH                              # (KH,) input rows read
    cols = j * SW - pl + np.arange(KW) * DW                              # (KW,)
    H, W = x.shape[1:]
    if conv.padding_mode == "zeros":
        inside = ((rows >= 0) & (rows < H))[:, None] & ((cols >= 0) & (cols < W))[None, :]   # (KH, KW)
        window = np.zeros((Cg, KH, KW))
        rr, cc = np.clip(rows, 0, H - 1), np.clip(cols, 0, W - 1)
        window[:] = x[channels][:, rr][:, :, cc]
        window[:, ~inside] = 0.0
    else:  # reflect / replicate / circular: the padded input holds real pixels
        mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[conv.padding_mode]
        padded = np.pad(x[channels], ((0, 0), (pt, pb), (pl, pr)), mode=mode)
        window = padded[:, (rows + pt)][:, :, (cols + pl)]
        inside = ((rows >= 0) & (rows < H))[:, None] & ((cols >= 0) & (cols < W))[None, :]
    products = window * w                                                # (C/G, KH, KW)
    per_channel = products.sum(axis=(1, 2))                              # (C/G,)
    bias = float(conv.bias.data[f]) if conv.bias is not None else 0.0
    total = float(products.sum())
    order = np.argsort(-np.abs(per_channel), kind="stable")
    shown = order[:_TOP_CHANNELS]
    rest = order[_TOP_CHANNELS:]
    return {
        "kind": "conv",
        "formula": "sum over c, kh, kw of x[c, i*S - P + kh*D, j*S - P + kw*D] * w[f, c, kh, kw] + b[f]",
        "computed": total + bias,
        "sum": total,
        "bias": bias if conv.bias is not None else None,
        "stride": list(conv.stride), "padding": [pt, pl], "dilation": list(conv.dilation),
        "kernel": [KH, KW], "groups": conv.groups, "padding_mode": conv.padding_mode,
        "rows": rows.tolist(), "cols": cols.tolist(), "inside": inside.tolist(),
        "window_box": [int(max(rows.min(), 0)), int(min(rows.max(), H - 1)),
                       int(max(cols.min(), 0)), int(min(cols.max(), W - 1))],
        "channels": [
            {"channel": int(channels[k]), "x": window[k].tolist(), "w": w[k].tolist(),
             "products": products[k].tolist(), "sum": float(per_channel[k])}
            for k in shown
        ],
        "other_channels": {"count": int(len(rest)), "sum": float(per_channel[rest].sum())},
        "input_channels": int(Cg),
    }


def _source_shape(trace: ForwardPass, u: LayerUnit) -> list[int] | None:
    """For a vector input made by flattening an image, the image's (C, H, W)."""
    src = u.inputs[0] if u.inputs else None
    if src is None or src == INPUT:
        return None
    prev = trace.units[src]
    if prev.type in ("Flatten", "Reshape") and prev.input_tensors and prev.input_tensors[0].ndim == 4:
        return list(prev.input_tensors[0].shape[1:])
    return None


def _linear(trace: ForwardPass, u: LayerUnit, index) -> dict[str, Any]:
    (d,) = index[-1:]
    if u.module is not None:
        w_all, b_all = u.module.weight.data, (u.module.bias.data if u.module.bias is not None else None)
    else:
        op = u.functions[-1]
        w_all = op.inputs[1].data
        b_all = op.inputs[2].data if len(op.inputs) > 2 else None
    x = _sample(u.input_tensors[0]).astype(np.float64)
    if x.ndim != 1:
        return {"kind": "other", "formula": "y = x @ W^T + b (over the last axis)"}
    w = np.asarray(w_all[d], np.float64)                                 # (D_in,)
    products = x * w
    bias = float(b_all[d]) if b_all is not None else 0.0
    order = np.argsort(-np.abs(products), kind="stable")
    top, rest = order[:_TOP_INPUTS], order[_TOP_INPUTS:]
    source = _source_shape(trace, u)
    return {
        "kind": "linear", "formula": "sum over k of x[k] * w[d, k] + b[d]",
        "computed": float(products.sum()) + bias, "sum": float(products.sum()),
        "bias": bias if b_all is not None else None, "in_features": int(x.size),
        "source_shape": source,
        "terms": [
            {"input": int(k), "source": [int(v) for v in np.unravel_index(k, source)] if source else None,
             "x": float(x[k]), "w": float(w[k]), "product": float(products[k])}
            for k in top
        ],
        "other_inputs": {"count": int(len(rest)), "sum": float(products[rest].sum())},
    }


def _pool(u: LayerUnit, index) -> dict[str, Any]:
    c, i, j = index
    x = _sample(u.input_tensors[0]).astype(np.float64)[c]                 # (H, W)
    H, W = x.shape
    m = u.module
    is_max = isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) or u.type in ("MaxPool2d", "AdaptiveMaxPool2d")
    if _is_adaptive(u):
        OH, OW = u.output.shape[2:]
        r0, r1 = adaptive_window(i, H, OH)
        c0, c1 = adaptive_window(j, W, OW)
        rows, cols = np.arange(r0, r1), np.arange(c0, c1)
        window = x[r0:r1, c0:c1]
        inside = np.ones(window.shape, bool)
        divisor = window.size
        geometry = {"adaptive": True, "output_size": [int(OH), int(OW)]}
    else:
        (KH, KW), (SH, SW), ((PH, _), (PW, _)), (DH, DW) = _window_geometry(u)
        rows = i * SH - PH + np.arange(KH) * DH
        cols = j * SW - PW + np.arange(KW) * DW
        inside = ((rows >= 0) & (rows < H))[:, None] & ((cols >= 0) & (cols < W))[None, :]
        window = x[np.clip(rows, 0, H - 1)][:, np.clip(cols, 0, W - 1)]
        geometry = {"kernel": [KH, KW], "stride": [SH, SW], "padding": [PH, PW], "dilation": [DH, DW]}
        divisor = None
        if not is_max:
            # PyTorch's avg_pool2d divisor: the window clipped to the padded input
            # (count_include_pad) or to the input; divisor_override replaces both.
            h0, w0 = i * SH - PH, j * SW - PW
            h1, w1 = min(h0 + KH, H + PH), min(w0 + KW, W + PW)
            padded_area = (h1 - h0) * (w1 - w0)
            real_area = (min(h1, H) - max(h0, 0)) * (min(w1, W) - max(w0, 0))
            if isinstance(m, nn.SumPool2d):
                divisor = 1
            elif m is not None and getattr(m, "divisor_override", None):
                divisor = int(m.divisor_override)
            elif m is None or getattr(m, "count_include_pad", True):
                divisor = padded_area
            else:
                divisor = real_area
            # padded positions beyond the padded input (ceil_mode overhang) are outside the sum
    result: dict[str, Any] = {
        "rows": rows.tolist(), "cols": cols.tolist(), "inside": inside.tolist(),
        "window": [[float(v) if ok else None for v, ok in zip(r, m, strict=True)] for r, m in zip(window, inside, strict=True)],
        **geometry,
        "window_box": [int(max(rows.min(), 0)), int(min(rows.max(), H - 1)),
                       int(max(cols.min(), 0)), int(min(cols.max(), W - 1))],
        "channel": int(c),
    }
    if is_max:
        masked = np.where(inside, window, -np.inf)
        k = int(np.argmax(masked))                                       # the first maximum
        result.update(kind="maxpool", formula="max over the window (padding counts as -inf)",
                      computed=float(masked.reshape(-1)[k]), winner=[int(v) for v in np.unravel_index(k, masked.shape)])
    else:
        total = float(np.where(inside, window, 0.0).sum())
        result.update(kind="avgpool", formula="sum over the window / divisor" if divisor != 1 else "sum over the window",
                      computed=total / divisor, sum=total, divisor=int(divisor))
    return result


def _batch_norm(u: LayerUnit, index) -> dict[str, Any]:
    m = u.module
    c = index[0]
    x = float(_sample(u.input_tensors[0])[index])
    mean = m.running_mean.data if m.running_mean is not None else None
    var = m.running_var.data if m.running_var is not None else None
    if mean is None or var is None:
        return {"kind": "other", "formula": "batch statistics (no running statistics are tracked)"}
    mu, v = float(mean[c]), float(var[c])
    gamma = float(m.weight.data[c]) if m.weight is not None else 1.0
    beta = float(m.bias.data[c]) if m.bias is not None else 0.0
    x_hat = (x - mu) / math.sqrt(v + m.eps)
    return {"kind": "batchnorm", "formula": "(x - mean) / sqrt(var + eps) * gamma + beta",
            "x": x, "mean": mu, "var": v, "eps": float(m.eps), "gamma": gamma, "beta": beta,
            "x_hat": x_hat, "computed": x_hat * gamma + beta}


def _pointwise(u: LayerUnit, index) -> dict[str, Any]:
    x = float(_sample(u.input_tensors[0])[index]) if u.input_tensors else None
    if x is None:
        return {}
    m = u.module
    name = "Identity" if u.kind == "identity" else u.type
    computed = {
        "ReLU": lambda v: max(0.0, v),
        "LeakyReLU": lambda v: v if v > 0 else getattr(m, "negative_slope", 0.01) * v,
        "ELU": lambda v: v if v > 0 else getattr(m, "alpha", 1.0) * math.expm1(v),
        "Sigmoid": lambda v: 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v)),
        "Tanh": math.tanh,
        "Identity": lambda v: v,
        "Dropout": lambda v: v,
    }.get(name)
    return {"kind": "pointwise", "formula": _POINTWISE.get(name, name), "x": x,
            "computed": computed(x) if computed else None}


def _runs(u: LayerUnit, op: str) -> bool:
    """The unit is that one op (an op outside any layer, or a node that runs only it)."""
    return len(u.functions) == 1 and op_name(u.functions[0]) == op


def _add(u: LayerUnit, index) -> dict[str, Any]:
    terms = []
    for src, t in zip(u.inputs, u.input_tensors, strict=True):
        a = _sample(t)
        # broadcasting: an input with a size-1 axis contributes its only element along it
        k = tuple(0 if n == 1 else i for i, n in zip(index[-a.ndim:], a.shape, strict=True)) if a.ndim else ()
        terms.append({"input": src, "value": float(a[k]) if a.ndim else float(a)})
    if len(terms) == 1:  # x + x, or x + a constant
        terms.append({"input": None, "value": float(_sample(u.output)[index]) - terms[0]["value"]})
    return {"kind": "add", "formula": "a + b", "terms": terms, "computed": float(sum(t["value"] for t in terms))}


def _concat(u: LayerUnit, index) -> dict[str, Any]:
    op = u.functions[-1]
    full_axis = op.axis % op.inputs[0].ndim                              # with the batch axis
    axis = full_axis - 1                                                  # in ``index`` (sample 0)
    offset, position = 0, index[axis]
    for tensor in op.inputs:
        n = tensor.shape[full_axis]
        if position < offset + n:
            src = next((s for s, t in zip(u.inputs, u.input_tensors, strict=True) if t is tensor), None)
            local = list(index)
            local[axis] = position - offset
            value = float(_sample(tensor)[tuple(local)])
            return {"kind": "concat", "formula": "copies one element of one input", "source": src,
                    "source_index": local, "offset": offset, "axis": axis, "computed": value}
        offset += n
    return {"kind": "concat"}


def _reshape(u: LayerUnit, index) -> dict[str, Any]:
    x = _sample(u.input_tensors[0])
    flat = int(np.ravel_multi_index(index, _sample(u.output).shape))
    src = [int(v) for v in np.unravel_index(flat, x.shape)]
    return {"kind": "reshape", "formula": "the same number, re-indexed", "source_index": src,
            "computed": float(x[tuple(src)])}


def _activation_chain(trace: ForwardPass, u: LayerUnit, index) -> list[dict[str, Any]]:
    """The same element through the pointwise units that follow (BatchNorm, activations)."""
    chain = []
    current = u
    while True:
        users = [v for v in trace.units if current.index in v.inputs]
        if len(users) != 1:
            break
        v = users[0]
        pointwise = v.type in _POINTWISE or v.kind == "identity" or isinstance(v.module, (nn.BatchNorm2d, nn.BatchNorm1d))
        if not pointwise or len(v.inputs) != 1 or v.shape != current.shape:
            break
        step = {"unit": v.index, "name": v.name, "type": v.type, "value": float(_sample(v.output)[index])}
        step.update({k: val for k, val in explain_step(v, index).items() if k in ("formula", "computed")})
        chain.append(step)
        current = v
        if len(chain) >= 4:
            break
    return chain


def explain_step(v: LayerUnit, index) -> dict[str, Any]:
    """The formula and the rebuilt value of one pointwise unit (BatchNorm or an activation)."""
    if isinstance(v.module, (nn.BatchNorm2d, nn.BatchNorm1d)):
        return _batch_norm(v, index)
    return _pointwise(v, index)
