"""Time samplers for the training losses: which ``t`` each example of a batch is noised to.

Every sampler draws ``n`` times in ``[lo, hi]``; :func:`time_interval` turns a path's valid range and
a margin into that interval (the ends are where conversions divide by ``alpha`` or ``beta``, so
training keeps away from them by default). All samplers return the same marginal law for one
example except ``logit_normal``: ``uniform``, ``stratified`` and ``antithetic`` are all uniform on
``[lo, hi]`` for each example, and differ in how the batch's times depend on each other (fewer
gaps and clumps means a lower-variance batch mean of any function of ``t``).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax import _validation as v
from flowjax.paths import AbstractPath

__all__ = [
    "TIME_SAMPLERS",
    "antithetic_time",
    "logit_normal_time",
    "sample_time",
    "stratified_time",
    "time_interval",
    "uniform_time",
]

#: Names accepted by :func:`sample_time` and ``make_loss(time_sampler=...)``.
TIME_SAMPLERS: tuple[str, ...] = ("uniform", "logit_normal", "stratified", "antithetic")

DEFAULT_T_MARGIN = 1e-3


def time_interval(
    path: AbstractPath, margin: float | Sequence[float] = DEFAULT_T_MARGIN
) -> tuple[float, float]:
    """``(path.t_min + m_lo, path.t_max - m_hi)``; ``margin`` is one number or ``(m_lo, m_hi)``."""
    if isinstance(margin, int | float):
        m_lo = m_hi = float(margin)
    else:
        margin = tuple(margin)
        if len(margin) != 2:
            raise ValueError(f"t_margin must be a number or a pair (low, high); got {margin!r}")
        m_lo, m_hi = float(margin[0]), float(margin[1])
    if m_lo < 0 or m_hi < 0:
        raise ValueError(f"t_margin must be non-negative; got ({m_lo}, {m_hi})")
    lo, hi = float(path.t_min) + m_lo, float(path.t_max) - m_hi
    if not lo < hi:
        raise ValueError(
            f"t_margin ({m_lo}, {m_hi}) leaves an empty time interval [{lo}, {hi}] inside the "
            f"path's valid range [{path.t_min}, {path.t_max}]"
        )
    return lo, hi


def _check(n: int, lo: float, hi: float) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n (the number of times) must be a positive int; got {n!r}")
    if not lo < hi:
        raise ValueError(f"t_min must be below t_max; got [{lo}, {hi}]")


def _dtype(dtype) -> jnp.dtype:
    return jnp.dtype(dtype or jnp.result_type(float))


def uniform_time(
    key: PRNGKeyArray, n: int, *, t_min: float = 0.0, t_max: float = 1.0, dtype=None
) -> Float[Array, " n"]:
    """``n`` independent draws of ``U[t_min, t_max]``."""
    _check(n, t_min, t_max)
    return jax.random.uniform(key, (n,), _dtype(dtype), minval=t_min, maxval=t_max)


def logit_normal_time(
    key: PRNGKeyArray,
    n: int,
    *,
    t_min: float = 0.0,
    t_max: float = 1.0,
    loc: float = 0.0,
    scale: float = 1.0,
    dtype=None,
) -> Float[Array, " n"]:
    """``t = t_min + (t_max - t_min) sigmoid(z)``, ``z ~ N(loc, scale^2)`` (Esser et al., SD3).

    Puts more examples at intermediate times; its CDF is ``Phi((logit(u) - loc) / scale)`` with
    ``u = (t - t_min) / (t_max - t_min)``.
    """
    _check(n, t_min, t_max)
    if not scale > 0:
        raise ValueError(f"logit-normal scale must be positive; got {scale}")
    dt = _dtype(dtype)
    z = loc + scale * jax.random.normal(key, (n,), dt)
    return (t_min + (t_max - t_min) * jax.nn.sigmoid(z)).astype(dt)


def stratified_time(
    key: PRNGKeyArray, n: int, *, t_min: float = 0.0, t_max: float = 1.0, dtype=None
) -> Float[Array, " n"]:
    """One uniform draw in each of ``n`` equal strata of ``[t_min, t_max]``, in random order.

    Each entry is marginally ``U[t_min, t_max]`` (the order is a random permutation), and the batch
    mean of a smooth ``f(t)`` has variance ``O(n^-3)`` instead of ``O(n^-1)``.
    """
    _check(n, t_min, t_max)
    dt = _dtype(dtype)
    k_u, k_perm = jax.random.split(key)
    u = (jnp.arange(n, dtype=dt) + jax.random.uniform(k_u, (n,), dt)) / n
    u = jax.random.permutation(k_perm, u)
    return (t_min + (t_max - t_min) * u).astype(dt)


def antithetic_time(
    key: PRNGKeyArray, n: int, *, t_min: float = 0.0, t_max: float = 1.0, dtype=None
) -> Float[Array, " n"]:
    """Antithetic pairs ``(u, 1 - u)`` mapped to ``[t_min, t_max]``, pairs adjacent in the batch.

    Each entry is marginally uniform; the pair mean of a monotone ``f`` has at most half the
    variance of two independent draws. For odd ``n`` the last entry is an unpaired draw. Pairs sit
    next to each other so that a batch split into contiguous even-sized shards keeps them.
    """
    _check(n, t_min, t_max)
    dt = _dtype(dtype)
    m = (n + 1) // 2
    u = jax.random.uniform(key, (m,), dt)
    u = jnp.stack([u, 1.0 - u], axis=1).reshape(-1)[:n]
    return (t_min + (t_max - t_min) * u).astype(dt)


_SAMPLERS = {
    "uniform": uniform_time,
    "logit_normal": logit_normal_time,
    "stratified": stratified_time,
    "antithetic": antithetic_time,
}


def sample_time(
    name: str,
    key: PRNGKeyArray,
    n: int,
    *,
    t_min: float = 0.0,
    t_max: float = 1.0,
    dtype=None,
    **kwargs,
) -> Float[Array, " n"]:
    """Draw ``n`` times with the sampler called ``name`` (one of :data:`TIME_SAMPLERS`).

    ``kwargs`` go to the sampler (``loc``, ``scale`` for ``logit_normal``).
    """
    v.choice(name, TIME_SAMPLERS, "time sampler")
    if kwargs and name != "logit_normal":
        raise TypeError(f"time sampler {name!r} takes no options; got {sorted(kwargs)}")
    return _SAMPLERS[name](key, n, t_min=t_min, t_max=t_max, dtype=dtype, **kwargs)
