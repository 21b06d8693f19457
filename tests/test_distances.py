"""Sample distances against brute force and against their finite-sample floor."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from flowjax import distances as D
from flowjax.oracle import eight_gaussians


def brute_energy(x, y):
    def mean_dist(a, b, offdiag):
        d = np.linalg.norm(a[:, None] - b[None], axis=-1)
        if offdiag:
            n = len(a)
            return d.sum() / (n * (n - 1))
        return d.mean()

    x, y = np.asarray(x), np.asarray(y)
    return 2 * mean_dist(x, y, False) - mean_dist(x, x, True) - mean_dist(y, y, True)


def test_energy_distance_matches_brute_force(x64):
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(k1, (301, 3))
    y = jax.random.normal(k2, (257, 3)) + 0.3
    for chunk in (7, 64, 1000):
        assert float(D.energy_distance(x, y, chunk=chunk)) == pytest.approx(
            brute_energy(x, y), rel=1e-9
        )


def test_mmd_matches_brute_force(x64):
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    x = jax.random.normal(k1, (120, 2))
    y = jax.random.normal(k2, (90, 2)) * 1.5
    h = 0.7

    def k(a, b):
        return np.exp(-np.sum((a[:, None] - b[None]) ** 2, -1) / (2 * h**2))

    xn, yn = np.asarray(x), np.asarray(y)
    kxx, kyy = k(xn, xn), k(yn, yn)
    ref = (
        (kxx.sum() - np.trace(kxx)) / (120 * 119)
        + (kyy.sum() - np.trace(kyy)) / (90 * 89)
        - 2 * k(xn, yn).mean()
    )
    assert float(D.mmd(x, y, bandwidths=(1.0,), scale=h, chunk=32)) == pytest.approx(ref, rel=1e-9)


def test_sliced_wasserstein_of_shift(x64):
    k1, k2 = jax.random.split(jax.random.PRNGKey(2))
    x = jax.random.normal(k1, (4000, 2))
    shift = jnp.array([[3.0, 0.0]])
    sw = D.sliced_wasserstein(x, x + shift, jax.random.PRNGKey(3), num_projections=2000)
    # For a pure shift c, each projection moves by c.theta: SW2 = sqrt(E[(c.theta)^2]) = |c| / sqrt(d).
    assert float(sw) == pytest.approx(3.0 / np.sqrt(2), rel=0.03)
    y = jax.random.normal(k2, (3000, 2)) + shift
    assert float(D.sliced_wasserstein(x, y, jax.random.PRNGKey(3))) == pytest.approx(
        3.0 / np.sqrt(2), rel=0.1
    )


def test_floor_separates_equal_from_different():
    mix = eight_gaussians()
    mean, std = D.finite_sample_floor(D.energy_distance, mix.sample, jax.random.PRNGKey(0), 1000)
    assert abs(float(mean)) < 3 * float(std) + 1e-3
    x = mix.sample(jax.random.PRNGKey(1), 1000)
    shifted = mix.sample(jax.random.PRNGKey(2), 1000) + 0.5
    assert float(D.energy_distance(x, shifted)) > float(mean) + 10 * float(std)


def test_bad_shapes():
    with pytest.raises(ValueError, match="same event size"):
        D.energy_distance(jnp.ones((5, 2)), jnp.ones((5, 3)))


class DistancesUnderJit(chex.TestCase):
    """The distances give the brute-force values with and without jit."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("chunk7", 7), ("one_chunk", 1000))
    def test_energy_and_mmd(self, chunk):
        with jax.enable_x64(True):
            k1, k2 = jax.random.split(jax.random.PRNGKey(4))
            x = jax.random.normal(k1, (40, 3))
            y = jax.random.normal(k2, (33, 3)) + 0.5

            @self.variant
            def both(x, y):
                return (
                    D.energy_distance(x, y, chunk=chunk),
                    D.mmd(x, y, bandwidths=(1.0,), scale=0.7, chunk=chunk),
                )

            energy, mmd = both(x, y)
            xn, yn = np.asarray(x), np.asarray(y)

            def k(a, b):
                return np.exp(-np.sum((a[:, None] - b[None]) ** 2, -1) / (2 * 0.7**2))

            kxx, kyy = k(xn, xn), k(yn, yn)
            mmd_ref = (
                (kxx.sum() - np.trace(kxx)) / (40 * 39)
                + (kyy.sum() - np.trace(kyy)) / (33 * 32)
                - 2 * k(xn, yn).mean()
            )
            chex.assert_shape([energy, mmd], ())
            chex.assert_trees_all_close((energy, mmd), (brute_energy(x, y), mmd_ref), rtol=1e-9)

    @chex.variants(with_jit=True, without_jit=True)
    def test_sliced_wasserstein_of_a_shift_in_one_dimension(self):
        # in 1-D every projection is +-1: SW2 of a pure shift c is |c| exactly
        x = jax.random.normal(jax.random.PRNGKey(5), (500, 1))
        sw = self.variant(lambda x, y, key: D.sliced_wasserstein(x, y, key, num_projections=8))(
            x, x + 2.0, jax.random.PRNGKey(6)
        )
        chex.assert_shape(sw, ())
        chex.assert_trees_all_close(sw, 2.0, rtol=1e-5)
