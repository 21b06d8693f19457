"""Bad input found by the fuzz tests: each gets an error that names it, or works in the right dtype."""

import chex
import jax
import numpy as np
import pytest

import flowjax as fj
from flowjax import data
from flowjax.training import make_optimizer


@pytest.mark.parametrize("lr", [float("nan"), float("inf"), -float("inf")])
def test_make_optimizer_refuses_a_non_finite_learning_rate(lr):
    with pytest.raises(ValueError, match="lr"):
        make_optimizer("adamw", lr)


@pytest.mark.parametrize("name", ["", "eight gaussians", "9lives"])
def test_malformed_data_set_names_get_the_unknown_name_error(name):
    with pytest.raises(data.DatasetNotFoundError, match="unknown data set name") as err:
        data.get_dataset(name)
    assert "eight_gaussians" in str(err.value)  # the built-in sets are listed


def test_convert_computes_in_the_promoted_dtype_under_strict_promotion():
    """float16 predictions at a float32 ``(x, t)``: the standard lattice's float32, no error."""
    path = fj.paths.CondOT()
    value = np.full((3, 2), 0.5, np.float16)
    x = np.full((3, 2), 0.25, np.float32)
    with jax.numpy_dtype_promotion("strict"):
        out = fj.convert(value, source="velocity", target="x1", path=path, x=x, t=np.float32(0.5))
    chex.assert_type(out, np.float32)
    # CondOT: x1 = x + (1 - t) u
    chex.assert_trees_all_close(out, np.full((3, 2), 0.25 + 0.5 * 0.5, np.float32))
