"""Chaos test of training: kill the experiments' training anywhere, restart it, and compare.

The driver (this test) runs ``experiments.main --mode=train`` (a tiny config: 8 Gaussians, a
32x32 MLP, 200 steps of batch 64, a checkpoint every 10 steps, the three newest kept, one log line
per step) and kills it at random moments of three kinds in turn, each timed by polling the run's
log and checkpoint directory (2 ms), then a random delay:

* ``restore``: 0-0.3 s after the run's "training" line, counted as such only if no step was
  logged yet: restoring the newest checkpoint and loading the compiled step;
* ``write``: while an asynchronous checkpoint is being written (orbax's temporary directory of a
  new step exists; a random delay covers writing, finalising and deleting the oldest checkpoint);
* ``step``: while it steps with no checkpoint being written.

A kill is counted by what the driver saw just before sending the signal. After every life each
checkpoint on disk is restored (on a copy) and compared bit for bit with the checkpoint of the
same step of an uninterrupted reference run: none may load with other contents, and none may be
refused either (every step directory on disk must be whole). Each run is restarted until it
finishes; its final state must equal the reference's bit for bit. The same with SIGTERM, where a
run that has started stepping must save its current step and exit with status 0.

Cost: every life is a real process (``os.fork`` of a multiprocessing fork server that has
imported the experiments' modules once, without starting JAX), so a restart costs JAX's start,
the set-up and loading the compiled programs from the JAX compilation cache
(``$JAX_COMPILATION_CACHE_DIR`` when set, else a fresh one shared by all lives).
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import random
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

from flowjax import training as T

ROOT = Path(__file__).resolve().parents[1]
NUM_STEPS = 200
EVERY = 10  # checkpoint_every
KILLS, TERMS = 21, 6  # SIGKILLs (7 of each kind) and SIGTERMs

pytestmark = pytest.mark.slow

CONFIG = f'''"""The chaos test's run (written by tests/test_chaos.py)."""
import ml_collections

from experiments.configs import default


def get_config(arg=None):
    cfg = default.get_config("local")
    # nothing but training: no samplers or likelihood to check at set-up
    cfg.sampling.samplers = ml_collections.ConfigDict({{}})
    cfg.eval.nfe_sweep.samplers = ()
    cfg.eval.nll.enabled = False
    t = cfg.training
    t.num_steps, t.batch_size, t.checkpoint_every = {NUM_STEPS}, 64, {EVERY}
    t.log_every, t.tensorboard = 1, False
    t.max_to_keep = {NUM_STEPS} if arg == "reference" else 3
    cfg.model.mlp.hidden = (32, 32)
    return cfg
