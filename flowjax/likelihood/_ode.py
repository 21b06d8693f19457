"""Exact log-likelihood through the instantaneous change of variables, on diffrax.

Along the ODE ``dX/dt = u_t(X)`` the log-density obeys ``d/dt log p_t(X_t) = -div u_t(X_t)``. Solving
the augmented state ``(X, L)`` with ``dL/dt = -div u`` from the data ``x`` at ``t_end`` back to
``t_start`` gives

    log p_{t_end}(x) = log p_{t_start}(X_{t_start}) - L(t_start),      L(t_end) = 0,

and ``log p_{t_start}`` is the prior ``N(0, beta(t_min)^2 I)`` (``path.prior_log_prob``) unless the
caller passes another. The same state solved forward from prior samples gives samples together with
their log-densities (:func:`sample_with_log_prob`).

Each example is solved as its own ODE (``vmap`` over the batch), so adaptive step sizes are chosen
per example: a value never depends on which other examples share its batch, a batch sharded over
devices gives the single-device values, and no device waits on a collective inside the solver loop.
``shared_steps=True`` instead solves the batch as one ODE with one step sequence (the PyTorch
libraries' way): fewer model calls for a large batch with a few hard examples, at those guarantees'
expense.

Approximations at the ends, stated once: VP paths have ``alpha(0) = exp(-B(1)/2)`` (6.6e-3 for the
default linear VP) and VE paths have ``alpha = 1``, so their true ``p_0`` is not exactly the Gaussian
prior; and paths whose ``beta`` stays positive at ``t = 1`` (VE, EDM, CondOT with ``sigma_min``)
measure the density of slightly noised data, ``p_{t_end}``. Pass ``prior_log_prob`` to use an exact
``p_{t_start}`` where one is known (as the tests do with the Gaussian-mixture oracle).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from flowjax import _validation as v
from flowjax import solvers
from flowjax.likelihood._divergence import exact_divergence, hutchinson_divergence, sample_probes
from flowjax.parameterization import convert
from flowjax.paths import PREDICTIONS, AbstractPath

__all__ = [
    "LIKELIHOOD_DATA_END_MARGIN",
    "LikelihoodResult",
    "likelihood_time_range",
    "log_likelihood",
    "sample_with_log_prob",
]

#: Likelihoods stop this close to a data end where the prediction is undefined (``beta = 0``):
#: score SDE's likelihood cut-off.
LIKELIHOOD_DATA_END_MARGIN = 1e-5


class LikelihoodResult(eqx.Module):
    """Per-example log-likelihood and solver statistics (all leading axis ``B``).

    ``nfe`` counts vector-field evaluations; each is one model evaluation carrying ``d`` (exact) or
    ``K`` (Hutchinson) forward-mode tangents in one batched JVP.
    """

    log_prob: Float[Array, " B"]
    prior_log_prob: Float[Array, " B"]
    delta_log_prob: Float[Array, " B"]  # log p_end(x) - log p_start(z) = -integral of div u
    stderr: Float[Array, " B"]  # Hutchinson standard error of log_prob (0 for exact divergence)
    latent: Float[Array, "B ..."]  # the ODE's other end
    nfe: Int[Array, " B"]
    num_steps: Int[Array, " B"]
    num_rejected: Int[Array, " B"]
    success: Bool[Array, " B"]


def likelihood_time_range(path: AbstractPath, prediction: str) -> tuple[float, float]:
    """``(t_start, t_end)`` for a ``prediction`` model's likelihood on ``path``.

    The path's whole range where the prediction converts to a velocity; otherwise a margin of
    ``1e-3`` at the noise end (eps/score models where ``alpha = 0``,
    ``flowjax.solvers.NOISE_END_MARGIN``) and ``1e-5`` at the data end (score/x1 models where
    ``beta = 0``, :data:`LIKELIHOOD_DATA_END_MARGIN`), by the rule of
    :func:`flowjax.solvers.solve_ends`.
    """
    v.choice(prediction, PREDICTIONS, "prediction")
    return solvers.solve_ends(
        path,
        needs_alpha=prediction in ("eps", "score"),
        needs_beta=prediction in ("score", "x1"),
        data_end_margin=LIKELIHOOD_DATA_END_MARGIN,
    )


def _make_velocity(model_fn, path, prediction: str, has_cond: bool):
    """One example's velocity ``u(x, t)`` from a batched ``model_fn`` (called on a batch of 1)."""

    def u(x: Array, t: Array, cond: Any) -> Array:
        xb, tb = x[None], jnp.reshape(t, (1,)).astype(x.dtype)
        out = (
            model_fn(xb, tb, jax.tree.map(lambda c: c[None], cond))
            if has_cond
            else model_fn(xb, tb)
        )
        if out.shape != xb.shape:
            raise ValueError(
                f"model_fn returned shape {out.shape} for input x of shape {xb.shape}; "
                "the prediction must have the shape of x"
            )
        return convert(out, source=prediction, target="velocity", path=path, x=xb, t=tb)[0]

    return u


