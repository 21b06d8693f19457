"""The Gaussian probability path interface: ``x_t = alpha(t) * x1 + beta(t) * eps``.

Time runs from noise at ``t = 0`` to data at ``t = 1``. Every quantity of a Gaussian path (the
conditional sample, the conditional target of each parameterization, the Proposition 1
coefficients, the forward SDE in diffusion time) follows from ``alpha``, ``beta`` and their time
derivatives, and is written once, here.
"""

from __future__ import annotations

import abc
import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from flowjax import _validation as v

#: The parameterizations a model may predict, named by what they predict.
PREDICTIONS: tuple[str, ...] = ("velocity", "score", "eps", "x1", "v")

Time = Float[ArrayLike, "*T"]


class PathCoefficients(NamedTuple):
    """``alpha, beta`` and their time derivatives, each shaped like ``t``."""

    alpha: Float[Array, "*T"]
    beta: Float[Array, "*T"]
    alpha_dot: Float[Array, "*T"]
    beta_dot: Float[Array, "*T"]


def _time_derivative(fn, t: jax.Array) -> jax.Array:
    """d fn / dt for an elementwise ``fn`` of any-shaped ``t`` (one forward-mode JVP)."""
    return jax.jvp(fn, (t,), (jnp.ones_like(t),))[1]


