"""Scratch buffers (``backend/workspace.py``): kept per name and thread below the pool's
floor; at or above it taken from the buffer pool and given back once the caller drops them
(``dispatch.SCRATCH_FROM_POOL``), the same memory while a caller still holds it."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from cnnkit.backend import buffers, dispatch, workspace


@pytest.fixture
def fresh(monkeypatch):
    """A fresh pool with a 1 MiB floor and small chunks, no scratch buffers in this thread."""
    monkeypatch.setattr(dispatch, "BUFFER_POOL", 1)
    monkeypatch.setattr(dispatch, "SCRATCH_FROM_POOL", 1)
    monkeypatch.setattr(dispatch, "POOL_MIN_BYTES", 2**20)
    monkeypatch.setattr(dispatch, "POOL_CHUNK_BYTES", 4 * 2**20)
    monkeypatch.setattr(buffers, "_pool", buffers._Pool())
    workspace.release_scratch()
    yield buffers._pool
    workspace.release_scratch()


def test_large_scratch_comes_from_the_pool_and_goes_back_when_dropped(fresh):
    a = workspace.scratch("t.big", (512, 1024), np.float32)          # 2 MiB
    assert a.shape == (512, 1024) and a.dtype == np.float32 and a.flags.c_contiguous
    assert a.ctypes.data % 64 == 0
    assert buffers.pool_stats()["live_bytes"] >= a.nbytes
    assert workspace.scratch_sizes()["t.big"] >= a.nbytes
    a[...] = 1.0
    del a
    gc.collect()
    assert buffers.pool_stats()["live_bytes"] == 0
    assert workspace.scratch_bytes() == 0 and "t.big" not in workspace.scratch_sizes()


def test_a_held_scratch_buffer_is_handed_out_again_and_distinct_names_do_not_overlap(fresh):
    a = workspace.scratch("t.big", (512, 1024), np.float32)
    b = workspace.scratch("t.big", (256, 1024), np.float32)         # a is still held: same memory
    assert a.ctypes.data == b.ctypes.data
    c = workspace.scratch("t.other", (512, 1024), np.float32)
    assert not np.shares_memory(a, c)
    d = workspace.scratch("t.big", (1024, 1024), np.float32)        # larger: a new range
    assert not np.shares_memory(d, c)
    d[...] = 2.0
    assert (c.size, d.size) == (512 * 1024, 1024 * 1024)


def test_small_or_switched_off_scratch_is_kept_across_calls(fresh, monkeypatch):
    small = workspace.scratch("t.small", (1000,), np.float32)
    address = small.ctypes.data
    del small
    gc.collect()
    assert workspace.scratch("t.small", (1000,), np.float32).ctypes.data == address
    assert buffers.pool_stats()["carved"] == 0
    monkeypatch.setattr(dispatch, "SCRATCH_FROM_POOL", 0)
    big = workspace.scratch("t.big", (512, 1024), np.float32)
    address = big.ctypes.data
    del big
    gc.collect()
    assert workspace.scratch("t.big", (512, 1024), np.float32).ctypes.data == address
    assert buffers.pool_stats()["carved"] == 0
    assert workspace.scratch_sizes()["t.big"] >= 2 * 2**20


def test_a_kept_scratch_buffer_stays_with_its_thread_at_any_size(fresh):
    big = workspace.scratch("t.kept", (512, 1024), np.float32, kept=True)   # 2 MiB, over the floor
    address = big.ctypes.data
    assert address % 64 == 0 and buffers.pool_stats()["carved"] == 0
    del big
    gc.collect()
    assert workspace.scratch("t.kept", (256, 1024), np.float32, kept=True).ctypes.data == address
    assert workspace.scratch_sizes()["t.kept"] >= 2 * 2**20
