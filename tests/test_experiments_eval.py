"""experiments.evaluation and experiments.figures: statistics against references, Inception, plots."""

from __future__ import annotations

import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import flowjax as fj
from experiments import evaluators as E
from experiments import figures as F
from flowjax import data as D

# ------------------------------------------------------------------ FID / KID arithmetic


def _spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_matches_the_scipy_sqrtm_formula():
    rng = np.random.default_rng(0)
    for d in (1, 5, 32):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = _spd(rng, d), _spd(rng, d)
        covmean = scipy.linalg.sqrtm(s1 @ s2).real  # pytorch-fid's formula
        ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
        chex.assert_trees_all_close(
            E.frechet_distance(mu1, s1, mu2, s2), ref, rtol=1e-8, atol=1e-10
        )
        assert E.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)
        chex.assert_trees_all_close(
            E.frechet_distance(mu1, s1, mu2, s2), E.frechet_distance(mu2, s2, mu1, s1), rtol=1e-9
        )
    # between two Gaussians with commuting (diagonal) covariances: sum (sqrt(a) - sqrt(b))^2
    a, b = rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    chex.assert_trees_all_close(
        E.frechet_distance(np.zeros(4), np.diag(a), np.zeros(4), np.diag(b)),
        np.sum((np.sqrt(a) - np.sqrt(b)) ** 2),
        rtol=1e-10,
    )
    with pytest.raises(ValueError, match="shapes"):
        E.frechet_distance(mu1, s1, mu2[:3], s2)


def test_frechet_distance_of_singular_covariances():
    # 3 samples in 512 dimensions: a rank-2 covariance (as in a tiny FID run)
    rng = np.random.default_rng(1)
    f = rng.uniform(0, 1, (3, 512))
    mu, s = f.mean(0), np.cov(f, rowvar=False)
    # to the matrix's precision: the noise eigenvalues of the null space must not count
    assert abs(E.frechet_distance(mu, s, mu, s)) < 1e-10 * np.trace(s)
    # a rank-deficient pair with a closed form: S1 = diag(a, 0), S2 = diag(b, 0) in a random basis
    q, _ = np.linalg.qr(rng.normal(size=(64, 64)))
    a, b = np.zeros(64), np.zeros(64)
    a[:5], b[:5] = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    chex.assert_trees_all_close(
        E.frechet_distance(np.zeros(64), s1, np.zeros(64), s2),
        np.sum((np.sqrt(a) - np.sqrt(b)) ** 2),
        rtol=1e-9,
    )


def test_gaussian_stats_are_numpy_mean_and_unbiased_covariance():
    f = np.random.default_rng(1).normal(size=(50, 3))
    mu, sigma = E.gaussian_stats(f)
    chex.assert_trees_all_close(mu, f.mean(0), rtol=1e-7)
    chex.assert_trees_all_close(sigma, np.cov(f.T, ddof=1), rtol=1e-7)


