"""A U-Net for images ``[B, H, W, C]`` from 8x8 (scikit-learn digits) to 32x32 (CIFAR-10).

The DDPM / improved-DDPM design (Ho et al.; Nichol & Dhariwal; Dhariwal & Nichol), channels last:

* ``conv_in`` (3x3) to ``channels``; then per resolution level ``i`` (``channel_mults[i]``)
  ``num_res_blocks`` residual blocks of width ``channels * channel_mults[i]``, each optionally
  followed by self-attention, and a stride-2 3x3 convolution down (not after the last level);
* a middle of residual block, self-attention, residual block at the lowest resolution;
* the mirror image up, with ``num_res_blocks + 1`` blocks per level fed by skip connections, and
  nearest-neighbour upsampling followed by a 3x3 convolution;
* GroupNorm, SiLU and a zero-initialised 3x3 convolution out.

A residual block is ``GN -> SiLU -> conv -> GN -> (1 + scale) * h + shift -> SiLU -> dropout ->
conv`` plus a (1x1-projected) skip; ``(scale, shift)`` is a linear map of the conditioning vector
(time embedding plus class embedding): adaptive group normalisation. Its last convolution and
every attention output projection start at zero, so each block starts as the identity.

Mixed precision: ``dtype`` is the computation dtype (e.g. ``jnp.bfloat16``), ``param_dtype`` that of
the parameters (float32 by default); normalisation statistics and the attention softmax are
computed in float32, and the output is returned in ``x``'s dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from flowjax.models._common import at_least_float32, check_x, expected_features
from flowjax.models._embeddings import BatchTime, ClassEmbedding, batch_time, class_labels
from flowjax.models._time import (
    check_second_time,
    check_time_options,
    second_time_argument,
    two_time_features,
)

__all__ = ["AttentionBlock", "ResBlock", "UNet"]

Dtype = Any


def _groups(num_groups: int, channels: int) -> int:
    """The largest group count ``<= num_groups`` that divides ``channels``."""
    return math.gcd(num_groups, channels)


def group_norm(
    h: Array, num_groups: int, dtype: Dtype | None, param_dtype: Dtype, name=None
) -> Array:
    """GroupNorm computed in (at least) float32, returned in ``dtype`` (or ``h``'s dtype).

    Flax's ``GroupNorm(dtype=bfloat16)`` promotes bfloat16 with float32 implicitly, which strict
    dtype promotion rejects; normalising in float32 and casting after is the mixed-precision
    practice anyway.
    """
    out_dtype = jnp.dtype(dtype) if dtype is not None else h.dtype
    norm_dtype = at_least_float32(out_dtype)
    norm = nn.GroupNorm(
        _groups(num_groups, h.shape[-1]), dtype=norm_dtype, param_dtype=param_dtype, name=name
    )
    return norm(h.astype(norm_dtype)).astype(out_dtype)


class ResBlock(nn.Module):
    """Residual block with adaptive scale/shift conditioning and dropout."""

    out_channels: int
    dropout: float = 0.0
    num_groups: int = 32
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: Array, emb: Array, *, train: bool) -> Array:
        c_in, c_out = h.shape[-1], self.out_channels
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        y = group_norm(h, self.num_groups, **kw)
        y = nn.Conv(c_out, (3, 3), padding=1, **kw)(nn.silu(y))
        scale_shift = nn.Dense(2 * c_out, name="ada", **kw)(nn.silu(emb))
        scale, shift = jnp.split(scale_shift[:, None, None, :], 2, axis=-1)
        y = group_norm(y, self.num_groups, **kw)
        y = y * (1 + scale) + shift
        y = nn.Dropout(self.dropout, deterministic=not train)(nn.silu(y))
        y = nn.Conv(c_out, (3, 3), padding=1, kernel_init=nn.initializers.zeros, **kw)(y)
        if c_in != c_out:
            h = nn.Conv(c_out, (1, 1), name="skip", **kw)(h)
        return h.astype(y.dtype) + y


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the ``H * W`` positions, pre-normalised, residual."""

    head_dim: int = 64
    num_groups: int = 32
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: Array) -> Array:
        b, hh, ww, c = h.shape
        heads = max(1, c // self.head_dim)
        if c % heads:
            raise ValueError(f"attention: {c} channels do not split into {heads} heads")
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        y = group_norm(h, self.num_groups, **kw).reshape(b, hh * ww, c)
        qkv = nn.Dense(3 * c, name="qkv", **kw)(y).reshape(b, hh * ww, 3, heads, c // heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        weights = jax.nn.softmax(logits / math.sqrt(c // heads), axis=-1).astype(v.dtype)
        y = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
        y = nn.Dense(c, kernel_init=nn.initializers.zeros, name="proj", **kw)(
            y.reshape(b, hh * ww, c)
        )
        return h.astype(y.dtype) + y.reshape(b, hh, ww, c)


class UNet(nn.Module):
    """U-Net ``(x, t[, label]) -> prediction`` for images ``[B, H, W, C]``.

    Attributes:
      channels: base width; level ``i`` has ``channels * channel_mults[i]`` channels.
      channel_mults: one multiplier per resolution level; ``H`` and ``W`` must be divisible by
        ``2 ** (len(channel_mults) - 1)`` (28x28 with three levels: 28, 14, 7).
      num_res_blocks: residual blocks per level on the way down (one more on the way up).
      attention_resolutions: feature-map heights at which blocks are followed by self-attention
        (e.g. ``(16,)`` for CIFAR-10 as in DDPM). ``None`` (default): every level but the first,
        whatever the image size (so 8x8 digits and 28x28 MNIST get attention too). The middle
        block always has attention.
      dropout: dropout rate inside residual blocks (active only with ``train=True``; uses the
        ``'dropout'`` rng).
      num_classes: ``K`` for class conditioning (``K + 1`` embeddings, ``K`` the null label).
      num_groups: GroupNorm groups (reduced to the largest divisor of each width).
      head_dim: channels per attention head (``max(1, C // head_dim)`` heads).
      time_input: what the network sees as time, ``t``, ``log_snr`` or ``edm`` (the last two need
        ``path``); see :mod:`flowjax.models._time`.
      time_embedding: ``none`` (the scalar input feeds the time MLP), ``sinusoidal``, ``fourier``
        or ``learned``; features of width ``channels`` go through a two-layer MLP of width
        ``4 * channels`` (plus the class embedding) to every block's scale/shift.
      sinusoidal_scale: the factor ``c`` of the sinusoidal embedding's input (DDPM: 1000). The
        default 1 (features of ``t`` itself) needed 43 instead of 55 adaptive Dopri5 evaluations
        at rtol = atol = 1e-3 for the digits U-Net, at equal sample quality (RESULTS.md).
      fourier_scale: standard deviation of the (initial) Fourier frequencies.
      path: the Gaussian path for ``log_snr`` / ``edm`` (hashable; static).
      second_time: ``None``, ``"r"`` (a second path time) or ``"d"`` (a step size): the model is
        then called with ``t2`` ``[B]``; both feature blocks feed the time MLP.
      out_channels: output channels (default: the input's ``C``).
      dtype, param_dtype: computation and parameter dtypes.
    """

    channels: int = 64
    channel_mults: Sequence[int] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: Sequence[int] | None = None
    dropout: float = 0.1
    num_classes: int | None = None
    num_groups: int = 32
    head_dim: int = 64
    time_input: str = "t"
    time_embedding: str = "sinusoidal"
    sinusoidal_scale: float = 1.0
    fourier_scale: float = 1.0
    path: Any = None
    second_time: str | None = None
    out_channels: int | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        # Sequences from configs may be lists; tuples keep the module hashable (model_fn needs it).
        object.__setattr__(self, "channel_mults", tuple(int(m) for m in self.channel_mults))
        if self.attention_resolutions is not None:
            res = tuple(int(r) for r in self.attention_resolutions)
            object.__setattr__(self, "attention_resolutions", res)
        check_time_options(
            self.time_input,
            self.time_embedding,
            self.path,
            self.sinusoidal_scale,
            self.fourier_scale,
        )
        if self.channels < 1 or not len(self.channel_mults) or min(self.channel_mults) < 1:
            raise ValueError(
                f"channels and channel_mults must be positive; got {self.channels}, {self.channel_mults}"
            )
        if self.num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1; got {self.num_res_blocks}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1); got {self.dropout}")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int or None; got {self.num_classes}")
        check_second_time(self.second_time)
        super().__post_init__()

    def _attend(self, level: int, height: int) -> bool:
        if self.attention_resolutions is None:
            return level > 0
        return height in tuple(self.attention_resolutions)

    @nn.compact
    def __call__(
        self,
        x: Float[ArrayLike, "B H W C"],
        t: BatchTime,
        label: Int[ArrayLike, " B"] | None = None,
        *,
        train: bool = False,
        t2: BatchTime | None = None,
    ) -> Float[Array, "B H W C"]:
        """Prediction at ``(x, t)``; ``t`` in [0, 1] (scalar or ``[B]``), ``label`` ``[B]`` or None.

        ``t2`` (``[B]`` or scalar): the second time, required exactly when ``second_time`` is set.
        """
        x = check_x(x, 4, "[B, H, W, C]", "UNet")
        n, height, width, c = x.shape
        expected = expected_features(self, "conv_in", -2)
        if expected is not None and expected != c:
            raise ValueError(
                f"x has shape {x.shape}: {c} channels, but this UNet was initialised for "
                f"{expected}-channel images [B, H, W, {expected}]"
            )
        factor = 2 ** (len(self.channel_mults) - 1)
        if height % factor or width % factor:
            raise ValueError(
                f"x has shape {x.shape}: H and W must be divisible by 2**(len(channel_mults) - 1) "
                f"= {factor} for channel_mults={tuple(self.channel_mults)}"
            )
        t = batch_time(t, n)
        t2 = second_time_argument(self.second_time, t2, n, "UNet")
        label = class_labels(label, n, self.num_classes)
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        emb_dim = 4 * self.channels

        emb = two_time_features(self, t, t2, self.channels + self.channels % 2)
        emb = nn.Dense(emb_dim, name="time_mlp_0", **kw)(emb)
        emb = nn.Dense(emb_dim, name="time_mlp_1", **kw)(nn.silu(emb))
        if self.num_classes is not None:
            cls = ClassEmbedding(self.num_classes, emb_dim, name="class_embed", **kw)(label, n)
            emb = emb + cls.astype(emb.dtype)

        def res(ch, h):
            return ResBlock(ch, self.dropout, self.num_groups, **kw)(h, emb, train=train)

        def attn(h):
            return AttentionBlock(self.head_dim, self.num_groups, **kw)(h)

        h = nn.Conv(self.channels, (3, 3), padding=1, name="conv_in", **kw)(x)
        skips = [h]
        last = len(self.channel_mults) - 1
        for level, mult in enumerate(self.channel_mults):
            for _ in range(self.num_res_blocks):
                h = res(self.channels * mult, h)
                if self._attend(level, h.shape[1]):
                    h = attn(h)
                skips.append(h)
            if level != last:
                h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2), padding=1, **kw)(h)
                skips.append(h)

        h = res(h.shape[-1], h)
        h = attn(h)
        h = res(h.shape[-1], h)

        for level in reversed(range(len(self.channel_mults))):
            ch = self.channels * self.channel_mults[level]
            for _ in range(self.num_res_blocks + 1):
                skip = skips.pop()
                h = res(ch, jnp.concatenate([h, skip.astype(h.dtype)], axis=-1))
                if self._attend(level, h.shape[1]):
                    h = attn(h)
            if level != 0:
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
                h = nn.Conv(ch, (3, 3), padding=1, **kw)(h)
        assert not skips

        h = nn.silu(group_norm(h, self.num_groups, **kw))
        out = nn.Conv(
            self.out_channels or c,
            (3, 3),
            padding=1,
            kernel_init=nn.initializers.zeros,
            name="conv_out",
            **kw,
        )(h)
        return out.astype(x.dtype)
