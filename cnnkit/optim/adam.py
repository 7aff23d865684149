"""Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .optimizer import Optimizer, ParamsT, _lerp, implementation_flags

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """Adam: per-element step sizes from running moments of the gradient.

    With g the gradient of parameter p and t the step count (1 on the first step),
    each step computes, as ``torch.optim.Adam`` does:

        g = -g                                       if maximize
        p = p * (1 - lr * weight_decay)              if decoupled_weight_decay (AdamW)
        g = g + weight_decay * p                     otherwise, if weight_decay != 0
        m = beta1 * m + (1 - beta1) * g              (first moment, m0 = 0)
        v = beta2 * v + (1 - beta2) * g * g          (second moment, v0 = 0)
        v_max = max(v_max, v); use v_max for v       if amsgrad
        denom = sqrt(v) / sqrt(1 - beta2**t) + eps
        p = p - lr / (1 - beta1**t) * m / denom

    eps is added after the bias correction of sqrt(v), not inside the square root.

    Args:
        params: Tensors or parameter-group dicts (see ``Optimizer``).
        lr: learning rate.
        betas: decay rates (beta1, beta2) of the two moments.
        eps: term added to the denominator for numerical stability.
        weight_decay: L2 penalty (Adam) or decoupled decay rate (AdamW).
        amsgrad: use the running maximum of v (Reddi et al., 2018).
        maximize: ascend the objective instead of descending it.
        decoupled_weight_decay: shrink p directly instead of adding to g (AdamW).
        foreach, fused, capturable, differentiable: PyTorch's implementation choices,
            accepted and without effect; differentiable=True is refused (``implementation_flags``).

    State per parameter: ``step`` (int), ``exp_avg`` (m), ``exp_avg_sq`` (v) and,
    with amsgrad, ``max_exp_avg_sq`` (v_max).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        implementation_flags(type(self).__name__, differentiable)
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)

    def _validate(self, group: dict[str, Any]) -> None:
        self._check(group["lr"] >= 0, "lr >= 0", group["lr"])
        self._check(group["eps"] >= 0, "eps >= 0", group["eps"])
        betas = group["betas"]
        self._check(len(betas) == 2, "betas = (beta1, beta2)", betas)
        self._check(0 <= betas[0] < 1, "0 <= betas[0] < 1", betas[0])
        self._check(0 <= betas[1] < 1, "0 <= betas[1] < 1", betas[1])
        self._check(group["weight_decay"] >= 0, "weight_decay >= 0", group["weight_decay"])

    def _update_group(self, group: dict[str, Any]) -> None:
        lr = float(group["lr"])
        beta1, beta2 = (float(b) for b in group["betas"])
        eps = float(group["eps"])
        weight_decay = float(group["weight_decay"])
        amsgrad = bool(group["amsgrad"])
        maximize = bool(group["maximize"])
        decoupled = bool(group["decoupled_weight_decay"]) and weight_decay != 0
        shrink = 1 - lr * weight_decay  # AdamW's decay factor
        l2_decay = 0.0 if group["decoupled_weight_decay"] else weight_decay

        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = np.zeros_like(p.data)
                state["exp_avg_sq"] = np.zeros_like(p.data)
            if amsgrad and "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = np.zeros_like(p.data)
            state["step"] += 1
            step = state["step"]
            step_size = lr / (1 - beta1**step)
            bias_correction2_sqrt = (1 - beta2**step) ** 0.5
            v_max = state["max_exp_avg_sq"] if amsgrad else None

            arrays = (p.data, p.grad, state["exp_avg"], state["exp_avg_sq"], v_max)
            for w, g, m, v, vm in self._chunks(*arrays):
                if decoupled:
                    w *= shrink
                g = self._effective_grad(g, w, l2_decay, maximize)
                tmp = self._buffer(w, 1)
                _lerp(m, g, 1 - beta1, tmp)
                g_sq = np.multiply(g, 1 - beta2, out=tmp)
                g_sq *= g
                v *= beta2
                v += g_sq
                if vm is not None:
                    v = np.maximum(vm, v, out=vm)
                denom = np.sqrt(v, out=tmp)
                denom /= bias_correction2_sqrt
                denom += eps
                update = np.multiply(m, -step_size, out=self._buffer(w, 2))
                update /= denom
                w += update


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p = p * (1 - lr * weight_decay)`` before the Adam step.

    The decay shrinks the weights directly instead of entering the moments as an L2
    gradient, so it is not divided by sqrt(v) (Loshchilov & Hutter, 2019). Same
    arguments as ``Adam``, with ``weight_decay=1e-2`` by default.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            differentiable=differentiable,
            decoupled_weight_decay=True,
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # an AdamW stays decoupled whatever was saved
            group["decoupled_weight_decay"] = True
