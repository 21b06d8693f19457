"""Conversions at the ends where alpha = 0 or beta = 0: a clear error, never a silent NaN/inf."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax as fj

X = jnp.ones((2, 2))

# (source, target, path, t): each divides by a coefficient that is 0 at that end.
UNDEFINED = [
    ("velocity", "score", fj.CondOT(), 1.0),  # score = -eps / beta, beta(1) = 0
    ("score", "x1", fj.CondOT(), 0.0),  # x1 from the noise alone: alpha(0) = 0
    ("eps", "velocity", fj.VPCosine(), 0.0),
    ("x1", "eps", fj.get_path("subvp"), 1.0),  # eps = (x - alpha x1) / beta, beta(1) = 0
    ("v", "score", fj.get_path("subvp"), 1.0),
]


@pytest.mark.parametrize(("source", "target", "path", "t"), UNDEFINED)
def test_undefined_conversion_raises_naming_t(source, target, path, t):
    with pytest.raises(ValueError, match=rf"{source}' -> '{target}' is undefined at t = {t}"):
        fj.convert(X, source=source, target=target, path=path, x=X, t=t)


def test_a_batch_with_one_bad_time_raises():
    t = jnp.array([0.5, 1.0])
    with pytest.raises(ValueError, match=r"undefined at t = 1\.0"):
        fj.convert(X, source="velocity", target="score", path=fj.CondOT(), x=X, t=t)


def test_defined_limits_at_the_ends_still_convert():
    # CondOT velocity -> score at t = 0 is -x (no division by alpha is needed): u = x1 - eps and
    # at t = 0 x = eps, so score = -eps / beta = -x whatever the velocity.
    u = jnp.array([[3.0, -1.0], [0.5, 2.0]])
    x = jnp.array([[0.2, -0.4], [1.5, 0.0]])
    out = fj.convert(u, source="velocity", target="score", path=fj.CondOT(), x=x, t=0.0)
    chex.assert_trees_all_close(out, -x)
    # velocity -> x1 at t = 1 on CondOT: x1 = x + (1 - t) u = x.
    out = fj.convert(u, source="velocity", target="x1", path=fj.CondOT(), x=x, t=1.0)
    chex.assert_trees_all_close(out, x)


def test_inside_jit_the_check_is_the_checked_mode_one():
    f = jax.jit(
        lambda t: fj.convert(X, source="velocity", target="score", path=fj.CondOT(), x=X, t=t)
    )
    assert not np.isfinite(np.asarray(f(1.0))).all()  # unchecked compiled code: no host sync
    with pytest.raises(Exception, match="undefined at this t"):
        fj.checked(f)(1.0)
