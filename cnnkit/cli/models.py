"""``cnnkit summary`` and ``cnnkit models``: a model's layer table; the zoo with its sizes."""

from __future__ import annotations

import inspect
from pathlib import Path

from .. import models
from ..errors import UsageError
from ..explain.summary import summary
from ..io.checkpoint import load_checkpoint
from .preflight import check_step_memory
from .targets import input_shape_option, is_onnx, load_target

__all__ = ["add_commands", "summary_command", "models_command"]


def add_commands(sub) -> None:
    """Add ``summary`` and ``models`` to the ``cnnkit`` command."""
    s = sub.add_parser("summary", help="layer table: output shapes, parameters, MACs")
    s.add_argument("target", help="zoo model name, checkpoint or .onnx file")
    s.add_argument("--input-shape", type=input_shape_option, default=None, help="C,H,W (default: the model's)")
    s.add_argument("--arithmetic", action="store_true", help="show (W - F + 2P)/S + 1 and receptive fields")
    s.set_defaults(handler=summary_command)

    m = sub.add_parser("models", help="list the model zoo with parameter counts")
    m.set_defaults(handler=models_command)


def summary_command(args) -> int:
    target = args.target
    if Path(target).is_dir():
        raise UsageError(f"{target} is a folder; pass a checkpoint file in it (e.g. {Path(target) / 'last.safetensors'})")
    if is_onnx(target):
        loaded = load_target(target, args.input_shape)
        model, shape = loaded.model, loaded.input_shape
    elif Path(target).is_file() or target.endswith(".safetensors"):
        ckpt = load_checkpoint(target)
        model, extra = ckpt.build_model(), ckpt.extra
        shape = tuple(extra.get("input_shape", (1, 28, 28)))
    else:
        if target not in models.list_models():
            raise UsageError(f"unknown model {target!r}; `cnnkit models` lists the zoo")
        model = models.get_model(target)
        shape = models.default_input_shape(target)
    if args.input_shape:
        shape = args.input_shape
        check_step_memory(model, shape, 1, train=False, name=f"a forward pass of {target}", batch_option=None)
    summary(model, shape, show_arithmetic=args.arithmetic)
    return 0


def models_command(args) -> int:
    print(f"{'model':<16} {'parameters':>14}  input")
    for name in models.list_models():
        builder = getattr(models, name)
        # skip the random initialization where the constructor allows it: only sizes matter
        kwargs = {"init_weights": False} if "init_weights" in inspect.signature(builder).parameters else {}
        model = builder(**kwargs)
        count = sum(p.size for p in model.parameters())
        shape = "x".join(str(v) for v in models.default_input_shape(name))
        print(f"{name:<16} {count:>14,}  {shape}")
    return 0
