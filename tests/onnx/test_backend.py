"""ONNX's own conformance suite, run with cnnkit as the backend (``onnx.backend.test.BackendTest``).

The ONNX package ships, for every operator, small models with NumPy-computed inputs and
expected outputs. Neither the cases nor their numbers were written by anyone on this
team, which makes them an independent oracle. ``BackendTest`` drives them through
``CnnkitBackend`` (``prepare`` = the importer, ``run`` = the imported module), checking
each output's dtype, shape and values with ONNX's tolerances.

Which cases run: every case of kinds "node" (built in memory by onnx 1.23), "simple",
"pytorch-converted" and "pytorch-operator" whose nodes all use operators cnnkit imports
(``cnnkit.onnx.supported_ops()``): the single-node cases of each operator and the
"expanded" cases that spell a function out in such operators. The "real" kind (whole
models downloaded from the internet) is left out: tests reach only 127.0.0.1.

Every selected case passes or is listed in ``SKIPPED`` with its reason;
``test_skipped_cases_are_refused`` checks that each listed case is refused by cnnkit with
an ``OnnxError`` (so a case that starts to work, or one that fails in another way, does
not hide), and ``test_every_supported_operator_has_cases`` that each operator is covered.
"""

from __future__ import annotations

import collections
import os
import re
import unittest
import warnings
from unittest import mock

import pytest

onnx = pytest.importorskip("onnx")
import onnx.backend.test.runner as onnx_runner  # noqa: E402
from onnx.backend.test import BackendTest  # noqa: E402
from onnx.backend.test.loader import load_model_tests  # noqa: E402
from onnx.backend.test.runner import _normalize_tensor  # noqa: E402

from cnnkit.onnx import OnnxError, supported_ops  # noqa: E402
from cnnkit.onnx.backend import CnnkitBackend  # noqa: E402

_KINDS = ("node", "simple", "pytorch-converted", "pytorch-operator")
_THREE_D = "3-D convolution or pooling: cnnkit's convolution and pooling are 2-D (1-D runs as 2-D)"
_FOREIGN = (
    "bfloat16, float8, float4, int4/uint4 or int2/uint2 values: cnnkit holds NumPy's own bool, "
    "integer and float16/32/64 types only"
)
_RANDOM_MASK = (
    "training-mode Dropout with ratio > 0: the expected output holds the mask drawn by ONNX's "
    "np.random.seed(seed) stream, which cnnkit's numpy Generator cannot reproduce"
)

# (pattern matched against the case name, reason); the first match gives the reason.
SKIPPED: list[tuple[str, str]] = [
    (r"^test_(averagepool|maxpool|lppool|convtranspose)_3d|^test_(Conv|MaxPool|AvgPool)3d", _THREE_D),
    (r"^test_cast(like)?_.*(BFLOAT16|FLOAT8|FLOAT4|INT4|UINT4|INT2|UINT2|E8M0)|bfloat16", _FOREIGN),
    (r"^test_causal_conv_with_state_.*fp16", "a float16 convolution: cnnkit convolves in float32/float64 only "
     "(a float32 result rounded to float16 would differ from the float16 arithmetic of the expected values)"),
    (r"^test_training_dropout(_default|_mask|_default_mask)?$", _RANDOM_MASK),
    (r"^test_identity_sequence$", "a sequence input: cnnkit runs graphs of tensors only"),
    (r"^test_identity_opt$", "an optional input: cnnkit runs graphs of tensors only"),
    (r"^test_resize_.*(cubic|antialias)", "Resize with cubic interpolation or antialias: cnnkit's "
     "interpolate (like PyTorch's without antialias) has nearest, nearest-exact and linear only"),
    (r"^test_resize_tf_crop_and_resize|^test_resize_.*half_pixel_symmetric|^test_resize_.*_not_(larger|smaller)$"
     r"|^test_resize_.*(ceil_half_pixel|floor_align_corners|round_prefer_ceil_asymmetric)$",
     "Resize coordinates or roundings with no PyTorch mode (tf_crop_and_resize, half_pixel_symmetric, "
     "keep_aspect_ratio_policy, nearest with ceil / align_corners / asymmetric rounding)"),
    (r"^test_resize_(up|down)sample_sizes_nearest(_axes_2_3|_axes_3_2)?$", "Resize's default nearest (half_pixel, round_prefer_floor) "
     "at sizes where an output pixel falls half-way between two inputs: nearest-exact rounds that tie up"),
    (r"^test_resize_downsample_scales_linear_align_corners$", "linear align_corners with scales whose in * scale "
     "is not whole: ONNX divides by that unrounded length, PyTorch by the output size"),
    (r"^test_resize_downsample_sizes_linear_pytorch_half_pixel$", "pytorch_half_pixel to an output length 1 "
     "(ONNX reads input pixel 0; PyTorch's bilinear reads the centre)"),
]


