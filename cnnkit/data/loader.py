"""DataLoader: batches of NumPy arrays from a dataset, shuffled by an explicit Generator.

Each ``iter(loader)`` is one epoch: it draws a permutation from ``loader.generator`` (when
shuffling) and yields batches. Saving ``loader.state_dict()`` between epochs and loading
it later replays the same order, which is what resumable training needs: the loader
keeps no position, only the generator's state.

With ``num_workers`` > 0, batches are prepared by that many threads, up to
``prefetch_factor * num_workers`` batches ahead, while the model trains on the current
one. Decoding (Pillow) and NumPy release the GIL, so the threads use several cores. Each
batch's random transforms run under a generator seeded for that batch (drawn in order
from ``generator``), so a run gives the same batches with any number of workers.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .. import config
from ..tensor import Tensor

__all__ = ["DataLoader", "default_collate"]


def default_collate(samples: Sequence[Any]) -> Any:
    """Stack a list of samples into a batch, field by field.

    Arrays (and Tensors) are stacked along a new first axis; Python and NumPy integers
    become an int64 array, floats a float32 array; tuples, lists and dicts are collated
    per field.

    Raises:
        ValueError: when the samples' arrays differ in shape (naming the shapes).
    """
    first = samples[0]
    if isinstance(first, (tuple, list)):
        return tuple(default_collate(field) for field in zip(*samples, strict=True))
    if isinstance(first, dict):
        return {key: default_collate([s[key] for s in samples]) for key in first}
    if isinstance(first, (bool, np.bool_)):
        return np.asarray(samples, dtype=bool)
    if isinstance(first, (int, np.integer)):
        return np.asarray(samples, dtype=np.int64)
    if isinstance(first, (float, np.floating)):
        return np.asarray(samples, dtype=np.float32)
    arrays = [s.data if isinstance(s, Tensor) else np.asarray(s) for s in samples]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(
            f"default_collate cannot stack samples of different shapes {sorted(shapes)}; "
            "resize them (transforms.Resize) or pass a collate_fn"
        )
    return np.stack(arrays)


class DataLoader:
    """Iterate over a dataset in batches of NumPy arrays.

    Args:
        dataset: anything with ``__len__`` and ``__getitem__``; when it also has
            ``get_batch(indices)`` (array-backed datasets) whole batches are indexed at
            once and transforms run vectorized.
        batch_size: samples per batch.
        shuffle: draw a new order each epoch from ``generator``.
        drop_last: drop the last batch when it is smaller than ``batch_size``.
        generator: the ``numpy.random.Generator`` for shuffling; default: cnnkit's
            default generator, looked up at each epoch (so ``cnnkit.manual_seed`` applies).
        collate_fn: turns a list of samples into a batch (default: ``default_collate``);
            giving one disables the ``get_batch`` fast path.
        num_workers: threads preparing batches ahead (0: in the caller's thread).
        prefetch_factor: batches in flight per worker.
        sampler: where the indices come from instead (with ``shuffle=False``): an iterable
            of indices with ``__len__``, e.g. a ``DistributedSampler`` (one rank's shard).
            With a sampler that shuffles (``sampler.shuffle``), batches get their random
            transforms' seeds from ``generator``, as when shuffling.

    Yields:
        Batches as the dataset's samples, stacked: for image datasets with ``ToTensor``,
        ``(images float32 (N, C, H, W), labels int64 (N,))``.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 1,
        shuffle: bool = False,
        drop_last: bool = False,
        generator: np.random.Generator | None = None,
        collate_fn: Callable[[list], Any] | None = None,
        num_workers: int = 0,
        prefetch_factor: int = 2,
        sampler: Any = None,
    ):
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"DataLoader expects a positive integer batch_size, got {batch_size!r}")
        if generator is not None and not isinstance(generator, np.random.Generator):
            raise TypeError(
                f"DataLoader expects generator to be a numpy.random.Generator, got {type(generator).__name__}"
            )
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: give sampler= or shuffle=True, not both (the sampler sets the order)")
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self._generator = generator
        self.collate_fn = collate_fn
        if not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
            raise ValueError(f"DataLoader expects a non-negative integer num_workers, got {num_workers!r}")
        self.num_workers, self.prefetch_factor = int(num_workers), max(1, int(prefetch_factor))

    @property
    def generator(self) -> np.random.Generator:
        """The generator that shuffles (cnnkit's default one unless given)."""
        return self._generator if self._generator is not None else config.default_generator()

    def __len__(self) -> int:
        n = len(self.dataset) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        generator = self.generator
        if self.sampler is not None:
            order = np.fromiter(iter(self.sampler), dtype=np.int64)
        else:
            order = generator.permutation(len(self.dataset)) if self.shuffle else np.arange(len(self.dataset))
        n = len(order)
        stop = min(len(self) * self.batch_size, n)
        starts = range(0, stop, self.batch_size)
        # one seed per batch, drawn up front in order: the batch's random transforms use it
        seeds = generator.integers(0, 2**63, size=len(starts)) if self._random_transforms() else None
        jobs = ((order[start : start + self.batch_size], None if seeds is None else int(seeds[i]))
                for i, start in enumerate(starts))
        if self.num_workers == 0:
            for indices, seed in jobs:
                yield self._load(indices, seed)
            return
        with ThreadPoolExecutor(self.num_workers, thread_name_prefix="cnnkit-loader") as pool:
            pending: deque = deque()
            try:
                for job in jobs:
                    pending.append(pool.submit(self._load, *job))
                    if len(pending) >= self.num_workers * self.prefetch_factor:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()

    def _random_transforms(self) -> bool:
        """Whether batches get their own generator: when shuffling (training) or with workers.

        A dataset that sets ``random = False`` (no random transforms) never needs one; an
        evaluation loader in the caller's thread draws nothing, as before workers existed.
        """
        shuffled = self.shuffle or bool(getattr(self.sampler, "shuffle", False))
        return getattr(self.dataset, "random", True) and (shuffled or self.num_workers > 0)

    def _load(self, indices: np.ndarray, seed: int | None) -> Any:
        if seed is None:
            return self._collate(indices)
        with config.generator_scope(np.random.default_rng(seed)):
            return self._collate(indices)

    def _collate(self, indices: np.ndarray) -> Any:
        get_batch = getattr(self.dataset, "get_batch", None) if self.collate_fn is None else None
        if get_batch is not None:
            return get_batch(indices)
        return (self.collate_fn or default_collate)([self.dataset[int(i)] for i in indices])

    def state_dict(self) -> dict:
        """Return the loader's state between epochs: the shuffling generator's state."""
        return {"generator": copy.deepcopy(self.generator.bit_generator.state)}

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()`` so the next epochs replay the same order."""
        bit_generator = self.generator.bit_generator
        if state["generator"].get("bit_generator") != type(bit_generator).__name__:
            raise ValueError(
                f"DataLoader state is for bit generator {state['generator'].get('bit_generator')!r}, "
                f"this loader's generator uses {type(bit_generator).__name__}"
            )
        bit_generator.state = copy.deepcopy(state["generator"])

    def __repr__(self) -> str:
        return (
            f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last}, {len(self)} batches)"
        )
