"""Batch-norm folding: a copy of a model for inference with each eval-mode BatchNorm merged into its conv.

In eval mode ``bn(conv(x))`` is one convolution with rescaled weights and a bias
(``cnnkit.nn.utils.fuse_conv_bn_eval`` has the arithmetic), so inference skips one pass
over every BatchNorm's output. Which BatchNorm reads which convolution comes from one
traced forward pass (``explain.forward_pass``: the layer calls and who reads whose
output), so the fold works whatever ``forward`` does: Sequential stacks, ResNet blocks,
GoogLeNet's BasicConv2d.

    fast = fold_batchnorm(model)          # model is unchanged; fast is in eval mode
    fast(x)                               # == model.eval()(x) up to rounding

``fold_for_inference`` keeps the fold only when a probe batch gives the same outputs
(what ``cnnkit evaluate`` runs). ``optimize_for_inference`` is the whole inference
transform, as ``torch.jit.optimize_for_inference``: the fold, then the weights frozen and
each convolution's weight prepared once for its algorithms (``nn.utils.prepack_for_inference``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

from .. import config, nn
from ..explain.graph import INPUT, forward_pass
from ..nn.utils import fuse_conv_bn_pairs, prepack_for_inference
from ..tensor import Tensor
from .prune import trace_input_shape

__all__ = ["fold_batchnorm", "fold_for_inference", "foldable_pairs", "optimize_for_inference"]

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def foldable_pairs(model: nn.Module, input_shape: Sequence[int] | None = None) -> list[tuple[str, str]]:
    """The (convolution path, BatchNorm2d path) pairs of ``model`` that ``fold_batchnorm`` folds.

    A pair is folded when, in a traced forward pass (eval mode), every call of the
    BatchNorm2d reads exactly the output of a call of that convolution and every call of
    the convolution is read by that BatchNorm alone (not by a residual add, a second layer
    or the model's output), and the BatchNorm keeps running statistics.

    Args:
        model: any Module; it is run once on zeros, in eval mode (every module's mode is
            restored afterwards).
        input_shape: (C, H, W) of one input; default: the model's ``input_shape`` (zoo
            models), else the first of 28x28, 32x32 and 224x224 that it takes.

    Returns:
        The pairs, in execution order.
    """
    shape = trace_input_shape(model, input_shape, "foldable_pairs")
    traced = model
    if any(p.dtype != np.float32 for p in model.parameters()):
        # forward_pass runs float32 inputs: trace a float32 copy (same paths, same data flow).
        traced = copy.deepcopy(model).float()
    run = forward_pass(traced, np.zeros((1,) + shape, np.float32), input_requires_grad=False)
    units = run.units
    readers: dict[int, list[int]] = {}                # unit index -> the units that read its output
    for unit in units:
        for i in unit.inputs:
            readers.setdefault(i, []).append(unit.index)
    conv_calls: dict[int, int] = {}                   # id(conv) -> its calls
    conv_read_by: dict[int, list[int]] = {}           # id(conv) -> id(bn) of each call read by a bn alone
    bn_sources: dict[int, set] = {}                   # id(bn) -> id(conv) of each call's source (None: not a conv)
    bn_units = []
    for unit in units:
        if unit.kind != "layer":
            continue
        if isinstance(unit.module, _CONVS):
            conv_calls[id(unit.module)] = conv_calls.get(id(unit.module), 0) + 1
        if not isinstance(unit.module, nn.BatchNorm2d):
            continue
        bn_units.append(unit)
        source = units[unit.inputs[0]] if len(unit.inputs) == 1 and unit.inputs[0] != INPUT else None
        clean = (
            source is not None and source.kind == "layer" and isinstance(source.module, _CONVS)
            and unit.input_ids == [source.output_id]
            and readers[source.index] == [unit.index]
            and source.output_id not in run.graph.outputs
        )
        bn_sources.setdefault(id(unit.module), set()).add(id(source.module) if clean else None)
        if clean:
            conv_read_by.setdefault(id(source.module), []).append(id(unit.module))
    paths = {id(u.module): u.path for u in units if u.module is not None}
    pairs = []
    for unit in bn_units:
        bn = unit.module
        sources = bn_sources.pop(id(bn), set())   # popped: a BatchNorm called twice is one pair
        if len(sources) != 1 or None in sources or bn.running_mean is None or bn.running_var is None:
            continue
        conv = next(iter(sources))
        if set(conv_read_by[conv]) == {id(bn)} and len(conv_read_by[conv]) == conv_calls[conv]:
            pairs.append((paths[conv], paths[id(bn)]))
    return pairs


def fold_batchnorm(model: nn.Module, input_shape: Sequence[int] | None = None) -> nn.Module:
    """Return a copy of ``model`` for inference, each foldable BatchNorm2d merged into its convolution.

    Each pair ``foldable_pairs`` finds (a BatchNorm2d that reads exactly the output of a
    Conv2d or ConvTranspose2d that nothing else reads) becomes one convolution with the
    folded weight and a bias (``nn.utils.fuse_conv_bn_eval``), and the BatchNorm an
    ``nn.Identity``. The copy computes what ``model`` computes in eval mode, up to
    rounding (float32: about 1e-6 relative), with one pass fewer per folded layer.

    Not folded (left as they are): a BatchNorm before its convolution (DenseNet's
    pre-activation BN-ReLU-conv: the BatchNorm's shift would have to pass through the
    convolution's zero padding, so the fold is not exact); a BatchNorm after anything but
    a convolution (after an add, a concatenation, a Linear); a convolution whose output
    is also read elsewhere; a BatchNorm without running statistics; BatchNorm1d.

    The copy is in eval mode and meant for inference only: training it would train
    convolutions without their BatchNorm. Its ``state_dict`` has no keys of the folded
    BatchNorms and a bias for each folded convolution; it loads into a model of the same
    structure, and ``folded_batchnorm`` (the list of pairs) lets ``cnnkit.save`` record
    the fold so ``cnnkit.load`` rebuilds a folded zoo model.

    Args:
        model: any Module (not changed; its modes are restored after the trace).
        input_shape: (C, H, W) of one input for the trace; default: the model's
            ``input_shape`` (zoo models), else the first of 28x28, 32x32, 224x224 it takes.

    Returns:
        The folded copy, in eval mode, with ``folded_batchnorm``: the (conv path, bn path)
        pairs folded (added to those of an already folded model).
    """
    folded = copy.deepcopy(model)
    folded.eval()
    pairs = foldable_pairs(folded, input_shape)
    fuse_conv_bn_pairs(folded, pairs)
    folded.folded_batchnorm = list(getattr(model, "folded_batchnorm", [])) + pairs
    return folded


def fold_for_inference(model: nn.Module, input_shape: Sequence[int] | None = None, *, rtol: float = 1e-4,
                       batch: int = 2) -> nn.Module:
    """``fold_batchnorm(model)`` when it folds something and gives ``model``'s outputs; else ``model``.

    What ``cnnkit evaluate`` runs: the fold saves a pass per BatchNorm, and it is kept only
    when, on a random probe batch (seed 0, standard normal), every output of the folded
    copy is within ``rtol`` of the largest output of ``model`` in eval mode (a float32
    fold differs by about 1e-6). A model without BatchNorm2d is returned at once.

    Args:
        model: any Module (not changed; its modes are restored after the probe).
        input_shape: as ``fold_batchnorm``.
        rtol: the largest output difference kept, relative to the largest output.
        batch: images in the probe batch.

    Returns:
        The folded copy (eval mode, ``folded_batchnorm`` set), or ``model`` itself.
    """
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model
    shape = trace_input_shape(model, input_shape, "fold_for_inference")
    folded = fold_batchnorm(model, shape)
    if len(folded.folded_batchnorm) == len(getattr(model, "folded_batchnorm", [])):
        return model
    first = next(model.parameters())
    probe = Tensor(np.random.default_rng(0).standard_normal((batch,) + shape).astype(first.dtype))
    with config.no_grad(), nn.eval_mode(model):
        expected, actual = model(probe), folded(probe)
    if not (isinstance(expected, Tensor) and isinstance(actual, Tensor)):
        return model
    scale = float(np.abs(expected.data).max())
    error = float(np.abs(actual.data - expected.data).max())
    return folded if np.isfinite(error) and error <= rtol * max(scale, np.finfo(np.float32).tiny) else model


def optimize_for_inference(model: nn.Module, *, input_shape: Sequence[int] | None = None) -> nn.Module:
    """Return a copy of ``model`` for inference: batch norms folded, weights frozen and prepacked.

    The cnnkit counterpart of ``torch.jit.optimize_for_inference(torch.jit.freeze(...))``:

    1. ``fold_batchnorm``: each eval-mode BatchNorm2d that reads a convolution's output
       alone is merged into that convolution (one pass fewer per pair);
    2. ``nn.utils.prepack_for_inference``: every parameter becomes read-only (an in-place
       write raises) and stops requiring grad, and each Conv2d keeps its weight's
       transformed forms once computed: the Winograd filters U = G w G^T of each tile size
       the dispatch picks for the inputs it sees (F(2x2, 3x3), F(4x4, 3x3)), computed on
       first use instead of on every call. GEMM and direct algorithms read the weight as
       it lies (no per-call weight work to save).

    The copy computes what ``model`` computes in eval mode, up to the fold's rounding
    (float32: about 1e-6 relative); the prepacked forms give the same values bit for bit
    as computing them per call. ``model`` itself is not changed.

    Use it for repeated inference with fixed weights (serving, evaluation, benchmarks).
    The copy runs in eval mode only: a prepacked convolution called in training mode raises
    ``InferenceOnlyError`` naming the layer. With gradients enabled it still computes input
    gradients (saliency maps); its parameters have none. Replacing a weight array
    (``p.data = new``) makes that layer run the normal path until it is prepacked again.
    ``cnnkit.save`` records the fold and the prepack, and ``cnnkit.load`` rebuilds an
    optimized zoo model; ``load_state_dict`` into the frozen copy is refused (load into
    the original model and optimize it again).

    Args:
        model: any Module (not changed; its modes are restored after the trace).
        input_shape: (C, H, W) of one input for the fold's trace; default: the model's
            ``input_shape`` (zoo models), else the first of 28x28, 32x32, 224x224 it takes.
            The prepack does not depend on it: each input size picks its own algorithms.

    Returns:
        The optimized copy, in eval mode, with ``folded_batchnorm`` (the pairs folded) and
        ``prepacked_for_inference`` set.
    """
    optimized = fold_batchnorm(model, input_shape)
    return prepack_for_inference(optimized)
