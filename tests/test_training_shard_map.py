"""``make_train_step(parallelism="shard_map")`` against the jit step, on 1-8 devices and 2 processes.

The reference is the jit step on one device. The loss draws its noise and times from per-example
keys (``example_keys=True``), so its random numbers are a function of the global example index:
every configuration (device count, fsdp, gradient accumulation, jit or shard_map) must then give
the reference's trajectory up to float32 summation order. Tolerance: 20 AdamW steps (clipped,
lr 3e-3) change each parameter by at most ~0.06; a relative gradient error of a few float32 ulps
per step moves a parameter by <= 20 * lr * 1e-6 ~ 1e-7, so parameters must agree within 1e-6
relative (atol 1e-7 for entries near zero), and per-step metrics within 1e-6 relative.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import parallel
from flowjax import training as T
from tests.conftest import run_python
from tests.test_scaleout import HEADER, launch

pytestmark = pytest.mark.multiprocess

STEPS = 20
BATCH = 16


# ---------------------------------------------------------------------------------------------
# helpers shared with the subprocesses


def make_keyed_loss(apply):
    """Conditional flow matching whose noise and times come from the per-example keys.

    ``apply(params, x, t)`` is the velocity model. With a ``"mask"`` in the batch the loss is the
    mean over the true rows. ``key`` is unused: the models here have no dropout.
    """
    from tests.test_training import PATH

    def loss(params, batch, key):
        del key
        x1 = batch["x"]

        def draw(k):
            k_eps, k_t = jax.random.split(k)
            eps = jax.random.normal(k_eps, x1.shape[1:], x1.dtype)
            return eps, jax.random.uniform(k_t, (), x1.dtype)

        eps, t = jax.vmap(draw)(batch[T.EXAMPLE_KEY])
        pred = apply(params, PATH.interpolate(x1, eps, t), t).astype(x1.dtype)
        err = jnp.mean((pred - PATH.conditional_target("velocity", x1, eps, t)) ** 2, axis=-1)
        weight = batch["mask"].astype(err.dtype) if "mask" in batch else jnp.ones_like(err)
        total = jnp.maximum(jnp.sum(weight), 1.0)
        mean = lambda v: jnp.sum(weight * v) / total  # noqa: E731
        return mean(err), {"t_mean": mean(t), "eps_mean": mean(jnp.mean(eps, axis=-1))}

    return loss


def _toy_apply(params, x, t):
    from tests.test_training import MODEL

    return MODEL.apply({"params": params}, x, t)


keyed_loss = make_keyed_loss(_toy_apply)


def bf16_setup():
    """(loss, initial params) of flowjax's MLP computing in bfloat16 with float32 parameters."""
    from flowjax import models as M

    model = T.with_precision(M.MLP(hidden=(32, 32)), "bfloat16")
    apply_fn = M.make_apply_fn(model)
    params = M.init(model, jax.random.PRNGKey(0), jnp.zeros((1, 2)))
    return make_keyed_loss(lambda p, x, t: apply_fn(p, x, t, None, train=True)), params


def run(
    mesh,
    parallelism,
    *,
    accum=1,
    fsdp=False,
    steps=STEPS,
    masked=False,
    pid=0,
    nproc=1,
    loss=keyed_loss,
    params=None,
    remat=None,
):
    """(final state with numpy leaves, per-step metrics) of ``steps`` steps of the toy problem."""
    from tests.test_scaleout import ProcessPart
    from tests.test_training import ToyIterator, full_optimizer, init_params

    opt = full_optimizer(steps)
    params = init_params(0) if params is None else params
    state = T.create_train_state(params, opt, jax.random.PRNGKey(1))
    sharding = parallel.fsdp_sharding(state, mesh, min_size=64) if fsdp else None
    step = T.make_train_step(
        loss,
        opt,
        mesh=mesh,
        ema_decay=0.9,
        state_sharding=sharding,
        grad_accum_steps=accum,
        remat=remat,
        parallelism=parallelism,
        example_keys=True,
    )
    state = step.place_state(jax.device_get(state))
    if fsdp:
        assert 0 < parallel.sharded_fraction(state) < 1
    it = ProcessPart(ToyIterator(BATCH), pid, nproc)
    history = []
    for i in range(steps):
        batch = next(it)
        if masked:  # the last 5-7 rows of the global batch are padding
            rows = np.arange(BATCH).reshape(nproc, -1)[pid]
            batch = {**batch, "mask": rows < BATCH - 5 - i % 3}
        state, metrics = step(state, batch)
        history.append(jax.device_get(metrics))
    return jax.tree.map(np.asarray, parallel.gather(state)), history


