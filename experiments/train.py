"""Train, sample and evaluate an experiment from its config: the importable half of ``main.py``.

* :func:`train_and_evaluate` ``(config, workdir)``: train (resuming from the workdir's newest
  checkpoint), then :func:`evaluate`.
* :func:`train` ``(config, workdir)``: train only.
* :func:`sample` ``(config, workdir)``: draw samples with every configured sampler from the newest
  checkpoint; ``samples/<sampler>.npz`` and sample figures.
* :func:`evaluate` ``(config, workdir)``: samples, sample quality against held-out data with
  finite-sample floors, NLL (and the exact NLL gap where the data's density is known) or bits/dim,
  NFE against quality, Frechet distances for images, figures; ``eval.json``.

Every entry point first checks everything it can before doing any work (:func:`setup`): unknown
config keys, wrong types, unknown names (paths, predictions, samplers, solvers), a workdir that
cannot be written, a data set that is not prepared, a missing Inception weights file. Nothing in
``flowjax/`` reads configs: this module unpacks them into keyword arguments.

The workdir::

    config.json      the resolved config of the last training run
    checkpoints/     flowjax.training.Checkpointer (train state + data-iterator position)
    metrics.jsonl    training metrics (flowjax.training.MetricWriter; TensorBoard events beside it)
    samples/*.npz    samples, labels, NFE and the settings that produced them (JSON)
    figures/*.png    each with a .json sidecar of its settings
    eval.json        every number, with the sampler settings and NFE behind it
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import evaluation as E
from experiments import figures as F
from experiments.configs import default as default_config
from flowjax import convert, parallel
from flowjax import data as D
from flowjax import likelihood as LL
from flowjax import losses as L
from flowjax import models as M
from flowjax import sampling as S
from flowjax import solvers as SV
from flowjax import training as T
from flowjax.paths import AbstractPath, get_path

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "EVAL_FILE",
    "FIGURES_DIR",
    "SAMPLES_DIR",
    "ConfigError",
    "Experiment",
    "check_config",
    "evaluate",
    "sample",
    "setup",
    "train",
    "train_and_evaluate",
]

CONFIG_FILE = "config.json"
EVAL_FILE = "eval.json"
CHECKPOINT_DIR = "checkpoints"
SAMPLES_DIR = "samples"
FIGURES_DIR = "figures"
METRICS_FILE = "metrics.jsonl"

# Sections of the schema whose keys are free: path keyword arguments, named samplers.
_OPEN_SECTIONS = ("path.options", "sampling.samplers")


class ConfigError(ValueError):
    """A config that cannot run: an unknown key, a wrong type or value (the message names it)."""


def _log(msg: str) -> None:
    if jax.process_index() == 0:
        print(f"[flowjax] {msg}", flush=True)


# ============================================================================ config checks


def _flat_keys(cfg: Any, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in cfg.items():
        name = f"{prefix}{k}"
        if isinstance(v, (ml_collections.ConfigDict, dict)) and name not in _OPEN_SECTIONS:
            out.update(_flat_keys(v, name + "."))
        else:
            out[name] = v
    return out


def _type_error(key: str, value: Any, want: Any) -> str | None:
    if want is None or value is None:
        return None  # placeholders take a value of their type (ml_collections checks overrides)
    if isinstance(want, bool):
        ok = isinstance(value, bool)
    elif isinstance(want, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(want, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(want, str):
        ok = isinstance(value, str)
    elif isinstance(want, (tuple, list)):
        ok = isinstance(value, (tuple, list))
    else:
        ok = True
    if ok:
        return None
    return (
        f"config key {key!r} must be of type {type(want).__name__} (like its default "
        f"{want!r}); got {value!r} ({type(value).__name__})"
    )


def check_config(config: ml_collections.ConfigDict) -> None:
    """Reject keys that the default config (the schema) does not have, and values of the wrong type.

    Raises:
      ConfigError: naming the key (with the closest valid key), or the key and the expected type.
    """
    if not isinstance(config, (ml_collections.ConfigDict, dict)):
        raise ConfigError(
            f"config must be an ml_collections.ConfigDict; got {type(config).__name__}"
        )
    schema = _flat_keys(default_config.get_config())
    given = _flat_keys(config)
    unknown = sorted(set(given) - set(schema))
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, list(schema), n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(
            f"unknown config key(s): {', '.join(hints)}. Valid keys are those of "
            "experiments/configs/default.py"
        )
    problems = [p for k, v in given.items() if (p := _type_error(k, v, schema.get(k)))]
    for name, entry in config.sampling.samplers.items():
        if not isinstance(entry, (ml_collections.ConfigDict, dict)):
            problems.append(f"sampling.samplers.{name} must be a config dict (see default.sampler)")
            continue
        for k, v in entry.items():
            key = f"sampling.samplers.{name}.{k}"
            if k not in default_config.SAMPLER_DEFAULTS:
                close = difflib.get_close_matches(k, list(default_config.SAMPLER_DEFAULTS), n=1)
                problems.append(
                    f"unknown config key {key!r}"
                    + (f" (did you mean {close[0]!r}?)" if close else "")
                )
            elif p := _type_error(key, v, default_config.SAMPLER_DEFAULTS[k]):
                problems.append(p)
    if problems:
        raise ConfigError("; ".join(problems))


def _choice(value: str, valid: tuple[str, ...], key: str) -> str:
    if value not in valid:
        raise ConfigError(f"config key {key!r} is {value!r}; valid choices are: {', '.join(valid)}")
    return value


# ============================================================================ the experiment


@dataclasses.dataclass
class Experiment:
    """Everything built from a config, before any work: data, model, path, loss, samplers."""

    config: ml_collections.ConfigDict
    workdir: Path
    train_ds: D.Dataset
    eval_ds: D.Dataset
    path: AbstractPath
    model: Any
    num_classes: int | None
    shape: tuple[int, ...]
    loss_fn: L.LossFn
    optimizer: Any
    mesh: Any
    samplers: dict[str, dict[str, Any]]
    sampler_settings: dict[str, dict[str, Any]]
    likelihood_kwargs: dict[str, Any]

    @property
    def prediction(self) -> str:
        return self.config.loss.prediction

    @property
    def low_dim(self) -> bool:
        return not self.train_ds.is_image

    def file(self, *parts: str) -> Path:
        return self.workdir.joinpath(*parts)


def _prepare_workdir(workdir: str | os.PathLike) -> Path:
    if not workdir:
        raise ConfigError("--workdir is required (where checkpoints, samples and figures go)")
    path = Path(workdir).expanduser().absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_test_{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"workdir {str(path)!r} is not writable ({type(err).__name__}: {err}); choose another "
            "--workdir"
        ) from err
    return path


def _datasets(cfg: ml_collections.ConfigDict) -> tuple[D.Dataset, D.Dataset]:
    dc = cfg.data
    toy = dc.name in D.TOY_DATASETS
    common: dict[str, Any] = {}
    if not toy:
        for key in ("num_train", "num_eval"):
            if dc[key] is not None:
                raise ConfigError(f"config key 'data.{key}' applies to toy data sets only")
        common = {
            "data_dir": dc.data_dir or None,
            "dequantize": bool(dc.dequantize),
            "random_flip": dc.random_flip,
            "in_memory": dc.in_memory,
        }
        if dc.name == "digits":
            common = {"dequantize": bool(dc.dequantize), "random_flip": dc.random_flip}
    train_ds = D.get_dataset(
        dc.name, dc.train_split, seed=cfg.seed, num_examples=dc.num_train if toy else None, **common
    )
    eval_common = dict(common)
    eval_common.pop("random_flip", None)
    eval_ds = D.get_dataset(
        dc.name,
        dc.eval_split,
        seed=cfg.seed,
        num_examples=dc.num_eval if toy else None,
        **eval_common,
    )
    return train_ds, eval_ds


def _make_model(cfg: ml_collections.ConfigDict, num_classes: int | None) -> Any:
    mc = cfg.model
    dtype = None if mc.dtype == "float32" else jnp.dtype(mc.dtype)
    _choice(mc.name, ("mlp", "unet"), "model.name")
    sub = mc.mlp if mc.name == "mlp" else mc.unet
    _choice(sub.time_input, M.TIME_INPUTS, f"model.{mc.name}.time_input")
    _choice(sub.time_embedding, M.TIME_EMBEDDINGS, f"model.{mc.name}.time_embedding")
    # What the network sees as time: log_snr / edm are functions of the path's alpha and beta.
    time_kw = {
        "time_input": sub.time_input,
        "time_embedding": sub.time_embedding,
        "sinusoidal_scale": sub.sinusoidal_scale,
        "fourier_scale": sub.fourier_scale,
    }
    if sub.time_input != "t":
        time_kw["path"] = get_path(cfg.path.name, **dict(cfg.path.options))
    if mc.name == "mlp":
        return M.MLP(
            hidden=tuple(mc.mlp.hidden),
            activation=mc.mlp.activation,
            time_embed_dim=mc.mlp.time_embed_dim,
            num_classes=num_classes,
            dtype=dtype,
            **time_kw,
        )
    u = mc.unet
    return M.UNet(
        channels=u.channels,
        channel_mults=tuple(u.channel_mults),
        num_res_blocks=u.num_res_blocks,
        attention_resolutions=None
        if u.attention_resolutions is None
        else tuple(u.attention_resolutions),
        dropout=u.dropout,
        num_classes=num_classes,
        num_groups=u.num_groups,
        head_dim=u.head_dim,
        dtype=dtype,
        **time_kw,
    )


def _parse_sigma(value: str, key: str) -> float | str:
    if value in S.SIGMA_NAMES:
        return value
    try:
        sigma = float(value)
    except ValueError:
        raise ConfigError(
            f"config key {key!r} is {value!r}; give a number >= 0 or one of {S.SIGMA_NAMES}"
        ) from None
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise ConfigError(f"config key {key!r} must be >= 0; got {value!r}")
    return sigma


def _sampler_entry(entry: Any) -> dict[str, Any]:
    full = dict(default_config.SAMPLER_DEFAULTS)
    full.update(dict(entry))
    return full


def _sampler_kwargs(name: str, entry: Mapping[str, Any], prediction: str) -> dict[str, Any]:
    """A sampler entry's settings, parsed and checked (flat, as in the config; guidance apart).

    :func:`_sample_options` turns them into ``flowjax.sampling.sample`` arguments.
    """
    key = f"sampling.samplers.{name}"
    method = _choice(entry["method"], tuple(S.SAMPLING_METHODS), f"{key}.method")
    sigma = _parse_sigma(entry["sigma"], f"{key}.sigma")
    corrector_steps = int(entry["corrector_steps"])
    if method in ("ode", "langevin", "edm") and sigma != 0.0:
        raise ConfigError(
            f"config key '{key}.sigma' is {entry['sigma']!r} but method {method!r} adds no SDE "
            "noise; use method 'sde' (or 'pc')"
        )
    if entry["backend"] != "auto" and entry["solver"] != "euler":
        raise ConfigError(
            f"config key '{key}.backend' chooses the loop of solver 'euler'; solver is "
            f"{entry['solver']!r}"
        )
    if method in ("ode", "sde", "edm") and corrector_steps:
        raise ConfigError(
            f"config key '{key}.corrector_steps' applies to methods 'pc' and 'langevin'; "
            f"method is {method!r}"
        )
    return {
        "prediction": prediction,
        "method": method,
        "solver": entry["solver"],
        "num_steps": int(entry["num_steps"]),
        "adaptive": bool(entry["adaptive"]),
        "rtol": float(entry["rtol"]),
        "atol": float(entry["atol"]),
        "error_norm": entry["error_norm"],
        "max_steps": int(entry["max_steps"]),
        "time_grid": entry["time_grid"],
        "rho": float(entry["rho"]),
        "t_start": entry["t_start"],
        "t_end": entry["t_end"],
        "sigma": sigma,
        "denoise_final": bool(entry["denoise_final"]),
        "corrector_steps": corrector_steps,
        "snr": float(entry["snr"]),
        "churn": float(entry["churn"]),
        "s_tmin": float(entry["s_tmin"]),
        "s_tmax": math.inf if entry["s_tmax"] is None else float(entry["s_tmax"]),
        "s_noise": float(entry["s_noise"]),
        "backend": entry["backend"],
    }


def _sample_options(kw: Mapping[str, Any]) -> dict[str, Any]:
    """``flowjax.sampling.sample`` keyword arguments (method, solver, grid, step objects) of
    :func:`_sampler_kwargs`' flat settings."""
    method = {
        "ode": lambda: S.ODE(),
        "sde": lambda: S.SDE(sigma=kw["sigma"]),
        "pc": lambda: S.PredictorCorrector(
            sigma=kw["sigma"], corrector_steps=kw["corrector_steps"], snr=kw["snr"]
        ),
        "langevin": lambda: S.AnnealedLangevin(steps=kw["corrector_steps"], snr=kw["snr"]),
        "edm": lambda: S.EDMStochastic(
            churn=kw["churn"], s_tmin=kw["s_tmin"], s_tmax=kw["s_tmax"], s_noise=kw["s_noise"]
        ),
    }[kw["method"]]()
    solver = kw["solver"]
    if solver == "euler":
        solver = SV.Euler(backend=kw["backend"])  # the fixed-grid loop is Euler's option
    grid = kw["time_grid"]
    if grid == "edm":
        grid = SV.EDMGrid(rho=kw["rho"])
    adaptive = kw["adaptive"] and SV.Adaptive(
        rtol=kw["rtol"], atol=kw["atol"], error_norm=kw["error_norm"], max_steps=kw["max_steps"]
    )
    return {
        "prediction": kw["prediction"],
        "method": method,
        "solver": solver,
        "num_steps": kw["num_steps"],
        "time_grid": grid,
        "adaptive": adaptive,
        "t_start": kw["t_start"],
        "t_end": kw["t_end"],
        "denoise_final": kw["denoise_final"],
    }


