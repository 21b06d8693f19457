"""Rectified flow (reflow): straighten a trained flow by retraining on its own noise-sample pairs.

Liu et al. (2023): the ODE of a trained flow maps each noise ``x0`` to a sample ``x1``; training a
new flow by conditional flow matching on these *coupled* pairs (straight lines
``x_t = t x1 + (1 - t) x0`` on CondOT) gives the "2-rectified flow", whose trajectories are
straighter (the pairs no longer cross), so few-step Euler sampling improves. Repeating gives
k-rectified flow. Pieces, each usable on its own:

* :func:`generate_couplings` — ``(x0, x1)`` pairs from any model with the ODE sampler;
* :func:`make_coupling_loss` — the flowjax loss of any prediction kind when the batch supplies the
  paired noise (``batch["noise"]``), built from :mod:`flowjax.losses`' objectives;
* :func:`train_on_couplings` — one reflow round through :mod:`flowjax.training`;
* :func:`straightness`, :func:`trajectory_straightness` — Liu et al.'s
  ``S = int E ||(X_1 - X_0) - dX_t/dt||^2 dt`` of ODE trajectories (0 for straight lines);
* :func:`nfe_curve` — the one NFE sweep: a score of each sampler variant's samples, with its NFE.
* :func:`nfe_quality` — sample quality (energy distance to reference data) against the number of
  Euler (or any solver's) function evaluations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, PyTree

from flowjax import _validation as v
from flowjax.data import ArraySource, make_iterator
from flowjax.distances import energy_distance
from flowjax.losses import (
    DEFAULT_T_MARGIN,
    TIME_SAMPLERS,
    WEIGHTINGS,
    check_labels,
    prediction_loss,
    sample_time,
    time_interval,
)
from flowjax.parallel import make_mesh
from flowjax.paths import PREDICTIONS, AbstractPath
from flowjax.sampling import sample, sampling_time_range
from flowjax.solvers import AbstractSolver
from flowjax.training import (
    create_train_state,
    make_optimizer,
    make_train_step,
    train_loop,
)

__all__ = [
    "generate_couplings",
    "make_coupling_loss",
    "nfe_curve",
    "nfe_quality",
    "straightness",
    "train_on_couplings",
    "trajectory_straightness",
]


def _ode_start(path: AbstractPath, prediction: str) -> float:
    """The time the ODE sampler starts from by default (``t_min``, or just after it)."""
    return sampling_time_range(path, prediction=prediction)[0]


# ---------------------------------------------------------------------------- couplings


def generate_couplings(
    model_fn: Callable[..., Array],
    path: AbstractPath,
    key: PRNGKeyArray,
    shape: tuple[int, ...],
    *,
    prediction: str = "velocity",
    solver: str | AbstractSolver = "heun",
    num_steps: int = 100,
    batch_size: int | None = None,
    cond: Any = None,
    **sample_kwargs: Any,
) -> tuple[Float[Array, "N ..."], Float[Array, "N ..."]]:
    """Noise-sample pairs ``(x0, x1)``: ``x1`` is the ODE solution from the noise ``x0``.

    Args:
      model_fn: the trained model (``model_fn(x, t)``, or ``model_fn(x, t, cond)`` with ``cond``).
      path, prediction: its path and prediction kind.
      key: draws the noise ``x0 ~ N(0, I)`` (``[N, ...]`` of ``shape``).
      shape: ``(N, ...)``.
      solver, num_steps: the ODE solver (a :mod:`flowjax.solvers` object or name) and steps.
      batch_size: solve in chunks of this many rows (bounded memory; the last chunk may be
        smaller and compiles once more).
      cond: per-row conditioning ``[N, ...]`` (e.g. labels), passed chunk by chunk.
      sample_kwargs: more options of :func:`flowjax.sampling.sample` (``adaptive``, ``time_grid``...).

    Returns:
      ``(x0, x1)``; the ODE starts from ``beta(t_start) * x0`` at the sampler's default start
      (``beta = 1`` there on CondOT and the VP paths).
    """
    v.choice(prediction, PREDICTIONS, "prediction")
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"shape must be (N, ...) with positive sizes; got {shape}")
    for name in ("method", "x_start", "t_start", "time_grid"):
        if name in sample_kwargs:
            raise ValueError(f"generate_couplings sets {name} itself; got {name}=")
    n = shape[0]
    bs = n if batch_size is None else int(batch_size)
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    x0 = jax.random.normal(key, shape, jnp.result_type(float))
    t0 = _ode_start(path, prediction)
    std = path.beta(jnp.asarray(t0, x0.dtype)).astype(x0.dtype)
    outs = []
    for i in range(0, n, bs):
        chunk_cond = None
        if cond is not None:
            chunk_cond = jax.tree_util.tree_map(lambda c, i=i: jnp.asarray(c)[i : i + bs], cond)
        res = sample(
            model_fn,
            path,
            None,
            None,
            x_start=std * x0[i : i + bs],
            prediction=prediction,
            method="ode",
            solver=solver,
            num_steps=num_steps,
            t_start=t0,
            cond=chunk_cond,
            **sample_kwargs,
        )
        outs.append(res.samples)
    return x0, jnp.concatenate(outs, axis=0)


def make_coupling_loss(
    apply_fn: Callable[..., Array],
    path: AbstractPath,
    *,
    prediction: str = "velocity",
    weighting: str | Callable[..., Array] = "uniform",
    time_sampler: str = "uniform",
    t_margin: float | Sequence[float] = DEFAULT_T_MARGIN,
    num_classes: int | None = None,
    time_sampler_options: Mapping[str, Any] | None = None,
    train: bool = True,
) -> Callable[[PyTree, Mapping[str, Array], PRNGKeyArray], tuple[Array, dict[str, Array]]]:
    """The loss of ``prediction`` on given pairs: ``batch = {"x": x1, "noise": x0[, "label"]}``.

    As :func:`flowjax.losses.make_loss` but the noise partner of each data point is part of the
    batch (a coupling from :func:`generate_couplings`) instead of an independent draw: for a
    velocity model on CondOT this is rectified flow's ``E |v(x_t, t) - (x1 - x0)|^2``. The
    per-example objective is :func:`flowjax.losses.prediction_loss` (any prediction, weighting).

    Returns ``loss_fn(params, batch, key) -> (loss, aux)``; ``aux`` holds ``mse`` and ``t_mean``
    (names :func:`flowjax.training.make_train_step` accepts).
    """
    v.choice(prediction, PREDICTIONS, "prediction (loss)")
    if not callable(weighting):
        v.choice(weighting, WEIGHTINGS, "weighting")
    v.choice(time_sampler, TIME_SAMPLERS, "time sampler")
    if not isinstance(path, AbstractPath):
        raise TypeError(f"path must be a flowjax path (AbstractPath); got {type(path).__name__}")
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int or None; got {num_classes!r}")
    t_lo, t_hi = time_interval(path, t_margin)
    ts_opts = dict(time_sampler_options or {})

    def loss_fn(
        params: PyTree, batch: Mapping[str, Array], key: PRNGKeyArray
    ) -> tuple[Float[Array, ""], dict[str, Array]]:
        if not isinstance(batch, Mapping) or "x" not in batch or "noise" not in batch:
            raise TypeError(
                'batch must be a mapping with the samples under "x" and their paired noise under '
                '"noise"' + (f"; got keys {sorted(batch)}" if isinstance(batch, Mapping) else "")
            )
        x1 = v.require_floating(batch["x"], 'batch["x"]')
        x0 = v.require_floating(batch["noise"], 'batch["noise"]')
        v.require_batched(x1, 'batch["x"]', 2)
        v.require_same_shape(x1, x0, 'batch["x"]', 'batch["noise"]')
        n = x1.shape[0]
        label = None
        if num_classes is not None:
            if batch.get("label") is None:
                raise ValueError(f'num_classes={num_classes} needs batch["label"]')
            label = check_labels(batch["label"], num_classes, name='batch["label"]')
        k_t, k_model = jax.random.split(key)
        t = sample_time(time_sampler, k_t, n, t_min=t_lo, t_max=t_hi, dtype=x1.dtype, **ts_opts)
        xt = path.interpolate(x1, x0, t)
        out = apply_fn(params, xt, t, label, train=train, key=k_model)
        per = prediction_loss(prediction, out, x1, x0, t, path, weighting=weighting)
        loss = jnp.mean(per)
        return loss, {"mse": loss, "t_mean": jnp.mean(t)}

    return loss_fn


def train_on_couplings(
    apply_fn: Callable[..., Array],
    params: PyTree,
    noise: Float[ArrayLike, "N ..."],
    samples: Float[ArrayLike, "N ..."],
    path: AbstractPath,
    *,
    num_steps: int,
    batch_size: int = 256,
    seed: int = 0,
    prediction: str = "velocity",
    labels: ArrayLike | None = None,
    num_classes: int | None = None,
    optimizer: optax.GradientTransformation | None = None,
    lr: float = 1e-3,
    ema_decay: float | None = None,
    ema_warmup: bool = True,
    log_every: int = 500,
    writer: Any = None,
) -> tuple[PyTree, list[dict]]:
    """One reflow round: train ``params`` (e.g. warm-started from the teacher) on the pairs.

    Uses :func:`make_coupling_loss`, a shuffled :func:`flowjax.data.make_iterator` over the pairs
    and :func:`flowjax.training.train_loop` (single process, data parallel over local devices).

    Args:
      apply_fn: ``apply_fn(params, x, t, label, *, train, key)``, e.g.
        ``flowjax.models.make_apply_fn(model)``.
      params: the initial parameters.
      noise, samples: the coupling ``(x0, x1)``, ``[N, ...]`` each.
      path, prediction: the path and prediction kind to train (CondOT velocity: rectified flow).
      num_steps, batch_size, seed: optimisation steps, global batch, data order and loss noise.
      labels, num_classes: class labels ``[N]`` of the pairs for a class-conditional model.
      optimizer: an optax transformation (default: cosine-decayed Adam from ``lr``).
      ema_decay: keep an EMA of the parameters and return it (``None``: the raw parameters).
      ema_warmup: ramp the EMA decay up as ``min(decay, (1+s)/(10+s))``
        (:func:`flowjax.training.ema_decay_at`). On by default: a warm-started average would
        otherwise keep ``decay**num_steps`` of the starting (teacher) weights (14% at 0.999 and
        2,000 steps).
      log_every, writer: logging (:class:`flowjax.training.MetricWriter` or ``None``).

    Returns:
      ``(params, history)``: the trained (or EMA) parameters and the logged records.
    """
    noise = np.asarray(noise)
    samples = np.asarray(samples)
    if noise.shape != samples.shape:
        raise ValueError(f"noise {noise.shape} and samples {samples.shape} must have one shape")
    arrays = {"x": samples, "noise": noise}
    if labels is not None:
        arrays["label"] = np.asarray(labels, np.int32)
    loss_fn = make_coupling_loss(apply_fn, path, prediction=prediction, num_classes=num_classes)
    if optimizer is None:
        optimizer = make_optimizer(
            "adam", lr, schedule="cosine", total_steps=int(num_steps), end_lr=0.05 * lr
        )
    it = make_iterator(ArraySource(arrays), global_batch_size=int(batch_size), seed=int(seed))
    step = make_train_step(
        loss_fn, optimizer, mesh=make_mesh(), ema_decay=ema_decay, ema_warmup=ema_warmup
    )
    state = create_train_state(
        params, optimizer, jax.random.PRNGKey(seed), ema=ema_decay is not None
    )
    state = step.place_state(state)
    result = train_loop(
        state, step, it, num_steps=int(num_steps), writer=writer, log_every=log_every,
        progress=False, handle_signals=(),
    )  # fmt: skip
    final = result.state.ema_params if ema_decay is not None else result.state.params
    return final, result.history


# ---------------------------------------------------------------------------- straightness


def straightness(
    ts: Float[ArrayLike, " S"], trajectory: Float[ArrayLike, "B S ..."]
) -> Float[Array, ""]:
    """Liu et al.'s straightness ``int E ||(X_T - X_0) / T - dX_t/dt||^2 dt / T`` of trajectories.

    ``trajectory[:, i]`` is the state at ``ts[i]`` (``S >= 2`` increasing or decreasing times);
    the derivative is that of the piecewise-linear interpolant (exact for Euler iterates). The
    squared norm sums over the event axes. Zero if and only if every trajectory is a straight
    line traversed at constant speed; ``T = ts[-1] - ts[0]`` (1 for CondOT from noise to data).
    """
    ts = v.as_float_array(ts, "ts")
    traj = v.require_floating(trajectory, "trajectory")
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"ts must be a 1-D array of at least 2 times; got shape {ts.shape}")
    if traj.ndim < 3 or traj.shape[1] != ts.shape[0]:
        raise ValueError(
            f"trajectory must have shape [B, S, ...] with S = {ts.shape[0]} (len(ts)); got "
            f"{traj.shape}"
        )
    ts = ts.astype(traj.dtype)
    dt = jnp.diff(ts)  # [S-1]
    total = ts[-1] - ts[0]
    flat = traj.reshape(traj.shape[0], traj.shape[1], -1)
    chord = (flat[:, -1] - flat[:, 0]) / total  # [B, D]
    vel = jnp.diff(flat, axis=1) / dt[None, :, None]  # [B, S-1, D]
    dev = jnp.mean(jnp.sum(jnp.square(vel - chord[:, None, :]), axis=-1), axis=0)  # [S-1]
    return jnp.sum(dev * dt) / total


def trajectory_straightness(
    model_fn: Callable[..., Array],
    path: AbstractPath,
    key: PRNGKeyArray | None,
    shape: tuple[int, ...] | None,
    *,
    prediction: str = "velocity",
    solver: str | AbstractSolver = "heun",
    num_steps: int = 128,
    x_start: Float[ArrayLike, "B ..."] | None = None,
    cond: Any = None,
) -> Float[Array, ""]:
    """:func:`straightness` of the model's ODE trajectories on a uniform grid of ``num_steps``.

    The trajectories start from ``N(0, beta(t_start)^2 I)`` noise drawn with ``key`` (or from
    ``x_start``) at the ODE sampler's default start and end at its default end.
    """
    t0, t1 = sampling_time_range(path, prediction=prediction)
    dtype = jnp.result_type(float) if x_start is None else jnp.asarray(x_start).dtype
    ts = jnp.linspace(t0, t1, int(num_steps) + 1, dtype=dtype)
    if x_start is None:
        if key is None or shape is None:
            raise ValueError("key and shape are required when x_start is not given")
        x_start = path.beta(ts[0]) * jax.random.normal(key, tuple(shape), dtype)
    res = sample(
        model_fn, path, None, None, x_start=x_start, prediction=prediction, solver=solver,
        time_grid=ts, save_times=ts, cond=cond,
    )  # fmt: skip
    # save_times was given, so the result holds ts and the trajectory
    return straightness(cast(Array, res.ts), cast(Array, res.trajectory))


# ---------------------------------------------------------------------------- NFE vs quality


def nfe_curve(
    run: Callable[..., tuple[Any, ...]],
    variants: Sequence[Mapping[str, Any]],
    score: Callable[[Array], Any],
    *,
    score_name: str = "score",
) -> list[dict[str, Any]]:
    """The one NFE sweep: ``score`` of the samples of each sampler variant, with its NFE.

    Args:
      run: ``run(**variant) -> (samples, nfe)`` or ``(samples, nfe, extras)`` (a dict of further
        row entries, e.g. wall time); the caller fixes the noise (common random numbers) and
        everything the variants share. ``nfe`` may be a Python float (a mean over batches), kept
        as it is; otherwise it is read as an integer.
      variants: the sampler settings to try, e.g. ``[{"num_steps": 4}, {"num_steps": 8}]``.
      score: ``score(samples) -> scalar`` (a distance to reference data, a classifier FD, ...).
      score_name: the row key of the score.

    Returns:
      one dict per variant: the variant's keys, ``nfe``, ``score_name`` and the extras.
    """
    rows = []
    for variant in variants:
        samples, nfe, *extras = run(**variant)
        nfe = nfe if isinstance(nfe, float) else int(nfe)
        row = {**variant, "nfe": nfe, score_name: float(score(samples))}
        rows.append({**row, **(extras[0] if extras else {})})
    return rows


def nfe_quality(
    model_fn: Callable[..., Array],
    path: AbstractPath,
    key: PRNGKeyArray,
    reference: Float[ArrayLike, "M ..."],
    *,
    num_steps: Sequence[int] = (1, 2, 4, 8, 16, 32),
    solver: str | AbstractSolver = "euler",
    prediction: str = "velocity",
    n: int | None = None,
    cond: Any = None,
    statistic: Callable[[Array, Array], Array] | None = None,
) -> list[dict[str, int | float]]:
    """Sample quality against the number of function evaluations (NFE) of a fixed-step ODE solver.

    Every step count starts from the same noise (common random numbers), so differences between
    rows are the solver's, not the draw's.

    Args:
      reference: data samples ``[M, ...]`` to compare with.
      num_steps: the step counts to try.
      n: number of samples (default ``M``).
      statistic: ``statistic(samples, reference)`` (default: energy distance).

    Returns:
      one dict per step count: ``num_steps``, ``nfe`` (as counted by the sampler) and ``distance``.
    """
    reference = v.require_floating(reference, "reference")
    n = reference.shape[0] if n is None else int(n)
    stat = jax.jit(statistic or energy_distance)
    t0 = _ode_start(path, prediction)
    x_start = path.beta(jnp.asarray(t0, reference.dtype)) * jax.random.normal(
        key, (n, *reference.shape[1:]), reference.dtype
    )

    def run(num_steps: int) -> tuple[Array, Array]:
        res = sample(
            model_fn, path, None, None, x_start=x_start, prediction=prediction, solver=solver,
            num_steps=num_steps, t_start=t0, cond=cond,
        )  # fmt: skip
        return res.samples, res.nfe

    rows = nfe_curve(run, [{"num_steps": int(k)} for k in num_steps], lambda x: stat(x, reference))
    return [{"num_steps": r["num_steps"], "nfe": r["nfe"], "distance": r["score"]} for r in rows]
