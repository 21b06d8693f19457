"""Sample quality against the Gaussian-mixture oracle (a perfect model: every gap is the sampler's).

Statistics. For an exact sampler, the energy distance between its ``n`` samples and ``n`` fresh data
points has the same law as between two independent ``n``-samples of the data: the finite-sample
floor, whose mean ``m`` and spread ``s`` we measure from ``FLOOR_REPEATS`` pairs. A sampler passes
if its distance is below ``m + 4 s``: for an exact sampler (approximately Gaussian statistic) that
fails with probability ~3e-5 per check, and the keys are fixed, so the outcome is deterministic.
At ``n = 2000`` on the 8-Gaussians ring, ``s`` is ~3e-3, so distribution errors worth ~1e-2 in
energy distance are caught; the negative controls below (too few Euler steps, stopping at
``t = 0.8``) show that the check can fail.

Compile time dominates these tests, so each sampler configuration is compiled once for both
data sets: the model is the 8-Gaussians oracle on the first half of the batch and the two-mode
oracle on the second half (``TwoOracles``). Each half is then compared with its own data. (The
step-size rules of adaptive solvers and of the Langevin corrector see the whole batch, which is
allowed: they are valid for any batch.)
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax as fj
from flowjax.distances import energy_distance, finite_sample_floor
from flowjax.oracle import eight_gaussians, two_modes_2d
from flowjax.sampling import SDE, PredictorCorrector, sample
from flowjax.solvers import Adaptive

N = 2000
FLOOR_REPEATS = 10
SIGMAS_ABOVE_FLOOR = 4.0

PATHS = {"condot": fj.CondOT(), "vp_linear": fj.VPLinear(), "ve": fj.VE()}
DATASETS = {"eight_gaussians": eight_gaussians(), "two_modes_2d": two_modes_2d()}

SAMPLERS = {
    "adaptive_ode": dict(method="ode", solver="tsit5", adaptive=Adaptive(rtol=1e-4, atol=1e-4)),
    "sde_sigma_0.5": dict(method=SDE(sigma=0.5), solver="shark", num_steps=200),
    "reverse_sde": dict(method=SDE(sigma="reverse"), num_steps=200, time_grid="edm"),
    "predictor_corrector": dict(
        method=PredictorCorrector(sigma="reverse", corrector_steps=1, snr=0.16), num_steps=200
    ),
}


class TwoOracles(eqx.Module):
    """``model_fn``: oracle ``a`` on rows ``[:n]``, oracle ``b`` on rows ``[n:]``."""

    a: fj.GaussianMixture
    b: fj.GaussianMixture
    path: fj.AbstractPath
    prediction: str = eqx.field(static=True)
    n: int = eqx.field(static=True)

    def __call__(self, x, t):
        n = self.n
        return jnp.concatenate(
            [
                self.a.predict(self.prediction, self.path, x[:n], t[:n]),
                self.b.predict(self.prediction, self.path, x[n:], t[n:]),
            ]
        )


_ed = jax.jit(energy_distance)


@pytest.fixture(scope="module")
def floors():
    out = {}
    for i, (name, mix) in enumerate(DATASETS.items()):
        m, s = finite_sample_floor(_ed, mix.sample, jax.random.PRNGKey(100 + i), N, FLOOR_REPEATS)
        data = mix.sample(jax.random.PRNGKey(200 + i), N)
        out[name] = (float(m), float(s), data)
    return out


def _check(samples, floors, label):
    halves = {"eight_gaussians": samples[:N], "two_modes_2d": samples[N:]}
    for name, x in halves.items():
        m, s, data = floors[name]
        assert np.all(np.isfinite(np.asarray(x))), f"{label} {name}: non-finite samples"
        d = float(_ed(x, data))
        bound = m + SIGMAS_ABOVE_FLOOR * s
        assert d < bound, f"{label} {name}: energy distance {d:.4f} > floor {m:.4f} + 4 x {s:.4f}"


@pytest.mark.parametrize("method", list(SAMPLERS))
@pytest.mark.parametrize("path_name", list(PATHS))
def test_samples_match_data(path_name, method, floors):
    path = PATHS[path_name]
    model = TwoOracles(*DATASETS.values(), path, "velocity", N)
    res = sample(model, path, jax.random.PRNGKey(1), (2 * N, 2), **SAMPLERS[method])
    _check(res.samples, floors, f"{path_name}/{method}")


@pytest.mark.slow  # the fast suite checks that every prediction gives the velocity's samples
@pytest.mark.parametrize("prediction", ["eps", "score", "x1", "v"])
def test_other_predictions_sample_the_data(prediction, floors):
    # Every prediction kind goes through the same conversions: VP with the reverse SDE (score SDE's
    # sampler) and CondOT with the ODE.
    for path, kw in ((fj.VPLinear(), SAMPLERS["reverse_sde"]), (fj.CondOT(), {"num_steps": 100})):
        model = TwoOracles(*DATASETS.values(), path, prediction, N)
        res = sample(model, path, jax.random.PRNGKey(2), (2 * N, 2), prediction=prediction, **kw)
        _check(res.samples, floors, f"{type(path).__name__}/{prediction}")


@pytest.mark.parametrize(
    "kw",
    [pytest.param(dict(num_steps=2), marks=pytest.mark.slow), dict(num_steps=100, t_end=0.8)],
    ids=["euler_2_steps", "stop_at_0.8"],
)
def test_negative_controls_fail_the_check(kw, floors):
    path = fj.CondOT()
    model = TwoOracles(*DATASETS.values(), path, "velocity", N)
    res = sample(model, path, jax.random.PRNGKey(3), (2 * N, 2), **kw)
    with pytest.raises(AssertionError, match="energy distance"):
        _check(res.samples, floors, "control")


@pytest.mark.parametrize("sigma", [1.0, pytest.param("reverse", marks=pytest.mark.slow)])
def test_sde_marginals_match_p_t(sigma):
    # The SDE extension keeps the marginals p_t for every sigma: states saved at intermediate
    # times are distributed as x_t = alpha_t x1 + beta_t eps.
    path = fj.CondOT()
    mix = eight_gaussians()
    times = [0.3, 0.6, 0.9]
    res = sample(
        mix.model_fn(path),
        path,
        jax.random.PRNGKey(4),
        (N, 2),
        method=SDE(sigma=sigma),
        num_steps=300,
        save_times=jnp.array(times),
    )
    for j, t in enumerate(times):

        def p_t(key, n, t=t):
            k1, k2 = jax.random.split(key)
            x1 = mix.sample(k1, n)
            return path.interpolate(x1, jax.random.normal(k2, x1.shape), t)

        m, s = finite_sample_floor(_ed, p_t, jax.random.PRNGKey(300 + j), N, FLOOR_REPEATS)
        ref = p_t(jax.random.PRNGKey(400 + j), N)
        d = float(_ed(res.trajectory[:, j], ref))
        assert d < m + SIGMAS_ABOVE_FLOOR * s, f"sigma={sigma} t={t}: {d:.4f} vs {m:.4f}+4x{s:.4f}"


def test_langevin_keeps_p_t_stationary():
    path = fj.VPLinear()
    mix = two_modes_2d()
    t = 0.5
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(5), 3)
    x1 = mix.sample(k1, N)
    x = path.interpolate(x1, jax.random.normal(k2, x1.shape), t)
    out = fj.sampling.langevin_corrector(
        mix.model_fn(path, "score"), path, k3, x, t, prediction="score", steps=50, snr=0.16
    )

    def p_t(key, n):
        ka, kb = jax.random.split(key)
        y = mix.sample(ka, n)
        return path.interpolate(y, jax.random.normal(kb, y.shape), t)

    m, s = finite_sample_floor(_ed, p_t, jax.random.PRNGKey(6), N, FLOOR_REPEATS)
    d = float(_ed(out, p_t(jax.random.PRNGKey(7), N)))
    assert d < m + SIGMAS_ABOVE_FLOOR * s
    # and it moved the samples (it is not the identity)
    assert float(jnp.mean(jnp.abs(out - x))) > 0.1
