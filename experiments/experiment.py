"""An experiment built from its config: everything checked before any work is done.

:func:`setup` checks the config (unknown keys, types, names of paths, predictions, samplers and
solvers: samplers and the likelihood are traced abstractly with a stand-in model), the workdir
(writable), the data set (prepared) and the Inception weights file, and returns an
:class:`Experiment`. :func:`restore` reads the newest checkpoint's parameters for sampling and
evaluation. Nothing in ``flowjax/`` reads configs: this module and :mod:`experiments.schema`
unpack them into keyword arguments.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import io, samplers
from experiments.evaluators import inception, quality
from experiments.model import make_model
from experiments.schema import ConfigError, check_config, choice, section
from flowjax import data as D
from flowjax import likelihood as LL
from flowjax import losses as L
from flowjax import models as M
from flowjax import parallel
from flowjax import sampling as S
from flowjax import training as T
from flowjax.paths import AbstractPath, get_path

__all__ = [
    "ONESTEP_METHOD",
    "SECOND_TIME",
    "Experiment",
    "InstantVelocity",
    "Restored",
    "example_inputs",
    "keys",
    "oracle_sampler",
    "reference",
    "restore",
    "setup",
]

#: Keys of ``eval.nll`` that belong to the evaluator; the others are ``log_likelihood`` arguments.
NLL_EVALUATOR_KEYS = ("enabled", "num_examples", "batch_size", "num_dequantizations")

#: The sampling method of each few-step objective (``loss.objective``) and the second time input
#: its model needs (``second_time`` of the MLP / U-Net).
ONESTEP_METHOD = {
    "meanflow": "meanflow",
    "shortcut": "shortcut",
    "consistency": "consistency",
    "cd_oracle": "consistency",
}
SECOND_TIME = {"meanflow": "r", "shortcut": "d"}
_CONSISTENCY_OBJECTIVES = ("consistency", "cd_oracle")


class InstantVelocity(eqx.Module):
    """The velocity field of a two-time model: MeanFlow's ``u(x, t, r = t)`` (the average velocity
    over an empty interval) or the shortcut model's ``s(x, t, d = 0)``; a ``model_fn(x, t, ...)``
    for the ODE/SDE samplers, the likelihood and the field figures."""

    model_fn: Any
    second_time: str = eqx.field(static=True)

    def __call__(self, x, t, *args, **kwargs):
        tb = jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0],))
        t2 = tb if self.second_time == "r" else jnp.zeros_like(tb)
        return self.model_fn(x, t, *args, t2=t2, **kwargs)


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

    @property
    def objective(self) -> str:
        return self.config.loss.objective

    @property
    def has_velocity(self) -> bool:
        """Whether the model gives a velocity field (a consistency model does not)."""
        return self.objective not in _CONSISTENCY_OBJECTIVES

    def velocity_model(self, fn: Any) -> Any:
        """The velocity ``model_fn(x, t, ...)`` of the model function ``fn`` (two-time models:
        :class:`InstantVelocity`)."""
        second = SECOND_TIME.get(self.objective)
        return fn if second is None else InstantVelocity(fn, second)

    def sampler_model(self, fn: Any, method: str) -> Any:
        """What ``sample(method=...)`` calls: a few-step method its model (consistency models
        wrapped by :class:`flowjax.losses.ConsistencyModelFn`, the parameterisation they were
        trained with), the other methods the velocity."""
        if method == "consistency":
            cc = self.config.loss.consistency
            return L.ConsistencyModelFn(
                fn, self.path, sigma_data=float(cc.sigma_data), sigma_min=float(cc.sigma_min)
            )
        if method in ONESTEP_METHOD.values():
            return fn
        return self.velocity_model(fn)

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


class _Probe(eqx.Module):
    """A stand-in model (``-x``) for tracing samplers and likelihoods without running them (it
    takes the second time of two-time models too)."""

    def __call__(self, x, t, label=None, t2=None):
        return -x


def _check_traces(name: str, fn: Any) -> None:
    """Trace ``fn`` abstractly (no computation): its argument checks run now, not after training."""
    try:
        jax.eval_shape(fn)
    except (ValueError, TypeError, KeyError) as err:
        raise ConfigError(f"{name}: {err}") from err


def likelihood_kwargs(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """``flowjax.likelihood.log_likelihood`` arguments: ``eval.nll`` less the evaluator's keys
    (``num_steps`` 0: adaptive steps)."""
    kw = section(cfg.eval.nll, drop=NLL_EVALUATOR_KEYS)
    kw["num_steps"] = kw["num_steps"] or None
    return {"prediction": cfg.loss.prediction, **kw}


def _num_classes(cfg: ml_collections.ConfigDict, train_ds: D.Dataset) -> int | None:
    k = cfg.model.num_classes
    if not k:
        if cfg.loss.label_dropout:
            raise ConfigError("config key 'loss.label_dropout' > 0 needs model.num_classes > 0")
        return None
    if train_ds.num_classes is None:
        raise ConfigError(f"model.num_classes = {k} but data set {cfg.data.name!r} has no labels")
    if k != train_ds.num_classes:
        raise ConfigError(
            f"config key 'model.num_classes' is {k} but data set {cfg.data.name!r} has "
            f"{train_ds.num_classes} classes (use {train_ds.num_classes}, or 0: unconditional)"
        )
    return int(k)


def _check_steps(cfg: ml_collections.ConfigDict) -> None:
    tc = cfg.training
    if tc.num_steps < 0 or tc.batch_size < 1:
        raise ConfigError(
            "config keys 'training.num_steps' >= 0 and 'training.batch_size' >= 1 are required; got "
            f"{tc.num_steps}, {tc.batch_size}"
        )
    if not 0.0 <= tc.ema_decay < 1.0:
        raise ConfigError(f"config key 'training.ema_decay' must lie in [0, 1); got {tc.ema_decay}")
    for key in cfg.eval.metrics:
        choice(key, quality.STATISTICS, "eval.metrics")


def _check_training(cfg: ml_collections.ConfigDict, train_ds: D.Dataset) -> None:
    tc = cfg.training
    choice(tc.remat, T.REMAT_POLICIES, "training.remat")
    choice(tc.parallelism, T.PARALLELISMS, "training.parallelism")
    n_dev, accum = jax.device_count(), tc.grad_accum_steps
    if accum < 1 or tc.batch_size % (n_dev * accum):
        raise ConfigError(
            f"config key 'training.batch_size' = {tc.batch_size} must be divisible by the "
            f"{n_dev} devices times 'training.grad_accum_steps' = {accum} (>= 1)"
        )
    if tc.batch_size > train_ds.num_examples:
        raise ConfigError(
            f"config key 'training.batch_size' = {tc.batch_size} exceeds the "
            f"{train_ds.num_examples} training examples of {cfg.data.name!r}"
        )


def _path(cfg: ml_collections.ConfigDict) -> AbstractPath:
    try:
        return get_path(cfg.path.name, **dict(cfg.path.options))
    except TypeError as err:
        raise ConfigError(
            f"config keys 'path.options' do not fit path {cfg.path.name!r}: {err}"
        ) from err
    except ValueError as err:
        raise ConfigError(f"config key 'path.name': {err}") from err


def _resolve_second_time(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of the config whose network has the second time input ``loss.objective`` needs."""
    net = cfg.model.name
    key = f"model.{net}.second_time"
    if net not in ("mlp", "unet"):
        return cfg
    need = SECOND_TIME.get(cfg.loss.objective)
    given = cfg.model[net].second_time
    if given is not None and given != need:
        want = f"{need!r}" if need else "None (one time input)"
        raise ConfigError(
            f"config key {key!r} is {given!r} but loss.objective {cfg.loss.objective!r} needs "
            f"{want}; leave it unset (None): it is set from the objective"
        )
    if given == need:
        return cfg
    out = cfg.copy_and_resolve_references()
    out.model[net].second_time = need
    return out


