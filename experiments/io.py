"""The workdir's files: their names, JSON conversion and atomic writes (one home for all writers).

Every file of a run is written by process 0 only (:func:`flowjax.parallel.is_primary`) and
atomically: to a hidden temporary file beside the target, then renamed over it, so a reader (or
a run that is killed mid-write) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from flowjax import parallel

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "EVAL_FILE",
    "FIGURES_DIR",
    "METRICS_FILE",
    "SAMPLES_DIR",
    "flatten_params",
    "jsonable",
    "log",
    "unflatten_params",
    "write_json",
    "write_npz",
]

CONFIG_FILE = "config.json"
EVAL_FILE = "eval.json"
CHECKPOINT_DIR = "checkpoints"
SAMPLES_DIR = "samples"
FIGURES_DIR = "figures"
METRICS_FILE = "metrics.jsonl"


def log(msg: str) -> None:
    """A progress line on process 0."""
    if parallel.is_primary():
        print(f"[flowjax] {msg}", flush=True)


def jsonable(obj: Any) -> Any:
    """``obj`` with configs, arrays, paths and non-finite floats turned into JSON values."""
    if isinstance(obj, (ml_collections.ConfigDict, Mapping)):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.generic, jax.Array)):
        return jsonable(np.asarray(obj).item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _temporary(path: Path, suffix: str = "") -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")


def write_json(path: Path, obj: Any) -> None:
    """``obj`` (through :func:`jsonable`) as indented, key-sorted JSON; process 0 only."""
    if not parallel.is_primary():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    tmp.write_text(json.dumps(jsonable(obj), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``arrays`` as an uncompressed ``.npz``; process 0 only."""
    if not parallel.is_primary():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path, ".npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def flatten_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested dict of arrays (or of any leaves) as ``{"a/b/c": leaf}``."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_params(v, name + "/"))
        else:
            out[name] = v
    return out


def unflatten_params(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_params`."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out
