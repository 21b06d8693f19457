"""Scale-out: multi-process runtime setup, gradient accumulation, remat, mixed precision, fsdp.

The heavy multi-process checks (2 processes x 2 devices against 1 process x 4 devices, checkpoints
across process counts, killing and hanging processes) are in ``test_scaleout_multiprocess.py``
(slow). This module keeps one fast multi-process representative and the single-process checks;
its helpers (:func:`launch`, :class:`Procs`, the child-script header) are shared with that module.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import portpicker
import pytest

import flowjax as fj
from flowjax import losses as L
from flowjax import models as M
from flowjax import parallel
from flowjax import training as T
from tests.conftest import ROOT, run_python

# ---------------------------------------------------------------------------------------------
# launching real processes


def child_env(devices: int) -> dict:
    env = dict(os.environ)
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
        PYTHONUNBUFFERED="1",
    )
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    return env


class Procs:
    """``n`` Python processes running ``script`` as ``script pid n port *args``; killed on exit.

    The script's header (:data:`HEADER`) joins the distributed runtime when ``n > 1``.
    """

    def __init__(self, script: str, n: int, args=(), *, devices: int = 2, env=None):
        self.port = str(portpicker.pick_unused_port())
        self.n = n
        full_env = child_env(devices)
        full_env.update(env or {})
        self.logs = []
        self.procs = []
        for i in range(n):
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", textwrap.dedent(script), str(i), str(n), self.port]
                    + [str(a) for a in args],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=full_env,
                    cwd=str(ROOT),
                )
            )

    def __enter__(self) -> Procs:
        return self

    def wait(self, timeout: float) -> list[tuple[int, str, str]]:
        """(returncode, stdout, stderr) of each process; all are killed if the deadline passes."""
        deadline = time.monotonic() + timeout
        results = []
        for p in self.procs:
            try:
                out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill()
                out, err = p.communicate()
                err += f"\n[test] killed after the {timeout} s deadline"
            results.append((p.returncode, out, err))
        return results

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()

    def __exit__(self, *exc) -> None:
        self.kill()
        for p in self.procs:
            with contextlib.suppress(Exception):
                p.communicate(timeout=30)


def launch(script: str, n: int, args=(), *, devices: int = 2, timeout: float = 300, env=None):
    """Run ``n`` processes to completion; fail with their output unless all exit 0."""
    with Procs(script, n, args, devices=devices, env=env) as procs:
        results = procs.wait(timeout)
    for i, (rc, out, err) in enumerate(results):
        assert rc == 0, f"process {i} of {n} exited {rc}\n--- stdout\n{out}\n--- stderr\n{err}"
    return results


# The first lines of every child script: argv = pid, n, port, *args; the runtime is joined when
# n > 1 (heartbeat HEARTBEAT s, so that a dead peer is detected quickly).
HEARTBEAT = 5
HEADER = f"""
import os, sys, json
pid, nproc, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ARGS = sys.argv[4:]
from flowjax import parallel
from flowjax import training as T
if nproc > 1:
    parallel.initialize_distributed(
        f"localhost:{{port}}", nproc, pid, initialization_timeout=120,
        heartbeat_timeout_seconds={HEARTBEAT},
    )
import jax, numpy as np
import flowjax as fj
from tests.test_scaleout import (
    ProcessPart, fsdp_setup, gather_state, local_ll_reference, toy_setup,
)
"""


# ---------------------------------------------------------------------------------------------
# helpers imported by the child processes


class ProcessPart:
    """This process's rows ``[p L, (p+1) L)`` of each global batch of an iterator (state shared)."""

    def __init__(self, it, pid: int, nproc: int):
        self.it, self.pid, self.nproc = it, pid, nproc

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.it)
        n = next(iter(batch.values())).shape[0] // self.nproc
        return {k: v[self.pid * n : (self.pid + 1) * n] for k, v in batch.items()}

    def get_state(self):
        return self.it.get_state()

    def set_state(self, state):
        self.it.set_state(state)


