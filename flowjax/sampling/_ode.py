"""One ``diffrax.diffeqsolve`` for the flow ODE and the SDE extension, and single diffrax steps.

The ODE ``dx/dt = u_t(x)`` (``sigma = 0``: flow matching, probability flow, DDIM in the limit) and
the SDE ``dX = [u + sigma^2/2 score] dt + sigma dW`` share this driver; the SDE adds an
:class:`~flowjax.sampling._sde.AdditiveNoiseTerm`. Fixed grids use ``StepTo(grid)``; adaptive steps
a ``PIDController`` with the batch-max RMS norm. The state is the whole batch, so the model is
called once per stage on all examples and adaptive step sizes are shared by the batch.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import diffrax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from flowjax.sampling._model import Field
from flowjax.sampling._sde import (
    AdditiveNoiseTerm,
    GridBrownianPath,
    NoiseSchedule,
    virtual_brownian_tree,
)
from flowjax.sampling._solvers import SolverSpec, step_size_controller


class SolveOutput(NamedTuple):
    x: Array
    trajectory: Array | None  # [S, B, ...]
    num_steps: Array
    num_accepted: Array
    num_rejected: Array


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
    if grid is not None:
        brownian = GridBrownianPath(grid, key, x0.shape, x0.dtype, levy_area)
    else:
        brownian = virtual_brownian_tree(key, t0, t1, x0.shape, x0.dtype, levy_area)
    drift = diffrax.ODETerm(lambda t, y, args: field.drift(y, t, sigma(jnp.asarray(t, y.dtype))))
    return diffrax.MultiTerm(drift, AdditiveNoiseTerm(sigma, brownian))


def solve(
    terms: diffrax.AbstractTerm,
    spec: SolverSpec,
    x0: Array,
    *,
    t0: Array,
    t1: Array,
    grid: Array | None,
    adaptive: bool,
    rtol: float,
    atol: float,
    max_steps: int,
    dt0: Any,
    save_times: Array | None,
) -> SolveOutput:
    """Solve from ``t0`` to ``t1`` (either direction for ODEs) with ``diffrax.diffeqsolve``."""
    subs = [diffrax.SubSaveAt(t1=True)]
    if save_times is not None:
        subs.append(diffrax.SubSaveAt(ts=save_times))
    controller = step_size_controller(adaptive=adaptive, grid=grid, rtol=rtol, atol=atol)
    sol = diffrax.diffeqsolve(
        terms,
        spec.make(),
        t0,
        t1,
        dt0 if adaptive else None,
        x0,
        saveat=diffrax.SaveAt(subs=subs),
        stepsize_controller=controller,
        max_steps=max_steps,
    )
    ys = sol.ys
    traj = ys[1] if save_times is not None else None
    stats = sol.stats
    return SolveOutput(
        ys[0][-1],
        traj,
        stats["num_steps"],
        stats["num_accepted_steps"],
        stats["num_rejected_steps"],
    )


def single_step(
    terms: diffrax.AbstractTerm, spec: SolverSpec, x: Array, t0: Array, t1: Array
) -> Array:
    """One step of a diffrax solver from scratch (``made_jump``: no FSAL reuse).

    Used as the predictor of predictor-corrector sampling, where the corrector moves the state
    between steps so a cached first-same-as-last evaluation would be stale. Costs
    ``spec.nfe(1)`` model calls.
    """
    solver = spec.make()
    state = solver.init(terms, t0, t1, x, None)
    y1, _, _, _, _ = solver.step(terms, t0, t1, x, None, state, made_jump=True)
    return y1
