"""Sample quality of low-dimensional data: statistics against held-out data, with floors.

:func:`data_floors` and :func:`sample_quality`: energy distance, sliced Wasserstein-2 and MMD
(``flowjax.distances``) between model samples and held-out data, each next to its *finite-sample
floor*, the same statistic between two independent samples of the data of the same size (mean
and standard deviation over repeats). A sampler is as good as the data at this sample size when
its value lies within the floor's spread. :class:`Evaluator` runs them on an experiment's samples
(``config.eval``: ``metrics, num_eval, floor_repeats, num_projections``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from experiments import io
from experiments.evaluators import SweepMetric
from flowjax import data as D
from flowjax import distances

if TYPE_CHECKING:
    from experiments.evaluators import Context
    from experiments.experiment import Experiment

__all__ = ["STATISTICS", "Evaluator", "data_floors", "disjoint_subsets", "sample_quality"]

#: Sample-quality statistics for low-dimensional data (``config.eval.metrics``).
STATISTICS = ("energy", "sliced_w2", "mmd")


_energy = jax.jit(distances.energy_distance)
_mmd = jax.jit(distances.mmd)


def median_distance(x: np.ndarray, max_points: int = 1000) -> float:
    """Median pairwise distance of (the first ``max_points`` of) ``x``: the MMD kernel scale."""
    x = np.asarray(x[:max_points], np.float64).reshape(min(len(x), max_points), -1)
    sq = np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
    return float(np.sqrt(np.median(sq[np.triu_indices(len(x), 1)])))


_sliced = jax.jit(distances.sliced_wasserstein, static_argnames="num_projections")


def _statistic(
    name: str, *, key: Array, num_projections: int, scale: float | None = None
) -> Callable[[Array, Array], Array]:
    """The statistic as ``fn(a, b)``, compiled once per shape (module-level jitted functions).

    MMD uses a fixed kernel scale (``scale``: the data's median pairwise distance), the same for
    the model and its floor.
    """
    if name == "energy":
        return _energy
    if name == "mmd":
        if scale is None:
            raise ValueError("the MMD statistic needs its kernel scale")
        return lambda a, b: _mmd(a, b, scale=scale)
    if name == "sliced_w2":
        # one fixed set of directions for the model and its floor
        return lambda a, b: _sliced(a, b, key, num_projections=num_projections)
    raise ValueError(f"unknown statistic {name!r}; valid choices are: {', '.join(STATISTICS)}")


def disjoint_subsets(pool: np.ndarray, n: int, key: Array) -> tuple[np.ndarray, np.ndarray]:
    """Two random subsets of ``n`` rows of ``pool`` with no row in common."""
    if len(pool) < 2 * n:
        raise ValueError(
            f"need at least {2 * n} rows for two disjoint subsets of {n}; got {len(pool)}"
        )
    perm = np.asarray(jax.random.permutation(key, len(pool)))
    return pool[perm[:n]], pool[perm[n : 2 * n]]


def data_floors(
    metrics: tuple[str, ...],
    n: int,
    key: Array,
    *,
    sampler: Callable[[Array, int], Array] | None = None,
    pool: np.ndarray | None = None,
    repeats: int = 5,
    num_projections: int = 128,
) -> dict[str, dict[str, float]]:
    """Finite-sample floor of each statistic at sample size ``n``: mean and std over ``repeats``.

    The two samples come from ``sampler(key, n)`` (the data law, e.g. a toy distribution), or, for
    a finite data set, are two disjoint random subsets of ``pool`` (needs ``len(pool) >= 2 n``).
    """
    k_proj, k_floor = jax.random.split(key)
    if sampler is not None:
        scale = median_distance(np.asarray(sampler(jax.random.fold_in(key, 7), n)))
    elif pool is not None:
        scale = median_distance(pool)
    else:
        raise ValueError("data_floors needs a sampler or a pool")
    out = {}
    for name in metrics:
        stat = _statistic(name, key=k_proj, num_projections=num_projections, scale=scale)
        if sampler is not None:
            mean, std = distances.finite_sample_floor(stat, sampler, k_floor, n, repeats)
            vals = None
        else:
            if pool is None or len(pool) < 2 * n:
                raise ValueError(
                    f"the floor at n = {n} needs a sampler or a pool of at least {2 * n} examples"
                )
            vals = []
            for k in jax.random.split(k_floor, repeats):
                a, b = disjoint_subsets(pool, n, k)
                vals.append(float(stat(jnp.asarray(a), jnp.asarray(b))))
            mean, std = np.mean(vals), np.std(vals)
        out[name] = {"floor_mean": float(mean), "floor_std": float(std), "n": int(n)}
        if name == "mmd":
            out[name]["kernel_scale"] = scale
    return out


def sample_quality(
    samples: np.ndarray,
    reference: np.ndarray,
    floors: Mapping[str, Mapping[str, float]],
    key: Array,
    *,
    num_projections: int = 128,
) -> dict[str, dict[str, float]]:
    """Each statistic of ``floors`` between ``samples[:n]`` and ``reference[:n]`` (``n`` = the
    floor's), with the floor beside it and the excess over it in floor standard deviations."""
    k_proj, _ = jax.random.split(key)
    out = {}
    for name, floor in floors.items():
        n = int(floor["n"])
        if len(samples) < n or len(reference) < n:
            raise ValueError(
                f"{name}: need {n} samples and reference points; got {len(samples)} and "
                f"{len(reference)}"
            )
        stat = _statistic(
            name, key=k_proj, num_projections=num_projections, scale=floor.get("kernel_scale")
        )
        value = float(stat(jnp.asarray(samples[:n]), jnp.asarray(reference[:n])))
        mean, std = float(floor["floor_mean"]), float(floor["floor_std"])
        out[name] = {
            "value": value,
            "floor_mean": mean,
            "floor_std": std,
            "n": n,
            # how far above the floor, in floor standard deviations (<= 2: as good as data)
            "excess_in_floor_stds": (value - mean) / std if std > 0 else float("nan"),
        }
    return out


def _floor_source(exp: Experiment) -> dict[str, Any]:
    """Where the floors' data samples come from: fresh toy samples, or disjoint data subsets."""
    from experiments.experiment import reference

    name = exp.config.data.name
    if name in D.TOY_DATASETS:
        fn = jax.jit(lambda k, n: D.toy_sample(name, k, n, jnp.float32), static_argnums=1)
        return {"sampler": fn, "law": f"toy distribution {name!r} (fresh samples)"}
    pool = np.concatenate(
        [reference(exp, exp.train_ds.num_examples, "train")["x"], reference(exp, 10**9)["x"]]
    )
    return {"pool": pool.reshape(len(pool), -1), "law": "disjoint subsets of train + eval data"}


class Evaluator:
    """Sample quality of every sampler against ``num_eval`` held-out points, with floors."""

    def __init__(
        self,
        exp: Experiment,
        *,
        metrics: tuple[str, ...],
        num_eval: int,
        floor_repeats: int,
        num_projections: int,
    ):
        from experiments.experiment import reference

        self.exp, self.metrics = exp, tuple(metrics)
        self.repeats, self.num_projections = floor_repeats, num_projections
        self.ref = reference(exp, num_eval)["x"].reshape(-1, math.prod(exp.shape))
        self.source = _floor_source(exp)

    @classmethod
    def from_config(cls, exp: Experiment) -> Evaluator:
        ev = exp.config.eval
        return cls(
            exp,
            metrics=ev.metrics,
            num_eval=ev.num_eval,
            floor_repeats=ev.floor_repeats,
            num_projections=ev.num_projections,
        )

    def _size(self, n: int) -> int:
        n = min(n, len(self.ref))
        if "pool" in self.source:
            n = min(n, len(self.source["pool"]) // 2)
        return n

    def _floors(self, metrics: tuple[str, ...], n: int, key: Any) -> dict[str, dict[str, float]]:
        return data_floors(
            metrics,
            self._size(n),
            key,
            sampler=self.source.get("sampler"),
            pool=self.source.get("pool"),
            repeats=self.repeats,
            num_projections=self.num_projections,
        )

    def run(self, ctx: Context) -> dict[str, Any]:
        """``{"data_floors": ..., "samplers": {name: {"quality": ...}}}``."""
        floors = self._floors(self.metrics, self.exp.config.sampling.num_samples, ctx.keys["floor"])
        per_sampler = {}
        for name, s in ctx.sets.items():
            flat = s.samples.reshape(len(s.samples), -1)
            q = sample_quality(
                flat, self.ref, floors, ctx.keys["stat"], num_projections=self.num_projections
            )
            per_sampler[name] = {"quality": q}
            io.log(
                f"{name}: "
                + ", ".join(
                    f"{m} {v['value']:.4g} (floor {v['floor_mean']:.3g} ± {v['floor_std']:.2g})"
                    for m, v in q.items()
                )
            )
        return {"data_floors": {"law": self.source["law"], **floors}, "samplers": per_sampler}

    def sweep_metric(self, ctx: Context, num_samples: int) -> SweepMetric:
        """The first metric as the NFE sweep's statistic, with its floor at ``num_samples``."""
        metric = self.metrics[0]
        floor = self._floors((metric,), num_samples, ctx.keys["floor"])[metric]
        ref, key = self.ref, ctx.keys["stat"]

        def fn(x: np.ndarray) -> float:
            flat = x.reshape(len(x), -1)
            return sample_quality(flat, ref, {metric: floor}, key)[metric]["value"]

        return SweepMetric(metric, fn, floor)
