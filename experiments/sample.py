"""Sampling job: draw samples with every configured sampler from the newest checkpoint.

``samples/<sampler>.npz`` holds ``samples``, ``labels`` (class-conditional models), ``nfe`` per
chunk, ``seconds`` and ``settings`` (JSON); a later run reuses the file when its settings match
exactly (same sampler entry, checkpoint step, parameters and seed).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from experiments import io, samplers
from experiments.experiment import Experiment, Restored, keys, reference, restore, setup
from flowjax import models as M
from flowjax import parallel

__all__ = ["SampleSet", "draw_all", "sample"]


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


def _settings(exp: Experiment, name: str, restored: Restored) -> dict[str, Any]:
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


def _reuse(path: Path, name: str, settings: dict[str, Any]) -> SampleSet | None:
    """The saved samples of ``path`` when they were made with exactly ``settings``."""
    if not path.exists():
        return None
    try:
        with np.load(path) as f:
            if json.loads(str(f["settings"])) != settings:
                return None
            return SampleSet(
                name=name,
                samples=f["samples"],
                labels=f["labels"] if "labels" in f.files else None,
                nfe=float(np.mean(f["nfe"])),
                nfe_max=int(np.max(f["nfe"])),
                seconds=float(f["seconds"]),
                settings=settings,
                reused=True,
            )
    except (OSError, ValueError, KeyError):
        return None


def draw_all(exp: Experiment, fn: Any, restored: Restored) -> dict[str, SampleSet]:
    """Draw (or reuse from ``samples/``, when their settings match exactly) every sampler's samples."""
    cfg = exp.config
    key = keys(cfg)["sample"]
    out = {}
    for name, kw in exp.samplers.items():
        settings = io.jsonable(_settings(exp, name, restored))
        path = exp.file(io.SAMPLES_DIR, f"{name}.npz")
        reused = _reuse(path, name, settings)
        if reused is not None:
            out[name] = reused
            io.log(f"samples/{name}.npz: reused (same settings)")
            continue
        x, lab, nfes, secs = samplers.draw(
            exp, fn, kw, cfg.sampling.num_samples, cfg.sampling.batch_size, key
        )
        s = SampleSet(name, x, lab, float(np.mean(nfes)), int(np.max(nfes)), secs, settings)
        out[name] = s
        io.log(f"sampler {name}: {len(x)} samples, NFE {s.nfe:g}, {secs:.1f} s (with compilation)")
        arrays = {
            "samples": x,
            "nfe": np.asarray(nfes),
            "seconds": np.asarray(secs),
            "settings": np.asarray(json.dumps(settings, sort_keys=True)),
        }
        if lab is not None:
            arrays["labels"] = lab
        io.write_npz(path, arrays)
    return out


def sample(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Path]:
    """Draw samples with every configured sampler from the newest checkpoint.

    Writes ``samples/<sampler>.npz`` and the sample figures. Returns the npz paths.
    """
    from experiments.figures import experiment as figures

    exp = setup(config, workdir)
    restored = restore(exp)
    fn = M.model_fn(exp.model, restored.params)
    sets = draw_all(exp, fn, restored)
    if exp.config.figures.enabled and parallel.is_primary():
        ref = reference(exp, max(exp.config.figures.num_points, 1))
        for s in sets.values():
            figures.sample_figure(exp, s, ref, restored)
    return {name: exp.file(io.SAMPLES_DIR, f"{name}.npz") for name in sets}
