"""Stochastic gradient descent with optional momentum, Nesterov momentum and weight decay."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend.kernels.optim import sgd_kernel_on, sgd_step
from .optimizer import Optimizer, ParamsT, implementation_flags

__all__ = ["SGD"]


class SGD(Optimizer):
    """Stochastic gradient descent (PyTorch's ``torch.optim.SGD`` update, step for step).

    With g the gradient of parameter p, each step computes:

        g = -g                                  if maximize
        g = g + weight_decay * p                if weight_decay != 0
        if momentum != 0:
            b = g                               on the first step
            b = momentum * b + (1 - dampening) * g   afterwards
            g = g + momentum * b                if nesterov
            g = b                               otherwise
        p = p - lr * g

    This is the Sutskever et al. (2013) form PyTorch uses: lr multiplies the buffer,
    so changing lr mid-run does not rescale past momentum.

    NumPy float32/float64 parameters whose gradient (and buffer) share their layout take one
    compiled pass per parameter (``backend/kernels/optim.py``) that rounds as PyTorch's CPU
    kernels do (each ``a + alpha * b`` one fused multiply-add): the same bits as
    ``torch.optim.SGD``. Elsewhere (kernels off, CuPy, mixed layouts) NumPy's passes round
    twice per term and agree to the last bits.

    Args:
        params: Tensors or parameter-group dicts (see ``Optimizer``).
        lr: learning rate.
        momentum: momentum factor (0 disables the buffer).
        dampening: scale (1 - dampening) of the new gradient in the buffer.
        weight_decay: L2 penalty coefficient added to the gradient.
        nesterov: use Nesterov momentum (needs momentum > 0 and dampening == 0).
        maximize: ascend the objective instead of descending it.
        foreach, fused, differentiable: PyTorch's implementation choices,
            accepted and without effect; differentiable=True is refused (``implementation_flags``).

    State per parameter: ``momentum_buffer`` (when momentum != 0).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        implementation_flags("SGD", differentiable)
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def _validate(self, group: dict[str, Any]) -> None:
        self._check(group["lr"] >= 0, "lr >= 0", group["lr"])
        self._check(group["momentum"] >= 0, "momentum >= 0", group["momentum"])
        self._check(group["weight_decay"] >= 0, "weight_decay >= 0", group["weight_decay"])
        if group["nesterov"]:
            self._check(
                group["momentum"] > 0 and group["dampening"] == 0,
                "momentum > 0 and dampening == 0 with nesterov=True",
                f"momentum={group['momentum']}, dampening={group['dampening']}",
            )

    def _update_group(self, group: dict[str, Any]) -> None:
        lr = float(group["lr"])
        momentum = float(group["momentum"])
        dampening = float(group["dampening"])
        weight_decay = float(group["weight_decay"])
        nesterov = bool(group["nesterov"])
        maximize = bool(group["maximize"])
        keep = 1.0 - dampening
        on = sgd_kernel_on()      # (once per group, not per parameter)
        states = self.state

        for p in group["params"]:
            if p.grad is None:
                continue
            buffer = None
            first = False
            if momentum != 0:
                state = states[p]
                buffer = state.get("momentum_buffer")
                if buffer is None:  # filled with the first (effective) gradient below
                    buffer = state["momentum_buffer"] = np.empty_like(p.data)
                    first = True
            # one compiled pass with PyTorch's fused roundings where it applies, else NumPy's passes
            if sgd_step(p.data, p.grad, buffer, lr, momentum, keep, weight_decay, nesterov, maximize, first, on):
                continue

            for w, g, b in self._chunks(p.data, p.grad, buffer):
                g = self._effective_grad(g, w, weight_decay, maximize)
                if b is not None:
                    if first:
                        np.copyto(b, g)
                    else:
                        b *= momentum
                        if dampening == 0:
                            b += g
                        else:
                            b += np.multiply(g, 1.0 - dampening, out=self._buffer(w, 1))
                    if nesterov:
                        look_ahead = np.multiply(b, momentum, out=self._buffer(w, 1))
                        g = np.add(look_ahead, g, out=look_ahead)
                    else:
                        g = b
                w += np.multiply(g, -lr, out=self._buffer(w, 2))
