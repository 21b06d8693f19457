"""Solver names -> diffrax solvers, their model-evaluation counts, and step-size controllers.

Each entry records how many vector-field (hence model) evaluations the solver makes, so that the
sampler can report the number of function evaluations (NFE) it actually made from diffrax's step
statistics: ``nfe = initial_evals + evals_per_step * (accepted + rejected steps)``. The counts are
checked against a call counter in ``tests/test_sampling_solvers.py`` for every solver.

* Explicit Runge-Kutta solvers that are *first same as last* (FSAL: Bosh3, Tsit5, Dopri5, Dopri8)
  evaluate once at the start and ``stages - 1`` times per step (the last stage is the next step's
  first), rejected steps included.
* The others evaluate ``stages`` times per step.
* SDE solvers count evaluations of the drift (the model); the diffusion ``sigma_t`` is not a model
  call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import diffrax
import jax
import jax.numpy as jnp

from flowjax import _validation as v


class SolverSpec(NamedTuple):
    """A named solver: how to build it and what it costs."""

    name: str
    make: Callable[[], diffrax.AbstractSolver]
    evals_per_step: int
    initial_evals: int
    order: int  # (strong order for SDEs with additive noise)
    adaptive: bool  # has an embedded error estimate
    levy_area: type = diffrax.BrownianIncrement

    def nfe(self, num_steps: Any) -> Any:
        """Model evaluations made over ``num_steps`` attempted steps (accepted + rejected)."""
        return self.initial_evals + self.evals_per_step * num_steps


#: ODE solvers (``sigma = 0``): fixed or adaptive steps.
ODE_SOLVERS: dict[str, SolverSpec] = {
    "euler": SolverSpec("euler", diffrax.Euler, 1, 0, 1, False),
    "heun": SolverSpec("heun", diffrax.Heun, 2, 0, 2, True),
    "midpoint": SolverSpec("midpoint", diffrax.Midpoint, 2, 0, 2, True),
    "ralston": SolverSpec("ralston", diffrax.Ralston, 2, 0, 2, True),
    "bosh3": SolverSpec("bosh3", diffrax.Bosh3, 3, 1, 3, True),
    "tsit5": SolverSpec("tsit5", diffrax.Tsit5, 6, 1, 5, True),
    "dopri5": SolverSpec("dopri5", diffrax.Dopri5, 6, 1, 5, True),
    "dopri8": SolverSpec("dopri8", diffrax.Dopri8, 13, 1, 8, True),
}

#: SDE solvers for ``dX = drift dt + sigma_t dW`` (additive noise: Ito and Stratonovich agree).
#: ``euler`` is Euler-Maruyama (strong order 0.5, 1.0 for additive noise); ``heun`` is strong
#: order 1 for additive noise; ``shark`` (diffrax's recommendation for additive noise) and ``sra1``
#: are stochastic Runge-Kutta methods using space-time Levy area, with embedded error estimates.
SDE_SOLVERS: dict[str, SolverSpec] = {
    "euler": SolverSpec("euler", diffrax.Euler, 1, 0, 1, False),
    "heun": SolverSpec("heun", diffrax.Heun, 2, 0, 1, True),
    "shark": SolverSpec("shark", diffrax.ShARK, 2, 0, 1, True, diffrax.SpaceTimeLevyArea),
    "sra1": SolverSpec("sra1", diffrax.SRA1, 2, 0, 1, True, diffrax.SpaceTimeLevyArea),
}


def get_solver(name: str, *, stochastic: bool, adaptive: bool) -> SolverSpec:
    """Look up a solver by name; unknown names (and non-adaptive ones under ``adaptive``) raise."""
    table = SDE_SOLVERS if stochastic else ODE_SOLVERS
    kind = "SDE solver" if stochastic else "ODE solver"
    if not isinstance(name, str):
        raise TypeError(f"solver must be a string naming a {kind}; got {name!r}")
    spec = table[v.choice(name, tuple(table), kind)]
    if adaptive and not spec.adaptive:
        valid = [k for k, s in table.items() if s.adaptive]
        raise ValueError(
            f"solver {name!r} has no error estimate, so adaptive=True cannot use it; adaptive "
            f"{kind}s are: {', '.join(valid)}"
        )
    return spec


def batch_max_rms_norm(y: Any) -> jax.Array:
    """Error norm for batched states: the largest per-example RMS over the batch.

    diffrax's default RMS over the whole state would let a few badly resolved examples hide
    behind a large batch; with the maximum every example meets ``rtol``/``atol``. The step size is
    still shared by the batch (one model call per stage for all examples).
    """
    leaves = [jnp.asarray(x) for x in jax.tree_util.tree_leaves(y)]
    if not leaves:
        return jnp.zeros(())
    if any(x.ndim == 0 for x in leaves):
        return jnp.sqrt(sum(jnp.mean(jnp.abs(x) ** 2) for x in leaves) / len(leaves))
    per_row = sum(jnp.sum(jnp.abs(x.reshape(x.shape[0], -1)) ** 2, axis=1) for x in leaves)
    size = sum(x[0].size for x in leaves)
    return jnp.sqrt(jnp.max(per_row) / size)


def batch_rms_norm(y: Any) -> jax.Array:
    """Error norm: the RMS over every entry of the whole (batched) state (diffrax's default)."""
    leaves = [jnp.asarray(x) for x in jax.tree_util.tree_leaves(y)]
    if not leaves:
        return jnp.zeros(())
    total = sum(jnp.sum(jnp.abs(x) ** 2) for x in leaves)
    return jnp.sqrt(total / sum(x.size for x in leaves))


ERROR_NORMS = ("max", "rms")


def step_size_controller(
    *, adaptive: bool, grid: jax.Array | None, rtol: float, atol: float, error_norm: str = "max"
) -> diffrax.AbstractStepSizeController:
    """``PIDController`` for adaptive steps, ``StepTo(grid)`` for a fixed grid.

    ``error_norm``: ``"max"`` (:func:`batch_max_rms_norm`: every example meets the tolerance) or
    ``"rms"`` (diffrax's RMS over the whole batch, as torchdiffeq and flow_matching do: fewer
    steps on a large batch, with the worst examples less accurate than the tolerance).
    """
    if adaptive:
        norm = batch_max_rms_norm if error_norm == "max" else batch_rms_norm
        return diffrax.PIDController(rtol=rtol, atol=atol, norm=norm)
    assert grid is not None
    return diffrax.StepTo(ts=grid)
