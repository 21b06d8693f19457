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
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import ml_collections

from experiments.configs import default as default_config

__all__ = ["ConfigError", "build", "check_config", "choice", "flat_keys", "section"]

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
    if problems:
        raise ConfigError("; ".join(problems))


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
