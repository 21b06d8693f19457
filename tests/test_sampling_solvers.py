"""Solvers: NFE bookkeeping, convergence order, ODE round trips, backend agreement, grids."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax as fj
from flowjax.oracle import eight_gaussians, two_modes_2d
from flowjax.sampling import SDE, PredictorCorrector, sample
from flowjax.solvers import (
    ODE_SOLVERS,
    SDE_SOLVERS,
    Adaptive,
    EDMGrid,
    Euler,
    batch_max_rms_norm,
    batch_rms_norm,
    get_solver,
    noise_to_signal,
    time_grid,
)

# ------------------------------------------------------------------ NFE against a call counter

# Fast suite: one non-FSAL fixed solver, one FSAL adaptive solver (with rejected steps), one
# adaptive SDE solver and one exponential integrator; every other solver runs under --runslow.
# (Bosh3 at this tolerance rejects its first step: the FSAL start state must not be re-evaluated.)
_FAST_NFE = {
    ("ode", "euler", False),
    ("ode", "bosh3", True),
    ("sde", "shark", True),
    ("ode", "unipc", False),
}


def _nfe_cases():
    for table, method in ((ODE_SOLVERS, "ode"), (SDE_SOLVERS, "sde")):
        for name, spec in table.items():
            for adaptive in (False, True) if spec.error_estimate else (False,):
                case = (method, name, adaptive)
                marks = () if case in _FAST_NFE else (pytest.mark.slow,)
                yield pytest.param(*case, marks=marks, id=f"{method}-{name}-{adaptive}")


def _counted(path, calls, prediction="velocity"):
    base = two_modes_2d().model_fn(path, prediction)

    def fn(x, t):
        jax.debug.callback(lambda: calls.append(x.shape[0]))
        return base(x, t)

    return fn


@pytest.mark.parametrize(("method", "solver", "adaptive"), list(_nfe_cases()))
def test_nfe_counts_every_model_call(method, solver, adaptive):
    path = fj.CondOT()
    calls = []
    tol = 1e-2 if method == "sde" else 1e-4
    if method == "sde":
        method = SDE(sigma=1.0)
        solver = Euler(backend="diffrax") if solver == "euler" else solver
    res = sample(
        _counted(path, calls),
        path,
        jax.random.PRNGKey(0),
        (16, 2),
        method=method,
        solver=solver,
        adaptive=adaptive and Adaptive(rtol=tol, atol=tol),
        num_steps=10,
    )
    jax.block_until_ready(res)
    assert int(res.nfe) == len(calls)
    if adaptive:
        assert int(res.num_accepted) + int(res.num_rejected) > 0
    else:
        assert (int(res.num_accepted), int(res.num_rejected)) == (10, 0)


@pytest.mark.parametrize(
    "solver", [Euler(backend="diffrax"), pytest.param("tsit5", marks=pytest.mark.slow)]
)
def test_nfe_pc_langevin_and_denoise(solver):
    path = fj.CondOT()
    calls = []
    res = sample(
        _counted(path, calls),
        path,
        jax.random.PRNGKey(0),
        (8, 2),
        method=PredictorCorrector(corrector_steps=2),
        solver=solver,
        num_steps=5,
        denoise_final=True,
    )
    jax.block_until_ready(res)
    per_step = 2 + get_solver(solver).nfe(1)
    assert int(res.nfe) == len(calls) == 5 * per_step + 1
    calls.clear()
    res = sample(
        _counted(path, calls), path, jax.random.PRNGKey(0), (8, 2),
        method=fj.sampling.AnnealedLangevin(steps=3), num_steps=4,
    )  # fmt: skip
    jax.block_until_ready(res)
    assert int(res.nfe) == len(calls) == 12


# ------------------------------------------------------------------ convergence order


def _final_error(path, x0, solver, n, ref):
    model = two_modes_2d().model_fn(path)
    res = sample(model, path, None, None, x_start=x0, solver=solver, num_steps=n)
    return float(jnp.max(jnp.abs(res.samples - ref)))


def _tight_reference(path, seed: int, n: int):
    """Prior draws, the two-mode oracle's model and its ODE solution at rtol = atol = 1e-11."""
    x0 = path.prior_sample(jax.random.PRNGKey(seed), (n, 2))
    model = two_modes_2d().model_fn(path)
    opts = dict(solver="tsit5", adaptive=Adaptive(rtol=1e-11, atol=1e-11, max_steps=100_000))
    return x0, model, sample(model, path, None, None, x_start=x0, **opts).samples