def _objective_loss(
    cfg: ml_collections.ConfigDict, apply_fn: Any, path: AbstractPath, train_ds: D.Dataset
) -> L.LossFn:
    """The loss of a few-step objective (``loss.objective`` other than ``fm``)."""
    obj = cfg.loss.objective
    if obj == "meanflow":
        return L.make_meanflow_loss(apply_fn, path, **section(cfg.loss.meanflow))
    if obj == "shortcut":
        return L.make_shortcut_loss(apply_fn, path, **section(cfg.loss.shortcut))
    cc = cfg.loss.consistency
    if not cc.sigma_min < cc.sigma_max:
        raise ConfigError(
            "config keys 'loss.consistency.sigma_min' < 'loss.consistency.sigma_max' required; got "
            f"{cc.sigma_min}, {cc.sigma_max}"
        )
    apply = L.consistency_apply_fn(
        apply_fn, path, sigma_data=float(cc.sigma_data), sigma_min=float(cc.sigma_min)
    )
    common = {"sigma_min": cc.sigma_min, "sigma_max": cc.sigma_max, "rho": cc.rho}
    common["huber_c"] = cc.huber_c
    if obj == "consistency":
        # no step reaches the loss: a fixed discretisation of s1 + 1 levels (s0 = s1)
        return L.make_consistency_training_loss(
            apply, path, total_steps=1, s0=cc.s1, s1=cc.s1, p_mean=cc.p_mean, p_std=cc.p_std,
            **common,
        )  # fmt: skip
    oracle = train_ds.oracle
    assert oracle is not None  # _check_objective
    return L.make_consistency_distillation_loss(
        apply,
        path,
        oracle.model_fn(path),
        num_levels=cc.num_levels,
        teacher_solver=cc.teacher_solver,
        weighting=cc.weighting,
        **common,
    )


