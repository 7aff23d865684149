"""Tasks and metrics: binary (one logit) and multi-class, against scikit-learn and PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import nn, optim
from cnnkit.train import BinaryTask, MulticlassTask, evaluate, fit, format_report, predict_proba
from cnnkit.train.metrics import roc_auc

sklearn_metrics = pytest.importorskip("sklearn.metrics")


class Fixed(nn.Module):
    """A 'model' whose logits are its inputs."""

    def forward(self, x):
        return x


def _binary_case(seed: int, n: int = 200, ties: bool = False):
    rng = np.random.default_rng(seed)
    t = (rng.random(n) < 0.4).astype(np.int64)
    logits = (rng.standard_normal(n) + 1.2 * t).astype(np.float32)
    if ties:
        logits = np.round(logits)  # many tied scores
    return logits[:, None], t


@pytest.mark.parametrize("seed, ties", [(0, False), (1, True), (2, True)])
def test_binary_metrics_match_scikit_learn(seed, ties):
    logits, t = _binary_case(seed, ties=ties)
    threshold = 0.6
    result = evaluate(Fixed(), [(logits[:70], t[:70]), (logits[70:], t[70:])], task=BinaryTask(threshold))
    prob = 1 / (1 + np.exp(-logits[:, 0].astype(np.float64)))
    decided = (prob > threshold).astype(int)
    assert result["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(t, decided))
    assert result["precision"] == pytest.approx(sklearn_metrics.precision_score(t, decided, zero_division=0))
    assert result["recall"] == pytest.approx(sklearn_metrics.recall_score(t, decided))
    assert result["f1"] == pytest.approx(sklearn_metrics.f1_score(t, decided))
    assert result["roc_auc"] == pytest.approx(sklearn_metrics.roc_auc_score(t, logits[:, 0]), abs=1e-12)
    np.testing.assert_array_equal(result["confusion_matrix"], sklearn_metrics.confusion_matrix(t, decided))
    assert result["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(t, decided, average="macro"))


def test_binary_loss_is_pytorchs_bce_with_logits():
    torch = pytest.importorskip("torch")
    logits, t = _binary_case(3, n=37)
    result = evaluate(Fixed(), [(logits, t)])
    expected = torch.nn.BCEWithLogitsLoss()(torch.from_numpy(logits), torch.from_numpy(t[:, None].astype(np.float32)))
    assert result["loss"] == pytest.approx(float(expected), rel=1e-5)


def test_roc_auc_is_nan_with_one_class_and_one_for_a_perfect_ranking():
    assert np.isnan(roc_auc(np.array([0.1, 0.9]), np.array([1, 1])))
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert roc_auc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5


def test_multiclass_per_class_and_macro_scores_match_scikit_learn():
    rng = np.random.default_rng(4)
    t = rng.integers(0, 4, 300)
    logits = rng.standard_normal((300, 4)).astype(np.float32)
    logits[np.arange(300), t] += 1.0
    result = evaluate(Fixed(), [(logits, t)], topk=(1, 2, 5))
    pred = logits.argmax(axis=1)
    p, r, f, s = sklearn_metrics.precision_recall_fscore_support(t, pred, zero_division=0)
    np.testing.assert_allclose(result["per_class"]["precision"], p)
    np.testing.assert_allclose(result["per_class"]["recall"], r)
    np.testing.assert_allclose(result["per_class"]["f1"], f)
    np.testing.assert_array_equal(result["per_class"]["support"], s)
    assert result["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(t, pred, average="macro"))
    assert result["top2_accuracy"] == pytest.approx(sklearn_metrics.top_k_accuracy_score(t, logits, k=2))
    assert "top5_accuracy" not in result  # 5 >= 4 classes: every prediction would count
    report = format_report(result, ["a", "b", "c", "d"])
    assert "macro avg" in report and "top-2" in report and "top-5" not in report


def test_top5_is_reported_only_with_more_than_five_classes():
    rng = np.random.default_rng(5)
    five = evaluate(Fixed(), [(rng.standard_normal((20, 5)).astype(np.float32), rng.integers(0, 5, 20))])
    six = evaluate(Fixed(), [(rng.standard_normal((20, 6)).astype(np.float32), rng.integers(0, 6, 20))])
    assert "top5_accuracy" not in five and "top5_accuracy" in six


def test_predict_gives_sigmoid_probabilities_for_one_logit():
    logits = np.array([[-2.0], [0.0], [3.0]], np.float32)
    np.testing.assert_allclose(predict_proba(Fixed(), logits), 1 / (1 + np.exp(-logits)), rtol=1e-6)


def test_fit_trains_a_binary_classifier_and_logs_its_metrics(capsys):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((256, 2)).astype(np.float32)
    t = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    net = nn.Sequential(nn.Linear(2, 8, rng=rng), nn.ReLU(), nn.Linear(8, 1, rng=rng))
    batches = [(x[i : i + 32], t[i : i + 32]) for i in range(0, 256, 32)]
    history = fit(net, batches, epochs=15, optimizer=optim.Adam(net.parameters(), lr=0.02),
                  val_loader=[(x, t)], verbose=0)
    logs = {k: v[-1] for k, v in history.history.items()}
    assert logs["accuracy"] > 0.9 and logs["val_accuracy"] > 0.9
    for key in ("val_precision", "val_recall", "val_f1", "val_roc_auc"):
        assert logs[key] > 0.85, key
    assert "val_top5_accuracy" not in logs


def test_binary_task_rejects_a_bad_threshold_and_more_than_two_classes():
    with pytest.raises(ValueError, match=r"threshold must lie in \(0, 1\), got 1.5"):
        BinaryTask(1.5)
    with pytest.raises(ValueError, match="a binary task has 2 classes, got 3"):
        BinaryTask().outputs(3)
    assert MulticlassTask().outputs(3) == 3
