"""The regression objectives of each parameterization, on any Gaussian path.

For data ``x1``, noise ``eps`` and time ``t`` the model sees ``x = alpha x1 + beta eps`` and regresses
the conditional target of what it predicts (``path.conditional_target``):

====================  ============  ==================================
loss                  prediction    target
====================  ============  ==================================
:func:`cfm_loss`      velocity      ``alpha_dot x1 + beta_dot eps`` (CondOT: ``x1 - eps``)
:func:`dsm_loss`      score         ``-eps / beta``
:func:`ddpm_loss`     eps           ``eps``
:func:`x1_loss`       x1            ``x1``
:func:`v_loss`        v             ``alpha eps - beta x1``
====================  ============  ==================================

Each minimiser is the conditional expectation of its target given ``x``: the marginal velocity,
the score, ``E[eps | x]``, the denoiser ``E[x1 | x]``, ``E[v | x]``. The per-example loss is the
weighted squared error ``w(t) |output - target|^2``, averaged (``reduction="mean"``) or summed
(``"sum"``) over the non-batch axes; the weightings are in :mod:`flowjax.losses._weighting`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from flowjax import _validation as v
from flowjax.losses._weighting import WeightFn, loss_weight
from flowjax.paths import PREDICTIONS, AbstractPath

__all__ = [
    "LOSSES",
    "REDUCTIONS",
    "cfm_loss",
    "ddpm_loss",
    "dsm_loss",
    "prediction_loss",
    "squared_error",
    "v_loss",
    "x1_loss",
]

#: How the squared error is reduced over the non-batch axes.
REDUCTIONS: tuple[str, ...] = ("mean", "sum")


def squared_error(
    output: Float[ArrayLike, "B ..."],
    target: Float[ArrayLike, "B ..."],
    *,
    reduction: str = "mean",
) -> Float[Array, " B"]:
    """``|output - target|^2`` per example, averaged or summed over the non-batch axes.

    ``output`` is cast to ``target``'s dtype first (a bfloat16 model output is compared in the
    data's precision).
    """
    v.choice(reduction, REDUCTIONS, "reduction")
    target = v.require_floating(target, "target")
    output = v.require_floating(output, "output (the model prediction)")
    v.require_batched(target, "target")
    if output.shape != target.shape:
        raise ValueError(
            f"the model output has shape {output.shape} but the data batch x (and so the "
            f"regression target) has shape {target.shape}; the model must return x's shape"
        )
    err = jnp.reshape(output.astype(target.dtype) - target, (target.shape[0], -1))
    sq = jnp.square(err)
    return jnp.mean(sq, axis=1) if reduction == "mean" else jnp.sum(sq, axis=1)


def prediction_loss(
    prediction: str,
    output: Float[ArrayLike, "B ..."],
    x1: Float[ArrayLike, "B ..."],
    eps: Float[ArrayLike, "B ..."],
    t: Float[ArrayLike, " B"],
    path: AbstractPath,
    *,
    weighting: str | WeightFn = "uniform",
    reduction: str = "mean",
    gamma: float = 5.0,
) -> Float[Array, " B"]:
    """Per-example loss ``w(t) |output - target|^2`` of a ``prediction`` model.

    Args:
      prediction: one of ``velocity``, ``score``, ``eps``, ``x1``, ``v``.
      output: the model's prediction at ``x = path.interpolate(x1, eps, t)``, shape ``[B, ...]``.
      x1, eps: data and noise, shape ``[B, ...]``.
      t: ``[B]`` (or scalar) times in the path's range (``score`` needs ``beta(t) > 0``).
      path: the Gaussian path.
      weighting: see :func:`flowjax.losses.loss_weight`.
      reduction: ``"mean"`` or ``"sum"`` over the non-batch axes.
      gamma: the cap of the ``"min_snr"`` weighting.

    Returns:
      ``[B]`` weighted per-example losses (average them for the batch loss).
    """
    v.choice(prediction, PREDICTIONS, "prediction")
    target = path.conditional_target(prediction, x1, eps, t)
    sq = squared_error(output, target, reduction=reduction)
    t = v.as_float_array(t, "t")
    w = loss_weight(weighting, prediction, path, t, gamma=gamma)
    return w.astype(sq.dtype) * sq


def _named(prediction: str, name: str, paper: str):
    @functools.wraps(prediction_loss)
    def fn(
        output: Float[ArrayLike, "B ..."],
        x1: Float[ArrayLike, "B ..."],
        eps: Float[ArrayLike, "B ..."],
        t: Float[ArrayLike, " B"],
        path: AbstractPath,
        **kwargs: Any,
    ) -> Float[Array, " B"]:
        return prediction_loss(prediction, output, x1, eps, t, path, **kwargs)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = (
        f"{paper}: per-example loss of a {prediction!r} model, "
        f"``w(t) |output - path.conditional_target({prediction!r}, x1, eps, t)|^2``.\n\n"
        f"Same as ``prediction_loss({prediction!r}, output, x1, eps, t, path, **kwargs)``; "
        "returns ``[B]``."
    )
    fn.__module__ = "flowjax.losses"
    del fn.__wrapped__
    return fn


cfm_loss = _named("velocity", "cfm_loss", "Conditional flow matching (Lipman et al.)")
dsm_loss = _named("score", "dsm_loss", "Denoising score matching (Vincent; Song et al.)")
ddpm_loss = _named("eps", "ddpm_loss", "Noise prediction (Ho et al., DDPM)")
x1_loss = _named("x1", "x1_loss", "Clean-data prediction (the denoiser)")
v_loss = _named("v", "v_loss", "v prediction (Salimans & Ho)")

#: The loss of each prediction.
LOSSES = {
    "velocity": cfm_loss,
    "score": dsm_loss,
    "eps": ddpm_loss,
    "x1": x1_loss,
    "v": v_loss,
}
