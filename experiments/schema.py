"""Config checks and config-to-object construction.

The default config (``experiments/configs/default.py``) is the schema: :func:`check_config`
rejects keys it does not have (naming the closest valid key) and values of another type.
:func:`build` constructs a library object from a config section by passing the section's keys as
keyword arguments, so a library option becomes settable from configs by adding its key to the
default config, with no second list of names here.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import ml_collections

from experiments.configs import default as default_config
from flowjax.losses import TIME_SAMPLERS
from flowjax.training import OPTIMIZERS

__all__ = [
    "OBJECTIVES",
    "OBJECTIVE_SECTIONS",
    "ConfigError",
    "build",
    "check_config",
    "choice",
    "flat_keys",
    "section",
]

#: ``loss.objective`` values, with the config section of each objective's own options.
OBJECTIVE_SECTIONS = {
    "fm": None,
    "meanflow": "loss.meanflow",
    "shortcut": "loss.shortcut",
    "consistency": "loss.consistency",
    "cd_oracle": "loss.consistency",
}
OBJECTIVES = tuple(OBJECTIVE_SECTIONS)
#: ``loss`` keys of flow matching (``make_loss``), which the few-step objectives do not read.
_FM_LOSS_KEYS = (
    "prediction",
    "weighting",
    "time_sampler",
    "t_margin",
    "label_dropout",
    "coupling",
    "reduction",
    "min_snr_gamma",
)

# Sections of the schema whose keys are free: path keyword arguments, named samplers.
_OPEN_SECTIONS = ("path.options", "sampling.samplers")

T = TypeVar("T")


class ConfigError(ValueError):
    """A config that cannot run: an unknown key, a wrong type or value (the message names it)."""


def flat_keys(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": value}`` for every key (open sections stay whole)."""
    out = {}
    for k, v in cfg.items():
        name = f"{prefix}{k}"
        if isinstance(v, (ml_collections.ConfigDict, dict)) and name not in _OPEN_SECTIONS:
            out.update(flat_keys(v, name + "."))
        else:
            out[name] = v
    return out


def _type_error(key: str, value: Any, want: Any) -> str | None:
    if want is None:
        return None  # placeholders take a value of their type (ml_collections checks overrides)
    if value is None:
        return f"config key {key!r} must be set (like its default {want!r}); got None"
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


def _unknown(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1)
    return f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def check_config(config: ml_collections.ConfigDict) -> None:
    """Reject keys that the default config (the schema) does not have, and values of the wrong type.

    Raises:
      ConfigError: naming the key (with the closest valid key), or the key and the expected type.
    """
    if not isinstance(config, (ml_collections.ConfigDict, dict)):
        raise ConfigError(
            f"config must be an ml_collections.ConfigDict; got {type(config).__name__}"
        )
    schema = flat_keys(default_config.get_config())
    given = flat_keys(config)
    unknown = sorted(set(given) - set(schema))
    if unknown:
        raise ConfigError(
            f"unknown config key(s): {', '.join(_unknown(k, schema) for k in unknown)}. Valid "
            "keys are those of experiments/configs/default.py"
        )
    problems = [p for k, v in given.items() if (p := _type_error(k, v, schema.get(k)))]
    defaults = default_config.SAMPLER_DEFAULTS
    for name, entry in config.sampling.samplers.items():
        if not isinstance(entry, (ml_collections.ConfigDict, dict)):
            problems.append(f"sampling.samplers.{name} must be a config dict (see default.sampler)")
            continue
        for k, v in entry.items():
            key = f"sampling.samplers.{name}.{k}"
            if k not in defaults:
                close = difflib.get_close_matches(k, list(defaults), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"unknown config key {key!r}{hint}")
            elif p := _type_error(key, v, defaults[k]):
                problems.append(p)
    if not problems:
        problems = _value_problems(given)
    if not problems:
        problems = _objective_problems(given, schema)
    if problems:
        raise ConfigError("; ".join(problems))


