"""summary(): a Keras-style table of a model's layers, output shapes, parameters and MACs.

One forward pass on a zero input (in eval mode, under ``no_grad``) with a forward hook on
every leaf module records what each layer really produces, so the shapes are those of a
real run, not of a separate shape calculator.

Conventions, stated once:

- MACs are multiply-accumulates (one multiply and one add), not FLOPs (about 2 per MAC).
  Counted: Conv2d (output elements * C/groups * KH * KW), ConvTranspose2d (input
  elements * F/groups * KH * KW) and Linear (output elements * in_features). Not counted:
  bias additions, BatchNorm, activations, pooling, dropout, residual adds and
  concatenations. This is the convention of torchvision's published "GFLOPS"
  (ResNet-18 1.81 G, VGG-16 15.47 G, AlexNet 0.71 G at 224x224, batch 1).
- Parameters are those of ``model.parameters()``, each shared tensor once; buffers such
  as BatchNorm's running statistics are not parameters (reported separately).
- MB are 2**20 bytes. "Forward activations" sums the outputs of the listed layers.
- Receptive field (``show_arithmetic=True``), per axis, along the layers in execution
  order (Dumoulin and Visin, 2016; Araujo et al., 2019): a layer with kernel K, stride S,
  padding P and dilation D maps (r, j) of its input to
      r_out = r + (D*(K - 1)) * j,   j_out = j * S,
  starting from r = 1, j = 1 at the input; r is the side of the input window that one
  output unit sees and j the input distance between adjacent output units. Where a
  layer's input was made by an op outside any module (a residual add, a concatenation),
  the largest field computed so far is used: the union of merged branches in
  feed-forward networks whose fields only grow with depth (ResNet, GoogLeNet, DenseNet).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import config, nn
from ..functional.args import pair
from ..tensor import Tensor
from .graph import is_layer

__all__ = ["summary", "SummaryResult", "LayerRow", "window_geometry", "adaptive_window"]

_MB = 2**20
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.SumPool2d, nn.LPPool2d)
_ADAPTIVE_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


@dataclass
class LayerRow:
    """One call of one leaf module (or of a module that owns parameters directly).

    Attributes:
        path: the module's dotted path in the model ("layer1.0.conv1").
        type: the module's class name.
        output_shape: the shape of the output (of the first tensor, for a tuple output).
        params: parameters owned directly by the module, counted at its first call only.
        macs: multiply-accumulates of this call (0 for the layers not counted).
        shared: True for a second or later call of the same module.
        output_bytes: size of the output array(s).
        arithmetic: for conv and pooling layers, the output-size arithmetic of H and W,
            e.g. "H: (224 - 3 + 2*1)/1 + 1 = 224".
        receptive_field: (RH, RW), the input window one output unit sees; None where it
            is not defined (after Flatten/Linear) or not computed (ConvTranspose2d).
        jump: (JH, JW), the input distance between adjacent output units.
    """

    path: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    shared: bool = False
    output_bytes: int = 0
    arithmetic: str | None = None
    receptive_field: tuple[float, float] | None = None
    jump: tuple[float, float] | None = None


@dataclass
class SummaryResult:
    """What ``summary`` measured; ``str(result)`` is the printed table.

    Attributes:
        rows: one LayerRow per call of a leaf module, in execution order.
        input_shape: the shape fed to the model (with the batch axis).
        total_params, trainable_params, non_trainable_params: parameter counts.
        buffer_values: values in buffers (BatchNorm running statistics), not parameters.
        total_macs: multiply-accumulates of the whole forward pass, for this batch.
        input_mb, activations_mb, params_mb, total_mb: memory in MB (2**20 bytes).
        table: the text that was printed.
    """

    model_name: str
    rows: list[LayerRow]
    input_shape: tuple[int, ...]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    buffer_values: int
    total_macs: int
    input_mb: float
    activations_mb: float
    params_mb: float
    total_mb: float
    show_arithmetic: bool = False
    table: str = field(default="", repr=False)

    def __str__(self) -> str:
        return self.table


@dataclass
class _Field:
    """Receptive field of a tensor's units, per axis (H, W): size r and jump j."""

    size: tuple[float, float]
    jump: tuple[float, float]


