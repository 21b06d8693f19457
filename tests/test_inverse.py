"""Inverse problems: operators, exact posterior sampling on the oracle, DPS and PiGDM against it.

Ground truth: for a Gaussian-mixture prior and ``y = A x1 + n`` the posterior is the mixture
:meth:`GaussianMixture.posterior`; its samples are exact. Energy distances pass below ``m + 4 s`` of
the finite-sample floor (keys fixed). For the approximate methods the error against the exact
posterior is measured and printed (run with ``-s``; also attached with ``record_property``), and
checked against a bound derived from replicates (see ``APPROXIMATE``).
"""

from collections.abc import Callable

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax as fj
from flowjax import inverse as I
from flowjax.distances import energy_distance, finite_sample_floor
from flowjax.oracle import GaussianMixture, eight_gaussians
from flowjax.sampling import sample

N = 2000
SIGMAS = 4.0
_ed = jax.jit(energy_distance)


@eqx.filter_jit
def call(model, x, t):
    """``model(x, t)`` compiled (eager oracle evaluations dispatch hundreds of small ops)."""
    return model(x, t)


# The 2-D mixture observed through its first coordinate: y = x1[0] + n.
Y = jnp.array([2.0])
NOISE = 0.5


def first_coordinate():
    return I.MatrixOperator(jnp.array([[1.0, 0.0]]))


@pytest.fixture(scope="module")
def ring_posterior():
    post = I.exact_posterior(eight_gaussians(), first_coordinate(), Y, NOISE)
    m, s = finite_sample_floor(_ed, post.sample, jax.random.PRNGKey(10), N, 10)
    ref = post.sample(jax.random.PRNGKey(11), N)
    prior_err = float(_ed(eight_gaussians().sample(jax.random.PRNGKey(12), N), ref))
    return post, float(m + SIGMAS * s), ref, prior_err


# ------------------------------------------------------------------ operators


def test_operators_agree_with_their_matrices(x64):
    key = jax.random.PRNGKey(0)
    A = jax.random.normal(key, (3, 6))
    mask = np.zeros((2, 3, 1), bool)
    mask[0, :, 0] = True
    mask[1, 2, 0] = True
    ops = [
        I.MatrixOperator(A, in_shape=(2, 3, 1)),
        I.Inpainting(mask),
        I.Identity((2, 3, 1)),
    ]
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 2, 3, 1))
    for op in ops:
        M = op.matrix()
        y = op.apply(x)
        assert y.shape == (5, op.out_dim) and M.shape == (op.out_dim, 6)
        np.testing.assert_allclose(y, x.reshape(5, -1) @ M.T, rtol=1e-12)
        z = jax.random.normal(jax.random.PRNGKey(2), (5, op.out_dim))
        # adjoint: <A x, z> = <x, A^T z>
        np.testing.assert_allclose(
            jnp.sum(y * z, 1), jnp.sum((x * op.adjoint(z)).reshape(5, -1), 1), rtol=1e-12
        )
        # pseudo-inverse: A A^+ z = z (full row rank)
        np.testing.assert_allclose(op.apply(op.pinv(z)), z, rtol=1e-10, atol=1e-12)
        # (r^2 A A^T + s^2 I)^{-1} v against a dense solve, per-row r^2
        r2 = jnp.linspace(0.1, 2.0, 5)
        got = op.gram_solve(z, r2, 0.3)
        want = jnp.stack([jnp.linalg.solve(r * M @ M.T + 0.3 * jnp.eye(op.out_dim), zz)
                          for r, zz in zip(r2, z, strict=True)])  # fmt: skip
        np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_array_equal(ops[1].mask(), mask)


def test_measure_adds_gaussian_noise():
    op = I.Identity((2,))
    x = jnp.zeros((20000, 2))
    y = I.measure(jax.random.PRNGKey(0), op, x, 0.3)
    np.testing.assert_allclose(jnp.std(y, axis=0), 0.3, rtol=0.03)


# ------------------------------------------------------------------ exact posterior


