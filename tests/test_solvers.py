"""Few-step solvers against independent references on the exact Gaussian-mixture oracle (float64).

Each reference below is written from the papers' equations, step by step in NumPy, sharing no
code with :mod:`flowjax.solvers`: DPM-Solver++(2M) as Lu et al.'s Algorithm 2, DPM-Solver++(3M)
as the exact integral (Gauss-Legendre quadrature) of the quadratic through the last three data
predictions, UniPC-bh2 from its linear conditions ``R rho = b``, and EDM's deterministic sampler
as Heun's method in ``sigma`` on ``x / alpha``. The model is the oracle's exact denoiser, so every
difference is the solver's.
"""

import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax as fj
from flowjax import solvers
from flowjax.oracle import eight_gaussians, two_modes_2d
from flowjax.sampling import EDMStochastic, sample


def _mix():
    """The two-mode oracle, built inside each test (so in float64 under the x64 fixture)."""
    return two_modes_2d()


def _coef(path, t):
    t = jnp.asarray(t, jnp.float64)
    return float(path.alpha(t)), float(path.beta(t))


def _lam(path, t):
    a, b = _coef(path, t)
    with np.errstate(divide="ignore"):
        return np.log(a) - np.log(b)


def _denoise(path, x, t):
    return np.asarray(_mix().x1(path, jnp.asarray(x), jnp.asarray(t, jnp.float64)))


def _start(path, ts, n=16, seed=0):
    _, b0 = _coef(path, ts[0])
    return b0 * np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (n, 2), jnp.float64))


def _run(solver, path, ts, x0, prediction="velocity"):
    res = sample(
        _mix().model_fn(path, prediction), path, None, None, x_start=jnp.asarray(x0),
        prediction=prediction, solver=solver, time_grid=jnp.asarray(ts),
    )  # fmt: skip
    return np.asarray(res.samples)


# ------------------------------------------------------------------ independent references


def ref_dpmpp_2m(path, ts, x, lower_order_final=False):
    """Lu et al. (2022), Algorithm 2 (DPM-Solver++(2M)), with the data prediction (and, with
    ``lower_order_final``, the last step first order, as DPM-Solver's reference code does)."""
    d_prev, h_prev = None, None
    n = len(ts) - 1
    for i in range(n):
        (_, b_s), (a_t, b_t) = _coef(path, ts[i]), _coef(path, ts[i + 1])
        h = _lam(path, ts[i + 1]) - _lam(path, ts[i])
        d = _denoise(path, x, ts[i])
        if d_prev is None or (lower_order_final and i == n - 1):
            big_d = d
        else:
            r = h_prev / h
            big_d = (1 + 1 / (2 * r)) * d - 1 / (2 * r) * d_prev
        x = (b_t / b_s) * x - a_t * np.expm1(-h) * big_d
        d_prev, h_prev = d, h
    return x


def _integral(h, poly):
    """``int_0^h e^{-(h - u)} poly(u) du`` by 40-point Gauss-Legendre (exact to rounding here)."""
    nodes, weights = np.polynomial.legendre.leggauss(40)
    u = 0.5 * h * (nodes + 1.0)
    vals = np.exp(-(h - u))[:, None, None] * np.stack([poly(ui) for ui in u])
    return 0.5 * h * np.tensordot(weights, vals, axes=1)


