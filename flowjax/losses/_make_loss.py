"""``make_loss``: the training loss of any parameterization on any path, as one pure function."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from flowjax import _validation as v
from flowjax.losses._conditioning import check_labels, drop_labels
from flowjax.losses._coupling import COUPLINGS, couple
from flowjax.losses._objectives import REDUCTIONS, squared_error
from flowjax.losses._time_sampling import (
    DEFAULT_T_MARGIN,
    TIME_SAMPLERS,
    sample_time,
    time_interval,
)
from flowjax.losses._weighting import WEIGHTINGS, WeightFn, conversion_weight, loss_weight
from flowjax.paths import PREDICTIONS, AbstractPath

__all__ = ["ApplyFn", "LossFn", "make_loss"]


@runtime_checkable
class ApplyFn(Protocol):
    """``apply_fn(params, x, t, label, *, train, key) -> prediction`` of ``x``'s shape.

    ``x`` is ``[B, ...]``, ``t`` is ``[B]``, ``label`` is ``[B]`` int32 or ``None``, ``key`` is the
    dropout key. :func:`flowjax.models.make_apply_fn` builds one from a Flax model.
    """

    def __call__(
        self,
        params: PyTree,
        x: Array,
        t: Array,
        label: Array | None,
        *,
        train: bool,
        key: PRNGKeyArray | None,
    ) -> Array: ...


#: ``loss_fn(params, batch, key) -> (loss, aux)``.
LossFn = Callable[[PyTree, Mapping[str, Array], PRNGKeyArray], tuple[Array, dict[str, Array]]]


def make_loss(
    apply_fn: ApplyFn,
    path: AbstractPath,
    *,
    prediction: str = "velocity",
    weighting: str | WeightFn = "uniform",
    time_sampler: str = "uniform",
    t_margin: float | Sequence[float] = DEFAULT_T_MARGIN,
    label_dropout: float = 0.0,
    num_classes: int | None = None,
    coupling: str | None = None,
    reduction: str = "mean",
    min_snr_gamma: float = 5.0,
    time_sampler_options: Mapping[str, Any] | None = None,
    coupling_options: Mapping[str, Any] | None = None,
    train: bool = True,
) -> LossFn:
    """Build the pure loss ``loss_fn(params, batch, key) -> (loss, aux)``.

    For each example of ``batch["x"]`` (the data ``x1``, ``[B, ...]`` floating) the loss draws noise
    ``eps ~ N(0, I)`` (re-paired with the data by ``coupling``), a time ``t`` from ``time_sampler``
    inside ``[path.t_min + margin, path.t_max - margin]``, forms ``x = alpha x1 + beta eps`` and
    regresses ``apply_fn(params, x, t, label, train=train, key=...)`` on the conditional target of
    ``prediction`` with the per-example weight of ``weighting``. ``loss`` is the batch mean.

    Args:
      apply_fn: the model, see :class:`ApplyFn`.
      path: the Gaussian path.
      prediction: what the model predicts: ``velocity`` (conditional flow matching), ``score``
        (denoising score matching), ``eps`` (DDPM), ``x1`` or ``v``.
      weighting: one of ``uniform``, ``velocity``, ``score``, ``eps``, ``x1``, ``v`` (the loss of
        that parameterization), ``snr``, ``truncated_snr``, ``min_snr``, ``likelihood``, or a
        callable ``fn(prediction, path, t)``; see :func:`flowjax.losses.loss_weight`.
      time_sampler: ``uniform``, ``logit_normal``, ``stratified`` or ``antithetic``.
      t_margin: distance kept from each end of the path's valid range (one number or
        ``(low, high)``); the default 1e-3 keeps every weighting finite.
      label_dropout: probability of replacing a label by the null label ``num_classes``
        (classifier-free guidance training). Needs ``num_classes``.
      num_classes: ``K`` for a class-conditional model: ``batch["label"]`` (``[B]`` ints in
        ``[0, K)``) is then required and passed to the model. ``None``: unconditional, the model
        gets ``label=None`` (a ``"label"`` entry in the batch is ignored).
      coupling: ``None`` (independent pairs), ``"ot"`` (exact minibatch OT, a permutation of the
        noise) or ``"sinkhorn"`` (entropic OT plan); see :func:`flowjax.losses.couple`.
      reduction: the squared error is averaged (``"mean"``) or summed (``"sum"``, for the
        likelihood bound in nats) over the non-batch axes.
      min_snr_gamma: the cap of ``weighting="min_snr"``.
      time_sampler_options: extra options of the time sampler (``loc``, ``scale`` of logit-normal).
      coupling_options: extra options of the coupling (``epsilon`` of Sinkhorn).
      train: passed to the model (dropout on).

    Returns:
      ``loss_fn(params, batch, key)``; ``aux`` holds scalars: ``mse`` (the unweighted
      squared error of ``prediction``), ``mse_<p>`` for every prediction ``p`` (the same model error
      seen in parameterization ``p``: the uniform loss ``p`` would report), ``t_mean``,
      ``weight_mean``.
    """
    v.choice(prediction, PREDICTIONS, "prediction (loss)")
    if not callable(weighting):
        v.choice(weighting, WEIGHTINGS, "weighting")
    v.choice(time_sampler, TIME_SAMPLERS, "time sampler")
    v.choice(reduction, REDUCTIONS, "reduction")
    if coupling is not None:
        v.choice(coupling, COUPLINGS, "coupling")
    if not isinstance(path, AbstractPath):
        raise TypeError(f"path must be a flowjax path (AbstractPath); got {type(path).__name__}")
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int or None; got {num_classes!r}")
    if not 0.0 <= label_dropout <= 1.0:
        raise ValueError(f"label_dropout must lie in [0, 1]; got {label_dropout}")
    if label_dropout > 0 and num_classes is None:
        raise ValueError(
            "label_dropout > 0 needs num_classes (the null label is index num_classes)"
        )
    t_lo, t_hi = time_interval(path, t_margin)
    ts_opts = dict(time_sampler_options or {})
    cp_opts = dict(coupling_options or {})

    def loss_fn(
        params: PyTree, batch: Mapping[str, Array], key: PRNGKeyArray
    ) -> tuple[Float[Array, ""], dict[str, Array]]:
        if not isinstance(batch, Mapping) or "x" not in batch:
            raise TypeError(
                'batch must be a mapping with the data under "x" (and "label" for a class-'
                f"conditional model); got {type(batch).__name__}"
                + (f" with keys {sorted(batch)}" if isinstance(batch, Mapping) else "")
            )
        x1 = v.require_floating(batch["x"], 'batch["x"]')
        v.require_batched(x1, 'batch["x"]', 2)
        n = x1.shape[0]
        if n == 0:
            raise ValueError(
                f'batch["x"] is empty (shape {x1.shape}); the loss needs at least one example'
            )
        k_t, k_eps, k_pair, k_drop, k_model = jax.random.split(key, 5)

        label = None
        if num_classes is not None:
            if batch.get("label") is None:
                raise ValueError(
                    f"the loss was built for a class-conditional model (num_classes={num_classes}) "
                    'but the batch has no "label"'
                )
            label = check_labels(batch["label"], num_classes, name='batch["label"]')
            if label.shape != (n,):
                raise ValueError(
                    f'batch["label"] must have shape [B] = ({n},) to match batch["x"] {x1.shape}; '
                    f"got {label.shape}"
                )
            label = drop_labels(k_drop, label, label_dropout, num_classes)

        eps = jax.random.normal(k_eps, x1.shape, x1.dtype)
        eps = couple(coupling, k_pair, x1, eps, **cp_opts)
        t = sample_time(time_sampler, k_t, n, t_min=t_lo, t_max=t_hi, dtype=x1.dtype, **ts_opts)
        xt = path.interpolate(x1, eps, t)
        out = apply_fn(params, xt, t, label, train=train, key=k_model)

        target = path.conditional_target(prediction, x1, eps, t)
        sq = squared_error(out, target, reduction=reduction)
        w = loss_weight(weighting, prediction, path, t, gamma=min_snr_gamma).astype(sq.dtype)
        loss = jnp.mean(w * sq)
        aux = {  # the loss itself is the first return value (the train step reports it as "loss")
            "mse": jnp.mean(sq),
            "t_mean": jnp.mean(t),
            "weight_mean": jnp.mean(w),
        }
        for p in PREDICTIONS:
            aux[f"mse_{p}"] = jnp.mean(
                conversion_weight(prediction, p, path, t).astype(sq.dtype) * sq
            )
        return loss, aux

    return loss_fn
