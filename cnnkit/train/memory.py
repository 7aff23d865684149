"""How much memory one step will take, measured before the real one runs; how much there is.

``estimate_step_memory(model, input_shape, batch_size)`` runs two small steps (forward,
and backward when ``train``), with batches of 2 and 4 images, under ``tracemalloc``, which
sees every NumPy allocation and the arrays of the buffer pool (``backend/buffers.py``
reports them to it: its memory maps are invisible to tracemalloc otherwise); the
difference is the cost of two more images, the rest is fixed (weights, gradients,
optimizer slots). The estimate for ``batch_size`` images is fixed + batch_size x per image.
Inputs larger than 64x64 are measured at 64x64 pixels of the same aspect and scaled by the
pixel count (at 32x32 the small maps of ResNet-18's last layers made its 224x224 estimate
38% short); a model that takes one input size only is measured at that size.

What made the figures depend on what the process had done before (a test passing alone
and failing after others): unmeasured steps at both sizes come first (a first step at
batch 4 grew the kernels' scratch buffers: VGG-11 (CIFAR) at batch 128 was estimated at
908 MB in a fresh process, 377 MB in one that had run it before); the steps run on one
thread (when a helper thread drops its last task's arrays varies: LeNet-5 at batch 256
came out between 4.7 and 29.4 MiB on two threads, 16.9-17.1 on one); the collector runs
first. The scratch buffers (``backend/workspace.py``: kept, grown to the largest size
asked) are measured apart, by name, at both sizes: a buffer that grows with the images
holds those of one block (at most ``dispatch.COLUMNS_BLOCK_BYTES`` or
``WINOGRAD_BLOCK_BYTES``). Those of at least ``dispatch.POOL_MIN_BYTES`` come from the buffer
pool and are not kept after their call (``dispatch.SCRATCH_FROM_POOL``): they count in the
traced peak while held, as pooled arrays, and not apart.

Against real training steps (SGD with momentum; the growth of the peak resident memory
over the first two steps, one thread, the pool on / off; Dec 4): ResNet-20 (32x32) at
batch 64, 201 MB estimated for 192 / 183-191 MB (two threads: 197 MB); at 256, 787 for
802-814 / 769-800; ResNet-18 (224x224) at 16, 793 for 696-713 / 660-700; VGG-11 (CIFAR)
at 128, 549 for 371-388 (its convolutions take other algorithms at batch 128 than at 4:
83 MB of scratch buffers, 211 estimated). The pool's maps hold 0-3% more than their
arrays. It takes about 0.3-0.7 s. The model is deep-copied first, so the check changes
nothing in the run.

A step that does not fit is refused with these figures before it starts, instead of a
MemoryError (or the kernel's OOM killer) after minutes of work.
"""

from __future__ import annotations

import copy
import gc
import math
import os
import tracemalloc
from dataclasses import dataclass

import numpy as np

from .. import functional as F
from ..backend import dispatch
from ..backend.workspace import release_scratch, scratch_sizes
from ..config import no_grad, num_threads
from ..errors import ShapeError
from ..files import format_bytes
from ..tensor import Tensor

__all__ = ["MemoryEstimate", "estimate_step_memory", "available_memory"]

