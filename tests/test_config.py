"""config: the randomness argument is ``generator=`` everywhere; the old ``rng=`` still works, with a warning."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import models, nn
from cnnkit.data import transforms as T
from cnnkit.surgery import prune_channels


def same_state(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(np.array_equal(np.asarray(sa[k]), np.asarray(sb[k])) for k in sa)


@pytest.mark.parametrize("build", [
    lambda **g: nn.Conv2d(2, 3, 3, **g),
    lambda **g: nn.Linear(4, 2, **g),
    lambda **g: models.lenet5(**g),
    lambda **g: models.get_model("resnet20", num_classes=3, **g),
])
def test_rng_is_the_deprecated_name_of_generator(build):
    new = build(generator=np.random.default_rng(7))
    with pytest.warns(DeprecationWarning, match=r"rng= is deprecated, use generator="):
        old = build(rng=np.random.default_rng(7))
    assert same_state(new, old)


def test_initializers_transforms_and_pruning_take_generator_too():
    a = nn.init.kaiming_uniform((4, 3), generator=np.random.default_rng(1))
    with pytest.warns(DeprecationWarning):
        b = nn.init.kaiming_uniform((4, 3), rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    x = np.arange(2 * 1 * 6 * 6, dtype=np.float32).reshape(2, 1, 6, 6)
    crops = [T.RandomCrop(4, generator=np.random.default_rng(3))(x) for _ in range(2)]
    np.testing.assert_array_equal(crops[0], crops[1])
    net = models.lenet5(generator=np.random.default_rng(0))
    one = prune_channels(net, 0.5, "random", input_shape=(1, 28, 28), generator=np.random.default_rng(5))
    with pytest.warns(DeprecationWarning):
        two = prune_channels(net, 0.5, "random", input_shape=(1, 28, 28), rng=np.random.default_rng(5))
    assert same_state(one, two)


def test_generator_and_rng_together_are_refused():
    with pytest.raises(TypeError, match=r"Linear got both generator= and its deprecated name rng="):
        nn.Linear(2, 2, generator=np.random.default_rng(0), rng=np.random.default_rng(0))


def test_set_num_threads_sets_the_threads_until_changed_and_refuses_bad_counts():
    from cnnkit import config

    before = config.get_num_threads()
    try:
        config.set_num_threads(3)
        assert config.get_num_threads() == 3
        with config.num_threads(1):
            assert config.get_num_threads() == 1
        assert config.get_num_threads() == 3
        config.set_num_threads(np.int64(2))
        assert config.get_num_threads() == 2
        for bad in (0, -1, 1.5, True, "2"):
            with pytest.raises(ValueError, match=r"set_num_threads expects a positive int, got"):
                config.set_num_threads(bad)
        assert config.get_num_threads() == 2
    finally:
        config.set_num_threads(before)
