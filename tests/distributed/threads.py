"""Ranks as threads of this process: a Communicator for fast, exact tests of the collective math.

Real MPI runs (tests/distributed/test_equivalence.py and the CLI tests) check the whole
path; these threads check the arithmetic of SyncBatchNorm, gradient buckets and sharded
evaluation in float64 without starting processes. Reductions add in rank order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from cnnkit.distributed.comm import Communicator, Request


class _Group:
    def __init__(self, size: int):
        self.size = size
        self.barrier = threading.Barrier(size, timeout=60)
        self.slots: list[Any] = [None] * size


class ThreadRank(Communicator):
    """Rank ``rank`` of a group of threads; every collective exchanges copies through shared slots."""

    def __init__(self, group: _Group, rank: int):
        super().__init__()
        self.group, self.rank, self.size = group, rank, group.size
        self.local_rank, self.local_size = rank, group.size

    def _exchange(self, value: Any) -> list[Any]:
        self.group.slots[self.rank] = value
        self.group.barrier.wait()
        values = list(self.group.slots)
        self.group.barrier.wait()
        return values

    def barrier(self) -> None:
        self.group.barrier.wait()

    def broadcast(self, array: np.ndarray, root: int = 0) -> np.ndarray:
        array[...] = self._exchange(array.copy())[root]
        return array

    def allreduce(self, array: np.ndarray, op: str = "sum") -> np.ndarray:
        values = self._exchange(array.copy())
        result = values[0].copy()
        for v in values[1:]:
            result = {"sum": np.add, "max": np.maximum, "min": np.minimum}[op](result, v)
        array[...] = result
        self.stats["allreduce"]["calls"] += 1
        return array

    def iallreduce(self, array: np.ndarray, op: str = "sum") -> Request:
        self.allreduce(array, op)
        return Request(None)

    def allgather(self, array: np.ndarray) -> np.ndarray:
        return np.concatenate(self._exchange(array.copy()))

    def broadcast_bytes(self, data: bytes | None, root: int = 0) -> bytes:
        return self._exchange(data)[root]

    def abort(self, status: int = 1) -> None:
        raise SystemExit(status)


def run_ranks(size: int, fn: Callable[[ThreadRank], Any]) -> list[Any]:
    """Run ``fn(comm)`` on ``size`` threads, one per rank; return each rank's result (re-raising errors)."""
    group = _Group(size)
    results: list[Any] = [None] * size
    errors: list[BaseException] = []

    def target(rank: int) -> None:
        try:
            results[rank] = fn(ThreadRank(group, rank))
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(error)
            group.barrier.abort()

    threads = [threading.Thread(target=target, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
