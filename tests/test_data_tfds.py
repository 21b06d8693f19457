"""tensorflow-datasets sources: every code path under tfds.testing.mock_data, plus the real
ArrayRecord reading path on a data set written locally by prepare_from_arrays (no download)."""

import json

import chex
import numpy as np
import pytest
import tensorflow_datasets as tfds

import flowjax.data as fd
from flowjax.data import prepare as prep

SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}


@pytest.fixture
def mock():
    with tfds.testing.mock_data(num_examples=96):
        yield


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("in_memory", [True, False])
def test_mock_datasets_give_scaled_batches(name, in_memory, mock, tmp_path):
    ds = fd.get_dataset(name, "train", data_dir=str(tmp_path), in_memory=in_memory)
    assert ds.shape == SHAPES[name] and ds.num_classes == 10 and ds.num_levels == 256
    assert len(ds) == 96 and ds.value_range == (-1.0, 1.0)
    if in_memory:
        assert isinstance(ds.source, fd.ArraySource)
    else:
        assert isinstance(ds.source, fd.TfdsSource)
        assert not ds.source.batched_reads  # the mock's __getitems__ is unbound in tfds 4.9.10
    assert ds.transform.random_flip == (name == "cifar10")
    it = fd.make_iterator(ds, global_batch_size=32, seed=0, process_count=1)
    b = next(it)
    assert set(b) == {"x", "label"}
    assert b["x"].shape == (32, *SHAPES[name]) and b["x"].dtype == np.float32
    assert b["x"].min() >= -1.0 and b["x"].max() <= 1.0 and b["x"].std() > 0.3
    assert b["label"].dtype == np.int32 and b["label"].min() >= 0 and b["label"].max() < 10
    # the values are the source's uint8 levels scaled by k / 127.5 - 1 (flipped for CIFAR-10)
    levels = ds.as_arrays()["levels"]
    assert levels.dtype == np.uint8 and levels.shape == (96, *SHAPES[name])
    raw = tfds.data_source(name, split="train", download=False)[5]["image"]
    chex.assert_trees_all_equal(levels[5], raw)


def test_mock_record_and_in_memory_paths_agree(mock):
    mem = fd.get_dataset("cifar10", "train", in_memory=True)
    rec = fd.get_dataset("cifar10", "train", in_memory=False, num_threads=3)
    a = fd.make_iterator(mem, global_batch_size=48, seed=4, process_count=1)
    b = fd.make_iterator(rec, global_batch_size=48, seed=4, process_count=1)
    for _ in range(4):
        x, y = next(a), next(b)
        chex.assert_trees_all_equal(x["x"], y["x"])
        chex.assert_trees_all_equal(x["label"], y["label"])
    serial = fd.get_dataset("cifar10", "train", in_memory=False, num_threads=1)
    idx = np.array([5, 1, 90, 33, 7, 64] * 6)
    chex.assert_trees_all_equal(
        serial.source.get_batch(idx)["image"], rec.source.get_batch(idx)["image"]
    )
    chex.assert_shape(rec.source[3]["image"], (32, 32, 3))
    with pytest.raises(IndexError, match="out of range"):
        rec.source[96]
    with pytest.raises(IndexError, match=r"\[0, 96\)"):
        rec.source.get_batch(np.array([3, 96]))


def test_mock_cifar_flips_and_test_split_without(mock):
    train = fd.get_dataset("cifar10", "train")
    test = fd.get_dataset("cifar10", "test")
    assert train.transform.random_flip and not test.transform.random_flip
    assert not fd.get_dataset("cifar10", "train", random_flip=False).transform.random_flip
    x = fd.make_iterator(train, global_batch_size=96, seed=1, shuffle=False, process_count=1)
    b = next(x)["x"]
    plain = fd.scale_levels(train.source.arrays["image"], 256)
    flipped = ~np.all(b == plain, axis=(1, 2, 3))
    assert 0.25 < flipped.mean() < 0.75
    chex.assert_trees_all_equal(b[flipped], plain[flipped][:, :, ::-1])


def test_mock_determinism_resumption_and_sharding(mock):
    ds = fd.get_dataset("mnist", "train", in_memory=False, dequantize=True, keep_levels=True)
    kw = dict(global_batch_size=16, seed=9)
    ref = [next(it) for it in [fd.make_iterator(ds, process_count=1, **kw)] for _ in range(9)]
    it = fd.make_iterator(ds, process_count=1, **kw)
    for _ in range(4):
        next(it)
    resumed = fd.make_iterator(ds, process_count=1, **kw)
    resumed.set_state(json.loads(json.dumps(it.get_state())))
    for k in range(4, 9):
        chex.assert_trees_all_equal(next(resumed)["x"], ref[k]["x"])
    # 8 processes: every example exactly once per epoch (96 = 6 batches of 16, nothing dropped)
    its = [fd.make_iterator(ds, process_index=i, process_count=8, **kw) for i in range(8)]
    batches = [next(it) for _ in range(6) for it in its]
    for b in batches:  # dequantized values lie in their level's bin
        frac = (b["x"] + 1.0) / (2.0 / 256) - b["levels"]
        assert b["x"].shape == (2, 28, 28, 1) and frac.min() >= 0.0 and frac.max() < 1.0
    seen = [r.tobytes() for b in batches for r in b["levels"]]
    source = [r.tobytes() for r in ds.source.get_batch(np.arange(96))["image"]]
    assert sorted(seen) == sorted(source)


