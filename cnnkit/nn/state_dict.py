"""A module's state: its parameters and persistent buffers by dotted name, and loading them back.

``Module.state_dict`` and ``Module.load_state_dict`` are these, on the module tree that
``named_modules`` walks; each module lists its own entries (``_own_state``), says which
may be absent (``_optional_state_keys``) and takes an assigned value (``_assign_state``).
A load checks every value (shape, dtype kind, finiteness, a writeable destination) before
it copies any, so a failed load changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any, NamedTuple

import numpy as np

from ..backend import as_numpy
from ..errors import StateDictError
from ..tensor import Tensor

__all__ = ["IncompatibleKeys", "collect_state", "load_state", "load_problem"]


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` did not match: keys the model has but the state lacks, and back."""

    missing_keys: list[str]
    unexpected_keys: list[str]

    def __repr__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return f"IncompatibleKeys(missing_keys={self.missing_keys}, unexpected_keys={self.unexpected_keys})"


def collect_state(module, state: MutableMapping[str, Any], prefix: str, keep_vars: bool) -> MutableMapping[str, Any]:
    """Add ``module``'s entries to ``state`` under ``prefix`` (copies of the arrays unless ``keep_vars``)."""
    for module_prefix, sub in module.named_modules(remove_duplicate=False):
        dotted = f"{module_prefix}." if module_prefix else ""
        for name, value in sub._own_state():
            state[prefix + dotted + name] = value if keep_vars else as_numpy(_array(value)).copy()
    return state


def load_state(module, state_dict: Mapping[str, Any], strict: bool, assign: bool) -> IncompatibleKeys:
    """``module.load_state_dict(state_dict, strict, assign)``: every value checked, then copied (or assigned)."""
    targets: dict[str, Any] = {}
    owners: dict[str, tuple[Any, str]] = {}
    optional: set[str] = set()
    for module_prefix, sub in module.named_modules(remove_duplicate=False):
        dotted = f"{module_prefix}." if module_prefix else ""
        for name, value in sub._own_state():
            targets[dotted + name] = value
            owners[dotted + name] = (sub, name)
        optional.update(dotted + name for name in sub._optional_state_keys())
    missing = [key for key in targets if key not in state_dict and key not in optional]
    unexpected = [key for key in state_dict if key not in targets]
    mismatched, invalid, sources = [], [], {}
    for key, target in targets.items():
        if key not in state_dict:
            continue
        value = state_dict[key]
        try:
            source = as_numpy(value.data) if isinstance(value, Tensor) else np.asarray(value)
        except (ValueError, TypeError) as e:
            invalid.append((key, f"not an array ({e})"))
            continue
        destination = _array(target)
        if source.shape != destination.shape:
            mismatched.append((key, source.shape, destination.shape))
            continue
        if not assign and not getattr(getattr(destination, "flags", None), "writeable", True):
            invalid.append((key, "is read-only: the model's weights are frozen for inference "
                                 "(optimize_for_inference); load into the model it was made from, "
                                 "then optimize that again"))
            continue
        problem = load_problem(source, np.asarray(destination).dtype)
        if problem:
            invalid.append((key, problem))
        sources[key] = source
    if mismatched or invalid or (strict and (missing or unexpected)):
        raise StateDictError(type(module).__name__, missing, unexpected, mismatched, invalid)
    for key, source in sources.items():
        if assign:
            owner, name = owners[key]
            owner._assign_state(name, state_dict[key], source)
            continue
        destination = _array(targets[key])
        destination[...] = source.astype(destination.dtype, copy=False)
    return IncompatibleKeys(missing, unexpected)


def load_problem(source: np.ndarray, dtype: np.dtype) -> str | None:
    """Why ``source`` may not be copied into an array of ``dtype`` (None: it may)."""
    kind = source.dtype.kind
    if dtype.kind == "f":
        if kind != "f":
            return (f"dtype {source.dtype} where floating point ({dtype}) is expected; an integer or "
                    "other array in place of weights means a corrupt or mislabelled file")
        if not np.isfinite(source).all():
            nan, inf = int(np.isnan(source).sum()), int(np.isinf(source).sum())
            parts = [p for p in (f"{nan} NaN" if nan else "", f"{inf} Inf" if inf else "") if p]
            return f"holds non-finite values ({' and '.join(parts)} of {source.size})"
        return None
    if dtype.kind in "iu":
        # whole numbers stored as floats load (a counter after Module.type(float64), as PyTorch's copy)
        info = np.iinfo(dtype)
        whole = (kind == "f" and bool(np.isfinite(source).all()) and bool((source == np.trunc(source)).all())
                 and info.min <= source.min(initial=0) and source.max(initial=0) <= info.max)
        if kind not in "iub" and not whole:
            return f"dtype {source.dtype} where an integer ({dtype}) is expected"
        return None
    if dtype.kind == "b" and kind != "b":
        return f"dtype {source.dtype} where bool is expected"
    return None


def _array(value: Any) -> Any:
    return value.data if isinstance(value, Tensor) else value