def _kid_reference(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written as explicit sums."""
    m, d = len(x), x.shape[1]

    def k(a, b):
        return (a @ b / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_the_explicit_unbiased_estimator():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(12, 4)), rng.normal(0.3, 1.0, size=(12, 4))
    kid, std = E.kernel_inception_distance(x, y, subset_size=12, num_subsets=3)
    assert kid == pytest.approx(_kid_reference(x, y), rel=1e-10) and std == pytest.approx(0.0)
    # subsets: the mean over subsets of the subset estimates
    kid_sub, _ = E.kernel_inception_distance(x, y, subset_size=6, num_subsets=4, seed=3)
    r = np.random.default_rng(3)
    vals = []
    for _ in range(4):
        xs, ys = x[r.choice(12, 6, replace=False)], y[r.choice(12, 6, replace=False)]
        vals.append(_kid_reference(xs, ys))
    assert kid_sub == pytest.approx(np.mean(vals), rel=1e-10)
    # unbiased: about zero between two samples of one law, clearly positive between two laws
    same = E.kernel_inception_distance(
        rng.normal(size=(400, 4)), rng.normal(size=(400, 4)), subset_size=200
    )
    far = E.kernel_inception_distance(
        rng.normal(size=(400, 4)), rng.normal(1.0, 1.0, (400, 4)), subset_size=200
    )
    assert abs(same[0]) < 3 * same[1] + 1e-3 and far[0] > 10 * abs(same[0]) + 0.1


# ------------------------------------------------------------------ sample quality and NLL


def test_sample_quality_puts_data_within_its_floor_and_a_shifted_law_far_above():
    mix = fj.oracle.eight_gaussians()
    sampler = jax.jit(lambda k, n: mix.sample(k, n), static_argnums=1)
    key = jax.random.PRNGKey(0)
    floors = E.data_floors(E.STATISTICS, 500, key, sampler=sampler, repeats=4, num_projections=64)
    ref = np.asarray(sampler(jax.random.PRNGKey(1), 500))
    good = np.asarray(sampler(jax.random.PRNGKey(2), 500))
    bad = good * 1.3
    q_good = E.sample_quality(good, ref, floors, key, num_projections=64)
    q_bad = E.sample_quality(bad, ref, floors, key, num_projections=64)
    for name in E.STATISTICS:
        assert q_good[name]["excess_in_floor_stds"] < 4, (name, q_good[name])
        assert q_bad[name]["excess_in_floor_stds"] > 5, (name, q_bad[name])
    assert floors["mmd"]["kernel_scale"] > 0


def test_pool_floors_use_disjoint_subsets():
    pool = np.arange(40, dtype=np.float32).reshape(20, 2)  # 20 distinct rows
    for seed in range(5):
        a, b = E.disjoint_subsets(pool, 10, jax.random.PRNGKey(seed))
        rows = {tuple(r) for r in a} | {tuple(r) for r in b}
        assert len(rows) == 20  # no row in both: together they are the whole pool
    with pytest.raises(ValueError, match="at least 22"):
        E.disjoint_subsets(pool, 11, jax.random.PRNGKey(0))


def test_exact_log_densities_integrate_to_one():
    cb = E.exact_log_prob_fn(D.get_dataset("checkerboard", "test", num_examples=10))
    xs = np.linspace(-5, 5, 501)
    gx, gy = np.meshgrid(xs, xs)
    pts = jnp.asarray(np.stack([gx.ravel(), gy.ravel()], 1), jnp.float32)
    cell = (xs[1] - xs[0]) ** 2
    assert float(jnp.sum(jnp.exp(cb(pts)))) * cell == pytest.approx(1.0, abs=0.02)
    for k in (0, 5):
        lab = jnp.full((pts.shape[0],), k, jnp.int32)
        assert float(jnp.sum(jnp.exp(cb(pts, lab)))) * cell == pytest.approx(1.0, abs=0.02)
    x, lab = D.toy_sample_with_labels("checkerboard", jax.random.PRNGKey(0), 100)
    chex.assert_trees_all_close(cb(x), -math.log(32), rtol=1e-6)
    chex.assert_trees_all_close(cb(x, lab), -math.log(4), rtol=1e-6)
    g8 = D.get_dataset("eight_gaussians", "test", num_examples=10)
    chex.assert_trees_all_close(
        E.exact_log_prob_fn(g8)(pts[:50]), g8.oracle.data_log_prob(pts[:50]), rtol=1e-6
    )
    assert E.exact_log_prob_fn(D.get_dataset("moons", "test", num_examples=10)) is None


def test_nll_summary_pairs_the_gap():
    rng = np.random.default_rng(4)
    exact = rng.normal(-3, 1, 1000)
    model = exact - 0.05 + 0.01 * rng.normal(size=1000)
    s = E.nll_summary(model, exact)
    assert s["nll_gap"] == pytest.approx(0.05, abs=0.002)
    assert s["nll_gap_stderr"] < 0.001 < s["nll_stderr"]  # pairing removes the spread of log p
    assert s["nll"] - s["entropy"] == pytest.approx(s["nll_gap"])


# ------------------------------------------------------------------ Inception-v3


# torchvision Inception3 without its classifier (fc) and auxiliary head: 23,834,568 parameters
# minus fc's 2048 * 1000 + 1000. Batch norm running statistics are buffers there.
TORCHVISION_FEATURE_PARAMS = 21_785_568

# Shapes of a few torchvision state-dict entries (out, in, kh, kw), from the torchvision model.
TORCH_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
    "Mixed_7b.branch3x3_2b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "Mixed_7c.branch3x3dbl_1.bn.running_var": (448,),
}


@pytest.fixture(scope="module")
def inception_shapes():
    return E.inception_param_shapes()


def _random_params(shapes, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for k, s in shapes.items():
        if k.endswith("kernel"):
            fan_in = s[0] * s[1] * s[2]
            out[k] = (rng.normal(size=s) * math.sqrt(2.0 / fan_in)).astype(np.float32)
        elif k.endswith("var"):
            out[k] = rng.uniform(0.5, 1.5, s).astype(np.float32)
        elif k.endswith("scale"):
            out[k] = rng.uniform(0.8, 1.2, s).astype(np.float32)
        else:
            out[k] = (0.1 * rng.normal(size=s)).astype(np.float32)
    return out


def _to_torch(flat):
    inv = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
    sd = {}
    for k, v in flat.items():
        *mods, leaf = k.split("/")
        if leaf == "kernel":
            sd[".".join(mods) + ".weight"] = np.transpose(v, (3, 2, 0, 1))
        else:
            sd[".".join(mods) + "." + inv[leaf]] = v
            if leaf == "var":
                sd[".".join(mods) + ".num_batches_tracked"] = np.asarray(0)
    sd["fc.weight"] = np.zeros((1008, 2048), np.float32)
    sd["fc.bias"] = np.zeros((1008,), np.float32)
    return sd


def test_inception_has_torchvisions_architecture(inception_shapes):
    learned = sum(
        math.prod(s) for k, s in inception_shapes.items() if k.endswith(("kernel", "scale", "bias"))
    )
    assert learned == TORCHVISION_FEATURE_PARAMS
    converted = E.convert_torch_state_dict({k: np.zeros(s) for k, s in TORCH_SHAPES.items()})
    for key, arr in converted.items():
        assert inception_shapes[key] == arr.shape, key


@pytest.mark.slow  # compiles Inception-v3 (about a minute on 2 cores)
def test_inception_weights_load_from_either_format_and_give_features(inception_shapes, tmp_path):
    flat = _random_params(inception_shapes)
    ours, torch_file = tmp_path / "ours.npz", tmp_path / "torch.npz"
    np.savez(ours, **flat)
    np.savez(torch_file, **_to_torch(flat))
    a, b = E.load_inception_params(ours), E.load_inception_params(torch_file)
    for k, v in flat.items():
        np.testing.assert_array_equal(E.flatten_params(a)[k], v)
        np.testing.assert_array_equal(E.flatten_params(b)[k], v)
    images = np.random.default_rng(0).uniform(-1, 1, (3, 16, 16, 1)).astype(np.float32)
    f = E.inception_features(a, images, batch_size=2, size=75)  # a small size: a fast test
    assert f.shape == (3, 2048) and np.all(np.isfinite(f)) and np.all(f >= 0) and f.std() > 0
    # one padded batch and one full batch give what one call per image gives
    f1 = np.asarray(E.inception._inception_fn(75)(a, jnp.asarray(images[[2, 2]])))[0]
    chex.assert_trees_all_close(f[2], f1, rtol=1e-4, atol=1e-5)
    # grayscale is the same pixels in three channels; inputs are resized to size x size
    gray = E.inception._inception_input(jnp.asarray(images), 75)
    rgb = E.inception._inception_input(jnp.asarray(np.repeat(images, 3, axis=-1)), 75)
    chex.assert_shape(gray, (3, 75, 75, 3))
    np.testing.assert_array_equal(gray, rgb)
    stats = E.gaussian_stats(f)
    assert abs(E.frechet_distance(*stats, *stats)) < 1e-10 * np.trace(stats[1])


def test_bad_inception_weights_are_named(inception_shapes, tmp_path):
    with pytest.raises(E.InceptionWeightsError, match=r"inception_weights.*Nothing is downloaded"):
        E.load_inception_params("")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.npz"):
        E.load_inception_params(tmp_path / "nowhere.npz")
    flat = {k: np.zeros(s, np.float32) for k, s in inception_shapes.items()}
    missing = dict(flat)
    del missing["Mixed_6c/branch7x7_3/conv/kernel"]
    wrong = dict(flat)
    wrong["Mixed_5b/branch1x1/bn/var"] = np.zeros((65,), np.float32)
    extra = dict(flat)
    extra["Mixed_9z/conv/kernel"] = np.zeros((1,), np.float32)
    for name, arrays, pattern in [
        ("missing", missing, r"1 missing.*Mixed_6c/branch7x7_3/conv/kernel"),
        ("wrong", wrong, r"wrong shape.*Mixed_5b/branch1x1/bn/var.*\(65,\).*\(64,\)"),
        ("extra", extra, r"1 unknown.*Mixed_9z"),
    ]:
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
        with pytest.raises(ValueError, match=pattern):
            E.load_inception_params(path)
    with pytest.raises(ValueError, match=r"unexpected keys.*Mixed_5b\.branch1x1\.conv\.bias"):
        E.convert_torch_state_dict({"Mixed_5b.branch1x1.conv.bias": np.zeros((64,))})


# ------------------------------------------------------------------ figures


def test_every_figure_is_saved_with_its_settings(tmp_path):
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(200, 2))
    settings = {"sampler": {"num_steps": 8}, "nan": float("nan"), "arr": np.arange(3)}
    made = [
        F.samples_2d(pts, pts + 0.1, tmp_path / "s", settings, bins=10, dpi=30),
        F.density_2d(
            rng.normal(size=(6, 6)),
            (-1, 1, -1, 1),
            tmp_path / "d",
            settings,
            exact_log_prob=rng.normal(size=(6, 6)),
            dpi=30,
        ),
        F.trajectories_2d(
            {"ode": rng.normal(size=(4, 5, 2)), "sde": rng.normal(size=(4, 5, 2))},
            np.linspace(0, 1, 5),
            pts,
            tmp_path / "t",
            settings,
            dpi=30,
        ),
        F.vector_fields(
            {"v": rng.normal(size=(2, 16, 2))},
            pts[:16],
            (0.2, 0.8),
            tmp_path / "f",
            settings,
            points=[pts, pts],
            dpi=30,
        ),
        F.nfe_quality(
            {"euler": [{"nfe": 4, "energy": 0.1}, {"nfe": 8, "energy": -0.001}]},
            "energy",
            tmp_path / "n",
            settings,
            floor=(0.0, 0.002),
            dpi=30,
        ),
        F.image_grid(rng.uniform(-1, 1, (10, 8, 8, 1)), tmp_path / "g", settings, dpi=30),
        F.image_trajectories(
            {"ode": rng.uniform(-1, 1, (2, 3, 8, 8, 3))},
            np.linspace(0, 1, 3),
            tmp_path / "it",
            settings,
            dpi=30,
        ),
    ]
    for png in made:
        assert png.suffix == ".png" and png.stat().st_size > 1000
        side = json.loads(png.with_suffix(".json").read_text())
        assert side == {"sampler": {"num_steps": 8}, "nan": "nan", "arr": [0, 1, 2]}
