"""Exact ground truth for guidance: the oracle as a class-conditional model and as a classifier.

With the components of a :class:`flowjax.oracle.GaussianMixture` as classes,

* :func:`conditional_oracle` is a perfect class-conditional model ``fn(x, t, labels)`` that follows
  the learned models' convention: label ``K`` (the null label) means "no class", so it plugs into
  classifier-free guidance (``classifier_free(fn, labels, scale=w)``, ``guided_model``) exactly
  as a network trained with label dropout does;
* :func:`oracle_classifier` is the Bayes classifier of noisy points, ``logits_k(x, t) = log w_k +
  log p_t(x | k)`` (its softmax is :meth:`GaussianMixture.responsibilities`), the exact
  ``p_t(y | x)`` that classifier guidance needs.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from flowjax import _validation as v
from flowjax.losses import check_labels
from flowjax.oracle import GaussianMixture
from flowjax.paths import PREDICTIONS, AbstractPath

__all__ = ["ConditionalOracle", "OracleClassifier", "conditional_oracle", "oracle_classifier"]


class ConditionalOracle(eqx.Module):
    """``fn(x, t, labels)``: the exact class-conditional prediction; label ``K`` is unconditional."""

    mixture: GaussianMixture
    path: AbstractPath
    prediction: str = eqx.field(static=True)

    @property
    def num_classes(self) -> int:
        return self.mixture.num_components

    def __call__(
        self,
        x: Float[Array, "B d"],
        t: Float[ArrayLike, " B"],
        labels: Int[ArrayLike, " B"] | None = None,
    ) -> Float[Array, "B d"]:
        k = self.num_classes
        uncond = self.mixture.predict(self.prediction, self.path, x, t)
        if labels is None:
            return uncond
        labels = check_labels(labels, k, name="labels", allow_null=True)
        if labels.shape != (x.shape[0],):
            raise ValueError(
                f"labels must have shape [B] = ({x.shape[0]},) to match x {x.shape}; got "
                f"{labels.shape}"
            )
        cond = self.mixture.predict(
            self.prediction, self.path, x, t, jnp.minimum(labels, jnp.asarray(k - 1, labels.dtype))
        )
        return jnp.where((labels < k)[:, None], cond, uncond)


def conditional_oracle(
    mixture: GaussianMixture, path: AbstractPath, prediction: str = "velocity"
) -> ConditionalOracle:
    """The mixture's exact class-conditional ``model_fn(x, t, labels)`` (null label ``K``)."""
    v.choice(prediction, PREDICTIONS, "prediction")
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture must be a GaussianMixture; got {type(mixture).__name__}")
    return ConditionalOracle(mixture, path, prediction)


class OracleClassifier(eqx.Module):
    """``fn(x, t) -> logits [B, K]`` with ``softmax(logits) = p_t(k | x)``, the Bayes classifier."""

    mixture: GaussianMixture
    path: AbstractPath

    @property
    def num_classes(self) -> int:
        return self.mixture.num_components

    def __call__(
        self, x: Float[Array, "B d"], t: Float[ArrayLike, " B"], label: Any = None
    ) -> Float[Array, "B K"]:
        if label is not None:
            raise ValueError("a classifier predicts the label: call it with label=None")
        x = v.require_floating(x, "x")
        v.require_batched(x, "x", 2)
        t = v.as_float_array(t, "t")
        n, k = x.shape[0], self.num_classes

        def one(c: Array) -> Array:
            lab = jnp.full((n,), c, jnp.int32)
            return self.mixture.log_prob(self.path, x, t, lab)

        log_px = jax.vmap(one, out_axes=1)(jnp.arange(k, dtype=jnp.int32))  # [B, K]
        return jnp.log(self.mixture.weights).astype(log_px.dtype)[None, :] + log_px


def oracle_classifier(mixture: GaussianMixture, path: AbstractPath) -> OracleClassifier:
    """The exact time-dependent classifier ``p_t(y | x)`` of a mixture whose components are classes."""
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture must be a GaussianMixture; got {type(mixture).__name__}")
    return OracleClassifier(mixture, path)
