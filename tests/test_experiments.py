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

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import flowjax as fj
from experiments import evaluate, experiment, io, samplers, schema
from experiments import sample as sample_job
from experiments import train as train_job
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
            result = evaluate.train_and_evaluate(tiny_toy(), wd)
            saved.write_text(json.dumps(io.jsonable(result)))
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
        schema.check_config(cfg)
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
    # read back with the json module and compared with tiny_toy's literal values (not with the
    # converter that wrote the file)
    saved = json.loads((wd / "config.json").read_text())
    assert set(saved) == set(default.get_config())
    assert saved["seed"] == 0 and saved["data"]["name"] == "eight_gaussians"
    assert saved["data"]["num_train"] is None  # a placeholder is written as null
    assert (saved["training"]["num_steps"], saved["training"]["batch_size"]) == (40, 128)
    assert saved["model"]["mlp"]["hidden"] == [32, 32] and saved["optim"]["lr"] == 1e-2
    assert saved["eval"]["nll"]["rtol"] == 1e-3 and saved["eval"]["nfe_sweep"]["num_steps"] == [
        2,
        4,
    ]
    assert saved["sampling"]["samplers"]["sde_euler"]["sigma"] == "0.5"
    assert saved["sampling"]["samplers"]["ode_euler"]["s_tmax"] is None
    assert T.Checkpointer(wd / "checkpoints").all_steps() == [20, 40]
    records = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [20, 40] and all(np.isfinite(r["loss"]) for r in records)
    evaluated = json.loads((wd / "eval.json").read_text())
    assert set(evaluated) == {
        "config",
        "data_floors",
        "experiment",
        "figures",
        "nfe_sweep",
        "nll",
        "samplers",
        "timings_seconds",
        "training",
    }
    assert evaluated["config"] == saved and evaluated == result
    assert evaluated["experiment"]["checkpoint_step"] == 40
    assert evaluated["experiment"]["parameters"] == "ema"
    assert evaluated["training"]["last_logged"]["step"] == 40
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
    assert sorted(evaluated["figures"]) == sorted(str(wd / "figures" / f) for f in figures)
    for png in (wd / "figures").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        settings = json.loads(png.with_suffix(".json").read_text())
        assert settings["checkpoint_step"] == 40 and settings["path"] == "condot"
    for name, entry in cfg.sampling.samplers.items():
        with np.load(wd / "samples" / f"{name}.npz") as f:
            chex.assert_shape(f["samples"], (256, 2))
            assert f["nfe"].tolist() == [entry.num_steps]  # one chunk; Euler: one call per step
            settings = json.loads(str(f["settings"]))
        assert settings["sampler"] == name and settings["checkpoint_step"] == 40
        assert settings["num_steps"] == entry.num_steps and settings["method"] == entry.method
        assert evaluated["samplers"][name]["nfe"] == entry.num_steps


