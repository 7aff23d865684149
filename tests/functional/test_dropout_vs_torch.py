"""dropout against PyTorch where the two can agree: identity cases and p = 1 (skipped without PyTorch).

The masks come from different generators; their statistics are tested in test_dropout.py.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cnnkit.functional as F  # noqa: E402

from .torch_compare import TF, check_op, dtypes  # noqa: E402


@dtypes()
def test_dropout_is_identity_with_p0_and_in_eval(dtype, rng):
    x = rng.standard_normal((4, 5)).astype(dtype)
    for kw in [dict(p=0.0, training=True), dict(p=0.5, training=False), dict(p=1.0, training=False)]:
        check_op(lambda x, kw=kw: F.dropout(x, generator=np.random.default_rng(0), **kw),
                 lambda x, kw=kw: TF.dropout(x, **kw), [x], dtype=dtype, rng=rng)


@dtypes()
def test_dropout_with_p1_zeroes_everything(dtype, rng):
    check_op(lambda x: F.dropout(x, 1.0, generator=np.random.default_rng(0)), lambda x: TF.dropout(x, 1.0),
             [rng.standard_normal((3, 4))], dtype=dtype, rng=rng)
