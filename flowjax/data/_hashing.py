"""Counter-based randomness for the input pipeline (host side, NumPy).

Every random choice of the pipeline (the shuffle of an epoch, a flip, dequantization noise) is a
pure function of ``(seed, epoch, example index, stream)`` computed with the SplitMix64 finaliser.
Nothing depends on the batch size, the process count or how far an iterator has run, which is
what makes resumption exact and sharding consistent. The values are fixed by this file alone
(not by NumPy's generator streams, which may change between NumPy releases).
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1

# Streams: independent uses of the same (seed, epoch, index).
STREAM_SHUFFLE = 1
STREAM_FLIP = 2
STREAM_DEQUANTIZE = 3


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser of ``x + golden`` (uint64 in, uint64 out, wrapping arithmetic)."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def _u64(value: int) -> np.ndarray:
    return np.asarray(int(value) & _MASK64, dtype=np.uint64)


def example_keys(seed: int, epoch: int, indices: np.ndarray, stream: int) -> np.ndarray:
    """A 64-bit key per example: a hash of ``(seed, epoch, index, stream)``; shape of ``indices``."""
    base = mix64(mix64(mix64(_u64(seed)) ^ _u64(epoch)) ^ _u64(stream))
    return mix64(base ^ np.asarray(indices).astype(np.uint64))


def uniform_from_keys(keys: np.ndarray, shape: tuple[int, ...] = ()) -> np.ndarray:
    """float32 uniforms in ``[0, 1)``: ``[*keys.shape, *shape]``, one stream per key.

    Uses the top 24 bits of each hash, so every value is exactly representable in float32 and
    strictly below 1.
    """
    size = int(np.prod(shape, dtype=np.int64))
    with np.errstate(over="ignore"):
        counters = np.arange(size, dtype=np.uint64) * _GOLDEN
    h = mix64(keys.astype(np.uint64)[..., None] ^ counters)
    u = (h >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)
    return u.reshape(keys.shape + tuple(shape))


def permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffle of epoch ``epoch``: a permutation of ``range(n)`` (int64) fixed by ``(seed, epoch)``."""
    keys = example_keys(seed, epoch, np.arange(n, dtype=np.int64), STREAM_SHUFFLE)
    return np.argsort(keys, kind="stable").astype(np.int64)