def _moment_matched_gaussian_log_prob(train: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log N(x; mean, cov) of the Gaussian with the training data's mean and covariance."""
    mean, cov = train.mean(0), np.cov(train, rowvar=False)
    d = x - mean
    maha = np.einsum("bi,ij,bj->b", d, np.linalg.inv(cov), d)
    return -0.5 * (maha + np.linalg.slogdet(2 * np.pi * cov)[1])


def test_toy_run_numbers_match_its_files_and_the_oracle(toy_run, tmp_path):
    wd, _ = toy_run
    evaluated = json.loads((wd / "eval.json").read_text())
    test = D.get_dataset("eight_gaussians", "test")
    ref = test.as_arrays(256)["x"]
    noise = np.asarray(jax.random.normal(jax.random.PRNGKey(5), ref.shape))
    untrained = float(distances.energy_distance(jnp.asarray(noise), jnp.asarray(ref)))
    for name in ("ode_euler", "sde_euler"):
        with np.load(wd / "samples" / f"{name}.npz") as f:
            x = f["samples"]
        q = evaluated["samplers"][name]["quality"]
        assert set(q) == {"energy", "sliced_w2", "mmd"}
        mine = float(distances.energy_distance(jnp.asarray(x), jnp.asarray(ref)))
        np.testing.assert_allclose(q["energy"]["value"], mine, rtol=1e-4, atol=1e-7)
        assert q["energy"]["floor_std"] > 0 and q["energy"]["n"] == 256
        assert q["energy"]["value"] < 0.2 * untrained  # training moved the samples onto the data

    # the NLL: the same 64 held-out points through flowjax.likelihood directly, with the
    # checkpoint's (EMA) parameters, give the reported per-point mean
    nll = evaluated["nll"]
    points = test.as_arrays(64)["x"]
    exp = experiment.setup(tiny_toy(), copy_run(toy_run, tmp_path))
    restored = experiment.restore(exp)
    direct = fj.likelihood.log_likelihood(
        fj.models.model_fn(exp.model, restored.params),
        exp.path,
        jnp.asarray(points),
        divergence="exact",
        solver="dopri5",
        rtol=1e-3,
        atol=1e-3,
    )
    chex.assert_tree_all_finite(direct.log_prob)
    np.testing.assert_allclose(nll["nll"], -float(np.mean(direct.log_prob)), rtol=1e-5)
    # the entropy comes from the oracle's density at the same 64 points
    exact = np.asarray(test.oracle.data_log_prob(jnp.asarray(points)), np.float64)
    np.testing.assert_allclose(nll["entropy"], -exact.mean(), rtol=1e-5)
    np.testing.assert_allclose(nll["nll"] - nll["entropy"], nll["nll_gap"], atol=1e-6)
    # The gap estimates KL(p_data || p_model) >= 0, so it is not below zero by more than its
    # (paired) noise. Upper bound: the model must fit the data better than the best Gaussian (the
    # training data's mean and covariance, 1.4 to 1.6 nats above the entropy: it knows nothing of
    # the 8 modes), compared point by point on the same 64 points. (This 40-step model is at
    # 1.44 +- 0.10 nats, the Gaussian at 1.59; the README's main job reaches 0.2 to 0.4.)
    assert nll["nll_gap"] > -3 * nll["nll_gap_stderr"] and nll["all_solves_succeeded"]
    train = D.get_dataset("eight_gaussians", "train").as_arrays()["x"].astype(np.float64)
    gaussian = _moment_matched_gaussian_log_prob(train, points.astype(np.float64))
    gaussian_gap = float(np.mean(exact - gaussian))
    assert 1.0 < gaussian_gap < 2.0  # in expectation log(2 pi e 8.25) - H(p) = 1.43 nats
    better = np.asarray(direct.log_prob, np.float64) - gaussian  # per point, paired
    assert nll["nll_gap"] < gaussian_gap and better.mean() > 0
    sweep = evaluated["nfe_sweep"]["curves"]["ode_euler"]
    assert [r["nfe"] for r in sweep] == [2, 4]
    assert sweep[0]["energy"] > sweep[1]["energy"]  # more steps, closer to the data


def test_sampling_reuses_matching_samples_and_redraws_changed_ones(toy_run, tmp_path):
    wd = copy_run(toy_run, tmp_path)
    cfg = tiny_toy()
    before = tree_digest(wd / "samples")
    sample_job.sample(cfg, wd)
    assert tree_digest(wd / "samples") == before
    cfg.sampling.samplers.ode_euler.num_steps = 3
    sample_job.sample(cfg, wd)
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
    exp = experiment.setup(cfg, wd)
    restored = experiment.restore(exp)
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
        train_job.train(cfg, wd)
    assert stop.value.code == 0
    monkeypatch.undo()
    assert T.Checkpointer(wd / "checkpoints").all_steps() == [10, 15]  # saved on the signal

    resumed = train_job.train(cfg, wd)
    assert (resumed.restored_step, resumed.start_step, resumed.step) == (15, 15, 30)
    straight = tmp_path / "straight"
    train_job.train(cfg, straight)
    chex.assert_trees_all_equal(
        _final_state(wd, cfg), _final_state(straight, cfg)
    )  # as if never interrupted

    # running the finished command again trains nothing and rewrites no checkpoint
    before = tree_digest(wd / "checkpoints")
    again = train_job.train(cfg, wd)
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
    "unknown key": (_unknown_key, schema.ConfigError, r"optim\.lrr.*did you mean 'optim\.lr'"),
    "unknown sampler key": (
        lambda: _with_sampler(num_stepz=3),
        schema.ConfigError,
        r"sampling\.samplers\.bad\.num_stepz",
    ),
    "unknown solver": (
        lambda: _with_sampler(solver="rk99"),
        schema.ConfigError,
        r"sampling\.samplers\.bad.*rk99.*euler",
    ),
    "sigma": (
        lambda: _with_sampler(method="sde", sigma="loud"),
        schema.ConfigError,
        r"sigma.*loud",
    ),
    "unknown path": (_bad(**{"path.name": "wiggly"}), schema.ConfigError, "wiggly"),
    "unknown prediction": (_bad(**{"loss.prediction": "noise"}), schema.ConfigError, "noise"),
    "unknown model": (_bad(**{"model.name": "transformer"}), schema.ConfigError, "model.name"),
    "unknown metric": (_bad(**{"eval.metrics": ("fid",)}), schema.ConfigError, "eval.metrics"),
    "sweep of a missing sampler": (
        _bad(**{"eval.nfe_sweep.samplers": ("nope",)}),
        schema.ConfigError,
        "nope",
    ),
    "guidance without classes": (
        lambda: _with_sampler(guidance_scale=2.0),
        schema.ConfigError,
        "guidance_scale",
    ),
    "classes of another data set": (
        _bad(**{"model.num_classes": 3}),
        schema.ConfigError,
        "8 classes",
    ),
    "unknown remat": (
        _bad(**{"training.remat": "all"}),
        schema.ConfigError,
        r"training\.remat.*blocks",
    ),
    "batch not divisible into micro-batches": (
        _bad(**{"training.grad_accum_steps": 3}),
        schema.ConfigError,
        r"batch_size.*128.*grad_accum_steps.*3",
    ),
    "likelihood solver": (
        _bad(**{"eval.nll.solver": "rk99"}),
        schema.ConfigError,
        "eval.nll.*rk99",
    ),
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
        evaluate.train_and_evaluate(make(), wd)
    assert tree_digest(wd) == before  # no checkpoint, sample, figure or number was written


def test_a_wrong_type_is_named():
    d = tiny_toy().to_dict()
    d["training"]["num_steps"] = "many"  # e.g. a config assembled from a dict
    with pytest.raises(schema.ConfigError, match=r"training\.num_steps.*int.*many"):
        schema.check_config(ml_collections.ConfigDict(d))


def test_an_unwritable_workdir_is_named(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match=r"a_file/run.*not writable"):
        evaluate.train_and_evaluate(tiny_toy(), blocker / "run")


def test_a_checkpoint_of_another_model_is_named_and_kept(toy_run, tmp_path):
    wd = copy_run(toy_run, tmp_path)
    before = tree_digest(wd / "checkpoints")
    cfg = tiny_toy()
    cfg.model.mlp.hidden = (16, 16)
    with pytest.raises(T.CheckpointLayoutError, match="another model"):
        train_job.train(cfg, wd)
    assert tree_digest(wd / "checkpoints") == before


def test_evaluating_without_a_checkpoint_says_to_train_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="train first"):
        evaluate.evaluate(tiny_toy(), tmp_path / "empty")