'''

TRAINING = "[flowjax] training "
STEP_LINE = re.compile(r"^step (\d+) \|", re.M)
TMP = ".orbax-checkpoint-tmp"


# ------------------------------------------------------------------ one life of the run


def _life(argv: list[str], log: str, env: dict[str, str]) -> None:
    """Fork-server target: run ``experiments.main`` with ``argv``, output appended to ``log``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (line-buffered)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.environ.update(env)
    from jax._src import xla_bridge

    # JAX must not have started in the fork server (its threads would not survive the fork)
    assert not xla_bridge._backends, "JAX started in the fork server"
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_compilation_cache_dir", env["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    from experiments import main

    sys.argv = argv
    main.run()


class Life:
    """One process of the run, forked from the fork server; its output goes to its own log."""

    def __init__(self, ctx, argv: list[str], log: Path, env: dict[str, str]):
        self.log = log
        self.proc = ctx.Process(target=_life, args=(argv, str(log), env), daemon=True)
        self.proc.start()

    def text(self) -> str:
        try:
            return self.log.read_text()
        except FileNotFoundError:
            return ""

    def steps_done(self) -> int:
        """How many steps this life has logged (one line per step)."""
        return len(STEP_LINE.findall(self.text()))

    def alive(self) -> bool:
        return self.proc.is_alive()

    def until(self, predicate, timeout: float = 240.0) -> bool:
        """Poll (2 ms) until ``predicate()`` holds or the process ends; whether it holds."""
        deadline = time.monotonic() + timeout
        while self.alive():
            if predicate():
                return True
            if time.monotonic() > deadline:
                raise TimeoutError(f"no progress in {timeout} s:\n{self.text()[-3000:]}")
            time.sleep(0.002)
        return predicate()

    def wait(self, timeout: float = 300.0) -> int:
        self.proc.join(timeout)
        if self.proc.exitcode is None:
            self.proc.kill()
            self.proc.join(10)
            raise TimeoutError(f"the run did not end in {timeout} s:\n{self.text()[-3000:]}")
        return self.proc.exitcode


def _finalised(directory: Path) -> set[int]:
    try:
        return {int(p) for p in os.listdir(directory) if p.isdigit()}
    except FileNotFoundError:
        return set()


def _writing(directory: Path) -> bool:
    try:
        return any(TMP in p for p in os.listdir(directory))
    except FileNotFoundError:
        return False


def _kill(life: Life, kind: str, rng: random.Random, directory: Path, sig: int) -> str | None:
    """Send ``sig`` at a moment of kind ``kind``; returns what the driver saw just before it
    (``restore``, ``write`` or ``step``), or ``None`` if the run ended first.

    ``write`` and ``step`` first wait until this life has finalised a checkpoint of its own, so
    that every such life makes progress and the run ends after a bounded number of lives.
    """
    if not life.until(lambda: TRAINING in life.text()):
        return None
    if kind == "restore":
        time.sleep(rng.uniform(0.0, 0.3))
    else:
        before = _finalised(directory)
        life.until(lambda: bool(_finalised(directory) - before))
        if kind == "write":
            life.until(lambda: _writing(directory))
            time.sleep(rng.uniform(0.0, 0.05))
        else:
            life.until(lambda: not _writing(directory))
            n = life.steps_done()
            life.until(lambda: life.steps_done() > n and not _writing(directory))
    seen = "restore" if life.steps_done() == 0 else "write" if _writing(directory) else "step"
    if not life.alive():
        return None
    os.kill(life.proc.pid, sig)
    return seen


# ------------------------------------------------------------------ checks


def _host(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    """Bit for bit: the same dtypes and bytes."""
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
        for x, y in zip(a, b, strict=True)
    )


def _signature(step_dir: Path) -> tuple:
    """The files of a checkpoint directory with their sizes and modification times."""
    return tuple(
        sorted(
            (str(p.relative_to(step_dir)), p.stat().st_size, p.stat().st_mtime_ns)
            for p in step_dir.rglob("*")
            if p.is_file()
        )
    )


class Reference:
    """The uninterrupted run: every 10th step's checkpoint, restored once each."""

    def __init__(self, directory: Path, abstract):
        self.directory, self.abstract, self._cache = directory, abstract, {}
        with T.Checkpointer(directory, max_to_keep=None) as ck:
            self.steps = ck.all_steps()

    def __getitem__(self, step: int):
        if step not in self._cache:
            with T.Checkpointer(self.directory, max_to_keep=None) as ck:
                r = ck.restore(self.abstract, step=step)
            self._cache[step] = (_host(r.state), r.data_state)
        return self._cache[step]


class Harness:
    """The fork server, the config file, the reference run and the checkpoint checks."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.config = tmp / "chaos_config.py"
        self.config.write_text(CONFIG)
        cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(tmp / "jax_cache")
        self.env = {"FLOWJAX_CPU_TUNING": "0", "JAX_COMPILATION_CACHE_DIR": cache}
        self.ctx = multiprocessing.get_context("forkserver")
        # imported once, in the server: every life starts with these modules loaded
        self.ctx.set_forkserver_preload(["experiments.main", "experiments.train", __name__])
        self.lives = 0
        self._checked: dict[tuple[int, tuple], bool] = {}
        self.reference = self._reference()

    def life(self, workdir: Path, arg: str = "") -> Life:
        self.lives += 1
        argv = [
            "experiments.main",
            f"--config={self.config}:{arg}" if arg else f"--config={self.config}",
            f"--workdir={workdir}",
            "--mode=train",
        ]
        return Life(self.ctx, argv, self.tmp / f"life{self.lives}.log", self.env)

    def _reference(self) -> Reference:
        workdir = self.tmp / "reference"
        life = self.life(workdir, "reference")
        assert life.wait() == 0, life.text()
        spec = importlib.util.spec_from_file_location("chaos_config", self.config)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cfg = module.get_config("reference")
        ref = Reference(workdir / "checkpoints", _abstract(cfg, self.tmp / "probe"))
        assert ref.steps == list(range(EVERY, NUM_STEPS + 1, EVERY)), ref.steps
        return ref

    def check_checkpoints(self, directory: Path) -> tuple[list[int], int]:
        """Restore every checkpoint on disk by step (on a copy: the driver's Checkpointer would
        remove orbax's temporary directories, which the restarted run must handle itself); each
        must equal the reference's checkpoint of its step, or be refused. A checkpoint already
        checked with the same files is not restored again. Returns (the steps, how many refused).
        """
        steps = sorted(_finalised(directory))
        todo = {s: _signature(directory / str(s)) for s in steps}
        todo = {s: sig for s, sig in todo.items() if (s, sig) not in self._checked}
        refused = 0
        if todo:
            scratch = self.tmp / "scratch"
            shutil.rmtree(scratch, ignore_errors=True)
            shutil.copytree(directory, scratch, ignore=shutil.ignore_patterns(f"*{TMP}*"))
            with T.Checkpointer(scratch, max_to_keep=None) as ck:
                for step in todo:
                    r = ck.restore(self.reference.abstract, step=step)
                    self._checked[(step, todo[step])] = r is not None
                    if r is None:
                        refused += 1
                        continue
                    assert r.step == step
                    if step % EVERY:
                        continue  # a SIGTERM save between the reference's: checked by the end
                    want, want_data = self.reference[step]
                    assert _same(_host(r.state), want), f"checkpoint step {step}: other contents"
                    assert r.data_state == want_data, f"checkpoint step {step}: other data state"
        return steps, refused


def _abstract(cfg, workdir: Path):
    from experiments import train as xt
    from flowjax import models as M

    try:  # experiments' layout after issue 18 (layout branch); before it, a private helper
        from experiments.experiment import example_inputs
    except ImportError:
        example_inputs = xt._example_inputs

    exp = xt.setup(cfg, workdir)
    x, label = example_inputs(exp)

    def make(key):
        params = M.init(exp.model, key, x, label_example=label)
        return T.create_train_state(params, exp.optimizer, key, ema=cfg.training.ema_decay > 0)

    return T.abstract_state(jax.eval_shape(make, jax.random.PRNGKey(0)), T.replicated(exp.mesh))


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return Harness(tmp_path_factory.mktemp("chaos"))


def _chaos(h: Harness, name: str, sig: int, count: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    kinds = ("restore", "write", "step")
    caught: dict[str, int] = {}
    runs = kills = 0
    lives = h.lives
    while kills < count:
        runs += 1
        workdir = h.tmp / f"{name}{runs}"
        directory = workdir / "checkpoints"
        finished = False
        while not finished:  # restart until the run finishes
            life = h.life(workdir)
            seen = _kill(life, kinds[kills % 3], rng, directory, sig) if kills < count else None
            code = life.wait()
            text = life.text()
            finished = code == 0 and f"now at step {NUM_STEPS})" in text
            assert finished or seen, (code, text[-3000:])  # never a failure of its own
            if seen and not finished:
                kills += 1
                caught[seen] = caught.get(seen, 0) + 1
                if sig == signal.SIGTERM and code == 0:
                    # saved the step it had reached (its last logged one), and exited cleanly
                    stopped = int(STEP_LINE.findall(text)[-1])
                    assert stopped in _finalised(directory), (stopped, text[-2000:])
                    caught["saved_and_exited"] = caught.get("saved_and_exited", 0) + 1
                else:
                    assert code == -sig, (code, text[-3000:])
            steps, refused = h.check_checkpoints(directory)
            # orbax finalises a step by renaming its temporary directory, and flowjax renames a
            # dropped one aside before deleting it: every step directory is whole
            assert refused == 0, f"a step directory on disk is incomplete: {steps}"
        assert steps and steps[-1] == NUM_STEPS, steps
        assert not _writing(directory), os.listdir(directory)
        with T.Checkpointer(directory) as ck:
            final = ck.restore(h.reference.abstract)
        assert final.step == NUM_STEPS
        assert _same(_host(final.state), h.reference[NUM_STEPS][0]), "final state differs"
        chex.assert_trees_all_equal(_host(final.state), h.reference[NUM_STEPS][0])
    caught["runs"], caught["lives"] = runs, h.lives - lives
    return caught


def test_sigkill_anywhere_resumes_bit_for_bit(harness):
    caught = _chaos(harness, "kill", signal.SIGKILL, KILLS, seed=0)
    print("\nSIGKILL", caught)
    assert sum(caught.get(k, 0) for k in ("restore", "write", "step")) == KILLS
    assert all(caught.get(k, 0) >= 3 for k in ("restore", "write", "step")), caught


def test_sigterm_saves_exits_and_resumes_bit_for_bit(harness):
    caught = _chaos(harness, "term", signal.SIGTERM, TERMS, seed=1)
    print("\nSIGTERM", caught)
    assert sum(caught.get(k, 0) for k in ("restore", "write", "step")) == TERMS
    # the lives signalled after their first step all saved and exited with status 0
    assert caught.get("saved_and_exited", 0) >= caught.get("write", 0) + caught.get("step", 0)
