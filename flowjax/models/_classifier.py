"""A time-dependent classifier ``(x_t, t) -> logits of p_t(y | x_t)`` for classifier guidance.

Classifier guidance (Dhariwal & Nichol) adds ``w * grad_x log p_t(y | x)`` to the score, so it needs
a classifier of *noisy* points at every time ``t`` of the path: trained on ``x_t = alpha x1 + beta
eps`` with the label of ``x1`` (:func:`flowjax.guidance.make_classifier_loss`). The network is the
flowjax :class:`~flowjax.models.MLP` on the flattened input with ``num_classes`` outputs, so it takes
2-D points ``[B, d]`` and small images ``[B, H, W, C]`` alike, and it is called like every flowjax
model (``model.apply({"params": p}, x, t, None, train=False)``; :func:`flowjax.models.init`,
:func:`flowjax.models.model_fn` and :func:`flowjax.models.make_apply_fn` work unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from flowjax import _validation as v
from flowjax.models._embeddings import BatchTime
from flowjax.models._mlp import MLP

__all__ = ["Classifier"]

Dtype = Any


class Classifier(nn.Module):
    """Logits ``[B, num_classes]`` of ``p_t(y | x_t)`` for inputs ``[B, ...]`` (flattened) and ``t``.

    Attributes:
      num_classes: number of classes ``K``.
      hidden: widths of the MLP's hidden layers.
      activation, time_embedding, time_embed_dim, sinusoidal_scale, fourier_scale: as in
        :class:`MLP` (the classifier keeps its earlier defaults: sinusoidal features of ``1000 t``;
        it is not integrated by an ODE solver, so its smoothness in ``t`` costs no evaluations).
      dtype, param_dtype: computation and parameter dtypes.

    The batch rows are independent (no normalisation across the batch), so the gradient of the
    summed per-row log-probabilities is each row's own ``grad_x log p_t(y | x)``.
    """

    num_classes: int
    hidden: Sequence[int] = (256, 256, 256)
    activation: str = "silu"
    time_embedding: str = "sinusoidal"
    time_embed_dim: int = 64
    sinusoidal_scale: float = 1000.0
    fourier_scale: float = 16.0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(w) for w in self.hidden))
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int):
            raise TypeError(f"num_classes must be an int >= 2; got {self.num_classes!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 for a classifier; got {self.num_classes}")
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        x: Float[ArrayLike, "B ..."],
        t: BatchTime,
        label: Any = None,
        *,
        train: bool = False,
    ) -> Float[Array, "B K"]:
        """Logits at ``(x, t)``; ``t`` in [0, 1] (scalar or ``[B]``). ``label`` must be ``None``."""
        if label is not None:
            raise ValueError(
                "a Classifier predicts the label: call it with label=None (got a label argument)"
            )
        x = v.require_floating(x, "x")
        v.require_batched(x, "x", 2)
        flat = x.reshape(x.shape[0], -1)
        return MLP(
            hidden=self.hidden,
            activation=self.activation,
            time_embedding=self.time_embedding,
            time_embed_dim=self.time_embed_dim,
            out_dim=self.num_classes,
            sinusoidal_scale=self.sinusoidal_scale,
            fourier_scale=self.fourier_scale,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="mlp",
        )(flat, t, train=train)
