"""The zoo's registry: every model by name, with its natural input shape and its classifier head.

Each builder is registered with ``@register(name, input_shape, head)``. A model it builds,
called through ``get_model`` or directly (``models.resnet18(num_classes=10)``), carries:

- ``zoo_name``: the registered name, and ``zoo_config``: the constructor arguments that
  shape it (``num_classes``, ...), so ``cnnkit.save`` records them and ``cnnkit.load``
  rebuilds it;
- ``input_shape``: the (C, H, W) it was designed for (1x28x28, 3x32x32 or 3x224x224);
- ``head_name``: the dotted path of its classifier head, the last ``Linear`` (replace it to
  fine-tune the model on other classes: ``model.get_submodule(model.head_name)``).

Arguments that only draw the initial weights (``generator``, the deprecated ``generator``,
``init_weights``) are not part of ``zoo_config``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import rename_rng
from ..nn import Module

__all__ = ["ZooEntry", "register", "get_model", "list_models", "model_info", "default_input_shape"]

# Constructor arguments that draw the initial weights: not needed to rebuild a model.
_NOT_CONFIG = ("generator", "rng", "init_weights")


@dataclass(frozen=True)
class ZooEntry:
    """One registered model: ``name``, ``builder``, natural ``input_shape`` (C, H, W), ``head`` path."""

    name: str
    builder: Callable[..., Module]
    input_shape: tuple[int, int, int]
    head: str


_ZOO: dict[str, ZooEntry] = {}


def register(name: str, input_shape: tuple[int, int, int], head: str):
    """Register a builder as zoo model ``name``; the models it builds are labelled (see above)."""

    def wrap(builder: Callable[..., Module]) -> Callable[..., Module]:
        signature = inspect.signature(builder)

        @functools.wraps(builder)
        def build(*args, **kwargs) -> Module:
            kwargs = rename_rng(kwargs, name)
            model = builder(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            config: dict[str, Any] = {}
            for key, value in bound.arguments.items():
                if signature.parameters[key].kind is inspect.Parameter.VAR_KEYWORD:
                    config.update({k: v for k, v in value.items() if k not in _NOT_CONFIG})
                elif key not in _NOT_CONFIG:
                    config[key] = value
            model.zoo_name = name
            model.zoo_config = config
            model.input_shape = tuple(input_shape)
            model.head_name = head
            return model

        _ZOO[name] = ZooEntry(name, build, tuple(input_shape), head)
        return build

    return wrap


def list_models() -> list[str]:
    """Return the names ``get_model`` accepts, sorted."""
    return sorted(_ZOO)


def model_info(name: str) -> ZooEntry:
    """The registry entry of zoo model ``name`` (case-insensitive).

    Raises:
        ValueError: no model has that name; the message lists the names there are.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in _ZOO:
        raise ValueError(f"get_model: unknown model {name!r}; available: {', '.join(list_models())}")
    return _ZOO[key]


def get_model(name: str, **kwargs) -> Module:
    """Build the model registered as ``name`` (case-insensitive), passing ``kwargs`` on.

    Example: ``get_model("resnet18", num_classes=10, generator=np.random.default_rng(0))``.

    Raises:
        ValueError: no model has that name; the message lists the names there are.
    """
    return model_info(name).builder(**kwargs)


def default_input_shape(name: str) -> tuple[int, int, int]:
    """The (C, H, W) the zoo model ``name`` was designed for.

    Raises:
        ValueError: no model has that name.
    """
    return model_info(name).input_shape
