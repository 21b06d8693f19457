"""Sampling and likelihoods over every device of every process (multi-controller JAX).

* :func:`sample_sharded`: :func:`flowjax.sample` as one SPMD program over every device of every
  process, the batch split over the mesh: the same samples as one process with the same number of
  devices (JAX's partitionable PRNG draws the same numbers whatever the layout).
* :func:`log_likelihood_sharded`: each process evaluates its own examples on its own devices; the
  results are gathered at the end. Every example is solved with its own adaptive steps, so the
  processes need no collective while they solve and one that needs more steps delays the others
  only at the final gather: nothing waits inside the solver loop, so different step counts cannot
  hang.

Both are collective: all processes must call them, in the same order, with the same arguments
(their own data for :func:`log_likelihood_sharded`). Read results with
:func:`flowjax.parallel.gather` (all rows, every process) or :func:`flowjax.parallel.local_rows`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from flowjax.likelihood import LikelihoodResult, log_likelihood
from flowjax.parallel._batch import batch_layout
from flowjax.parallel._host import host_arrays
from flowjax.parallel._mesh import batch_sharding, make_mesh
from flowjax.paths import AbstractPath
from flowjax.sampling import SampleResult, sample


def sample_sharded(
    model_fn: Callable[..., Array],
    path: AbstractPath,
    key: PRNGKeyArray,
    shape: tuple[int, ...],
    *,
    mesh: jax.sharding.Mesh | None = None,
    batch_axes: Sequence[str] | None = None,
    **kwargs: Any,
) -> SampleResult:
    """:func:`flowjax.sampling.sample` with the batch split over every device of every process.

    Args:
      model_fn, path, key, shape, **kwargs: as for :func:`flowjax.sampling.sample`; ``shape`` is
        the global ``(B, ...)``, ``key`` the same on every process. ``B`` must be divisible by the
        number of devices on the batch axes.
      mesh: the mesh (default: :func:`flowjax.parallel.make_mesh`, all devices of all processes).
      batch_axes: mesh axes splitting the batch (default: all).

    Returns:
      The :class:`flowjax.sampling.SampleResult`; ``samples`` (and ``trajectory``) are global
      arrays split over the batch axes: read them with :func:`flowjax.parallel.gather` (all rows,
      every process) or :func:`flowjax.parallel.local_rows` (this process's rows).

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
    n = batch_layout(sharding)[0]
    if shape[0] % n:
        raise ValueError(
            f"the global batch of {shape[0]} samples does not split over the {n} devices of the "
            f"batch axes (mesh {dict(mesh.shape)}); use a multiple of {n}"
        )
    return sample(model_fn, path, key, shape, sharding=sharding, **kwargs)


def log_likelihood_sharded(
    model_fn: Callable[..., Array],
    path: AbstractPath,
    x: Float[ArrayLike, "B_local ..."],
    *,
    key: PRNGKeyArray | None = None,
    **kwargs: Any,
) -> LikelihoodResult:
    """Log-likelihoods of the global batch: each process solves its own rows on its own devices.

    Args:
      model_fn, path, **kwargs: as for :func:`flowjax.likelihood.log_likelihood`. Arrays inside
        ``model_fn`` that live on the global mesh (e.g. ``ema_params`` of a train state) are
        fetched to the host first (:func:`flowjax.parallel.to_host`).
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
        model_fn = host_arrays(model_fn)
    if key is not None and n_proc > 1:
        key = jax.random.fold_in(key, jax.process_index())
    devices = jax.local_devices()
    b = x.shape[0]
    pad = (-b) % len(devices)
    if pad:
        x = np.concatenate([x, np.repeat(x[:1], pad, axis=0)], axis=0)
    local = batch_sharding(make_mesh(devices=devices))
    res = log_likelihood(model_fn, path, jax.device_put(x, local), key=key, **kwargs)
    res = jax.tree.map(lambda a: np.asarray(a)[:b], res)
    if n_proc > 1:
        res = jax.tree.map(
            lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True)), res
        )
    return res
