"""Weight initializers, each drawing from an explicit ``numpy.random.Generator``.

Two forms of each initializer, with PyTorch's names and formulas (``torch.nn.init``):

- ``kaiming_uniform(shape, ...)`` returns a new array of the default dtype;
- ``kaiming_uniform_(tensor, ...)`` fills a Tensor, Parameter or array in place and returns it.

``generator=None`` means ``cnnkit.config.default_generator()``, looked up at call time, so
``cnnkit.manual_seed(s)`` followed by the same calls gives the same numbers.

Fans (PyTorch's convention) for a weight of shape (out, in, *kernel):
fan_in = in * prod(kernel), fan_out = out * prod(kernel). For a transposed convolution's
weight (in, out/groups, KH, KW) this gives fan_in = (out/groups)*KH*KW, as in PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .. import config
from ..backend import get_array_module
from ..config import accepts_rng
from ..tensor import Tensor

__all__ = [
    "calculate_gain",
    "fan_in_and_fan_out",
    "uniform",
    "normal",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "uniform_",
    "normal_",
    "constant_",
    "zeros_",
    "ones_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
]

Shape = Sequence[int]

_LINEAR_GAIN = (
    "linear", "identity", "conv1d", "conv2d", "conv3d",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "sigmoid",
)


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """Return the recommended gain for a nonlinearity (PyTorch's table).

    linear, conv*, sigmoid: 1;  tanh: 5/3;  relu: sqrt(2);
    leaky_relu: sqrt(2 / (1 + slope**2)) with slope = param (default 0.01);  selu: 3/4.

    Raises:
        ValueError: an unknown nonlinearity or a non-numeric leaky_relu slope.
    """
    if nonlinearity in _LINEAR_GAIN:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"calculate_gain expects a number as the leaky_relu slope, got {param!r}")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain does not know the nonlinearity {nonlinearity!r}")


def fan_in_and_fan_out(shape: Shape) -> tuple[int, int]:
    """Return (fan_in, fan_out) of a weight of shape (out, in, *kernel).

    Raises:
        ValueError: fewer than 2 dimensions (a bias has no fan out).
    """
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"fan_in and fan_out need a weight with at least 2 dimensions, got shape {shape}")
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def _fan(shape: Shape, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = fan_in_and_fan_out(shape)
    return fan_in if mode == "fan_in" else fan_out


def _rng(generator: np.random.Generator | None) -> np.random.Generator:
    return generator if generator is not None else config.default_generator()


def _dtype(dtype) -> np.dtype:
    return np.dtype(dtype) if dtype is not None else config.get_default_dtype()


# --------------------------------------------------------------------- array versions
def _draw_dtype(dtype: np.dtype) -> np.dtype:
    # Draw float32 arrays directly in float32: 2-3x faster for VGG-size layers than
    # drawing float64 and casting (the numbers differ, the distribution does not).
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)


@accepts_rng
def uniform(shape: Shape, a: float = 0.0, b: float = 1.0, *, generator=None, dtype=None) -> np.ndarray:
    """Return an array drawn from U(a, b)."""
    dt = _dtype(dtype)
    x = _rng(generator).random(tuple(shape), dtype=_draw_dtype(dt))
    x *= x.dtype.type(b - a)
    x += x.dtype.type(a)
    return x.astype(dt, copy=False)


@accepts_rng
def normal(shape: Shape, mean: float = 0.0, std: float = 1.0, *, generator=None, dtype=None) -> np.ndarray:
    """Return an array drawn from N(mean, std**2)."""
    dt = _dtype(dtype)
    x = _rng(generator).standard_normal(tuple(shape), dtype=_draw_dtype(dt))
    x *= x.dtype.type(std)
    x += x.dtype.type(mean)
    return x.astype(dt, copy=False)


@accepts_rng
def xavier_uniform(shape: Shape, gain: float = 1.0, *, generator=None, dtype=None) -> np.ndarray:
    """Glorot uniform: U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = fan_in_and_fan_out(shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out)) if fan_in + fan_out else 0.0
    return uniform(shape, -bound, bound, generator=generator, dtype=dtype)


