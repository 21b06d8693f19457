"""The jitted, sharded train step: gradient of the global-batch loss, optimizer update, EMA."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from jaxtyping import Array, PyTree

from flowjax.parallel import batch_sharding, default_batch_axes, replicated, shard_batch
from flowjax.training._accumulate import accumulate_value_and_grad
from flowjax.training._optim import learning_rate
from flowjax.training._remat import remat_loss
from flowjax.training._state import TrainState, _broadcast_prefix

LossFn = Callable[[PyTree, Mapping[str, Array], Array], tuple[Array, Mapping[str, Array]]]

RESERVED_METRICS = ("loss", "grad_norm", "learning_rate")


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


class TrainStep:
    """``state, metrics = step(state, batch)``: one optimizer step on a global batch.

    Build it with :func:`make_train_step`. The step is one ``jax.jit`` with explicit shardings:
    the batch is split along its leading axis over the mesh's batch axes, the state has the
    shardings given (replicated by default), the state's buffers are donated. The gradient is that
    of ``loss_fn`` evaluated on the whole global batch (a mean over the global batch when the loss
    averages over its batch), computed by the compiler's partitioner: no per-device gradients are
    averaged by hand.

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
    ):
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
        key, step_key = jax.random.split(state.key)

        def loss_of(params: PyTree, batch: Mapping[str, Array], key: Array) -> tuple:
            out = self.loss_fn(params, batch, key)
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
                raise TypeError(
                    f"loss_fn's aux must be a dict of scalars, got {type(aux).__name__}"
                )
            # differentiate a float32 scalar even when the model computes in bfloat16
            return (loss.astype(jnp.float32) if loss.dtype.itemsize < 4 else loss), aux

        if self.grad_accum_steps == 1:
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
    )
