"""Classifier guidance: ``score(x | y) = score(x) + w * grad_x log p_t(y | x)`` as a ``model_fn``.

Bayes' rule at every time ``t``: ``log p_t(x | y) = log p_t(x) + log p_t(y | x) - log p(y)``, so the
class-conditional score is the unconditional score plus the gradient of a *time-dependent*
classifier's log-probability (Song et al. 2021; Dhariwal & Nichol 2021). With ``w = 1`` and exact
ingredients this is exact; ``w > 1`` sharpens towards the class. The guided model is a
``model_fn(x, t)`` of the same prediction kind as the unconditional model (the score term is
converted by :func:`flowjax.guidance.add_score_term`), so it works with every sampler and solver in
:func:`flowjax.sampling.sample`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from flowjax import _validation as v
from flowjax.guidance._score import add_score_term
from flowjax.losses import check_labels
from flowjax.paths import PREDICTIONS, AbstractPath

__all__ = ["ClassifierGuided", "classifier_guided", "classifier_log_prob", "classifier_score"]

ClassifierFn = Callable[..., Array]


def _num_classes_of(classifier_fn: Any) -> int | None:
    """``K`` when the classifier says it (oracle classifiers, ``models.model_fn`` of a Classifier)."""
    k = getattr(classifier_fn, "num_classes", None)
    if k is None:
        k = getattr(getattr(classifier_fn, "model", None), "num_classes", None)
    return int(k) if isinstance(k, int) else None


def classifier_log_prob(
    classifier_fn: ClassifierFn,
    x: Float[Array, "B ..."],
    t: Float[ArrayLike, " B"],
    labels: Int[Array, " B"],
) -> Float[Array, " B"]:
    """``log p_t(labels | x)`` from a classifier returning logits ``[B, K]`` (log-softmax)."""
    x = v.require_floating(x, "x")
    v.require_batched(x, "x")
    tb = jnp.broadcast_to(v.as_float_array(t, "t").astype(x.dtype), (x.shape[0],))
    logits = classifier_fn(x, tb)
    if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
        raise ValueError(
            f"classifier_fn must return logits of shape [B, K] with B = {x.shape[0]}; got "
            f"shape {logits.shape}"
        )
    if labels.shape != (x.shape[0],):
        raise ValueError(
            f"labels must have shape [B] = ({x.shape[0]},) to match x {x.shape}; got {labels.shape}"
        )
    logp = jax.nn.log_softmax(logits.astype(x.dtype), axis=-1)
    return jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=1)[:, 0]


def classifier_score(
    classifier_fn: ClassifierFn,
    x: Float[Array, "B ..."],
    t: Float[ArrayLike, " B"],
    labels: Int[Array, " B"],
) -> Float[Array, "B ..."]:
    """``grad_x log p_t(labels | x)`` for each row (rows of the batch must be independent)."""
    return jax.grad(lambda z: jnp.sum(classifier_log_prob(classifier_fn, z, t, labels)))(x)


class ClassifierGuided(eqx.Module):
    """``model_fn(x, t)``: the prediction whose score is ``score(x) + scale * grad log p_t(y | x)``.

    Build it with :func:`classifier_guided`. Each call evaluates the model once and the classifier
    once with its gradient (one forward and one backward pass).
    """

    model_fn: Callable[..., Array]
    classifier_fn: ClassifierFn
    labels: Int[Array, " B"]
    scale: Float[Array, ""]
    path: AbstractPath
    prediction: str = eqx.field(static=True)
    num_classes: int | None = eqx.field(static=True, default=None)
    guidance_start: Float[Array, ""] | float = 0.0

    def __call__(
        self, x: Float[Array, "B ..."], t: Float[ArrayLike, " B"]
    ) -> Float[Array, "B ..."]:
        x = v.require_floating(x, "x")
        if self.labels.shape != (x.shape[0],):
            raise ValueError(
                f"labels have shape {self.labels.shape} but the sampler's batch x has shape "
                f"{x.shape}; give one label per sample"
            )
        pred = self.model_fn(x, t)
        grad = classifier_score(self.classifier_fn, x, t, self.labels)
        on = v.batch_time(t, grad) >= jnp.asarray(self.guidance_start, x.dtype)
        term = jnp.where(on, self.scale.astype(x.dtype) * grad, 0.0)
        return add_score_term(pred, term, prediction=self.prediction, path=self.path, t=t)


def classifier_guided(
    model_fn: Callable[..., Array],
    classifier_fn: ClassifierFn,
    labels: Int[ArrayLike, " B"],
    *,
    scale: Float[ArrayLike, ""] = 1.0,
    path: AbstractPath,
    prediction: str = "velocity",
    num_classes: int | None = None,
    guidance_start: float = 0.0,
) -> ClassifierGuided:
    """Wrap an unconditional ``model_fn(x, t)`` into a classifier-guided ``model_fn(x, t)``.

    Args:
      model_fn: the unconditional model, predicting ``prediction`` on ``path`` (``x`` ``[B, ...]``,
        ``t`` ``[B]``).
      classifier_fn: ``classifier_fn(x, t) -> logits [B, K]`` of ``p_t(y | x)``, e.g.
        ``flowjax.models.model_fn(Classifier(K), params)`` trained with
        :func:`flowjax.guidance.make_classifier_loss`, or :func:`flowjax.guidance.oracle_classifier`.
      labels: ``[B]`` the class of each sample, in ``[0, K)``.
      scale: the guidance weight ``w`` (0: unconditional; 1: the class-conditional model when the
        classifier is exact).
      path, prediction: the path and prediction kind of ``model_fn``.
      num_classes: ``K`` (default: read from the classifier when it has ``num_classes``); labels are
        checked against it now.
      guidance_start: the classifier term is applied only for ``t >= guidance_start``. Near the
        noise end the exact ``grad_x log p_t(y | x)`` vanishes (``p_0(y | x) = p(y)``) but a learned
        classifier's does not, and converting it to a velocity multiplies it by ``A(t) ~ 1 / alpha``
        (as in :mod:`flowjax.inverse`'s DPS); a small positive start keeps early steps on the prior.

    Valid ``t``: where ``model_fn`` is; the guidance term is dropped where ``alpha(t) = 0`` for
    velocity, x1 and v models (see :func:`flowjax.guidance.add_score_term`).
    """
    v.choice(prediction, PREDICTIONS, "prediction")
    if not isinstance(path, AbstractPath):
        raise TypeError(f"path must be a flowjax path (AbstractPath); got {type(path).__name__}")
    if not callable(model_fn) or not callable(classifier_fn):
        raise TypeError("model_fn and classifier_fn must be callable")
    k = num_classes if num_classes is not None else _num_classes_of(classifier_fn)
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer) or labels.ndim != 1:
        raise TypeError(
            f"labels must be integers of shape [B]; got {labels.dtype}{list(labels.shape)}"
        )
    if k is not None:
        labels = check_labels(labels, k, name="labels")
    scale = v.as_float_array(scale, "scale")
    if scale.ndim != 0:
        raise ValueError(f"scale (the guidance weight) must be a scalar; got shape {scale.shape}")
    start = v.as_float_array(guidance_start, "guidance_start")
    if start.ndim != 0:
        raise ValueError(f"guidance_start must be a scalar time; got shape {start.shape}")
    return ClassifierGuided(model_fn, classifier_fn, labels, scale, path, prediction, k, start)
