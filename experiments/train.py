"""Training job: train an experiment (resuming from the workdir's newest intact checkpoint).

The workdir::

    config.json      the resolved config of the last training run
    checkpoints/     flowjax.training.Checkpointer (train state + data-iterator position)
    metrics.jsonl    training metrics (flowjax.training.MetricWriter; TensorBoard events beside it)
    samples/*.npz    samples (experiments.sample)
    figures/*.png    figures, each with a .json sidecar of its settings (experiments.figures)
    eval.json        every number, with the sampler settings and NFE behind it (experiments.evaluate)
"""

from __future__ import annotations

import json
import os
import time

import jax
import ml_collections

from experiments import io
from experiments.experiment import Experiment, example_inputs, keys, setup
from experiments.schema import build, flat_keys
from flowjax import data as D
from flowjax import models as M
from flowjax import training as T

__all__ = ["config_dict", "run", "setup", "train"]


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> T.TrainResult:
    """Train (resuming from the workdir's newest intact checkpoint) to ``training.num_steps``."""
    return run(setup(config, workdir))


def config_dict(cfg: ml_collections.ConfigDict) -> dict:
    """The config as the JSON of ``config.json``."""
    return io.jsonable(cfg.to_dict())


def _write_config(exp: Experiment) -> None:
    new = config_dict(exp.config)
    path = exp.file(io.CONFIG_FILE)
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if old is not None and old != new:
            a, b = flat_keys(old), flat_keys(new)
            changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            io.log(
                f"{io.CONFIG_FILE}: the config differs from the previous run's in "
                + ", ".join(f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in changed[:10])
            )
    io.write_json(path, new)


def _train_step(exp: Experiment) -> T.TrainStep:
    """``make_train_step`` with the ``training`` keys it takes (``ema_decay`` 0: no EMA)."""
    tc = exp.config.training
    return build(
        T.make_train_step,
        tc,
        loss_fn=exp.loss_fn,
        optimizer=exp.optimizer,
        mesh=exp.mesh,
        ema_decay=tc.ema_decay or None,
        remat=None if tc.remat == "none" else tc.remat,
    )


def run(exp: Experiment) -> T.TrainResult:
    """Train a set-up experiment; writes ``config.json``, checkpoints and metrics."""
    cfg, tc = exp.config, exp.config.training
    k = keys(cfg)
    x, label = example_inputs(exp)
    params = M.init(exp.model, k["init"], x, label_example=label)
    state = T.create_train_state(params, exp.optimizer, k["state"], ema=tc.ema_decay > 0)
    step = _train_step(exp)
    it = D.make_iterator(exp.train_ds, global_batch_size=tc.batch_size, seed=cfg.seed)
    ckpt = T.Checkpointer(exp.file(io.CHECKPOINT_DIR), max_to_keep=tc.max_to_keep)
    latest = ckpt.latest_step()
    io.log(
        f"training {type(exp.model).__name__} ({M.count_params(params):,} parameters) on "
        f"{cfg.data.name!r}: path {cfg.path.name}, prediction {cfg.loss.prediction}, "
        f"{tc.num_steps} steps of batch {tc.batch_size} on {jax.device_count()} device(s)"
        + (f"; resuming from checkpoint step {latest}" if latest is not None else "")
    )
    _write_config(exp)
    writer = T.MetricWriter(exp.workdir, tensorboard=tc.tensorboard)
    t0 = time.perf_counter()
    try:
        result = T.train_loop(
            state,
            step,
            it,
            num_steps=tc.num_steps,
            checkpointer=ckpt,
            writer=writer,
            log_every=tc.log_every,
            checkpoint_every=tc.checkpoint_every or None,
            metadata={"config": config_dict(cfg)},
        )
    finally:
        writer.close()
        ckpt.close()
    done = result.step - result.start_step
    io.log(
        f"trained {done} steps in {time.perf_counter() - t0:.1f} s (now at step {result.step}); "
        f"checkpoints in {exp.file(io.CHECKPOINT_DIR)}"
    )
    return result