def _posterior_by_information_form(weights, means, variances, A, y, noise_std):
    """The posterior of a diagonal-covariance mixture given ``y = A x + n`` (numpy, float64),
    written independently of flowjax: precision form ``P_k = S_k^-1 + A^T A / s^2``, mean
    ``P_k^-1 (S_k^-1 mu_k + A^T y / s^2)``, and weights ``w_k N(y; A mu_k, A S_k A^T + s^2 I)``
    evaluated through the determinant and inverse of the predictive covariance."""
    A, y = np.asarray(A, np.float64), np.asarray(y, np.float64)
    s2 = float(noise_std) ** 2
    log_w, post_means, post_covs = [], [], []
    for w, mu, var in zip(
        np.asarray(weights), np.asarray(means), np.asarray(variances), strict=True
    ):
        S_inv = np.diag(1.0 / var)
        cov = np.linalg.inv(S_inv + A.T @ A / s2)
        post_covs.append(cov)
        post_means.append(cov @ (S_inv @ mu + A.T @ y / s2))
        pred = A @ np.diag(var) @ A.T + s2 * np.eye(len(y))
        r = y - A @ mu
        _, logdet = np.linalg.slogdet(2 * np.pi * pred)
        log_w.append(np.log(w) - 0.5 * (logdet + r @ np.linalg.solve(pred, r)))
    log_w = np.array(log_w)
    return np.exp(log_w - log_w.max()) / np.exp(log_w - log_w.max()).sum(), post_means, post_covs


def test_exact_posterior_matches_an_independent_closed_form_and_bayes_on_a_grid(x64):
    mix = eight_gaussians()
    A = np.array([[1.0, 0.5]])
    op = I.MatrixOperator(jnp.asarray(A))
    y, noise = np.array([1.0]), 0.2
    post = I.exact_posterior(mix, op, jnp.asarray(y), noise)
    w, mu, cov = _posterior_by_information_form(mix.weights, mix.means, mix.covs, A, y, noise)
    chex.assert_trees_all_close(
        (post.weights, post.means, post.full_covs()),
        (w, np.stack(mu), np.stack(cov)),
        rtol=1e-10,
        atol=1e-12,
    )
    # and Bayes' rule by brute force: prior density x likelihood on a grid over [-7, 7]^2,
    # normalised by the midpoint sum. For Gaussians on a uniform grid that sum converges faster
    # than any power of h (error ~ exp(-2 pi^2 sigma^2 / h^2); sigma >= 0.16, the posterior's
    # smallest std, so nothing at h = 0.04), and the mass outside the grid is below 1e-9 (every
    # component mean is 4 from the origin with std 0.5: 6 std inside): what is left is rounding
    # (measured: 3e-14).
    h = 0.04
    g1, g2 = np.meshgrid(np.arange(-7, 7, h) + h / 2, np.arange(-7, 7, h) + h / 2, indexing="ij")
    pts = np.stack([g1.ravel(), g2.ravel()], 1)
    prior = np.zeros(len(pts))
    for wk, mk, vk in zip(
        np.asarray(mix.weights), np.asarray(mix.means), np.asarray(mix.covs), strict=True
    ):
        prior += (
            wk * np.exp(-0.5 * np.sum((pts - mk) ** 2 / vk, 1)) / (2 * np.pi * np.sqrt(vk.prod()))
        )
    like = np.exp(-0.5 * ((pts @ A.T)[:, 0] - y[0]) ** 2 / noise**2)
    bayes = prior * like / np.sum(prior * like * h * h)
    got = np.exp(np.asarray(post.log_prob(fj.CondOT(), jnp.asarray(pts))))
    err = np.max(np.abs(got - bayes)) / np.max(bayes)
    assert err < 1e-8, err
    # the posterior is far from the prior: the comparisons can tell them apart
    assert np.max(np.abs(got - prior)) > 0.5 * np.max(bayes)


