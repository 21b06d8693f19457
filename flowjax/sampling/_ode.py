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
    error_norm: str = "max",
) -> SolveOutput:
    """Solve from ``t0`` to ``t1`` (either direction for ODEs) with ``diffrax.diffeqsolve``."""
    subs = [diffrax.SubSaveAt(t1=True)]
    if save_times is not None:
        subs.append(diffrax.SubSaveAt(ts=save_times))
    controller = step_size_controller(
        adaptive=adaptive, grid=grid, rtol=rtol, atol=atol, error_norm=error_norm
    )
    solver = spec.make()
    sol = diffrax.diffeqsolve(
        terms,
        solver,
        t0,
        t1,
        dt0 if adaptive else None,
        x0,
        saveat=diffrax.SaveAt(subs=subs),
        stepsize_controller=controller,
        max_steps=max_steps,
        solver_state=fsal_initial_state(solver, terms, t0, t1, x0),
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


def fsal_initial_state(
    solver: diffrax.AbstractSolver, terms: diffrax.AbstractTerm, t0: Array, t1: Array, x0: Array
) -> Any:
    """For FSAL Runge-Kutta solvers, a state holding ``f(t0, x0)`` evaluated once, here.

    diffrax's own initial state marks the first step, and it re-evaluates ``f(t0, x0)`` each time
    that first step is rejected; handing it the evaluated derivative saves those calls and keeps
    the NFE formula exact. The state of an explicit FSAL solver is ``(first_step, f0)``; for any
    other layout diffrax's default is kept (the NFE tests would then flag a miscount).
    """
    if not isinstance(terms, diffrax.ODETerm):
        return None
    state = solver.init(terms, t0, t1, x0, None)
    if not (isinstance(state, tuple) and len(state) == 2):
        return None
    first_step, _ = state
    if jnp.shape(first_step) != () or jnp.asarray(first_step).dtype != jnp.bool_:
        return None
    return jnp.array(False), terms.vf(t0, x0, None)


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
