"""The figures of an experiment: what to plot, computed from the model (matplotlib in :mod:`.plots`).

Low-dimensional (2-D) data: samples over data, ODE and SDE trajectories from the same noise,
velocity and score fields (with the exact ones where the oracle knows them), the model's
log-density on a grid; images: sample grids, held-out data, snapshots along the solve; both: the
NFE-quality curves of the sweep (with the oracle velocity's reference curves and the few-step
samplers' points when the run has them). Few-step models: the velocity figures use the
instantaneous velocity of a two-time model (``Experiment.velocity_model``) and are left out for
consistency models, which have none. Each PNG has a JSON sidecar of the settings that made it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments import io, samplers
from experiments.evaluators.nll import exact_log_prob_fn
from experiments.experiment import ONESTEP_METHOD, Experiment, Restored, keys, reference
from experiments.figures import plots as F
from flowjax import convert
from flowjax import likelihood as LL
from flowjax import sampling as S

if TYPE_CHECKING:
    from experiments.sample import SampleSet

__all__ = ["all_figures", "few_step_records", "sample_figure"]


def _fig_settings(exp: Experiment, restored: Restored, **extra: Any) -> dict[str, Any]:
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


def sample_figure(
    exp: Experiment, s: SampleSet, ref: Mapping[str, np.ndarray], restored: Restored
) -> Path | None:
    fc = exp.config.figures
    out = exp.file(io.FIGURES_DIR, f"samples_{s.name}")
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


def few_step_records(
    exp: Experiment, result: Mapping[str, Any], metric: str
) -> dict[str, list[dict[str, Any]]]:
    """``{method: [{"sampler", "nfe", metric}]}`` of the few-step samplers (MeanFlow, shortcut,
    consistency) in ``result["samplers"]``, with the evaluated ``metric``."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, entry in result.get("samplers", {}).items():
        method = exp.samplers[name]["method"]
        if method not in ONESTEP_METHOD.values():
            continue
        q = entry.get("quality", {}).get(metric)
        value = q["value"] if q is not None else entry.get(metric)
        if value is not None:
            out.setdefault(method, []).append({"sampler": name, "nfe": entry["nfe"], metric: value})
    return out


def _trajectories(exp: Experiment, fn: Any, key: Any, num: int, num_times: int) -> dict[str, Any]:
    """ODE and SDE trajectories from the same standard-normal draw (scaled to each start time)."""
    names = [n for n in (_first(exp, "ode"), _first(exp, "sde")) if n is not None]
    z = jax.random.normal(key, (num, *exp.shape))
    out, times = {}, {}
    for name in names:
        kw = dict(exp.samplers[name])
        options = samplers.sample_options(kw)
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
        lab = samplers.labels(exp, 0, num)
        model, cond = samplers.conditioned(fn, exp.num_classes, kw.get("guidance_scale"), lab)
        res = S.sample(
            model,
            exp.path,
            jax.random.fold_in(key, 1),
            None,
            x_start=x0,
            save_times=jnp.asarray(ts),
            **samplers.sample_options(kw),
            **cond,
        )
        out[f"{name} ({kw['method'].upper()})"] = np.asarray(res.trajectory)
        times[name] = ts
    return {"trajectories": out, "times": times, "names": names}


