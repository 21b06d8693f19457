"""Figures of an experiment (matplotlib, Agg backend), each saved with the settings that made it.

Every function takes plain NumPy arrays (computed by :mod:`experiments.figures.experiment`), writes ``NAME.png``
and a sidecar ``NAME.json`` holding ``settings`` (the sampler, checkpoint step, times, ... that
produced the figure) and returns the PNG's path. Nothing here touches a model.

* :func:`samples_2d`: samples over data, a scatter overlay and 2-D histograms side by side.
* :func:`density_2d`: the model's log-density on a grid (and the exact one where known).
* :func:`trajectories_2d`: ODE against SDE trajectories from the same starting noise.
* :func:`vector_fields`: velocity and score fields as quiver plots at several ``t``.
* :func:`nfe_quality`: quality against the number of function evaluations, per sampler.
* :func:`image_grid`, :func:`image_trajectories`: sample grids and snapshots along the solve.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection

__all__ = [
    "density_2d",
    "image_grid",
    "image_trajectories",
    "nfe_quality",
    "samples_2d",
    "save_figure",
    "trajectories_2d",
    "vector_fields",
]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def save_figure(fig: Any, path: str | Path, settings: Mapping[str, Any], *, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` (``.png``) and ``settings`` to the sidecar ``.json``; close it."""
    path = Path(path).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    sidecar = path.with_suffix(".json")
    tmp = sidecar.with_suffix(f".json.tmp{os.getpid()}")
    tmp.write_text(json.dumps(_jsonable(dict(settings)), indent=2, sort_keys=True) + "\n")
    tmp.replace(sidecar)
    return path


def _limits(*arrays: np.ndarray, pad: float = 0.05, quantile: float = 0.999) -> tuple:
    pts = np.concatenate([np.asarray(a).reshape(-1, 2) for a in arrays])
    lo = np.quantile(pts, 1 - quantile, axis=0)
    hi = np.quantile(pts, quantile, axis=0)
    span = float(np.max(hi - lo)) * (1 + 2 * pad)
    mid = (lo + hi) / 2
    return (mid[0] - span / 2, mid[0] + span / 2), (mid[1] - span / 2, mid[1] + span / 2)


def samples_2d(
    samples: np.ndarray,
    data: np.ndarray,
    path: str | Path,
    settings: Mapping[str, Any],
    *,
    title: str = "",
    bins: int = 100,
    dpi: int = 110,
) -> Path:
    """Samples over data: scatter overlay, then 2-D histograms of data and of samples."""
    samples, data = np.asarray(samples), np.asarray(data)
    xlim, ylim = _limits(data, samples)
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.5))
    ax = axes[0]
    ax.scatter(data[:, 0], data[:, 1], s=2, alpha=0.35, c="tab:gray", label="held-out data")
    ax.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.35, c="tab:blue", label="samples")
    ax.legend(loc="upper right", markerscale=5, fontsize=8)
    ax.set_title(title or "samples over data")
    rng = [list(xlim), list(ylim)]
    for ax, pts, name in ((axes[1], data, "data"), (axes[2], samples, "samples")):
        ax.hist2d(pts[:, 0], pts[:, 1], bins=bins, range=rng, cmap="magma")
        ax.set_title(f"{name} density ({len(pts)} points)")
    for ax in axes:
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal")
    return save_figure(fig, path, settings, dpi=dpi)


def density_2d(
    log_prob: np.ndarray,
    extent: tuple[float, float, float, float],
    path: str | Path,
    settings: Mapping[str, Any],
    *,
    exact_log_prob: np.ndarray | None = None,
    dpi: int = 110,
) -> Path:
    """The model's density ``exp(log p)`` on an ``N x N`` grid (``log_prob[i, j]`` at row ``y_i``,
    column ``x_j``), next to the exact one when given."""
    panels = [("model density", np.asarray(log_prob))]
    if exact_log_prob is not None:
        panels.append(("exact density", np.asarray(exact_log_prob)))
    vmax = max(float(np.nanmax(np.exp(p))) for _, p in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
    for ax, (name, lp) in zip(axes[0], panels, strict=True):
        im = ax.imshow(
            np.exp(lp),
            origin="lower",
            extent=extent,
            cmap="viridis",
            vmin=0.0,
            vmax=vmax,
            interpolation="bilinear",
        )
        ax.set_title(name)
        ax.set_aspect("equal")
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8)
    return save_figure(fig, path, settings, dpi=dpi)


