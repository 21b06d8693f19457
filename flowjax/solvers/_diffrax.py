"""The one ``diffrax.diffeqsolve`` call of flowjax (sampling and likelihood), and single steps.

Fixed grids use ``StepTo(grid)``, adaptive steps the :class:`~flowjax.solvers.Adaptive`
controller. First-same-as-last solvers get their first evaluation handed in
(:func:`fsal_initial_state`), so a rejected first step does not repeat it and the NFE formula of
:class:`~flowjax.solvers.AbstractDiffraxSolver` stays exact.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array, PyTree

from flowjax.solvers._adaptive import Adaptive
from flowjax.solvers._runge_kutta import AbstractDiffraxSolver


class Solution(NamedTuple):
    """What :func:`integrate` returns.

    Attributes:
      y: the state at ``t1``.
      trajectory: the states at ``save_times`` (leading axis ``S``), or ``None``.
      nfe, num_steps, num_accepted, num_rejected: evaluations and attempted/accepted/rejected steps.
      success: the solve reached ``t1`` (``False`` only with ``throw=False``).
    """

    y: PyTree
    trajectory: PyTree | None
    nfe: Array
    num_steps: Array
    num_accepted: Array
    num_rejected: Array
    success: Array


def integrate(
    terms: diffrax.AbstractTerm,
    solver: AbstractDiffraxSolver,
    y0: PyTree,
    *,
    t0: Any,
    t1: Any,
    grid: Array | None = None,
    adaptive: Adaptive | None = None,
    dt0: Any = None,
    save_times: Array | None = None,
    error_norm: str | None = None,
    throw: bool = True,
) -> Solution:
    """Solve ``terms`` from ``t0`` to ``t1`` (either direction) with ``diffrax.diffeqsolve``.

    Args:
      terms: the diffrax terms (``ODETerm`` or an ODE + noise ``MultiTerm``).
      solver: a :class:`~flowjax.solvers.AbstractDiffraxSolver`.
      y0: the initial state (any pytree).
      grid: the fixed grid ``[N+1]`` (``grid[0] = t0``, ``grid[-1] = t1``) unless ``adaptive``.
      adaptive: adaptive steps; ``dt0`` is then the first step tried.
      error_norm: overrides ``adaptive.error_norm`` (``"rms"`` for a one-example state).
      throw: raise when the solve fails (else ``success`` says so).
    """
    subs = [diffrax.SubSaveAt(t1=True)]
    if save_times is not None:
        subs.append(diffrax.SubSaveAt(ts=save_times))
    if adaptive is not None:
        controller: diffrax.AbstractStepSizeController = adaptive.controller(error_norm)
        max_steps = adaptive.max_steps
    else:
        if grid is None:
            raise ValueError("integrate needs a grid or adaptive steps")
        controller, max_steps, dt0 = diffrax.StepTo(ts=grid), grid.shape[0] - 1, None
    dsolver = solver.diffrax_solver()
    sol = diffrax.diffeqsolve(
        terms,
        dsolver,
        t0,
        t1,
        dt0,
        y0,
        saveat=diffrax.SaveAt(subs=subs),
        stepsize_controller=controller,
        max_steps=max_steps,
        throw=throw,
        solver_state=fsal_initial_state(dsolver, terms, jnp.asarray(t0), jnp.asarray(t1), y0),
    )
    final, traj = sol.ys[0], (sol.ys[1] if save_times is not None else None)
    stats = sol.stats
    steps = jnp.asarray(stats["num_steps"], jnp.int32)
    return Solution(
        y=_last(final),
        trajectory=traj,
        nfe=jnp.asarray(solver.nfe(steps), jnp.int32),
        num_steps=steps,
        num_accepted=jnp.asarray(stats["num_accepted_steps"], jnp.int32),
        num_rejected=jnp.asarray(stats["num_rejected_steps"], jnp.int32),
        success=sol.result == diffrax.RESULTS.successful,
    )


def _last(tree: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda a: a[-1], tree)


def fsal_initial_state(
    solver: diffrax.AbstractSolver, terms: diffrax.AbstractTerm, t0: Array, t1: Array, y0: PyTree
) -> Any:
    """For FSAL Runge-Kutta solvers, a state holding ``f(t0, y0)`` evaluated once, here.

    diffrax's own initial state marks the first step, and it re-evaluates ``f(t0, y0)`` each time
    that first step is rejected; handing it the evaluated derivative saves those calls and keeps
    the NFE formula exact. The state of an explicit FSAL solver is ``(first_step, f0)``; for any
    other layout diffrax's default is kept (the NFE tests would then flag a miscount).
    """
    if not isinstance(terms, diffrax.ODETerm):
        return None
    state = solver.init(terms, t0, t1, y0, None)
    if not (isinstance(state, tuple) and len(state) == 2):
        return None
    first_step, _ = state
    if jnp.shape(first_step) != () or jnp.asarray(first_step).dtype != jnp.bool_:
        return None
    return jnp.array(False), terms.vf(t0, y0, None)


def single_step(
    terms: diffrax.AbstractTerm, solver: AbstractDiffraxSolver, y: PyTree, t0: Array, t1: Array
) -> PyTree:
    """One step of ``solver`` from scratch (``made_jump``: no FSAL reuse); ``solver.nfe(1)`` calls.

    The predictor of predictor-corrector sampling, where the corrector moves the state between
    steps, so a cached first-same-as-last evaluation would be stale.
    """
    dsolver = solver.diffrax_solver()
    state = dsolver.init(terms, t0, t1, y, None)
    y1, _, _, _, _ = dsolver.step(terms, t0, t1, y, None, state, made_jump=True)
    return y1
