"""``reflow.nfe_curve``: the one NFE sweep, on a run whose samples and NFE are known."""

import chex
import jax.numpy as jnp
import numpy as np

from flowjax import reflow


def test_nfe_curve_rows_carry_the_variant_the_reported_nfe_and_the_score():
    calls = []

    def run(num_steps, solver="euler"):
        calls.append((num_steps, solver))
        nfe = num_steps * (2 if solver == "heun" else 1)
        return jnp.full((3, 2), float(num_steps)), jnp.asarray(nfe)

    variants = [{"num_steps": 2}, {"num_steps": 4, "solver": "heun"}]
    rows = reflow.nfe_curve(run, variants, lambda x: jnp.sum(x))
    assert calls == [(2, "euler"), (4, "heun")]
    assert rows == [
        {"num_steps": 2, "nfe": 2, "score": 12.0},
        {"num_steps": 4, "solver": "heun", "nfe": 8, "score": 24.0},
    ]
    chex.assert_type([r["nfe"] for r in rows], int)
    np.testing.assert_equal([type(r["score"]) for r in rows], [float, float])


def test_nfe_curve_keeps_a_mean_nfe_and_merges_extras_under_its_score_name():
    def run(rtol):
        return jnp.ones((2, 2)) * rtol, 7.5, {"seconds": 0.25}

    rows = reflow.nfe_curve(run, [{"rtol": 2.0}], lambda x: jnp.max(x), score_name="fd")
    assert rows == [{"rtol": 2.0, "nfe": 7.5, "fd": 2.0, "seconds": 0.25}]
