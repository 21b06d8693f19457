"""Deterministic, shardable, resumable batch iterator over a random-access source.

Layout. Epoch ``e`` visits the examples in the order ``perm_e`` (a permutation hashed from
``(seed, e)``; ``range(n)`` without shuffling). Global batch ``b`` of the epoch is
``perm_e[b*G : (b+1)*G]`` (``G`` = global batch size) and process ``p`` of ``P`` takes its rows
``[p*L, (p+1)*L)`` with ``L = G // P``. Concatenating the processes' batches in process order
therefore gives exactly the one-process global batch, which is the layout
``jax.make_array_from_process_local_data`` expects when the mesh's data axis orders devices by
process (as ``jax.make_mesh`` does). Every example appears exactly once per epoch across all
processes, up to the remainder:

* ``drop_remainder=True`` (training): each epoch has ``n // G`` batches; the last ``n % G``
  examples of that epoch's permutation are not seen in that epoch (a different subset each epoch
  when shuffling).
* ``drop_remainder=False`` (evaluation): ``ceil(n / G)`` batches; the last one is padded to the
  full size with copies of example 0 and every batch carries ``"mask"`` (bool ``[L]``, False on
  padding), so that shapes never change under ``jit``.

State. ``get_state()`` is a small JSON-serialisable dict (the position in global terms: epoch and
batch within it, plus what must match to resume). It is the same on every process, and it can be
restored with a different process count as long as the global batch size is unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from flowjax.data import _hashing
from flowjax.data._source import fetch_batch
from flowjax.data._transforms import IdentityTransform, Transform

__all__ = ["DataIterator", "make_iterator"]

_STATE_VERSION = 1
_MATCH_KEYS = ("num_examples", "global_batch_size", "seed", "shuffle", "drop_remainder")


def _as_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return int(value)


class DataIterator(Iterator[dict[str, np.ndarray]]):
    """Iterator of this process's slice of each global batch (see the module docstring).

    Use :func:`make_iterator` to build one. Attributes: ``epoch``, ``batch_in_epoch``,
    ``steps_per_epoch``, ``local_batch_size``, ``step`` (global batches consumed so far).
    """

    def __init__(
        self,
        source: Any,
        *,
        global_batch_size: int,
        seed: int,
        shuffle: bool = True,
        process_index: int = 0,
        process_count: int = 1,
        transform: Transform | None = None,
        drop_remainder: bool = True,
        num_epochs: int | None = None,
    ):
        self.source = source
        self.num_examples = len(source)
        self.global_batch_size = _as_int(global_batch_size, "global_batch_size", 1)
        self.seed = _as_int(seed, "seed", 0)
        self.process_count = _as_int(process_count, "process_count", 1)
        self.process_index = _as_int(process_index, "process_index", 0)
        if self.process_index >= self.process_count:
            raise ValueError(
                f"process_index must be < process_count = {self.process_count}; "
                f"got {self.process_index}"
            )
        if self.global_batch_size % self.process_count:
            raise ValueError(
                f"global_batch_size = {self.global_batch_size} is not divisible by "
                f"process_count = {self.process_count}: each process must get the same number "
                f"of rows (use a multiple of {self.process_count})"
            )
        self.local_batch_size = self.global_batch_size // self.process_count
        self.shuffle = bool(shuffle)
        self.drop_remainder = bool(drop_remainder)
        self.transform = transform if transform is not None else IdentityTransform()
        self.num_epochs = None if num_epochs is None else _as_int(num_epochs, "num_epochs", 1)
        if self.num_examples == 0:
            raise ValueError("the source is empty (len(source) == 0)")
        if self.drop_remainder:
            self.steps_per_epoch = self.num_examples // self.global_batch_size
            if self.steps_per_epoch == 0:
                raise ValueError(
                    f"global_batch_size = {self.global_batch_size} exceeds the number of examples "
                    f"({self.num_examples}) and drop_remainder=True leaves no batch; use a "
                    "smaller batch or drop_remainder=False"
                )
        else:
            self.steps_per_epoch = math.ceil(self.num_examples / self.global_batch_size)
        self.epoch = 0
        self.batch_in_epoch = 0
        self._order_epoch: int | None = None
        self._order: np.ndarray | None = None

    # ------------------------------------------------------------------ position
    @property
    def step(self) -> int:
        """Global batches consumed so far (over all epochs)."""
        return self.epoch * self.steps_per_epoch + self.batch_in_epoch

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._order_epoch != epoch:
            if self.shuffle:
                self._order = _hashing.permutation(self.seed, epoch, self.num_examples)
            else:
                self._order = np.arange(self.num_examples, dtype=np.int64)
            self._order_epoch = epoch
        assert self._order is not None
        return self._order

    def local_indices(self, epoch: int, batch: int) -> np.ndarray:
        """Source indices of this process's rows of global batch ``batch`` of ``epoch`` (-1 = padding)."""
        start = batch * self.global_batch_size + self.process_index * self.local_batch_size
        pos = np.arange(start, start + self.local_batch_size, dtype=np.int64)
        order = self._epoch_order(epoch)
        valid = pos < self.num_examples
        return np.where(valid, order[np.minimum(pos, self.num_examples - 1)], -1)

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> DataIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.num_epochs is not None and self.epoch >= self.num_epochs:
            raise StopIteration
        epoch = self.epoch
        indices = self.local_indices(epoch, self.batch_in_epoch)
        valid = indices >= 0
        safe = np.where(valid, indices, 0)
        batch = fetch_batch(self.source, safe)
        batch = self.transform(batch, seed=self.seed, epoch=epoch, indices=safe)
        if not self.drop_remainder:
            batch = dict(batch)
            batch["mask"] = valid
        self.batch_in_epoch += 1
        if self.batch_in_epoch == self.steps_per_epoch:
            self.epoch += 1
            self.batch_in_epoch = 0
        return batch

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict[str, Any]:
        """The position (JSON-serialisable, identical on every process)."""
        return {
            "version": _STATE_VERSION,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "num_examples": self.num_examples,
            "global_batch_size": self.global_batch_size,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "drop_remainder": self.drop_remainder,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Resume at the position of ``state`` (from :meth:`get_state`, possibly JSON round-tripped).

        Raises ValueError naming the fields that differ from this iterator (data set size, global
        batch size, seed, shuffle, drop_remainder): resuming with them changed would not continue
        the same sequence. The process count may differ.
        """
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict from get_state(); got {type(state).__name__}")
        missing = [
            k for k in ("version", "epoch", "batch_in_epoch", *_MATCH_KEYS) if k not in state
        ]
        if missing:
            raise ValueError(f"iterator state is missing {missing}; got keys {sorted(state)}")
        if state["version"] != _STATE_VERSION:
            raise ValueError(
                f"iterator state version {state['version']} is not supported "
                f"(this flowjax writes version {_STATE_VERSION})"
            )
        mine = self.get_state()
        diff = {k: (state[k], mine[k]) for k in _MATCH_KEYS if state[k] != mine[k]}
        if diff:
            text = ", ".join(f"{k}: saved {a!r} != now {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"cannot resume this iterator from the saved state ({text})")
        epoch = _as_int(state["epoch"], "state['epoch']", 0)
        batch = _as_int(state["batch_in_epoch"], "state['batch_in_epoch']", 0)
        if batch >= self.steps_per_epoch:
            raise ValueError(
                f"state['batch_in_epoch'] = {batch} is out of range for {self.steps_per_epoch} "
                "batches per epoch"
            )
        self.epoch, self.batch_in_epoch = epoch, batch

    def __repr__(self) -> str:
        return (
            f"DataIterator(n={self.num_examples}, global_batch_size={self.global_batch_size}, "
            f"process {self.process_index}/{self.process_count}, epoch={self.epoch}, "
            f"batch_in_epoch={self.batch_in_epoch}/{self.steps_per_epoch})"
        )


def make_iterator(
    source: Any,
    *,
    global_batch_size: int,
    seed: int,
    shuffle: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    transform: Transform | None = None,
    drop_remainder: bool = True,
    num_epochs: int | None = None,
) -> DataIterator:
    """An iterator of this process's batches: ``global_batch_size // process_count`` rows each.

    Args:
      source: a :class:`flowjax.data.Dataset` (from :func:`get_dataset`; its source and default
        transform are used) or any random-access source (``len`` and ``source[i]`` giving a dict
        of arrays; ``get_batch(indices)`` used when present).
      global_batch_size: rows per step over all processes; must be divisible by ``process_count``.
      seed: fixes the shuffle of each epoch and the transform's randomness (with epoch, index).
      shuffle: a fresh permutation per epoch; otherwise source order.
      process_index, process_count: this process and the number of processes (default
        ``jax.process_index()`` and ``jax.process_count()``).
      transform: ``transform(batch, *, seed, epoch, indices)``; default: the Dataset's transform,
        or pass-through for a plain source.
      drop_remainder: drop the last incomplete batch of each epoch (training) or pad it and add
        ``"mask"`` (evaluation); see the module docstring for what is dropped.
      num_epochs: stop after this many epochs (default: run forever).

    Returns:
      A :class:`DataIterator` with ``get_state()`` / ``set_state(state)`` for exact resumption.
    """
    from flowjax.data._datasets import Dataset

    if isinstance(source, Dataset):
        transform = transform if transform is not None else source.transform
        source = source.source
    if process_index is None:
        process_index = jax.process_index()
    if process_count is None:
        process_count = jax.process_count()
    return DataIterator(
        source,
        global_batch_size=global_batch_size,
        seed=seed,
        shuffle=shuffle,
        process_index=process_index,
        process_count=process_count,
        transform=transform,
        drop_remainder=drop_remainder,
        num_epochs=num_epochs,
    )
