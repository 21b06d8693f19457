"""Flax models (the only place Flax modules live) and their pytree boundary.

* :class:`MLP` for low-dimensional data ``[B, d]``; :class:`UNet` for images ``[B, H, W, C]``;
  :class:`Classifier`, a time-dependent classifier ``(x_t, t) -> logits`` for classifier guidance.
* Every model is called as ``model.apply({"params": params}, x, t, label=None, train=False)`` with
  ``t`` in [0, 1] (``[B]`` or scalar) and returns an array of ``x``'s shape; class-conditional models
  (``num_classes=K``) embed ``K + 1`` classes, ``K`` (or ``label=None``) being the null label.
* What the network sees as time (``time_input``: ``t``, ``log_snr``, ``edm``) and how it is
  embedded (``time_embedding``: ``none``, ``sinusoidal``, ``fourier``, ``learned``) is decided in
  one place, :class:`TimeFeatures` (formulas and shapes in :mod:`flowjax.models._time`).
* :func:`init`, :func:`count_params`, :func:`summary`, :func:`apply`, :func:`make_apply_fn` (for
  the losses) and :func:`model_fn` (a jit-friendly callable pytree for samplers).
"""

from flowjax.models._api import (
    ModelFn,
    apply,
    count_params,
    init,
    make_apply_fn,
    model_fn,
    summary,
)
from flowjax.models._classifier import Classifier
from flowjax.models._common import ACTIVATIONS, TIME_EMBEDDINGS, TIME_INPUTS
from flowjax.models._embeddings import (
    ClassEmbedding,
    FourierEmbedding,
    SinusoidalEmbedding,
    fourier_embedding,
    sinusoidal_embedding,
)
from flowjax.models._mlp import MLP
from flowjax.models._time import LOG_SNR_CLIP, TimeFeatures, half_log_snr, time_input
from flowjax.models._unet import AttentionBlock, ResBlock, UNet

__all__ = [
    "ACTIVATIONS",
    "LOG_SNR_CLIP",
    "MLP",
    "TIME_EMBEDDINGS",
    "TIME_INPUTS",
    "AttentionBlock",
    "ClassEmbedding",
    "Classifier",
    "FourierEmbedding",
    "ModelFn",
    "ResBlock",
    "SinusoidalEmbedding",
    "TimeFeatures",
    "UNet",
    "apply",
    "count_params",
    "fourier_embedding",
    "half_log_snr",
    "init",
    "make_apply_fn",
    "model_fn",
    "sinusoidal_embedding",
    "summary",
    "time_input",
]
