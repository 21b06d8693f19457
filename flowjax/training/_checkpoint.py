"""Orbax checkpoints of the train state, the data iterators' positions and metadata.

A checkpoint (one directory per step) holds four items:

* ``state``: the train state (``StandardSave``: sharded arrays, written by all processes together);
* ``data``: each process's data-iterator state as JSON (``process_<i>.json``: in multi-process runs
  every process reads its own shard of the data, so every process saves its own position). A
  checkpoint restores under another process count: a process whose file is missing takes the
  saved state when all saved processes agree on it (``flowjax.data`` iterators store the global
  position, identical on every process);
* ``checksums``: each process's CRC-32 of every shard it holds of every array, and of its data
  state (``process_<i>.json``, see :mod:`flowjax.training._checksum`), with a CRC of the file's
  own content;
* ``meta``: JSON with the step, the state's layout (path, shape and dtype of every array), the
  caller's metadata and a CRC of its own content.

Checkpoints dropped by ``max_to_keep`` are first renamed into ``deleted/`` (one atomic rename,
done by orbax) and removed from there in a background thread: a process killed while deleting
one never leaves a half-deleted step directory that looks like a checkpoint.

Restoring tries the newest step first. A checkpoint that cannot be read, or whose arrays, data
states or metadata do not match their checksums, is moved aside (into ``corrupt/``, never
deleted) with a warning and the previous one is tried: a damaged checkpoint is never loaded. A
checkpoint whose layout differs from the state being restored into is a user error (another
model or optimizer) and raises. Checkpoints written before checksums existed (their metadata has
a ``fingerprint`` list) are loaded with a warning that their arrays are unverified.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from jaxtyping import PyTree
from orbax.checkpoint import options as ocp_options

from flowjax.parallel import is_primary
from flowjax.training._checksum import (
    json_crc32,
    merge_checksums,
    mismatched_leaves,
    state_checksums,
)
from flowjax.training._state import all_finite

FORMAT = 2  # 2: CRC-32 checksums (1: a weak position-weighted sum, no longer written)
DELETED = "deleted"  # dropped checkpoints are renamed into this subdirectory, then removed


class CheckpointLayoutError(ValueError):
    """A checkpoint holds a state of another layout (model, optimizer) than the one restored into."""


@dataclasses.dataclass
class Restored:
    """What :meth:`Checkpointer.restore` returns."""

    state: PyTree
    step: int
    data_state: dict | None
    metadata: dict


def state_layout(state: PyTree) -> list[list]:
    """``[path, shape, dtype]`` of every array of ``state`` (concrete or abstract)."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        out.append([jax.tree_util.keystr(path), list(leaf.shape), str(leaf.dtype)])
    return out