def test_posterior_model_fn_rows_are_single_measurement_models(x64):
    mix = eight_gaussians()
    op = I.MatrixOperator(jnp.array([[1.0, 0.5]]))
    # batched measurements: row i of the batched model is the single-y model of y[i]
    ys = jnp.array([[1.0], [-2.0], [3.5]])
    path = fj.VPLinear()
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 2))
    t = jnp.array([0.2, 0.5, 0.9])
    batched = I.posterior_model_fn(mix, op, ys, 0.2, path=path, prediction="eps")
    singles = [
        I.posterior_model_fn(mix, op, ys[i], 0.2, path=path, prediction="eps") for i in range(3)
    ]
    got, rows = jax.jit(
        lambda b, ss: (b(x, t), [s(x[i : i + 1], t[i : i + 1])[0] for i, s in enumerate(ss)])
    )(batched, singles)
    np.testing.assert_allclose(got, jnp.stack(rows), rtol=1e-10)
    draws = batched.sample(jax.random.PRNGKey(1))
    assert draws.shape == (3, 2) and np.all(np.isfinite(draws))


@pytest.mark.parametrize(
    "path, prediction, kw",
    [
        (fj.CondOT(), "velocity", dict(solver="heun", num_steps=100)),
        (fj.VPLinear(), "score", dict(method="sde", num_steps=1000)),
    ],
    ids=["condot-velocity-ode", "vp-score-reverse-sde"],
)
def test_exact_posterior_sampling_matches_the_posterior_mixture(
    ring_posterior, path, prediction, kw
):
    _, tol, ref, prior_err = ring_posterior
    model = I.posterior_model_fn(eight_gaussians(), first_coordinate(), Y, NOISE, path=path,
                                 prediction=prediction)  # fmt: skip
    x = sample(model, path, jax.random.PRNGKey(1), (N, 2), prediction=prediction, **kw).samples
    err = float(_ed(x, ref))
    assert err < tol, (err, tol)
    assert prior_err > 100 * tol  # the posterior is far from the prior: the check has teeth


def test_pigdm_is_exact_for_a_gaussian_prior(x64):
    """For a prior N(mu, v I) and an exact model, p(x1 | x_t) is N(x1_hat, r_t^2 I): PiGDM's
    measurement score is the exact one, in every parameterization (pointwise, float64)."""
    v = 0.7
    prior = GaussianMixture(jnp.ones(1), jnp.array([[1.0, -0.5, 2.0]]), jnp.full((1, 3), v))
    op = I.MatrixOperator(jax.random.normal(jax.random.PRNGKey(0), (2, 3)))
    y = jnp.array([0.3, -1.2])
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 3))
    t = jnp.linspace(0.05, 0.95, 8)
    for path in (fj.CondOT(), fj.VPCosine(), fj.VE()):

        @jax.jit
        def both(x, t, path=path):  # one compilation per path for all five predictions
            out = []
            for prediction in fj.PREDICTIONS:
                approx = I.pigdm(prior.model_fn(path, prediction), op, y, path=path,
                                 prediction=prediction, noise_std=0.3, data_var=v)  # fmt: skip
                exact = I.posterior_model_fn(prior, op, y, 0.3, path=path, prediction=prediction)
                out.append((approx(x, t), exact(x, t)))
            return out

        for prediction, (a, e) in zip(fj.PREDICTIONS, both(x, t), strict=True):
            np.testing.assert_allclose(a, e, rtol=1e-8, atol=1e-10, err_msg=prediction)
    # DPS (a point mass at the denoiser) is not exact: it over-weights the measurement
    dps = I.dps(prior.model_fn(path, "score"), op, y, path=path, prediction="score", noise_std=0.3)
    exact = I.posterior_model_fn(prior, op, y, 0.3, path=path, prediction="score")
    assert float(jnp.max(jnp.abs(call(dps, x, t) - call(exact, x, t)))) > 1e-2


# The energy distance of DPS and PiGDM (N = 2000 samples each) to the exact posterior: the mean
# and standard deviation over 8 replicates, each with its own keys (PRNGKey(1000 + r) split into
# the method's key and the exact posterior's; not the test's keys), measured on CPU in float32
# with the samplers of the test below. The estimator is a U-statistic, asymptotically normal with
# a spread of order 1/sqrt(N) when the two laws differ, so the test's value (one more draw of the
# same statistic) lies below mean + 4 sd sqrt(1 + 1/8) (a 4-sigma prediction interval for a new
# draw given the replicates' mean and sd) unless the method or the samplers changed. DPS and
# PiGDM-ODE's approximation errors are far above the finite-sample floor (m + 4 s = 0.011);
# PiGDM with the reverse SDE is within it.
APPROXIMATE = {  # name: (mean, sd) over the replicates
    "dps_ode": (0.3179, 0.0132),
    "dps_sde": (0.0195, 0.0055),
    "pigdm_ode": (0.0867, 0.0076),
    "pigdm_sde": (0.0054, 0.0048),
}
REPLICATES = 8


