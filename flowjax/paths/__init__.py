"""Gaussian probability paths ``x_t = alpha(t) x1 + beta(t) eps`` (noise at ``t = 0``, data at ``t = 1``)."""

from flowjax.paths._base import (
    PREDICTIONS,
    AbstractPath,
    PathCoefficients,
    prop1_coefficients,
)
from flowjax.paths._diffusion import (
    forward_sde_coefficients,
    from_diffusion_time,
    from_diffusion_velocity,
    to_diffusion_time,
    to_diffusion_velocity,
)
from flowjax.paths._schedules import (
    EDM,
    VE,
    VP_T_MAX,
    CondOT,
    GaussianPath,
    SubVP,
    VPCosine,
    VPLinear,
    get_path,
)

__all__ = [
    "EDM",
    "PREDICTIONS",
    "VE",
    "VP_T_MAX",
    "AbstractPath",
    "CondOT",
    "GaussianPath",
    "PathCoefficients",
    "SubVP",
    "VPCosine",
    "VPLinear",
    "forward_sde_coefficients",
    "from_diffusion_time",
    "from_diffusion_velocity",
    "get_path",
    "prop1_coefficients",
    "to_diffusion_time",
    "to_diffusion_velocity",
]
