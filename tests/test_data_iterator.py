"""The index sampler: determinism, exact resumption, sharding over processes, remainders, errors."""

import json

import chex
import numpy as np
import pytest

import flowjax.data as fd
from flowjax.data import _hashing


def indexed_source(n: int) -> fd.ArraySource:
    """Each example carries its own index, so batches show exactly which examples they hold."""
    return fd.ArraySource(
        {
            "x": np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32),
            "label": np.arange(n, dtype=np.int32),
        }
    )


def take(it, k):
    return [next(it) for _ in range(k)]


def test_permutation_is_a_permutation_and_depends_on_seed_and_epoch():
    p = _hashing.permutation(0, 0, 1000)
    assert sorted(p.tolist()) == list(range(1000))
    assert not np.array_equal(p, _hashing.permutation(0, 1, 1000))
    assert not np.array_equal(p, _hashing.permutation(1, 0, 1000))
    chex.assert_trees_all_equal(p, _hashing.permutation(0, 0, 1000))
    # the hash is SplitMix64 (first outputs of the reference generator seeded with 0), so data
    # orders do not depend on NumPy's generators
    out = _hashing.mix64(np.array([0, 0x9E3779B97F4A7C15], dtype=np.uint64))
    assert [hex(int(v)) for v in out] == ["0xe220a8397b1dcdaf", "0x6e789e6aa1b965f4"]
    u = _hashing.uniform_from_keys(_hashing.example_keys(0, 0, np.arange(2000), 3), (50,))
    assert u.dtype == np.float32 and u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.003
    # the two uniforms taken from each 64-bit hash are uncorrelated
    assert abs(np.corrcoef(u[:, 0::2].ravel(), u[:, 1::2].ravel())[0, 1]) < 0.01


def test_same_seed_same_batches_different_seed_different():
    src = indexed_source(1000)
    a = take(fd.make_iterator(src, global_batch_size=64, seed=7, process_count=1), 40)
    b = take(fd.make_iterator(src, global_batch_size=64, seed=7, process_count=1), 40)
    c = take(fd.make_iterator(src, global_batch_size=64, seed=8, process_count=1), 40)
    for x, y in zip(a, b, strict=True):
        for k in x:
            chex.assert_trees_all_equal(x[k], y[k])
    assert not all(np.array_equal(x["label"], y["label"]) for x, y in zip(a, c, strict=True))