def test_approximate_posteriors_against_the_exact_one(ring_posterior, record_property):
    """DPS and PiGDM on the 8-Gaussians ring observed through x[0] = 2 (noise 0.5), sampled with
    the probability-flow ODE and with the reverse SDE: their energy distance to the exact posterior
    is recorded, and must lie below the bound derived from replicates (``APPROXIMATE``)."""
    _, tol, ref, prior_err = ring_posterior
    path, mix, op = fj.CondOT(), eight_gaussians(), first_coordinate()
    prior = mix.model_fn(path)
    methods = {
        "dps": I.dps(prior, op, Y, path=path, noise_std=NOISE),
        "pigdm": I.pigdm(prior, op, Y, path=path, noise_std=NOISE, data_var=mix.covs[0, 0]),
    }
    samplers = {
        "ode": dict(solver="heun", num_steps=100),
        "sde": dict(method="sde", num_steps=500),
    }
    errs = {}
    for m, model in methods.items():
        for s, kw in samplers.items():
            x = sample(model, path, jax.random.PRNGKey(2), (N, 2), **kw).samples
            errs[f"{m}_{s}"] = float(_ed(x, ref))
    print(f"\nenergy distance to the exact posterior (floor m+4s = {tol:.4f}, prior {prior_err:.4f}):",
          {k: round(val, 4) for k, val in errs.items()})  # fmt: skip
    for k, val in errs.items():
        record_property(f"energy_distance_{k}", val)
        mean, sd = APPROXIMATE[k]
        bound = mean + 4 * sd * np.sqrt(1 + 1 / REPLICATES)
        assert np.isfinite(val) and val < bound, (k, val, bound)
    # the bounds are tight compared with what they guard: the prior is far further away
    assert max(m + 4 * sd for m, sd in APPROXIMATE.values()) < 0.5 * prior_err, prior_err
    # the stochastic sampler corrects most of the approximation error of both methods
    assert errs["pigdm_sde"] < errs["pigdm_ode"] and errs["dps_sde"] < errs["dps_ode"]


class Flat(eqx.Module):
    """A 16-D model seen as a model of 4x4x1 images."""

    f: Callable

    def __call__(self, x, t):
        return self.f(x.reshape(x.shape[0], -1), t).reshape(x.shape)


def test_dps_and_pigdm_on_images_any_prediction_same_samples():
    """Image-shaped events with a mask and one y per sample: the wrappers keep x's shape, and the
    measurement guidance means the same in every parameterization (equal samples)."""
    mask = np.zeros((4, 4, 1), bool)
    mask[:2] = True
    op = I.Inpainting(mask)
    prior = GaussianMixture(jnp.ones(1), jnp.zeros((1, 16)), jnp.ones((1, 16)))
    path = fj.VPLinear()
    y = jnp.ones((6, op.out_dim))
    xs = jax.random.normal(jax.random.PRNGKey(1), (6, 4, 4, 1))
    ts = jnp.linspace(0.1, 0.9, 6)
    for build in (I.dps, I.pigdm):

        @jax.jit
        def as_velocity(x, t, build=build):
            out = []
            for prediction in ("eps", "x1", "v", "velocity"):
                model = build(Flat(prior.model_fn(path, prediction)), op, y, path=path,
                              prediction=prediction, noise_std=0.1)  # fmt: skip
                out.append(fj.convert(model(x, t), source=prediction, target="velocity",
                                      path=path, x=x, t=t))  # fmt: skip
            return out

        vel = as_velocity(xs, ts)
        for other in vel[:-1]:
            np.testing.assert_allclose(other, vel[-1], rtol=1e-3, atol=1e-3)  # float32
        model = build(Flat(prior.model_fn(path, "eps")), op, y, path=path, prediction="eps",
                      noise_std=0.1)  # fmt: skip
        x = sample(model, path, jax.random.PRNGKey(0), (6, 4, 4, 1), prediction="eps",
                   num_steps=100).samples  # fmt: skip
        assert x.shape == (6, 4, 4, 1)
        # exact posterior: observed pixels N(1/1.01, 0.0995^2), the others N(0, 1)
        assert abs(float(jnp.mean(x[:, :2])) - 1 / 1.01) < 0.1
        assert 0.7 < float(jnp.std(x[:, 2:])) < 1.3


