"""Training: train state, optimizers, the sharded train step, checkpoints, metrics, loop.

Devices, meshes and data placement live in :mod:`flowjax.parallel`; the names that training code
uses most (:func:`make_mesh`, :func:`shard_batch`, :func:`fsdp_sharding`, ...) are re-exported here.

* :class:`TrainState`, :func:`create_train_state`, :func:`abstract_state`: the state pytree.
* :func:`make_optimizer`, :func:`make_schedule`, :func:`learning_rate`: optax, on a schedule.
* :func:`make_train_step` -> :class:`TrainStep`: one jitted step with explicit shardings, EMA;
  ``parallelism="jit"`` (the compiler partitions it) or ``"shard_map"`` (per-device gradients
  averaged with explicit collectives).
* :class:`Checkpointer`: orbax checkpoints of state + data-iterator position, verified on restore
  against CRC-32 checksums of every shard (:func:`state_checksums`, :func:`state_fingerprint`).
* :class:`MetricWriter`, :func:`read_jsonl`: stdout, JSONL and TensorBoard metrics.
* :func:`train_loop`: resume, train, log, checkpoint, stop on NaN, save on SIGTERM; over a
  :class:`StepFn` (a :class:`TrainStep`) and a data iterator (a :class:`ResumableIterator` resumes
  exactly).

Scale (large models and batches, many processes):

* :func:`with_precision`, :func:`check_param_dtype`: bfloat16 computation, float32 parameters.
* :func:`remat_loss` (or ``make_train_step(remat=...)``): activation rematerialisation.
* ``make_train_step(grad_accum_steps=k)`` (:func:`accumulate_value_and_grad`): micro-batches.
* :func:`fsdp_sharding`: parameters and optimizer state split over an ``fsdp`` mesh axis.
* :class:`DistributedFailureError`: a collective failed in a multi-process run.
"""

from flowjax.parallel import (  # re-exported: their home is flowjax.parallel
    DATA_AXIS,
    FSDP_AXIS,
    batch_sharding,
    fsdp_sharding,
    fsdp_spec,
    global_batch_size,
    initialize_distributed,
    make_mesh,
    replicated,
    shard_batch,
    sharded_fraction,
)
from flowjax.training._accumulate import accumulate_value_and_grad, split_microbatches
from flowjax.training._checkpoint import (
    Checkpointer,
    CheckpointLayoutError,
    Restored,
    state_layout,
)
from flowjax.training._checksum import state_checksums, state_fingerprint
from flowjax.training._loop import (
    DistributedFailureError,
    NonFiniteLossError,
    ResumableIterator,
    StepFn,
    TrainResult,
    train_loop,
)
from flowjax.training._metrics import MetricWriter, read_jsonl, read_tensorboard_scalars
from flowjax.training._optim import (
    OPTIMIZERS,
    SCHEDULES,
    learning_rate,
    make_optimizer,
    make_schedule,
)
from flowjax.training._precision import (
    PRECISIONS,
    check_param_dtype,
    compute_dtype,
    with_precision,
)
from flowjax.training._remat import REMAT_POLICIES, remat_loss
from flowjax.training._state import (
    TrainState,
    abstract_state,
    all_finite,
    create_train_state,
)
from flowjax.training._step import (
    EXAMPLE_KEY,
    PARALLELISMS,
    TrainStep,
    ema_decay_at,
    make_train_step,
)

__all__ = [
    "DATA_AXIS",
    "EXAMPLE_KEY",
    "FSDP_AXIS",
    "OPTIMIZERS",
    "PARALLELISMS",
    "PRECISIONS",
    "REMAT_POLICIES",
    "SCHEDULES",
    "CheckpointLayoutError",
    "Checkpointer",
    "DistributedFailureError",
    "MetricWriter",
    "NonFiniteLossError",
    "Restored",
    "ResumableIterator",
    "StepFn",
    "TrainResult",
    "TrainState",
    "TrainStep",
    "abstract_state",
    "accumulate_value_and_grad",
    "all_finite",
    "batch_sharding",
    "check_param_dtype",
    "compute_dtype",
    "create_train_state",
    "ema_decay_at",
    "fsdp_sharding",
    "fsdp_spec",
    "global_batch_size",
    "initialize_distributed",
    "learning_rate",
    "make_mesh",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "read_jsonl",
    "read_tensorboard_scalars",
    "remat_loss",
    "replicated",
    "shard_batch",
    "sharded_fraction",
    "split_microbatches",
    "state_checksums",
    "state_fingerprint",
    "state_layout",
    "train_loop",
    "with_precision",
]
