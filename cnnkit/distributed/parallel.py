"""Data parallelism: every rank holds the whole model and trains it on its own share of each batch.

    comm = world()
    broadcast_parameters(model, comm)              # rank 0's initial weights everywhere
    opt = DistributedOptimizer(optim.SGD(model.parameters(), lr=0.1), comm)
    for x, t in loader:                            # each rank: its shard (DistributedSampler)
        loss = F.cross_entropy(model(x), t)
        opt.zero_grad(); loss.backward()
        opt.step()                                 # averages the gradients, then steps

Why the ranks stay identical: they start from the same weights (``broadcast_parameters``),
and each step applies the same averaged gradient with the same optimizer state. The
average over ranks of each rank's mean-loss gradient is the gradient of the mean loss over
the global batch (ranks x local batch), so N ranks with batch b take the steps one process
takes with batch N*b (up to float rounding).

Gradients travel in buckets: flat buffers of up to ``bucket_cap_mb`` megabytes filled
from the last layer to the first, one ``allreduce`` per bucket, not one per tensor.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..config import enable_grad
from ..optim import Optimizer
from ..tensor import Tensor
from .comm import Communicator, world
from .env import allreduce_delay

__all__ = [
    "broadcast_parameters",
    "model_fingerprint",
    "parameters_digest",
    "check_parameters_in_sync",
    "GradientBuckets",
    "DistributedOptimizer",
]


def _arrays(model) -> list[tuple[str, np.ndarray]]:
    """Every parameter and buffer of ``model`` by name, as the arrays training changes in place."""
    out = []
    for name, value in model.state_dict(keep_vars=True).items():
        array = value.data if isinstance(value, Tensor) else value
        out.append((name, array))
    return out


def broadcast_parameters(model, comm: Communicator | None = None, root: int = 0) -> None:
    """Give every rank the root's parameters and buffers (running statistics too), in place.

    One broadcast per dtype: the arrays are packed into one flat buffer, sent, unpacked.
    An agreement point for Ctrl-C and SIGTERM (``stop.py``).
    """
    comm = comm or world()
    if comm.size == 1:
        return
    comm.agree_on_stop()
    by_dtype: dict[np.dtype, list[np.ndarray]] = {}
    for _, array in _arrays(model):
        by_dtype.setdefault(array.dtype, []).append(array)
    for dtype, arrays in sorted(by_dtype.items(), key=lambda item: item[0].str):
        flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0, dtype)
        comm.broadcast(flat, root=root)
        offset = 0
        for a in arrays:
            a[...] = flat[offset : offset + a.size].reshape(a.shape)
            offset += a.size


def model_fingerprint(model, values: bool = True) -> str:
    """A digest of the model's structure (names, shapes, dtypes; zoo name and config), and values.

    Ranks whose fingerprints differ would train different things (another model, another
    ``--weights`` file): ``Communicator.check_same`` refuses to start then.
    """
    structure = [(name, list(a.shape), a.dtype.str) for name, a in _arrays(model)]
    head = {"zoo_name": getattr(model, "zoo_name", None), "structure": structure}
    config = getattr(model, "zoo_config", None)
    if config is not None:
        head["zoo_config"] = json.loads(json.dumps(config, default=str))
    digest = hashlib.sha256(json.dumps(head, sort_keys=True).encode())
    if values:
        digest.update(parameters_digest(model).encode())
    return digest.hexdigest()


def parameters_digest(model) -> str:
    """SHA-256 of every parameter's and buffer's bytes, in ``state_dict`` order (hex)."""
    digest = hashlib.sha256()
    for name, array in _arrays(model):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def check_parameters_in_sync(model, comm: Communicator | None = None, when: str = "") -> None:
    """Raise ``DistributedError`` (on every rank) unless every rank holds bit-identical weights."""
    comm = comm or world()
    if comm.size > 1:
        comm.check_same(f"the model's weights{' ' + when if when else ''}", parameters_digest(model),
                        hint="the ranks' training steps have diverged")


class _Bucket:
    """Parameters of one dtype whose gradients travel in one flat buffer.

    Layout: [grad of p0 | grad of p1 | ... | one flag per parameter | ``votes`` slots]. A
    flag counts the ranks that had a gradient for that parameter (a frozen or unused one
    has none), so a parameter no rank touched keeps ``grad = None`` and its optimizer skips
    it, as in one process. The first bucket carries two more slots, the stop ballot of
    ``stop.py`` (SIGINT, SIGTERM received), summed with the gradients at no extra message.
    """

    def __init__(self, params: list[Tensor], votes: int = 0):
        self.params = params
        self.dtype = params[0].data.dtype
        self.offsets = np.cumsum([0] + [p.data.size for p in params])
        flags = int(self.offsets[-1])
        self.buffer = np.zeros(flags + len(params) + votes, dtype=self.dtype)
        self.flags = self.buffer[flags : flags + len(params)]                  # (len(params),)
        self.votes = self.buffer[flags + len(params) :]                         # (votes,)

    def pack(self) -> np.ndarray:
        flags = self.flags
        for i, p in enumerate(self.params):
            segment = self.buffer[self.offsets[i] : self.offsets[i + 1]]
            if p.grad is None:
                segment[...] = 0
                flags[i] = 0
            else:
                segment[...] = np.asarray(p.grad).reshape(-1)
                flags[i] = 1
        return self.buffer

    def unpack(self, size: int) -> None:
        flags = self.flags
        scale = self.dtype.type(1.0 / size)
        for i, p in enumerate(self.params):
            if flags[i] == 0:
                p.grad = None
                continue
            # a new array: the buffer is refilled next step, a kept gradient must not change
            p.grad = self.buffer[self.offsets[i] : self.offsets[i + 1]].reshape(p.data.shape) * scale


class GradientBuckets:
    """Average the gradients of ``params`` over the ranks, one allreduce per bucket.

    Buckets hold parameters of one dtype, filled in reverse order (the gradients of the
    last layers are ready first in backward), each up to ``bucket_cap_mb`` megabytes (a
    parameter larger than that gets its own bucket).

    Args:
        params: the parameters whose ``.grad`` to average (those with requires_grad).
        comm: the ranks (default: ``world()``).
        bucket_cap_mb: the largest bucket, in MB (PyTorch's DistributedDataParallel: 25).
    """

    def __init__(self, params: Iterable[Tensor], comm: Communicator | None = None, bucket_cap_mb: float = 25.0):
        if bucket_cap_mb <= 0:
            raise ValueError(f"bucket_cap_mb must be positive, got {bucket_cap_mb!r}")
        self.comm = comm or world()
        self.bucket_cap_mb = float(bucket_cap_mb)
        params = [p for p in params if p.requires_grad]
        cap = self.bucket_cap_mb * 2**20
        self.buckets: list[_Bucket] = []
        current: list[Tensor] = []
        size = 0
        for p in reversed(params):
            nbytes = p.data.nbytes
            if current and (p.data.dtype != current[0].data.dtype or size + nbytes > cap):
                self.buckets.append(_Bucket(current, votes=0 if self.buckets else 2))
                current, size = [], 0
            current.append(p)
            size += nbytes
        if current:
            self.buckets.append(_Bucket(current, votes=0 if self.buckets else 2))
        self.delay = allreduce_delay(self.comm.rank)  # a debugging knob, 0 unless set (env.py)

    @property
    def nbytes(self) -> int:
        """The bytes one step sends per rank (gradients and flags)."""
        return sum(b.buffer.nbytes for b in self.buckets)

    def synchronize(self) -> None:
        """Replace each ``.grad`` by the average over ranks (a no-op in one process).

        An agreement point for Ctrl-C and SIGTERM (``stop.py``): the ballot travels in the
        first bucket, and an agreed stop raises on every rank before any ``.grad`` changes.
        """
        if self.comm.size == 1:
            return
        stop = self.comm.stop
        for bucket in self.buckets:
            if self.delay:
                time.sleep(self.delay)
            buffer = bucket.pack()
            if bucket.votes.size:  # the first bucket
                bucket.votes[...] = stop.ballot() if stop is not None else 0
            self.comm.allreduce(buffer)
            if bucket.votes.size and stop is not None:
                stop.decide(bucket.votes)
            bucket.unpack(self.comm.size)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{b.buffer.nbytes / 2**20:.2f} MB" for b in self.buckets)
        return f"GradientBuckets({len(self.buckets)} bucket{'s' if len(self.buckets) != 1 else ''}: {sizes})"


class DistributedOptimizer(Optimizer):
    """An optimizer whose ``step`` first averages the gradients over the ranks (Horovod's name).

    It shares the wrapped optimizer's parameter groups and state (schedules, checkpoints
    and ``load_state_dict`` act on both), and is an ``Optimizer`` so a learning-rate
    schedule can be built on either.

    Args:
        optimizer: any cnnkit optimizer, built over the model's parameters.
        comm: the ranks (default: ``world()``).
        bucket_cap_mb: the largest gradient bucket, in MB.
        check_sync: after every step, verify (by a SHA-256 of the weights, one small
            allgather) that every rank holds identical weights; for tests and debugging.
        model: the model whose weights ``check_sync`` compares (needed with it).
    """

    def __init__(self, optimizer: Optimizer, comm: Communicator | None = None, bucket_cap_mb: float = 25.0,
                 check_sync: bool = False, model: Any = None):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"DistributedOptimizer wraps a cnnkit optimizer, got {type(optimizer).__name__}")
        if isinstance(optimizer, DistributedOptimizer):
            raise TypeError("DistributedOptimizer: this optimizer already averages gradients (wrapped twice)")
        if check_sync and model is None:
            raise ValueError("DistributedOptimizer(check_sync=True) needs model= to compare the weights")
        self.optimizer = optimizer
        self.comm = comm or world()
        params = [p for group in optimizer.param_groups for p in group["params"]]
        self.gradients = GradientBuckets(params, self.comm, bucket_cap_mb)
        self.check_sync, self.model = check_sync, model
        self.steps = 0

    # The wrapped optimizer's groups and state, read through (load_state_dict rebinds state).
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    @property
    def defaults(self) -> dict[str, Any]:
        return self.optimizer.defaults

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Average the gradients over the ranks, then take the wrapped optimizer's step."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        self.gradients.synchronize()
        self.optimizer.step()
        self.steps += 1
        if self.check_sync:
            check_parameters_in_sync(self.model, self.comm, when=f"after step {self.steps}")
        return loss

    def synchronize(self) -> None:
        """Average the gradients now (``step`` does it; for code that clips or inspects them first)."""
        self.gradients.synchronize()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.gradients = GradientBuckets(params, self.comm, self.gradients.bucket_cap_mb)

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)

    def __repr__(self) -> str:
        return f"DistributedOptimizer({self.optimizer!r}, {self.comm!r}, {self.gradients!r})"
