"""cnnkit: a convolutional neural network toolkit on NumPy, readable and fast on a CPU.

Public API: ``Tensor``/``tensor``, ``no_grad``, ``enable_grad``, ``functional`` (as F),
``gradcheck``, ``manual_seed``, ``ShapeError``, ``nn`` (layers), ``init`` (initializers), ``optim``,
``models`` (the model zoo), ``summary`` (a table of layers, shapes, parameters and MACs),
``save`` / ``load`` (safetensors checkpoints; ``load`` rebuilds a zoo model), ``transforms``
(fully convolutional conversion), ``prune`` (channel pruning).
"""

from __future__ import annotations

# Tensor first: it imports the functional ops its operators call.
from .tensor import Tensor, tensor  # isort: skip
from . import functional, init, models, nn, optim, prune, transforms
from .checkpoint import load
from .checkpoint import save_checkpoint as save
from .config import (
    default_dtype,
    default_generator,
    enable_grad,
    get_default_dtype,
    is_grad_enabled,
    manual_seed,
    no_grad,
)
from .errors import GradcheckError, ShapeError
from .function import Function
from .gradcheck import gradcheck
from .summary import summary

__version__ = "0.1.0"

__all__ = [
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
    "models",
    "nn",
    "no_grad",
    "optim",
    "prune",
    "save",
    "summary",
    "tensor",
    "transforms",
]
