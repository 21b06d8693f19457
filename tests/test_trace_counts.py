"""Compiled entry points users call repeatedly are traced and compiled once per signature.

Two independent counters: the number of Python executions of the user's function (the model inside
``sample`` / ``log_likelihood``, the loss inside the train step; a retrace runs them again) and the
number of XLA lowerings JAX reports through ``jax.monitoring`` (every new program, whatever caused
it, including eager helper ops on new shapes). After a warm-up call, calls with new parameter
values, new keys and new inputs of the same shapes and dtypes must add nothing to either.
"""

from __future__ import annotations

import contextlib
import functools

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flowjax as fj
from flowjax import training as T

LOWERING_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"


class _Lowerings:
    """Counts XLA lowerings (one per program compiled or fetched from the persistent cache)."""

    def __init__(self):
        self.count = 0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **kwargs) -> None:
        if event == LOWERING_EVENT:
            self.count += 1

    @contextlib.contextmanager
    def none_new(self, what: str):
        before = self.count
        yield
        assert self.count == before, f"{what}: {self.count - before} new XLA program(s) lowered"


LOWERINGS = _Lowerings()


class Counted(eqx.Module):
    """A model pytree whose ``__call__`` counts its Python executions (= traces of the caller)."""

    inner: fj.models.ModelFn
    counter: list = eqx.field(static=True)  # a static list object: the same in every instance

    def __call__(self, x, t, *args):
        self.counter[0] += 1
        return self.inner(x, t, *args)


MLP = fj.models.MLP(hidden=(16, 16), time_embed_dim=8)


@functools.lru_cache
def _params(seed: int):
    return fj.models.init(MLP, jax.random.PRNGKey(seed), jnp.zeros((1, 2)))


def counted_model(seed: int, counter: list) -> Counted:
    return Counted(fj.models.model_fn(MLP, _params(seed)), counter)


# ------------------------------------------------------------------------------------- sample


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "ode", "solver": "euler", "num_steps": 4},
        {"method": "ode", "solver": "heun", "num_steps": 3},
        {"method": "sde", "solver": "euler", "num_steps": 4},
    ],
    ids=["ode_euler_scan", "ode_heun_diffrax", "sde_euler_maruyama"],
)
def test_sample_compiles_once_for_new_params_keys_and_x_start(kwargs):
    counter = [0]
    path = fj.VPLinear()
    x_start = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
    res = fj.sample(
        counted_model(0, counter), path, jax.random.PRNGKey(0), None, x_start=x_start, **kwargs
    )
    chex.assert_shape(res.samples, (8, 2))
    traces = counter[0]
    assert traces >= 1
    outs = [res.samples]
    # new parameter values (same structure), new keys, new x_start; made before counting
    new = [
        (
            counted_model(s, counter),
            jax.random.PRNGKey(s),
            jax.random.normal(jax.random.key(s), (8, 2)),
        )
        for s in (1, 2, 3)
    ]
    with LOWERINGS.none_new("sample with new params, keys and x_start"):
        for model, key, x_new in new:
            out = fj.sample(model, path, key, None, x_start=x_new, **kwargs)
            outs.append(out.samples)
    assert counter[0] == traces, f"sample retraced the model {counter[0] - traces} more time(s)"
    chex.assert_equal_shape(outs)
    chex.assert_tree_all_finite(outs)
    # the new parameters were used (not a stale compiled constant)
    assert not np.allclose(outs[1], outs[2])


def test_sample_compiles_once_per_shape_not_per_key():
    counter = [0]
    path = fj.CondOT()
    model = counted_model(0, counter)
    fj.sample(model, path, jax.random.PRNGKey(0), (4, 2), num_steps=3)
    traces = counter[0]
    new = [(counted_model(k, counter), jax.random.PRNGKey(k)) for k in range(1, 4)]
    with LOWERINGS.none_new("sample with new params and keys"):
        outs = [fj.sample(m, path, k, (4, 2), num_steps=3) for m, k in new]
    assert counter[0] == traces
    chex.assert_shape([o.samples for o in outs], (4, 2))
    # a new batch size is a new signature: exactly one more trace
    fj.sample(model, path, jax.random.PRNGKey(0), (5, 2), num_steps=3)
    assert counter[0] == 2 * traces


