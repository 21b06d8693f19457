"""The training loop: resume, step, log, checkpoint, stop on NaN, save and exit on SIGTERM."""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np
from jaxtyping import Array

from flowjax.parallel import is_primary
from flowjax.training._checkpoint import Checkpointer
from flowjax.training._metrics import MetricWriter
from flowjax.training._state import TrainState, abstract_state

CHECKED_METRICS = ("loss", "grad_norm")

Batch = Mapping[str, Any]
Metrics = Mapping[str, Array]


class StepFn(Protocol):
    """What :func:`train_loop` steps with (a :class:`~flowjax.training.TrainStep`): the update,
    and where the state and each batch go (its shardings)."""

    def __call__(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]: ...

    def place_state(self, state: TrainState) -> TrainState: ...

    def shard_batch(self, batch: Batch) -> Batch: ...


@runtime_checkable
class ResumableIterator(Protocol):
    """A data iterator whose position is checkpointed and restored with the state (e.g. the
    iterators of :func:`flowjax.data.make_iterator`), so a resumed run equals an uninterrupted one."""

    def __next__(self) -> Batch: ...

    def get_state(self) -> dict[str, Any]: ...

    def set_state(self, state: dict[str, Any]) -> None: ...


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


def _batch_size(batch: Batch) -> int:
    return int(np.shape(next(iter(batch.values())))[0])


class _Metrics:
    """The metrics of a run: kept on the devices until :meth:`check` fetches them (stopping on a
    non-finite loss or gradient norm), averaged over each logging window by :meth:`log`."""

    def __init__(self, writer: MetricWriter | None, checkpointer: Checkpointer | None, bar: Any):
        self.writer, self.checkpointer, self.bar = writer, checkpointer, bar
        self.history: list[dict] = []
        self.pending: list[tuple[int, Metrics]] = []
        self.window: list[tuple[int, dict[str, float]]] = []
        self.examples = self.rate_steps = 0  # the compiling first step is left out of the rates
        self.t_window = time.perf_counter()
        self.first_step_s: float | None = None

    def add(self, step: int, metrics: Metrics, batch: Batch, t0: float) -> None:
        """Record a step's metrics (``t0``: when the step was called)."""
        self.pending.append((step, metrics))
        if self.first_step_s is None:
            jax.block_until_ready(metrics)
            self.first_step_s = time.perf_counter() - t0
            self.t_window = time.perf_counter()
        else:
            self.examples += _batch_size(batch)
            self.rate_steps += 1
        if self.bar is not None:
            self.bar.update(1)

    def check(self) -> None:
        """Fetch pending metrics; raise :class:`NonFiniteLossError` on a non-finite one."""
        if not self.pending:
            return
        values = jax.device_get([m for _, m in self.pending])
        for (s, _), vals in zip(self.pending, values, strict=True):
            for name in CHECKED_METRICS:
                v = float(vals[name]) if name in vals else 0.0
                if not math.isfinite(v):
                    self._stop(s, name, v)
            self.window.append((s, {k: float(v) for k, v in vals.items()}))
        self.pending.clear()

    def _stop(self, step: int, name: str, value: float) -> None:
        self.pending.clear()
        ckpt, latest = self.checkpointer, None
        if ckpt is not None:
            ckpt.wait_until_finished()
            latest = ckpt.latest_step()
        if self.writer is not None:
            self.writer.write(step, {name: value})
            self.writer.flush()
        if self.bar is not None:
            self.bar.close()
        raise NonFiniteLossError(step, name, value, latest, ckpt.directory if ckpt else None)

    def log(self) -> None:
        """Check, then write one record of the window's means (rates over the window)."""
        self.check()
        if not self.window:
            return
        now = time.perf_counter()
        record: dict[str, Any] = {"step": self.window[-1][0]}
        for k in self.window[-1][1]:
            vals = [w[k] for _, w in self.window if k in w]
            record[k] = vals[-1] if k == "learning_rate" else float(np.mean(vals))
        dt = now - self.t_window
        if dt > 0 and self.rate_steps:
            record["steps_per_sec"] = self.rate_steps / dt
            record["examples_per_sec"] = self.examples / dt
        if not self.history and self.first_step_s is not None:
            record["first_step_s"] = self.first_step_s
        self.window.clear()
        self.examples, self.rate_steps, self.t_window = 0, 0, now
        self.history.append(record)
        if self.writer is not None:
            self.writer.write(record["step"], {k: v for k, v in record.items() if k != "step"})
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{record.get('loss', float('nan')):.4g}", refresh=False)


