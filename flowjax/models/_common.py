"""Helpers shared by the Flax models: activations, input checks."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from flowjax import _validation as v

ACTIVATIONS = {
    "silu": nn.silu,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "tanh": jnp.tanh,
    "elu": nn.elu,
    "softplus": nn.softplus,
}

#: What the network sees as time (see :mod:`flowjax.models._time`).
TIME_INPUTS: tuple[str, ...] = ("t", "log_snr", "edm")
#: How that scalar is embedded (see :mod:`flowjax.models._time`).
TIME_EMBEDDINGS: tuple[str, ...] = ("none", "sinusoidal", "fourier", "learned")


def at_least_float32(dtype: Any) -> jnp.dtype:
    """``dtype`` if it has 32 bits or more, else float32 (no implicit promotion: strict-mode safe)."""
    dtype = jnp.dtype(dtype)
    return dtype if dtype.itemsize >= 4 else jnp.dtype(jnp.float32)


def check_x(x: Any, ndim: int, layout: str, model: str) -> jnp.ndarray:
    """``x`` must be floating with ``ndim`` axes (``layout`` names them for the message)."""
    x = v.require_floating(x, "x")
    if x.ndim != ndim:
        raise ValueError(f"{model} expects x of shape {layout}; got shape {x.shape}")
    return x


def expected_features(module: nn.Module, layer: str, axis: int) -> int | None:
    """The input size the already-initialised ``layer``'s kernel expects (None while initialising)."""
    params = module.variables.get("params", {})
    if layer in params:
        return int(params[layer]["kernel"].shape[axis])
    return None