def summary(
    model: nn.Module, input_shape: Sequence[int], *, show_arithmetic: bool = False,
    print_fn: Callable[[str], Any] | None = print, dtype=None,
) -> SummaryResult:
    """Print a table of the model's layers and return the figures as a SummaryResult.

    Args:
        model: any Module. It runs in eval mode for the pass; each module's
            training flag is restored afterwards.
        input_shape: (C, H, W) or (D,) without the batch axis (batch 1 is added), or
            (N, C, H, W) / (N, D) with it.
        show_arithmetic: under each conv and pooling row, show the output-size arithmetic
            (W - F + 2P)/S + 1 of H and W with the layer's numbers (the dilated kernel
            D*(F - 1) + 1 in place of F when D > 1) and the receptive field and jump of
            the layer's units with respect to the input.
        print_fn: called once with the whole table; None prints nothing.
        dtype: dtype of the zero input (default: the dtype of the model's parameters).

    Returns:
        A SummaryResult (rows, totals, memory); ``str()`` of it is the table.

    Raises:
        ShapeError: the model rejects the input shape (with the failing layer's path).
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) in (1, 3):
        shape = (1,) + shape
    if dtype is None:
        first = next(model.parameters(), None)
        dtype = first.dtype if first is not None else config.get_default_dtype()
    x = Tensor(np.zeros(shape, dtype=dtype))

    rows: list[LayerRow] = []
    fields: dict[int, tuple[Tensor, _Field | None]] = {id(x): (x, _Field((1, 1), (1, 1)))}
    called: set[int] = set()
    counted_params: set[int] = set()

    def add_row(call: nn.LayerCall) -> None:
        rows.append(_row(call.module, call.path, call.inputs, call.output, fields, called, counted_params))

    with nn.trace_layers(model, lambda path, m: is_layer(m), on_call=add_row, keep=False):
        model(x)

    params = list(model.parameters())
    result = SummaryResult(
        model_name=type(model).__name__,
        rows=rows,
        input_shape=shape,
        total_params=sum(p.size for p in params),
        trainable_params=sum(p.size for p in params if p.requires_grad),
        non_trainable_params=sum(p.size for p in params if not p.requires_grad),
        buffer_values=sum(int(np.size(_data(b))) for b in model.buffers()),
        total_macs=sum(r.macs for r in rows),
        input_mb=x.data.nbytes / _MB,
        activations_mb=sum(r.output_bytes for r in rows) / _MB,
        params_mb=sum(p.data.nbytes for p in params) / _MB,
        total_mb=0.0,
        show_arithmetic=show_arithmetic,
    )
    result.total_mb = result.input_mb + result.activations_mb + result.params_mb
    result.table = _format(result)
    if print_fn is not None:
        print_fn(result.table)
    return result


# ---------------------------------------------------------------------- one row


def _data(value: Any) -> Any:
    return value.data if isinstance(value, Tensor) else value


def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _nbytes(value: Any) -> int:
    if isinstance(value, Tensor):
        return int(value.data.nbytes)
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


def _row(module, path, inputs, output, fields, called, counted_params) -> LayerRow:
    x, y = _first_tensor(inputs), _first_tensor(output)
    shared = id(module) in called
    called.add(id(module))
    params = 0
    for p in module.parameters(recurse=False):
        if id(p) not in counted_params:
            counted_params.add(id(p))
            params += p.size
    row = LayerRow(
        path=path or type(module).__name__,
        type=type(module).__name__,
        output_shape=tuple(y.shape) if y is not None else (),
        params=params,
        macs=_macs(module, x, y),
        shared=shared,
        output_bytes=_nbytes(output),
    )
    field_in = _field_of(x, fields)
    field_out = _propagate(module, x, y, field_in, row)
    if y is not None:
        fields[id(y)] = (y, field_out)  # the tensor is kept so its id is not reused
    if field_out is not None and isinstance(module, _CONVS + _POOLS + _ADAPTIVE_POOLS):
        row.receptive_field, row.jump = field_out.size, field_out.jump
    return row


def _macs(module: nn.Module, x: Tensor | None, y: Tensor | None) -> int:
    if y is None:
        return 0
    if isinstance(module, nn.Conv2d):
        KH, KW = module.kernel_size
        return y.size * (module.in_channels // module.groups) * KH * KW
    if isinstance(module, nn.ConvTranspose2d) and x is not None:
        KH, KW = module.kernel_size
        return x.size * (module.out_channels // module.groups) * KH * KW
    if isinstance(module, nn.Linear):
        return y.size * module.in_features
    return 0


# ---------------------------------------------------------------------- receptive field
def _field_of(x: Tensor | None, fields: dict) -> _Field | None:
    """The field of a layer's input: recorded if a module made it, else the largest so far."""
    if x is None:
        return None
    if id(x) in fields and fields[id(x)][0] is x:
        return fields[id(x)][1]
    known = [f for _, f in fields.values() if f is not None]
    return max(known, key=lambda f: f.size[0] * f.size[1], default=None)


