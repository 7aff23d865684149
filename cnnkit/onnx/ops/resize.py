"""Resampling: Resize (opset 10+) and Upsample (opset 7-9), as ``F.interpolate``.

ONNX's Resize names the source coordinate of output pixel ``o`` on an axis resized by
``s`` (given, or out / in from ``sizes``) with ``coordinate_transformation_mode`` and, for
nearest, how it rounds with ``nearest_mode``. The combinations that are PyTorch's modes:

- nearest, asymmetric (x = o / s), floor            -> ``mode='nearest'``
  (Upsample and Resize-10, whose nearest is this rule);
- nearest, half_pixel / pytorch_half_pixel (x = (o + 0.5) / s - 0.5), round_prefer_ceil
  -> ``mode='nearest-exact'`` (round(x) with halves up is floor((o + 0.5) / s)); with
  round_prefer_floor (Resize's default) the same unless some (o + 0.5) / s is a whole
  number (a tie rounded the other way), which is refused;
- linear, half_pixel (and pytorch_half_pixel when no resized axis has length 1)
  -> ``mode='bilinear'`` (``'linear'`` for 3-D), ``align_corners=False``;
- linear, align_corners -> the same with ``align_corners=True`` (with scales, only where
  in * scale is a whole number: ONNX divides by that unrounded length minus one).

The other values (cubic, antialias, tf_crop_and_resize, half_pixel_symmetric,
keep_aspect_ratio_policy, other nearest roundings, resizing N or C) raise
``OnnxUnsupportedError`` naming the attribute and its value.
"""

from __future__ import annotations

import math

import numpy as np

from ... import functional as F
from ...tensor import Tensor
from . import TRANSLATORS, Node

__all__ = ["resize", "upsample"]


def _floats(t: Tensor | None) -> list[float] | None:
    if t is None or t.data.size == 0:
        return None
    return [float(v) for v in np.asarray(t.data).reshape(-1)]


def _full(node: Node, values, rank: int, fill) -> list:
    """Scales or sizes for every axis (the ``axes`` attribute lists a subset, opset 18+)."""
    axes = node.attr("axes")
    if axes is None:
        if len(values) != rank:
            raise node.unsupported(f"{len(values)} scales/sizes for a rank-{rank} input")
        return list(values)
    full = list(fill)
    for a, v in zip(axes, values, strict=True):
        full[a % rank] = v
    return full


def _interpolate(node: Node, x: Tensor, scales, sizes, coordinates: str, nearest_mode: str, mode: str) -> Tensor:
    if x.ndim not in (3, 4):
        raise node.unsupported(f"input of shape {x.shape}: cnnkit resizes (N, C, W) and (N, C, H, W) only")
    rank = x.ndim
    if sizes is not None:
        sizes = [int(v) for v in _full(node, sizes, rank, x.shape)]
        if sizes[:2] != list(x.shape[:2]):
            raise node.unsupported(f"sizes {sizes} resize N or C (input {x.shape}): only spatial axes")
        out = sizes[2:]
        scales = [o / i for o, i in zip(out, x.shape[2:], strict=True)]
        kw = dict(size=tuple(out))
    else:
        scales = _full(node, scales, rank, [1.0] * rank)
        if scales[:2] != [1.0, 1.0]:
            raise node.unsupported(f"scales {scales} resize N or C: only spatial axes")
        scales = scales[2:]
        out = [math.floor(i * s) for i, s in zip(x.shape[2:], scales, strict=True)]
        kw = dict(scale_factor=tuple(scales))
    spatial = x.shape[2:]
    where = f"mode={mode!r}, coordinate_transformation_mode={coordinates!r}"
    if mode == "nearest":
        if coordinates == "asymmetric" and nearest_mode == "floor":
            return F.interpolate(x, mode="nearest", **kw)
        if coordinates in ("half_pixel", "pytorch_half_pixel") and nearest_mode in (
                "round_prefer_ceil", "round_prefer_floor"):
            if nearest_mode == "round_prefer_floor":
                for n, s in zip(out, scales, strict=True):
                    v = (np.arange(n) + 0.5) / s
                    if np.any(v == np.floor(v)):
                        raise node.unsupported(
                            f"{where}, nearest_mode='round_prefer_floor' with a tie (an output pixel "
                            "half-way between two inputs, rounded down): cnnkit's nearest-exact rounds up")
            return F.interpolate(x, mode="nearest-exact", **kw)
        raise node.unsupported(f"{where}, nearest_mode={nearest_mode!r}: cnnkit has nearest as asymmetric + floor "
                               "and nearest-exact as half_pixel + round_prefer_ceil")
    if mode == "linear":
        linear = "bilinear" if rank == 4 else "linear"
        if coordinates == "align_corners":
            if sizes is None and any(i * s != n for i, s, n in zip(spatial, scales, out, strict=True)):
                raise node.unsupported(
                    f"{where} with scales {tuple(scales)} that do not give whole output lengths on input "
                    f"{tuple(spatial)}: ONNX then divides by the unrounded length, PyTorch by the output size")
            return F.interpolate(x, mode=linear, align_corners=True, **kw)
        if coordinates == "half_pixel" or (
                coordinates == "pytorch_half_pixel" and all(o > 1 or i == 1 for o, i in zip(out, spatial, strict=True))):
            return F.interpolate(x, mode=linear, align_corners=False, **kw)
        raise node.unsupported(f"{where} (output size {tuple(out)}): cnnkit's linear modes are half_pixel "
                               "(pytorch_half_pixel without an output length 1) and align_corners")
    raise node.unsupported(f"mode={mode!r}: cnnkit resizes with nearest and linear only")


def resize(node: Node) -> Tensor:
    x = node.input(0)
    if node.opset < 11:
        return _interpolate(node, x, _floats(node.input(1)), None, "asymmetric", "floor", node.attr("mode", "nearest"))
    for name, default in (("antialias", 0), ("exclude_outside", 0)):
        if node.attr(name, default) != default:
            raise node.unsupported(f"{name}={node.attr(name)!r}: cnnkit supports {name}={default} only")
    policy = node.attr("keep_aspect_ratio_policy", "stretch")
    if policy != "stretch":
        raise node.unsupported(f"keep_aspect_ratio_policy={policy!r}: cnnkit supports 'stretch' only")
    scales, sizes = _floats(node.input(2)), _floats(node.input(3))
    if (scales is None) == (sizes is None):
        raise node.unsupported("expected exactly one of scales and sizes")
    return _interpolate(node, x, scales, sizes, node.attr("coordinate_transformation_mode", "half_pixel"),
                        node.attr("nearest_mode", "round_prefer_floor"), node.attr("mode", "nearest"))


def upsample(node: Node) -> Tensor:
    """Upsample (opset 7-9): asymmetric coordinates, nearest rounds down; scales an attribute before 9."""
    scales = node.attr("scales") if node.opset < 9 else _floats(node.input(1))
    return _interpolate(node, node.input(0), list(scales), None, "asymmetric", "floor", node.attr("mode", "nearest"))


TRANSLATORS.update({"Resize": resize, "Upsample": upsample})
