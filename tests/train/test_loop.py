"""train.loop: fit / evaluate / predict."""

from __future__ import annotations

import numpy as np

from cnnkit import Tensor, nn, optim
from cnnkit.train import evaluate, fit, predict, predict_proba
from tests.io.test_checkpoint import ArrayLoader, data, small_net


def test_fit_learns_and_reports_one_line_per_epoch_when_not_on_a_terminal(capsys):
    x, y = data(192)
    model = small_net(0)
    opt = optim.Adam(model.parameters(), lr=0.01)
    history = fit(model, ArrayLoader(x, y, 16, np.random.default_rng(0)), epochs=6, optimizer=opt,
                  val_loader=ArrayLoader(x, y, 64, np.random.default_rng(1)))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch")]
    assert len(lines) == 6 and lines[0].startswith("Epoch 1/6 - ")
    assert "val_accuracy" in lines[-1] and "img/s" in lines[-1]
    assert history.epoch == list(range(6))
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["val_accuracy"][-1] > 0.7


def test_evaluate_counts_accuracy_top_k_and_the_confusion_matrix():
    class Fixed(nn.Module):
        def forward(self, x):
            return x  # the "logits" are the inputs

    logits = np.array([[3.0, 2.0, 1.0], [0.0, 1.0, 2.0], [1.0, 3.0, 2.0], [2.0, 1.0, 3.0]], np.float32)
    target = np.array([0, 1, 2, 2])
    result = evaluate(Fixed(), [(logits, target)], loss=None, topk=(1, 2))
    assert result["accuracy"] == 0.5
    assert result["top2_accuracy"] == 1.0
    np.testing.assert_array_equal(result["confusion_matrix"], [[1, 0, 0], [0, 0, 1], [0, 1, 1]])
    np.testing.assert_array_equal(predict(Fixed(), logits), logits)   # the outputs, as Keras
    probs = predict_proba(Fixed(), logits)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(probs.argmax(axis=1), logits.argmax(axis=1))


def test_fit_accepts_tensors_from_a_loader():
    x, y = data(32)
    model = small_net(0)
    opt = optim.SGD(model.parameters(), lr=0.01)
    fit(model, [(Tensor(x), Tensor(y))], epochs=1, optimizer=opt, verbose=0)
