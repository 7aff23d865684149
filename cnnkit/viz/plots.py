"""Pictures of a network's insides, drawn with matplotlib (no pyplot, no global state).

Every ``plot_*`` function returns a ``matplotlib.figure.Figure``; ``save_figure`` writes it
(PNG, SVG or PDF by the file's suffix). Figures are made with ``Figure()`` directly, so
nothing here touches pyplot's global figure manager or the interactive backend: saving
to PNG uses the Agg renderer.

Conventions: weights use a diverging colour map centred on zero with one symmetric
scale shared by every tile of the picture (so tiles compare); activations use one
sequential scale per layer; images are shown as they enter the model, in [0, 1].
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "save_figure", "plot_filters", "plot_feature_maps", "plot_curves", "plot_saliency",
    "plot_confusion_matrix", "plot_kernel", "plot_kernel_gallery", "plot_dense_conv",
    "filter_grid", "feature_map_grid",
]

_DIVERGING = "RdBu_r"
_SEQUENTIAL = "viridis"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # matplotlib (heavy, optional) loads only to draw

    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix), creating the folder; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _show(ax, image: np.ndarray, **kwargs):
    """Show (C, H, W) in [0, 1]: one channel in grey, three in colour."""
    ax.set_xticks([])
    ax.set_yticks([])
    if image.shape[0] == 3:
        return ax.imshow(np.clip(image.transpose(1, 2, 0), 0, 1), interpolation="nearest")  # (H, W, 3)
    return ax.imshow(image[0], cmap=kwargs.pop("cmap", "gray"), vmin=kwargs.pop("vmin", 0),
                     vmax=kwargs.pop("vmax", 1), interpolation="nearest", **kwargs)


def _wrap(text: str, width_inches: float, fontsize: float = 9) -> str:
    """Wrap each line of a title to the figure's width (about 7 characters per inch at 9 pt)."""
    chars = max(20, int(width_inches * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


def _blank(ax) -> None:
    ax.set_axis_off()


# --------------------------------------------------------------------------- filters
def plot_filters(
    weight: np.ndarray, *, title: str = "", max_filters: int = 64, max_channels: int = 16,
    rgb: bool | None = None,
):
    """Draw conv filters on one shared symmetric colour scale, with a colour bar.

    Three-channel filters (a first layer on RGB images) are drawn in colour: each channel's
    weight maps to that colour's intensity, mid-grey = 0. Other filters are drawn one tile
    per (filter, input channel), blue negative, red positive; one-channel filters fill a
    square grid.

    Args:
        weight: (F, C, KH, KW).
        max_filters, max_channels: draw at most this many (the title says so).
        rgb: force or forbid colour tiles (default: when C == 3).

    Shape: weight (F, C, KH, KW).
    """
    from matplotlib.cm import ScalarMappable  # matplotlib loads only to draw
    from matplotlib.colors import Normalize

    w = np.asarray(weight, np.float64)
    if w.ndim != 4:
        raise ValueError(f"plot_filters expects weight of shape (F, C, KH, KW), got {w.shape}")
    F, C, KH, KW = w.shape
    nf, nc = min(F, max_filters), min(C, max_channels)
    w = w[:nf]
    m = float(np.abs(w).max()) or 1.0
    rgb = C == 3 if rgb is None else rgb
    shown = f"showing {nf} of {F} filters" if nf < F else f"{F} filters"
    if rgb or C == 1:
        cols = math.ceil(math.sqrt(nf))
        rows = math.ceil(nf / cols)
        fig = _figure(1.0 + 1.1 * cols, 0.9 + 1.1 * rows)
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
        for k, ax in enumerate(axes):
            if k >= nf:
                _blank(ax)
                continue
            if rgb:
                tile = (w[k, :3] / m * 0.5 + 0.5).transpose(1, 2, 0)   # (KH, KW, 3)
                ax.imshow(np.clip(tile, 0, 1), interpolation="nearest")
            else:
                ax.imshow(w[k, 0], cmap=_DIVERGING, vmin=-m, vmax=m, interpolation="nearest")
            ax.set_title(f"{k}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        cmap, label = ("gray", "each channel's weight (mid-grey = 0)") if rgb else (_DIVERGING, "weight")
    else:
        # one column per filter, one row per input channel: wide rather than tall
        fig = _figure(1.6 + 0.7 * nf, 1.3 + 0.7 * nc)
        axes = fig.subplots(nc, nf, squeeze=False)
        for c in range(nc):
            for f in range(nf):
                ax = axes[c, f]
                ax.imshow(w[f, c], cmap=_DIVERGING, vmin=-m, vmax=m, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0:
                    ax.set_title(f"{f}", fontsize=8)
                if f == 0:
                    ax.set_ylabel(f"in {c}", fontsize=8)
        if nc < C:
            shown += f", {nc} of {C} input channels"
        shown += " (columns: filters, rows: input channels)"
        cmap, label = _DIVERGING, "weight"
        axes = axes.ravel()
    fig.colorbar(ScalarMappable(Normalize(-m, m), cmap=cmap), ax=list(axes), shrink=0.9, aspect=25,
                 fraction=0.05, label=label)
    heading = f"{title}\n{shown}, {KH}x{KW}x{C}, colour scale ±{m:.3g}".strip()
    fig.suptitle(_wrap(heading, fig.get_figwidth()), fontsize=9)
    return fig


def filter_grid(weight: np.ndarray, max_filters: int = 64, pad: int = 1) -> np.ndarray:
    """Tile filters into one image for TensorBoard: (3, H, W) colour for C == 3, else (1, H, W).

    Values map symmetrically to [0, 1] (0.5 = zero weight) on one scale for all tiles;
    filters with C not in (1, 3) show one tile per (filter, channel), channels across.
    """
    w = np.asarray(weight, np.float32)[:max_filters]
    m = float(np.abs(w).max()) or 1.0
    w = w / m * 0.5 + 0.5
    F, C, KH, KW = w.shape
    if C == 3:
        return _tile(w, math.ceil(math.sqrt(F)), pad)
    tiles = w.reshape(F * C, 1, KH, KW)                               # (F*C, 1, KH, KW)
    return _tile(tiles, C if C > 1 else math.ceil(math.sqrt(F)), pad)


def feature_map_grid(maps: np.ndarray, max_channels: int = 16, pad: int = 1) -> np.ndarray:
    """Tile one sample's feature maps (C, H, W) into a (1, H', W') image in [0, 1] (one scale)."""
    a = np.asarray(maps, np.float32)[:max_channels]
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return _tile(a[:, None], math.ceil(math.sqrt(len(a))), pad)


def _tile(tiles: np.ndarray, cols: int, pad: int) -> np.ndarray:
    """(N, C, h, w) -> (C, rows*(h+pad)+pad, cols*(w+pad)+pad), background 0."""
    N, C, h, w = tiles.shape
    rows = math.ceil(N / cols)
    out = np.zeros((C, rows * (h + pad) + pad, cols * (w + pad) + pad), np.float32)
    for k in range(N):
        r, c = divmod(k, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        out[:, top : top + h, left : left + w] = tiles[k]
    return out


# --------------------------------------------------------------------------- feature maps
def plot_feature_maps(
    image: np.ndarray, maps: Sequence[tuple[str, np.ndarray]], *, title: str = "",
    max_channels: int = 16, per_row: int = 8,
):
    """Draw the input, then each layer's feature maps (one colour scale per layer).

    Args:
        image: (C, H, W) the input in [0, 1] (before normalization).
        maps: (label, activation) per layer, in execution order; activation (C, H, W) of
            one sample, or (D,) for a flat layer (drawn as one strip).
        max_channels: channels drawn per layer; per_row: tiles per row.
    """
    shown = [min(len(a) if np.ndim(a) == 3 else 1, max_channels) for _, a in maps]
    per_row = max(1, min(per_row, max(shown, default=1)))
    blocks = [max(1, math.ceil(n / per_row)) for n in shown]
    heights = [1.4] + [1.05 * b + 0.35 for b in blocks]
    fig = _figure(max(4.0, 1.15 * per_row + 0.8), sum(heights) + 0.4)
    subfigs = np.atleast_1d(fig.subfigures(len(maps) + 1, 1, height_ratios=heights))
    ax = subfigs[0].subplots(1, 1)
    _show(ax, image)
    subfigs[0].suptitle(f"input {tuple(image.shape)}", fontsize=9, x=0.02, ha="left")
    for sub, (label, a), nrows in zip(subfigs[1:], maps, blocks, strict=True):
        a = np.asarray(a, np.float64)
        if a.ndim == 1:
            a = a[None, None, :]                                      # (1, 1, D)
        n = min(len(a), max_channels)
        lo, hi = float(a[:n].min()), float(a[:n].max())
        axes = sub.subplots(nrows, per_row, squeeze=False).ravel()
        for k, axk in enumerate(axes):
            if k >= n:
                _blank(axk)
                continue
            im = axk.imshow(a[k], cmap=_SEQUENTIAL, vmin=lo, vmax=hi if hi > lo else lo + 1,
                            interpolation="nearest", aspect="auto" if a.shape[1] == 1 else "equal")
            axk.set_xticks([])
            axk.set_yticks([])
            axk.set_title(str(k), fontsize=7, pad=1)
        sub.colorbar(im, ax=list(axes), shrink=0.9, pad=0.01)
        more = f", first {n} of {len(a)} channels" if n < len(a) else ""
        sub.suptitle(f"{label}  range [{lo:.3g}, {hi:.3g}]{more}", fontsize=9, x=0.02, ha="left")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


# --------------------------------------------------------------------------- training curves
def plot_curves(
    history: Mapping[str, Sequence[float]], *, epochs: Sequence[int] | None = None, title: str = ""
):
    """Loss and accuracy per epoch, training against validation.

    Args:
        history: lists keyed ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy`` (any
            present; others are ignored), as in a run's ``log.csv`` or ``History.history``.
        epochs: the x values (default 1, 2, ...).

    Raises:
        ValueError: the history has neither loss nor accuracy.
    """
    panels = [(k, k) for k in ("loss", "accuracy") if k in history or f"val_{k}" in history]
    if not panels:
        raise ValueError(
            f"plot_curves: the history has no loss or accuracy columns (it has {sorted(history)})"
        )
    n = max(len(v) for v in history.values())
    x = list(epochs) if epochs is not None else list(range(1, n + 1))
    fig = _figure(5.2 * len(panels), 3.8)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for name, style, colour in ((key, "o-", "#1f77b4"), (f"val_{key}", "s--", "#d62728")):
            if name in history:
                values = [float(v) for v in history[name]]
                which = "validation" if name.startswith("val_") else "training"
                ax.plot(x[: len(values)], values, style, color=colour, label=which)
        best_key = f"val_{key}" if f"val_{key}" in history else key
        values = np.asarray(history[best_key], np.float64)
        best = int(values.argmin() if key == "loss" else values.argmax())
        ax.annotate(f"best {values[best]:.4g}", (x[best], values[best]), textcoords="offset points",
                    xytext=(0, 8), ha="center", fontsize=8)
        ax.margins(x=0.08, y=0.12)  # room for the label
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_xticks(x if len(x) <= 20 else x[:: max(1, len(x) // 10)])
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(label)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


# --------------------------------------------------------------------------- saliency
def plot_saliency(image: np.ndarray, saliency_map: np.ndarray, *, title: str = ""):
    """The input, the saliency heat map and the map laid over the image.

    Shape: image (C, H, W) in [0, 1]; saliency_map (H, W).
    """
    fig = _figure(11, 4)
    a0, a1, a2 = fig.subplots(1, 3)
    _show(a0, image)
    a0.set_title("input")
    s = np.asarray(saliency_map, np.float64)
    top = float(s.max()) or 1.0
    im = a1.imshow(s, cmap="inferno", vmin=0, vmax=top, interpolation="nearest")
    a1.set_title("|d score / d pixel| (max over channels)", fontsize=9)
    a1.set_xticks([])
    a1.set_yticks([])
    fig.colorbar(im, ax=a1, shrink=0.8)
    gray = image.mean(axis=0)
    a2.imshow(gray, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    a2.imshow(s / top, cmap="inferno", alpha=0.6, vmin=0, vmax=1, interpolation="nearest")
    a2.set_title("overlay")
    a2.set_xticks([])
    a2.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


# --------------------------------------------------------------------------- confusion matrix
def plot_confusion_matrix(cm: np.ndarray, classes: Sequence[str], *, title: str = ""):
    """Rows = true class, columns = predicted; colour = fraction of the row, text = count.

    Shape: cm (K, K) integer counts.
    """
    cm = np.asarray(cm)
    K = len(cm)
    classes = list(classes)[:K] + [str(i) for i in range(len(classes), K)]
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, np.float64), where=rows > 0)
    side = max(4.5, 0.55 * K + 2)
    fig = _figure(side + 1, side)
    ax = fig.subplots(1, 1)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    if K <= 30:
        for i in range(K):
            for j in range(K):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8 if K <= 12 else 6,
                            color="white" if frac[i, j] > 0.5 else "black")
    ticks = np.arange(K)
    long_names = max(len(c) for c in classes) > 2
    ax.set_xticks(ticks, classes, rotation=45 if long_names else 0, ha="right" if long_names else "center")
    ax.set_yticks(ticks, classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class (recall on the diagonal)")
    ax.set_title(title or f"confusion matrix ({int(cm.sum()):,} images)", fontsize=10)
    return fig


# --------------------------------------------------------------------------- image kernels
def _kernel_panel(ax, kernel: np.ndarray, name: str) -> None:
    k = np.asarray(kernel, np.float64)
    m = float(np.abs(k).max()) or 1.0
    ax.imshow(k, cmap=_DIVERGING, vmin=-m, vmax=m)
    if k.shape[0] <= 7 and k.shape[1] <= 7:
        for (i, j), v in np.ndenumerate(k):
            text = f"{v:.0f}" if float(v).is_integer() else f"{v:.3f}".rstrip("0")
            ax.text(j, i, text, ha="center", va="center", fontsize=9 if k.shape[0] <= 3 else 7,
                    color="white" if abs(v) > 0.6 * m else "black")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"kernel '{name}' ({k.shape[0]}x{k.shape[1]}), sum {k.sum():.3g}", fontsize=9)


def _output_panel(ax, out: np.ndarray, kernel: np.ndarray):
    """Blurs and sharpeners (sum 1) are images again; edge detectors (sum 0) are signed."""
    if abs(float(np.sum(kernel))) < 1e-9:
        # the luma of the three responses = the kernel applied to the luma image (linearity)
        signed = out[0] if out.shape[0] == 1 else 0.299 * out[0] + 0.587 * out[1] + 0.114 * out[2]
        m = float(np.abs(signed).max()) or 1.0
        im = ax.imshow(signed, cmap=_DIVERGING, vmin=-m, vmax=m, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        return im, " (signed" + (", luma)" if out.shape[0] == 3 else ")")
    clipped = " (clipped to [0, 1])" if out.min() < -1e-6 or out.max() > 1 + 1e-6 else ""
    return _show(ax, out), clipped


def plot_kernel(image: np.ndarray, kernel: np.ndarray, output: np.ndarray, *, name: str, caption: str = ""):
    """Input, kernel values and feature map side by side.

    Shape: image (C, H, W) in [0, 1]; kernel (KH, KW); output (C, OH, OW).
    """
    fig = _figure(12, 4.3)
    a0, a1, a2 = fig.subplots(1, 3, width_ratios=[1, 0.6, 1])
    _show(a0, image)
    a0.set_title(f"input {image.shape[1]}x{image.shape[2]}x{image.shape[0]}", fontsize=9)
    _kernel_panel(a1, kernel, name)
    im, note = _output_panel(a2, output, kernel)
    a2.set_title(f"feature map {output.shape[1]}x{output.shape[2]}x{output.shape[0]}{note}", fontsize=9)
    if note.startswith(" (signed"):
        fig.colorbar(im, ax=a2, shrink=0.8)
    if caption:
        fig.suptitle(caption, fontsize=9)
    return fig


def plot_kernel_gallery(
    image: np.ndarray, results: Sequence[tuple[str, np.ndarray, np.ndarray]], *, caption: str = ""
):
    """The input and one feature map per kernel, in a grid.

    Args:
        results: (name, kernel (KH, KW), output (C, OH, OW)) per kernel.
    """
    n = len(results) + 1
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = _figure(3.2 * cols, 2.9 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    _show(axes[0], image)
    axes[0].set_title("input", fontsize=9)
    for ax, (name, kernel, out) in zip(axes[1:], results, strict=False):  # blank axes after the last
        _, note = _output_panel(ax, out, kernel)
        ax.set_title(f"{name}{note}", fontsize=8)
    for ax in axes[n:]:
        _blank(ax)
    if caption:
        fig.suptitle(caption, fontsize=10)
    return fig


# --------------------------------------------------------------------------- convolution as a dense layer
def plot_dense_conv(dense, *, title: str = ""):
    """The dense matrix of a small convolution: one colour per shared weight, white = structural zero.

    Args:
        dense: a ``cnnkit.explain.DenseConv`` (of a convolution with a few weights).
    """
    from matplotlib.colors import ListedColormap  # matplotlib loads only to draw

    idx = dense.weight_index
    n_weights = int(dense.uses.size)
    base = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf"]
    colours = [base[k % len(base)] for k in range(n_weights)]
    cmap = ListedColormap(["#ffffff"] + colours)
    OUT, IN = idx.shape
    stats = dense.stats
    fig = _figure(min(16, 3 + 0.32 * IN), min(14, 1.8 + 0.32 * OUT))
    a0, a1 = fig.subplots(1, 2, width_ratios=[0.25, 1])
    KH, KW = stats.kernel
    kernel_ids = np.arange(n_weights).reshape(dense.uses.shape)
    first = kernel_ids.reshape(-1, KH, KW)[0]                          # the first filter's taps
    a0.imshow(first + 1, cmap=cmap, vmin=0, vmax=n_weights, interpolation="nearest")
    for (i, j), v in np.ndenumerate(first):
        a0.text(j, i, f"w{v}", ha="center", va="center", color="white", fontsize=10)
    a0.set_xticks([])
    a0.set_yticks([])
    a0.set_title("kernel", fontsize=9)
    a1.imshow(idx + 1, cmap=cmap, vmin=0, vmax=n_weights, interpolation="nearest", aspect="equal")
    if OUT * IN <= 1200:
        for (i, j), v in np.ndenumerate(idx):
            if v >= 0:
                a1.text(j, i, f"w{v}", ha="center", va="center", color="white", fontsize=7)
    a1.set_xticks(np.arange(-0.5, IN, 1), minor=True)
    a1.set_yticks(np.arange(-0.5, OUT, 1), minor=True)
    a1.grid(which="minor", color="#dddddd", linewidth=0.5)
    a1.tick_params(which="minor", length=0)
    a1.set_xlabel(f"input pixel (C x H x W = {IN} columns)")
    a1.set_ylabel(f"output neuron ({OUT} rows)")
    lo, hi = int(stats.uses.min()), int(stats.uses.max())
    a1.set_title(
        f"dense matrix {OUT} x {IN}: {stats.nonzeros:,} of {stats.dense_weights:,} entries non-zero "
        f"({100 * stats.zero_fraction:.0f}% structural zeros)\n{n_weights} distinct weights, each used "
        f"{lo if lo == hi else f'{lo}-{hi}'} times", fontsize=9,
    )
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