def ref_dpmpp_3m(path, ts, x, lower_order_final=False):
    """Step 1 DDIM, step 2 Algorithm 2, then the quadratic through the last three predictions in
    lambda, integrated exactly against the exponential (the third-order multistep step); with
    ``lower_order_final`` step ``i`` of ``N`` has order at most ``N - i``."""
    hist = []  # (lambda, D)
    n = len(ts) - 1
    for i in range(n):
        (_, b_s), (a_t, b_t) = _coef(path, ts[i]), _coef(path, ts[i + 1])
        lam_s, lam_t = _lam(path, ts[i]), _lam(path, ts[i + 1])
        h = lam_t - lam_s
        hist.append((lam_s, _denoise(path, x, ts[i])))
        order = min(len(hist), 3, n - i if lower_order_final else 3)
        if order == 1:
            step = -np.expm1(-h) * hist[-1][1]
        elif order == 2:
            r = (lam_s - hist[-2][0]) / h
            step = -np.expm1(-h) * ((1 + 1 / (2 * r)) * hist[-1][1] - hist[-2][1] / (2 * r))
        else:
            (l2, d2), (l1, d1), (_, d0) = hist[-3:]
            u_nodes = [l2 - lam_s, l1 - lam_s, 0.0]

            def lagrange(u, u_nodes=u_nodes, vals=(d2, d1, d0)):
                out = 0.0
                for j, (uj, vj) in enumerate(zip(u_nodes, vals, strict=True)):
                    w = np.prod([(u - uk) / (uj - uk) for k, uk in enumerate(u_nodes) if k != j])
                    out = out + w * vj
                return out

            step = _integral(h, lagrange)
        x = (b_t / b_s) * x + a_t * step
    return x


def _phi_h(hh, order):
    """``[h phi_1, h phi_2 ..]``-type factors of UniPC: ``g_k = g_{k-1} / hh - 1/k!`` from
    ``g_1 = expm1(hh) / hh - 1``."""
    g, out = np.expm1(hh) / hh - 1.0, []
    for k in range(1, order + 1):
        out.append(g)
        g = g / hh - 1.0 / math.factorial(k + 1)
    return out


def ref_unipc(path, ts, x, order):
    """UniPC with B(h) = e^{-h} - 1 (bh2), data prediction, following Zhao et al. (2023):
    predictor UniP-p from the last p predictions (rho = 1/2 for p = 2, else ``R rho = b``),
    corrector UniC with the new prediction at the predicted point (rho = 1/2 for p = 1), which is
    also the history value; warm-up with growing order, no corrector on the last step."""
    n = len(ts) - 1
    lams = [_lam(path, ts[0])]
    preds = [_denoise(path, x, ts[0])]
    for i in range(n):
        p = min(order, i + 1)
        (_, b_s), (a_t, b_t) = _coef(path, ts[i]), _coef(path, ts[i + 1])
        lam_t = _lam(path, ts[i + 1])
        h = lam_t - lams[-1]
        hh = -h
        big_b = np.expm1(hh)
        rks = [(lams[-1 - m] - lams[-1]) / h for m in range(1, p)]
        d1s = [(preds[-1 - m] - preds[-1]) / rk for m, rk in zip(range(1, p), rks, strict=True)]
        gs = _phi_h(hh, p)
        b = np.array([gs[k - 1] * math.factorial(k) / big_b for k in range(1, p + 1)])
        base = (b_t / b_s) * x - a_t * np.expm1(hh) * preds[-1]
        if p == 1:
            pred_sum = 0.0
        else:
            rho_p = (
                np.array([0.5])
                if p == 2
                else np.linalg.solve(
                    np.array([[rk**j for rk in rks] for j in range(p - 1)]), b[:-1]
                )
            )
            pred_sum = sum(r * d for r, d in zip(rho_p, d1s, strict=True))
        x_pred = base - a_t * big_b * pred_sum
        if i == n - 1:
            return x_pred
        d_new = _denoise(path, x_pred, ts[i + 1])
        nodes = [*rks, 1.0]
        rho_c = (
            np.array([0.5])
            if p == 1
            else np.linalg.solve(np.array([[q**j for q in nodes] for j in range(p)]), b)
        )
        corr_sum = sum(r * d for r, d in zip(rho_c[:-1], d1s, strict=True))
        x = base - a_t * big_b * (corr_sum + rho_c[-1] * (d_new - preds[-1]))
        lams.append(lam_t)
        preds.append(d_new)
    return x