def toy_setup(mesh, *, total_steps=12, state_sharding=None, grad_accum_steps=1, remat=None):
    """(placed fresh state, step) for the toy MLP of ``tests/test_training.py`` on ``mesh``."""
    from tests.test_training import fm_loss, full_optimizer, init_params

    opt = full_optimizer(total_steps)
    state = T.create_train_state(init_params(0), opt, jax.random.PRNGKey(1))
    if callable(state_sharding):
        state_sharding = state_sharding(state)
    step = T.make_train_step(
        fm_loss,
        opt,
        mesh=mesh,
        ema_decay=0.9,
        ema_warmup=True,
        state_sharding=state_sharding,
        grad_accum_steps=grad_accum_steps,
        remat=remat,
    )
    return step.place_state(jax.device_get(state)), step


def fsdp_setup(mesh, **kw):
    """:func:`toy_setup` with the state split over the mesh's ``fsdp`` axis (small min_size)."""
    return toy_setup(
        mesh, state_sharding=lambda s: parallel.fsdp_sharding(s, mesh, min_size=64), **kw
    )


def gather_state(state):
    """The state's leaves as numpy arrays with their global values."""
    return [np.asarray(x) for x in jax.tree.leaves(parallel.gather(state))]


def local_ll_reference(model, path, x, chunk=None):
    """Log-likelihoods of all of ``x`` on this process's devices only (the 1-process answer).

    ``chunk``: evaluate ``chunk`` rows at a time (each example is its own ODE solve, so the
    values do not depend on the chunking; equal chunks reuse one compiled program).
    """
    from flowjax.likelihood import log_likelihood

    sharding = parallel.batch_sharding(parallel.make_mesh(devices=jax.local_devices()))
    x = np.asarray(x)
    chunk = chunk or x.shape[0]
    lp, steps = [], []
    for i in range(0, x.shape[0], chunk):
        res = log_likelihood(model, path, jax.device_put(x[i : i + chunk], sharding))
        lp.append(np.asarray(res.log_prob))
        steps.append(np.asarray(res.num_steps))
    return np.concatenate(lp), np.concatenate(steps)


def hard_and_easy_points(n: int) -> np.ndarray:
    """``2n`` points: ``n`` far from the 8-Gaussians data (many ODE steps), then ``n`` near it."""
    rng = np.random.default_rng(0)
    far = rng.normal(size=(n, 2)).astype(np.float32) * 0.3 + np.float32(9.0)
    near = fj.oracle.eight_gaussians().means[:n].astype(np.float32)
    return np.concatenate([far, np.asarray(near)], axis=0)


# ---------------------------------------------------------------------------------------------
# runtime setup


def test_importing_flowjax_does_not_start_jax():
    """initialize_distributed must come before any computation; importing flowjax is not one."""
    out = run_python(
        """
        import jax
        from jax._src import xla_bridge
        import flowjax, flowjax.training, flowjax.parallel, flowjax.sampling
        import flowjax.likelihood, flowjax.models, flowjax.losses, flowjax.data
        print("backends started:", xla_bridge.backends_are_initialized())
        """
    )
    assert "backends started: False" in out, out