def trajectories_2d(
    trajectories: Mapping[str, np.ndarray],
    ts: np.ndarray,
    data: np.ndarray,
    path: str | Path,
    settings: Mapping[str, Any],
    *,
    dpi: int = 110,
) -> Path:
    """Trajectories ``[B, S, 2]`` (one panel per name, e.g. ODE and SDE) over the data, coloured by
    time; start points are hollow, end points filled."""
    names = list(trajectories)
    all_pts = [np.asarray(tr).reshape(-1, 2) for tr in trajectories.values()]
    xlim, ylim = _limits(data, *all_pts, quantile=1.0)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 5), squeeze=False)
    ts = np.asarray(ts)
    frac = (ts[:-1] - ts[0]) / max(float(ts[-1] - ts[0]), 1e-12)
    for ax, name in zip(axes[0], names, strict=True):
        tr = np.asarray(trajectories[name])
        ax.scatter(data[:, 0], data[:, 1], s=1, alpha=0.15, c="tab:gray")
        segments = np.stack([tr[:, :-1], tr[:, 1:]], axis=2).reshape(-1, 2, 2)  # [B*(S-1), 2, 2]
        lines = LineCollection(segments, cmap="coolwarm", linewidths=0.7, alpha=0.8)
        lines.set_array(np.tile(frac, tr.shape[0]))
        ax.add_collection(lines)
        ax.scatter(tr[:, 0, 0], tr[:, 0, 1], s=10, facecolors="none", edgecolors="k", lw=0.5)
        ax.scatter(tr[:, -1, 0], tr[:, -1, 1], s=10, c="k")
        ax.set_title(f"{name}: t = {ts[0]:.3g} (noise) to {ts[-1]:.3g} (data)")
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal")
    return save_figure(fig, path, settings, dpi=dpi)


def vector_fields(
    fields: Mapping[str, np.ndarray],
    grid: np.ndarray,
    times: Sequence[float],
    path: str | Path,
    settings: Mapping[str, Any],
    *,
    points: Sequence[np.ndarray] | None = None,
    dpi: int = 110,
) -> Path:
    """Quiver plots: one row per field (``fields[name]`` is ``[T, N, 2]`` at the ``N`` points
    ``grid`` for each of the ``T`` times), one column per time. Arrows have unit length (the
    direction); colour is the magnitude. ``points[c]``: samples of ``p_t`` at time ``c``, drawn
    underneath (where the field matters)."""
    names = list(fields)
    grid = np.asarray(grid)
    per_row = round(math.sqrt(len(grid)))
    fig, axes = plt.subplots(
        len(names), len(times), figsize=(3.3 * len(times), 3.3 * len(names)), squeeze=False
    )
    for r, name in enumerate(names):
        vals = np.asarray(fields[name])
        for c, t in enumerate(times):
            ax = axes[r, c]
            vec = vals[c]
            mag = np.linalg.norm(vec, axis=-1)
            scale = np.maximum(mag, 1e-12)
            if points is not None:
                pts = np.asarray(points[c])
                ax.scatter(pts[:, 0], pts[:, 1], s=0.5, alpha=0.2, c="tab:gray")
            ax.quiver(
                grid[:, 0],
                grid[:, 1],
                vec[:, 0] / scale,
                vec[:, 1] / scale,
                mag,
                cmap="viridis",
                angles="xy",
                pivot="mid",
                scale=1.25 * per_row,
                scale_units="width",
                width=0.006,
            )
            ax.set_xlim(grid[:, 0].min() - 0.5, grid[:, 0].max() + 0.5)
            ax.set_ylim(grid[:, 1].min() - 0.5, grid[:, 1].max() + 0.5)
            ax.set_title(f"{name}, t = {t:g}\n|max| = {float(mag.max()):.3g}", fontsize=9)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    return save_figure(fig, path, settings, dpi=dpi)


