"""Parameter sharding over an ``fsdp`` mesh axis (fully sharded data parallelism, ZeRO-3 style).

On a mesh such as ``{"data": 2, "fsdp": 4}`` the batch is split over both axes (all devices) and
each large array of the train state (parameters, Adam's moments, EMA) is split along one dimension
over ``fsdp``, so a device holds ``1 / fsdp`` of it. Small arrays (biases, norms, scalars, the key)
stay replicated: sharding them would cost more in communication than it saves. The train step is
unchanged: its ``state_sharding`` is the pytree from :func:`fsdp_sharding`. Under
``parallelism="jit"`` the compiler (GSPMD, ``Auto`` mesh axes) gathers each parameter where it is
used and reduce-scatters its gradient; under ``parallelism="shard_map"`` the step does both
explicitly (``all_gather`` / ``psum_scatter`` over ``fsdp``). Either way the update equals the
replicated one up to summation order.

The rule is a function of an array's shape only, so Adam's moments and the EMA get the sharding of
the parameter they belong to.
"""

from __future__ import annotations

import math
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import PyTree

from flowjax.parallel._mesh import FSDP_AXIS

DEFAULT_MIN_SIZE = 2**18  # 256 Ki elements (1 MiB in float32)


def fsdp_spec(shape: tuple[int, ...], n: int, *, axis: str = FSDP_AXIS, min_size: int) -> P:
    """The partition spec of one array: its largest dimension divisible by ``n`` over ``axis``.

    Replicated (``P()``) when ``n == 1``, the array has fewer than ``min_size`` elements, or no
    dimension is divisible by ``n``. Ties go to the last such dimension (a Dense kernel
    ``[in, out]`` of a square layer is split over its outputs).
    """
    if n <= 1 or math.prod(shape) < min_size:
        return P()
    best = None
    for i, size in enumerate(shape):
        if size % n == 0 and (best is None or size >= shape[best]):
            best = i
    if best is None:
        return P()
    return P(*[axis if i == best else None for i in range(len(shape))])


def fsdp_sharding(
    tree: PyTree, mesh: Mesh, *, axis: str = FSDP_AXIS, min_size: int = DEFAULT_MIN_SIZE
) -> PyTree:
    """A pytree of ``NamedSharding`` like ``tree``: large arrays split over ``axis``, others replicated.

    Args:
      tree: the train state (or any pytree) with array or ``jax.ShapeDtypeStruct`` leaves.
      mesh: a mesh with an ``axis`` axis (e.g. ``make_mesh({"data": -1, "fsdp": 4})``).
      axis: the parameter-sharding axis name.
      min_size: arrays with fewer elements stay replicated.

    Returns:
      Shardings for ``flowjax.training.make_train_step(..., state_sharding=...)``; the step then
      places the state (``TrainStep.place_state``) and checkpoints restore into the same layout.

    Raises:
      ValueError: ``mesh`` has no ``axis`` axis, or ``min_size`` is negative.
    """
    if axis not in mesh.axis_names:
        raise ValueError(
            f"fsdp_sharding: the mesh (axes {dict(mesh.shape)}) has no {axis!r} axis; build it with "
            f"make_mesh({{'data': -1, {axis!r}: N}})"
        )
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0; got {min_size}")
    n = mesh.shape[axis]

    def one(leaf: Any) -> NamedSharding:
        return NamedSharding(mesh, fsdp_spec(tuple(leaf.shape), n, axis=axis, min_size=min_size))

    return jax.tree.map(one, tree)


def sharded_fraction(tree: PyTree) -> float:
    """Fraction of the elements of ``tree`` (placed arrays) that are split rather than replicated."""
    total = split = 0
    for leaf in jax.tree.leaves(tree):
        size = math.prod(leaf.shape)
        total += size
        if not leaf.sharding.is_fully_replicated:
            split += size
    return split / total if total else 0.0
