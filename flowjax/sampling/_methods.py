"""Sampling methods as objects; the names of :data:`SAMPLING_METHODS` are shortcuts with defaults.

* :class:`ODE`: the flow / probability-flow ODE ``dx/dt = u_t(x)`` with any ODE solver.
* :class:`SDE`: the SDE extension ``dX = [u + sigma_t^2/2 score] dt + sigma_t dW`` (the same
  marginals for every ``sigma_t >= 0``; ``"reverse"`` is the reverse-time diffusion SDE).
* :class:`PredictorCorrector`: at each grid time Langevin corrector steps, then a predictor step
  (an ODE step if ``sigma == 0``, else an SDE step) (score SDE).
* :class:`AnnealedLangevin`: Langevin steps at each grid time after the start, no predictor
  (score SDE's corrector-only sampler, NCSN's sampler on VE).
* :class:`EDMStochastic`: Karras et al.'s stochastic sampler (2022, Algorithm 2) for any path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import numpy as np
from jaxtyping import Array

from flowjax.sampling._sde import noise_schedule

Sigma = float | Callable[[Array], Array] | str


class AbstractSamplingMethod(eqx.Module):
    """How :func:`flowjax.sampling.sample` moves from noise to data.

    Class attributes:
      kind: the method's shortcut name.
      adaptive_ok: adaptive steps apply.
    """

    kind: ClassVar[str]
    adaptive_ok: ClassVar[bool] = False

    @property
    def sigma(self) -> Sigma:
        """The SDE noise ``sigma_t`` of the method's steps (0 for deterministic steps)."""
        return 0.0


def _check_int(value: Any, name: str, owner: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{owner}.{name} must be an integer >= {minimum}; got {value!r}")


def _check_number(value: Any, name: str, owner: str, *, positive: bool, allow_inf=False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{owner}.{name} must be a number; got {value!r}")
    ok = value > 0 if positive else value >= 0
    if not ok or math.isnan(value) or (math.isinf(value) and not allow_inf):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{owner}.{name} must be a finite number {bound}; got {value!r}")


class ODE(AbstractSamplingMethod):
    """The flow / probability-flow ODE (``sigma = 0``)."""

    kind: ClassVar[str] = "ode"
    adaptive_ok: ClassVar[bool] = True


class SDE(AbstractSamplingMethod):
    """The SDE extension with noise ``sigma_t``.

    Attributes:
      sigma: a constant >= 0, a callable of a scalar ``t``, or ``"reverse"`` (``sigma_t^2 = 2 a_t``,
        the reverse-time SDE of the forward noising process).
    """

    sigma: Sigma = "reverse"
    kind: ClassVar[str] = "sde"
    adaptive_ok: ClassVar[bool] = True

    def __check_init__(self) -> None:
        noise_schedule(self.sigma)


class PredictorCorrector(AbstractSamplingMethod):
    """Predictor-corrector sampling (Song et al. 2021).

    Attributes:
      sigma: the predictor's SDE noise (0: an ODE step).
      corrector_steps: Langevin steps per grid time (>= 1).
      snr: the corrector's target signal-to-noise ratio (step-size rule of score SDE).
    """

    sigma: Sigma = 0.0
    corrector_steps: int = 1
    snr: float = 0.16
    kind: ClassVar[str] = "pc"

    def __check_init__(self) -> None:
        noise_schedule(self.sigma)
        _check_int(self.corrector_steps, "corrector_steps", "PredictorCorrector")
        _check_number(self.snr, "snr", "PredictorCorrector", positive=True)


class AnnealedLangevin(AbstractSamplingMethod):
    """Annealed Langevin dynamics: ``steps`` Langevin steps at each grid time after the start.

    Attributes:
      steps: Langevin steps per grid time (>= 1).
      snr: the target signal-to-noise ratio of a step.
    """

    steps: int = 1
    snr: float = 0.16
    kind: ClassVar[str] = "langevin"

    def __check_init__(self) -> None:
        _check_int(self.steps, "steps", "AnnealedLangevin")
        _check_number(self.snr, "snr", "AnnealedLangevin", positive=True)


class EDMStochastic(AbstractSamplingMethod):
    """Karras et al.'s stochastic sampler (EDM, 2022, Algorithm 2) for any path.

    In the scaled variable ``x / alpha`` with noise level ``sigma = beta / alpha`` every path is EDM's
    ``x1 + sigma eps``. At each grid time with ``s_tmin <= sigma_i <= s_tmax`` the state is first
    noised up to ``sigma_hat = (1 + gamma) sigma_i``, ``gamma = min(churn / N, sqrt(2) - 1)``, with
    noise of scale ``s_noise``; then an Euler step (``solver="euler"``) or Heun step (``"heun"``, the
    paper's choice; Euler into ``sigma = 0``) to the next grid time. ``churn = 0`` is the
    deterministic sampler. Use it on ``time_grid="edm"`` as the paper does.

    Attributes:
      churn: ``S_churn`` (>= 0), the total stochasticity.
      s_tmin, s_tmax: the noise levels between which noise is added.
      s_noise: ``S_noise``, the scale of the added noise (slightly above 1 offsets the detail lost
        by denoising).
    """

    churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0
    kind: ClassVar[str] = "edm"

    def __check_init__(self) -> None:
        _check_number(self.churn, "churn", "EDMStochastic", positive=False)
        _check_number(self.s_tmin, "s_tmin", "EDMStochastic", positive=False)
        _check_number(self.s_tmax, "s_tmax", "EDMStochastic", positive=False, allow_inf=True)
        _check_number(self.s_noise, "s_noise", "EDMStochastic", positive=False)
        if not self.s_tmin <= self.s_tmax:
            raise ValueError(
                f"EDMStochastic needs s_tmin <= s_tmax; got {self.s_tmin} and {self.s_tmax}"
            )


#: Method shortcuts: name -> the method with its defaults.
SAMPLING_METHODS: dict[str, AbstractSamplingMethod] = {
    "ode": ODE(),
    "sde": SDE(),
    "pc": PredictorCorrector(),
    "langevin": AnnealedLangevin(),
    "edm": EDMStochastic(),
}


def get_method(method: str | AbstractSamplingMethod) -> AbstractSamplingMethod:
    """The method object for a shortcut name or a method object."""
    if isinstance(method, AbstractSamplingMethod):
        return method
    if not isinstance(method, str):
        raise TypeError(
            f"method must be a name ({', '.join(SAMPLING_METHODS)}) or a flowjax.sampling method "
            f"object (ODE(), SDE(sigma), ...); got {method!r}"
        )
    if method not in SAMPLING_METHODS:
        raise ValueError(
            f"unknown method {method!r}; valid choices are: {', '.join(SAMPLING_METHODS)}"
        )
    return SAMPLING_METHODS[method]
