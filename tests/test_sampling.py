"""``flowjax.sampling.sample``: API, reproducibility, predictions, guidance, compilation, bad input."""

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax as fj
from flowjax.oracle import eight_gaussians, two_modes_1d, two_modes_2d
from flowjax.sampling import (
    SDE,
    AnnealedLangevin,
    EDMStochastic,
    PredictorCorrector,
    SampleResult,
    guided_model,
    sample,
    sampling_time_range,
)
from flowjax.solvers import Adaptive, Euler

# ------------------------------------------------------------------ reproducibility


@pytest.mark.parametrize(
    "kw",
    [
        dict(method=SDE(sigma=0.5), solver="shark", adaptive=Adaptive(rtol=1e-2, atol=1e-2)),
        dict(method=PredictorCorrector(sigma="reverse", corrector_steps=2), num_steps=20),
    ],
    ids=["adaptive-sde-vbt", "pc"],
)
def test_same_key_same_samples(kw):
    path = fj.VPLinear()
    model = two_modes_2d().model_fn(path)
    a = sample(model, path, jax.random.PRNGKey(0), (64, 2), **kw)
    b = sample(model, path, jax.random.PRNGKey(0), (64, 2), **kw)
    c = sample(model, path, jax.random.PRNGKey(1), (64, 2), **kw)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert int(a.nfe) == int(b.nfe)
    assert not np.allclose(a.samples, c.samples)


def test_result_is_a_pytree():
    path = fj.CondOT()
    model = two_modes_2d().model_fn(path)

    @jax.jit
    def run(key):
        return sample(model, path, key, (8, 2), num_steps=5, save_times=jnp.array([0.5]))

    res = run(jax.random.PRNGKey(0))
    assert isinstance(res, SampleResult)
    assert res.samples.shape == (8, 2) and res.trajectory.shape == (8, 1, 2)
    assert len(jax.tree_util.tree_leaves(res)) == 6
    assert int(res.nfe) == 5 and int(res.num_accepted) == 5 and int(res.num_rejected) == 0


# ------------------------------------------------------------------ predictions and time range


def test_every_prediction_gives_the_same_samples(x64):
    # The model's kind is converted in closed form, so with a perfect model every kind gives the
    # same trajectory (same time range; the defaults differ by kind at CondOT's ends).
    path = fj.CondOT()
    mix = eight_gaussians()
    out = {}
    for pred in fj.PREDICTIONS:
        out[pred] = sample(
            mix.model_fn(path, pred), path, jax.random.PRNGKey(0), (64, 2), prediction=pred,
            num_steps=20, t_start=0.01, t_end=0.99,
        ).samples  # fmt: skip
    for pred, x in out.items():
        np.testing.assert_allclose(x, out["velocity"], rtol=1e-9, atol=1e-9, err_msg=pred)


def test_default_time_ranges():
    cond = fj.CondOT()

    def ends(path=cond, **kw):
        return sampling_time_range(path, **kw)

    # ODE with velocity: the whole range.
    assert ends() == (0.0, 1.0)
    # eps/score need alpha > 0 at the start; score/x1 need beta > 0 at the end.
    assert ends(prediction="eps") == (1e-3, 1.0)
    assert ends(prediction="score") == (1e-3, 1.0 - 1e-3)
    assert ends(prediction="x1") == (0.0, 1 - 1e-3)
    # Score-based sampling ends 1e-3 from the data end; the reverse SDE needs alpha > 0.
    assert ends(method=SDE(sigma=0.5)) == (0.0, 1.0 - 1e-3)
    assert ends(method="sde")[0] == 1e-3  # sigma="reverse"
    assert ends(method=PredictorCorrector()) == (0.0, 1.0 - 1e-3)
    # EDM's sampler and DPM-Solver++(2S) need finite sigma = beta / alpha (2S: at both ends);
    # the multistep exponential integrators take alpha = 0 at the start exactly.
    assert ends(method="edm") == (1e-3, 1.0)
    assert ends(solver="dpmpp_2s") == (1e-3, 1.0 - 1e-3)
    assert ends(solver="dpmpp_2m") == (0.0, 1.0)
    vp = fj.VPLinear()  # alpha(0) = 6.6e-3 > 0: no margin needed at the start
    assert ends(vp, prediction="eps", method="sde") == (0.0, 1.0 - 1e-3)
    assert ends(vp) == (0.0, vp.t_max)


