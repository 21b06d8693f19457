"""Sampling from a trained (or oracle) model: one ``sample()`` for ODE, SDE, Langevin, PC and EDM.

``sample(model_fn, path, key, shape, method=..., solver=..., ...)`` integrates from noise at
``t_start`` to data at ``t_end`` with any prediction kind (converted through
:mod:`flowjax.parameterization`). Methods are objects (strings are shortcuts with the defaults):

* :class:`ODE` (``"ode"``): the flow / probability-flow ODE ``dx/dt = u_t(x)`` with any solver of
  :mod:`flowjax.solvers`: Runge-Kutta on fixed grids (uniform, EDM rho, log-SNR) or adaptive
  steps, or the few-step exponential integrators (DPM-Solver++ 2M/3M/2S, UniPC).
* :class:`SDE` (``"sde"``): the SDE extension ``dX = [u + sigma_t^2/2 score] dt + sigma_t dW`` (same
  marginals for every ``sigma_t >= 0``; ``sigma="reverse"`` is the reverse-time diffusion SDE).
* :class:`PredictorCorrector` (``"pc"``): Langevin corrector with SNR step sizes (score SDE).
* :class:`AnnealedLangevin` (``"langevin"``): annealed Langevin dynamics.
* :class:`EDMStochastic` (``"edm"``): Karras et al.'s stochastic sampler for any path.
* :class:`MeanFlow` (``"meanflow"``), :class:`Shortcut` (``"shortcut"``), :class:`Consistency`
  (``"consistency"``): few-step sampling of two-time / consistency models, one call per step.

Classifier-free guidance is a model wrapper (:func:`guided_model`, one batched call of the
conditional and null predictions), as are classifier guidance and posterior sampling
(:mod:`flowjax.guidance`, :mod:`flowjax.inverse`): every method and solver takes them unchanged.

Everything runs in one XLA program (``equinox.filter_jit``): pass ``model_fn`` as a pytree
carrying its parameters (``equinox.Module`` or ``jax.tree_util.Partial(apply, params)``) and new
parameter values reuse the compiled program.

Fixed-grid Euler / Euler-Maruyama runs on diffrax or a plain ``lax.scan`` loop
(``flowjax.solvers.Euler(backend=...)``; they agree on one grid, noise included), by default the
scan. Their cost against bare model calls, per backend and batch size, with the spread over
rounds: ``experiments/benchmarks/bench_sampling.py`` (BENCHMARKS.md, "Sampler overhead").
Calling ``sample`` from Python adds argument checking and dispatch to each call; for many tiny
calls, call it inside your own ``jax.jit``.
"""

from flowjax.sampling._guidance import GuidedModel, guided_model
from flowjax.sampling._langevin import langevin_corrector
from flowjax.sampling._methods import (
    ODE,
    SAMPLING_METHODS,
    SDE,
    AbstractSamplingMethod,
    AnnealedLangevin,
    EDMStochastic,
    PredictorCorrector,
    get_method,
)
from flowjax.sampling._onestep import Consistency, MeanFlow, Shortcut
from flowjax.sampling._sample import (
    SAMPLING_DATA_END_MARGIN,
    SampleResult,
    sample,
    sampling_time_range,
)
from flowjax.sampling._sde import SIGMA_NAMES, noise_schedule

__all__ = [
    "ODE",
    "SAMPLING_DATA_END_MARGIN",
    "SAMPLING_METHODS",
    "SDE",
    "SIGMA_NAMES",
    "AbstractSamplingMethod",
    "AnnealedLangevin",
    "Consistency",
    "EDMStochastic",
    "GuidedModel",
    "MeanFlow",
    "PredictorCorrector",
    "SampleResult",
    "Shortcut",
    "get_method",
    "guided_model",
    "langevin_corrector",
    "noise_schedule",
    "sample",
    "sampling_time_range",
]
