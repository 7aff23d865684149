"""Convolution (cross-correlation, as in every deep-learning library) and its transpose.

``Conv2dOp`` states the math; each algorithm is its own subclass: im2col + one matrix
product (``Conv2dIm2colOp``, the reference; its backward is two matrix products and a
col2im) and a compiled direct convolution for small stride-1 filter banks
(``Conv2dDirectOp``) and Winograd minimal filtering for 3x3 stride-1 layers
(``Conv2dWinogradOp``). ``conv2d`` picks one through ``backend.dispatch``. The transposed
convolution runs im2col's three pieces the other way.
"""

from __future__ import annotations

from .. import config
from ..backend import dispatch, get_array_module
from ..backend.cores import matmul
from ..backend.kernels import batchnorm as batchnorm_kernels
from ..backend.kernels import conv_blocked, conv_direct, polyphase, strided, winograd
from ..backend.kernels import im2col as im2col_kernels
from ..backend.prepack import ConvWeightPack
from ..errors import ShapeError
from ..function import Function
from ..tensor import Tensor
from .activation import relu
from .args import conv_padding, output_size, pair
from .im2col import chunk_bounds, col2im, im2col, padded_cnhw
from .norm import _array, _recorded, batch_norm, batch_norm_relu
from .pool import MaxPool2dFusedOp

__all__ = [
    "conv2d", "conv2d_batch_norm", "conv2d_batch_norm_relu", "conv2d_relu", "conv_transpose2d", "Conv2dOp", "Conv2dIm2colOp", "Conv2dGemmOp", "Conv2dDirectOp",
    "Conv2dWinogradOp", "Conv2dPolyphaseOp", "Conv2dStridedPlanesOp",
    "ConvTranspose2dOp",
    "IM2COL_LIMIT_BYTES",
]

# Largest column matrix built at once. Bigger batches are processed in chunks and the
# backward pass rebuilds the columns chunk by chunk instead of keeping them.
IM2COL_LIMIT_BYTES = 256 * 2**20


def _check_geometry(op: str, stride, dilation) -> None:
    if min(stride) <= 0:
        raise ShapeError(f"{op} expects stride > 0, got {stride}")
    if min(dilation) <= 0:
        raise ShapeError(f"{op} expects dilation > 0, got {dilation}")


def _check_input(op: str, x, w, groups: int) -> None:
    if x.ndim != 4:
        raise ShapeError(f"{op} expects input of shape (N, C, H, W), got {x.shape}")
    if w.ndim != 4:
        raise ShapeError(f"{op} expects weight of shape (F, C/groups, KH, KW), got {w.shape}")
    if groups <= 0:
        raise ShapeError(f"{op} expects groups > 0, got {groups}")
    if x.dtype != w.dtype:
        raise TypeError(f"{op} expects input and weight of one dtype, got {x.dtype} and {w.dtype}")


class Conv2dOp(Function):
    """2-D convolution (cross-correlation) with stride, zero padding, dilation and groups.

    forward:  y[n, f, i, j] = b[f] + sum_{c in group(f), kh, kw}
                  w[f, c, kh, kw] * xpad[n, c, i*SH + kh*DH, j*SW + kw*DW]
    backward: gw[f, c, kh, kw] = sum_{n, i, j} gy[n, f, i, j] * xpad[n, c, i*SH + kh*DH, j*SW + kw*DW]
              gb[f] = sum_{n, i, j} gy[n, f, i, j]
              gxpad[n, c, i*SH + kh*DH, j*SW + kw*DW] += sum_{f in group(c)} w[f, c, kh, kw] * gy[n, f, i, j]
              (a convolution's input gradient is itself a convolution, of gy with the
              flipped filters).

    Shapes: x (N, C, H, W), w (F, C/G, KH, KW), b (F,) -> y (N, F, OH, OW) with
    OH = floor((H + PT + PB - DH*(KH-1) - 1) / SH) + 1 (likewise OW).

    This class states the math and checks the arguments; each algorithm is a subclass
    with its own forward and backward, and ``conv2d`` picks one through
    ``backend.dispatch.conv2d_algorithm``:

    - ``Conv2dIm2colOp``: im2col + one matrix product per group (the reference path:
      any geometry, any array module);
    - ``Conv2dGemmOp``: the same with compiled im2col/col2im, columns rebuilt in backward;
    - ``Conv2dDirectOp``: compiled direct convolution for small stride-1 filter banks;
    - ``Conv2dWinogradOp``: Winograd F(2x2, 3x3) or F(4x4, 3x3) for 3x3 stride-1 layers;
    - ``Conv2dPolyphaseOp``: strided layers on few channels (ResNet's 7x7/2 stem), the
      input split into its stride phases, columns and products in cache-sized blocks;
    - ``Conv2dStridedPlanesOp``: 3x3 stride-2 layers (ResNet's downsampling), direct kernels
      on the input's stride phases, forward and both gradients.
    """

    def __init__(self, stride, pads: tuple[int, int, int, int], dilation, groups: int):
        self.stride, self.pads, self.dilation, self.groups = stride, pads, dilation, groups

    def check(self, x, w, b) -> tuple[int, int]:
        """Validate the arrays against the op's geometry; return the output size (OH, OW)."""
        _check_input("conv2d", x, w, self.groups)
        N, C, H, W = x.shape
        F, Cg, KH, KW = w.shape
        G = self.groups
        if Cg * G != C:
            raise ShapeError(
                f"conv2d expects C = weight.shape[1] * groups = {Cg} * {G} = {Cg * G}, "
                f"received C={C} (input shape {x.shape})"
            )
        if F % G:
            raise ShapeError(f"conv2d expects F divisible by groups={G}, got weight shape {w.shape}")
        if b is not None and b.shape != (F,):
            raise ShapeError(f"conv2d expects bias of shape ({F},), got {b.shape}")
        (SH, SW), (DH, DW) = self.stride, self.dilation
        pt, pb, pl, pr = self.pads
        Hp, Wp = H + pt + pb, W + pl + pr
        if DH * (KH - 1) + 1 > Hp or DW * (KW - 1) + 1 > Wp:
            raise ShapeError(
                f"conv2d kernel ({KH}, {KW}) with dilation ({DH}, {DW}) is larger than the "
                f"padded input ({Hp}, {Wp}) (input shape {x.shape}, padding {self.pads})"
            )
        return output_size(H, KH, SH, (pt, pb), DH), output_size(W, KW, SW, (pl, pr), DW)

    def channel_major_result(self, x, w, y):
        """Keep x and w for backward (when it will run); return y (F, N, OH, OW) as an (N, F, OH, OW) view.

        The compiled algorithms write channel-major outputs and recompute what backward
        needs from x and w.
        """
        if self.saves_for_backward:
            self.x, self.w = x, w
        return y.transpose(1, 0, 2, 3)

    def with_bias_grad(self, gx, gw, gy):
        """(gx, gw), plus gb = sum of gy over (N, OH, OW) when the op was given a bias."""
        if len(self.needs_input_grad) == 2:
            return gx, gw
        gb = gy.sum(axis=(0, 2, 3)) if self.needs_input_grad[2] else None
        return gx, gw, gb