def test_initialize_distributed_arguments_and_environment(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    parallel.initialize_distributed("host:1234", cpu_collectives=None, heartbeat_timeout_seconds=7)
    assert calls[-1]["coordinator_address"] == "host:1234"
    assert calls[-1]["num_processes"] == 4 and calls[-1]["process_id"] == 3
    assert calls[-1]["heartbeat_timeout_seconds"] == 7
    assert "shutdown_timeout_seconds" not in calls[-1]  # JAX's default unless given
    # arguments win over the environment
    parallel.initialize_distributed("h:1", 2, 0, cpu_collectives=None)
    assert calls[-1]["num_processes"] == 2 and calls[-1]["process_id"] == 0
    # nothing given: JAX's cluster auto-detection gets None
    monkeypatch.delenv("JAX_NUM_PROCESSES")
    monkeypatch.delenv("JAX_PROCESS_ID")
    parallel.initialize_distributed(cpu_collectives=None)
    assert calls[-1]["num_processes"] is None and calls[-1]["process_id"] is None
    assert calls[-1]["coordinator_address"] is None
    monkeypatch.setenv("JAX_PROCESS_ID", "one")
    with pytest.raises(ValueError, match="JAX_PROCESS_ID='one' must be an integer"):
        parallel.initialize_distributed(cpu_collectives=None)


def test_distributed_failure_error_message():
    err = T.DistributedFailureError(
        7, 6, "/ck", jax.errors.JaxRuntimeError("Gloo all-reduce failed")
    )
    msg = str(err)
    assert "after step 7" in msg and "checkpoint step 6 in /ck" in msg, msg
    assert "another process has probably died or hung" in msg and "Gloo" in msg, msg
    assert err.step == 7 and err.last_checkpoint == 6
    assert "begins from step 0" in str(T.DistributedFailureError(3, None, None, ValueError("x")))


# ---------------------------------------------------------------------------------------------
# gradient accumulation


def _given_noise_loss(params, batch, key):
    """Flow matching with the noise and times given in the batch: no randomness from ``key``."""
    from tests.test_training import MODEL, PATH

    del key
    x1, eps, t = batch["x"], batch["eps"], batch["t"]
    xt = PATH.interpolate(x1, eps, t)
    pred = MODEL.apply({"params": params}, xt, t)
    err = jnp.mean((pred - PATH.conditional_target("velocity", x1, eps, t)) ** 2)
    return err, {"t_mean": jnp.mean(t), "x_abs": jnp.mean(jnp.abs(x1))}


def _given_noise_batches(n_batches: int, size: int):
    rng = np.random.default_rng(0)
    mix = fj.oracle.eight_gaussians()
    for i in range(n_batches):
        yield {
            "x": np.asarray(mix.sample(jax.random.PRNGKey(i), size), np.float32),
            "eps": rng.normal(size=(size, 2)).astype(np.float32),
            "t": rng.uniform(size=(size,)).astype(np.float32),
        }


def test_gradient_accumulation_equals_the_large_batch_step():
    from tests.test_training import full_optimizer, init_params

    opt = full_optimizer(12)
    mesh = parallel.make_mesh()
    runs = {}
    for k in (1, 4):
        step = T.make_train_step(_given_noise_loss, opt, mesh=mesh, grad_accum_steps=k)
        state = step.place_state(T.create_train_state(init_params(0), opt, jax.random.PRNGKey(1)))
        metrics = []
        for batch in _given_noise_batches(3, 32):
            state, m = step(state, batch)
            metrics.append(jax.device_get(m))
        runs[k] = (jax.device_get(state), metrics)
    ref_state, ref_metrics = runs[1]
    for k in (4,):
        state, metrics = runs[k]
        chex.assert_trees_all_close(state, ref_state, rtol=1e-5, atol=1e-7)
        # loss, grad_norm and aux means equal the large batch's (the same keys in each record)
        chex.assert_trees_all_close(metrics, ref_metrics, rtol=1e-5)
    with pytest.raises(ValueError, match="multiple of 8"):
        T.make_train_step(_given_noise_loss, opt, mesh=mesh, grad_accum_steps=8)(
            runs[1][0], next(_given_noise_batches(1, 12))
        )
    with pytest.raises(ValueError, match="grad_accum_steps must be >= 1"):
        T.make_train_step(_given_noise_loss, opt, mesh=mesh, grad_accum_steps=0)


def test_accumulated_micro_batches_draw_their_own_keys():
    """Micro-batch j = rows j, j+k, ... with key fold_in(step_key, j): checked by hand."""
    from tests.test_training import fm_loss, init_params

    params = init_params(0)
    batch = {"x": np.asarray(next(_given_noise_batches(1, 16))["x"])}
    key = jax.random.PRNGKey(5)
    (loss, aux), grads = jax.jit(lambda p, b, k: T.accumulate_value_and_grad(fm_loss, p, b, k, 4))(
        params, batch, key
    )
    manual_loss, manual_grads, manual_t = 0.0, None, 0.0
    for j in range(4):
        mb = {"x": batch["x"][j::4]}
        (lj, auxj), gj = jax.value_and_grad(fm_loss, has_aux=True)(
            params, mb, jax.random.fold_in(key, j)
        )
        manual_loss += float(lj) / 4
        manual_t += float(auxj["t_mean"]) / 4
        manual_grads = gj if manual_grads is None else jax.tree.map(jnp.add, manual_grads, gj)
    np.testing.assert_allclose(float(loss), manual_loss, rtol=1e-6)
    np.testing.assert_allclose(float(aux["t_mean"]), manual_t, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(manual_grads), strict=True):
        np.testing.assert_allclose(a, b / 4, rtol=1e-5, atol=1e-6)
    # with key-drawn noise the accumulated step is a different draw from the large-batch step
    (loss1, _), _ = jax.value_and_grad(fm_loss, has_aux=True)(params, batch, key)
    assert abs(float(loss1) - float(loss)) > 1e-6


# ---------------------------------------------------------------------------------------------
# rematerialisation


class _Block(nn.Module):
    width: int

    @nn.compact
    def __call__(self, h, *, train: bool):
        y = nn.silu(nn.LayerNorm()(h))
        y = nn.Dense(self.width)(y)
        y = nn.Dropout(0.2, deterministic=not train)(nn.silu(y))
        return h + nn.Dense(self.width)(y)


class _BlockNet(nn.Module):
    """A residual MLP of ``_Block``s with dropout inside the blocks."""

    @nn.compact
    def __call__(self, x, t, *, train: bool = True):
        h = nn.Dense(32)(jnp.concatenate([x, t[:, None]], axis=-1))
        for _ in range(3):
            h = _Block(32)(h, train=train)
        return nn.Dense(x.shape[-1])(h)


def _blocknet_loss(params, batch, key):
    x1 = batch["x"]
    k_eps, k_t, k_drop = jax.random.split(key, 3)
    eps = jax.random.normal(k_eps, x1.shape, x1.dtype)
    t = jax.random.uniform(k_t, (x1.shape[0],), x1.dtype)
    path = fj.CondOT()
    xt = path.interpolate(x1, eps, t)
    pred = _BlockNet().apply({"params": params}, xt, t, train=True, rngs={"dropout": k_drop})
    target = path.conditional_target("velocity", x1, eps, t)
    return jnp.mean((pred - target) ** 2), {}


def test_remat_gives_identical_gradients():
    x = np.asarray(fj.oracle.eight_gaussians().sample(jax.random.PRNGKey(0), 64), np.float32)
    params = _BlockNet().init(
        jax.random.PRNGKey(1), jnp.zeros((1, 2)), jnp.zeros((1,)), train=False
    )["params"]
    key = jax.random.PRNGKey(2)

    def grads(policy):
        loss = T.remat_loss(_blocknet_loss, policy, block_types=(_Block,))
        fn = jax.value_and_grad(lambda p: loss(p, {"x": x}, key)[0])
        jaxpr = str(jax.make_jaxpr(fn)(params))
        return jax.jit(fn)(params), jaxpr.count("checkpoint[") + jaxpr.count("remat")

    (ref_loss, ref), n0 = grads("none")
    assert n0 == 0
    for policy in ("blocks", "dots", "blocks_dots"):
        (loss, g), n_remat = grads(policy)
        # blocks: one checkpoint per _Block call; dots: one around the whole loss
        assert n_remat == (1 if policy == "dots" else 3), (policy, n_remat)
        assert float(loss) == float(ref_loss), policy
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref), strict=True):
            # the same operations in the same order: equal (dropout redraws the same mask)
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9, err_msg=policy)
    with pytest.raises(ValueError, match="valid choices are: none, blocks, dots"):
        T.remat_loss(_blocknet_loss, "everything")
    with pytest.raises(TypeError, match="Flax Module classes"):
        T.remat_loss(_blocknet_loss, "blocks", block_types=(int,))


