"""Pure conversions between what a model predicts: velocity, score, eps, x1 and v.

On a Gaussian path every prediction is a linear combination ``c_x1 * x1_hat + c_eps * eps_hat``
of the clean-data and noise estimates (see ``AbstractPath.prediction_coefficients``), and
``x = alpha x1_hat + beta eps_hat`` ties the two together. Any prediction therefore determines every
other at fixed ``(x, t)`` through an affine map ``target = A * value + B * x``:
:func:`conversion_coefficients` computes ``(A, B)`` by solving that 2x2 system, and everything else
(the named conversions, :func:`convert`, :func:`sde_drift`, the samplers, the likelihood) goes
through it. Writing it this way avoids dividing by ``alpha`` or ``beta`` where the answer does not
need it: velocity to score on CondOT at ``t = 0`` is ``-x``, not ``0/0``.

Validity: a source of ``eps`` or ``score`` with a target other than those two needs ``alpha > 0``
(noise alone says nothing about the data at ``t = 0``); ``score`` as source or target needs
``beta > 0``; ``x1`` as source needs ``beta > 0``; ``velocity`` and ``v`` are valid on the whole range.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from flowjax import _validation as v
from flowjax.paths import PREDICTIONS, AbstractPath, prop1_coefficients

__all__ = [
    "PREDICTIONS",
    "conversion_coefficients",
    "convert",
    "prop1_coefficients",
    "sde_drift",
    "to_x1_eps",
]

Time = Float[ArrayLike, "*T"]
_EPS_LIKE = ("eps", "score")
_VALIDITY = (
    "eps/score as the source and a target other than those two need alpha > 0; score as source "
    "or target, and x1 as the source, need beta > 0."
)


def conversion_coefficients(
    source: str, target: str, path: AbstractPath, t: Time
) -> tuple[Float[Array, "*T"], Float[Array, "*T"]]:
    """``(A, B)`` such that ``target = A * source_value + B * x`` at time ``t`` (any shape).

    Derivation: with ``value = c1 x1 + c2 eps`` and ``x = alpha x1 + beta eps``,
    ``x1 = (c2 x - beta value) / det`` and ``eps = (alpha value - c1 x) / det`` where
    ``det = alpha c2 - beta c1``; substituting into ``target = c1' x1 + c2' eps`` gives
    ``A = (alpha c2' - beta c1') / det`` and ``B = (c1' c2 - c2' c1) / det``.
    """
    v.choice(source, PREDICTIONS, "source prediction")
    v.choice(target, PREDICTIONS, "target prediction")
    t = v.as_float_array(t, "t")
    if source == target:
        return jnp.ones_like(t), jnp.zeros_like(t)
    c1, c2 = path.prediction_coefficients(source, t)
    d1, d2 = path.prediction_coefficients(target, t)
    if source in _EPS_LIKE and target in _EPS_LIKE:  # pure rescaling of the noise: no alpha needed
        return d2 / c2, jnp.zeros_like(t)
    alpha, beta = path.alpha(t), path.beta(t)
    det = alpha * c2 - beta * c1
    return (alpha * d2 - beta * d1) / det, (d1 * c2 - d2 * c1) / det


def _checked_inputs(value: Any, x: Any, t: Any, path: AbstractPath) -> tuple[Array, Array, Array]:
    value = v.require_floating(value, "value")
    x = v.require_floating(x, "x")
    v.require_same_shape(value, x, "value", "x")
    tb = v.batch_time(t, x)
    v.check_time_range(tb, path.t_min, path.t_max)
    v.check_value(jnp.all(jnp.isfinite(value)), "value (the model prediction) is not finite")
    return v.promote(value, x, tb)


def convert(
    value: Float[ArrayLike, "B ..."],
    *,
    source: str,
    target: str,
    path: AbstractPath,
    x: Float[ArrayLike, "B ..."],
    t: Time,
) -> Float[Array, "B ..."]:
    """Convert a prediction ``value`` of kind ``source`` at ``(x, t)`` into kind ``target``.

    Args:
      value: the prediction, shape ``[B, ...]``.
      source, target: one of ``velocity``, ``score``, ``eps``, ``x1``, ``v``.
      path: the Gaussian path the prediction refers to.
      x: the noisy point ``x_t``, same shape as ``value``.
      t: scalar or ``[B]``, inside ``[path.t_min, path.t_max]``.
    """
    value, x, tb = _checked_inputs(value, x, t, path)
    if source == target:
        return value
    A, B = conversion_coefficients(source, target, path, tb)
    _check_coefficients(A, B, source, target, path, tb)
    return A * value + B * x


def _check_coefficients(
    A: Array, B: Array, source: str, target: str, path: AbstractPath, t: Array
) -> None:
    """Raise where the conversion is undefined (``alpha = 0`` or ``beta = 0``) at a concrete ``t``.

    Inside ``jit`` the times are traced and the check is the checked-mode one (see
    :func:`flowjax.checking`); samplers and likelihoods keep a margin from those ends.
    """
    ok = jnp.isfinite(A) & jnp.isfinite(B)
    if v.is_concrete(ok):
        bad = ~np.asarray(ok)
        if bad.any():
            t_bad = float(np.asarray(jnp.broadcast_to(t, bad.shape))[bad].flat[0])
            alpha = float(path.alpha(jnp.asarray(t_bad)))
            beta = float(path.beta(jnp.asarray(t_bad)))
            raise ValueError(
                f"convert {source!r} -> {target!r} is undefined at t = {t_bad} on "
                f"{type(path).__name__} (alpha = {alpha:.3g}, beta = {beta:.3g}): {_VALIDITY} "
                "Move t away from that end (samplers and likelihoods default to a margin)."
            )
    else:
        v.check_value(
            jnp.all(ok), f"convert {source!r} -> {target!r} is undefined at this t: {_VALIDITY}"
        )


def to_x1_eps(
    value: Float[ArrayLike, "B ..."],
    *,
    source: str,
    path: AbstractPath,
    x: Float[ArrayLike, "B ..."],
    t: Time,
) -> tuple[Float[Array, "B ..."], Float[Array, "B ..."]]:
    """The clean-data and noise estimates ``(x1_hat, eps_hat)`` implied by a prediction."""
    return (
        convert(value, source=source, target="x1", path=path, x=x, t=t),
        convert(value, source=source, target="eps", path=path, x=x, t=t),
    )


def sde_drift(
    value: Float[ArrayLike, "B ..."],
    *,
    prediction: str,
    path: AbstractPath,
    x: Float[ArrayLike, "B ..."],
    t: Time,
    sigma: Float[ArrayLike, "*S"],
) -> Float[Array, "B ..."]:
    """Drift of the SDE extension ``dX = [u_t(X) + sigma_t^2 / 2 * score_t(X)] dt + sigma_t dW``.

    Any ``sigma_t >= 0`` keeps the marginals ``p_t`` (Holderrieth & Erives, Theorem 17):
    ``sigma = 0`` is the flow / probability-flow ODE, ``sigma^2 = 2 a_t`` the reverse-time SDE.

    Args:
      value: the model's prediction of kind ``prediction`` at ``(x, t)``.
      sigma: scalar, ``[B]``, or broadcastable to ``x``.
    """
    value, x, tb = _checked_inputs(value, x, t, path)
    sigma = v.as_float_array(sigma, "sigma")
    if sigma.ndim == 1 and x.ndim > 1:
        sigma = v.batch_time(sigma, x, t_name="sigma")
    Au, Bu = conversion_coefficients(prediction, "velocity", path, tb)
    As, Bs = conversion_coefficients(prediction, "score", path, tb)
    half_s2 = 0.5 * sigma**2
    # Where sigma = 0 the score term is absent, even where the score itself is undefined (beta = 0).
    score_term = jnp.where(half_s2 > 0, half_s2 * (As * value + Bs * x), 0.0)
    return Au * value + Bu * x + score_term


def _named(source: str, target: str):
    def fn(
        value: Float[ArrayLike, "B ..."],
        *,
        path: AbstractPath,
        x: Float[ArrayLike, "B ..."],
        t: Time,
    ) -> Float[Array, "B ..."]:
        return convert(value, source=source, target=target, path=path, x=x, t=t)

    fn.__name__ = fn.__qualname__ = f"{source}_to_{target}"
    fn.__doc__ = (
        f"Convert a {source!r} prediction at ``(x, t)`` into a {target!r} prediction.\n\n"
        f"Same as ``convert(value, source={source!r}, target={target!r}, path=path, x=x, t=t)``."
    )
    fn.__module__ = __name__
    return fn


velocity_to_score = _named("velocity", "score")
velocity_to_eps = _named("velocity", "eps")
velocity_to_x1 = _named("velocity", "x1")
velocity_to_v = _named("velocity", "v")
score_to_velocity = _named("score", "velocity")
score_to_eps = _named("score", "eps")
score_to_x1 = _named("score", "x1")
score_to_v = _named("score", "v")
eps_to_velocity = _named("eps", "velocity")
eps_to_score = _named("eps", "score")
eps_to_x1 = _named("eps", "x1")
eps_to_v = _named("eps", "v")
x1_to_velocity = _named("x1", "velocity")
x1_to_score = _named("x1", "score")
x1_to_eps = _named("x1", "eps")
x1_to_v = _named("x1", "v")
v_to_velocity = _named("v", "velocity")
v_to_score = _named("v", "score")
v_to_eps = _named("v", "eps")
v_to_x1 = _named("v", "x1")

NAMED_CONVERSIONS = {
    (s, t): globals()[f"{s}_to_{t}"] for s in PREDICTIONS for t in PREDICTIONS if s != t
}
__all__ += [f.__name__ for f in NAMED_CONVERSIONS.values()] + ["NAMED_CONVERSIONS"]
