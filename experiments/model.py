"""The model of an experiment, built from the config's ``model`` section.

``make_model`` is ``experiments/train.py:_make_model`` of earlier versions, moved unchanged.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import ml_collections

from experiments.schema import choice as _choice
from flowjax import models as M

__all__ = ["make_model"]


def make_model(cfg: ml_collections.ConfigDict, num_classes: int | None) -> Any:
    mc = cfg.model
    dtype = None if mc.dtype == "float32" else jnp.dtype(mc.dtype)
    _choice(mc.name, ("mlp", "unet"), "model.name")
    if mc.name == "mlp":
        return M.MLP(
            hidden=tuple(mc.mlp.hidden),
            activation=mc.mlp.activation,
            time_embedding=mc.mlp.time_embedding,
            time_embed_dim=mc.mlp.time_embed_dim,
            fourier_scale=mc.mlp.fourier_scale,
            num_classes=num_classes,
            dtype=dtype,
        )
    u = mc.unet
    return M.UNet(
        channels=u.channels,
        channel_mults=tuple(u.channel_mults),
        num_res_blocks=u.num_res_blocks,
        attention_resolutions=None
        if u.attention_resolutions is None
        else tuple(u.attention_resolutions),
        dropout=u.dropout,
        num_classes=num_classes,
        num_groups=u.num_groups,
        head_dim=u.head_dim,
        time_embedding=u.time_embedding,
        dtype=dtype,
    )