def _check_objective(
    cfg: ml_collections.ConfigDict, num_classes: int | None, train_ds: D.Dataset
) -> None:
    oracle_solvers = cfg.eval.nfe_sweep.oracle_solvers
    if oracle_solvers and (train_ds.oracle is None or num_classes is not None):
        raise ConfigError(
            f"config key 'eval.nfe_sweep.oracle_solvers' is {tuple(oracle_solvers)!r} but data set "
            f"{cfg.data.name!r} has no oracle velocity (unconditional toy mixtures such as "
            "eight_gaussians have one); set it to ()"
        )
    obj = cfg.loss.objective
    own = ONESTEP_METHOD.get(obj)
    for name, entry in cfg.sampling.samplers.items():
        method = samplers.full_entry(entry)["method"]
        if method in ONESTEP_METHOD.values() and method != own:
            raise ConfigError(
                f"config key 'sampling.samplers.{name}.method' is {method!r}, which needs a model "
                f"trained with loss.objective {method!r}; loss.objective is {obj!r}"
                + (f" (its method: {own!r})" if own else "")
            )
        if obj in _CONSISTENCY_OBJECTIVES and method != "consistency":
            raise ConfigError(
                f"config key 'sampling.samplers.{name}.method' is {method!r}, but a consistency "
                f"model (loss.objective {obj!r}) has no velocity field; use method 'consistency'"
            )
    if cfg.eval.nll.enabled and obj in _CONSISTENCY_OBJECTIVES:
        raise ConfigError(
            f"config key 'eval.nll.enabled' is True but a consistency model (loss.objective "
            f"{obj!r}) has no velocity field to integrate; set it to False"
        )
    if obj == "cd_oracle" and train_ds.oracle is None:
        raise ConfigError(
            f"config key 'loss.objective' is 'cd_oracle' (distillation from the exact oracle "
            f"velocity) but data set {cfg.data.name!r} has no oracle; use a data set with one "
            "(eight_gaussians) or objective 'consistency'"
        )
    if obj != "fm" and num_classes is not None:
        raise ConfigError(
            f"config key 'loss.objective' is {obj!r}, an unconditional objective; set "
            "model.num_classes = 0"
        )