class Checkpointer:
    """Save and restore train states with an orbax ``CheckpointManager`` (asynchronous by default).

    Args:
      directory: where the step directories live (created if missing).
      max_to_keep: keep the newest ``max_to_keep`` checkpoints (``None``: all). Keep at least 2 so
        that a damaged newest checkpoint has a predecessor to fall back to.
      async_save: write in a background thread; ``save`` returns once the arrays are copied off
        the devices, so the train step may donate them right away.

    Every process of a multi-process run must make the same calls.
    """

    def __init__(
        self, directory: str | Path, *, max_to_keep: int | None = 3, async_save: bool = True
    ):
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep}")
        self.directory = epath.Path(directory).absolute()
        self.async_save = async_save
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=True,
            # a rename, not a recursive delete that a kill can interrupt half-way (see _purge)
            todelete_subdir=DELETED,
        )
        handlers = {
            "state": ocp.StandardCheckpointHandler(),
            "data": ocp.JsonCheckpointHandler(
                filename=f"process_{jax.process_index()}.json",
                multiprocessing_options=ocp_options.MultiprocessingOptions(primary_host=None),
            ),
            "checksums": ocp.JsonCheckpointHandler(
                filename=f"process_{jax.process_index()}.json",
                multiprocessing_options=ocp_options.MultiprocessingOptions(primary_host=None),
            ),
            "meta": ocp.JsonCheckpointHandler(),
        }
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=handlers
        )
        self._purger: threading.Thread | None = None
        self._purge()  # what a killed run left in deleted/

    # -- queries ---------------------------------------------------------------------------------

    def all_steps(self) -> list[int]:
        """Steps of the checkpoints on disk (finalised ones only), ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest finalised step, or ``None``."""
        return self._manager.latest_step()

    # -- save ------------------------------------------------------------------------------------

    def save(
        self,
        state: PyTree,
        *,
        data_state: dict | None = None,
        metadata: dict | None = None,
        step: int | None = None,
    ) -> bool:
        """Save ``state`` (and the data iterator's state) as step ``state.step``.

        Returns ``False`` (and writes nothing) if that step is already saved.

        Raises:
          FloatingPointError: the state holds NaN or infinite values (nothing is written).
        """
        if step is None:
            step = int(jax.device_get(state.step))
        if step in self._manager.all_steps():
            return False
        if not all_finite(state):
            raise FloatingPointError(
                f"refusing to save a checkpoint at step {step}: the state holds NaN or infinite "
                "values"
            )
        self._purge(background=True)
        sums = {"arrays": state_checksums(state), "data": json_crc32(data_state)}
        meta = {
            "format": FORMAT,
            "step": step,
            "time": time.time(),
            "process_count": jax.process_count(),
            "layout": state_layout(state),
            "user": metadata or {},
        }
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave({"state": data_state}),
                checksums=ocp.args.JsonSave({**sums, "crc32": json_crc32(sums)}),
                meta=ocp.args.JsonSave({**meta, "crc32": json_crc32(meta)}),
            ),
            force=True,
        )
        return True

    def reached_preemption(self, step: int) -> bool:
        """Whether JAX's preemption notice (multi-process runs) asks every process to stop now."""
        return bool(self._manager.reached_preemption(step))

    def wait_until_finished(self) -> None:
        """Block until asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    # -- restore ---------------------------------------------------------------------------------

    def restore(self, abstract_state: PyTree, step: int | None = None) -> Restored | None:
        """Restore the newest readable checkpoint (or ``step``) into ``abstract_state``'s layout.

        Args:
          abstract_state: ``jax.ShapeDtypeStruct`` leaves with shardings (see ``abstract_state``);
            the restored arrays get those shardings.
          step: restore this step only (default: the newest that is intact).

        Returns:
          ``None`` when there is no intact checkpoint.

        Raises:
          CheckpointLayoutError: the checkpoint's arrays differ in path, shape or dtype from
            ``abstract_state``.
        """
        self.wait_until_finished()
        self._manager.reload()
        steps = [step] if step is not None else sorted(self._manager.all_steps(), reverse=True)
        want = state_layout(abstract_state)
        for s in steps:
            try:
                meta = self._read_meta(s)
                sums = self._read_checksums(s, meta) if "crc32" in meta else None
            except Exception as err:
                self._skip(s, err)
                continue
            if meta["layout"] != want:
                raise CheckpointLayoutError(_layout_diff(meta["layout"], want, s, self.directory))
            try:
                state = self._manager.restore(
                    s, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
                ).state
                if sums is not None:
                    bad = mismatched_leaves(state, sums["arrays"])
                    if bad:
                        names = [want[i][0] for i in bad]
                        raise ValueError(f"arrays differ from their saved checksums: {names[:8]}")
                data_state = self._restore_data(s, sums)
            except Exception as err:
                self._skip(s, err)
                continue
            if sums is None:
                warnings.warn(
                    f"checkpoint step {s} in {self.directory} was written without checksums (an "
                    "older flowjax); its arrays are loaded unverified",
                    stacklevel=2,
                )
            return Restored(state=state, step=s, data_state=data_state, metadata=meta["user"])
        return None

    def _read_meta(self, step: int) -> dict:
        """The step's metadata, checked against its own CRC (raises if damaged or incomplete)."""
        meta = self._manager.restore(
            step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
        ).meta
        if not isinstance(meta, dict):
            raise ValueError("metadata is not a JSON object")
        if "crc32" in meta:
            body = {k: v for k, v in meta.items() if k != "crc32"}
            if json_crc32(body) != meta["crc32"]:
                raise ValueError("metadata differs from its checksum")
            if body.get("format") != FORMAT:
                raise ValueError(f"unknown checkpoint format {body.get('format')!r}")
        elif "fingerprint" not in meta:  # neither this format nor the one before checksums
            raise ValueError("metadata is incomplete")
        if meta.get("step") != step or "layout" not in meta or "user" not in meta:
            raise ValueError("metadata is incomplete")
        return meta

    def _read_checksums(self, step: int, meta: dict) -> dict:
        """Every saving process's checksums and data state, each checked against its CRC.

        Read directly (not collective); every process reads every file, so all processes reach
        the same verdict. Returns ``{"arrays": merged shard checksums, "data": {process index:
        data-iterator state}}``.
        """
        root = self.directory / str(step)
        arrays, data = [], {}
        for index in range(meta["process_count"]):
            f = root / "checksums" / f"process_{index}.json"
            if not f.exists():
                raise ValueError(
                    f"the checksums of process {index} are missing (the checkpoint was written "
                    f"by {meta['process_count']} process(es))"
                )
            content = json.loads(f.read_text())
            body = {k: v for k, v in content.items() if k != "crc32"}
            if "crc32" not in content or json_crc32(body) != content["crc32"]:
                raise ValueError(f"checksums/{f.name} differs from its own checksum")
            arrays.append(body["arrays"])
            state = json.loads((root / "data" / f"process_{index}.json").read_text())["state"]
            if json_crc32(state) != body["data"]:
                raise ValueError(f"data/process_{index}.json differs from its checksum")
            data[index] = state
        return {"arrays": merge_checksums(arrays), "data": data}

    def _restore_data(self, step: int, sums: dict | None) -> dict | None:
        """This process's data-iterator state (verified in ``sums``; else read from its file).

        The files are read directly, not through orbax: orbax's restore ends with a barrier over
        all processes, and a process whose file is missing (the checkpoint was written by another
        number of processes) would fail before reaching it and leave the others waiting.
        """
        if sums is not None:
            states = sums["data"]
        else:  # written before checksums existed
            folder = self.directory / str(step) / "data"
            states = {}
            for f in sorted(folder.glob("process_*.json")) if folder.exists() else []:
                try:
                    states[int(f.stem[len("process_") :])] = json.loads(f.read_text())["state"]
                except (OSError, ValueError, KeyError, TypeError):
                    continue
        if jax.process_index() in states:
            return states[jax.process_index()]
        # Written by another number of processes: flowjax.data iterators save the same global
        # position on every process, so any process's file serves when all agree.
        values = list(states.values())
        if values and all(v == values[0] for v in values):
            return values[0]
        why = (
            "the saved processes' iterator states differ"
            if values
            else "it holds no data-iterator state"
        )
        warnings.warn(
            f"checkpoint step {step} in {self.directory} has no data-iterator state for process "
            f"{jax.process_index()} (written by another number of processes) and {why}; the "
            "data iterator starts from its own initial state",
            stacklevel=3,
        )
        return None

    def _skip(self, step: int, err: Exception) -> None:
        dest = self.directory / "corrupt" / f"{step}-{int(time.time())}"
        warnings.warn(
            f"checkpoint step {step} in {self.directory} is unreadable or corrupt "
            f"({type(err).__name__}: {str(err)[:300]}); skipping it and moving it to {dest}",
            stacklevel=3,
        )
        src = self.directory / str(step)
        if is_primary() and src.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            src.rename(dest)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"flowjax_skip_checkpoint_{step}")
        self._manager.reload()

    # -- lifetime --------------------------------------------------------------------------------

    def _purge(self, background: bool = False) -> None:
        """Remove the checkpoints that orbax moved into ``deleted/`` (primary process only).

        Orbax renames a checkpoint dropped by ``max_to_keep`` into ``deleted/<step>`` (atomic) in
        its finalising thread; removing it from there can be interrupted at any point without
        leaving a step directory that lists as a checkpoint. ``background``: in a thread (one at
        a time), so that the train loop does not wait for a large checkpoint's deletion.
        """
        if not is_primary():
            return
        if self._purger is not None:
            if self._purger.is_alive():
                if background:
                    return  # the running purge, or the next one, takes the rest
                self._purger.join()
            self._purger = None
        folder = self.directory / DELETED

        def purge() -> None:
            try:
                entries = list(folder.iterdir()) if folder.exists() else []
            except OSError:
                return
            for entry in entries:
                try:
                    entry.rmtree() if entry.is_dir() else entry.unlink()
                except OSError as err:  # retried at the next save or start
                    warnings.warn(f"could not remove {entry}: {err}", stacklevel=1)

        if background:
            self._purger = threading.Thread(target=purge, name="flowjax-purge", daemon=True)
            self._purger.start()
        else:
            purge()

    def close(self) -> None:
        """Finish pending saves and deletions, and release the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
        self._purge()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _layout_diff(saved: list, want: list, step: int, directory: Any) -> str:
    saved_d = {p: (s, d) for p, s, d in saved}
    want_d = {p: (s, d) for p, s, d in want}
    diffs = []
    for p in sorted(set(saved_d) | set(want_d)):
        a, b = saved_d.get(p), want_d.get(p)
        if a != b:
            diffs.append(f"{p}: checkpoint {a}, state {b}")
    return (
        f"checkpoint step {step} in {directory} does not match the state being restored "
        f"(another model or optimizer?); {len(diffs)} difference(s): " + "; ".join(diffs[:8])
    )
