"""Device mesh, shardings, batch placement and the (opt-in) multi-process runtime.

Data parallelism is ``jax.jit`` over a mesh whose ``data`` axis splits the global batch across all
devices; parameters are replicated by default. Room is left for parameter sharding: a mesh may have
more axes (e.g. ``{"data": -1, "fsdp": 2}``), the batch is split over every *batch axis* (all mesh
axes unless told otherwise) and the state's shardings are passed in, never assumed.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"


ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from None


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: int | Sequence[int] | None = None,
    cpu_collectives: str | None = "gloo",
    initialization_timeout: int = 300,
    heartbeat_timeout_seconds: int | None = None,
    shutdown_timeout_seconds: int | None = None,
    cluster_detection_method: str | None = None,
) -> None:
    """Join JAX's multi-controller runtime (``jax.distributed.initialize``); never called implicitly.

    Call it once per process, before any other JAX computation (importing flowjax is fine: it
    creates no arrays). Every process then sees every device of every process in
    ``jax.devices()``, and :func:`make_mesh` spans them all.

    Where the three numbers come from, in order: the arguments; the environment variables
    ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0, read by JAX itself),
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``; JAX's cluster auto-detection (Cloud TPU pod
    slices, SLURM, Open MPI, Kubernetes), which fills in whatever is still missing. On a TPU pod
    slice or under ``srun`` nothing needs to be given.

    Args:
      coordinator_address: ``host:port`` of process 0 (it runs the coordination service there).
      num_processes: the number of processes.
      process_id: this process's index in ``[0, num_processes)``.
      local_device_ids: the local devices this process uses (e.g. one GPU per process).
      cpu_collectives: collectives implementation for CPU devices (``"gloo"``, ``"mpi"``, or
        ``None`` to leave JAX's setting): with it, several processes on one machine (tests) or
        several CPU hosts form one mesh.
      initialization_timeout: seconds to wait for all processes to connect.
      heartbeat_timeout_seconds: a process that has sent no heartbeat for this long is declared
        dead, and then every other process is terminated with a message naming it (JAX's
        default: 100 s). This bounds how long survivors wait when a process dies or hangs.
      shutdown_timeout_seconds: how long a finishing process waits for the others at exit.
      cluster_detection_method: force one of JAX's cluster detectors (e.g. ``"mpi4py"``) or
        ``"deactivate"`` auto-detection.

    Raises:
      RuntimeError: JAX's backend was already started (an array was created or ``jax.devices()``
        called before this), or the runtime is already initialised.
      ValueError: ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` are not integers, or the arguments
        are inconsistent.
    """
    if num_processes is None:
        num_processes = _env_int(ENV_NUM_PROCESSES)
    if process_id is None:
        process_id = _env_int(ENV_PROCESS_ID)
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    kwargs: dict[str, Any] = {}
    if heartbeat_timeout_seconds is not None:
        kwargs["heartbeat_timeout_seconds"] = int(heartbeat_timeout_seconds)
    if shutdown_timeout_seconds is not None:
        kwargs["shutdown_timeout_seconds"] = int(shutdown_timeout_seconds)
    if cluster_detection_method is not None:
        kwargs["cluster_detection_method"] = cluster_detection_method
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout,
        **kwargs,
    )


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
    """The mesh axes that split the batch by default: all of them (data and, later, fsdp)."""
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


@functools.lru_cache(maxsize=64)
def _batch_layout(sharding: NamedSharding) -> tuple[int, int]:
    """(number of batch shards over all devices, number of distinct shards this process holds)."""
    mesh = sharding.mesh
    spec0 = sharding.spec[0] if len(sharding.spec) else None
    axes = () if spec0 is None else ((spec0,) if isinstance(spec0, str) else tuple(spec0))
    n_shards = math.prod(mesh.shape[a] for a in axes)
    idx = [mesh.axis_names.index(a) for a in axes]
    local = set()
    me = jax.process_index()
    for coords in np.ndindex(mesh.devices.shape):
        if mesh.devices[coords].process_index == me:
            local.add(tuple(coords[i] for i in idx))
    return n_shards, max(len(local), 1)


def global_batch_size(local_size: int, sharding: NamedSharding) -> int:
    """The global batch size that ``local_size`` examples per process make under ``sharding``."""
    n_shards, n_local = _batch_layout(sharding)
    return local_size * n_shards // n_local


def shard_batch(batch: Mapping[str, Any], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assemble a global batch from this process's examples (``jax.make_array_from_process_local_data``).

    Args:
      batch: dict of arrays ``[B_local, ...]`` (numpy, the per-process part of the global batch)
        or of ``jax.Array`` ``[B, ...]`` already global (re-placed with ``jax.device_put`` if their
        sharding differs).
      sharding: the batch sharding (see :func:`batch_sharding`).

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
    n_shards, n_local = _batch_layout(sharding)
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
