"""Sampling, likelihoods and results across all devices of all processes (multi-controller JAX).

In a multi-process run (``flowjax.training.initialize_distributed``) every process runs the same
program; a ``jax.Array`` may span devices of several processes, and only its local part can be read
directly. These helpers cover the evaluation side of a run:

* :func:`sample`: one SPMD program over every device of every process, the batch split over the
  mesh: the same samples as one process with the same number of devices (JAX's partitionable
  PRNG draws the same numbers whatever the layout).
* :func:`log_likelihood`: each process evaluates its own examples on its own devices; the results
  are gathered at the end. Every example is solved with its own adaptive steps, so the processes
  need no collective while they solve and one that needs more steps delays the others only at the
  final gather: nothing waits inside the solver loop, so different step counts cannot hang.
* :func:`gather`, :func:`local_rows`, :func:`to_host`: global arrays to numpy.
* :func:`is_primary`: process 0, the one that writes logs and figures.

Every function except :func:`is_primary` and :func:`local_rows` is collective: all processes must
call it, in the same order, with the same arguments (their own data for :func:`log_likelihood`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax.experimental import multihost_utils
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, PyTree

from flowjax import likelihood as _likelihood
from flowjax import sampling as _sampling
from flowjax.paths import AbstractPath
from flowjax.training._mesh import _batch_layout, batch_sharding, make_mesh

__all__ = ["gather", "is_primary", "local_rows", "log_likelihood", "sample", "to_host"]


def is_primary() -> bool:
    """Whether this is process 0 (the one that writes logs, figures and summaries)."""
    return jax.process_index() == 0


def _is_global(x: Any) -> bool:
    return isinstance(x, jax.Array) and not x.is_fully_addressable


def gather(tree: PyTree) -> PyTree:
    """Every array of ``tree`` as a numpy array holding its full global value, on every process.

    Global arrays that span several processes are all-gathered (collective); other arrays are
    copied to the host. Non-array leaves are returned unchanged.
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


def local_rows(x: Array) -> np.ndarray:
    """This process's rows of a batch-sharded global array ``[B, ...]``, in global order.

    With the layout of :func:`flowjax.training.shard_batch` these are exactly the rows this
    process contributed. Not collective.
    """
    if not isinstance(x, jax.Array):
        return np.asarray(x)
    if x.is_fully_addressable:
        return np.asarray(x)
    pieces = {}
    for shard in x.addressable_shards:
        start = (shard.index[0].start or 0) if shard.index else 0
        pieces.setdefault(start, np.asarray(shard.data))
    return np.concatenate([pieces[k] for k in sorted(pieces)], axis=0)


def sample(
    model_fn: Callable[..., Array],
    path: AbstractPath,
    key: PRNGKeyArray,
    shape: tuple[int, ...],
    *,
    mesh: jax.sharding.Mesh | None = None,
    batch_axes: Sequence[str] | None = None,
    **kwargs: Any,
) -> _sampling.SampleResult:
    """:func:`flowjax.sampling.sample` with the batch split over every device of every process.

    Args:
      model_fn, path, key, shape, **kwargs: as for :func:`flowjax.sampling.sample`; ``shape`` is
        the global ``(B, ...)``, ``key`` the same on every process. ``B`` must be divisible by the
        number of devices on the batch axes.
      mesh: the mesh (default: :func:`flowjax.training.make_mesh`, all devices of all processes).
      batch_axes: mesh axes splitting the batch (default: all).

    Returns:
      The :class:`flowjax.sampling.SampleResult`; ``samples`` (and ``trajectory``) are global
      arrays split over the batch axes: read them with :func:`gather` (all rows, every process)
      or :func:`local_rows` (this process's rows).

    Diffrax-based solves (adaptive steps, Heun and other non-scan solvers) contain equinox's
    run-time error check (a host callback) unless ``EQX_ON_ERROR=nan`` is set before Python
    starts; XLA then runs that solve replicated on every device (the results are the same, the
    work is not split). Fixed-grid Euler / Euler-Maruyama (the ``lax.scan`` backend) and
    predictor-corrector always split.
    """
    if len(shape) < 1:
        raise ValueError(f"shape must be (B, ...) with a batch axis; got {shape}")
    mesh = mesh if mesh is not None else make_mesh()
    sharding = batch_sharding(mesh, batch_axes)
    n = _batch_layout(sharding)[0]
    if shape[0] % n:
        raise ValueError(
            f"the global batch of {shape[0]} samples does not split over the {n} devices of the "
            f"batch axes (mesh {dict(mesh.shape)}); use a multiple of {n}"
        )
    return _sampling.sample(model_fn, path, key, shape, sharding=sharding, **kwargs)


def log_likelihood(
    model_fn: Callable[..., Array],
    path: AbstractPath,
    x: Float[ArrayLike, "B_local ..."],
    *,
    key: PRNGKeyArray | None = None,
    **kwargs: Any,
) -> _likelihood.LikelihoodResult:
    """Log-likelihoods of the global batch: each process solves its own rows on its own devices.

    Args:
      model_fn, path, **kwargs: as for :func:`flowjax.likelihood.log_likelihood`. Arrays inside
        ``model_fn`` that live on the global mesh (e.g. ``ema_params`` of a train state) are
        fetched to the host first (:func:`to_host`).
      x: this process's examples ``[B_local, ...]`` (numpy or a local array); every process must
        pass the same ``B_local``. Padded to a multiple of this process's device count with
        copies of its first row, which are dropped from the result.
      key: PRNG key (Hutchinson probes); process ``p`` uses ``fold_in(key, p)``.

    Returns:
      A :class:`flowjax.likelihood.LikelihoodResult` of numpy arrays for the global batch
      ``[B_local * process_count, ...]``, rows in process order (process 0's first), the same on
      every process.
    """
    x = np.asarray(x)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x must be a batch [B_local, ...] with B_local >= 1; got shape {x.shape}")
    n_proc = jax.process_count()
    if n_proc > 1:
        sizes = multihost_utils.process_allgather(np.asarray(x.shape[0], np.int64))
        if len(set(np.asarray(sizes).reshape(-1).tolist())) != 1:
            raise ValueError(
                f"every process must pass the same number of examples; got {sizes.tolist()} "
                "(pad the last batch, e.g. make_iterator(..., drop_remainder=False))"
            )
        model_fn = _host_arrays(model_fn)
    if key is not None and n_proc > 1:
        key = jax.random.fold_in(key, jax.process_index())
    devices = jax.local_devices()
    b = x.shape[0]
    pad = (-b) % len(devices)
    if pad:
        x = np.concatenate([x, np.repeat(x[:1], pad, axis=0)], axis=0)
    local = batch_sharding(make_mesh(devices=devices))
    res = _likelihood.log_likelihood(model_fn, path, jax.device_put(x, local), key=key, **kwargs)
    res = jax.tree.map(lambda a: np.asarray(a)[:b], res)
    if n_proc > 1:
        res = jax.tree.map(
            lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True)), res
        )
    return res


def _host_arrays(tree: PyTree) -> PyTree:
    """Replace global ``jax.Array`` leaves (spanning processes) by numpy copies; keep the rest."""
    arrays, static = eqx.partition(tree, lambda x: isinstance(x, jax.Array))
    return eqx.combine(gather(arrays), static)