def test_train_step_with_remat_and_accumulation_matches_the_plain_step():
    params = _BlockNet().init(
        jax.random.PRNGKey(1), jnp.zeros((1, 2)), jnp.zeros((1,)), train=False
    )["params"]
    opt = T.make_optimizer("adam", 1e-3)

    def loss(p, batch, key):  # randomness from the batch only (train=False: no dropout)
        del key
        path = fj.CondOT()
        xt = path.interpolate(batch["x"], batch["eps"], batch["t"])
        pred = _BlockNet().apply({"params": p}, xt, batch["t"], train=False)
        target = path.conditional_target("velocity", batch["x"], batch["eps"], batch["t"])
        return jnp.mean((pred - target) ** 2), {}

    batches = list(_given_noise_batches(2, 32))
    variants = {
        "plain": (loss, {}),
        "dots_accum4": (loss, {"remat": "dots", "grad_accum_steps": 4}),
        "blocks_accum2": (
            T.remat_loss(loss, "blocks", block_types=(_Block,)),
            {"grad_accum_steps": 2},
        ),
    }
    finals = {}
    for name, (loss_fn, kw) in variants.items():
        step = T.make_train_step(loss_fn, opt, mesh=parallel.make_mesh(), ema_decay=None, **kw)
        state = step.place_state(
            T.create_train_state(params, opt, jax.random.PRNGKey(0), ema=False)
        )
        for b in batches:
            state, _ = step(state, b)
        finals[name] = jax.device_get(state.params)
    for name in ("dots_accum4", "blocks_accum2"):
        for a, b in zip(
            jax.tree.leaves(finals[name]), jax.tree.leaves(finals["plain"]), strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=name)


