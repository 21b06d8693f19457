"""Divergence of a vector field of one example: exact (d forward-mode JVPs) or Hutchinson.

Both return the field's value together with its divergence, so the field is evaluated once per
call: under ``vmap`` over the JVP tangents the primal computation does not depend on the tangent
and XLA computes it once.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = ["exact_divergence", "hutchinson_divergence", "sample_probes"]


def exact_divergence(
    f: Callable[[Array], Array], x: Float[Array | np.ndarray, "*D"], chunk: int | None = None
) -> tuple[Float[Array, "*D"], Float[Array, ""]]:
    """``(f(x), tr df/dx)`` for one example ``x`` with ``d = x.size`` forward-mode JVPs.

    Args:
      f: maps an array shaped like ``x`` to one of the same shape.
      x: a single example, any shape.
      chunk: how many basis vectors to push through one batched JVP. ``None`` (default) does all
        ``d`` at once (fastest; memory ``d`` times one evaluation); a smaller chunk bounds memory and
        loops over ``ceil(d / chunk)`` batched JVPs.
    """
    d = math.prod(x.shape)
    chunk = d if chunk is None else max(1, min(int(chunk), d))
    num_chunks = -(-d // chunk)
    eye = jnp.eye(num_chunks * chunk, d, dtype=x.dtype).reshape(num_chunks, chunk, *x.shape)

    def one_chunk(basis: Array) -> tuple[Array, Array]:
        def one(e: Array) -> tuple[Array, Array]:
            fx, jv = jax.jvp(f, (x,), (e,))
            return fx, jnp.sum(jv * e)

        fx, diag = jax.vmap(one)(basis)
        return fx[0], jnp.sum(diag)

    if num_chunks == 1:
        return one_chunk(eye[0])
    fxs, parts = jax.lax.map(one_chunk, eye)
    return fxs[0], jnp.sum(parts)


def hutchinson_divergence(
    f: Callable[[Array], Array],
    x: Float[Array | np.ndarray, "*D"],
    probes: Float[Array | np.ndarray, "K ..."],
) -> tuple[Float[Array, "*D"], Float[Array, " K"]]:
    """``(f(x), [v_k^T (df/dx) v_k]_k)``: one unbiased divergence estimate per probe ``v_k``.

    With probes of identity covariance (Rademacher or standard Gaussian) each estimate has mean
    ``tr df/dx``; Rademacher probes have the smaller variance.
    """

    def one(v: Array | np.ndarray) -> tuple[Array, Array]:  # (a tracer under vmap)
        fx, jv = jax.jvp(f, (x,), (v,))
        return fx, jnp.sum(jv * v)

    fx, est = jax.vmap(one)(probes)
    return fx[0], est


def sample_probes(key: Array, shape: tuple[int, ...], num_probes: int, kind: str, dtype) -> Array:
    """``num_probes`` probes of the given example shape: ``"rademacher"`` or ``"gaussian"``."""
    if kind == "rademacher":
        return jax.random.rademacher(key, (num_probes, *shape), dtype=dtype)
    return jax.random.normal(key, (num_probes, *shape), dtype=dtype)
