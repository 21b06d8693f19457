"""Samplers of an experiment: a config entry (``sampling.samplers.<name>``) to ``sample()`` calls.

A sampler entry is flat (``experiments/configs/default.py:SAMPLER_DEFAULTS``). :func:`settings`
checks it and :func:`sample_options` builds the method, solver, time grid and step-control objects
of :func:`flowjax.sampling.sample` from it with :func:`experiments.schema.build`: each object takes
the entry's keys its constructor names, and ``sample`` takes the rest of its own keyword
arguments from the entry, so a new option needs only a new key in ``SAMPLER_DEFAULTS``.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs import default as default_config
from experiments.schema import ConfigError, build, choice
from flowjax import parallel
from flowjax import sampling as S
from flowjax import solvers as SV

if TYPE_CHECKING:
    from experiments.experiment import Experiment

__all__ = ["conditioned", "draw", "labels", "sample_options", "settings"]

_SAMPLE_ARGS = frozenset(inspect.signature(S.sample).parameters)


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


def full_entry(entry: Any) -> dict[str, Any]:
    """A sampler entry with the defaults of the keys it does not set."""
    return {**default_config.SAMPLER_DEFAULTS, **dict(entry)}


def settings(name: str, entry: Mapping[str, Any], prediction: str) -> dict[str, Any]:
    """A (full) sampler entry checked and parsed: ``sigma`` a number or name, ``s_tmax`` a float,
    ``prediction`` the model's. :func:`sample_options` turns it into ``sample`` arguments."""
    key = f"sampling.samplers.{name}"
    method = choice(entry["method"], S.SAMPLING_METHODS, f"{key}.method")
    sigma = _parse_sigma(entry["sigma"], f"{key}.sigma")
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
    if method in ("ode", "sde", "edm") and entry["corrector_steps"]:
        raise ConfigError(
            f"config key '{key}.corrector_steps' applies to methods 'pc' and 'langevin'; "
            f"method is {method!r}"
        )
    s_tmax = math.inf if entry["s_tmax"] is None else float(entry["s_tmax"])
    return {**entry, "prediction": prediction, "sigma": sigma, "s_tmax": s_tmax}


def sample_options(kw: Mapping[str, Any]) -> dict[str, Any]:
    """``flowjax.sampling.sample`` keyword arguments of a sampler's :func:`settings`."""
    method_type = type(S.SAMPLING_METHODS[kw["method"]])
    # the Langevin corrector's steps are named corrector_steps in the (flat) entry
    method = build(method_type, {"steps": kw["corrector_steps"], **kw})
    solver = build(SV.Euler, kw) if kw["solver"] == "euler" else kw["solver"]
    grid = build(SV.EDMGrid, kw) if kw["time_grid"] == "edm" else kw["time_grid"]
    adaptive = kw["adaptive"] and build(SV.Adaptive, kw)
    options = {k: v for k, v in kw.items() if k in _SAMPLE_ARGS}
    options.update(method=method, solver=solver, time_grid=grid, adaptive=adaptive)
    return options


def labels(exp: Experiment, start: int, n: int) -> np.ndarray | None:
    """Class labels ``i % num_classes`` of samples ``start, ..., start + n - 1`` (None: unconditional)."""
    if exp.num_classes is None:
        return None
    return (np.arange(start, start + n) % exp.num_classes).astype(np.int32)


def conditioned(
    fn: Any, num_classes: int | None, guidance_scale: float | None, label: np.ndarray | None
) -> tuple[Any, dict[str, Any]]:
    """The model to sample and the ``cond`` argument: class labels as ``cond``, or the
    classifier-free-guided model (null label ``K``) when the sampler has a guidance scale."""
    if label is None:
        return fn, {}
    if guidance_scale is None:
        return fn, {"cond": jnp.asarray(label)}
    null = jnp.asarray(num_classes, jnp.int32)
    return S.guided_model(fn, jnp.asarray(label), null, float(guidance_scale)), {}


def _batch_sharding(batch: int) -> Any:
    n = jax.local_device_count()
    if n == 1 or batch % n:
        return None
    return parallel.batch_sharding(parallel.make_mesh(devices=jax.local_devices()))


def draw(
    exp: Experiment,
    fn: Any,
    kw: Mapping[str, Any],
    num: int,
    batch: int,
    key: Any,
    *,
    as_is: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, list[int], float]:
    """``num`` samples in chunks of ``batch`` (all chunks full-size: one compilation).

    ``fn`` is the model function; what the sampler calls is ``exp.sampler_model(fn, method)``
    (a few-step model, a consistency model in its parameterisation, or a velocity), or ``fn``
    itself with ``as_is`` (e.g. the oracle velocity).

    Returns the samples, their labels, each chunk's NFE and the wall time (with compilation).
    """
    if not as_is:
        fn = exp.sampler_model(fn, kw["method"])
    batch = min(batch, num)
    sharding = _batch_sharding(batch)
    chunks, all_labels, nfes = [], [], []
    t0 = time.perf_counter()
    options = sample_options(kw)
    for i, start in enumerate(range(0, num, batch)):
        lab = labels(exp, start, batch)
        model, cond = conditioned(fn, exp.num_classes, kw.get("guidance_scale"), lab)
        res = S.sample(
            model,
            exp.path,
            jax.random.fold_in(key, i),
            (batch, *exp.shape),
            sharding=sharding,
            **options,
            **cond,
        )
        chunks.append(np.asarray(res.samples))
        nfes.append(int(res.nfe))
        if lab is not None:
            all_labels.append(lab)
    samples = np.concatenate(chunks)[:num]
    lab = np.concatenate(all_labels)[:num] if all_labels else None
    return samples, lab, nfes, time.perf_counter() - t0
