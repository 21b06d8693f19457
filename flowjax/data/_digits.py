"""scikit-learn's bundled 8x8 handwritten digits: 1,797 real images with labels, no download.

The images (``sklearn.datasets.load_digits``, the UCI optical-recognition test set) have 17
intensity levels ``0..16``. flowjax keeps them as integer levels (uint8 ``[N, 8, 8, 1]``) and
scales them in the iterator's transform (``x = -1 + 2 k / 16`` in ``[-1, 1]``, or uniform
dequantization ``x = -1 + 2 (k + u) / 17``; see :mod:`flowjax.data._transforms`).

Fixed split: a permutation of the 1,797 indices hashed from seed 0 (independent of NumPy's
generators); its first 297 examples are ``"test"``, the other 1,500 ``"train"``; ``"all"`` is the
whole set. Each split keeps the original order of its examples.
"""

from __future__ import annotations

import functools

import numpy as np

from flowjax import _validation as v
from flowjax.data import _hashing
from flowjax.data._source import ArraySource

__all__ = [
    "DIGITS_NUM_LEVELS",
    "DIGITS_SPLITS",
    "digits_arrays",
    "digits_source",
]

DIGITS_NUM_LEVELS = 17
DIGITS_NUM_EXAMPLES = 1797
DIGITS_TEST_SIZE = 297
DIGITS_SPLITS = {"train": 1500, "test": 297, "all": 1797}


@functools.lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    levels = np.rint(data.images).astype(np.uint8)[..., None]  # [1797, 8, 8, 1] in 0..16
    labels = data.target.astype(np.int32)
    if levels.shape != (DIGITS_NUM_EXAMPLES, 8, 8, 1) or levels.max() != 16:
        raise RuntimeError(
            f"scikit-learn's digits are not as expected: shape {levels.shape}, max {levels.max()}"
        )
    levels.setflags(write=False)
    labels.setflags(write=False)
    return levels, labels


def _split_indices(split: str) -> np.ndarray:
    v.choice(split, tuple(DIGITS_SPLITS), "digits split")
    perm = _hashing.permutation(0, 0, DIGITS_NUM_EXAMPLES)
    if split == "test":
        idx = perm[:DIGITS_TEST_SIZE]
    elif split == "train":
        idx = perm[DIGITS_TEST_SIZE:]
    else:
        idx = perm
    return np.sort(idx)


def digits_arrays(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Integer levels uint8 ``[N, 8, 8, 1]`` in ``0..16`` and labels int32 ``[N]`` of a split.

    ``N`` is 1,500 (``"train"``), 297 (``"test"``) or 1,797 (``"all"``).
    """
    levels, labels = _load()
    idx = _split_indices(split)
    return levels[idx], labels[idx]


def digits_source(split: str = "train") -> ArraySource:
    """The digits split as an ArraySource ``{"image": uint8 [N, 8, 8, 1], "label": int32 [N]}``."""
    levels, labels = digits_arrays(split)
    return ArraySource({"image": levels, "label": labels})
