"""``sample``: one entry point for ODE, SDE, predictor-corrector, annealed Langevin and EDM sampling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeGuard, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from flowjax import _validation as v
from flowjax import solvers
from flowjax.paths import PREDICTIONS, AbstractPath
from flowjax.sampling import _edm, _terms
from flowjax.sampling._langevin import corrector
from flowjax.sampling._methods import (
    AbstractSamplingMethod,
    AnnealedLangevin,
    EDMStochastic,
    PredictorCorrector,
    get_method,
)
from flowjax.sampling._model import Field, check_model_output
from flowjax.sampling._onestep import AbstractFewStepMethod, run_few_step
from flowjax.sampling._sde import NoiseSchedule, noise_schedule

#: Default end ``1 - SAMPLING_DATA_END_MARGIN`` of score-based sampling (score SDE's ``eps = 1e-3``),
#: and the end's offset from ``t_max`` where a score/x1 model needs ``beta > 0`` there.
SAMPLING_DATA_END_MARGIN = 1e-3


class SampleResult(eqx.Module):
    """What :func:`sample` returns (a pytree).

    Attributes:
      samples: ``[B, ...]`` the final states (``E[x1 | x]`` if ``denoise_final``).
      nfe: number of model calls made (a guided call on the doubled batch counts once).
      num_accepted, num_rejected: solver steps (fixed grids: ``num_steps`` and 0).
      ts: ``[S]`` the ``save_times`` (``None`` if not requested).
      trajectory: ``[B, S, ...]`` the states at ``ts`` (batch first; ``None`` if not requested).
    """

    samples: Float[Array, "B ..."]
    nfe: Int[Array, ""]
    num_accepted: Int[Array, ""]
    num_rejected: Int[Array, ""]
    ts: Float[Array, " S"] | None = None
    trajectory: Float[Array, "B S ..."] | None = None


class _Conditioned(eqx.Module):
    """``model_fn(x, t, cond)`` as ``model_fn(x, t)``; ``cond`` stays a dynamic pytree leaf."""

    model_fn: Callable[..., Array]
    cond: Any

    def __call__(self, x: Array, t: Array, **kw: Any) -> Array:
        return self.model_fn(x, t, self.cond, **kw)


class _Config(NamedTuple):
    """Static configuration: changing it recompiles, changing arrays does not."""

    prediction: str
    method: AbstractSamplingMethod
    solver: solvers.AbstractSolver | None  # None for annealed Langevin
    stochastic: bool
    num_steps: int
    adaptive: solvers.Adaptive | None
    grid: solvers.AbstractTimeGrid | None  # None: an explicit array (or adaptive steps)
    t_start: float | None
    t_end: float | None
    denoise_final: bool
    scan: bool  # fixed-grid Euler / Euler-Maruyama on the plain lax.scan loop
    shape: tuple[int, ...]
    dtype: Any


def _uses_exponential(solver: Any) -> TypeGuard[solvers.AbstractExponentialSolver]:
    return isinstance(solver, solvers.AbstractExponentialSolver)


def sampling_time_range(
    path: AbstractPath,
    *,
    prediction: str = "velocity",
    method: str | AbstractSamplingMethod = "ode",
    solver: str | solvers.AbstractSolver = "euler",
) -> tuple[float, float]:
    """Default ``(t_start, t_end)`` of :func:`sample` (see its ``t_start, t_end``)."""
    v.choice(prediction, PREDICTIONS, "prediction")
    m = get_method(method)
    sched = noise_schedule(m.sigma, path)
    finite = isinstance(solver, solvers.AbstractExponentialSolver) and solver.finite_ends
    if isinstance(solver, str) and m.kind == "ode":
        obj = solvers.ODE_SOLVERS.get(solver)
        finite = isinstance(obj, solvers.AbstractExponentialSolver) and obj.finite_ends
    needs_alpha = (prediction in ("eps", "score") and m.kind != "langevin") or finite
    needs_alpha = needs_alpha or sched.kind == "reverse" or m.kind == "edm"
    score_based = m.kind in ("pc", "langevin") or (m.kind == "sde" and not sched.is_zero)
    return solvers.solve_ends(
        path,
        needs_alpha=needs_alpha,
        needs_beta=prediction in ("score", "x1") or finite,
        data_end_margin=SAMPLING_DATA_END_MARGIN,
        fixed_end_margin=score_based,
    )


def _check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _resolve_solver(
    solver: Any, method: AbstractSamplingMethod, stochastic: bool, adaptive: bool
) -> solvers.AbstractSolver:
    kind = method.kind
    obj = solvers.get_solver(solver, stochastic=stochastic, adaptive=adaptive)
    if kind == "edm" and not isinstance(obj, solvers.Euler | solvers.Heun):
        raise ValueError(
            "method='edm' steps with solver 'heun' (Karras et al.'s Algorithm 2) or 'euler'; got "
            f"{solver!r}"
        )
    if _uses_exponential(obj) and kind != "ode":
        raise ValueError(
            f"{type(obj).__name__} integrates the probability-flow ODE: use it with method='ode' "
            f"(got method={kind!r})"
        )
    if kind == "pc" and not isinstance(obj, solvers.AbstractDiffraxSolver):
        raise ValueError(
            f"the predictor of method='pc' must be a Runge-Kutta solver; got {solver!r}"
        )
    return obj


def _check_finite_ends(path: AbstractPath, obj: Any, kind: str, t0: Any, t1: Any) -> None:
    """Solvers that divide by ``alpha`` at the start (or ``beta`` at the end) get a clear error."""
    needs_start = kind == "edm" or (_uses_exponential(obj) and obj.finite_ends)
    needs_end = _uses_exponential(obj) and obj.finite_ends
    what = "method='edm'" if kind == "edm" else type(obj).__name__
    if needs_start and t0 is not None:
        a0 = v.concrete_float(lambda: path.alpha(jnp.asarray(t0)))
        if a0 == 0.0:
            raise ValueError(
                f"{what} needs alpha > 0 at the start (finite sigma = beta/alpha); "
                f"alpha(t_start={t0}) = 0 on {type(path).__name__}: start later, e.g. "
                f"t_start={t0 + solvers.NOISE_END_MARGIN} (the default)"
            )
    if needs_end and t1 is not None:
        b1 = v.concrete_float(lambda: path.beta(jnp.asarray(t1)))
        if b1 == 0.0:
            raise ValueError(
                f"{what} needs beta > 0 at the end (finite log-SNR); beta(t_end={t1}) = 0 on "
                f"{type(path).__name__}: end earlier, e.g. t_end={t1 - SAMPLING_DATA_END_MARGIN} "
                "(the default)"
            )


def sample(
    model_fn: Callable[..., Array],
    path: AbstractPath,
    key: PRNGKeyArray | None,
    shape: tuple[int, ...] | None,
    *,
    prediction: str = "velocity",
    method: str | AbstractSamplingMethod = "ode",
    solver: str | solvers.AbstractSolver = "euler",
    num_steps: int = 100,
    time_grid: str | solvers.AbstractTimeGrid | ArrayLike = "uniform",
    adaptive: bool | solvers.Adaptive = False,
    t_start: float | None = None,
    t_end: float | None = None,
    cond: Any = None,
    x_start: Float[ArrayLike, "B ..."] | None = None,
    save_times: ArrayLike | None = None,
    denoise_final: bool = False,
    sharding: jax.sharding.Sharding | None = None,
) -> SampleResult:
    """Draw samples by integrating from noise (``t_start``) to data (``t_end``); one XLA program.

    Args:
      model_fn: ``model_fn(x, t)`` (or ``model_fn(x, t, cond)`` with ``cond``), ``x`` ``[B, ...]``,
        ``t`` ``[B]``, returning a prediction of kind ``prediction`` shaped like ``x``. Pass a pytree
        that carries its arrays (an ``equinox.Module``, ``jax.tree_util.Partial(apply, params)``):
        its arrays are traced, so new parameter values reuse the compiled program. A plain Python
        closure is a static argument: a new closure object recompiles. Classifier-free guidance
        is a wrapped model: :func:`flowjax.sampling.guided_model` (or
        :func:`flowjax.guidance.classifier_free` for class labels).
      path: the Gaussian path the model was trained on.
      key: PRNG key; the same key gives the same samples (may be ``None`` for an ODE from a given
        ``x_start``).
      shape: ``(B, ...)`` of the samples (may be ``None`` if ``x_start`` is given).
      prediction: ``velocity``, ``score``, ``eps``, ``x1`` or ``v``.
      method: a method object or its shortcut name: :class:`ODE` (``"ode"``), :class:`SDE`
        (``"sde"``: ``sigma="reverse"``), :class:`PredictorCorrector` (``"pc"``),
        :class:`AnnealedLangevin` (``"langevin"``), :class:`EDMStochastic` (``"edm"``), and the
        few-step methods :class:`MeanFlow` (``"meanflow"``, ``model_fn(x, t, t2=r)``),
        :class:`Shortcut` (``"shortcut"``, ``model_fn(x, t, t2=d)``) and :class:`Consistency`
        (``"consistency"``): one model call per grid interval (see :mod:`flowjax.sampling._onestep`).
      solver: a :mod:`flowjax.solvers` object or its shortcut name. ODE: euler, heun, midpoint,
        ralston, bosh3, tsit5, dopri5, dopri8, and the exponential integrators dpmpp_2m, dpmpp_3m,
        dpmpp_2s, unipc, unipc_3 (fixed grids). SDE (and ``pc`` with ``sigma != 0``): euler
        (Euler-Maruyama), heun, shark, sra1. ``edm``: heun (Algorithm 2) or euler. ``Euler(backend=
        "scan" | "diffrax" | "auto")`` chooses the fixed-grid loop.
      num_steps: grid intervals for fixed steps (for adaptive steps, the first step tried is
        ``(t_end - t_start) / num_steps``).
      time_grid: ``"uniform"`` in ``t``, ``"edm"`` (rho-spaced in ``sigma = beta / alpha``),
        ``"logsnr"`` (uniform in ``log(alpha / beta)``), a grid object (``EDMGrid(rho=5.0)``), or an
        explicit 1-D array of times (overrides ``num_steps``, ``t_start``, ``t_end``).
      adaptive: ``False`` (the fixed grid), ``True`` (:class:`flowjax.solvers.Adaptive` defaults) or
        an ``Adaptive(rtol, atol, error_norm, max_steps)`` (``ode`` and ``sde``; a solver with an
        error estimate). One step size for the batch; SDEs draw their noise from a
        ``VirtualBrownianTree``.
      t_start, t_end: the time range; defaults: :func:`sampling_time_range`. Start:
        ``path.t_min``, or ``t_min + 1e-3`` where a step needs ``alpha > 0`` but ``alpha(t_min) = 0``
        (eps/score models, ``sigma="reverse"``, ``edm``, ``dpmpp_2s``). End: ``path.t_max`` for ODEs
        (``t_max - 1e-3`` for score/x1 models and ``dpmpp_2s`` where ``beta(t_max) = 0``);
        ``min(t_max, 1 - 1e-3)`` for score-based methods (``sde`` with ``sigma != 0``, ``pc``,
        ``langevin``), score SDE's margin where ``beta -> 0`` makes a learned score blow up. ODEs
        with Runge-Kutta solvers may run backwards (``t_start > t_end``).
      cond: conditioning passed as ``model_fn(x, t, cond)``: a pytree of ``[B, ...]`` arrays.
      x_start: the starting state instead of a draw from the prior ``N(0, beta(t_start)^2 I)``
        (e.g. data, to integrate an ODE backwards to noise).
      save_times: times at which to also return the state (``res.ts``, ``res.trajectory``),
        inside the time range and ordered in the direction of integration.
      denoise_final: return ``E[x1 | x]`` at ``t_end`` (one more model call).
      sharding: optional sharding of the batch, e.g. ``NamedSharding(mesh, P("data"))`` on a mesh
        with ``AxisType.Auto`` axes (GSPMD data parallelism); ``cond`` is laid out likewise. The
        prior draw and the noise use JAX's partitionable PRNG, so the samples equal the unsharded
        ones up to rounding.

    Returns:
      A :class:`SampleResult`.
    """
    # ---------------------------------------------------------------- names and numbers
    if not isinstance(path, AbstractPath):
        raise TypeError(f"path must be a flowjax path (AbstractPath); got {type(path).__name__}")
    v.choice(prediction, PREDICTIONS, "prediction")
    meth = get_method(method)
    kind = meth.kind
    sched = noise_schedule(meth.sigma, path)
    adapt = solvers.as_adaptive(adaptive)
    if adapt is not None and not meth.adaptive_ok:
        raise ValueError(f"adaptive steps are for method 'ode' or 'sde'; got method={kind!r}")
    stochastic = kind == "sde" or (kind == "pc" and not sched.is_zero)
    solver_obj = _resolve_solver(solver, meth, stochastic, adapt is not None)
    num_steps = _check_positive_int(num_steps, "num_steps")
    if isinstance(meth, AbstractFewStepMethod):
        _check_few_step(meth, prediction, solver, denoise_final, save_times)
    if key is None and (x_start is None or kind not in ("ode", "meanflow", "shortcut")):
        raise ValueError("key is required unless method='ode' starts from a given x_start")

    # ---------------------------------------------------------------- state
    if x_start is not None:
        # a float32/float16 numpy array stays on the host: the jitted sampler's own dispatch
        # transfers it, cheaper than an eager jnp.asarray
        host_ready = isinstance(x_start, np.ndarray) and x_start.dtype in (np.float32, np.float16)
        _check_x_start_finite(x_start)
        x_start = (
            cast(np.ndarray, x_start) if host_ready else v.require_floating(x_start, "x_start")
        )
        v.require_batched(x_start, "x_start", min_ndim=2)
        if x_start.shape[0] < 1 or any(s < 1 for s in x_start.shape):
            raise ValueError(f"x_start must hold at least one example; got shape {x_start.shape}")
        if shape is not None and tuple(shape) != x_start.shape:
            raise ValueError(f"shape {tuple(shape)} differs from x_start's shape {x_start.shape}")
        shape = x_start.shape
        dtype = x_start.dtype
    else:
        if shape is None:
            raise ValueError("shape is required when x_start is not given")
        shape = _check_shape(shape)
        dtype = jnp.result_type(float)

    # ---------------------------------------------------------------- time range and grid
    grid_arr, grid_obj = None, None
    if isinstance(time_grid, str | solvers.AbstractTimeGrid):
        grid_obj = solvers.get_grid(time_grid)
        d_start, d_end = sampling_time_range(
            path, prediction=prediction, method=meth, solver=solver_obj
        )
        t0: float | None = d_start if t_start is None else float(t_start)
        t1: float | None = d_end if t_end is None else float(t_end)
        v.check_time_range(
            np.array([t0, t1], np.float64), path.t_min, path.t_max, "t_start and t_end"
        )
        if t0 == t1:
            raise ValueError(f"t_start and t_end must differ; both are {t0}")
    else:
        if t_start is not None or t_end is not None:
            raise ValueError("pass either an explicit time_grid array or t_start/t_end, not both")
        grid_arr = solvers.validate_grid(time_grid, path, dtype)
        num_steps = int(grid_arr.shape[0]) - 1
        t0 = float(grid_arr[0]) if v.is_concrete(grid_arr) else None
        t1 = float(grid_arr[-1]) if v.is_concrete(grid_arr) else None
    if adapt is not None and not isinstance(grid_obj, solvers.UniformGrid):
        raise ValueError("time_grid only applies to fixed steps; adaptive steps choose their own")
    forward = t0 is None or t1 is None or t0 < t1
    if not forward and (kind != "ode" or _uses_exponential(solver_obj)):
        what = f"method={kind!r}" if kind != "ode" else type(solver_obj).__name__
        raise ValueError(
            f"{what} runs forward in time (noise to data); got t_start={t0} > t_end={t1}"
        )
    if _uses_exponential(solver_obj) and num_steps < solver_obj.min_steps:
        raise ValueError(
            f"{solver_obj!r} is a multistep solver of order {solver_obj.min_steps}: it needs "
            f"num_steps >= {solver_obj.min_steps} grid intervals; got {num_steps}"
        )
    _check_finite_ends(path, solver_obj, kind, t0, t1)

    save_arr = None
    if save_times is not None:
        save_arr = jnp.asarray(save_times, dtype)
        if save_arr.ndim != 1 or save_arr.shape[0] < 1:
            raise ValueError(f"save_times must be a 1-D array of times; got shape {save_arr.shape}")
        if t0 is not None and t1 is not None:
            lo, hi = min(t0, t1), max(t0, t1)
            v.check_time_range(save_arr, lo, hi, "save_times")
        if v.is_concrete(save_arr) and save_arr.shape[0] > 1:
            d = np.diff(np.asarray(save_arr)) * (1 if forward else -1)
            if np.any(d < 0):
                raise ValueError("save_times must be ordered in the direction of integration")

    # ---------------------------------------------------------------- Euler's loop
    # (Euler has no error estimate: adaptive steps never reach here with it)
    scan = isinstance(solver_obj, solvers.Euler) and solver_obj.backend != "diffrax"

    # ---------------------------------------------------------------- conditioning
    model = model_fn
    if cond is not None:
        _check_cond(cond, shape[0])
        if sharding is not None:
            cond = jax.tree_util.tree_map(lambda c: jax.device_put(jnp.asarray(c), sharding), cond)
        model = _Conditioned(model_fn, cond)
    if not callable(model):
        raise TypeError(f"model_fn must be callable; got {type(model_fn).__name__}")

    cfg = _Config(
        prediction=prediction,
        method=meth,
        solver=solver_obj,
        stochastic=stochastic,
        num_steps=num_steps,
        adaptive=adapt,
        grid=grid_obj if grid_arr is None else None,
        t_start=t0,
        t_end=t1,
        denoise_final=bool(denoise_final),
        scan=scan,
        shape=tuple(shape),
        dtype=np.dtype(dtype),
    )
    return _sample_jit(model, path, key, x_start, grid_arr, save_arr, sched, sharding, cfg)


def _check_few_step(
    meth: AbstractFewStepMethod, prediction: str, solver: Any, denoise_final: bool, save_times: Any
) -> None:
    """What the few-step methods (MeanFlow, shortcut, consistency) do not take."""
    name = f"method={meth.kind!r}"
    if prediction not in meth.predictions:
        raise ValueError(
            f"{name}: the model's output is fixed by the method; prediction must be one of "
            f"{meth.predictions}, got {prediction!r}"
        )
    if not (solver == "euler" or type(solver) is solvers.Euler):
        raise ValueError(f"{name} takes its own steps; leave solver at its default, got {solver!r}")
    if denoise_final:
        raise ValueError(f"{name} does not take denoise_final")
    if save_times is not None and meth.kind == "consistency":
        raise ValueError("method='consistency' re-noises between steps: save_times do not apply")


def _check_shape(shape: Any) -> tuple[int, ...]:
    """``(B, *event_shape)`` with positive sizes and at least one event axis (a model maps states
    ``[B, ...]`` with times ``[B]``; ``(B,)`` has no event axis for it to map)."""
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple of ints (B, ...); got {shape!r}") from None
    if len(shape) < 2:
        raise ValueError(
            f"shape must be (B, *event_shape) with at least one event axis, e.g. (B, 2) for 2-D "
            f"points; got {shape}"
        )
    if any(s < 1 for s in shape):
        raise ValueError(f"shape must be (B, ...) with positive sizes; got {shape}")
    return shape


def _check_x_start_finite(x_start: Any) -> None:
    """A NaN or infinity in ``x_start`` would silently give NaN samples: refuse it by name.

    Host data (NumPy arrays, lists) are checked on the host; a concrete JAX array is checked where
    reading it costs no transfer (CPU). Other JAX arrays, and traced ones, are checked inside the
    compiled sampler in checked mode (:func:`flowjax.checked`).
    """
    if isinstance(x_start, jax.Array):
        if not v.is_concrete(x_start):
            return
        if not all(d.platform == "cpu" for d in x_start.devices()):
            return
        if not jnp.issubdtype(x_start.dtype, jnp.floating):
            return  # refused by dtype next
        v.check_finite(x_start, "x_start")
        return
    arr = np.asarray(x_start)
    if np.issubdtype(arr.dtype, np.floating):
        v.check_finite(arr, "x_start")


def _check_cond(cond: Any, batch: int) -> None:
    for leaf in jax.tree_util.tree_leaves(cond):
        leaf = jnp.asarray(leaf)
        if leaf.ndim < 1 or leaf.shape[0] != batch:
            raise ValueError(
                f"cond must have a leading batch axis of size B = {batch}; got a leaf of shape "
                f"{leaf.shape}"
            )


@eqx.filter_jit
def _sample_jit(
    model: Callable[[Array, Array], Array],
    path: AbstractPath,
    key: PRNGKeyArray | None,
    x_start: Array | np.ndarray | None,
    grid_arr: Array | None,
    save_arr: Array | None,
    sched: NoiseSchedule,
    sharding: Any,
    cfg: _Config,
) -> SampleResult:
    dtype = cfg.dtype
    # the keys are None only for method='ode' from a given x_start, which draws nothing
    keys: Any = (None,) * 3 if key is None else jax.random.split(key, 3)
    k_prior, k_noise, k_corr = keys
    if x_start is None:
        t_first = grid_arr[0] if grid_arr is not None else cfg.t_start
        std = path.beta(jnp.asarray(t_first, dtype)).astype(dtype)
        x0 = std * jax.random.normal(k_prior, cfg.shape, dtype)
    else:
        x0 = cast(Array, x_start)  # traced here: filter_jit traces numpy arrays too
        v.check_finite(x0, "x_start")  # a traced x_start: in checked mode only
    if sharding is not None:
        x0 = jax.device_put(x0, sharding)
    if isinstance(cfg.method, AbstractFewStepMethod):
        cfg.method.check_model(model, x0)
    else:
        check_model_output(model, x0)
    field = Field(model, path, cfg.prediction)

    grid: Array | None
    if grid_arr is not None:
        grid = grid_arr
    elif cfg.adaptive is None:
        # a grid object is set whenever no explicit array is (see _Config.grid)
        grid = cast(solvers.AbstractTimeGrid, cfg.grid)(
            path, cfg.num_steps, cfg.t_start, cfg.t_end, dtype
        )
    else:
        grid = None
    if grid is not None:
        t0, t1 = grid[0], grid[-1]
    else:
        t0, t1 = jnp.asarray(cfg.t_start, dtype), jnp.asarray(cfg.t_end, dtype)
    # every method but adaptive 'ode'/'sde' (solved by diffrax) steps on a fixed grid
    fixed_grid = cast(Array, grid)
    n = cfg.num_steps
    steps = jnp.asarray(n, jnp.int32)
    zero = jnp.zeros((), jnp.int32)
    kind = cfg.method.kind
    solver = cfg.solver

    if isinstance(cfg.method, AbstractFewStepMethod):
        x, traj, nfe = run_few_step(cfg.method, model, path, x0, fixed_grid, k_noise, save_arr)
        acc, rej = steps, zero
    elif kind in ("ode", "sde") and isinstance(solver, solvers.AbstractExponentialSolver):
        x, traj = solver.integrate(
            lambda y, t: field.to("x1", y, t), path, x0, fixed_grid, save_arr
        )
        nfe, acc, rej = jnp.asarray(solver.nfe(n), jnp.int32), steps, zero
    elif kind in ("ode", "sde") and cfg.scan:
        step = (
            _terms.euler_maruyama_step(field, sched, k_noise)
            if cfg.stochastic
            else _terms.euler_step(field)
        )
        x, traj, _ = solvers.scan_grid(step, x0, fixed_grid, save_arr)
        nfe, acc, rej = steps, steps, zero
    elif kind in ("ode", "sde"):
        # the remaining solvers of 'ode'/'sde' are diffrax's (see _resolve_solver)
        solver = cast(solvers.AbstractDiffraxSolver, solver)
        terms = _terms.make_terms(
            field,
            sched if cfg.stochastic else None,
            x0,
            key=k_noise,
            grid=grid,
            t0=t0,
            t1=t1,
            levy_area=solver.levy_area,
        )
        out = solvers.integrate(
            terms,
            solver,
            x0,
            t0=t0,
            t1=t1,
            grid=grid,
            adaptive=cfg.adaptive,
            dt0=(t1 - t0) / n,
            save_times=save_arr,
        )
        x, traj = out.y, out.trajectory
        nfe, acc, rej = out.nfe, out.num_accepted, out.num_rejected
    elif kind == "edm":
        edm = cast(EDMStochastic, cfg.method)
        step, nfe = _edm.edm_step(
            field, path, edm, fixed_grid, k_noise, heun=isinstance(solver, solvers.Heun)
        )
        x, traj, _ = solvers.scan_grid(step, x0, fixed_grid, save_arr)
        nfe, acc, rej = nfe.astype(jnp.int32), steps, zero
    elif kind == "pc":
        pc = cast(PredictorCorrector, cfg.method)
        k, snr = pc.corrector_steps, pc.snr
        pc_solver = cast(solvers.AbstractDiffraxSolver, solver)  # a Runge-Kutta predictor
        predictor = _predictor(field, sched, pc_solver, cfg, x0, k_noise, fixed_grid)

        def pc_step(x, carry, i, ta, tb):
            x = corrector(field, x, ta, jax.random.fold_in(k_corr, i), snr, k)
            return predictor(x, carry, i, ta, tb)

        x, traj, _ = solvers.scan_grid(pc_step, x0, fixed_grid, save_arr)
        nfe, acc, rej = jnp.asarray(n * (k + pc_solver.nfe(1)), jnp.int32), steps, zero
    else:  # annealed Langevin
        langevin = cast(AnnealedLangevin, cfg.method)
        k, snr = langevin.steps, langevin.snr

        def langevin_step(x, carry, i, ta, tb):
            del ta
            return corrector(field, x, tb, jax.random.fold_in(k_corr, i), snr, k), carry

        x, traj, _ = solvers.scan_grid(langevin_step, x0, fixed_grid, save_arr)
        nfe, acc, rej = jnp.asarray(n * k, jnp.int32), steps, zero

    if cfg.denoise_final:
        x = field.to("x1", x, t1)
        nfe = nfe + 1
    trajectory = None if traj is None else jnp.moveaxis(traj, 0, 1)
    if sharding is not None:
        # Without a constraint on the outputs XLA may choose to replicate the whole loop (every
        # device computing every sample); pinning the results to the batch sharding splits it.
        x = jax.lax.with_sharding_constraint(x, sharding)
        if trajectory is not None:
            trajectory = jax.lax.with_sharding_constraint(trajectory, sharding)
    return SampleResult(x, nfe, acc, rej, save_arr, trajectory)


def _predictor(
    field: Field,
    sched: NoiseSchedule,
    solver: solvers.AbstractDiffraxSolver,
    cfg: _Config,
    x0: Array,
    key: PRNGKeyArray,
    grid: Array,
) -> solvers.GridStep:
    """The predictor step of predictor-corrector sampling on the fixed grid."""
    if cfg.scan:
        if cfg.stochastic:
            return _terms.euler_maruyama_step(field, sched, key)
        return _terms.euler_step(field)
    terms = _terms.make_terms(
        field,
        sched if cfg.stochastic else None,
        x0,
        key=key,
        grid=grid,
        t0=grid[0],
        t1=grid[-1],
        levy_area=solver.levy_area,
    )

    def step(x, carry, i, ta, tb):
        del i
        return solvers.single_step(terms, solver, x, ta, tb), carry

    return step
