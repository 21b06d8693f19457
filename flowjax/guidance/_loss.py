"""Training loss of a time-dependent classifier: cross-entropy on noisy data ``x_t``.

For a labelled example ``(x1, y)`` draw ``t`` and ``eps``, form ``x_t = alpha x1 + beta eps`` on the
path, and minimise ``-log p_theta(y | x_t, t)``. The minimiser is the Bayes classifier of noisy
points, ``p_t(y | x)``, exactly what classifier guidance needs at every time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from flowjax import _validation as v
from flowjax.losses import DEFAULT_T_MARGIN, TIME_SAMPLERS, check_labels, sample_time, time_interval
from flowjax.paths import AbstractPath

__all__ = ["make_classifier_loss"]


def make_classifier_loss(
    apply_fn: Callable[..., Array],
    path: AbstractPath,
    *,
    num_classes: int,
    time_sampler: str = "uniform",
    t_margin: float | Sequence[float] = DEFAULT_T_MARGIN,
    time_sampler_options: Mapping[str, Any] | None = None,
    train: bool = True,
) -> Callable[[PyTree, Mapping[str, Array], PRNGKeyArray], tuple[Array, dict[str, Array]]]:
    """Build ``loss_fn(params, batch, key) -> (loss, aux)`` for a time-dependent classifier.

    Args:
      apply_fn: ``apply_fn(params, x, t, label, *, train, key) -> logits [B, K]`` (called with
        ``label=None``), e.g. ``flowjax.models.make_apply_fn(Classifier(K))``.
      path: the Gaussian path the guided model uses.
      num_classes: ``K``; ``batch["label"]`` must lie in ``[0, K)``.
      time_sampler, t_margin, time_sampler_options: as in :func:`flowjax.losses.make_loss`.
      train: passed to the model.

    ``batch``: ``{"x": [B, ...] floating, "label": [B] int}``. ``loss`` is the mean cross-entropy;
    ``aux`` holds ``cross_entropy`` and ``accuracy`` (batch means; names that
    :func:`flowjax.training.make_train_step` accepts).
    """
    if not isinstance(path, AbstractPath):
        raise TypeError(f"path must be a flowjax path (AbstractPath); got {type(path).__name__}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2; got {num_classes!r}")
    v.choice(time_sampler, TIME_SAMPLERS, "time sampler")
    t_lo, t_hi = time_interval(path, t_margin)
    ts_opts = dict(time_sampler_options or {})

    def loss_fn(
        params: PyTree, batch: Mapping[str, Array], key: PRNGKeyArray
    ) -> tuple[Float[Array, ""], dict[str, Array]]:
        if not isinstance(batch, Mapping) or "x" not in batch or "label" not in batch:
            raise TypeError(
                'batch must be a mapping with the data under "x" and the classes under "label"'
            )
        x1 = v.require_floating(batch["x"], 'batch["x"]')
        v.require_batched(x1, 'batch["x"]', 2)
        n = x1.shape[0]
        labels = check_labels(batch["label"], num_classes, name='batch["label"]')
        if labels.shape != (n,):
            raise ValueError(
                f'batch["label"] must have shape [B] = ({n},) to match batch["x"] {x1.shape}; got '
                f"{labels.shape}"
            )
        k_t, k_eps, k_model = jax.random.split(key, 3)
        t = sample_time(time_sampler, k_t, n, t_min=t_lo, t_max=t_hi, dtype=x1.dtype, **ts_opts)
        eps = jax.random.normal(k_eps, x1.shape, x1.dtype)
        xt = path.interpolate(x1, eps, t)
        logits = apply_fn(params, xt, t, None, train=train, key=k_model)
        if logits.shape != (n, num_classes):
            raise ValueError(
                f"the classifier returned logits of shape {logits.shape}; expected [B, K] = "
                f"{(n, num_classes)}"
            )
        logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        acc = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(logits.dtype))
        loss = jnp.mean(ce)
        return loss, {"cross_entropy": loss, "accuracy": acc}

    return loss_fn
