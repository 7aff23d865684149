"""The TensorBoard callback, read back with TensorBoard's own event reader."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import nn, optim
from cnnkit.train import fit
from cnnkit.viz.tensorboard import TensorBoard, to_graph_def

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def tiny_run(log_dir, epochs=2, **kwargs):
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, generator=rng), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 6, 3, padding=1, generator=rng), nn.ReLU(),
                          nn.Flatten(), nn.Linear(6 * 4 * 4, 3, generator=rng))
    x = rng.standard_normal((24, 1, 8, 8)).astype(np.float32)
    t = rng.integers(0, 3, 24)
    loader = [(x[i : i + 8], t[i : i + 8]) for i in range(0, 24, 8)]
    callback = TensorBoard(log_dir, 1, **kwargs)  # positional (log_dir, batch_every) as before
    fit(model, loader, epochs=epochs, optimizer=optim.SGD(model.parameters(), lr=0.1), callbacks=[callback],
        verbose=0)
    return model, x


def read(log_dir):
    ea = event_accumulator
    acc = ea.EventAccumulator(str(log_dir), size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.IMAGES: 0})
    acc.Reload()
    return acc


def test_scalars_histograms_images_and_graph_read_back(tmp_path):
    model, x = tiny_run(tmp_path / "tb")
    acc = read(tmp_path / "tb")
    tags = acc.Tags()
    scalars = {"epoch/loss", "epoch/accuracy", "epoch/lr", "epoch/images_per_sec", "batch/loss"}
    assert scalars <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("epoch/loss")] == [1, 2]
    assert len(acc.Scalars("batch/loss")) == 6
    names = [n for n, _ in model.named_parameters()]
    expected = [f"parameters/{n}" for n in names] + [f"gradients/{n}" for n in names]
    assert sorted(tags["histograms"]) == sorted(expected)
    weights = acc.Histograms("parameters/0.weight")
    assert [h.step for h in weights] == [1, 2]
    h = weights[-1].histogram_value
    assert h.num == 4 * 1 * 3 * 3
    assert h.min == pytest.approx(float(model[0].weight.data.min()), rel=1e-6)
    assert h.max == pytest.approx(float(model[0].weight.data.max()), rel=1e-6)
    assert acc.Histograms("gradients/6.bias")[-1].histogram_value.num == 3
    assert sorted(tags["images"]) == ["feature_maps/0", "feature_maps/3", "filters/0"]
    filters = acc.Images("filters/0")
    assert [im.step for im in filters] == [1, 2]
    assert filters[0].width == filters[0].height == (2 * 4 + 1) * 16  # a 2x2 grid of 3x3 filters, enlarged
    maps = acc.Images("feature_maps/3")[-1]
    assert maps.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
    assert tags["graph"]
    graph = acc.Graph()
    ops = [n.op for n in graph.node]
    assert ops.count("Conv2d") == 2 and ops.count("Linear") == 1 and ops.count("Parameter") == 6
    assert ops.count("Input") == 1


def test_switching_parts_off_and_an_explicit_sample(tmp_path):
    sample = np.ones((1, 8, 8), np.float32)
    tiny_run(tmp_path / "tb", epochs=1, histograms=False, graph=False, sample_input=sample, feature_layers=1)
    acc = read(tmp_path / "tb")
    tags = acc.Tags()
    assert tags["histograms"] == [] and not tags["graph"]
    assert sorted(tags["images"]) == ["feature_maps/0", "filters/0"]
    assert "epoch/loss" in tags["scalars"]


def test_the_callback_does_not_change_training(tmp_path):
    with_tb, _ = tiny_run(tmp_path / "a")
    rng = np.random.default_rng(0)
    plain = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, generator=rng), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 6, 3, padding=1, generator=rng), nn.ReLU(),
                          nn.Flatten(), nn.Linear(6 * 4 * 4, 3, generator=rng))
    x = rng.standard_normal((24, 1, 8, 8)).astype(np.float32)
    t = rng.integers(0, 3, 24)
    loader = [(x[i : i + 8], t[i : i + 8]) for i in range(0, 24, 8)]
    fit(plain, loader, epochs=2, optimizer=optim.SGD(plain.parameters(), lr=0.1), verbose=0)
    for (name, a), (_, b) in zip(with_tb.named_parameters(), plain.named_parameters(), strict=True):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)
    assert with_tb.training


def test_tensorboard_graph_def_scopes_nodes_by_module(lenet_graph):
    _, graph = lenet_graph
    graph_def = to_graph_def(graph)
    names = [n.name for n in graph_def.node]
    assert "features/0/Conv2d_0" in names and "features/0/weight" in names and "input" in names
    conv = next(n for n in graph_def.node if n.name == "features/0/Conv2d_0")
    assert list(conv.input) == ["input", "features/0/weight", "features/0/bias"]
    dims = [d.size for d in conv.attr["_output_shapes"].list.shape[0].dim]
    assert dims == [1, 6, 28, 28]
    assert len(graph_def.node) == 1 + 10 + 12  # input, parameters, ops
