"""Two real JAX processes (jax.distributed on CPU, 2 devices each): the per-process batches of the
default iterator assemble into the one-process global batch on a ``data`` mesh axis."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import chex
import numpy as np
import portpicker
import pytest

import flowjax.data as fd
from tests.conftest import ROOT

CHILD = textwrap.dedent(
    """
    import hashlib, json, os, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        f"localhost:{sys.argv[3]}", num_processes=int(sys.argv[2]), process_id=int(sys.argv[1])
    )
    import numpy as np
    from jax.experimental import multihost_utils
    import flowjax.data as fd

    ds = fd.get_dataset("digits", "train", random_flip=True)
    it = fd.make_iterator(ds, global_batch_size=64, seed=3)  # process index/count from jax
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    digests = []
    for _ in range(4):
        local = next(it)
        glob = jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a), local)
        full = multihost_utils.process_allgather(glob, tiled=True)
        digests.append(
            hashlib.sha256(np.asarray(full["x"]).tobytes() + np.asarray(full["label"]).tobytes())
            .hexdigest()
        )
    print(json.dumps({"local": it.local_batch_size, "digests": digests, "state": it.get_state()}))
    jax.distributed.shutdown()
    """
)


@pytest.mark.multiprocess
def test_two_processes_assemble_the_one_process_global_batch():
    port = portpicker.pick_unused_port()
    env = dict(os.environ)
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(i), "2", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(ROOT),
        )
        for i in range(2)
    ]
    try:
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, f"child failed:\n{out}\n{err[-3000:]}"
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]

    ds = fd.get_dataset("digits", "train", random_flip=True)
    ref = fd.make_iterator(ds, global_batch_size=64, seed=3, process_index=0, process_count=1)
    expected = []
    for _ in range(4):
        b = next(ref)
        expected.append(
            hashlib.sha256(
                np.ascontiguousarray(b["x"]).tobytes() + np.ascontiguousarray(b["label"]).tobytes()
            ).hexdigest()
        )
    for r in results:
        chex.assert_equal(r["local"], 32)
        chex.assert_equal(r["digests"], expected)
        chex.assert_equal(r["state"], ref.get_state())
