"""Optimizers and learning-rate schedules (optax), with the learning rate readable from the state."""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import optax

from flowjax._validation import choice

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("constant", "cosine", "linear")


def make_schedule(
    lr: float,
    *,
    schedule: str = "constant",
    warmup_steps: int = 0,
    total_steps: int | None = None,
    end_lr: float = 0.0,
) -> optax.Schedule:
    """Learning rate as a function of the step: linear warmup from 0, then constant/cosine/linear.

    Args:
      lr: peak learning rate (reached after ``warmup_steps``).
      schedule: ``"constant"``, ``"cosine"`` (to ``end_lr`` at ``total_steps``) or ``"linear"``
        (likewise).
      warmup_steps: steps of linear warmup from 0 (0: none).
      total_steps: length of the whole run, warmup included (needed by cosine and linear).
      end_lr: final learning rate of cosine and linear decay.
    """
    choice(schedule, SCHEDULES, "learning-rate schedule")
    if not math.isfinite(lr) or not math.isfinite(end_lr):
        raise ValueError(f"lr and end_lr must be finite; got lr={lr}, end_lr={end_lr}")
    if lr < 0 or warmup_steps < 0:
        raise ValueError(
            f"lr and warmup_steps must be >= 0; got lr={lr}, warmup_steps={warmup_steps}"
        )
    if schedule != "constant" and (total_steps is None or total_steps <= warmup_steps):
        raise ValueError(
            f"schedule {schedule!r} needs total_steps > warmup_steps; got total_steps="
            f"{total_steps}, warmup_steps={warmup_steps}"
        )
    decay_steps = (total_steps - warmup_steps) if schedule != "constant" else 1

    def fn(count: Any) -> jnp.ndarray:
        # written with explicit float32 casts (valid under strict dtype promotion)
        step = jnp.asarray(count).astype(jnp.float32)
        peak = jnp.float32(lr)
        if schedule == "constant":
            after = peak
        else:
            frac = jnp.clip((step - warmup_steps) / jnp.float32(decay_steps), 0.0, 1.0)
            shape = 0.5 * (1.0 + jnp.cos(jnp.pi * frac)) if schedule == "cosine" else 1.0 - frac
            after = jnp.float32(end_lr) + (peak - jnp.float32(end_lr)) * shape
        if warmup_steps == 0:
            return after
        return jnp.where(step < warmup_steps, peak * step / jnp.float32(warmup_steps), after)

    return fn


def make_optimizer(
    name: str = "adamw",
    lr: float = 1e-3,
    *,
    schedule: str = "constant",
    warmup_steps: int = 0,
    total_steps: int | None = None,
    end_lr: float = 0.0,
    weight_decay: float = 0.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    momentum: float = 0.0,
    nesterov: bool = False,
    grad_clip: float | None = None,
) -> optax.GradientTransformation:
    """An optax optimizer: optional global-norm clipping, then AdamW / Adam / SGD on a schedule.

    The learning rate is injected as a hyperparameter (``optax.inject_hyperparams``), so the rate
    applied at each step can be read from the optimizer state (:func:`learning_rate`) and is
    checkpointed with it.

    Args:
      name: ``"adamw"`` (decoupled weight decay), ``"adam"`` or ``"sgd"``.
      lr, schedule, warmup_steps, total_steps, end_lr: see :func:`make_schedule`.
      weight_decay: AdamW's decoupled decay, or SGD's L2 term; ``"adam"`` takes none (use adamw).
      b1, b2, eps: Adam(W) moments.
      momentum, nesterov: SGD momentum (0: plain SGD).
      grad_clip: clip gradients to this global norm before the update (``None``: no clipping).

    Raises:
      ValueError: an unknown name or schedule (the message lists the valid ones), or an option
        the optimizer does not take.
    """
    choice(name, OPTIMIZERS, "optimizer")
    sched = make_schedule(
        lr, schedule=schedule, warmup_steps=warmup_steps, total_steps=total_steps, end_lr=end_lr
    )
    if name == "adam" and weight_decay:
        raise ValueError(
            f"optimizer 'adam' takes no weight_decay (got {weight_decay}); use name='adamw'"
        )
    if grad_clip is not None and grad_clip <= 0:
        raise ValueError(f"grad_clip must be positive or None, got {grad_clip}")
    # Only the learning rate is injected (as an array in the state); the other hyperparameters
    # stay Python floats, which keeps the update valid under strict dtype promotion.
    if name == "adamw":

        def factory(learning_rate: Any) -> optax.GradientTransformation:
            return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)

    elif name == "adam":

        def factory(learning_rate: Any) -> optax.GradientTransformation:
            return optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)

    else:

        def factory(learning_rate: Any) -> optax.GradientTransformation:
            parts = []
            if weight_decay:
                parts.append(optax.add_decayed_weights(weight_decay))
            parts.append(optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov))
            return optax.chain(*parts)

    opt = optax.inject_hyperparams(factory)(learning_rate=sched)
    if grad_clip is not None:
        opt = optax.chain(optax.clip_by_global_norm(grad_clip), opt)
    return opt


def learning_rate(opt_state: Any) -> jnp.ndarray | None:
    """The learning rate in an optimizer state made by :func:`make_optimizer` (``None`` if absent).

    After an update it is the rate that update applied (at initialisation, the first one's).
    """
    hyper = getattr(opt_state, "hyperparams", None)
    if isinstance(hyper, dict) and "learning_rate" in hyper:
        return hyper["learning_rate"]
    if isinstance(opt_state, tuple | list):
        children = opt_state
    elif isinstance(opt_state, dict):
        children = list(opt_state.values())
    else:
        children = [getattr(opt_state, "inner_state", None)]
    for child in children:
        if child is not None:
            found = learning_rate(child)
            if found is not None:
                return found
    return None
