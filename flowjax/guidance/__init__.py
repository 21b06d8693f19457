"""Guidance: steering a diffusion / flow model towards a class.

* Classifier-free guidance is a model wrapper (``flowjax.sampling.guided_model(model_fn, labels,
  K, w)``, one batched model call); :func:`classifier_free` is its class-label front end (labels checked against ``K`` eagerly, a ``model_fn(x, t)`` for any
  sampler). Train for it with ``flowjax.losses.make_loss(..., num_classes=K, label_dropout=p)``.
  :func:`conditional_oracle` is its exact counterpart on a Gaussian mixture (components as
  classes, null label ``K``).
* Classifier guidance, ``score(x | y) = score(x) + w grad_x log p_t(y | x)``:
  :func:`classifier_guided` wraps any unconditional ``model_fn`` (any prediction kind, any sampler)
  with a time-dependent classifier: :class:`flowjax.models.Classifier` trained by
  :func:`make_classifier_loss`, or the exact :func:`oracle_classifier`.
* :func:`add_score_term`: adding a score-space term to a prediction of any kind (also used by
  :mod:`flowjax.inverse`).
"""

from flowjax.guidance._classifier import (
    ClassifierGuided,
    classifier_guided,
    classifier_log_prob,
    classifier_score,
)
from flowjax.guidance._free import classifier_free
from flowjax.guidance._loss import make_classifier_loss
from flowjax.guidance._oracle import (
    ConditionalOracle,
    OracleClassifier,
    conditional_oracle,
    oracle_classifier,
)
from flowjax.guidance._score import add_score_term

__all__ = [
    "ClassifierGuided",
    "ConditionalOracle",
    "OracleClassifier",
    "add_score_term",
    "classifier_free",
    "classifier_guided",
    "classifier_log_prob",
    "classifier_score",
    "conditional_oracle",
    "make_classifier_loss",
    "oracle_classifier",
]