def _check_loss_traces(exp_model: Any, loss_fn: L.LossFn, shape: tuple[int, ...]) -> None:
    """Trace a few-step loss abstractly (model init and one loss evaluation, no FLOPs): a model
    without the second time input, or a bad option, fails now rather than at the first step."""
    key = jax.random.PRNGKey(0)
    x = jnp.zeros((2, *shape), jnp.float32)

    def trace():
        params = M.init(exp_model, key, x[:1])
        return loss_fn(params, {"x": x}, key)[0]

    _check_traces("loss", trace)


def _loss_and_optimizer(
    cfg: ml_collections.ConfigDict,
    model: Any,
    path: AbstractPath,
    num_classes: int | None,
    train_ds: D.Dataset,
) -> tuple[L.LossFn, Any]:
    """The loss of ``loss.objective`` (``fm``: ``make_loss(**config.loss)``) and
    ``make_optimizer(**config.optim)``."""
    try:
        if cfg.loss.objective == "fm":
            fm_keys = ("coupling", "objective", "meanflow", "shortcut", "consistency")
            loss_fn = L.make_loss(
                M.make_apply_fn(model),
                path,
                **section(cfg.loss, drop=fm_keys),
                coupling=cfg.loss.coupling or None,
                num_classes=num_classes,
            )
        else:
            loss_fn = _objective_loss(cfg, M.make_apply_fn(model), path, train_ds)
            _check_loss_traces(model, loss_fn, tuple(train_ds.shape))
        total = max(cfg.training.num_steps, cfg.optim.warmup_steps + 1)
        optimizer = T.make_optimizer(**section(cfg.optim), total_steps=total)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return loss_fn, optimizer


