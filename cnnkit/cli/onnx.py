"""``cnnkit export``: a checkpoint (or a zoo model) as an ONNX file for any ONNX runtime.

    cnnkit export runs/lenet5/best.safetensors -o lenet5.onnx [--opset 17] [--fixed-batch] [--dynamic-size]

The file carries the checkpoint's class names and preprocessing (input shape, mean, std,
pixel scale) as metadata. ``predict``, ``summary``, ``visualize`` and ``evaluate`` take
.onnx files as they take checkpoints (``targets.load_target``).
"""

from __future__ import annotations

from pathlib import Path

from .. import onnx as cnnkit_onnx
from .main import in_range, positive_int
from .targets import INFERENCE_KEYS, input_shape_option, load_target, wrote

__all__ = ["add_commands", "export_command"]


def _opset(text: str) -> int:
    """--opset: an opset ``export`` writes, checked when parsed (onnx loads only when --opset is given)."""
    try:
        oldest, newest = cnnkit_onnx.export_opsets()
    except ImportError:  # no onnx: any positive opset here; the command then says what to install
        return positive_int(text)
    return in_range(int, oldest, newest)(text)


def add_commands(sub) -> None:
    """Add ``export`` to the ``cnnkit`` command."""
    e = sub.add_parser("export", help="write a checkpoint as an ONNX model (for onnxruntime and others)")
    e.add_argument("checkpoint", help="checkpoint file (or a zoo model name: random weights)")
    e.add_argument("-o", "--output", required=True, metavar="FILE.onnx")
    e.add_argument("--opset", type=_opset, default=17, help="ONNX opset (default 17)")
    e.add_argument("--fixed-batch", action="store_true", help="batch size 1 instead of a dynamic batch N")
    e.add_argument("--dynamic-size", action="store_true",
                   help="any image height and width (fully convolutional models, global pooling); "
                        "checked at another size before writing")
    e.add_argument("--input-shape", type=input_shape_option, default=None, help="C,H,W (default: the checkpoint's)")
    e.set_defaults(handler=export_command)


def export_command(args) -> int:
    target = load_target(args.checkpoint, args.input_shape)
    # What the checkpoint says of its inputs and task, for whoever runs the file (and for
    # `cnnkit predict/evaluate model.onnx`): the checkpoint's keys, its image spec as "image".
    preprocessing = {k: v for k, v in target.extra.items() if k in INFERENCE_KEYS and k not in ("classes", "preprocessing")}
    preprocessing.update({"mean": list(target.mean), "std": list(target.std), "scale": 1 / 255})
    if "preprocessing" in target.extra:
        preprocessing["image"] = target.extra["preprocessing"]
    path = cnnkit_onnx.export(
        target.model, Path(args.output), target.input_shape, opset=args.opset,
        dynamic_batch=not args.fixed_batch, dynamic_size=args.dynamic_size,
        class_names=target.classes or None, preprocessing=preprocessing,
    )
    params = sum(p.size for p in target.model.parameters())
    batch = "batch 1" if args.fixed_batch else "any batch size"
    C, H, W = target.input_shape
    size = f"{C}xHxW, any size (checked at {H}x{W} and larger)" if args.dynamic_size else f"{C}x{H}x{W}"
    wrote(f"{path} (opset {args.opset}, {params:,} parameters, input {size}, {batch})")
    return 0
