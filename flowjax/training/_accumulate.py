"""Gradient accumulation: one optimizer step from ``k`` micro-batches of a global batch.

The global batch ``[B, ...]`` is split into ``k`` micro-batches of ``B / k`` examples; a
``lax.scan`` evaluates the loss and its gradient on one micro-batch at a time and sums them in
float32, so activations are held for ``B / k`` examples only. With equal micro-batch sizes the mean
of the micro-batch means is the global mean: the accumulated gradient equals the large-batch
gradient up to floating-point summation order.

Layout. The batch is split over the mesh's batch axes in contiguous blocks (device ``d`` holds
rows ``[d B/n, (d+1) B/n)``). Micro-batch ``j`` takes rows ``j, j + k, j + 2k, ...``, i.e. the
batch reshaped to ``[B/k, k, ...]`` and transposed: every device then holds ``B / (n k)`` rows of
every micro-batch, so splitting moves no data between devices and every device works on every
micro-batch.

Randomness. Micro-batch ``j`` gets the key ``fold_in(key, j)``. A loss that draws its noise from
the key (flow matching's ``eps`` and ``t``) therefore draws independent noise per micro-batch:
the accumulated step has the same distribution as the large-batch step, not the same value. A loss
whose randomness comes with the batch (or has none, or draws it from per-example keys, see
``make_train_step(example_keys=True)``) gives the same value.

Padding. A batch with a ``"mask"`` entry (bool ``[B]``, False on padding rows) is averaged over its
true rows: ``loss_fn`` must then return the mean over the true rows of what it is given, and the
micro-batches are weighted by their numbers of true rows (:func:`batch_weight`), so the result is
the masked mean of the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, PyTree

LossOf = Callable[[PyTree, Mapping[str, Array], Array], tuple[Array, Mapping[str, Array]]]

MASK_KEY = "mask"


def batch_weight(batch: Mapping[str, Array]) -> Array | None:
    """The number of true rows of ``batch["mask"]`` (float32), or ``None`` without a mask."""
    if MASK_KEY not in batch:
        return None
    return jnp.sum(jnp.asarray(batch[MASK_KEY]).astype(jnp.float32))


def weigh(tree: PyTree, weight: Array | None) -> PyTree:
    """``weight * tree`` (a part with weight 0 counts as 0 even if it is NaN); ``tree`` if None."""
    if weight is None:
        return tree
    return jax.tree.map(lambda x: jnp.where(weight > 0, x, 0) * weight.astype(x.dtype), tree)


def check_microbatch_split(batch: Mapping[str, Array], num_micro: int, n_shards: int) -> None:
    """Raise unless every ``[B, ...]`` array of ``batch`` splits into ``num_micro`` x ``n_shards``.

    Raises:
      ValueError: naming the global batch size, ``grad_accum_steps`` and the device count.
    """
    for name, x in batch.items():
        b = x.shape[0]
        if b % (num_micro * n_shards):
            raise ValueError(
                f"grad_accum_steps={num_micro}: the global batch of {b} examples (batch[{name!r}] "
                f"{x.shape}) does not split into {num_micro} equal micro-batches over "
                f"{n_shards} device(s); the global batch must be a multiple of "
                f"{num_micro * n_shards}"
            )


def split_microbatches(
    batch: Mapping[str, Array],
    num_micro: int,
    *,
    mesh: Mesh | None = None,
    batch_axes: Sequence[str] | None = None,
) -> dict[str, Array]:
    """``[B, ...]`` arrays -> ``[k, B/k, ...]``; micro-batch ``j`` holds rows ``j, j+k, ...``.

    With ``mesh`` and ``batch_axes`` the result is constrained to ``P(None, batch_axes)`` (each
    micro-batch split over the same devices as the batch).

    Raises:
      ValueError: ``B`` is not divisible by ``k`` times the number of devices on the batch axes.
    """
    n_shards = 1
    if mesh is not None and batch_axes:
        for a in batch_axes:
            n_shards *= mesh.shape[a]
    check_microbatch_split(batch, num_micro, n_shards)
    out = {}
    for name, x in batch.items():
        b = x.shape[0]
        y = jnp.swapaxes(x.reshape(b // num_micro, num_micro, *x.shape[1:]), 0, 1)
        if mesh is not None and batch_axes:
            spec = P(None, tuple(batch_axes), *([None] * (x.ndim - 1)))
            y = jax.lax.with_sharding_constraint(y, NamedSharding(mesh, spec))
        out[name] = y
    return out


def accumulate_value_and_grad(
    loss_of: LossOf,
    params: PyTree,
    batch: Mapping[str, Array],
    key: Array,
    num_micro: int,
    *,
    mesh: Mesh | None = None,
    batch_axes: Sequence[str] | None = None,
    varying_axes: Sequence[str] = (),
) -> tuple[tuple[Array, dict[str, Array]], PyTree]:
    """``((loss, aux), grads)`` of the global batch, from ``num_micro`` micro-batches in sequence.

    Args:
      loss_of: ``loss, aux = loss_of(params, micro_batch, key)``, ``loss`` a scalar mean over the
        micro-batch (over its true rows when the batch has a ``"mask"``), ``aux`` a dict of
        scalars.
      params: the parameters (gradients are taken with respect to them).
      batch: dict of global arrays ``[B, ...]``.
      key: the step's key; micro-batch ``j`` uses ``fold_in(key, j)``.
      num_micro: ``k``, the number of micro-batches (``B`` divisible by ``k`` x batch devices).
      mesh, batch_axes: keep each micro-batch split over the batch axes (see
        :func:`split_microbatches`).
      varying_axes: inside ``jax.shard_map``, the mesh axes over which this device's values
        differ (its batch axes): the running sums are typed as varying over them.

    Returns:
      The mean loss (float32), the mean of each aux entry over the micro-batches (float32), and
      the mean gradient, accumulated in float32 and returned in the parameters' dtypes. With a
      ``"mask"``, means weighted by each micro-batch's number of true rows.
    """
    micro = split_microbatches(batch, num_micro, mesh=mesh, batch_axes=batch_axes)
    masked = MASK_KEY in micro
    grad_fn = jax.value_and_grad(loss_of, has_aux=True)

    def f32(tree: PyTree) -> PyTree:
        return jax.tree.map(lambda a: jnp.asarray(a).astype(jnp.float32), tree)

    def zeros(shape: tuple[int, ...]) -> Array:
        z = jnp.zeros(shape, jnp.float32)
        return jax.lax.pcast(z, tuple(varying_axes), to="varying") if varying_axes else z

    # The aux structure is only known after tracing once: evaluate its shape abstractly.
    first = {k: v[0] for k, v in micro.items()}
    (_, aux_shape), _ = jax.eval_shape(grad_fn, params, first, key)
    zero_aux = jax.tree.map(lambda a: zeros(a.shape), dict(aux_shape))
    zero_grads = jax.tree.map(lambda p: zeros(p.shape), params)

    def body(carry, xs):
        loss_sum, aux_sum, grad_sum, weight_sum = carry
        j, mb = xs
        (loss, aux), grads = grad_fn(params, mb, jax.random.fold_in(key, j))
        weight = batch_weight(mb)
        loss_sum = loss_sum + weigh(jnp.asarray(loss).astype(jnp.float32), weight)
        aux_sum = jax.tree.map(jnp.add, aux_sum, weigh(f32(dict(aux)), weight))
        grad_sum = jax.tree.map(jnp.add, grad_sum, weigh(f32(grads), weight))
        if weight is not None:
            weight_sum = weight_sum + weight
        return (loss_sum, aux_sum, grad_sum, weight_sum), None

    init = (zeros(()), zero_aux, zero_grads, zeros(()))
    steps = jnp.arange(num_micro, dtype=jnp.uint32)
    (loss_sum, aux_sum, grad_sum, weight_sum), _ = jax.lax.scan(body, init, (steps, micro))
    scale = 1.0 / weight_sum if masked else jnp.float32(1.0 / num_micro)
    grads = jax.tree.map(lambda g, p: (g * scale).astype(p.dtype), grad_sum, params)
    aux = jax.tree.map(lambda a: a * scale, aux_sum)
    return (loss_sum * scale, aux), grads
