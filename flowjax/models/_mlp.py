"""A multilayer perceptron for low-dimensional data ``[B, d]`` (toy 2-D sets, tabular data)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from flowjax import _validation as v
from flowjax.models._common import ACTIVATIONS, check_x, expected_features
from flowjax.models._embeddings import BatchTime, ClassEmbedding, batch_time, class_labels
from flowjax.models._time import (
    check_second_time,
    check_time_options,
    second_time_argument,
    two_time_features,
)

__all__ = ["MLP"]

Dtype = Any


class MLP(nn.Module):
    """An MLP ``(x, t[, label]) -> prediction`` for data of shape ``[B, d]``.

    What the network sees as time is decided in one place, :mod:`flowjax.models._time`
    (:class:`~flowjax.models.TimeFeatures`): a time input ``s`` ``[B]`` (``t``, a log-SNR transform
    or EDM's ``c_noise``) and its embedding. With ``time_embedding="none"`` (the default) the
    network is the plain MLP of ``[x, s]`` (``s`` appended as a raw input, plus the class embedding
    if any): the benchmark's 3-input MLP for 2-D data. With ``"sinusoidal"``, ``"fourier"`` or
    ``"learned"``, ``s`` is embedded (``[B, time_embed_dim]``), passed through a two-layer MLP (plus
    the class embedding) and added, through its own linear map, to the pre-activation of every
    hidden layer.

    Defaults measured by ``experiments/benchmarks/bench_time_conditioning.py`` (see
    ``experiments/RESULTS.md``): plain ``[x, t]`` needs the fewest adaptive solver evaluations at
    equal sample quality; DDPM's sinusoidal embedding of ``1000 t`` needed ~6x more.

    Attributes:
      hidden: widths of the hidden layers (at least one).
      activation: ``silu``, ``relu``, ``gelu``, ``tanh``, ``elu`` or ``softplus``.
      time_input: ``t``, ``log_snr`` or ``edm`` (the last two need ``path``).
      time_embedding: ``none``, ``sinusoidal``, ``fourier`` or ``learned``.
      time_embed_dim: width of the time (and class) embedding; even.
      num_classes: ``K`` for a class-conditional model (``K + 1`` embeddings, ``K`` the null label).
      out_dim: output width (default: the input's ``d``).
      sinusoidal_scale: the factor ``c`` of the sinusoidal embedding's input (DDPM: 1000).
      fourier_scale: standard deviation of the (initial) Fourier frequencies.
      path: the Gaussian path, for ``time_input`` ``log_snr`` / ``edm`` (hashable; static).
      second_time: ``None``, ``"r"`` (a second path time) or ``"d"`` (a step size): the model is
        then called with ``t2`` ``[B]`` and conditioned on both (two-time objectives).
      dtype: computation dtype (e.g. ``jnp.bfloat16``); parameters are ``param_dtype``.
    """

    hidden: Sequence[int] = (512, 512, 512, 512)
    activation: str = "silu"
    time_input: str = "t"
    time_embedding: str = "none"
    time_embed_dim: int = 64
    num_classes: int | None = None
    out_dim: int | None = None
    sinusoidal_scale: float = 1.0
    fourier_scale: float = 1.0
    path: Any = None
    second_time: str | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        # Sequences from configs may be lists; tuples keep the module hashable (model_fn needs it).
        object.__setattr__(self, "hidden", tuple(int(w) for w in self.hidden))
        v.choice(self.activation, tuple(ACTIVATIONS), "activation")
        check_time_options(
            self.time_input,
            self.time_embedding,
            self.path,
            self.sinusoidal_scale,
            self.fourier_scale,
        )
        if not len(self.hidden) or any(int(w) < 1 for w in self.hidden):
            raise ValueError(
                f"hidden must be a non-empty sequence of positive widths; got {self.hidden}"
            )
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int or None; got {self.num_classes}")
        check_second_time(self.second_time)
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        x: Float[ArrayLike, "B d"],
        t: BatchTime,
        label: Int[ArrayLike, " B"] | None = None,
        *,
        train: bool = False,
        t2: BatchTime | None = None,
    ) -> Float[Array, "B out"]:  # out = out_dim or d
        """Prediction at ``(x, t)``; ``t`` in [0, 1] (scalar or ``[B]``), ``label`` ``[B]`` or None.

        ``t2`` (``[B]`` or scalar): the second time, required exactly when ``second_time`` is set.
        """
        del train  # no dropout in the MLP
        x = check_x(x, 2, "[B, d]", "MLP")
        n, d = x.shape
        expected = expected_features(self, "input", 0)
        if expected is not None and expected != d:
            raise ValueError(
                f"x has shape {x.shape}: {d} features, but this MLP was initialised for inputs of "
                f"shape [B, {expected}]"
            )
        t = batch_time(t, n)
        t2 = second_time_argument(self.second_time, t2, n, "MLP")
        label = class_labels(label, n, self.num_classes)
        act = ACTIVATIONS[self.activation]

        def dense(width, **kw):
            return nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype, **kw)

        cls = None
        if self.num_classes is not None:
            cls = ClassEmbedding(
                self.num_classes,
                self.time_embed_dim,
                self.dtype,
                self.param_dtype,
                name="class_embed",
            )(label, n)

        feats = two_time_features(self, t, t2, self.time_embed_dim)
        if self.time_embedding == "none":
            cond = feats
            if cls is not None:
                cond = jnp.concatenate([cond, cls.astype(cond.dtype)], axis=1)
            h = dense(self.hidden[0], name="input")(x)
            h = act(h + dense(self.hidden[0], use_bias=False, name="cond_input")(cond))
            for width in self.hidden[1:]:
                h = act(dense(width)(h))
        else:
            emb = dense(self.time_embed_dim, name="time_mlp_0")(feats)
            emb = dense(self.time_embed_dim, name="time_mlp_1")(act(emb))
            if cls is not None:
                emb = emb + cls.astype(emb.dtype)
            emb = act(emb)
            h = x
            for i, width in enumerate(self.hidden):
                pre = dense(width, name="input" if i == 0 else f"hidden_{i}")(h)
                h = act(pre + dense(width, use_bias=False, name=f"cond_{i}")(emb))
        out = dense(self.out_dim or d, name="output")(h)
        return out.astype(x.dtype)