def test_unet_blocks_are_rematerialised_by_default():
    """The default block types are the U-Net's ResBlock and AttentionBlock (traced, not run)."""
    model = M.UNet(channels=8, channel_mults=(1, 2), num_res_blocks=1, num_groups=4, head_dim=8)
    x = jnp.zeros((2, 8, 8, 1))
    params = jax.eval_shape(lambda k: M.init(model, k, x[:1]), jax.random.PRNGKey(0))

    def loss(p, batch, key):
        t = jnp.full((batch["x"].shape[0],), 0.5)
        return jnp.mean(M.apply(model, p, batch["x"], t) ** 2), {}

    jaxpr = str(
        jax.make_jaxpr(jax.grad(lambda p: T.remat_loss(loss, "blocks")(p, {"x": x}, None)[0]))(
            params
        )
    )
    n = jaxpr.count("checkpoint[") + jaxpr.count("remat")
    blocks = [k for k in params if k.startswith(("ResBlock_", "AttentionBlock_"))]
    assert n == len(blocks) > 5, (n, blocks)


# ---------------------------------------------------------------------------------------------
# mixed precision


def test_with_precision_and_param_dtype_check():
    m32 = M.MLP(hidden=(16,))
    m16 = T.with_precision(m32, "bfloat16")
    assert m16.dtype == jnp.bfloat16 and m16.param_dtype == jnp.float32 and m32.dtype is None
    assert T.with_precision(m16, "float32").dtype is None
    p32 = M.init(m32, jax.random.PRNGKey(0), jnp.zeros((1, 2)))
    p16 = M.init(m16, jax.random.PRNGKey(0), jnp.zeros((1, 2)))
    # one parameter tree serves both precisions (and one checkpoint)
    assert T.state_layout(p16) == T.state_layout(p32)
    T.check_param_dtype(p16)
    bad = jax.tree.map(lambda a: a.astype(jnp.bfloat16), p32)
    with pytest.raises(TypeError, match="must be float32 for mixed-precision"):
        T.check_param_dtype(bad)
    with pytest.raises(ValueError, match="valid choices are: float32, bfloat16"):
        T.with_precision(m32, "float16")
    with pytest.raises(TypeError, match="no dtype / param_dtype"):
        T.with_precision(_BlockNet(), "bfloat16")


BF16_STEPS = 300
BF16_WINDOW = 50


def test_bfloat16_training_tracks_float32():
    """bf16 computation, f32 parameters: the loss curve follows the float32 run.

    Tolerances, and why: bfloat16 keeps 8 significant bits (unit roundoff 2^-9 = 0.2%); the MLP's
    prediction in bf16 differs from float32 by about 0.7% (relative L2, measured), and the loss,
    a mean of squared errors over 256 examples with the same data, noise and times in both runs,
    averages these rounding errors: measured per-step differences were 2e-4 (median) to 1.4e-3
    (max), 50-step window means within 7e-5, parameters after 400 steps within 0.35% (relative
    L2). The test allows 2% per step, 0.5% per window (about 10x the largest measured values)
    and 3% on the final parameters, and asserts that the parameters and Adam's moments stay
    float32.
    """
    path = fj.CondOT()
    m32 = M.MLP(hidden=(64, 64, 64))
    m16 = T.with_precision(m32, "bfloat16")
    params = M.init(m32, jax.random.PRNGKey(0), jnp.zeros((1, 2)))
    mix = fj.oracle.eight_gaussians()
    xs = np.asarray(
        jax.jit(lambda k: mix.sample(k, BF16_STEPS * 256))(jax.random.PRNGKey(3))
    ).reshape(BF16_STEPS, 256, 2)
    opt = T.make_optimizer("adam", 2e-3)
    out = {}
    for name, model in (("f32", m32), ("bf16", m16)):
        base = L.make_loss(M.make_apply_fn(model), path)

        def loss(p, b, k, base=base):
            value, aux = base(p, b, k)
            return value, {"mse": aux["mse"]}

        step = T.make_train_step(loss, opt, mesh=parallel.make_mesh(), ema_decay=None)
        state = step.place_state(
            T.create_train_state(params, opt, jax.random.PRNGKey(1), ema=False)
        )
        losses = []
        for i in range(BF16_STEPS):
            state, m = step(state, {"x": xs[i]})
            losses.append(m["loss"])
        out[name] = (np.asarray(jax.device_get(losses)), jax.device_get(state))
    a, b = out["f32"][0], out["bf16"][0]
    T.check_param_dtype(out["bf16"][1].params)
    T.check_param_dtype(out["bf16"][1].opt_state, name="opt_state")
    assert np.max(np.abs(a - b) / a) < 0.02
    wa, wb = a.reshape(-1, BF16_WINDOW).mean(1), b.reshape(-1, BF16_WINDOW).mean(1)
    assert np.max(np.abs(wa - wb) / wa) < 0.005, (wa, wb)
    assert wb[-1] < 0.9 * wb[0]  # it trains
    pa, pb = out["f32"][1].params, out["bf16"][1].params
    num = sum(
        float(np.sum((x - y) ** 2))
        for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True)
    )
    den = sum(float(np.sum(x**2)) for x in jax.tree.leaves(pa))
    assert np.sqrt(num / den) < 0.03