@pytest.mark.parametrize(
    "path", [fj.CondOT(), pytest.param(fj.VE(), marks=pytest.mark.slow)], ids=["condot", "ve"]
)
def test_convergence_order(path, x64):
    # Global error of a p-th order method falls by 2^p per halving of the step: Euler ~2x, Heun ~4x,
    # measured against a tight adaptive Tsit5 solution in float64.
    x0, _, ref = _tight_reference(path, 0, 64)
    for solver, order, steps in (("euler", 1, (40, 80, 160)), ("heun", 2, (40, 80, 160))):
        errs = [_final_error(path, x0, solver, n, ref) for n in steps]
        ratios = np.array(errs[:-1]) / np.array(errs[1:])
        target = 2.0**order
        assert np.all(np.abs(np.log2(ratios) - order) < 0.25), (solver, errs, ratios, target)


def test_error_norm_rms_takes_fewer_steps_and_max_bounds_every_example(x64):
    # "max": every example's error is controlled; "rms" (the torchdiffeq convention) averages
    # over the batch, so a large batch takes fewer steps and its worst example is less accurate.
    path = fj.CondOT()
    x0, model, ref = _tight_reference(path, 1, 512)
    out = {
        n: sample(model, path, None, None, x_start=x0, solver="dopri5",
                  adaptive=Adaptive(rtol=1e-4, atol=1e-4, error_norm=n))
        for n in ("max", "rms")
    }  # fmt: skip
    assert int(out["rms"].nfe) <= int(out["max"].nfe), {k: int(r.nfe) for k, r in out.items()}
    worst = {k: float(jnp.max(jnp.abs(r.samples - ref))) for k, r in out.items()}
    assert worst["max"] <= worst["rms"], worst
    assert worst["max"] < 1e-2, worst
    # the norms themselves: one badly resolved example among many
    err = (jnp.zeros((99, 2)).at[0].set(1.0), jnp.zeros((99,)))
    assert float(batch_max_rms_norm(err)) == pytest.approx(np.sqrt(2 / 3))
    assert float(batch_rms_norm(err)) == pytest.approx(np.sqrt(2 / (3 * 99)))


# ------------------------------------------------------------------ ODE round trip


@pytest.mark.parametrize(
    "path",
    [fj.CondOT(), pytest.param(fj.VPLinear(), marks=pytest.mark.slow)],
    ids=["condot", "vp_linear"],
)
def test_ode_round_trip(path, x64):
    model = eight_gaussians().model_fn(path)
    x0 = path.prior_sample(jax.random.PRNGKey(1), (128, 2))
    kw = dict(solver="dopri5", adaptive=Adaptive(rtol=1e-9, atol=1e-9))
    fwd = sample(model, path, None, None, x_start=x0, **kw)
    t0, t1 = path.t_min, path.t_max
    back = sample(model, path, None, None, x_start=fwd.samples, t_start=t1, t_end=t0, **kw)
    # The flow map is not contracting either way; 1e-6 is ~1000x the per-step tolerance.
    np.testing.assert_allclose(back.samples, x0, atol=1e-6)
    assert float(jnp.max(jnp.abs(fwd.samples - x0))) > 1.0  # it did go somewhere


# ------------------------------------------------------------------ backends agree on one grid


