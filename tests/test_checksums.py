"""Checkpoint integrity: CRC-32 checksums of every shard, and damaged files on disk.

Every single-bit flip (sign, exponent, mantissa, at every index) of a train state and of arrays
of eight dtypes changes its checksum: CRC-32 detects all single-bit errors by construction (its
generator polynomial has more than one term), and all 2-bit errors in messages shorter than 2^32
bits, so these tests are exhaustive checks of a guarantee, not samples. A damaged file of a
checkpoint on disk (a flipped byte, a truncation) is refused and restore falls back to the
previous checkpoint, which is returned bit for bit; the damaged one is moved aside, not deleted.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from flowjax import training as T
from flowjax.training._checksum import (
    array_checksums,
    crc32,
    merge_checksums,
    mismatched_leaves,
    state_checksums,
)
from tests.conftest import run_python
from tests.test_training import ToyIterator, build, leaves_equal

DTYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
    "float64": np.float64,
    "int32": np.int32,
    "uint32": np.uint32,
    "int8": np.int8,
    "bool": np.bool_,
}


def _kind(dtype: np.dtype, bit: int) -> str:
    """'sign', 'exponent' or 'mantissa' of bit ``bit`` (0 = least significant) of a float."""
    info = ml_dtypes.finfo(dtype)
    if bit == dtype.itemsize * 8 - 1:
        return "sign"
    return "mantissa" if bit < info.nmant else "exponent"


def _flip(a: np.ndarray, index: int, bit: int) -> np.ndarray:
    """A copy of ``a`` with bit ``bit`` of element ``index`` flipped (little-endian bytes)."""
    raw = np.ascontiguousarray(a).reshape(-1).view(np.uint8).copy()
    raw[index * a.itemsize + bit // 8] ^= np.uint8(1 << (bit % 8))
    return raw.view(a.dtype).reshape(a.shape)


def _values(dtype, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == np.bool_:
        return rng.random(n) < 0.5
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
    return (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n)).astype(dtype)


def test_every_single_bit_flip_of_every_dtype_is_caught():
    kinds: dict[str, int] = {}
    for name, dtype in DTYPES.items():
        a = _values(dtype, 37, seed=len(name))  # odd length: odd and even indices, a ragged tail
        ref = crc32(a)
        bits = 1 if dtype == np.bool_ else a.itemsize * 8
        for i in range(a.size):
            for bit in range(bits):
                assert crc32(_flip(a, i, bit)) != ref, (name, i, bit)
                if np.issubdtype(dtype, np.floating) or dtype == ml_dtypes.bfloat16:
                    kind = _kind(np.dtype(dtype), bit)
                    kinds[kind] = kinds.get(kind, 0) + 1
    # each kind was exercised for each of the four float formats
    assert kinds == {
        "sign": 4 * 37,
        "exponent": 37 * (8 + 5 + 8 + 11),
        "mantissa": 37 * (23 + 10 + 7 + 52),
    }


def test_every_single_bit_flip_of_a_train_state_is_caught():
    """All 160,224 single-bit flips of the toy MLP's train state (the old weighted sum missed 285
    of 1,114 on a comparable state, e.g. the sign bit at odd float32 indices)."""
    state, _ = build()
    leaves = [np.array(x) for x in jax.tree.leaves(state)]  # writable host copies
    saved = [crc32(x) for x in leaves]
    flips = 0
    for leaf, ref in zip(leaves, saved, strict=True):
        raw = np.ascontiguousarray(leaf).reshape(-1).view(np.uint8)
        for byte in range(raw.size):
            for bit in range(8):
                raw[byte] ^= np.uint8(1 << bit)
                assert crc32(raw.tobytes()) != ref
                raw[byte] ^= np.uint8(1 << bit)
                flips += 1
    assert flips == 32 * sum(x.size for x in leaves) == 160_224


def test_every_two_bit_flip_within_a_word_and_random_pairs_are_caught():
    a = _values(np.float32, 101, seed=1)
    ref = crc32(a)
    raw = a.view(np.uint8).copy()
    for i in range(a.size):
        for b1 in range(32):
            for b2 in range(b1 + 1, 32):
                r = raw.copy()
                r[4 * i + b1 // 8] ^= np.uint8(1 << (b1 % 8))
                r[4 * i + b2 // 8] ^= np.uint8(1 << (b2 % 8))
                assert crc32(r.tobytes()) != ref
    rng = np.random.default_rng(0)
    for b1, b2 in rng.integers(0, 8 * raw.size, (5000, 2)):
        if b1 == b2:
            continue
        r = raw.copy()
        r[b1 // 8] ^= np.uint8(1 << (b1 % 8))
        r[b2 // 8] ^= np.uint8(1 << (b2 % 8))
        assert crc32(r.tobytes()) != ref


def test_flipped_device_arrays_are_named_by_mismatched_leaves():
    """Through the jax path: flips at odd and even indices of device arrays of several dtypes."""
    state = {
        "w": jnp.asarray(_values(np.float32, 12, 0).reshape(3, 4)),
        "h": jnp.asarray(_values(np.float16, 9, 1)),
        "b": jnp.asarray(_values(ml_dtypes.bfloat16, 5, 2)),
        "k": jax.random.key(3),  # a typed key: checksummed as its uint32 data
        "n": jnp.asarray(_values(np.int32, 7, 4)),
    }
    saved = state_checksums(state)
    assert mismatched_leaves(state, saved) == []
    names = sorted(state)  # jax.tree.leaves order of a dict
    for leaf_index, name in enumerate(names):
        host = np.asarray(jax.random.key_data(state[name]) if name == "k" else state[name])
        for i in range(host.size):
            for bit in (0, host.itemsize * 8 - 1, host.itemsize * 4):  # low, sign, middle bits
                flipped = _flip(host, i, bit)
                value = jax.random.wrap_key_data(flipped) if name == "k" else jnp.asarray(flipped)
                assert mismatched_leaves({**state, name: value}, saved) == [leaf_index]
    # a missing shard checksum (the keys damaged) is itself a mismatch
    damaged = [dict(s) for s in saved]
    damaged[0] = {}
    assert mismatched_leaves(state, damaged) == [0]
    with pytest.raises(ValueError, match="different checksums"):
        merge_checksums([saved, [{k: v ^ 1 for k, v in s.items()} for s in saved]])


def test_shards_are_checksummed_where_they_live_and_checked_after_resharding():
    """4 devices: each distinct shard once, keyed by index; flips caught in either layout."""
    out = run_python(
        """
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import NamedSharding, PartitionSpec as P
        from flowjax.training._checksum import array_checksums, crc32, mismatched_leaves

        mesh = jax.make_mesh((2, 2), ("a", "b"))
        x = np.arange(8 * 6, dtype=np.float32).reshape(8, 6) - 20.5
        split = jax.device_put(x, NamedSharding(mesh, P("a", "b")))
        rows = jax.device_put(x, NamedSharding(mesh, P("a")))  # each row block on 2 devices
        sums = array_checksums(split)
        assert sums == {
            f"{r}:{r + 4},{c}:{c + 3}": crc32(x[r : r + 4, c : c + 3]) for r in (0, 4) for c in (0, 3)
        }, sums
        assert array_checksums(rows) == {"0:4,0:6": crc32(x[:4]), "4:8,0:6": crc32(x[4:])}
        assert mismatched_leaves([rows], [sums]) == []  # another layout: cut from the whole
        for i in (1, 7, 26, 47):  # odd and even flat indices, every shard
            bad = x.copy().reshape(-1)
            bad.view(np.uint32)[i] ^= np.uint32(1 << 31)  # the sign bit
            bad = bad.reshape(8, 6)
            for sharding in (split.sharding, rows.sharding):
                assert mismatched_leaves([jax.device_put(bad, sharding)], [sums]) == [0], i
        print("OK")
        """,
        devices=4,
    )
    assert "OK" in out, out


# ---------------------------------------------------------------------------------------------
# damaged files on disk


def _write_two(directory: Path):
    """Checkpoints at steps 2 and 4 (synchronous); returns {step: (state, data_state)}."""
    state, step = build()
    it = ToyIterator(16)
    saved = {}
    with T.Checkpointer(directory, async_save=False, max_to_keep=None) as ck:
        for _ in range(2):
            for _ in range(2):
                state, _ = step(state, next(it))
            ck.save(state, data_state=it.get_state(), metadata={"run": "x"})
            saved[int(state.step)] = (jax.device_get(state), it.get_state())
    return saved, state


def _files(step_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(step_dir)) for p in step_dir.rglob("*") if p.is_file())


def _damages(size: int, positions: int):
    """(name, function of bytes): byte flips at ``positions`` offsets (1: the middle byte; more:
    evenly spaced, first and last included), and truncations (to half; more: also by one byte
    and to nothing)."""
    if positions == 1:
        offsets = [size // 2]
    else:
        offsets = sorted({*np.linspace(0, size - 1, positions).astype(int).tolist()})
    out = [(f"flip@{o}", lambda d, o=o: d[:o] + bytes([d[o] ^ 0x10]) + d[o + 1 :]) for o in offsets]
    out.append(("truncate-half", lambda d: d[: len(d) // 2]))
    if positions > 1:
        out += [("truncate-1", lambda d: d[:-1]), ("empty", lambda d: b"")]
    return out


OURS = (
    "checksums/process_",
    "data/process_",
    "meta/metadata",
)  # flowjax's JSON files: every byte counts


def _check_damage(tmp_path: Path, positions: int) -> tuple[int, int]:
    """Damage every file of the newest checkpoint in turn; each restore is exact or falls back."""
    pristine = tmp_path / "pristine"
    saved, state = _write_two(pristine)
    abstract = T.abstract_state(state)
    files = _files(pristine / "4")
    assert any(f.startswith("state/") for f in files) and "checksums/process_0.json" in files
    tried = fell_back = expected = 0
    for rel in files:
        data = (pristine / "4" / rel).read_bytes()
        if not data:
            continue
        expected += len(_damages(len(data), positions))
        for name, damage in _damages(len(data), positions):
            work = tmp_path / "work"
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(pristine, work)
            (work / "4" / rel).write_bytes(damage(data))
            with T.Checkpointer(work) as ck, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                r = ck.restore(abstract)
            what = f"{rel} {name}"
            assert r is not None, what
            want_state, want_data = saved[r.step]
            assert leaves_equal(r.state, want_state), what  # never wrong contents
            assert r.data_state == want_data and r.metadata == {"run": "x"}, what
            if r.step == 2:  # refused: moved aside whole, nothing deleted
                (moved,) = (work / "corrupt").iterdir()
                assert moved.name.startswith("4-") and _files(moved) == files, what
                assert any("step 4" in str(w.message) for w in caught), what
                fell_back += 1
            else:  # harmless: orbax's bookkeeping, or bytes of a data file that are never read
                assert not rel.startswith(OURS), what
            tried += 1
    # every damage of every file was tried (orbax writes a varying number of data files: 19-20)
    assert tried == expected and len(files) >= 15, (tried, expected, files)
    return tried, fell_back


def test_damaged_checkpoint_files_are_refused_and_restore_falls_back(tmp_path):
    tried, fell_back = _check_damage(tmp_path, positions=1)
    assert tried >= 30 and fell_back > 0, (tried, fell_back)


@pytest.mark.slow
def test_damaged_checkpoint_files_at_many_offsets(tmp_path):
    tried, fell_back = _check_damage(tmp_path, positions=24)
    assert tried >= 400 and fell_back > 0, (tried, fell_back)


def test_a_readable_state_with_wrong_contents_is_refused(tmp_path):
    """Storage-level checks (orbax/tensorstore) cannot see this one: step 4's array files
    replaced by step 2's (a botched copy) read back fine, and only the checksums object."""
    saved, state = _write_two(tmp_path / "ck")
    shutil.rmtree(tmp_path / "ck" / "4" / "state")
    shutil.copytree(tmp_path / "ck" / "2" / "state", tmp_path / "ck" / "4" / "state")
    warns = pytest.warns(UserWarning, match=r"step 4 .*differ from their saved checksums")
    with T.Checkpointer(tmp_path / "ck") as ck, warns:
        r = ck.restore(T.abstract_state(state))
    assert r.step == 2 and leaves_equal(r.state, saved[2][0])


