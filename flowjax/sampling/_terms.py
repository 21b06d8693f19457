"""The sampler's vector fields: diffrax terms, and the plain Euler / Euler-Maruyama steps.

The ODE ``dx/dt = u_t(x)`` and the SDE ``dX = [u + sigma^2/2 score] dt + sigma dW`` as diffrax terms
(:func:`make_terms`) for :func:`flowjax.solvers.integrate`, and as single steps for the plain
``lax.scan`` loop (:func:`flowjax.solvers.scan_grid`). The Euler-Maruyama noise of step ``i`` comes
from ``fold_in(key, i)`` (:func:`flowjax.sampling._sde.grid_increment`), the numbers the diffrax
path's :class:`~flowjax.sampling._sde.GridBrownianPath` hands out, so both agree on one grid.
"""

from __future__ import annotations

from typing import Any

import diffrax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from flowjax.sampling._model import Field
from flowjax.sampling._sde import (
    AdditiveNoiseTerm,
    GridBrownianPath,
    NoiseSchedule,
    grid_increment,
    virtual_brownian_tree,
)
from flowjax.solvers import GridStep


def make_terms(
    field: Field,
    sigma: NoiseSchedule | None,
    x0: Array,
    *,
    key: PRNGKeyArray | None,
    grid: Array | None,
    t0: Array,
    t1: Array,
    levy_area: type,
) -> diffrax.AbstractTerm:
    """``ODETerm(u)`` for ``sigma is None``; else ``MultiTerm(ODETerm(drift), sigma_t dW)``."""
    if sigma is None:
        return diffrax.ODETerm(lambda t, y, args: field.to("velocity", y, t))
    assert key is not None
    brownian: diffrax.AbstractBrownianPath
    if grid is not None:
        # (mypy takes diffrax's abstract t0/t1/levy_area for dataclass fields: see _sde.py)
        brownian = GridBrownianPath(grid, key, x0.shape, x0.dtype, levy_area)  # type: ignore[arg-type]
    else:
        brownian = virtual_brownian_tree(key, t0, t1, x0.shape, x0.dtype, levy_area)
    drift = diffrax.ODETerm(lambda t, y, args: field.drift(y, t, sigma(jnp.asarray(t, y.dtype))))
    return diffrax.MultiTerm(drift, AdditiveNoiseTerm(sigma, brownian))


def euler_step(field: Field) -> GridStep:
    """ODE Euler: ``x + (t1 - t0) * u_{t0}(x)``."""

    def step(x: Array, carry: Any, i: Array, t0: Array, t1: Array):
        del i
        return x + (t1 - t0) * field.to("velocity", x, t0), carry

    return step


def euler_maruyama_step(field: Field, sigma: NoiseSchedule, key: PRNGKeyArray) -> GridStep:
    """Euler-Maruyama for the SDE extension: ``x + [drift dt + sigma_{t0} dW_i]``."""

    def step(x: Array, carry: Any, i: Array, t0: Array, t1: Array):
        s = sigma(t0)
        dw = grid_increment(key, i, t1 - t0, x.shape, x.dtype)
        return x + ((t1 - t0) * field.drift(x, t0, s) + s * dw), carry

    return step