def ref_edm_heun(path, ts, x):
    """EDM's deterministic sampler: Heun in sigma on ``x / alpha`` (Euler into sigma = 0)."""
    for i in range(len(ts) - 1):
        (a_s, b_s), (a_t, b_t) = _coef(path, ts[i]), _coef(path, ts[i + 1])
        s_i, s_j = b_s / a_s, b_t / a_t
        y = x / a_s
        d = (y - _denoise(path, a_s * y, ts[i])) / s_i
        y_next = y + (s_j - s_i) * d
        if s_j > 0:
            d2 = (y_next - _denoise(path, a_t * y_next, ts[i + 1])) / s_j
            y_next = y + (s_j - s_i) * 0.5 * (d + d2)
        x = a_t * y_next
    return x


# ------------------------------------------------------------------ equal to the references

# A non-uniform grid inside (0, 1): finite log-SNR everywhere.
_TS = np.array([0.02, 0.1, 0.22, 0.35, 0.5, 0.63, 0.75, 0.86, 0.94, 0.985])


@pytest.mark.parametrize(
    "path", [fj.CondOT(), pytest.param(fj.VE(), marks=pytest.mark.slow)], ids=["condot", "ve"]
)
def test_dpmpp_2m_is_algorithm_2(path, x64):
    x0 = _start(path, _TS)
    chex.assert_trees_all_close(
        _run("dpmpp_2m", path, _TS, x0), ref_dpmpp_2m(path, _TS, x0), atol=1e-8, rtol=0
    )


def test_dpmpp_2m_from_alpha_0_to_beta_0_is_the_limit(x64):
    # On CondOT's whole range: the first step from alpha = 0 is DDIM's limit (alpha_1 D_0 +
    # beta_1 x_0), the second extrapolates through no node at lambda = -inf (Algorithm 2's
    # 1/(2r) -> 0), and the step into beta = 0 returns the last data prediction.
    path = fj.CondOT()
    ts = np.concatenate([[0.0], _TS, [1.0]])
    x0 = _start(path, ts)
    inner = ref_dpmpp_2m(path, ts[:-1], x0)  # every step up to the last (finite there)
    expected = _denoise(path, inner, ts[-2])
    chex.assert_trees_all_close(_run("dpmpp_2m", path, ts, x0), expected, atol=1e-8, rtol=0)


@pytest.mark.parametrize(
    "path", [fj.VE(), pytest.param(fj.VPLinear(), marks=pytest.mark.slow)], ids=["ve", "vp"]
)
def test_dpmpp_3m_is_the_exact_quadratic_step(path, x64):
    x0 = _start(path, _TS)
    chex.assert_trees_all_close(
        _run("dpmpp_3m", path, _TS, x0), ref_dpmpp_3m(path, _TS, x0), atol=1e-8, rtol=0
    )


def test_lower_order_final_lowers_only_the_last_steps(x64):
    # lower_order_final: order min(order, N - i) at step i (2M: a DDIM last step; 3M: the last
    # two steps of orders 2 and 1); N evaluations either way. Off by default.
    path = fj.VE()
    x0 = _start(path, _TS)
    for order, ref in ((2, ref_dpmpp_2m), (3, ref_dpmpp_3m)):
        got = _run(solvers.DPMSolverPP(order=order, lower_order_final=True), path, _TS, x0)
        chex.assert_trees_all_close(got, ref(path, _TS, x0, True), atol=1e-8, rtol=0)
        plain = ref(path, _TS, x0)
        assert np.max(np.abs(got - plain)) > 1e-6  # the option changes something


@pytest.mark.parametrize("order", [2, 3])
def test_unipc_bh2_with_corrector(order, x64):
    path = fj.CondOT()
    x0 = _start(path, _TS)
    got = _run(solvers.UniPC(order=order), path, _TS, x0)
    chex.assert_trees_all_close(got, ref_unipc(path, _TS, x0, order), atol=1e-8, rtol=0)


