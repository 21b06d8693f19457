"""The layers together: make_loss + models + make_train_step + sample + log_likelihood."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

import flowjax as fj
from flowjax import losses, models
from flowjax import training as T


def test_loss_model_train_step_sampler_likelihood_compose():
    model = models.MLP(hidden=(64, 64), time_embedding="sinusoidal", time_embed_dim=16)
    path = fj.CondOT()
    params = models.init(model, jax.random.PRNGKey(0), jnp.zeros((1, 2)))
    loss_fn = losses.make_loss(models.make_apply_fn(model), path)
    opt = T.make_optimizer("adam", 1e-2)
    step = T.make_train_step(loss_fn, opt, mesh=fj.parallel.make_mesh(), ema_decay=0.9)
    state = step.place_state(T.create_train_state(params, opt, jax.random.PRNGKey(1)))
    first = None
    for i in range(60):
        x = np.asarray(fj.data.toy_sample("eight_gaussians", jax.random.PRNGKey(i), 256))
        state, metrics = step(state, step.shard_batch({"x": x}))
        first = float(metrics["loss"]) if first is None else first
        assert {"loss", "grad_norm", "learning_rate", "mse", "mse_eps"} <= set(metrics)
    assert float(metrics["loss"]) < first
    fn = models.model_fn(model, state.ema_params)
    res = fj.sample(fn, path, jax.random.PRNGKey(2), (32, 2), solver="heun", num_steps=8)
    chex.assert_shape(res.samples, (32, 2))
    chex.assert_equal(int(res.nfe), 16)
    lik = fj.likelihood.log_likelihood(fn, path, res.samples, solver="heun", num_steps=8)
    chex.assert_shape(lik.log_prob, (32,))
    chex.assert_tree_all_finite((res.samples, lik.log_prob))
