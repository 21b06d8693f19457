"""experiments/: configs, the command line, a toy run end to end, resuming, and bad input.

Image runs (digits, MNIST under tfds.testing.mock_data) are in ``test_experiments_images.py``;
evaluation arithmetic, Inception and figures in ``test_experiments_eval.py``.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import flowjax as fj
from experiments import train as xt
from experiments.configs import default
from flowjax import data as D
from flowjax import distances
from flowjax import training as T

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "experiments" / "configs"
CONFIG_FILES = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem != "__init__")


def tiny_toy() -> ml_collections.ConfigDict:
    """Flow matching on 8-Gaussians, small enough for a unit test (every evaluation path on)."""
    c = default.get_config("local")
    c.training.num_steps = 40
    c.training.batch_size = 128
    c.training.log_every = 20
    c.training.checkpoint_every = 20
    c.model.mlp.hidden = (32, 32)
    c.model.mlp.time_embed_dim = 16
    c.optim.lr = 1e-2
    c.optim.warmup_steps = 0
    c.sampling.num_samples = 256
    c.sampling.batch_size = 256
    c.sampling.samplers = {
        "ode_euler": default.sampler(solver="euler", num_steps=8),
        "sde_euler": default.sampler(method="sde", solver="euler", num_steps=8, sigma="0.5"),
    }
    c.eval.num_eval = 256
    c.eval.floor_repeats = 2
    c.eval.num_projections = 32
    c.eval.nll.num_examples = 64
    c.eval.nll.batch_size = 64
    c.eval.nll.rtol = c.eval.nll.atol = 1e-3
    c.eval.nfe_sweep.samplers = ("ode_euler",)
    c.eval.nfe_sweep.num_steps = (2, 4)
    c.eval.nfe_sweep.num_samples = 256
    c.figures.num_points = 256
    c.figures.density_grid = 8
    c.figures.num_trajectories = 8
    c.figures.field_grid = 5
    c.figures.field_times = (0.3, 0.9)
    c.figures.dpi = 40
    return c


def tree_digest(path: Path) -> dict[str, str]:
    """SHA-1 of every file under ``path`` (relative names)."""
    return {
        str(p.relative_to(path)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """One tiny end-to-end run shared by the tests that read its workdir (never modified).

    Under pytest-xdist the workers share it: the first to take the lock runs it, the others read
    the returned result (saved beside the workdir, not eval.json) instead of training again.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # common to every worker of this session
    wd, saved = root / "toy_run" / "run", root / "toy_run" / "returned.json"
    with open(root / "toy_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not saved.exists():
            result = xt.train_and_evaluate(tiny_toy(), wd)
            saved.write_text(json.dumps(xt._jsonable(result)))
    return wd, json.loads(saved.read_text())


def copy_run(toy_run, tmp_path) -> Path:
    wd = tmp_path / "run"
    shutil.copytree(toy_run[0], wd)
    return wd


# ------------------------------------------------------------------ configs


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_config_passes_the_schema_and_documents_its_launch_command(name):
    mod = importlib.import_module(f"experiments.configs.{name}")
    assert f"python -m experiments.main --config experiments/configs/{name}.py" in mod.__doc__
    for arg in (None, "local"):
        cfg = mod.get_config(arg)
        xt.check_config(cfg)
        assert cfg.training.num_steps > 0 and cfg.sampling.samplers
    with pytest.raises(ValueError, match="bogus"):
        mod.get_config("bogus")


def test_image_configs_offer_class_conditional_training():
    from experiments.configs import cifar10, digits, mnist

    for mod in (digits, mnist, cifar10):
        cfg = mod.get_config("cond")
        assert cfg.model.num_classes == 10 and cfg.loss.label_dropout > 0
        guided = [s for s in cfg.sampling.samplers.values() if s.guidance_scale is not None]
        assert guided, mod.__name__
        plain = mod.get_config()
        assert plain.model.num_classes == 0
        assert all(s.guidance_scale is None for s in plain.sampling.samplers.values())


def test_sampler_entries_do_not_share_placeholders():
    a, b = default.sampler(), default.sampler(guidance_scale=2.0)
    assert a.guidance_scale is None and b.guidance_scale == 2.0
    a.t_start = 0.1
    assert b.t_start is None


# ------------------------------------------------------------------ a toy run end to end


def test_toy_run_writes_a_workdir_that_explains_itself(toy_run):
    wd, result = toy_run
    cfg = tiny_toy()
    assert json.loads((wd / "config.json").read_text()) == xt._config_dict(cfg)
    assert T.Checkpointer(wd / "checkpoints").all_steps() == [20, 40]
    records = T.read_jsonl(wd / "metrics.jsonl")
    assert [r["step"] for r in records] == [20, 40] and all(np.isfinite(r["loss"]) for r in records)
    assert json.loads((wd / "eval.json").read_text()) == result
    figures = sorted(p.name for p in (wd / "figures").glob("*.png"))
    assert figures == sorted(
        [
            "samples_ode_euler.png",
            "samples_sde_euler.png",
            "nfe_quality.png",
            "trajectories.png",
            "fields.png",
            "density.png",
        ]
    )
    for png in (wd / "figures").glob("*.png"):
        settings = json.loads(png.with_suffix(".json").read_text())
        assert settings["checkpoint_step"] == 40 and settings["path"] == "condot"
    for name, entry in cfg.sampling.samplers.items():
        with np.load(wd / "samples" / f"{name}.npz") as f:
            assert f["samples"].shape == (256, 2)
            settings = json.loads(str(f["settings"]))
        assert settings["num_steps"] == entry.num_steps and settings["checkpoint_step"] == 40
        assert result["samplers"][name]["nfe"] == entry.num_steps  # Euler: one call per step


def test_toy_run_numbers_match_its_files_and_the_oracle(toy_run):
    wd, result = toy_run
    test = D.get_dataset("eight_gaussians", "test")
    ref = test.as_arrays(256)["x"]
    noise = np.asarray(jax.random.normal(jax.random.PRNGKey(5), ref.shape))
    untrained = float(distances.energy_distance(jnp.asarray(noise), jnp.asarray(ref)))
    for name in ("ode_euler", "sde_euler"):
        with np.load(wd / "samples" / f"{name}.npz") as f:
            x = f["samples"]
        q = result["samplers"][name]["quality"]
        assert set(q) == {"energy", "sliced_w2", "mmd"}
        mine = float(distances.energy_distance(jnp.asarray(x), jnp.asarray(ref)))
        np.testing.assert_allclose(q["energy"]["value"], mine, rtol=1e-4, atol=1e-7)
        assert q["energy"]["floor_std"] > 0 and q["energy"]["n"] == 256
        assert q["energy"]["value"] < 0.2 * untrained  # training moved the samples onto the data
    nll = result["nll"]
    # the entropy comes from the oracle's density at the same 64 points
    exact = -np.asarray(test.oracle.data_log_prob(jnp.asarray(test.as_arrays(64)["x"]))).mean()
    np.testing.assert_allclose(nll["entropy"], exact, rtol=1e-5)
    np.testing.assert_allclose(nll["nll"] - nll["entropy"], nll["nll_gap"], atol=1e-6)
    assert 0 < nll["nll_gap"] < 3 and nll["all_solves_succeeded"]
    sweep = result["nfe_sweep"]["curves"]["ode_euler"]
    assert [r["nfe"] for r in sweep] == [2, 4]
    assert sweep[0]["energy"] > sweep[1]["energy"]  # more steps, closer to the data


def test_sampling_reuses_matching_samples_and_redraws_changed_ones(toy_run, tmp_path):
    wd = copy_run(toy_run, tmp_path)
    cfg = tiny_toy()
    before = tree_digest(wd / "samples")
    xt.sample(cfg, wd)
    assert tree_digest(wd / "samples") == before
    cfg.sampling.samplers.ode_euler.num_steps = 3
    xt.sample(cfg, wd)
    after = tree_digest(wd / "samples")
    assert after["sde_euler.npz"] == before["sde_euler.npz"]
    assert after["ode_euler.npz"] != before["ode_euler.npz"]
    with np.load(wd / "samples" / "ode_euler.npz") as f:
        assert json.loads(str(f["settings"]))["num_steps"] == 3


# ------------------------------------------------------------------ resuming


class _Interrupting:
    """A data iterator that sends SIGTERM (a preemption notice) when batch ``at`` is fetched."""

    def __init__(self, inner, at: int):
        self.inner, self.at, self.count = inner, at, 0

    def __iter__(self):
        return self

    def __next__(self):
        self.count += 1
        if self.count == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return next(self.inner)

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


def _final_state(wd: Path, cfg) -> list:
    exp = xt.setup(cfg, wd)
    restored = xt._restore(exp)
    return [np.asarray(a) for a in jax.tree.leaves(restored.params)]


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_toy()
    cfg.training.num_steps = 30
    cfg.training.checkpoint_every = 10
    wd = tmp_path / "interrupted"
    make_iterator = D.make_iterator
    monkeypatch.setattr(
        D, "make_iterator", lambda *a, **k: _Interrupting(make_iterator(*a, **k), 15)
    )
    with pytest.raises(SystemExit) as stop:
        xt.train(cfg, wd)
    assert stop.value.code == 0
    monkeypatch.undo()
    assert T.Checkpointer(wd / "checkpoints").all_steps() == [10, 15]  # saved on the signal

    resumed = xt.train(cfg, wd)
    assert (resumed.restored_step, resumed.start_step, resumed.step) == (15, 15, 30)
    straight = tmp_path / "straight"
    xt.train(cfg, straight)
    for a, b in zip(_final_state(wd, cfg), _final_state(straight, cfg), strict=True):
        np.testing.assert_array_equal(a, b)  # as if never interrupted

    # running the finished command again trains nothing and rewrites no checkpoint
    before = tree_digest(wd / "checkpoints")
    again = xt.train(cfg, wd)
    assert (again.restored_step, again.step) == (30, 30)
    assert tree_digest(wd / "checkpoints") == before


# ------------------------------------------------------------------ bad input


def _unknown_key():
    c = tiny_toy()
    c.optim.unlock()
    c.optim.lrr = 1e-3
    return c


def _bad(**changes):
    def make():
        c = tiny_toy()
        for key, value in changes.items():
            section, name = key.rsplit(".", 1)
            node = c
            for part in section.split("."):
                node = node[part]
            node[name] = value
        return c

    return make


BAD_CONFIGS = {
    "unknown key": (_unknown_key, xt.ConfigError, r"optim\.lrr.*did you mean 'optim\.lr'"),
    "unknown sampler key": (
        lambda: _with_sampler(num_stepz=3),
        xt.ConfigError,
        r"sampling\.samplers\.bad\.num_stepz",
    ),
    "unknown solver": (
        lambda: _with_sampler(solver="rk99"),
        xt.ConfigError,
        r"sampling\.samplers\.bad.*rk99.*euler",
    ),
    "sigma": (lambda: _with_sampler(method="sde", sigma="loud"), xt.ConfigError, r"sigma.*loud"),
    "unknown path": (_bad(**{"path.name": "wiggly"}), xt.ConfigError, "wiggly"),
    "unknown prediction": (_bad(**{"loss.prediction": "noise"}), xt.ConfigError, "noise"),
    "unknown model": (_bad(**{"model.name": "transformer"}), xt.ConfigError, "model.name"),
    "unknown metric": (_bad(**{"eval.metrics": ("fid",)}), xt.ConfigError, "eval.metrics"),
    "sweep of a missing sampler": (
        _bad(**{"eval.nfe_sweep.samplers": ("nope",)}),
        xt.ConfigError,
        "nope",
    ),
    "guidance without classes": (
        lambda: _with_sampler(guidance_scale=2.0),
        xt.ConfigError,
        "guidance_scale",
    ),
    "classes of another data set": (
        _bad(**{"model.num_classes": 3}),
        xt.ConfigError,
        "8 classes",
    ),
    "unknown remat": (
        _bad(**{"training.remat": "all"}),
        xt.ConfigError,
        r"training\.remat.*blocks",
    ),
    "batch not divisible into micro-batches": (
        _bad(**{"training.grad_accum_steps": 3}),
        xt.ConfigError,
        r"batch_size.*128.*grad_accum_steps.*3",
    ),
    "likelihood solver": (_bad(**{"eval.nll.solver": "rk99"}), xt.ConfigError, "eval.nll.*rk99"),
    "absent data set": (
        _bad(**{"data.name": "mnist", "data.data_dir": "/nonexistent/tfds"}),
        D.DatasetNotFoundError,
        "python -m flowjax.data.prepare --dataset mnist",
    ),
    "inception without weights": (
        _bad(**{"data.name": "digits", "model.name": "unet", "eval.inception": True}),
        Exception,
        "inception_weights",
    ),
}


def _with_sampler(**kw):
    c = tiny_toy()
    c.sampling.samplers.unlock()
    entry = default.sampler()
    entry.unlock()
    for k, v in kw.items():
        entry[k] = v
    c.sampling.samplers.bad = entry
    return c


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_input_fails_before_training_and_leaves_the_workdir_alone(case, toy_run, tmp_path):
    make, error, pattern = BAD_CONFIGS[case]
    wd = copy_run(toy_run, tmp_path)
    before = tree_digest(wd)
    with pytest.raises(error, match=pattern):
        xt.train_and_evaluate(make(), wd)
    assert tree_digest(wd) == before  # no checkpoint, sample, figure or number was written


def test_a_wrong_type_is_named():
    d = tiny_toy().to_dict()
    d["training"]["num_steps"] = "many"  # e.g. a config assembled from a dict
    with pytest.raises(xt.ConfigError, match=r"training\.num_steps.*int.*many"):
        xt.check_config(ml_collections.ConfigDict(d))


def test_an_unwritable_workdir_is_named(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match=r"a_file/run.*not writable"):
        xt.train_and_evaluate(tiny_toy(), blocker / "run")


def test_a_checkpoint_of_another_model_is_named_and_kept(toy_run, tmp_path):
    wd = copy_run(toy_run, tmp_path)
    before = tree_digest(wd / "checkpoints")
    cfg = tiny_toy()
    cfg.model.mlp.hidden = (16, 16)
    with pytest.raises(T.CheckpointLayoutError, match="another model"):
        xt.train(cfg, wd)
    assert tree_digest(wd / "checkpoints") == before


def test_evaluating_without_a_checkpoint_says_to_train_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="train first"):
        xt.evaluate(tiny_toy(), tmp_path / "empty")