def test_unipc_without_corrector_is_dpmpp(x64):
    # UniP-2 with rho = 1/2 is Algorithm 2, and UniP-3 (rho from R rho = b) integrates the same
    # quadratic as DPM-Solver++(3M): two derivations of the weights that must agree.
    path = fj.VPLinear()
    x0 = _start(path, _TS)
    for order in (2, 3):
        chex.assert_trees_all_close(
            _run(solvers.UniPC(order=order, corrector=False), path, _TS, x0),
            _run(solvers.DPMSolverPP(order=order), path, _TS, x0),
            atol=1e-10,
            rtol=0,
        )


@pytest.mark.parametrize(
    "path", [fj.VPLinear(), pytest.param(fj.CondOT(), marks=pytest.mark.slow)], ids=["vp", "condot"]
)
def test_edm_without_churn_is_heun_in_sigma(path, x64):
    ts = np.asarray(solvers.time_grid(path, 8, t_start=0.01, t_end=path.t_max, grid="edm"))
    x0 = _start(path, ts)
    res = sample(
        _mix().model_fn(path), path, jax.random.PRNGKey(0), None, x_start=jnp.asarray(x0),
        method=EDMStochastic(churn=0.0), solver="heun", time_grid=jnp.asarray(ts),
    )  # fmt: skip
    chex.assert_trees_all_close(
        np.asarray(res.samples), ref_edm_heun(path, ts, x0), atol=1e-8, rtol=0
    )
    assert int(res.nfe) == 2 * 8 - (1 if _coef(path, ts[-1])[1] == 0 else 0)


# ------------------------------------------------------------------ convergence order

# Error at the end against a tight adaptive solve; the log-SNR grid with caps beyond the ends
# (sigma_max = 1e6, sigma_min = 1e-6 never bind on [1e-3, 1 - 1e-3]) halves every step in lambda.
_GRID = solvers.LogSNRGrid(sigma_max=1e6, sigma_min=1e-6)
_ORDERS = {  # solver: (expected slope, step counts in its asymptotic range)
    "dpmpp_2m": (2, (80, 160, 320)),
    "dpmpp_2s": (2, (40, 80, 160)),
    "dpmpp_3m": (3, (80, 160, 320)),
    "unipc": (3, (80, 160, 320)),  # UniP-2 + UniC: order 3
    # UniC raises UniP-3 to order 4 per step, but the warm-up (orders 1 and 2, each corrected)
    # leaves a third-order error: the global order is 3.
    "unipc_3": (3, (80, 160, 320)),
}


@pytest.mark.slow
@pytest.mark.parametrize("solver", list(_ORDERS))
def test_convergence_order(solver, x64):
    path = fj.CondOT()
    t0, t1 = 1e-3, 1 - 1e-3
    x0 = _start(path, [t0], n=64)
    model = _mix().model_fn(path)
    tight = solvers.Adaptive(rtol=1e-12, atol=1e-12, max_steps=100_000)
    ref = sample(model, path, None, None, x_start=jnp.asarray(x0), solver="tsit5", adaptive=tight,
                 t_start=t0, t_end=t1).samples  # fmt: skip
    order, steps = _ORDERS[solver]
    errs = []
    for n in steps:
        x = sample(model, path, None, None, x_start=jnp.asarray(x0), solver=solver, num_steps=n,
                   time_grid=_GRID, t_start=t0, t_end=t1).samples  # fmt: skip
        errs.append(float(jnp.max(jnp.abs(x - ref))))
    slope = -np.polyfit(np.log2(steps), np.log2(errs), 1)[0]
    assert abs(slope - order) < 0.35, (solver, errs, slope)


# ------------------------------------------------------------------ any prediction, any path


