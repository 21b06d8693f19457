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


#: uint64 values: an array, or a numpy scalar where a 0-d array went through arithmetic.
U64 = np.ndarray | np.uint64


def mix64(x: U64) -> U64:
    """SplitMix64 finaliser of ``x + golden`` (uint64 in, uint64 out, wrapping arithmetic)."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def _u64(value: int) -> U64:
    return np.asarray(int(value) & _MASK64, dtype=np.uint64)


def example_keys(seed: int, epoch: int, indices: np.ndarray, stream: int) -> U64:
    """A 64-bit key per example: a hash of ``(seed, epoch, index, stream)``; shape of ``indices``."""
    base = mix64(mix64(mix64(_u64(seed)) ^ _u64(epoch)) ^ _u64(stream))
    return mix64(base ^ np.asarray(indices).astype(np.uint64))


def uniform_from_keys(keys: U64, shape: tuple[int, ...] = ()) -> np.ndarray:
    """float32 uniforms in ``[0, 1)``: ``[*keys.shape, *shape]``, one stream per key.

    Element ``j`` of key ``k``'s stream comes from the hash of ``k ^ (j // 2) * golden``: each 64-bit
    hash gives two 24-bit uniforms (bits 40..63 and 0..23), exactly representable in float32 and
    strictly below 1. Computed in place (the cost of dequantizing a batch).
    """
    keys = np.asarray(keys, dtype=np.uint64)
    size = int(np.prod(shape, dtype=np.int64))
    half = (size + 1) // 2
    with np.errstate(over="ignore"):
        z = np.arange(half, dtype=np.uint64) * _GOLDEN
        z = keys.reshape(-1, 1) ^ z[None, :]
        z += _GOLDEN
        t = z >> np.uint64(30)
        z ^= t
        z *= _M1
        np.right_shift(z, np.uint64(27), out=t)
        z ^= t
        z *= _M2
        np.right_shift(z, np.uint64(31), out=t)
        z ^= t
    u = np.empty((keys.size, 2 * half), np.float32)
    np.right_shift(z, np.uint64(40), out=t)
    u[:, 0::2] = t
    z &= np.uint64(0xFFFFFF)
    u[:, 1::2] = z
    u *= np.float32(2.0**-24)
    return u[:, :size].reshape(keys.shape + tuple(shape))


def permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffle of epoch ``epoch``: a permutation of ``range(n)`` (int64) fixed by ``(seed, epoch)``."""
    keys = example_keys(seed, epoch, np.arange(n, dtype=np.int64), STREAM_SHUFFLE)
    return np.argsort(keys, kind="stable").astype(np.int64)
