"""What a network sees as time: the one place that turns ``t`` into the model's time features.

Two independent choices, shared by :class:`~flowjax.models.MLP` and :class:`~flowjax.models.UNet`:

**Time input** (``time_input``), a scalar per example ``s = input(t)``, shape ``[B]``:

* ``"t"``: ``s = t`` in ``[0, 1]`` (noise at 0, data at 1).
* ``"log_snr"``: a bounded transform of the path's half log-SNR ``lambda = log(alpha / beta)``:
  ``s = tanh(lambda / 4) = (sqrt(alpha) - sqrt(beta)) / (sqrt(alpha) + sqrt(beta))`` in ``[-1, 1]``
  (``-1`` at pure noise, ``0`` where ``alpha = beta``, ``+1`` at clean data). Needs ``path``.
* ``"edm"``: Karras et al.'s ``c_noise = log(sigma) / 4`` with ``sigma = beta / alpha`` (the noise
  level of ``x / alpha``), i.e. ``-lambda / 4``. Needs ``path``.

``lambda`` is computed from ``path.alpha(t)`` and ``path.beta(t)`` (any object with those two methods,
e.g. a :mod:`flowjax.paths` path; models import nothing of ours) and clipped to
``[-LOG_SNR_CLIP, LOG_SNR_CLIP]`` so both ends (``alpha = 0`` or ``beta = 0``) stay finite, with
finite derivatives in ``t`` (a JVP in ``t`` at ``t = 0`` gives no NaN).

**Embedding** (``time_embedding``) of ``s`` into features ``[B, F]``:

* ``"none"``: ``[s]`` itself (``F = 1``); the MLP then is the plain MLP of ``[x, s]``.
* ``"sinusoidal"``: ``[cos(c s f_k), sin(c s f_k)]``, ``f_k = 10000^(-k / (dim/2))``, with
  ``c = sinusoidal_scale`` (DDPM used ``c = 1000`` on integer steps; on ``t`` in ``[0, 1]`` that makes
  the learned field oscillate in ``t`` and costs adaptive solvers many evaluations).
* ``"fourier"``: ``[sin(2 pi W s), cos(2 pi W s)]`` with fixed ``W ~ N(0, fourier_scale^2)`` (``dim/2``
  frequencies from a seed; constants, not parameters).
* ``"learned"``: the same with ``W`` a trainable parameter ``"freqs"`` ``[dim/2]`` initialised from
  ``N(0, fourier_scale^2)`` (learned Fourier features).

``F = dim`` for the last three.

**A second time** (``second_time``, for two-time objectives: MeanFlow's ``(r, t)``, shortcut
models' ``(t, d)``): ``None`` (one time), ``"r"`` (a second point of the path: the same
``time_input`` and embedding as ``t``) or ``"d"`` (a step size in ``[0, 1]``: not a point of the path,
so its input is ``d`` itself, embedded like ``t``). The model is then called with ``t2=`` ``[B]``
(or a scalar); the two feature blocks are concatenated, ``[B, 2F]``, before the model's time MLP
(or, for the plain MLP, appended to its input: ``[x, s(t), s2]``). :func:`two_time_features` is
the one place both models do this.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, Float

from flowjax import _validation as v
from flowjax.models._common import TIME_EMBEDDINGS, TIME_INPUTS
from flowjax.models._embeddings import batch_time, fourier_embedding, sinusoidal_embedding

__all__ = [
    "LOG_SNR_CLIP",
    "SECOND_TIMES",
    "TIME_EMBEDDINGS",
    "TIME_INPUTS",
    "TimeFeatures",
    "half_log_snr",
    "time_input",
]

#: ``|log(alpha / beta)|`` is clipped to this (``sigma`` in ``[e^-15, e^15]``): finite at both ends.
LOG_SNR_CLIP = 15.0
_TINY = 1e-30
#: The second time a model can be conditioned on (``None``: one time).
SECOND_TIMES: tuple[str, ...] = ("r", "d")


def _needs_path(kind: str, path: Any) -> None:
    if path is None or not (hasattr(path, "alpha") and hasattr(path, "beta")):
        raise ValueError(
            f"time_input={kind!r} needs the model's path (an object with alpha(t) and beta(t), "
            f"e.g. flowjax.paths.CondOT()): pass path=... to the model; got path={path!r}"
        )


def half_log_snr(path: Any, t: Float[Array, " B"]) -> Float[Array, " B"]:
    """``clip(log(alpha_t / beta_t), -LOG_SNR_CLIP, LOG_SNR_CLIP)``, shape of ``t``, finite everywhere."""
    alpha = jnp.asarray(path.alpha(t), t.dtype)
    beta = jnp.asarray(path.beta(t), t.dtype)
    tiny = jnp.asarray(_TINY, t.dtype)
    lam = jnp.log(jnp.maximum(alpha, tiny)) - jnp.log(jnp.maximum(beta, tiny))
    return jnp.clip(lam, -LOG_SNR_CLIP, LOG_SNR_CLIP)


def time_input(kind: str, t: Float[Array, " B"], path: Any = None) -> Float[Array, " B"]:
    """The scalar the network sees for time ``t`` (``[B]``): ``"t"``, ``"log_snr"`` or ``"edm"``.

    See the module docstring for the formulas. ``"log_snr"`` and ``"edm"`` need ``path``.
    """
    v.choice(kind, TIME_INPUTS, "time input")
    if kind == "t":
        return t
    _needs_path(kind, path)
    lam = half_log_snr(path, t)
    if kind == "log_snr":
        return jnp.tanh(lam / 4)
    return -lam / 4  # c_noise = log(sigma) / 4, sigma = beta / alpha


class TimeFeatures(nn.Module):
    """``t`` ``[B]`` -> time features ``[B, F]`` (``F = 1`` for ``"none"``, else ``dim``); float32+.

    Attributes:
      time_input: ``"t"``, ``"log_snr"`` or ``"edm"`` (module docstring).
      embedding: ``"none"``, ``"sinusoidal"``, ``"fourier"`` or ``"learned"``.
      dim: feature width for the embeddings (even).
      sinusoidal_scale: ``c`` multiplying the input of the sinusoidal embedding.
      fourier_scale: standard deviation of the (initial) Fourier frequencies.
      path: the Gaussian path (``alpha(t)``, ``beta(t)``) for ``"log_snr"`` and ``"edm"``.
      seed: seed of the fixed Fourier frequencies.

    Only ``"learned"`` has parameters (``freqs``, ``[dim/2]``).
    """

    time_input: str = "t"
    embedding: str = "none"
    dim: int = 64
    sinusoidal_scale: float = 1.0
    fourier_scale: float = 1.0
    path: Any = None
    seed: int = 0

    @nn.compact
    def __call__(self, t: Float[Array, " B"]) -> Float[Array, "B F"]:
        v.choice(self.embedding, TIME_EMBEDDINGS, "time embedding")
        s = time_input(self.time_input, t, self.path)
        if self.embedding == "none":
            return s[:, None]
        if self.embedding == "sinusoidal":
            return sinusoidal_embedding(s, self.dim, scale=self.sinusoidal_scale)
        if self.embedding == "fourier":
            return fourier_embedding(s, self.dim, scale=self.fourier_scale, seed=self.seed)
        if self.dim < 2 or self.dim % 2:
            raise ValueError(f"learned Fourier embedding dim must be even and >= 2; got {self.dim}")
        freqs = self.param(
            "freqs", nn.initializers.normal(self.fourier_scale), (self.dim // 2,), jnp.float32
        )
        args = 2 * math.pi * s[:, None] * freqs.astype(s.dtype)[None, :]
        return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


def check_time_options(
    time_input_kind: str, embedding: str, path: Any, sinusoidal_scale: float, fourier_scale: float
) -> None:
    """Constructor-time validation shared by the models (messages name the attribute)."""
    v.choice(time_input_kind, TIME_INPUTS, "time input")
    v.choice(embedding, TIME_EMBEDDINGS, "time embedding")
    if time_input_kind != "t":
        _needs_path(time_input_kind, path)
    for name, value in (("sinusoidal_scale", sinusoidal_scale), ("fourier_scale", fourier_scale)):
        if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    if path is not None:
        try:
            hash(path)
        except TypeError as err:
            raise TypeError(f"path must be hashable (a static model field): {err}") from None


def check_second_time(second_time: Any) -> None:
    """``second_time`` must be None, ``"r"`` or ``"d"``."""
    if second_time is not None:
        v.choice(second_time, SECOND_TIMES, "second_time")


def second_time_argument(second_time: Any, t2: Any, batch: int, model: str) -> Array | None:
    """Check a model's ``t2`` argument against its ``second_time`` (at trace time, naming both)."""
    if second_time is None:
        if t2 is not None:
            raise ValueError(
                f"t2 was given but this {model} has one time input (second_time=None); build it "
                "with second_time='r' (a second path time) or 'd' (a step size)"
            )
        return None
    if t2 is None:
        raise ValueError(
            f"this {model} is conditioned on two times (second_time={second_time!r}): call it "
            "with t2=... (shape [B] or a scalar)"
        )
    return batch_time(t2, batch, "t2")


def two_time_features(module: nn.Module, t: Array, t2: Array | None, dim: int) -> Array:
    """Features of ``t`` (and of ``t2`` if the module has ``second_time``), ``[B, F]`` or ``[B, 2F]``.

    ``module`` provides ``time_input``, ``time_embedding``, ``sinusoidal_scale``,
    ``fourier_scale``, ``path`` and ``second_time``; the submodules are named ``time_features``
    and ``time2_features`` (``t``'s parameters do not move when a second time is added).
    """
    kw = {
        "embedding": module.time_embedding,
        "dim": dim,
        "sinusoidal_scale": module.sinusoidal_scale,
        "fourier_scale": module.fourier_scale,
    }
    feats = TimeFeatures(module.time_input, path=module.path, name="time_features", **kw)(t)
    if t2 is None:
        return feats
    second_input = module.time_input if module.second_time == "r" else "t"
    # a different seed: the second block's fixed Fourier frequencies differ from the first's
    feats2 = TimeFeatures(second_input, path=module.path, seed=1, name="time2_features", **kw)(t2)
    return jnp.concatenate([feats, feats2.astype(feats.dtype)], axis=-1)