class Conv2dIm2colOp(Conv2dOp):
    """``Conv2dOp`` as im2col + matrix products (the reference algorithm).

    forward:  Y (F, N*OH*OW) = W (F, C*KH*KW) @ cols (C*KH*KW, N*OH*OW) per group
    backward: gW = gY @ cols^T;  gb = sum_{n, i, j} gy;  gx = col2im(W^T @ gY)
              (col2im is the adjoint of im2col).

    Saves the columns for backward when they were built in one piece, else the padded
    input (rebuilt chunk by chunk in backward); W only when the input needs a gradient.
    """

    def forward(self, x, w, b=None):
        xp = self.xp
        OH, OW = self.check(x, w, b)
        N, C, H, W = x.shape
        F, Cg, KH, KW = w.shape
        G = self.groups
        pt, pb, pl, pr = self.pads
        self.geometry = (self.stride, self.dilation, (OH, OW))
        self.x_shape, self.padded_hw = x.shape, (H + pt + pb, W + pl + pr)
        xc = padded_cnhw(x, self.pads)                                # (C, N, Hp, Wp)
        wm = w.reshape(G, F // G, Cg * KH * KW)                        # (G, F/G, Cg*KH*KW)
        per_sample = C * KH * KW * OH * OW * x.dtype.itemsize
        chunks = chunk_bounds(N, per_sample, IM2COL_LIMIT_BYTES)
        if len(chunks) > 1:
            y = xp.empty((G, F // G, N, OH, OW), dtype=x.dtype)      # (F, N, OH, OW) memory
        for n0, n1 in chunks:
            cols = im2col(xc[:, n0:n1], (KH, KW), self.geometry)      # (C, KH, KW, n, OH, OW)
            cols = cols.reshape(G, Cg * KH * KW, -1)                  # (G, Cg*KH*KW, n*OH*OW)
            out = _bmm(wm, cols)                                      # (G, F/G, n*OH*OW)
            if len(chunks) == 1:
                y = out.reshape(G, F // G, N, OH, OW)
            else:
                y[:, :, n0:n1] = out.reshape(G, F // G, n1 - n0, OH, OW)
        y = y.reshape(F, N, OH, OW)                                   # (F, N, OH, OW)
        if b is not None:
            y += b.reshape(F, 1, 1, 1)
        if self.saves_for_backward:
            need_x, need_w = self.needs_input_grad[:2]
            self.kernel, self.w_shape, self.chunks = (KH, KW), w.shape, chunks
            self.wm = wm if need_x else None
            # Keep the columns when they were built in one piece; otherwise keep the
            # padded input and rebuild the columns chunk by chunk in backward.
            self.cols = cols if need_w and len(chunks) == 1 else None
            self.xc = xc if need_w and len(chunks) > 1 else None
        return y.transpose(1, 0, 2, 3)                                # (N, F, OH, OW) view

    def backward(self, gy):
        xp = self.xp
        need_x, need_w = self.needs_input_grad[:2]
        need_b = len(self.needs_input_grad) == 3 and self.needs_input_grad[2]
        N, C, H, W = self.x_shape
        G, (KH, KW) = self.groups, self.kernel
        F, OH, OW = gy.shape[1:]
        Cg = C // G
        gyc = gy.transpose(1, 0, 2, 3)                                # (F, N, OH, OW)
        gb = gyc.sum(axis=(1, 2, 3)) if need_b else None
        gxc = xp.zeros((C, N) + self.padded_hw, dtype=gy.dtype) if need_x else None
        gw = 0
        for n0, n1 in self.chunks:
            g = xp.ascontiguousarray(gyc[:, n0:n1]).reshape(G, F // G, -1)  # (G, F/G, n*OH*OW)
            if need_w:
                cols = self.cols
                if cols is None:
                    cols = im2col(self.xc[:, n0:n1], (KH, KW), self.geometry)
                    cols = cols.reshape(G, Cg * KH * KW, -1)          # (G, Cg*KH*KW, n*OH*OW)
                gw = gw + _bmm(g, cols.transpose(0, 2, 1))            # (G, F/G, Cg*KH*KW)
            if need_x:
                gcols = _bmm(self.wm.transpose(0, 2, 1), g)          # (G, Cg*KH*KW, n*OH*OW)
                gcols = gcols.reshape(C, KH, KW, n1 - n0, OH, OW)     # (C, KH, KW, n, OH, OW)
                col2im(gcols, self.padded_hw, self.geometry, out=gxc[:, n0:n1])
        gw = gw.reshape(self.w_shape) if need_w else None
        gx = None
        if need_x:
            pt, _, pl, _ = self.pads
            gx = gxc[:, :, pt : pt + H, pl : pl + W].transpose(1, 0, 2, 3)  # (N, C, H, W)
        return (gx, gw, gb) if len(self.needs_input_grad) == 3 else (gx, gw)


class Conv2dDirectOp(Conv2dOp):
    """``Conv2dOp`` as a compiled direct convolution (stride 1, no dilation, one group).

    forward:  the sums of ``Conv2dOp`` in one pass per image over flat rows, without
              columns.
    backward: gw as dot products of gy with shifted input rows; gx as gy's rows added
              into shifted rows ("rows") or as the forward convolution of gy with the
              flipped, transposed filters ("blocked").

    Two kernels: "blocked" (``backend/kernels/conv_blocked.py``: output tiles held in
    vector registers over every tap) and "rows" (``backend/kernels/conv_direct.py``:
    partial sums streamed through memory); ``kernel`` picks one, by default
    ``dispatch.direct_conv_kernel``. Saves x and w (small, unlike im2col's columns).
    Results equal ``Conv2dIm2colOp``'s up to float rounding order.
    """

    def __init__(self, stride, pads, dilation, groups: int, kernel: str | None = None):
        super().__init__(stride, pads, dilation, groups)
        if kernel not in (None, "blocked", "rows"):
            raise ValueError(f"Conv2dDirectOp kernel must be 'blocked', 'rows' or None, got {kernel!r}")
        self.kernel = kernel

    def forward(self, x, w, b=None):
        self.check(x, w, b)
        if self.groups != 1 or tuple(self.stride) != (1, 1) or tuple(self.dilation) != (1, 1):
            raise ValueError(
                f"Conv2dDirectOp handles stride 1, dilation 1 and groups 1, got stride {self.stride}, "
                f"dilation {self.dilation}, groups {self.groups}"
            )
        chosen = self.kernel is None
        if chosen:   # (the dispatch picks "blocked" only where blocked_conv_applies)
            self.kernel = dispatch.direct_conv_kernel(w.shape, self.pads)
        if self.kernel == "blocked":
            if not chosen and not dispatch.blocked_conv_applies(w.shape, self.pads):
                raise ValueError(f"Conv2dDirectOp's blocked kernel handles padding up to the kernel size "
                                 f"minus one, got padding {self.pads} for a {w.shape[2:]} kernel")
            y = conv_blocked.conv2d_blocked(x, w, b, self.pads)       # (F, N, OH, OW)
        else:
            y = conv_direct.conv2d_direct(x, w, b, self.pads)         # (F, N, OH, OW)
        return self.channel_major_result(x, w, y)

    ahead = None  # (gy, finish): weight gradients computed from gy by the next op's region

    def weight_grads_by_images(self, gy, step: int):
        """(kernel, args) computing this op's weight and bias gradients from gy image by image, or None.

        For the backward region that writes gy (max pooling's scatter inside the next
        convolution's region, ``MaxPool2dFusedOp.backward_by_images``): kernel(n0, n1, *args) on
        every block of ``step`` images once they are written; ``backward`` then only adds the
        groups' partial sums, if gy is the gradient it receives (this op's output had no other
        consumer). Only for a blocked layer that needs no input gradient (a network's first
        convolution, whose input gradient would need a region of its own);
        ``dispatch.FUSE_CONV_WEIGHT_GRADS_INTO_NEXT_CONV`` = 0: never.
        """
        if self.kernel != "blocked" or self.inputs is None or self.needs_input_grad[0]:
            return None
        need_w = self.needs_input_grad[1]
        need_b = len(self.needs_input_grad) == 3 and self.needs_input_grad[2]
        plan = conv_blocked.conv2d_blocked_weight_grads_by_images(self.x, self.w, gy, self.pads, need_w, need_b, step)
        if plan is None:
            return None
        kernel, args, finish = plan
        self.ahead = (gy, finish)
        return kernel, args

    def backward(self, gy):
        need_x, need_w = self.needs_input_grad[:2]
        need_b = len(self.needs_input_grad) == 3 and self.needs_input_grad[2]
        ahead, self.ahead = self.ahead, None
        if ahead is not None and gy is ahead[0]:  # the only gradient of y, its groups summed already
            gw, gb = ahead[1]()
            return (None, gw, gb)[: len(self.needs_input_grad)]
        if self.kernel == "blocked":
            # the backward of a max pooling that made x, image by image in this backward's region
            maker = self.input_creators[0] if need_x else None
            then = maker.backward_by_images if isinstance(maker, MaxPool2dFusedOp) else None
            gx, gw, gb = conv_blocked.conv2d_blocked_grads(self.x, self.w, gy, self.pads, need_x, need_w, need_b, then)
        else:
            gx, gw, gb = conv_direct.conv2d_direct_grads(self.x, self.w, gy, self.pads, need_x, need_w)
        return (gx, gw, gb if need_b else None)[: len(self.needs_input_grad)]


class Conv2dWinogradOp(Conv2dOp):
    """``Conv2dOp`` by Winograd minimal filtering F(m x m, 3 x 3), m = 2 or 4 (3x3, stride 1).

    forward:  U = G w G^T (a x a per filter and channel, a = m + 2), V = B^T d B (per
              channel and a x a input tile d), M[xi,nu] (F, T) = U[xi,nu] (F, C) @ V[xi,nu] (C, T)
              for the a*a positions, y_tile = A^T M A (+ b): a*a products per m*m outputs
              instead of 9*m*m, 2.25x (m = 2) or 4x (m = 4) fewer multiplications.
    backward: gx = the same algorithm on gy (padded by 2 - p) with the flipped filters
              w[f, c, 2 - kh, 2 - kw] taken as (C, F, 3, 3);
              gw = G^T gU G with gU[xi,nu] = sum over tiles (A gy_tile A^T)[xi,nu] @ V[xi,nu]^T
              (the adjoint of the forward); gb = sum_{n, i, j} gy.

    Exact in exact arithmetic; in float32 the transforms add rounding error
    (``backend/kernels/winograd.py``; stated in docs/performance.md). Saves x and w;
    V is recomputed in backward rather than kept (it is a*a/(m*m) times x's size).

    ``filters``: U computed beforehand from this very w (an inference layer's prepacked
    weight, ``backend/prepack.py``); the forward then skips the filter transform and
    gives the same result bit for bit, except where the call without them splits by
    blocks of filters in F(2x2) (``dispatch.winograd_filter_block``: one image of 49-95
    tiles), whose products sum in another order (F(4x4)'s filter blocks, one image of 49-127
    tiles, take prepacked filters too: the same bits). Backward reads w as always.
    """

    def __init__(self, stride, pads, dilation, groups: int, m: int = 4, filters=None):
        super().__init__(stride, pads, dilation, groups)
        self.m, self.filters = m, filters

    def forward(self, x, w, b=None):
        self.check(x, w, b)
        if (
            self.groups != 1 or tuple(self.stride) != (1, 1) or tuple(self.dilation) != (1, 1)
            or w.shape[2:] != (3, 3) or max(self.pads) > 2 or self.m not in winograd.TILE
        ):
            raise ValueError(
                f"Conv2dWinogradOp handles 3x3 kernels, stride 1, dilation 1, groups 1, padding "
                f"<= 2 and m in (2, 4), got kernel {w.shape[2:]}, stride {self.stride}, dilation "
                f"{self.dilation}, groups {self.groups}, padding {self.pads}, m={self.m}"
            )
        y = winograd.conv2d_winograd(x, w, b, self.pads, self.m, filters=self.filters)  # (F, N, OH, OW)
        self.filters = None                                           # not kept with the graph
        return self.channel_major_result(x, w, y)

    def backward(self, gy):
        need_x, need_w = self.needs_input_grad[:2]
        gx, gw = winograd.conv2d_winograd_grads(self.x, self.w, gy, self.pads, self.m, need_x, need_w)
        return self.with_bias_grad(gx, gw, gy)


class Conv2dGemmOp(Conv2dOp):
    """``Conv2dOp`` as compiled im2col + matrix products, columns never kept.

    forward:  per block of images: cols = im2col(x) (compiled, into a reused buffer),
              Y (F, n*OH*OW) = W @ cols per group; a 1x1 stride-1 unpadded convolution of
              channel-major x takes x itself as cols (no copy).
    backward: per block: cols rebuilt, gW += gY @ cols^T; gx = col2im(W^T @ gY)
              (compiled scatter-add, one channel per thread); gb = sum_{n, i, j} gy.

    Any stride, padding, dilation and groups. Saves x and w only: the columns (KH*KW
    times x's size) are rebuilt in backward rather than kept, which is most of the
    memory im2col used to hold (``backend/kernels/im2col.py``).
    """

    def forward(self, x, w, b=None):
        out_hw = self.check(x, w, b)
        y = im2col_kernels.conv2d_gemm(x, w, b, self.stride, self.pads, self.dilation, self.groups, out_hw)
        return self.channel_major_result(x, w, y)

    def backward(self, gy):
        need_x, need_w = self.needs_input_grad[:2]
        gx, gw = im2col_kernels.conv2d_gemm_grads(
            self.x, self.w, gy, self.stride, self.pads, self.dilation, self.groups, need_x, need_w
        )
        return self.with_bias_grad(gx, gw, gy)


class Conv2dPolyphaseOp(Conv2dOp):
    """``Conv2dOp`` for strided convolutions on few input channels (dilation 1, one group).

    forward:  phases[n, c, a, b, i, j] = xpad[n, c, SH*i + a, SW*j + b] (a < SH, b < SW), then
              per block of output rows of one image: cols (C*KH*KW, R*OW) taken from the
              phases as contiguous runs (tap (kh, kw) reads phase (kh % SH, kw % SW) at
              (oh + kh // SH, ow + kw // SW)), Y_block (F, R*OW) = W @ cols (+ b)
              (``backend/kernels/polyphase.py``).
    backward: gW = sum over blocks of gY_block @ cols^T (blocks rebuilt);
              gx = col2im(W^T @ gY) as ``Conv2dGemmOp``; gb = sum_{n, i, j} gy.

    The columns of a block stay in cache between being built and being read, where
    ``Conv2dGemmOp`` writes a whole batch's columns (C*KH*KW/(SH*SW) times x's size) to
    memory first. Saves x and w. Results equal ``Conv2dIm2colOp``'s up to rounding order.
    """

    def forward(self, x, w, b=None):
        out_hw = self.check(x, w, b)
        if self.groups != 1 or tuple(self.dilation) != (1, 1):
            raise ValueError(
                f"Conv2dPolyphaseOp handles dilation 1 and groups 1, got dilation {self.dilation}, "
                f"groups {self.groups}"
            )
        y = polyphase.conv2d_polyphase(x, w, b, self.stride, self.pads, out_hw)  # (F, N, OH, OW)
        return self.channel_major_result(x, w, y)

    def backward(self, gy):
        need_x, need_w = self.needs_input_grad[:2]
        gx, gw = polyphase.conv2d_polyphase_grads(self.x, self.w, gy, self.stride, self.pads, need_x, need_w)
        return self.with_bias_grad(gx, gw, gy)


class Conv2dStridedPlanesOp(Conv2dOp):
    """``Conv2dOp`` for 3x3 stride-2 convolutions with padding 1, on the input's stride phases.

    forward:  phase[2a + b][n, c, i, j] = x[n, c, 2i + a, 2j + b]; tap (kh, kw) reads phase
              (2((kh - 1) mod 2) + (kw - 1) mod 2) shifted by (di, dj) = (-[kh == 0], -[kw == 0]):
              y[n, f, p] = b[f] + sum_{c, kh, kw} w[f, c, kh, kw] * phase[n, c, p + (di, dj)],
              a stride-1 convolution over the phases' planes (register tiles, masked taps).
    backward: gx's phase ph = sum over the taps reading ph of w[f, c, kh, kw] * gy[n, f, p - (di, dj)]
              (gy convolved with a 1x1 to 2x2 sub-kernel per phase, interleaved back into gx);
              gw[f, c, kh, kw] = sum_{n, p} gy[n, f, p] * phase[n, c, p + (di, dj)];
              gb = sum_{n, i, j} gy.

    Shapes and geometry: ``dispatch.strided_planes_applies`` (H, W even; rows and phases whole
    vectors; F a multiple of 8) (``backend/kernels/strided.py``). Saves x and w. Results equal
    ``Conv2dIm2colOp``'s up to rounding order.
    """

    def forward(self, x, w, b=None):
        self.check(x, w, b)
        if not dispatch.strided_planes_applies(x.shape, w.shape, self.stride, self.pads, self.dilation,
                                               self.groups, x.dtype.itemsize):
            raise ShapeError(
                f"Conv2dStridedPlanesOp handles 3x3 kernels with F a multiple of 8 and at most "
                f"{dispatch.STRIDED_PLANES_MAX_CHANNELS} input channels, stride 2, padding 1, dilation 1, groups 1, "
                f"H and W even with whole 64-byte vectors per row and phase, got "
                f"input {x.shape}, weight {w.shape}, stride {self.stride}, padding {self.pads}, dilation "
                f"{self.dilation}, groups {self.groups}"
            )
        y = strided.conv2d_strided(x, w, b)                           # (F, N, OH, OW)
        return self.channel_major_result(x, w, y)

    def backward(self, gy):
        need_x, need_w = self.needs_input_grad[:2]
        gx, gw = strided.conv2d_strided_grads(self.x, self.w, gy, need_x, need_w)
        return self.with_bias_grad(gx, gw, gy)


def _winograd(m: int):
    def build(stride, pads, dilation, groups, filters=None):
        return Conv2dWinogradOp(stride, pads, dilation, groups, m=m, filters=filters)

    return build


_CONV2D_ALGORITHMS = {
    "im2col": Conv2dIm2colOp, "gemm": Conv2dGemmOp, "direct": Conv2dDirectOp,
    "winograd2": _winograd(2), "winograd4": _winograd(4), "polyphase": Conv2dPolyphaseOp,
    "strided": Conv2dStridedPlanesOp,
}


def _bmm(a, b):
    """Batched matrix product over groups; a single group is a plain 2-D BLAS call."""
    if a.shape[0] == 1:
        return matmul(a[0], b[0])[None]
    return matmul(a, b)


class ConvTranspose2dOp(Function):
    """2-D transposed convolution (the gradient of conv2d with respect to its input).

    forward:  cols (Cout*KH*KW, N*H*W) = W^T @ x  per group; y = col2im(cols), cropped by
              the padding (output_padding adds rows/columns at the bottom/right).
    backward: gx = W @ im2col(gy)  (a plain convolution of gy);
              gW = x @ im2col(gy)^T;  gb = sum_{n, i, j} gy.

    Shapes: x (N, Cin, H, W), w (Cin, Cout/G, KH, KW), b (Cout,) -> y (N, Cout, OH, OW),
    OH = (H - 1)*SH - 2*PH + DH*(KH - 1) + OPH + 1 (likewise OW).
    """

    def __init__(self, stride, padding, output_padding, dilation, groups: int):
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        self.dilation, self.groups = dilation, groups

    def forward(self, x, w, b=None):
        xp = self.xp
        _check_input("conv_transpose2d", x, w, self.groups)
        N, Cin, H, W = x.shape
        Cin_w, Cout_g, KH, KW = w.shape
        G = self.groups
        if Cin_w != Cin:
            raise ShapeError(
                f"conv_transpose2d expects C = weight.shape[0] = {Cin_w}, received C={Cin} "
                f"(input shape {x.shape})"
            )
        if Cin % G:
            raise ShapeError(f"conv_transpose2d expects C divisible by groups={G}, got {Cin}")
        Cout = Cout_g * G
        if b is not None and b.shape != (Cout,):
            raise ShapeError(f"conv_transpose2d expects bias of shape ({Cout},), got {b.shape}")
        (SH, SW), (PH, PW) = self.stride, self.padding
        (OPH, OPW), (DH, DW) = self.output_padding, self.dilation
        if OPH >= max(SH, DH) or OPW >= max(SW, DW):
            raise ShapeError(
                f"conv_transpose2d expects output_padding smaller than stride or dilation, got "
                f"output_padding {self.output_padding}, stride {self.stride}, dilation {self.dilation}"
            )
        full_h = (H - 1) * SH + DH * (KH - 1) + 1
        full_w = (W - 1) * SW + DW * (KW - 1) + 1
        OH, OW = full_h - 2 * PH + OPH, full_w - 2 * PW + OPW
        if OH <= 0 or OW <= 0:
            raise ShapeError(
                f"conv_transpose2d output size ({OH}, {OW}) is not positive for input shape "
                f"{x.shape}, kernel ({KH}, {KW}), padding {self.padding}"
            )
        self.padded_hw = (full_h + OPH, full_w + OPW)
        self.geometry = ((SH, SW), (DH, DW), (H, W))
        self.out_hw, self.kernel, self.x_shape = (OH, OW), (KH, KW), x.shape

        xm = xp.ascontiguousarray(x.transpose(1, 0, 2, 3)).reshape(G, Cin // G, N * H * W)
        wm = w.reshape(G, Cin // G, Cout_g * KH * KW)                  # (G, Cin/G, Cout/G*KH*KW)
        cols = _bmm(wm.transpose(0, 2, 1), xm)                    # (G, Cout/G*KH*KW, N*H*W)
        cols = cols.reshape(Cout, KH, KW, N, H, W)
        buf = col2im(cols, self.padded_hw, self.geometry)             # (Cout, N, Hp, Wp)
        y = buf[:, :, PH : PH + OH, PW : PW + OW]                     # (Cout, N, OH, OW)
        if b is not None:
            y = y + b.reshape(Cout, 1, 1, 1)
        if self.saves_for_backward:
            self.xm = xm if self.needs_input_grad[1] else None
            self.wm = wm if self.needs_input_grad[0] else None
        return y.transpose(1, 0, 2, 3)                                # (N, Cout, OH, OW)

    def backward(self, gy):
        xp = self.xp
        need_x, need_w = self.needs_input_grad[:2]
        need_b = len(self.needs_input_grad) == 3 and self.needs_input_grad[2]
        N, Cin, H, W = self.x_shape
        G, (KH, KW) = self.groups, self.kernel
        Cout = gy.shape[1]
        (PH, PW), (OH, OW) = self.padding, self.out_hw
        gb = gy.sum(axis=(0, 2, 3)) if need_b else None
        gpad = xp.zeros((Cout, N) + self.padded_hw, dtype=gy.dtype)  # (Cout, N, Hp, Wp)
        gpad[:, :, PH : PH + OH, PW : PW + OW] = gy.transpose(1, 0, 2, 3)
        gcols = im2col(gpad, (KH, KW), self.geometry)                 # (Cout, KH, KW, N, H, W)
        gcols = gcols.reshape(G, Cout // G * KH * KW, N * H * W)
        gx = gw = None
        if need_x:
            gxm = _bmm(self.wm, gcols)                            # (G, Cin/G, N*H*W)
            gx = gxm.reshape(Cin, N, H, W).transpose(1, 0, 2, 3)      # (N, Cin, H, W)
        if need_w:
            gw = _bmm(self.xm, gcols.transpose(0, 2, 1))          # (G, Cin/G, Cout/G*KH*KW)
            gw = gw.reshape(Cin, Cout // G, KH, KW)
        return (gx, gw, gb) if len(self.needs_input_grad) == 3 else (gx, gw)


def _unbatched(x: Tensor, op: str) -> bool:
    """PyTorch accepts an unbatched (C, H, W) input; cnnkit does too."""
    return x.ndim == 3


# (xp, input shape, weight shape, dtype, stride, padding, dilation, groups, prepacked, kernels on,
# dispatch.generation) -> (stride, dilation, pads, algorithm): what ``conv2d`` derives from its
# arguments and the dispatch settings, none of it from array values (``dispatch.CONV_PLANS``)
_PLANS: dict = {}
_PLANS_MAX = 512  # entries; then the cache starts over


def _plain(value) -> bool:
    """An int, a string or a pair of ints, exactly (a key that equals only what passed the checks:
    1.0 and True equal 1 as keys, and are refused by ``pair``)."""
    kind = type(value)
    return kind is int or kind is str or (kind is tuple and len(value) == 2 and type(value[0]) is int
                                          and type(value[1]) is int)


def _plan(xp, input: Tensor, weight: Tensor, stride, padding, dilation, groups: int, ready: bool):
    """(stride, dilation, pads, algorithm) of a conv2d call: its arguments normalized and
    checked, and the algorithm ``dispatch.conv2d_algorithm`` picks ("im2col" for an input that
    is not 4-D: its checks report the rank). Kept per key when ``dispatch.CONV_PLANS``; a call
    whose arguments fail a check raises and keeps nothing."""
    key = None
    if dispatch.CONV_PLANS and _plain(stride) and _plain(padding) and _plain(dilation) and type(groups) is int:
        key = (xp, input.shape, weight.shape, input.dtype, stride, padding, dilation, groups, ready,
               config.kernels_enabled(), dispatch.generation)
        plan = _PLANS.get(key)
        if plan is not None:
            return plan
    op = "conv2d"
    stride2, dilation2 = pair(stride, "stride", op), pair(dilation, "dilation", op)
    _check_geometry(op, stride2, dilation2)
    if weight.ndim != 4:
        raise ShapeError(f"{op} expects weight of shape (F, C/groups, KH, KW), got {weight.shape}")
    pads = conv_padding(padding, weight.shape[2:], stride2, dilation2, op)
    algorithm = "im2col"  # its checks report a wrong input rank
    if input.ndim == 4:
        algorithm = dispatch.conv2d_algorithm(xp, input.dtype, input.shape, weight.shape, stride2, pads, dilation2,
                                              groups, prepacked=ready)
    plan = (stride2, dilation2, pads, algorithm)
    if key is not None and input.ndim == 4:
        if len(_PLANS) >= _PLANS_MAX:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1, *,
           prepacked: ConvWeightPack | None = None) -> Tensor:
    """2-D convolution, as ``torch.nn.functional.conv2d``.

    Args:
        input: (N, C, H, W), or (C, H, W) for a single image.
        weight: filters (F, C/groups, KH, KW).
        bias: optional (F,).
        stride, dilation: int or (SH, SW) / (DH, DW).
        padding: int, (PH, PW), "valid" (0) or "same" (output size = input size; stride 1).
        groups: split channels into groups convolved separately (groups = C: depthwise).
        prepacked: the weight's forms prepared for inference (``nn.Conv2d.prepacked``, set by
            ``nn.utils.prepack_for_inference``); used only while ``weight.data`` is the
            frozen array they were built from, else ignored. With them the dispatch runs
            Winograd on smaller inputs and F(4x4) on larger filter banks (its filter
            transform is free), so results can differ from an unprepacked call by the
            algorithms' rounding.

    Returns:
        (N, F, OH, OW), OH = floor((H + 2*PH - DH*(KH-1) - 1) / SH) + 1.

    Raises:
        ShapeError: wrong rank, channel mismatch, kernel larger than the padded input,
            stride, dilation or groups not positive.
    """
    input = input if isinstance(input, Tensor) else Tensor(input)
    weight = weight if isinstance(weight, Tensor) else Tensor(weight)
    squeeze = _unbatched(input, "conv2d")
    if squeeze:
        input = input.reshape((1,) + input.shape)
    inputs = (input, weight) if bias is None else (input, weight, bias)
    xp = get_array_module(input.data)
    ready = prepacked is not None and prepacked.holds(weight.data)    # Winograd's filters cost nothing
    stride, dilation, pads, algorithm = _plan(xp, input, weight, stride, padding, dilation, groups, ready)
    if ready and algorithm in ("winograd2", "winograd4"):
        filters = prepacked.winograd_filters(weight.data, int(algorithm[-1]))  # computed on first use
        y = _CONV2D_ALGORITHMS[algorithm](stride, pads, dilation, groups, filters=filters)(*inputs)
    else:
        y = _CONV2D_ALGORITHMS[algorithm](stride, pads, dilation, groups)(*inputs)
    return y.reshape(y.shape[1:]) if squeeze else y


def conv_transpose2d(
    input, weight, bias=None, stride=1, padding=0, output_padding=0, groups: int = 1, dilation=1
) -> Tensor:
    """2-D transposed convolution, as ``torch.nn.functional.conv_transpose2d``.

    Args:
        input: (N, Cin, H, W), or (Cin, H, W).
        weight: (Cin, Cout/groups, KH, KW) (PyTorch's layout for transposed convolutions).
        bias: optional (Cout,).
        stride, padding, output_padding, dilation: int or pair.

    Returns:
        (N, Cout, OH, OW), OH = (H - 1)*SH - 2*PH + DH*(KH - 1) + OPH + 1.
    """
    op = "conv_transpose2d"
    input = input if isinstance(input, Tensor) else Tensor(input)
    stride, dilation = pair(stride, "stride", op), pair(dilation, "dilation", op)
    _check_geometry(op, stride, dilation)
    padding = pair(padding, "padding", op)
    output_padding = pair(output_padding, "output_padding", op)
    if min(padding) < 0 or min(output_padding) < 0:
        raise ShapeError(f"{op} expects padding and output_padding >= 0, got {padding}, {output_padding}")
    squeeze = _unbatched(input, op)
    if squeeze:
        input = input.reshape((1,) + input.shape)
    inputs = (input, weight) if bias is None else (input, weight, bias)
    y = ConvTranspose2dOp(stride, padding, output_padding, dilation, groups)(*inputs)
    return y.reshape(y.shape[1:]) if squeeze else y


def conv2d_batch_norm_relu(
    input, weight, stride=1, padding=0, dilation=1, groups: int = 1, *, running_mean, running_var,
    bn_weight=None, bn_bias=None, eps: float = 1e-5, residual=None,
) -> Tensor:
    """relu(batch_norm(conv2d(input, weight, None, stride, padding, dilation, groups),
    training=False) + residual) (residual None: without the sum): ``batch_norm_relu`` after a
    convolution without bias.

    Where no op would be recorded and the dispatch picks Winograd or the compiled GEMM for a
    4-D NumPy input, the convolution applies the eval batch norm, the sum and the ReLU to its
    output as it finishes it (``dispatch.FUSE_CONV_BATCH_NORM_RELU``), with the very
    expressions of the separate ops: the same bits. Otherwise ``conv2d``, then
    ``batch_norm_relu``.

    Shape: input (N, C, H, W), weight (F, C/groups, KH, KW), residual and output (N, F, OH, OW).
    """
    input = input if isinstance(input, Tensor) else Tensor(input)
    weight = weight if isinstance(weight, Tensor) else Tensor(weight)
    y = _conv2d_batch_norm_fused(input, weight, stride, padding, dilation, groups, running_mean, running_var,
                                 bn_weight, bn_bias, eps, residual, relu=True)
    if y is not None:
        return y
    return batch_norm_relu(conv2d(input, weight, None, stride, padding, dilation, groups), running_mean,
                           running_var, bn_weight, bn_bias, eps, residual=residual)


def conv2d_batch_norm(
    input, weight, stride=1, padding=0, dilation=1, groups: int = 1, *, running_mean, running_var,
    bn_weight=None, bn_bias=None, eps: float = 1e-5,
) -> Tensor:
    """batch_norm(conv2d(input, weight, None, stride, padding, dilation, groups), training=False):
    a convolution without bias and the eval batch norm after it, no ReLU (ResNet's shortcut).

    As ``conv2d_batch_norm_relu`` without the ReLU (``dispatch.FUSE_CONV_BATCH_NORM``): where no
    op would be recorded and the dispatch picks Winograd or the compiled GEMM, the convolution
    applies the batch norm to its output as it finishes it, with the batch norm's own
    expression: the same bits. Otherwise ``conv2d``, then ``batch_norm``.

    Shape: input (N, C, H, W), weight (F, C/groups, KH, KW), output (N, F, OH, OW).
    """
    input = input if isinstance(input, Tensor) else Tensor(input)
    weight = weight if isinstance(weight, Tensor) else Tensor(weight)
    y = _conv2d_batch_norm_fused(input, weight, stride, padding, dilation, groups, running_mean, running_var,
                                 bn_weight, bn_bias, eps, None, relu=False)
    if y is not None:
        return y
    return batch_norm(conv2d(input, weight, None, stride, padding, dilation, groups), running_mean, running_var,
                      bn_weight, bn_bias, training=False, eps=eps)


def conv2d_relu(input, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1, *,
                prepacked: ConvWeightPack | None = None, residual=None) -> Tensor:
    """relu(conv2d(input, weight, bias, ...) + residual) (residual None: without the sum): an
    optimized model's convolution (batch norm folded in) and the ReLU after it.

    As ``conv2d_batch_norm_relu`` (``dispatch.FUSE_CONV_RELU``): where nothing is recorded and
    the dispatch picks Winograd or the compiled GEMM, the convolution applies the sum and the
    ReLU to its output as it finishes it (the same bits); otherwise ``conv2d``, the sum and
    ``relu``.
    """
    input = input if isinstance(input, Tensor) else Tensor(input)
    weight = weight if isinstance(weight, Tensor) else Tensor(weight)
    y = None
    if dispatch.FUSE_CONV_RELU:
        y = _conv2d_epilogue(input, weight, bias, stride, padding, dilation, groups, prepacked, residual, (bias,),
                             None)
    if y is not None:
        return y
    y = conv2d(input, weight, bias, stride, padding, dilation, groups, prepacked=prepacked)
    return relu(y if residual is None else y + residual)


def _conv2d_batch_norm_fused(input: Tensor, weight: Tensor, stride, padding, dilation, groups, running_mean,
                             running_var, bn_weight, bn_bias, eps, residual, relu: bool) -> Tensor | None:
    """The fused form of ``conv2d_batch_norm_relu`` (``conv2d_batch_norm`` with ``relu`` False),
    or None where it does not apply: its switch off (``dispatch.FUSE_CONV_BATCH_NORM_RELU``,
    ``FUSE_CONV_BATCH_NORM``), statistics missing or not one per output channel, eps < 0, or
    ``_conv2d_epilogue``'s own conditions."""
    if not (dispatch.FUSE_CONV_BATCH_NORM_RELU if relu else dispatch.FUSE_CONV_BATCH_NORM):
        return None
    mean, var, gamma, beta = (_array(a) for a in (running_mean, running_var, bn_weight, bn_bias))
    F = weight.shape[0] if weight.ndim == 4 else 0
    if (mean is None or var is None or eps < 0
            or not all(a is None or a.shape == (F,) for a in (mean, var, gamma, beta))):
        return None
    return _conv2d_epilogue(input, weight, None, stride, padding, dilation, groups, None, residual,
                            (bn_weight, bn_bias), (mean, var, gamma, beta, eps), relu=relu)


def _conv2d_epilogue(input, weight, bias, stride, padding, dilation, groups, prepacked, residual, params,
                     statistics, relu: bool = True) -> Tensor | None:
    """The fused form of ``conv2d_batch_norm_relu`` (``statistics``: running mean and variance,
    gamma, beta as arrays, and eps), ``conv2d_batch_norm`` (those, ``relu`` False) or
    ``conv2d_relu`` (None), or None where it does not apply."""
    if input.ndim != 4 or weight.ndim != 4 or weight.dtype != input.dtype:
        return None
    xp = get_array_module(input.data)
    F, b = weight.shape[0], _array(bias)
    if (not dispatch.kernels_usable(xp, input.dtype) or (b is not None and (b.shape != (F,) or b.dtype != input.dtype))
            or _recorded([input, weight] + [a for a in (*params, residual) if isinstance(a, Tensor)])):
        return None
    x, w = input.data, weight.data
    ready = prepacked is not None and prepacked.holds(w)              # Winograd's filters cost nothing
    stride, dilation, pads, algorithm = _plan(xp, input, weight, stride, padding, dilation, groups, ready)  # as conv2d's
    if algorithm not in ("gemm", "winograd2", "winograd4"):
        return None
    OH, OW = _CONV2D_ALGORITHMS[algorithm](stride, pads, dilation, groups).check(x, w, b)
    gemm = algorithm == "gemm"                                        # its bias goes in the epilogue
    mean, var, gamma, beta, eps = statistics if statistics is not None else (None,) * 5
    epilogue = batchnorm_kernels.conv_epilogue(mean, var, gamma, beta, eps, x.dtype, _array(residual),
                                               (x.shape[0], F, OH, OW), b if gemm else None, relu)
    if epilogue is None:
        return None
    if gemm:
        y = im2col_kernels.conv2d_gemm(x, w, None, stride, pads, dilation, groups, (OH, OW), epilogue=epilogue)
    else:                                                             # (Winograd adds the bias itself)
        m = int(algorithm[-1])
        filters = prepacked.winograd_filters(w, m) if ready else None
        y = winograd.conv2d_winograd(x, w, b, pads, m, filters=filters, epilogue=epilogue)
    return Tensor._wrap(y.transpose(1, 0, 2, 3))                      # (N, F, OH, OW) view of (F, N, OH, OW)
