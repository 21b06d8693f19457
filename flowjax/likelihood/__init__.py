"""Exact log-likelihoods of flow / probability-flow ODE models, and bits per dimension."""

from flowjax.likelihood._bpd import bits_per_dim
from flowjax.likelihood._divergence import exact_divergence, hutchinson_divergence
from flowjax.likelihood._images import image_bits_per_dim
from flowjax.likelihood._ode import (
    LikelihoodResult,
    default_time_range,
    log_likelihood,
    sample_with_log_prob,
)

__all__ = [
    "LikelihoodResult",
    "bits_per_dim",
    "default_time_range",
    "exact_divergence",
    "hutchinson_divergence",
    "image_bits_per_dim",
    "log_likelihood",
    "sample_with_log_prob",
]
