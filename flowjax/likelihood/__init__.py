"""Exact log-likelihoods of flow / probability-flow ODE models, and bits per dimension."""

from flowjax.likelihood._bpd import bits_per_dim
from flowjax.likelihood._divergence import exact_divergence, hutchinson_divergence
from flowjax.likelihood._images import image_bits_per_dim
from flowjax.likelihood._ode import (
    LIKELIHOOD_DATA_END_MARGIN,
    LikelihoodResult,
    likelihood_time_range,
    log_likelihood,
    sample_with_log_prob,
)

__all__ = [
    "LIKELIHOOD_DATA_END_MARGIN",
    "LikelihoodResult",
    "bits_per_dim",
    "exact_divergence",
    "hutchinson_divergence",
    "image_bits_per_dim",
    "likelihood_time_range",
    "log_likelihood",
    "sample_with_log_prob",
]
