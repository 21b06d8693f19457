"""Time and class embeddings shared by the models.

A scalar time input ``s`` (``[B]``; what it is, ``t``, a log-SNR transform or EDM's ``c_noise``, is
decided in :mod:`flowjax.models._time`) is embedded either by fixed sinusoids (Vaswani et al.; DDPM
scaled integer steps, ``scale = 1000`` on ``t`` in ``[0, 1]``, which makes the learned field oscillate
in ``t``: the default here is ``scale = 1``) or by random Fourier features (Tancik et al.; score
SDE's ``GaussianFourierProjection``).
The Fourier frequencies are a fixed function of a seed, not parameters: an optimiser's weight
decay cannot move them, and they need no separate variable collection.

Class labels use ``num_classes + 1`` embeddings: index ``num_classes`` is the null label, used for
classifier-free guidance dropout and unconditional sampling; ``label=None`` means the null label.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from flowjax import _validation as v
from flowjax.models._common import at_least_float32

__all__ = [
    "ClassEmbedding",
    "FourierEmbedding",
    "SinusoidalEmbedding",
    "fourier_embedding",
    "sinusoidal_embedding",
]

Dtype = Any


def batch_time(t: Any, batch: int, name: str = "t") -> Array:
    """``t`` as float32 ``[B]`` (a scalar is broadcast); ``name`` names it in errors."""
    t = v.as_float_array(t, name)
    if t.ndim == 0:
        t = jnp.broadcast_to(t, (batch,))
    if t.shape != (batch,):
        raise ValueError(
            f"{name} must be a scalar or have shape [B] = ({batch},); got shape {t.shape}"
        )
    return t.astype(at_least_float32(t.dtype))


def sinusoidal_embedding(
    t: Float[ArrayLike, " B"], dim: int, *, scale: float = 1.0, max_period: float = 10000.0
) -> Float[Array, "B dim"]:
    """``[cos(scale t f_k), sin(scale t f_k)]`` with ``f_k = max_period^(-k / (dim/2))``; ``dim`` even."""
    if dim < 2 or dim % 2:
        raise ValueError(f"sinusoidal embedding dim must be even and >= 2; got {dim}")
    t = jnp.asarray(t)
    half = dim // 2
    freqs = np.exp(-math.log(max_period) * np.arange(half) / half).astype(np.float32)
    args = (scale * t)[:, None] * jnp.asarray(freqs, t.dtype)[None, :]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def fourier_embedding(
    t: Float[ArrayLike, " B"], dim: int, *, scale: float = 16.0, seed: int = 0
) -> Float[Array, "B dim"]:
    """``[sin(2 pi W t), cos(2 pi W t)]`` with fixed ``W ~ N(0, scale^2)`` of size ``dim/2``."""
    if dim < 2 or dim % 2:
        raise ValueError(f"Fourier embedding dim must be even and >= 2; got {dim}")
    t = jnp.asarray(t)
    w = np.random.default_rng(seed).normal(0.0, scale, dim // 2).astype(np.float32)
    args = 2 * math.pi * t[:, None] * jnp.asarray(w, t.dtype)[None, :]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class SinusoidalEmbedding(nn.Module):
    """Fixed sinusoidal embedding of ``t`` (``[B]`` in [0, 1]) into ``[B, dim]`` (float32)."""

    dim: int
    scale: float = 1.0
    max_period: float = 10000.0

    @nn.compact
    def __call__(self, t: Float[ArrayLike, "*B"]) -> Float[Array, "B dim"]:
        t = jnp.asarray(t)
        t = batch_time(t, t.shape[0] if t.ndim else 1)
        return sinusoidal_embedding(t, self.dim, scale=self.scale, max_period=self.max_period)


class FourierEmbedding(nn.Module):
    """Random Fourier features of ``t`` with frequencies fixed by ``seed`` (no parameters)."""

    dim: int
    scale: float = 16.0
    seed: int = 0

    @nn.compact
    def __call__(self, t: Float[ArrayLike, "*B"]) -> Float[Array, "B dim"]:
        t = jnp.asarray(t)
        t = batch_time(t, t.shape[0] if t.ndim else 1)
        return fourier_embedding(t, self.dim, scale=self.scale, seed=self.seed)


def class_labels(label: Any, batch: int, num_classes: int | None) -> Array | None:
    """Validate a model's ``label`` argument; ``None`` becomes the null label ``num_classes``."""
    if num_classes is None:
        if label is not None:
            raise ValueError(
                "label was given but the model is unconditional (num_classes=None); build it with "
                "num_classes=K to condition on classes"
            )
        return None
    if label is None:
        return jnp.full((batch,), num_classes, jnp.int32)
    label = jnp.asarray(label)
    if not jnp.issubdtype(label.dtype, jnp.integer):
        raise TypeError(f"label must be an integer array of shape [B]; got dtype {label.dtype}")
    if label.shape != (batch,):
        raise ValueError(
            f"label must have shape [B] = ({batch},) to match x; got shape {label.shape}"
        )
    what = f"[0, {num_classes}] ({num_classes} is the null label)"
    if v.is_concrete(label):
        arr = np.asarray(label)
        bad = arr[(arr < 0) | (arr > num_classes)]
        if bad.size:
            raise ValueError(
                f"label must lie in {what}; got out-of-range values {bad[:8].tolist()}"
            )
    else:
        v.check_value(jnp.all((label >= 0) & (label <= num_classes)), f"label must lie in {what}")
    return label


class ClassEmbedding(nn.Module):
    """``num_classes + 1`` learned class vectors; index ``num_classes`` (or ``None``) is the null class."""

    num_classes: int
    dim: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, label: Int[ArrayLike, " B"] | None, batch: int) -> Float[Array, "B dim"]:
        label = class_labels(label, batch, self.num_classes)
        embed = nn.Embed(
            self.num_classes + 1,
            self.dim,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            embedding_init=nn.initializers.normal(1.0),
        )
        return embed(label)
