"""Exact log-likelihoods against the Gaussian-mixture oracle; Hutchinson statistics; bits/dim."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax as fj
from flowjax import likelihood as L
from flowjax.oracle import GaussianMixture, eight_gaussians, two_modes_1d
from tests.conftest import run_python

PATHS = {"condot": fj.CondOT(), "vp_linear": fj.VPLinear(), "ve": fj.VE()}


def bulk(mix, n, key=0):
    """Points in the bulk of the data: samples with log-density above the 10th percentile."""
    x = mix.sample(jax.random.PRNGKey(key), 4 * n)
    lp = mix.data_log_prob(x)
    return x[jnp.argsort(-lp)[:n]]


@pytest.mark.parametrize("pname", list(PATHS))
@pytest.mark.parametrize("mname", ["eight", "oned"])
def test_exact_log_likelihood_matches_oracle(pname, mname, x64):
    path = PATHS[pname]
    mix = eight_gaussians() if mname == "eight" else two_modes_1d()
    x = bulk(mix, 6)
    t0, t1 = L.likelihood_time_range(path, "velocity")
    res = L.log_likelihood(
        mix.model_fn(path),
        path,
        x,
        rtol=1e-6,
        atol=1e-6,
        prior_log_prob=lambda z: mix.log_prob(path, z, t0),  # exact p_{t_start}: isolates the ODE
    )
    assert bool(jnp.all(res.success))
    np.testing.assert_allclose(res.log_prob, mix.log_prob(path, x, t1), atol=1e-3, rtol=0)
    if (
        pname == "condot"
    ):  # alpha(0) = 0: the default N(0, I) prior is exact, and t_end = 1 is the data
        default = L.log_likelihood(mix.model_fn(path), path, x, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(default.log_prob, mix.data_log_prob(x), atol=1e-3, rtol=0)


def test_prior_approximation_at_vp_end_is_small_and_documented(x64):
    """VP's alpha(0) = 6.6e-3: the N(0, I) prior misses p_0 by O(alpha(0) |x| |mu|) nats."""
    path, mix = fj.VPLinear(), two_modes_1d()
    x = bulk(mix, 6)
    t0, t1 = L.likelihood_time_range(path, "velocity")
    res = L.log_likelihood(mix.model_fn(path), path, x, rtol=1e-6, atol=1e-6)
    err = np.abs(np.asarray(res.log_prob - mix.log_prob(path, x, t1)))
    z = res.latent
    gap = np.abs(np.asarray(path.prior_log_prob(z) - mix.log_prob(path, z, t0)))
    np.testing.assert_allclose(err, gap, atol=1e-3)  # the whole error is the prior's
    assert gap.max() < 0.05


@pytest.mark.parametrize("prediction", ["eps", "score", "x1", "v"])
def test_any_parameterization(prediction, x64):
    path, mix = fj.VPCosine(), eight_gaussians()
    x = bulk(mix, 4)
    t0, t1 = L.likelihood_time_range(path, prediction)
    res = L.log_likelihood(
        mix.model_fn(path, prediction),
        path,
        x,
        prediction=prediction,
        rtol=1e-6,
        atol=1e-6,
        prior_log_prob=lambda z: mix.log_prob(path, z, t0),
    )
    np.testing.assert_allclose(res.log_prob, mix.log_prob(path, x, t1), atol=1e-3, rtol=0)


def test_divergence_helpers(x64):
    A = jax.random.normal(jax.random.PRNGKey(0), (6, 6))

    def f(x):
        return jnp.tanh(A @ x.reshape(-1)).reshape(x.shape)

    x = jax.random.normal(jax.random.PRNGKey(1), (2, 3))
    ref = jnp.trace(jax.jacfwd(lambda z: f(z).reshape(-1))(x).reshape(6, 6))
    for chunk in (None, 1, 4, 6):
        fx, div = L.exact_divergence(f, x, chunk)
        np.testing.assert_allclose(div, ref, rtol=1e-12)
        np.testing.assert_allclose(fx, f(x))
    probes = jax.random.rademacher(jax.random.PRNGKey(2), (20000, 2, 3), dtype=jnp.float64)
    _, est = L.hutchinson_divergence(f, x, probes)
    assert abs(float(est.mean() - ref)) < 4 * float(est.std() / math.sqrt(20000))


