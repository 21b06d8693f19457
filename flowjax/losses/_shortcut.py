"""Shortcut models (Frans et al. 2024): a velocity conditioned on the step size, for few-step sampling.

The model ``s(x_t, t, d)`` (a two-time model with ``second_time="d"``, called with ``t2=d``) is the
average velocity of a step of size ``d``: ``x_{t+d} = x_t + d s(x_t, t, d)``. It is trained on two
parts of each batch:

* flow matching at ``d = 0`` (``s(x, t, 0)`` is the instantaneous velocity), regressed on the
  path's conditional velocity;
* self-consistency: one step of size ``2d`` equals two steps of size ``d``,
  ``s(x_t, t, 2d) = (s(x_t, t, d) + s(x_{t+d}, t + d, d)) / 2`` with
  ``x_{t+d} = x_t + d s(x_t, t, d)``, the target's gradient stopped. ``d`` is drawn from the powers
  of two ``1/M, 2/M, ..., 1/2`` (``2d`` up to one step over the whole interval) and ``t`` uniformly
  on ``[t_min, t_max - 2d]``.

Sample with :class:`flowjax.sampling.Shortcut` (``method="shortcut"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from flowjax import _validation as v
from flowjax.losses._time_sampling import sample_time
from flowjax.paths import AbstractPath

__all__ = ["make_shortcut_loss", "shortcut_target"]


def _per_example(err: Array) -> Array:
    return jnp.mean(err.reshape(err.shape[0], -1), axis=1)


def shortcut_target(
    s_fn: Callable[[Array, Array, Array], Array],
    x: Float[Array, "B ..."],
    t: Float[Array, " B"],
    d: Float[Array, " B"],
) -> Float[Array, "B ..."]:
    """``(s(x, t, d) + s(x + d s(x, t, d), t + d, d)) / 2``, the target of ``s(x, t, 2d)`` (stopped)."""
    db = d.reshape(d.shape + (1,) * (x.ndim - 1)).astype(x.dtype)
    s1 = s_fn(x, t, d)
    s2 = s_fn(x + db * s1, t + d, d)
    return jax.lax.stop_gradient(0.5 * (s1 + s2))


def make_shortcut_loss(
    apply_fn: Callable[..., Array],
    path: AbstractPath,
    *,
    max_steps: int = 128,
    bootstrap_fraction: float = 0.25,
    time_sampler: str = "uniform",
    time_sampler_options: Mapping[str, Any] | None = None,
    train: bool = True,
) -> Callable[[PyTree, Mapping[str, Array], PRNGKeyArray], tuple[Array, dict[str, Array]]]:
    """The shortcut-model loss ``loss_fn(params, batch, key) -> (loss, aux)`` on any Gaussian path.

    Args:
      apply_fn: ``apply_fn(params, x, t, label, *, train, key, t2)`` of a two-time model with
        ``second_time="d"`` (:func:`flowjax.models.make_apply_fn`); ``t2 = d`` the step size. A
        one-time model fails at trace time naming ``t2``.
      path: the Gaussian path (its conditional velocity is the flow-matching target).
      max_steps: ``M``, a power of two: the smallest step size is ``(t_max - t_min) / M``.
      bootstrap_fraction: the fraction of the batch (its first examples) trained on
        self-consistency; the rest is flow matching at ``d = 0``.
      time_sampler, time_sampler_options: the flow-matching part's time sampler.
      train: passed to ``apply_fn`` (dropout).

    ``batch["x"]``: the data ``[B, ...]``. The loss is the mean over the batch of the per-example
    mean squared error of both parts. ``aux``: ``fm_mse``, ``sc_mse`` (self-consistency), ``d_mean``.
    """
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 2:
        raise ValueError(f"max_steps must be an integer power of two >= 2; got {max_steps!r}")
    if max_steps & (max_steps - 1):
        raise ValueError(f"max_steps must be a power of two; got {max_steps}")
    if not 0.0 <= bootstrap_fraction <= 1.0:
        raise ValueError(f"bootstrap_fraction must lie in [0, 1]; got {bootstrap_fraction}")
    levels = int(math.log2(max_steps))
    sampler_options = dict(time_sampler_options or {})
    span = path.t_max - path.t_min

    def loss_fn(
        params: PyTree, batch: Mapping[str, Array], key: PRNGKeyArray
    ) -> tuple[Float[Array, ""], dict[str, Array]]:
        x1 = v.require_floating(batch["x"], 'batch["x"]')
        v.require_batched(x1, 'batch["x"]', 2)
        n = x1.shape[0]
        nb = round(n * bootstrap_fraction)
        k_t, k_eps, k_d, k_tb, k_model = jax.random.split(key, 5)
        eps = jax.random.normal(k_eps, x1.shape, x1.dtype)

        def s_fn(x: Array, t: Array, d: Array) -> Array:
            return apply_fn(params, x, t, None, train=train, key=k_model, t2=d)

        zero = jnp.zeros((), x1.dtype)
        fm_mse, sc_mse, d_mean = zero, zero, zero
        total = zero
        if n - nb > 0:
            xf, ef = x1[nb:], eps[nb:]
            t = sample_time(
                time_sampler, k_t, n - nb, t_min=path.t_min, t_max=path.t_max, dtype=x1.dtype,
                **sampler_options,
            )  # fmt: skip
            xt = path.interpolate(xf, ef, t)
            target = path.conditional_target("velocity", xf, ef, t)
            err = _per_example((s_fn(xt, t, jnp.zeros_like(t)) - target) ** 2)
            fm_mse, total = jnp.mean(err), total + jnp.sum(err)
        if nb > 0:
            xb, eb = x1[:nb], eps[:nb]
            k = jax.random.randint(k_d, (nb,), 0, levels)
            d = (span * 2.0 ** k.astype(x1.dtype) / max_steps).astype(x1.dtype)
            u = jax.random.uniform(k_tb, (nb,), x1.dtype)
            t = path.t_min + u * (span - 2 * d)
            xt = path.interpolate(xb, eb, t)
            target = shortcut_target(s_fn, xt, t, d)
            err = _per_example((s_fn(xt, t, 2 * d) - target) ** 2)
            sc_mse, total, d_mean = jnp.mean(err), total + jnp.sum(err), jnp.mean(d)
        loss = total / n
        return loss, {"fm_mse": fm_mse, "sc_mse": sc_mse, "d_mean": d_mean}

    return loss_fn
