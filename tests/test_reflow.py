"""Rectified flow: couplings, the coupling-aware loss, straightness, and one reflow round.

Ground truth: for Gaussian data ``N(mu, s^2 I)`` on CondOT the exact flow is
``X_t = t mu + sigma(t) X_0`` with ``sigma(t) = sqrt(t^2 s^2 + (1 - t)^2)``, so its straightness
is ``d * int_0^1 (s - 1 - sigma'(t))^2 dt`` (``X_1 - X_0 = mu + (s - 1) X_0``). The reflow test uses
the 8-Gaussians oracle as the teacher (a perfect 1-rectified flow) so that only the reflow model is
trained (small MLP, ~2000 steps); the slow version trains the teacher too and warm-starts reflow
from it, as Liu et al. do.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from numpy.polynomial.legendre import leggauss

import flowjax as fj
from flowjax import losses as L
from flowjax import models as M
from flowjax import reflow as R
from flowjax import training as T
from flowjax.distances import energy_distance
from flowjax.oracle import GaussianMixture, eight_gaussians

PATH = fj.CondOT()


def gaussian_straightness(s: float, d: int) -> float:
    """``d int_0^1 (s - 1 - sigma'(t))^2 dt`` by Gauss-Legendre quadrature."""
    nodes, weights = leggauss(200)
    t = 0.5 * (nodes + 1)
    sig = np.sqrt(t**2 * s**2 + (1 - t) ** 2)
    dsig = (t * s**2 - (1 - t)) / sig
    return d * 0.5 * float(np.sum(weights * (s - 1 - dsig) ** 2))


def test_straightness_of_known_trajectories(x64):
    ts = jnp.linspace(0.0, 1.0, 11)
    x0 = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
    x1 = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    line = x0[:, None] + ts[None, :, None] * (x1 - x0)[:, None]
    assert float(R.straightness(ts, line)) < 1e-24
    # a straight line at non-constant speed is not straight in Liu et al.'s sense
    warped = x0[:, None] + (ts**2)[None, :, None] * (x1 - x0)[:, None]
    vel = (ts[1:] ** 2 - ts[:-1] ** 2) / 0.1  # the piecewise-linear speed
    want = float(jnp.mean(jnp.sum((x1 - x0) ** 2, 1))) * float(jnp.sum((vel - 1) ** 2) * 0.1)
    chex.assert_trees_all_close(R.straightness(ts, warped), want, rtol=1e-12)


@pytest.mark.parametrize("s", [0.5, 2.0])
def test_trajectory_straightness_of_a_gaussian_flow(x64, s):
    d = 2
    data = GaussianMixture(jnp.ones(1), jnp.array([[1.0, -2.0]]), jnp.full((1, d), s**2))
    got = R.trajectory_straightness(data.model_fn(PATH), PATH, jax.random.PRNGKey(0), (20000, d),
                                    num_steps=256)  # fmt: skip
    want = gaussian_straightness(s, d)
    chex.assert_trees_all_close(got, want, rtol=0.03)  # Monte Carlo over 20000 paths
    # the same flow with a point mass (s -> 0) is almost straight
    point = GaussianMixture(jnp.ones(1), jnp.array([[1.0, -2.0]]), jnp.full((1, d), 1e-6))
    assert float(R.trajectory_straightness(point.model_fn(PATH), PATH, jax.random.PRNGKey(0),
                                           (256, d))) < 1e-2  # fmt: skip


def test_coupling_loss_uses_the_given_noise():
    """Pairs x1 = x0 + c have the constant velocity target c: a constant model has zero loss on the
    coupling, but not with independent noise (make_loss) nor on shuffled pairs."""
    c = jnp.array([[1.5, -0.5]])

    def apply_fn(params, x, t, label, *, train, key):
        del x, t, label, train, key
        return jnp.broadcast_to(params, (256, 2))

    x0 = jax.random.normal(jax.random.PRNGKey(0), (256, 2))
    batch = {"x": x0 + c, "noise": x0}
    key = jax.random.PRNGKey(1)
    loss, aux = R.make_coupling_loss(apply_fn, PATH)(c, batch, key)
    assert float(loss) < 1e-10 and set(aux) == {"mse", "t_mean"}
    indep, _ = L.make_loss(apply_fn, PATH)(c, {"x": x0 + c}, key)
    shuffled, _ = R.make_coupling_loss(apply_fn, PATH)(c, {"x": x0 + c, "noise": x0[::-1]}, key)
    assert float(indep) > 1.0 and float(shuffled) > 1.0
    # any prediction kind: the x1 loss of the exact x1 is zero too
    loss_x1, _ = R.make_coupling_loss(
        lambda p, x, t, lab, *, train, key: (x - (1 - t)[:, None] * x0) / t[:, None],
        PATH,
        prediction="x1",
    )(None, batch, key)
    assert float(loss_x1) < 1e-8
    with pytest.raises(TypeError, match='paired noise under "noise"'):
        R.make_coupling_loss(apply_fn, PATH)(c, {"x": x0}, key)
    with pytest.raises(ValueError, match=r'batch\["x"\] has shape \(256, 2\) but batch\["noise"\]'):
        R.make_coupling_loss(apply_fn, PATH)(c, {"x": x0, "noise": x0[:, :1]}, key)


def test_generate_couplings_solves_the_ode_from_the_noise():
    mix = eight_gaussians()
    model = mix.model_fn(PATH)
    x0, x1 = R.generate_couplings(model, PATH, jax.random.PRNGKey(0), (300, 2), num_steps=40,
                                  batch_size=150)  # fmt: skip
    assert x0.shape == x1.shape == (300, 2)  # two chunks of 150
    direct = fj.sample(model, PATH, None, None, x_start=x0, solver="heun", num_steps=40).samples
    chex.assert_trees_all_close(x1, direct, rtol=1e-5, atol=1e-5)  # chunking changes nothing
    with pytest.raises(ValueError, match="generate_couplings sets x_start itself"):
        R.generate_couplings(model, PATH, jax.random.PRNGKey(0), (4, 2), x_start=x0)


def _train_velocity_mlp(key, data_sampler, steps, hidden=(128, 128, 128)):
    """A 1-rectified flow (independent coupling) trained through flowjax.training."""
    model = M.MLP(hidden=hidden)
    params = M.init(model, key, jnp.zeros((1, 2)))
    base = L.make_loss(M.make_apply_fn(model), PATH)

    def loss_fn(p, batch, k):  # make_loss reports "loss" in aux, a name the train step reserves
        loss, aux = base(p, batch, k)
        return loss, {"mse": aux["mse"]}

    opt = T.make_optimizer("adam", 3e-3, schedule="cosine", total_steps=steps, end_lr=1e-4)
    step = T.make_train_step(loss_fn, opt, mesh=fj.parallel.make_mesh(), ema_decay=None)
    state = T.create_train_state(params, opt, jax.random.fold_in(key, 1), ema=False)
    xs = np.asarray(data_sampler(jax.random.fold_in(key, 2), steps * 256))
    for i in range(steps):
        state, _ = step(state, {"x": xs[i * 256 : (i + 1) * 256]})
    return model, state.params


def _reflow_round(teacher, model, params, num_pairs, steps):
    x0, x1 = R.generate_couplings(teacher, PATH, jax.random.PRNGKey(10), (num_pairs, 2),
                                  num_steps=50)  # fmt: skip
    new, history = R.train_on_couplings(M.make_apply_fn(model), params, x0, x1, PATH,
                                        num_steps=steps, batch_size=256, lr=3e-3, seed=3)  # fmt: skip
    assert np.isfinite(history[-1]["loss"])
    return M.model_fn(model, new)


def _compare(teacher, student, data, label):
    ref = data.sample(jax.random.PRNGKey(20), 2000)
    s_before = float(R.trajectory_straightness(teacher, PATH, jax.random.PRNGKey(21), (2000, 2)))
    s_after = float(R.trajectory_straightness(student, PATH, jax.random.PRNGKey(21), (2000, 2)))
    before = R.nfe_quality(teacher, PATH, jax.random.PRNGKey(22), ref, num_steps=(1, 2))
    after = R.nfe_quality(student, PATH, jax.random.PRNGKey(22), ref, num_steps=(1, 2))
    print(f"\n{label}: straightness {s_before:.4f} -> {s_after:.4f}; Euler energy distance "
          f"(NFE 1, 2): {[round(r['distance'], 4) for r in before]} -> "
          f"{[round(r['distance'], 4) for r in after]}")  # fmt: skip
    assert s_after < 0.25 * s_before
    for b, a in zip(before, after, strict=True):
        assert b["nfe"] == a["nfe"]
        assert a["distance"] < 0.5 * b["distance"], (a, b)
    return s_before, s_after, before, after


def test_one_reflow_round_straightens_the_eight_gaussians_flow():
    data = eight_gaussians()
    teacher = data.model_fn(PATH)  # the exact 1-rectified flow
    model = M.MLP(hidden=(128, 128, 128))
    params = M.init(model, jax.random.PRNGKey(1), jnp.zeros((1, 2)))
    student = _reflow_round(teacher, model, params, 10_000, 1500)
    _, _, _, after = _compare(teacher, student, data, "oracle teacher")
    # one Euler step of the reflowed model is already close to the data (energy distance of the
    # ring: 0.03 is a few hundredths of the ring's scale; the teacher's one step gives ~2.9)
    assert after[0]["distance"] < 0.05


@pytest.mark.slow
def test_reflow_of_a_trained_flow_warm_started():
    data = eight_gaussians()
    model, params = _train_velocity_mlp(jax.random.PRNGKey(0), data.sample, 3000)
    teacher = M.model_fn(model, params)
    student = _reflow_round(teacher, model, params, 20_000, 3000)
    _compare(teacher, student, data, "trained teacher, warm start")
    # many-step quality of the reflowed model stays close to the data
    ref = data.sample(jax.random.PRNGKey(30), 2000)
    x = fj.sample(student, PATH, jax.random.PRNGKey(31), (2000, 2), solver="heun", num_steps=50)
    assert float(energy_distance(x.samples, ref)) < 0.05


@pytest.mark.parametrize("warmup", [False, True])
def test_train_on_couplings_ema_of_a_warm_start(warmup):
    """The returned EMA after an optimizer that jumps to fixed weights C at every step equals
    C + (P0 - C) * prod_k d_k, with d_k = decay or min(decay, (1+k)/(10+k)) (written out here)."""
    model = M.MLP(hidden=(8,), out_dim=2)
    p0 = M.init(model, jax.random.PRNGKey(0), jnp.zeros((1, 2)))
    target = jax.tree.map(lambda a: jnp.full_like(a, 0.25), p0)

    def jump(updates, state, params):
        return jax.tree.map(lambda p, c: c - p, params, target), state

    opt = optax.GradientTransformation(lambda p: optax.EmptyState(), jump)
    pairs = np.random.default_rng(0).normal(size=(2, 64, 2)).astype(np.float32)
    steps, decay = 30, 0.999
    ema, _ = R.train_on_couplings(M.make_apply_fn(model), p0, pairs[0], pairs[1], PATH,
                                  num_steps=steps, batch_size=32, optimizer=opt,
                                  ema_decay=decay, ema_warmup=warmup)  # fmt: skip
    k = np.arange(steps)
    d = np.minimum(decay, (1 + k) / (10 + k)) if warmup else np.full(steps, decay)
    keep = float(np.prod(d))
    want = jax.tree.map(lambda a, c: c + (a - c) * keep, p0, target)
    chex.assert_trees_all_close(ema, want, rtol=1e-5, atol=1e-6)
