"""flowjax.training: optimizer, train step, EMA, checkpoints, metrics and the loop (one process).

Multi-device and kill-and-resume checks live in ``test_training_distributed.py``. The helpers at the
top (a small Flax MLP, a flow-matching loss written here, a resumable numpy iterator) are imported
by those subprocesses too.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import warnings
from pathlib import Path

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flowjax as fj
from flowjax import training as T

# ---------------------------------------------------------------------------------------------
# helpers shared with the subprocess tests


class MLP(nn.Module):
    """A small velocity network v(x, t) for 2-D data."""

    width: int = 32
    depth: int = 2

    @nn.compact
    def __call__(self, x, t):
        h = jnp.concatenate([x, t[:, None]], axis=-1)
        for _ in range(self.depth):
            h = nn.silu(nn.Dense(self.width)(h))
        return nn.Dense(x.shape[-1])(h)


MODEL = MLP()
PATH = fj.CondOT()


def fm_loss(params, batch, key):
    """Conditional flow matching on CondOT, written inline (the tests' own loss)."""
    x1 = batch["x"]
    k_eps, k_t = jax.random.split(key)
    eps = jax.random.normal(k_eps, x1.shape, x1.dtype)
    t = jax.random.uniform(k_t, (x1.shape[0],), x1.dtype)
    xt = PATH.interpolate(x1, eps, t)
    target = PATH.conditional_target("velocity", x1, eps, t)
    pred = MODEL.apply({"params": params}, xt, t)
    return jnp.mean((pred - target) ** 2), {"t_mean": jnp.mean(t)}


@jax.jit
def _init_params(key):
    return MODEL.init(key, jnp.zeros((1, 2)), jnp.zeros((1,)))["params"]


def init_params(seed: int = 0):
    return _init_params(jax.random.PRNGKey(seed))


_MIX = fj.oracle.eight_gaussians()
_sample = jax.jit(lambda key, n: _MIX.sample(key, n), static_argnums=1)


class ToyIterator:
    """Batches of 8-Gaussians samples, a pure function of (seed, index); resumable.

    ``poison_at``: the batch at that index holds a NaN. ``signal_at``: fetching that index sends
    ``signal_num`` to this process (SIGKILL: a crash; SIGTERM: a preemption notice).
    """

    def __init__(self, batch_size=16, seed=0, poison_at=None, signal_at=None, signal_num=None):
        self.batch_size, self.seed, self.index = batch_size, seed, 0
        self.poison_at, self.signal_at, self.signal_num = poison_at, signal_at, signal_num

    def __iter__(self):
        return self

    def __next__(self):
        if self.signal_at is not None and self.index == self.signal_at:
            os.kill(os.getpid(), self.signal_num)
        key = jax.random.fold_in(jax.random.PRNGKey(self.seed), self.index)
        x = np.array(_sample(key, self.batch_size), np.float32)
        if self.poison_at is not None and self.index == self.poison_at:
            x[3, 1] = np.nan
        self.index += 1
        return {"x": x}

    def get_state(self):
        return {"seed": self.seed, "index": self.index}

    def set_state(self, state):
        self.seed, self.index = state["seed"], state["index"]


def full_optimizer(total_steps=12):
    """AdamW with warmup, cosine decay, clipping and weight decay: every part of the state."""
    return T.make_optimizer(
        "adamw",
        3e-3,
        schedule="cosine",
        warmup_steps=3,
        total_steps=total_steps,
        weight_decay=1e-4,
        grad_clip=1.0,
    )


def build(mesh=None, total_steps=12, ema_decay=0.9, seed=0):
    """(fresh initial state on the mesh, train step) for the toy problem."""
    host, step = _built(mesh, total_steps, ema_decay, seed)
    return step.place_state(host), step


@functools.lru_cache
def _built(mesh, total_steps, ema_decay, seed):
    # cached: one compiled step per configuration for the whole test module
    opt = full_optimizer(total_steps)
    mesh = mesh if mesh is not None else fj.parallel.make_mesh()
    step = T.make_train_step(fm_loss, opt, mesh=mesh, ema_decay=ema_decay, ema_warmup=True)
    state = jax.jit(lambda p, k: T.create_train_state(p, opt, k))(
        init_params(seed), jax.random.PRNGKey(seed + 1)
    )
    return jax.device_get(state), step


def leaves_equal(a, b) -> bool:
    """Bitwise equality of two pytrees of arrays."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.asarray(x).dtype == np.asarray(y).dtype
        and np.asarray(x).tobytes() == np.asarray(y).tobytes()
        for x, y in zip(la, lb, strict=True)
    )


# ---------------------------------------------------------------------------------------------
# optimizer and schedules


def test_unknown_optimizer_and_schedule_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown optimizer 'lion'.*adamw, adam, sgd"):
        T.make_optimizer("lion")
    with pytest.raises(ValueError, match=r"unknown learning-rate schedule 'step'.*cosine"):
        T.make_optimizer("adam", schedule="step")
    with pytest.raises(ValueError, match="total_steps"):
        T.make_optimizer("adamw", schedule="cosine", warmup_steps=10)
    with pytest.raises(ValueError, match="use name='adamw'"):
        T.make_optimizer("adam", weight_decay=0.1)


def test_schedules_warm_up_then_decay():
    s = T.make_schedule(2.0, schedule="cosine", warmup_steps=10, total_steps=110, end_lr=0.5)
    chex.assert_trees_all_close(
        np.asarray([s(0), s(5), s(10), s(60), s(110)]),
        np.asarray([0, 1, 2, 1.25, 0.5]),
        rtol=1e-7,
        atol=1e-6,
    )
    c = T.make_schedule(1.0, warmup_steps=4)
    chex.assert_trees_all_close(
        np.asarray([c(0), c(2), c(4), c(1000)]), np.asarray([0, 0.5, 1, 1]), rtol=1e-7, atol=1e-6
    )
    lin = T.make_schedule(1.0, schedule="linear", total_steps=10)
    chex.assert_trees_all_close(
        np.asarray([lin(0), lin(5), lin(10)]), np.asarray([1, 0.5, 0]), rtol=1e-7, atol=1e-6
    )


def test_sgd_recovers_least_squares_solution():
    """A linear model trained by (full-batch) SGD reaches the closed-form least-squares weights."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3)).astype(np.float32)
    w_true = np.array([1.0, -2.0, 0.5], np.float32)
    y = (X @ w_true + 0.1 * rng.normal(size=64)).astype(np.float32)
    w_star = np.linalg.lstsq(X, y, rcond=None)[0]

    def loss(params, batch, key):
        r = batch["x"] @ params["w"] - batch["y"]
        return jnp.mean(r**2), {}

    opt = T.make_optimizer("sgd", 0.2, momentum=0.5)
    step = T.make_train_step(loss, opt, mesh=fj.parallel.make_mesh(), ema_decay=None)
    state = T.create_train_state({"w": jnp.zeros(3)}, opt, jax.random.PRNGKey(0), ema=False)
    for _ in range(100):
        state, metrics = step(state, {"x": X, "y": y})
    chex.assert_trees_all_close(np.asarray(state.params["w"]), w_star, rtol=1e-7, atol=1e-4)
    assert float(metrics["grad_norm"]) < 1e-4


# ---------------------------------------------------------------------------------------------
# the train step


def test_step_matches_a_hand_written_update():
    """Gradient of the batch-mean loss, the optax update, EMA with warmup, key split, metrics."""
    state0, step = build()
    opt = step.optimizer
    it = ToyIterator(16)
    batches = [next(it) for _ in range(3)]

    # hand-written reference, step by step
    sched = T.make_schedule(3e-3, schedule="cosine", warmup_steps=3, total_steps=12)

    @jax.jit
    def reference(params, opt_state, ema, key, b, i):
        key, k = jax.random.split(key)
        (loss, _), g = jax.value_and_grad(fm_loss, has_aux=True)(params, b, k)
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam is not strict-clean
            updates, opt_state = opt.update(g, opt_state, params)
            params = optax.apply_updates(params, updates)
        fi = i.astype(jnp.float32)
        d = jnp.minimum(0.9, (1 + fi) / (10 + fi))
        ema = jax.tree.map(lambda e, p: d * e + (1 - d) * p, ema, params)
        return params, opt_state, ema, key, (loss, optax.tree.norm(g), sched(i))

    params, opt_state, ema, key = state0.params, state0.opt_state, state0.ema_params, state0.key
    ref_metrics = []
    for i, b in enumerate(batches):
        params, opt_state, ema, key, m = reference(params, opt_state, ema, key, b, jnp.int32(i))
        ref_metrics.append([float(v) for v in m])

    state = step.place_state(state0)
    for b, (loss, gnorm, lr) in zip(batches, ref_metrics, strict=True):
        state, m = step(state, b)
        chex.assert_trees_all_close(float(m["loss"]), loss, rtol=1e-5)
        chex.assert_trees_all_close(float(m["grad_norm"]), gnorm, rtol=1e-5)
        chex.assert_trees_all_close(float(m["learning_rate"]), lr, rtol=1e-6)
        assert set(m) == {"loss", "grad_norm", "learning_rate", "t_mean"}
    assert int(state.step) == 3
    chex.assert_trees_all_equal(state.key, key)
    chex.assert_trees_all_close(
        (state.params, state.ema_params, state.opt_state),
        (params, ema, opt_state),
        rtol=2e-5,
        atol=1e-7,
    )


def test_ema_decay_schedule():
    steps = jnp.arange(4)
    chex.assert_trees_all_close(T.ema_decay_at(steps, 0.99, False), np.full(4, 0.99), rtol=1e-7)
    chex.assert_trees_all_close(
        T.ema_decay_at(steps, 0.99, True), np.asarray([1 / 10, 2 / 11, 3 / 12, 4 / 13]), rtol=1e-6
    )
    with pytest.raises(ValueError, match="ema_decay"):
        T.make_train_step(fm_loss, optax.sgd(0.1), mesh=fj.parallel.make_mesh(), ema_decay=1.0)


def test_step_is_deterministic_and_donates_the_state():
    s1, step = build()
    s2, _ = build()
    it1, it2 = ToyIterator(16), ToyIterator(16)
    old_params = s1.params
    for _ in range(3):
        s1, _ = step(s1, next(it1))
        s2, _ = step(s2, next(it2))
    assert leaves_equal(s1, s2)
    assert all(x.is_deleted() for x in jax.tree.leaves(old_params))


def test_batch_that_does_not_fit_the_model_is_named():
    state, step = build()
    with pytest.raises(Exception, match=r"batch with global shapes \{'x': 'float32\[16, 3\]'\}"):
        step(state, {"x": np.zeros((16, 3), np.float32)})
    # the failed call did not consume the state
    state, _ = step(state, next(ToyIterator(16)))


def test_bad_batches_and_losses_are_rejected():
    state, step = build()
    with pytest.raises(TypeError, match="dict of arrays"):
        step(state, np.zeros((16, 2), np.float32))
    with pytest.raises(ValueError, match="disagree on the batch size"):
        step(state, {"x": np.zeros((16, 2), np.float32), "label": np.zeros(8, np.int32)})
    with pytest.raises(ValueError, match="no leading batch axis"):
        step(state, {"x": np.float32(1.0)})

    def vector_loss(params, batch, key):
        return batch["x"] @ params["w"], {}

    def bad_aux(params, batch, key):
        return jnp.mean(batch["x"] @ params["w"]), {"per_example": batch["x"][:, 0]}

    for fn, msg in [(vector_loss, "floating scalar loss"), (bad_aux, r"aux\['per_example'\]")]:
        opt = optax.sgd(0.1)
        st = T.create_train_state({"w": jnp.ones(2)}, opt, jax.random.PRNGKey(0), ema=False)
        bad = T.make_train_step(fn, opt, mesh=fj.parallel.make_mesh(), ema_decay=None)
        with pytest.raises(ValueError, match=msg):
            bad(st, {"x": np.ones((4, 2), np.float32)})


# ---------------------------------------------------------------------------------------------
# checkpoints


def _train(state, step, it, n):
    for _ in range(n):
        state, _ = step(state, next(it))
    return state


def test_checkpoint_roundtrip_keeps_last_k(tmp_path):
    state, step = build()
    it = ToyIterator(16)
    with T.Checkpointer(tmp_path / "ckpt", max_to_keep=2) as ck:
        for _ in range(3):
            state = _train(state, step, it, 2)
            assert ck.save(state, data_state=it.get_state(), metadata={"run": "a"})
        assert not ck.save(state)  # this step exists already
        ck.wait_until_finished()
        assert ck.all_steps() == [4, 6]
        r = ck.restore(T.abstract_state(state))
    assert r.step == 6 and r.data_state == {"seed": 0, "index": 6} and r.metadata == {"run": "a"}
    assert leaves_equal(r.state, state)
    assert r.state.params["Dense_0"]["kernel"].sharding == fj.parallel.replicated(step.mesh)


def _damage(step_dir: Path):
    """Overwrite the middle of every array-data file of a checkpoint's state item."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.stat().st_size > 64]
    big = [p for p in files if "d" in p.parent.name or p.stat().st_size > 1024] or files
    for p in big:
        data = bytearray(p.read_bytes())
        mid = len(data) // 2
        data[mid : mid + 16] = bytes(16)
        p.write_bytes(bytes(data))


def test_corrupt_and_partial_checkpoints_are_skipped(tmp_path):
    state, step = build()
    it = ToyIterator(16)
    directory = tmp_path / "ckpt"
    saved = {}
    with T.Checkpointer(directory, max_to_keep=5) as ck:
        for _ in range(3):
            state = _train(state, step, it, 2)
            ck.save(state, data_state=it.get_state())
            ck.wait_until_finished()
            saved[int(state.step)] = jax.device_get(state)
    # step 6: damaged array data; step 4: its metadata is gone; a partial (unfinished) save of 8
    _damage(directory / "6")
    (directory / "4" / "meta" / "metadata").unlink()
    (directory / "8.orbax-checkpoint-tmp-1234").mkdir()
    (directory / "8.orbax-checkpoint-tmp-1234" / "state").mkdir()
    with T.Checkpointer(directory) as ck:
        assert ck.all_steps() == [2, 4, 6]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = ck.restore(T.abstract_state(state))
        msgs = [str(w.message) for w in caught if "corrupt" in str(w.message)]
        assert r is not None and r.step == 2
        assert any("step 6" in m for m in msgs) and any("step 4" in m for m in msgs), msgs
        assert leaves_equal(r.state, saved[2]) and r.data_state["index"] == 2
        assert ck.all_steps() == [2]
        assert sorted(p.name.split("-")[0] for p in (directory / "corrupt").iterdir()) == ["4", "6"]
        # training can continue and save those steps again
        s = _train(r.state, step, ToyIterator(16), 2)
        assert ck.save(s)


def test_restoring_into_another_model_raises(tmp_path):
    state, _ = build()
    with T.Checkpointer(tmp_path / "ckpt") as ck:
        ck.save(state)
        ck.wait_until_finished()
        small = MLP(width=8)
        other = jax.eval_shape(
            lambda k: T.create_train_state(
                small.init(k, jnp.zeros((1, 2)), jnp.zeros(1))["params"], full_optimizer(), k
            ),
            jax.random.PRNGKey(0),
        )
        with pytest.raises(T.CheckpointLayoutError, match=r"\['Dense_0'\]\['kernel'\]"):
            ck.restore(T.abstract_state(other))
        assert ck.all_steps() == [0]  # a mismatch is not corruption: nothing is moved aside


def test_a_state_with_nan_is_never_saved(tmp_path):
    state, _ = build()
    bad = state.replace(params=jax.tree.map(lambda p: p * jnp.nan, state.params))
    with T.Checkpointer(tmp_path / "ckpt") as ck:
        with pytest.raises(FloatingPointError, match="step 0"):
            ck.save(bad)
        assert ck.all_steps() == []


# ---------------------------------------------------------------------------------------------
# the loop


def test_loop_resumes_bitwise_in_process(tmp_path):
    ref_state, step = build()
    ref = T.train_loop(ref_state, step, ToyIterator(16), num_steps=12, log_every=4)
    with T.Checkpointer(tmp_path / "ckpt") as ck:
        s0, _ = build()
        T.train_loop(s0, step, ToyIterator(16), num_steps=5, checkpointer=ck, checkpoint_every=4)
        assert ck.all_steps() == [4, 5]
        s0, _ = build()
        res = T.train_loop(s0, step, ToyIterator(16), num_steps=12, checkpointer=ck)
    assert res.restored_step == 5 and res.start_step == 5 and res.step == 12
    assert leaves_equal(res.state, ref.state)
    assert [h["step"] for h in ref.history] == [4, 8, 12]


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    state, step = build()
    with T.Checkpointer(tmp_path / "ckpt") as ck:
        with pytest.raises(T.NonFiniteLossError, match=r"non-finite loss \(nan\) at step 7") as e:
            T.train_loop(
                state,
                step,
                ToyIterator(16, poison_at=6),
                num_steps=20,
                checkpointer=ck,
                checkpoint_every=4,
                log_every=100,
            )
        assert e.value.step == 7 and e.value.last_checkpoint == 4
        assert "last good checkpoint, step 4" in str(e.value)
        assert ck.all_steps() == [4]
        restored = ck.restore(T.abstract_state(state))
    assert restored.step == 4
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(restored.state.params))


def test_sigterm_saves_and_stops(tmp_path):
    """In process: SIGTERM mid-run -> the step finishes, a checkpoint is written, the loop stops."""
    state, step = build()
    it = ToyIterator(16, signal_at=5, signal_num=signal.SIGTERM)
    with T.Checkpointer(tmp_path / "ckpt") as ck:
        res = T.train_loop(
            state,
            step,
            it,
            num_steps=50,
            checkpointer=ck,
            checkpoint_every=100,
            exit_on_signal=False,
        )
        assert res.preempted and res.step == 6 and ck.all_steps() == [6]
        state, _ = build()
        it = ToyIterator(16, signal_at=8, signal_num=signal.SIGTERM)
        with pytest.raises(SystemExit) as e:
            T.train_loop(state, step, it, num_steps=50, checkpointer=ck)
        assert e.value.code == 0 and ck.all_steps() == [6, 9]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_metrics_go_to_jsonl_tensorboard_and_stdout(tmp_path, capsys):
    state, step = build()
    with T.MetricWriter(tmp_path / "logs") as writer:
        res = T.train_loop(state, step, ToyIterator(16), num_steps=9, writer=writer, log_every=3)
    out = capsys.readouterr().out
    assert out.count("step ") == 3 and "| loss " in out and "examples_per_sec" in out
    records = T.read_jsonl(tmp_path / "logs" / "metrics.jsonl")
    assert [r["step"] for r in records] == [3, 6, 9]
    for r in records:
        assert {"loss", "grad_norm", "learning_rate", "t_mean"} <= set(r)
        assert r["steps_per_sec"] > 0 and np.isclose(r["examples_per_sec"], 16 * r["steps_per_sec"])
    assert "first_step_s" in records[0]
    assert records == [{k: v for k, v in h.items()} for h in res.history]
    scalars = T.read_tensorboard_scalars(tmp_path / "logs")
    assert [s for s, _ in scalars["loss"]] == [3, 6, 9]
    chex.assert_trees_all_close(
        np.asarray([v for _, v in scalars["loss"]]),
        np.asarray([r["loss"] for r in records]),
        rtol=1e-6,
    )
    # the JSONL lines are plain JSON
    json.loads((tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()[0])


def test_only_process_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    with T.MetricWriter(tmp_path / "logs") as writer:
        writer.write(1, {"loss": 1.0})
    assert not (tmp_path / "logs").exists()


def test_truncated_event_file_is_reported(tmp_path):
    with T.MetricWriter(tmp_path, stdout=False) as writer:
        writer.write(1, {"loss": 0.5})
    (event,) = tmp_path.glob("events.out.tfevents.*")
    event.write_bytes(event.read_bytes()[:-3])
    with pytest.raises(ValueError, match=r"corrupt or truncated|checksum"):
        T.read_tensorboard_scalars(tmp_path)


def test_create_train_state_copies_its_inputs():
    """The step donates the state; the caller's params and key must survive."""
    params = {"w": jnp.ones(3)}
    key = jax.random.PRNGKey(0)
    opt = optax.sgd(0.1)

    def loss(p, batch, k):
        return jnp.mean(batch["x"] @ p["w"]), {}

    step = T.make_train_step(loss, opt, mesh=fj.parallel.make_mesh(), ema_decay=0.5)
    for k in (key, jax.random.key(0)):
        state = step.place_state(T.create_train_state(params, opt, k))
        step(state, {"x": np.ones((4, 3), np.float32)})
    assert not params["w"].is_deleted() and not key.is_deleted()
    np.testing.assert_array_equal(np.asarray(jax.random.key_data(jax.random.key(0))), key)


def test_mesh_shapes_are_checked():
    n = jax.device_count()
    assert dict(fj.parallel.make_mesh().shape) == {"data": n}
    assert dict(fj.parallel.make_mesh({"data": -1, "fsdp": 1}).shape) == {"data": n, "fsdp": 1}
    with pytest.raises(ValueError, match=f"needs {3 * n} devices"):
        fj.parallel.make_mesh({"data": 3 * n})
    with pytest.raises(ValueError, match="at most one"):
        fj.parallel.make_mesh({"data": -1, "fsdp": -1})
    with pytest.raises(ValueError, match="lacks"):
        fj.parallel.batch_sharding(fj.parallel.make_mesh(), ("model",))


def test_loop_reports_an_exhausted_iterator_and_shows_progress(capsys):
    state, step = build()
    with pytest.raises(RuntimeError, match="exhausted at step 3 of 5"):
        T.train_loop(state, step, iter([next(ToyIterator(16))] * 3), num_steps=5)
    state, step = build()
    T.train_loop(state, step, ToyIterator(16), num_steps=4, progress=True)
    assert "4/4" in capsys.readouterr().err