def _steps(
    solver: str | solvers.AbstractSolver,
    num_steps: int | None,
    rtol: float,
    atol: float,
    max_steps: int,
) -> tuple[solvers.AbstractDiffraxSolver, solvers.Adaptive | None]:
    """The solver and the step control: adaptive without ``num_steps``, else a uniform grid."""
    obj = solvers.get_solver(solver, adaptive=num_steps is None)
    if not isinstance(obj, solvers.AbstractDiffraxSolver):
        raise ValueError(
            f"the likelihood's augmented ODE needs a Runge-Kutta solver (euler, heun, midpoint, "
            f"ralston, bosh3, tsit5, dopri5, dopri8); got {solver!r}"
        )
    if num_steps is not None:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be an integer >= 1; got {num_steps!r}")
        return obj, None
    return obj, solvers.Adaptive(rtol=rtol, atol=atol, error_norm="rms", max_steps=max_steps)


def _solve(
    model_fn,
    path: AbstractPath,
    x: Array,
    keys: Array,
    cond: Any,
    *,
    prediction: str,
    divergence: str,
    num_probes: int,
    probe: str,
    solver: solvers.AbstractDiffraxSolver,
    adaptive: solvers.Adaptive | None,
    num_steps: int | None,
    t0: float,
    t1: float,
    divergence_chunk: int | None,
    has_cond: bool,
    shared_steps: bool = False,
) -> tuple[Array, Array, Array, Array, Array, Array]:
    """Solve the augmented ODE from ``t0`` to ``t1``; returns end state and per-example stats.

    Per example (``vmap`` of one solve each) unless ``shared_steps``: then one solve of the whole
    batch, whose adaptive steps are chosen on the RMS error over all of it.
    """
    u = _make_velocity(model_fn, path, prediction, has_cond)
    grid = None
    if adaptive is None:
        grid = solvers.UniformGrid()(path, num_steps, t0, t1, x.dtype)
    batch = x.shape[0]
    if divergence == "exact":
        aux, width = jnp.zeros((batch,), x.dtype), 1  # nothing per example
    else:  # Hutchinson probes, fixed along the path
        draw = lambda k: sample_probes(k, x.shape[1:], num_probes, probe, x.dtype)  # noqa: E731
        aux, width = jax.vmap(draw)(keys), num_probes

    def example_field(t: Array, xi: Array, ai: Array, ci: Any) -> tuple[Array, Array]:
        if divergence == "exact":
            fx, div = exact_divergence(lambda z: u(z, t, ci), xi, divergence_chunk)
            return fx, -div[None]
        fx, est = hutchinson_divergence(lambda z: u(z, t, ci), xi, ai)
        return fx, -est

    def run(field: Callable, y0: tuple[Array, Array]):
        # one example's state is unbatched: its error norm is the RMS over the state
        sol = solvers.integrate(
            diffrax.ODETerm(field), solver, y0, t0=t0, t1=t1, grid=grid, adaptive=adaptive,
            error_norm="rms", throw=False,
        )  # fmt: skip
        x_end, L = sol.y
        return x_end, L, sol.nfe, sol.num_steps, sol.num_rejected, sol.success

    if not shared_steps:

        def one(xi: Array, ai: Array, ci: Any):
            L0 = jnp.zeros((width,), xi.dtype)
            return run(lambda t, y, args: example_field(t, y[0], ai, ci), (xi, L0))

        return jax.vmap(one)(x, aux, cond)

    def batch_field(t, y, args):
        return jax.vmap(lambda xi, ai, ci: example_field(t, xi, ai, ci))(y[0], aux, cond)

    x_end, L, nfe, steps, rejected, ok = run(batch_field, (x, jnp.zeros((batch, width), x.dtype)))
    per_example = lambda a: jnp.broadcast_to(a, (batch,))  # noqa: E731
    return x_end, L, per_example(nfe), per_example(steps), per_example(rejected), per_example(ok)


_solve_jit = eqx.filter_jit(_solve)


def _check_x(x: Any, name: str = "x") -> Array:
    arr = jnp.asarray(x)
    if jnp.issubdtype(arr.dtype, jnp.integer) or arr.dtype == jnp.bool_:
        raise TypeError(
            f"{name} has integer dtype {arr.dtype} (discrete data such as 8-bit images?): a density "
            "needs continuous inputs. Dequantize first, e.g. "
            "flowjax.data.dequantize(key, x, num_levels=256) (to [-1, 1)), "
            "or use flowjax.likelihood.image_bits_per_dim(..., num_levels=...) which does it for you."
        )
    arr = v.require_floating(arr, name)
    v.require_batched(arr, name)
    if arr.shape[0] < 1:
        raise ValueError(
            f"{name} must hold at least one example; got an empty batch of shape {arr.shape}"
        )
    v.check_finite(arr, name)
    return arr