def test_checksum_files_and_metadata_are_sealed(tmp_path):
    """A value edited inside a JSON file (valid JSON, wrong content) is refused too."""
    saved, state = _write_two(tmp_path / "ck")
    step4 = tmp_path / "ck" / "4"
    text = (step4 / "data" / "process_0.json").read_text()
    assert '"index": 4' in text or '"index":4' in text, text
    (step4 / "data" / "process_0.json").write_text(text.replace("4", "5"))
    with T.Checkpointer(tmp_path / "ck") as ck, pytest.warns(UserWarning, match="differs"):
        r = ck.restore(T.abstract_state(state))
    assert r.step == 2 and r.data_state == saved[2][1]


def test_checkpoints_written_without_checksums_load_with_a_warning(tmp_path):
    """The previous format (a ``fingerprint`` list in the metadata) still loads, unverified."""
    import json

    saved, state = _write_two(tmp_path / "ck")
    for step in (2, 4):
        meta_file = tmp_path / "ck" / str(step) / "meta" / "metadata"
        meta = json.loads(meta_file.read_text())
        del meta["crc32"], meta["format"]
        meta["fingerprint"] = [0] * len(meta["layout"])
        meta_file.write_text(json.dumps(meta))
        shutil.rmtree(tmp_path / "ck" / str(step) / "checksums")
    with T.Checkpointer(tmp_path / "ck") as ck, pytest.warns(UserWarning, match="unverified"):
        r = ck.restore(T.abstract_state(state))
    assert r.step == 4 and leaves_equal(r.state, saved[4][0]) and r.data_state == saved[4][1]


