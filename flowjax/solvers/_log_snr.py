"""Log-SNR time and the exponential-integrator weights shared by DPM-Solver++ and UniPC.

For any Gaussian path ``x = alpha x1 + beta eps`` the probability-flow ODE, written with the data
prediction ``D(x, t) = E[x1 | x]`` in log-SNR time ``lambda = log(alpha / beta)``, is
``d(x / beta) = e^lambda D dlambda``; integrated exactly over one step ``[lambda_s, lambda_t]`` with
``h = lambda_t - lambda_s``:

    x_t = (beta_t / beta_s) x_s + alpha_t * integral_0^h e^{-(h - u)} D(lambda_s + u) du.

Expanding ``D`` in powers of ``u`` gives the weights ``a_k(h) = integral_0^h e^{-(h - u)} u^k / k! du``
(``= h^{k+1} phi_{k+1}(-h)`` in the phi-function notation of the papers): ``a_0 = 1 - e^{-h}`` and
``a_k = h^k / k! - a_{k-1}`` (integration by parts). The recursion cancels badly for small ``h``, so
``|h| < 1`` uses the series ``a_k = sum_n (-1)^n h^{n+k+1} / (n+k+1)!``. At ``h = inf`` (a step from
``alpha = 0`` or into ``beta = 0``) ``a_0 = 1`` is exact and the higher weights are infinite: only
first-order steps are defined there.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, Float

from flowjax.paths import AbstractPath

_SERIES_TERMS = 20


def log_snr(path: AbstractPath, t: Float[Array, "*N"]) -> Float[Array, "*N"]:
    """``lambda = log(alpha / beta)`` (``-inf`` where ``alpha = 0``, ``+inf`` where ``beta = 0``)."""
    return jnp.log(path.alpha(t)) - jnp.log(path.beta(t))


def exp_weights(h: Float[Array, "*N"], k_max: int) -> list[Float[Array, "*N"]]:
    """``[a_0(h), ..., a_{k_max}(h)]`` (see the module docstring), accurate for every ``h >= 0``."""
    small = jnp.abs(h) < 1.0
    hs = jnp.where(small, h, 0.0)  # keeps the series finite where it is not used
    out: list[Array] = []
    a_prev: Any = None  # a_0(h) is set at k = 0, before its first use
    for k in range(k_max + 1):
        poly = jnp.zeros_like(hs)
        for n in reversed(range(_SERIES_TERMS)):  # Horner in -h
            poly = poly * (-hs) + 1.0 / math.factorial(n + k + 1)
        series = hs ** (k + 1) * poly
        rec = -jnp.expm1(-h) if k == 0 else h**k / float(math.factorial(k)) - a_prev
        a_prev = jnp.where(small, series, rec)
        out.append(a_prev)
    return out
