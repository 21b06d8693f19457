"""Gaussian paths: closed forms, endpoints, pytree behaviour, the diffusion-orientation adapter."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import flowjax as fj
from flowjax import paths as P

ALL_PATHS = {
    "condot": fj.CondOT(),
    "condot_smin": fj.CondOT(sigma_min=1e-3),
    "vp_linear": fj.VPLinear(),
    "vp_cosine": fj.VPCosine(),
    "subvp": fj.SubVP(),
    "ve": fj.VE(),
    "edm": fj.EDM(),
    "trig": fj.GaussianPath(
        lambda t: jnp.sin(0.5 * jnp.pi * t), lambda t: jnp.cos(0.5 * jnp.pi * t)
    ),
}


def grid(path, n=41):
    return jnp.linspace(path.t_min, path.t_max, n, dtype=jnp.float64)


@pytest.mark.parametrize("name", list(ALL_PATHS))
def test_closed_form_derivatives_equal_jvp(name, x64):
    path = ALL_PATHS[name]
    t = grid(path)
    auto_a = jax.jvp(path.alpha, (t,), (jnp.ones_like(t),))[1]
    auto_b = jax.jvp(path.beta, (t,), (jnp.ones_like(t),))[1]
    c = jax.jit(path.coefficients)(t)
    # VP's beta_dot grows like 1/sqrt(1 - t) near the data end: compare relatively.
    chex.assert_trees_all_close(c.alpha_dot, auto_a, rtol=1e-9, atol=1e-12)
    chex.assert_trees_all_close(c.beta_dot, auto_b, rtol=1e-9, atol=1e-12)
    assert np.all(np.isfinite(np.asarray(c))), "coefficients must be finite on [t_min, t_max]"


# ------------------------------------------------------------------ independent closed forms
# alpha(t), beta(t) written here from the papers' definitions in numpy (complex-safe), independent
# of flowjax's code; derivatives by the complex step f'(t) = Im f(t + ih) / h, exact to rounding.


def _vp_integral(t, bmin=0.1, bmax=20.0):  # B(s) = int_0^s beta(r) dr, s = 1 - t
    s = 1.0 - t
    return bmin * s + 0.5 * (bmax - bmin) * s**2


def _cosine_alpha(t, c=0.008):  # Nichol & Dhariwal: cos(theta(s)) / cos(theta(0)), s = 1 - t
    theta = lambda s: (s + c) / (1 + c) * np.pi / 2  # noqa: E731
    return np.cos(theta(1.0 - t)) / np.cos(theta(0.0))


REFERENCE = {
    "condot": (lambda t: t, lambda t: 1.0 - t),
    "condot_smin": (lambda t: t, lambda t: 1.0 - (1.0 - 1e-3) * t),
    "vp_linear": (
        lambda t: np.exp(-0.5 * _vp_integral(t)),
        lambda t: np.sqrt(1.0 - np.exp(-_vp_integral(t))),
    ),
    "vp_cosine": (_cosine_alpha, lambda t: np.sqrt(1.0 - _cosine_alpha(t) ** 2)),
    "subvp": (
        lambda t: np.exp(-0.5 * _vp_integral(t)),
        lambda t: 1.0 - np.exp(-_vp_integral(t)),
    ),
    "ve": (lambda t: np.ones_like(t), lambda t: 0.01 * (50.0 / 0.01) ** (1.0 - t)),
    "edm": (
        lambda t: np.ones_like(t),
        lambda t: (80.0 ** (1 / 7) + t * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7,
    ),
    "trig": (lambda t: np.sin(0.5 * np.pi * t), lambda t: np.cos(0.5 * np.pi * t)),
}


def complex_step(f, t, h=1e-30):
    return np.imag(f(t.astype(np.complex128) + 1j * h)) / h


def interior(path, n=41, margin=1e-3):
    return np.linspace(path.t_min + margin, path.t_max - margin, n)


@pytest.mark.parametrize("name", list(ALL_PATHS))
def test_coefficients_match_independent_closed_forms(name, x64):
    path, (alpha, beta) = ALL_PATHS[name], REFERENCE[name]
    t = interior(path)
    c = path.coefficients(jnp.asarray(t))
    chex.assert_type(c, jnp.float64)
    chex.assert_shape(c, t.shape)
    expected = (alpha(t), beta(t), complex_step(alpha, t), complex_step(beta, t))
    # 1e-9: the VP's 1 - exp(-B) and cosine's sqrt(1 - alpha^2) lose ~6 digits near t = 1 here
    chex.assert_trees_all_close(tuple(c), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(ALL_PATHS))
def test_signal_to_noise_increases(name, x64):
    path = ALL_PATHS[name]
    t = grid(path)[1:-1]
    snr = path.log_snr(t)
    assert np.all(np.diff(np.asarray(snr)) > 0)
    a, _ = P.prop1_coefficients(path, t)
    assert np.all(np.asarray(a) > 0), "a_t >= 0: the reverse SDE has a real diffusion coefficient"


@pytest.mark.parametrize("name", list(ALL_PATHS))
def test_prop1_velocity_of_a_gaussian(name, x64):
    """u_t(x) = a_t score_t(x) + b_t x, checked on data N(m, s^2) where all three are closed forms.

    For x1 ~ N(m, s^2): x_t ~ N(alpha m, V) with V = alpha^2 s^2 + beta^2, and the marginal velocity
    is E[alpha' x1 + beta' eps | x_t] = alpha' (m + alpha s^2 (x - alpha m) / V)
    + beta' beta (x - alpha m) / V; the score is -(x - alpha m) / V. Numbers in numpy, derivatives
    by the complex step: nothing here calls flowjax but prop1_coefficients.
    """
    path, (alpha, beta) = ALL_PATHS[name], REFERENCE[name]
    t = interior(path, n=9, margin=1e-2)
    m, s2 = 0.7, 0.3**2
    x = np.linspace(-2.0, 3.0, 9)
    al, be, ad, bd = alpha(t), beta(t), complex_step(alpha, t), complex_step(beta, t)
    var = al**2 * s2 + be**2
    velocity = ad * (m + al * s2 * (x - al * m) / var) + bd * be * (x - al * m) / var
    score = -(x - al * m) / var
    a, b = P.prop1_coefficients(path, jnp.asarray(t))
    chex.assert_trees_all_close(np.asarray(a) * score + np.asarray(b) * x, velocity, rtol=1e-9)
    if name == "condot":  # and the docstring's a = (1 - t) / t, b = 1 / t
        chex.assert_trees_all_close((a, b), ((1 - t) / t, 1 / t), rtol=1e-12)


def test_endpoints(x64):
    c = fj.CondOT()
    alpha, beta = c.coefficients(jnp.array([0.0, 1.0]))[:2]
    chex.assert_trees_all_close((alpha, beta), (np.array([0.0, 1.0]), np.array([1.0, 0.0])))
    assert float(fj.CondOT(sigma_min=0.01).beta(1.0)) == pytest.approx(0.01)
    cos = fj.VPCosine()
    assert float(cos.alpha(0.0)) == 0.0 and float(cos.beta(0.0)) == pytest.approx(1.0)
    assert float(cos.alpha(1.0)) == pytest.approx(1.0)
    vp = fj.VPLinear()
    # VP never reaches pure noise: alpha(0) = exp(-B(1)/2) with B(1) = (0.1 + 20) / 2.
    assert float(vp.alpha(0.0)) == pytest.approx(math.exp(-0.25 * (0.1 + 20.0)))
    chex.assert_trees_all_close(vp.alpha(0.3) ** 2 + vp.beta(0.3) ** 2, 1.0, rtol=1e-7)
    assert float(vp.beta(1.0)) == 0.0
    sub = fj.SubVP()
    assert float(sub.beta(1.0)) == 0.0 and float(sub.beta_dot(1.0)) == pytest.approx(-0.1)
    ve = fj.VE()
    assert float(ve.prior_std()) == pytest.approx(50.0)
    assert float(ve.beta(1.0)) == pytest.approx(0.01)
    edm = fj.EDM()
    chex.assert_trees_all_close(
        edm.beta(jnp.array([0.0, 1.0])), np.asarray([80.0, 0.002]), rtol=1e-12
    )


def test_edm_uniform_time_is_karras_grid(x64):
    # Karras et al. eq. 5: sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho
    n, rho, lo, hi = 18, 7.0, 0.002, 80.0
    i = np.arange(n)
    karras = (hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    chex.assert_trees_all_close(fj.EDM().beta(jnp.linspace(0.0, 1.0, n)), karras, rtol=1e-12)


def test_vp_cosine_beta_is_stable_near_data(x64):
    path = fj.VPCosine()
    t = jnp.array(1.0 - 1e-5, jnp.float32)
    with jax.enable_x64(False):
        b32 = path.beta(jnp.float32(1.0 - 1e-5))
    b64 = path.beta(t.astype(jnp.float64))
    assert float(b32) > 0 and float(b32) == pytest.approx(float(b64), rel=1e-2)


def test_conditional_sample_and_target_shapes():
    path = fj.CondOT()
    key = jax.random.PRNGKey(0)
    x1 = jax.random.normal(key, (4, 3, 5, 5))
    t = jnp.linspace(0.1, 0.9, 4)
    xt, eps = path.sample_conditional(key, x1, t)
    chex.assert_shape([xt, eps], x1.shape)
    chex.assert_trees_all_close(
        xt, t[:, None, None, None] * x1 + (1 - t[:, None, None, None]) * eps, atol=1e-6
    )
    for pred in fj.PREDICTIONS:
        chex.assert_shape(path.conditional_target(pred, x1, eps, t), x1.shape)
    chex.assert_trees_all_close(path.conditional_target("velocity", x1, eps, t), x1 - eps)


def test_paths_are_pytrees_under_jit_vmap_grad(x64):
    def loss(path):
        return jnp.sum(path.alpha(jnp.linspace(0, 0.9, 5)) ** 2)

    g = jax.grad(loss)(fj.VPLinear(beta_min=0.1, beta_max=20.0))
    assert isinstance(g, fj.VPLinear) and float(g.beta_max) != 0.0
    fd = (loss(fj.VPLinear(beta_max=20.0 + 1e-6)) - loss(fj.VPLinear(beta_max=20.0 - 1e-6))) / 2e-6
    assert float(g.beta_max) == pytest.approx(float(fd), rel=1e-6)
    # A batch of paths (different beta_max) under vmap.
    stacked = jax.vmap(lambda bm: fj.VPLinear(beta_max=bm))(jnp.array([10.0, 20.0]))
    out = jax.vmap(lambda p: p.alpha(0.5))(stacked)
    chex.assert_trees_all_close(
        out,
        np.asarray([fj.VPLinear(beta_max=10.0).alpha(0.5), fj.VPLinear().alpha(0.5)]),
        rtol=1e-7,
    )
    assert jax.jit(lambda p, t: p.beta(t))(fj.VE(), 0.5) == pytest.approx(float(fj.VE().beta(0.5)))


def test_prior(x64):
    for path in ALL_PATHS.values():
        x = jnp.ones((3, 2, 2))
        std = float(path.prior_std())
        expected = -0.5 * 4 / std**2 - 4 * (math.log(std) + 0.5 * math.log(2 * math.pi))
        chex.assert_trees_all_close(path.prior_log_prob(x), expected, rtol=1e-7)
    s = fj.VE().prior_sample(jax.random.PRNGKey(0), (20000, 2))
    assert float(jnp.std(s)) == pytest.approx(50.0, rel=0.02)


def test_registry():
    assert isinstance(fj.get_path("vp_cosine", s=0.01), fj.VPCosine)
    with pytest.raises(ValueError, match="valid choices are: condot, vp_linear"):
        fj.get_path("cosine")


# ------------------------------------------------------------------ diffusion orientation


def score_sde_closed_forms(path, s):
    """f(s), g(s) as printed in Song et al. (2021), eqs. 9, 11 and the sub-VP SDE."""
    if isinstance(path, fj.VE):
        sig = path.sigma_min * (path.sigma_max / path.sigma_min) ** s
        return 0.0 * s, sig * jnp.sqrt(2 * jnp.log(path.sigma_max / path.sigma_min))
    beta_s = path.beta_min + s * (path.beta_max - path.beta_min)
    if isinstance(path, fj.SubVP):
        B = path.beta_min * s + 0.5 * (path.beta_max - path.beta_min) * s**2
        return -0.5 * beta_s, jnp.sqrt(beta_s * (1 - jnp.exp(-2 * B)))
    return -0.5 * beta_s, jnp.sqrt(beta_s)


@pytest.mark.parametrize(
    "path", [fj.VPLinear(), fj.SubVP(), fj.VE(), fj.VE(sigma_min=0.1, sigma_max=5.0)]
)
def test_forward_sde_matches_score_sde_paper(path, x64):
    s = jnp.linspace(1e-3, 1.0, 17)
    f, g = P.forward_sde_coefficients(path, s)
    f_ref, g_ref = score_sde_closed_forms(path, s)
    chex.assert_trees_all_close(f, f_ref, rtol=1e-9, atol=1e-12)
    chex.assert_trees_all_close(g, g_ref, rtol=1e-9)


def test_forward_sde_reproduces_marginal_variance(x64):
    # d/ds Var = 2 f Var + g^2 for the linear SDE: integrate and compare with beta(s)^2.
    path = fj.SubVP()
    s = jnp.linspace(0.0, 1.0, 20001)
    f, g = P.forward_sde_coefficients(path, s)
    f, g = np.asarray(f), np.asarray(g)
    var = np.zeros_like(s)
    h = float(s[1] - s[0])
    for i in range(len(s) - 1):  # Heun on the variance ODE
        k1 = 2 * f[i] * var[i] + g[i] ** 2
        k2 = 2 * f[i + 1] * (var[i] + h * k1) + g[i + 1] ** 2
        var[i + 1] = var[i] + 0.5 * h * (k1 + k2)
    chex.assert_trees_all_close(
        var[::2000], np.asarray(path.beta(1.0 - s[::2000])) ** 2, rtol=1e-7, atol=1e-6
    )


def test_seed003_conversions_through_orientation_adapter(x64):
    """Seed 003 (data at s = 0): x_s = (1-s) x0 + s eps, v = eps - x0, eps = x_s + (1-s) v, x0 = x_s - s v."""
    x0 = jnp.array([[3.0, 1.0]])  # seed 003's flow-matching example data and noise
    noise = jnp.array([[-1.0, 2.0]])
    s = 0.3
    x_s = (1 - s) * x0 + s * noise
    v_s = noise - x0
    chex.assert_trees_all_close(
        x_s + (1 - s) * v_s, noise, rtol=1e-7
    )  # the seed's formulas, as printed
    chex.assert_trees_all_close(x_s - s * v_s, x0, rtol=1e-7)
    t = P.from_diffusion_time(s)
    assert float(t) == pytest.approx(0.7) and float(P.to_diffusion_time(t)) == pytest.approx(s)
    u = P.from_diffusion_velocity(v_s)
    path = fj.CondOT()
    chex.assert_trees_all_close(path.interpolate(x0, noise, t), x_s, rtol=1e-7)
    chex.assert_trees_all_close(
        fj.convert(u, source="velocity", target="eps", path=path, x=x_s, t=t), noise, rtol=1e-7
    )
    chex.assert_trees_all_close(
        fj.convert(u, source="velocity", target="x1", path=path, x=x_s, t=t), x0, rtol=1e-7
    )
    chex.assert_trees_all_close(P.to_diffusion_velocity(u), v_s, rtol=1e-7)


def test_time_outside_range_is_rejected():
    with pytest.raises(ValueError, match=r"valid range \[0.0, 0.99999\]"):
        fj.VPLinear().coefficients(1.0)
    with pytest.raises(ValueError, match="valid range"):
        fj.CondOT().interpolate(jnp.ones((2, 1)), jnp.ones((2, 1)), jnp.array([0.5, 1.5]))
    with pytest.raises(Exception, match="valid range"):
        fj.checked(jax.jit(fj.CondOT().coefficients))(jnp.array(-0.1))
    # Unchecked, traced: no cost, no error.
    jax.jit(fj.CondOT().coefficients)(jnp.array(-0.1))


# ------------------------------------------------------------------ jit and non-jit variants


class PathFunctionsUnderJit(chex.TestCase):
    """Every pure path function gives the same values with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*[(n, n) for n in ALL_PATHS])
    def test_path_functions(self, name):
        path, (alpha, beta) = ALL_PATHS[name], REFERENCE[name]
        with jax.enable_x64(True):
            t = interior(path, n=6)
            al, be, ad, bd = alpha(t), beta(t), complex_step(alpha, t), complex_step(beta, t)
            rng = np.random.default_rng(0)
            x1, eps = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
            xt = al[:, None] * x1 + be[:, None] * eps

            @self.variant
            def everything(path, t, x1, eps, xt):
                targets = {p: path.conditional_target(p, x1, eps, t) for p in fj.PREDICTIONS}
                return {
                    "coefficients": tuple(path.coefficients(t)),
                    "log_snr": path.log_snr(t),
                    "interpolate": path.interpolate(x1, eps, t),
                    "targets": targets,
                    "conditional_score": path.conditional_score(xt, x1, t),
                    "prior_log_prob": path.prior_log_prob(x1),
                    "prop1": P.prop1_coefficients(path, t),
                }

            out = everything(path, jnp.asarray(t), jnp.asarray(x1), jnp.asarray(eps), xt)
            col = lambda c: c[:, None]  # noqa: E731
            std = float(beta(np.asarray(path.t_min)))
            expected = {
                "coefficients": (al, be, ad, bd),
                "log_snr": 2 * np.log(al / be),
                "interpolate": xt,
                "targets": {
                    "velocity": col(ad) * x1 + col(bd) * eps,
                    "score": -eps / col(be),
                    "eps": eps,
                    "x1": x1,
                    "v": col(al) * eps - col(be) * x1,
                },
                "conditional_score": -eps / col(be),
                "prior_log_prob": -0.5 * np.sum(x1**2, 1) / std**2
                - 3 * np.log(std * np.sqrt(2 * np.pi)),
                "prop1": (be * (be * ad - bd * al) / al, ad / al),
            }
            chex.assert_tree_all_finite(out)
            chex.assert_trees_all_close(out, expected, rtol=1e-8, atol=1e-10)

    @chex.variants(with_jit=True, without_jit=True)
    def test_diffusion_orientation(self):
        with jax.enable_x64(True):
            s = jnp.linspace(1e-3, 1.0, 7)
            fns = self.variant(
                lambda s: (
                    P.to_diffusion_time(P.from_diffusion_time(s)),
                    P.from_diffusion_time(s),
                    P.forward_sde_coefficients(fj.VE(), s),
                )
            )
            back, t, (f, g) = fns(s)
            chex.assert_trees_all_close((back, t), (s, 1.0 - s), atol=1e-15)
            f_ref, g_ref = score_sde_closed_forms(fj.VE(), s)
            chex.assert_trees_all_close((f, g), (f_ref, g_ref), rtol=1e-9, atol=1e-12)
