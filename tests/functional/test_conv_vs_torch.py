"""conv2d and conv_transpose2d against PyTorch: hand-picked geometries and seeded sweeps.

PyTorch is the reference (a test-only dependency): this module is skipped without it.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cnnkit.functional as F  # noqa: E402

from .inputs import channel_major  # noqa: E402
from .torch_compare import TF, Case, cases, check_op, dtypes  # noqa: E402

# PyTorch warns that padding="same" with an even kernel copies its input: not our concern.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")


def _conv_case(name, N, C, H, W, F_out, KH, KW, bias=True, layout=None, **kw) -> Case:
    groups = kw.get("groups", 1)
    shapes = [(N, C, H, W), (F_out, C // groups, KH, KW)] + ([(F_out,)] if bias else [])

    def make(rng):
        xs = [rng.standard_normal(s) for s in shapes]
        if layout == "channel-major":
            xs[0] = channel_major(xs[0])
        return xs, []

    return Case(f"{name}-x{shapes[0]}-w{shapes[1]}-{kw}".replace(" ", ""),
                lambda x, w, b=None: F.conv2d(x, w, b, **kw), lambda x, w, b=None: TF.conv2d(x, w, b, **kw), make)


def _random_conv_cases(count: int, seed: int) -> list[Case]:
    """Seeded sweep: groups, non-square kernels, stride up to 4 (often > kernel), padding up
    to the kernel size, dilation up to 3, odd sizes, batch 1..3, pair arguments."""
    r = np.random.default_rng(seed)
    out = []
    for i in range(count):
        G = int(r.choice([1, 1, 2, 3]))
        C, F_out = G * int(r.integers(1, 4)), G * int(r.integers(1, 4))
        KH, KW = (int(k) for k in r.integers(1, 6, 2))
        SH, SW = (int(s) for s in r.integers(1, 5, 2))
        DH, DW = (int(d) for d in r.integers(1, 4, 2))
        PH, PW = int(r.integers(0, KH // 2 + 2)), int(r.integers(0, KW // 2 + 2))
        H = max(1, DH * (KH - 1) + 1 - 2 * PH) + int(r.integers(0, 7))
        W = max(1, DW * (KW - 1) + 1 - 2 * PW) + int(r.integers(0, 7))
        out.append(_conv_case(f"sweep{i}", int(r.integers(1, 4)), C, H, W, F_out, KH, KW, bias=bool(r.random() < 0.7),
                              layout="channel-major" if i % 3 == 0 else None, stride=(SH, SW), padding=(PH, PW),
                              dilation=(DH, DW), groups=G))
    return out


CONV_CASES = [
    _conv_case("basic", 2, 3, 7, 7, 4, 3, 3),
    _conv_case("batch1-nonsquare", 1, 3, 9, 6, 5, 3, 2, stride=(2, 1), padding=(1, 0)),
    _conv_case("1x1", 2, 4, 5, 3, 6, 1, 1),
    _conv_case("1x1-stride2", 1, 3, 6, 7, 2, 1, 1, stride=2),
    _conv_case("stride>kernel", 2, 2, 11, 9, 3, 2, 2, stride=3),
    _conv_case("stride>kernel-padded", 1, 2, 8, 8, 2, 3, 3, stride=5, padding=1),
    _conv_case("pad-half-kernel", 2, 2, 5, 5, 3, 5, 5, padding=2),
    _conv_case("pad-full-kernel", 1, 2, 2, 3, 3, 3, 3, padding=3),
    _conv_case("kernel-equals-input", 2, 3, 4, 5, 2, 4, 5),
    _conv_case("dilation", 2, 2, 9, 9, 3, 3, 3, dilation=2),
    _conv_case("dilation-pair", 1, 2, 10, 8, 2, 3, 2, dilation=(3, 1), padding=(2, 1), stride=(1, 2)),
    _conv_case("groups2", 2, 4, 6, 6, 6, 3, 3, groups=2),
    _conv_case("groups3-strided", 1, 6, 7, 8, 3, 2, 3, groups=3, stride=2, padding=1),
    _conv_case("depthwise", 2, 4, 6, 7, 4, 3, 3, groups=4, padding=1),
    _conv_case("depthwise-multiplier2", 1, 3, 5, 5, 6, 3, 3, groups=3),
    _conv_case("depthwise-nobias", 2, 5, 6, 6, 5, 3, 3, bias=False, groups=5, stride=2),
    _conv_case("no-bias", 2, 3, 5, 6, 2, 2, 3, bias=False),
    _conv_case("same-odd", 2, 3, 6, 5, 2, 3, 3, padding="same"),
    _conv_case("same-even", 1, 2, 5, 6, 3, 4, 2, padding="same"),  # the extra row/column goes last
    _conv_case("same-dilated", 2, 2, 7, 6, 2, 3, 2, padding="same", dilation=(2, 3)),
    _conv_case("same-1x1", 1, 2, 3, 3, 2, 1, 1, padding="same"),
    _conv_case("valid", 2, 3, 6, 7, 2, 3, 2, padding="valid"),
    _conv_case("valid-strided", 1, 2, 9, 9, 2, 3, 3, padding="valid", stride=2),
    _conv_case("channel-major-input", 3, 2, 5, 5, 4, 3, 3, layout="channel-major", padding=1),
    _conv_case("1x1-image", 2, 3, 1, 1, 4, 1, 1),
    _conv_case("single-row", 2, 2, 1, 9, 3, 1, 3, stride=(1, 2)),
    _conv_case("one-element-tuples", 1, 2, 7, 6, 3, 3, 3, stride=(2,), padding=(1,), dilation=(1,)),
    _conv_case("empty-batch", 0, 2, 5, 5, 3, 3, 3, padding=1),
] + _random_conv_cases(80, seed=20240)


@cases(CONV_CASES)
@dtypes()
def test_conv2d_matches_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)


def test_conv2d_and_conv_transpose2d_take_unbatched_input_like_torch(rng, xp):
    x, w, b = rng.standard_normal((3, 6, 5)), rng.standard_normal((2, 3, 3, 3)), rng.standard_normal(2)
    check_op(lambda x, w, b: F.conv2d(x, w, b, padding=1), lambda x, w, b: TF.conv2d(x, w, b, padding=1),
             [x, w, b], dtype=np.float64, rng=rng, xp=xp)
    w = rng.standard_normal((3, 2, 3, 3))
    check_op(lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2),
             lambda x, w, b: TF.conv_transpose2d(x, w, b, stride=2), [x, w, b], dtype=np.float64, rng=rng, xp=xp)


def _conv_t_case(name, N, Cin, H, W, Cout, KH, KW, bias=True, **kw) -> Case:
    groups = kw.get("groups", 1)
    shapes = [(N, Cin, H, W), (Cin, Cout // groups, KH, KW)] + ([(Cout,)] if bias else [])
    return Case(f"{name}-x{shapes[0]}-w{shapes[1]}-{kw}".replace(" ", ""),
                lambda x, w, b=None: F.conv_transpose2d(x, w, b, **kw),
                lambda x, w, b=None: TF.conv_transpose2d(x, w, b, **kw),
                lambda rng: ([rng.standard_normal(s) for s in shapes], []))


def _random_conv_t_cases(count: int, seed: int) -> list[Case]:
    """Seeded sweep over conv_transpose2d: stride, padding, output_padding, dilation, groups."""
    r = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        G = int(r.choice([1, 1, 2, 3]))
        Cin, Cout = G * int(r.integers(1, 3)), G * int(r.integers(1, 4))
        K, S, D = r.integers(1, 5, 2), r.integers(1, 4, 2), r.integers(1, 3, 2)
        P = [int(r.integers(0, d * (k - 1) + 1)) for k, d in zip(K, D, strict=True)]
        OP = [int(r.integers(0, max(s, d))) for s, d in zip(S, D, strict=True)]
        H, W = (int(v) for v in r.integers(1, 6, 2))
        sizes = [(n - 1) * s - 2 * p + d * (k - 1) + op + 1
                 for n, s, p, d, k, op in zip((H, W), S, P, D, K, OP, strict=True)]
        if min(sizes) <= 0:
            continue
        out.append(_conv_t_case(f"sweep{len(out)}", int(r.integers(1, 3)), Cin, H, W, Cout, int(K[0]), int(K[1]),
                                bias=bool(r.random() < 0.7), stride=tuple(int(s) for s in S), padding=tuple(P),
                                output_padding=tuple(OP), dilation=tuple(int(d) for d in D), groups=G))
    return out


CONV_T_CASES = [
    _conv_t_case("basic", 2, 3, 4, 4, 2, 3, 3),
    _conv_t_case("stride2", 1, 2, 3, 5, 3, 3, 3, stride=2),
    _conv_t_case("stride2-pad1-outpad1", 2, 2, 4, 3, 2, 3, 3, stride=2, padding=1, output_padding=1),
    _conv_t_case("nonsquare", 1, 3, 3, 5, 2, 2, 4, stride=(2, 3), padding=(0, 1), output_padding=(1, 2)),
    _conv_t_case("dilation", 2, 2, 4, 4, 3, 3, 2, dilation=2, padding=1),
    _conv_t_case("dilation-outpad", 1, 2, 3, 3, 2, 3, 3, dilation=3, output_padding=2),  # OP < dilation
    _conv_t_case("groups", 2, 4, 3, 4, 6, 3, 3, groups=2, stride=2),
    _conv_t_case("depthwise", 1, 3, 4, 4, 3, 3, 3, groups=3, padding=1),
    _conv_t_case("1x1", 2, 4, 3, 3, 2, 1, 1),
    _conv_t_case("1x1-stride3", 1, 2, 2, 3, 2, 1, 1, stride=3, output_padding=2),
    _conv_t_case("stride>kernel", 1, 2, 3, 3, 2, 2, 2, stride=3),
    _conv_t_case("1x1-image", 2, 2, 1, 1, 3, 3, 3),
    _conv_t_case("no-bias", 2, 2, 3, 3, 2, 2, 2, bias=False, stride=2),
    _conv_t_case("one-element-tuples", 1, 2, 3, 3, 2, 3, 3, stride=(2,), padding=(1,), output_padding=(1,)),
] + _random_conv_t_cases(50, seed=777)


@cases(CONV_T_CASES)
@dtypes()
def test_conv_transpose2d_matches_torch(case, dtype, rng, xp):
    case.run(dtype, rng, xp)


@pytest.mark.parametrize("kw", [dict(padding=1), dict(stride=2, groups=2), dict(dilation=2, padding="same")],
                         ids=["pad1", "stride2-groups2", "dilated-same"])
@dtypes()
def test_conv2d_in_batch_chunks_matches_torch(kw, dtype, rng, xp, monkeypatch):
    """Big batches build the column matrix a few samples at a time: force that path."""
    import cnnkit.functional.conv as conv_module

    monkeypatch.setattr(conv_module, "IM2COL_LIMIT_BYTES", 4096)
    x, w, b = (rng.standard_normal((7, 4, 6, 5)), rng.standard_normal((6, 4 // kw.get("groups", 1), 3, 3)),
               rng.standard_normal(6))
    check_op(lambda x, w, b: F.conv2d(x, w, b, **kw), lambda x, w, b: TF.conv2d(x, w, b, **kw), [x, w, b],
             dtype=dtype, rng=rng, xp=xp)
    check_op(lambda x, w: F.conv2d(x, w, **kw), lambda x, w: TF.conv2d(x, w, **kw), [x, w], dtype=dtype, rng=rng,
             xp=xp, requires_grad=[False, True])