def all_figures(
    exp: Experiment,
    fn: Any,
    sets: Mapping[str, SampleSet],
    restored: Restored,
    result: Mapping[str, Any],
) -> list[Path]:
    fc = exp.config.figures
    key = keys(exp.config)["figures"]
    k_traj, k_dens = jax.random.split(key)
    paths: list[Path] = []
    ref = reference(exp, max(fc.num_points, fc.grid_images))
    for s in sets.values():
        p = sample_figure(exp, s, ref, restored)
        if p is not None:
            paths.append(p)

    sw = result.get("nfe_sweep")
    if sw and (sw["curves"] or sw.get("reference_curves")):
        floor = sw["floor"]
        few = few_step_records(exp, result, sw["metric"])
        paths.append(
            F.nfe_quality(
                sw["curves"],
                sw["metric"],
                exp.file(io.FIGURES_DIR, "nfe_quality"),
                _fig_settings(
                    exp,
                    restored,
                    metric=sw["metric"],
                    num_samples=sw["num_samples"],
                    samplers={n: exp.sampler_settings[n] for n in sw["curves"]},
                    floor=floor,
                    reference=sw.get("reference"),
                    few_step={m: [r["sampler"] for r in rows] for m, rows in few.items()},
                ),
                floor=(floor["floor_mean"], floor["floor_std"]),
                reference=sw.get("reference_curves"),
                few_step={f"{m} (trained few-step model)": rows for m, rows in few.items()},
                dpi=fc.dpi,
            )
        )

    if exp.train_ds.is_image:
        n_img = min(fc.grid_images, len(ref["x"]))
        paths.append(
            F.image_grid(
                ref["x"][:n_img],
                exp.file(io.FIGURES_DIR, "data"),
                _fig_settings(exp, restored, what=f"held-out {exp.config.data.eval_split} images"),
                value_range=exp.train_ds.value_range,
                title="held-out data",
                dpi=fc.dpi,
            )
        )
        tr = _trajectories(exp, exp.velocity_model(fn), k_traj, min(6, fc.num_trajectories), 9)
        if tr["trajectories"]:
            paths.append(
                F.image_trajectories(
                    tr["trajectories"],
                    next(iter(tr["times"].values())),
                    exp.file(io.FIGURES_DIR, "trajectories"),
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
    tr = _trajectories(exp, exp.velocity_model(fn), k_traj, fc.num_trajectories, 41)
    if tr["trajectories"]:
        paths.append(
            F.trajectories_2d(
                tr["trajectories"],
                next(iter(tr["times"].values())),
                data,
                exp.file(io.FIGURES_DIR, "trajectories"),
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
    if exp.has_velocity:  # fields and density of the velocity (consistency models have none)
        paths.append(_field_figure(exp, exp.velocity_model(fn), data, restored))
        if fc.density_grid:
            paths.append(_density_figure(exp, exp.velocity_model(fn), data, restored, k_dens))
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


def _field_figure(exp: Experiment, fn: Any, data: np.ndarray, restored: Restored) -> Path:
    fc = exp.config.figures
    pts, _ = _grid_points(data, fc.field_grid)
    x = jnp.asarray(pts)
    lab = jnp.asarray(samplers.labels(exp, 0, len(pts))) if exp.num_classes is not None else None
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
        exp.file(io.FIGURES_DIR, "fields"),
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
    exp: Experiment, fn: Any, data: np.ndarray, restored: Restored, key: Any
) -> Path:
    fc = exp.config.figures
    n = fc.density_grid
    pts, extent = _grid_points(data, n)
    kw = dict(exp.likelihood_kwargs)
    # a qualitative picture: a looser tolerance than the reported NLL
    kw.update(rtol=max(kw["rtol"], 1e-3), atol=max(kw["atol"], 1e-3), divergence="exact")
    cond = {}
    if exp.num_classes is not None:
        cond = {"cond": jnp.asarray(samplers.labels(exp, 0, len(pts)))}
    res = LL.log_likelihood(fn, exp.path, jnp.asarray(pts), key=key, **kw, **cond)
    lp = np.asarray(res.log_prob).reshape(n, n)
    exact_fn = exact_log_prob_fn(exp.eval_ds)
    exact = None
    if exact_fn is not None and exp.num_classes is None:
        exact = np.asarray(exact_fn(jnp.asarray(pts))).reshape(n, n)
    return F.density_2d(
        lp,
        extent,
        exp.file(io.FIGURES_DIR, "density"),
        _fig_settings(exp, restored, likelihood=kw, grid=n, nfe_mean=float(np.mean(res.nfe))),
        exact_log_prob=exact,
        dpi=fc.dpi,
    )