class _Probe(eqx.Module):
    """A stand-in model (``-x``) for tracing samplers and likelihoods without running them."""

    def __call__(self, x, t, label=None):
        return -x


def _check_traces(name: str, fn: Callable[[], Any]) -> None:
    """Trace ``fn`` abstractly (no computation): its argument checks run now, not after training."""
    try:
        jax.eval_shape(fn)
    except (ValueError, TypeError, KeyError) as err:
        raise ConfigError(f"{name}: {err}") from err


def _likelihood_kwargs(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    nll = cfg.eval.nll
    return {
        "prediction": cfg.loss.prediction,
        "divergence": nll.divergence,
        "num_probes": int(nll.num_probes),
        "solver": nll.solver,
        "num_steps": int(nll.num_steps) or None,
        "rtol": float(nll.rtol),
        "atol": float(nll.atol),
    }


def setup(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> Experiment:
    """Check the config and build the experiment; raises before any training or file is written
    (except a probe of the workdir)."""
    check_config(config)
    cfg = config
    if cfg.training.num_steps < 0 or cfg.training.batch_size < 1:
        raise ConfigError(
            "config keys 'training.num_steps' >= 0 and 'training.batch_size' >= 1 are required; got "
            f"{cfg.training.num_steps}, {cfg.training.batch_size}"
        )
    if not 0.0 <= cfg.training.ema_decay < 1.0:
        raise ConfigError(
            f"config key 'training.ema_decay' must lie in [0, 1); got {cfg.training.ema_decay}"
        )
    for key in cfg.eval.metrics:
        _choice(key, E.STATISTICS, "eval.metrics")
    workdir = _prepare_workdir(workdir)
    train_ds, eval_ds = _datasets(cfg)
    if train_ds.shape != eval_ds.shape:
        raise ConfigError(
            f"train and eval splits differ in shape: {train_ds.shape}, {eval_ds.shape}"
        )
    k = cfg.model.num_classes
    num_classes = None
    if k:
        if train_ds.num_classes is None:
            raise ConfigError(
                f"model.num_classes = {k} but data set {cfg.data.name!r} has no labels"
            )
        if k != train_ds.num_classes:
            raise ConfigError(
                f"config key 'model.num_classes' is {k} but data set {cfg.data.name!r} has "
                f"{train_ds.num_classes} classes (use {train_ds.num_classes}, or 0: unconditional)"
            )
        num_classes = int(k)
    elif cfg.loss.label_dropout:
        raise ConfigError("config key 'loss.label_dropout' > 0 needs model.num_classes > 0")

    try:
        path = get_path(cfg.path.name, **dict(cfg.path.options))
    except TypeError as err:
        raise ConfigError(
            f"config keys 'path.options' do not fit path {cfg.path.name!r}: {err}"
        ) from err
    except ValueError as err:
        raise ConfigError(f"config key 'path.name': {err}") from err
    try:
        model = _make_model(cfg, num_classes)
    except ValueError as err:
        raise ConfigError(f"config section 'model': {err}") from err
    lc = cfg.loss
    try:
        loss_fn = L.make_loss(
            M.make_apply_fn(model),
            path,
            prediction=lc.prediction,
            weighting=lc.weighting,
            time_sampler=lc.time_sampler,
            t_margin=lc.t_margin,
            label_dropout=lc.label_dropout,
            num_classes=num_classes,
            coupling=lc.coupling or None,
            reduction=lc.reduction,
            min_snr_gamma=lc.min_snr_gamma,
        )
        oc = cfg.optim
        optimizer = T.make_optimizer(
            oc.name,
            oc.lr,
            schedule=oc.schedule,
            warmup_steps=oc.warmup_steps,
            total_steps=max(cfg.training.num_steps, oc.warmup_steps + 1),
            end_lr=oc.end_lr,
            weight_decay=oc.weight_decay,
            b1=oc.b1,
            b2=oc.b2,
            eps=oc.eps,
            grad_clip=oc.grad_clip,
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err

    mesh = parallel.make_mesh()
    n_dev = jax.device_count()
    _choice(cfg.training.remat, ("none", "blocks", "dots", "blocks_dots"), "training.remat")
    _choice(cfg.training.parallelism, T.PARALLELISMS, "training.parallelism")
    accum = cfg.training.grad_accum_steps
    if accum < 1 or cfg.training.batch_size % (n_dev * accum):
        raise ConfigError(
            f"config key 'training.batch_size' = {cfg.training.batch_size} must be divisible by the "
            f"{n_dev} devices times 'training.grad_accum_steps' = {accum} (>= 1)"
        )
    if cfg.training.batch_size > train_ds.num_examples:
        raise ConfigError(
            f"config key 'training.batch_size' = {cfg.training.batch_size} exceeds the "
            f"{train_ds.num_examples} training examples of {cfg.data.name!r}"
        )

    # Samplers and likelihood settings: traced abstractly with a stand-in model, so a bad name or
    # an impossible combination fails now rather than after training.
    probe = _Probe()
    shape = tuple(train_ds.shape)
    key = jax.random.PRNGKey(0)
    samplers, settings = {}, {}
    for name, raw in cfg.sampling.samplers.items():
        entry = _sampler_entry(raw)
        kw = _sampler_kwargs(name, entry, lc.prediction)
        w = entry["guidance_scale"]
        if w is not None and num_classes is None:
            raise ConfigError(
                f"sampling.samplers.{name}.guidance_scale needs a class-conditional model "
                "(model.num_classes > 0)"
            )
        labels = None if num_classes is None else np.zeros((2,), np.int32)
        probe_fn, cond = _conditioned(probe, num_classes, w, labels)
        _check_traces(
            f"sampling.samplers.{name}",
            lambda kw=kw, fn=probe_fn, cond=cond: (
                S.sample(fn, path, key, (2, *shape), **_sample_options(kw), **cond).samples
            ),
        )
        samplers[name] = {**kw, "guidance_scale": w}
        settings[name] = entry
    for name in cfg.eval.nfe_sweep.samplers:
        if name not in samplers:
            raise ConfigError(
                f"config key 'eval.nfe_sweep.samplers' names {name!r}, which is not a sampler; "
                f"samplers: {', '.join(samplers) or 'none'}"
            )
    lk = _likelihood_kwargs(cfg)
    if cfg.eval.nll.enabled:
        cond = {"cond": jnp.zeros((2,), jnp.int32)} if num_classes is not None else {}
        _check_traces(
            "eval.nll",
            lambda: (
                LL.log_likelihood(
                    probe, path, jnp.zeros((2, *shape)), key=key, **lk, **cond
                ).log_prob
            ),
        )
    if cfg.eval.inception:
        if not train_ds.is_image:
            raise ConfigError("eval.inception applies to image data sets only")
        if not cfg.eval.inception_weights:
            raise E.InceptionWeightsError(E.INCEPTION_WEIGHTS_HELP)
        if not Path(cfg.eval.inception_weights).expanduser().is_file():
            raise FileNotFoundError(
                f"Inception weights file {cfg.eval.inception_weights!r} "
                "(config.eval.inception_weights) does not exist"
            )
    return Experiment(
        config=cfg,
        workdir=workdir,
        train_ds=train_ds,
        eval_ds=eval_ds,
        path=path,
        model=model,
        num_classes=num_classes,
        shape=shape,
        loss_fn=loss_fn,
        optimizer=optimizer,
        mesh=mesh,
        samplers=samplers,
        sampler_settings=settings,
        likelihood_kwargs=lk,
    )


# ============================================================================ files


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (ml_collections.ConfigDict, Mapping)):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.generic, jax.Array)):
        return _jsonable(np.asarray(obj).item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _write_json(path: Path, obj: Any) -> None:
    if jax.process_index() != 0:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _config_dict(cfg: ml_collections.ConfigDict) -> dict:
    return _jsonable(cfg.to_dict())


def _write_config(exp: Experiment) -> None:
    new = _config_dict(exp.config)
    path = exp.file(CONFIG_FILE)
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if old is not None and old != new:
            a, b = _flat_keys(old), _flat_keys(new)
            changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            _log(
                f"{CONFIG_FILE}: the config differs from the previous run's in "
                + ", ".join(f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in changed[:10])
            )
    _write_json(path, new)


# ============================================================================ training


def _example_inputs(exp: Experiment) -> tuple[Any, Any]:
    x = jnp.zeros((1, *exp.shape), jnp.float32)
    label = jnp.zeros((1,), jnp.int32) if exp.num_classes is not None else None
    return x, label


def _keys(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    root = jax.random.PRNGKey(cfg.seed)
    names = ("init", "state", "sample", "eval", "figures")
    return {n: jax.random.fold_in(root, i) for i, n in enumerate(names)}


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> T.TrainResult:
    """Train (resuming from the workdir's newest intact checkpoint) to ``training.num_steps``."""
    return _train(setup(config, workdir))


def _train(exp: Experiment) -> T.TrainResult:
    cfg, tc = exp.config, exp.config.training
    keys = _keys(cfg)
    x, label = _example_inputs(exp)
    params = M.init(exp.model, keys["init"], x, label_example=label)
    state = T.create_train_state(params, exp.optimizer, keys["state"], ema=tc.ema_decay > 0)
    step = T.make_train_step(
        exp.loss_fn,
        exp.optimizer,
        mesh=exp.mesh,
        ema_decay=tc.ema_decay or None,
        ema_warmup=tc.ema_warmup,
        grad_accum_steps=tc.grad_accum_steps,
        remat=None if tc.remat == "none" else tc.remat,
        parallelism=tc.parallelism,
    )
    it = D.make_iterator(exp.train_ds, global_batch_size=tc.batch_size, seed=cfg.seed)
    ckpt = T.Checkpointer(exp.file(CHECKPOINT_DIR), max_to_keep=tc.max_to_keep)
    latest = ckpt.latest_step()
    _log(
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
            metadata={"config": _config_dict(cfg)},
        )
    finally:
        writer.close()
        ckpt.close()
    done = result.step - result.start_step
    _log(
        f"trained {done} steps in {time.perf_counter() - t0:.1f} s (now at step {result.step}); "
        f"checkpoints in {exp.file(CHECKPOINT_DIR)}"
    )
    return result


# ============================================================================ restoring


@dataclasses.dataclass
class _Restored:
    params: Any  # local (process-addressable) copy of the evaluated parameters
    step: int
    ema: bool
    fingerprint: list[int]


def _local_copy(tree: Any) -> Any:
    """Host copies of (possibly multi-process replicated) arrays, put on this process's devices."""

    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            a = a.addressable_data(0)
        return jnp.asarray(np.asarray(a))

    return jax.tree.map(one, tree)


def _restore(exp: Experiment) -> _Restored:
    ckpt_dir = exp.file(CHECKPOINT_DIR)
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(
            f"no checkpoints in {str(ckpt_dir)!r}: train first (--mode=train or --mode=all)"
        )
    cfg = exp.config
    x, label = _example_inputs(exp)
    ema = cfg.training.ema_decay > 0

    def make(key):
        params = M.init(exp.model, key, x, label_example=label)
        return T.create_train_state(params, exp.optimizer, key, ema=ema)

    abstract = jax.eval_shape(make, jax.random.PRNGKey(0))
    target = T.abstract_state(abstract, sharding=parallel.replicated(exp.mesh))
    with T.Checkpointer(ckpt_dir, max_to_keep=cfg.training.max_to_keep) as ckpt:
        restored = ckpt.restore(target)
    if restored is None:
        raise FileNotFoundError(
            f"no intact checkpoint in {str(ckpt_dir)!r}: train first (--mode=train or --mode=all)"
        )
    state = restored.state
    use_ema = cfg.sampling.use_ema and state.ema_params is not None
    params = _local_copy(state.ema_params if use_ema else state.params)
    return _Restored(
        params=params,
        step=int(restored.step),
        ema=bool(use_ema),
        fingerprint=T.state_fingerprint(params),
    )


# ============================================================================ sampling


@dataclasses.dataclass
class SampleSet:
    """Samples of one sampler with what produced them."""

    name: str
    samples: np.ndarray
    labels: np.ndarray | None
    nfe: float  # mean model evaluations per sample (per chunk; adaptive solvers vary)
    nfe_max: int
    seconds: float  # wall time including compilation
    settings: dict[str, Any]
    reused: bool = False


def _eval_mesh() -> Any:
    return parallel.make_mesh(devices=jax.local_devices())


def _batch_sharding(batch: int) -> Any:
    n = jax.local_device_count()
    if n == 1 or batch % n:
        return None
    return parallel.batch_sharding(_eval_mesh())


def _labels(exp: Experiment, start: int, n: int) -> np.ndarray | None:
    if exp.num_classes is None:
        return None
    return (np.arange(start, start + n) % exp.num_classes).astype(np.int32)


def _conditioned(
    fn: Any, num_classes: int | None, guidance_scale: float | None, labels: np.ndarray | None
) -> tuple[Any, dict[str, Any]]:
    """The model to sample and the ``cond`` argument: class labels as ``cond``, or the
    classifier-free-guided model (null label ``K``) when the sampler has a guidance scale."""
    if labels is None:
        return fn, {}
    if guidance_scale is None:
        return fn, {"cond": jnp.asarray(labels)}
    null = jnp.asarray(num_classes, jnp.int32)
    return S.guided_model(fn, jnp.asarray(labels), null, float(guidance_scale)), {}


def _cond_kwargs(
    exp: Experiment, fn: Any, kw: Mapping[str, Any], labels: np.ndarray | None
) -> tuple[Any, dict[str, Any]]:
    """:func:`_conditioned` for an experiment's sampler entry ``kw``."""
    return _conditioned(fn, exp.num_classes, kw.get("guidance_scale"), labels)


def _draw(
    exp: Experiment,
    fn: Any,
    kw: Mapping[str, Any],
    num: int,
    batch: int,
    key: Any,
    **extra: Any,
) -> tuple[np.ndarray, np.ndarray | None, list[int], float]:
    """``num`` samples in chunks of ``batch`` (all chunks full-size: one compilation)."""
    batch = min(batch, num)
    sharding = _batch_sharding(batch)
    chunks, labels, nfes = [], [], []
    t0 = time.perf_counter()
    base = _sample_options(kw)
    base.update(extra)
    for i, start in enumerate(range(0, num, batch)):
        lab = _labels(exp, start, batch)
        model, cond = _cond_kwargs(exp, fn, kw, lab)
        res = S.sample(
            model,
            exp.path,
            jax.random.fold_in(key, i),
            (batch, *exp.shape),
            sharding=sharding,
            **base,
            **cond,
        )
        chunks.append(np.asarray(res.samples))
        nfes.append(int(res.nfe))
        if lab is not None:
            labels.append(lab)
    samples = np.concatenate(chunks)[:num]
    lab = np.concatenate(labels)[:num] if labels else None
    return samples, lab, nfes, time.perf_counter() - t0


def _sample_settings(exp: Experiment, name: str, restored: _Restored) -> dict[str, Any]:
    cfg = exp.config
    return {
        "sampler": name,
        **exp.sampler_settings[name],
        "prediction": exp.prediction,
        "path": cfg.path.name,
        "path_options": dict(cfg.path.options),
        "num_samples": cfg.sampling.num_samples,
        "batch_size": cfg.sampling.batch_size,
        "seed": cfg.seed,
        "checkpoint_step": restored.step,
        "ema": restored.ema,
        "params_fingerprint": restored.fingerprint,
        "class_labels": "i % num_classes" if exp.num_classes else None,
        "starting_noise": "shared by all samplers (same key)",
    }


def _samples(exp: Experiment, fn: Any, restored: _Restored) -> dict[str, SampleSet]:
    """Draw (or reuse from ``samples/``, when their settings match exactly) every sampler's samples."""
    cfg = exp.config
    key = _keys(cfg)["sample"]
    out = {}
    for name, kw in exp.samplers.items():
        settings = _jsonable(_sample_settings(exp, name, restored))
        path = exp.file(SAMPLES_DIR, f"{name}.npz")
        if path.exists():
            try:
                with np.load(path) as f:
                    if json.loads(str(f["settings"])) == settings:
                        out[name] = SampleSet(
                            name=name,
                            samples=f["samples"],
                            labels=f["labels"] if "labels" in f.files else None,
                            nfe=float(np.mean(f["nfe"])),
                            nfe_max=int(np.max(f["nfe"])),
                            seconds=float(f["seconds"]),
                            settings=settings,
                            reused=True,
                        )
                        _log(f"samples/{name}.npz: reused (same settings)")
                        continue
            except (OSError, ValueError, KeyError):
                pass
        x, lab, nfes, secs = _draw(
            exp, fn, kw, cfg.sampling.num_samples, cfg.sampling.batch_size, key
        )
        s = SampleSet(name, x, lab, float(np.mean(nfes)), int(np.max(nfes)), secs, settings)
        out[name] = s
        _log(f"sampler {name}: {len(x)} samples, NFE {s.nfe:g}, {secs:.1f} s (with compilation)")
        if jax.process_index() == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            arrays = {
                "samples": x,
                "nfe": np.asarray(nfes),
                "seconds": np.asarray(secs),
                "settings": np.asarray(json.dumps(settings, sort_keys=True)),
            }
            if lab is not None:
                arrays["labels"] = lab
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.npz")
            np.savez(tmp, **arrays)
            tmp.replace(path)
    return out


def sample(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Path]:
    """Draw samples with every configured sampler from the newest checkpoint.

    Writes ``samples/<sampler>.npz`` (``samples``, ``labels`` for conditional models, ``nfe`` per
    chunk, ``seconds``, ``settings`` as JSON) and the sample figures. Returns the npz paths.
    """
    exp = setup(config, workdir)
    restored = _restore(exp)
    fn = M.model_fn(exp.model, restored.params)
    sets = _samples(exp, fn, restored)
    if exp.config.figures.enabled and jax.process_index() == 0:
        ref = _reference(exp, max(exp.config.figures.num_points, 1))
        for s in sets.values():
            _sample_figure(exp, s, ref, restored)
    return {name: exp.file(SAMPLES_DIR, f"{name}.npz") for name in sets}


# ============================================================================ evaluation


def _reference(exp: Experiment, n: int, split: str = "eval") -> dict[str, np.ndarray]:
    """Held-out data in the representation the model was trained on (images: the training
    transform's scaling or dequantization, no flips): ``{"x", "label", "levels"}``."""
    ds = exp.eval_ds if split == "eval" else exp.train_ds
    n = min(n, ds.num_examples)
    if ds.is_image:
        transform = D.ImageTransform(
            num_levels=ds.num_levels,
            value_range=ds.value_range,
            dequantize=bool(exp.config.data.dequantize),
            keep_levels=True,
        )
    else:
        transform = D.IdentityTransform()
    it = D.make_iterator(
        ds.source,
        global_batch_size=n,
        seed=exp.config.seed + (0 if split == "eval" else 1),
        shuffle=split != "eval",
        transform=transform,
        process_index=0,
        process_count=1,
    )
    return next(it)


def _floor_source(exp: Experiment) -> dict[str, Any]:
    name = exp.config.data.name
    if name in D.TOY_DATASETS:
        fn = jax.jit(lambda k, n: D.toy_sample(name, k, n, jnp.float32), static_argnums=1)
        return {"sampler": fn, "law": f"toy distribution {name!r} (fresh samples)"}
    pool = np.concatenate(
        [_reference(exp, exp.train_ds.num_examples, "train")["x"], _reference(exp, 10**9)["x"]]
    )
    return {"pool": pool.reshape(len(pool), -1), "law": "disjoint subsets of train + eval data"}


def _nll(exp: Experiment, fn: Any, key: Any) -> dict[str, Any]:
    """NLL (nats) of held-out points, the exact gap where the density is known; images: bits/dim."""
    cfg, nc = exp.config, exp.config.eval.nll
    ref = _reference(exp, nc.num_examples)
    n = len(ref["x"])
    batch = min(nc.batch_size, n)
    lps, nfes, ok = [], [], []
    t0 = time.perf_counter()
    for i, start in enumerate(range(0, n, batch)):
        stop = min(start + batch, n)
        k = jax.random.fold_in(key, i)
        sl = slice(start, start + batch) if stop - start == batch else slice(n - batch, n)
        cond = {"cond": jnp.asarray(ref["label"][sl])} if exp.num_classes is not None else {}
        if exp.train_ds.is_image:
            bpd, res = LL.image_bits_per_dim(
                fn,
                exp.path,
                ref["levels"][sl],
                k,
                num_levels=exp.train_ds.num_levels,
                data_range=exp.train_ds.value_range,
                num_dequantizations=int(nc.num_dequantizations),
                **exp.likelihood_kwargs,
                **cond,
            )
            lp = -np.asarray(bpd, np.float64)  # collected as -bpd, converted below
        else:
            res = LL.log_likelihood(
                fn, exp.path, jnp.asarray(ref["x"][sl]), key=k, **exp.likelihood_kwargs, **cond
            )
            lp = np.asarray(res.log_prob, np.float64)
        keep = stop - start
        lps.append(lp[-keep:] if sl.start != start else lp[:keep])
        nfes.append(np.asarray(res.nfe)[-keep:])
        ok.append(np.asarray(res.success)[-keep:])
    secs = time.perf_counter() - t0
    values = np.concatenate(lps)
    nfe = np.concatenate(nfes)
    settings = {
        **exp.likelihood_kwargs,
        "num_examples": n,
        "split": cfg.data.eval_split,
        "time_range": list(LL.likelihood_time_range(exp.path, exp.prediction)),
        "prior": "the path's Gaussian prior N(0, beta(t_start)^2 I)",
        "conditional": exp.num_classes is not None,
    }
    out: dict[str, Any] = {
        "settings": settings,
        "nfe_mean": float(nfe.mean()),
        "nfe_max": int(nfe.max()),
        "all_solves_succeeded": bool(np.all(np.concatenate(ok))),
        "seconds": secs,
    }
    if exp.train_ds.is_image:
        bpd = -values
        out.update(
            {
                "bits_per_dim": float(bpd.mean()),
                "bits_per_dim_stderr": float(bpd.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
                "num_examples": n,
                "num_levels": exp.train_ds.num_levels,
                "dequantization": "uniform, averaged over num_dequantizations draws",
            }
        )
        return out
    exact_fn = E.exact_log_prob_fn(exp.eval_ds)
    exact = None
    if exact_fn is not None:
        labels = jnp.asarray(ref["label"]) if exp.num_classes is not None else None
        exact = np.asarray(exact_fn(jnp.asarray(ref["x"]), labels), np.float64)
        out["exact_density"] = (
            "oracle Gaussian mixture" if exp.eval_ds.oracle is not None else "checkerboard: 1/32"
        )
    out.update(E.nll_summary(values, exact))
    return out


def _sweep(
    exp: Experiment,
    fn: Any,
    metric_fn: Callable[[np.ndarray], float] | None,
    metric: str,
    key: Any,
) -> dict[str, list[dict[str, Any]]]:
    """Quality against NFE: each swept sampler at several step counts (fixed) or tolerances."""
    sc = exp.config.eval.nfe_sweep
    if metric_fn is None or not sc.samplers:
        return {}
    curves: dict[str, list[dict[str, Any]]] = {}
    for name in sc.samplers:
        kw = exp.samplers[name]
        if kw["adaptive"]:
            variants = [{"rtol": float(tol), "atol": float(tol)} for tol in sc.tolerances]
        else:
            variants = [{"num_steps": int(n)} for n in sc.num_steps]
        rows = []
        for var in variants:
            x, _, nfes, secs = _draw(exp, fn, {**kw, **var}, sc.num_samples, sc.num_samples, key)
            rows.append({**var, "nfe": float(np.mean(nfes)), metric: metric_fn(x), "seconds": secs})
        curves[name] = rows
        _log(
            f"NFE sweep {name}: "
            + ", ".join(f"NFE {r['nfe']:g}: {metric} {r[metric]:.4g}" for r in rows)
        )
    return curves


def _classifier_fd(exp: Experiment, sets: Mapping[str, SampleSet]) -> dict[str, Any] | None:
    ev = exp.config.eval
    if not (ev.classifier_fd and exp.train_ds.is_image and exp.train_ds.num_classes):
        return None
    module, params, info = E.load_or_train_classifier(
        exp.train_ds,
        exp.eval_ds,
        cache_dir=ev.classifier_dir or None,
        num_steps=ev.classifier_steps,
        log=_log,
    )
    ref = _reference(exp, 10**9)["x"]
    ref_stats = E.gaussian_stats(E.classifier_features(module, params, ref))
    train = _reference(exp, len(ref), "train")["x"]
    floor = E.frechet_distance(
        *E.gaussian_stats(E.classifier_features(module, params, train)), *ref_stats
    )

    def fd(x: np.ndarray) -> float:
        return E.frechet_distance(
            *E.gaussian_stats(E.classifier_features(module, params, x)), *ref_stats
        )

    return {
        "fd": fd,
        "result": {
            "description": (
                "Frechet distance between Gaussian fits of the penultimate-layer features of a "
                "small CNN trained by flowjax on this data set (not an Inception FID)"
            ),
            "classifier": info,
            "reference": f"{len(ref)} {exp.config.data.eval_split} images",
            "data_floor": floor,
            "data_floor_description": f"the same statistic between {len(train)} training images and the reference",
            "samplers": {name: fd(s.samples) for name, s in sets.items()},
        },
    }


def _inception(exp: Experiment, sets: Mapping[str, SampleSet]) -> dict[str, Any] | None:
    ev = exp.config.eval
    if not ev.inception:
        return None
    params = E.load_inception_params(ev.inception_weights)
    ref = _reference(exp, 10**9)["x"]
    bs = ev.inception_batch_size
    ref_f = E.inception_features(params, ref, batch_size=bs)
    ref_stats = E.gaussian_stats(ref_f)
    out: dict[str, Any] = {
        "weights": str(ev.inception_weights),
        "reference": f"{len(ref)} {exp.config.data.eval_split} images",
        "samplers": {},
    }
    for name, s in sets.items():
        f = E.inception_features(params, s.samples, batch_size=bs)
        kid, kid_std = E.kernel_inception_distance(
            f, ref_f, subset_size=ev.kid_subset_size, num_subsets=ev.kid_num_subsets
        )
        out["samplers"][name] = {
            "fid": E.frechet_distance(*E.gaussian_stats(f), *ref_stats),
            "kid": kid,
            "kid_std": kid_std,
            "num_samples": len(f),
        }
    return out


def evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """Evaluate the newest checkpoint; writes ``eval.json``, ``samples/`` and ``figures/``."""
    return _evaluate(setup(config, workdir))


def _evaluate(exp: Experiment) -> dict[str, Any]:
    cfg, ev = exp.config, exp.config.eval
    t_start = time.perf_counter()
    restored = _restore(exp)
    fn = M.model_fn(exp.model, restored.params)
    keys = _keys(cfg)
    k_floor, k_stat, k_nll, k_sweep = jax.random.split(keys["eval"], 4)
    timings: dict[str, float] = {}
    result: dict[str, Any] = {
        "experiment": {
            "workdir": str(exp.workdir),
            "checkpoint_step": restored.step,
            "parameters": "ema" if restored.ema else "raw",
            "num_params": M.count_params(restored.params),
            "model": type(exp.model).__name__,
            "path": cfg.path.name,
            "path_options": dict(cfg.path.options),
            "prediction": exp.prediction,
            "class_conditional": exp.num_classes is not None,
            "train_data": exp.train_ds.metadata(),
            "eval_data": exp.eval_ds.metadata(),
            "seed": cfg.seed,
            "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
            "jax": jax.__version__,
        },
    }
    metrics_file = exp.file(METRICS_FILE)
    if metrics_file.exists():
        records = [r for r in T.read_jsonl(metrics_file) if "loss" in r]
        if records:
            result["training"] = {"last_logged": records[-1], "metrics_file": str(metrics_file)}

    t0 = time.perf_counter()
    sets = _samples(exp, fn, restored)
    timings["sampling"] = time.perf_counter() - t0
    result["samplers"] = {
        name: {
            "settings": s.settings,
            "nfe": s.nfe,
            "nfe_max": s.nfe_max,
            "num_samples": len(s.samples),
            "seconds_with_compilation": s.seconds,
            "samples_file": str(exp.file(SAMPLES_DIR, f"{name}.npz")),
        }
        for name, s in sets.items()
    }

    metric_fn, metric = None, None
    floors = None
    if ev.metrics:
        t0 = time.perf_counter()
        ref = _reference(exp, ev.num_eval)["x"].reshape(-1, math.prod(exp.shape))
        n = min(cfg.sampling.num_samples, len(ref))
        src = _floor_source(exp)
        if "pool" in src:
            n = min(n, len(src["pool"]) // 2)
        floors = E.data_floors(
            tuple(ev.metrics),
            n,
            k_floor,
            sampler=src.get("sampler"),
            pool=src.get("pool"),
            repeats=ev.floor_repeats,
            num_projections=ev.num_projections,
        )
        result["data_floors"] = {"law": src["law"], **floors}
        for name, s in sets.items():
            flat = s.samples.reshape(len(s.samples), -1)
            q = E.sample_quality(flat, ref, floors, k_stat, num_projections=ev.num_projections)
            result["samplers"][name]["quality"] = q
            _log(
                f"{name}: "
                + ", ".join(
                    f"{m} {v['value']:.4g} (floor {v['floor_mean']:.3g} ± {v['floor_std']:.2g})"
                    for m, v in q.items()
                )
            )
        timings["sample_quality"] = time.perf_counter() - t0
        metric = ev.metrics[0]
        n_sweep = min(cfg.eval.nfe_sweep.num_samples, len(ref))
        if "pool" in src:
            n_sweep = min(n_sweep, len(src["pool"]) // 2)
        sweep_floor = E.data_floors(
            (metric,),
            n_sweep,
            k_floor,
            sampler=src.get("sampler"),
            pool=src.get("pool"),
            repeats=ev.floor_repeats,
            num_projections=ev.num_projections,
        )[metric]

        def metric_fn(x: np.ndarray) -> float:
            flat = x.reshape(len(x), -1)
            return E.sample_quality(flat, ref, {metric: sweep_floor}, k_stat)[metric]["value"]

    cfd = None
    if exp.train_ds.is_image:
        t0 = time.perf_counter()
        cfd = _classifier_fd(exp, sets)
        if cfd is not None:
            result["classifier_fd"] = cfd["result"]
            for name, value in cfd["result"]["samplers"].items():
                result["samplers"][name]["classifier_fd"] = value
            _log(
                "classifier FD: "
                + ", ".join(f"{k} {v:.4g}" for k, v in cfd["result"]["samplers"].items())
                + f" (data floor {cfd['result']['data_floor']:.4g})"
            )
            metric_fn, metric = cfd["fd"], "classifier_fd"
            sweep_floor = {"floor_mean": cfd["result"]["data_floor"], "floor_std": 0.0}
        timings["classifier_fd"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        inc = _inception(exp, sets)
        if inc is not None:
            result["inception"] = inc
            timings["inception"] = time.perf_counter() - t0

    if ev.nll.enabled:
        t0 = time.perf_counter()
        nll = _nll(exp, fn, k_nll)
        result["bits_per_dim" if exp.train_ds.is_image else "nll"] = nll
        if exp.train_ds.is_image:
            _log(
                f"bits/dim {nll['bits_per_dim']:.4f} ± {nll['bits_per_dim_stderr'] or 0:.4f} "
                f"(NFE {nll['nfe_mean']:.0f})"
            )
        else:
            msg = f"NLL {nll['nll']:.4f} ± {nll['nll_stderr']:.4f} nats (NFE {nll['nfe_mean']:.0f})"
            if "nll_gap" in nll:
                msg += (
                    f"; exact entropy {nll['entropy']:.4f}, NLL gap "
                    f"{nll['nll_gap']:.4f} ± {nll['nll_gap_stderr']:.4f} nats"
                )
            _log(msg)
        timings["nll"] = time.perf_counter() - t0

    if metric_fn is not None and cfg.eval.nfe_sweep.samplers:
        t0 = time.perf_counter()
        curves = _sweep(exp, fn, metric_fn, metric, k_sweep)
        result["nfe_sweep"] = {
            "metric": metric,
            "num_samples": cfg.eval.nfe_sweep.num_samples,
            "floor": sweep_floor,
            "curves": curves,
        }
        timings["nfe_sweep"] = time.perf_counter() - t0

    if cfg.figures.enabled and jax.process_index() == 0:
        t0 = time.perf_counter()
        result["figures"] = [str(p) for p in _figures(exp, fn, sets, restored, result)]
        timings["figures"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    result["timings_seconds"] = timings
    result["config"] = _config_dict(cfg)
    _write_json(exp.file(EVAL_FILE), result)
    return result


# ============================================================================ figures


def _fig_settings(exp: Experiment, restored: _Restored, **extra: Any) -> dict[str, Any]:
    cfg = exp.config
    return {
        "workdir": str(exp.workdir),
        "checkpoint_step": restored.step,
        "parameters": "ema" if restored.ema else "raw",
        "data": cfg.data.name,
        "path": cfg.path.name,
        "path_options": dict(cfg.path.options),
        "prediction": exp.prediction,
        **extra,
    }


def _sample_figure(exp: Experiment, s: SampleSet, ref: Mapping[str, np.ndarray], restored) -> Path:
    fc = exp.config.figures
    out = exp.file(FIGURES_DIR, f"samples_{s.name}")
    settings = _fig_settings(exp, restored, sampler=s.settings, nfe=s.nfe)
    if exp.low_dim and exp.shape == (2,):
        n = fc.num_points
        return F.samples_2d(
            s.samples[:n],
            ref["x"][:n],
            out,
            settings,
            title=f"{s.name}: NFE {s.nfe:g}",
            dpi=fc.dpi,
        )
    if exp.train_ds.is_image:
        return F.image_grid(
            s.samples[: fc.grid_images],
            out,
            settings,
            value_range=exp.train_ds.value_range,
            title=f"{s.name}: NFE {s.nfe:g}",
            dpi=fc.dpi,
        )
    return None


def _inside(ts: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``ts`` as float32 values that lie inside ``[lo, hi]`` (rounding may push the ends out)."""
    out = ts.astype(np.float32)
    out = np.where(out.astype(np.float64) > hi, np.nextafter(out, np.float32(-np.inf)), out)
    out = np.where(out.astype(np.float64) < lo, np.nextafter(out, np.float32(np.inf)), out)
    return out.astype(np.float32)


def _first(exp: Experiment, method: str) -> str | None:
    """The first sampler of ``method``, preferring fixed steps (cheaper with saved times)."""
    names = [n for n, kw in exp.samplers.items() if kw["method"] == method]
    fixed = [n for n in names if not exp.samplers[n]["adaptive"]]
    return (fixed or names or [None])[0]


def _trajectories(exp: Experiment, fn: Any, key: Any, num: int, num_times: int) -> dict[str, Any]:
    """ODE and SDE trajectories from the same standard-normal draw (scaled to each start time)."""
    names = [n for n in (_first(exp, "ode"), _first(exp, "sde")) if n is not None]
    z = jax.random.normal(key, (num, *exp.shape))
    out, times = {}, {}
    for name in names:
        kw = dict(exp.samplers[name])
        options = _sample_options(kw)
        t0, t1 = S.sampling_time_range(
            exp.path,
            prediction=exp.prediction,
            method=options["method"],
            solver=options["solver"],
        )
        t0 = kw["t_start"] if kw["t_start"] is not None else t0
        t1 = kw["t_end"] if kw["t_end"] is not None else t1
        ts = _inside(np.linspace(t0, t1, num_times), t0, t1)
        x0 = exp.path.beta(jnp.asarray(ts[0])) * z
        if kw["time_grid"] != "uniform":
            kw["time_grid"] = "uniform"
        lab = _labels(exp, 0, num)
        model, cond = _cond_kwargs(exp, fn, kw, lab)
        res = S.sample(
            model,
            exp.path,
            jax.random.fold_in(key, 1),
            None,
            x_start=x0,
            save_times=jnp.asarray(ts),
            **_sample_options(kw),
            **cond,
        )
        out[f"{name} ({kw['method'].upper()})"] = np.asarray(res.trajectory)
        times[name] = ts
    return {"trajectories": out, "times": times, "names": names}


def _figures(
    exp: Experiment,
    fn: Any,
    sets: Mapping[str, SampleSet],
    restored: _Restored,
    result: Mapping[str, Any],
) -> list[Path]:
    fc = exp.config.figures
    key = _keys(exp.config)["figures"]
    k_traj, k_dens = jax.random.split(key)
    paths: list[Path] = []
    ref = _reference(exp, max(fc.num_points, fc.grid_images))
    for s in sets.values():
        p = _sample_figure(exp, s, ref, restored)
        if p is not None:
            paths.append(p)

    if "nfe_sweep" in result and result["nfe_sweep"]["curves"]:
        sw = result["nfe_sweep"]
        floor = sw["floor"]
        paths.append(
            F.nfe_quality(
                sw["curves"],
                sw["metric"],
                exp.file(FIGURES_DIR, "nfe_quality"),
                _fig_settings(
                    exp,
                    restored,
                    metric=sw["metric"],
                    num_samples=sw["num_samples"],
                    samplers={n: exp.sampler_settings[n] for n in sw["curves"]},
                    floor=floor,
                ),
                floor=(floor["floor_mean"], floor["floor_std"]),
                dpi=fc.dpi,
            )
        )

    if exp.train_ds.is_image:
        n_img = min(fc.grid_images, len(ref["x"]))
        paths.append(
            F.image_grid(
                ref["x"][:n_img],
                exp.file(FIGURES_DIR, "data"),
                _fig_settings(exp, restored, what=f"held-out {exp.config.data.eval_split} images"),
                value_range=exp.train_ds.value_range,
                title="held-out data",
                dpi=fc.dpi,
            )
        )
        tr = _trajectories(exp, fn, k_traj, min(6, fc.num_trajectories), 9)
        if tr["trajectories"]:
            paths.append(
                F.image_trajectories(
                    tr["trajectories"],
                    next(iter(tr["times"].values())),
                    exp.file(FIGURES_DIR, "trajectories"),
                    _fig_settings(
                        exp,
                        restored,
                        samplers={n: exp.sampler_settings[n] for n in tr["names"]},
                        times={n: list(t) for n, t in tr["times"].items()},
                        starting_noise="shared standard normal, scaled by beta(t_start)",
                    ),
                    value_range=exp.train_ds.value_range,
                    dpi=fc.dpi,
                )
            )
        return paths

    if exp.shape != (2,):
        return paths
    data = ref["x"][: fc.num_points]
    tr = _trajectories(exp, fn, k_traj, fc.num_trajectories, 41)
    if tr["trajectories"]:
        paths.append(
            F.trajectories_2d(
                tr["trajectories"],
                next(iter(tr["times"].values())),
                data,
                exp.file(FIGURES_DIR, "trajectories"),
                _fig_settings(
                    exp,
                    restored,
                    samplers={n: exp.sampler_settings[n] for n in tr["names"]},
                    times={n: list(t) for n, t in tr["times"].items()},
                    starting_noise="shared standard normal, scaled by beta(t_start)",
                ),
                dpi=fc.dpi,
            )
        )
    paths.append(_field_figure(exp, fn, data, restored))
    if fc.density_grid:
        paths.append(_density_figure(exp, fn, data, restored, k_dens))
    return paths


def _grid_points(data: np.ndarray, n: int, margin: float = 0.15) -> tuple[np.ndarray, tuple]:
    lo = np.quantile(data, 0.001, axis=0)
    hi = np.quantile(data, 0.999, axis=0)
    span = float(np.max(hi - lo)) * (1 + 2 * margin)
    mid = (lo + hi) / 2
    xs = np.linspace(mid[0] - span / 2, mid[0] + span / 2, n)
    ys = np.linspace(mid[1] - span / 2, mid[1] + span / 2, n)
    gx, gy = np.meshgrid(xs, ys)
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    h = (xs[1] - xs[0]) / 2  # the image extent covers the cells around the grid points
    return pts, (xs[0] - h, xs[-1] + h, ys[0] - h, ys[-1] + h)


def _field_figure(exp: Experiment, fn: Any, data: np.ndarray, restored: _Restored) -> Path:
    fc = exp.config.figures
    pts, _ = _grid_points(data, fc.field_grid)
    x = jnp.asarray(pts)
    lab = jnp.asarray(_labels(exp, 0, len(pts))) if exp.num_classes is not None else None
    times = [float(t) for t in fc.field_times]
    lo, hi = float(exp.path.t_min), float(exp.path.t_max)
    times = [min(max(t, lo), hi) for t in times]
    fields: dict[str, list] = {"model velocity": [], "model score": []}
    oracle = exp.eval_ds.oracle if exp.num_classes is None else None
    if oracle is not None:
        fields.update({"exact velocity": [], "exact score": []})

    @jax.jit
    def at(fn, t):
        tb = jnp.full((len(pts),), t, jnp.float32)
        out = fn(x, tb, lab) if lab is not None else fn(x, tb)
        res = {
            f"model {k}": convert(out, source=exp.prediction, target=k, path=exp.path, x=x, t=tb)
            for k in ("velocity", "score")
        }
        if oracle is not None:
            res.update(
                {f"exact {k}": oracle.predict(k, exp.path, x, tb) for k in ("velocity", "score")}
            )
        return res

    for t in times:
        for k, val in at(fn, jnp.float32(t)).items():
            fields[k].append(np.asarray(val))
    # samples of p_t at each time: alpha_t x1 + beta_t eps for held-out x1
    x1 = jnp.asarray(data[:1000])
    eps = jax.random.normal(jax.random.PRNGKey(0), x1.shape)
    marginals = [np.asarray(exp.path.interpolate(x1, eps, jnp.float32(t))) for t in times]
    return F.vector_fields(
        {k: np.stack(v) for k, v in fields.items()},
        pts,
        times,
        exp.file(FIGURES_DIR, "fields"),
        _fig_settings(
            exp,
            restored,
            times=times,
            grid=fc.field_grid,
            conversion=f"model's {exp.prediction} converted with flowjax.convert",
            exact="oracle Gaussian mixture" if oracle is not None else None,
            grey_points="alpha_t x1 + beta_t eps for 1,000 held-out x1 (samples of p_t)",
        ),
        points=marginals,
        dpi=fc.dpi,
    )


def _density_figure(
    exp: Experiment, fn: Any, data: np.ndarray, restored: _Restored, key: Any
) -> Path:
    fc = exp.config.figures
    n = fc.density_grid
    pts, extent = _grid_points(data, n)
    kw = dict(exp.likelihood_kwargs)
    # a qualitative picture: a looser tolerance than the reported NLL
    kw.update(rtol=max(kw["rtol"], 1e-3), atol=max(kw["atol"], 1e-3), divergence="exact")
    cond = {}
    if exp.num_classes is not None:
        cond = {"cond": jnp.asarray(_labels(exp, 0, len(pts)))}
    res = LL.log_likelihood(fn, exp.path, jnp.asarray(pts), key=key, **kw, **cond)
    lp = np.asarray(res.log_prob).reshape(n, n)
    exact_fn = E.exact_log_prob_fn(exp.eval_ds)
    exact = None
    if exact_fn is not None and exp.num_classes is None:
        exact = np.asarray(exact_fn(jnp.asarray(pts))).reshape(n, n)
    return F.density_2d(
        lp,
        extent,
        exp.file(FIGURES_DIR, "density"),
        _fig_settings(exp, restored, likelihood=kw, grid=n, nfe_mean=float(np.mean(res.nfe))),
        exact_log_prob=exact,
        dpi=fc.dpi,
    )


# ============================================================================ the whole run


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike
) -> dict[str, Any]:
    """Train (resuming if the workdir has checkpoints), then evaluate; returns ``eval.json``'s dict."""
    exp = setup(config, workdir)
    _train(exp)
    return _evaluate(exp)


def summary(result: Mapping[str, Any], workdir: str | os.PathLike) -> str:
    """A few lines saying where the numbers and figures are, and the headline numbers."""
    wd = Path(workdir)
    lines = [f"numbers: {wd / EVAL_FILE}"]
    if result.get("figures"):
        lines.append(
            f"figures: {wd / FIGURES_DIR}/ ({', '.join(Path(p).name for p in result['figures'])})"
        )
    lines.append(
        f"samples: {wd / SAMPLES_DIR}/   checkpoints: {wd / CHECKPOINT_DIR}/   metrics: {wd / METRICS_FILE}"
    )
    for name, s in result.get("samplers", {}).items():
        parts = [f"NFE {s['nfe']:g}"]
        for m, q in s.get("quality", {}).items():
            parts.append(f"{m} {q['value']:.3g} (floor {q['floor_mean']:.2g})")
        if "classifier_fd" in s:
            parts.append(f"classifier FD {s['classifier_fd']:.3g}")
        lines.append(f"  {name}: " + ", ".join(parts))
    if "nll" in result:
        n = result["nll"]
        line = f"  NLL {n['nll']:.4f} nats"
        if "nll_gap" in n:
            line += f", NLL gap {n['nll_gap']:.4f} ± {n['nll_gap_stderr']:.4f} (exact entropy {n['entropy']:.4f})"
        lines.append(line)
    if "bits_per_dim" in result:
        lines.append(f"  bits/dim {result['bits_per_dim']['bits_per_dim']:.4f}")
    return "\n".join(lines)
