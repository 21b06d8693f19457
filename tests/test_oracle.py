"""The Gaussian-mixture oracle: exact densities, scores and predictions on every path."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import flowjax as fj
from flowjax.oracle import GaussianMixture, eight_gaussians, two_modes_1d, two_modes_2d

PATHS = {
    "condot": fj.CondOT(),
    "vp_linear": fj.VPLinear(),
    "vp_cosine": fj.VPCosine(),
    "subvp": fj.SubVP(),
    "ve": fj.VE(sigma_max=10.0),
    "edm": fj.EDM(sigma_max=10.0),
}


def full_cov_mixture():
    covs = np.array(
        [[[1.0, 0.6], [0.6, 0.8]], [[0.3, -0.1], [-0.1, 0.5]], [[0.5, 0.0], [0.0, 0.2]]]
    )
    return GaussianMixture([0.2, 0.5, 0.3], [[-2.0, 1.0], [1.5, 0.0], [0.0, -2.0]], covs)


MIXTURES = {"eight": eight_gaussians, "full": full_cov_mixture, "oned": two_modes_1d}


def points(mix, n, key=0, scale=1.0):
    return mix.sample(jax.random.PRNGKey(key), n) * scale


@pytest.mark.parametrize("mname", list(MIXTURES))
@pytest.mark.parametrize("pname", list(PATHS))
def test_score_is_gradient_of_log_density(pname, mname, x64):
    path, mix = PATHS[pname], MIXTURES[mname]()
    x = points(mix, 12)
    for t in (path.t_min, 0.3, 0.8, path.t_max):
        grad = jax.vmap(jax.grad(lambda xi, t=t: mix.log_prob(path, xi[None], t)[0]))(x)
        chex.assert_trees_all_close(
            mix.score(path, x, t), grad, rtol=1e-7, atol=1e-9, custom_message=f"t={t}"
        )


@pytest.mark.parametrize("mname", list(MIXTURES))
@pytest.mark.parametrize("pname", list(PATHS))
def test_continuity_equation(pname, mname, x64):
    """d/dt log p_t(x) = -div u_t(x) - u_t(x) . score_t(x)  (i.e. d/dt p = -div(p u))."""
    path, mix = PATHS[pname], MIXTURES[mname]()
    x = points(mix, 6, key=3) * 0.8
    h = 1e-5
    for t in (0.2, 0.5, 0.8):
        dlogp = (mix.log_prob(path, x, t + h) - mix.log_prob(path, x, t - h)) / (2 * h)
        u = mix.velocity(path, x, t)
        s = mix.score(path, x, t)
        jac = jax.vmap(jax.jacfwd(lambda xi, t=t: mix.velocity(path, xi[None], t)[0]))(x)
        div = jnp.trace(jac, axis1=1, axis2=2)
        chex.assert_trees_all_close(dlogp, -div - jnp.sum(u * s, axis=1), rtol=1e-5, atol=1e-5)


def test_seed_mixture_scores(x64):
    # Ch. 1: 0.5 N((-2,0), 0.49 I) + 0.5 N((2,0), 0.49 I): score (-2.04, 0) at (3, 0), 0 at the origin.
    mix = two_modes_2d()
    s = mix.score(fj.CondOT(), jnp.array([[3.0, 0.0], [0.0, 0.0]]), 1.0)
    chex.assert_trees_all_close(s, np.asarray([[-2.04, 0.0], [0.0, 0.0]]), rtol=1e-7, atol=1e-2)
    chex.assert_trees_all_close(s[0, 0], -1 / 0.49, rtol=1e-9)


def test_gaussian_seed_examples(x64):
    # Ch. 1: N(3, 1): score -2 at x = 5, +2 at x = 1, 0 at 3; quiz N(5, 4) at x = 9: -1.
    g = GaussianMixture([1.0], [[3.0]], [[1.0]])
    chex.assert_trees_all_close(
        g.score(fj.CondOT(), jnp.array([[5.0], [1.0], [3.0]]), 1.0),
        np.asarray([[-2.0], [2.0], [0.0]]),
        rtol=1e-7,
    )
    g = GaussianMixture([1.0], [[5.0]], [[4.0]])
    chex.assert_trees_all_close(
        g.score(fj.CondOT(), jnp.array([[9.0]]), 1.0), np.asarray([[-1.0]]), rtol=1e-7
    )


def numpy_mixture_posterior(weights, means, covs, al, be, ad, bd, x):
    """Log density, score and E[x1 | x], E[eps | x], velocity, v of a Gaussian mixture on a path.

    Written directly in numpy with per-point loops, independent of flowjax.oracle: x_t = al x1 +
    be eps with x1 ~ sum_k w_k N(m_k, S_k) has components N(al m_k, C_k), C_k = al^2 S_k + be^2 I;
    given component k, E[x1 | x, k] = m_k + al S_k C_k^-1 (x - al m_k) (Gaussian conditioning);
    E[eps | x] = (x - al E[x1 | x]) / be, or be sum_k r_k C_k^-1 (x - al m_k) (used where be is 0).
    """
    out = {k: [] for k in ("log_prob", "score", "x1", "eps")}
    d = x.shape[1]
    for i in range(x.shape[0]):
        logs, scores, x1s, epss = [], [], [], []
        for w, m, S in zip(weights, means, covs, strict=True):
            C = al[i] ** 2 * S + be[i] ** 2 * np.eye(d)
            r = x[i] - al[i] * m
            Ci_r = np.linalg.solve(C, r)
            _, logdet = np.linalg.slogdet(C)
            logs.append(np.log(w) - 0.5 * (r @ Ci_r + logdet + d * np.log(2 * np.pi)))
            scores.append(-Ci_r)
            x1s.append(m + al[i] * S @ Ci_r)
            epss.append(be[i] * Ci_r)
        logs = np.array(logs)
        top = logs.max()
        log_p = top + np.log(np.sum(np.exp(logs - top)))
        resp = np.exp(logs - log_p)
        out["log_prob"].append(log_p)
        out["score"].append(resp @ np.array(scores))
        out["x1"].append(resp @ np.array(x1s))
        out["eps"].append(resp @ np.array(epss))
    out = {k: np.array(v) for k, v in out.items()}
    col = lambda c: c[:, None]  # noqa: E731
    out["velocity"] = col(ad) * out["x1"] + col(bd) * out["eps"]
    out["v"] = col(al) * out["eps"] - col(be) * out["x1"]
    return out


def _covs_of(mix):
    covs = np.asarray(mix.covs)
    return np.stack([np.diag(c) for c in covs]) if covs.ndim == 2 else covs


@pytest.mark.parametrize("mname", list(MIXTURES))
def test_predictions_match_a_numpy_reference(mname, x64):
    mix = MIXTURES[mname]()
    x = np.asarray(points(mix, 10)) * 1.3
    w, m, S = np.asarray(mix.weights), np.asarray(mix.means), _covs_of(mix)
    for path in PATHS.values():
        t = np.linspace(path.t_min + 0.05, path.t_max - 0.05, 10)
        al, be, ad, bd = (np.asarray(c) for c in path.coefficients(jnp.asarray(t)))
        ref = numpy_mixture_posterior(w, m, S, al, be, ad, bd, x)
        got = {k: mix.predict(k, path, jnp.asarray(x), jnp.asarray(t)) for k in fj.PREDICTIONS}
        got["log_prob"] = mix.log_prob(path, jnp.asarray(x), jnp.asarray(t))
        chex.assert_trees_all_close(got, ref, rtol=1e-9, atol=1e-9)


def test_density_normalises_1d(x64):
    mix = two_modes_1d()
    grid = jnp.linspace(-80, 80, 80001)[:, None]
    for path in PATHS.values():
        for t in (0.0, 0.5, path.t_max):
            p = jnp.exp(mix.log_prob(path, grid, t))
            assert float(jnp.trapezoid(p, grid[:, 0])) == pytest.approx(1.0, abs=1e-6)


def test_endpoints_of_predictions(x64):
    mix = full_cov_mixture()
    x = points(mix, 5)
    path = fj.CondOT()
    # At t = 1 (beta = 0) the denoiser is the identity; at t = 0 (alpha = 0) it is the data mean.
    chex.assert_trees_all_close(mix.x1(path, x, 1.0), x, rtol=1e-7, atol=1e-12)
    chex.assert_trees_all_close(
        mix.x1(path, x, 0.0),
        jnp.broadcast_to(mix.weights @ mix.means, x.shape),
        rtol=1e-7,
        atol=1e-12,
    )
    chex.assert_trees_all_close(mix.eps(path, x, 0.0), x, rtol=1e-7, atol=1e-12)
    # And the time-0 marginal is the prior N(0, I).
    chex.assert_trees_all_close(mix.log_prob(path, x, 0.0), path.prior_log_prob(x), rtol=1e-12)


def test_sampling_moments(x64):
    mix = full_cov_mixture()
    x, labels = mix.sample_with_labels(jax.random.PRNGKey(0), 200_000)
    mean = mix.weights @ mix.means
    second = jnp.einsum(
        "k,kij->ij", mix.weights, mix.covs + jnp.einsum("ki,kj->kij", mix.means, mix.means)
    )
    chex.assert_trees_all_close(x.mean(0), mean, rtol=1e-7, atol=0.02)
    chex.assert_trees_all_close(jnp.cov(x.T), second - jnp.outer(mean, mean), rtol=1e-7, atol=0.03)
    chex.assert_trees_all_close(
        jnp.bincount(labels, length=3) / 200_000, mix.weights, rtol=1e-7, atol=0.005
    )


def test_class_conditional(x64):
    mix = eight_gaussians()
    x = points(mix, 7)
    labels = jnp.array([0, 1, 2, 3, 4, 5, 6])
    path = fj.VPLinear()
    for k in range(3):
        comp = mix.component(k)
        lab = jnp.full((7,), k)
        chex.assert_trees_all_close(
            mix.score(path, x, 0.4, labels=lab), comp.score(path, x, 0.4), rtol=1e-10
        )
    r = mix.responsibilities(path, x, 0.9)
    chex.assert_shape(r, (7, 8))
    chex.assert_trees_all_close(r.sum(1), 1.0, rtol=1e-7)
    # Bayes: p(x) p(k | x) = w_k p(x | k)
    chex.assert_trees_all_close(
        mix.log_prob(path, x, 0.9) + jnp.log(r[jnp.arange(7), labels]),
        jnp.log(mix.weights[labels]) + mix.log_prob(path, x, 0.9, labels=labels),
        rtol=1e-9,
    )
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 8\); got \[9\]"):
        mix.score(path, x, 0.4, labels=jnp.array([0, 1, 2, 3, 4, 5, 9]))


def test_posterior_matches_bayes_on_a_grid(x64):
    mix = two_modes_2d()
    A = jnp.array([[1.0, 0.5]])
    y, s = jnp.array([0.8]), 0.5
    post = mix.posterior(A, y, s)
    g = jnp.linspace(-6, 6, 241)
    X, Y = jnp.meshgrid(g, g, indexing="ij")
    pts = jnp.stack([X.ravel(), Y.ravel()], 1)
    log_prior = mix.data_log_prob(pts)
    log_lik = -0.5 * ((pts @ A.T)[:, 0] - y[0]) ** 2 / s**2
    log_unnorm = log_prior + log_lik
    dx = float(g[1] - g[0])
    log_z = jax.nn.logsumexp(log_unnorm) + 2 * jnp.log(dx)
    chex.assert_trees_all_close(post.data_log_prob(pts), log_unnorm - log_z, rtol=1e-7, atol=1e-6)


def test_posterior_bad_input():
    mix = two_modes_2d()
    with pytest.raises(ValueError, match=r"A must have shape \[m, d\] with d = 2; got \(1, 3\)"):
        mix.posterior(jnp.ones((1, 3)), jnp.ones(1), 0.1)
    with pytest.raises(ValueError, match=r"y contains NaN or infinite values in row\(s\) \[0\]"):
        mix.posterior(jnp.ones((1, 2)), jnp.array([jnp.nan]), 0.1)


def test_bad_input():
    mix = eight_gaussians()
    with pytest.raises(ValueError, match=r"x must have shape \[B, d\] with d = 2; got \(4, 3\)"):
        mix.log_prob(fj.CondOT(), jnp.ones((4, 3)), 0.5)
    with pytest.raises(ValueError, match=r"covs must have shape"):
        GaussianMixture([0.5, 0.5], [[0.0], [1.0]], [1.0, 1.0])
    with pytest.raises(ValueError, match="weights must be non-negative"):
        GaussianMixture([-0.5, 1.5], [[0.0], [1.0]], [[1.0], [1.0]])


def test_jit_and_pytree():
    mix = eight_gaussians()
    path = fj.VE()
    f = jax.jit(lambda m, p, x, t: m.velocity(p, x, t))
    x = mix.sample(jax.random.PRNGKey(0), 16)
    out = f(mix, path, x, jnp.linspace(0, 1, 16))
    chex.assert_shape(out, (16, 2))
    chex.assert_tree_all_finite(out)
    fn = mix.model_fn(path, "eps")
    al, be, ad, bd = (np.full(16, float(c)) for c in path.coefficients(0.5))
    w, m, S = np.asarray(mix.weights), np.asarray(mix.means), _covs_of(mix)
    ref = numpy_mixture_posterior(w, m, S, al, be, ad, bd, np.asarray(x, np.float64))
    chex.assert_trees_all_close(fn(x, jnp.full(16, 0.5)), ref["eps"].astype(np.float32), atol=1e-5)


class OracleUnderJit(chex.TestCase):
    """The oracle's pure functions: same values (the numpy reference) with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("full", "full"), ("eight", "eight"))
    def test_predictions_log_prob_responsibilities(self, mname):
        with jax.enable_x64(True):
            mix, path = MIXTURES[mname](), fj.VPCosine()
            x = np.asarray(points(mix, 5))
            t = np.linspace(0.1, 0.9, 5)

            @self.variant
            def everything(mix, path, x, t):
                preds = {k: mix.predict(k, path, x, t) for k in fj.PREDICTIONS}
                return preds, mix.log_prob(path, x, t), mix.responsibilities(path, x, t)

            preds, log_p, resp = everything(mix, path, jnp.asarray(x), jnp.asarray(t))
            al, be, ad, bd = (np.asarray(c) for c in path.coefficients(jnp.asarray(t)))
            ref = numpy_mixture_posterior(
                np.asarray(mix.weights), np.asarray(mix.means), _covs_of(mix), al, be, ad, bd, x
            )
            chex.assert_trees_all_close(preds, {k: ref[k] for k in fj.PREDICTIONS}, rtol=1e-9)
            chex.assert_trees_all_close(log_p, ref["log_prob"], rtol=1e-10)
            chex.assert_shape(resp, (5, mix.num_components))
            chex.assert_trees_all_close(resp.sum(1), np.ones(5), rtol=1e-12)

    @chex.variants(with_jit=True, without_jit=True)
    def test_posterior(self):
        with jax.enable_x64(True):
            mix = full_cov_mixture()
            A, y, s = jnp.array([[1.0, 0.5]]), jnp.array([0.8]), 0.5
            post = self.variant(lambda mix, A, y: mix.posterior(A, y, s))(mix, A, y)
            # one component by hand: gain K = S A^T / (A S A^T + s^2)
            S, m = np.asarray(mix.full_covs())[1], np.asarray(mix.means)[1]
            a = np.asarray(A)
            K = S @ a.T / (a @ S @ a.T + s**2)
            chex.assert_trees_all_close(post.means[1], m + K[:, 0] * (0.8 - a @ m), rtol=1e-12)
            chex.assert_trees_all_close(post.covs[1], S - K @ a @ S, rtol=1e-12, atol=1e-15)
            chex.assert_trees_all_close(post.weights.sum(), 1.0, rtol=1e-12)
