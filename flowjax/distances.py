"""Sample-based distances between distributions: energy distance, MMD and sliced Wasserstein-2.

All are jit-able and memory-bounded (pairwise terms are computed in row chunks, so 10,000 x 10,000
comparisons never materialise a full matrix). A distance between finite samples is never zero, even
between two samples of one distribution: :func:`finite_sample_floor` measures that floor, which is
the yardstick every sample-quality test and evaluation in flowjax compares against.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax import _validation as v

__all__ = ["energy_distance", "finite_sample_floor", "mmd", "sliced_wasserstein"]


def _flat(x: Array, name: str) -> Array:
    x = v.require_floating(x, name)
    v.require_batched(x, name)
    return x.reshape(x.shape[0], -1)


def _pairwise_sum(a: Array, b: Array, kernel: Callable[[Array], Array], chunk: int) -> Array:
    """``sum_{i,j} kernel(|a_i - b_j|^2)`` computed ``chunk`` rows of ``a`` at a time."""
    n = a.shape[0]
    pad = (-n) % chunk
    a_p = jnp.concatenate([a, jnp.zeros((pad, a.shape[1]), a.dtype)]) if pad else a
    mask = jnp.arange(n + pad) < n
    b_sq = jnp.sum(b**2, axis=1)

    def one(args):
        rows, m = args
        sq = jnp.sum(rows**2, axis=1)[:, None] + b_sq[None, :] - 2.0 * rows @ b.T
        return jnp.sum(jnp.where(m[:, None], kernel(jnp.maximum(sq, 0.0)), 0.0))

    parts = jax.lax.map(one, (a_p.reshape(-1, chunk, a.shape[1]), mask.reshape(-1, chunk)))
    return jnp.sum(parts)


def _u_mean(a: Array, kernel: Callable[[Array], Array], chunk: int) -> Array:
    """Mean of ``kernel(|a_i - a_j|^2)`` over ``i != j`` (the unbiased U-statistic)."""
    n = a.shape[0]
    total = _pairwise_sum(a, a, kernel, chunk) - n * kernel(jnp.zeros((), a.dtype))
    return total / (n * (n - 1))


def energy_distance(
    x: Float[Array, "n ..."], y: Float[Array, "m ..."], *, chunk: int = 512
) -> Float[Array, ""]:
    """Squared energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (unbiased; may dip below 0).

    Zero if and only if the distributions are equal; in the units of the data.
    """
    x, y = _flat(x, "x"), _flat(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same event size; got {x.shape} and {y.shape}")
    dist = jnp.sqrt
    chunk = max(1, min(chunk, x.shape[0], y.shape[0]))
    xy = _pairwise_sum(x, y, dist, chunk) / (x.shape[0] * y.shape[0])
    return 2.0 * xy - _u_mean(x, dist, chunk) - _u_mean(y, dist, chunk)


def mmd(
    x: Float[Array, "n ..."],
    y: Float[Array, "m ..."],
    *,
    bandwidths: tuple[float, ...] = (0.5, 1.0, 2.0),
    scale: float | Array | None = None,
    chunk: int = 512,
) -> Float[Array, ""]:
    """Unbiased squared MMD with a sum of Gaussian kernels ``exp(-|a-b|^2 / (2 (h * scale)^2))``.

    ``scale`` defaults to the median pairwise distance of the pooled samples (first 1,000 of each).
    """
    x, y = _flat(x, "x"), _flat(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same event size; got {x.shape} and {y.shape}")
    if scale is None:
        pool = jnp.concatenate([x[:1000], y[:1000]])
        sq = jnp.sum((pool[:, None, :] - pool[None, :, :]) ** 2, axis=-1)
        scale = jnp.sqrt(jnp.median(sq[jnp.triu_indices(pool.shape[0], 1)]))
    widths = jnp.asarray(bandwidths, x.dtype) * scale

    def kernel(sq: Array) -> Array:
        return jnp.sum(
            jnp.exp(-sq[..., None] / (2.0 * widths.reshape((1,) * sq.ndim + (-1,)) ** 2)), axis=-1
        )

    chunk = max(1, min(chunk, x.shape[0], y.shape[0]))
    xy = _pairwise_sum(x, y, kernel, chunk) / (x.shape[0] * y.shape[0])
    return _u_mean(x, kernel, chunk) + _u_mean(y, kernel, chunk) - 2.0 * xy


def sliced_wasserstein(
    x: Float[Array, "n ..."],
    y: Float[Array, "m ..."],
    key: PRNGKeyArray,
    *,
    num_projections: int = 128,
) -> Float[Array, ""]:
    """Sliced Wasserstein-2 distance (not squared), averaged over random unit directions.

    Unequal sample sizes are compared through quantiles at ``min(n, m)`` levels.
    """
    x, y = _flat(x, "x"), _flat(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same event size; got {x.shape} and {y.shape}")
    dirs = jax.random.normal(key, (x.shape[1], num_projections), x.dtype)
    dirs = dirs / jnp.linalg.norm(dirs, axis=0, keepdims=True)
    px, py = jnp.sort(x @ dirs, axis=0), jnp.sort(y @ dirs, axis=0)
    if px.shape[0] != py.shape[0]:
        n = min(px.shape[0], py.shape[0])
        q = (jnp.arange(n, dtype=px.dtype) + 0.5) / n
        px, py = jnp.quantile(px, q, axis=0), jnp.quantile(py, q, axis=0)
    return jnp.sqrt(jnp.mean((px - py) ** 2))


def finite_sample_floor(
    statistic: Callable[[Array, Array], Array],
    sample: Callable[[PRNGKeyArray, int], Array],
    key: PRNGKeyArray,
    n: int,
    repeats: int = 5,
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Mean and standard deviation of ``statistic`` between two independent ``n``-samples of one law.

    A model's samples are as good as data if their statistic against data lies within this spread.
    """
    vals = []
    for k in jax.random.split(key, repeats):
        ka, kb = jax.random.split(k)
        vals.append(statistic(sample(ka, n), sample(kb, n)))
    vals = jnp.stack(vals)
    return jnp.mean(vals), jnp.std(vals)
