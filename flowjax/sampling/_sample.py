"""``sample``: one entry point for ODE, SDE, predictor-corrector and annealed Langevin sampling."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from flowjax import _validation as v
from flowjax.paths import PREDICTIONS, AbstractPath
from flowjax.sampling import _ode, _scan
from flowjax.sampling._grids import GRID_NAMES, make_grid, validate_grid
from flowjax.sampling._guidance import guided_model
from flowjax.sampling._langevin import corrector
from flowjax.sampling._model import Field, check_model_output
from flowjax.sampling._sde import NoiseSchedule, noise_schedule
from flowjax.sampling._solvers import ERROR_NORMS, get_solver

METHODS = ("ode", "sde", "pc", "langevin")
BACKENDS = ("auto", "diffrax", "scan")

#: Default start offset from ``t_min`` where a step needs ``alpha > 0`` but ``alpha(t_min) = 0``.
NOISE_END_MARGIN = 1e-3
#: Default end ``1 - DATA_END_MARGIN`` for score-based sampling (score SDE's ``eps = 1e-3``).
DATA_END_MARGIN = 1e-3

#: Backend that ``backend="auto"`` uses for fixed-grid Euler / Euler-Maruyama (the faster one,
#: measured by ``experiments/benchmarks/bench_sampling.py``; see the package docstring).
AUTO_FIXED_EULER_BACKEND = "scan"


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

    def __call__(self, x: Array, t: Array) -> Array:
        return self.model_fn(x, t, self.cond)


class _Config(NamedTuple):
    """Static (hashable) configuration: changing it recompiles, changing arrays does not."""

    prediction: str
    method: str
    solver: str
    stochastic: bool
    num_steps: int
    adaptive: bool
    rtol: float
    atol: float
    error_norm: str
    max_steps: int
    grid_kind: str  # "uniform" | "edm" | "array"
    rho: float
    t_start: float | None
    t_end: float | None
    denoise_final: bool
    corrector_steps: int
    snr: float
    backend: str  # "diffrax" | "scan"
    shape: tuple[int, ...]
    dtype: Any


def _concrete_float(fn: Callable[[], Any]) -> float | None:
    """``float(fn())`` if it can be evaluated now, else ``None`` (a traced path)."""
    try:
        # evaluated now even inside a caller's jit (a path's fields are constants there too)
        with jax.ensure_compile_time_eval():
            val = fn()
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None  # a traced path
    return float(np.asarray(val)) if v.is_concrete(val) else None


def default_time_range(
    path: AbstractPath, *, prediction: str, method: str, sigma: NoiseSchedule
) -> tuple[float, float]:
    """Default ``(t_start, t_end)`` (see :func:`sample`)."""
    needs_alpha = prediction in ("eps", "score") and method != "langevin"
    needs_alpha = needs_alpha or sigma.kind == "reverse"
    score_based = method in ("pc", "langevin") or (method == "sde" and not sigma.is_zero)
    needs_beta = prediction in ("score", "x1")
    args = (path, needs_alpha, score_based, needs_beta)
    try:
        return _ENDS_CACHE[args]
    except TypeError:  # a path holding arrays is not hashable
        return _default_ends(*args)
    except KeyError:
        ends = _ENDS_CACHE[args] = _default_ends(*args)
        return ends


_ENDS_CACHE: dict[tuple, tuple[float, float]] = {}


def _default_ends(
    path: AbstractPath,
    needs_alpha: bool,
    score_based: bool,
    needs_beta: bool,
    data_end_margin: float = DATA_END_MARGIN,
) -> tuple[float, float]:
    t_min, t_max = float(path.t_min), float(path.t_max)
    start, end = t_min, t_max
    if needs_alpha:
        alpha0 = _concrete_float(lambda: path.alpha(jnp.asarray(t_min)))
        if alpha0 is None or alpha0 == 0.0:
            start = t_min + NOISE_END_MARGIN
    if score_based:
        end = min(t_max, 1.0 - data_end_margin)
    elif needs_beta:
        beta1 = _concrete_float(lambda: path.beta(jnp.asarray(t_max)))
        if beta1 is None or beta1 == 0.0:
            end = t_max - data_end_margin
    return start, end


def ode_time_range(
    path: AbstractPath, prediction: str, *, data_end_margin: float = DATA_END_MARGIN
) -> tuple[float, float]:
    """Default ``(t_start, t_end)`` of the probability-flow ODE of a ``prediction`` model.

    The path's whole range where the prediction converts to a velocity; otherwise
    ``t_min + 1e-3`` where eps/score models need ``alpha > 0`` but ``alpha(t_min) = 0``, and
    ``t_max - data_end_margin`` where score/x1 models need ``beta > 0`` but ``beta(t_max) = 0``.
    """
    v.choice(prediction, PREDICTIONS, "prediction")
    return _default_ends(
        path, prediction in ("eps", "score"), False, prediction in ("score", "x1"), data_end_margin
    )


def _check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _check_positive(value: Any, name: str) -> float:
    try:
        val = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive number; got {value!r}") from None
    if not (val > 0 and math.isfinite(val)):
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    return val


def sample(
    model_fn: Callable[..., Array],
    path: AbstractPath,
    key: PRNGKeyArray,
    shape: tuple[int, ...] | None,
    *,
    prediction: str = "velocity",
    method: str = "ode",
    solver: str = "euler",
    num_steps: int = 100,
    adaptive: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    error_norm: str = "max",
    max_steps: int = 4096,
    time_grid: str | ArrayLike = "uniform",
    rho: float = 7.0,
    t_start: float | None = None,
    t_end: float | None = None,
    sigma: float | Callable[[Array], Array] | str = 0.0,
    denoise_final: bool = False,
    corrector_steps: int = 0,
    snr: float = 0.16,
    cond: Any = None,
    guidance_scale: float | None = None,
    null_cond: Any = None,
    save_times: ArrayLike | None = None,
    backend: str = "auto",
    x_start: Float[ArrayLike, "B ..."] | None = None,
    sharding: jax.sharding.Sharding | None = None,
) -> SampleResult:
    """Draw samples by integrating from noise (``t_start``) to data (``t_end``); one XLA program.

    Args:
      model_fn: ``model_fn(x, t)`` (or ``model_fn(x, t, cond)`` with ``cond``), ``x`` ``[B, ...]``,
        ``t`` ``[B]``, returning a prediction of kind ``prediction`` shaped like ``x``. Pass a pytree
        that carries its arrays (an ``equinox.Module``, ``jax.tree_util.Partial(apply, params)``,
        a ``flax.nnx`` module's merged state wrapped likewise): its arrays are traced, so new
        parameter values reuse the compiled program. A plain Python closure is a static argument:
        a new closure object recompiles.
      path: the Gaussian path the model was trained on.
      key: PRNG key; the same key gives the same samples (may be ``None`` for an ODE from a given
        ``x_start``).
      shape: ``(B, ...)`` of the samples (may be ``None`` if ``x_start`` is given).
      prediction: ``velocity``, ``score``, ``eps``, ``x1`` or ``v``.
      method: ``"ode"`` (``sigma = 0``); ``"sde"`` (the SDE extension with noise ``sigma``);
        ``"pc"`` (predictor-corrector: at each grid time ``corrector_steps`` Langevin steps, then
        one predictor step, an ODE step if ``sigma == 0`` else an SDE step); ``"langevin"``
        (annealed Langevin: ``corrector_steps`` Langevin steps at each grid time after the start,
        no predictor; score SDE's corrector-only sampler, NCSN's sampler on VE).
      solver: ODE: euler, heun, midpoint, ralston, bosh3, tsit5, dopri5, dopri8. SDE: euler
        (Euler-Maruyama), heun, shark, sra1 (the last two for additive noise, with error estimates).
      num_steps: grid intervals for fixed steps (for adaptive steps, the initial step is
        ``(t_end - t_start) / num_steps``).
      adaptive: adaptive steps (``PIDController(rtol, atol)``, ``ode`` and ``sde`` only), with the
        largest per-example RMS error as the norm; the step size is shared by the batch. SDEs
        draw their noise from a ``VirtualBrownianTree``.
      error_norm: the adaptive step's error norm: ``"max"`` (default) the largest per-example
        RMS, so every example meets ``rtol``/``atol``; ``"rms"`` the RMS over the whole batch (the
        torchdiffeq / flow_matching convention): fewer steps for a large batch, the worst examples
        less accurate than the tolerance.
      max_steps: step budget for adaptive solves (exceeding it raises at run time).
      time_grid: ``"uniform"`` in ``t``; ``"edm"``: rho-spaced in ``sigma = beta / alpha`` (see
        :func:`flowjax.sampling.time_grid`); or an explicit 1-D array of times (overrides
        ``num_steps``, ``t_start``, ``t_end``).
      t_start, t_end: the time range. Defaults: ``path.t_min``, or ``t_min + 1e-3`` where a step
        needs ``alpha > 0`` but ``alpha(t_min) = 0`` (eps/score models, and ``sigma="reverse"``,
        on CondOT and VP-cosine). End: ``path.t_max`` for ODEs (``t_max - 1e-3`` for score/x1
        models where ``beta(t_max) = 0``); ``min(t_max, 1 - 1e-3)`` for score-based methods (``sde``
        with ``sigma != 0``, ``pc``, ``langevin``), score SDE's margin from the data end where
        ``beta -> 0`` makes a learned score blow up. ODEs may run backwards (``t_start > t_end``).
      sigma: SDE noise ``sigma_t``: a constant >= 0, a callable of a scalar ``t``, or ``"reverse"``
        (``sigma_t^2 = 2 a_t``, the reverse-time SDE of the forward noising process).
      denoise_final: return ``E[x1 | x]`` at ``t_end`` (one more model call).
      corrector_steps: Langevin steps per grid time for ``pc`` and ``langevin`` (>= 1 there).
      snr: the corrector's target signal-to-noise ratio (step-size rule of score SDE).
      cond, guidance_scale, null_cond: conditioning. With ``guidance_scale = w``, classifier-free
        guidance ``uncond + w (cond - uncond)`` from one call of ``model_fn`` on ``[x, x]`` with
        ``[cond, null_cond]`` (``null_cond``: one example's condition, broadcast, or a batch).
      save_times: times at which to also return the state (``res.ts``, ``res.trajectory``),
        inside the time range and ordered in the direction of integration.
      backend: ``"diffrax"``, ``"scan"`` (a plain ``lax.scan`` loop: fixed-grid Euler and
        Euler-Maruyama only) or ``"auto"`` (the faster of the two for fixed-grid Euler, diffrax
        otherwise). The two agree on one grid (the same noise for the same key).
      x_start: the starting state instead of a draw from the prior ``N(0, beta(t_start)^2 I)``
        (e.g. data, to integrate an ODE backwards to noise).
      sharding: optional sharding of the batch, e.g. ``NamedSharding(mesh, P("data"))`` on a mesh
        with ``AxisType.Auto`` axes (GSPMD data parallelism). The prior draw and the noise use
        JAX's partitionable PRNG, so the samples equal the unsharded ones up to rounding.

    Returns:
      A :class:`SampleResult`.
    """
    # ---------------------------------------------------------------- names and numbers
    if not isinstance(path, AbstractPath):
        raise TypeError(f"path must be a flowjax path (AbstractPath); got {type(path).__name__}")
    v.choice(prediction, PREDICTIONS, "prediction")
    v.choice(method, METHODS, "method")
    v.choice(backend, BACKENDS, "backend")
    v.choice(error_norm, ERROR_NORMS, "error_norm")
    sched = noise_schedule(sigma, path)
    if method in ("ode", "langevin") and not sched.is_zero:
        raise ValueError(
            f"sigma={sigma!r} has no effect with method={method!r}; use method='sde' (or 'pc') "
            "for a stochastic sampler"
        )
    if adaptive and method not in ("ode", "sde"):
        raise ValueError(f"adaptive=True is for method 'ode' or 'sde'; got method={method!r}")
    stochastic = method == "sde" or (method == "pc" and not sched.is_zero)
    get_solver(solver, stochastic=stochastic, adaptive=bool(adaptive))  # validates the name
    corrector_steps = _check_positive_int(corrector_steps, "corrector_steps", 0)
    if method in ("pc", "langevin") and corrector_steps == 0:
        raise ValueError(f"method={method!r} needs corrector_steps >= 1 (Langevin steps per time)")
    if method in ("ode", "sde") and corrector_steps:
        raise ValueError(
            f"corrector_steps={corrector_steps} needs method='pc' (or 'langevin'); "
            f"method={method!r} has no corrector"
        )
    snr = _check_positive(snr, "snr")
    num_steps = _check_positive_int(num_steps, "num_steps")
    max_steps = _check_positive_int(max_steps, "max_steps")
    if adaptive:
        rtol, atol = _check_positive(rtol, "rtol"), _check_positive(atol, "atol")
    rho = _check_positive(rho, "rho")

    if key is None and (x_start is None or method != "ode"):
        raise ValueError("key is required unless method='ode' starts from a given x_start")

    # ---------------------------------------------------------------- state
    if x_start is not None:
        # a float32/float16 numpy array stays on the host: the jitted sampler's own dispatch
        # transfers it, cheaper than an eager jnp.asarray (~35 us of a batch-1 call)
        host_ready = isinstance(x_start, np.ndarray) and x_start.dtype in (np.float32, np.float16)
        if not host_ready:
            x_start = v.require_floating(x_start, "x_start")
        v.require_batched(x_start, "x_start")
        if shape is not None and tuple(shape) != x_start.shape:
            raise ValueError(f"shape {tuple(shape)} differs from x_start's shape {x_start.shape}")
        shape = x_start.shape
        dtype = x_start.dtype
    else:
        if shape is None:
            raise ValueError("shape is required when x_start is not given")
        shape = tuple(int(s) for s in shape)
        if len(shape) < 1 or any(s < 1 for s in shape):
            raise ValueError(f"shape must be (B, ...) with positive sizes; got {shape}")
        dtype = jnp.result_type(float)

    # ---------------------------------------------------------------- time range and grid
    grid_arr = None
    if isinstance(time_grid, str):
        v.choice(time_grid, GRID_NAMES, "time_grid")
        grid_kind = time_grid
        d_start, d_end = default_time_range(path, prediction=prediction, method=method, sigma=sched)
        t0 = d_start if t_start is None else float(t_start)
        t1 = d_end if t_end is None else float(t_end)
        v.check_time_range(
            np.array([t0, t1], np.float64), path.t_min, path.t_max, "t_start and t_end"
        )
        if t0 == t1:
            raise ValueError(f"t_start and t_end must differ; both are {t0}")
    else:
        if t_start is not None or t_end is not None:
            raise ValueError("pass either an explicit time_grid array or t_start/t_end, not both")
        grid_arr = validate_grid(time_grid, path, dtype)
        grid_kind = "array"
        num_steps = int(grid_arr.shape[0]) - 1
        t0 = float(grid_arr[0]) if v.is_concrete(grid_arr) else None
        t1 = float(grid_arr[-1]) if v.is_concrete(grid_arr) else None
    if adaptive and grid_kind != "uniform":
        raise ValueError(
            "time_grid only applies to fixed steps; adaptive=True chooses its own steps"
        )
    forward = t0 is None or t1 is None or t0 < t1
    if method != "ode" and not forward:
        raise ValueError(
            f"method={method!r} runs forward in time (noise to data); got t_start={t0} > t_end={t1}"
        )

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

    # ---------------------------------------------------------------- backend
    fixed_euler = not adaptive and solver == "euler"
    if backend == "scan":
        if method in ("ode", "sde", "pc") and not fixed_euler:
            raise ValueError(
                "backend='scan' runs fixed-grid Euler / Euler-Maruyama only; got "
                f"solver={solver!r}, adaptive={adaptive}"
            )
        resolved = "scan"
    elif backend == "diffrax":
        resolved = "diffrax"
    else:
        resolved = AUTO_FIXED_EULER_BACKEND if fixed_euler else "diffrax"

    # ---------------------------------------------------------------- conditioning
    if guidance_scale is not None:
        if cond is None or null_cond is None:
            raise ValueError("guidance_scale needs both cond and null_cond")
        _check_cond(cond, shape[0])
        model = guided_model(model_fn, cond, null_cond, guidance_scale)
    else:
        if null_cond is not None:
            raise ValueError("null_cond is only used with guidance_scale")
        if cond is not None:
            _check_cond(cond, shape[0])
            model = _Conditioned(model_fn, cond)
        else:
            model = model_fn
    if not callable(model):
        raise TypeError(f"model_fn must be callable; got {type(model_fn).__name__}")

    cfg = _Config(
        prediction=prediction,
        method=method,
        solver=solver,
        stochastic=stochastic,
        num_steps=num_steps,
        adaptive=bool(adaptive),
        rtol=float(rtol),
        atol=float(atol),
        error_norm=error_norm,
        max_steps=max_steps,
        grid_kind=grid_kind,
        rho=rho,
        t_start=t0,
        t_end=t1,
        denoise_final=bool(denoise_final),
        corrector_steps=corrector_steps,
        snr=snr,
        backend=resolved,
        shape=tuple(shape),
        dtype=np.dtype(dtype),
    )
    return _sample_jit(model, path, key, x_start, grid_arr, save_arr, sched, sharding, cfg)


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
    key: PRNGKeyArray,
    x_start: Array | None,
    grid_arr: Array | None,
    save_arr: Array | None,
    sched: NoiseSchedule,
    sharding: Any,
    cfg: _Config,
) -> SampleResult:
    dtype = cfg.dtype
    k_prior, k_noise, k_corr = (None,) * 3 if key is None else jax.random.split(key, 3)
    if x_start is None:
        t_first = grid_arr[0] if grid_arr is not None else cfg.t_start
        std = path.beta(jnp.asarray(t_first, dtype)).astype(dtype)
        x0 = std * jax.random.normal(k_prior, cfg.shape, dtype)
    else:
        x0 = x_start
    if sharding is not None:
        x0 = jax.device_put(x0, sharding)
    check_model_output(model, x0)
    field = Field(model, path, cfg.prediction)

    if grid_arr is not None:
        grid = grid_arr
    elif not cfg.adaptive:
        grid = make_grid(
            path,
            cfg.num_steps,
            t_start=cfg.t_start,
            t_end=cfg.t_end,
            kind=cfg.grid_kind,
            rho=cfg.rho,
            dtype=dtype,
        )
    else:
        grid = None
    if grid is not None:
        t0, t1 = grid[0], grid[-1]
    else:
        t0, t1 = jnp.asarray(cfg.t_start, dtype), jnp.asarray(cfg.t_end, dtype)
    n = cfg.num_steps
    zero = jnp.zeros((), jnp.int32)

    if cfg.method in ("ode", "sde"):
        spec = get_solver(cfg.solver, stochastic=cfg.stochastic, adaptive=cfg.adaptive)
        if cfg.backend == "scan":
            step = (
                _scan.euler_maruyama_step(field, sched, k_noise)
                if cfg.stochastic
                else _scan.euler_step(field)
            )
            x, traj = _scan.run_grid(step, x0, grid, save_arr)
            nfe, acc, rej = jnp.asarray(n, jnp.int32), jnp.asarray(n, jnp.int32), zero
        else:
            terms = _ode.make_terms(
                field,
                sched if cfg.stochastic else None,
                x0,
                key=k_noise,
                grid=grid,
                t0=t0,
                t1=t1,
                levy_area=spec.levy_area,
            )
            out = _ode.solve(
                terms,
                spec,
                x0,
                t0=t0,
                t1=t1,
                grid=grid,
                adaptive=cfg.adaptive,
                rtol=cfg.rtol,
                atol=cfg.atol,
                max_steps=cfg.max_steps if cfg.adaptive else n,
                dt0=(t1 - t0) / n,
                save_times=save_arr,
                error_norm=cfg.error_norm,
            )
            x, traj = out.x, out.trajectory
            nfe = jnp.asarray(spec.nfe(out.num_steps), jnp.int32)
            acc = jnp.asarray(out.num_accepted, jnp.int32)
            rej = jnp.asarray(out.num_rejected, jnp.int32)
    else:
        k = cfg.corrector_steps
        if cfg.method == "pc":
            spec = get_solver(cfg.solver, stochastic=cfg.stochastic, adaptive=False)
            predictor = _predictor(field, sched, spec, cfg, x0, k_noise, grid)

            def step(x, i, ta, tb):
                x = corrector(field, x, ta, jax.random.fold_in(k_corr, i), cfg.snr, k)
                return predictor(x, i, ta, tb)

            per_step = k + spec.nfe(1)
        else:  # annealed Langevin

            def step(x, i, ta, tb):
                del ta
                return corrector(field, x, tb, jax.random.fold_in(k_corr, i), cfg.snr, k)

            per_step = k
        x, traj = _scan.run_grid(step, x0, grid, save_arr)
        nfe, acc, rej = jnp.asarray(n * per_step, jnp.int32), jnp.asarray(n, jnp.int32), zero

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
    spec: Any,
    cfg: _Config,
    x0: Array,
    key: PRNGKeyArray,
    grid: Array,
) -> _scan.Step:
    """The predictor step of predictor-corrector sampling on the fixed grid."""
    if cfg.backend == "scan" or (cfg.solver == "euler" and cfg.backend != "diffrax"):
        if cfg.stochastic:
            return _scan.euler_maruyama_step(field, sched, key)
        return _scan.euler_step(field)
    terms = _ode.make_terms(
        field,
        sched if cfg.stochastic else None,
        x0,
        key=key,
        grid=grid,
        t0=grid[0],
        t1=grid[-1],
        levy_area=spec.levy_area,
    )

    def step(x, i, ta, tb):
        del i
        return _ode.single_step(terms, spec, x, ta, tb)

    return step
