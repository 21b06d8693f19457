"""The model seen by the samplers: one call, then a closed-form conversion to what a step needs.

``model_fn(x, t)`` returns a prediction of kind ``prediction``; a step needs a velocity (ODE), an
SDE drift, a score (Langevin) or the denoiser ``E[x1 | x]`` (final denoising). Every conversion goes
through :mod:`flowjax.parameterization` (``convert``, ``sde_drift``); nothing is re-derived here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from flowjax import parameterization as P
from flowjax.paths import AbstractPath


class Field(eqx.Module):
    """A model of kind ``prediction`` on ``path``, evaluated at a scalar time for a whole batch."""

    model_fn: Callable[[Array, Array], Array]
    path: AbstractPath
    prediction: str = eqx.field(static=True)

    def raw(self, x: Float[Array, "B ..."], t: Float[Array, ""]) -> Float[Array, "B ..."]:
        """The model's own prediction at ``(x, t)`` (``t`` broadcast to ``[B]``)."""
        t = jnp.asarray(t, x.dtype)
        return self.model_fn(x, jnp.broadcast_to(t, (x.shape[0],))).astype(x.dtype)

    def to(self, target: str, x: Array, t: ArrayLike) -> Array:
        """The prediction converted to ``target`` (one model call)."""
        t = jnp.asarray(t, x.dtype)
        return P.convert(
            self.raw(x, t), source=self.prediction, target=target, path=self.path, x=x, t=t
        )

    def drift(self, x: Array, t: ArrayLike, sigma: Array) -> Array:
        """``u_t(x) + sigma^2 / 2 * score_t(x)`` (one model call; ``sigma = 0``: the velocity)."""
        t = jnp.asarray(t, x.dtype)
        return P.sde_drift(
            self.raw(x, t),
            prediction=self.prediction,
            path=self.path,
            x=x,
            t=t,
            sigma=jnp.asarray(sigma, x.dtype),
        )


def check_model_output(model_fn: Callable[..., Any], x: Array) -> None:
    """Trace ``model_fn`` once (no FLOPs) and check its output matches ``x``'s shape and dtype."""
    t = jax.ShapeDtypeStruct((x.shape[0],), x.dtype)
    xs = jax.ShapeDtypeStruct(x.shape, x.dtype)
    out = jax.eval_shape(model_fn, xs, t)
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise TypeError(
            f"model_fn must return one array shaped like x {x.shape}; got {jax.tree_util.tree_structure(out)}"
        )
    if out.shape != x.shape:
        raise ValueError(
            f"model_fn output has shape {out.shape} but x has shape {x.shape}; a prediction must "
            "have the shape of its input x"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"model_fn output must be floating point; got dtype {out.dtype}")