@accepts_rng
def xavier_normal(shape: Shape, gain: float = 1.0, *, generator=None, dtype=None) -> np.ndarray:
    """Glorot normal: N(0, std**2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = fan_in_and_fan_out(shape)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out)) if fan_in + fan_out else 0.0
    return normal(shape, 0.0, std, generator=generator, dtype=dtype)


def _kaiming_std(shape: Shape, a: float, mode: str, nonlinearity: str) -> float:
    fan = _fan(shape, mode)
    if fan == 0:  # an empty weight: nothing will be drawn
        return 0.0
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


@accepts_rng
def kaiming_uniform(
    shape: Shape, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
    *, generator=None, dtype=None,
) -> np.ndarray:
    """He uniform: U(-b, b), b = sqrt(3) * gain / sqrt(fan), gain = calculate_gain(nonlinearity, a).

    PyTorch's default Conv/Linear init is this with a = sqrt(5), which gives b = 1 / sqrt(fan_in).
    """
    bound = math.sqrt(3.0) * _kaiming_std(shape, a, mode, nonlinearity)
    return uniform(shape, -bound, bound, generator=generator, dtype=dtype)


@accepts_rng
def kaiming_normal(
    shape: Shape, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
    *, generator=None, dtype=None,
) -> np.ndarray:
    """He normal: N(0, std**2), std = gain / sqrt(fan), gain = calculate_gain(nonlinearity, a)."""
    return normal(shape, 0.0, _kaiming_std(shape, a, mode, nonlinearity), generator=generator, dtype=dtype)


# --------------------------------------------------------------------- in-place versions
def _fill(target, values) -> None:
    """Copy ``values`` into the array of ``target`` (a Tensor or an array), keeping its dtype."""
    array = target.data if isinstance(target, Tensor) else target
    if not hasattr(array, "shape") or not hasattr(array, "dtype"):
        raise TypeError(f"initializers fill a Tensor, Parameter or array, got {type(target).__name__}")
    xp = get_array_module(array)
    array[...] = xp.asarray(values)


def _shape_dtype(target):
    array = target.data if isinstance(target, Tensor) else target
    return array.shape, array.dtype


@accepts_rng
def uniform_(tensor, a: float = 0.0, b: float = 1.0, *, generator=None):
    """Fill ``tensor`` with draws from U(a, b); return it."""
    shape, dtype = _shape_dtype(tensor)
    _fill(tensor, uniform(shape, a, b, generator=generator, dtype=dtype))
    return tensor


@accepts_rng
def normal_(tensor, mean: float = 0.0, std: float = 1.0, *, generator=None):
    """Fill ``tensor`` with draws from N(mean, std**2); return it."""
    shape, dtype = _shape_dtype(tensor)
    _fill(tensor, normal(shape, mean, std, generator=generator, dtype=dtype))
    return tensor


def constant_(tensor, val: float):
    """Fill ``tensor`` with ``val``; return it."""
    _fill(tensor, val)
    return tensor


def zeros_(tensor):
    """Fill ``tensor`` with 0; return it."""
    return constant_(tensor, 0.0)


def ones_(tensor):
    """Fill ``tensor`` with 1; return it."""
    return constant_(tensor, 1.0)


@accepts_rng
def xavier_uniform_(tensor, gain: float = 1.0, *, generator=None):
    """Fill ``tensor`` by Glorot uniform (see ``xavier_uniform``); return it."""
    shape, dtype = _shape_dtype(tensor)
    _fill(tensor, xavier_uniform(shape, gain, generator=generator, dtype=dtype))
    return tensor


@accepts_rng
def xavier_normal_(tensor, gain: float = 1.0, *, generator=None):
    """Fill ``tensor`` by Glorot normal (see ``xavier_normal``); return it."""
    shape, dtype = _shape_dtype(tensor)
    _fill(tensor, xavier_normal(shape, gain, generator=generator, dtype=dtype))
    return tensor


@accepts_rng
def kaiming_uniform_(
    tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", *, generator=None
):
    """Fill ``tensor`` by He uniform (see ``kaiming_uniform``); return it."""
    shape, dtype = _shape_dtype(tensor)
    _fill(tensor, kaiming_uniform(shape, a, mode, nonlinearity, generator=generator, dtype=dtype))
    return tensor


@accepts_rng
def kaiming_normal_(
    tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", *, generator=None
):
    """Fill ``tensor`` by He normal (see ``kaiming_normal``); return it."""
    shape, dtype = _shape_dtype(tensor)
    _fill(tensor, kaiming_normal(shape, a, mode, nonlinearity, generator=generator, dtype=dtype))
    return tensor
