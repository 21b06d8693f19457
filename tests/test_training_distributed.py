"""flowjax.training across devices and processes: 8 devices = 1 device; kill-and-resume is bitwise.

Each check runs in fresh interpreters (the device count is fixed when JAX starts; a crash must be
a real process dying). The model, loss and data iterator are those of ``test_training.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import chex
import numpy as np
import pytest

from tests.conftest import ROOT, run_python

pytestmark = pytest.mark.multiprocess


def test_eight_devices_give_the_one_device_step():
    out = run_python(
        """
        import chex, jax, numpy as np
        from flowjax import parallel
        from tests.test_training import ToyIterator, build

        assert jax.device_count() == 8
        meshes = {
            "1": parallel.make_mesh(devices=jax.devices()[:1]),
            "8": parallel.make_mesh(),
            "4x2": parallel.make_mesh({"data": 4, "fsdp": 2}),
        }
        runs = {}
        for name, mesh in meshes.items():
            state, step = build(mesh=mesh)
            it = ToyIterator(16)
            metrics = []
            for _ in range(3):
                state, m = step(state, next(it))
                metrics.append(jax.device_get(m))
            if name != "1":
                x = step.shard_batch(next(ToyIterator(16)))["x"]
                assert [s.data.shape for s in x.addressable_shards] == [(2, 2)] * 8, x.sharding
                assert all(p.sharding.is_fully_replicated for p in jax.tree.leaves(state))
            runs[name] = (jax.device_get(state), metrics)

        ref_state, ref_metrics = runs["1"]
        for name in ("8", "4x2"):
            state, metrics = runs[name]
            chex.assert_equal(int(state.step), 3)
            chex.assert_trees_all_equal(state.key, ref_state.key)
            chex.assert_trees_all_close(state, ref_state, rtol=2e-5, atol=1e-7)
            # grad_norm equal: the gradient is the global mean's, not N times it
            chex.assert_trees_all_close(metrics, ref_metrics, rtol=2e-5, custom_message=name)
            print(name, "max param diff", max(
                float(np.max(np.abs(a - b)))
                for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params))
            ))

        state, step = build(mesh=meshes["8"])
        try:
            step(state, {"x": np.zeros((12, 2), np.float32)})
        except ValueError as err:
            print("ERROR", err)
        print("OK")
        """,
        devices=8,
    )
    assert "OK" in out, out
    err = next(line for line in out.splitlines() if line.startswith("ERROR"))
    assert "global batch size 12" in err and "devices on the batch axes, 8" in err, err


SCRIPT = """
import json, signal, sys
import jax, numpy as np
from flowjax import training as T
from tests.test_training import ToyIterator, build

mode, directory = sys.argv[1], sys.argv[2]

def run(directory, it, out):
    state, step = build(total_steps=12)
    with T.Checkpointer(directory, max_to_keep=2) as ck:
        print(mode, "found", ck.all_steps(), flush=True)
        res = T.train_loop(
            state, step, it, num_steps=12, checkpointer=ck, checkpoint_every=4, log_every=4
        )
    print(mode, "restored", res.restored_step, flush=True)
    leaves = [np.asarray(x) for x in jax.tree.leaves(res.state)]
    np.savez(out, *leaves)
    with open(out + ".json", "w") as f:
        json.dump(it.get_state(), f)

if mode == "crash":  # SIGKILL while fetching batch 10 (checkpoints at 4 and 8 were started)
    run(directory, ToyIterator(16, signal_at=10, signal_num=signal.SIGKILL), None)
elif mode == "preempt":  # SIGTERM while fetching batch 9: finish step 10, save it, exit 0
    run(directory, ToyIterator(16, signal_at=9, signal_num=signal.SIGTERM), None)
else:  # resume to the end, then an uninterrupted run from scratch in a fresh directory
    run(directory, ToyIterator(16), sys.argv[3] + "_resumed.npz")
    run(sys.argv[4], ToyIterator(16), sys.argv[3] + "_fresh.npz")