# ---------------------------------------------------------------------------------------------
# fsdp


def test_fsdp_spec_rule():
    assert parallel.fsdp_spec((512, 512), 4, min_size=1000) == jax.sharding.PartitionSpec(
        None, "fsdp"
    )
    assert parallel.fsdp_spec((1024, 512), 4, min_size=1000) == jax.sharding.PartitionSpec(
        "fsdp", None
    )
    assert parallel.fsdp_spec((3, 3, 64, 128), 4, min_size=1000) == jax.sharding.PartitionSpec(
        None, None, None, "fsdp"
    )
    assert parallel.fsdp_spec((512,), 4, min_size=1000) == jax.sharding.PartitionSpec()  # small
    assert (
        parallel.fsdp_spec((999, 1001), 4, min_size=10) == jax.sharding.PartitionSpec()
    )  # indivisible
    assert parallel.fsdp_spec((512, 512), 1, min_size=10) == jax.sharding.PartitionSpec()
    with pytest.raises(ValueError, match="has no 'fsdp' axis"):
        parallel.fsdp_sharding({"w": jnp.zeros((4, 4))}, parallel.make_mesh())


def test_fsdp_and_accumulation_on_four_devices_match_replicated_training(tmp_path):
    """fsdp (data 2 x fsdp 2) = replicated (data 4); checkpoints move between the two layouts."""
    out = run_python(
        f"""
        import jax, numpy as np
        from flowjax import parallel
        from flowjax import training as T
        from tests.test_training import ToyIterator
        from tests.test_scaleout import fsdp_setup, toy_setup, gather_state

        rep_mesh = parallel.make_mesh({{"data": 4}})
        fsdp_mesh = parallel.make_mesh({{"data": 2, "fsdp": 2}})
        runs = {{}}
        for name, (setup, mesh, kw) in {{
            "replicated": (toy_setup, rep_mesh, {{}}),
            "fsdp": (fsdp_setup, fsdp_mesh, {{}}),
            "accum": (toy_setup, rep_mesh, {{"grad_accum_steps": 2}}),
        }}.items():
            state, step = setup(mesh, **kw)
            if name == "fsdp":
                frac = parallel.sharded_fraction(state)
                kernel = state.params["Dense_1"]["kernel"]
                mu = state.opt_state[1].inner_state[0].mu["Dense_1"]["kernel"]
                assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp"), kernel.sharding
                assert mu.sharding == kernel.sharding and state.ema_params["Dense_1"]["kernel"].sharding == kernel.sharding
                assert [s.data.shape for s in kernel.addressable_shards] == [(32, 16)] * 4
                assert state.step.sharding.is_fully_replicated
                print("sharded fraction", frac)
            res = T.train_loop(state, step, ToyIterator(16), num_steps=4, log_every=1)
            if name == "fsdp":
                assert not res.state.params["Dense_1"]["kernel"].sharding.is_fully_replicated
                with T.Checkpointer({str(tmp_path / "fsdp")!r}) as ck:
                    ck.save(res.state)
            runs[name] = (gather_state(res.state), [h["loss"] for h in res.history])
        # accumulation draws other noise per micro-batch than the large batch, so its reference
        # is the same accumulation on one device (micro-batch j keyed fold_in(step key, j))
        one_state, one_step = toy_setup(
            parallel.make_mesh(devices=jax.devices()[:1]), grad_accum_steps=2
        )
        one = T.train_loop(one_state, one_step, ToyIterator(16), num_steps=4, log_every=1)
        runs["accum_one_device"] = (gather_state(one.state), [h["loss"] for h in one.history])
        for name, ref_name in (("fsdp", "replicated"), ("accum", "accum_one_device")):
            ref = runs[ref_name]
            for a, b in zip(runs[name][0], ref[0], strict=True):
                np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7, err_msg=name)
            np.testing.assert_allclose(runs[name][1], ref[1], rtol=2e-5)
        # and it is not the large-batch run: the comparison above can tell draws apart
        assert not np.allclose(runs["accum"][1], runs["replicated"][1], rtol=1e-4)
        # the fsdp checkpoint restores replicated, and back into fsdp
        rep_state, _ = toy_setup(rep_mesh)
        with T.Checkpointer({str(tmp_path / "fsdp")!r}) as ck:
            r = ck.restore(T.abstract_state(rep_state))
            assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(r.state))
            f_state, _ = fsdp_setup(fsdp_mesh)
            r2 = ck.restore(T.abstract_state(f_state))
            assert not r2.state.params["Dense_1"]["kernel"].sharding.is_fully_replicated
        for a, b, c in zip(gather_state(r.state), gather_state(r2.state), runs["fsdp"][0]):
            assert np.array_equal(a, c) and np.array_equal(b, c)
        print("OK")
        """,
        devices=4,
    )
    assert "OK" in out, out
    frac = float(out.split("sharded fraction")[1].split()[0])
    assert 0.5 < frac < 1.0, frac  # the kernels are split, biases and scalars are not