def test_denoise_final_returns_the_denoiser():
    path = fj.CondOT()
    mix = two_modes_2d()
    kw = dict(num_steps=10, t_end=0.5)
    a = sample(mix.model_fn(path), path, jax.random.PRNGKey(0), (32, 2), **kw)
    b = sample(mix.model_fn(path), path, jax.random.PRNGKey(0), (32, 2), denoise_final=True, **kw)
    np.testing.assert_allclose(b.samples, mix.x1(path, a.samples, 0.5), rtol=1e-5, atol=1e-5)
    assert int(b.nfe) == int(a.nfe) + 1


# ------------------------------------------------------------------ classifier-free guidance


class LabelOracle(eqx.Module):
    """Class-conditional oracle ``model_fn(x, t, labels)``; label -1 is the null condition."""

    mix: fj.GaussianMixture
    path: fj.AbstractPath
    prediction: str = eqx.field(static=True)

    def __call__(self, x, t, labels):
        cond = self.mix.predict(self.prediction, self.path, x, t, jnp.maximum(labels, 0))
        uncond = self.mix.predict(self.prediction, self.path, x, t)
        return jnp.where((labels >= 0)[:, None], cond, uncond)


def test_guidance_one_batched_call_and_limits(x64):
    path = fj.CondOT()
    mix = two_modes_1d()
    b = 64
    labels = jnp.ones((b,), int)
    null = jnp.array(-1)
    shapes = []

    class Counted(LabelOracle):
        def __call__(self, x, t, labels):
            jax.debug.callback(lambda: shapes.append(x.shape[0]))
            return super().__call__(x, t, labels)

    key = jax.random.PRNGKey(0)
    kw = dict(num_steps=20, t_start=0.01, t_end=0.99)

    def guided(pred, w):
        model = guided_model(Counted(mix, path, pred), labels, null, w)
        return sample(model, path, key, (b, 1), prediction=pred, **kw)

    res = guided("velocity", 3.0)
    jax.block_until_ready(res)
    assert shapes == [2 * b] * 20 and int(res.nfe) == 20  # one call on [x, x] per evaluation
    # w = 1 is the conditional model, w = 0 the unconditional one.
    common = dict(num_steps=20, t_start=0.01, t_end=0.99)
    cond_only = sample(LabelOracle(mix, path, "velocity"), path, key, (b, 1), cond=labels, **common)
    uncond = sample(mix.model_fn(path), path, key, (b, 1), **common)
    np.testing.assert_allclose(guided("velocity", 1.0).samples, cond_only.samples, rtol=1e-9)
    np.testing.assert_allclose(guided("velocity", 0.0).samples, uncond.samples, rtol=1e-9)
    # Guidance is linear in any parameterization: guiding eps predictions gives the same samples.
    np.testing.assert_allclose(guided("eps", 3.0).samples, res.samples, rtol=1e-8, atol=1e-8)
    # Strong guidance pushes every sample to the conditioned mode (+3).
    assert float(jnp.min(res.samples)) > 0.0


# ------------------------------------------------------------------ compilation