# ------------------------------------------------------------------ config sections to objects


def test_library_options_are_reachable_from_config_sections(tmp_path):
    """Sampler entries and eval.nll pass their keys through to the library objects."""
    cfg = tiny_toy()
    cfg.sampling.samplers.unlock()
    cfg.sampling.samplers.adaptive = default.sampler(
        solver="dopri5", adaptive=True, error_norm="rms", rtol=1e-3, max_steps=77
    )
    cfg.sampling.samplers.edm = default.sampler(
        method="edm", solver="heun", time_grid="edm", rho=5.0, churn=0.5, s_tmax=2.0
    )
    cfg.sampling.samplers.langevin = default.sampler(method="langevin", corrector_steps=3)
    cfg.eval.nll.shared_steps = True
    exp = experiment.setup(cfg, tmp_path / "wd")
    opts = samplers.sample_options(exp.samplers["adaptive"])
    assert opts["adaptive"] == fj.solvers.Adaptive(
        rtol=1e-3, atol=1e-5, error_norm="rms", max_steps=77
    )
    assert opts["solver"] == "dopri5" and opts["prediction"] == "velocity"
    opts = samplers.sample_options(exp.samplers["edm"])
    assert opts["method"] == fj.sampling.EDMStochastic(churn=0.5, s_tmax=2.0)
    assert opts["time_grid"] == fj.solvers.EDMGrid(rho=5.0) and opts["adaptive"] is False
    opts = samplers.sample_options(exp.samplers["langevin"])
    assert opts["method"] == fj.sampling.AnnealedLangevin(steps=3)
    assert samplers.sample_options(exp.samplers["ode_euler"])["solver"] == fj.solvers.Euler()
    assert exp.likelihood_kwargs["shared_steps"] is True
    assert exp.likelihood_kwargs["num_steps"] is None  # 0 in the config: adaptive steps
    assert not set(exp.likelihood_kwargs) & set(experiment.NLL_EVALUATOR_KEYS)


def test_workdir_files_are_written_whole_by_one_helper(tmp_path):
    target = tmp_path / "sub" / "x.json"
    io.write_json(target, {"b": np.float32(0.5), "a": (1, 2), "inf": float("inf"), "p": tmp_path})
    assert json.loads(target.read_text()) == {
        "a": [1, 2],
        "b": 0.5,
        "inf": "inf",
        "p": str(tmp_path),
    }
    io.write_npz(tmp_path / "y.npz", {"v": np.arange(3)})
    with np.load(tmp_path / "y.npz") as f:
        np.testing.assert_array_equal(f["v"], [0, 1, 2])
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["x.json", "y.npz"]


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
    schema.check_config(cfg)
    # the main job: flow matching on 2-D data, sampled with an ODE and an SDE, NLL and figures on
    assert cfg.loss.prediction == "velocity" and cfg.data.name in D.TOY_DATASETS
    methods = {s.method for s in cfg.sampling.samplers.values()}
    assert {"ode", "sde"} <= methods and cfg.eval.nll.enabled and cfg.figures.enabled
    # the README's Launching section launches the same config
    assert f"--config {given['config']} --workdir" in readme.split("## Launching", 1)[1]
