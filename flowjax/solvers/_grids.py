"""Fixed time grids for any path: uniform in ``t``, EDM's rho-spaced noise levels, uniform log-SNR.

flowjax paths are parameterised by ``t``; the noise-to-signal ratio ``sigma(t) = beta / alpha``
(``lambda = -log sigma`` is the log-SNR time of the exponential integrators) decreases in ``t`` on
every path whose signal-to-noise ratio grows with ``t`` (all of flowjax's). A grid spaced in
``sigma`` is built there and mapped back to ``t`` by bisection, which needs nothing else.

* :class:`UniformGrid`: uniform in ``t``.
* :class:`EDMGrid`: Karras et al.'s ``sigma_i = (sigma_hi^(1/rho) + i/N (sigma_lo^(1/rho) -
  sigma_hi^(1/rho)))^rho``, most steps at low noise. On the EDM path itself it is (to rounding)
  the uniform grid in ``t``.
* :class:`LogSNRGrid`: uniform in ``lambda = log(alpha / beta)`` (DPM-Solver's ``logSNR`` steps;
  the ``rho -> inf`` limit of the EDM grid).

Infinite ends: where ``sigma`` at the start exceeds ``sigma_max`` (``alpha = 0`` gives
``sigma = inf``) the first interval runs from the start to ``sigma = sigma_max``; the log-SNR grid
likewise ends with one interval from ``sigma_min`` to the end where ``sigma`` there is below it
(``beta = 0`` gives ``lambda = +inf``). The other intervals are spaced between the caps. An end
within ``1e-3`` of a cap in ``log sigma`` (to rounding, as on the EDM path, whose ends are the caps)
is not capped: its grid is spaced from the end itself.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from flowjax import _validation as v
from flowjax.paths import AbstractPath

#: EDM's largest noise level (the default cap ``sigma_max`` of the EDM and log-SNR grids).
EDM_SIGMA_MAX = 80.0
#: EDM's smallest noise level (the default end cap of the log-SNR grid).
EDM_SIGMA_MIN = 0.002
_BISECTION_ITERS = 64
#: An end's noise level must pass a cap by more than this in ``log sigma`` to get its own interval.
_CAP_LOG_TOL = 1e-3


def noise_to_signal(path: AbstractPath, t: Any) -> Array:
    """``sigma(t) = beta(t) / alpha(t)`` (``inf`` where ``alpha = 0``)."""
    t = v.as_float_array(t, "t")
    return path.beta(t) / path.alpha(t)


def time_of_sigma(
    path: AbstractPath, sigma: Float[Array, "*N"], t_lo: Any, t_hi: Any
) -> Float[Array, "*N"]:
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


class AbstractTimeGrid(eqx.Module):
    """A rule for ``num_steps + 1`` times from ``t_start`` to ``t_end`` on a path."""

    def __call__(
        self, path: AbstractPath, num_steps: int, t_start: Any, t_end: Any, dtype: Any = None
    ) -> Float[Array, " N+1"]:
        """The grid (traceable; either direction; endpoints exact)."""
        dtype = dtype or jnp.result_type(float)
        t0, t1 = jnp.asarray(t_start, dtype), jnp.asarray(t_end, dtype)
        if v.is_concrete(t0) and v.is_concrete(t1):
            if float(t0) <= float(t1):
                return self.ascending(path, num_steps, t0, t1)
            return self.ascending(path, num_steps, t1, t0)[::-1]
        forward = self.ascending(path, num_steps, t0, t1)
        backward = self.ascending(path, num_steps, t1, t0)[::-1]
        return jnp.where(t0 <= t1, forward, backward)

    @abc.abstractmethod
    def ascending(self, path: AbstractPath, num_steps: int, t0: Array, t1: Array) -> Array:
        """The grid on ``t0 <= t1`` (noise to data)."""


class UniformGrid(AbstractTimeGrid):
    """Uniform in ``t``."""

    def ascending(self, path: AbstractPath, num_steps: int, t0: Array, t1: Array) -> Array:
        del path
        frac = jnp.arange(num_steps + 1, dtype=t0.dtype) / num_steps
        return (t0 + frac * (t1 - t0)).at[-1].set(t1)


def _check_level(value: Any, name: str, owner: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise TypeError(f"{owner}.{name} must be a positive number; got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{owner}.{name} must be a positive finite number; got {value!r}")
    return float(value)


def _sigma_spaced(
    path: AbstractPath,
    num_steps: int,
    t0: Array,
    t1: Array,
    nodes: Any,
    sigma_max: float,
    sigma_min: float,
) -> Array:
    """Grid on ``t0 <= t1`` spaced by ``nodes(s_hi, s_lo, frac)`` in sigma between the caps."""
    dtype = t0.dtype
    s_start, s_end = noise_to_signal(path, t0), noise_to_signal(path, t1)
    # An end whose level equals a cap up to rounding is not capped: the EDM path's sigma(0) = 80
    # and sigma(1) = 0.002 computed in float32 land just outside [0.002, 80], and a strict
    # comparison spent one step on an interval of zero length (a repeated grid time).
    tol = jnp.asarray(_CAP_LOG_TOL, dtype)
    cap_hi = jnp.log(s_start) > jnp.log(jnp.asarray(sigma_max, dtype)) + tol
    cap_lo = jnp.log(s_end) < jnp.log(jnp.asarray(sigma_min, dtype)) - tol
    s_hi = jnp.where(cap_hi, jnp.asarray(sigma_max, dtype), s_start)
    s_lo = jnp.where(cap_lo, jnp.asarray(sigma_min, dtype), s_end)
    n_hi, n_lo = cap_hi.astype(dtype), cap_lo.astype(dtype)
    spaced = jnp.maximum(num_steps - n_hi - n_lo, 1.0)
    j = jnp.arange(num_steps + 1, dtype=dtype)
    frac = jnp.clip((j - n_hi) / spaced, 0.0, 1.0)
    grid = time_of_sigma(path, nodes(s_hi, s_lo, frac), t0, t1)
    return grid.at[0].set(t0).at[-1].set(t1)


class EDMGrid(AbstractTimeGrid):
    """Rho-spaced in ``sigma = beta / alpha`` (Karras et al. 2022, eq. 5).

    Attributes:
      rho: the exponent (7); larger puts more steps near the data.
      sigma_max: the first interval runs to this noise level where the start's is larger.
    """

    rho: float = 7.0
    sigma_max: float = EDM_SIGMA_MAX

    def __check_init__(self) -> None:
        _check_level(self.rho, "rho", "EDMGrid")
        _check_level(self.sigma_max, "sigma_max", "EDMGrid")

    def ascending(self, path: AbstractPath, num_steps: int, t0: Array, t1: Array) -> Array:
        inv = 1.0 / self.rho

        def nodes(s_hi, s_lo, frac):
            k_hi, k_lo = s_hi**inv, s_lo**inv
            return (k_hi + frac * (k_lo - k_hi)) ** self.rho

        return _sigma_spaced(path, num_steps, t0, t1, nodes, self.sigma_max, 0.0)


class LogSNRGrid(AbstractTimeGrid):
    """Uniform in the log-SNR time ``lambda = log(alpha / beta) = -log sigma``.

    Attributes:
      sigma_max, sigma_min: the caps where the ends' ``lambda`` is infinite or beyond them (one
        interval from the start to ``sigma_max``, one from ``sigma_min`` to the end).
    """

    sigma_max: float = EDM_SIGMA_MAX
    sigma_min: float = EDM_SIGMA_MIN

    def __check_init__(self) -> None:
        hi = _check_level(self.sigma_max, "sigma_max", "LogSNRGrid")
        lo = _check_level(self.sigma_min, "sigma_min", "LogSNRGrid")
        if not lo < hi:
            raise ValueError(f"LogSNRGrid needs sigma_min < sigma_max; got {lo} and {hi}")

    def ascending(self, path: AbstractPath, num_steps: int, t0: Array, t1: Array) -> Array:
        def nodes(s_hi, s_lo, frac):
            return jnp.exp(jnp.log(s_hi) + frac * (jnp.log(s_lo) - jnp.log(s_hi)))

        return _sigma_spaced(path, num_steps, t0, t1, nodes, self.sigma_max, self.sigma_min)


#: Grid shortcuts: name -> the grid with its defaults.
GRIDS: dict[str, AbstractTimeGrid] = {
    "uniform": UniformGrid(),
    "edm": EDMGrid(),
    "logsnr": LogSNRGrid(),
}


def get_grid(grid: str | AbstractTimeGrid) -> AbstractTimeGrid:
    """A grid object from a name (``uniform``, ``edm``, ``logsnr``) or a grid object."""
    if isinstance(grid, AbstractTimeGrid):
        return grid
    if not isinstance(grid, str):
        raise TypeError(
            "time_grid must be a name (uniform, edm, logsnr), a flowjax.solvers grid object or a "
            f"1-D array of times; got {type(grid).__name__}"
        )
    return GRIDS[v.choice(grid, tuple(GRIDS), "time_grid")]


def time_grid(
    path: AbstractPath,
    num_steps: int,
    *,
    t_start: Any,
    t_end: Any,
    grid: str | AbstractTimeGrid = "uniform",
    dtype: Any = None,
) -> Float[Array, " N+1"]:
    """``num_steps + 1`` times from ``t_start`` to ``t_end`` (either direction), endpoints exact.

    Args:
      path: the Gaussian path (the EDM and log-SNR grids are spaced in its ``sigma = beta/alpha``).
      num_steps: number of intervals, >= 1.
      t_start, t_end: inside ``[path.t_min, path.t_max]``.
      grid: ``"uniform"``, ``"edm"``, ``"logsnr"`` or a grid object (``EDMGrid(rho=5.0)``).
      dtype: of the result (default: the default float type).
    """
    grid_obj = get_grid(grid)
    if isinstance(num_steps, bool) or not isinstance(num_steps, int | np.integer) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer; got {num_steps!r}")
    check_ends(t_start, t_end, path)
    dtype = np.dtype(dtype or jnp.result_type(float))
    return _time_grid_jit(grid_obj, path, int(num_steps), t_start, t_end, dtype)


@eqx.filter_jit
def _time_grid_jit(grid, path, num_steps, t_start, t_end, dtype):
    return grid(path, num_steps, t_start, t_end, dtype)


def check_ends(t_start: Any, t_end: Any, path: AbstractPath) -> None:
    """Both ends inside the path's valid range."""
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