def _restore(
    state: TrainState, checkpointer: Checkpointer | None, data_iter: Iterator[Batch]
) -> tuple[TrainState, int | None]:
    """The newest intact checkpoint's state (and data position), or ``state`` unchanged."""
    restored = checkpointer.restore(abstract_state(state)) if checkpointer is not None else None
    if restored is None:
        return state, None
    if restored.data_state is not None:
        if not isinstance(data_iter, ResumableIterator):
            raise TypeError(
                f"checkpoint step {restored.step} holds a data-iterator state but "
                f"{type(data_iter).__name__} has no set_state(); the run cannot resume exactly"
            )
        data_iter.set_state(restored.data_state)
    return restored.state, restored.step


def _save(
    checkpointer: Checkpointer,
    state: TrainState,
    step: int,
    data_iter: Iterator[Batch],
    metadata: dict | None,
) -> None:
    data_state = data_iter.get_state() if isinstance(data_iter, ResumableIterator) else None
    try:
        checkpointer.save(state, data_state=data_state, metadata=metadata, step=step)
    except FloatingPointError as err:
        raise NonFiniteLossError(
            step, "state", float("nan"), checkpointer.latest_step(), checkpointer.directory
        ) from err


def _next_batch(data_iter: Iterator[Batch], step: int, num_steps: int) -> Batch:
    try:
        return next(data_iter)
    except StopIteration:
        raise RuntimeError(
            f"the data iterator was exhausted at step {step} of {num_steps}"
        ) from None


def _progress_bar(progress: bool | None, start_step: int, num_steps: int) -> Any:
    if progress is None:
        progress = is_primary() and num_steps - start_step >= 1000
    if not (progress and num_steps > start_step):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=num_steps, initial=start_step, dynamic_ncols=True, mininterval=1.0)


def train_loop(
    state: TrainState,
    step_fn: StepFn,
    data_iter: Iterator[Batch],
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
      step_fn: ``state, metrics = step_fn(state, batch)`` with its ``place_state`` and
        ``shard_batch`` (:class:`StepFn`: a :class:`TrainStep`).
      data_iter: yields per-process batches (dicts of numpy arrays). A :class:`ResumableIterator`
        (``get_state()``, ``set_state(dict)``) has its position checkpointed and restored, which
        makes a resumed run identical to an uninterrupted one.
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
    state, restored_step = _restore(step_fn.place_state(state), checkpointer, data_iter)
    step = start_step = int(jax.device_get(state.step))
    bar = _progress_bar(progress, start_step, num_steps)
    metrics = _Metrics(writer, checkpointer, bar)
    last_checkpoint = restored_step

    def save() -> None:
        nonlocal last_checkpoint
        if checkpointer is not None:
            metrics.check()
            _save(checkpointer, state, step, data_iter, metadata)
            last_checkpoint = step

    preempted = False
    multi = jax.process_count() > 1
    try:
        with _SignalFlag(tuple(handle_signals) if not multi else ()) as flag:
            while step < num_steps:
                batch = step_fn.shard_batch(_next_batch(data_iter, step, num_steps))
                t0 = time.perf_counter()
                state, step_metrics = step_fn(state, batch)
                step += 1
                metrics.add(step, step_metrics, batch, t0)
                if step % log_every == 0 or step == num_steps:
                    metrics.log()
                if checkpoint_every is not None and step % checkpoint_every == 0:
                    save()
                stop = flag.received is not None
                if not stop and checkpointer is not None and multi:
                    stop = checkpointer.reached_preemption(step)
                if stop and step < num_steps:
                    metrics.log()
                    save()
                    preempted = True
                    break
            metrics.log()
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
        history=metrics.history,
    )
