"""Casting a module's parameters and buffers to another dtype (``Module.to``, ``float``,
``double``, ``type``, ``half``): which dtypes a module may take, PyTorch's type names, the cast.
"""

from __future__ import annotations

import numpy as np

from ..tensor import Tensor

__all__ = ["cast_state", "module_dtype", "type_name_dtype"]


def cast_state(module, dtype: np.dtype, floating_only: bool) -> None:
    """Cast the parameters (and their gradients) and buffers of ``module`` and its children, in
    place (Parameters keep their identity): the floating ones only (``to``), or all (``type``)."""
    def cast(array) -> bool:
        return not floating_only or array.dtype.kind == "f"

    for sub in module.modules():
        for param in sub._parameters.values():
            if param is not None and cast(param):
                param.data = param.data.astype(dtype)
                param.grad = None if param.grad is None else param.grad.astype(dtype)
        for name, buffer in sub._buffers.items():
            if isinstance(buffer, Tensor) and cast(buffer):
                buffer.data = buffer.data.astype(dtype)
            elif buffer is not None and not isinstance(buffer, Tensor) and cast(buffer):
                sub._buffers[name] = buffer.astype(dtype)


def module_dtype(owner: str, dtype: np.dtype, method: str = "to") -> np.dtype:
    """``dtype``, if a module's parameters may be cast to it (float32 or float64)."""
    if dtype.kind != "f":
        raise TypeError(f"{owner}.{method} accepts floating point dtypes only (as PyTorch), got {dtype}")
    if dtype not in (np.float32, np.float64):
        raise NotImplementedError(
            f"{owner}.{method}({dtype}): cnnkit's layers compute in float32 and float64 only (no float16 "
            "kernels or mixed precision); use float() or double()"
        )
    return dtype


# PyTorch's CPU tensor type names (Module.type("torch.DoubleTensor")) -> NumPy dtypes
_TORCH_TYPE_NAMES = {"torch.FloatTensor": "float32", "torch.DoubleTensor": "float64", "torch.HalfTensor": "float16",
                     "torch.LongTensor": "int64", "torch.IntTensor": "int32", "torch.BoolTensor": "bool"}


def type_name_dtype(owner: str, dst_type) -> np.dtype:
    """The NumPy dtype of ``Module.type``'s argument: a dtype-like, a PyTorch tensor type name
    or a PyTorch dtype's name (``str(torch.float64)`` is "torch.float64")."""
    text = str(dst_type)
    if text in _TORCH_TYPE_NAMES:
        return np.dtype(_TORCH_TYPE_NAMES[text])
    try:
        return np.dtype(text.removeprefix("torch.") if text.startswith("torch.") else dst_type)
    except TypeError:
        raise TypeError(f"{owner}.type expects a dtype or a tensor type name such as 'torch.DoubleTensor', "
                        f"got {dst_type!r}") from None
