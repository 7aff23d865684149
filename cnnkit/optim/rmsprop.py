"""RMSprop (Hinton, Coursera lecture 6e), with Graves' (2013) centered variant."""

from __future__ import annotations

from typing import Any

import numpy as np

from .optimizer import Optimizer, ParamsT, _lerp, implementation_flags

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    """RMSprop: divide the gradient by a running root-mean-square of recent gradients.

    With g the gradient of parameter p, each step computes, as ``torch.optim.RMSprop``:

        g = -g                                     if maximize
        g = g + weight_decay * p                   if weight_decay != 0
        s = alpha * s + (1 - alpha) * g * g        (s0 = 0)
        if centered:
            a = alpha * a + (1 - alpha) * g        (a0 = 0)
            avg = sqrt(s - a * a) + eps            (an estimate of the std of g)
        else:
            avg = sqrt(s) + eps
        if momentum > 0:
            b = momentum * b + g / avg             (b0 = 0)
            p = p - lr * b
        else:
            p = p - lr * g / avg

    eps is added outside the square root.

    Args:
        params: Tensors or parameter-group dicts (see ``Optimizer``).
        lr: learning rate.
        alpha: smoothing constant of the running averages.
        eps: term added to the denominator for numerical stability.
        weight_decay: L2 penalty coefficient added to the gradient.
        momentum: momentum factor (0 disables the buffer).
        centered: normalize by the estimated variance instead of the second moment.
        maximize: ascend the objective instead of descending it.
        foreach, capturable, differentiable: PyTorch's implementation choices,
            accepted and without effect; differentiable=True is refused (``implementation_flags``).

    State per parameter: ``step`` (int), ``square_avg`` (s), ``momentum_buffer`` (b,
    when momentum > 0) and ``grad_avg`` (a, when centered).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        implementation_flags("RMSprop", differentiable)
        defaults = dict(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def _validate(self, group: dict[str, Any]) -> None:
        self._check(group["lr"] >= 0, "lr >= 0", group["lr"])
        self._check(group["eps"] >= 0, "eps >= 0", group["eps"])
        self._check(group["alpha"] >= 0, "alpha >= 0", group["alpha"])
        self._check(group["momentum"] >= 0, "momentum >= 0", group["momentum"])
        self._check(group["weight_decay"] >= 0, "weight_decay >= 0", group["weight_decay"])

    def _update_group(self, group: dict[str, Any]) -> None:
        lr = float(group["lr"])
        alpha = float(group["alpha"])
        eps = float(group["eps"])
        weight_decay = float(group["weight_decay"])
        momentum = float(group["momentum"])
        centered = bool(group["centered"])
        maximize = bool(group["maximize"])

        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["square_avg"] = np.zeros_like(p.data)
            if momentum > 0 and "momentum_buffer" not in state:
                state["momentum_buffer"] = np.zeros_like(p.data)
            if centered and "grad_avg" not in state:
                state["grad_avg"] = np.zeros_like(p.data)
            state["step"] += 1
            buffer = state["momentum_buffer"] if momentum > 0 else None
            grad_avg = state["grad_avg"] if centered else None

            arrays = (p.data, p.grad, state["square_avg"], grad_avg, buffer)
            for w, g, s, a, b in self._chunks(*arrays):
                g = self._effective_grad(g, w, weight_decay, maximize)
                tmp = self._buffer(w, 1)
                g_sq = np.multiply(g, 1 - alpha, out=tmp)
                g_sq *= g
                s *= alpha
                s += g_sq
                if a is not None:
                    _lerp(a, g, 1 - alpha, tmp)
                    avg = np.multiply(a, -1.0, out=tmp)
                    avg *= a
                    avg += s
                    np.sqrt(avg, out=avg)
                else:
                    avg = np.sqrt(s, out=tmp)
                avg += eps
                if b is not None:
                    b *= momentum
                    b += np.divide(g, avg, out=avg)
                    w += np.multiply(b, -lr, out=tmp)
                else:
                    update = np.multiply(g, -lr, out=self._buffer(w, 2))
                    update /= avg
                    w += update
