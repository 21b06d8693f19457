"""Few-step objectives (issue 16): the shortcut loss and consistency distillation at the exact
solution of a Gaussian on CondOT (closed-form flow map), improved consistency training's schedule
and contract, and bad input."""

import chex
import jax
import jax.numpy as jnp
import pytest

import flowjax as fj
from flowjax import losses as L
from flowjax import models as M
from flowjax import paths as P

M0, S0 = 1.5, 0.4  # data N(M0, S0^2 I); p_t = N(t M0, sigma_t^2 I) on CondOT


def _sigma(t):
    return jnp.sqrt(t**2 * S0**2 + (1 - t) ** 2)


def _flow_map(z, t, r):
    """phi_{t -> r}(z) = r M0 + sigma_r / sigma_t (z - t M0), the affine flow of the marginal."""
    t, r = t[:, None], r[:, None]
    return r * M0 + _sigma(r) / _sigma(t) * (z - t * M0)


def _v_marginal(z, t):
    t = t[:, None]
    return M0 + (t * S0**2 - (1 - t)) / _sigma(t) ** 2 * (z - t * M0)


def _data(n, key=0):
    return M0 + S0 * jax.random.normal(jax.random.PRNGKey(key), (n, 2), jnp.float64)


def shortcut_apply(p, x, t, label=None, *, train=True, key=None, t2=None):
    """The exact step-size-conditioned velocity (d > 0) and marginal velocity (d = 0), plus p x."""
    d = jnp.where(t2 > 0, t2, 1.0)
    s = (_flow_map(x, t, t + d) - x) / d[:, None]
    return jnp.where((t2 > 0)[:, None], s, _v_marginal(x, t)) + p * x


def consistency_apply(p, x, t, label=None, *, train=True, key=None):
    """The exact consistency function phi_{t -> 1}, plus p x."""
    return _flow_map(x, t, jnp.ones_like(t)) + p * x


def test_shortcut_loss_is_minimal_at_the_exact_solution(x64):
    loss_fn = jax.jit(
        L.make_shortcut_loss(shortcut_apply, P.CondOT(), max_steps=64, bootstrap_fraction=0.5)
    )
    batch, key = {"x": _data(4096)}, jax.random.PRNGKey(1)
    (loss, aux), g = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
        jnp.float64(0.0), batch, key
    )
    chex.assert_tree_all_finite((loss, aux, g))
    assert float(aux["sc_mse"]) < 1e-20  # two exact d-steps are one exact 2d-step
    _, aux_w = loss_fn(jnp.float64(0.2), batch, key)
    assert float(aux_w["sc_mse"]) > 1e-5
    # flow matching: the marginal velocity minimises E|s - v_cond|^2 (same draws: same key)
    for p in (-0.2, 0.2):
        assert float(loss_fn(jnp.float64(p), batch, key)[1]["fm_mse"]) > float(aux["fm_mse"])
    assert 0.0 < float(aux["d_mean"]) <= 0.5


def test_consistency_distillation_from_the_exact_teacher(x64):
    """With the exact teacher velocity, the exact consistency function leaves only the teacher's
    Heun error between adjacent levels: small, shrinking as the levels get finer, and far below
    the loss of a wrong f."""
    batch, key = {"x": _data(2048)}, jax.random.PRNGKey(2)

    def dist(levels, p, solver="heun"):
        loss_fn = L.make_consistency_distillation_loss(
            consistency_apply, P.CondOT(), _v_marginal, num_levels=levels, huber_c=0.0,
            teacher_solver=solver,
        )  # fmt: skip
        (loss, _), g = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
            jnp.float64(p), batch, key
        )
        chex.assert_tree_all_finite((loss, g))
        return float(loss)

    coarse, fine = dist(18, 0.0), dist(72, 0.0)
    assert fine < coarse / 4
    assert coarse < 0.05 * dist(18, 0.1)
    assert dist(72, 0.0, "euler") > fine  # Euler's step error is larger


def test_ict_schedule_levels_and_pseudo_huber(x64):
    # K = 1000, s0 = 10, s1 = 1280: K' = floor(1000 / 8) = 125, N doubles every 125 steps
    n = [int(L.ict_num_levels(k, 1000)) for k in (0, 124, 125, 874, 875, 10_000)]
    assert n == [11, 11, 21, 641, 1281, 1281]
    sig = L.karras_sigmas(11, 16)
    chex.assert_trees_all_close(sig[0], jnp.float64(0.002))
    chex.assert_trees_all_close(sig[10], jnp.float64(80.0))
    assert bool(jnp.all(jnp.diff(sig[:11]) > 0))
    i = L.consistency_levels(jax.random.PRNGKey(0), 10_000, sig, 11)
    assert int(i.min()) >= 0 and int(i.max()) <= 9
    # the lognormal puts most mass near sigma ~ exp(-1.1): more draws of middle than top levels
    assert int(jnp.sum(i == 9)) < int(jnp.sum((i >= 2) & (i <= 5)))
    a = jnp.array([[3.0, 4.0]])
    chex.assert_trees_all_close(L.pseudo_huber(a, jnp.zeros_like(a), 0.0), jnp.array([5.0]))
    big = L.pseudo_huber(a, jnp.zeros_like(a), 1e4)
    chex.assert_trees_all_close(big, jnp.array([25.0 / 2e4]), rtol=1e-3)