@pytest.mark.parametrize(
    "solver",
    [
        "dpmpp_3m",
        pytest.param("unipc", marks=pytest.mark.slow),
        pytest.param("dpmpp_2s", marks=pytest.mark.slow),
    ],
)
def test_every_prediction_gives_the_same_samples(solver, x64):
    # Every kind converts to the data prediction in closed form: the same samples to rounding.
    path, mix = fj.VPCosine(), eight_gaussians()
    out = {}
    for pred in fj.PREDICTIONS:
        out[pred] = sample(
            mix.model_fn(path, pred), path, jax.random.PRNGKey(0), (64, 2), prediction=pred,
            solver=solver, num_steps=8, t_start=0.01, t_end=0.99, time_grid="logsnr",
        ).samples  # fmt: skip
    for pred, x in out.items():
        chex.assert_trees_all_close(
            x, out["velocity"], rtol=1e-9, atol=1e-9, custom_message=f"prediction {pred}"
        )


@pytest.mark.slow
def test_edm_sampler_every_prediction(x64):
    path, mix = fj.VPLinear(), eight_gaussians()
    out = {}
    for pred in fj.PREDICTIONS:
        out[pred] = sample(
            mix.model_fn(path, pred), path, jax.random.PRNGKey(0), (64, 2), prediction=pred,
            method=EDMStochastic(churn=10.0), solver="heun", num_steps=8, time_grid="edm",
            t_end=0.99,
        ).samples  # fmt: skip
    for x in out.values():
        chex.assert_trees_all_close(x, out["velocity"], rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------ NFE


def _counted(path, calls):
    base = _mix().model_fn(path)

    def fn(x, t):
        jax.debug.callback(lambda: calls.append(x.shape[0]))
        return base(x, t)

    return fn


@pytest.mark.parametrize(
    ("solver", "method", "expected"),
    [
        ("unipc", "ode", 7),  # one evaluation per step; the corrector reuses it
        pytest.param("dpmpp_2s", "ode", 14, marks=pytest.mark.slow),
        pytest.param(
            "heun", EDMStochastic(churn=5.0), 13, marks=pytest.mark.slow
        ),  # into beta = 0: Euler
    ],
    ids=["unipc", "dpmpp_2s", "edm"],
)
def test_nfe_is_counted(solver, method, expected):
    path, calls = fj.CondOT(), []
    res = sample(_counted(path, calls), path, jax.random.PRNGKey(0), (8, 2), solver=solver,
                 method=method, num_steps=7, time_grid="edm")  # fmt: skip
    jax.block_until_ready(res)
    assert int(res.nfe) == len(calls) == expected


# ------------------------------------------------------------------ grids and saved states


def test_logsnr_grid_is_uniform_in_lambda_with_caps(x64):
    path = fj.VPLinear()  # sigma from 59 to 0.34 on [0.1, 0.9]: inside the caps [0.002, 80]
    g = np.asarray(solvers.time_grid(path, 10, t_start=0.1, t_end=0.9, grid="logsnr"))
    lam = np.array([_lam(path, t) for t in g])
    np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=1e-9)
    cond = fj.CondOT()  # lambda = -inf at 0 and +inf at 1: one capped interval at each end
    g = np.asarray(solvers.time_grid(cond, 10, t_start=0.0, t_end=1.0, grid="logsnr"))
    assert g[0] == 0.0 and g[-1] == 1.0
    sig = np.array([_coef(cond, t)[1] / _coef(cond, t)[0] for t in g[1:-1]])
    np.testing.assert_allclose(sig[[0, -1]], [80.0, 0.002], rtol=1e-9)
    np.testing.assert_allclose(np.diff(np.log(sig)), np.diff(np.log(sig))[0], rtol=1e-7)


