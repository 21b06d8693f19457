"""Fixed time grids for any path: uniform in ``t``, or EDM's rho-spaced noise levels.

EDM (Karras et al.) spaces the noise-to-signal ratio ``sigma = beta / alpha`` as
``sigma_i = (sigma_hi^(1/rho) + i/N (sigma_lo^(1/rho) - sigma_hi^(1/rho)))^rho``, which puts most
steps at low noise. flowjax paths are parameterised by ``t``, so the grid is built in ``sigma`` and
mapped back to ``t`` by bisection: ``sigma(t)`` decreases in ``t`` on every path whose
signal-to-noise ratio grows with ``t`` (all of flowjax's), and bisection needs nothing else. On
the EDM path itself the result is (to rounding) the uniform grid in ``t``.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from flowjax import _validation as v
from flowjax.paths import AbstractPath

#: EDM's largest noise level. Paths whose ``sigma`` at the start exceeds it (``alpha = 0`` gives
#: ``sigma = inf``) take one first step from the start to ``sigma = EDM_SIGMA_MAX``.
EDM_SIGMA_MAX = 80.0

GRID_NAMES = ("uniform", "edm")
_BISECTION_ITERS = 64


def noise_to_signal(path: AbstractPath, t: Any) -> Array:
    """``sigma(t) = beta(t) / alpha(t)`` (``inf`` where ``alpha = 0``)."""
    t = v.as_float_array(t, "t")
    return path.beta(t) / path.alpha(t)


def time_of_sigma(
    path: AbstractPath, sigma: Float[Array, " N"], t_lo: Any, t_hi: Any
) -> Float[Array, " N"]:
    """Invert ``sigma(t) = beta / alpha`` on ``[t_lo, t_hi]`` by bisection (sigma decreasing in t).

    Targets above ``sigma(t_lo)`` give ``t_lo``, targets below ``sigma(t_hi)`` give ``t_hi``.
    """
    sigma = jnp.asarray(sigma)
    lo = jnp.full(sigma.shape, t_lo, sigma.dtype)
    hi = jnp.full(sigma.shape, t_hi, sigma.dtype)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        right = noise_to_signal(path, mid) > sigma  # still too noisy: the answer is later
        return jnp.where(right, mid, lo), jnp.where(right, hi, mid)

    lo, hi = jax.lax.fori_loop(0, _BISECTION_ITERS, body, (lo, hi))
    return 0.5 * (lo + hi)


def _edm_ascending(
    path: AbstractPath, num_steps: int, t0: Array, t1: Array, rho: float, sigma_max: float
) -> Array:
    """EDM grid on ``t0 < t1`` (noise to data)."""
    dtype = t0.dtype
    s_start = noise_to_signal(path, t0)
    s_end = noise_to_signal(path, t1)
    capped = s_start > sigma_max
    s_hi = jnp.minimum(s_start, jnp.asarray(sigma_max, dtype))
    inv = 1.0 / rho
    k_hi, k_lo = s_hi**inv, s_end**inv

    def rho_nodes(n: int) -> Array:
        frac = jnp.arange(n + 1, dtype=dtype) / max(n, 1)
        return (k_hi + frac * (k_lo - k_hi)) ** rho

    # Uncapped: N rho-spaced intervals from sigma(t0). Capped: t0, then N - 1 rho-spaced
    # intervals starting at sigma_max.
    plain = time_of_sigma(path, rho_nodes(num_steps), t0, t1)
    if num_steps > 1:
        tail = time_of_sigma(path, rho_nodes(num_steps - 1), t0, t1)
        cap = jnp.concatenate([t0[None], tail])
        grid = jnp.where(capped, cap, plain)
    else:
        grid = plain
    return grid.at[0].set(t0).at[-1].set(t1)


def time_grid(
    path: AbstractPath,
    num_steps: int,
    *,
    t_start: Any,
    t_end: Any,
    kind: str = "uniform",
    rho: float = 7.0,
    sigma_max: float = EDM_SIGMA_MAX,
    dtype: Any = None,
) -> Float[Array, " N+1"]:
    """``num_steps + 1`` times from ``t_start`` to ``t_end`` (either direction), endpoints exact.

    Args:
      path: the Gaussian path (needed for ``kind="edm"``).
      num_steps: number of intervals, >= 1.
      t_start, t_end: inside ``[path.t_min, path.t_max]``.
      kind: ``"uniform"`` in ``t``, or ``"edm"``: rho-spaced in ``sigma = beta / alpha`` between
        ``min(sigma(start), sigma_max)`` and ``sigma(end)``; if ``sigma(start) > sigma_max`` the
        first interval runs from the start to ``sigma = sigma_max`` (EDM's 80 by default).
      rho: EDM's exponent (7); larger puts more steps near the data.
      dtype: of the result (default: the default float type).
    """
    v.choice(kind, GRID_NAMES, "time_grid")
    if not isinstance(num_steps, int | np.integer) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer; got {num_steps!r}")
    if kind == "edm" and not rho > 0:
        raise ValueError(f"rho must be positive; got {rho!r}")
    _check_ends(t_start, t_end, path)
    dtype = np.dtype(dtype or jnp.result_type(float))
    return _time_grid_jit(path, int(num_steps), t_start, t_end, kind, rho, sigma_max, dtype)


@eqx.filter_jit
def _time_grid_jit(path, num_steps, t_start, t_end, kind, rho, sigma_max, dtype):
    return make_grid(
        path, num_steps, t_start=t_start, t_end=t_end, kind=kind, rho=rho, sigma_max=sigma_max,
        dtype=dtype,
    )  # fmt: skip


def make_grid(
    path: AbstractPath,
    num_steps: int,
    *,
    t_start: Any,
    t_end: Any,
    kind: str = "uniform",
    rho: float = 7.0,
    sigma_max: float = EDM_SIGMA_MAX,
    dtype: Any = None,
) -> Float[Array, " N+1"]:
    """:func:`time_grid` without the argument checks (for use inside traced code)."""
    dtype = dtype or jnp.result_type(float)
    t0 = jnp.asarray(t_start, dtype)
    t1 = jnp.asarray(t_end, dtype)
    if kind == "uniform":
        frac = jnp.arange(num_steps + 1, dtype=dtype) / num_steps
        grid = t0 + frac * (t1 - t0)
        return grid.at[-1].set(t1)
    forward = _edm_ascending(path, num_steps, t0, t1, rho, sigma_max)
    if v.is_concrete(t0) and v.is_concrete(t1):
        if float(t0) <= float(t1):
            return forward
        return _edm_ascending(path, num_steps, t1, t0, rho, sigma_max)[::-1]
    backward = _edm_ascending(path, num_steps, t1, t0, rho, sigma_max)[::-1]
    return jnp.where(t0 <= t1, forward, backward)


def _check_ends(t_start: Any, t_end: Any, path: AbstractPath) -> None:
    if v.is_concrete(t_start) and v.is_concrete(t_end):  # before rounding to the state's dtype
        ends = np.array([np.asarray(t_start, np.float64), np.asarray(t_end, np.float64)])
    else:
        ends = jnp.stack([jnp.asarray(t_start), jnp.asarray(t_end)])
    v.check_time_range(ends, path.t_min, path.t_max, "time grid ends (t_start, t_end)")


def validate_grid(grid: Any, path: AbstractPath, dtype: Any) -> Array:
    """Check a user-given grid: 1-D, >= 2 points, strictly monotone, inside the path's range."""
    arr = jnp.asarray(grid)
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(dtype)
    if arr.ndim != 1 or arr.shape[0] < 2:
        raise ValueError(
            f"time_grid must be a 1-D array of at least 2 times; got shape {arr.shape}"
        )
    v.check_time_range(arr, path.t_min, path.t_max, "time_grid")
    if v.is_concrete(arr):
        d = np.diff(np.asarray(arr))
        if not (np.all(d > 0) or np.all(d < 0)):
            raise ValueError("time_grid must be strictly increasing or strictly decreasing")
    return arr.astype(dtype)
