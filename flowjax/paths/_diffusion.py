"""Adapter to the diffusion papers' orientation (DDPM, score SDE): time ``s = 1 - t``, data at ``s = 0``.

flowjax never uses ``s`` internally; convert at the edge with these functions. In diffusion time a
Gaussian path is the marginal of the linear forward SDE ``dx = f(s) x ds + g(s) dW``, with
``f(s) = d log alpha / ds`` and ``g(s)^2 = d beta^2 / ds - 2 f(s) beta^2``. Written in flowjax time
these are ``f = -b_t`` and ``g^2 = 2 a_t`` (Proposition 1's coefficients), which reproduce the score
SDE paper's VP (``f = -beta(s)/2``, ``g^2 = beta(s)``), sub-VP (``g^2 = beta(s)(1 - exp(-2 B(s)))``)
and VE (``f = 0``, ``g = sigma(s) sqrt(2 log(sigma_max / sigma_min))``) SDEs.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from flowjax import _validation as v
from flowjax.paths._base import AbstractPath, prop1_coefficients


def to_diffusion_time(t: Float[ArrayLike, "*T"]) -> Float[Array, "*T"]:
    """flowjax time (noise at 0) to diffusion time ``s = 1 - t`` (data at 0)."""
    return 1.0 - v.as_float_array(t, "t")


def from_diffusion_time(s: Float[ArrayLike, "*T"]) -> Float[Array, "*T"]:
    """Diffusion time ``s`` (data at 0) to flowjax time ``t = 1 - s``."""
    return 1.0 - v.as_float_array(s, "s")


def from_diffusion_velocity(v_s: Float[ArrayLike, "B ..."]) -> Float[Array, "B ..."]:
    """A velocity ``dx/ds`` in diffusion time to flowjax's ``dx/dt = -dx/ds``.

    For the linear interpolation ``x_s = (1 - s) x0 + s eps`` the diffusion-time velocity is
    ``eps - x0``; flowjax's CondOT velocity is ``x1 - eps`` with ``x1 = x0``.
    """
    return -jnp.asarray(v_s)


def to_diffusion_velocity(u: Float[ArrayLike, "B ..."]) -> Float[Array, "B ..."]:
    """flowjax's velocity ``dx/dt`` to the diffusion-time velocity ``dx/ds = -dx/dt``."""
    return -jnp.asarray(u)


def forward_sde_coefficients(
    path: AbstractPath, s: Float[ArrayLike, "*T"]
) -> tuple[Float[Array, "*T"], Float[Array, "*T"]]:
    """``(f(s), g(s))`` of the forward SDE ``dx = f(s) x ds + g(s) dW`` whose marginals are ``path``.

    Needs ``alpha > 0`` at ``t = 1 - s`` (every VP/VE path; CondOT and VP-cosine only for ``s < 1``).
    """
    a, b = prop1_coefficients(path, from_diffusion_time(s))
    return -b, jnp.sqrt(2.0 * a)
