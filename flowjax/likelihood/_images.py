"""Bits per dimension of integer images under a model: dequantize, scale, solve, convert."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from flowjax.data import dequantize
from flowjax.likelihood._bpd import bits_per_dim
from flowjax.likelihood._ode import LikelihoodResult, log_likelihood
from flowjax.paths import AbstractPath

__all__ = ["image_bits_per_dim"]


def image_bits_per_dim(
    model_fn: Callable[..., Array],
    path: AbstractPath,
    images: Int[ArrayLike, "B ..."],
    key: PRNGKeyArray,
    *,
    num_levels: int = 256,
    data_range: tuple[float, float] = (-1.0, 1.0),
    num_dequantizations: int = 1,
    **likelihood_kwargs: Any,
) -> tuple[Float[Array, " B"], LikelihoodResult]:
    """Bits per dimension of integer images ``{0..L-1}`` (uniform dequantization bound).

    Averages ``log p`` over ``num_dequantizations`` draws of the dequantization noise, then applies
    :func:`bits_per_dim` (``+ log2(L) - log2(hi - lo)``; ``+7`` for 8-bit data in ``[-1, 1]``). The
    dequantization is ``flowjax.data.dequantize``.
    ``likelihood_kwargs`` go to :func:`log_likelihood` (prediction, divergence, solver, ...);
    the returned result is that of the last draw.
    """
    images = jnp.asarray(images)
    dim = math.prod(images.shape[1:])
    log_probs = []
    result = None
    for k in jax.random.split(key, num_dequantizations):
        k_deq, k_probe = jax.random.split(k)
        x = dequantize(k_deq, images, num_levels, data_range)
        result = log_likelihood(model_fn, path, x, key=k_probe, **likelihood_kwargs)
        log_probs.append(result.log_prob)
    mean_lp = jnp.mean(jnp.stack(log_probs), axis=0)
    bpd = bits_per_dim(mean_lp, dim=dim, num_levels=num_levels, data_range=data_range)
    return bpd, cast(LikelihoodResult, result)  # set: jnp.stack above fails on zero draws
