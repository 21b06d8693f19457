"""Toy 2-D data: jit-able samplers, their closed-form moments, finite datasets, bad names."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax.data as fd
from flowjax.distances import energy_distance
from flowjax.oracle import GaussianMixture, eight_gaussians

N = 200_000
_DIST = jax.jit(energy_distance)  # compiled once for all [1000, 2] comparisons

# Closed forms from the definitions in flowjax/data/_toy.py (derived there).
MOMENTS = {
    "checkerboard": {"var": (16 / 3, 16 / 3), "cross": 1.0, "sq": 32 / 3},
    "moons": {
        "var": (4 * (0.75 + 0.01), 4 * (9 / 16 - 1 / math.pi + 0.01)),
        "cross": None,
        "sq": None,
    },
    "eight_gaussians": {"var": (8.25, 8.25), "cross": 0.0, "sq": 16.5},
    "spirals": {"var": None, "cross": None, "sq": 8.02},
}


@pytest.fixture(scope="module")
def samples():
    out = {}
    for name in fd.TOY_DATASETS:
        fn = jax.jit(lambda key, name=name: fd.toy_sample_with_labels(name, key, N))
        out[name] = jax.tree.map(np.asarray, fn(jax.random.PRNGKey(0)))
    return out


@pytest.mark.parametrize("name", fd.TOY_DATASETS)
def test_sampler_is_jittable_and_matches_closed_form_moments(name, samples):
    x, label = samples[name]
    chex.assert_shape([x, label], [(N, 2), (N,)])
    chex.assert_type([x, label], [np.float32, np.int32])
    assert set(np.unique(label)) == set(range(fd.toy_num_classes(name)))
    x64 = x.astype(np.float64)
    # mean 0 within 5 standard errors
    se = np.sqrt(x64.var(0) / N)
    assert np.all(np.abs(x64.mean(0)) < 5 * se), (x64.mean(0), se)
    m = MOMENTS[name]
    if m["var"] is not None:
        chex.assert_trees_all_close(x64.var(0), np.asarray(m["var"]), rtol=0.02)
    if m["cross"] is not None:
        assert abs(np.mean(x64[:, 0] * x64[:, 1]) - m["cross"]) < 0.05
    if m["sq"] is not None:
        chex.assert_trees_all_close(np.mean(np.sum(x64**2, 1)), m["sq"], rtol=0.01)


def test_checkerboard_support_and_labels(samples):
    x, label = samples["checkerboard"]
    cell = np.floor((x + 4.0) / 2.0).astype(int)
    assert np.all((cell >= 0) & (cell <= 3))
    assert np.all(cell.sum(1) % 2 == 0)  # only the black squares
    # label identifies the square, uniformly
    counts = np.bincount(label, minlength=8) / N
    chex.assert_trees_all_close(counts, 1 / 8, rtol=1e-7, atol=0.005)
    for k in range(8):
        assert len({tuple(c) for c in cell[label == k][:200]}) == 1


def test_moons_labels_are_the_two_half_circles(samples):
    x, label = samples["moons"]
    p = x / 2.0 + np.array([0.5, 0.25])  # undo centring and scaling
    r_outer = np.linalg.norm(p[label == 0], axis=1)
    r_inner = np.linalg.norm(p[label == 1] - np.array([1.0, 0.5]), axis=1)
    assert abs(np.median(r_outer) - 1.0) < 0.02 and abs(np.median(r_inner) - 1.0) < 0.02


def test_eight_gaussians_is_the_oracle(samples):
    x, label = samples["eight_gaussians"]
    mix = eight_gaussians()
    chex.assert_trees_all_close(np.linalg.norm(np.asarray(mix.means), axis=1), 4.0, rtol=1e-6)
    for k in range(8):
        xk = x[label == k]
        chex.assert_trees_all_close(xk.mean(0), np.asarray(mix.means[k]), rtol=1e-7, atol=0.02)
        chex.assert_trees_all_close(xk.std(0), 0.5, rtol=1e-7, atol=0.02)
    # the dataset's oracle gives the data log-density of these points
    ds = fd.get_dataset("eight_gaussians", "test", num_examples=100)
    assert ds.oracle is not None
    chex.assert_trees_all_close(ds.oracle.means, mix.means, rtol=1e-7)


def test_spirals_arms_are_negations(samples):
    x, label = samples["spirals"]
    r = np.linalg.norm(x, axis=1)
    assert r.max() < 4.6
    # the angle minus the radius-implied angle is constant per arm (mod 2 pi), up to noise
    theta = np.arctan2(x[:, 1], x[:, 0])
    implied = 3 * math.pi * r / 4.0
    far = r > 1.5  # the noise blurs angles near the centre
    for arm, offset in ((0, 0.0), (1, math.pi)):
        sel = far & (label == arm)
        d = np.abs(np.angle(np.exp(1j * (theta[sel] - implied[sel] - offset))))
        wrong = np.abs(np.angle(np.exp(1j * (theta[sel] - implied[sel] - offset - math.pi))))
        # radial noise 0.1 alone moves the implied angle by 3 pi / 4 * 0.1 = 0.24 rad (1 sd)
        assert np.median(d) < 0.25 and np.median(wrong) > 2.5


def test_gaussian_mixture_passed_directly():
    mix = GaussianMixture([0.3, 0.7], [[-1.0, 0.0, 2.0], [3.0, 1.0, 0.0]], [[0.1] * 3, [0.2] * 3])
    x, label = jax.jit(lambda k: fd.toy_sample_with_labels(mix, k, 50_000))(jax.random.PRNGKey(1))
    chex.assert_shape(x, (50_000, 3))
    chex.assert_trees_all_close(np.mean(np.asarray(label)), 0.7, rtol=1e-7, atol=0.01)
    ds = fd.get_dataset(mix, "train", num_examples=1000, seed=3)
    assert ds.shape == (3,) and ds.num_classes == 2 and ds.oracle is mix and ds.name == "mixture"


@pytest.mark.parametrize("name", fd.TOY_DATASETS)
def test_finite_dataset_matches_sampler(name, samples):
    n = 1000
    ds = fd.toy_dataset(name, n, seed=5)
    assert len(ds) == n
    x = ds.arrays["x"]
    assert x.dtype == np.float32 and ds.arrays["label"].dtype == np.int32
    # against the jitted sampler's draws: within the finite-sample floor (the same statistic
    # between independent sampler draws of the same size)
    draws = jnp.asarray(samples[name][0][: 12 * n]).reshape(12, n, 2)
    d = float(_DIST(jnp.asarray(x), draws[0]))
    floor = np.array([float(_DIST(draws[2 * k + 1], draws[2 * k + 2])) for k in range(5)])
    assert d < floor.mean() + 4 * floor.std() + 1e-3, (d, floor)
    # a different law is far outside the floor (the check can fail)
    shifted = float(_DIST(jnp.asarray(x) + 0.5, draws[0]))
    assert shifted > floor.mean() + 4 * floor.std() + 1e-3
    # fixed: same seed, same data; different split, different data
    chex.assert_trees_all_equal(fd.toy_dataset(name, n, seed=5).arrays["x"], x)
    assert not np.allclose(fd.toy_dataset(name, n, seed=5, split="test").arrays["x"], x)


def test_get_dataset_toy_metadata_and_iteration():
    ds = fd.get_dataset("checkerboard", "train", num_examples=1024, seed=1)
    assert ds.metadata() == {
        "name": "checkerboard",
        "split": "train",
        "num_examples": 1024,
        "shape": [2],
        "num_classes": 8,
        "num_levels": None,
        "value_range": None,
    }
    batch = next(fd.make_iterator(ds, global_batch_size=256, seed=0, process_count=1))
    assert batch["x"].shape == (256, 2) and batch["x"].dtype == np.float32
    assert batch["label"].dtype == np.int32
    assert len(fd.get_dataset("moons", "test")) == fd.TOY_SIZES["test"]
    held_out = ds.as_arrays()
    chex.assert_trees_all_equal(held_out["x"], ds.source.arrays["x"])


def test_unknown_toy_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="checkerboard, moons, eight_gaussians, spirals"):
        fd.toy_sample("swissroll", jax.random.PRNGKey(0), 10)
    with pytest.raises(ValueError, match="train, test, validation"):
        fd.get_dataset("moons", "holdout")
    with pytest.raises(TypeError, match="GaussianMixture"):
        fd.toy_sample(3, jax.random.PRNGKey(0), 10)
    with pytest.raises(ValueError, match="n must be"):
        fd.toy_sample("moons", jax.random.PRNGKey(0), -1)
