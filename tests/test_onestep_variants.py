"""jit and non-jit variants of the pure functions of the one-step objectives and time inputs.

Each runs under ``chex.variants`` with the same assertions, against a numpy float64 reference
written here from the formulas of the papers (improved consistency training, shortcut models,
MeanFlow) and of the time inputs (log-SNR, EDM's ``c_noise``); float32 tolerances.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from flowjax import losses as L
from flowjax import models as M
from flowjax import paths

RTOL = 2e-5


class OneStepUnderJit(chex.TestCase):
    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((4, 3)).astype(np.float32)
        self.y = rng.standard_normal((4, 3)).astype(np.float32)
        self.t = np.array([0.1, 0.3, 0.6, 0.9], np.float32)

    @chex.variants(with_jit=True, without_jit=True)
    def test_pseudo_huber(self):
        out = self.variant(lambda a, b: L.pseudo_huber(a, b, 0.03))(self.x, self.y)
        sq = ((self.x.astype(np.float64) - self.y) ** 2).sum(axis=1)
        chex.assert_shape(out, (4,))
        chex.assert_trees_all_close(out, np.sqrt(sq + 0.03**2) - 0.03, rtol=RTOL)

    @chex.variants(with_jit=True, without_jit=True)
    def test_karras_sigmas_ascend_rho_spaced(self):
        n, rho, lo, hi = 6, 7.0, 0.002, 80.0
        out = np.asarray(self.variant(lambda k: L.karras_sigmas(k, 9))(jnp.int32(n)))
        i = np.arange(n) / (n - 1)
        ref = (lo ** (1 / rho) + i * (hi ** (1 / rho) - lo ** (1 / rho))) ** rho
        chex.assert_shape(out, (9,))
        chex.assert_trees_all_close(out[:n], ref, rtol=1e-4)

    @chex.variants(with_jit=True, without_jit=True)
    def test_consistency_output_skip_form(self):
        path, sd, smin = paths.CondOT(), 0.5, 0.002
        out = self.variant(lambda x, t, r: L.consistency_output(path, x, t, r))(
            self.x, self.t, self.y
        )
        t = self.t.astype(np.float64)[:, None]
        sigma = (1 - t) / t  # CondOT: beta / alpha
        c_skip = sd**2 / ((sigma - smin) ** 2 + sd**2)
        c_out = (sigma - smin) * sd / np.sqrt(sd**2 + sigma**2)
        chex.assert_trees_all_close(out, c_skip * self.x / t + c_out * self.y, rtol=1e-4)
        # the boundary condition: the data itself at sigma = sigma_min
        t_min = np.full((4,), 1 / (1 + smin), np.float32)
        edge = self.variant(lambda x, t, r: L.consistency_output(path, x, t, r))(
            self.x, t_min, self.y
        )
        chex.assert_trees_all_close(edge, self.x * (1 + smin), rtol=RTOL, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_shortcut_target_averages_two_half_steps(self):
        def s_fn(x, t, d):  # an affine stand-in for the network
            return 0.5 * x + t[:, None] - 2.0 * d[:, None]

        d = np.full((4,), 0.125, np.float32)
        out = self.variant(lambda x, t, d: L.shortcut_target(s_fn, x, t, d))(self.x, self.t, d)
        x, t, dd = self.x.astype(np.float64), self.t[:, None], d[:, None]
        s1 = 0.5 * x + t - 2 * dd
        s2 = 0.5 * (x + dd * s1) + (t + dd) - 2 * dd
        chex.assert_trees_all_close(out, (s1 + s2) / 2, rtol=RTOL)

    @chex.variants(with_jit=True, without_jit=True)
    def test_meanflow_target_total_derivative(self):
        def u_fn(x, t, r):  # u = x t r^2: du/dt along dx/dt = v is v t r^2 + x r^2
            return x * (t * r**2)[:, None]

        r = np.array([0.2, 0.5, 0.7, 1.0], np.float32)
        v = self.y
        u, target = self.variant(lambda x, t, r, v: L.meanflow_target(u_fn, x, t, r, v))(
            self.x, self.t, r, v
        )
        x, t, rr = self.x.astype(np.float64), self.t[:, None], r[:, None]
        chex.assert_trees_all_close(u, x * t * rr**2, rtol=RTOL)
        du_dt = v * t * rr**2 + x * rr**2
        chex.assert_trees_all_close(target, v + (rr - t) * du_dt, rtol=RTOL, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_ict_num_levels_doubles(self):
        fn = self.variant(lambda k: L.ict_num_levels(k, 1000))
        # K' = floor(K / (log2(s1 / s0) + 1)) = floor(1000 / 8) = 125 steps per doubling
        for step, want in [(0, 11), (124, 11), (125, 21), (250, 41), (999, 1281)]:
            chex.assert_trees_all_equal(int(fn(jnp.int32(step))), want)


class TimeInputsUnderJit(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_time_inputs_against_their_formulas(self):
        path = paths.get_path("vp_linear")
        t = np.array([0.05, 0.3, 0.6, 0.95], np.float32)
        alpha, beta = (np.asarray(c, np.float64) for c in path.coefficients(t)[:2])
        lam = np.clip(np.log(alpha / beta), -M.LOG_SNR_CLIP, M.LOG_SNR_CLIP)
        got = self.variant(lambda t: M.half_log_snr(path, t))(t)
        chex.assert_trees_all_close(got, lam, rtol=1e-4)
        got = self.variant(lambda t: M.time_input("t", t))(t)
        chex.assert_trees_all_close(got, t)
        got = self.variant(lambda t: M.time_input("log_snr", t, path))(t)
        chex.assert_trees_all_close(got, np.tanh(lam / 4), rtol=1e-4)
        got = self.variant(lambda t: M.time_input("edm", t, path))(t)
        chex.assert_trees_all_close(got, np.log(beta / alpha) / 4, rtol=1e-4, atol=1e-6)
        chex.assert_tree_all_finite(jax.tree.leaves(got))