def test_hutchinson_agrees_with_exact_and_reports_its_error(x64):
    """Hutchinson's mean over probes matches the exact value within 3 SE; its SE matches its spread."""
    path, mix = fj.CondOT(), eight_gaussians()
    x = bulk(mix, 4)
    opts = dict(solver="heun", num_steps=24)  # one grid for both: the trajectory is identical
    exact = L.log_likelihood(mix.model_fn(path), path, x, **opts)
    many = L.log_likelihood(
        mix.model_fn(path),
        path,
        x,
        divergence="hutchinson",
        key=jax.random.PRNGKey(0),
        num_probes=512,
        **opts,
    )
    assert bool(jnp.all(jnp.abs(many.log_prob - exact.log_prob) < 3 * many.stderr + 1e-9))
    np.testing.assert_allclose(many.latent, exact.latent, rtol=1e-12)
    # Repeated K=8 estimates: their spread across keys matches the SE each run reports.
    runs = [
        L.log_likelihood(
            mix.model_fn(path),
            path,
            x,
            divergence="hutchinson",
            key=jax.random.PRNGKey(k),
            num_probes=8,
            **opts,
        )
        for k in range(40)
    ]
    spread = np.std(np.stack([r.log_prob for r in runs]), axis=0, ddof=1)
    reported = np.sqrt(np.mean(np.stack([r.stderr for r in runs]) ** 2, axis=0))
    np.testing.assert_allclose(spread, reported, rtol=0.35)
    gauss = L.log_likelihood(
        mix.model_fn(path),
        path,
        x,
        divergence="hutchinson",
        probe="gaussian",
        key=jax.random.PRNGKey(1),
        num_probes=512,
        **opts,
    )
    assert bool(jnp.all(jnp.abs(gauss.log_prob - exact.log_prob) < 3.5 * gauss.stderr))


