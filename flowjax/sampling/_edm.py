"""EDM's stochastic sampler (Karras et al. 2022, Algorithm 2) on any Gaussian path.

With ``sigma = beta / alpha`` and the scaled state ``x / alpha``, every path is EDM's
``x1 + sigma eps``, whose probability-flow ODE is ``d(x/alpha)/dsigma = (x/alpha - D) / sigma`` with the
denoiser ``D = E[x1 | x]`` at the time whose noise level is ``sigma``. The churned level
``sigma_hat = (1 + gamma) sigma_i`` is mapped back to a time by bisection
(:func:`flowjax.solvers.time_of_sigma`); the state is carried unscaled, so saved states and the
result are in the path's own coordinates.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from flowjax.paths import AbstractPath
from flowjax.sampling._methods import EDMStochastic
from flowjax.sampling._model import Field
from flowjax.solvers import GridStep, noise_to_signal, time_of_sigma


def edm_step(
    field: Field,
    path: AbstractPath,
    method: EDMStochastic,
    grid: Array,
    key: PRNGKeyArray,
    *,
    heun: bool,
) -> tuple[GridStep, Array]:
    """The step of Algorithm 2 on ``grid`` and the number of model evaluations it makes."""
    dtype = grid.dtype
    n = grid.shape[0] - 1
    sigma = noise_to_signal(path, grid)
    alpha = path.alpha(grid)
    in_range = (sigma[:-1] >= method.s_tmin) & (sigma[:-1] <= method.s_tmax)
    gamma = jnp.where(in_range, min(method.churn / n, math.sqrt(2.0) - 1.0), 0.0).astype(dtype)
    sigma_hat = sigma[:-1] * (1.0 + gamma)
    # sqrt(sigma_hat^2 - sigma^2), written so that gamma = 0 gives exactly 0 (the difference of
    # squares, contracted into a fused multiply-add, would leave sqrt(rounding) ~ 1e-8 sigma)
    lift = sigma[:-1] * jnp.sqrt(gamma * (2.0 + gamma))
    t_churned = time_of_sigma(path, sigma_hat, path.t_min, grid[:-1])
    t_hat = jnp.where(gamma > 0, t_churned, grid[:-1])
    alpha_hat = path.alpha(t_hat)
    second = jnp.asarray(heun) & (sigma[1:] > 0)
    nfe = n + jnp.sum(second.astype(jnp.int32))

    def denoised_slope(x_scaled: Array, a: Array, s: Array, t: Array) -> Array:
        return (x_scaled - field.to("x1", a * x_scaled, t)) / s

    def step(x: Array, carry: Any, i: Array, ta: Array, tb: Array):
        del ta, tb
        x_scaled = x / alpha[i]
        noise = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
        x_hat = x_scaled + (lift[i] * method.s_noise) * noise
        d = denoised_slope(x_hat, alpha_hat[i], sigma_hat[i], t_hat[i])
        dsig = sigma[i + 1] - sigma_hat[i]
        x_next = x_hat + dsig * d

        def corrected(x_next: Array) -> Array:
            d2 = denoised_slope(x_next, alpha[i + 1], sigma[i + 1], grid[i + 1])
            return x_hat + dsig * 0.5 * (d + d2)

        if heun:
            x_next = jax.lax.cond(second[i], corrected, lambda y: y, x_next)
        return (alpha[i + 1] * x_next).astype(x.dtype), carry

    return step, nfe