def test_consistency_training_contract_with_a_model():
    model = M.MLP(hidden=(16, 16))
    x = jax.random.normal(jax.random.PRNGKey(0), (32, 2))
    params = M.init(model, jax.random.PRNGKey(1), x)
    loss_fn = L.make_consistency_training_loss(M.make_apply_fn(model), P.CondOT(), total_steps=800)
    vg = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    for step in (0, 799):
        (loss, aux), g = vg(params, {"x": x, "step": jnp.asarray(step)}, jax.random.PRNGKey(2))
        chex.assert_shape(loss, ())
        chex.assert_tree_all_finite((loss, aux, g))
        assert float(loss) > 0.0
    assert int(aux["num_levels"]) == 1281
    # the exact consistency function: CT's pair distance is O(level gap), the loss finite
    ct = L.make_consistency_training_loss(consistency_apply, P.CondOT(), total_steps=800)
    chex.assert_tree_all_finite(jax.jit(ct)(jnp.float32(0.0), {"x": x}, jax.random.PRNGKey(3)))


def test_shortcut_loss_contract_and_bad_input():
    path = P.CondOT()
    x = jax.random.normal(jax.random.PRNGKey(0), (16, 2))
    model = M.MLP(hidden=(16,), second_time="d")
    params = M.init(model, jax.random.PRNGKey(1), x)
    loss_fn = L.make_shortcut_loss(M.make_apply_fn(model), path)
    (loss, aux), g = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
        params, {"x": x}, jax.random.PRNGKey(2)
    )
    chex.assert_tree_all_finite((loss, aux, g))
    one = M.MLP(hidden=(8,))
    bad = L.make_shortcut_loss(M.make_apply_fn(one), path)
    with pytest.raises(ValueError, match="t2"):
        bad(M.init(one, jax.random.PRNGKey(1), x), {"x": x}, jax.random.PRNGKey(2))
    with pytest.raises(ValueError, match="power of two"):
        L.make_shortcut_loss(M.make_apply_fn(model), path, max_steps=100)
    with pytest.raises(ValueError, match="teacher_solver"):
        L.make_consistency_distillation_loss(
            M.make_apply_fn(one), path, lambda x, t: x, teacher_solver="rk4"
        )


def test_consistency_output_boundary_condition(x64):
    """EDM's skip parameterisation: f = x / alpha (the data) at sigma = sigma_min whatever the
    network says, finite at alpha = 0, and the wrappers agree with it."""
    from flowjax import solvers

    path = P.VPLinear()
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 2), jnp.float64)
    raw = 100.0 * jax.random.normal(jax.random.PRNGKey(1), (4, 2), jnp.float64)
    t_min_level = solvers.time_of_sigma(path, jnp.full((4,), 0.002), path.t_min, path.t_max)
    out = L.consistency_output(path, x, t_min_level, raw)
    chex.assert_trees_all_close(out, x / path.alpha(t_min_level)[:, None], rtol=1e-8, atol=1e-8)
    at_noise = L.consistency_output(P.CondOT(), x, jnp.zeros(4), raw)
    chex.assert_tree_all_finite(at_noise)
    chex.assert_trees_all_close(at_noise, 0.5 * raw)  # c_skip = 0, c_out = sigma_d at alpha = 0
    t = jnp.array([0.1, 0.4, 0.7, 0.9])
    net = lambda p, x, t, label=None, **kw: p * x  # noqa: E731
    want = L.consistency_output(path, x, t, 3.0 * x)
    chex.assert_trees_all_close(L.consistency_apply_fn(net, path)(3.0, x, t), want)
    fn = L.ConsistencyModelFn(lambda x, t: 3.0 * x, path)
    chex.assert_trees_all_close(fn(x, t), want)


def test_consistency_distillation_teacher_of_any_prediction():
    """A teacher predicting x1 is converted to the velocity: the same loss as the velocity teacher."""
    mix, path = fj.oracle.two_modes_2d(), P.VPLinear()
    x = mix.sample(jax.random.PRNGKey(0), 64)
    losses = [
        jax.jit(
            L.make_consistency_distillation_loss(
                consistency_apply, path, mix.model_fn(path, pred), teacher_prediction=pred
            )
        )(jnp.float32(0.1), {"x": x}, jax.random.PRNGKey(1))[0]
        for pred in ("velocity", "x1")
    ]
    chex.assert_trees_all_close(losses[0], losses[1], rtol=1e-3)


def test_consistency_levels_follow_the_discretised_lognormal():
    """Frequencies of the level pairs against P(i) ~ erf(z_{i+1}) - erf(z_i) computed here with
    math.erf (and uniform over the valid pairs for p_mean=None), within 5 standard errors; a
    traced number of levels below the array size never draws a padded pair."""
    import itertools
    import math

    import numpy as np

    size, n_lev, n = 41, 21, 200_000
    sig = L.karras_sigmas(n_lev, size)

    @jax.jit
    def draw(key, m):  # both samplers in one program
        return tuple(L.consistency_levels(key, n, sig, m, p_mean=pm) for pm in (-1.1, None))

    s = np.asarray(sig[:n_lev], np.float64)  # the 21 valid levels
    z = (np.log(s) + 1.1) / (math.sqrt(2.0) * 2.0)
    w = np.array([math.erf(b) - math.erf(a) for a, b in itertools.pairwise(z)])
    uniform = np.full(n_lev - 1, 1 / (n_lev - 1))
    for i, p in zip(
        draw(jax.random.PRNGKey(0), jnp.int32(n_lev)), (w / w.sum(), uniform), strict=True
    ):
        i = np.asarray(i)
        assert i.min() >= 0 and i.max() <= n_lev - 2
        freq = np.bincount(i, minlength=n_lev - 1) / n
        se = np.sqrt(p * (1 - p) / n)
        assert np.all(np.abs(freq - p) < 5 * se), (freq, p)
