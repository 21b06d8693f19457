"""Activation rematerialisation (``jax.checkpoint``) for a loss, without editing the model.

Reverse-mode differentiation keeps the forward pass's intermediate values ("residuals") until the
backward pass uses them; for a U-Net these dominate the memory of a train step. Rematerialisation
keeps fewer of them and recomputes the rest during the backward pass (about one more forward pass
of compute). :func:`remat_loss` wraps a loss function ``loss_fn(params, batch, key)``:

* ``"none"``: the loss unchanged.
* ``"blocks"``: every call of a Flax module of the given types (default: flowjax's U-Net
  ``ResBlock`` and ``AttentionBlock``) made while the loss runs becomes a ``flax.linen.checkpoint``
  (lifted ``jax.checkpoint``): only each block's inputs are kept, its inside is recomputed. This
  is done with a Flax method interceptor (``flax.linen.intercept_methods``), so the model's code
  and its parameters are unchanged. Dropout inside a block draws the same random numbers when
  recomputed, so the gradient is the one without remat.
* ``"dots"``: ``jax.checkpoint`` of the whole loss with the policy
  ``jax.checkpoint_policies.dots_saveable``: outputs of matrix multiplications and convolutions
  are kept, element-wise work (normalisation, activations) is recomputed.
* ``"blocks_dots"``: both (inside each block only matmul/convolution outputs are kept).

Gradients are those without remat (the same operations; bitwise on CPU in the tests).

Backend note, measured (``experiments/benchmarks/bench_scaling.py``): XLA's CPU compiler removes
the optimization barriers that ``jax.checkpoint`` inserts before its common-subexpression pass,
which folds the recomputation back into the forward pass, so on CPU remat changes neither the
compiled memory nor the peak; with that pass disabled
(``XLA_FLAGS=--xla_disable_hlo_passes=cse_barrier_expander``) the CPU compiler keeps the barriers
and the saving appears. GPU and TPU compilers keep the barriers through scheduling.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax

from flowjax._validation import choice

REMAT_POLICIES = ("none", "blocks", "dots", "blocks_dots")

_local = threading.local()


def _default_block_types() -> tuple[type[nn.Module], ...]:
    from flowjax.models import AttentionBlock, ResBlock

    return (ResBlock, AttentionBlock)


def _interceptor(types: tuple[type[nn.Module], ...], policy: Any) -> Callable:
    """A Flax method interceptor that runs ``__call__`` of ``types`` under ``nn.checkpoint``."""

    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if (
            context.method_name != "__call__"
            or not isinstance(module, types)
            or getattr(_local, "inside", False)
            or module.is_initializing()
        ):
            return next_fun(*args, **kwargs)

        def body(mdl, *a):
            # The lifted call re-enters this interceptor for the clone ``mdl``: pass it through.
            before = getattr(_local, "inside", False)
            _local.inside = True
            try:
                return type(mdl).__call__(mdl, *a, **kwargs)
            finally:
                _local.inside = before

        return nn.checkpoint(body, policy=policy, prevent_cse=True)(module, *args)

    return intercept


def remat_loss(
    loss_fn: Callable,
    policy: str = "blocks",
    *,
    block_types: Sequence[type[nn.Module]] | None = None,
) -> Callable:
    """``loss_fn`` with activation rematerialisation (see the module docstring for the policies).

    Args:
      loss_fn: ``loss, aux = loss_fn(params, batch, key)`` (any function works for ``"dots"``;
        ``"blocks"`` needs the model to be a Flax Linen module applied inside ``loss_fn``).
      policy: ``"none"``, ``"blocks"``, ``"dots"`` or ``"blocks_dots"``.
      block_types: Flax module classes to rematerialise for ``"blocks"`` (default: flowjax's
        ``ResBlock`` and ``AttentionBlock``). Keyword arguments of their calls must be static
        (Python values such as ``train=True``); arrays go positionally.

    Returns:
      A function with ``loss_fn``'s signature and values.
    """
    choice(policy, REMAT_POLICIES, "remat policy")
    if policy == "none":
        return loss_fn
    dots = jax.checkpoint_policies.dots_saveable
    if policy == "dots":
        return jax.checkpoint(loss_fn, policy=dots)
    types = tuple(block_types) if block_types is not None else _default_block_types()
    if not types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
        raise TypeError(f"block_types must be Flax Module classes; got {block_types!r}")
    interceptor = _interceptor(types, dots if policy == "blocks_dots" else None)

    def rematted(*args: Any, **kwargs: Any) -> Any:
        with nn.intercept_methods(interceptor):
            return loss_fn(*args, **kwargs)

    rematted.__wrapped__ = loss_fn  # type: ignore[attr-defined]
    return rematted
