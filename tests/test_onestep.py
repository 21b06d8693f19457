"""Few-step objectives (issue 16): the MeanFlow target against a Gaussian oracle with a closed-form
flow map, its JVP against finite differences, the loss's contract and its bad input."""

import chex
import jax
import jax.numpy as jnp
import pytest

import flowjax as fj
from flowjax import losses as L
from flowjax import models as M
from flowjax import paths as P

M0, S0 = 1.5, 0.4  # data N(M0, S0^2 I) on CondOT: mu_t = t M0, sigma_t^2 = t^2 S0^2 + (1 - t)^2


def _sigma(t):
    return jnp.sqrt(t**2 * S0**2 + (1 - t) ** 2)


def _v_marginal(z, t):
    """The exact marginal velocity: mu' + sigma'/sigma (z - mu) (written here, not the oracle's)."""
    t = t[:, None]
    dsigma = (t * S0**2 - (1 - t)) / _sigma(t)
    return M0 + dsigma / _sigma(t) * (z - t * M0)


def _u_exact(z, t, r):
    """The exact average velocity from the flow map z_r = mu_r + sigma_r / sigma_t (z - mu_t)."""
    t, r = t[:, None], r[:, None]
    z_r = r * M0 + _sigma(r) / _sigma(t) * (z - t * M0)
    return (z_r - z) / (r - t)


def test_meanflow_identity_holds_for_the_exact_average_velocity(x64):
    z = jax.random.normal(jax.random.PRNGKey(0), (6, 3), jnp.float64)
    t = jnp.array([0.05, 0.1, 0.3, 0.5, 0.6, 0.2])
    r = jnp.array([0.9, 0.4, 0.35, 0.99, 0.8, 1.0])
    u, target = L.meanflow_target(_u_exact, z, t, r, _v_marginal(z, t))
    chex.assert_shape(target, (6, 3))
    chex.assert_trees_all_close(u, target, rtol=1e-10, atol=1e-10)  # zero loss at the solution
    # Any other u is not a fixed point: positive loss.
    wrong = lambda z, t, r: _u_exact(z, t, r) + 0.1 * z * (r - t)[:, None]  # noqa: E731
    u_w, target_w = L.meanflow_target(wrong, z, t, r, _v_marginal(z, t))
    assert float(jnp.mean((u_w - target_w) ** 2)) > 1e-4


def test_meanflow_jvp_equals_finite_differences(x64):
    model = M.MLP(
        hidden=(16, 16), time_embedding="sinusoidal", time_embed_dim=8, second_time="r",
        param_dtype=jnp.float64,
    )  # fmt: skip
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 2), jnp.float64)
    params = M.init(model, jax.random.PRNGKey(2), x)
    params = jax.tree.map(lambda p: p + 0.1, params)
    t, r = jnp.array([0.1, 0.3, 0.5, 0.7]), jnp.array([0.6, 0.3, 0.9, 0.95])
    vel = jax.random.normal(jax.random.PRNGKey(3), (4, 2), jnp.float64)

    def u_fn(x, t, r):
        return M.apply(model, params, x, t, t2=r)

    u, target = L.meanflow_target(u_fn, x, t, r, vel)
    h = 1e-6
    fd = (u_fn(x + h * vel, t + h, r) - u_fn(x - h * vel, t - h, r)) / (2 * h)
    chex.assert_trees_all_close(target, vel + (r - t)[:, None] * fd, rtol=1e-6, atol=1e-8)
    chex.assert_trees_all_close(u, u_fn(x, t, r))


def test_meanflow_loss_contract_and_bad_input():
    path = P.CondOT()
    model = M.MLP(hidden=(32, 32), second_time="r")
    data = fj.oracle.eight_gaussians().sample(jax.random.PRNGKey(0), 64)
    params = M.init(model, jax.random.PRNGKey(1), data)
    loss_fn = L.make_meanflow_loss(M.make_apply_fn(model), path)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, {"x": data}, jax.random.PRNGKey(2)
    )
    chex.assert_shape(loss, ())
    chex.assert_tree_all_finite((loss, aux, grads))
    assert 0.0 <= float(aux["gap_mean"]) < 1.0
    t, r = L.sample_two_times(jax.random.PRNGKey(3), 1000, equal_fraction=0.75)
    assert bool(jnp.all(r >= t))
    chex.assert_trees_all_close(jnp.mean(r == t), jnp.asarray(0.75), atol=0.05)
    # A one-time model fails at trace time, naming the missing argument.
    one = M.MLP(hidden=(8,))
    bad = L.make_meanflow_loss(M.make_apply_fn(one), path)
    with pytest.raises(ValueError, match="t2 was given but this MLP has one time input"):
        bad(M.init(one, jax.random.PRNGKey(1), data), {"x": data}, jax.random.PRNGKey(2))