# ---------------------------------------------------------------------------------------------
# checkpoints across process counts (single-process simulation of the data files)


def _rewrite_json(path, edit):
    """Apply ``edit`` to a checkpoint JSON file and re-seal it with its own CRC (``crc32`` key)."""
    from flowjax.training._checksum import json_crc32

    content = json.loads(path.read_text())
    body = edit({k: v for k, v in content.items() if k != "crc32"})
    path.write_text(json.dumps({**body, "crc32": json_crc32(body)}))


def _set_data_state(step_dir, index, state):
    """Process ``index``'s data file and its checksum entry, as that process would write them."""
    from flowjax.training._checksum import json_crc32

    (step_dir / "data" / f"process_{index}.json").write_text(json.dumps({"state": state}))
    sums = step_dir / "checksums" / f"process_{index}.json"
    if not sums.exists():
        sums.write_text((step_dir / "checksums" / "process_0.json").read_text())
    _rewrite_json(sums, lambda b: {**b, "data": json_crc32(state)})


def test_data_state_restores_under_another_process_count(tmp_path, monkeypatch):
    from tests.test_training import build

    state, _ = build()
    pos = {"version": 1, "epoch": 0, "batch_in_epoch": 3}
    with T.Checkpointer(tmp_path / "ck", async_save=False) as ck:
        ck.save(state, data_state=pos)
    step_dir = tmp_path / "ck" / "0"
    # as if written by 3 processes, each recording the same (replicated) array checksums and its
    # own data state; read back by process 3 of a larger run, which has no file of its own
    _rewrite_json(step_dir / "meta" / "metadata", lambda b: {**b, "process_count": 3})
    for index in (1, 2):
        _set_data_state(step_dir, index, pos)
    with T.Checkpointer(tmp_path / "ck") as ck:
        sums = ck._read_checksums(0, ck._read_meta(0))
        monkeypatch.setattr(jax, "process_index", lambda: 3)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert ck._restore_data(0, sums) == pos
        monkeypatch.undo()
        # processes that disagree: no state, with a warning saying why
        _set_data_state(step_dir, 2, {**pos, "batch_in_epoch": 4})
        sums = ck._read_checksums(0, ck._read_meta(0))
        monkeypatch.setattr(jax, "process_index", lambda: 3)
        with pytest.warns(UserWarning, match="states differ"):
            assert ck._restore_data(0, sums) is None
        monkeypatch.undo()
        # the whole restore (process 0) verifies all three processes' files
        assert ck.restore(T.abstract_state(state)).data_state == pos


