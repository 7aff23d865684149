"""The pool of large arrays (``backend/buffers.py``): layouts, reuse only of unreachable
memory, bounds, threads, and whole training steps bit-identical with the pool on and off."""

from __future__ import annotations

import os
import threading
import tracemalloc

import numpy as np
import pytest
import torch

import cnnkit
import cnnkit.functional as F
from cnnkit import Tensor, nn, optim
from cnnkit.backend import buffers, dispatch, kernels

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")


@pytest.fixture
def pool_everything(monkeypatch):
    """Every array the kernels allocate comes from the pool (small test shapes too), a fresh pool."""
    monkeypatch.setattr(dispatch, "BUFFER_POOL", 1)
    monkeypatch.setattr(dispatch, "POOL_MIN_BYTES", 1)
    monkeypatch.setattr(dispatch, "POOL_CHUNK_BYTES", 2**20)
    monkeypatch.setattr(buffers, "_pool", buffers._Pool())
    yield buffers._pool


def test_tracemalloc_sees_pooled_arrays_until_they_are_collected(pool_everything):
    """Memory maps are invisible to tracemalloc; the pool reports its arrays to it (train.memory
    measures a step with it), in its own domain, with their page-rounded size."""
    only_pool = [tracemalloc.DomainFilter(True, buffers.TRACE_DOMAIN)]
    untraced = buffers.empty((1000,), np.float32)
    tracemalloc.start()
    try:
        a = buffers.empty((3, 1000), np.float32)
        view = a[1:].T
        snapshot = tracemalloc.take_snapshot().filter_traces(only_pool)
        assert sum(s.size for s in snapshot.statistics("filename")) == -(-12_000 // buffers._PAGE) * buffers._PAGE
        del a
        assert tracemalloc.take_snapshot().filter_traces(only_pool).traces, "the view keeps it"
        del view, untraced  # the untraced one leaves the traces as they are
        assert not tracemalloc.take_snapshot().filter_traces(only_pool).traces
        b = buffers.empty((10, 1000), np.float32)
        current, peak = tracemalloc.get_traced_memory()
        assert current >= b.nbytes and peak >= b.nbytes
    finally:
        tracemalloc.stop()
    del b  # collected after tracing stopped: nothing to untrack


def address_range(a):
    start = a.__array_interface__["data"][0]
    return start, start + a.nbytes


def layouts():
    base = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    yield base
    yield base.transpose(1, 0, 2, 3)                                  # channel-major view
    yield np.asfortranarray(base)
    yield base[:, :, ::2]                                             # with gaps
    yield np.ones((1, 3, 1, 5), np.float64).transpose(2, 1, 0, 3)     # size-1 axes
    yield np.ascontiguousarray(base.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)[:1]
    yield np.float32(3.0) * np.ones(7, np.float32)


@pytest.mark.parametrize("index", range(7))
@pytest.mark.parametrize("dtype", [None, np.bool_, np.float64])
def test_empty_like_has_numpys_shape_dtype_and_strides(pool_everything, index, dtype):
    a = list(layouts())[index]
    ours, theirs = buffers.empty_like(a, dtype), np.empty_like(a, dtype=dtype)
    assert (ours.shape, ours.dtype, ours.strides) == (theirs.shape, theirs.dtype, theirs.strides)
    assert ours.flags.writeable and isinstance(ours.base, (np.ndarray, buffers._Lease))
    assert pool_everything.live_bytes > 0


def test_empty_is_c_contiguous_page_aligned_and_writable(pool_everything):
    a = buffers.empty((3, 5, 7), np.float32)
    assert a.shape == (3, 5, 7) and a.dtype == np.float32 and a.flags.c_contiguous
    assert address_range(a)[0] % buffers._PAGE == 0
    a[...] = 1.5
    assert float(a.sum()) == 1.5 * a.size


@pytest.mark.parametrize("dtype", [np.dtype([("a", np.float32), ("b", np.int16)]), np.dtype(np.complex64),
                                   np.dtype(">f4")])
def test_dtypes_with_fields_or_byte_order_keep_them(pool_everything, dtype):
    a = buffers.empty((4, 5), dtype)
    b = np.empty((4, 5), dtype)
    assert (a.shape, a.dtype, a.strides) == (b.shape, b.dtype, b.strides)
    assert isinstance(a.base, buffers._Lease)


def test_memory_is_reused_only_after_every_view_is_gone(pool_everything):
    a = buffers.empty((1000,), np.float64)
    first = address_range(a)
    view = a[10:20].reshape(2, 5).T                                   # a view of a view
    view[...] = 7.0
    del a
    b = buffers.empty((1000,), np.float64)                           # the view still reads a's memory
    lo, hi = address_range(b)
    assert hi <= first[0] or lo >= first[1]
    b[...] = -1.0
    assert (view == 7.0).all()
    del view
    c = buffers.empty((1000,), np.float64)                           # now a's range is free again
    assert address_range(c) == first


def test_freed_ranges_merge_and_a_chunk_without_arrays_is_unmapped_beyond_the_idle_bound(pool_everything,
                                                                                           monkeypatch):
    arrays = [buffers.empty((4096,), np.uint8) for _ in range(3)]
    chunk = pool_everything.chunks[0]
    del arrays[1], arrays[0]                                           # neighbours merge
    assert chunk.free[0] == [0, 2 * 4096]
    monkeypatch.setattr(dispatch, "POOL_MAX_IDLE_BYTES", 0)
    arrays.clear()
    assert chunk.unused() and pool_everything.chunks == []
    assert buffers.pool_stats()["mapped_bytes"] == 0


def test_pool_keeps_idle_chunks_within_the_bound_and_release_buffers_frees_them(pool_everything):
    a = buffers.empty((2**20 + 1,), np.uint8)                         # larger than a chunk: its own
    b = buffers.empty((100,), np.float32)
    assert buffers.pool_stats()["chunks"] == 2
    del a
    assert buffers.pool_stats()["chunks"] == 2                        # kept for the next step
    buffers.release_buffers()
    assert buffers.pool_stats()["chunks"] == 1                        # b's chunk is in use
    assert b.shape == (100,)


def test_switched_off_or_small_arrays_come_from_numpy(monkeypatch):
    monkeypatch.setattr(dispatch, "BUFFER_POOL", 0)
    assert not isinstance(buffers.empty((2**22,), np.float32).base, buffers._Lease)
    monkeypatch.setattr(dispatch, "BUFFER_POOL", 1)
    assert buffers.empty((10,), np.float32).base is None               # below POOL_MIN_BYTES
    assert isinstance(buffers.empty((2**22,), np.float32).base, buffers._Lease)


def test_threads_never_get_overlapping_memory(pool_everything):
    errors = []

    def worker(k):
        rng = np.random.default_rng(k)
        held = []
        for i in range(300):
            n = int(rng.integers(1, 5000))
            a = buffers.empty((n,), np.int64)
            a[...] = k * 100_000 + i
            held.append((a, k * 100_000 + i))
            if len(held) > 8:
                a_old, value = held.pop(int(rng.integers(0, len(held))))
                if not (a_old == value).all():
                    errors.append((k, i))
        for a, value in held:
            if not (a == value).all():
                errors.append((k, "end"))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert pool_everything.live_bytes == 0


# ----------------------------------------------------------------- ops and whole training steps
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pooled_ops_match_pytorch_forward_and_gradients(pool_everything, dtype, rng, monkeypatch):
    """Stem-like block (7x7/2 conv, batch norm, ReLU, 3x3/2 max-pool, 3x3 convs, a residual add)
    with every kernel output pooled, against PyTorch; odd sizes."""
    monkeypatch.setattr(dispatch, "ELEMENTWISE_MIN_SIZE", 1)          # ReLU's kernel on small maps
    x = rng.standard_normal((3, 5, 37, 29)).astype(dtype)
    w1 = (rng.standard_normal((32, 5, 7, 7)) * 0.1).astype(dtype)
    w2 = (rng.standard_normal((32, 32, 3, 3)) * 0.1).astype(dtype)
    g, b = rng.standard_normal(32).astype(dtype), rng.standard_normal(32).astype(dtype)

    def forward(lib, conv, bn, relu, pool, x, w1, w2, g, b):
        h = relu(bn(conv(x, w1, stride=2, padding=3), g, b))
        h = pool(h)
        return relu(conv(h, w2, padding=1) + h)

    ours = [Tensor(a.copy(), requires_grad=True) for a in (x, w1, w2, g, b)]
    y = forward(F, F.conv2d, lambda h, g, b: F.batch_norm(h, None, None, g, b, training=True), F.relu,
                lambda h: F.max_pool2d(h, 3, 2, 1), *ours)
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w1, w2, g, b)]
    ty = forward(torch, torch.nn.functional.conv2d,
                 lambda h, g, b: torch.nn.functional.batch_norm(h, None, None, g, b, training=True),
                 torch.relu, lambda h: torch.nn.functional.max_pool2d(h, 3, 2, 1), *theirs)
    gy = rng.standard_normal(y.shape).astype(dtype)
    forward_arrays = pool_everything.carved
    y.backward(gy)
    ty.backward(torch.tensor(gy))
    assert forward_arrays >= 8 and pool_everything.carved - forward_arrays >= 4, pool_everything.carved
    tol = 2e-4 if dtype == np.float32 else 1e-10
    for a, t in zip([y] + [o.grad for o in ours], [ty] + [t.grad for t in theirs]):
        a = a.data if isinstance(a, Tensor) else a
        t = t.detach().numpy()
        np.testing.assert_allclose(a, t, rtol=tol, atol=tol * max(1.0, float(np.abs(t).max())))


