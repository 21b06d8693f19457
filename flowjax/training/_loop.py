"""The training loop: resume, step, log, checkpoint, stop on NaN, save and exit on SIGTERM."""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
from jaxtyping import Array

from flowjax.parallel import is_primary
from flowjax.training._checkpoint import Checkpointer
from flowjax.training._metrics import MetricWriter
from flowjax.training._state import TrainState, abstract_state

CHECKED_METRICS = ("loss", "grad_norm")


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss (or gradient norm); the run stopped.

    Attributes:
      step: the step whose metrics were not finite (1-based: the state after ``step`` updates).
      metric: ``"loss"`` or ``"grad_norm"``.
      value: the offending value.
      last_checkpoint: the newest checkpoint on disk (written before the NaN), or ``None``.
    """

    def __init__(self, step: int, metric: str, value: float, last_checkpoint: int | None, where):
        self.step, self.metric, self.value, self.last_checkpoint = (
            step,
            metric,
            value,
            last_checkpoint,
        )
        kept = (
            f"the last good checkpoint, step {last_checkpoint} in {where}, is kept"
            if last_checkpoint is not None
            else "no checkpoint was written"
        )
        super().__init__(
            f"non-finite {metric} ({value}) at step {step}; training stopped and nothing after "
            f"step {step - 1} was saved; {kept}"
        )


class DistributedFailureError(RuntimeError):
    """A computation across processes failed: another process died or hung (multi-process runs).

    JAX's distributed runtime also terminates every process once the dead process misses its
    heartbeats (``initialize_distributed(heartbeat_timeout_seconds=...)``), so a run never waits
    forever; whichever comes first ends this process. Restart all processes with the same command
    to resume from the newest intact checkpoint.

    Attributes:
      step: the number of steps completed by this process when the failure surfaced.
      last_checkpoint: the newest checkpoint step this run restored or started writing (``None``:
        none); the restart resumes from it or from an older intact one.
    """

    def __init__(self, step: int, last_checkpoint: int | None, where: Any, cause: BaseException):
        self.step, self.last_checkpoint = step, last_checkpoint
        resume = (
            f"restart all {jax.process_count()} processes with the same command to resume from "
            f"checkpoint step {last_checkpoint} in {where} (or the newest intact one)"
            if last_checkpoint is not None
            else "no checkpoint was written; a restart begins from step 0"
        )
        super().__init__(
            f"training failed after step {step} in a computation across the "
            f"{jax.process_count()} processes: another process has probably died or hung "
            f"({type(cause).__name__}: {str(cause).splitlines()[0][:300]}); {resume}"
        )


@dataclasses.dataclass
class TrainResult:
    """What :func:`train_loop` returns.

    Attributes:
      state: the final train state.
      step: its step.
      start_step: the step the loop started from (after restoring a checkpoint).
      restored_step: the checkpoint step restored, or ``None`` for a fresh start.
      preempted: stopped early by a signal (after saving).
      history: the records logged (each a dict with ``step`` and the metrics).
    """

    state: TrainState
    step: int
    start_step: int
    restored_step: int | None
    preempted: bool
    history: list[dict]


class _SignalFlag:
    """Set by the handled signals while the loop runs; the previous handlers come back after."""

    def __init__(self, signals: tuple[int, ...]):
        self.received: int | None = None
        self._signals = signals if threading.current_thread() is threading.main_thread() else ()
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _SignalFlag:
        for sig in self._signals:
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _batch_size(batch: Mapping[str, Any]) -> int:
    return int(np.shape(next(iter(batch.values())))[0])


def train_loop(
    state: TrainState,
    step_fn: Callable[[TrainState, Mapping[str, Any]], tuple[TrainState, Mapping[str, Array]]],
    data_iter: Iterator[Mapping[str, Any]],
    *,
    num_steps: int,
    checkpointer: Checkpointer | None = None,
    writer: MetricWriter | None = None,
    log_every: int = 100,
    checkpoint_every: int | None = None,
    progress: bool | None = None,
    handle_signals: tuple[int, ...] = (signal.SIGTERM,),
    exit_on_signal: bool = True,
    metadata: dict | None = None,
) -> TrainResult:
    """Train until ``state.step == num_steps``, resuming from the newest intact checkpoint.

    Args:
      state: a freshly initialised state (also the template that checkpoints restore into, with
        its shardings); it is replaced by the newest checkpoint in ``checkpointer`` if there is one.
      step_fn: ``state, metrics = step_fn(state, batch)``, e.g. a :class:`TrainStep`.
      data_iter: yields per-process batches (dicts of numpy arrays). If it has ``get_state()`` and
        ``set_state(dict)``, its position is checkpointed and restored, which makes a resumed run
        identical to an uninterrupted one.
      num_steps: the total number of steps of the run (not of this call).
      checkpointer: where to save (``None``: no checkpoints).
      writer: where metrics go (``None``: nowhere; see :class:`MetricWriter`).
      log_every: fetch, check and log metrics every this many steps (and at the end). Metrics stay
        on the devices in between, so the host does not wait for each step.
      checkpoint_every: save every this many steps (``None``: only at the end). Checkpoints are
        also written at the end and when a handled signal arrives.
      progress: show a tqdm bar (default: on process 0 for loops of 1000 steps or more).
      handle_signals: signals that make the loop save and stop after the current step (SIGTERM:
        preemption). Installed from the main thread of a single-process run only: in a
        multi-process run a signal reaches one process, and all must save together, so the loop
        asks JAX's preemption sync point (``jax.distributed``'s SIGTERM notifier, through orbax's
        ``reached_preemption``) at every step instead.
      exit_on_signal: after such a save, ``raise SystemExit(0)`` (a clean exit); else return with
        ``preempted=True``.
      metadata: JSON-serialisable dict stored with every checkpoint.

    Logged per record: the means over the window of ``loss``, ``grad_norm`` and the loss's aux
    metrics, the last ``learning_rate``, ``steps_per_sec`` and ``examples_per_sec`` (the first step
    of a call, which compiles, is left out of the rates).

    Multi-process runs: every process calls ``train_loop`` with its own ``data_iter`` (its part
    of each global batch); the step, checkpoints (written by all processes together) and
    preemption stops are collective; only process 0 writes metrics (:class:`MetricWriter`).

    Raises:
      NonFiniteLossError: a step's loss or gradient norm was NaN or infinite (names the step;
        nothing from that step on is saved, the checkpoints already on disk stay).
      DistributedFailureError: multi-process runs: a collective failed because another process
        died or hung (names the checkpoint a restart resumes from).
    """
    if num_steps < 0 or log_every < 1 or (checkpoint_every is not None and checkpoint_every < 1):
        raise ValueError(
            f"need num_steps >= 0, log_every >= 1, checkpoint_every >= 1 or None; got "
            f"{num_steps}, {log_every}, {checkpoint_every}"
        )
    place = getattr(step_fn, "place_state", None)
    if place is not None:
        state = place(state)
    restored_step = None
    if checkpointer is not None:
        restored = checkpointer.restore(abstract_state(state))
        if restored is not None:
            state, restored_step = restored.state, restored.step
            if restored.data_state is not None:
                if not hasattr(data_iter, "set_state"):
                    raise TypeError(
                        f"checkpoint step {restored.step} holds a data-iterator state but "
                        f"{type(data_iter).__name__} has no set_state(); the run cannot resume "
                        "exactly"
                    )
                data_iter.set_state(restored.data_state)
    step = start_step = int(jax.device_get(state.step))
    shard = getattr(step_fn, "shard_batch", None)
    history: list[dict] = []
    pending: list[tuple[int, Mapping[str, Array]]] = []
    window: list[tuple[int, dict[str, float]]] = []
    examples = rate_steps = 0  # the compiling first step of a call is left out of the rates
    t_window = time.perf_counter()
    first_step_s = None

    if progress is None:
        progress = is_primary() and num_steps - start_step >= 1000
    bar = None
    if progress and num_steps > start_step:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, initial=start_step, dynamic_ncols=True, mininterval=1.0)

    def check() -> None:
        """Fetch pending metrics, stop on a non-finite loss or gradient norm."""
        if not pending:
            return
        values = jax.device_get([m for _, m in pending])
        for (s, _), vals in zip(pending, values, strict=True):
            for name in CHECKED_METRICS:
                v = float(vals[name]) if name in vals else 0.0
                if not math.isfinite(v):
                    pending.clear()
                    latest = None
                    if checkpointer is not None:
                        checkpointer.wait_until_finished()
                        latest = checkpointer.latest_step()
                    if writer is not None:
                        writer.write(s, {name: v})
                        writer.flush()
                    if bar is not None:
                        bar.close()
                    raise NonFiniteLossError(
                        s, name, v, latest, checkpointer.directory if checkpointer else None
                    )
            window.append((s, {k: float(v) for k, v in vals.items()}))
        pending.clear()

    def log() -> None:
        nonlocal examples, rate_steps, t_window
        check()
        if not window:
            return
        now = time.perf_counter()
        record: dict[str, Any] = {"step": window[-1][0]}
        for k in window[-1][1]:
            vals = [w[k] for _, w in window if k in w]
            record[k] = vals[-1] if k == "learning_rate" else float(np.mean(vals))
        dt = now - t_window
        if dt > 0 and rate_steps:
            record["steps_per_sec"] = rate_steps / dt
            record["examples_per_sec"] = examples / dt
        if not history and first_step_s is not None:
            record["first_step_s"] = first_step_s
        window.clear()
        examples, rate_steps, t_window = 0, 0, now
        history.append(record)
        if writer is not None:
            writer.write(record["step"], {k: v for k, v in record.items() if k != "step"})
        if bar is not None:
            bar.set_postfix(loss=f"{record.get('loss', float('nan')):.4g}", refresh=False)

    last_checkpoint = restored_step

    def save() -> None:
        nonlocal last_checkpoint
        if checkpointer is None:
            return
        check()
        get_state = getattr(data_iter, "get_state", None)
        try:
            checkpointer.save(
                state,
                data_state=get_state() if get_state is not None else None,
                metadata=metadata,
                step=step,
            )
        except FloatingPointError as err:
            raise NonFiniteLossError(
                step, "state", float("nan"), checkpointer.latest_step(), checkpointer.directory
            ) from err
        last_checkpoint = step

    preempted = False
    multi = jax.process_count() > 1
    try:
        signals = tuple(handle_signals) if not multi else ()
        with _SignalFlag(signals) as flag:
            while step < num_steps:
                try:
                    batch = next(data_iter)
                except StopIteration:
                    raise RuntimeError(
                        f"the data iterator was exhausted at step {step} of {num_steps}"
                    ) from None
                if shard is not None:
                    batch = shard(batch)
                t0 = time.perf_counter()
                state, metrics = step_fn(state, batch)
                step += 1
                pending.append((step, metrics))
                if first_step_s is None:
                    jax.block_until_ready(metrics)
                    first_step_s = time.perf_counter() - t0
                    t_window = time.perf_counter()
                else:
                    examples += _batch_size(batch)
                    rate_steps += 1
                if bar is not None:
                    bar.update(1)
                if step % log_every == 0 or step == num_steps:
                    log()
                if checkpoint_every is not None and step % checkpoint_every == 0:
                    save()
                stop = flag.received is not None
                if not stop and checkpointer is not None and jax.process_count() > 1:
                    stop = checkpointer.reached_preemption(step)
                if stop and step < num_steps:
                    log()
                    save()
                    preempted = True
                    break
            log()
            save()
            if checkpointer is not None:
                checkpointer.wait_until_finished()
            if writer is not None:
                writer.flush()
    except jax.errors.JaxRuntimeError as err:
        if not multi:
            raise
        raise DistributedFailureError(
            step, last_checkpoint, checkpointer.directory if checkpointer else None, err
        ) from err
    finally:
        if bar is not None:
            bar.close()
    if preempted and exit_on_signal:
        raise SystemExit(0)
    return TrainResult(
        state=state,
        step=step,
        start_step=start_step,
        restored_step=restored_step,
        preempted=preempted,
        history=history,
    )
