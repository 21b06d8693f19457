"""scikit-learn's 8x8 digits and the image transforms (scaling, flips, dequantization)."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

import flowjax.data as fd
from flowjax.data._transforms import flip_mask


def test_digits_splits_shapes_range_labels():
    raw = load_digits()
    sizes = {}
    for split in ("train", "test", "all"):
        ds = fd.get_dataset("digits", split)
        sizes[split] = len(ds)
        assert ds.shape == (8, 8, 1) and ds.num_classes == 10
        assert ds.num_levels == fd.DIGITS_NUM_LEVELS == 17 and ds.value_range == (-1.0, 1.0)
        arrays = ds.as_arrays()
        x, label, levels = arrays["x"], arrays["label"], arrays["levels"]
        assert x.shape == (len(ds), 8, 8, 1) and x.dtype == np.float32
        assert label.dtype == np.int32 and set(np.unique(label)) == set(range(10))
        assert x.min() == -1.0 and x.max() == 1.0
        assert levels.dtype == np.uint8 and levels.min() == 0 and levels.max() == 16
        chex.assert_trees_all_equal(x, -1.0 + levels.astype(np.float32) / 8.0)
    assert sizes == {"train": 1500, "test": 297, "all": 1797} == fd.DIGITS_SPLITS
    # the splits partition the data set and keep sklearn's images and labels
    tr_lev, tr_lab = fd.digits_arrays("train")
    te_lev, te_lab = fd.digits_arrays("test")
    both = np.concatenate([tr_lev, te_lev]).reshape(1797, 64)
    all_raw = np.rint(raw.images).astype(np.uint8).reshape(1797, 64)
    key = lambda a: sorted(map(bytes, a))  # noqa: E731
    assert key(both) == key(all_raw)
    assert len({bytes(r) for r in tr_lev.reshape(1500, 64)} & {bytes(r) for r in te_lev}) <= 5
    # every class is in the test split in a reasonable proportion
    assert np.bincount(te_lab, minlength=10).min() >= 15
    assert np.array_equal(
        np.bincount(tr_lab, minlength=10) + np.bincount(te_lab, minlength=10),
        np.bincount(raw.target, minlength=10),
    )
    lev_all, lab_all = fd.digits_arrays("all")
    chex.assert_trees_all_equal(lab_all, raw.target)
    chex.assert_trees_all_equal(lev_all[..., 0], np.rint(raw.images))


def test_digits_split_is_fixed():
    a, _ = fd.digits_arrays("test")
    b, _ = fd.digits_arrays("test")
    chex.assert_trees_all_equal(a, b)
    with pytest.raises(ValueError, match="train, test, all"):
        fd.get_dataset("digits", "validation")


def test_digits_iterator_batches():
    it = fd.make_iterator(
        fd.get_dataset("digits", "train"), global_batch_size=512, seed=0, process_count=1
    )
    assert it.steps_per_epoch == 2  # 1500 // 512; 476 examples not seen in each epoch
    b = next(it)
    assert set(b) == {"x", "label"}
    assert b["x"].shape == (512, 8, 8, 1) and b["label"].shape == (512,)


def test_scale_and_to_levels_round_trip():
    k = np.arange(256, dtype=np.uint8)
    x = fd.scale_levels(k, 256)
    assert x[0] == -1.0 and x[-1] == 1.0 and x.dtype == np.float32
    chex.assert_trees_all_equal(fd.to_levels(x, 256), k)
    chex.assert_trees_all_equal(fd.to_levels(np.array([-3.0, 3.0]), 17), np.asarray([0, 16]))
    chex.assert_trees_all_close(
        fd.scale_levels([0, 8, 16], 17, (0.0, 1.0)), np.asarray([0.0, 0.5, 1.0]), rtol=1e-7
    )
    with pytest.raises(ValueError, match="num_levels"):
        fd.scale_levels(k, 1)
    with pytest.raises(ValueError, match="value_range"):
        fd.scale_levels(k, 256, (1.0, -1.0))


def test_dequantize_jax_bins_and_offset():
    levels = jnp.tile(jnp.arange(17, dtype=jnp.int32), 2000)
    x = jax.jit(lambda k: fd.dequantize(k, levels, 17))(jax.random.PRNGKey(0))
    w = 2.0 / 17
    # each value lies in its level's bin [lo + k w, lo + (k + 1) w) and fills it uniformly
    lower = -1.0 + np.asarray(levels) * w
    frac = (np.asarray(x) - lower) / w
    assert frac.min() >= 0.0 and frac.max() < 1.0
    assert abs(frac.mean() - 0.5) < 0.01 and abs(frac.var() - 1 / 12) < 0.005
    assert fd.log_bin_width(256) == pytest.approx(math.log(2 / 256))
    # 8-bit images in [-1, 1]: the bits/dim offset is 7 bits
    assert -fd.log_bin_width(256) / math.log(2) == pytest.approx(7.0)
    assert -fd.log_bin_width(17) / math.log(2) == pytest.approx(math.log2(17 / 2))
    with pytest.raises(TypeError, match="integers"):
        fd.dequantize(jax.random.PRNGKey(0), jnp.zeros(3), 17)


def test_dequantization_offset_is_exact_for_a_uniform_model():
    # A model with uniform density on [-1, 1]^D assigns every level vector probability L^-D;
    # the bound log P >= E log p(x) + D log w is then tight: -D log 2 + D log(2/L) = -D log L.
    D, L = 64, 17
    log_p = -D * math.log(2.0)
    assert log_p + D * fd.log_bin_width(L) == pytest.approx(-D * math.log(L))
    bpd = -(log_p / D + fd.log_bin_width(L)) / math.log(2)
    assert bpd == pytest.approx(math.log2(L))


def test_image_transform_dequantize_is_deterministic_and_in_bins():
    levels = np.random.default_rng(0).integers(0, 17, (64, 8, 8, 1)).astype(np.uint8)
    batch = {"image": levels, "label": np.arange(64)}
    idx = np.arange(100, 164)
    t = fd.ImageTransform(num_levels=17, dequantize=True, keep_levels=True)
    a = t(batch, seed=3, epoch=1, indices=idx)
    b = t(batch, seed=3, epoch=1, indices=idx)
    chex.assert_trees_all_equal(a["x"], b["x"])
    frac = (a["x"] + 1.0) / (2.0 / 17) - levels
    assert frac.min() >= 0.0 and frac.max() < 1.0 and abs(frac.mean() - 0.5) < 0.02
    chex.assert_trees_all_equal(a["levels"], levels)
    assert a["label"].dtype == np.int32
    # noise of one row depends on (seed, epoch, index) only, not on its batch
    half = t({"image": levels[10:20], "label": np.arange(10)}, seed=3, epoch=1, indices=idx[10:20])
    chex.assert_trees_all_equal(half["x"], a["x"][10:20])
    c = t(batch, seed=3, epoch=2, indices=idx)
    assert not np.array_equal(c["x"], a["x"])


def test_random_flip_is_per_example_and_deterministic():
    rng = np.random.default_rng(1)
    levels = rng.integers(0, 256, (256, 4, 5, 3)).astype(np.uint8)
    idx = rng.permutation(1000)[:256]
    t = fd.ImageTransform(random_flip=True, keep_levels=True)
    before = levels.copy()
    out = t({"image": levels}, seed=0, epoch=0, indices=idx)
    flipped = flip_mask(0, 0, idx)
    assert 0.35 < flipped.mean() < 0.65
    chex.assert_trees_all_equal(out["levels"][flipped], levels[flipped][:, :, ::-1])
    chex.assert_trees_all_equal(out["levels"][~flipped], levels[~flipped])
    assert "label" not in out
    chex.assert_trees_all_equal(levels, before)  # the input batch is not modified
    other = flip_mask(0, 1, idx)
    assert 0.3 < np.mean(other != flipped) < 0.7  # a fresh coin per epoch
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        t({"image": levels[:, :, :, 0]}, seed=0, epoch=0, indices=idx)
    with pytest.raises(KeyError, match="image"):
        t({"pixels": levels}, seed=0, epoch=0, indices=idx)