def train_steps(pool: bool, steps: int, held: list | None = None, monkeypatch=None, stats: list | None = None):
    """``steps`` SGD steps of a small ResNet with the pool on or off: (losses, parameters).

    held: gets each step's output, layer outputs and gradients with copies; stats: the pool's
    statistics after each step.
    """
    monkeypatch.setattr(dispatch, "BUFFER_POOL", int(pool))
    model = cnnkit.models.get_model("resnet20", num_classes=10, generator=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x = cnnkit.tensor(rng.standard_normal((8, 3, 32, 32)).astype(np.float32))
    t = cnnkit.tensor(rng.integers(0, 10, 8))
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    maps = []                                                         # every layer's output (pooled arrays)
    for module in model.modules():
        module.register_forward_hook(lambda m, i, o: maps.append(o.data))
    losses = []
    for _ in range(steps):
        maps.clear()
        opt.zero_grad()
        out = model(x)
        loss = loss_fn(out, t)
        loss.backward()
        opt.step()
        losses.append(loss.data.copy())
        if held is not None:                                          # the user keeps outputs and grads
            grads = [p.grad for p in model.parameters()]
            held.append([(a, a.copy()) for a in [out.data, *maps, *grads]])
        if stats is not None:
            stats.append(buffers.pool_stats())
    return losses, [p.data.copy() for p in model.parameters()]


def test_training_steps_are_bit_identical_with_and_without_the_pool(pool_everything, monkeypatch):
    on = train_steps(True, 3, monkeypatch=monkeypatch)
    assert pool_everything.carved > 100
    off = train_steps(False, 3, monkeypatch=monkeypatch)
    for a, b in zip(on[0] + on[1], off[0] + off[1]):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_outputs_held_across_steps_do_not_change(pool_everything, monkeypatch):
    held = []
    train_steps(True, 4, held, monkeypatch)
    assert pool_everything.carved > 100
    assert sum(isinstance(a.base, buffers._Lease) or isinstance(getattr(a.base, "base", None), buffers._Lease)
               for a, _ in held[0]) > 20                                # pooled maps among them
    for step in held:
        for array, copy in step:
            assert np.array_equal(array, copy)


def test_pool_memory_stays_bounded_over_steps(pool_everything, monkeypatch):
    # One thread: with helpers, the moment a helper drops its last task's arrays varies, and
    # so can the first-fit placement (by a chunk at most, in 12-step runs on two threads).
    stats = []
    with cnnkit.config.num_threads(1):
        train_steps(True, 6, monkeypatch=monkeypatch, stats=stats)
    assert stats[1]["mapped_bytes"] > 0
    assert all(s["mapped_bytes"] == stats[1]["mapped_bytes"] for s in stats[1:])   # no growth after warm-up
    assert buffers.pool_stats()["live_bytes"] == 0                                # everything came back


@pytest.mark.parametrize("index", range(7))
def test_add_is_numpys_sum_with_numpys_layout(pool_everything, index):
    a = list(layouts())[index]
    b = np.empty_like(a)                                              # a's layout where a has no gaps
    b[...] = a * 0.37 + 1.1
    ours, theirs = buffers.add(a, b), a + b
    assert ours.strides == theirs.strides and ours.dtype == theirs.dtype
    assert np.array_equal(ours, theirs)


def test_add_leaves_broadcasting_and_mixed_dtypes_to_numpy(pool_everything):
    a = np.ones((4, 5), np.float32)
    for b in (np.ones(5, np.float32), np.ones((4, 5), np.float64), 2.0, a.T.copy().T):
        before = pool_everything.carved
        assert np.array_equal(buffers.add(a, b), a + b)
        assert pool_everything.carved == before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this system")
def test_a_forked_process_writes_its_own_copy(pool_everything):
    a = buffers.empty((1000,), np.float64)
    a[...] = 1.0
    pid = os.fork()
    if pid == 0:                                                      # the child: write and leave
        a[...] = 2.0
        os._exit(0 if (a == 2.0).all() else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (a == 1.0).all()
