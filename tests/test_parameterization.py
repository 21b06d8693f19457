"""Conversions between velocity, score, eps, x1 and v; the seeds' worked examples; bad input."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import flowjax as fj
from flowjax import parameterization as P
from flowjax.oracle import eight_gaussians, two_modes_1d

PATHS = {
    "condot": fj.CondOT(),
    "vp_linear": fj.VPLinear(),
    "vp_cosine": fj.VPCosine(),
    "subvp": fj.SubVP(),
    "ve": fj.VE(),
    "edm": fj.EDM(),
}


# ------------------------------------------------------------------ seed 002 worked examples


def test_conditional_score_example(x64):
    # Ch. 2: z = (3, -1), x = (2.5, 0), alpha = 0.7, beta = 0.3 (CondOT at t = 0.7).
    path = fj.CondOT()
    s = path.conditional_score(jnp.array([[2.5, 0.0]]), jnp.array([[3.0, -1.0]]), 0.7)
    chex.assert_trees_all_close(s, np.asarray([[-4.44, -7.78]]), rtol=1e-7, atol=5e-3)


def test_condot_example(x64):
    # Ch. 2: z = 5, eps = -1.2, t = 0.6 -> x = 2.52, score = 3.0, velocity = 6.2.
    path = fj.CondOT()
    z, eps = jnp.array([[5.0]]), jnp.array([[-1.2]])
    x = path.interpolate(z, eps, 0.6)
    chex.assert_trees_all_close(x, np.asarray([[2.52]]), rtol=1e-7)
    chex.assert_trees_all_close(
        path.conditional_target("score", z, eps, 0.6), np.asarray([[3.0]]), rtol=1e-7
    )
    chex.assert_trees_all_close(
        path.conditional_target("velocity", z, eps, 0.6), np.asarray([[6.2]]), rtol=1e-7
    )
    chex.assert_trees_all_close(path.conditional_score(x, z, 0.6), np.asarray([[3.0]]), rtol=1e-7)


def test_four_parameterizations_example_and_erratum(x64):
    # Ch. 3: z = 5, eps = -1, t = 0.6: x = 2.6, velocity 6.0, score 2.5, eps -1, denoiser 5.
    path = fj.CondOT()
    z, eps, t = jnp.array([[5.0]]), jnp.array([[-1.0]]), 0.6
    x = path.interpolate(z, eps, t)
    chex.assert_trees_all_close(x, np.asarray([[2.6]]), rtol=1e-7)
    values = {"velocity": 6.0, "score": 2.5, "eps": -1.0, "x1": 5.0}
    for kind, val in values.items():
        chex.assert_trees_all_close(
            path.conditional_target(kind, z, eps, t), np.asarray([[val]]), rtol=1e-7
        )
    for src, tgt in itertools.permutations(values, 2):
        out = fj.convert(jnp.array([[values[src]]]), source=src, target=tgt, path=path, x=x, t=t)
        chex.assert_trees_all_close(
            out, np.asarray([[values[tgt]]]), rtol=1e-12, custom_message=f"{src}->{tgt}"
        )
    # Erratum (DESIGN.md section 7): the seed's "velocity = beta^2 score / t + x / t = 5.0" is
    # wrong; Proposition 1 gives a_t * score + b_t * x = 0.667 * 2.5 + 1.667 * 2.6 = 6.0 = z - eps.
    a, b = P.prop1_coefficients(path, t)
    chex.assert_trees_all_close(np.asarray([a, b]), np.asarray([0.4 / 0.6, 1 / 0.6]), rtol=1e-7)
    assert float(a * 2.5 + b * 2.6) == pytest.approx(6.0)
    seed_wrong = 0.4**2 * 2.5 / 0.6 + 2.6 / 0.6
    assert seed_wrong == pytest.approx(5.0, abs=1e-12) and abs(seed_wrong - 6.0) > 0.9


def test_sde_step_example(x64):
    # Ch. 4: t = 0.3, X = (1.2, -0.5), u = (2.1, 1.3), sigma = 0.5, h = 0.02, noise (0.3, -0.8).
    path = fj.CondOT()
    x = jnp.array([[1.2, -0.5]])
    u = jnp.array([[2.1, 1.3]])
    score = P.velocity_to_score(u, path=path, x=x, t=0.3)
    chex.assert_trees_all_close(score, np.asarray([[-0.82, 1.27]]), rtol=1e-7, atol=6e-3)
    drift = P.sde_drift(u, prediction="velocity", path=path, x=x, t=0.3, sigma=0.5)
    chex.assert_trees_all_close(drift, np.asarray([[2.0, 1.46]]), rtol=1e-7, atol=3e-3)
    x_next = x + 0.02 * drift + 0.5 * jnp.sqrt(0.02) * jnp.array([[0.3, -0.8]])
    # The seed rounds intermediate terms and prints (1.261, -0.528); the exact value is
    # (1.2611775, -0.5273900), within 1e-3 of it.
    chex.assert_trees_all_close(x_next, np.asarray([[1.261, -0.528]]), rtol=1e-7, atol=1e-3)
    chex.assert_trees_all_close(x_next, np.asarray([[1.2611775, -0.5273900]]), rtol=1e-7, atol=1e-7)
    # Same drift from the velocity-only form: (1 + s^2/(2a)) u - s^2 b / (2a) x.
    a, b = P.prop1_coefficients(path, 0.3)
    chex.assert_trees_all_close(drift, (1 + 0.25 / (2 * a)) * u - 0.25 * b / (2 * a) * x, rtol=1e-7)


def test_ddpm_and_dsm_loss_examples(x64):
    path = fj.CondOT()
    # Ch. 8 DDPM: z = (3, -1), t = 0.4, eps = (0.8, -0.5) -> x = (1.68, -0.7); pred (0.6, -0.3): 0.08.
    z, eps = jnp.array([[3.0, -1.0]]), jnp.array([[0.8, -0.5]])
    chex.assert_trees_all_close(
        path.interpolate(z, eps, 0.4), np.asarray([[1.68, -0.7]]), rtol=1e-7
    )
    target = path.conditional_target("eps", z, eps, 0.4)
    assert float(jnp.sum((jnp.array([[0.6, -0.3]]) - target) ** 2)) == pytest.approx(0.08)
    # Ch. 7 DSM: z = (4, 2), alpha = 0.7, beta = 0.3, eps = (0.5, -1.2) -> x = (2.95, 1.04),
    # target (-1.67, 4.0); pred (-1.5, 3.5): the seed's 0.279 rounds 0.17^2; exactly 0.2778.
    z, eps = jnp.array([[4.0, 2.0]]), jnp.array([[0.5, -1.2]])
    chex.assert_trees_all_close(
        path.interpolate(z, eps, 0.7), np.asarray([[2.95, 1.04]]), rtol=1e-7
    )
    target = path.conditional_target("score", z, eps, 0.7)
    chex.assert_trees_all_close(target, np.asarray([[-5 / 3, 4.0]]), rtol=1e-7)
    loss = float(jnp.sum((jnp.array([[-1.5, 3.5]]) - target) ** 2))
    assert loss == pytest.approx(0.279, abs=2e-3) and loss == pytest.approx(0.25 + 1 / 36)


def test_guidance_example_erratum(x64):
    # Ch. 9: modes at +-3, unit variance, x = 1. The seed's unconditional score 0.5 is wrong.
    mix = two_modes_1d()
    x, path = jnp.array([[1.0]]), fj.CondOT()
    s_u = float(mix.score(path, x, 1.0)[0, 0])
    s_c = float(mix.score(path, x, 1.0, labels=jnp.array([1]))[0, 0])
    assert s_c == pytest.approx(2.0)
    assert s_u == pytest.approx(1.985, abs=1e-3)
    guided = s_u + 7.0 * (s_c - s_u)
    assert guided == pytest.approx(2.09, abs=2e-3)


# ------------------------------------------------------------------ round trips and identities


def _interior(path, n=9):
    lo, hi = path.t_min, path.t_max
    return jnp.linspace(lo + 0.02 * (hi - lo), hi - 0.02 * (hi - lo), n, dtype=jnp.float64)


@pytest.mark.parametrize("name", list(PATHS))
def test_round_trips_every_pair(name, x64):
    path = PATHS[name]
    t = _interior(path)
    key1, key2 = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(key1, (t.shape[0], 3), jnp.float64)
    value = jax.random.normal(key2, x.shape, jnp.float64)
    for src, tgt in itertools.permutations(fj.PREDICTIONS, 2):
        there = fj.convert(value, source=src, target=tgt, path=path, x=x, t=t)
        back = P.NAMED_CONVERSIONS[(tgt, src)](there, path=path, x=x, t=t)
        chex.assert_trees_all_close(
            back, value, rtol=1e-8, atol=1e-8, custom_message=f"{name}: {src}->{tgt}"
        )


@pytest.mark.parametrize("name", list(PATHS))
def test_conversions_agree_with_oracle(name, x64):
    """Each exact prediction of the oracle converts into every other exact prediction."""
    path = PATHS[name]
    mix = eight_gaussians()
    t = _interior(path)
    x = jax.random.normal(jax.random.PRNGKey(1), (t.shape[0], 2), jnp.float64) * 3
    exact = {k: mix.predict(k, path, x, t) for k in fj.PREDICTIONS}
    for src, tgt in itertools.permutations(fj.PREDICTIONS, 2):
        out = fj.convert(exact[src], source=src, target=tgt, path=path, x=x, t=t)
        chex.assert_trees_all_close(
            out, exact[tgt], rtol=1e-7, atol=1e-7, custom_message=f"{src}->{tgt}"
        )


@pytest.mark.parametrize("name", list(PATHS))
def test_proposition_1_on_oracle_marginals(name, x64):
    path = PATHS[name]
    mix = eight_gaussians()
    t = _interior(path)
    x = jax.random.normal(jax.random.PRNGKey(2), (t.shape[0], 2), jnp.float64) * 3
    a, b = P.prop1_coefficients(path, t)
    u = mix.velocity(path, x, t)
    chex.assert_trees_all_close(
        u, a[:, None] * mix.score(path, x, t) + b[:, None] * x, rtol=1e-8, atol=1e-8
    )


def test_conversions_at_the_noise_end(x64):
    """Where the answer needs no division by alpha, t = 0 is fine: CondOT velocity -> score is -x."""
    path, x = fj.CondOT(), jnp.array([[0.7, -1.3]])
    u = jnp.array([[2.0, 0.5]])
    chex.assert_trees_all_close(P.velocity_to_score(u, path=path, x=x, t=0.0), -x, rtol=1e-7)
    chex.assert_trees_all_close(P.velocity_to_eps(u, path=path, x=x, t=0.0), x, rtol=1e-7)
    chex.assert_trees_all_close(P.eps_to_score(x, path=fj.VPCosine(), x=x, t=0.0), -x, rtol=1e-7)
    chex.assert_trees_all_close(P.v_to_x1(u, path=path, x=x, t=0.0), -u, rtol=1e-7)
    chex.assert_trees_all_close(P.velocity_to_x1(u, path=path, x=x, t=1.0), x, rtol=1e-7)


@pytest.mark.parametrize("name", ["vp_linear", "subvp", "ve"])
def test_reverse_sde_drift_is_score_sde_sampler(name, x64):
    """sigma_t^2 = 2 a_t turns the SDE extension into the score SDE paper's reverse-time SDE.

    Reverse SDE in diffusion time: dx = [f(s) x - g(s)^2 score] ds + g dW; in flowjax time (dt = -ds)
    the drift is -f x + g^2 score with the paper's closed-form f and g.
    """
    from tests.test_paths import score_sde_closed_forms

    path = PATHS[name]
    t = _interior(path)
    s = 1.0 - t
    mix = eight_gaussians()
    x = jax.random.normal(jax.random.PRNGKey(3), (t.shape[0], 2), jnp.float64) * 2
    a, _ = P.prop1_coefficients(path, t)
    for kind in ("velocity", "eps", "score"):
        value = mix.predict(kind, path, x, t)
        drift = P.sde_drift(value, prediction=kind, path=path, x=x, t=t, sigma=jnp.sqrt(2 * a))
        f, g = score_sde_closed_forms(path, s)
        ref = -f[:, None] * x + (g**2)[:, None] * mix.score(path, x, t)
        chex.assert_trees_all_close(drift, ref, rtol=1e-8, atol=1e-8)


def test_sde_drift_sigma_zero_is_velocity_even_at_data_end(x64):
    path, x = fj.CondOT(), jnp.array([[0.3, 0.2]])
    u = jnp.array([[1.0, -1.0]])
    chex.assert_trees_all_close(
        P.sde_drift(u, prediction="velocity", path=path, x=x, t=1.0, sigma=0.0), u, rtol=1e-7
    )


def test_conversions_jit_vmap_grad(x64):
    path = fj.VPLinear()
    x = jnp.ones((4, 2))
    t = jnp.linspace(0.2, 0.8, 4)
    f = jax.jit(
        lambda val, x, t, p: fj.convert(val, source="eps", target="velocity", path=p, x=x, t=t)
    )
    out = f(x, x, t, path)
    chex.assert_shape(out, (4, 2))
    per_example = jax.vmap(
        lambda val, xx, tt: fj.convert(
            val[None], source="eps", target="velocity", path=path, x=xx[None], t=tt
        )[0]
    )(x, x, t)
    chex.assert_trees_all_close(out, per_example)
    g = jax.grad(
        lambda val: jnp.sum(fj.convert(val, source="eps", target="score", path=path, x=x, t=t))
    )(x)
    chex.assert_trees_all_close(g, -1.0 / path.beta(t)[:, None] * jnp.ones((4, 2)), rtol=1e-7)


# ------------------------------------------------------------------ bad input


def test_bad_input_messages():
    path = fj.CondOT()
    x = jnp.ones((4, 2))
    with pytest.raises(ValueError, match=r"value has shape \(4, 3\) but x has shape \(4, 2\)"):
        fj.convert(jnp.ones((4, 3)), source="eps", target="score", path=path, x=x, t=0.5)
    with pytest.raises(
        ValueError,
        match=r"t must be a scalar or have shape \[B\] = \(4,\).*got t with shape \(3,\)",
    ):
        fj.convert(x, source="eps", target="score", path=path, x=x, t=jnp.ones(3) * 0.5)
    with pytest.raises(TypeError, match=r"x must be a floating-point array, got dtype int32"):
        fj.convert(x, source="eps", target="score", path=path, x=jnp.ones((4, 2), jnp.int32), t=0.5)
    with pytest.raises(
        ValueError,
        match="unknown source prediction 'noise'; valid choices are: velocity, score, eps, x1, v",
    ):
        fj.convert(x, source="noise", target="score", path=path, x=x, t=0.5)
    with pytest.raises(ValueError, match="unknown prediction 'vel'"):
        path.conditional_target("vel", x, x, 0.5)
    with pytest.raises(ValueError, match="valid range"):
        fj.convert(x, source="eps", target="score", path=path, x=x, t=1.2)
    with pytest.raises(ValueError, match="leading batch axis"):
        fj.convert(
            jnp.float32(1.0), source="eps", target="score", path=path, x=jnp.float32(1.0), t=0.5
        )


def test_checked_mode_catches_values_inside_jit():
    path = fj.CondOT()
    x = jnp.ones((2, 2))

    @jax.jit
    def f(value, t):
        return fj.convert(value, source="velocity", target="score", path=path, x=x, t=t)

    f(x, jnp.array([0.5, 1.5]))  # unchecked: no run-time cost, no error
    with pytest.raises(Exception, match="valid range"):
        fj.checked(f)(x, jnp.array([0.5, 1.5]))
    with pytest.raises(Exception, match="not finite"):
        fj.checked(f)(x.at[0, 0].set(jnp.nan), jnp.array([0.5, 0.5]))
    chex.assert_trees_all_close(fj.checked(f)(x, jnp.array([0.0, 0.0])), -x, rtol=1e-7)


# ------------------------------------------------------------------ jit and non-jit variants


def _numpy_predictions(al, be, ad, bd, x1, eps):
    """Every prediction of a known pair (x1, eps), written out in numpy."""
    col = lambda c: c[:, None]  # noqa: E731
    return {
        "velocity": col(ad) * x1 + col(bd) * eps,
        "score": -eps / col(be),
        "eps": eps,
        "x1": x1,
        "v": col(al) * eps - col(be) * x1,
    }


class ConversionsUnderJit(chex.TestCase):
    """convert, the 20 named pair functions, to_x1_eps, conversion_coefficients, sde_drift and
    prop1_coefficients: the same values with and without jit (exact answers from a known pair)."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("condot", "condot"), ("vp_cosine", "vp_cosine"))
    def test_every_pair(self, name):
        with jax.enable_x64(True):
            path = PATHS[name]
            t = np.asarray(_interior(path, n=5))
            rng = np.random.default_rng(3)
            x1, eps = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
            al, be, ad, bd = (np.asarray(c) for c in path.coefficients(jnp.asarray(t)))
            x = al[:, None] * x1 + be[:, None] * eps
            preds = _numpy_predictions(al, be, ad, bd, x1, eps)

            @self.variant
            def everything(path, x, t, preds):
                pairs = itertools.permutations(fj.PREDICTIONS, 2)
                out = {}
                for s, g in pairs:
                    out[f"convert {s}->{g}"] = fj.convert(
                        preds[s], source=s, target=g, path=path, x=x, t=t
                    )
                    out[f"{s}_to_{g}"] = P.NAMED_CONVERSIONS[(s, g)](preds[s], path=path, x=x, t=t)
                    A, B = P.conversion_coefficients(s, g, path, t)
                    out[f"coefficients {s}->{g}"] = A[:, None] * preds[s] + B[:, None] * x
                for s in fj.PREDICTIONS:
                    out[f"to_x1_eps {s}"] = P.to_x1_eps(preds[s], source=s, path=path, x=x, t=t)
                    out[f"drift {s}"] = P.sde_drift(
                        preds[s], prediction=s, path=path, x=x, t=t, sigma=0.5
                    )
                a, b = P.prop1_coefficients(path, t)
                out["prop1"] = a[:, None] * preds["score"] + b[:, None] * x
                return out

            out = everything(path, jnp.asarray(x), jnp.asarray(t), preds)
            expected = {}
            for s, g in itertools.permutations(fj.PREDICTIONS, 2):
                for what in (f"convert {s}->{g}", f"{s}_to_{g}", f"coefficients {s}->{g}"):
                    expected[what] = preds[g]
            for s in fj.PREDICTIONS:
                expected[f"to_x1_eps {s}"] = (x1, eps)
                expected[f"drift {s}"] = preds["velocity"] + 0.125 * preds["score"]
            expected["prop1"] = preds["velocity"]
            chex.assert_tree_all_finite(out)
            chex.assert_trees_all_close(out, expected, rtol=1e-8, atol=1e-8)