def test_missing_dataset_names_prepare_command_and_data_dir(tmp_path):
    with pytest.raises(fd.DatasetNotFoundError) as err:
        fd.get_dataset("mnist", "train", data_dir=str(tmp_path))
    msg = str(err.value)
    assert f"python -m flowjax.data.prepare --dataset mnist --data_dir {tmp_path}" in msg
    assert "data_dir" in msg and "digits" in msg
    with pytest.raises(fd.DatasetNotFoundError, match="no_such_dataset_xyz") as err:
        fd.tfds_source("no_such_dataset_xyz", "train", data_dir=str(tmp_path))
    assert "--dataset no_such_dataset_xyz" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)


def test_prepare_command_uses_array_record(mock, tmp_path, monkeypatch, capsys):
    calls = []
    real_builder = tfds.builder

    def spy(name, **kwargs):
        calls.append((name, kwargs))
        return real_builder(name, **kwargs)

    monkeypatch.setattr(tfds, "builder", spy)
    assert prep.main(["--dataset", "cifar10", "--data_dir", str(tmp_path)]) == 0
    assert calls == [("cifar10", {"data_dir": str(tmp_path), "file_format": "array_record"})]
    assert "prepared cifar10 in ArrayRecord format" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        prep.main([])  # --dataset is required


@pytest.fixture(scope="module")
def local_tfds(tmp_path_factory):
    """A small CIFAR-shaped and an MNIST-shaped data set written as real ArrayRecord files."""
    root = tmp_path_factory.mktemp("tfds")
    rng = np.random.default_rng(0)
    color = rng.integers(0, 256, (150, 32, 32, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (40, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, 150)
    prep.prepare_from_arrays(
        "local_color",
        {"train": (color[:120], labels[:120]), "test": (color[120:], labels[120:])},
        str(root),
        num_classes=10,
    )
    prep.prepare_from_arrays("local_gray", {"train": (gray, None)}, str(root))
    return root, color, labels, gray


def test_real_array_record_round_trip(local_tfds):
    root, color, labels, gray = local_tfds
    rec = fd.get_dataset("local_color", "train", data_dir=str(root), in_memory=False)
    assert rec.source.batched_reads and len(rec) == 120 and rec.num_classes == 10
    idx = np.array([3, 0, 119, 64, 3])
    got = rec.source.get_batch(idx)
    chex.assert_trees_all_equal(got["image"], color[idx])
    chex.assert_trees_all_equal(got["label"], labels[idx])
    mem = fd.get_dataset("local_color", "test", data_dir=str(root))
    chex.assert_trees_all_equal(mem.source.arrays["image"], color[120:])
    g = fd.get_dataset("local_gray", "train", data_dir=str(root))
    assert g.shape == (28, 28, 1) and g.num_classes is None
    chex.assert_trees_all_equal(g.source.arrays["image"], gray)
    b = next(fd.make_iterator(g, global_batch_size=8, seed=0, process_count=1))
    assert set(b) == {"x"} and b["x"].shape == (8, 28, 28, 1)
    it = fd.make_iterator(rec, global_batch_size=40, seed=2, process_count=1, shuffle=False)
    chex.assert_trees_all_equal(next(it)["x"], fd.scale_levels(color[:40], 256))


def test_prepare_from_arrays_checks_inputs(tmp_path):
    img = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        prep.prepare_from_arrays("bad_a", {"train": (img.astype(np.float32), None)}, str(tmp_path))
    with pytest.raises(ValueError, match="labels must have shape"):
        prep.prepare_from_arrays("bad_b", {"train": (img, np.zeros(3))}, str(tmp_path))
    with pytest.raises(ValueError, match="one image shape"):
        prep.prepare_from_arrays(
            "bad_c", {"train": (img, None), "test": (img[:, :4], None)}, str(tmp_path)
        )


def test_unknown_feature_keys_are_named(local_tfds):
    root = local_tfds[0]
    with pytest.raises(ValueError, match="no image feature 'img'"):
        fd.get_dataset("local_color", "train", data_dir=str(root), image_key="img")
    with pytest.raises(ValueError, match="toy data sets only"):
        fd.get_dataset("local_color", "train", data_dir=str(root), num_examples=10)
