"""Minibatch optimal-transport coupling of noise and data (OT-CFM; Tong et al., Pooladian et al.).

Independent pairing draws ``eps`` and ``x1`` separately; minibatch OT instead re-pairs the noise of
a batch with its data so that the total squared distance ``sum_i |x1_i - eps_pi(i)|^2`` is smallest.
The conditional paths then cross less, the marginal velocity field is straighter and the flow
needs fewer solver steps. The batch of noise is unchanged as a set, so each ``eps`` is still
``N(0, I)`` marginally; only the joint law of ``(x1, eps)`` changes (towards the OT plan).

The assignment is solved by ott-jax: ``"ot"`` is the exact assignment (the Hungarian algorithm,
:func:`ott.tools.unreg.hungarian`, ``O(B^3)``: about 0.1 s at ``B = 512`` on a CPU core) and
returns a permutation; ``"sinkhorn"`` is the entropic plan (:class:`ott.solvers.linear.sinkhorn.Sinkhorn`)
from which each data point draws its noise partner (``O(B^2)`` per iteration, for large batches;
noise points may then repeat). Both run under ``jit``; no gradient flows through the pairing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from flowjax import _validation as v

__all__ = ["COUPLINGS", "couple", "ot_pairing", "sinkhorn_pairing"]

#: Names accepted by :func:`couple` and ``make_loss(coupling=...)`` (``None``: independent pairs).
COUPLINGS: tuple[str, ...] = ("ot", "sinkhorn")


def _flat(x1: Array, eps: Array) -> tuple[Array, Array]:
    x1 = v.require_floating(x1, "x1")
    eps = v.require_floating(eps, "eps")
    v.require_batched(x1, "x1")
    v.require_same_shape(x1, eps, "x1", "eps")
    n = x1.shape[0]
    # Pairing is discrete: solve it in float32 at least, whatever the data's dtype.
    dt = x1.dtype if jnp.dtype(x1.dtype).itemsize >= 4 else jnp.dtype(jnp.float32)
    return (
        jax.lax.stop_gradient(x1.reshape(n, -1).astype(dt)),
        jax.lax.stop_gradient(eps.reshape(n, -1).astype(dt)),
    )


@contextlib.contextmanager
def _third_party_promotion() -> Iterator[None]:
    """ott-jax relies on NumPy-style rank and dtype promotion; allow it while tracing ott only."""
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        yield


def ot_pairing(x1: Float[Array, "B ..."], eps: Float[Array, "B ..."]) -> Int[Array, " B"]:
    """The permutation ``pi`` minimising ``sum_i |x1_i - eps_pi(i)|^2`` (exact, Hungarian)."""
    from ott.geometry import pointcloud  # imported on use: ott takes seconds to import
    from ott.tools import unreg

    a, b = _flat(x1, eps)
    with _third_party_promotion():
        _, out = unreg.hungarian(pointcloud.PointCloud(a, b))
    rows, cols = out.paired_indices
    return jnp.zeros(a.shape[0], jnp.int32).at[rows].set(cols.astype(jnp.int32))


def sinkhorn_pairing(
    key: PRNGKeyArray,
    x1: Float[Array, "B ..."],
    eps: Float[Array, "B ..."],
    *,
    epsilon: float = 0.01,
    max_iterations: int = 2000,
) -> Int[Array, " B"]:
    """Noise index for each data point, drawn from the entropic OT plan's row.

    The cost is ``|x1_i - eps_j|^2`` divided by its mean (so ``epsilon`` is relative to the typical
    cost); smaller ``epsilon`` is closer to the exact assignment and needs more iterations.
    """
    from ott.geometry import pointcloud
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn

    a, b = _flat(x1, eps)
    with _third_party_promotion():
        geom = pointcloud.PointCloud(a, b, epsilon=epsilon, scale_cost="mean")
        out = sinkhorn.Sinkhorn(max_iterations=max_iterations)(linear_problem.LinearProblem(geom))
        plan = out.matrix
    logits = jnp.log(jnp.maximum(plan, jnp.finfo(plan.dtype).tiny))
    return jax.random.categorical(key, logits, axis=1).astype(jnp.int32)


def couple(
    method: str | None,
    key: PRNGKeyArray,
    x1: Float[Array, "B ..."],
    eps: Float[Array, "B ..."],
    **kwargs,
) -> Float[Array, "B ..."]:
    """The noise re-paired with ``x1`` by ``method`` (``None``: unchanged, independent pairs)."""
    if method is None:
        return eps
    v.choice(method, COUPLINGS, "coupling")
    if method == "ot":
        if kwargs:
            raise TypeError(f"coupling 'ot' takes no options; got {sorted(kwargs)}")
        idx = ot_pairing(x1, eps)
    else:
        idx = sinkhorn_pairing(key, x1, eps, **kwargs)
    return jnp.take(eps, idx, axis=0)
