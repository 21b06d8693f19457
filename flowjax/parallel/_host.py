"""Global arrays (that may span several processes) to numpy on the host."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax.experimental import multihost_utils
from jaxtyping import Array, PyTree


def _is_global(x: Any) -> bool:
    return isinstance(x, jax.Array) and not x.is_fully_addressable


def gather(tree: PyTree) -> PyTree:
    """Every array of ``tree`` as a numpy array holding its full global value, on every process.

    Global arrays that span several processes are all-gathered (collective: every process must
    call it, in the same order); other arrays are copied to the host. Non-array leaves are
    returned unchanged.
    """
    leaves, treedef = jax.tree.flatten(tree)
    if any(_is_global(x) for x in leaves):
        idx = [i for i, x in enumerate(leaves) if _is_global(x)]
        got = multihost_utils.process_allgather([leaves[i] for i in idx], tiled=True)
        leaves = list(leaves)
        for i, g in zip(idx, got, strict=True):
            leaves[i] = np.asarray(g)
    leaves = [np.asarray(x) if isinstance(x, jax.Array | np.ndarray) else x for x in leaves]
    return jax.tree.unflatten(treedef, leaves)


def to_host(tree: PyTree) -> PyTree:
    """``tree`` with every ``jax.Array`` leaf replaced by its full value as numpy (see :func:`gather`).

    Use it to take parameters that live on the global mesh (replicated or fsdp-sharded, e.g.
    ``state.ema_params``) into a computation on this process's devices only.
    """
    return gather(tree)


def host_arrays(tree: PyTree) -> PyTree:
    """``tree`` with its ``jax.Array`` leaves fetched (:func:`gather`) and every other leaf kept.

    Unlike :func:`to_host` it also takes trees with non-array leaves that numpy cannot hold (a
    model function closing over parameters), which are left as they are. Collective.
    """
    arrays, static = eqx.partition(tree, lambda x: isinstance(x, jax.Array))
    return eqx.combine(gather(arrays), static)


def local_rows(x: Array) -> np.ndarray:
    """This process's rows of a batch-sharded global array ``[B, ...]``, in global order.

    With the layout of :func:`flowjax.parallel.shard_batch` these are exactly the rows this
    process contributed. Not collective.
    """
    if not isinstance(x, jax.Array):
        return np.asarray(x)
    if x.is_fully_addressable:
        return np.asarray(x)
    pieces: dict[int, np.ndarray] = {}
    for shard in x.addressable_shards:
        start = (shard.index[0].start or 0) if shard.index else 0
        pieces.setdefault(start, np.asarray(shard.data))
    return np.concatenate([pieces[k] for k in sorted(pieces)], axis=0)
