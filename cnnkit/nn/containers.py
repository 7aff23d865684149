"""Containers: Sequential (a pipeline), ModuleList and ModuleDict (registered collections)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from typing import Any

from .module import Module

__all__ = ["Sequential", "ModuleList", "ModuleDict"]


def _index(i: int, n: int, kind: str) -> int:
    if not -n <= i < n:
        raise IndexError(f"{kind} index {i} is out of range for length {n}")
    return i % n


class Sequential(Module):
    """Modules applied in order, each to the previous one's output.

    ``Sequential(a, b, c)`` names its modules "0", "1", "2";
    ``Sequential(OrderedDict(conv=a, relu=b))`` uses the given names.
    Indexing returns a module; slicing returns a Sequential keeping the names.

    Shape: the input of the first module -> the output of the last.
    """

    def __init__(self, *modules: Module | Mapping[str, Module]):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], Mapping):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(modules):
                self.add_module(str(i), module)

    def forward(self, x: Any) -> Any:
        for module in self._modules.values():
            x = module(x)
        return x

    def __getitem__(self, index: int | slice) -> Module | Sequential:
        items = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(OrderedDict(items[index]))
        return items[_index(index, len(items), "Sequential")][1]

    def __setitem__(self, index: int, module: Module) -> None:
        name = list(self._modules)[_index(index, len(self), "Sequential")]
        self.add_module(name, module)

    def __delitem__(self, index: int | slice) -> None:
        """Remove the module(s) at ``index``; the rest are renumbered "0", "1", ... as in PyTorch
        (so state_dict keys follow the positions; given names are replaced too)."""
        names = list(self._modules)
        doomed = names[index] if isinstance(index, slice) else [names[_index(index, len(names), "Sequential")]]
        for name in doomed:
            del self._modules[name]
        self._renumber(list(self._modules.values()))

    def _renumber(self, modules: list[Module]) -> None:
        self._modules.clear()
        for i, module in enumerate(modules):
            self.add_module(str(i), module)

    def insert(self, index: int, module: Module) -> Sequential:
        """Insert ``module`` before position ``index`` (-len <= index <= len); renumber; return self."""
        if not isinstance(module, Module):
            raise TypeError(f"Sequential.insert expects a Module, got {type(module).__name__}")
        n = len(self)
        if not -n <= index <= n:
            raise IndexError(f"Sequential.insert index {index} is out of range for length {n}")
        modules = list(self._modules.values())
        modules.insert(index, module)  # a negative index counts from the end, as PyTorch
        self._renumber(modules)
        return self

    def pop(self, index: int | slice) -> Module | Sequential:
        """Remove and return the module(s) at ``index`` (the rest are renumbered)."""
        popped = self[index]
        del self[index]
        return popped

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def append(self, module: Module) -> Sequential:
        """Add ``module`` at the end, named by its position; return self."""
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> Sequential:
        """Append each of ``modules`` (a Sequential or any iterable of modules); return self."""
        for module in modules:
            self.append(module)
        return self

    # Concatenation and repetition, as PyTorch: the modules themselves (not copies) are reused,
    # so a repeated layer shares its parameters; the result is numbered "0", "1", ...
    def __add__(self, other: Sequential) -> Sequential:
        """``a + b``: a new Sequential of a's modules, then b's."""
        _check_sequential("+", other)
        return Sequential(*self, *other)

    def __iadd__(self, other: Sequential) -> Sequential:
        """``a += b``: b's modules appended to a."""
        _check_sequential("+=", other)
        return self.extend(list(other))

    def __mul__(self, times: int) -> Sequential:
        """``a * n`` (or ``n * a``): a new Sequential of a's modules n times over."""
        _check_times("*", times)
        return Sequential(*(list(self) * times))

    __rmul__ = __mul__

    def __imul__(self, times: int) -> Sequential:
        """``a *= n``: a's modules appended n - 1 more times."""
        _check_times("*=", times)
        return self.extend(list(self) * (times - 1))


def _check_sequential(op: str, other: Any) -> None:
    if not isinstance(other, Sequential):  # PyTorch raises ValueError here too
        raise ValueError(f"Sequential {op} expects a Sequential, got {type(other).__name__}")


def _check_times(op: str, times: Any) -> None:
    if not isinstance(times, int):
        raise TypeError(f"Sequential {op} expects an int number of repeats, got {type(times).__name__}")
    if times <= 0:
        raise ValueError(f"Sequential {op} expects a positive number of repeats, got {times}")


class ModuleList(Module):
    """A list of modules, registered so their parameters belong to the owner.

    A ModuleList has no ``forward``: the owner decides how to call its entries.
    """

    def __init__(self, modules: Iterable[Module] | None = None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _renumber(self, modules: list[Module]) -> None:
        self._modules.clear()
        for i, module in enumerate(modules):
            self.add_module(str(i), module)

    def __getitem__(self, index: int | slice) -> Module | ModuleList:
        modules = list(self._modules.values())
        if isinstance(index, slice):
            return ModuleList(modules[index])
        return modules[_index(index, len(modules), "ModuleList")]

    def __setitem__(self, index: int, module: Module) -> None:
        self.add_module(str(_index(index, len(self), "ModuleList")), module)

    def __delitem__(self, index: int | slice) -> None:
        modules = list(self._modules.values())
        if isinstance(index, slice):
            del modules[index]
        else:
            del modules[_index(index, len(modules), "ModuleList")]
        self._renumber(modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __add__(self, other: Iterable[Module]) -> ModuleList:
        """``a + b``: a new ModuleList of a's modules, then b's (the same modules, as PyTorch)."""
        return ModuleList([*self, *other])

    def __iadd__(self, modules: Iterable[Module]) -> ModuleList:
        return self.extend(modules)

    def append(self, module: Module) -> ModuleList:
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        for module in modules:
            self.append(module)
        return self

    def insert(self, index: int, module: Module) -> None:
        modules = list(self._modules.values())
        modules.insert(index, module)
        self._renumber(modules)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("ModuleList has no forward(): iterate over it and call its modules")


class ModuleDict(Module):
    """A dict of modules (insertion-ordered), registered under their keys."""

    def __init__(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]] | None = None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(key, module)

    def __delitem__(self, key: str) -> None:
        del self._modules[key]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __contains__(self, key: object) -> bool:
        return key in self._modules

    def keys(self) -> KeysView[str]:
        return self._modules.keys()

    def values(self) -> ValuesView[Module]:
        return self._modules.values()

    def items(self) -> ItemsView[str, Module]:
        return self._modules.items()

    def pop(self, key: str) -> Module:
        return self._modules.pop(key)

    def clear(self) -> None:
        self._modules.clear()

    def update(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]]) -> None:
        pairs = modules.items() if isinstance(modules, Mapping) else modules
        for key, module in pairs:
            self.add_module(key, module)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("ModuleDict has no forward(): index it and call its modules")