def test_guidance_start_switches_the_measurement_term_off_before_it():
    mix, path, op = eight_gaussians(), fj.CondOT(), first_coordinate()
    prior = mix.model_fn(path)
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 2))
    t = jnp.array([0.3, 0.5, 0.7, 0.9])
    for build in (I.dps, I.pigdm):
        model = build(prior, op, Y, path=path, noise_std=NOISE, guidance_start=0.6)
        out, base = call(model, x, t), call(prior, x, t)
        np.testing.assert_array_equal(out[:2], base[:2])
        assert float(jnp.min(jnp.abs(out[2:] - base[2:]))) > 1e-3


# ------------------------------------------------------------------ bad input


def test_bad_operator_measurement_and_noise_are_named():
    mix = eight_gaussians()
    path = fj.CondOT()
    model = mix.model_fn(path)
    wide = I.MatrixOperator(jnp.ones((1, 3)))
    with pytest.raises(
        ValueError, match=r"operator A .*\[1, 3\].*acts on x of shape \[B, \*\(3,\)\].*\(4, 2\)"
    ):
        wide.apply(jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"acts on events of shape \(3,\).*shape \(2,\)"):
        I.posterior_model_fn(mix, wide, jnp.zeros(1), 0.1, path=path)
    guided = I.dps(model, wide, jnp.zeros(1), path=path, noise_std=0.1)
    with pytest.raises(ValueError, match=r"operator A .*acts on x of shape"):
        sample(guided, path, jax.random.PRNGKey(0), (4, 2))
    op = first_coordinate()
    nan_y = jnp.array([jnp.nan])
    for call in (
        lambda: I.dps(model, op, nan_y, path=path, noise_std=0.1),
        lambda: I.pigdm(model, op, nan_y, path=path, noise_std=0.1),
        lambda: I.posterior_model_fn(mix, op, nan_y, 0.1, path=path),
        lambda: I.exact_posterior(mix, op, nan_y, 0.1),
    ):
        with pytest.raises(
            ValueError, match=r"y contains NaN or infinite values in row\(s\) \[0\]"
        ):
            call()
    with pytest.raises(ValueError, match=r"y contains NaN .* row\(s\) \[1\]"):
        I.pigdm(model, op, jnp.array([[0.0], [jnp.nan]]), path=path, noise_std=0.1)
    with pytest.raises(ValueError, match=r"y must have shape \[m\] or \[B, m\] with m = 1"):
        I.dps(model, op, jnp.zeros(2), path=path, noise_std=0.1)
    with pytest.raises(ValueError, match=r"y has 3 measurements"):
        I.dps(model, op, jnp.zeros((3, 1)), path=path, noise_std=0.1)(jnp.zeros((4, 2)), 0.5)
    with pytest.raises(ValueError, match="noise_std = 0 divides by zero"):
        I.dps(model, op, jnp.zeros(1), path=path, noise_std=0.0)
    with pytest.raises(ValueError, match="noise_std must be >= 0"):
        I.pigdm(model, op, jnp.zeros(1), path=path, noise_std=-1.0)
    with pytest.raises(ValueError, match=r"A has shape \(1, 3\): 3 columns, but in_shape \(2, 2\)"):
        I.MatrixOperator(jnp.ones((1, 3)), in_shape=(2, 2))
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        I.Inpainting(np.ones((2, 2)))
    with pytest.raises(ValueError, match="observes nothing"):
        I.Inpainting(np.zeros((2, 2), bool))
    with pytest.raises(TypeError, match="A must be a floating-point array"):
        I.MatrixOperator(jnp.ones((1, 2), jnp.int32))
