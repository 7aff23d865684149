"""The fully connected layer's op."""

from __future__ import annotations

from ..backend.cores import matmul, matmuls
from ..errors import ShapeError
from ..function import Function
from ..tensor import Tensor

__all__ = ["linear", "LinearOp"]


class LinearOp(Function):
    """Affine map over the last axis.

    forward:  y = x @ W^T + b
    backward: gx = gy @ W;  gW = gy^T @ x;  gb = sum over rows of gy

    Shapes: x (*, D_in), W (D_out, D_in), b (D_out,) -> y (*, D_out).

    The products run through ``backend.cores.matmul``, which owns the BLAS thread count.
    """

    def forward(self, x, w, b=None):
        if w.ndim != 2:
            raise ShapeError(f"linear expects weight of shape (out_features, in_features), got {w.shape}")
        if x.ndim < 1 or x.shape[-1] != w.shape[1]:
            raise ShapeError(
                f"linear expects input of shape (*, {w.shape[1]}) for weight {w.shape}, "
                f"got {x.shape}"
            )
        if b is not None and b.shape != (w.shape[0],):
            raise ShapeError(f"linear expects bias of shape ({w.shape[0]},), got {b.shape}")
        x2 = x if x.ndim == 2 else x.reshape(-1, x.shape[-1])          # (M, D_in)
        y = matmul(x2, w.T)                                            # (M, D_out)
        if b is not None:
            y += b
        if self.saves_for_backward:
            self.x2 = x2 if self.needs_input_grad[1] else None
            self.w = w if self.needs_input_grad[0] else None
            self.x_shape = x.shape
        return y if x.ndim == 2 else y.reshape(x.shape[:-1] + (w.shape[0],))

    def backward(self, gy):
        g2 = gy.reshape(-1, gy.shape[-1])                              # (M, D_out)
        need_x, need_w = self.needs_input_grad[:2]
        if need_x and need_w:  # two independent products: side by side on two threads when worth it
            gx, gw = matmuls([(g2, self.w), (g2.T, self.x2)])          # (M, D_in), (D_out, D_in)
            gx = gx.reshape(self.x_shape)                              # (*, D_in)
        else:
            gx = matmul(g2, self.w).reshape(self.x_shape) if need_x else None  # (*, D_in)
            gw = matmul(g2.T, self.x2) if need_w else None            # (D_out, D_in)
        if len(self.needs_input_grad) == 3:
            gb = g2.sum(axis=0) if self.needs_input_grad[2] else None
            return gx, gw, gb
        return gx, gw


def linear(input, weight, bias=None) -> Tensor:
    """Fully connected layer: y = input @ weight.T + bias, weight (out_features, in_features)."""
    return LinearOp()(input, weight) if bias is None else LinearOp()(input, weight, bias)