_MEASURE_PIXELS = 64 * 64  # larger inputs are measured at this many pixels and scaled
_BATCHES = (2, 4)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one step: ``fixed + batch_size * per_sample`` (see the module doc)."""

    per_sample: int
    fixed: int
    batch_size: int
    lower_bound: bool = False  # not measured (one input alone is larger than the memory): the inputs only

    @property
    def total(self) -> int:
        return self.fixed + self.batch_size * self.per_sample

    def largest_batch(self, available: int) -> int:
        """The largest batch whose step fits in ``available`` bytes (0 if none does)."""
        return max(0, (available - self.fixed) // max(self.per_sample, 1))

    def __str__(self) -> str:
        return (f"{'at least' if self.lower_bound else 'about'} {format_bytes(self.total)} "
                f"({format_bytes(self.per_sample)} per image x "
                f"{self.batch_size:,} + {format_bytes(self.fixed)})")


def _peak(model, shape: tuple[int, ...], batch: int, train: bool) -> int:
    """tracemalloc's peak over one step of ``batch`` zero images of ``shape``.

    Pooled arrays count (the pool reports them); scratch buffers already as large as the step
    needs do not (``_warm_up`` leaves them so and measures them apart).
    """
    x = Tensor(np.zeros((batch, *shape), np.float32))
    was_training = getattr(model, "training", False)
    # The collector's count starts from zero, so a collection falls at the same point of the
    # step whatever ran before (the garbage it frees would otherwise count or not). One
    # thread: when a helper thread drops the arrays of its last task varies from run to run,
    # and at batches of 2 and 4 that moved LeNet-5's estimate at batch 256 between 4.7 and
    # 29.4 MiB on two threads (16.9-17.1 MiB on one).
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with num_threads(1):
            if train:
                model.train()
                out = model(x)
                loss = F.cross_entropy(out.reshape(batch, -1), np.zeros(batch, np.int64))
                loss.backward()
            else:
                model.eval()
                with no_grad():
                    model(x)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        model.train(was_training)
        for p in model.parameters():
            p.grad = None


def _warm_up(model, shape: tuple[int, ...], lo: int, hi: int, train: bool) -> tuple[dict, dict]:
    """Unmeasured steps at both batch sizes; the scratch buffers each takes, by name.

    One-time caches (of either size) are then not counted per image, and the scratch buffers
    are as large as a step of ``hi`` images needs whatever earlier work left them at (they
    grow to the largest size asked and are kept: backend/workspace.py).
    """
    release_scratch()
    _peak(model, shape, lo, train)
    at_lo = scratch_sizes()
    release_scratch()
    _peak(model, shape, hi, train)
    return at_lo, scratch_sizes()


def _measure(model, shape: tuple[int, ...], lo: int, hi: int, train: bool) -> tuple[tuple[dict, dict], int, int]:
    """The warm-up steps, then the measured peaks: (scratch sizes at lo and hi, peak at lo, peak at hi)."""
    sizes = _warm_up(model, shape, lo, hi, train)
    return sizes, _peak(model, shape, lo, train), _peak(model, shape, hi, train)


def _scratch_bytes(at_lo: dict, at_hi: dict, lo: int, hi: int, scale: float, batch: int) -> int:
    """The scratch buffers of a step of ``batch`` images, from their sizes at ``lo`` and ``hi``.

    A buffer sized per image holds the images of one block, at most the block's bytes
    (``dispatch.COLUMNS_BLOCK_BYTES``, ``WINOGRAD_BLOCK_BYTES``) or one image; the rest of
    it (a weight gradient's partial sum) does not grow with the batch.
    """
    cap = max(dispatch.COLUMNS_BLOCK_BYTES, dispatch.WINOGRAD_BLOCK_BYTES)
    total = 0.0
    for name, at_high in at_hi.items():
        each = max(at_high - at_lo.get(name, 0), 0) / (hi - lo)   # bytes per measured image
        total += max(at_high - hi * each, 0) + min(each * scale * batch, max(cap, each * scale))
    return int(total)


def estimate_step_memory(model, input_shape: tuple[int, ...], batch_size: int, train: bool = True,
                         optimizer_slots: int = 1) -> MemoryEstimate:
    """Measure the memory of one step of ``model`` on ``batch_size`` inputs of ``input_shape``.

    Args:
        input_shape: one input's shape, (C, H, W).
        train: forward and backward (training); else a forward pass without the graph.
        optimizer_slots: arrays the optimizer keeps per parameter (SGD momentum 1, Adam 2).

    Raises:
        ShapeError: the model cannot take inputs of this shape.
    """
    # Measured on a copy: a training step changes BatchNorm's running statistics and draws
    # from Dropout's generator, and a pre-flight check must not change the run it checks.
    model = copy.deepcopy(model)
    shape = tuple(int(d) for d in input_shape)
    lo, hi = _BATCHES
    measured = None
    if len(shape) == 3 and shape[1] * shape[2] > _MEASURE_PIXELS:
        factor = math.sqrt(_MEASURE_PIXELS / (shape[1] * shape[2]))
        small = (shape[0], max(1, round(shape[1] * factor)), max(1, round(shape[2] * factor)))
        try:
            sizes, low, high = _measure(model, small, lo, hi, train)
            measured = (low, high, (shape[1] * shape[2]) / (small[1] * small[2]))
        except ShapeError:  # a model that takes one size only (a Linear after Flatten)
            measured = None
    if measured is None:
        available = available_memory() or 1 << 62
        if math.prod(shape) * 4 > available // 2:
            # Not even one input and its first layer's output fit: measuring would fail with a
            # MemoryError (or swap); the inputs themselves are a lower bound of the step.
            return MemoryEstimate(4 * math.prod(shape), 0, int(batch_size), lower_bound=True)
        if math.prod(shape) * 4 * hi > available // 4:
            lo, hi = 1, 2  # too large to measure with many images: one and two
        sizes, low, high = _measure(model, shape, lo, hi, train)
        measured = (low, high, 1.0)
    low, high, scale = measured
    # per image: what more images add, at least the input itself (a model that allocates
    # nothing per image still holds its batch)
    per_sample = max((high - low) / (hi - lo) * scale, 4 * math.prod(shape), 1)
    fixed = max(low - lo * per_sample / scale, 0)
    params = sum(int(p.data.nbytes) for p in model.parameters())
    fixed += params * (1 + optimizer_slots) if train else 0
    fixed += _scratch_bytes(*sizes, lo, hi, scale, int(batch_size))
    return MemoryEstimate(int(per_sample), int(fixed), int(batch_size))


def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable, or a cgroup limit if lower; None if unknown."""
    found: list[int] = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
            if limit.isdigit() and int(limit) < 1 << 60:
                found.append(max(int(limit) - usage, 0))
            break
        except (OSError, ValueError):
            continue
    if not found and hasattr(os, "sysconf"):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError):
            pass
    return min(found) if found else None
