"""Pictures of model surgery: a fully convolutional score map over a wide image, a pruning sweep.

Each function returns a ``matplotlib.figure.Figure`` (no pyplot); ``save_figure`` writes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["plot_score_map", "plot_prune_sweep"]


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # matplotlib loads only when a picture is drawn

    return Figure(figsize=(width, height))


def plot_score_map(
    image: np.ndarray, probs: np.ndarray, fcn, classes: Sequence[str], read=None, truth=None,
    title: str = "",
):
    """Draw the image above its per-position class probabilities, as a labelled heat map.

    Args:
        image: (C, H, W) in [0, 1].
        probs: (K, OH, OW) softmax of the score map.
        fcn: the FullyConvolutional model (window centres).
        read: ``read_sequence``'s result, drawn on both panels; truth: the true labels.
    """
    K, OH, OW = probs.shape
    C, H, W = image.shape
    ys, xs = fcn.window_centres((OH, OW))
    step = fcn.stride[1]
    fig_w = min(24.0, max(8.0, W / 18))
    fig = _figure(fig_w, 2.0 + 0.32 * K + 0.06 * H)
    top, bottom = fig.subplots(2, 1, sharex=True,
                               gridspec_kw={"height_ratios": [H / 10 + 1, K * 0.6 if OH == 1 else H / 10 + 1]})
    shown = image[0] if C == 1 else image.transpose(1, 2, 0)
    top.imshow(shown, cmap="gray", extent=(-0.5, W - 0.5, H - 0.5, -0.5), interpolation="nearest")
    top.set_yticks([])
    top.set_title(title, fontsize=10)
    if OH == 1:
        extent = (xs[0] - step / 2, xs[-1] + step / 2, K - 0.5, -0.5)
        shown_map = bottom.imshow(probs[:, 0, :], aspect="auto", cmap="viridis", vmin=0, vmax=1,
                                  extent=extent, interpolation="nearest")
        bottom.set_yticks(range(K))
        bottom.set_yticklabels(classes[:K], fontsize=8)
        bottom.set_ylabel("class")
        best = probs[:, 0, :].argmax(axis=0)
        bottom.scatter(xs, best, s=6, c="white", marker="s", linewidths=0, label="most likely class")
        if read:
            for i, (k, _, j) in enumerate(read):
                if truth is None:
                    colour = "black"
                else:
                    colour = "forestgreen" if i < len(truth) and classes[k] == truth[i] else "red"
                top.text(xs[j], -1.5, classes[k], ha="center", va="bottom", fontsize=12, color=colour,
                         fontweight="bold")
                bottom.axvline(xs[j], color=colour, linewidth=0.8, linestyle=":")
            label = "read: " + " ".join(classes[k] for k, _, _ in read)
            if truth is not None:
                label += "    true: " + " ".join(truth)
            top.set_xlabel(label, fontsize=10)
            top.xaxis.set_label_position("top")
            top.set_ylim(H - 0.5, -6)
        bottom.legend(loc="upper right", fontsize=7, framealpha=0.6)
        fig.colorbar(shown_map, ax=bottom, label="softmax probability", fraction=0.02, pad=0.01)
    else:
        best = probs.argmax(axis=0)
        conf = probs.max(axis=0)
        extent = (xs[0] - step / 2, xs[-1] + step / 2, ys[-1] + step / 2, ys[0] - step / 2)
        shown_map = bottom.imshow(best, cmap="tab10" if K <= 10 else "tab20", vmin=-0.5, vmax=K - 0.5,
                                  alpha=np.clip(conf, 0.2, 1.0), extent=extent, interpolation="nearest")
        if OH * OW <= 400:
            for r in range(OH):
                for c in range(OW):
                    bottom.text(xs[c], ys[r], classes[best[r, c]][:4], ha="center", va="center", fontsize=7)
        bar = fig.colorbar(shown_map, ax=bottom, ticks=range(K), fraction=0.02, pad=0.01)
        bar.ax.set_yticklabels(classes[:K], fontsize=7)
        bottom.set_ylabel("window centre y (px)")
    bottom.set_xlabel(f"window centre x (px): {OW} positions at stride {step}, window {fcn.window[1]} px")
    fig.tight_layout()
    return fig


def plot_prune_sweep(
    before: dict, rows: Sequence[tuple[float, dict]], *, label: str = "pruned", title: str = "",
):
    """Draw test accuracy against the share of parameters kept, one point per pruning amount.

    Args:
        before: the original model's figures ({"params": ..., "accuracy": ...}).
        rows: (amount, figures) of each pruned model, figures as ``before``.
        label: the legend entry of the pruned models.
    """
    kept = [100 * r["params"] / before["params"] for _, r in rows]
    acc = [100 * r["accuracy"] for _, r in rows]
    fig = _figure(6.4, 4.2)
    ax = fig.subplots()
    ax.plot(kept, acc, "o-", label=label)
    for (amount, _), xk, ya in zip(rows, kept, acc, strict=True):
        ax.annotate(f"{amount:g}", (xk, ya), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.axhline(100 * before["accuracy"], color="gray", linestyle="--", linewidth=0.8)
    ax.plot([100], [100 * before["accuracy"]], "*", color="gray", markersize=10, label="original")
    ax.set_xlabel("parameters kept (% of the original)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
