"""Class labels for conditional training: range checks and label dropout for classifier-free guidance.

A class-conditional model with ``num_classes = K`` embeds ``K + 1`` classes; index ``K`` is the
*null label*, meaning "no class". Training with label dropout (Ho & Salimans) replaces each label
by the null label with probability ``rate``, so one network learns both the conditional and the
unconditional prediction that guidance combines.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int, PRNGKeyArray

from flowjax import _validation as v

__all__ = ["check_labels", "drop_labels", "null_labels"]


def check_labels(
    labels: Any, num_classes: int, *, name: str = "label", allow_null: bool = False
) -> Int[Array, " B"]:
    """Validate class labels: integers of shape ``[B]`` in ``[0, num_classes)``.

    With ``allow_null`` the null label ``num_classes`` is accepted too. Shapes and dtypes are
    checked at trace time; values eagerly when concrete, inside jit only in checked mode.
    Returns the labels as an array.
    """
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer array of shape [B]; got dtype {labels.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"{name} must have shape [B]; got shape {labels.shape}")
    hi = num_classes + 1 if allow_null else num_classes
    what = (
        f"[0, {num_classes}] ({num_classes} is the null label)"
        if allow_null
        else f"[0, {num_classes - 1}] (num_classes = {num_classes})"
    )
    if v.is_concrete(labels):
        arr = np.asarray(labels)
        bad = arr[(arr < 0) | (arr >= hi)]
        if bad.size:
            raise ValueError(
                f"{name} must lie in {what}; got out-of-range values {bad[:8].tolist()}"
            )
    else:
        v.check_value(jnp.all((labels >= 0) & (labels < hi)), f"{name} must lie in {what}")
    return labels


def null_labels(batch_size: int, num_classes: int) -> Int[Array, " B"]:
    """``[B]`` null labels (index ``num_classes``): the unconditional model."""
    return jnp.full((batch_size,), num_classes, jnp.int32)


def drop_labels(
    key: PRNGKeyArray, labels: Int[Array, " B"], rate: float, num_classes: int
) -> Int[Array, " B"]:
    """Replace each label by the null label ``num_classes`` independently with probability ``rate``."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"label dropout rate must lie in [0, 1]; got {rate}")
    labels = check_labels(labels, num_classes, allow_null=True)
    if rate == 0.0:
        return labels
    drop = jax.random.bernoulli(key, rate, labels.shape)
    return jnp.where(drop, jnp.asarray(num_classes, labels.dtype), labels)
