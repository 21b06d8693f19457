"""Device meshes and the shardings of a batch and of replicated values.

Data parallelism is ``jax.jit`` (or ``jax.shard_map``) over a mesh whose ``data`` axis splits the
global batch across all devices; parameters are replicated by default. A mesh may have more axes
(e.g. ``{"data": -1, "fsdp": 2}``): the batch is split over every *batch axis* (all mesh axes
unless told otherwise) and parameter shardings are passed in, never assumed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"


def make_mesh(
    shape: Mapping[str, int] | None = None,
    *,
    devices: Sequence[Any] | None = None,
    axis_types: Sequence[Any] | None = None,
) -> Mesh:
    """A mesh over ``devices`` (default: every device of every process).

    Args:
      shape: axis name -> size, in order; one size may be ``-1`` (inferred). Default
        ``{"data": -1}``: pure data parallelism over all devices.
      devices: the devices to use (default ``jax.devices()``).
      axis_types: ``jax.sharding.AxisType`` per axis; default ``Auto`` for every axis (shardings
        inside the step are propagated by the compiler, so loss functions need no annotations).
    """
    shape = dict(shape) if shape is not None else {DATA_AXIS: -1}
    if not shape:
        raise ValueError("shape must name at least one mesh axis, e.g. {'data': -1}")
    devices = list(devices) if devices is not None else jax.devices()
    n = len(devices)
    sizes = list(shape.values())
    if sum(s == -1 for s in sizes) > 1:
        raise ValueError(f"at most one mesh axis size may be -1; got shape {shape}")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh axis sizes must be positive (or -1); got shape {shape}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if n % known:
            raise ValueError(
                f"mesh shape {shape}: {n} devices are not divisible by the fixed axes' size {known}"
            )
        sizes = [n // known if s == -1 else s for s in sizes]
    if math.prod(sizes) != n:
        raise ValueError(
            f"mesh shape {dict(zip(shape, sizes, strict=True))} needs {math.prod(sizes)} devices; "
            f"{n} are available"
        )
    if axis_types is None:
        axis_types = (jax.sharding.AxisType.Auto,) * len(sizes)
    return jax.make_mesh(tuple(sizes), tuple(shape), tuple(axis_types), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    """A sharding that puts a full copy on every device of ``mesh``."""
    return NamedSharding(mesh, P())


def default_batch_axes(mesh: Mesh) -> tuple[str, ...]:
    """The mesh axes that split the batch by default: all of them (``data`` and ``fsdp``)."""
    return tuple(mesh.axis_names)


def batch_sharding(mesh: Mesh, batch_axes: Sequence[str] | None = None) -> NamedSharding:
    """Split the leading (batch) axis over ``batch_axes`` (default: every mesh axis)."""
    axes = tuple(batch_axes) if batch_axes is not None else default_batch_axes(mesh)
    unknown = [a for a in axes if a not in mesh.axis_names]
    if unknown:
        raise ValueError(
            f"batch_axes {axes} name axes {unknown} that the mesh (axes {mesh.axis_names}) lacks"
        )
    return NamedSharding(mesh, P(axes))