# ------------------------------------------------------------------------------ log_likelihood


def test_log_likelihood_compiles_once_per_signature():
    counter = [0]
    path = fj.CondOT()
    kw = {"solver": "heun", "num_steps": 2}
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 2))
    fj.likelihood.log_likelihood(counted_model(0, counter), path, x, **kw)
    traces = counter[0]
    assert traces >= 1
    vals = []
    new = [
        (counted_model(s, counter), jax.random.normal(jax.random.key(s), (6, 2))) for s in (1, 2)
    ]
    with LOWERINGS.none_new("log_likelihood with new params and data"):
        for model, xs in new:
            vals.append(fj.likelihood.log_likelihood(model, path, xs, **kw).log_prob)
    assert counter[0] == traces, "log_likelihood retraced for new parameters or data"
    chex.assert_shape(vals, (6,))
    chex.assert_tree_all_finite(vals)
    # Hutchinson is another signature (compiled once, then reused for new keys)
    hk = {"divergence": "hutchinson", **kw}
    fj.likelihood.log_likelihood(
        counted_model(0, counter), path, x, key=jax.random.PRNGKey(0), **hk
    )
    traces_h = counter[0]
    assert traces_h > traces
    model, key = counted_model(1, counter), jax.random.PRNGKey(5)
    with LOWERINGS.none_new("hutchinson log_likelihood with new keys"):
        fj.likelihood.log_likelihood(model, path, x, key=key, **hk)
    assert counter[0] == traces_h


# ---------------------------------------------------------------------------------- train step


PATH = fj.CondOT()


def _fm_loss(params, batch, key):
    x1 = batch["x"]
    k_eps, k_t = jax.random.split(key)
    eps = jax.random.normal(k_eps, x1.shape, x1.dtype)
    t = jax.random.uniform(k_t, (x1.shape[0],), x1.dtype)
    xt = PATH.interpolate(x1, eps, t)
    pred = MLP.apply({"params": params}, xt, t)
    return jnp.mean((pred - PATH.conditional_target("velocity", x1, eps, t)) ** 2), {}


def test_train_step_compiles_once_over_steps_and_after_restore(tmp_path):
    loss = chex.assert_max_traces(_fm_loss, n=1)  # a second trace raises AssertionError
    opt = optax.adam(1e-3)
    step = T.make_train_step(loss, opt, mesh=fj.parallel.make_mesh(), ema_decay=0.99)
    state = step.place_state(T.create_train_state(_params(0), opt, jax.random.PRNGKey(1)))
    rng = np.random.default_rng(0)

    def batch():
        return {"x": rng.normal(size=(16, 2)).astype(np.float32)}

    state, _ = step(state, batch())  # compiles
    with LOWERINGS.none_new("train steps 2..9"):
        for _ in range(8):
            state, metrics = step(state, batch())
    chex.assert_tree_all_finite(metrics)
    with T.Checkpointer(tmp_path / "ckpt", async_save=False) as ck:
        ck.save(state)
        ck.wait_until_finished()
        restored = ck.restore(T.abstract_state(state))
    assert restored is not None and restored.step == 9
    chex.assert_trees_all_equal_structs(restored.state, state)
    state = restored.state
    with LOWERINGS.none_new("train steps after a checkpoint restore"):
        for _ in range(3):
            state, metrics = step(state, batch())
    assert int(state.step) == 12
    chex.clear_trace_counter()


def test_the_counters_see_a_retrace():
    """Negative control: a plain closure over new parameters is a new static argument."""
    counter = [0]
    path = fj.CondOT()
    models = [counted_model(s, counter) for s in (0, 1)]
    closures = [lambda x, t, m=m: m(x, t) for m in models]
    fj.sample(closures[0], path, jax.random.PRNGKey(0), (4, 2), num_steps=2)
    traces, lowered = counter[0], LOWERINGS.count
    fj.sample(closures[1], path, jax.random.PRNGKey(0), (4, 2), num_steps=2)
    assert counter[0] == 2 * traces and LOWERINGS.count > lowered
