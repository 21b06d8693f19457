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
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from flowjax import _validation as v
from flowjax.likelihood._divergence import exact_divergence, hutchinson_divergence, sample_probes
from flowjax.parameterization import conversion_coefficients, convert
from flowjax.paths import PREDICTIONS, AbstractPath

__all__ = ["LikelihoodResult", "default_time_range", "log_likelihood", "sample_with_log_prob"]

# name -> (diffrax solver, vector-field evaluations per step attempt, evaluations before the first
# step). Counted, not assumed: tests/test_likelihood.py counts real evaluations with a callback.
# First-same-as-last tableaus evaluate once at the start; diffrax's initial step-size search
# shares that evaluation.
_SOLVERS: dict[str, tuple[type, int, int]] = {
    "euler": (diffrax.Euler, 1, 0),
    "heun": (diffrax.Heun, 2, 0),
    "midpoint": (diffrax.Midpoint, 2, 0),
    "bosh3": (diffrax.Bosh3, 3, 1),
    "tsit5": (diffrax.Tsit5, 6, 1),
    "dopri5": (diffrax.Dopri5, 6, 1),
    "dopri8": (diffrax.Dopri8, 13, 1),
}
_ADAPTIVE = ("bosh3", "tsit5", "dopri5", "dopri8")
_DATA_END_MARGIN = (
    1e-5  # score SDE's likelihood cut-off where a prediction is undefined at beta = 0
)
_NOISE_END_MARGIN = 1e-3  # where a prediction says nothing about the data at alpha = 0


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


def _endpoint_ok(path: AbstractPath, prediction: str, t: float) -> bool:
    try:
        # evaluated now even inside a caller's jit (the path's fields are constants there too)
        with jax.ensure_compile_time_eval():
            A, B = conversion_coefficients(prediction, "velocity", path, jnp.asarray(t))
            return bool(np.isfinite(np.asarray(A)) and np.isfinite(np.asarray(B)))
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return False  # a traced path


def default_time_range(path: AbstractPath, prediction: str) -> tuple[float, float]:
    """``(t_start, t_end)`` for the probability-flow ODE of a ``prediction`` model on ``path``.

    The path's whole range where the prediction converts to a velocity; otherwise a margin of
    ``1e-3`` at the noise end (eps/score models where ``alpha = 0``) and ``1e-5`` at the data end
    (score/x1 models where ``beta = 0``).
    """
    v.choice(prediction, PREDICTIONS, "prediction")
    t0, t1 = float(path.t_min), float(path.t_max)
    if not _endpoint_ok(path, prediction, t0):
        t0 += _NOISE_END_MARGIN
    if not _endpoint_ok(path, prediction, t1):
        t1 -= _DATA_END_MARGIN
    return t0, t1


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


