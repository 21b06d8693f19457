"""Exact posterior sampling for a Gaussian-mixture prior under ``y = A x1 + n``, ``n ~ N(0, s^2 I)``.

Seed 001, section 8: the posterior score is the prior score plus the measurement score,
``score_t(x | y) = score_t(x) + grad_x log p_t(y | x)``. For a mixture prior the posterior
``p(x1 | y)`` is again a Gaussian mixture (:meth:`flowjax.oracle.GaussianMixture.posterior`), so
its exact prediction of any kind at any ``(x, t)`` is that mixture's oracle: sampling it with any
sampler draws exact posterior samples (up to the solver's error), the yardstick for the
approximate methods of :mod:`flowjax.inverse` (DPS, PiGDM).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from flowjax import _validation as v
from flowjax.inverse._operators import LinearOperator
from flowjax.oracle import GaussianMixture
from flowjax.paths import PREDICTIONS, AbstractPath

__all__ = ["PosteriorOracle", "exact_posterior", "posterior_model_fn"]


def _check(mixture: GaussianMixture, operator: LinearOperator, noise_std: Any) -> float:
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture must be a GaussianMixture; got {type(mixture).__name__}")
    if not isinstance(operator, LinearOperator):
        raise TypeError(f"operator must be a flowjax.inverse LinearOperator; got {type(operator)}")
    if operator.in_shape != (mixture.dim,):
        raise ValueError(
            f"the operator A acts on events of shape {operator.in_shape} but the prior's samples "
            f"have shape ({mixture.dim},)"
        )
    noise_std = float(noise_std)
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0; got {noise_std}")
    return noise_std


def exact_posterior(
    mixture: GaussianMixture,
    operator: LinearOperator,
    y: Float[ArrayLike, " m"],
    noise_std: float,
) -> GaussianMixture:
    """The posterior ``p(x1 | y)`` of a mixture prior: a mixture (one measurement ``y`` ``[m]``)."""
    noise_std = _check(mixture, operator, noise_std)
    y = operator.check_y(y)
    if y.ndim != 1:
        raise ValueError(f"exact_posterior takes one measurement y of shape [m]; got {y.shape}")
    return mixture.posterior(operator.matrix().astype(y.dtype), y, noise_std)


class PosteriorOracle(eqx.Module):
    """``model_fn(x, t)``: the exact posterior prediction; per-row posteriors when ``batched``.

    ``posterior`` is one :class:`GaussianMixture` (every sample shares one ``y``) or, when
    ``batched``, a mixture whose arrays carry a leading axis ``B`` (row ``i`` is the posterior given
    ``y[i]``).
    """

    posterior: GaussianMixture
    path: AbstractPath
    prediction: str = eqx.field(static=True)
    batched: bool = eqx.field(static=True)

    def __call__(self, x: Float[Array, "B d"], t: Float[ArrayLike, " B"]) -> Float[Array, "B d"]:
        if not self.batched:
            return self.posterior.predict(self.prediction, self.path, x, t)
        n = self.posterior.weights.shape[0]
        if x.shape[0] != n:
            raise ValueError(
                f"the posterior was built for B = {n} measurements; got x of shape {x.shape}"
            )
        tb = jnp.broadcast_to(v.as_float_array(t, "t").astype(x.dtype), (n,))

        def one(mix: GaussianMixture, xi: Array, ti: Array) -> Array:
            return mix.predict(self.prediction, self.path, xi[None], ti)[0]

        return jax.vmap(one)(self.posterior, x, tb)

    def sample(self, key: PRNGKeyArray, n: int | None = None) -> Float[Array, "n d"]:
        """Exact posterior draws: ``n`` of them (shared ``y``), or one per row (``batched``)."""
        if not self.batched:
            if n is None:
                raise ValueError("n is required for a posterior given one measurement")
            return self.posterior.sample(key, n)
        keys = jax.random.split(key, self.posterior.weights.shape[0])
        return jax.vmap(lambda mix, k: mix.sample(k, 1)[0])(self.posterior, keys)


def posterior_model_fn(
    mixture: GaussianMixture,
    operator: LinearOperator,
    y: Float[ArrayLike, "*B m"],
    noise_std: float,
    *,
    path: AbstractPath,
    prediction: str = "velocity",
) -> PosteriorOracle:
    """The exact posterior ``model_fn(x, t)`` of a mixture prior, for any sampler.

    Args:
      mixture: the prior of ``x1`` (``[B, d]`` samples).
      operator: ``A`` with ``in_shape == (d,)``.
      y: ``[m]`` (one measurement shared by the batch) or ``[B, m]`` (one per sample); NaN is
        rejected, naming ``y``.
      noise_std: the measurement noise ``s >= 0``.
      path, prediction: the path and the prediction kind returned.
    """
    v.choice(prediction, PREDICTIONS, "prediction")
    noise_std = _check(mixture, operator, noise_std)
    y = operator.check_y(y)
    A = operator.matrix().astype(y.dtype)
    if y.ndim == 1:
        return PosteriorOracle(mixture.posterior(A, y, noise_std), path, prediction, False)
    post = jax.vmap(lambda yy: mixture.posterior(A, yy, noise_std))(y)
    return PosteriorOracle(post, path, prediction, True)