"""


def _run(args, timeout=300):
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(ROOT),
    )


def test_kill_and_resume_is_bitwise_identical(tmp_path):
    """SIGKILL mid-run, resume; SIGTERM mid-run (saves, exits 0), resume to the end; compare."""
    ckpt = str(tmp_path / "ckpt")
    crash = _run(["crash", ckpt])
    assert crash.returncode == -signal.SIGKILL, crash.stdout + crash.stderr
    steps_after_crash = sorted(int(p) for p in os.listdir(ckpt) if p.isdigit())
    assert 4 in steps_after_crash or 8 in steps_after_crash, steps_after_crash

    preempt = _run(["preempt", ckpt])
    assert preempt.returncode == 0, preempt.stdout + preempt.stderr
    assert f"preempt found {steps_after_crash}" in preempt.stdout, preempt.stdout
    assert "restored" not in preempt.stdout  # it exited inside train_loop, after saving step 10
    assert sorted(int(p) for p in os.listdir(ckpt) if p.isdigit())[-1] == 10

    final = _run(["final", ckpt, str(tmp_path / "out"), str(tmp_path / "fresh")])
    assert final.returncode == 0, final.stdout + final.stderr
    assert "final restored 10" in final.stdout and "final restored None" in final.stdout

    resumed = np.load(tmp_path / "out_resumed.npz")
    fresh = np.load(tmp_path / "out_fresh.npz")
    assert len(resumed.files) == len(fresh.files) > 10  # step, params, opt state, EMA, key
    chex.assert_trees_all_equal_shapes_and_dtypes(dict(resumed), dict(fresh))
    for k in fresh.files:  # bit for bit (chex's equality would let -0.0 equal 0.0)
        assert resumed[k].tobytes() == fresh[k].tobytes(), k
    pos_resumed = json.loads((tmp_path / "out_resumed.npz.json").read_text())
    pos_fresh = json.loads((tmp_path / "out_fresh.npz.json").read_text())
    assert pos_resumed == pos_fresh == {"seed": 0, "index": 12}


MULTI = """
import sys
import numpy as np
from flowjax import parallel
from flowjax import training as T

pid, port, directory, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
parallel.initialize_distributed(f"localhost:{port}", 2, pid, initialization_timeout=60)
import jax
from tests.test_training import ToyIterator, build

class Half(ToyIterator):  # this process's half of each global batch of 16
    def __next__(self):
        return {"x": super().__next__()["x"][8 * pid : 8 * (pid + 1)]}

assert jax.process_count() == 2 and jax.device_count() == 4
state, step = build(mesh=parallel.make_mesh())
with T.Checkpointer(directory) as ck:
    res = T.train_loop(state, step, Half(16), num_steps=6, checkpointer=ck, checkpoint_every=3)
    assert ck.all_steps() == [3, 6], ck.all_steps()
leaves = [np.asarray(x.addressable_data(0)) for x in jax.tree.leaves(res.state)]
if pid == 0:
    np.savez(out, *leaves)
print("done", pid, flush=True)
"""


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
    """2 processes x 2 CPU devices (jax.distributed, gloo) = 1 process x 4 devices; checkpoints too."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = str(s.getsockname()[1])
    env = dict(os.environ)
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(MULTI),
                str(i),
                port,
                str(tmp_path / "ck"),
                str(tmp_path / "multi.npz"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(ROOT),
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (o, e) in zip(procs, outs, strict=True):
        assert p.returncode == 0, o + e
    out = run_python(
        f"""
        import jax, numpy as np
        from flowjax import parallel
        from flowjax import training as T
        from tests.test_training import ToyIterator, build

        state, step = build(mesh=parallel.make_mesh())
        res = T.train_loop(state, step, ToyIterator(16), num_steps=6)
        multi = np.load({str(tmp_path / "multi.npz")!r})
        for i, x in enumerate(jax.tree.leaves(res.state)):
            np.testing.assert_allclose(np.asarray(x), multi[f"arr_{{i}}"], rtol=2e-5, atol=1e-7)
        # the 2-process checkpoint restores in one process (its data position included)
        with T.Checkpointer({str(tmp_path / "ck")!r}) as ck:
            r = ck.restore(T.abstract_state(res.state))
        assert r.step == 6 and r.data_state == {{"seed": 0, "index": 6}}
        for a, b in zip(jax.tree.leaves(r.state), jax.tree.leaves(res.state)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-7)
        print("OK")
        """,
        devices=4,
    )
    assert "OK" in out
