"""Module: the base of every layer and model.

A Module owns three ordered registries, filled by plain attribute assignment:

- ``_parameters``: ``Parameter``s (learnable; ``parameters()``, ``state_dict()``);
- ``_buffers``: arrays or grad-free Tensors that are state but not learned (BatchNorm's
  running statistics), added with ``register_buffer``;
- ``_modules``: sub-modules, whose names build the dotted paths of ``named_parameters()``
  and ``state_dict()`` keys (``features.0.weight``), exactly as in PyTorch.

``module(x)`` runs the forward pre-hooks, ``forward`` and the forward hooks. When a
``ShapeError`` escapes ``forward``, each enclosing ``Module.__call__`` rewrites its message
so the user sees it once, prefixed with the dotted path from the outermost module called
to the layer that failed: ``features.3 (Conv2d): expected input with 3 channels ...``.
"""

from __future__ import annotations

import itertools
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

import numpy as np

from .. import config
from ..errors import ShapeError, StateDictError
from ..tensor import Tensor, to_arguments
from .backward_hooks import with_backward_hooks
from .casting import cast_state, module_dtype, type_name_dtype
from .parameter import Parameter
from .state_dict import IncompatibleKeys, collect_state, load_state

__all__ = ["Module", "RemovableHandle", "IncompatibleKeys", "StateDictError", "HOOK_REGISTRIES", "has_hooks"]


class RemovableHandle:
    """Returned by ``register_forward_hook``; ``handle.remove()`` unregisters the hook.

    Also a context manager: the hook is removed on leaving the ``with`` block.
    """

    _ids = itertools.count()

    def __init__(self, hooks: dict):
        self._hooks = hooks
        self.id = next(RemovableHandle._ids)

    def remove(self) -> None:
        self._hooks.pop(self.id, None)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()


# The attribute names of a module's hook registries (dicts, created in ``Module.__init__``): the
# one list of what "hooked" means. ``has_hooks`` (``nn.norm``'s fusion gates) reads it;
# ``Module.__call__`` spells the four lookups out inline, because a call of ``has_hooks`` there
# cost ~40 ns, 8% of a bare module call (``benchmarks/call_overhead.py``, Dec 6), and
# tests/nn/test_module.py checks that it looks up exactly these names.
HOOK_REGISTRIES = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def has_hooks(module: Module) -> bool:
    """True when any of ``module``'s hook registries (``HOOK_REGISTRIES``) holds a hook."""
    state = module.__dict__
    return any(map(state.get, HOOK_REGISTRIES))


Buffer = Any  # a numpy (or cupy) array, or a Tensor without grad


