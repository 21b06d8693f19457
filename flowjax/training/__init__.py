"""Training: train state, optimizers, the jitted sharded train step, checkpoints, metrics, loop.

* :func:`make_mesh`, :func:`batch_sharding`, :func:`shard_batch`, :func:`initialize_distributed`:
  devices and data placement (data parallel over a ``data`` axis; room for ``fsdp``).
* :class:`TrainState`, :func:`create_train_state`, :func:`abstract_state`: the state pytree.
* :func:`make_optimizer`, :func:`make_schedule`, :func:`learning_rate`: optax, on a schedule.
* :func:`make_train_step` -> :class:`TrainStep`: one jitted step with explicit shardings, EMA.
* :class:`Checkpointer`: orbax checkpoints of state + data-iterator position, verified on restore.
* :class:`MetricWriter`, :func:`read_jsonl`: stdout, JSONL and TensorBoard metrics.
* :func:`train_loop`: resume, train, log, checkpoint, stop on NaN, save on SIGTERM.
"""

from flowjax.training._checkpoint import (
    Checkpointer,
    CheckpointLayoutError,
    Restored,
    state_layout,
)
from flowjax.training._loop import NonFiniteLossError, TrainResult, train_loop
from flowjax.training._mesh import (
    DATA_AXIS,
    FSDP_AXIS,
    batch_sharding,
    global_batch_size,
    initialize_distributed,
    make_mesh,
    replicated,
    shard_batch,
)
from flowjax.training._metrics import MetricWriter, read_jsonl, read_tensorboard_scalars
from flowjax.training._optim import (
    OPTIMIZERS,
    SCHEDULES,
    learning_rate,
    make_optimizer,
    make_schedule,
)
from flowjax.training._state import (
    TrainState,
    abstract_state,
    audit_state,
    create_train_state,
    state_fingerprint,
)
from flowjax.training._step import TrainStep, ema_decay_at, make_train_step

__all__ = [
    "DATA_AXIS",
    "FSDP_AXIS",
    "OPTIMIZERS",
    "SCHEDULES",
    "CheckpointLayoutError",
    "Checkpointer",
    "MetricWriter",
    "NonFiniteLossError",
    "Restored",
    "TrainResult",
    "TrainState",
    "TrainStep",
    "abstract_state",
    "audit_state",
    "batch_sharding",
    "create_train_state",
    "ema_decay_at",
    "global_batch_size",
    "initialize_distributed",
    "learning_rate",
    "make_mesh",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "read_jsonl",
    "read_tensorboard_scalars",
    "replicated",
    "shard_batch",
    "state_fingerprint",
    "state_layout",
    "train_loop",
]
