"""Explicit collectives for code inside ``jax.shard_map``, and layout-free per-example keys.

Inside ``jax.shard_map`` (with its default ``check_vma=True``) every value is typed as *invariant*
(the same on every device of a mesh axis) or *varying*. Two consequences shape these helpers:

* the gradient of a per-device loss with respect to an invariant (replicated) parameter is
  already summed over the devices by autodiff (the transpose of the implicit cast to varying), so
  a ``pmean`` of it is ``N`` times the mean gradient. :func:`to_varying` casts the parameters to
  varying *before* differentiation: the gradient is then the device's own, and the one sum over
  the devices is the explicit :func:`reduce_to_specs`.
* a parameter split over an axis (``fsdp``) enters as its local block; :func:`gather_from_specs`
  all-gathers it to its full value, and :func:`reduce_to_specs` reduce-scatters its gradient back
  onto the block (``psum_scatter``) and sums it over the remaining axes (``psum``).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Int, PyTree


def spec_axes(spec: P) -> list[tuple[int, tuple[str, ...]]]:
    """``(dimension, mesh axes)`` for every dimension that ``spec`` splits."""
    out = []
    for dim, entry in enumerate(spec):
        if entry is None:
            continue
        out.append((dim, (entry,) if isinstance(entry, str) else tuple(entry)))
    return out


def gather_from_specs(tree: PyTree, specs: PyTree) -> PyTree:
    """Each leaf's full value from its local block: ``all_gather`` over the axes its spec splits.

    Args:
      tree: local blocks (inside ``shard_map``) of arrays laid out as ``specs``.
      specs: a ``PartitionSpec`` per leaf of ``tree`` (``P()``: replicated, returned as is).
    """

    def one(x: Array, spec: P) -> Array:
        for dim, axes in spec_axes(spec):
            x = jax.lax.all_gather(x, axes, axis=dim, tiled=True)
        return x

    return jax.tree.map(one, tree, specs, is_leaf=lambda s: isinstance(s, P))


def to_varying(tree: PyTree, specs: PyTree, axes: Sequence[str]) -> PyTree:
    """Cast each leaf to *varying* over ``axes`` (those its spec does not split already).

    Differentiating with respect to the result gives each device the gradient of its own loss:
    no implicit sum over the devices (see the module docstring).
    """

    def one(x: Array, spec: P) -> Array:
        split = {a for _, names in spec_axes(spec) for a in names}
        missing = tuple(a for a in axes if a not in split)
        return jax.lax.pcast(x, missing, to="varying") if missing else x

    return jax.tree.map(one, tree, specs, is_leaf=lambda s: isinstance(s, P))


def reduce_to_specs(tree: PyTree, specs: PyTree, axes: Sequence[str]) -> PyTree:
    """The sum over the devices of ``axes`` of full-size per-device values, laid out as ``specs``.

    A leaf whose spec splits it over some of ``axes`` is reduce-scattered over those
    (``psum_scatter``: each device keeps the sum of its block) and summed over the others
    (``psum``); a replicated leaf is summed over all of ``axes``. Every spec axis must be in
    ``axes``.
    """

    def one(x: Array, spec: P) -> Array:
        scattered: set[str] = set()
        for dim, names in spec_axes(spec):
            x = jax.lax.psum_scatter(x, names, scatter_dimension=dim, tiled=True)
            scattered.update(names)
        rest = tuple(a for a in axes if a not in scattered)
        return jax.lax.psum(x, rest) if rest else x

    return jax.tree.map(one, tree, specs, is_leaf=lambda s: isinstance(s, P))


def example_keys(key: Array, index: Int[Array, " n"]) -> Array:
    """One PRNG key per example: ``fold_in(key, index[i])``, ``[n, 2]`` for a raw key.

    With ``index`` the examples' positions in the *global* batch, the keys (and everything drawn
    from them) depend on the global example index only: not on how many devices share the batch,
    how it is split into micro-batches, or whether the step runs under ``jit`` or ``shard_map``.
    """
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.asarray(index))
