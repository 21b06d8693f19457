r"""Train, sample and evaluate flowjax experiments from the command line.

    python -m experiments.main --config experiments/configs/default.py --workdir /tmp/flowjax_run
    python -m experiments.main --config experiments/configs/digits.py:fm --workdir runs/digits_fm \
        --config.training.num_steps=20000 --mode=train

Flags:
  --config       a config file (``ml_collections``; ``file.py:arg`` passes ``arg`` to its
                 ``get_config``), locked: ``--config.a.b=value`` overrides existing keys only.
  --workdir      where checkpoints, metrics, samples, figures and ``eval.json`` go. Re-running the
                 same command resumes from the newest checkpoint.
  --mode         ``train``, ``sample``, ``eval`` or ``all`` (train, then eval; the default).
  --coordinator_address, --num_processes, --process_id
                 multi-process runs (``jax.distributed``); when none is given the run is a single
                 process. On a cluster that JAX detects (SLURM, TPU pods) pass
                 ``--num_processes=-1`` alone to let JAX fill them in.

Everything a run needs is checked before it starts (config keys and values, the workdir, the
data set); errors name what is wrong and exit with status 2.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/configs/*.py).", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, samples, figures and eval.json.")
flags.DEFINE_enum("mode", "all", ["train", "sample", "eval", "all"], "What to run.")
flags.DEFINE_string(
    "coordinator_address", None, "Multi-process: address:port of process 0 (jax.distributed)."
)
flags.DEFINE_integer(
    "num_processes", None, "Multi-process: number of processes (-1: detected by JAX)."
)
flags.DEFINE_integer("process_id", None, "Multi-process: this process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def _fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def _config_overrides(argv: list[str]) -> list[str]:
    return [a for a in argv if a.startswith("--config.")]


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with config-loading failures turned into one clear line (exit status 2)."""
    for i, arg in enumerate(argv):
        value = None
        if arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            value = argv[i + 1]
        if value is not None:
            filename = value.split(":", 1)[0]
            if not os.path.isfile(filename):
                _fail(f"config file {filename!r} (--config) does not exist")
    try:
        return FLAGS(argv)
    except flags.Error as err:
        _fail(f"{err}\nPass --helpshort for the flags.")
    except (AttributeError, KeyError) as err:
        # ml_collections: an override of a key the (locked) config does not have
        text = str(err.args[0] if err.args else err).replace("\\n", " ").strip("'\" ")
        _fail(
            f"unknown config key in {' '.join(_config_overrides(argv))}: {text}. A locked config "
            "only takes overrides of the keys it has (see experiments/configs/default.py)"
        )
    except (TypeError, ValueError, OSError, ImportError, SyntaxError) as err:
        _fail(f"could not load the config: {type(err).__name__}: {err}")
    return []


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    if FLAGS.coordinator_address or FLAGS.num_processes is not None:
        from flowjax.training import initialize_distributed

        n = FLAGS.num_processes
        initialize_distributed(
            FLAGS.coordinator_address,
            None if n is None or n < 0 else n,
            FLAGS.process_id,
        )
    # imported after jax.distributed is initialised: nothing may touch a device before
    from experiments import evaluate, io, sample, train
    from experiments.evaluators.inception import InceptionWeightsError
    from experiments.schema import ConfigError
    from flowjax.training import CheckpointLayoutError

    try:
        config = _CONFIG.value
    except Exception as err:  # raised by the config file's get_config
        _fail(f"could not load the config {FLAGS['config'].config_filename}: {err}")
    jobs = {
        "train": train.train,
        "sample": sample.sample,
        "eval": evaluate.evaluate,
        "all": evaluate.train_and_evaluate,
    }
    t0 = time.perf_counter()
    try:
        result = jobs[FLAGS.mode](config, FLAGS.workdir)
    except (
        ConfigError,
        InceptionWeightsError,
        CheckpointLayoutError,
        FileNotFoundError,
        PermissionError,
    ) as err:
        _fail(str(err))
    if FLAGS.mode == "sample":
        io.log("samples: " + ", ".join(str(p) for p in result.values()))
    io.log(f"done in {time.perf_counter() - t0:.0f} s (--mode={FLAGS.mode})")
    if FLAGS.mode in ("eval", "all"):
        io.log(evaluate.summary(result, Path(FLAGS.workdir).absolute()))


def run() -> None:
    from experiments.runtime import reexec_with_cpu_tuning

    reexec_with_cpu_tuning()  # once, before JAX is imported: see experiments/runtime.py
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
