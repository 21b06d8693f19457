"""Classifier-free guidance: conditional and unconditional predictions from one batched call.

At fixed ``(x, t)`` every parameterization is an affine function of the score (see
:mod:`flowjax.parameterization`), so ``guided = uncond + w * (cond - uncond)`` is the same
guidance whichever kind the model predicts: converting the guided prediction equals guiding the
converted predictions. ``w = 1`` is the conditional model, ``w = 0`` the unconditional one, and
``w > 1`` sharpens towards the condition (Ho & Salimans).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

ModelFn = Callable[..., Array]


def _concat(a: Any, b: Any) -> Any:
    return jax.tree_util.tree_map(lambda p, q: jnp.concatenate([p, q], axis=0), a, b)


def broadcast_null(null_cond: Any, cond: Any) -> Any:
    """Broadcast ``null_cond`` (one example's shape or the batch's) to each leaf of ``cond``."""

    def one(n: Any, c: Any) -> Array:
        n = jnp.asarray(n, dtype=jnp.asarray(c).dtype)
        c = jnp.asarray(c)
        if n.shape == c.shape:
            return n
        if n.shape == c.shape[1:]:
            return jnp.broadcast_to(n, c.shape)
        raise ValueError(
            f"null_cond must have the shape of one conditioning input {c.shape[1:]} or of the "
            f"whole batch {c.shape}; got {n.shape}"
        )

    return jax.tree_util.tree_map(one, null_cond, cond)


class GuidedModel(eqx.Module):
    """``model_fn(x, t)`` returning ``uncond + scale * (cond - uncond)`` (a pytree: jit-friendly).

    Each call evaluates ``model_fn`` once, on the doubled batch ``[x, x]``, ``[t, t]`` with
    conditioning ``[cond, null_cond]``; the sampler counts that as one model evaluation (NFE) of
    batch size ``2B``.
    """

    model_fn: ModelFn
    cond: Any
    null_cond: Any
    scale: Float[Array, ""]

    def __call__(self, x: Float[Array, "B ..."], t: Float[Array, " B"]) -> Float[Array, "B ..."]:
        b = x.shape[0]
        out = self.model_fn(_concat(x, x), _concat(t, t), _concat(self.cond, self.null_cond))
        if out.shape[0] != 2 * b:
            raise ValueError(
                f"the guided model call on the doubled batch {(2 * b, *x.shape[1:])} returned "
                f"shape {out.shape}; it must match its input x"
            )
        c, u = out[:b], out[b:]
        return u + self.scale.astype(out.dtype) * (c - u)


def guided_model(
    model_fn: ModelFn, cond: Any, null_cond: Any, scale: Float[ArrayLike, ""]
) -> GuidedModel:
    """Wrap ``model_fn(x, t, cond)`` into a classifier-free-guided ``model_fn(x, t)``.

    Args:
      model_fn: ``model_fn(x, t, cond)`` with ``x`` ``[B, ...]``, ``t`` ``[B]``, ``cond`` a pytree
        of ``[B, ...]`` arrays.
      cond: the conditioning input, leading axis ``B``.
      null_cond: the "no condition" input (e.g. the dropped-label token), with the shape of one
        example's condition (broadcast over the batch) or of the whole ``cond``.
      scale: the guidance weight ``w`` (1 = conditional, 0 = unconditional).
    """
    scale = jnp.asarray(scale)
    if scale.ndim != 0 or not jnp.issubdtype(scale.dtype, jnp.floating):
        scale = jnp.asarray(scale, jnp.result_type(float))
        if scale.ndim != 0:
            raise ValueError(f"guidance_scale must be a scalar; got shape {scale.shape}")
    return GuidedModel(model_fn, cond, broadcast_null(null_cond, cond), scale)