def assert_same_run(got, ref, what):
    """Parameters (and all state) within 1e-6 relative; every metric of every step too."""
    (state, history), (ref_state, ref_history) = got, ref
    chex.assert_trees_all_close(state, ref_state, rtol=1e-6, atol=1e-7, custom_message=what)
    chex.assert_trees_all_close(history, ref_history, rtol=1e-6, atol=1e-7, custom_message=what)


# ---------------------------------------------------------------------------------------------
# simulated devices

MATRIX = """
import jax, numpy as np, optax
from flowjax import parallel
from flowjax import training as T
from tests.test_training import init_params
from tests.test_training_shard_map import assert_same_run, keyed_loss, run

CONFIGS = {CONFIGS}
one = parallel.make_mesh(devices=jax.devices()[:1])
ref = {{m: run(one, "jit", masked=m) for m in sorted({{c[3] for c in CONFIGS}})}}
for n, fsdp, accum, masked in CONFIGS:
    shape = {{"data": n // 2, "fsdp": 2}} if fsdp else {{"data": n}}
    mesh = parallel.make_mesh(shape, devices=jax.devices()[:n])
    what = f"{{shape}} fsdp={{fsdp}} accum={{accum}} masked={{masked}}"
    got = run(mesh, "shard_map", accum=accum, fsdp=fsdp, masked=masked)
    assert_same_run(got, ref[masked], "shard_map " + what + " vs jit on 1 device")
    print("OK", what, flush=True)

# bad input: the global batch does not split over the data devices (or into micro-batches)
mesh = parallel.make_mesh({{"data": 4}}, devices=jax.devices()[:4])
state = T.create_train_state(init_params(0), optax.sgd(0.1), jax.random.PRNGKey(1))
for accum, size in ((1, 6), (2, 12)):
    step = T.make_train_step(
        keyed_loss, optax.sgd(0.1), mesh=mesh, ema_decay=None,
        grad_accum_steps=accum, parallelism="shard_map", example_keys=True,
    )
    try:
        step(step.place_state(state), {{"x": np.zeros((size, 2), np.float32)}})
    except ValueError as err:
        print("ERROR", err)
"""


def _check_matrix(configs, devices):
    out = run_python(MATRIX.format(CONFIGS=configs), devices=devices)
    assert out.count("OK") == len(configs), out
    errors = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 2, out
    assert "global batch size 6" in errors[0] and "batch axes, 4" in errors[0], errors[0]
    assert "global batch of 12" in errors[1] and "multiple of 8" in errors[1], errors[1]


def test_shard_map_step_equals_the_jit_step_on_four_devices():
    """Representative (fast): data 2 x fsdp 2 with accumulation = jit on one device; bad input."""
    _check_matrix([(4, True, 2, False)], devices=4)


@pytest.mark.slow
def test_shard_map_step_equals_the_jit_step_on_1_2_4_8_devices():
    configs = [(n, False, accum, False) for n in (1, 2, 4, 8) for accum in (1, 2)]
    configs += [(4, True, 1, False), (8, True, 1, False), (8, True, 2, False)]  # fsdp
    configs += [(4, False, 1, True), (8, True, 2, True)]  # padded batches (a device of padding)
    _check_matrix(configs, devices=8)


def test_shard_map_needs_the_data_axis():
    import optax

    mesh = parallel.make_mesh({"fsdp": -1})
    with pytest.raises(ValueError, match=r"'data' axis.*\('fsdp',\).*\{'fsdp': 1\}"):
        T.make_train_step(keyed_loss, optax.sgd(0.1), mesh=mesh, parallelism="shard_map")
    data_mesh = parallel.make_mesh({"data": -1, "fsdp": 1})
    with pytest.raises(ValueError, match=r"batch axes \('fsdp',\)"):
        T.make_train_step(
            keyed_loss,
            optax.sgd(0.1),
            mesh=data_mesh,
            batch_axes=("fsdp",),
            parallelism="shard_map",
        )
    with pytest.raises(
        ValueError, match="unknown parallelism 'pmap'; valid choices are: jit, shard_map"
    ):
        T.make_train_step(keyed_loss, optax.sgd(0.1), mesh=data_mesh, parallelism="pmap")


