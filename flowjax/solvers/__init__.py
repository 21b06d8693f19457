"""Solvers, step-size control and time grids, shared by :mod:`flowjax.sampling` and
:mod:`flowjax.likelihood`.

Solvers are objects (in the diffrax style); the names of :data:`ODE_SOLVERS` and
:data:`SDE_SOLVERS` are shortcuts for them with their defaults:

* Runge-Kutta on diffrax (:class:`AbstractDiffraxSolver`): :class:`Euler` (its ``backend`` chooses
  the plain ``lax.scan`` loop or diffrax for fixed grids), :class:`Heun`, :class:`Midpoint`,
  :class:`Ralston`, :class:`Bosh3`, :class:`Tsit5`, :class:`Dopri5`, :class:`Dopri8`; for SDEs
  also :class:`ShARK` and :class:`SRA1`. Fixed grids or :class:`Adaptive` steps.
* Exponential integrators in log-SNR time for any Gaussian path and any prediction
  (:class:`AbstractExponentialSolver`, fixed grids): :class:`DPMSolverPP` (2M, 3M),
  :class:`DPMSolverPP2S`, :class:`UniPC` (bh2, with its corrector). ``N`` steps cost ``N``
  evaluations (2S: ``2N``).
* Grids: :class:`UniformGrid`, :class:`EDMGrid` (rho), :class:`LogSNRGrid`; :func:`time_grid`.
* The shared machinery: :func:`integrate` (the one ``diffrax.diffeqsolve``), :func:`scan_grid` (the
  fixed-grid loop), :func:`solve_ends` (default ends away from ``alpha = 0`` / ``beta = 0``).
"""

from flowjax.solvers._adaptive import (
    ERROR_NORMS,
    Adaptive,
    as_adaptive,
    batch_max_rms_norm,
    batch_rms_norm,
)
from flowjax.solvers._base import AbstractSolver
from flowjax.solvers._diffrax import Solution, fsal_initial_state, integrate, single_step
from flowjax.solvers._ends import NOISE_END_MARGIN, solve_ends
from flowjax.solvers._exponential import (
    AbstractExponentialSolver,
    DPMSolverPP,
    DPMSolverPP2S,
    UniPC,
)
from flowjax.solvers._grids import (
    EDM_SIGMA_MAX,
    EDM_SIGMA_MIN,
    GRIDS,
    AbstractTimeGrid,
    EDMGrid,
    LogSNRGrid,
    UniformGrid,
    get_grid,
    noise_to_signal,
    time_grid,
    time_of_sigma,
    validate_grid,
)
from flowjax.solvers._log_snr import log_snr
from flowjax.solvers._lookup import ODE_SOLVERS, SDE_SOLVERS, get_solver
from flowjax.solvers._loop import GridStep, scan_grid
from flowjax.solvers._runge_kutta import (
    EULER_BACKENDS,
    SRA1,
    AbstractDiffraxSolver,
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

__all__ = [
    "EDM_SIGMA_MAX",
    "EDM_SIGMA_MIN",
    "ERROR_NORMS",
    "EULER_BACKENDS",
    "GRIDS",
    "NOISE_END_MARGIN",
    "ODE_SOLVERS",
    "SDE_SOLVERS",
    "SRA1",
    "AbstractDiffraxSolver",
    "AbstractExponentialSolver",
    "AbstractSolver",
    "AbstractTimeGrid",
    "Adaptive",
    "Bosh3",
    "DPMSolverPP",
    "DPMSolverPP2S",
    "Dopri5",
    "Dopri8",
    "EDMGrid",
    "Euler",
    "GridStep",
    "Heun",
    "LogSNRGrid",
    "Midpoint",
    "Ralston",
    "ShARK",
    "Solution",
    "Tsit5",
    "UniPC",
    "UniformGrid",
    "as_adaptive",
    "batch_max_rms_norm",
    "batch_rms_norm",
    "fsal_initial_state",
    "get_grid",
    "get_solver",
    "integrate",
    "log_snr",
    "noise_to_signal",
    "scan_grid",
    "single_step",
    "solve_ends",
    "time_grid",
    "time_of_sigma",
    "validate_grid",
]