def _objective_problems(given: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Options of an objective other than ``loss.objective`` that differ from their defaults (they
    would be silently ignored), and flow-matching loss keys a few-step objective does not read."""
    objective = given.get("loss.objective", "fm")
    mine = OBJECTIVE_SECTIONS[objective]
    problems = []
    for sec in {s for s in OBJECTIVE_SECTIONS.values() if s is not None and s != mine}:
        for key in sorted(k for k in given if k.startswith(sec + ".")):
            if given[key] != schema[key]:
                problems.append(
                    f"config key {key!r} is set ({given[key]!r}) but loss.objective is "
                    f"{objective!r}, which does not read it"
                )
    if objective != "fm":
        for name in _FM_LOSS_KEYS:
            key = f"loss.{name}"
            if given.get(key, schema[key]) != schema[key]:
                problems.append(
                    f"config key {key!r} is {given[key]!r} but loss.objective {objective!r} does "
                    f"not read it (it applies to objective 'fm'; leave the default "
                    f"{schema[key]!r}{_fm_hint(name, mine)})"
                )
    return problems


def _fm_hint(name: str, sec: str | None) -> str:
    if name == "time_sampler" and sec in ("loss.meanflow", "loss.shortcut"):
        return f"; the objective's own is {sec}.time_sampler"
    return ""


# Values a key's type admits but the run cannot use (keys whose range the library does not check
# before work starts): key -> (test, what the value must be).
_COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
_VALUE_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "model.dtype": (lambda v: v in _COMPUTE_DTYPES, f"one of {', '.join(_COMPUTE_DTYPES)}"),
    "optim.name": (lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
    "optim.lr": (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "training.num_steps": (lambda v: v >= 0, ">= 0"),
    "sampling.num_samples": (lambda v: v >= 1, ">= 1"),
    "model.mlp.second_time": (lambda v: v in (None, "r", "d"), "None, 'r' or 'd'"),
    "model.unet.second_time": (lambda v: v in (None, "r", "d"), "None, 'r' or 'd'"),
    "loss.objective": (lambda v: v in OBJECTIVES, f"one of {', '.join(OBJECTIVES)}"),
    "loss.meanflow.time_sampler": (lambda v: v in TIME_SAMPLERS, f"one of {TIME_SAMPLERS}"),
    "loss.meanflow.equal_fraction": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "loss.meanflow.adaptive_power": (lambda v: math.isfinite(v) and v >= 0, "a number >= 0"),
    "loss.meanflow.adaptive_eps": (lambda v: math.isfinite(v) and v > 0, "a number > 0"),
    "loss.shortcut.max_steps": (
        lambda v: v >= 2 and not v & (v - 1),
        "a power of two >= 2",
    ),
    "loss.shortcut.bootstrap_fraction": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "loss.shortcut.time_sampler": (lambda v: v in TIME_SAMPLERS, f"one of {TIME_SAMPLERS}"),
    "loss.consistency.sigma_data": (lambda v: math.isfinite(v) and v > 0, "a number > 0"),
    "loss.consistency.sigma_min": (lambda v: math.isfinite(v) and v > 0, "a number > 0"),
    "loss.consistency.sigma_max": (lambda v: math.isfinite(v) and v > 0, "a number > 0"),
    "loss.consistency.rho": (lambda v: math.isfinite(v) and v > 0, "a number > 0"),
    "loss.consistency.huber_c": (lambda v: v is None or v >= 0, "None or a number >= 0"),
    "loss.consistency.s1": (lambda v: v >= 1, "an integer >= 1"),
    "loss.consistency.p_std": (lambda v: math.isfinite(v) and v > 0, "a number > 0"),
    "loss.consistency.num_levels": (lambda v: v >= 2, "an integer >= 2"),
    "loss.consistency.teacher_solver": (lambda v: v in ("euler", "heun"), "'euler' or 'heun'"),
    "loss.consistency.weighting": (lambda v: v in ("ict", "uniform"), "'ict' or 'uniform'"),
}


def _value_problems(given: Mapping[str, Any]) -> list[str]:
    return [
        f"config key {key!r} must be {what}; got {given[key]!r}"
        for key, (ok, what) in _VALUE_RULES.items()
        if key in given and not ok(given[key])
    ]


def choice(value: str, valid: Iterable[str], key: str) -> str:
    """``value`` if it is one of ``valid``, else a :class:`ConfigError` naming ``key``."""
    valid = tuple(valid)
    if value not in valid:
        raise ConfigError(f"config key {key!r} is {value!r}; valid choices are: {', '.join(valid)}")
    return value


def section(cfg: Mapping[str, Any], *, drop: Iterable[str] = ()) -> dict[str, Any]:
    """A config section as a plain dict of keyword arguments, without the keys in ``drop``."""
    dropped = set(drop)
    return {k: v for k, v in dict(cfg).items() if k not in dropped}


def build(factory: Callable[..., T], cfg: Mapping[str, Any], /, **fixed: Any) -> T:
    """``factory(**keys of cfg that factory accepts, **fixed)``.

    The keys ``factory``'s signature names are passed through (a config section can serve several
    objects, as a flat sampler entry serves its method, solver, grid and step control); ``fixed``
    wins over the section.
    """
    params = inspect.signature(factory).parameters
    kwargs = {k: v for k, v in dict(cfg).items() if k in params}
    kwargs.update(fixed)
    return factory(**kwargs)