def test_samples_with_log_density_agree_with_log_likelihood(x64):
    path, mix = fj.CondOT(), eight_gaussians()
    x, res = L.sample_with_log_prob(
        mix.model_fn(path), path, jax.random.PRNGKey(3), (6, 2), rtol=1e-7, atol=1e-7
    )
    back = L.log_likelihood(mix.model_fn(path), path, x, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(res.log_prob, back.log_prob, atol=1e-4, rtol=0)
    np.testing.assert_allclose(back.latent, res.latent, atol=1e-4)
    np.testing.assert_allclose(res.log_prob, mix.data_log_prob(x), atol=1e-3, rtol=0)


@pytest.mark.slow  # 15-20 s
def test_shared_steps(x64):
    # one solve of the whole batch: on a fixed grid exactly the per-example values (Hutchinson with
    # the same probes too); adaptive, one step count for all and the oracle's value within tolerance
    path, mix = fj.CondOT(), eight_gaussians()
    x = bulk(mix, 12)
    model, key = mix.model_fn(path), jax.random.PRNGKey(2)
    for opts in (
        dict(solver="heun", num_steps=20),
        dict(solver="euler", num_steps=30, divergence="hutchinson", num_probes=3, key=key),
    ):
        ref = L.log_likelihood(model, path, x, **opts)
        got = L.log_likelihood(model, path, x, shared_steps=True, **opts)
        np.testing.assert_allclose(got.log_prob, ref.log_prob, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(got.stderr, ref.stderr, rtol=1e-10, atol=1e-10)
    t0, _ = L.likelihood_time_range(path, "velocity")
    exact_prior = lambda z: mix.log_prob(path, z, t0)  # noqa: E731
    per = L.log_likelihood(model, path, x, rtol=1e-6, atol=1e-6, prior_log_prob=exact_prior)
    shared = L.log_likelihood(
        model, path, x, rtol=1e-6, atol=1e-6, prior_log_prob=exact_prior, shared_steps=True
    )
    assert bool(jnp.all(shared.success)) and shared.nfe.shape == (x.shape[0],)
    assert len(set(np.asarray(shared.nfe).tolist())) == 1
    truth = mix.data_log_prob(x)
    assert float(jnp.max(jnp.abs(shared.log_prob - truth))) < 1e-3
    assert float(jnp.max(jnp.abs(per.log_prob - truth))) < 1e-3


def test_bits_per_dim_offsets(x64):
    # A uniform density on [-1, 1]^D (2^-D) over 8-bit data is exactly 8 bits/dim; on [0, 1] the
    # uniform density is 1 and also gives 8; 17 levels (digits) give log2(17).
    D = 12
    assert float(L.bits_per_dim(jnp.array([-D * math.log(2.0)]), dim=D)[0]) == pytest.approx(8.0)
    assert float(L.bits_per_dim(jnp.zeros(1), dim=D, data_range=(0.0, 1.0))[0]) == pytest.approx(
        8.0
    )
    assert float(
        L.bits_per_dim(jnp.zeros(1), dim=D, num_levels=17, data_range=(0.0, 1.0))[0]
    ) == pytest.approx(math.log2(17))


def test_bits_per_dim_of_a_gaussian_image_model(x64):
    """A Gaussian 'image' model: the ODE's bits/dim equal the closed form on the same dequantized data."""
    shape = (4, 2, 2, 1)
    D = 4
    mean, std = 0.1, 0.5
    data = GaussianMixture([1.0], jnp.full((1, D), mean), jnp.full((1, D), std**2))
    path = fj.CondOT()

    def model_fn(x, t):  # images [B, 2, 2, 1] -> the exact velocity of the Gaussian
        return data.velocity(path, x.reshape(x.shape[0], D), t).reshape(x.shape)

    images = jax.random.randint(jax.random.PRNGKey(0), shape, 0, 256)
    key = jax.random.PRNGKey(1)
    bpd, res = L.image_bits_per_dim(model_fn, path, images, key, rtol=1e-7, atol=1e-7)
    k_deq = jax.random.split(jax.random.split(key, 1)[0])[0]  # the draw image_bits_per_dim made
    x = fj.data.dequantize(k_deq, images, 256)
    exact_lp = data.data_log_prob(x.reshape(4, D))
    closed = -exact_lp / (D * math.log(2)) - 1.0 + 8.0
    np.testing.assert_allclose(bpd, closed, atol=1e-4)
    np.testing.assert_allclose(res.log_prob, exact_lp, atol=1e-3)


def test_bad_input():
    path, mix = fj.CondOT(), eight_gaussians()
    x = mix.sample(jax.random.PRNGKey(0), 5)
    with pytest.raises(ValueError, match=r"x contains NaN or infinite values in row\(s\) \[1, 3\]"):
        L.log_likelihood(mix.model_fn(path), path, x.at[1, 0].set(jnp.nan).at[3, 1].set(jnp.inf))
    with pytest.raises(TypeError, match=r"integer dtype uint8.*dequantize"):
        L.log_likelihood(mix.model_fn(path), path, jnp.zeros((2, 4, 4, 1), jnp.uint8))
    with pytest.raises(
        ValueError, match="unknown divergence 'trace'; valid choices are: exact, hutchinson"
    ):
        L.log_likelihood(mix.model_fn(path), path, x, divergence="trace")
    with pytest.raises(ValueError, match="needs a PRNG key"):
        L.log_likelihood(mix.model_fn(path), path, x, divergence="hutchinson")
    with pytest.raises(ValueError, match="has no error estimate"):
        L.log_likelihood(mix.model_fn(path), path, x, solver="euler")
    with pytest.raises(ValueError, match="model_fn returned shape"):
        L.log_likelihood(lambda x, t: x[:, :1], path, x)
    with pytest.raises(ValueError, match="valid range"):
        L.log_likelihood(mix.model_fn(path), path, x, t_end=1.5)
    # an empty batch is named (it was a ZeroDivisionError in the batch chunking)
    with pytest.raises(ValueError, match=r"x must hold at least one example.*\(0, 2\)"):
        L.log_likelihood(mix.model_fn(path), path, jnp.zeros((0, 2)))
    with pytest.raises(ValueError, match=r"x must hold at least one example"):
        L.log_likelihood(mix.model_fn(path), path, np.zeros((0, 2), np.float32), num_steps=4)
    with pytest.raises(ValueError, match=r"shape must be \(B, \.\.\.\) with positive sizes"):
        L.sample_with_log_prob(mix.model_fn(path), path, jax.random.PRNGKey(0), (0, 2))
    chex.assert_shape(x, (5, 2))


def test_nfe_matches_counted_model_calls():
    """The reported NFE equals the number of model evaluations, counted with a host callback."""
    path, mix = fj.CondOT(), eight_gaussians()
    count = [0]

    def model_fn(x, t):
        jax.debug.callback(lambda: count.__setitem__(0, count[0] + 1))
        return mix.velocity(path, x, t)

    x = mix.sample(jax.random.PRNGKey(0), 1)
    for solver, n in [
        ("euler", 7),  # fixed steps, one call per step
        ("heun", 5),  # fixed, two stages
        ("tsit5", 4),  # fixed, first-same-as-last
        ("dopri5", None),  # adaptive, first-same-as-last (rejected steps counted)
        ("dopri8", None),  # adaptive, not FSAL
    ]:
        count[0] = 0
        res = L.log_likelihood(model_fn, path, x, solver=solver, num_steps=n)
        jax.effects_barrier()
        assert int(res.nfe[0]) == count[0], solver


@pytest.mark.multiprocess
def test_eight_devices_match_one():
    out = run_python(
        """
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
        jax.config.update("jax_enable_x64", True)
        import flowjax as fj
        from flowjax import likelihood as L
        assert jax.device_count() == 8
        path, mix = fj.CondOT(), fj.oracle.eight_gaussians()
        x = mix.sample(jax.random.PRNGKey(0), 16) * 1.5   # some far points: step counts differ
        one = L.log_likelihood(mix.model_fn(path), path, x)
        # Auto axis types (GSPMD): diffrax's loops mix sharded and unsharded operands, which
        # Explicit-mode meshes reject.
        mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
        xs = jax.device_put(x, NamedSharding(mesh, P("data")))
        many = L.log_likelihood(mix.model_fn(path), path, xs)
        assert len(set(np.asarray(one.num_steps).tolist())) > 1, "want differing step counts"
        assert many.log_prob.sharding.spec[0] == "data"
        np.testing.assert_allclose(np.asarray(many.log_prob), np.asarray(one.log_prob), rtol=1e-10)
        print("OK", np.asarray(one.num_steps).tolist())
        """,
        devices=8,
        timeout=300,
    )
    assert "OK" in out
