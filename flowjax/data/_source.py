"""Random-access sources: ``len(source)`` and ``source[i]`` (one example as a dict of arrays).

A source may also offer ``source.get_batch(indices) -> dict`` of stacked arrays (fast path: one
fancy-indexing operation per key for in-memory data); :func:`fetch_batch` falls back to
``__getitems__`` (tfds data sources) or to one ``source[i]`` per index, then stacks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np

__all__ = ["ArraySource", "Source", "fetch_batch"]


@runtime_checkable
class Source(Protocol):
    """What :func:`flowjax.data.make_iterator` reads: random access by example index."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Mapping[str, Any]: ...


class ArraySource:
    """In-memory data: a dict of NumPy arrays sharing their leading (example) axis.

    ``source[i]`` gives one example (a dict of rows); ``source[idx]`` or ``source.get_batch(idx)``
    with an integer index array gives the stacked batch.
    """

    def __init__(self, arrays: Mapping[str, Any]):
        if not arrays:
            raise ValueError("ArraySource needs at least one array")
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        lengths = {k: (a.shape[0] if a.ndim else None) for k, a in self.arrays.items()}
        if len(set(lengths.values())) != 1 or None in lengths.values():
            raise ValueError(
                f"arrays must share their leading (example) axis; got leading sizes {lengths}"
            )
        self._len = cast(int, next(iter(lengths.values())))  # None was excluded above

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: Any) -> dict[str, np.ndarray]:
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if not -self._len <= i < self._len:
                raise IndexError(f"index {i} out of range for a source of {self._len} examples")
            return {k: a[i] for k, a in self.arrays.items()}
        return self.get_batch(np.asarray(index))

    def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Stacked examples at ``indices`` (any integer array shape ``[B]``)."""
        indices = np.asarray(indices)
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(
                f"indices must be a 1-D integer array; got {indices.dtype}{indices.shape}"
            )
        return {k: a[indices] for k, a in self.arrays.items()}

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}: {a.dtype}{list(a.shape)}" for k, a in self.arrays.items())
        return f"ArraySource({parts})"


def stack_examples(examples: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Stack a list of example dicts into one dict of arrays (the keys of the first example)."""
    if not examples:
        raise ValueError("cannot stack an empty list of examples")
    keys = list(examples[0].keys())
    out = {}
    for k in keys:
        try:
            out[k] = np.stack([np.asarray(ex[k]) for ex in examples])
        except ValueError as e:
            shapes = sorted({np.shape(ex[k]) for ex in examples})
            raise ValueError(
                f"cannot stack key {k!r}: examples have different shapes {shapes[:4]}; "
                "resize them to one shape with a transform of the source"
            ) from e
    return out


def fetch_batch(source: Any, indices: np.ndarray) -> dict[str, np.ndarray]:
    """The examples of ``source`` at ``indices`` as a dict of stacked arrays."""
    indices = np.asarray(indices, dtype=np.int64)
    get_batch = getattr(source, "get_batch", None)
    if get_batch is not None:
        return get_batch(indices)
    return stack_examples([source[int(i)] for i in indices])