class AccumulationWeightsTest(chex.TestCase):
    """Micro-batches of a padded batch count by their true rows, not equally."""

    @chex.variants(with_jit=True)
    def test_accumulation_weights_micro_batches_by_their_true_rows(self):
        from tests.test_training import init_params

        params = init_params(0)
        x = np.asarray(np.random.default_rng(0).normal(size=(16, 2)), np.float32)
        # micro-batch j = rows j, j+4, ...: true rows 4, 3, 1 and 0 (an all-padding micro-batch)
        mask = np.ones(16, bool)
        mask[[1 + 4 * 3, 2 + 4 * 1, 2 + 4 * 2, 2 + 4 * 3, 3, 3 + 4, 3 + 8, 3 + 12]] = False
        batch = {
            "x": x,
            "mask": mask,
            T.EXAMPLE_KEY: parallel.example_keys(jax.random.PRNGKey(3), np.arange(16)),
        }
        accumulate = self.variant(
            lambda p, b: T.accumulate_value_and_grad(keyed_loss, p, b, jax.random.PRNGKey(0), 4)
        )
        (loss, aux), grads = accumulate(params, batch)
        # the masked mean over the whole batch, in one pass (per-example keys: the same draws)
        (ref_loss, ref_aux), ref_grads = jax.jit(jax.value_and_grad(keyed_loss, has_aux=True))(
            params, batch, jax.random.PRNGKey(0)
        )
        # summation order only: terms of size <= 0.05 in float32 leave ~1e-8 absolute
        chex.assert_trees_all_close(
            (loss, aux, grads), (ref_loss, ref_aux, ref_grads), rtol=1e-5, atol=1e-8
        )
        chex.assert_tree_all_finite(grads)


@pytest.mark.slow
def test_shard_map_step_with_remat_and_bfloat16():
    """bfloat16 computation and remat under shard_map = the jit step, within bfloat16 rounding.

    Both steps compute the same bfloat16-rounded per-example terms; they differ in how the
    per-device partial gradients are summed: the jit step may round them to bfloat16 before the
    cross-device sum, shard_map sums them in float32. So a gradient (and the loss) differ by at
    most two bfloat16 roundings, 2^-7 relative: per-step loss and gradient norm within 2^-7.
    Adam's normalised update m / sqrt(v) then differs by about the same relative amount each
    step, so each parameter array stays within 2^-7 of the distance it travelled (L2 norms).
    """
    out = run_python(
        """
        import chex, jax, numpy as np
        from flowjax import parallel
        from tests.test_training_shard_map import bf16_setup, run

        loss, params = bf16_setup()
        mesh = parallel.make_mesh({"data": 4})
        runs = {
            p: run(mesh, p, loss=loss, params=params, remat="dots") for p in ("jit", "shard_map")
        }
        (state, history), (ref, ref_history) = runs["shard_map"], runs["jit"]
        for p, q, p0 in zip(*(jax.tree.leaves(t) for t in (state.params, ref.params, params))):
            gap, travel = np.linalg.norm(p - q), np.linalg.norm(q - np.asarray(p0))
            assert gap <= 2**-7 * travel, (p.shape, gap, travel)
        for m, r in zip(history, ref_history, strict=True):
            chex.assert_trees_all_close(m, r, rtol=2**-7)
        print("OK")
        """,
        devices=4,
    )
    assert "OK" in out, out


# ---------------------------------------------------------------------------------------------
# real processes

PROCESSES = (
    HEADER
    + """
from tests.test_training_shard_map import run

out = ARGS[0]
mesh, fsdp_mesh = parallel.make_mesh(), parallel.make_mesh({"data": 2, "fsdp": 2})
runs = {
    "jit": run(mesh, "jit", pid=pid, nproc=nproc),
    "shard_map": run(mesh, "shard_map", pid=pid, nproc=nproc),
    "fsdp_accum": run(fsdp_mesh, "shard_map", accum=2, fsdp=True, pid=pid, nproc=nproc),
}
if pid == 0:
    import pickle
    with open(out, "wb") as f:
        pickle.dump(runs, f)
print("DONE", pid, flush=True)
"""
)


@pytest.mark.slow
def test_shard_map_step_on_two_processes_equals_the_jit_step(tmp_path):
    """2 processes x 2 CPU devices: shard_map (replicated; fsdp + accumulation) = jit."""
    import pickle

    launch(PROCESSES, 2, [tmp_path / "runs.pkl"], devices=2, timeout=600)
    with open(tmp_path / "runs.pkl", "rb") as f:
        runs = pickle.load(f)
    assert_same_run(runs["shard_map"], runs["jit"], "2 processes: shard_map vs jit")
    assert_same_run(runs["fsdp_accum"], runs["jit"], "2 processes: fsdp + accumulation vs jit")