# sigma(t) = beta/alpha and its inverse in closed form, written from each path's definition
# (independent of the grid's bisection): CondOT (1 - t)/t; VE 0.01 * 5000^(1 - t); VP-linear
# sqrt(e^B - 1) with B(s) = 0.1 s + 9.95 s^2, s = 1 - t; EDM (80^(1/7) + t (0.002^(1/7) -
# 80^(1/7)))^7.
_K_HI, _K_LO = 80.0 ** (1 / 7), 0.002 ** (1 / 7)
_SIGMA = {
    "condot": (lambda t: (1 - t) / t, lambda s: 1 / (1 + s)),
    "ve": (
        lambda t: 0.01 * 5000.0 ** (1 - t),
        lambda s: 1 - np.log(s / 0.01) / np.log(5000.0),
    ),
    "vp": (
        lambda t: np.sqrt(np.expm1(0.1 * (1 - t) + 9.95 * (1 - t) ** 2)),
        lambda s: 1 - (np.sqrt(0.01 + 39.8 * np.log1p(s**2)) - 0.1) / 19.9,
    ),
    "edm": (
        lambda t: (_K_HI + t * (_K_LO - _K_HI)) ** 7,
        lambda s: (s ** (1 / 7) - _K_HI) / (_K_LO - _K_HI),
    ),
}
_LOGSNR_CASES = {  # (t_start, t_end): both ends capped, either, neither, and ends equal to a cap
    "condot": [(0.0, 1.0), (1e-3, 0.9), (0.02, 0.98), (1 / 81, 1 / 1.002)],
    "ve": [(0.0, 1.0), (0.3, 0.9)],
    "vp": [(0.0, 1 - 1e-5), (0.1, 0.9), (0.5, 1 - 1e-5)],
    "edm": [(0.0, 1.0)],  # its ends are the caps 80 and 0.002 exactly
}


def _expected_logsnr_grid(name, n, t0, t1, s_max=80.0, s_min=0.002):
    """Uniform in log sigma between the ends, or between the caps with one interval beyond each
    cap that an end passes (by more than rounding)."""
    sigma, time = _SIGMA[name]
    with np.errstate(divide="ignore"):
        s0, s1 = sigma(np.float64(t0)), sigma(np.float64(t1))
    n_hi, n_lo = int(s0 > s_max * 1.01), int(s1 < s_min / 1.01)
    hi, lo = (s_max if n_hi else s0), (s_min if n_lo else s1)
    ts = time(np.exp(np.linspace(np.log(hi), np.log(lo), n - n_hi - n_lo + 1)))
    ts = np.concatenate([[t0] * n_hi, ts, [t1] * n_lo])
    ts[0], ts[-1] = t0, t1
    return ts


def test_logsnr_grid_against_closed_form_inverses(x64):
    # VP, VE, CondOT and EDM, with ends at lambda = +-inf, beyond the caps, inside them and equal
    # to them (EDM's ends in float32 land a rounding outside the caps: no zero-length interval).
    paths = {"condot": fj.CondOT(), "ve": fj.VE(), "vp": fj.VPLinear(), "edm": fj.EDM()}
    for name, cases in _LOGSNR_CASES.items():
        for (t0, t1), n in itertools.product(cases, (4,)):
            want = _expected_logsnr_grid(name, n, t0, t1)
            for dtype, atol in ((jnp.float64, 1e-12), (jnp.float32, 5e-6)):
                got = solvers.time_grid(
                    paths[name], n, t_start=t0, t_end=t1, grid="logsnr", dtype=dtype
                )
                chex.assert_shape(got, (n + 1,))
                chex.assert_trees_all_close(
                    np.asarray(got, np.float64), want, atol=atol, rtol=0,
                    custom_message=f"{name} [{t0}, {t1}] N={n} {dtype.__name__}",
                )  # fmt: skip
                assert np.all(np.diff(np.asarray(got)) > 0), (name, t0, t1, n, got)
    # the spacing in lambda itself, from the closed form: equal steps between the caps
    sigma, _ = _SIGMA["vp"]
    g = np.asarray(solvers.time_grid(paths["vp"], 10, t_start=0.0, t_end=1 - 1e-5, grid="logsnr"))
    lam = -np.log(sigma(g))
    np.testing.assert_allclose(lam[[1, -2]], -np.log([80.0, 0.002]), rtol=1e-12)
    np.testing.assert_allclose(np.diff(lam[1:-1]), np.diff(lam[1:-1])[0], rtol=1e-9)
    assert lam[0] < lam[1] and lam[-1] > lam[-2]


