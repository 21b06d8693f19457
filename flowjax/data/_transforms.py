"""Batch transforms: integer levels to floats in the model's range, flips, uniform dequantization.

A transform is called once per batch by the iterator as
``transform(batch, *, seed, epoch, indices) -> batch``, where ``indices`` are the source indices of
the rows. Random choices are hashed from ``(seed, epoch, index)`` (see ``_hashing``), so a row gets
the same flip and noise whatever the batch size, process count or resumption point.

Scaling and dequantization (``L = num_levels`` integer levels ``k`` in ``0..L-1``, model range
``[lo, hi]``, default ``[-1, 1]``):

* **plain scaling** (training, sample grids): ``x = lo + (hi - lo) * k / (L - 1)``; ``k = 0`` maps
  to ``lo`` and ``k = L - 1`` to ``hi``.
* **uniform dequantization** (likelihoods): ``y = (k + u) / L`` with ``u ~ U[0, 1)^D`` is a
  continuous variable on ``[0, 1)^D`` whose bins have width ``1/L``; in the model's range
  ``x = lo + (hi - lo) * y``, bin width ``w = (hi - lo) / L``. For a continuous model density
  ``p(x)``, Jensen's inequality gives the discrete log-likelihood bound

      log P(k) >= E_u[log p(x)] + D * log w,

  and bits per dimension ``bpd = -(E_u[log p(x)] / D + log w) / log 2``. For 8-bit images in
  ``[-1, 1]``: ``log w = log(2/256)`` and the offset ``-log(w)/log(2)`` is ``+7`` bits/dim; for the
  8x8 digits (``L = 17``): ``log2(17/2) = 3.087`` bits/dim. :func:`log_bin_width` returns
  ``log w``.

  The two scalings differ (``k / (L - 1)`` against ``(k + 1/2) / L`` on average): by at most
  ``1/(2L)`` of the range, small for ``L = 256`` but 3% for the digits' ``L = 17``. A model whose
  likelihood is evaluated on dequantized data should also be trained on dequantized data
  (``ImageTransform(dequantize=True)``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from flowjax.data import _hashing

__all__ = [
    "IdentityTransform",
    "ImageTransform",
    "Transform",
    "dequantize",
    "log_bin_width",
    "scale_levels",
    "to_levels",
]

ValueRange = tuple[float, float]


@runtime_checkable
class Transform(Protocol):
    """``transform(batch, *, seed, epoch, indices) -> batch`` (dicts of NumPy arrays)."""

    def __call__(
        self, batch: Mapping[str, np.ndarray], *, seed: int, epoch: int, indices: np.ndarray
    ) -> dict[str, np.ndarray]: ...


def _check_levels(num_levels: int, value_range: ValueRange) -> tuple[float, float]:
    if int(num_levels) != num_levels or num_levels < 2:
        raise ValueError(f"num_levels must be an integer >= 2; got {num_levels}")
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"value_range must be (lo, hi) with hi > lo; got {value_range}")
    return lo, hi


def scale_levels(
    levels: ArrayLike, num_levels: int, value_range: ValueRange = (-1.0, 1.0)
) -> np.ndarray:
    """Integer levels ``0..L-1`` to float32 ``lo + (hi - lo) * k / (L - 1)`` (NumPy)."""
    lo, hi = _check_levels(num_levels, value_range)
    x = np.array(levels, dtype=np.float32)  # a fresh array, scaled in place (one allocation)
    x *= np.float32((hi - lo) / (num_levels - 1))
    x += np.float32(lo)
    return x


def to_levels(x: ArrayLike, num_levels: int, value_range: ValueRange = (-1.0, 1.0)) -> np.ndarray:
    """Inverse of :func:`scale_levels` for model outputs: round and clip to ``0..L-1`` (uint8 if L <= 256)."""
    lo, hi = _check_levels(num_levels, value_range)
    k = np.rint((np.asarray(x, dtype=np.float64) - lo) / (hi - lo) * (num_levels - 1))
    k = np.clip(k, 0, num_levels - 1)
    return k.astype(np.uint8 if num_levels <= 256 else np.int32)


def dequantize(
    key: PRNGKeyArray,
    levels: ArrayLike,
    num_levels: int,
    value_range: ValueRange = (-1.0, 1.0),
    dtype: Any = None,
) -> Float[Array, "B ..."]:
    """Uniform dequantization in JAX: ``lo + (hi - lo) * (k + u) / L`` with ``u ~ U[0, 1)``.

    ``levels`` are integers ``k`` in ``0..L-1`` of any shape; the result has the same shape, in
    ``[lo, hi)``. Add ``D * log_bin_width(L, value_range)`` to a continuous log-density of the
    result to get the bound on the discrete log-likelihood (module docstring). Jit-able.
    """
    lo, hi = _check_levels(num_levels, value_range)
    k = jnp.asarray(levels)
    if not jnp.issubdtype(k.dtype, jnp.integer):
        raise TypeError(f"levels must be integers 0..{num_levels - 1}; got dtype {k.dtype}")
    dtype = dtype or jnp.result_type(float)
    u = jax.random.uniform(key, k.shape, dtype)
    return jnp.asarray(lo, dtype) + jnp.asarray((hi - lo) / num_levels, dtype) * (
        k.astype(dtype) + u
    )


def log_bin_width(num_levels: int, value_range: ValueRange = (-1.0, 1.0)) -> float:
    """``log w`` with ``w = (hi - lo) / L``: the per-dimension term of the dequantization bound.

    ``log P(k) >= E_u[log p(x)] + D * log_bin_width(L, value_range)`` and
    ``bits/dim = -(E_u[log p(x)] / D + log_bin_width(L, value_range)) / log(2)``.
    """
    lo, hi = _check_levels(num_levels, value_range)
    return math.log((hi - lo) / num_levels)


def flip_mask(seed: int, epoch: int, indices: np.ndarray) -> np.ndarray:
    """Whether each row is flipped: a fair coin hashed from ``(seed, epoch, index)``."""
    keys = _hashing.example_keys(seed, epoch, indices, _hashing.STREAM_FLIP)
    return (keys >> np.uint64(63)).astype(bool)


@dataclasses.dataclass(frozen=True)
class ImageTransform:
    """Integer images ``[B, H, W, C]`` to ``{"x": float32 [B, H, W, C], "label": int32 [B]}``.

    Args:
      num_levels: number of intensity levels ``L`` (256 for uint8 images, 17 for the digits).
      value_range: the model's range ``(lo, hi)``.
      random_flip: flip each image left-right with probability 1/2, decided by
        ``(seed, epoch, index)``.
      dequantize: ``x = lo + (hi - lo) * (k + u) / L`` with ``u`` uniform, hashed from
        ``(seed, epoch, index, pixel)``, instead of ``lo + (hi - lo) * k / (L - 1)``.
      keep_levels: also return the (flipped) integer levels as ``"levels"`` (uint8 or int32),
        e.g. for likelihood code that dequantizes on device with :func:`dequantize`.
      image_key, label_key: keys in the source's examples.
    """

    num_levels: int = 256
    value_range: ValueRange = (-1.0, 1.0)
    random_flip: bool = False
    dequantize: bool = False
    keep_levels: bool = False
    image_key: str = "image"
    label_key: str = "label"

    def __post_init__(self):
        _check_levels(self.num_levels, self.value_range)

    def __call__(
        self, batch: Mapping[str, np.ndarray], *, seed: int, epoch: int, indices: np.ndarray
    ) -> dict[str, np.ndarray]:
        if self.image_key not in batch:
            raise KeyError(
                f"ImageTransform expects key {self.image_key!r}; the batch has {sorted(batch)}"
            )
        levels = np.asarray(batch[self.image_key])
        if levels.ndim != 4:
            raise ValueError(
                f"images must have shape [B, H, W, C]; got {levels.shape} under {self.image_key!r}"
            )
        if self.random_flip:
            flip = flip_mask(seed, epoch, indices)
            levels = levels.copy()
            levels[flip] = levels[flip][:, :, ::-1, :]
        lo, hi = _check_levels(self.num_levels, self.value_range)
        if self.dequantize:
            keys = _hashing.example_keys(seed, epoch, indices, _hashing.STREAM_DEQUANTIZE)
            x = _hashing.uniform_from_keys(keys, levels.shape[1:])
            x += levels
            x *= np.float32((hi - lo) / self.num_levels)
            x += np.float32(lo)
        else:
            x = scale_levels(levels, self.num_levels, self.value_range)
        out = {"x": x}
        if self.label_key in batch:
            out["label"] = np.asarray(batch[self.label_key]).astype(np.int32)
        if self.keep_levels:
            out["levels"] = levels.astype(np.uint8 if self.num_levels <= 256 else np.int32)
        return out


@dataclasses.dataclass(frozen=True)
class IdentityTransform:
    """Pass ``"x"`` (as float32) and ``"label"`` (as int32) through; other keys unchanged."""

    def __call__(
        self, batch: Mapping[str, np.ndarray], *, seed: int, epoch: int, indices: np.ndarray
    ) -> dict[str, np.ndarray]:
        out = dict(batch)
        if "x" in out:
            out["x"] = np.asarray(out["x"], dtype=np.float32)
        if "label" in out:
            out["label"] = np.asarray(out["label"]).astype(np.int32)
        return out
