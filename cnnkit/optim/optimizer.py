"""Optimizer: the base class that holds parameter groups and per-parameter state.

The layout follows ``torch.optim.Optimizer`` so that code and checkpoints carry over:

- ``param_groups`` is a list of dicts; each holds ``'params'`` (a list of Tensors) and
  that group's hyper-parameters (``'lr'``, ``'momentum'``, ...). Keys a group does not
  set come from ``defaults``.
- ``state`` maps each parameter (the Tensor itself) to a dict of its buffers
  (``'step'``, ``'exp_avg'``, ...), created on the parameter's first update.
- ``state_dict()`` replaces the Tensors by their position (0, 1, 2, ... over all groups
  in order) and deep-copies every array, so the saved dict never aliases live state.

A subclass implements ``_update_group(group)`` (the math of one step for one group) and
``_validate(group)`` (checks of its hyper-parameters, run for the defaults and for every
group added). Updates are written in place into ``p.data``, never into a new array:
other code (a flat parameter buffer, a view a layer keeps) may hold views of it. ``step``
counts those writes (``function.note_write``), so a backward through a graph recorded before
the step, which saved the old weights, is refused as PyTorch refuses it.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from ..config import enable_grad
from ..errors import ShapeError
from ..function import note_write
from ..tensor import Tensor

__all__ = ["Optimizer", "ParamsT"]

# What an optimizer accepts: Tensors, or dicts {'params': Tensors, <hyper-parameter>: value}.
ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]

# Large parameters are updated in slices of this many elements. Each optimizer makes
# several passes (moments, denominator, update); on a slice that fits in the L2 cache
# those passes cost one trip to memory instead of five, which halves Adam's time on a
# 25M-element weight. Temporaries are slices of one small cached buffer, so a step
# allocates nothing.
_CHUNK = 1 << 16


def implementation_flags(name: str, differentiable: bool) -> None:
    """Check PyTorch's implementation keywords (foreach, fused, capturable, differentiable).

    foreach, fused and capturable choose among PyTorch's implementations of one update;
    cnnkit has one (NumPy, in place), so they are accepted and change nothing.
    differentiable=True, a step autograd can differentiate through, is not supported.
    """
    if differentiable:
        raise NotImplementedError(
            f"{name}(differentiable=True) is not supported: cnnkit's steps update .data outside the graph"
        )


class Optimizer:
    """Base class of the optimizers: parameter groups, state and (de)serialization.

    Args:
        params: an iterable of Tensors to optimize, or of dicts that define parameter
            groups (``{'params': [...], 'lr': 0.1}``); a group's missing keys take the
            values in ``defaults``.
        defaults: the hyper-parameters of the optimizer, by name.

    Raises:
        TypeError: ``params`` is a single Tensor, a set, or holds something that is
            not a Tensor.
        ValueError: ``params`` is empty, a parameter is in two groups, a parameter is
            not a leaf, or a hyper-parameter is out of range.
    """

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        self._scratch: dict[tuple[np.dtype, int], np.ndarray] = {}
        self._validate(self.defaults)

        if isinstance(params, Tensor):
            raise TypeError(
                f"{type(self).__name__} expects an iterable of Tensors or dicts, "
                f"got a single Tensor of shape {params.shape}; wrap it in a list"
            )
        if isinstance(params, (set, frozenset)):
            raise TypeError(
                f"{type(self).__name__} needs parameters in a fixed order (a list), got a set; "
                "the order defines the indices of state_dict()"
            )
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(group)

    # ------------------------------------------------------------------ the step
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; return the closure's loss.

        Args:
            closure: optional function that clears the gradients, recomputes the loss,
                calls ``backward()`` and returns the loss (run with grad mode on).

        Returns:
            The closure's return value, or None without a closure.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._update_group(group)
            # written in place: a graph that saved one refuses its backward
            note_write(*[p.data for p in group["params"] if p.grad is not None])
        return loss

    def _update_group(self, group: dict[str, Any]) -> None:
        """Apply one step to the parameters of ``group`` that have a ``.grad``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _update_group")

    def _validate(self, group: dict[str, Any]) -> None:
        """Raise ValueError when a hyper-parameter of ``group`` is out of range."""

    def _check(self, ok: bool, what: str, value: Any) -> None:
        """Raise ``ValueError("<Optimizer> expects <what>, got <value>")`` unless ``ok``."""
        if not ok:
            raise ValueError(f"{type(self).__name__} expects {what}, got {value!r}")

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of all parameters.

        Args:
            set_to_none: set ``.grad`` to None (frees memory, and the next step skips
                parameters that get no gradient); False fills the arrays with zeros.
        """
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad[...] = 0

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters with its own hyper-parameters (e.g. a new head's lr).

        Args:
            param_group: ``{'params': Tensor or iterable of Tensors, **hyper-parameters}``;
                missing hyper-parameters take the values in ``defaults``.

        Raises:
            TypeError: ``param_group`` is not a dict, or ``params`` is a set or holds
                something other than Tensors.
            ValueError: a parameter is already in a group (or twice in this one), is
                not a leaf, or a hyper-parameter is out of range.
        """
        name = type(self).__name__
        if not isinstance(param_group, dict):
            raise TypeError(f"{name}.add_param_group expects a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        params = group.get("params")
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(
                f"{name} needs parameters in a fixed order (a list), got a set; "
                "the order defines the indices of state_dict()"
            )
        elif params is None:
            raise ValueError(f"{name}.add_param_group expects a 'params' key, got keys {sorted(group)}")
        params = list(params)
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{name} can optimize only Tensors, got {type(p).__name__} at position {i}")
            if not p.is_leaf:
                raise ValueError(f"{name} can optimize only leaf Tensors; position {i} was made by an op")
        group["params"] = params

        for key, default in self.defaults.items():
            group.setdefault(key, default)
        self._validate(group)

        seen = {id(p) for g in self.param_groups for p in g["params"]}
        new = {id(p) for p in params}
        if len(new) != len(params):
            raise ValueError(f"{name}: a parameter group holds the same parameter twice")
        if seen & new:
            raise ValueError(f"{name}: some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Return the optimizer state with parameters replaced by their indices.

        Returns:
            ``{'state': {index: {name: array or step}}, 'param_groups': [{hyper-parameters,
            'params': [index, ...]}]}``; indices count the parameters over all groups in
            order (PyTorch's layout). Arrays are copies.
        """
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {
            index[id(p)]: {k: _copy(v) for k, v in values.items()}
            for p, values in self.state.items()
            if values and id(p) in index
        }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state and hyper-parameters saved by ``state_dict()``.

        The optimizer must have been built over the same parameters, in the same groups
        and order. Arrays are copied and cast to their parameter's dtype, so later steps
        do not write into ``state_dict``. A PyTorch optimizer's state_dict whose tensors
        were converted with ``.numpy()`` (or that NumPy can read) loads the same way.

        Raises:
            ValueError: the number of groups, the size of a group or a state index does
                not match this optimizer.
            ShapeError: a saved buffer's shape differs from its parameter's.
        """
        name = type(self).__name__
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{name}.load_state_dict: the saved state has {len(saved_groups)} parameter "
                f"groups, this optimizer has {len(self.param_groups)}"
            )
        by_index: dict[int, Tensor] = {}
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups, strict=True)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"{name}.load_state_dict: saved parameter group {i} has "
                    f"{len(saved['params'])} parameters, this optimizer's has {len(group['params'])}"
                )
            by_index.update(zip(saved["params"], group["params"], strict=True))

        state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        for index, values in state_dict["state"].items():
            index = int(index)  # JSON round trips turn the keys into strings
            if index not in by_index:
                raise ValueError(
                    f"{name}.load_state_dict: state for parameter index {index!r}, which "
                    f"no parameter group lists (known indices: 0..{len(by_index) - 1})"
                )
            p = by_index[index]
            state[p] = {k: _restore(v, k, p, index, name) for k, v in values.items()}

        for group, saved in zip(self.param_groups, saved_groups, strict=True):
            group.update({k: copy.deepcopy(v) for k, v in saved.items() if k != "params"})
        self.state = state

    # ------------------------------------------------------------------ helpers for subclasses
    @staticmethod
    def _chunks(*arrays: np.ndarray | None) -> Iterator[tuple[Any, ...]]:
        """Yield matching flat slices of same-size arrays, ``_CHUNK`` elements at a time.

        None entries stay None. Small arrays, and any set holding a non-contiguous array
        (whose flat view would be a copy, losing in-place writes), come back whole.
        """
        size = arrays[0].size
        if size <= _CHUNK or not all(a is None or a.flags.c_contiguous for a in arrays):
            yield arrays
            return
        flats = [None if a is None else a.reshape(-1) for a in arrays]
        for start in range(0, size, _CHUNK):
            stop = start + _CHUNK
            yield tuple(None if f is None else f[start:stop] for f in flats)

    def _buffer(self, like: np.ndarray, slot: int) -> np.ndarray:
        """Return an uninitialized work array shaped like ``like`` (contents are garbage).

        Arrays of up to ``_CHUNK`` elements are views of a cached buffer, one per dtype
        and ``slot``: two live temporaries need two slots.
        """
        if like.size > _CHUNK or type(like) is not np.ndarray:
            return np.empty_like(like)
        key = (like.dtype, slot)
        buffer = self._scratch.get(key)
        if buffer is None:
            buffer = self._scratch[key] = np.empty(_CHUNK, dtype=like.dtype)
        return buffer[: like.size].reshape(like.shape)

    def _effective_grad(self, g: np.ndarray, p: np.ndarray, weight_decay: float, maximize: bool):
        """Return ``(-g if maximize else g) + weight_decay * p``, reusing ``g`` when it is that.

        The gradient array itself is never modified (it belongs to the parameter).
        """
        if weight_decay == 0:
            return np.negative(g, out=self._buffer(p, 0)) if maximize else g
        out = np.multiply(p, weight_decay, out=self._buffer(p, 0))
        if maximize:
            return np.subtract(out, g, out=out)
        return np.add(out, g, out=out)

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key != "params":
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


