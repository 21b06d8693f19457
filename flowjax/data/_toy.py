"""Toy 2-D distributions: jit-able samplers from a key and fixed finite datasets.

Each distribution is defined here by its sampler; the constants below are part of the definition.

* ``"checkerboard"``: uniform on the 8 squares ``[-4 + 2i, -2 + 2i] x [-4 + 2j, -2 + 2j]`` with
  ``i + j`` even (``i, j`` in ``0..3``); density ``1/32`` on its support. Label: the square
  (``0..7``). Moments: mean 0, ``Var x_1 = Var x_2 = 16/3``, ``E[x_1 x_2] = 1``.
* ``"moons"``: two interleaved half circles (the classic "two moons"): label 0 at
  ``(cos a, sin a)``, label 1 at ``(1 - cos a, 1/2 - sin a)``, ``a ~ U[0, pi]``, plus
  ``N(0, 0.1^2 I)`` noise, then centred (minus ``(1/2, 1/4)``, the exact mean) and scaled by 2.
  Moments: mean 0, ``Var x_1 = 4 (3/4 + 0.01)``, ``Var x_2 = 4 (9/16 - 1/pi + 0.01)``.
* ``"eight_gaussians"``: :func:`flowjax.oracle.eight_gaussians` (radius 4, std 0.5); label: the
  component. Its exact density, score and velocity come from the oracle.
* ``"spirals"``: two interleaved Archimedean spirals: ``s ~ U[0, 1)``, ``theta = 3 pi sqrt(s)``,
  radius ``r = 4 sqrt(s)``, point ``r (cos theta, sin theta)`` (label 0) or its negation (label 1),
  plus ``N(0, 0.1^2 I)`` noise. Moments: mean 0, ``E|x|^2 = 8 + 2 * 0.1^2``.
* any :class:`flowjax.oracle.GaussianMixture` passed instead of a name (any dimension); label: the
  component.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from flowjax import _validation as v
from flowjax.data._source import ArraySource
from flowjax.oracle import GaussianMixture, eight_gaussians

__all__ = ["TOY_DATASETS", "toy_dataset", "toy_num_classes", "toy_sample", "toy_sample_with_labels"]

TOY_DATASETS = ("checkerboard", "moons", "eight_gaussians", "spirals")

_NOISE = 0.1
# The 8 black squares of a 4x4 board on [-4, 4]^2: (i, j) with i + j even.
_CELLS = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0])


def _checkerboard(key: PRNGKeyArray, n: int, dtype) -> tuple[Array, Array]:
    k_cell, k_u = jax.random.split(key)
    label = jax.random.randint(k_cell, (n,), 0, len(_CELLS))
    corner = jnp.asarray(_CELLS, dtype)[label] * 2.0 - 4.0
    return corner + 2.0 * jax.random.uniform(k_u, (n, 2), dtype), label


def _moons(key: PRNGKeyArray, n: int, dtype) -> tuple[Array, Array]:
    k_lab, k_a, k_eps = jax.random.split(key, 3)
    label = jax.random.bernoulli(k_lab, 0.5, (n,)).astype(jnp.int32)
    a = jax.random.uniform(k_a, (n,), dtype, 0.0, math.pi)
    outer = jnp.stack([jnp.cos(a), jnp.sin(a)], axis=1)
    inner = jnp.stack([1.0 - jnp.cos(a), 0.5 - jnp.sin(a)], axis=1)
    pts = jnp.where(label[:, None] == 1, inner, outer)
    pts = pts + _NOISE * jax.random.normal(k_eps, (n, 2), dtype)
    return 2.0 * (pts - jnp.asarray([[0.5, 0.25]], dtype)), label


def _spirals(key: PRNGKeyArray, n: int, dtype) -> tuple[Array, Array]:
    k_lab, k_s, k_eps = jax.random.split(key, 3)
    label = jax.random.bernoulli(k_lab, 0.5, (n,)).astype(jnp.int32)
    root = jnp.sqrt(jax.random.uniform(k_s, (n,), dtype))
    theta = 3.0 * math.pi * root
    pts = 4.0 * root[:, None] * jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=1)
    sign = jnp.where(label == 1, -1.0, 1.0).astype(dtype)
    return sign[:, None] * pts + _NOISE * jax.random.normal(k_eps, (n, 2), dtype), label


def _mixture(mix: GaussianMixture):
    def sample(key: PRNGKeyArray, n: int, dtype) -> tuple[Array, Array]:
        x, label = mix.sample_with_labels(key, n)
        return x.astype(dtype), label

    return sample


def _eight_gaussians(key: PRNGKeyArray, n: int, dtype) -> tuple[Array, Array]:
    # built per call, not at import: creating arrays at import time would start JAX's backend,
    # after which jax.distributed.initialize can no longer be called
    return _mixture(eight_gaussians())(key, n, dtype)


_SAMPLERS = {
    "checkerboard": _checkerboard,
    "moons": _moons,
    "eight_gaussians": _eight_gaussians,
    "spirals": _spirals,
}
_NUM_CLASSES = {"checkerboard": 8, "moons": 2, "eight_gaussians": 8, "spirals": 2}


def _resolve(name: str | GaussianMixture):
    if isinstance(name, GaussianMixture):
        return _mixture(name)
    if not isinstance(name, str):
        raise TypeError(
            f"name must be a toy dataset name or a flowjax.oracle.GaussianMixture; got {name!r}"
        )
    v.choice(name, TOY_DATASETS, "toy dataset")
    return _SAMPLERS[name]


def toy_num_classes(name: str | GaussianMixture) -> int:
    """Number of distinct labels of a toy distribution."""
    if isinstance(name, GaussianMixture):
        return name.num_components
    _resolve(name)
    return _NUM_CLASSES[name]


def toy_sample_with_labels(
    name: str | GaussianMixture, key: PRNGKeyArray, n: int, dtype=None
) -> tuple[Float[Array, "n d"], Int[Array, " n"]]:
    """``n`` samples ``[n, d]`` (``d = 2`` for the named sets) and their labels ``[n]`` (int32).

    Pure and jit-able (``name`` and ``n`` static; a GaussianMixture may be a traced argument).
    """
    sampler = _resolve(name)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer; got {n!r}")
    x, label = sampler(key, int(n), dtype or jnp.result_type(float))
    return x, label.astype(jnp.int32)


def toy_sample(
    name: str | GaussianMixture, key: PRNGKeyArray, n: int, dtype=None
) -> Float[Array, "n d"]:
    """``n`` samples of a toy distribution: ``[n, 2]`` (``[n, d]`` for a mixture). Jit-able."""
    return toy_sample_with_labels(name, key, n, dtype)[0]


_SPLIT_IDS = {"train": 0, "test": 1, "validation": 2}


@functools.partial(jax.jit, static_argnums=(0, 2))
def _named_f32(name: str, key: PRNGKeyArray, n: int) -> tuple[Array, Array]:
    return toy_sample_with_labels(name, key, n, jnp.float32)


@functools.partial(jax.jit, static_argnums=(2,))
def _mixture_f32(mix: GaussianMixture, key: PRNGKeyArray, n: int) -> tuple[Array, Array]:
    return toy_sample_with_labels(mix, key, n, jnp.float32)


def toy_dataset(
    name: str | GaussianMixture, n: int, seed: int = 0, split: str = "train"
) -> ArraySource:
    """A fixed finite sample: ``{"x": float32 [n, d], "label": int32 [n]}`` as an ArraySource.

    The examples are ``toy_sample_with_labels(name, fold_in(PRNGKey(seed), s), n)`` with ``s`` = 0,
    1, 2 for the ``"train"``, ``"test"``, ``"validation"`` splits, so splits are independent
    samples and a seed reproduces them exactly.
    """
    v.choice(split, tuple(_SPLIT_IDS), "toy split")
    key = jax.random.fold_in(jax.random.PRNGKey(seed), _SPLIT_IDS[split])
    _resolve(name)
    if isinstance(name, GaussianMixture):
        x, label = _mixture_f32(name, key, int(n))
    else:
        x, label = _named_f32(name, key, int(n))
    return ArraySource({"x": np.asarray(x, np.float32), "label": np.asarray(label, np.int32)})