def nfe_quality(
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    metric: str,
    path: str | Path,
    settings: Mapping[str, Any],
    *,
    floor: tuple[float, float] | None = None,
    ylabel: str | None = None,
    reference: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    few_step: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    dpi: int = 110,
) -> Path:
    """``metric`` against NFE (log-log), one line per sampler; ``curves[name]`` is a list of
    records with ``"nfe"`` and ``metric``. ``floor``: (mean, std) drawn as a band. ``reference``:
    curves of the same form drawn dashed (e.g. the exact oracle velocity's solvers);
    ``few_step``: records of few-step samplers (e.g. a MeanFlow model at 1, 2, 4 steps), drawn
    as large markers."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    styles = (
        (curves, {"marker": "o", "ls": "-"}),
        (reference or {}, {"marker": ".", "ls": "--", "lw": 1}),
        (few_step or {}, {"marker": "s", "ls": "-", "lw": 2, "ms": 8}),
    )
    for group, style in styles:
        for name, records in group.items():
            pts = sorted(
                (float(r["nfe"]), float(r[metric]))
                for r in records
                if r.get(metric) is not None and math.isfinite(float(r[metric]))
            )
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, y, label=name, **style)
    if floor is not None:
        mean, std = floor
        ax.axhspan(mean - std, mean + std, color="gray", alpha=0.25)
        ax.axhline(mean, color="gray", ls="--", lw=1, label="finite-sample floor (mean ± std)")
    ax.set_xscale("log")
    # statistics such as the unbiased energy distance dip below 0 at the floor: symmetric log axis,
    # linear within the floor's spread
    lin = max(floor[1], 1e-8) if floor is not None else 1e-4
    ax.set_yscale("symlog", linthresh=lin)
    ax.set_xlabel("NFE (model evaluations per sample)")
    ax.set_ylabel(ylabel or metric)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, settings, dpi=dpi)


def _tile(images: np.ndarray, value_range: tuple[float, float], ncol: int) -> np.ndarray:
    """``[N, H, W, C]`` in ``value_range`` to one ``[rows*H, ncol*W, C]`` image in [0, 1]."""
    lo, hi = value_range
    imgs = np.clip((np.asarray(images, np.float64) - lo) / (hi - lo), 0.0, 1.0)
    n, h, w, c = imgs.shape
    rows = math.ceil(n / ncol)
    pad = 1
    out = np.ones((rows * (h + pad) + pad, ncol * (w + pad) + pad, c))
    for i in range(n):
        r, q = divmod(i, ncol)
        out[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + q * (w + pad) : pad + q * (w + pad) + w,
        ] = imgs[i]
    return out


def _show(ax: Any, tiled: np.ndarray) -> None:
    if tiled.shape[-1] == 1:
        ax.imshow(tiled[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(tiled, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def image_grid(
    images: np.ndarray,
    path: str | Path,
    settings: Mapping[str, Any],
    *,
    value_range: tuple[float, float] = (-1.0, 1.0),
    ncol: int | None = None,
    title: str = "",
    dpi: int = 110,
) -> Path:
    """A grid of images ``[N, H, W, C]`` (values clipped to ``value_range``)."""
    images = np.asarray(images)
    ncol = ncol or math.ceil(math.sqrt(len(images)))
    tiled = _tile(images, value_range, ncol)
    size = max(3.0, min(12.0, 0.12 * tiled.shape[1]))
    fig, ax = plt.subplots(figsize=(size, size * tiled.shape[0] / tiled.shape[1] + 0.4))
    _show(ax, tiled)
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path, settings, dpi=dpi)


def image_trajectories(
    trajectories: Mapping[str, np.ndarray],
    ts: np.ndarray,
    path: str | Path,
    settings: Mapping[str, Any],
    *,
    value_range: tuple[float, float] = (-1.0, 1.0),
    dpi: int = 110,
) -> Path:
    """Snapshots along the solve: for each name a block of rows (one per example) and one column
    per saved time; ``trajectories[name]`` is ``[B, S, H, W, C]``."""
    names = list(trajectories)
    ts = np.asarray(ts)
    rows = sum(np.asarray(trajectories[n]).shape[0] for n in names)
    fig, axes = plt.subplots(
        len(names),
        1,
        figsize=(0.9 * len(ts) + 0.5, 0.9 * rows + 0.5 * len(names)),
        squeeze=False,
    )
    for ax, name in zip(axes[:, 0], names, strict=True):
        tr = np.asarray(trajectories[name])
        b, s = tr.shape[:2]
        flat = tr.reshape(b * s, *tr.shape[2:])
        _show(ax, _tile(flat, value_range, s))
        ax.set_title(f"{name}: columns t = " + ", ".join(f"{t:.2f}" for t in ts), fontsize=8)
    return save_figure(fig, path, settings, dpi=dpi)
