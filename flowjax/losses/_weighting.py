"""Loss weightings: how much each time ``t`` counts, in any parameterization.

At fixed ``(x, t)`` every prediction is an affine function of every other,
``target = A * source + B * x`` (:func:`flowjax.parameterization.conversion_coefficients`), and
so is every conditional regression target. The error of a model output therefore converts with
the same ``A``, and the squared error in parameterization ``target`` is ``A(t)^2`` times the
squared error in ``source``. A weighting is thus one function of ``t`` up to the factor
``A(t)^2`` of the parameterization it is applied to; this module states each weighting once, in
the parameterization its paper uses, and converts.

Weightings (``w`` multiplies the per-example squared error of the trained prediction):

* ``"uniform"``: ``w = 1`` on the trained prediction's own loss.
* ``"velocity"``, ``"score"``, ``"eps"``, ``"x1"``, ``"v"``: the weight that makes this loss
  equal, example by example, to the uniform loss of the named parameterization:
  ``w = A(prediction -> name)^2``. E.g. an eps model trained with ``weighting="velocity"`` is
  trained with the conditional flow-matching loss.
* ``"snr"``: the x1 (clean data) loss weighted by ``SNR = alpha^2 / beta^2``, which is exactly the
  uniform eps loss (DDPM's ``L_simple``).
* ``"truncated_snr"``: x1 loss weighted by ``max(SNR, 1)`` (Salimans & Ho).
* ``"min_snr"``: x1 loss weighted by ``min(SNR, gamma)`` (Hang et al., Min-SNR-gamma; ``gamma = 5``).
* ``"likelihood"``: the score loss weighted by ``g(t)^2 / 2 = a_t`` (Song et al. 2021, Kingma et al.
  2021), ``a_t`` from :func:`flowjax.paths.prop1_coefficients`. With the squared error *summed* over
  the data dimensions and ``t ~ U[t0, t1]``, ``(t1 - t0)`` times this loss is the diffusion term of
  a bound on ``-log p(x)`` in nats (in eps terms the weight is ``(1/2) d log SNR / dt``).

Valid times: conversions into or out of ``score`` need ``beta > 0``; ``x1`` as source and
``eps``/``score`` into ``x1``/``velocity``/``v`` need ``alpha > 0`` (see
:mod:`flowjax.parameterization`). The SNR weightings are written so that the active branch is
finite at ``alpha = 0``; ``"likelihood"`` needs ``0 < alpha`` and ``0 < beta``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from flowjax import _validation as v
from flowjax.parameterization import conversion_coefficients
from flowjax.paths import PREDICTIONS, AbstractPath, prop1_coefficients

__all__ = [
    "WEIGHTINGS",
    "conversion_weight",
    "loss_weight",
    "snr",
]

#: Names accepted by :func:`loss_weight` and ``make_loss(weighting=...)``.
WEIGHTINGS: tuple[str, ...] = (
    "uniform",
    *PREDICTIONS,
    "snr",
    "truncated_snr",
    "min_snr",
    "likelihood",
)

Time = Float[ArrayLike, "*T"]
#: A user weighting: ``fn(prediction, path, t) -> weights shaped like t``.
WeightFn = Callable[[str, AbstractPath, Array], Array]


def conversion_weight(source: str, target: str, path: AbstractPath, t: Time) -> Float[Array, "*T"]:
    """``A(t)^2``: the squared error of a ``source`` prediction times this is the ``target`` one.

    ``A`` is the linear coefficient of ``target = A * source + B * x``
    (:func:`flowjax.parameterization.conversion_coefficients`); the conditional targets convert
    with the same ``A`` and ``B``, so ``target_out - target_target = A (source_out - source_target)``.
    """
    A, _ = conversion_coefficients(source, target, path, t)
    return A**2


def snr(path: AbstractPath, t: Time) -> Float[Array, "*T"]:
    """Signal-to-noise ratio ``alpha^2 / beta^2`` (``inf`` where ``beta = 0``)."""
    t = v.as_float_array(t, "t")
    return (path.alpha(t) / path.beta(t)) ** 2


def loss_weight(
    weighting: str | WeightFn,
    prediction: str,
    path: AbstractPath,
    t: Time,
    *,
    gamma: float = 5.0,
) -> Float[Array, "*T"]:
    """Per-example weight of the squared error of ``prediction`` at times ``t`` (any shape).

    Args:
      weighting: one of :data:`WEIGHTINGS` (see the module docstring), or a callable
        ``fn(prediction, path, t)`` returning weights shaped like ``t``.
      prediction: what the model predicts (``velocity``, ``score``, ``eps``, ``x1``, ``v``).
      path: the Gaussian path.
      t: times in the path's range (see the module docstring for the ends).
      gamma: the cap of ``"min_snr"``.
    """
    v.choice(prediction, PREDICTIONS, "prediction")
    t = v.as_float_array(t, "t")
    if callable(weighting):
        w = jnp.asarray(weighting(prediction, path, t))
        if w.shape != t.shape:
            raise ValueError(
                f"a weighting function must return weights shaped like t {t.shape}; got {w.shape}"
            )
        return w
    v.choice(weighting, WEIGHTINGS, "weighting")
    if weighting == "uniform":
        return jnp.ones_like(t)
    if weighting in PREDICTIONS:
        return conversion_weight(prediction, weighting, path, t)
    if weighting == "snr":  # SNR * A(p -> x1)^2 == A(p -> eps)^2, finite at alpha = 0
        return conversion_weight(prediction, "eps", path, t)
    if weighting in ("truncated_snr", "min_snr"):
        ratio = snr(path, t)
        # min(SNR, c) * A_x1^2 is A_eps^2 where SNR < c and c * A_x1^2 elsewhere; each branch is
        # finite where it is selected (A_eps at beta = 0 and A_x1 at alpha = 0 may not be).
        cap = gamma if weighting == "min_snr" else 1.0
        if weighting == "min_snr" and not gamma > 0:
            raise ValueError(f"min_snr gamma must be positive; got {gamma}")
        w_eps = conversion_weight(prediction, "eps", path, t)
        w_x1 = cap * conversion_weight(prediction, "x1", path, t)
        if weighting == "min_snr":
            return jnp.where(ratio < cap, w_eps, w_x1)
        return jnp.where(ratio > cap, w_eps, w_x1)
    # "likelihood": score loss weighted by g^2 / 2 = a_t.
    a, _ = prop1_coefficients(path, t)
    return a * conversion_weight(prediction, "score", path, t)
