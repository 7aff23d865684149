"""The matplotlib pictures: each draws, saves, and lays out what it promises."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnkit import nn
from cnnkit.explain import conv_as_dense
from cnnkit.viz.plots import (
    feature_map_grid,
    filter_grid,
    plot_confusion_matrix,
    plot_curves,
    plot_dense_conv,
    plot_feature_maps,
    plot_filters,
    plot_kernel,
    plot_kernel_gallery,
    plot_saliency,
    save_figure,
)

pytest.importorskip("matplotlib")


def saved(fig, path) -> Image.Image:
    save_figure(fig, path)
    image = Image.open(path)
    image.load()
    return image


def images(fig) -> list:
    """The image artists of every axes (the tiles), colour bars excluded."""
    return [im for ax in fig.axes for im in ax.get_images()]


def test_plot_filters_one_tile_per_filter_and_channel_with_one_shared_scale(rng, tmp_path):
    w = rng.standard_normal((5, 4, 3, 3))
    fig = plot_filters(w, title="conv")
    tiles = images(fig)
    assert len(tiles) == 5 * 4
    m = np.abs(w).max()
    assert all(t.get_clim() == (-m, m) for t in tiles)  # symmetric, shared
    assert len(fig.axes) == 5 * 4 + 1  # + the colour bar
    assert saved(fig, tmp_path / "f.png").size[0] > 300


def test_plot_filters_draws_rgb_filters_in_colour_and_caps_the_count(rng, tmp_path):
    w = rng.standard_normal((70, 3, 7, 7))
    fig = plot_filters(w, max_filters=64)
    tiles = images(fig)
    assert len(tiles) == 64 and tiles[0].get_array().shape == (7, 7, 3)
    assert "showing 64 of 70 filters" in fig.get_suptitle()
    single = plot_filters(rng.standard_normal((6, 1, 5, 5)))
    assert len(images(single)) == 6
    with pytest.raises(ValueError, match=r"expects weight of shape \(F, C, KH, KW\), got \(3, 3\)"):
        plot_filters(np.zeros((3, 3)))


def test_filter_and_feature_map_grids_for_tensorboard(rng):
    grid = filter_grid(rng.standard_normal((6, 1, 5, 5)))
    assert grid.shape == (1, 2 * 6 + 1, 3 * 6 + 1) and 0 <= grid.min() and grid.max() <= 1
    rgb = filter_grid(rng.standard_normal((4, 3, 3, 3)))
    assert rgb.shape == (3, 2 * 4 + 1, 2 * 4 + 1)
    maps = feature_map_grid(rng.standard_normal((16, 10, 10)))
    assert maps.shape == (1, 4 * 11 + 1, 4 * 11 + 1) and maps.max() == 1.0


def test_plot_feature_maps_draws_the_input_and_each_layer(rng, tmp_path):
    image = rng.random((1, 12, 12))
    maps = [("conv (6, 12, 12)", rng.standard_normal((6, 12, 12))),
            ("pool (20, 6, 6)", rng.random((20, 6, 6))),
            ("linear (10,)", rng.standard_normal(10))]
    fig = plot_feature_maps(image, maps, title="net", max_channels=16)
    assert len(images(fig)) == 1 + 6 + 16 + 1
    titles = [sub._suptitle.get_text() for sub in fig.subfigs]
    assert titles[0] == "input (1, 12, 12)"
    assert titles[2].startswith("pool (20, 6, 6)  range [") and "first 16 of 20 channels" in titles[2]
    saved(fig, tmp_path / "maps.png")


def test_plot_curves_training_against_validation(tmp_path):
    history = {"loss": [1.0, 0.5, 0.3], "val_loss": [0.9, 0.6, 0.4], "accuracy": [0.6, 0.8, 0.9],
               "val_accuracy": [0.65, 0.82, 0.88], "lr": [0.1, 0.05, 0.01]}
    fig = plot_curves(history, title="run")
    loss_ax, acc_ax = fig.axes
    assert [line.get_label() for line in loss_ax.get_lines()] == ["training", "validation"]
    np.testing.assert_array_equal(acc_ax.get_lines()[1].get_ydata(), history["val_accuracy"])
    save_figure(fig, tmp_path / "curves.svg")
    assert "<svg" in (tmp_path / "curves.svg").read_text()
    with pytest.raises(ValueError, match=r"no loss or accuracy columns \(it has \['lr'\]\)"):
        plot_curves({"lr": [0.1]})


def test_plot_saliency_confusion_matrix_and_kernels(rng, tmp_path):
    fig = plot_saliency(rng.random((3, 8, 8)), rng.random((8, 8)), title="s")
    assert len(images(fig)) == 4  # input, map, overlay (image + map)
    saved(fig, tmp_path / "s.png")
    cm = np.array([[5, 1], [0, 4]])
    fig = plot_confusion_matrix(cm, ["cat", "dog"])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["5", "1", "4"]  # counts, zeros left blank
    np.testing.assert_allclose(images(fig)[0].get_array(), [[5 / 6, 1 / 6], [0, 1]])
    saved(fig, tmp_path / "cm.png")
    kernel = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], float)
    fig = plot_kernel(rng.random((1, 9, 9)), kernel, rng.standard_normal((1, 7, 7)), name="laplacian")
    assert "feature map 7x7x1 (signed)" in fig.axes[2].get_title()
    gallery = plot_kernel_gallery(rng.random((3, 9, 9)), [("a", kernel, rng.random((3, 7, 7)))] * 5)
    assert len(images(gallery)) == 6
    saved(gallery, tmp_path / "g.png")


def test_plot_dense_conv_colours_each_shared_weight(rng, tmp_path):
    conv = nn.Conv2d(1, 1, 2, generator=rng)
    fig = plot_dense_conv(conv_as_dense(conv, (1, 4, 4)))
    matrix = images(fig)[1].get_array()
    assert matrix.shape == (9, 16) and (matrix > 0).sum() == 36  # 0 = structural zero
    assert "75% structural zeros" in fig.axes[1].get_title()
    saved(fig, tmp_path / "dense.png")
