"""cnnkit: a convolutional neural network toolkit on NumPy, readable and fast on a CPU.

Public API: ``Tensor``/``tensor``, ``where``, ``maximum``, ``minimum`` (as torch's), ``no_grad``, ``enable_grad``,
``functional`` (as F), ``gradcheck``, ``manual_seed``, the exception types (``CnnkitError``,
``ShapeError``, ...), ``nn`` (layers; ``nn.init``, also ``cnnkit.init``: initializers),
``optim``, ``models`` (the model zoo), ``summary`` (a table of layers, shapes, parameters and
MACs), ``save`` / ``load`` (safetensors checkpoints; ``load`` rebuilds a zoo model, pruned or not).

The packages above these (``data``, ``train``, ``io``, ``explain``, ``surgery``, ``viz``,
``cli``) are imported by name (``from cnnkit.train import fit``) or on the first read of
``cnnkit.NAME`` (``cnnkit.surgery.fold_batchnorm``). ``import cnnkit`` loads
none of matplotlib, tensorboardX or Graphviz. The layers and who may import whom:
docs/architecture.md.
"""

from __future__ import annotations

import sys as _sys
from importlib import import_module as _import_module
from importlib.machinery import ModuleSpec as _ModuleSpec
from types import ModuleType as _ModuleType

# The public API below is imported on first use, not by ``import cnnkit`` itself: the
# ``cnnkit`` command's entry point (``cnnkit.cli.main``) is inside this package, and the
# ~1 s of imports (NumPy, numba, the whole library) must run inside its handler, where
# Ctrl-C ends in one line and status 130, not a traceback. First use is any name read
# from the package (``cnnkit.Tensor``, ``from cnnkit import nn``) or any import of a
# module of the library (``import cnnkit.train``, ``from cnnkit.models import resnet18``):
# those load the whole API first, in the order below, as ``import cnnkit`` did (so
# ``cnnkit.io`` has plugged its weights loader into ``cnnkit.models`` before any model
# is built). Only ``cnnkit.cli``, ``cnnkit.errors`` and ``cnnkit.__main__`` import
# without it.
_LIGHT = frozenset({"cli", "errors", "__main__"})
_loaded = False
_loading = False


def _load() -> None:
    """Import the public API (once; again after an interrupted attempt)."""
    global _loaded, _loading
    if _loaded or _loading:
        return
    _loading = True
    try:
        _import_api()
    finally:
        _loading = False


# The public API: name -> (module, attribute; None for the module itself), imported in this
# order (Tensor first: it imports the functional ops its operators call).
_API = {
    "Tensor": ("tensor", "Tensor"),
    "tensor": ("tensor", "tensor"),
    "functional": ("functional", None),
    "models": ("models", None),
    "nn": ("nn", None),
    "optim": ("optim", None),
    **{name: ("config", name) for name in (
        "default_dtype", "default_generator", "enable_grad", "get_default_dtype", "is_grad_enabled",
        "manual_seed", "no_grad")},
    **{name: ("errors", name) for name in ("CnnkitError", "GradcheckError", "ShapeError")},
    "summary": ("explain.summary", "summary"),
    "Function": ("function", "Function"),
    **{name: ("functional", name) for name in ("maximum", "minimum", "where")},
    "gradcheck": ("gradcheck", "gradcheck"),
    "load": ("io.checkpoint", "load"),
    "save": ("io.checkpoint", "save"),
    "init": ("nn.init", None),
}


def _import_api() -> None:
    global _loaded
    api = {}
    for name, (module, attribute) in _API.items():
        found = _import_module(f"{__name__}.{module}")
        api[name] = found if attribute is None else getattr(found, attribute)
    # ``import cnnkit.init`` keeps working: the initializers live in ``cnnkit.nn.init`` (as torch.nn.init).
    _sys.modules[__name__ + ".init"] = api["init"]
    globals().update(api)
    _loaded = True
    if _first_use in _sys.meta_path:
        _sys.meta_path.remove(_first_use)


class _FirstUse:
    """The import finder that loads the public API before the first module of the library."""

    @staticmethod
    def find_spec(name: str, path=None, target=None):
        parts = name.split(".")
        if parts[0] != __name__ or len(parts) == 1 or parts[1] in _LIGHT:
            return None
        _load()
        # Loaded with the API: hand that module back, else let the usual finders find it. The
        # import system would run the module's file again for its own spec (a second Tensor
        # class), so it is out of sys.modules until the stand-in loader puts it back.
        module = _sys.modules.pop(name, None)
        return None if module is None else _ModuleSpec(name, _Loaded(module))


class _Loaded:
    """The loader of a module the public API has already loaded: gives it back as it is."""

    def __init__(self, module) -> None:
        self.module, self.spec = module, module.__spec__

    def create_module(self, spec):
        return self.module

    def exec_module(self, module) -> None:
        module.__spec__ = self.spec  # the import system set the stand-in spec


class _Package(_ModuleType):
    """The package's module type: the import system sets each submodule it loads as an
    attribute of its package, and ``cnnkit.tensor`` is the function of the API, not the module."""

    def __setattr__(self, name: str, value) -> None:
        if not (name == "tensor" and _loaded and isinstance(value, _ModuleType)):
            super().__setattr__(name, value)


_first_use = _FirstUse()
_sys.meta_path.insert(0, _first_use)
_sys.modules[__name__].__class__ = _Package

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


# The library's modules that ``cnnkit.NAME`` imports when first read, as ``torch.onnx`` (the
# README writes ``cnnkit.config.num_threads``, ``cnnkit.surgery.optimize_for_inference``).
_SUBMODULES = frozenset({
    "arrays", "backend", "cli", "config", "data", "distributed", "errors", "explain", "explore",
    "files", "function", "functional", "gradcheck", "graph", "io", "models", "nn", "onnx", "optim",
    "surgery", "tensor", "train", "viz",
})


def __getattr__(name: str):
    if name.startswith("__"):  # the import system's and tools' probes (__path__, __wrapped__, ...)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if not _loaded and not _loading and (name in __all__ or name in _SUBMODULES):
        _load()
        if name in globals():
            return globals()[name]
    if name in _SUBMODULES and name != "tensor":  # ``cnnkit.tensor`` is the function, loaded above
        return _import_module(f"{__name__}.{name}")
    # The old homes of the fully convolutional conversion and of pruning, kept for code written
    # before they moved to cnnkit.surgery; importing them warns (DeprecationWarning).
    if name in ("transforms", "prune"):
        import importlib  # only for the deprecated names: importing them warns

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
