"""Full backward hooks and pre-hooks (``Module.register_full_backward_hook``,
``register_full_backward_pre_hook``): the gradients of a module's inputs and outputs.

PyTorch calls ``hook(module, grad_input, grad_output)`` once the gradients with respect to
all of a module call's inputs are known, and lets it replace them. cnnkit's ops have one
output each, so the gradients of several inputs never arrive together at one op. They are
made to, by routing a call's tensors through one op that packs them and one op per tensor
that unpacks its slice (an identity, overall):

    x_1 .. x_m -> PackOp -> packed -> UnpackOp_k -> x_k'   (the module sees x_k')

In backward every UnpackOp_k adds its gradient into its slice of ``packed``'s gradient, and
PackOp, which made their common input, runs after all of them: it holds every grad_input at
once, calls the hooks, and returns what they gave. The outputs go through the same pair, so
the hooks also get every grad_output together (``PackOp`` on the output side records them,
after the pre-hooks, which it calls, had their say).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import config
from ..backend import get_array_module
from ..errors import ShapeError
from ..function import Function
from ..tensor import Tensor

__all__ = ["PackOp", "UnpackOp", "with_backward_hooks"]


class PackOp(Function):
    """Several tensors as one flat array; backward splits the gradient and lets ``on_grads`` change it.

    forward:  packed = concat(x_1.ravel(), ..., x_m.ravel())  (in their common dtype)
    backward: g_k = gy[slice_k].reshape(x_k.shape), then on_grads([g_1, ...]) (a list, None
              for a tensor whose gradient never arrived) gives the gradients returned.
    """

    def __init__(self, on_grads: Callable[[list], list]):
        self.on_grads = on_grads

    def forward(self, *xs):
        self.shapes = [x.shape for x in xs]
        self.bounds = np.cumsum([0] + [x.size for x in xs])
        self.fired = [False] * len(xs)                                # set by each UnpackOp's backward
        dtype = np.result_type(*xs)
        return self.xp.concatenate([x.reshape(-1).astype(dtype, copy=False) for x in xs])  # (sum of sizes,)

    def unpack(self, packed: Tensor, k: int, dtype) -> Tensor:
        return UnpackOp(self, k, dtype)(packed)

    def backward(self, gy):
        grads = [gy[a:b].reshape(shape) if fired else None
                 for a, b, shape, fired in zip(self.bounds[:-1], self.bounds[1:], self.shapes, self.fired, strict=True)]
        return tuple(self.on_grads(grads))


class UnpackOp(Function):
    """Tensor k of a ``PackOp``: its slice of the packed array, in its own shape and dtype.

    forward:  x_k = packed[slice_k].reshape(shape_k)
    backward: g (packed's shape) = 0 but g[slice_k] = gy.ravel()
    """

    def __init__(self, pack: PackOp, k: int, dtype):
        self.pack, self.k, self.dtype = pack, k, dtype

    def forward(self, packed):
        a, b = self.pack.bounds[self.k], self.pack.bounds[self.k + 1]
        return packed[a:b].reshape(self.pack.shapes[self.k]).astype(self.dtype, copy=False)

    def backward(self, gy):
        a, b = self.pack.bounds[self.k], self.pack.bounds[self.k + 1]
        self.pack.fired[self.k] = True
        g = self.xp.zeros(int(self.pack.bounds[-1]), dtype=np.result_type(gy, self.dtype))
        g[a:b] = gy.reshape(-1)
        return g


def _route(tensors: list[Tensor], on_grads: Callable[[list], list]) -> list[Tensor]:
    """The tensors through one PackOp and their UnpackOps (the same values, a joined backward)."""
    pack = PackOp(on_grads)
    packed = pack(*tensors)
    return [pack.unpack(packed, k, t.dtype) for k, t in enumerate(tensors)]


def _as_array(grad: Any):
    return grad.data if isinstance(grad, Tensor) else grad


def with_backward_hooks(module, hooks: list[Callable], args: tuple, forward: Callable[[tuple], Any], *,
                        pre_hooks: Sequence[Callable] = ()) -> Any:
    """Run ``forward(args)`` with ``hooks`` called as PyTorch's full backward hooks of this call,
    and ``pre_hooks`` as its full backward pre-hooks.

    ``pre_hook(module, grad_output)``, once the gradients of the outputs are known and before
    they flow into the module: a returned tuple (one entry per output, None for no gradient)
    replaces grad_output, for the module's backward, the next pre-hook and the hooks.

    ``hook(module, grad_input, grad_output)``: tuples of arrays, one per positional argument
    (None for an argument that is not a tensor; zeros for a tensor that needs no grad or that
    the outputs do not depend on) and one per output (None for one that is not a tensor
    requiring grad, or that backward did not reach), as PyTorch. A hook may return a replacement grad_input (a tuple of the same
    length); the next hook gets it. When no input requires grad the hooks are called with
    grad_input all None as soon as grad_output is known, and must return None.

    Raises (from backward):
        RuntimeError: a replacement of the wrong length, or one returned where no input
            requires grad. ShapeError: a replacement of the wrong shape.
    """
    name = type(module).__name__
    grad_output: list = []
    wanted = [k for k, a in enumerate(args) if isinstance(a, Tensor) and a.requires_grad]

    def call_hooks(grad_input: tuple) -> tuple:
        for hook in hooks:
            result = hook(module, grad_input, tuple(grad_output))
            if result is None:
                continue
            if not wanted:
                if isinstance(result, tuple) and all(r is None for r in result):
                    continue
                raise RuntimeError(f"backward hook of {name}: no input of this call requires grad, so the hook "
                                   "must return None (or None for every gradient)")
            result = tuple(result) if isinstance(result, (tuple, list)) else (result,)
            if len(result) != len(grad_input):
                raise RuntimeError(f"backward hook of {name} returned {len(result)} grad_input, expected "
                                   f"{len(grad_input)} (one per positional argument)")
            grad_input = tuple(_as_array(r) for r in result)
        return grad_input

    def on_input_grads(grads: list) -> list:
        # zeros for a tensor argument that needs no grad or that the outputs do not depend on, as PyTorch
        grad_input = [get_array_module(a.data).zeros_like(a.data) if isinstance(a, Tensor) else None for a in args]
        for k, g in zip(wanted, grads, strict=True):
            if g is not None:
                grad_input[k] = g
        grad_input = call_hooks(tuple(grad_input))
        out = []
        for k in wanted:
            g = grad_input[k]
            if g is not None and g.shape != args[k].shape:
                raise ShapeError(f"backward hook of {name} returned grad_input[{k}] of shape {g.shape}, "
                                 f"expected {args[k].shape}")
            out.append(g)
        return out

    def call_pre_hooks() -> None:
        for hook in pre_hooks:
            result = hook(module, tuple(grad_output))
            if result is None:
                continue
            result = tuple(result) if isinstance(result, (tuple, list)) else (result,)
            if len(result) != len(grad_output):
                raise RuntimeError(f"backward pre-hook of {name} returned {len(result)} grad_output, expected "
                                   f"{len(grad_output)} (one per output)")
            for k, g in enumerate(result):
                g = _as_array(g)
                if g is not None and k not in tracked:
                    raise RuntimeError(f"backward pre-hook of {name} returned a gradient for output {k}, which "
                                       "does not require grad")
                if g is not None and g.shape != outputs[k].shape:
                    raise ShapeError(f"backward pre-hook of {name} returned grad_output[{k}] of shape {g.shape}, "
                                     f"expected {outputs[k].shape}")
                grad_output[k] = g

    def on_output_grads(grads: list) -> list:
        grad_output[:] = [None] * len(outputs)
        for k, g in zip(tracked, grads, strict=True):
            grad_output[k] = g
        call_pre_hooks()
        grads = [grad_output[k] for k in tracked]
        if not wanted:  # PyTorch warns for pre-hooks alone too
            warnings.warn(f"backward hook of {name} runs once the gradients of its outputs are known: no input "
                          "of this call requires grad (as PyTorch, which warns too)", UserWarning, stacklevel=2)
            call_hooks((None,) * len(args))
        return grads

    if not config.is_grad_enabled():
        return forward(args)
    if wanted and hooks:  # pre-hooks alone need only the outputs routed
        routed = _route([args[k] for k in wanted], on_input_grads)
        args = list(args)
        for k, t in zip(wanted, routed, strict=True):
            args[k] = t
        args = tuple(args)
    output = forward(args)
    outputs = list(output) if isinstance(output, (tuple, list)) else [output]
    tracked = [k for k, o in enumerate(outputs) if isinstance(o, Tensor) and o.requires_grad]
    if not tracked:
        return output
    routed = _route([outputs[k] for k in tracked], on_output_grads)
    for k, t in zip(tracked, routed, strict=True):
        outputs[k] = t
    if isinstance(output, (tuple, list)):
        return type(output)(outputs)
    return outputs[0]

