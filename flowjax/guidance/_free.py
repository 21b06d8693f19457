"""Classifier-free guidance over class labels, with the labels checked against the model's classes.

:func:`flowjax.sampling.sample` takes any guided model, and
:func:`flowjax.sampling.guided_model` wraps any conditional one, but neither can know how many
classes the model has, and inside the compiled sampler a label out of range is only caught in
checked mode. :func:`classifier_free` is the class-label
front end: it checks the labels eagerly against ``K`` (read from the model when it says it) and
returns a ``model_fn(x, t)`` (a :class:`flowjax.sampling.GuidedModel`, one batched call of the
conditional and null-label predictions) that every sampler and solver accepts.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from flowjax import _validation as v
from flowjax.guidance._classifier import _num_classes_of
from flowjax.losses import check_labels
from flowjax.sampling import GuidedModel, guided_model

__all__ = ["classifier_free"]


def classifier_free(
    model_fn: Callable[..., Array],
    labels: Int[ArrayLike, " B"],
    *,
    scale: Float[ArrayLike, ""] = 1.0,
    num_classes: int | None = None,
) -> GuidedModel:
    """``model_fn(x, t) = f(x, t, null) + w (f(x, t, labels) - f(x, t, null))``, labels checked.

    Args:
      model_fn: a class-conditional model ``model_fn(x, t, labels)`` whose null label is ``K``
        (``flowjax.models.model_fn`` of a model built with ``num_classes=K`` and trained with
        ``flowjax.losses.make_loss(..., num_classes=K, label_dropout=p)``, or
        :func:`flowjax.guidance.conditional_oracle`).
      labels: ``[B]`` integers in ``[0, K)``, one per sample; out-of-range values are named.
      scale: the guidance weight ``w`` (0: unconditional, 1: conditional, > 1: sharper).
      num_classes: ``K`` (default: read from the model when it says it).

    Valid ``t``: where ``model_fn`` is.
    """
    if not callable(model_fn):
        raise TypeError(f"model_fn must be callable; got {type(model_fn).__name__}")
    k = num_classes if num_classes is not None else _num_classes_of(model_fn)
    if k is None:
        raise ValueError(
            "num_classes is needed: the model does not say how many classes it has (its null "
            "label is num_classes)"
        )
    labels = check_labels(labels, int(k), name="labels")
    scale = v.as_float_array(scale, "scale")
    if scale.ndim != 0:
        raise ValueError(f"scale (the guidance weight) must be a scalar; got shape {scale.shape}")
    return guided_model(model_fn, labels, jnp.asarray(k, labels.dtype), scale)