class Module:
    """Base class of layers and models: subclass it, assign layers in ``__init__``, write ``forward``.

    Example:
        class Net(Module):
            def __init__(self):
                super().__init__()
                self.conv = Conv2d(1, 6, 5)
                self.fc = Linear(6 * 24 * 24, 10)

            def forward(self, x):
                return self.fc(F.flatten(F.relu(self.conv(x)), 1))

    Attributes:
        training: True in training mode (Dropout drops, BatchNorm uses batch statistics);
            set recursively by ``train()`` and ``eval()``.
    """

    training: bool

    def __init__(self) -> None:
        # object.__setattr__: our own __setattr__ needs these registries to exist first.
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())
        for name in HOOK_REGISTRIES:
            object.__setattr__(self, name, OrderedDict())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    # ------------------------------------------------------------------ calling
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Without hooks (the usual call) straight to ``forward``: one frame and one lookup per
        # hook list, ~70 module calls a ResNet-18 pass; copies of the hook lists only where there
        # are hooks. ``has_hooks(self)`` written out: the names of ``HOOK_REGISTRIES``, inline
        # for speed (see there; a test keeps the two the same).
        state = self.__dict__
        if not (state.get("_forward_pre_hooks") or state.get("_forward_hooks") or state.get("_backward_hooks")
                or state.get("_backward_pre_hooks")):
            try:
                return self.forward(*args, **kwargs)
            except ShapeError as error:
                _add_module_path(error, self)
                raise
        try:
            if self._forward_pre_hooks:
                for hook in list(self._forward_pre_hooks.values()):
                    result = hook(self, args)
                    if result is not None:
                        args = result if isinstance(result, tuple) else (result,)
            backward_hooks = self.__dict__.get("_backward_hooks")
            pre_hooks = self.__dict__.get("_backward_pre_hooks")
            if (backward_hooks or pre_hooks) and config.are_backward_hooks_enabled():
                return with_backward_hooks(self, list((backward_hooks or {}).values()), args,
                                           lambda a: self._forward_hooked(a, kwargs),
                                           pre_hooks=list((pre_hooks or {}).values()))
            return self._forward_hooked(args, kwargs)
        except ShapeError as error:
            _add_module_path(error, self)
            raise

    def _forward_hooked(self, args: tuple, kwargs: dict) -> Any:
        """``forward``, then the forward hooks."""
        output = self.forward(*args, **kwargs)
        if self._forward_hooks:
            for hook in list(self._forward_hooks.values()):
                result = hook(self, args, output)
                if result is not None:
                    output = result
        return output

    def register_forward_pre_hook(self, hook: Callable) -> RemovableHandle:
        """Call ``hook(module, inputs)`` before ``forward``; a non-None result replaces the inputs.

        ``inputs`` is the tuple of positional arguments; a returned non-tuple is wrapped
        in a one-element tuple.
        """
        handle = RemovableHandle(self._forward_pre_hooks)
        self._forward_pre_hooks[handle.id] = hook
        return handle

    def register_forward_hook(self, hook: Callable) -> RemovableHandle:
        """Call ``hook(module, inputs, output)`` after ``forward``; a non-None result replaces the output.

        Use it to capture feature maps:
            maps = {}
            handle = model.features[0].register_forward_hook(lambda m, i, o: maps.update(conv1=o))
            model(x); handle.remove()
        """
        handle = RemovableHandle(self._forward_hooks)
        self._forward_hooks[handle.id] = hook
        return handle

    def register_full_backward_hook(self, hook: Callable) -> RemovableHandle:
        """Call ``hook(module, grad_input, grad_output)`` in backward; a non-None result replaces grad_input.

        As PyTorch's: ``grad_input`` holds the gradient of each positional argument of the
        call (None for one that is not a tensor, zeros for a tensor that needs none),
        ``grad_output`` that of each output; NumPy arrays, as ``Tensor.grad``. The hook runs once all of a call's input
        gradients are known (``nn/backward_hooks.py``); a returned tuple (of the same length)
        is what flows on to the inputs. When no input requires grad it runs with grad_input
        all None once grad_output is known, and must return None.
        """
        handle = RemovableHandle(self._backward_hooks)
        self._backward_hooks[handle.id] = hook
        return handle

    def register_full_backward_pre_hook(self, hook: Callable) -> RemovableHandle:
        """Call ``hook(module, grad_output)`` in backward, before the gradients of the module's
        inputs and parameters are computed; a non-None result replaces grad_output.

        As PyTorch's: ``grad_output`` holds the gradient of each output of the call (None for
        one that is not a tensor requiring grad, or that backward did not reach), NumPy arrays.
        A returned tuple (of the same length, each entry an array of its output's shape or
        None for no gradient) is what flows on into the module and what the next pre-hook and
        the full backward hooks see. Hooks run in the order registered.
        """
        handle = RemovableHandle(self.__dict__.setdefault("_backward_pre_hooks", OrderedDict()))
        self._backward_pre_hooks[handle.id] = hook
        return handle

    # ------------------------------------------------------------------ registration
    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign a Parameter before Module.__init__() is called")
            self._forget(name, keep=params)
            params[name] = value
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} as parameter {name!r} "
                    "(a Parameter or None is expected)"
                )
            params[name] = None
        elif isinstance(value, Module):
            if params is None:
                raise AttributeError("cannot assign a sub-module before Module.__init__() is called")
            self._forget(name, keep=self._modules)
            self._modules[name] = value
        elif params is not None and name in self._modules:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} as sub-module {name!r} "
                    "(a Module or None is expected)"
                )
            self._modules[name] = None
        elif params is not None and name in self._buffers:
            self._buffers[name] = _check_buffer(name, value)
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name: str, keep: dict | None = None) -> None:
        """Remove ``name`` from the instance dict and every registry but ``keep``.

        Re-registering a name in the same registry then replaces the entry in place, so
        ``seq[1] = layer`` keeps the module's position.
        """
        self.__dict__.pop(name, None)
        for registry in (self._parameters, self._buffers, self._modules):
            if registry is not keep:
                registry.pop(name, None)
        self._non_persistent_buffers.discard(name)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: look in the registries.
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(registry)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register ``param`` (or None: a declared but absent parameter, like ``bias=False``)."""
        _check_name(self, name)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter expects a Parameter or None, got {type(param).__name__}")
        self._forget(name, keep=self._parameters)
        self._parameters[name] = param

    def register_buffer(self, name: str, value: Buffer | None, persistent: bool = True) -> None:
        """Register non-learned state: an array or a Tensor without grad (or None).

        Args:
            persistent: False keeps the buffer out of ``state_dict()``.
        """
        _check_name(self, name)
        self._forget(name, keep=self._buffers)
        self._buffers[name] = _check_buffer(name, value)
        if not persistent:
            self._non_persistent_buffers.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        """Register ``module`` under ``name`` (names like "0" that are not identifiers work too)."""
        _check_name(self, name)
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module expects a Module or None, got {type(module).__name__}")
        self._forget(name, keep=self._modules)
        self._modules[name] = module

    register_module = add_module

    def get_submodule(self, target: str) -> Module:
        """Return the sub-module at the dotted path ``target`` ("" is this module)."""
        module = self
        for part in target.split(".") if target else ():
            child = module._modules.get(part)
            if child is None:
                raise AttributeError(f"{type(module).__name__} has no sub-module {part!r} (path {target!r})")
            module = child
        return module

    def get_parameter(self, target: str) -> Parameter:
        """Return the parameter at the dotted path ``target`` (e.g. "0.weight"), as PyTorch."""
        return self._get_member(target, "_parameters", "parameter")

    def get_buffer(self, target: str) -> Buffer:
        """Return the buffer at the dotted path ``target`` (e.g. "1.running_mean"), as PyTorch."""
        return self._get_member(target, "_buffers", "buffer")

    def _get_member(self, target: str, registry: str, kind: str):
        module_path, _, name = target.rpartition(".")
        module = self.get_submodule(module_path)
        value = getattr(module, registry).get(name)
        if value is None:
            raise AttributeError(f"{type(module).__name__} has no {kind} {name!r} (path {target!r})")
        return value

    def set_submodule(self, target: str, module: Module) -> None:
        """Replace the sub-module at the dotted path ``target`` by ``module``, in place (as PyTorch).

        The new module keeps the old one's position, so a ``Sequential`` runs it in the same place.
        """
        parent_path, _, name = target.rpartition(".")
        parent = self.get_submodule(parent_path)
        if name not in parent._modules:
            raise AttributeError(f"{type(parent).__name__} has no sub-module {name!r} (path {target!r})")
        if not isinstance(module, Module):
            raise TypeError(f"set_submodule expects a Module, got {type(module).__name__}")
        parent._modules[name] = module

    # ------------------------------------------------------------------ traversal
    def named_modules(
        self, memo: set | None = None, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Module]]:
        """Yield (dotted path, module) for this module and every descendant.

        A module registered at several paths is yielded once, unless ``remove_duplicate``
        is False (``state_dict`` lists shared modules under every path, as PyTorch).
        """
        memo = set() if memo is None else memo
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Yield (name, module) for the direct sub-modules, each once."""
        seen = set()
        for name, child in self._modules.items():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self) -> Iterator[Module]:
        for _, child in self.named_children():
            yield child

    def _named_members(
        self, registry: str, prefix: str, recurse: bool, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Any]]:
        seen = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """Yield (dotted name, Parameter), each shared parameter once (under every name with
        ``remove_duplicate=False``, as PyTorch)."""
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Buffer]]:
        """Yield (dotted name, buffer), persistent or not (shared ones once unless ``remove_duplicate=False``)."""
        return self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Buffer]:
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    # ------------------------------------------------------------------ modes and utilities
    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and every descendant; return self."""
        if not isinstance(mode, bool):
            raise ValueError(f"train() expects a bool, got {mode!r}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode (``train(False)``); return self."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Freeze (False) or unfreeze every parameter; return self."""
        for param in self.parameters():
            param.requires_grad = requires_grad
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's ``.grad``, as ``torch.nn.Module.zero_grad``.

        Args:
            set_to_none: set ``.grad`` to None; False fills the existing arrays with zeros
                (the next backward accumulates into them).
        """
        for param in self.parameters():
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad[...] = 0

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call ``fn`` on every descendant (children first) and then on self; return self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def to(self, *args, dtype=None, device=None, non_blocking: bool = False) -> Module:
        """Cast floating parameters and buffers to ``dtype`` in place (Parameters keep identity).

        Takes PyTorch's forms: ``to(dtype)``, ``to("cpu")``, ``to("cpu", dtype)``,
        ``to(tensor)`` (its dtype) and the keywords ``dtype=`` / ``device=``. The device must
        be the CPU, where every array already lives, so it changes nothing.

        Raises:
            ValueError: a device other than the CPU.
            TypeError: a dtype that is not floating point (as PyTorch).
            NotImplementedError: a floating dtype other than float32 and float64 (float16:
                cnnkit's layers compute in those two only).
        """
        dtype = to_arguments(type(self).__name__, args, dtype, device)
        if dtype is None:
            return self
        cast_state(self, module_dtype(type(self).__name__, np.dtype(dtype)), floating_only=True)
        return self

    def float(self) -> Module:
        return self.to(np.float32)

    def double(self) -> Module:
        return self.to(np.float64)

    def type(self, dst_type) -> Module:
        """Cast every parameter and buffer to ``dst_type`` in place, as PyTorch's ``Module.type``
        (integer buffers too: BatchNorm's ``num_batches_tracked`` becomes a float, as there).

        Args:
            dst_type: a dtype (``numpy.float64``, ``"float64"``) or PyTorch's tensor type name
                (``"torch.DoubleTensor"``, ``"torch.FloatTensor"``).

        Raises:
            TypeError: a dtype that is not floating point (parameters must stay floating).
            NotImplementedError: float16 and other floating dtypes cnnkit does not compute in.
        """
        name = type(self).__name__
        cast_state(self, module_dtype(name, type_name_dtype(name, dst_type), method="type"), floating_only=False)
        return self

    def half(self) -> Module:
        """PyTorch's cast to float16: refused, since cnnkit's layers compute in float32 and float64 only.

        Raises:
            NotImplementedError: always; ``float()`` and ``double()`` are the casts cnnkit has.
        """
        return self.to(np.float16)

    # ------------------------------------------------------------------ state dict
    def state_dict(self, *args: Any, destination: MutableMapping[str, Any] | None = None, prefix: str = "",
                   keep_vars: bool = False) -> MutableMapping[str, Any]:
        """Return every parameter and persistent buffer by dotted name, in PyTorch's order and layout.

        Order: a module's own parameters, then its buffers, then each child's entries.

        Args:
            destination: a mapping to add the entries to, and return (default: a new
                OrderedDict).
            prefix: put in front of every key as it is (``prefix="model."`` gives
                ``model.fc.weight``), as PyTorch.
            keep_vars: return the Parameter and buffer objects themselves instead of copies.
            *args: PyTorch's deprecated positional form ``state_dict(destination, prefix,
                keep_vars)``; it warns (FutureWarning), as PyTorch.

        Returns:
            ``destination`` (or a new OrderedDict) of numpy arrays (copies: a saved state dict
            does not change as training goes on; PyTorch's share the parameters' memory),
            e.g. ``conv.weight`` (F, C/groups, KH, KW), ``fc.weight`` (out_features,
            in_features), ``bn.num_batches_tracked`` a 0-d int64 array.
        """
        if args:
            if len(args) > 3:
                raise TypeError(f"state_dict takes at most 3 positional arguments (destination, prefix, keep_vars), "
                                f"got {len(args)}")
            warnings.warn("state_dict: positional arguments are deprecated, as in PyTorch; use "
                          "state_dict(destination=..., prefix=..., keep_vars=...)", FutureWarning, stacklevel=2)
            given = dict(zip(("destination", "prefix", "keep_vars"), args))
            destination = given.get("destination", destination)
            prefix, keep_vars = given.get("prefix", prefix), given.get("keep_vars", keep_vars)
        if not isinstance(prefix, str):
            raise TypeError(f"state_dict expects prefix to be a str, got {type(prefix).__name__}")
        return collect_state(self, OrderedDict() if destination is None else destination, prefix, keep_vars)

    def _own_state(self) -> Iterator[tuple[str, Any]]:
        for name, param in self._parameters.items():
            if param is not None:
                yield name, param
        for name, buffer in self._buffers.items():
            if buffer is not None and name not in self._non_persistent_buffers:
                yield name, buffer

    def _optional_state_keys(self) -> tuple[str, ...]:
        """Own keys that may be absent from a loaded state without counting as missing."""
        return ()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True,
                        assign: bool = False) -> IncompatibleKeys:
        """Copy arrays from ``state_dict`` into the parameters and buffers, in place (or put them in: ``assign``).

        Values may be numpy arrays, Tensors or anything ``np.asarray`` accepts (a CPU
        ``torch.Tensor`` from ``torch_model.state_dict()``). Every value is checked before
        any is copied, so a failed load changes nothing: its shape must fit; its dtype
        must be of the parameter's kind (floating point into floating point, cast to the
        parameter's precision; integers into integer buffers; never integers into float
        weights, which is what a relabelled or corrupt file looks like); floating-point
        values must be finite; and the destination must be writeable (the frozen weights
        of ``surgery.optimize_for_inference`` are not).

        Args:
            strict: require the keys to match exactly.
            assign: as PyTorch's: instead of copying, make the state's arrays the module's
                (no copy: they share memory with the state dict, and keep its dtype). Each
                parameter becomes a new Parameter holding the array (a Parameter in the state
                is used itself), with the old one's ``requires_grad``; each buffer becomes the
                array (a Tensor, if the old buffer was one). The checks above apply, but for
                the destination's dtype and its being writeable (nothing is written).

        Returns:
            IncompatibleKeys(missing_keys, unexpected_keys), as PyTorch.

        Raises:
            StateDictError: a shape, dtype or non-finite value (always), or keys missing or
                unexpected (strict only); the message lists every problem.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"load_state_dict expects a mapping of names to arrays, got {type(state_dict).__name__}")
        return load_state(self, state_dict, strict, assign)

    def _assign_state(self, name: str, value: Any, array: Any) -> None:
        """Make ``value`` (its ``array``) this module's parameter or buffer ``name`` (``load_state_dict(assign=True)``)."""
        if name in self._parameters:
            old = self._parameters[name]
            param = value if isinstance(value, Parameter) else Parameter(array)
            param.requires_grad = old.requires_grad  # PyTorch keeps the module's requires_grad
            self._parameters[name] = param
        else:
            if isinstance(self._buffers[name], Tensor):
                self._buffers[name] = _check_buffer(name, value if isinstance(value, Tensor) else Tensor(array))
            else:
                self._buffers[name] = array

    # ------------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        """Return the text shown inside this module's parentheses (its constructor arguments)."""
        return ""

    def __repr__(self) -> str:
        lines = self.extra_repr().split("\n") if self.extra_repr() else []
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"({name}): {child_repr}")
        name = type(self).__name__
        if not self._modules:
            return f"{name}({lines[0] if len(lines) == 1 else chr(10).join(lines)})"
        return name + "(\n  " + "\n  ".join(lines) + "\n)"


