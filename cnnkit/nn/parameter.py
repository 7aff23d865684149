"""Parameter: a Tensor that a Module registers as a learnable weight."""

from __future__ import annotations

from typing import Any

from ..tensor import Tensor

__all__ = ["Parameter"]


class Parameter(Tensor):
    """A Tensor that requires grad by default and registers itself on a Module.

    Assigning a Parameter as a Module attribute (``self.weight = Parameter(...)``) adds it
    to ``parameters()`` and ``state_dict()``.

    Args:
        data: an array (kept as is, no copy) or a Tensor (its array is shared).
        requires_grad: False freezes the parameter (it still appears in ``state_dict``).
    """

    __slots__ = ()

    def __init__(self, data: Any, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()
