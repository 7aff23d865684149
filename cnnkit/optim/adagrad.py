"""Adagrad (Duchi, Hazan & Singer, 2011): per-coordinate steps from the sum of squared gradients."""

from __future__ import annotations

from typing import Any

import numpy as np

from .optimizer import Optimizer, ParamsT, implementation_flags

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    """Adagrad: divide each step by the root of the running sum of squared gradients.

    With g the gradient of parameter p and t the step count (from 1), each step computes,
    as ``torch.optim.Adagrad``:

        g = -g                                     if maximize
        g = g + weight_decay * p                   if weight_decay != 0
        clr = lr / (1 + (t - 1) * lr_decay)
        s = s + g * g                              (s0 = initial_accumulator_value)
        p = p - clr * g / (sqrt(s) + eps)

    eps is added outside the square root.

    Args:
        params: Tensors or parameter-group dicts (see ``Optimizer``).
        lr: learning rate.
        lr_decay: the learning rate at step t is lr / (1 + (t - 1) * lr_decay).
        weight_decay: L2 penalty coefficient added to the gradient.
        initial_accumulator_value: the starting value of every sum s.
        eps: term added to the denominator for numerical stability.
        maximize: ascend the objective instead of descending it.
        foreach, fused, differentiable: PyTorch's implementation choices, accepted and
            without effect; differentiable=True is refused (``implementation_flags``).

    State per parameter: ``step`` (int) and ``sum`` (s). As PyTorch's, the state of every
    parameter given to the constructor exists from the start (step 0, s = s0 of the
    constructor, whatever a group sets), so ``state_dict()`` lists them all before the first
    step; a parameter of a group added later starts at its group's s0 on its first step.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        implementation_flags("Adagrad", differentiable)
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            eps=eps,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            maximize=maximize,
        )
        super().__init__(params, defaults)
        # NOTE: as PyTorch's, every sum starts at the constructor's initial_accumulator_value,
        # also in a group that sets its own (that value serves parameters added later).
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, initial_accumulator_value)

    def _init_state(self, p, initial_value: float) -> dict[str, Any]:
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["sum"] = np.full_like(p.data, initial_value)
        return state

    def _validate(self, group: dict[str, Any]) -> None:
        self._check(group["lr"] >= 0, "lr >= 0", group["lr"])
        self._check(group["lr_decay"] >= 0, "lr_decay >= 0", group["lr_decay"])
        self._check(group["weight_decay"] >= 0, "weight_decay >= 0", group["weight_decay"])
        self._check(group["initial_accumulator_value"] >= 0, "initial_accumulator_value >= 0",
                    group["initial_accumulator_value"])
        self._check(group["eps"] >= 0, "eps >= 0", group["eps"])

    def _update_group(self, group: dict[str, Any]) -> None:
        lr = float(group["lr"])
        lr_decay = float(group["lr_decay"])
        eps = float(group["eps"])
        weight_decay = float(group["weight_decay"])
        maximize = bool(group["maximize"])

        for p in group["params"]:
            if p.grad is None:
                continue
            # a parameter of a group added after construction starts here
            state = self._init_state(p, group["initial_accumulator_value"])
            state["step"] += 1
            clr = lr / (1 + (state["step"] - 1) * lr_decay)
            for w, g, s in self._chunks(p.data, p.grad, state["sum"]):
                g = self._effective_grad(g, w, weight_decay, maximize)
                tmp = self._buffer(w, 1)
                s += np.multiply(g, g, out=tmp)
                std = np.sqrt(s, out=tmp)
                std += eps
                update = np.divide(g, std, out=self._buffer(w, 2))
                update *= -clr
                w += update