@pytest.mark.slow
def test_multistep_saves_the_states_of_the_steps(x64):
    # A DPM-Solver++ state at a grid time does not depend on later grid times, so the saved
    # state at t_k equals the end of the same solve stopped at t_k.
    path = fj.VPLinear()
    x0 = _start(path, _TS)
    res = sample(_mix().model_fn(path), path, None, None, x_start=jnp.asarray(x0),
                 solver="dpmpp_3m", time_grid=jnp.asarray(_TS),
                 save_times=jnp.asarray([_TS[4], 0.7, _TS[-1]]))  # fmt: skip
    chex.assert_trees_all_close(
        res.trajectory[:, 0], _run("dpmpp_3m", path, _TS[:5], x0), atol=1e-12, rtol=0
    )
    chex.assert_trees_all_equal(res.trajectory[:, -1], res.samples)


# ------------------------------------------------------------------ bad input


def test_bad_input_is_named():
    path = fj.CondOT()
    model = _mix().model_fn(path)
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match=r"needs num_steps >= 2 grid intervals; got 1"):
        sample(model, path, key, (4, 2), solver="dpmpp_2m", num_steps=1)
    with pytest.raises(ValueError, match=r"needs num_steps >= 3 grid intervals; got 2"):
        sample(model, path, key, (4, 2), solver="unipc_3", num_steps=2)
    with pytest.raises(
        ValueError, match=r"DPMSolverPP2S needs alpha > 0 at the start.*t_start=0\.001"
    ):
        sample(model, path, key, (4, 2), solver="dpmpp_2s", t_start=0.0)
    with pytest.raises(ValueError, match=r"DPMSolverPP2S needs beta > 0 at the end"):
        sample(model, path, key, (4, 2), solver="dpmpp_2s", t_end=1.0)
    with pytest.raises(ValueError, match=r"method='edm' needs alpha > 0 at the start"):
        sample(model, path, key, (4, 2), method="edm", solver="heun", t_start=0.0)
    with pytest.raises(ValueError, match=r"UniPC is not an SDE solver; SDE solvers are: euler"):
        sample(model, path, key, (4, 2), method="sde", solver=solvers.UniPC())
    with pytest.raises(
        ValueError, match=r"integrates the probability-flow ODE: use it with method='ode'"
    ):
        sample(model, path, key, (4, 2), method="pc", solver=solvers.UniPC())
    with pytest.raises(ValueError, match=r"UniPC runs forward in time"):
        sample(model, path, None, None, x_start=jnp.zeros((4, 2)), solver="unipc",
               t_start=1.0, t_end=0.0)  # fmt: skip
    with pytest.raises(ValueError, match="has no error estimate, so adaptive steps cannot use it"):
        sample(model, path, key, (4, 2), solver="dpmpp_3m", adaptive=True)
    with pytest.raises(ValueError, match=r"DPMSolverPP.order must be one of 2, 3; got 4"):
        solvers.DPMSolverPP(order=4)
    with pytest.raises(TypeError, match=r"UniPC.corrector must be True or False"):
        solvers.UniPC(corrector=1)
    with pytest.raises(ValueError, match="LogSNRGrid needs sigma_min < sigma_max"):
        solvers.LogSNRGrid(sigma_max=1.0, sigma_min=2.0)
    with pytest.raises(ValueError, match=r"EDMGrid.rho must be a positive finite number"):
        solvers.EDMGrid(rho=0.0)
    with pytest.raises(ValueError, match="the likelihood's augmented ODE needs a Runge-Kutta"):
        fj.likelihood.log_likelihood(model, path, jnp.zeros((2, 2)), solver="dpmpp_2m", num_steps=4)
