"""A convolution as the dense (fully connected) layer it equals.

``conv_as_dense`` builds the layer's (doubly block-Toeplitz) weight matrix: mostly
structural zeros, its non-zeros copies of a few shared weights. ``conv_stats`` gives the
counts without building the matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import nn
from ..errors import ShapeError
from ..functional.args import conv_padding, output_size, output_size_formula, pair

__all__ = ["ConvStats", "DenseConv", "conv_stats", "conv_as_dense", "DENSE_LIMIT"]

# A dense matrix bigger than this (entries) is refused: 5e7 float32 + int32 entries is 400 MB.
DENSE_LIMIT = 50_000_000


# --------------------------------------------------------------------------- convolution as a dense layer
def _taps_in_range(n: int, out: int, k: int, stride: int, pad_before: int, dilation: int) -> np.ndarray:
    """For each kernel tap along one axis, how many output positions read a real (unpadded) input."""
    pos = np.arange(out)[:, None] * stride - pad_before + np.arange(k)[None, :] * dilation  # (out, k)
    return ((pos >= 0) & (pos < n)).sum(axis=0)                                            # (k,)


@dataclass
class ConvStats:
    """A convolution's connection counts, beside those of the dense layer it equals.

    Attributes:
        input_shape: (C, H, W); output_shape: (F, OH, OW).
        kernel: (KH, KW); stride, pads (top, bottom, left, right), dilation; groups.
        conv_weights: F * C/groups * KH * KW, the distinct weights; conv_biases: F or 0.
        dense_weights: (F*OH*OW) * (C*H*W), a fully connected layer's weights; dense_biases: F*OH*OW.
        nonzeros: entries of the dense matrix that hold a conv weight (the rest are
            structural zeros: input pixels outside the receptive field).
        uses: (KH, KW) how many entries of the matrix hold each weight (the same for every
            filter and channel); fewer than OH*OW for taps that fall on the padding.
    """

    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int
    conv_weights: int
    conv_biases: int
    dense_weights: int
    dense_biases: int
    nonzeros: int
    uses: np.ndarray = field(repr=False)

    @property
    def inputs(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def outputs(self) -> int:
        return int(np.prod(self.output_shape))

    @property
    def zero_fraction(self) -> float:
        """Fraction of the dense matrix's entries that are structural zeros."""
        return 1.0 - self.nonzeros / self.dense_weights

    @property
    def weights_per_output(self) -> int:
        """Weights one output neuron has in the convolution: C/groups * KH * KW (its filter)."""
        C = self.input_shape[0]
        return C // self.groups * self.kernel[0] * self.kernel[1]

    def report(self) -> str:
        """The articles' comparison, in words and numbers."""
        C, H, W = self.input_shape
        F, OH, OW = self.output_shape
        (KH, KW), (SH, SW), (pt, pb, pl, pr) = self.kernel, self.stride, self.pads
        lines = [
            f"convolution: input {H}x{W}x{C} (H x W x C), {_plural(F, 'filter')} of "
            f"{KH}x{KW}x{C // self.groups}, stride {_fmt_pair(self.stride)}, "
            f"padding {_fmt_pair((pt, pl)) if (pt, pl) == (pb, pr) else self.pads}"
            + (f", dilation {_fmt_pair(self.dilation)}" if self.dilation != (1, 1) else "")
            + (f", groups {self.groups}" if self.groups != 1 else ""),
        ]
        if self.dilation == (1, 1) and pt == pb and pl == pr:
            lines.append(f"  output height: {output_size_formula(H, KH, stride=SH, padding=pt)}")
            if (W, KW, pl, SW) != (H, KH, pt, SH):
                lines.append(f"  output width:  {output_size_formula(W, KW, stride=SW, padding=pl)}")
        lines += [
            f"  output {OH}x{OW}x{F} = {self.outputs:,} neurons",
            f"  parameters: {F}*{C // self.groups}*{KH}*{KW} = {self.conv_weights:,} weights"
            f" + {_plural(self.conv_biases, 'bias', 'biases')} = {self.conv_weights + self.conv_biases:,}",
            f"  each output neuron has {self.weights_per_output:,} weights (its filter) and sees at most "
            f"{self.weights_per_output:,} of the {self.inputs:,} inputs; a dense neuron has {self.inputs:,}",
            "as a fully connected layer y = W @ x + b (W: the dense, Toeplitz matrix of the convolution):",
            f"  W has {self.outputs:,} x {self.inputs:,} = {self.dense_weights:,} entries: "
            f"{self.nonzeros:,} non-zero ({100 * (1 - self.zero_fraction):.2f}%), "
            f"{self.dense_weights - self.nonzeros:,} structural zeros ({100 * self.zero_fraction:.2f}%)",
        ]
        lo, hi = int(self.uses.min()), int(self.uses.max())
        times = f"{lo:,} times"
        if lo != hi:
            times = f"{lo:,} to {hi:,} times (fewer where the kernel covers padding)"
        lines += [
            f"  its non-zeros are copies of the {self.conv_weights:,} distinct weights, each used {times}",
            f"  a fully connected layer of the same size learns {self.dense_weights:,} weights + "
            f"{self.dense_biases:,} biases = {self.dense_weights + self.dense_biases:,} parameters, "
            f"{self.dense_weights / self.conv_weights:,.0f}x the convolution's {self.conv_weights:,} weights",
        ]
        return "\n".join(lines)


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def _fmt_pair(values) -> str:
    return str(values[0]) if values[0] == values[1] else f"{values[0]}x{values[1]}"