def _samplers(
    cfg: ml_collections.ConfigDict,
    path: AbstractPath,
    shape: tuple[int, ...],
    num_classes: int | None,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every sampler's parsed settings and config entry, traced abstractly with a stand-in model
    (so a bad name or an impossible combination fails now rather than after training)."""
    probe, key = _Probe(), jax.random.PRNGKey(0)
    parsed, entries = {}, {}
    for name, raw in cfg.sampling.samplers.items():
        entry = samplers.full_entry(raw)
        kw = samplers.settings(name, entry, cfg.loss.prediction)
        w = entry["guidance_scale"]
        if w is not None and num_classes is None:
            raise ConfigError(
                f"sampling.samplers.{name}.guidance_scale needs a class-conditional model "
                "(model.num_classes > 0)"
            )
        label = None if num_classes is None else np.zeros((2,), np.int32)
        probe_fn, cond = samplers.conditioned(probe, num_classes, w, label)
        _check_traces(
            f"sampling.samplers.{name}",
            lambda kw=kw, fn=probe_fn, cond=cond: (
                S.sample(fn, path, key, (2, *shape), **samplers.sample_options(kw), **cond).samples
            ),
        )
        parsed[name], entries[name] = kw, entry
    for name in cfg.eval.nfe_sweep.samplers:
        if name not in parsed:
            raise ConfigError(
                f"config key 'eval.nfe_sweep.samplers' names {name!r}, which is not a sampler; "
                f"samplers: {', '.join(parsed) or 'none'}"
            )
    for solver in cfg.eval.nfe_sweep.oracle_solvers:
        kw = oracle_sampler(solver, 4)
        _check_traces(
            f"eval.nfe_sweep.oracle_solvers ({solver!r})",
            lambda kw=kw: (
                S.sample(probe, path, key, (2, *shape), **samplers.sample_options(kw)).samples
            ),
        )
    return parsed, entries


def oracle_sampler(solver: str, num_steps: int) -> dict[str, Any]:
    """The parsed settings of an ODE sampler of the oracle velocity (the NFE sweep's reference)."""
    entry = samplers.full_entry({"solver": solver, "num_steps": num_steps})
    return samplers.settings(f"oracle_{solver}", entry, "velocity")


def _check_evaluation(
    cfg: ml_collections.ConfigDict,
    path: AbstractPath,
    shape: tuple[int, ...],
    num_classes: int | None,
    train_ds: D.Dataset,
    lk: dict[str, Any],
) -> None:
    if cfg.eval.nll.enabled:
        cond = {"cond": jnp.zeros((2,), jnp.int32)} if num_classes is not None else {}
        x, key = jnp.zeros((2, *shape)), jax.random.PRNGKey(0)
        _check_traces(
            "eval.nll",
            lambda: LL.log_likelihood(_Probe(), path, x, key=key, **lk, **cond).log_prob,
        )
    if cfg.eval.inception:
        if not train_ds.is_image:
            raise ConfigError("eval.inception applies to image data sets only")
        inception.check_weights_file(cfg.eval.inception_weights)


def setup(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> Experiment:
    """Check the config and build the experiment; raises before any training or file is written
    (except a probe of the workdir)."""
    check_config(config)
    cfg = _resolve_second_time(config)
    _check_steps(cfg)
    workdir = _prepare_workdir(workdir)
    train_ds, eval_ds = _datasets(cfg)
    if train_ds.shape != eval_ds.shape:
        raise ConfigError(
            f"train and eval splits differ in shape: {train_ds.shape}, {eval_ds.shape}"
        )
    num_classes = _num_classes(cfg, train_ds)
    _check_objective(cfg, num_classes, train_ds)
    path = _path(cfg)
    try:
        model = make_model(cfg, num_classes)
    except ValueError as err:
        raise ConfigError(f"config section 'model': {err}") from err
    loss_fn, optimizer = _loss_and_optimizer(cfg, model, path, num_classes, train_ds)
    mesh = parallel.make_mesh()
    _check_training(cfg, train_ds)
    shape = tuple(train_ds.shape)
    parsed, entries = _samplers(cfg, path, shape, num_classes)
    lk = likelihood_kwargs(cfg)
    _check_evaluation(cfg, path, shape, num_classes, train_ds, lk)
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
        samplers=parsed,
        sampler_settings=entries,
        likelihood_kwargs=lk,
    )


def keys(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """The run's PRNG keys, one per job, folded from ``config.seed``."""
    root = jax.random.PRNGKey(cfg.seed)
    names = ("init", "state", "sample", "eval", "figures")
    return {n: jax.random.fold_in(root, i) for i, n in enumerate(names)}


def example_inputs(exp: Experiment) -> tuple[Any, Any]:
    """A one-example input (and label) to initialise the model with."""
    x = jnp.zeros((1, *exp.shape), jnp.float32)
    label = jnp.zeros((1,), jnp.int32) if exp.num_classes is not None else None
    return x, label


# ============================================================================ restoring


@dataclasses.dataclass
class Restored:
    """The parameters to sample and evaluate, with the checkpoint they came from."""

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


def restore(exp: Experiment) -> Restored:
    """The newest intact checkpoint's parameters (EMA ones when ``sampling.use_ema``)."""
    ckpt_dir = exp.file(io.CHECKPOINT_DIR)
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(
            f"no checkpoints in {str(ckpt_dir)!r}: train first (--mode=train or --mode=all)"
        )
    cfg = exp.config
    x, label = example_inputs(exp)
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
    return Restored(
        params=params,
        step=int(restored.step),
        ema=bool(use_ema),
        fingerprint=T.state_fingerprint(params),
    )


def reference(exp: Experiment, n: int, split: str = "eval") -> dict[str, np.ndarray]:
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