def test_new_parameters_do_not_retrace():
    traces = []

    def apply(params, x, t):
        traces.append(1)
        return params["w"] * x + params["b"] * t[:, None]

    path = fj.CondOT()
    key = jax.random.PRNGKey(0)
    out = []
    for w in (0.5, -0.5):
        params = {"w": jnp.asarray(w), "b": jnp.asarray(0.1)}
        model = jax.tree_util.Partial(apply, params)
        out.append(sample(model, path, key, (4, 2), num_steps=3).samples)
    n = len(traces)
    assert n >= 1
    assert not np.allclose(out[0], out[1])
    params = {"w": jnp.asarray(2.0), "b": jnp.asarray(0.0)}
    sample(jax.tree_util.Partial(apply, params), path, key, (4, 2), num_steps=3)
    assert len(traces) == n  # the third call reused the compiled program


# ------------------------------------------------------------------ bad input


@pytest.fixture
def setup():
    path = fj.CondOT()
    return eight_gaussians().model_fn(path), path, jax.random.PRNGKey(0)


def test_unknown_names_list_the_valid_ones(setup):
    model, path, key = setup
    with pytest.raises(ValueError, match="ode, sde, pc, langevin, edm"):
        sample(model, path, key, (4, 2), method="flow")
    with pytest.raises(ValueError, match=r"euler, heun, midpoint.*dopri8, dpmpp_2m.*unipc"):
        sample(model, path, key, (4, 2), solver="rk4")
    with pytest.raises(ValueError, match="euler, heun, shark, sra1"):
        sample(model, path, key, (4, 2), method="sde", solver="tsit5")
    with pytest.raises(ValueError, match="adaptive ODE solvers are: heun"):
        sample(model, path, key, (4, 2), adaptive=True)
    with pytest.raises(ValueError, match="auto, diffrax, scan"):
        sample(model, path, key, (4, 2), solver=Euler(backend="torch"))
    with pytest.raises(ValueError, match="uniform, edm, logsnr"):
        sample(model, path, key, (4, 2), time_grid="cosine")
    with pytest.raises(ValueError, match="velocity, score, eps, x1, v"):
        sample(model, path, key, (4, 2), prediction="noise")
    with pytest.raises(ValueError, match="reverse"):
        sample(model, path, key, (4, 2), method=SDE(sigma="forward"))
    with pytest.raises(TypeError, match="method must be a name"):
        sample(model, path, key, (4, 2), method=3)
    with pytest.raises(TypeError, match="adaptive must be False, True or"):
        sample(model, path, key, (4, 2), adaptive="yes")


def test_bad_sigma(setup):
    model, path, key = setup
    with pytest.raises(ValueError, match=r"sigma must be a finite non-negative number; got -0\.5"):
        SDE(sigma=-0.5)
    with pytest.raises(ValueError, match="non-negative"):
        PredictorCorrector(sigma=float("nan"))
    # A callable sigma is checked inside the compiled program in checked mode.
    with pytest.raises(Exception, match="sigma_t must be non-negative"):
        fj.checked(
            lambda: sample(
                model, path, key, (4, 2), method=SDE(sigma=lambda t: t - 0.5), num_steps=4
            )
        )()


def test_model_output_shape_must_match_x(setup):
    _, path, key = setup
    with pytest.raises(ValueError, match=r"model_fn output has shape \(4, 3\) but x has shape"):
        sample(lambda x, t: jnp.zeros((4, 3)), path, key, (4, 2), num_steps=2)


def test_times_outside_the_path_range(setup):
    model, path, key = setup
    with pytest.raises(ValueError, match="valid range"):
        sample(model, path, key, (4, 2), t_end=1.5)
    with pytest.raises(ValueError, match="valid range"):
        sample(model, fj.VPLinear(), key, (4, 2), t_end=1.0)  # VP's t_max is 1 - 1e-5
    with pytest.raises(ValueError, match="time_grid must lie in the path's valid range"):
        sample(model, path, key, (4, 2), time_grid=jnp.array([-0.1, 0.5, 1.0]))
    with pytest.raises(ValueError, match="strictly increasing"):
        sample(model, path, key, (4, 2), time_grid=jnp.array([0.0, 0.6, 0.5, 1.0]))
    with pytest.raises(ValueError, match="save_times must lie"):
        sample(model, path, key, (4, 2), save_times=jnp.array([0.5, 1.2]))
    with pytest.raises(ValueError, match="runs forward in time"):
        sample(model, path, key, (4, 2), method=SDE(sigma=1.0), t_start=0.9, t_end=0.1)