def _keys(key: PRNGKeyArray | None, x: Array, divergence: str) -> Array:
    """One key per example, laid out like ``x``'s batch axis when ``x`` is sharded."""
    if divergence == "hutchinson" and key is None:
        raise ValueError("divergence='hutchinson' needs a PRNG key for its probes: pass key=...")
    keys = jax.random.split(jax.random.PRNGKey(0) if key is None else key, x.shape[0])
    return _shard_like_batch(keys, x)


def _shard_like_batch(a: Array, x: Array) -> Array:
    """Give ``a`` (leading axis B) the batch-axis sharding of ``x``, if ``x`` is mesh-sharded."""
    sharding = getattr(x, "sharding", None)
    if isinstance(sharding, jax.sharding.NamedSharding) and len(sharding.spec) > 0:
        spec = jax.sharding.PartitionSpec(sharding.spec[0], *([None] * (a.ndim - 1)))
        return jax.device_put(a, jax.sharding.NamedSharding(sharding.mesh, spec))
    return a


def _options(divergence, probe, num_probes, prediction):
    v.choice(divergence, ("exact", "hutchinson"), "divergence")
    v.choice(probe, ("rademacher", "gaussian"), "probe")
    v.choice(prediction, PREDICTIONS, "prediction")
    if num_probes < 1:
        raise ValueError(f"num_probes must be >= 1; got {num_probes}")


def _stderr(L: Array, divergence: str) -> Array:
    k = L.shape[-1]
    if divergence == "exact" or k == 1:
        return jnp.zeros(L.shape[:-1], L.dtype)
    return jnp.std(L, axis=-1, ddof=1) / math.sqrt(k)


def _time_range(
    path: AbstractPath, prediction: str, t_start: float | None, t_end: float | None
) -> tuple[float, float]:
    d0, d1 = likelihood_time_range(path, prediction)
    t0 = d0 if t_start is None else float(t_start)
    t1 = d1 if t_end is None else float(t_end)
    v.check_time_range(jnp.asarray([t0, t1]), path.t_min, path.t_max, "t_start/t_end")
    if not t0 < t1:
        raise ValueError(f"t_start must be below t_end; got t_start={t0}, t_end={t1}")
    return t0, t1


def _integrate(
    model_fn: Callable[..., Array],
    path: AbstractPath,
    start: Array,
    *,
    t_from: float,
    t_to: float,
    keys: Array,
    cond: Any,
    prior_log_prob: Callable[[Array], Array] | None,
    divergence: str,
    **options: Any,
) -> tuple[Array, LikelihoodResult]:
    """Solve from ``start`` at ``t_from`` to ``t_to``; the noise end's state is the latent."""
    solver, adaptive = _steps(
        options.pop("solver"), options["num_steps"], options.pop("rtol"), options.pop("atol"),
        options.pop("max_steps"),
    )  # fmt: skip
    end, L, nfe, steps, rejected, ok = _solve_jit(
        model_fn, path, start, keys, cond, t0=t_from, t1=t_to, divergence=divergence,
        has_cond=cond is not None, solver=solver, adaptive=adaptive, **options,
    )  # fmt: skip
    backwards = t_to < t_from
    z = end if backwards else start
    prior = (prior_log_prob or path.prior_log_prob)(z)
    # L accumulates -div u from t_from: at the data end it is log p_end - log p_start (forwards);
    # at the noise end its negative (backwards).
    delta = -jnp.mean(L, axis=-1) if backwards else jnp.mean(L, axis=-1)
    result = LikelihoodResult(
        log_prob=prior + delta,
        prior_log_prob=prior,
        delta_log_prob=delta,
        stderr=_stderr(L, divergence),
        latent=z,
        nfe=nfe,
        num_steps=steps,
        num_rejected=rejected,
        success=ok,
    )
    return (start if backwards else end), result