class AbstractPath(eqx.Module):
    """A Gaussian probability path ``p_t(x | x1) = N(alpha(t) x1, beta(t)^2 I)``.

    Subclasses define :meth:`alpha` and :meth:`beta` (elementwise functions of ``t``); closed-form
    derivatives are optional (forward-mode autodiff is the default). Paths are immutable pytrees:
    pass them through ``jit``, ``vmap`` and ``grad`` like any other argument.

    Valid times are ``[t_min, t_max]``: the closed interval on which all four coefficients are
    finite. Quantities that divide by ``alpha`` (clean data from noise or score) or by ``beta``
    (the score) need more: ``alpha > 0`` or ``beta > 0`` respectively; each function says so.
    """

    @abc.abstractmethod
    def alpha(self, t: Time) -> Float[Array, "*T"]:
        """Signal coefficient; ``alpha(1) = 1`` and ``alpha(0) = 0`` (or nearly, for VP and VE)."""

    @abc.abstractmethod
    def beta(self, t: Time) -> Float[Array, "*T"]:
        """Noise coefficient; ``beta(0) = 1`` and ``beta(1) = 0`` (or nearly, for VE)."""

    def alpha_dot(self, t: Time) -> Float[Array, "*T"]:
        """``d alpha / dt``."""
        return _time_derivative(self.alpha, v.as_float_array(t, "t"))

    def beta_dot(self, t: Time) -> Float[Array, "*T"]:
        """``d beta / dt``."""
        return _time_derivative(self.beta, v.as_float_array(t, "t"))

    @property
    def t_min(self) -> float:
        """Smallest valid time (noise end)."""
        return 0.0

    @property
    def t_max(self) -> float:
        """Largest valid time (data end)."""
        return 1.0

    # ------------------------------------------------------------------ derived quantities
    def coefficients(self, t: Time) -> PathCoefficients:
        """``(alpha, beta, alpha_dot, beta_dot)`` at ``t`` (any shape), range-checked."""
        t = v.as_float_array(t, "t")
        v.check_time_range(t, self.t_min, self.t_max)
        return PathCoefficients(self.alpha(t), self.beta(t), self.alpha_dot(t), self.beta_dot(t))

    def log_snr(self, t: Time) -> Float[Array, "*T"]:
        """``log(alpha^2 / beta^2)``; increases from noise (``-inf`` at ``alpha = 0``) to data."""
        t = v.as_float_array(t, "t")
        return 2.0 * (jnp.log(self.alpha(t)) - jnp.log(self.beta(t)))

    def prior_std(self) -> Float[Array, ""]:
        """Standard deviation of the Gaussian that sampling starts from: ``beta(t_min)``.

        For paths with ``alpha(t_min) = 0`` this is exactly ``p_{t_min}``. VP paths have
        ``alpha(0) = exp(-B(1)/2)`` (6.6e-3 for the default linear VP): the prior ``N(0, beta_0^2 I)``
        ignores that remaining signal, as the score SDE paper does. VE's prior ``N(0, sigma_max^2 I)``
        likewise ignores the data's own spread, which is small against ``sigma_max``.
        """
        return jnp.asarray(self.beta(jnp.asarray(self.t_min)))

    def prior_sample(self, key: PRNGKeyArray, shape: tuple[int, ...], dtype=None) -> Array:
        """A sample of the prior ``N(0, beta(t_min)^2 I)`` of the given shape."""
        dtype = dtype or jnp.result_type(float)
        return self.prior_std().astype(dtype) * jax.random.normal(key, shape, dtype)

    def prior_log_prob(self, x: Float[ArrayLike, "B ..."]) -> Float[Array, " B"]:
        """Log-density of each row of ``x`` under the prior ``N(0, beta(t_min)^2 I)``."""
        x = v.require_floating(x, "x")
        v.require_batched(x, "x")
        std = self.prior_std().astype(x.dtype)
        d = math.prod(x.shape[1:])
        sq = jnp.sum(jnp.reshape(x, (x.shape[0], -1)) ** 2, axis=1)
        return -0.5 * sq / std**2 - d * (jnp.log(std) + 0.5 * math.log(2 * math.pi))

    def interpolate(
        self, x1: Float[ArrayLike, "B ..."], eps: Float[ArrayLike, "B ..."], t: Time
    ) -> Array:
        """``x_t = alpha(t) x1 + beta(t) eps`` for ``t`` scalar or ``[B]``."""
        x1 = v.require_floating(x1, "x1")
        eps = v.require_floating(eps, "eps")
        v.require_same_shape(x1, eps, "x1", "eps")
        tb = v.batch_time(t, x1)
        v.check_time_range(tb, self.t_min, self.t_max)
        tb, x1, eps = v.promote(tb, x1, eps)
        return self.alpha(tb) * x1 + self.beta(tb) * eps

    def sample_conditional(
        self, key: PRNGKeyArray, x1: Float[ArrayLike, "B ..."], t: Time
    ) -> tuple[Float[Array, "B ..."], Float[Array, "B ..."]]:
        """Draw ``x_t ~ p_t(. | x1)``; returns ``(x_t, eps)`` with ``eps ~ N(0, I)``."""
        x1 = v.require_floating(x1, "x1")
        eps = jax.random.normal(key, x1.shape, x1.dtype)
        return self.interpolate(x1, eps, t), eps

    def prediction_coefficients(
        self, prediction: str, t: Time
    ) -> tuple[Float[Array, "*T"], Float[Array, "*T"]]:
        """``(c_x1, c_eps)`` such that ``prediction = c_x1 * x1 + c_eps * eps`` on this path.

        velocity ``(alpha_dot, beta_dot)``; score ``(0, -1/beta)`` (needs ``beta > 0``); eps
        ``(0, 1)``; x1 ``(1, 0)``; v ``(-beta, alpha)`` (Salimans & Ho's ``v = alpha eps - beta x1``,
        which for VP paths is ``d x_t / d phi`` with ``phi = atan(beta / alpha)``).
        """
        v.choice(prediction, PREDICTIONS, "prediction")
        t = v.as_float_array(t, "t")
        zero, one = jnp.zeros_like(t), jnp.ones_like(t)
        if prediction == "velocity":
            return self.alpha_dot(t), self.beta_dot(t)
        if prediction == "score":
            return zero, -1.0 / self.beta(t)
        if prediction == "eps":
            return zero, one
        if prediction == "x1":
            return one, zero
        return -self.beta(t), self.alpha(t)  # "v"

    def conditional_target(
        self,
        prediction: str,
        x1: Float[ArrayLike, "B ..."],
        eps: Float[ArrayLike, "B ..."],
        t: Time,
    ) -> Float[Array, "B ..."]:
        """The regression target of ``prediction`` for the pair ``(x1, eps)`` at ``t``.

        velocity: ``u_t(x | x1) = alpha_dot x1 + beta_dot eps`` (CondOT: ``x1 - eps``); score:
        ``-eps / beta``; eps: ``eps``; x1: ``x1``; v: ``alpha eps - beta x1``.
        """
        x1 = v.require_floating(x1, "x1")
        eps = v.require_floating(eps, "eps")
        v.require_same_shape(x1, eps, "x1", "eps")
        tb = v.batch_time(t, x1)
        v.check_time_range(tb, self.t_min, self.t_max)
        tb, x1, eps = v.promote(tb, x1, eps)
        c1, c2 = self.prediction_coefficients(prediction, tb)
        return c1 * x1 + c2 * eps

    def conditional_score(
        self, xt: Float[ArrayLike, "B ..."], x1: Float[ArrayLike, "B ..."], t: Time
    ) -> Float[Array, "B ..."]:
        """``grad log p_t(xt | x1) = -(xt - alpha x1) / beta^2`` (needs ``beta > 0``)."""
        xt = v.require_floating(xt, "xt")
        x1 = v.require_floating(x1, "x1")
        v.require_same_shape(xt, x1, "xt", "x1")
        tb = v.batch_time(t, xt, x_name="xt")
        v.check_time_range(tb, self.t_min, self.t_max)
        tb, xt, x1 = v.promote(tb, xt, x1)
        alpha, beta = self.alpha(tb), self.beta(tb)
        return -(xt - alpha * x1) / beta**2


def prop1_coefficients(
    path: AbstractPath, t: Time
) -> tuple[Float[Array, "*T"], Float[Array, "*T"]]:
    """Proposition 1's ``(a_t, b_t)``: ``u_t(x) = a_t * score_t(x) + b_t * x``.

    ``a_t = beta^2 alpha_dot / alpha - beta_dot beta`` and ``b_t = alpha_dot / alpha``
    (CondOT: ``a = (1-t)/t``, ``b = 1/t``). Both need ``alpha > 0``. ``a_t >= 0`` for every path
    whose signal-to-noise ratio grows with ``t``; ``sigma_t^2 = 2 a_t`` is the reverse-time SDE of the
    forward noising process. This is the only place these coefficients are written.
    """
    alpha, beta, alpha_dot, beta_dot = path.coefficients(t)
    a = beta * (beta * alpha_dot - beta_dot * alpha) / alpha
    b = alpha_dot / alpha
    return a, b
