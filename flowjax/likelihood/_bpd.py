"""Bits per dimension of dequantized discrete data (8-bit images, the digits' 17 levels).

Dequantization itself lives with the data (``flowjax.data.dequantize``, ``log_bin_width``): levels
``k in {0..L-1}`` become ``x = lo + (hi - lo) (k + u) / L`` with ``u ~ U[0, 1)^D``, bins of width
``w = (hi - lo) / L``, and the uniform dequantization bound (Theis et al., 2016)

    log P(k) >= E_u[ log p(x) ] + D log w.

In bits per dimension (``log p`` in nats)::

    bpd = -(log p(x) / D + log w) / ln 2 = -log p(x) / (D ln 2) - log2(hi - lo) + log2(L)

For 8-bit images in ``[-1, 1]`` the offset is ``+7`` bits/dim (the score SDE paper's CIFAR-10
convention); a uniform density on ``[-1, 1]^D`` is then exactly 8 bits/dim.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from flowjax.data import log_bin_width

__all__ = ["bits_per_dim"]


def bits_per_dim(
    log_prob_x: Float[ArrayLike, " B"],
    *,
    dim: int,
    num_levels: int = 256,
    data_range: tuple[float, float] = (-1.0, 1.0),
) -> Float[Array, " B"]:
    """Bits per dimension of dequantized discrete data from ``log p(x)`` in the model's range."""
    log_w = log_bin_width(num_levels, data_range)
    return -(jnp.asarray(log_prob_x) / dim + log_w) / math.log(2.0)
