"""cnnkit: a convolutional neural network toolkit on NumPy, readable and fast on a CPU.

Public API: ``Tensor``/``tensor``, ``where``, ``maximum``, ``minimum`` (as torch's), ``no_grad``, ``enable_grad``,
``functional`` (as F), ``gradcheck``, ``manual_seed``, the exception types (``CnnkitError``,
``ShapeError``, ...), ``nn`` (layers; ``nn.init``, also ``cnnkit.init``: initializers),
``optim``, ``models`` (the model zoo), ``summary`` (a table of layers, shapes, parameters and
MACs), ``save`` / ``load`` (safetensors checkpoints; ``load`` rebuilds a zoo model, pruned or not).

The packages above these (``data``, ``train``, ``io``, ``explain``, ``surgery``, ``viz``,
``cli``) are imported by name: ``from cnnkit.train import fit``. ``import cnnkit`` loads
none of matplotlib, tensorboardX or Graphviz. The layers and who may import whom:
docs/architecture.md.
"""

from __future__ import annotations

import sys as _sys

# Tensor first: it imports the functional ops its operators call.
from .tensor import Tensor, tensor  # isort: skip
from . import functional, models, nn, optim
from .config import (
    default_dtype,
    default_generator,
    enable_grad,
    get_default_dtype,
    is_grad_enabled,
    manual_seed,
    no_grad,
)
from .errors import CnnkitError, GradcheckError, ShapeError
from .explain.summary import summary
from .function import Function
from .functional import maximum, minimum, where
from .gradcheck import gradcheck
from .io.checkpoint import load, save
from .nn import init

# ``import cnnkit.init`` keeps working: the initializers live in ``cnnkit.nn.init`` (as torch.nn.init).
_sys.modules[__name__ + ".init"] = init

__version__ = "0.1.0"

__all__ = [
    "CnnkitError",
    "Function",
    "GradcheckError",
    "ShapeError",
    "Tensor",
    "default_dtype",
    "default_generator",
    "enable_grad",
    "functional",
    "get_default_dtype",
    "gradcheck",
    "init",
    "is_grad_enabled",
    "load",
    "manual_seed",
    "maximum",
    "minimum",
    "models",
    "nn",
    "no_grad",
    "optim",
    "save",
    "summary",
    "tensor",
    "where",
]


def __getattr__(name: str):
    # The old homes of the fully convolutional conversion and of pruning, kept for code written
    # before they moved to cnnkit.surgery; importing them warns (DeprecationWarning).
    if name in ("transforms", "prune"):
        import importlib  # only for the deprecated names: importing them warns

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
