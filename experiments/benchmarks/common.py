"""What the benchmarks share: one timing rule and one benchmark MLP.

* :func:`alternate`: each function timed once per round, the order rotated every round, after
  ``warmup`` untimed calls each; every result is blocked on before the clock stops.
* :func:`ratio_spread`: a comparison's per-round time ratios (paired within each round) summarised
  by their median, quartiles and range; :func:`load`: the load average, recorded beside each part;
  :func:`log`: a progress line on stderr with the seconds since the benchmark was imported.
* :class:`MLP`: ``[x, t]`` through ``depth`` SiLU layers of ``width`` units to ``dim`` outputs, the
  velocity network of the toy workloads (``bench_peers`` mirrors its shape with flowjax's own
  ``models.MLP`` and a torch copy; ``bench_training`` and ``bench_scaling`` use this one).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["MLP", "alternate", "load", "log", "median", "median_ratio", "ratio_spread", "spread"]


_START = time.perf_counter()


def log(msg: str) -> None:
    """Print ``msg`` to stderr after the seconds since this module was imported."""
    print(f"[{time.perf_counter() - _START:7.1f} s] {msg}", file=sys.stderr, flush=True)


def alternate(
    fns: dict[str, Callable[[], Any]], rounds: int, *, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each function, ``rounds`` times, alternated.

    In each round every function runs once; the order is rotated by one every round, so that no
    function always runs right after the same other one. Before timing each function runs
    ``warmup`` times (compilation, caches, thread pools; pass 0 when the caller has warmed up, e.g.
    with a number of training steps). What a call returns is blocked on
    (``jax.block_until_ready``) inside the timed interval.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            jax.block_until_ready(fns[name]())
    out: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        shift = r % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            jax.block_until_ready(fns[name]())
            out[name].append(time.perf_counter() - t0)
    return out


def median(times: list[float]) -> float:
    """The median of a list of timings (seconds)."""
    return float(np.median(np.asarray(times)))


def median_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of ``time[num] / time[den]`` (paired within each round)."""
    return float(np.median(np.asarray(times[num]) / np.asarray(times[den])))


def spread(values: Any) -> dict[str, float]:
    """Median, quartiles, min and max of ``values`` (e.g. per-round ratios), and their count."""
    v = np.asarray(values, np.float64)
    q1, med, q3 = (float(x) for x in np.percentile(v, [25, 50, 75]))
    return {
        "median": med,
        "q1": q1,
        "q3": q3,
        "min": float(v.min()),
        "max": float(v.max()),
        "rounds": int(v.size),
    }


def ratio_spread(times: dict[str, list[float]], num: str, den: str) -> dict[str, float]:
    """:func:`spread` of the per-round ratios ``time[num] / time[den]`` (paired within rounds)."""
    return spread(np.asarray(times[num]) / np.asarray(times[den]))


def load() -> list[float]:
    """The 1, 5 and 15-minute load averages of this machine."""
    return [round(x, 2) for x in os.getloadavg()]


class MLP(nn.Module):
    """``[x, t]`` -> ``depth`` Dense + SiLU layers of ``width`` -> Dense ``dim`` (a velocity)."""

    width: int = 512
    depth: int = 4
    dim: int = 2

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        h = jnp.concatenate([x, t[:, None].astype(x.dtype)], axis=-1)
        for _ in range(self.depth):
            h = nn.silu(nn.Dense(self.width)(h))
        return nn.Dense(self.dim)(h)
