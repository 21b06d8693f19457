"""Chaos test of training: kill the experiments' training anywhere, restart it, and compare.

A driver (this test) launches ``python -m experiments.main --mode=train`` on a small 8-Gaussians
run and kills it at random moments, three kinds in turn: while it restores and compiles (just
after its "training" line), while an asynchronous checkpoint is being written (as soon as orbax's
temporary directory appears) and while it steps (a random delay). After every kill each
checkpoint left on disk is restored and compared bit for bit with the checkpoint of the same step
of an uninterrupted reference run: none may load with other contents.
Each run goes on until it finishes; its final state must equal the reference's bit for bit. The
same with SIGTERM, where the run must save the current step and exit with status 0.

Restarts share a JAX compilation cache, so each costs an interpreter start, not a compilation.
"""

from __future__ import annotations

import ast
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import train as xt
from experiments.configs import default
from flowjax import models as M
from flowjax import training as T

ROOT = Path(__file__).resolve().parents[1]
NUM_STEPS = 200
OVERRIDES = {
    "training.num_steps": NUM_STEPS,
    "training.batch_size": 64,
    "training.checkpoint_every": 10,
    "training.log_every": 50,
    "training.tensorboard": False,
    "model.mlp.hidden": "(32,32)",
}
KILLS, TERMS = 21, 6  # SIGKILLs (7 of each kind) and SIGTERMs

pytestmark = pytest.mark.slow


def _config(**extra):
    cfg = default.get_config("local")
    for key, value in {**OVERRIDES, **extra}.items():
        section, name = key.rsplit(".", 1)
        node = cfg
        for part in section.split("."):
            node = node[part]
        node[name] = ast.literal_eval(value) if isinstance(value, str) else value
    return cfg


def _command(workdir: Path, **extra) -> list[str]:
    args = [f"--config.{k}={v}" for k, v in {**OVERRIDES, **extra}.items()]
    return [
        sys.executable,
        "-m",
        "experiments.main",
        "--config",
        "experiments/configs/default.py:local",
        "--workdir",
        str(workdir),
        "--mode=train",
        *args,
    ]


