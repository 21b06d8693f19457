"""A batch sharded over 8 CPU devices gives the samples of one device (fresh interpreter).

Runs in float64 so that the comparison is sharp: the per-example arithmetic is the same on one
device and on eight, but XLA may vectorise a 256-row and a 32-row computation differently (fused
multiply-adds), and the Langevin step's batch mean is a cross-device reduction, so agreement is to
rounding (1e-10 here), not necessarily bit for bit. The random numbers themselves are identical
(JAX's partitionable threefry PRNG).
"""

import pytest

from tests.conftest import run_python

CODE = """
import sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
import flowjax as fj
from flowjax.sampling import SDE, PredictorCorrector, guided_model, sample
from flowjax.solvers import Adaptive

assert jax.device_count() == 8
mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
sharding = NamedSharding(mesh, P("data"))
path = fj.VPLinear()
model = fj.oracle.eight_gaussians().model_fn(path)
key = jax.random.PRNGKey(0)
labeled = fj.guidance.conditional_oracle(fj.oracle.eight_gaussians(), path)
labels = jax.numpy.arange(256) % 8
cases = {
    "ode_euler_scan": dict(num_steps=40),
    "ode_tsit5_adaptive": dict(solver="tsit5", adaptive=Adaptive(rtol=1e-4, atol=1e-4)),
    "sde_euler_maruyama": dict(method=SDE(sigma=0.5), num_steps=40),
    "sde_shark_diffrax": dict(method=SDE(sigma="reverse"), solver="shark", num_steps=40),
    "pc": dict(method=PredictorCorrector(sigma="reverse", corrector_steps=1), num_steps=40),
    "dpmpp_3m": dict(solver="dpmpp_3m", num_steps=10, time_grid="logsnr"),
    "cond": dict(num_steps=20, cond=labels),
    "guided": dict(num_steps=20),
}
for name in sys.argv[1:]:
    kw = cases[name]
    fn = labeled if name == "cond" else model
    if name == "guided":
        fn = guided_model(labeled, labels, 8, 2.0)
    one = sample(fn, path, key, (256, 2), **kw)
    many = sample(fn, path, key, (256, 2), sharding=sharding, **kw)
    assert len(many.samples.sharding.device_set) == 8, (name, many.samples.sharding)
    np.testing.assert_allclose(np.asarray(many.samples), np.asarray(one.samples),
                               rtol=1e-10, atol=1e-10, err_msg=name)
    assert int(many.nfe) == int(one.nfe), name
    print(name, "ok")
"""


def _run(names):
    code = f"import sys; sys.argv = ['x', *{names!r}]\n" + CODE
    out = run_python(code, devices=8)
    for name in names:
        assert f"{name} ok" in out, out


@pytest.mark.multiprocess
def test_sharded_batch_gives_single_device_samples():
    # adaptive steps (batch-max norm); noise + batch mean; labels as cond and in a guided model
    _run(["ode_tsit5_adaptive", "pc", "cond", "guided"])


@pytest.mark.slow
@pytest.mark.multiprocess
def test_sharded_batch_more_methods():
    _run(["ode_euler_scan", "sde_euler_maruyama", "sde_shark_diffrax", "dpmpp_3m"])
