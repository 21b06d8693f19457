"""Runge-Kutta solvers on diffrax: what each builds and what it costs.

Each solver records how many vector-field (hence model) evaluations it makes, so that the number
of function evaluations (NFE) is computed from diffrax's step statistics:
``nfe = initial_evals + evals_per_step * (accepted + rejected steps)``. The counts are checked
against a call counter in ``tests/test_solvers.py``.

* Explicit Runge-Kutta solvers that are *first same as last* (FSAL: Bosh3, Tsit5, Dopri5, Dopri8)
  evaluate once at the start and ``stages - 1`` times per step (the last stage is the next step's
  first), rejected steps included (:func:`flowjax.solvers.integrate` hands diffrax the first
  evaluation so that a rejected first step does not repeat it).
* The others evaluate ``stages`` times per step.
* SDE solvers count evaluations of the drift (the model); the diffusion ``sigma_t`` is not a model
  call. ``Euler`` is Euler-Maruyama there (strong order 1 for additive noise), ``Heun`` strong
  order 1 for additive noise; ``ShARK`` (diffrax's recommendation for additive noise) and ``SRA1``
  use space-time Levy area and have error estimates.
"""

from __future__ import annotations

from typing import Any, ClassVar

import diffrax

from flowjax.solvers._base import AbstractSolver

#: Backends of fixed-grid Euler / Euler-Maruyama: ``"scan"`` (a plain ``lax.scan`` loop),
#: ``"diffrax"``, or ``"auto"`` (the scan, measured faster or equal; see ``flowjax.sampling``).
EULER_BACKENDS = ("auto", "diffrax", "scan")


class AbstractDiffraxSolver(AbstractSolver):
    """A solver run by ``diffrax.diffeqsolve`` (fixed grid or adaptive steps).

    Class attributes:
      evals_per_step, initial_evals: model evaluations per attempted step and at the start.
      order: convergence order for ODEs.
      levy_area: the Brownian increment type it needs (SDEs).
    """

    evals_per_step: ClassVar[int]
    initial_evals: ClassVar[int] = 0
    order: ClassVar[int]
    levy_area: ClassVar[type] = diffrax.BrownianIncrement
    diffrax_class: ClassVar[type]

    def diffrax_solver(self) -> diffrax.AbstractSolver:
        """A fresh diffrax solver object."""
        return self.diffrax_class()

    def nfe(self, num_steps: Any) -> Any:
        return self.initial_evals + self.evals_per_step * num_steps


class Euler(AbstractDiffraxSolver):
    """Euler (ODE) / Euler-Maruyama (SDE), one evaluation per step.

    Attributes:
      backend: for fixed grids, ``"scan"`` (a plain ``lax.scan`` loop), ``"diffrax"``, or
        ``"auto"`` (the scan). Both give the same numbers (the same noise for the same key).
    """

    backend: str = "auto"
    sde: ClassVar[bool] = True
    evals_per_step: ClassVar[int] = 1
    order: ClassVar[int] = 1
    diffrax_class: ClassVar[type] = diffrax.Euler

    def __check_init__(self) -> None:
        if self.backend not in EULER_BACKENDS:
            raise ValueError(
                f"unknown Euler backend {self.backend!r}; valid choices are: "
                f"{', '.join(EULER_BACKENDS)}"
            )


class Heun(AbstractDiffraxSolver):
    """Heun's method (explicit trapezoid), order 2, with an error estimate; SDEs too."""

    sde: ClassVar[bool] = True
    error_estimate: ClassVar[bool] = True
    evals_per_step: ClassVar[int] = 2
    order: ClassVar[int] = 2
    diffrax_class: ClassVar[type] = diffrax.Heun


class Midpoint(AbstractDiffraxSolver):
    """The explicit midpoint method, order 2, with an error estimate."""

    error_estimate: ClassVar[bool] = True
    evals_per_step: ClassVar[int] = 2
    order: ClassVar[int] = 2
    diffrax_class: ClassVar[type] = diffrax.Midpoint


class Ralston(AbstractDiffraxSolver):
    """Ralston's second-order method (minimal error constant), with an error estimate."""

    error_estimate: ClassVar[bool] = True
    evals_per_step: ClassVar[int] = 2
    order: ClassVar[int] = 2
    diffrax_class: ClassVar[type] = diffrax.Ralston


class Bosh3(AbstractDiffraxSolver):
    """Bogacki-Shampine 3(2), FSAL."""

    error_estimate: ClassVar[bool] = True
    evals_per_step: ClassVar[int] = 3
    initial_evals: ClassVar[int] = 1
    order: ClassVar[int] = 3
    diffrax_class: ClassVar[type] = diffrax.Bosh3


class Tsit5(AbstractDiffraxSolver):
    """Tsitouras 5(4), FSAL."""

    error_estimate: ClassVar[bool] = True
    evals_per_step: ClassVar[int] = 6
    initial_evals: ClassVar[int] = 1
    order: ClassVar[int] = 5
    diffrax_class: ClassVar[type] = diffrax.Tsit5


class Dopri5(AbstractDiffraxSolver):
    """Dormand-Prince 5(4), FSAL."""

    error_estimate: ClassVar[bool] = True
    evals_per_step: ClassVar[int] = 6
    initial_evals: ClassVar[int] = 1
    order: ClassVar[int] = 5
    diffrax_class: ClassVar[type] = diffrax.Dopri5


class Dopri8(AbstractDiffraxSolver):
    """Dormand-Prince 8(7), FSAL."""

    error_estimate: ClassVar[bool] = True
    evals_per_step: ClassVar[int] = 13
    initial_evals: ClassVar[int] = 1
    order: ClassVar[int] = 8
    diffrax_class: ClassVar[type] = diffrax.Dopri8


class ShARK(AbstractDiffraxSolver):
    """Shifted additive-noise Runge-Kutta (SDEs with additive noise), with an error estimate."""

    ode: ClassVar[bool] = False
    sde: ClassVar[bool] = True
    error_estimate: ClassVar[bool] = True
    evals_per_step: ClassVar[int] = 2
    order: ClassVar[int] = 1
    levy_area: ClassVar[type] = diffrax.SpaceTimeLevyArea
    diffrax_class: ClassVar[type] = diffrax.ShARK


class SRA1(AbstractDiffraxSolver):
    """Roessler's SRA1 (SDEs with additive noise), with an error estimate."""

    ode: ClassVar[bool] = False
    sde: ClassVar[bool] = True
    error_estimate: ClassVar[bool] = True
    evals_per_step: ClassVar[int] = 2
    order: ClassVar[int] = 1
    levy_area: ClassVar[type] = diffrax.SpaceTimeLevyArea
    diffrax_class: ClassVar[type] = diffrax.SRA1
