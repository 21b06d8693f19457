"""The multi-process runtime: joining it (opt-in) and knowing which process writes files.

In a multi-process run every process runs the same program over one mesh that spans every device
of every process (multi-controller JAX). Only process 0 writes logs, figures and summaries
(:func:`is_primary`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax

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


def is_primary() -> bool:
    """Whether this is process 0 (the one that writes logs, figures and summaries). Not collective."""
    return jax.process_index() == 0
