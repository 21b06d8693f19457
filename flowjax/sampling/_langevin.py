"""Langevin dynamics at a fixed time: the corrector of predictor-corrector sampling.

At fixed ``t``, ``dX = sigma^2 / 2 * score_t(X) dt + sigma dW`` keeps ``p_t`` stationary. One
unadjusted Langevin step of size ``eps`` (``sigma^2 dt = 2 eps``) is

    x <- x + eps * score_t(x) + sqrt(2 eps) * z,     z ~ N(0, I).

Step size from a target signal-to-noise ratio (score SDE, Song et al. 2021, Algorithm 4):
``eps = 2 * (snr * mean_b |z_b| / mean_b |score_b|)^2``, norms per example over all non-batch axes,
averaged over the batch as in the paper. The score is the same object in flowjax's time
orientation as in the paper's (only ``t`` is mirrored), so the rule carries over unchanged; the
paper's extra factor ``alpha_i = 1 - beta_i`` for discrete VP schedules (``~1``) is left out.
Because of the batch average, a step depends (weakly) on the rest of the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from flowjax import _validation as v
from flowjax.paths import PREDICTIONS, AbstractPath
from flowjax.sampling._model import Field, check_model_output


def _row_norm_mean(a: Array) -> Array:
    return jnp.mean(jnp.sqrt(jnp.sum(a.reshape(a.shape[0], -1) ** 2, axis=1)))


def langevin_step(field: Field, x: Array, t: Array, key: PRNGKeyArray, snr: float) -> Array:
    """One Langevin step at time ``t`` with the SNR step-size rule (one model call)."""
    score = field.to("score", x, t)
    z = jax.random.normal(key, x.shape, x.dtype)
    g = jnp.maximum(_row_norm_mean(score), jnp.finfo(x.dtype).tiny)
    step = 2.0 * (snr * _row_norm_mean(z) / g) ** 2
    return x + step * score + jnp.sqrt(2.0 * step) * z


def corrector(field: Field, x: Array, t: Array, key: PRNGKeyArray, snr: float, steps: int) -> Array:
    """``steps`` Langevin steps at ``t``; step ``j`` draws its noise from ``fold_in(key, j)``."""
    if steps == 1:
        return langevin_step(field, x, t, jax.random.fold_in(key, 0), snr)

    def body(j, x):
        return langevin_step(field, x, t, jax.random.fold_in(key, j), snr)

    return jax.lax.fori_loop(0, steps, body, x)


def langevin_corrector(
    model_fn: Callable[[Array, Array], Array],
    path: AbstractPath,
    key: PRNGKeyArray,
    x: Float[ArrayLike, "B ..."],
    t: Float[ArrayLike, ""],
    *,
    prediction: str = "velocity",
    steps: int = 1,
    snr: float = 0.16,
) -> Float[Array, "B ..."]:
    """Run ``steps`` Langevin steps at the fixed time ``t`` (they keep ``p_t`` stationary).

    Args:
      model_fn: ``model_fn(x, t)`` with ``x`` ``[B, ...]``, ``t`` ``[B]``, returning a prediction of
        kind ``prediction``.
      x: the current samples, ``[B, ...]``.
      t: a scalar time in ``[path.t_min, path.t_max]`` with ``beta(t) > 0`` (the score exists).
      steps: number of steps (``steps`` model calls).
      snr: target signal-to-noise ratio of the step (score SDE uses 0.16 for VE and VP images).
    """
    v.choice(prediction, PREDICTIONS, "prediction")
    x = v.require_floating(x, "x")
    v.require_batched(x, "x")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    if not snr > 0:
        raise ValueError(f"snr must be positive; got {snr!r}")
    t = v.as_float_array(t, "t")
    if t.ndim != 0:
        raise ValueError(f"t must be a scalar time; got shape {t.shape}")
    v.check_time_range(t, path.t_min, path.t_max)
    return _langevin_jit(model_fn, path, key, x, t.astype(x.dtype), prediction, steps, float(snr))


@eqx.filter_jit
def _langevin_jit(model_fn, path, key, x, t, prediction, steps, snr):
    check_model_output(model_fn, x)
    return corrector(Field(model_fn, path, prediction), x, t, key, snr, steps)