class Worker:
    """One training process; its stdout is read in a thread (lines with their arrival time)."""

    def __init__(self, workdir: Path, env: dict, **extra):
        self.proc = subprocess.Popen(
            _command(workdir, **extra),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.training = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("[flowjax] training "):
                self.training.set()
        self.training.set()  # the process ended

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._reader.join(10)

    def output(self) -> str:
        return "".join(self.lines)


def _abstract(cfg, workdir: Path):
    exp = xt.setup(cfg, workdir)
    x, label = xt._example_inputs(exp)

    def make(key):
        params = M.init(exp.model, key, x, label_example=label)
        return T.create_train_state(params, exp.optimizer, key, ema=cfg.training.ema_decay > 0)

    return T.abstract_state(jax.eval_shape(make, jax.random.PRNGKey(0)), T.replicated(exp.mesh))


def _host(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(a, b, strict=True)
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax_cache")
    out = dict(os.environ)
    out.update(
        {
            "PYTHONPATH": os.pathsep.join([str(ROOT), out.get("PYTHONPATH", "")]),
            "JAX_PLATFORMS": "cpu",
            "FLOWJAX_CPU_TUNING": "0",  # no re-exec: one interpreter start per restart
            "JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        }
    )
    return out


class Reference:
    """The uninterrupted run (same config): its checkpoints, restored on demand by step."""

    def __init__(self, workdir: Path, abstract):
        self.directory, self.abstract, self._cache = workdir / "checkpoints", abstract, {}
        with T.Checkpointer(self.directory, max_to_keep=None) as ck:
            self.steps = ck.all_steps()

    def __getitem__(self, step: int):
        if step not in self._cache:
            with T.Checkpointer(self.directory, max_to_keep=None) as ck:
                r = ck.restore(self.abstract, step=step)
            self._cache[step] = (_host(r.state), r.data_state)
        return self._cache[step]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env):
    workdir = tmp_path_factory.mktemp("reference")
    extra = {"training.max_to_keep": NUM_STEPS}  # keeps every checkpoint (every 10 steps)
    worker = Worker(workdir, env, **extra)
    assert worker.wait() == 0, worker.output()
    ref = Reference(workdir, _abstract(_config(**extra), workdir / "restore_probe"))
    assert ref.steps == list(range(10, NUM_STEPS + 1, 10)), ref.steps
    return ref


def _check_checkpoints(workdir: Path, reference, abstract, scratch: Path) -> tuple[list[int], int]:
    """Restore every checkpoint on disk by step: each must equal the reference's (or be refused).

    Works on a copy (the driver's own Checkpointer would clean up orbax's temporary directories,
    which the restarted worker must handle itself). Returns (the steps, how many were refused).
    """
    directory = workdir / "checkpoints"
    if not directory.exists():
        return [], 0
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(directory, scratch)
    refused = 0
    with T.Checkpointer(scratch, max_to_keep=None) as ck:
        steps = ck.all_steps()
        for step in steps:
            r = ck.restore(abstract, step=step)
            if r is None:
                refused += 1
                continue
            if step not in reference.steps:
                continue  # a SIGTERM save between the reference's steps: checked by the end state
            want, want_data = reference[step]
            assert _same(_host(r.state), want), f"checkpoint step {step} has other contents"
            assert r.data_state == want_data, f"checkpoint step {step}: data state differs"
    return steps, refused


def _finalised(directory: Path) -> set[str]:
    if not directory.exists():
        return set()
    return {p for p in os.listdir(directory) if p.isdigit()}


def _writing(directory: Path) -> bool:
    return directory.exists() and any(".orbax-checkpoint-tmp" in p for p in os.listdir(directory))


def _kill_when(worker: Worker, kind: str, rng: random.Random, directory: Path, sig: int) -> str:
    """Send ``sig`` to the worker at a moment of kind ``kind``; returns what was caught.

    ``restore``: 0-0.3 s after the "training" line (restoring, compiling, first steps). ``write``
    and ``step``: only after this life has finished a checkpoint of its own (so every such life
    makes progress), then as soon as the next checkpoint's temporary directory appears, or after
    a random 0-0.4 s.
    """
    worker.training.wait(300)
    if kind == "restore":
        time.sleep(rng.uniform(0.0, 0.3))
    else:
        before = _finalised(directory)
        deadline = time.monotonic() + 120
        while worker.proc.poll() is None and time.monotonic() < deadline:
            if _finalised(directory) - before:
                break
            time.sleep(0.002)
        if kind == "write":
            while worker.proc.poll() is None and time.monotonic() < deadline:
                if _writing(directory):
                    time.sleep(rng.uniform(0.0, 0.005))
                    break
                time.sleep(0.001)
        else:
            time.sleep(rng.uniform(0.0, 0.4))
    writing = _writing(directory)
    if worker.proc.poll() is not None:
        return "finished"
    worker.proc.send_signal(sig)
    return "write" if writing else kind


def _chaos(tmp_path, env, reference, sig: int, count: int, seed: int) -> dict[str, int]:
    abstract = reference.abstract
    rng = random.Random(seed)
    kinds = ("restore", "write", "step")
    caught: dict[str, int] = {}
    runs = kills = 0
    while kills < count:
        runs += 1
        workdir = tmp_path / f"run{runs}"
        directory = workdir / "checkpoints"
        finished = False
        while not finished:  # restart until the run finishes
            worker = Worker(workdir, env)
            what = (
                _kill_when(worker, kinds[kills % 3], rng, directory, sig) if kills < count else ""
            )
            code = worker.wait()
            finished = code == 0 and f"now at step {NUM_STEPS}" in worker.output()
            if what and not finished:
                kills += 1
                caught[what] = caught.get(what, 0) + 1
                if sig == signal.SIGTERM and code == 0:
                    caught["saved_and_exited"] = caught.get("saved_and_exited", 0) + 1
                else:
                    assert code == -sig, (code, worker.output())
            assert finished or what, (code, worker.output())  # never a crash of its own
            steps, refused = _check_checkpoints(workdir, reference, abstract, tmp_path / "scratch")
            caught["refused"] = caught.get("refused", 0) + refused
        assert steps and steps[-1] == NUM_STEPS, steps
        with T.Checkpointer(directory) as ck:
            final = ck.restore(abstract)
        assert final.step == NUM_STEPS
        assert _same(_host(final.state), reference[NUM_STEPS][0]), "final state differs"
    caught["runs"] = runs
    return caught


def test_sigkill_anywhere_resumes_bit_for_bit(tmp_path, env, reference):
    caught = _chaos(tmp_path, env, reference, signal.SIGKILL, KILLS, seed=0)
    print("SIGKILL", caught)
    assert sum(v for k, v in caught.items() if k in ("restore", "write", "step")) == KILLS
    assert caught.get("write", 0) >= 3 and caught.get("restore", 0) >= 3, caught


def test_sigterm_saves_exits_and_resumes_bit_for_bit(tmp_path, env, reference):
    caught = _chaos(tmp_path, env, reference, signal.SIGTERM, TERMS, seed=1)
    print("SIGTERM", caught)
    assert caught.get("saved_and_exited", 0) >= TERMS // 2, caught
