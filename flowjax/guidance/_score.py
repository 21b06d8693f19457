"""Adding a term in score space to a prediction of any kind (the one rule guidance needs).

At fixed ``(x, t)`` every prediction is an affine function of the score,
``prediction = A(t) * score + B(t) * x`` (:func:`flowjax.parameterization.conversion_coefficients`),
so adding ``delta`` to the score adds ``A(t) * delta`` to the prediction: the ``B(t) x`` part is the
same on both sides. Classifier guidance (``delta = w grad_x log p_t(y | x)``) and posterior sampling
(``delta = grad_x log p(y | x_t)``, exact or approximated by DPS / PiGDM) both go through here.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, Float

from flowjax import _validation as v
from flowjax.parameterization import conversion_coefficients
from flowjax.paths import PREDICTIONS, AbstractPath

__all__ = ["add_score_term"]


def add_score_term(
    value: Float[Array, "B ..."],
    score_term: Float[Array, "B ..."],
    *,
    prediction: str,
    path: AbstractPath,
    t: Any,
) -> Float[Array, "B ..."]:
    """The prediction of kind ``prediction`` whose score is ``score(value) + score_term``.

    Args:
      value: a prediction of kind ``prediction`` at ``(x, t)``, shape ``[B, ...]``.
      score_term: the term added to the score, shape ``[B, ...]``.
      prediction: ``velocity``, ``score``, ``eps``, ``x1`` or ``v``.
      path: the Gaussian path.
      t: scalar or ``[B]``.

    Where the coefficient ``A(t)`` is not finite (``velocity``, ``x1`` or ``v`` at ``alpha = 0``,
    e.g. CondOT at ``t = 0``, where ``p_0`` is pure noise and carries no information about the data)
    the term is dropped: samplers that start exactly at ``alpha = 0`` see no guidance on their
    first step only. Where ``A(t) = 0`` (velocity at CondOT's ``t = 1``) the term is zero even if
    ``score_term`` is not finite there (a measurement score with ``beta = 0``).
    """
    v.choice(prediction, PREDICTIONS, "prediction")
    value = v.require_floating(value, "value")
    score_term = v.require_floating(score_term, "score_term")
    v.require_same_shape(value, score_term, "value", "score_term")
    tb = v.batch_time(t, value)
    A, _ = conversion_coefficients("score", prediction, path, tb)
    A = A.astype(value.dtype)
    keep = jnp.isfinite(A) & (A != 0)
    term = jnp.where(keep, A * score_term.astype(value.dtype), 0.0)
    return value + term