def _solver_setup(solver: str, num_steps: int | None, t0: float, t1: float, rtol, atol):
    v.choice(solver, tuple(_SOLVERS), "solver")
    cls, per_step, init = _SOLVERS[solver]
    if num_steps is None:
        if solver not in _ADAPTIVE:
            raise ValueError(
                f"solver {solver!r} has no error estimate: pass num_steps for a fixed grid, or use "
                f"an adaptive solver ({', '.join(_ADAPTIVE)})"
            )
        controller = diffrax.PIDController(rtol=rtol, atol=atol)
        return cls(), controller, None, per_step, init
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1; got {num_steps}")
    ts = jnp.linspace(t0, t1, num_steps + 1)
    return cls(), diffrax.StepTo(ts=ts), None, per_step, init


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
    solver: str,
    num_steps: int | None,
    rtol: float,
    atol: float,
    max_steps: int,
    t0: float,
    t1: float,
    divergence_chunk: int | None,
    has_cond: bool,
) -> tuple[Array, Array, Array, Array, Array, Array]:
    """Solve the augmented ODE per example from ``t0`` to ``t1``; returns end state and stats."""
    u = _make_velocity(model_fn, path, prediction, has_cond)
    sol_obj, controller, dt0, per_step, init = _solver_setup(solver, num_steps, t0, t1, rtol, atol)

    def one(xi: Array, key: Array, ci: Any):
        if divergence == "exact":

            def field(t, y, args):
                fx, div = exact_divergence(lambda z: u(z, t, ci), y[0], divergence_chunk)
                return fx, -div[None]

            L0 = jnp.zeros((1,), xi.dtype)
        else:
            probes = sample_probes(key, xi.shape, num_probes, probe, xi.dtype)

            def field(t, y, args):
                fx, est = hutchinson_divergence(lambda z: u(z, t, ci), y[0], probes)
                return fx, -est

            L0 = jnp.zeros((num_probes,), xi.dtype)
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            sol_obj,
            t0=t0,
            t1=t1,
            dt0=dt0,
            y0=(xi, L0),
            stepsize_controller=controller,
            max_steps=max_steps,
            throw=False,
        )
        x_end, L = jax.tree.map(lambda a: a[-1], sol.ys)
        steps = jnp.asarray(sol.stats["num_steps"])
        rejected = jnp.asarray(sol.stats["num_rejected_steps"])
        ok = sol.result == diffrax.RESULTS.successful
        return x_end, L, steps * per_step + init, steps, rejected, ok

    return jax.vmap(one)(x, keys, cond)


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
    solver: str = "dopri5",
    num_steps: int | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
    t_start: float | None = None,
    t_end: float | None = None,
    cond: Any = None,
    prior_log_prob: Callable[[Array], Array] | None = None,
    divergence_chunk: int | None = None,
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
      solver: ``euler``, ``heun``, ``midpoint`` with ``num_steps`` (a uniform grid), or the adaptive
        ``bosh3``, ``tsit5``, ``dopri5``, ``dopri8`` (``num_steps=None``: ``rtol``/``atol`` control).
      t_start, t_end: integration range; defaults from :func:`default_time_range`.
      prior_log_prob: ``log p_{t_start}`` of the latent ``[B, ...] -> [B]``; default the path's prior.

    Returns:
      A :class:`LikelihoodResult`; ``stderr`` is the standard error of the Hutchinson mean over the
      ``K`` probes (each probe's integral is an unbiased estimate of ``log p``).
    """
    _options(divergence, probe, num_probes, prediction)
    x = _check_x(x)
    d0, d1 = default_time_range(path, prediction)
    t0 = d0 if t_start is None else float(t_start)
    t1 = d1 if t_end is None else float(t_end)
    v.check_time_range(jnp.asarray([t0, t1]), path.t_min, path.t_max, "t_start/t_end")
    if not t0 < t1:
        raise ValueError(f"t_start must be below t_end; got t_start={t0}, t_end={t1}")
    keys = _keys(key, x, divergence)
    cond = jax.tree.map(lambda c: _shard_like_batch(jnp.asarray(c), x), cond)
    z, L, nfe, steps, rejected, ok = _solve_jit(
        model_fn,
        path,
        x,
        keys,
        cond,
        prediction=prediction,
        divergence=divergence,
        num_probes=num_probes,
        probe=probe,
        solver=solver,
        num_steps=num_steps,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        t0=t1,  # backwards: from the data end to the noise end
        t1=t0,
        divergence_chunk=divergence_chunk,
        has_cond=cond is not None,
    )
    prior = (prior_log_prob or path.prior_log_prob)(z)
    delta = -jnp.mean(L, axis=-1)  # log p_end(x) - log p_start(z)
    return LikelihoodResult(
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
    solver: str = "dopri5",
    num_steps: int | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
    t_start: float | None = None,
    t_end: float | None = None,
    cond: Any = None,
    prior_log_prob: Callable[[Array], Array] | None = None,
    divergence_chunk: int | None = None,
) -> tuple[Float[Array, "B ..."], LikelihoodResult]:
    """Samples of the probability-flow ODE and their log-densities, in one forward pass.

    Draws ``z ~ N(0, beta(t_min)^2 I)`` of ``shape = (B, ...)``, solves the augmented ODE from
    ``t_start`` to ``t_end`` and returns ``(x, result)`` with ``result.log_prob = log p(x)``
    (``result.latent`` is ``z``). Same options as :func:`log_likelihood`.
    """
    _options(divergence, probe, num_probes, prediction)
    if len(shape) < 1:
        raise ValueError(f"shape must be (B, ...) with a batch axis; got {shape}")
    d0, d1 = default_time_range(path, prediction)
    t0 = d0 if t_start is None else float(t_start)
    t1 = d1 if t_end is None else float(t_end)
    k_z, k_probe = jax.random.split(key)
    z = path.prior_sample(k_z, tuple(shape))
    keys = jax.random.split(k_probe, shape[0])
    x, L, nfe, steps, rejected, ok = _solve_jit(
        model_fn,
        path,
        z,
        keys,
        cond,
        prediction=prediction,
        divergence=divergence,
        num_probes=num_probes,
        probe=probe,
        solver=solver,
        num_steps=num_steps,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        t0=t0,
        t1=t1,
        divergence_chunk=divergence_chunk,
        has_cond=cond is not None,
    )
    prior = (prior_log_prob or path.prior_log_prob)(z)
    delta = jnp.mean(L, axis=-1)  # L(t_end) = log p_end(x) - log p_start(z)
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
    return x, result