@pytest.mark.parametrize(
    ("method", "kw"),
    [
        ("ode", {}),
        pytest.param("ode", {"time_grid": "edm"}, marks=pytest.mark.slow),
        (SDE(sigma=0.7), {}),
        pytest.param(SDE(sigma="reverse"), {"time_grid": "edm"}, marks=pytest.mark.slow),
        pytest.param(PredictorCorrector(sigma=0.5), {}, marks=pytest.mark.slow),
    ],
    ids=["ode", "ode-edm", "sde", "reverse-edm", "pc"],
)
def test_scan_matches_diffrax(method, kw):
    path = fj.VPLinear()
    model = eight_gaussians().model_fn(path)
    save = jnp.array([0.2, 0.55, 0.9])
    key = jax.random.PRNGKey(3)
    kw = dict(method=method, num_steps=60, save_times=save, **kw)
    s = sample(model, path, key, (256, 2), solver=Euler(backend="scan"), **kw)
    d = sample(model, path, key, (256, 2), solver=Euler(backend="diffrax"), **kw)
    np.testing.assert_allclose(s.samples, d.samples, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(s.trajectory, d.trajectory, rtol=2e-5, atol=2e-5)
    assert int(s.nfe) == int(d.nfe)


def test_trajectory_ends_at_samples():
    path = fj.CondOT()
    model = eight_gaussians().model_fn(path)
    res = sample(model, path, jax.random.PRNGKey(0), (32, 2), save_times=jnp.array([0.0, 1.0]))
    assert res.trajectory.shape == (32, 2, 2)
    np.testing.assert_array_equal(res.trajectory[:, -1], res.samples)
    np.testing.assert_allclose(res.ts, [0.0, 1.0])
    assert float(jnp.std(res.trajectory[:, 0])) == pytest.approx(1.0, abs=0.2)  # the prior


# ------------------------------------------------------------------ time grids


def test_uniform_grid_endpoints():
    path = fj.VPLinear()
    g = time_grid(path, 10, t_start=0.0, t_end=path.t_max)
    assert g.shape == (11,)
    assert float(g[0]) == 0.0 and float(g[-1]) == np.float32(path.t_max)
    np.testing.assert_allclose(np.diff(np.asarray(g)), path.t_max / 10, rtol=1e-5)


def test_edm_grid_is_rho_spaced_in_sigma(x64):
    path = fj.VE()  # sigma(0) = 50 < 80: no cap
    g = time_grid(path, 12, t_start=0.0, t_end=1.0, grid=EDMGrid(rho=7.0))
    k = np.asarray(noise_to_signal(path, g)) ** (1 / 7)
    np.testing.assert_allclose(np.diff(k), np.diff(k)[0], rtol=1e-9)
    assert float(g[0]) == 0.0 and float(g[-1]) == 1.0


def test_edm_grid_on_edm_path_is_uniform(x64):
    path = fj.EDM()  # its time *is* EDM's rho-warped noise level (sigma_max = 80, rho = 7)
    g = time_grid(path, 18, t_start=0.0, t_end=1.0, grid=EDMGrid(rho=7.0))
    np.testing.assert_allclose(g, np.linspace(0, 1, 19), atol=1e-12)


def test_edm_grid_caps_infinite_sigma(x64):
    path = fj.CondOT()  # sigma(0) = inf: the first step goes to sigma = 80
    g = np.asarray(time_grid(path, 10, t_start=0.0, t_end=1.0, grid="edm"))
    assert g[0] == 0.0 and g[-1] == 1.0
    assert float(noise_to_signal(path, g[1])) == pytest.approx(80.0, rel=1e-9)
    k = np.asarray(noise_to_signal(path, g[1:])) ** (1 / 7)
    np.testing.assert_allclose(np.diff(k), np.diff(k)[0], rtol=1e-7)
    back = np.asarray(time_grid(path, 10, t_start=1.0, t_end=0.0, grid="edm"))
    np.testing.assert_allclose(back, g[::-1])


def test_numpy_x_start_matches_jax_x_start():
    # a float32 numpy x_start skips the eager copy (the jitted call transfers it): same samples;
    # integer data is still refused by name
    path = fj.CondOT()
    model = two_modes_2d().model_fn(path)
    x0 = np.asarray(path.prior_sample(jax.random.PRNGKey(3), (8, 2)), np.float32)
    opts = dict(solver="heun", num_steps=10)
    a = sample(model, path, None, None, x_start=x0, **opts).samples
    b = sample(model, path, None, None, x_start=jnp.asarray(x0), **opts).samples
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(TypeError, match="x_start"):
        sample(model, path, None, None, x_start=x0.astype(np.int32), **opts)
