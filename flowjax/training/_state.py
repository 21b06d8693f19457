"""The train state: a plain pytree of step, parameters, optimizer state, EMA parameters and key."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, PyTree, UInt32


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything a training run carries from one step to the next (a pytree).

    Attributes:
      step: int32 scalar, the number of updates applied so far.
      params: the model parameters (any pytree of arrays).
      opt_state: the optax optimizer state.
      ema_params: exponential moving average of ``params`` (``None`` when EMA is off).
      key: raw ``uint32[2]`` PRNG key, split once per step: one half is the step's key, the other
        the next state's key, so a run is a deterministic function of its initial key.
    """

    step: Array
    params: PyTree
    opt_state: PyTree
    ema_params: PyTree | None
    key: UInt32[Array, "2"]

    def replace(self, **changes: Any) -> TrainState:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)


def create_train_state(
    params: PyTree,
    optimizer: optax.GradientTransformation,
    key: Any,
    *,
    ema: bool = True,
) -> TrainState:
    """A fresh train state at step 0.

    Args:
      params: initial parameters (e.g. a Flax ``init``'s ``params``); copied, not aliased.
      optimizer: the optax transformation the train step will apply.
      key: a PRNG key, raw ``uint32[2]`` (``jax.random.PRNGKey``) or typed (``jax.random.key``);
        stored raw so that checkpoints hold plain arrays. Copied, like ``params``: the train step
        donates the state's buffers, and the caller's arrays stay usable.
      ema: keep an exponential moving average of the parameters (initialised to ``params``).
    """
    key = jnp.array(key)  # a copy: the train step donates the state's buffers
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    if key.dtype != jnp.uint32 or key.shape != (2,):
        raise ValueError(
            f"key must be a threefry PRNG key (uint32[2] or jax.random.key), got dtype {key.dtype} "
            f"with shape {key.shape}"
        )
    params = jax.tree.map(jnp.array, params)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        ema_params=jax.tree.map(jnp.array, params) if ema else None,
        key=key,
    )


def abstract_state(state: PyTree, sharding: Any = None) -> PyTree:
    """``jax.ShapeDtypeStruct`` leaves (with shardings) describing ``state``, for restoring into.

    Args:
      state: a concrete state (its arrays' shardings are used) or an abstract one
        (``jax.eval_shape`` output).
      sharding: a sharding, or a pytree of shardings (a prefix of ``state``), overriding the leaves'.
    """
    if sharding is None:
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
            state,
        )
    shardings = _broadcast_prefix(sharding, state)
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
    )


def _broadcast_prefix(prefix: Any, tree: PyTree) -> PyTree:
    """A pytree like ``tree`` whose leaves are ``prefix``'s shardings, ``prefix`` a tree prefix."""

    def is_sharding(x: Any) -> bool:
        return isinstance(x, jax.sharding.Sharding)

    if is_sharding(prefix):
        return jax.tree.map(lambda _: prefix, tree)
    return jax.tree.map(
        lambda p, sub: jax.tree.map(lambda _: p, sub), prefix, tree, is_leaf=is_sharding
    )


def _leaf_fingerprint(x: jax.Array) -> jax.Array:
    """A position-weighted sum of the leaf's bits modulo 2**32 (exact, order-independent)."""
    x = jnp.asarray(x)
    if x.dtype == jnp.bool_:
        bits = x.astype(jnp.uint32)
    elif x.dtype.itemsize == 8:
        bits = jax.lax.bitcast_convert_type(x, jnp.uint32)  # adds a trailing axis of 2
    elif x.dtype.itemsize == 4:
        bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    elif x.dtype.itemsize == 2:
        bits = jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
    else:
        bits = jax.lax.bitcast_convert_type(x, jnp.uint8).astype(jnp.uint32)
    bits = bits.reshape(-1)
    idx = jax.lax.iota(jnp.uint32, bits.shape[0])
    weights = idx * jnp.uint32(2654435761) + jnp.uint32(1)
    return jnp.sum(bits * weights, dtype=jnp.uint32) ^ jnp.uint32(bits.shape[0] & 0xFFFFFFFF)


def _audit_leaves(leaves: list) -> tuple[list, jax.Array]:
    fps = [_leaf_fingerprint(x) for x in leaves]
    finite = jnp.array(True)
    for x in leaves:
        if jnp.issubdtype(x.dtype, jnp.inexact):
            finite = finite & jnp.all(jnp.isfinite(x))
    return fps, finite


_audit_jit = jax.jit(_audit_leaves)


def audit_state(state: PyTree) -> tuple[list[int], bool]:
    """(:func:`state_fingerprint`, whether every floating array is finite) in one pass."""
    leaves = jax.tree.leaves(state)
    if not leaves:
        return [], True
    fps, finite = jax.device_get(_audit_jit(leaves))
    return [int(v) for v in fps], bool(finite)


def state_fingerprint(state: PyTree) -> list[int]:
    """One 32-bit checksum per array of ``state``, the same on any device layout.

    Checkpoints store it and restore verifies it, so a checkpoint whose bytes changed on disk is
    detected rather than loaded.
    """
    return audit_state(state)[0]
