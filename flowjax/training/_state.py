"""The train state: a plain pytree of step, parameters, optimizer state, EMA parameters and key."""

from __future__ import annotations

import dataclasses
from typing import Any, no_type_check

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, PyTree, UInt32


# The field types describe a live state; pytree transforms also build TrainStates of numpy
# leaves (device_get), shardings or ShapeDtypeStructs, so runtime checkers (FLOWJAX_TYPECHECK=1,
# whose import hook honours no_type_check) skip the class.
@no_type_check
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


def _all_finite(leaves: list) -> jax.Array:
    finite = jnp.array(True)
    for x in leaves:
        if jnp.issubdtype(x.dtype, jnp.inexact):
            finite = finite & jnp.all(jnp.isfinite(x))
    return finite


_all_finite_jit = jax.jit(_all_finite)


def all_finite(state: PyTree) -> bool:
    """Whether every floating array of ``state`` is free of NaN and infinity (one device pass).

    Global over all processes: every process gets the same answer.
    """
    leaves = [x for x in jax.tree.leaves(state) if not jnp.issubdtype(x.dtype, jax.dtypes.prng_key)]
    if not leaves:
        return True
    return bool(jax.device_get(_all_finite_jit(leaves)))