def window_geometry(module: nn.Module) -> tuple | None:
    """(kernel, stride, ((pad_top, pad_bottom), (pad_left, pad_right)), dilation, ceil_mode) of a
    Conv2d or a fixed-window pooling layer; None for other layers.

    "same" padding puts the odd row and column at the bottom and right, as PyTorch.
    """
    if isinstance(module, nn.Conv2d):
        top, bottom, left, right = module.padding_sides()
        return module.kernel_size, module.stride, ((top, bottom), (left, right)), module.dilation, False
    if isinstance(module, _POOLS):
        where = type(module).__name__
        kernel = pair(module.kernel_size, "kernel_size", where)
        stride = pair(module.stride, "stride", where) if module.stride is not None else kernel
        padding = pair(getattr(module, "padding", 0), "padding", where)
        dilation = pair(getattr(module, "dilation", 1), "dilation", where)
        return kernel, stride, tuple((p, p) for p in padding), dilation, module.ceil_mode
    return None


def adaptive_window(i: int, n: int, out: int) -> tuple[int, int]:
    """[start, end) of window ``i`` of an adaptive pool from ``n`` to ``out`` (PyTorch's rule)."""
    return (i * n) // out, -(-((i + 1) * n) // out)


def _geometry(module: nn.Module, x: Tensor) -> tuple | None:
    """(kernel, stride, (pad_lo, pad_hi) per axis, dilation, ceil_mode) of a window layer."""
    fixed = window_geometry(module)
    if fixed is not None:
        return fixed
    if isinstance(module, _ADAPTIVE_POOLS) and x.ndim >= 3:
        # An adaptive pool whose output divides its input is a pool with kernel = stride
        # = H/OH; otherwise its windows vary, and the widest one bounds the field.
        H, W = x.shape[-2:]
        OH, OW = _adaptive_size(module.output_size, (H, W))
        kernel = tuple(_widest_window(n, o) for n, o in ((H, OH), (W, OW)))
        stride = tuple(n // o if n % o == 0 else n / o for n, o in ((H, OH), (W, OW)))
        return kernel, stride, ((0, 0), (0, 0)), (1, 1), False
    return None


def _adaptive_size(output_size, hw: tuple[int, int]) -> tuple[int, int]:
    if output_size is None or np.isscalar(output_size):
        output_size = (output_size, output_size)
    return tuple(int(o) if o is not None else n for o, n in zip(output_size, hw, strict=True))


def _widest_window(n: int, out: int) -> int:
    return max(end - start for start, end in (adaptive_window(i, n, out) for i in range(out)))


def _propagate(module: nn.Module, x: Tensor | None, y: Tensor | None, field_in: _Field | None, row: LayerRow):
    """Return the output's receptive field; fill ``row.arithmetic`` for window layers."""
    if x is None or y is None or x.ndim < 3 or y.ndim < 3:
        return None  # Flatten, Linear and anything that leaves the image layout
    if isinstance(module, nn.ConvTranspose2d):
        row.arithmetic = _transposed_arithmetic(module, x, y)
        return None
    geometry = _geometry(module, x)
    if geometry is None:
        if field_in is None or x.shape[-2:] == y.shape[-2:]:
            return field_in  # pointwise layers: BatchNorm, ReLU, Dropout, Identity, ...
        # A size-changing layer of another kind (a strided subsampling shortcut):
        # the jump scales with the size ratio, the window is unchanged.
        ratio = (x.shape[-2] / y.shape[-2], x.shape[-1] / y.shape[-1])
        return _Field(field_in.size, tuple(j * s for j, s in zip(field_in.jump, ratio, strict=True)))
    kernel, stride, pads, dilation, ceil_mode = geometry
    if isinstance(module, _ADAPTIVE_POOLS):
        row.arithmetic = (
            f"adaptive: H {x.shape[-2]} -> {y.shape[-2]}, W {x.shape[-1]} -> {y.shape[-1]} "
            f"(widest window {kernel[0]}x{kernel[1]})"
        )
    else:
        row.arithmetic = "; ".join(
            _axis_arithmetic(
                axis, x.shape[-2 + i], kernel[i], stride[i], pads[i], dilation[i], ceil_mode, y.shape[-2 + i]
            )
            for i, axis in enumerate("HW")
        )
    if field_in is None:
        return None
    size = tuple(r + dilation[i] * (kernel[i] - 1) * field_in.jump[i] for i, r in enumerate(field_in.size))
    jump = tuple(j * stride[i] for i, j in enumerate(field_in.jump))
    return _Field(size, jump)


def _axis_arithmetic(
    axis: str, n: int, k: int, s: int, pads: tuple[int, int], d: int, ceil_mode: bool, out: int
) -> str:
    """'H: (224 - 3 + 2*1)/1 + 1 = 224', with the dilated kernel and the rounding shown."""
    f = f"{k}" if d == 1 else f"({d}*({k} - 1) + 1)"
    p = f"2*{pads[0]}" if pads[0] == pads[1] else f"({pads[0]} + {pads[1]})"
    exact = (n - (d * (k - 1) + 1) + sum(pads)) / s + 1
    text = f"{axis}: ({n} - {f} + {p})/{s} + 1 = {_number(exact)}"
    if exact != out:
        rounding = "ceil" if ceil_mode and out == math.ceil(exact) else "floor"
        if ceil_mode and out != math.ceil(exact):
            rounding = "ceil, last window dropped"
        text += f" -> {out} ({rounding})"
    return text


def _transposed_arithmetic(module: nn.ConvTranspose2d, x: Tensor, y: Tensor) -> str:
    parts = []
    for i, axis in enumerate("HW"):
        n, k, s, p = x.shape[-2 + i], module.kernel_size[i], module.stride[i], module.padding[i]
        d, op = module.dilation[i], module.output_padding[i]
        f = f"{k}" if d == 1 else f"({d}*({k} - 1) + 1)"
        parts.append(f"{axis}: ({n} - 1)*{s} - 2*{p} + {f} + {op} = {y.shape[-2 + i]}")
    return "; ".join(parts)


def _number(value: float) -> str:
    return f"{int(value)}" if float(value).is_integer() else f"{value:.4g}"


# ---------------------------------------------------------------------- the table
def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:g} "


