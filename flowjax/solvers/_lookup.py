"""Solver shortcuts (names -> objects with their defaults) and the one lookup with its checks."""

from __future__ import annotations

from flowjax import _validation as v
from flowjax.solvers._base import AbstractSolver
from flowjax.solvers._exponential import DPMSolverPP, DPMSolverPP2S, UniPC
from flowjax.solvers._runge_kutta import (
    SRA1,
    Bosh3,
    Dopri5,
    Dopri8,
    Euler,
    Heun,
    Midpoint,
    Ralston,
    ShARK,
    Tsit5,
)

#: ODE solver shortcuts.
ODE_SOLVERS: dict[str, AbstractSolver] = {
    "euler": Euler(),
    "heun": Heun(),
    "midpoint": Midpoint(),
    "ralston": Ralston(),
    "bosh3": Bosh3(),
    "tsit5": Tsit5(),
    "dopri5": Dopri5(),
    "dopri8": Dopri8(),
    "dpmpp_2m": DPMSolverPP(order=2),
    "dpmpp_3m": DPMSolverPP(order=3),
    "dpmpp_2s": DPMSolverPP2S(),
    "unipc": UniPC(order=2),
    "unipc_3": UniPC(order=3),
}

#: SDE solver shortcuts (``dX = drift dt + sigma_t dW``, additive noise).
SDE_SOLVERS: dict[str, AbstractSolver] = {
    "euler": Euler(),
    "heun": Heun(),
    "shark": ShARK(),
    "sra1": SRA1(),
}


def get_solver(
    solver: str | AbstractSolver, *, stochastic: bool = False, adaptive: bool = False
) -> AbstractSolver:
    """The solver object for a name or object, checked against the equation and step control.

    Args:
      solver: a shortcut name (:data:`ODE_SOLVERS`, :data:`SDE_SOLVERS`) or a solver object.
      stochastic: for the SDE extension (else the ODE).
      adaptive: with adaptive steps (the solver needs an error estimate).
    """
    table = SDE_SOLVERS if stochastic else ODE_SOLVERS
    kind = "SDE solver" if stochastic else "ODE solver"
    if isinstance(solver, str):
        obj = table[v.choice(solver, tuple(table), kind)]
    elif isinstance(solver, AbstractSolver):
        obj = solver
        if not (obj.sde if stochastic else obj.ode):
            raise ValueError(
                f"{type(obj).__name__} is not an {kind}; {kind}s are: {', '.join(table)}"
            )
    else:
        raise TypeError(
            f"solver must be a name ({', '.join(table)}) or a flowjax.solvers object; got "
            f"{solver!r}"
        )
    if adaptive and not obj.error_estimate:
        valid = [k for k, s in table.items() if s.error_estimate]
        raise ValueError(
            f"solver {solver!r} has no error estimate, so adaptive steps cannot use it; adaptive "
            f"{kind}s are: {', '.join(valid)}"
        )
    return obj