# ------------------------------------------------------------------ the command line


def _main(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "experiments.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(cwd),
        env=env,
    )


def test_command_line_trains_with_overrides_and_resumes(tmp_path):
    wd = tmp_path / "cli"
    args = [
        "--config",
        "experiments/configs/default.py:local",
        "--workdir",
        str(wd),
        "--mode=train",
        "--config.training.num_steps=6",
        "--config.training.checkpoint_every=3",
        "--config.training.log_every=3",
        "--config.optim.lr=3e-4",
        "--config.model.mlp.hidden=(16,16)",
    ]
    out = _main(*args)
    assert out.returncode == 0, out.stderr[-3000:]
    saved = json.loads((wd / "config.json").read_text())
    assert saved["optim"]["lr"] == 3e-4 and saved["model"]["mlp"]["hidden"] == [16, 16]
    assert T.Checkpointer(wd / "checkpoints").all_steps() == [3, 6]
    before = tree_digest(wd / "checkpoints")
    again = _main(*args)  # the same command again: resumes, finds the run complete
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from checkpoint step 6" in again.stdout
    assert "trained 0 steps" in again.stdout
    assert tree_digest(wd / "checkpoints") == before


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (
            ["--config", "experiments/configs/nothere.py"],
            "config file 'experiments/configs/nothere.py'.*does not exist",
        ),
        (
            ["--config", "experiments/configs/default.py", "--config.optim.lrr=1"],
            "unknown config key.*lrr",
        ),
        (
            ["--config", "experiments/configs/default.py", "--config.optim.lr=fast"],
            "config.optim.lr",
        ),
        (["--config", "experiments/configs/default.py:bogus"], "bogus"),
    ],
)
def test_command_line_rejects_bad_flags_before_starting(args, pattern, tmp_path):
    out = _main(*args, "--workdir", str(tmp_path / "wd"))
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert re.search(pattern, out.stderr, flags=re.I | re.S), out.stderr[-2000:]
    assert not (tmp_path / "wd").exists()