def _fmt_pair(pair: tuple[float, float]) -> str:
    return "x".join(_number(v) for v in pair)


def _format(result: SummaryResult) -> str:
    header = ("Layer (path)", "Type", "Output shape", "Params", "MACs")
    body = [
        (
            row.path + (" (again)" if row.shared else ""),
            row.type,
            str(row.output_shape),
            f"{row.params:,}" if not row.shared else "(shared)",
            f"{row.macs:,}",
        )
        for row in result.rows
    ]
    widths = [max(len(text) for text in column) for column in zip(header, *body, strict=True)]
    aligns = ["<", "<", "<", ">", ">"]

    def line(cells) -> str:
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, aligns, widths, strict=True)).rstrip()

    width = sum(widths) + 2 * (len(widths) - 1)
    rule, thin = "=" * width, "-" * width
    out = [f'Model: "{result.model_name}"  input shape {result.input_shape}', rule, line(header), rule]
    for row, cells in zip(result.rows, body, strict=True):
        out.append(line(cells))
        if result.show_arithmetic and row.arithmetic is not None:
            out.append(f"    {row.arithmetic}")
            if row.receptive_field is not None:
                out.append(
                    f"    receptive field {_fmt_pair(row.receptive_field)}, jump {_fmt_pair(row.jump)}"
                )
    out += [
        rule,
        f"Total params: {result.total_params:,}",
        f"Trainable params: {result.trainable_params:,}",
        f"Non-trainable params: {result.non_trainable_params:,}",
        f"Buffers (not parameters, e.g. BatchNorm running statistics): {result.buffer_values:,} values",
        f"Total MACs: {result.total_macs:,} ({_si(result.total_macs)}MACs, multiply-accumulates, "
        f"not FLOPs; batch {result.input_shape[0]})",
        "  counted: Conv2d, ConvTranspose2d, Linear; not counted: biases, BatchNorm, activations,",
        "  pooling, dropout, residual adds, concatenations",
        thin,
        f"Input size (MB): {result.input_mb:.2f}",
        f"Forward activations size (MB): {result.activations_mb:.2f}",
        f"Params size (MB): {result.params_mb:.2f}",
        f"Estimated total size (MB): {result.total_mb:.2f}",
        thin,
    ]
    return "\n".join(out)
