"""A global batch from each process's rows: its layout over the mesh and its assembly."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, cast

import jax
import numpy as np
from jax.sharding import NamedSharding


@functools.lru_cache(maxsize=64)
def batch_layout(sharding: NamedSharding) -> tuple[int, int]:
    """(number of batch shards over all devices, number of distinct shards this process holds).

    A batch of ``B`` rows under ``sharding`` has ``B / n_shards`` rows on each device; this
    process contributes ``n_local`` of the ``n_shards`` blocks.
    """
    mesh = sharding.mesh
    spec0 = sharding.spec[0] if len(sharding.spec) else None
    axes = () if spec0 is None else ((spec0,) if isinstance(spec0, str) else tuple(spec0))
    n_shards = math.prod(mesh.shape[a] for a in axes)
    idx = [mesh.axis_names.index(a) for a in axes]
    local = set()
    me = jax.process_index()
    for coords in np.ndindex(mesh.devices.shape):
        device = cast(jax.Device, mesh.devices[coords])  # an object array of devices
        if device.process_index == me:
            local.add(tuple(coords[i] for i in idx))
    return n_shards, max(len(local), 1)


def global_batch_size(local_size: int, sharding: NamedSharding) -> int:
    """The global batch size that ``local_size`` examples per process make under ``sharding``."""
    n_shards, n_local = batch_layout(sharding)
    return local_size * n_shards // n_local


def shard_batch(batch: Mapping[str, Any], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assemble a global batch from this process's examples (``jax.make_array_from_process_local_data``).

    Args:
      batch: dict of arrays ``[B_local, ...]`` (numpy, the per-process part of the global batch)
        or of ``jax.Array`` ``[B, ...]`` already global (re-placed with ``jax.device_put`` if their
        sharding differs).
      sharding: the batch sharding (see :func:`flowjax.parallel.batch_sharding`).

    Returns:
      dict of global arrays ``[B_global, ...]`` split over the batch axes.

    Raises:
      TypeError: ``batch`` is not a mapping of arrays.
      ValueError: arrays disagree on the batch size, have no batch axis, or the global batch size
        is not divisible by the number of devices on the batch axes.
    """
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"batch must be a dict of arrays with a leading batch axis, got {type(batch).__name__}"
        )
    if not batch:
        raise ValueError("batch is an empty dict; it needs at least one array [B, ...]")
    n_shards, n_local = batch_layout(sharding)
    sizes = {}
    for k, v in batch.items():
        shape = np.shape(v)
        if len(shape) == 0:
            raise ValueError(f"batch[{k!r}] has no leading batch axis (shape {shape})")
        sizes[k] = shape[0]
    if len(set(sizes.values())) > 1:
        raise ValueError(f"batch arrays disagree on the batch size (leading axis): {sizes}")
    size = next(iter(sizes.values()))
    all_global = all(isinstance(v, jax.Array) for v in batch.values())
    global_size = size if all_global else size * n_shards // n_local
    if (all_global and size % n_shards) or (not all_global and size % n_local):
        n_proc = n_shards // n_local
        desc = (
            f"{size}"
            if all_global or n_proc == 1
            else f"{size} per process x {n_proc} processes = {size * n_proc}"
        )
        raise ValueError(
            f"global batch size {desc} is not divisible by the number of devices on the batch "
            f"axes, {n_shards} (mesh {dict(sharding.mesh.shape)}); use a multiple of {n_shards}"
        )
    out = {}
    for k, v in batch.items():
        if isinstance(v, jax.Array):
            out[k] = v if v.sharding == sharding else jax.device_put(v, sharding)
        else:
            arr = np.asarray(v)
            arr = arr.astype(jax.dtypes.canonicalize_dtype(arr.dtype), copy=False)
            out[k] = jax.make_array_from_process_local_data(
                sharding, arr, (global_size, *arr.shape[1:])
            )
    return out
