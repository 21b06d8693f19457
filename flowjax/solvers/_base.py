"""The root of the solver hierarchy."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import equinox as eqx


class AbstractSolver(eqx.Module):
    """A solver of the sampling ODE (and, where ``sde`` is set, of the SDE extension).

    Class attributes:
      ode, sde: which equations it integrates.
      error_estimate: it has an embedded error estimate (usable with adaptive steps).
    """

    ode: ClassVar[bool] = True
    sde: ClassVar[bool] = False
    error_estimate: ClassVar[bool] = False

    @abc.abstractmethod
    def nfe(self, num_steps: Any) -> Any:
        """Model evaluations over ``num_steps`` attempted steps."""
