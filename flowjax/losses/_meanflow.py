"""MeanFlow (Geng et al. 2025): learn the average velocity between two times, for few-step sampling.

In flowjax's time (noise at ``t = 0``, data at ``t = 1``), the average velocity of the flow
``dz/dt = v(z, t)`` from ``t`` to ``r`` is ``u(z_t, t, r) = (z_r - z_t) / (r - t)`` (``u = v`` at
``r = t``), so one step ``z_r = z_t + (r - t) u(z_t, t, r)`` is exact, and ``r = 1`` from
``t = 0`` is one-step generation. Differentiating ``(r - t) u(z_t, t, r) = int_t^r v dtau`` in
``t`` along the flow gives the MeanFlow identity

    ``u(z_t, t, r) = v(z_t, t) + (r - t) d/dt u(z_t, t, r)``,
    ``d/dt u = (grad_z u) v + du/dt`` (one forward-mode JVP with tangent ``(v, 1, 0)``).

The loss regresses the model ``u_theta(z, t, r)`` (a two-time model: ``second_time="r"``, called
with ``t2=r``) on that right-hand side with ``v`` the conditional velocity of the path (its
expectation given ``z_t`` is the marginal ``v``) and the target's gradient stopped; ``r = t`` (a
fraction ``equal_fraction`` of the batch) is plain flow matching. The per-example squared error is
weighted adaptively by ``1 / (error + c)^p`` (stopped), the paper's robust loss.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from flowjax import _validation as v
from flowjax.losses._time_sampling import sample_time
from flowjax.paths import AbstractPath

__all__ = ["make_meanflow_loss", "meanflow_target", "sample_two_times"]


def _bcast(t: Array, x: Array) -> Array:
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


def meanflow_target(
    u_fn: Callable[[Array, Array, Array], Array],
    x: Float[Array, "B ..."],
    t: Float[Array, " B"],
    r: Float[Array, " B"],
    velocity: Float[Array, "B ..."],
) -> tuple[Float[Array, "B ..."], Float[Array, "B ..."]]:
    """``(u, target)``: ``u = u_fn(x, t, r)`` and ``target = velocity + (r - t) d/dt u`` (stopped).

    ``d/dt u`` is the total derivative along ``dx/dt = velocity``: one ``jax.jvp`` of ``u_fn`` at
    ``(x, t, r)`` with tangent ``(velocity, 1, 0)``; ``u`` is its primal output (no second call).
    """
    ones, zeros = jnp.ones_like(t), jnp.zeros_like(r)
    u, du_dt = jax.jvp(u_fn, (x, t, r), (velocity.astype(x.dtype), ones, zeros))
    target = velocity + _bcast(r - t, du_dt).astype(du_dt.dtype) * du_dt
    return u, jax.lax.stop_gradient(target)


def sample_two_times(
    key: PRNGKeyArray,
    n: int,
    *,
    time_sampler: str = "logit_normal",
    equal_fraction: float = 0.75,
    t_min: float = 0.0,
    t_max: float = 1.0,
    dtype: Any = None,
    **sampler_options: Any,
) -> tuple[Float[Array, " n"], Float[Array, " n"]]:
    """``(t, r)`` with ``t <= r``: two draws of ``time_sampler`` sorted; ``r = t`` for a fraction.

    The paper draws both times from a logit-normal and sets ``r = t`` for 75% of the batch (plain
    flow matching), which keeps the instantaneous velocity learned.
    """
    if not 0.0 <= equal_fraction <= 1.0:
        raise ValueError(f"equal_fraction must lie in [0, 1]; got {equal_fraction}")
    k_a, k_b, k_eq = jax.random.split(key, 3)
    kw = {"t_min": t_min, "t_max": t_max, "dtype": dtype, **sampler_options}
    a = sample_time(time_sampler, k_a, n, **kw)
    b = sample_time(time_sampler, k_b, n, **kw)
    t, r = jnp.minimum(a, b), jnp.maximum(a, b)
    equal = jax.random.uniform(k_eq, (n,)) < equal_fraction
    return t, jnp.where(equal, t, r)


def make_meanflow_loss(
    apply_fn: Callable[..., Array],
    path: AbstractPath,
    *,
    time_sampler: str = "logit_normal",
    time_sampler_options: Mapping[str, Any] | None = None,
    equal_fraction: float = 0.75,
    adaptive_power: float = 1.0,
    adaptive_eps: float = 1e-3,
    train: bool = True,
) -> Callable[[PyTree, Mapping[str, Array], PRNGKeyArray], tuple[Array, dict[str, Array]]]:
    """The MeanFlow loss ``loss_fn(params, batch, key) -> (loss, aux)`` on any Gaussian path.

    Args:
      apply_fn: ``apply_fn(params, x, t, label, *, train, key, t2)`` of a two-time model
        (:func:`flowjax.models.make_apply_fn` of a model with ``second_time="r"``): the average
        velocity ``u(x, t, r)`` with ``t2 = r``. A one-time model fails at trace time naming
        ``t2``.
      path: the Gaussian path; its conditional velocity is the ``v`` of the identity.
      time_sampler, time_sampler_options: the sampler of both times (:func:`sample_two_times`).
      equal_fraction: fraction of the batch with ``r = t``.
      adaptive_power, adaptive_eps: the weight ``1 / (error + eps)^power`` (stopped); power 0
        is the plain mean squared error. Power 1 (the paper's ImageNet setting, the default)
        turns the loss into about ``log(error + eps)``, whose minimiser under the stochastic
        conditional-velocity target is not its conditional mean: on 2-D mixtures it was far
        worse than power 0 and got worse with more steps (8-Gaussians, 3 seeds, 1/2/4-step
        energy distance x1e3: 19 / 41 / 58 against 3.9 / -0.5 / -1.3;
        ``experiments/benchmarks/bench_onestep.py``). Use 0 for low-dimensional data.
      train: passed to ``apply_fn`` (dropout).

    ``batch["x"]``: the data ``[B, ...]``. ``aux``: ``mse`` (unweighted), ``t_mean``,
    ``gap_mean`` (mean ``r - t``).
    """
    sampler_options = dict(time_sampler_options or {})

    def loss_fn(
        params: PyTree, batch: Mapping[str, Array], key: PRNGKeyArray
    ) -> tuple[Float[Array, ""], dict[str, Array]]:
        x1 = v.require_floating(batch["x"], 'batch["x"]')
        v.require_batched(x1, 'batch["x"]', 2)
        n = x1.shape[0]
        k_t, k_eps, k_model = jax.random.split(key, 3)
        eps = jax.random.normal(k_eps, x1.shape, x1.dtype)
        t, r = sample_two_times(
            k_t,
            n,
            time_sampler=time_sampler,
            equal_fraction=equal_fraction,
            t_min=path.t_min,
            t_max=path.t_max,
            dtype=x1.dtype,
            **sampler_options,
        )
        xt = path.interpolate(x1, eps, t)
        vel = path.conditional_target("velocity", x1, eps, t)

        def u_fn(x: Array, t: Array, r: Array) -> Array:
            return apply_fn(params, x, t, None, train=train, key=k_model, t2=r)

        u, target = meanflow_target(u_fn, xt, t, r, vel)
        err = jnp.mean(((u - target) ** 2).reshape(n, -1), axis=1)
        w = jax.lax.stop_gradient(1.0 / (err + adaptive_eps) ** adaptive_power)
        loss = jnp.mean(w * err)
        return loss, {"mse": jnp.mean(err), "t_mean": jnp.mean(t), "gap_mean": jnp.mean(r - t)}

    return loss_fn