def test_inconsistent_options(setup):
    model, path, key = setup
    with pytest.raises(
        ValueError, match=r"PredictorCorrector.corrector_steps must be an integer >= 1"
    ):
        PredictorCorrector(corrector_steps=0)
    with pytest.raises(ValueError, match=r"AnnealedLangevin.snr must be a finite number > 0"):
        AnnealedLangevin(snr=0.0)
    with pytest.raises(ValueError, match="EDMStochastic needs s_tmin <= s_tmax"):
        EDMStochastic(s_tmin=2.0, s_tmax=1.0)
    with pytest.raises(ValueError, match="adaptive steps are for method 'ode' or 'sde'"):
        sample(model, path, key, (4, 2), method="pc", adaptive=True)
    with pytest.raises(ValueError, match="time_grid only applies to fixed steps"):
        sample(model, path, key, (4, 2), solver="tsit5", adaptive=True, time_grid="edm")
    with pytest.raises(ValueError, match=r"Adaptive\.rtol must be a positive finite number"):
        Adaptive(rtol=-1.0)
    with pytest.raises(ValueError, match="unknown error_norm 'l2'; valid choices are: max, rms"):
        Adaptive(error_norm="l2")
    with pytest.raises(
        ValueError, match="DPMSolverPP integrates the probability-flow ODE: use it with"
    ):
        sample(model, path, key, (4, 2), method="pc", solver="dpmpp_2m")
    with pytest.raises(ValueError, match="method='edm' steps with solver 'heun'"):
        sample(model, path, key, (4, 2), method="edm", solver="tsit5")
    with pytest.raises(ValueError, match="leading batch axis of size B = 4"):
        sample(model, path, key, (4, 2), cond=jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="differs from x_start"):
        sample(model, path, key, (4, 2), x_start=jnp.zeros((5, 2)))
    with pytest.raises(ValueError, match="key is required"):
        sample(model, path, None, (4, 2))
    with pytest.raises(ValueError, match="num_steps must be an integer >= 1"):
        sample(model, path, key, (4, 2), num_steps=0)


def test_bad_states_and_shapes_are_named(setup):
    # A NaN or infinity in x_start would give NaN samples silently; a shape without an event axis
    # or an empty batch would fail deep inside with an internal name.
    model, path, key = setup
    x = np.zeros((4, 2), np.float32)
    x[1, 0] = np.nan
    x[3, 1] = -np.inf
    for bad in (x, x.astype(np.float64), jnp.asarray(x), x.tolist()):
        with pytest.raises(
            ValueError, match=r"x_start contains NaN or infinite values in row\(s\) \[1, 3\]"
        ):
            sample(model, path, None, None, x_start=bad, num_steps=2)
    with pytest.raises(ValueError, match=r"shape must be \(B, \*event_shape\).*got \(5,\)"):
        sample(model, path, key, (5,), num_steps=2)
    with pytest.raises(ValueError, match=r"shape must be \(B, \.\.\.\) with positive sizes"):
        sample(model, path, key, (0, 2), num_steps=2)
    with pytest.raises(
        ValueError, match=r"x_start must have a leading batch axis.*got shape \(5,\)"
    ):
        sample(model, path, None, None, x_start=np.zeros(5, np.float32), num_steps=2)
    with pytest.raises(ValueError, match=r"x_start must hold at least one example"):
        sample(model, path, None, None, x_start=jnp.zeros((0, 2)), num_steps=2)
    good = sample(model, path, None, None, x_start=np.nan_to_num(x, neginf=0.0), num_steps=2)
    chex.assert_shape(good.samples, (4, 2))
    chex.assert_tree_all_finite(good.samples)