def _check_name(module: Module, name: str) -> None:
    if "_parameters" not in module.__dict__:
        raise AttributeError("cannot register before Module.__init__() is called")
    if not isinstance(name, str) or not name or "." in name:
        raise KeyError(f"a registered name must be a non-empty string without '.', got {name!r}")
    if name in module.__dict__:
        raise KeyError(f"attribute {name!r} already exists on {type(module).__name__}")


def _check_buffer(name: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, Tensor):
        if value.requires_grad:
            raise TypeError(f"buffer {name!r} must not require grad (use a Parameter for learned state)")
        return value
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return value
    raise TypeError(f"buffer {name!r} must be an array or a Tensor, got {type(value).__name__}")


def _add_module_path(error: ShapeError, module: Module) -> None:
    """Rewrite ``error``'s message to start with the path from ``module`` to the failing layer.

    Called by every ``Module.__call__`` the error passes through, innermost first. The
    first call records the failing layer and the original message; each later call
    prepends the name under which the previous module sits inside ``module``, and the
    message is rebuilt from the original, so it never repeats.
    """
    state = getattr(error, "_cnnkit_module_path", None)
    if state is None:
        state = {"origin": module, "message": str(error), "path": "", "top": module}
        error._cnnkit_module_path = state  # type: ignore[attr-defined]
    else:
        inner = state["top"]
        step = next((name for name, m in module.named_modules() if m is inner), None)
        if step is None:  # called by module but not registered on it
            step = f"<{type(inner).__name__}>"
        if step:
            state["path"] = f"{step}.{state['path']}" if state["path"] else step
        state["top"] = module
    layer = type(state["origin"]).__name__
    where = f"{state['path']} ({layer})" if state["path"] else layer
    error.args = (f"{where}: {state['message']}",)