def conv_stats(
    input_shape: tuple[int, int, int], out_channels: int, kernel_size, stride=1, padding=0,
    dilation=1, groups: int = 1, bias: bool = True,
) -> ConvStats:
    """Count a convolution's weights and connections and those of the equal dense layer.

    Needs no weights and builds no matrix, so it works for any layer size.

    Args:
        input_shape: (C, H, W).
        out_channels: F. kernel_size, stride, dilation: int or pair.
        padding: int, pair, "valid" or "same" (zeros).

    Raises:
        ShapeError: channels not divisible by groups, a stride or dilation not positive, or the
            kernel larger than the padded input (the checks of ``F.conv2d``).
    """
    C, H, W = (int(v) for v in input_shape)
    F = int(out_channels)
    (KH, KW), (SH, SW), (DH, DW) = (pair(v, name, "conv_stats") for v, name in
                                    ((kernel_size, "kernel_size"), (stride, "stride"), (dilation, "dilation")))
    pt, pb, pl, pr = conv_padding(padding, (KH, KW), (SH, SW), (DH, DW), "conv_stats")
    if groups <= 0 or C % groups or F % groups:
        raise ShapeError(f"conv_stats expects C={C} and F={F} divisible by groups={groups}")
    if min(SH, SW, DH, DW) <= 0:
        raise ShapeError(f"conv_stats expects stride and dilation > 0, got {(SH, SW)} and {(DH, DW)}")
    if DH * (KH - 1) + 1 > H + pt + pb or DW * (KW - 1) + 1 > W + pl + pr:
        raise ShapeError(
            f"conv_stats: kernel ({KH}, {KW}) is larger than the padded input "
            f"({H + pt + pb}, {W + pl + pr}) (input shape {(C, H, W)})"
        )
    OH = output_size(H, KH, SH, (pt, pb), DH)
    OW = output_size(W, KW, SW, (pl, pr), DW)
    along_h = _taps_in_range(H, OH, KH, SH, pt, DH)                  # (KH,)
    along_w = _taps_in_range(W, OW, KW, SW, pl, DW)                  # (KW,)
    uses = np.outer(along_h, along_w)                                 # (KH, KW)
    Cg = C // groups
    return ConvStats(
        input_shape=(C, H, W), output_shape=(F, OH, OW), kernel=(KH, KW), stride=(SH, SW),
        pads=(pt, pb, pl, pr), dilation=(DH, DW), groups=groups,
        conv_weights=F * Cg * KH * KW, conv_biases=F if bias else 0,
        dense_weights=F * OH * OW * C * H * W, dense_biases=F * OH * OW,
        nonzeros=int(F * Cg * uses.sum()), uses=uses,
    )


@dataclass
class DenseConv:
    """A convolution written out as a dense layer: ``y.flatten() = matrix @ x.flatten() + bias``.

    Attributes:
        matrix: (F*OH*OW, C*H*W) float, rows in (F, OH, OW) order, columns in (C, H, W) order.
        bias: (F*OH*OW,): each filter's bias repeated over its OH*OW positions; None without bias.
        weight_index: (F*OH*OW, C*H*W) int: the flat index into the conv weight
            (F, C/groups, KH, KW) that each entry copies, -1 for a structural zero.
        stats: the counts (``ConvStats``).
        uses: (F, C/groups, KH, KW): how many entries of ``matrix`` hold each weight.
    """

    matrix: np.ndarray
    bias: np.ndarray | None
    weight_index: np.ndarray
    stats: ConvStats
    uses: np.ndarray