# ------------------------------------------------------------------ library pieces used together


def test_make_loss_and_the_train_step_fit_together():
    model = fj.models.MLP(hidden=(8,))
    params = fj.models.init(model, jax.random.PRNGKey(0), jnp.zeros((1, 2)))
    loss = fj.losses.make_loss(fj.models.make_apply_fn(model), fj.CondOT())
    opt = T.make_optimizer("adam", 1e-3)
    step = T.make_train_step(loss, opt, mesh=fj.parallel.make_mesh())
    state = step.place_state(T.create_train_state(params, opt, jax.random.PRNGKey(1)))
    state, metrics = step(state, {"x": np.zeros((4, 2), np.float32)})
    assert {"loss", "grad_norm", "mse", "mse_score"} <= set(metrics)
    assert int(state.step) == 1


# ------------------------------------------------------------------ the README's main job

README_INSTALL = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt -e . && "
)


def test_readme_first_command_is_the_main_job_with_a_real_config_and_valid_flags():
    import shlex

    from experiments import main as xm

    readme = (ROOT / "README.md").read_text()
    commands = [
        line
        for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
        for line in block.splitlines()
        if line.strip() and not line.startswith("#")
    ]
    first = commands[0]
    assert first.startswith(README_INSTALL), first
    assert "pytest" in commands[1]  # the test command stays the second
    argv = shlex.split(first[len(README_INSTALL) :])
    assert argv[:3] == ["python", "-m", "experiments.main"], argv
    given: dict[str, str] = {}
    rest = argv[3:]
    while rest:
        arg = rest.pop(0)
        assert arg.startswith("--"), arg
        name, eq, value = arg[2:].partition("=")
        given[name] = value if eq else rest.pop(0)
    known = set(xm.FLAGS)
    assert set(given) <= known, sorted(set(given) - known)
    assert {"config", "workdir"} <= set(given)
    assert "mode" not in given or given["mode"] in ("train", "sample", "eval", "all")
    config_file, _, arg = given["config"].partition(":")
    assert (ROOT / config_file).is_file(), config_file
    mod = importlib.import_module(config_file.removesuffix(".py").replace("/", "."))
    cfg = mod.get_config(arg or None)
    xt.check_config(cfg)
    # the main job: flow matching on 2-D data, sampled with an ODE and an SDE, NLL and figures on
    assert cfg.loss.prediction == "velocity" and cfg.data.name in D.TOY_DATASETS
    methods = {s.method for s in cfg.sampling.samplers.values()}
    assert {"ode", "sde"} <= methods and cfg.eval.nll.enabled and cfg.figures.enabled
    # the README's Launching section launches the same config
    assert f"--config {given['config']} --workdir" in readme.split("## Launching", 1)[1]