def log_likelihood(
    model_fn: Callable[..., Array],
    path: AbstractPath,
    x: Float[ArrayLike, "B ..."],
    *,
    prediction: str = "velocity",
    divergence: str = "exact",
    key: PRNGKeyArray | None = None,
    num_probes: int = 1,
    probe: str = "rademacher",
    solver: str | solvers.AbstractSolver = "dopri5",
    num_steps: int | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
    t_start: float | None = None,
    t_end: float | None = None,
    cond: Any = None,
    prior_log_prob: Callable[[Array], Array] | None = None,
    divergence_chunk: int | None = None,
    shared_steps: bool = False,
) -> LikelihoodResult:
    """``log p(x)`` per example under the probability-flow ODE of a model (in nats).

    Args:
      model_fn: ``model_fn(x, t)`` or ``model_fn(x, t, cond)`` with x ``[B, ...]``, t ``[B]``,
        returning a ``prediction`` of x's shape; converted to a velocity. Pass a pytree (an equinox
        Module, ``jax.tree_util.Partial``) to avoid re-compiling for new parameters.
      path: the model's Gaussian path.
      x: data ``[B, ...]`` in the model's range (floating point; dequantize discrete data first).
      divergence: ``"exact"`` (``d`` JVPs per evaluation, chunked by ``divergence_chunk``) or
        ``"hutchinson"`` (``num_probes`` probes per example, fixed along the trajectory; needs key).
      solver: a Runge-Kutta solver of :mod:`flowjax.solvers` (object or name: euler, heun,
        midpoint, ralston, bosh3, tsit5, dopri5, dopri8): with ``num_steps`` a uniform grid; with
        ``num_steps=None`` adaptive steps (``rtol``/``atol``, the RMS error of each example's state,
        at most ``max_steps``; solvers with an error estimate).
      t_start, t_end: integration range; defaults from :func:`likelihood_time_range`.
      prior_log_prob: ``log p_{t_start}`` of the latent ``[B, ...] -> [B]``; default the path's prior.
      shared_steps: solve the batch as one ODE whose adaptive steps are chosen on the RMS error
        over the whole batch (the torchdiffeq / flow_matching convention: fewer steps when a few
        examples are hard, but each value then depends on its batch-mates and the hardest
        examples are less accurate than ``rtol``/``atol``). Default: one solve per example. With
        fixed steps (``num_steps``) both give the same values.

    Returns:
      A :class:`LikelihoodResult`; ``stderr`` is the standard error of the Hutchinson mean over the
      ``K`` probes (each probe's integral is an unbiased estimate of ``log p``).
    """
    _options(divergence, probe, num_probes, prediction)
    x = _check_x(x)
    t0, t1 = _time_range(path, prediction, t_start, t_end)
    keys = _keys(key, x, divergence)
    cond = jax.tree.map(lambda c: _shard_like_batch(jnp.asarray(c), x), cond)
    return _integrate(
        model_fn, path, x, keys=keys, cond=cond, prior_log_prob=prior_log_prob,
        prediction=prediction, divergence=divergence, num_probes=num_probes, probe=probe,
        solver=solver, num_steps=num_steps, rtol=rtol, atol=atol, max_steps=max_steps,
        divergence_chunk=divergence_chunk, shared_steps=shared_steps,
        t_from=t1, t_to=t0,  # backwards: data end to noise end
    )[1]  # fmt: skip


def sample_with_log_prob(
    model_fn: Callable[..., Array],
    path: AbstractPath,
    key: PRNGKeyArray,
    shape: tuple[int, ...],
    *,
    prediction: str = "velocity",
    divergence: str = "exact",
    num_probes: int = 1,
    probe: str = "rademacher",
    solver: str | solvers.AbstractSolver = "dopri5",
    num_steps: int | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
    t_start: float | None = None,
    t_end: float | None = None,
    cond: Any = None,
    prior_log_prob: Callable[[Array], Array] | None = None,
    divergence_chunk: int | None = None,
    shared_steps: bool = False,
) -> tuple[Float[Array, "B ..."], LikelihoodResult]:
    """Samples of the probability-flow ODE and their log-densities, in one forward pass.

    Draws ``z ~ N(0, beta(t_min)^2 I)`` of ``shape = (B, ...)``, solves the augmented ODE from
    ``t_start`` to ``t_end`` and returns ``(x, result)`` with ``result.log_prob = log p(x)``
    (``result.latent`` is ``z``). Same options as :func:`log_likelihood`.
    """
    _options(divergence, probe, num_probes, prediction)
    if len(shape) < 1 or any(int(s) < 1 for s in shape):
        raise ValueError(f"shape must be (B, ...) with positive sizes; got {tuple(shape)}")
    t0, t1 = _time_range(path, prediction, t_start, t_end)
    k_z, k_probe = jax.random.split(key)
    z = path.prior_sample(k_z, tuple(shape))
    return _integrate(
        model_fn, path, z, keys=jax.random.split(k_probe, shape[0]), cond=cond,
        prior_log_prob=prior_log_prob, prediction=prediction, divergence=divergence,
        num_probes=num_probes, probe=probe, solver=solver, num_steps=num_steps, rtol=rtol,
        atol=atol, max_steps=max_steps, divergence_chunk=divergence_chunk,
        shared_steps=shared_steps, t_from=t0, t_to=t1,
    )  # fmt: skip