def conv_as_dense(conv: nn.Conv2d, input_shape: tuple[int, ...]) -> DenseConv:
    """Build the dense (doubly block-Toeplitz) matrix equal to ``conv`` on inputs of ``input_shape``.

    Row (f, i, j) of the matrix holds, at column (c, i*SH - PT + kh*DH, j*SW - PL + kw*DW),
    the weight w[f, c - g*C/G, kh, kw] of every tap that lands inside the image (g is
    f's group); every other entry is a structural zero.

    Args:
        conv: a ``Conv2d`` with zero padding (``padding_mode="zeros"``).
        input_shape: (C, H, W) or (N, C, H, W) (N is ignored).

    Returns:
        A ``DenseConv``.

    Raises:
        ValueError: padding_mode is not "zeros", C does not match the layer, or the matrix
            would have more than ``DENSE_LIMIT`` entries (use ``conv_stats`` for the counts).
    """
    if getattr(conv, "padding_mode", "zeros") != "zeros":
        raise ValueError(f"conv_as_dense supports zero padding only, got padding_mode={conv.padding_mode!r}")
    C, H, W = (int(v) for v in tuple(input_shape)[-3:])
    w = np.asarray(conv.weight.data)
    F, Cg, KH, KW = w.shape
    if C != conv.in_channels:
        raise ValueError(f"conv_as_dense: the layer takes C={conv.in_channels}, input_shape has C={C}")
    stats = conv_stats((C, H, W), F, (KH, KW), conv.stride, conv.padding, conv.dilation, conv.groups,
                       bias=conv.bias is not None)
    if stats.dense_weights > DENSE_LIMIT:
        raise ValueError(
            f"conv_as_dense: the matrix would have {stats.dense_weights:,} entries (limit {DENSE_LIMIT:,}); "
            "conv_stats gives the counts without it"
        )
    _, OH, OW = stats.output_shape
    (SH, SW), (DH, DW) = stats.stride, stats.dilation
    pt, _, pl, _ = stats.pads
    G = conv.groups
    # One axis per index: (F, OH, OW, Cg, KH, KW), broadcast.
    f = np.arange(F).reshape(F, 1, 1, 1, 1, 1)
    i = np.arange(OH).reshape(1, OH, 1, 1, 1, 1)
    j = np.arange(OW).reshape(1, 1, OW, 1, 1, 1)
    c = np.arange(Cg).reshape(1, 1, 1, Cg, 1, 1)
    kh = np.arange(KH).reshape(1, 1, 1, 1, KH, 1)
    kw = np.arange(KW).reshape(1, 1, 1, 1, 1, KW)
    rows_in = i * SH - pt + kh * DH                                   # input row of each tap
    cols_in = j * SW - pl + kw * DW                                   # input column of each tap
    channel = (f // (F // G)) * Cg + c                                # input channel of each tap
    inside = (rows_in >= 0) & (rows_in < H) & (cols_in >= 0) & (cols_in < W)
    shape = (F, OH, OW, Cg, KH, KW)
    out_index = np.broadcast_to((f * OH + i) * OW + j, shape)
    in_index = np.broadcast_to((channel * H + rows_in) * W + cols_in, shape)
    w_index = np.broadcast_to(((f * Cg + c) * KH + kh) * KW + kw, shape)
    inside = np.broadcast_to(inside, shape)

    weight_index = np.full((F * OH * OW, C * H * W), -1, dtype=np.int32)
    weight_index[out_index[inside], in_index[inside]] = w_index[inside]
    matrix = np.where(weight_index >= 0, w.reshape(-1)[np.maximum(weight_index, 0)], 0).astype(w.dtype)
    bias = None
    if conv.bias is not None:
        bias = np.repeat(np.asarray(conv.bias.data), OH * OW)         # (F*OH*OW,)
    uses = np.bincount(weight_index[weight_index >= 0], minlength=w.size).reshape(w.shape)
    return DenseConv(matrix, bias, weight_index, stats, uses)
