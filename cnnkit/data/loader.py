"""DataLoader: batches of NumPy arrays from a dataset, shuffled by an explicit Generator.

Each ``iter(loader)`` is one epoch: it draws a permutation from ``loader.generator`` (when
shuffling) and yields batches. Saving ``loader.state_dict()`` between epochs and loading
it later replays the same order, which is what resumable training needs: the loader
keeps no position, only the generator's state.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
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
    ):
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"DataLoader expects a positive integer batch_size, got {batch_size!r}")
        if generator is not None and not isinstance(generator, np.random.Generator):
            raise TypeError(
                f"DataLoader expects generator to be a numpy.random.Generator, got {type(generator).__name__}"
            )
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self._generator = generator
        self.collate_fn = collate_fn

    @property
    def generator(self) -> np.random.Generator:
        """The generator that shuffles (cnnkit's default one unless given)."""
        return self._generator if self._generator is not None else config.default_generator()

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        n = len(self.dataset)
        order = self.generator.permutation(n) if self.shuffle else np.arange(n)
        get_batch = getattr(self.dataset, "get_batch", None) if self.collate_fn is None else None
        collate = self.collate_fn or default_collate
        stop = len(self) * self.batch_size
        for start in range(0, min(stop, n), self.batch_size):
            indices = order[start : start + self.batch_size]
            if get_batch is not None:
                yield get_batch(indices)
            else:
                yield collate([self.dataset[int(i)] for i in indices])

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
