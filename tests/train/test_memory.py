"""train.memory: the estimate of one step's memory against the peak of real steps."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import models
from cnnkit.train.memory import _peak, available_memory, estimate_step_memory


@pytest.mark.parametrize("name, shape, batch", [("lenet5", (1, 28, 28), 256), ("resnet20", (3, 32, 32), 64),
                                                ("resnet20", (3, 64, 48), 16)])
def test_the_estimate_is_close_to_the_peak_of_a_real_step(name, shape, batch):
    model = models.get_model(name, generator=np.random.default_rng(0))
    estimate = estimate_step_memory(model, shape, batch)
    _peak(model, shape, 2, True)  # one-time caches, as the estimate does
    real = _peak(model, shape, batch, True)
    assert 0.8 * real <= estimate.total - 2 * sum(p.data.nbytes for p in model.parameters()) <= 1.6 * real


def test_the_estimate_changes_nothing_in_the_model():
    model = models.get_model("resnet20", generator=np.random.default_rng(0))
    before = {k: np.array(v) for k, v in model.state_dict().items()}
    estimate_step_memory(model, (3, 32, 32), 8)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(np.asarray(value), before[key], err_msg=key)
    assert model.training and all(p.grad is None for p in model.parameters())


def test_available_memory_is_a_positive_number_here():
    assert available_memory() > 0


def test_an_input_larger_than_the_memory_is_not_measured_but_bounded(monkeypatch):
    """LeNet-5 (one input size only: no smaller stand-in) on a 100000x100000 image: 37 GiB for the
    input alone; the estimate says so without allocating it (it used to end in a MemoryError)."""
    from cnnkit.train import memory

    monkeypatch.setattr(memory, "available_memory", lambda: 16 << 30)
    estimate = estimate_step_memory(models.get_model("lenet5"), (1, 100_000, 100_000), 3, train=False)
    assert estimate.lower_bound and estimate.per_sample == 4 * 100_000 * 100_000 and estimate.total == 3 * 4e10
    assert str(estimate).startswith("at least 111.8 GiB (37.3 GiB per image x 3")
