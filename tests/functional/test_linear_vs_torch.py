"""F.linear against PyTorch (skipped without it)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import cnnkit.functional as F  # noqa: E402

from .inputs import normal  # noqa: E402
from .torch_compare import TF, Case, cases, dtypes, inputs_of  # noqa: E402


def _linear_cases() -> list[Case]:
    out = []
    for x_shape, out_f, bias in [((5, 4), 3, True), ((5, 4), 3, False), ((1, 1), 1, True), ((4,), 6, True),
                                 ((2, 3, 7), 5, True), ((2, 3, 1, 4), 2, False), ((0, 4), 3, True)]:
        tag = f"linear{x_shape}->{out_f}{'' if bias else '-nobias'}".replace(" ", "")
        d = x_shape[-1]
        gens = [normal(*x_shape), normal(out_f, d)] + ([normal(out_f)] if bias else [])
        out.append(Case(tag, F.linear, TF.linear, inputs_of(*gens)))
    return out


@cases(_linear_cases())
@dtypes()
def test_linear_matches_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)
