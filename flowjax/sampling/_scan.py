"""Plain ``lax.scan`` loops over a fixed grid: Euler, Euler-Maruyama, and the PC / Langevin loops.

A step is ``x_{i+1} = step(x_i, i, t_i, t_{i+1})``. The Euler-Maruyama noise of step ``i`` comes from
``fold_in(key, i)`` (:func:`flowjax.sampling._sde.grid_increment`), the numbers the diffrax backend's
:class:`~flowjax.sampling._sde.GridBrownianPath` hands out, so both backends agree on one grid.

Saved states: a requested time inside step ``i`` is linearly interpolated between ``x_i`` and
``x_{i+1}`` (exact at grid points; for Euler this is the method's own dense output, and it is what
diffrax's Euler interpolation does).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax.sampling._model import Field
from flowjax.sampling._sde import NoiseSchedule, grid_increment

Step = Callable[[Array, Array, Array, Array], Array]


def run_grid(
    step: Step,
    x0: Float[Array, "B ..."],
    grid: Float[Array, " N+1"],
    save_times: Float[Array, " S"] | None = None,
) -> tuple[Array, Array | None]:
    """Scan ``step`` over the grid's intervals; returns the final state and ``[S, B, ...]`` saves."""
    n = grid.shape[0] - 1
    xs = (jnp.arange(n), grid[:-1], grid[1:])

    if save_times is None:

        def body(x, inp):
            i, t0, t1 = inp
            return step(x, i, t0, t1), None

        x, _ = jax.lax.scan(body, x0, xs)
        return x, None

    s = save_times.astype(x0.dtype)
    traj0 = jnp.broadcast_to(x0, (s.shape[0], *x0.shape))  # times equal to t_start

    def body_save(carry, inp):
        x, traj = carry
        i, t0, t1 = inp
        x1 = step(x, i, t0, t1)
        frac = (s - t0) / (t1 - t0)
        inside = (frac > 0) & (frac <= 1)
        shape = (-1,) + (1,) * x0.ndim
        f = frac.reshape(shape)
        interp = (1.0 - f) * x[None] + f * x1[None]
        traj = jnp.where(inside.reshape(shape), interp, traj)
        return (x1, traj), None

    (x, traj), _ = jax.lax.scan(body_save, (x0, traj0), xs)
    return x, traj


def euler_step(field: Field) -> Step:
    """ODE Euler: ``x + (t1 - t0) * u_{t0}(x)``."""

    def step(x, i, t0, t1):
        del i
        return x + (t1 - t0) * field.to("velocity", x, t0)

    return step


def euler_maruyama_step(field: Field, sigma: NoiseSchedule, key: PRNGKeyArray) -> Step:
    """Euler-Maruyama for the SDE extension: ``x + [drift dt + sigma_{t0} dW_i]``."""

    def step(x, i, t0, t1):
        s = sigma(t0)
        dw = grid_increment(key, i, t1 - t0, x.shape, x.dtype)
        return x + ((t1 - t0) * field.drift(x, t0, s) + s * dw)

    return step


def count_steps(grid: Array) -> int:
    """Number of intervals of a grid."""
    return int(grid.shape[0]) - 1
