"""Few-step sampling (issue 16): MeanFlow, shortcut and consistency sampling against the exact flow
map of a Gaussian on CondOT, NFE, string names and bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax as fj
from flowjax import paths as P
from flowjax import sampling as S

# Data N(M0, S0^2 I) on a Gaussian path x_t = alpha_t x1 + beta_t eps: p_t = N(alpha_t M0, sd_t^2 I)
# with sd_t^2 = alpha_t^2 S0^2 + beta_t^2. The flow of the marginal velocity is affine in z:
# phi_{t -> r}(z) = alpha_r M0 + sd_r / sd_t (z - alpha_t M0) (it maps p_t onto p_r, monotone).
M0, S0 = 1.5, 0.4


def _flow_map(path, z, t, r):
    def sd(s):
        return jnp.sqrt(path.alpha(s) ** 2 * S0**2 + path.beta(s) ** 2)

    t, r = t[:, None], r[:, None]
    return path.alpha(r) * M0 + sd(r) / sd(t) * (z - path.alpha(t) * M0)


def exact_models(path):
    """MeanFlow's u(z, t, r), the shortcut s(z, t, d) and the consistency function f(z, t)."""

    def u(z, t, t2):  # average velocity (phi_{t->r}(z) - z) / (r - t), r = t2 > t
        return (_flow_map(path, z, t, t2) - z) / (t2 - t)[:, None]

    def s(z, t, t2):  # the d-step velocity (phi_{t->t+d}(z) - z) / d, d = t2
        return (_flow_map(path, z, t, t + t2) - z) / t2[:, None]

    def f(z, t):  # the flow map to the data end
        return _flow_map(path, z, t, jnp.full_like(t, path.t_max))

    return {"meanflow": u, "shortcut": s, "consistency": f}


u_exact = exact_models(P.CondOT())["meanflow"]
f_exact = exact_models(P.CondOT())["consistency"]


@pytest.mark.parametrize("path", [P.CondOT(), P.VPLinear()], ids=["condot", "vplinear"])
@pytest.mark.parametrize("num_steps", [1, 2, 4])
@pytest.mark.parametrize("method", [S.MeanFlow(), "shortcut", S.Consistency()])
def test_exact_model_gives_the_exact_flow_map(x64, path, method, num_steps):
    kind = getattr(method, "kind", method)
    t0, t1 = S.sampling_time_range(path, method=method)
    assert (t0, t1) == (path.t_min, path.t_max)
    z = jax.random.normal(jax.random.PRNGKey(0), (64, 2), jnp.float64)
    res = fj.sample(
        exact_models(path)[kind], path, jax.random.PRNGKey(1), None, method=method,
        num_steps=num_steps, x_start=z,
    )  # fmt: skip
    chex.assert_shape(res.samples, (64, 2))
    assert int(res.nfe) == num_steps
    if kind == "consistency" and num_steps > 1:
        return  # re-noised: a fresh draw, checked in distribution below
    want = _flow_map(path, z, jnp.full((64,), t0), jnp.full((64,), t1))
    chex.assert_trees_all_close(res.samples, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("path", "num_steps"), [(P.CondOT(), 2), (P.CondOT(), 4), (P.VPLinear(), 4)],
    ids=["condot-2", "condot-4", "vplinear-4"],
)  # fmt: skip
def test_multistep_consistency_keeps_the_exact_distribution(x64, path, num_steps):
    """Re-noising an exact data draw onto p_t gives an exact draw of p_t, so every step's estimate
    is the data distribution N(M0, S0^2) (at t_max: N(alpha M0, alpha^2 S0^2 + beta^2), within
    1e-5 of it): the mean and variance of n draws within 5 standard errors (per coordinate:
    sd / sqrt(n) for the mean, sd^2 sqrt(2 / (n - 1)) for the variance)."""
    n, d = 20_000, 2
    f = exact_models(path)["consistency"]
    res = fj.sample(f, path, jax.random.PRNGKey(3), (n, d), method="consistency",
                    num_steps=num_steps)  # fmt: skip
    assert int(res.nfe) == num_steps
    x = np.asarray(res.samples)
    chex.assert_tree_all_finite(x)
    t1 = jnp.float64(path.t_max)
    mean = float(path.alpha(t1)) * M0
    var = float(path.alpha(t1)) ** 2 * S0**2 + float(path.beta(t1)) ** 2
    assert np.all(np.abs(x.mean(0) - mean) < 5 * np.sqrt(var / n))
    assert np.all(np.abs(x.var(0, ddof=1) - var) < 5 * var * np.sqrt(2 / (n - 1)))
    # ...and it is not the one-step map of the prior draw: the re-noising drew fresh noise.
    one = fj.sample(f, path, jax.random.PRNGKey(3), (n, d), method="consistency", num_steps=1)
    assert float(jnp.max(jnp.abs(one.samples - res.samples))) > 0.1


def test_few_step_grid_steps_and_traced_parameters():
    """One step per interval on a non-uniform grid; parameters as pytree leaves, jit-compatible."""
    path = P.CondOT()
    grid = jnp.array([0.0, 0.3, 0.7, 1.0], jnp.float32)
    z = jax.random.normal(jax.random.PRNGKey(0), (16, 3))
    seen = []

    def mf(x, t, t2):
        seen.append(1)
        return jnp.broadcast_to((t2 - t)[:, None], x.shape)  # u = r - t: step adds (r - t)^2

    res = fj.sample(mf, path, None, None, method="meanflow", time_grid=grid, x_start=z)
    want = z + sum((b - a) ** 2 for a, b in [(0.0, 0.3), (0.3, 0.7), (0.7, 1.0)])
    chex.assert_trees_all_close(res.samples, want, rtol=1e-5, atol=1e-5)
    assert int(res.nfe) == 3 and int(res.num_accepted) == 3

    def cond_model(x, t, cond, t2):
        return x * 0 + cond[:, None]

    c = jnp.arange(16.0)
    res = fj.sample(cond_model, path, None, None, method="shortcut", num_steps=2, x_start=z, cond=c)
    chex.assert_trees_all_close(res.samples, z + c[:, None], rtol=1e-5, atol=1e-5)


def test_few_step_bad_input():
    path, key = P.CondOT(), jax.random.PRNGKey(0)
    one_time = lambda x, t: x  # noqa: E731
    with pytest.raises(TypeError, match="t2"):
        fj.sample(one_time, path, key, (4, 2), method="meanflow", num_steps=1)
    with pytest.raises(ValueError, match="prediction must be one of"):
        fj.sample(u_exact, path, key, (4, 2), method="meanflow", prediction="eps")
    with pytest.raises(ValueError, match="leave solver at its default"):
        fj.sample(u_exact, path, key, (4, 2), method="shortcut", solver="heun")
    with pytest.raises(ValueError, match="denoise_final"):
        fj.sample(f_exact, path, key, (4, 2), method="consistency", denoise_final=True)
    with pytest.raises(ValueError, match="adaptive"):
        fj.sample(u_exact, path, key, (4, 2), method="meanflow", adaptive=True)
    with pytest.raises(ValueError, match="key is required"):
        fj.sample(f_exact, path, None, None, method="consistency", x_start=jnp.zeros((4, 2)))
    assert {"meanflow", "shortcut", "consistency"} <= set(S.SAMPLING_METHODS)
