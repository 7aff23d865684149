"""explain.saliency: the gradient of a class score with respect to the input."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import Tensor, nn
from cnnkit.explain import saliency


def test_saliency_of_a_linear_model_is_its_weight_row(rng):
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3, generator=rng))
    model.train()
    x = rng.standard_normal((1, 3, 4)).astype(np.float32)
    result = saliency(model, x)
    logits = model(Tensor(x[None])).data[0]
    assert result.target == int(logits.argmax())
    w = model[1].weight.data[result.target].reshape(1, 3, 4)
    np.testing.assert_allclose(result.gradient, w, rtol=1e-6)
    np.testing.assert_allclose(result.map, np.abs(w).max(axis=0), rtol=1e-6)
    np.testing.assert_allclose(result.probabilities.sum(), 1.0, rtol=1e-6)
    # the model is as it was: training mode, parameters trainable, no gradients left behind
    assert model.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    other = saliency(model, x, target=(result.target + 1) % 3)
    np.testing.assert_allclose(other.gradient, model[1].weight.data[(result.target + 1) % 3].reshape(1, 3, 4),
                               rtol=1e-6)
    with pytest.raises(ValueError, match=r"target class 7 is out of range for 3 classes"):
        saliency(model, x, target=7)


def test_saliency_through_conv_relu_pool_matches_finite_differences(rng):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, generator=rng, dtype=np.float64), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 3 * 3, 4, generator=rng, dtype=np.float64))
    x = rng.standard_normal((1, 6, 6))
    result = saliency(model, x.astype(np.float64))
    k, eps = result.target, 1e-6

    def score(z):
        return float(model(Tensor(z[None])).data[0, k])

    for idx in [(0, 0, 0), (0, 2, 3), (0, 5, 5)]:
        up, down = x.copy(), x.copy()
        up[idx] += eps
        down[idx] -= eps
        numeric = (score(up) - score(down)) / (2 * eps)
        assert result.gradient[idx] == pytest.approx(numeric, rel=1e-4, abs=1e-4)
