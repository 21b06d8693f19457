"""The fixed-grid loop: one ``lax.scan`` over a grid's intervals, with saved states.

A step maps ``(x_i, carry_i)`` over ``[t_i, t_{i+1}]`` to ``(x_{i+1}, carry_{i+1})``; ``carry`` holds
whatever else a method keeps (a multistep solver's past model outputs). A requested time inside
interval ``i`` is linearly interpolated between ``x_i`` and ``x_{i+1}`` (exact at grid points; for
Euler it is the method's own dense output, and what diffrax's Euler interpolation does); a time
equal to the start is the start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

#: ``step(x, carry, i, t_i, t_{i+1}) -> (x_{i+1}, carry_{i+1})``.
GridStep = Callable[[Array, Any, Array, Array, Array], tuple[Array, Any]]


def scan_grid(
    step: GridStep,
    x0: Float[Array, "B ..."],
    grid: Float[Array, " T"],
    save_times: Float[Array, " S"] | None = None,
    carry0: PyTree = None,
) -> tuple[Array, Array | None, PyTree]:
    """Run ``step`` over the grid's intervals.

    Returns:
      ``(x_N, trajectory, carry_N)``; ``trajectory`` is ``[S, B, ...]`` at ``save_times`` (``None``
      without them).
    """
    n = grid.shape[0] - 1
    xs = (jnp.arange(n), grid[:-1], grid[1:])

    if save_times is None:

        def body(state, inp):
            x, carry = state
            i, ta, tb = inp
            return step(x, carry, i, ta, tb), None

        (x, carry), _ = jax.lax.scan(body, (x0, carry0), xs)
        return x, None, carry

    s = save_times.astype(x0.dtype)
    traj0 = jnp.broadcast_to(x0, (s.shape[0], *x0.shape))  # times equal to the start

    def body_save(state, inp):
        x, carry, traj = state
        i, ta, tb = inp
        x_next, carry = step(x, carry, i, ta, tb)
        return (x_next, carry, record(traj, s, ta, tb, x, x_next)), None

    (x, carry, traj), _ = jax.lax.scan(body_save, (x0, carry0, traj0), xs)
    return x, traj, carry


def record(
    traj: Float[Array, "S B ..."],
    save_times: Float[Array, " S"],
    ta: Array,
    tb: Array,
    xa: Array,
    xb: Array,
) -> Float[Array, "S B ..."]:
    """Write the states at the save times inside ``(ta, tb]`` (linear between ``xa`` and ``xb``)."""
    frac = (save_times - ta) / (tb - ta)
    inside = (frac > 0) & (frac <= 1)
    shape = (-1,) + (1,) * xa.ndim
    f = frac.reshape(shape)
    interp = (1.0 - f) * xa[None] + f * xb[None]
    return jnp.where(inside.reshape(shape), interp, traj)
