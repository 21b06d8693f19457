"""The gradient of the global-batch loss under ``jax.shard_map``: per device, then explicit collectives.

Each device evaluates the loss and its gradient on its own block of the batch (``B / n`` rows, in
micro-batches when ``grad_accum_steps > 1``), then the devices average with one explicit sum over
the batch axes:

* parameters split over an axis (``fsdp``) are all-gathered first, and their gradients
  reduce-scattered back onto the blocks (``psum_scatter``); every other sum is a ``psum``;
* the per-device loss is a mean over the device's rows, so the global mean is the mean of the
  devices' means (equal blocks); with a ``"mask"`` in the batch, each device's means are weighted by
  its number of true rows and divided by the total;
* the gradient is that of each device's *own* loss (the parameters are cast to varying before
  differentiation), so the one explicit sum is the only sum: a ``pmean`` of gradients taken with
  respect to the invariant (replicated) parameters would be ``n`` times too large.

The loss's key on device ``d`` (its linear index over the batch axes) is ``fold_in(key, d)``: the
devices draw different numbers. Per-example keys that do not depend on the device count come
with the batch (``make_train_step(example_keys=True)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, PyTree

from flowjax.parallel import gather_from_specs, reduce_to_specs, to_varying
from flowjax.training._accumulate import (
    accumulate_value_and_grad,
    batch_weight,
    check_microbatch_split,
    weigh,
)

LossOf = Callable[[PyTree, Mapping[str, Array], Array], tuple[Array, Mapping[str, Array]]]


def shard_map_value_and_grad(
    loss_of: LossOf,
    params: PyTree,
    batch: Mapping[str, Array],
    key: Array,
    *,
    mesh: Mesh,
    batch_axes: Sequence[str],
    param_specs: PyTree,
    grad_accum_steps: int = 1,
) -> tuple[tuple[Array, dict[str, Array]], PyTree]:
    """``((loss, aux), grads)`` of the global batch, computed per device and averaged explicitly.

    Args:
      loss_of: ``loss, aux = loss_of(params, batch, key)``: a float32 scalar mean over the rows
        it is given (over the true rows with a ``"mask"``) and a dict of float scalars (means).
      params: the parameters, global arrays laid out as ``param_specs`` on ``mesh``.
      batch: dict of global arrays ``[B, ...]`` split over ``batch_axes``.
      key: the step's key; device ``d`` passes ``fold_in(key, d)`` to ``loss_of``.
      mesh: the mesh; ``batch_axes``: its axes that split the batch (every axis that
        ``param_specs`` splits must be one of them).
      param_specs: a ``PartitionSpec`` per parameter leaf.
      grad_accum_steps: micro-batches per device (``B`` divisible by it times the devices).

    Returns:
      The global mean loss and aux (float32, replicated) and the mean gradient, laid out as
      ``param_specs`` (the parameters' dtypes).
    """
    axes = tuple(batch_axes)
    n_shards = math.prod(mesh.shape[a] for a in axes)
    if grad_accum_steps > 1:
        check_microbatch_split(batch, grad_accum_steps, n_shards)

    def per_device(params: PyTree, batch: Mapping[str, Array], key: Array) -> tuple:
        full = to_varying(gather_from_specs(params, param_specs), param_specs, axes)
        device_key = jax.random.fold_in(key, jax.lax.axis_index(axes))
        if grad_accum_steps == 1:
            (loss, aux), grads = jax.value_and_grad(loss_of, has_aux=True)(full, batch, device_key)
        else:
            (loss, aux), grads = accumulate_value_and_grad(
                loss_of, full, batch, device_key, grad_accum_steps, varying_axes=axes
            )
        values = (loss, {k: jnp.asarray(v).astype(jnp.float32) for k, v in aux.items()})
        weight = batch_weight(batch)
        if weight is None:  # equal blocks: the global mean is the mean of the devices' means
            scale = jnp.float32(1.0 / n_shards)
        else:
            scale = 1.0 / jax.lax.psum(weight, axes)
            values, grads = weigh(values, weight), weigh(grads, weight)
        loss, aux = jax.tree.map(lambda v: jax.lax.psum(v, axes) * scale, values)
        grads = reduce_to_specs(grads, param_specs, axes)
        grads = jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)
        return (loss, aux), grads

    return jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(param_specs, P(axes), P()),
        out_specs=(P(), param_specs),
    )(params, dict(batch), key)