# ---------------------------------------------------------------------------------------------
# one fast multi-process representative


FAST = (
    HEADER
    + """
from tests.test_training import ToyIterator
from flowjax.sampling import sample as local_sample

directory = ARGS[0]
assert jax.process_count() == 2 and jax.device_count() == 4 and jax.local_device_count() == 2

# training: one mesh over both processes' devices, each process feeding its half of the batch
state, step = toy_setup(parallel.make_mesh())
with T.Checkpointer(directory, max_to_keep=2) as ck:
    res = T.train_loop(
        state, step, ProcessPart(ToyIterator(16), pid, 2), num_steps=4, checkpointer=ck,
        checkpoint_every=2, log_every=1,
    )
    assert ck.all_steps() == [2, 4], ck.all_steps()
    restored = ck.restore(T.abstract_state(res.state))
glob = gather_state(res.state)
assert all(np.array_equal(a, b) for a, b in zip(gather_state(restored.state), glob))
assert restored.data_state == {"seed": 0, "index": 4}
# the reference: this process alone (its 2 devices) on the whole global batch
lstate, lstep = toy_setup(parallel.make_mesh(devices=jax.local_devices()))
lres = T.train_loop(lstate, lstep, ToyIterator(16), num_steps=4, log_every=1)
for a, b in zip(glob, gather_state(lres.state), strict=True):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)
np.testing.assert_allclose(
    [h["loss"] for h in res.history], [h["loss"] for h in lres.history], rtol=2e-5
)

# sampling over all 4 devices of both processes = sampling on this process's devices
path = fj.CondOT()
oracle = fj.oracle.eight_gaussians().model_fn(path)
key = jax.random.PRNGKey(7)
glob_s = parallel.sample_sharded(oracle, path, key, (16, 2), num_steps=16)
assert glob_s.samples.sharding.spec[0] in ("data", ("data",)), glob_s.samples.sharding
assert parallel.local_rows(glob_s.samples).shape == (8, 2)
ref_s = local_sample(
    oracle, path, key, (16, 2), num_steps=16,
    sharding=parallel.batch_sharding(parallel.make_mesh(devices=jax.local_devices())),
)
np.testing.assert_allclose(parallel.gather(glob_s.samples), np.asarray(ref_s.samples), rtol=1e-6, atol=1e-6)
np.testing.assert_array_equal(parallel.local_rows(glob_s.samples), parallel.gather(glob_s.samples)[8 * pid : 8 * pid + 8])

# likelihood: process 0 holds points far from the data (many adaptive steps), process 1 near ones
from tests.test_scaleout import hard_and_easy_points
pts = hard_and_easy_points(4)
ll = parallel.log_likelihood_sharded(oracle, path, pts[4 * pid : 4 * pid + 4])
ref_lp, ref_steps = local_ll_reference(oracle, path, pts, chunk=4)
np.testing.assert_allclose(ll.log_prob, ref_lp, rtol=1e-5, atol=1e-5)
np.testing.assert_array_equal(ll.num_steps, ref_steps)
print("STEPS", pid, json.dumps(np.asarray(ll.num_steps).tolist()), flush=True)
print("OK", pid, flush=True)
"""
)


@pytest.mark.slow  # 30 s; the fast suite's multi-process coverage is test_training_distributed
@pytest.mark.multiprocess
def test_two_processes_train_sample_and_evaluate_like_one(tmp_path):
    """2 processes x 2 devices: training, checkpoints, sampling and likelihood (fast version)."""
    results = launch(FAST, 2, [tmp_path / "ck"], devices=2, timeout=240)
    outs = [out for _, out, _ in results]
    assert all(f"OK {i}" in outs[i] for i in range(2)), outs
    steps = json.loads(outs[0].split("STEPS 0 ")[1].splitlines()[0])
    # the two processes' shards needed different numbers of adaptive steps, and nothing hung
    assert set(steps[:4]).isdisjoint(steps[4:]), steps
    assert sorted(int(p.name) for p in Path(tmp_path / "ck").iterdir() if p.name.isdigit()) == [
        2,
        4,
    ]
