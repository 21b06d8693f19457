"""The model of an experiment, built from the config's ``model`` section.

The section of the chosen network (``model.mlp`` or ``model.unet``) is passed to the Flax module
as keyword arguments, so every option of :class:`flowjax.models.MLP` / :class:`~flowjax.models.UNet`
is reachable from a config by adding its key; ``model.dtype`` and ``model.num_classes`` are
shared by both, and the path is passed where the time input needs it (``log_snr``, ``edm``).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import ml_collections

from experiments.schema import choice as _choice
from experiments.schema import section
from flowjax import models as M
from flowjax.paths import get_path

__all__ = ["make_model"]

_NETWORKS = {"mlp": M.MLP, "unet": M.UNet}


def make_model(cfg: ml_collections.ConfigDict, num_classes: int | None) -> Any:
    """``MLP(**cfg.model.mlp)`` or ``UNet(**cfg.model.unet)``, with dtype, classes and path."""
    mc = cfg.model
    _choice(mc.name, tuple(_NETWORKS), "model.name")
    kwargs = section(mc[mc.name])
    _choice(kwargs["time_input"], M.TIME_INPUTS, f"model.{mc.name}.time_input")
    _choice(kwargs["time_embedding"], M.TIME_EMBEDDINGS, f"model.{mc.name}.time_embedding")
    # sequences arrive as tuples from configs and as lists from JSON overrides
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    if kwargs["time_input"] != "t":  # log-SNR and EDM's c_noise are functions of alpha and beta
        kwargs["path"] = get_path(cfg.path.name, **dict(cfg.path.options))
    dtype = None if mc.dtype == "float32" else jnp.dtype(mc.dtype)
    return _NETWORKS[mc.name](num_classes=num_classes, dtype=dtype, **kwargs)