def _ops(model) -> set[str]:
    return {n.op_type for n in model.graph.node}


def _collect() -> tuple[dict[str, tuple[str, object]], dict[str, set[str]]]:
    """(case name -> (kind, case) for every case whose operators cnnkit imports,
    case name -> its operators for every case of the four kinds)."""
    supported = set(supported_ops())
    cases, every = {}, {}
    with warnings.catch_warnings():  # some unrelated generators overflow on purpose
        warnings.simplefilter("ignore")
        for kind in _KINDS:
            for case in load_model_tests(kind=kind):
                model = case.model
                if model is None:
                    model = onnx.load(os.path.join(case.model_dir, "model.onnx"))
                every[case.name] = _ops(model)
                if every[case.name] <= supported:
                    cases[case.name] = (kind, case)
    return cases, every


CASES, EVERY_CASE = _collect()

# Cases of an operator cnnkit imports (its own cases, and the "_expanded" cases that spell
# it out as a function) that are not run because they also need an operator cnnkit does
# not import: case name -> reason. Checked by test_every_case_of_an_imported_operator_runs.
NEEDS_OTHER_OPERATORS: dict[str, str] = {}


def skip_reason(name: str) -> str | None:
    return next((reason for pattern, reason in SKIPPED if re.search(pattern, name)), None)


def _backend_tests() -> dict[str, type]:
    """BackendTest's unittest classes, cut down to the selected CPU cases, skips marked.

    BackendTest loads ONNX's cases itself; it is handed the cases collected above instead
    (building the node cases takes seconds, and the "real" kind is not wanted).
    """
    def selected(kind: str) -> list:
        return [case for k, case in CASES.values() if k == kind]

    with warnings.catch_warnings(), mock.patch.object(onnx_runner, "load_model_tests", selected):
        warnings.simplefilter("ignore")
        suite = BackendTest(CnnkitBackend, __name__)
    classes = {}
    for class_name, test_class in suite.test_cases.items():
        for attr in [a for a in vars(test_class) if a.startswith("test_")]:
            case = attr.removesuffix("_cpu")
            if not attr.endswith("_cpu") or case not in CASES:
                delattr(test_class, attr)
            elif (reason := skip_reason(case)) is not None:
                setattr(test_class, attr, unittest.skip(reason)(getattr(test_class, attr)))
        if any(a.startswith("test_") for a in vars(test_class)):
            classes[class_name] = test_class
    return classes


globals().update(_backend_tests())


def test_skipped_cases_are_refused() -> None:
    """Every listed case exists, and cnnkit refuses it with an OnnxError naming the reason."""
    listed = [name for name in CASES if skip_reason(name)]
    for pattern, _ in SKIPPED:
        assert any(re.search(pattern, name) for name in listed), f"no case matches {pattern!r}"
    for name in listed:
        kind, case = CASES[name]
        model = case.model or onnx.load(os.path.join(case.model_dir, "model.onnx"))
        if case.data_sets is not None:
            inputs = [_normalize_tensor(x) for x in case.data_sets[0][0]]
        else:
            inputs = [onnx.numpy_helper.to_array(onnx.load_tensor(os.path.join(
                case.model_dir, "test_data_set_0", f"input_{i}.pb"))) for i in range(
                    len([i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]))]
        with pytest.raises(OnnxError):
            CnnkitBackend.prepare(model).run(inputs)


def _operator_of(name: str) -> str | None:
    """The operator a node case tests: its one operator, or for an "_expanded" case the one
    operator of the case it expands."""
    base = re.sub(r"_expanded(_ver\d+)?$", "", name)
    ops = EVERY_CASE.get(base, set()) - {"Constant"} if base != name else EVERY_CASE[name] - {"Constant"}
    return next(iter(ops)) if len(ops) == 1 else None


def test_every_case_of_an_imported_operator_runs() -> None:
    """No case of an operator cnnkit imports is left out silently: each runs (passing or
    listed in SKIPPED) or is listed in NEEDS_OTHER_OPERATORS with the operators it lacks."""
    supported = set(supported_ops())
    left_out = {name: sorted(EVERY_CASE[name] - supported) for name in EVERY_CASE
                if name not in CASES and _operator_of(name) in supported}
    assert {name: ops for name, ops in left_out.items() if name not in NEEDS_OTHER_OPERATORS} == {}
    assert not set(NEEDS_OTHER_OPERATORS) - set(left_out), "listed cases that now run"


def test_every_supported_operator_has_cases() -> None:
    """Each operator cnnkit imports has at least one conformance case that runs."""
    running = collections.Counter()
    for name, (_, case) in CASES.items():
        if skip_reason(name) is None:
            model = case.model or onnx.load(os.path.join(case.model_dir, "model.onnx"))
            running.update(_ops(model))
    assert not [op for op in supported_ops() if running[op] == 0]
