"""experiments/ with few-step objectives (issue 16): ``config.loss.objective``, its options, the
second time input, the few-step samplers in eval.json, and the configs that use them.

Fast: config checks (each fails before training, naming the key); about 7 s of CPU measured.
Slow: tiny toy_onestep runs of every objective end to end (meanflow through
``python -m experiments.main``, the others in-process through the same jobs); 26 s of CPU, 68 s of
wall time measured on the shared 2-core machine under load.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import evaluate, experiment, schema
from experiments.configs import digits, toy_onestep
from experiments.model import make_model

ROOT = Path(__file__).resolve().parents[1]


def onestep(objective: str = "meanflow"):
    cfg = toy_onestep.get_config(f"{objective},local")
    cfg.data.num_train, cfg.data.num_eval = 512, 256  # setup draws the toy sets
    return cfg


def test_default_objective_is_flow_matching_and_configs_choose_theirs():
    from experiments.configs import default

    assert default.get_config().loss.objective == "fm"
    assert digits.get_config().loss.objective == "fm"
    assert toy_onestep.get_config().loss.objective == "meanflow"
    for obj, method in toy_onestep.METHOD.items():
        cfg = toy_onestep.get_config(obj)
        schema.check_config(cfg)
        assert cfg.loss.objective == obj
        assert set(cfg.sampling.samplers) == {f"{method}_{n}" for n in (1, 2, 4)}
        assert {s.num_steps for s in cfg.sampling.samplers.values()} == {1, 2, 4}
    for obj in ("meanflow", "consistency"):
        cfg = digits.get_config(obj)
        schema.check_config(cfg)
        assert cfg.loss.objective == obj and cfg.model.name == "unet"
        assert {f"{obj}_1", f"{obj}_2"} <= set(cfg.sampling.samplers)
    with pytest.raises(ValueError, match="choose one"):
        toy_onestep.get_config("meanflow,shortcut")
    with pytest.raises(ValueError, match="unconditional"):
        digits.get_config("meanflow,cond")


def test_a_bad_objective_is_named():
    cfg = onestep()
    cfg.loss.objective = "flowmap"
    with pytest.raises(schema.ConfigError, match=r"'loss\.objective'.*meanflow.*flowmap"):
        schema.check_config(cfg)


@pytest.mark.parametrize(
    ("objective", "key", "value", "pattern"),
    [
        ("meanflow", "meanflow.equal_fraction", 1.5, r"'loss\.meanflow\.equal_fraction'.*\[0, 1\]"),
        ("meanflow", "meanflow.time_sampler", "beta", r"'loss\.meanflow\.time_sampler'.*one of"),
        ("shortcut", "shortcut.max_steps", 100, r"'loss\.shortcut\.max_steps'.*power of two"),
        ("consistency", "consistency.teacher_solver", "rk4", r"'loss\.consistency\.teacher_sol"),
        ("cd_oracle", "consistency.sigma_data", -1.0, r"'loss\.consistency\.sigma_data'.*> 0"),
    ],
)
def test_a_bad_objective_option_is_named(objective, key, value, pattern):
    cfg = onestep(objective)
    sec, name = key.split(".")
    cfg.loss[sec][name] = value
    with pytest.raises(schema.ConfigError, match=pattern):
        schema.check_config(cfg)


def test_unknown_and_unused_objective_options_are_named():
    cfg = onestep("meanflow").to_dict()
    cfg["loss"]["meanflow"]["equal_frac"] = 0.5
    with pytest.raises(schema.ConfigError, match=r"loss\.meanflow\.equal_frac.*equal_fraction"):
        schema.check_config(cfg)
    cfg = onestep("meanflow")  # another objective's option would be silently ignored
    cfg.loss.shortcut.max_steps = 64
    with pytest.raises(schema.ConfigError, match=r"'loss\.shortcut\.max_steps'.*'meanflow'"):
        schema.check_config(cfg)
    cfg = onestep("shortcut")  # flow-matching keys the few-step objectives do not read
    cfg.loss.prediction = "eps"
    with pytest.raises(schema.ConfigError, match=r"'loss\.prediction'.*'shortcut'"):
        schema.check_config(cfg)
    cfg = onestep("consistency")
    cfg.loss.meanflow.adaptive_power = 0.0
    with pytest.raises(schema.ConfigError, match=r"'loss\.meanflow\.adaptive_power'"):
        schema.check_config(cfg)


def test_cd_oracle_needs_a_data_set_with_an_oracle(tmp_path):
    cfg = onestep("cd_oracle")
    cfg.data.name = "checkerboard"
    cfg.eval.nfe_sweep.oracle_solvers = ()
    with pytest.raises(schema.ConfigError, match=r"'loss\.objective'.*cd_oracle.*checkerboard"):
        experiment.setup(cfg, tmp_path)
    cfg = onestep("meanflow")  # the oracle reference curves need one too
    cfg.data.name = "checkerboard"
    with pytest.raises(schema.ConfigError, match=r"eval\.nfe_sweep\.oracle_solvers.*checkerboard"):
        experiment.setup(cfg, tmp_path)


def test_the_second_time_input_follows_the_objective(tmp_path):
    exp = experiment.setup(onestep("meanflow"), tmp_path / "meanflow")
    assert exp.model.second_time == "r" and exp.config.model.mlp.second_time == "r"
    for obj, second in (("shortcut", "d"), ("cd_oracle", None), ("consistency", None)):
        cfg = experiment._resolve_second_time(onestep(obj))
        assert cfg.model.mlp.second_time == second
        assert make_model(cfg, None).second_time == second
    cfg = digits.get_config("meanflow,local")
    assert make_model(experiment._resolve_second_time(cfg), None).second_time == "r"
    cfg = onestep("meanflow")
    cfg.model.mlp.second_time = "d"
    with pytest.raises(schema.ConfigError, match=r"'model\.mlp\.second_time' is 'd'.*needs 'r'"):
        experiment.setup(cfg, tmp_path / "bad")
    cfg = onestep("consistency")
    cfg.model.mlp.second_time = "r"
    with pytest.raises(schema.ConfigError, match=r"'model\.mlp\.second_time'.*one time input"):
        experiment.setup(cfg, tmp_path / "bad")


def test_samplers_and_nll_must_fit_the_objective(tmp_path):
    from experiments.configs import default

    cfg = onestep("meanflow")
    cfg.sampling.samplers.cm = default.sampler(method="consistency", num_steps=1)
    with pytest.raises(schema.ConfigError, match=r"samplers\.cm\.method.*'consistency'.*meanflow"):
        experiment.setup(cfg, tmp_path)
    cfg = onestep("consistency")
    cfg.sampling.samplers.ode = default.sampler(num_steps=4)
    with pytest.raises(schema.ConfigError, match=r"samplers\.ode\.method.*no velocity field"):
        experiment.setup(cfg, tmp_path)
    cfg = onestep("cd_oracle")
    cfg.eval.nll.enabled = True
    with pytest.raises(schema.ConfigError, match=r"'eval\.nll\.enabled'.*no velocity field"):
        experiment.setup(cfg, tmp_path)
    cfg = default.get_config("local")  # a flow-matching model has no few-step sampler
    cfg.sampling.samplers.mf = default.sampler(method="meanflow", num_steps=1)
    with pytest.raises(schema.ConfigError, match=r"samplers\.mf\.method.*'meanflow'.*'fm'"):
        experiment.setup(cfg, tmp_path)


#: a tiny toy_onestep run (a few seconds of CPU): key -> value, as command-line overrides too
TINY = {
    "data.num_train": 1024,
    "data.num_eval": 256,
    "training.num_steps": 30,
    "training.batch_size": 64,
    "training.log_every": 30,
    "training.checkpoint_every": 30,
    "training.tensorboard": False,
    "model.mlp.hidden": (16, 16),
    "sampling.num_samples": 128,
    "sampling.batch_size": 128,
    "eval.num_eval": 128,
    "eval.floor_repeats": 2,
    "eval.num_projections": 16,
    "eval.nfe_sweep.num_samples": 128,
    "eval.nfe_sweep.oracle_solvers": ("euler",),
    "eval.nfe_sweep.num_steps": (1, 2),
    "figures.enabled": False,
}


def _tiny(objective: str):
    cfg = toy_onestep.get_config(f"{objective},local")
    for key, value in TINY.items():
        *sections, name = key.split(".")
        sec = cfg
        for s in sections:
            sec = sec[s]
        sec[name] = value
    return cfg


def _check_eval(result: dict, objective: str) -> None:
    method = toy_onestep.METHOD[objective]
    got = result["samplers"]
    assert set(got) == {f"{method}_{n}" for n in (1, 2, 4)}, objective
    for n in (1, 2, 4):
        entry = got[f"{method}_{n}"]
        assert entry["nfe"] == n and entry["nfe_max"] == n, (objective, entry["nfe"])
        assert {"energy", "sliced_w2", "mmd"} <= set(entry["quality"]), objective
        assert math.isfinite(entry["quality"]["energy"]["value"]), objective
    ref = result["nfe_sweep"]["reference_curves"]["oracle_euler"]
    assert [r["nfe"] for r in ref] == [1, 2], objective
    # the exact velocity with 2 Euler steps is closer to the data than with 1
    assert ref[1]["energy"] < ref[0]["energy"], ref
    assert result["config"]["loss"]["objective"] == objective


@pytest.mark.slow
def test_each_objective_trains_and_reports_its_one_two_and_four_step_samplers(tmp_path):
    # the default objective (meanflow) through the command line
    overrides = [f"--config.{k}={v!r}".replace(" ", "") for k, v in TINY.items()]
    cmd = [
        sys.executable,
        "-m",
        "experiments.main",
        "--config=experiments/configs/toy_onestep.py:local",
        f"--workdir={tmp_path / 'meanflow'}",
        *overrides,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_eval(json.loads((tmp_path / "meanflow" / "eval.json").read_text()), "meanflow")
    # the others in this process (the same jobs as --mode=all)
    for obj in ("shortcut", "consistency", "cd_oracle"):
        result = evaluate.train_and_evaluate(_tiny(obj), tmp_path / obj)
        _check_eval(result, obj)
        assert json.loads((tmp_path / obj / "eval.json").read_text())["samplers"].keys() == (
            result["samplers"].keys()
        )