def _copy(value: Any) -> Any:
    """Copy a state value so the copy shares no memory with the original."""
    if isinstance(value, np.ndarray):
        return value.copy()
    return copy.deepcopy(value)


def _restore(value: Any, key: str, p: Tensor, index: int, name: str) -> Any:
    """Turn a saved state value back into live state for parameter ``p``."""
    if key == "step":
        return int(float(value))  # PyTorch saves the step as a float tensor
    if value is None or isinstance(value, (bool, int, float)):
        return value
    array = np.array(value, copy=True)  # also reads torch tensors and lists
    if array.dtype.kind == "f":
        array = array.astype(p.dtype, copy=False)
    if array.shape != p.shape:
        raise ShapeError(
            f"{name}.load_state_dict: state '{key}' of parameter {index} has shape "
            f"{array.shape}, the parameter has shape {p.shape}"
        )
    return array


def _lerp(start: np.ndarray, end: np.ndarray, weight: float, tmp: np.ndarray) -> None:
    """In place: ``start = start + weight * (end - start)``, using ``tmp`` as work space.

    PyTorch's ``lerp_`` switches to ``end - (1 - weight) * (end - start)`` for
    weight >= 0.5 (exact at weight = 1); both branches are kept so the rounding
    matches it.
    """
    diff = np.subtract(end, start, out=tmp)
    if weight < 0.5:
        diff *= weight
        start += diff
    else:
        diff *= 1 - diff.dtype.type(weight)  # 1 - weight in the array's precision
        np.subtract(end, diff, out=start)
