"""Inverse problems ``y = A x1 + n``, ``n ~ N(0, s^2 I)``: posterior sampling with any sampler.

The posterior score is the prior score plus the measurement score (seed 001, section 8). Every
method here is a ``model_fn(x, t)`` for :func:`flowjax.sampling.sample`:

* operators: :class:`MatrixOperator` (dense ``A``), :class:`Inpainting` (a pixel mask),
  :class:`Identity` (denoising); :func:`measure` simulates ``y``;
* exact, for a Gaussian-mixture prior: :func:`posterior_model_fn` (and :func:`exact_posterior`,
  the posterior mixture itself), the ground truth;
* approximate, for learned priors: :func:`dps` (diffusion posterior sampling) and :func:`pigdm`
  (pseudo-inverse guidance), both differentiating through the model's denoiser.
"""

from flowjax.inverse._exact import PosteriorOracle, exact_posterior, posterior_model_fn
from flowjax.inverse._guided import METHODS, MeasurementGuided, dps, pigdm
from flowjax.inverse._operators import (
    Identity,
    Inpainting,
    LinearOperator,
    MatrixOperator,
    measure,
)

__all__ = [
    "METHODS",
    "Identity",
    "Inpainting",
    "LinearOperator",
    "MatrixOperator",
    "MeasurementGuided",
    "PosteriorOracle",
    "dps",
    "exact_posterior",
    "measure",
    "pigdm",
    "posterior_model_fn",
]
