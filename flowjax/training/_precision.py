"""Mixed precision: bfloat16 computation with float32 parameters, optimizer state and loss.

The recipe (no loss scaling is needed: bfloat16 has float32's exponent range):

* the model computes in ``compute_dtype`` (Flax ``dtype``) while its parameters stay float32
  (``param_dtype``): every layer casts the float32 weights to bfloat16 on use, so the gradient
  reaching the parameters is float32 and the optimizer state (Adam's moments), the EMA and the
  checkpoints are float32;
* flowjax's models normalise and take softmaxes in float32 and return the prediction in the input's
  dtype, so with float32 data the loss (a mean over the batch) is reduced in float32;
* the train step differentiates a float32 scalar and accumulates micro-batch gradients in
  float32 (see :func:`flowjax.training.make_train_step`).

:func:`with_precision` applies the recipe to a Flax model; :func:`check_param_dtype` guards the
float32 half of it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import PyTree

from flowjax._validation import choice

PRECISIONS = ("float32", "bfloat16")


def compute_dtype(precision: str) -> jnp.dtype:
    """The computation dtype of a precision name (``"float32"`` or ``"bfloat16"``)."""
    choice(precision, PRECISIONS, "precision")
    return jnp.dtype(precision)


def with_precision(model: nn.Module, precision: str = "bfloat16") -> nn.Module:
    """``model`` computing in ``precision`` with float32 parameters (a clone; ``model`` unchanged).

    Args:
      model: a Flax Linen module with ``dtype`` and ``param_dtype`` fields (flowjax's ``MLP`` and
        ``UNet``; most Flax layers).
      precision: ``"float32"`` (full precision, ``dtype=None``) or ``"bfloat16"``.

    Returns:
      ``model.clone(dtype=..., param_dtype=float32)``. Its parameters have the same tree, shapes
      and dtypes as the original's, so one set of parameters (and one checkpoint) serves both:
      train in bfloat16, evaluate likelihoods in float32.

    Raises:
      TypeError: ``model`` is not a Flax module or has no ``dtype`` / ``param_dtype`` fields.
    """
    dtype = compute_dtype(precision)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a flax.linen Module; got {type(model).__name__}")
    fields = getattr(type(model), "__dataclass_fields__", {})
    missing = [f for f in ("dtype", "param_dtype") if f not in fields]
    if missing:
        raise TypeError(
            f"{type(model).__name__} has no {' / '.join(missing)} field(s); mixed precision needs "
            "a model whose computation dtype and parameter dtype are configurable"
        )
    return model.clone(
        dtype=None if dtype == jnp.float32 else dtype, param_dtype=jnp.float32, parent=None
    )


def check_param_dtype(params: PyTree, dtype: Any = jnp.float32, *, name: str = "params") -> None:
    """Raise unless every floating leaf of ``params`` has ``dtype`` (float32 by default).

    Low-precision parameters would make the optimizer state, the EMA and the updates low precision
    too (a bfloat16 weight cannot absorb updates below 2^-8 of its magnitude); keep parameters in
    float32 and compute in bfloat16 instead (:func:`with_precision`).
    """
    want = jnp.dtype(dtype)
    bad = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        leaf_dtype = jnp.dtype(getattr(leaf, "dtype", jnp.result_type(leaf)))
        if jnp.issubdtype(leaf_dtype, jnp.floating) and leaf_dtype != want:
            bad.append(f"{jax.tree_util.keystr(path)}: {leaf_dtype}")
    if bad:
        raise TypeError(
            f"{name} must be {want} for mixed-precision training (computation may be bfloat16, "
            f"the parameters and optimizer state may not); got {len(bad)} leaf(s) of another "
            f"dtype: {'; '.join(bad[:6])}. Build the model with param_dtype=float32 "
            "(flowjax.training.with_precision)."
        )
