"""Evaluation job: the newest checkpoint's samples, numbers and figures; ``eval.json``.

:func:`evaluate` restores the parameters, draws (or reuses) every sampler's samples
(:mod:`experiments.sample`) and runs the evaluators of :mod:`experiments.evaluators` that the
config asks for: sample quality with finite-sample floors, the classifier Frechet distance and
Inception FID/KID (images), NLL and the exact NLL gap (or bits/dim), NFE against quality; then
the figures (:mod:`experiments.figures`). :func:`train_and_evaluate` is ``--mode=all``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections

from experiments import io
from experiments import train as train_job
from experiments.evaluators import (
    Context,
    SweepMetric,
    classifier_fd,
    inception_fd,
    nfe_sweep,
    nll,
    quality,
)
from experiments.experiment import Experiment, Restored, keys, restore, setup
from experiments.sample import draw_all
from flowjax import models as M
from flowjax import parallel
from flowjax import training as T

__all__ = ["evaluate", "run", "summary", "train_and_evaluate"]


def evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """Evaluate the newest checkpoint; writes ``eval.json``, ``samples/`` and ``figures/``."""
    return run(setup(config, workdir))


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike
) -> dict[str, Any]:
    """Train (resuming if the workdir has checkpoints), then evaluate; returns ``eval.json``'s dict."""
    exp = setup(config, workdir)
    train_job.run(exp)
    return run(exp)


def _header(exp: Experiment, restored: Restored) -> dict[str, Any]:
    cfg = exp.config
    out: dict[str, Any] = {
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
    metrics_file = exp.file(io.METRICS_FILE)
    if metrics_file.exists():
        records = [r for r in T.read_jsonl(metrics_file) if "loss" in r]
        if records:
            out["training"] = {"last_logged": records[-1], "metrics_file": str(metrics_file)}
    return out


def _sampler_results(exp: Experiment, sets: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "settings": s.settings,
            "nfe": s.nfe,
            "nfe_max": s.nfe_max,
            "num_samples": len(s.samples),
            "seconds_with_compilation": s.seconds,
            "samples_file": str(exp.file(io.SAMPLES_DIR, f"{name}.npz")),
        }
        for name, s in sets.items()
    }


class _Timer:
    """``with timer("name"):`` adds the block's wall time to ``timings["name"]``."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def __call__(self, name: str) -> _Timer:
        self._name = name
        return self

    def __enter__(self) -> None:
        self._t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timings[self._name] = time.perf_counter() - self._t0


def run(exp: Experiment) -> dict[str, Any]:
    """Evaluate a set-up experiment (see the module docstring); returns ``eval.json``'s dict."""
    from experiments.figures import experiment as figures

    cfg, ev = exp.config, exp.config.eval
    t_start = time.perf_counter()
    restored = restore(exp)
    fn = M.model_fn(exp.model, restored.params)
    k_floor, k_stat, k_nll, k_sweep = jax.random.split(keys(cfg)["eval"], 4)
    timer = _Timer()
    result = _header(exp, restored)
    with timer("sampling"):
        sets = draw_all(exp, fn, restored)
    result["samplers"] = _sampler_results(exp, sets)
    ctx = Context(exp, fn, sets, {"floor": k_floor, "stat": k_stat, "nll": k_nll, "sweep": k_sweep})
    sweep = nfe_sweep.Evaluator.from_config(exp)
    metric: SweepMetric | None = None

    if ev.metrics:
        with timer("sample_quality"):
            q = quality.Evaluator.from_config(exp)
            out = q.run(ctx)
            result["data_floors"] = out["data_floors"]
            for name, entry in out["samplers"].items():
                result["samplers"][name].update(entry)
        metric = q.sweep_metric(ctx, sweep.num_samples)

    if exp.train_ds.is_image:
        with timer("classifier_fd"):
            cfd = classifier_fd.Evaluator.from_config(exp)
            if cfd is not None:
                result["classifier_fd"] = cfd.run(ctx)
                for name, value in result["classifier_fd"]["samplers"].items():
                    result["samplers"][name]["classifier_fd"] = value
                metric = cfd.sweep_metric(ctx, sweep.num_samples)
        inc = inception_fd.Evaluator.from_config(exp)
        if inc is not None:
            with timer("inception"):
                result["inception"] = inc.run(ctx)

    if ev.nll.enabled:  # the velocity of a two-time model (setup refuses consistency models)
        with timer("nll"):
            out = nll.Evaluator.from_config(exp).run(
                dataclasses.replace(ctx, fn=exp.velocity_model(fn))
            )
            result["bits_per_dim" if exp.train_ds.is_image else "nll"] = out
            io.log(nll.log_line(out, exp.train_ds.is_image))

    if metric is not None and sweep.enabled:
        with timer("nfe_sweep"):
            result["nfe_sweep"] = sweep.run(ctx, metric)

    if cfg.figures.enabled and parallel.is_primary():
        with timer("figures"):
            paths = figures.all_figures(exp, fn, sets, restored, result)
            result["figures"] = [str(p) for p in paths]
    result["timings_seconds"] = {**timer.timings, "total": time.perf_counter() - t_start}
    result["config"] = train_job.config_dict(cfg)
    io.write_json(exp.file(io.EVAL_FILE), result)
    return result


def summary(result: Mapping[str, Any], workdir: str | os.PathLike) -> str:
    """A few lines saying where the numbers and figures are, and the headline numbers."""
    wd = Path(workdir)
    lines = [f"numbers: {wd / io.EVAL_FILE}"]
    if result.get("figures"):
        names = ", ".join(Path(p).name for p in result["figures"])
        lines.append(f"figures: {wd / io.FIGURES_DIR}/ ({names})")
    lines.append(
        f"samples: {wd / io.SAMPLES_DIR}/   checkpoints: {wd / io.CHECKPOINT_DIR}/   "
        f"metrics: {wd / io.METRICS_FILE}"
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
            line += (
                f", NLL gap {n['nll_gap']:.4f} ± {n['nll_gap_stderr']:.4f} "
                f"(exact entropy {n['entropy']:.4f})"
            )
        lines.append(line)
    if "bits_per_dim" in result:
        lines.append(f"  bits/dim {result['bits_per_dim']['bits_per_dim']:.4f}")
    return "\n".join(lines)