def test_state_fingerprint_is_the_crc_of_each_whole_array():
    state, _ = build()
    fp = T.state_fingerprint(state)
    assert fp == [crc32(np.asarray(x)) for x in jax.tree.leaves(state)]
    # one device: each array is one shard, keyed by its full index
    assert [list(array_checksums(x).values()) for x in jax.tree.leaves(state)] == [[f] for f in fp]


# ---------------------------------------------------------------------------------------------
# checkpoints dropped by max_to_keep


def test_dropped_checkpoints_are_renamed_aside_before_they_are_deleted(tmp_path, monkeypatch):
    """Found by tests/test_chaos.py: a run killed while orbax deleted a checkpoint dropped by
    ``max_to_keep`` (a recursive delete, file by file) left a step directory without its ``meta``
    item, which ``all_steps`` listed and ``restore`` refused as corrupt. Now the step directory is
    renamed into ``deleted/`` (atomic) and removed from there: here the process "dies" before
    and during that removal, and what is left never lists as a checkpoint."""
    state, step = build()
    it = ToyIterator(16)
    saved = {}
    monkeypatch.setattr(T.Checkpointer, "_purge", lambda self, background=False: None)  # killed
    with T.Checkpointer(tmp_path, async_save=False, max_to_keep=2) as ck:
        for _ in range(4):
            state, _ = step(state, next(it))
            ck.save(state, data_state=it.get_state())
            saved[int(state.step)] = jax.device_get(state)
        assert ck.all_steps() == [3, 4]
    steps = sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit())
    assert steps == ["3", "4"]
    dropped = tmp_path / "deleted"
    assert sorted(p.name for p in dropped.iterdir()) == ["1", "2"]  # whole, out of the listing
    items = sorted(p.name for p in (tmp_path / "3").iterdir())
    assert sorted(p.name for p in (dropped / "1").iterdir()) == items and "meta" in items
    for f in sorted((dropped / "1").rglob("*"))[::2]:  # killed half-way through removing step 1
        if f.is_file():
            f.unlink()
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no checkpoint is refused
        with T.Checkpointer(tmp_path, max_to_keep=2) as ck:
            assert not dropped.exists() or not any(dropped.iterdir())  # purged at start
            assert ck.all_steps() == [3, 4]
            for s in (3, 4):
                r = ck.restore(T.abstract_state(state), step=s)
                chex.assert_trees_all_equal(jax.device_get(r.state), saved[s])
