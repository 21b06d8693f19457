"""The sharded train step: gradient of the global-batch loss, optimizer update, EMA.

Two ways to compute the gradient, one update: ``parallelism="jit"`` lets the compiler (GSPMD)
partition one program over the mesh; ``parallelism="shard_map"`` runs the loss per device on its
block of the batch and averages with explicit collectives (:mod:`flowjax.training._shard_map`).
The optimizer and the EMA then run on the averaged gradient in the same jitted program, on the
state's own layout (replicated, or split over ``fsdp``: element-wise, so no communication beyond
the global norms of clipping and metrics).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, PyTree

from flowjax._validation import choice
from flowjax.parallel import (
    DATA_AXIS,
    batch_sharding,
    default_batch_axes,
    example_keys,
    replicated,
    shard_batch,
    spec_axes,
)
from flowjax.training._accumulate import accumulate_value_and_grad
from flowjax.training._optim import learning_rate
from flowjax.training._remat import remat_loss
from flowjax.training._shard_map import shard_map_value_and_grad
from flowjax.training._state import TrainState, _broadcast_prefix

LossFn = Callable[[PyTree, Mapping[str, Array], Array], tuple[Array, Mapping[str, Array]]]

RESERVED_METRICS = ("loss", "grad_norm", "learning_rate")
PARALLELISMS = ("jit", "shard_map")
#: The batch entry that ``make_train_step(example_keys=True)`` adds: one raw key per example.
EXAMPLE_KEY = "example_key"


def ema_decay_at(step: Array, decay: float, warmup: bool) -> Array:
    """EMA decay used at update ``step`` (0-based): ``decay``, or ``min(decay, (1+s)/(10+s))``.

    The warmup form lets the average forget its (random) initialisation early in training.
    """
    d = jnp.asarray(decay, jnp.float32)
    if warmup:
        s = step.astype(jnp.float32)
        d = jnp.minimum(d, (1.0 + s) / (10.0 + s))
    return d


def _ema_update(ema: PyTree, params: PyTree, decay: Array) -> PyTree:
    def upd(e: Array, p: Array) -> Array:
        d = decay.astype(e.dtype)
        return e + (1 - d) * (p.astype(e.dtype) - e)

    return jax.tree.map(upd, ema, params)


def checked_loss(loss_fn: LossFn) -> LossFn:
    """``loss_fn`` with its outputs checked: a floating scalar loss (as float32) and a dict aux."""

    def loss_of(params: PyTree, batch: Mapping[str, Array], key: Array) -> tuple:
        out = loss_fn(params, batch, key)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(
                "loss_fn must return (loss, aux) with aux a dict of scalars; got "
                f"{type(out).__name__}"
            )
        loss, aux = out
        loss = jnp.asarray(loss)
        if loss.shape != () or not jnp.issubdtype(loss.dtype, jnp.floating):
            raise ValueError(
                f"loss_fn must return a floating scalar loss; got shape {loss.shape}, "
                f"dtype {loss.dtype}"
            )
        if not isinstance(aux, Mapping):
            raise TypeError(f"loss_fn's aux must be a dict of scalars, got {type(aux).__name__}")
        # differentiate a float32 scalar even when the model computes in bfloat16
        return (loss.astype(jnp.float32) if loss.dtype.itemsize < 4 else loss), aux

    return loss_of


class TrainStep:
    """``state, metrics = step(state, batch)``: one optimizer step on a global batch.

    Build it with :func:`make_train_step`. The step is one ``jax.jit`` with explicit shardings:
    the batch is split along its leading axis over the mesh's batch axes, the state has the
    shardings given (replicated by default), the state's buffers are donated. The gradient is that
    of the mean of ``loss_fn`` over the global batch. ``parallelism="jit"``: ``loss_fn`` sees the
    whole global batch and the compiler partitions it. ``parallelism="shard_map"``: ``loss_fn``
    sees one device's block and the step averages gradients and metrics with explicit collectives
    (see :mod:`flowjax.training._shard_map`); the two agree up to summation order when ``loss_fn``
    is a mean of per-example terms that draw their randomness from per-example keys
    (``example_keys=True``).

    Metrics (float32 scalars, replicated): ``loss``, ``grad_norm`` (global L2 norm of the gradient
    before clipping), ``learning_rate`` (when the optimizer exposes it, see ``make_optimizer``) and
    every entry of the loss's ``aux`` dict.

    Large global batches: ``grad_accum_steps=k`` evaluates the gradient on ``k`` micro-batches in
    sequence within the one step (float32 accumulation; see ``flowjax.training._accumulate``),
    ``remat`` rematerialises activations (:func:`flowjax.training.remat_loss`). Neither changes
    the state's layout, so checkpoints move freely between settings.
    """

    def __init__(
        self,
        loss_fn: LossFn,
        optimizer: optax.GradientTransformation,
        *,
        mesh: Mesh,
        ema_decay: float | None = 0.999,
        ema_warmup: bool = False,
        state_sharding: Any = None,
        batch_axes: Sequence[str] | None = None,
        donate: bool = True,
        grad_accum_steps: int = 1,
        remat: str | None = None,
        parallelism: str = "jit",
        example_keys: bool = False,
    ):
        choice(parallelism, PARALLELISMS, "parallelism")
        if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1) or be None, got {ema_decay}")
        if isinstance(grad_accum_steps, bool) or not isinstance(grad_accum_steps, int):
            raise TypeError(f"grad_accum_steps must be an int >= 1, got {grad_accum_steps!r}")
        if grad_accum_steps < 1:
            raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")
        self.grad_accum_steps = grad_accum_steps
        self.remat = remat
        if remat is not None:
            loss_fn = remat_loss(loss_fn, remat)
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.mesh = mesh
        self.ema_decay = ema_decay
        self.ema_warmup = ema_warmup
        self.batch_sharding = batch_sharding(mesh, batch_axes)
        self.batch_axes = tuple(batch_axes) if batch_axes is not None else default_batch_axes(mesh)
        if parallelism == "shard_map" and DATA_AXIS not in self.batch_axes:
            raise ValueError(
                f"parallelism='shard_map' averages over the mesh's {DATA_AXIS!r} axis, but the "
                f"batch axes {self.batch_axes} of the mesh {dict(mesh.shape)} do not include it; "
                f"build the mesh with make_mesh({{{DATA_AXIS!r}: -1}}) (optionally with 'fsdp')"
            )
        self.parallelism = parallelism
        self.example_keys = bool(example_keys)
        self.metrics_sharding = replicated(mesh)
        self.state_sharding = state_sharding if state_sharding is not None else replicated(mesh)
        self.donate = donate
        self.jitted = jax.jit(
            self._update,
            in_shardings=(self.state_sharding, self.batch_sharding),
            out_shardings=(self.state_sharding, self.metrics_sharding),
            donate_argnums=(0,) if donate else (),
        )

    # -- the pure update ------------------------------------------------------------------------

    def _update(self, state: TrainState, batch: Mapping[str, Array]) -> tuple[TrainState, dict]:
        if self.example_keys:
            key, step_key, examples_key = jax.random.split(state.key, 3)
            batch = self._with_example_keys(batch, examples_key)
        else:
            key, step_key = jax.random.split(state.key)
        loss_of = checked_loss(self.loss_fn)
        if self.parallelism == "shard_map":
            (loss, aux), grads = shard_map_value_and_grad(
                loss_of,
                state.params,
                batch,
                step_key,
                mesh=self.mesh,
                batch_axes=self.batch_axes,
                param_specs=self._param_specs(state),
                grad_accum_steps=self.grad_accum_steps,
            )
        elif self.grad_accum_steps == 1:
            (loss, aux), grads = jax.value_and_grad(
                lambda p: loss_of(p, batch, step_key), has_aux=True
            )(state.params)
        else:
            (loss, aux), grads = accumulate_value_and_grad(
                loss_of,
                state.params,
                batch,
                step_key,
                self.grad_accum_steps,
                mesh=self.mesh,
                batch_axes=self.batch_axes,
            )
        return self._apply(state, key, loss, aux, grads)

    def _with_example_keys(self, batch: Mapping[str, Array], key: Array) -> dict[str, Array]:
        """``batch`` plus ``EXAMPLE_KEY``: ``fold_in(key, i)`` for global example ``i``."""
        if EXAMPLE_KEY in batch:
            raise ValueError(
                f"example_keys=True adds batch[{EXAMPLE_KEY!r}]; the batch already has one"
            )
        size = next(iter(batch.values())).shape[0]
        keys = example_keys(key, jnp.arange(size, dtype=jnp.uint32))
        sharding = NamedSharding(self.mesh, P(self.batch_axes))
        return {**batch, EXAMPLE_KEY: jax.lax.with_sharding_constraint(keys, sharding)}

    def _param_specs(self, state: TrainState) -> PyTree:
        """The ``PartitionSpec`` of every parameter (for ``shard_map``), checked against the mesh."""

        def spec(sharding: Any) -> P:
            if not isinstance(sharding, NamedSharding) or sharding.mesh != self.mesh:
                raise TypeError(
                    "parallelism='shard_map' needs the state's shardings to be NamedShardings on "
                    f"the step's mesh; got {sharding}"
                )
            outside = [a for _, axes in spec_axes(sharding.spec) for a in axes]
            outside = [a for a in outside if a not in self.batch_axes]
            if outside:
                raise ValueError(
                    f"parallelism='shard_map': a parameter is split over the mesh axes {outside} "
                    f"(spec {sharding.spec}), which are not batch axes {self.batch_axes}"
                )
            return sharding.spec

        return jax.tree.map(spec, self.state_shardings(state).params)

    def _apply(
        self, state: TrainState, key: Array, loss: Array, aux: Mapping[str, Array], grads: PyTree
    ) -> tuple[TrainState, dict]:
        """The optimizer update, the EMA and the metrics, from the mean loss and gradient."""
        grad_norm = optax.tree.norm(grads).astype(jnp.float32)
        # optax mixes int32 step counts with floats (Adam's bias correction); it is third-party
        # code, so it runs under standard promotion whatever the caller's setting.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)

        ema = state.ema_params
        if self.ema_decay is not None:
            if ema is None:
                raise ValueError(
                    f"ema_decay={self.ema_decay} but the state has no ema_params; create it with "
                    "create_train_state(..., ema=True) or pass ema_decay=None"
                )
            ema = _ema_update(
                ema, params, ema_decay_at(state.step, self.ema_decay, self.ema_warmup)
            )

        metrics = {"loss": loss, "grad_norm": grad_norm}
        lr = learning_rate(opt_state)
        if lr is not None:
            metrics["learning_rate"] = lr
        for name, value in aux.items():
            value = jnp.asarray(value)
            if name in RESERVED_METRICS:
                raise ValueError(f"loss_fn's aux may not use the reserved metric name {name!r}")
            if value.shape != ():
                raise ValueError(
                    f"loss_fn's aux[{name!r}] must be a scalar, got shape {value.shape}"
                )
            metrics[name] = value
        metrics = {k: jnp.asarray(v).astype(jnp.float32) for k, v in metrics.items()}
        new_state = TrainState(
            step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema, key=key
        )
        return new_state, metrics

    # -- host side ------------------------------------------------------------------------------

    def shard_batch(self, batch: Mapping[str, Any]) -> dict[str, jax.Array]:
        """Per-process numpy batch (or global arrays) -> global arrays split over the batch axes."""
        return shard_batch(batch, self.batch_sharding)

    def state_shardings(self, state: PyTree) -> PyTree:
        """The sharding of every leaf of ``state`` (the step's ``state_sharding`` broadcast)."""
        return _broadcast_prefix(self.state_sharding, state)

    def place_state(self, state: TrainState) -> TrainState:
        """Put ``state`` on the mesh with the step's shardings (do it once, before the first step)."""
        return jax.device_put(state, self.state_shardings(state))

    def __call__(
        self, state: TrainState, batch: Mapping[str, Any]
    ) -> tuple[TrainState, dict[str, Array]]:
        """One step. ``batch``: per-process numpy arrays ``[B_local, ...]`` or global arrays.

        The input state's buffers are donated (unusable afterwards) unless ``donate=False``.
        """
        gbatch = self.shard_batch(batch)
        try:
            return self.jitted(state, gbatch)
        except jax.errors.JaxRuntimeError:
            raise
        except Exception as err:
            shapes = {k: f"{v.dtype}{list(v.shape)}" for k, v in gbatch.items()}
            msg = (
                f"the train step failed on a batch with global shapes {shapes} (does the batch "
                f"match the model and loss_fn?): {type(err).__name__}: {err}"
            )
            try:
                new = type(err)(msg)
            except Exception:
                new = ValueError(msg)
            raise new from err


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    mesh: Mesh,
    ema_decay: float | None = 0.999,
    ema_warmup: bool = False,
    state_sharding: Any = None,
    batch_axes: Sequence[str] | None = None,
    donate: bool = True,
    grad_accum_steps: int = 1,
    remat: str | None = None,
    parallelism: str = "jit",
    example_keys: bool = False,
) -> TrainStep:
    """Build the jitted train step.

    Args:
      loss_fn: pure ``loss, aux = loss_fn(params, batch, key)``; ``batch`` is a dict of arrays
        ``[B, ...]`` (the global batch), ``loss`` a float scalar (the mean over the batch), ``aux``
        a dict of scalars (logged).
      optimizer: an optax transformation (e.g. :func:`make_optimizer`).
      mesh: the device mesh (e.g. :func:`make_mesh`).
      ema_decay: EMA decay of the parameters, updated after each step (``None``: no EMA).
      ema_warmup: use ``min(ema_decay, (1 + step) / (10 + step))`` early in training.
      state_sharding: sharding of the train state, a single sharding or a pytree prefix of the
        state (default: replicated on every device). Parameter sharding: pass
        ``fsdp_sharding(state, mesh)`` on a mesh with an ``fsdp`` axis.
      batch_axes: mesh axes splitting the batch (default: all mesh axes).
      donate: donate the input state's buffers to the output (halves the state's memory).
      grad_accum_steps: split each global batch into this many micro-batches and accumulate
        their gradients (float32) within the step: the memory of a ``B / k`` batch, the update
        of a ``B`` batch (micro-batch ``j`` draws its randomness from ``fold_in(key, j)``). The
        global batch must be a multiple of ``k`` times the number of batch devices.
      remat: activation rematerialisation of ``loss_fn``: ``None``/``"none"``, ``"blocks"``,
        ``"dots"`` or ``"blocks_dots"`` (see :func:`flowjax.training.remat_loss`).
      parallelism: ``"jit"`` (default: the compiler partitions one program over the mesh) or
        ``"shard_map"`` (``loss_fn`` runs per device on its block of the batch; gradients and
        metrics are averaged with explicit collectives over the batch axes, fsdp parameters
        all-gathered and their gradients reduce-scattered; the loss's key on device ``d`` is
        ``fold_in(key, d)``). ``"shard_map"`` needs a ``data`` axis among the batch axes. A loss
        that couples the examples of its batch (minibatch OT coupling, stratified times) then
        couples those of one device's block.
      example_keys: add ``batch["example_key"]`` (raw ``uint32[B, 2]``): ``fold_in(k, i)`` for
        the example at global position ``i``, ``k`` drawn from the state's key each step. Noise
        drawn from these keys is the same whatever the device count, ``grad_accum_steps`` or
        ``parallelism``.

    A batch with a ``"mask"`` entry (bool ``[B]``, False on padding) is averaged over its true
    rows: ``loss_fn`` must return the mean over the true rows of what it is given; micro-batches
    and (under ``shard_map``) devices are weighted by their numbers of true rows.

    Returns:
      a :class:`TrainStep`: ``state, metrics = step(state, batch)``.
    """
    return TrainStep(
        loss_fn,
        optimizer,
        mesh=mesh,
        ema_decay=ema_decay,
        ema_warmup=ema_warmup,
        state_sharding=state_sharding,
        batch_axes=batch_axes,
        donate=donate,
        grad_accum_steps=grad_accum_steps,
        remat=remat,
        parallelism=parallelism,
        example_keys=example_keys,
    )
