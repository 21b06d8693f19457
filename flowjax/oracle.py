"""Exact ground truth for Gaussian-mixture data on any Gaussian path.

If the data are ``sum_k w_k N(mu_k, S_k)``, then along a path ``x_t = alpha x1 + beta eps``

    p_t = sum_k w_k N(alpha mu_k, Sigma_k),   Sigma_k = alpha^2 S_k + beta^2 I,

and every quantity a model could learn is a responsibility-weighted average of per-component
Gaussian conditionals (``r_k`` is the posterior probability of component ``k`` given ``x``):

    score   = -sum_k r_k Sigma_k^{-1} (x - alpha mu_k)
    E[x1|x] =  sum_k r_k (mu_k + alpha S_k Sigma_k^{-1} (x - alpha mu_k))
    E[eps|x] = beta sum_k r_k Sigma_k^{-1} (x - alpha mu_k)      (= -beta * score)

The other predictions (velocity, v) are ``c_x1 E[x1|x] + c_eps E[eps|x]`` with the path's
``prediction_coefficients``. Both estimates stay finite at ``alpha = 0`` and at ``beta = 0`` (for
non-singular ``S_k``), so the oracle is exact on the whole time range. This module is the test
bench of every sampler, likelihood, guidance and posterior method in flowjax.
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from flowjax import _validation as v
from flowjax.paths import PREDICTIONS, AbstractPath, CondOT

__all__ = [
    "GaussianMixture",
    "OracleModel",
    "eight_gaussians",
    "two_modes_1d",
    "two_modes_2d",
]

_DATA_PATH = CondOT()  # at t = 1 every path's marginal is the data; CondOT gets there exactly


class _Stats(eqx.Module):
    log_prob: Array  # []
    resp: Array  # [K]
    score: Array  # [d]
    x1: Array  # [d]
    eps: Array  # [d]


class GaussianMixture(eqx.Module):
    """``sum_k w_k N(mu_k, S_k)`` in ``d`` dimensions, with diagonal or full covariances.

    Args:
      weights: ``[K]`` non-negative mixture weights (normalised here).
      means: ``[K, d]``.
      covs: ``[K, d]`` diagonal variances or ``[K, d, d]`` full covariance matrices.

    All methods take a batch ``x`` of shape ``[B, d]`` and ``t`` scalar or ``[B]``, are pure and
    jit-able, and accept optional ``labels`` (``[B]`` ints) to use only that component: the
    class-conditional distribution when components are classes.
    """

    weights: Float[Array, " K"]
    means: Float[Array, "K d"]
    covs: Float[Array, "K d"] | Float[Array, "K d d"]

    def __init__(self, weights: ArrayLike, means: ArrayLike, covs: ArrayLike):
        weights = v.as_float_array(weights, "weights")
        means = v.as_float_array(means, "means")
        covs = v.as_float_array(covs, "covs")
        if means.ndim != 2:
            raise ValueError(f"means must have shape [K, d]; got {means.shape}")
        K, d = means.shape
        if weights.shape != (K,):
            raise ValueError(
                f"weights must have shape [K] = ({K},) to match means {means.shape}; got {weights.shape}"
            )
        if covs.shape not in ((K, d), (K, d, d)):
            raise ValueError(
                f"covs must have shape [K, d] = {(K, d)} (diagonal variances) or [K, d, d] = {(K, d, d)} "
                f"(full covariances) to match means {means.shape}; got {covs.shape}"
            )
        if v.is_concrete(weights) and np.any(np.asarray(weights) < 0):
            raise ValueError(f"weights must be non-negative; got {np.asarray(weights)}")
        self.weights = weights / jnp.sum(weights)
        self.means = means
        self.covs = covs

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def diagonal(self) -> bool:
        return self.covs.ndim == 2

    def full_covs(self) -> Float[Array, "K d d"]:
        """Covariances as ``[K, d, d]`` matrices."""
        if self.diagonal:
            return jax.vmap(jnp.diag)(self.covs)
        return self.covs

    # ------------------------------------------------------------------ sampling
    def sample_with_labels(
        self, key: PRNGKeyArray, n: int
    ) -> tuple[Float[Array, "n d"], Int[Array, " n"]]:
        """``n`` samples and the component each came from."""
        k_lab, k_eps = jax.random.split(key)
        labels = jax.random.categorical(k_lab, jnp.log(self.weights), shape=(n,))
        eps = jax.random.normal(k_eps, (n, self.dim), self.means.dtype)
        if self.diagonal:
            noise = jnp.sqrt(self.covs[labels]) * eps
        else:
            chol = jnp.linalg.cholesky(self.covs)
            noise = jnp.einsum("nij,nj->ni", chol[labels], eps)
        return self.means[labels] + noise, labels

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n d"]:
        """``n`` samples of the data distribution."""
        return self.sample_with_labels(key, n)[0]

    # ------------------------------------------------------------------ exact marginals
    def _stats_one(self, x: Array, alpha: Array, beta: Array, log_w: Array) -> _Stats:
        resid = x[None, :] - alpha * self.means  # [K, d]
        d = self.dim
        if self.diagonal:
            var = alpha**2 * self.covs + beta**2  # [K, d]
            sinv_r = resid / var
            log_n = -0.5 * (
                jnp.sum(resid * sinv_r + jnp.log(var), axis=1) + d * math.log(2 * math.pi)
            )
            x1_k = self.means + alpha * self.covs * sinv_r
        else:
            cov = alpha**2 * self.covs + beta**2 * jnp.eye(d, dtype=self.covs.dtype)[None]
            chol = jnp.linalg.cholesky(cov)  # [K, d, d]
            z = jax.vmap(lambda L, r: jsl.solve_triangular(L, r, lower=True))(chol, resid)
            sinv_r = jax.vmap(lambda L, r: jsl.cho_solve((L, True), r))(chol, resid)
            logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)
            log_n = -0.5 * (jnp.sum(z**2, axis=1) + logdet + d * math.log(2 * math.pi))
            x1_k = self.means + alpha * jnp.einsum("kij,kj->ki", self.covs, sinv_r)
        joint = log_w + log_n
        log_p = jax.nn.logsumexp(joint)
        resp = jnp.exp(joint - log_p)
        mean_sinv_r = resp @ sinv_r
        return _Stats(log_p, resp, -mean_sinv_r, resp @ x1_k, beta * mean_sinv_r)

    def _stats(
        self,
        path: AbstractPath,
        x: Any,
        t: Any,
        labels: Any = None,
    ) -> _Stats:
        x = v.require_floating(x, "x")
        v.require_batched(x, "x", 2)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape [B, d] with d = {self.dim}; got {x.shape}")
        t = v.as_float_array(t, "t")
        v.batch_time(t, x)
        v.check_time_range(t, path.t_min, path.t_max)
        alpha, beta = path.alpha(t), path.beta(t)
        log_w = jnp.log(self.weights)
        if labels is None:
            in_axes = (0, 0 if t.ndim else None, 0 if t.ndim else None, None)
            return jax.vmap(self._stats_one, in_axes=in_axes)(x, alpha, beta, log_w)
        labels = jnp.asarray(labels)
        if labels.shape != (x.shape[0],) or not jnp.issubdtype(labels.dtype, jnp.integer):
            raise ValueError(
                f"labels must be integers of shape [B] = ({x.shape[0]},); got {labels.dtype}{labels.shape}"
            )
        check_labels(labels, self.num_components)
        masked = jnp.where(
            jnp.arange(self.num_components, dtype=labels.dtype)[None, :] == labels[:, None],
            0.0,
            -jnp.inf,
        )
        in_axes: tuple[int | None, ...] = (0, 0 if t.ndim else None, 0 if t.ndim else None, 0)
        return jax.vmap(self._stats_one, in_axes=in_axes)(x, alpha, beta, masked)

    def log_prob(
        self, path: AbstractPath, x: Float[ArrayLike, "B d"], t: Any = 1.0, labels: Any = None
    ) -> Float[Array, " B"]:
        """``log p_t(x)`` (with ``labels``: ``log p_t(x | label)``). ``t = 1`` is the data density."""
        return self._stats(path, x, t, labels).log_prob

    def data_log_prob(self, x: Float[ArrayLike, "B d"], labels: Any = None) -> Float[Array, " B"]:
        """Log-density of the data distribution itself."""
        return self.log_prob(_DATA_PATH, x, 1.0, labels)

    def responsibilities(
        self, path: AbstractPath, x: Float[ArrayLike, "B d"], t: Any
    ) -> Float[Array, "B K"]:
        """Posterior probability ``p_t(k | x)`` of each component (the Bayes-optimal classifier)."""
        return self._stats(path, x, t).resp

    def predict(
        self,
        prediction: str,
        path: AbstractPath,
        x: Float[ArrayLike, "B d"],
        t: Any,
        labels: Any = None,
    ) -> Float[Array, "B d"]:
        """The exact (marginal, or class-conditional with ``labels``) prediction of any kind."""
        v.choice(prediction, PREDICTIONS, "prediction")
        st = self._stats(path, x, t, labels)
        if prediction == "score":
            return st.score
        c1, c2 = path.prediction_coefficients(prediction, v.batch_time(t, st.x1))
        return c1 * st.x1 + c2 * st.eps

    def score(self, path: AbstractPath, x: Any, t: Any, labels: Any = None) -> Float[Array, "B d"]:
        """``grad_x log p_t(x)``."""
        return self.predict("score", path, x, t, labels)

    def velocity(
        self, path: AbstractPath, x: Any, t: Any, labels: Any = None
    ) -> Float[Array, "B d"]:
        """The marginal velocity ``u_t(x) = E[alpha_dot x1 + beta_dot eps | x_t = x]``."""
        return self.predict("velocity", path, x, t, labels)

    def eps(self, path: AbstractPath, x: Any, t: Any, labels: Any = None) -> Float[Array, "B d"]:
        """``E[eps | x_t = x]``."""
        return self.predict("eps", path, x, t, labels)

    def x1(self, path: AbstractPath, x: Any, t: Any, labels: Any = None) -> Float[Array, "B d"]:
        """The denoiser ``E[x1 | x_t = x]``."""
        return self.predict("x1", path, x, t, labels)

    def model_fn(self, path: AbstractPath, prediction: str = "velocity") -> OracleModel:
        """A ``model_fn(x, t[, labels])`` returning this mixture's exact prediction: a perfect model.

        The result is a pytree (the mixture's arrays and the path are its leaves), so jit-compiled
        samplers and likelihoods reuse their compilation across calls and mixtures.
        """
        v.choice(prediction, PREDICTIONS, "prediction")
        return OracleModel(self, path, prediction)

    # ------------------------------------------------------------------ conditioning
    def component(self, k: int) -> GaussianMixture:
        """The single component ``k`` as a one-component mixture."""
        return GaussianMixture(
            jnp.ones((1,), self.weights.dtype), self.means[k : k + 1], self.covs[k : k + 1]
        )

    def posterior(
        self, A: Float[ArrayLike, "m d"], y: Float[ArrayLike, " m"], noise_std: Any
    ) -> GaussianMixture:
        """The exact posterior of ``x1`` given ``y = A x1 + n``, ``n ~ N(0, noise_std^2 I)``: a mixture.

        Component ``k`` has weight ``∝ w_k N(y; A mu_k, A S_k A^T + s^2 I)``, mean
        ``mu_k + K_k (y - A mu_k)`` and covariance ``S_k - K_k A S_k`` with gain
        ``K_k = S_k A^T (A S_k A^T + s^2 I)^{-1}``.
        """
        A = v.require_floating(A, "A")
        y = v.require_floating(y, "y")
        if A.ndim != 2 or A.shape[1] != self.dim:
            raise ValueError(f"A must have shape [m, d] with d = {self.dim}; got {A.shape}")
        if y.shape != (A.shape[0],):
            raise ValueError(
                f"y must have shape [m] = ({A.shape[0]},) to match A {A.shape}; got {y.shape}"
            )
        v.check_finite(y, "y")
        S = self.full_covs()
        m = A.shape[0]
        pred_cov = (
            jnp.einsum("ij,kjl,ml->kim", A, S, A)
            + jnp.asarray(noise_std) ** 2 * jnp.eye(m, dtype=A.dtype)[None]
        )
        chol = jnp.linalg.cholesky(pred_cov)
        resid = y[None, :] - self.means @ A.T  # [K, m]
        z = jax.vmap(lambda L, r: jsl.solve_triangular(L, r, lower=True))(chol, resid)
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)
        log_w = jnp.log(self.weights) - 0.5 * (
            jnp.sum(z**2, 1) + logdet + m * math.log(2 * math.pi)
        )
        SAt = jnp.einsum("kij,mj->kim", S, A)  # [K, d, m]
        gain = jax.vmap(lambda L, B: jsl.cho_solve((L, True), B.T).T)(chol, SAt)  # [K, d, m]
        means = self.means + jnp.einsum("kim,km->ki", gain, resid)
        covs = S - jnp.einsum("kim,mj,kjl->kil", gain, A, S)
        covs = 0.5 * (covs + jnp.swapaxes(covs, 1, 2))
        return GaussianMixture(jnp.exp(log_w - jax.nn.logsumexp(log_w)), means, covs)


class OracleModel(eqx.Module):
    """The exact prediction of a :class:`GaussianMixture` as a callable pytree ``fn(x, t[, labels])``."""

    mixture: GaussianMixture
    path: AbstractPath
    prediction: str = eqx.field(static=True)

    def __call__(self, x: Array, t: Array, labels: Array | None = None) -> Array:
        return self.mixture.predict(self.prediction, self.path, x, t, labels)


def check_labels(labels: Array, num_classes: int, name: str = "labels") -> None:
    """Class labels must lie in ``[0, num_classes)`` (eagerly when concrete, else in checked mode)."""
    if v.is_concrete(labels):
        arr = np.asarray(labels)
        bad = arr[(arr < 0) | (arr >= num_classes)]
        if bad.size:
            raise ValueError(f"{name} must lie in [0, {num_classes}); got {bad[:8].tolist()}")
        return
    v.check_value(
        jnp.all((labels >= 0) & (labels < num_classes)),
        f"{name} must lie in [0, {num_classes})",
    )


def eight_gaussians(radius: float = 4.0, std: float = 0.5) -> GaussianMixture:
    """Eight equal isotropic Gaussians on a circle: the standard 2-D multimodal benchmark."""
    angles = np.arange(8) * (2 * np.pi / 8)
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return GaussianMixture(np.full(8, 1 / 8), means, np.full((8, 2), std**2))


def two_modes_2d(offset: float = 2.0, std: float = 0.7) -> GaussianMixture:
    """The seed's 2-D mixture ``0.5 N((-2, 0), 0.49 I) + 0.5 N((2, 0), 0.49 I)``."""
    means = np.array([[-offset, 0.0], [offset, 0.0]])
    return GaussianMixture(np.array([0.5, 0.5]), means, np.full((2, 2), std**2))


def two_modes_1d(offset: float = 3.0, std: float = 1.0) -> GaussianMixture:
    """``0.5 N(-3, 1) + 0.5 N(3, 1)`` in one dimension (the seed's guidance example)."""
    return GaussianMixture(
        np.array([0.5, 0.5]), np.array([[-offset], [offset]]), np.full((2, 1), std**2)
    )