def test_epochs_are_permutations_and_reshuffled():
    n, g = 1000, 100
    it = fd.make_iterator(indexed_source(n), global_batch_size=g, seed=0, process_count=1)
    epochs = [np.concatenate([b["label"] for b in take(it, n // g)]) for _ in range(3)]
    for e in epochs:
        assert sorted(e.tolist()) == list(range(n))
    assert not np.array_equal(epochs[0], epochs[1])
    assert it.epoch == 3 and it.step == 30
    ordered = fd.make_iterator(
        indexed_source(n), global_batch_size=g, seed=0, shuffle=False, process_count=1
    )
    chex.assert_trees_all_equal(next(ordered)["label"], np.arange(g))


@pytest.mark.parametrize("stop", [0, 1, 6, 7, 13])
def test_exact_resumption_mid_epoch_through_json(stop):
    ds = fd.get_dataset("digits", "train", random_flip=True, dequantize=True)
    kwargs = dict(global_batch_size=200, seed=3, process_count=1)  # 7 batches per epoch
    ref = take(fd.make_iterator(ds, **kwargs), 20)
    it = fd.make_iterator(ds, **kwargs)
    take(it, stop)
    state = json.loads(json.dumps(it.get_state()))
    fresh = fd.make_iterator(ds, **kwargs)
    fresh.set_state(state)
    for expected, got in zip(ref[stop:], take(fresh, 20 - stop), strict=True):
        assert set(expected) == set(got)
        for k in expected:
            chex.assert_trees_all_equal(expected[k], got[k])


def test_state_contents_and_mismatch_errors():
    src = indexed_source(500)
    it = fd.make_iterator(src, global_batch_size=100, seed=1, process_count=1)
    take(it, 7)
    state = it.get_state()
    assert state["epoch"] == 1 and state["batch_in_epoch"] == 2
    assert json.loads(json.dumps(state)) == state
    other = fd.make_iterator(src, global_batch_size=50, seed=2, process_count=1)
    with pytest.raises(ValueError, match=r"global_batch_size: saved 100 != now 50.*seed: saved 1"):
        other.set_state(state)
    smaller = fd.make_iterator(indexed_source(400), global_batch_size=100, seed=1, process_count=1)
    with pytest.raises(ValueError, match="num_examples: saved 500 != now 400"):
        smaller.set_state(state)
    with pytest.raises(ValueError, match="missing"):
        it.set_state({"epoch": 0})
    with pytest.raises(ValueError, match="out of range"):
        it.set_state({**state, "batch_in_epoch": 5})
    with pytest.raises(ValueError, match="version"):
        it.set_state({**state, "version": 99})


def test_sharded_over_8_processes_each_example_once_per_epoch():
    n, g, p = 1000, 96, 8
    src = indexed_source(n)
    its = [
        fd.make_iterator(src, global_batch_size=g, seed=11, process_index=i, process_count=p)
        for i in range(p)
    ]
    single = fd.make_iterator(src, global_batch_size=g, seed=11, process_count=1)
    steps = n // g  # 10 batches, 40 examples dropped per epoch
    for _epoch in range(2):
        seen = []
        for _ in range(steps):
            parts = [next(it) for it in its]
            assert all(part["x"].shape == (g // p, 2) for part in parts)
            glob = np.concatenate([part["label"] for part in parts])
            # the processes' slices, in process order, are the one-process global batch
            chex.assert_trees_all_equal(glob, next(single)["label"])
            seen.append(glob)
        seen = np.concatenate(seen)
        assert len(seen) == len(np.unique(seen)) == steps * g  # nothing twice
        assert len(np.setdiff1d(np.arange(n), seen)) == n - steps * g  # the documented remainder
    assert len({json.dumps(it.get_state()) for it in its}) == 1  # one state for all processes


def test_state_restores_under_a_different_process_count():
    src = indexed_source(640)
    ref = fd.make_iterator(src, global_batch_size=64, seed=5, process_count=1)
    take(ref, 13)
    state = ref.get_state()
    expected = take(ref, 5)
    halves = []
    for i in range(2):
        it = fd.make_iterator(src, global_batch_size=64, seed=5, process_index=i, process_count=2)
        it.set_state(state)
        halves.append(take(it, 5))
    for k in range(5):
        glob = np.concatenate([halves[0][k]["label"], halves[1][k]["label"]])
        chex.assert_trees_all_equal(glob, expected[k]["label"])


def test_no_drop_remainder_pads_with_mask_and_covers_everything():
    n, g, p = 103, 16, 4
    src = indexed_source(n)
    its = [
        fd.make_iterator(
            src,
            global_batch_size=g,
            seed=0,
            process_index=i,
            process_count=p,
            drop_remainder=False,
            num_epochs=1,
        )
        for i in range(p)
    ]
    assert its[0].steps_per_epoch == 7
    seen = []
    for it in its:
        for b in it:  # stops after one epoch
            assert b["x"].shape == (4, 2) and b["mask"].dtype == bool
            seen.append(b["label"][b["mask"]])
            assert np.all(b["label"][~b["mask"]] == 0)  # padding rows are copies of example 0
    seen = np.concatenate(seen)
    assert sorted(seen.tolist()) == list(range(n))
    with pytest.raises(StopIteration):
        next(its[0])


def test_flips_independent_of_batch_size_and_process_count():
    ds = fd.get_dataset("digits", "train", random_flip=True)
    a = fd.make_iterator(ds, global_batch_size=300, seed=2, process_count=1, shuffle=False)
    b = fd.make_iterator(
        ds, global_batch_size=100, seed=2, process_index=1, process_count=2, shuffle=False
    )
    first = next(a)  # examples 0..299
    second = next(b)  # process 1 of 2, batch 0: examples 50..99
    chex.assert_trees_all_equal(second["x"], first["x"][50:100])
    levels = fd.digits_arrays("train")[0][:300]
    x = fd.scale_levels(levels, 17)
    flipped = ~np.all(first["x"] == x, axis=(1, 2, 3))
    symmetric = np.all(levels == levels[:, :, ::-1], axis=(1, 2, 3))
    assert 0.3 < flipped.mean() < 0.7
    chex.assert_trees_all_equal(first["x"][flipped], x[flipped][:, :, ::-1])
    assert not np.any(flipped & symmetric)


def test_bad_inputs_name_the_numbers():
    src = indexed_source(100)
    with pytest.raises(
        ValueError, match="global_batch_size = 30 is not divisible by process_count = 8"
    ):
        fd.make_iterator(src, global_batch_size=30, seed=0, process_count=8, process_index=0)
    with pytest.raises(ValueError, match="exceeds the number of examples"):
        fd.make_iterator(src, global_batch_size=128, seed=0, process_count=1)
    with pytest.raises(ValueError, match="process_index must be < process_count = 2"):
        fd.make_iterator(src, global_batch_size=8, seed=0, process_index=2, process_count=2)
    with pytest.raises(TypeError, match="seed must be an integer"):
        fd.make_iterator(src, global_batch_size=8, seed=1.5, process_count=1)
    with pytest.raises(ValueError, match="global_batch_size must be >= 1"):
        fd.make_iterator(src, global_batch_size=0, seed=0, process_count=1)
    with pytest.raises(ValueError, match="leading"):
        fd.ArraySource({"x": np.zeros((3, 2)), "label": np.zeros(4)})


def test_default_process_arguments_come_from_jax():
    it = fd.make_iterator(indexed_source(64), global_batch_size=16, seed=0)
    assert it.process_count == 1 and it.process_index == 0 and it.local_batch_size == 16


def test_plain_sources_without_get_batch_are_stacked():
    class ListSource:
        def __init__(self, n):
            self.items = [{"x": np.full((2,), i, np.float32), "label": i} for i in range(n)]

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    it = fd.make_iterator(ListSource(50), global_batch_size=10, seed=0, process_count=1)
    b = next(it)
    assert b["x"].shape == (10, 2) and b["label"].dtype == np.int32
    chex.assert_trees_all_equal(b["x"][:, 0], b["label"])
