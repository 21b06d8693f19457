"""The boundary between Flax modules and the rest of flowjax: plain parameter pytrees.

Everything outside :mod:`flowjax.models` (losses, train step, samplers, likelihood, checkpoints)
sees a model as ``params`` (a pytree of arrays) plus a pure function:

* :func:`init` creates ``params``; :func:`count_params` counts them;
* :func:`make_apply_fn` gives ``apply_fn(params, x, t, label, *, train, key)`` for the losses;
* :func:`model_fn` gives ``fn(x, t, label=None)`` for samplers: an Equinox module holding the
  parameters as a pytree and the Linen module as a static (hashed) field, so a ``jax.jit``'d
  sampler taking ``fn`` as an argument compiles once and is reused for new parameters.
"""

from __future__ import annotations

import math
from typing import Any, cast

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray, PyTree

from flowjax import _validation as v
from flowjax.models._common import at_least_float32
from flowjax.models._embeddings import BatchTime

__all__ = ["ModelFn", "apply", "count_params", "init", "make_apply_fn", "model_fn", "summary"]


def _require_module(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a flax.linen Module; got {type(model).__name__}")


def init(
    model: nn.Module,
    key: PRNGKeyArray,
    x_example: Float[ArrayLike, "B ..."],
    *,
    label_example: Int[ArrayLike, " B"] | None = None,
) -> PyTree:
    """Initialise ``model``'s parameters for inputs shaped like ``x_example`` (its values are unused).

    Class-conditional models create their class embedding whether or not ``label_example`` is
    given. Returns the ``params`` collection: a plain pytree of arrays.
    """
    _require_module(model)
    x_example = v.require_floating(x_example, "x_example")
    v.require_batched(x_example, "x_example", 2)
    t = jnp.zeros((x_example.shape[0],), at_least_float32(x_example.dtype))
    # Two-time models (second_time="r" / "d") are initialised with a second time as well.
    t2_kw: dict[str, Any] = {"t2": t} if getattr(model, "second_time", None) is not None else {}

    def init_fn(k, x, t, lab):
        return model.init({"params": k}, x, t, lab, train=False, **t2_kw)["params"]

    if not all(v.is_concrete(a) for a in jax.tree.leaves((key, x_example, label_example))):
        return init_fn(key, x_example, t, label_example)  # inside jit / eval_shape: just trace
    lowered = jax.jit(init_fn).lower(key, x_example, t, label_example)
    return _compile_cheaply(lowered)(key, x_example, t, label_example)


def _compile_cheaply(lowered: Any) -> Any:
    """Compile a run-once function (initialisation) without XLA's CPU backend optimisations.

    Initialisation is one random draw per parameter tensor; optimising those draws is what makes
    compiling a U-Net's ``init`` slow on CPU (measured 25-40 s for a small U-Net against 2.4 s
    without, on a loaded 2-core machine), and the function runs once.
    """
    if jax.default_backend() != "cpu":
        return lowered.compile()
    try:
        return lowered.compile(compiler_options={"xla_backend_optimization_level": 0})
    except Exception:  # an XLA without this debug option: compile normally
        return lowered.compile()


def count_params(params: PyTree) -> int:
    """Number of scalar parameters in a pytree of arrays."""
    return int(sum(math.prod(jnp.shape(leaf)) for leaf in jax.tree.leaves(params)))


def summary(model: nn.Module, params: PyTree) -> str:
    """One line per top-level submodule with its parameter count, and the total."""
    lines = [f"{type(model).__name__}: {count_params(params):,} parameters"]
    if isinstance(params, dict):
        lines += [f"  {name}: {count_params(sub):,}" for name, sub in params.items()]
    return "\n".join(lines)


def apply(
    model: nn.Module,
    params: PyTree,
    x: Float[ArrayLike, "B ..."],
    t: BatchTime,
    label: Int[ArrayLike, " B"] | None = None,
    *,
    train: bool = False,
    key: PRNGKeyArray | None = None,
    t2: BatchTime | None = None,
) -> Float[Array, "B ..."]:
    """``model``'s prediction; ``train=True`` turns dropout on and then needs ``key``.

    ``t2``: the second time of a two-time model (``second_time="r"`` or ``"d"``); omitted otherwise.
    """
    _require_module(model)
    rngs = {}
    dropout: float = getattr(model, "dropout", 0.0)
    if train and dropout:
        if key is None:
            raise ValueError(
                f"train=True on a model with dropout={model.dropout} needs a dropout key (key=...)"
            )
        rngs = {"dropout": key}
    t2_kw: dict[str, Any] = {} if t2 is None else {"t2": t2}
    # without mutable collections, Module.apply returns the output alone (not a tuple)
    return cast(
        Array, model.apply({"params": params}, x, t, label, train=train, rngs=rngs, **t2_kw)
    )


def make_apply_fn(model: nn.Module):
    """``apply_fn(params, x, t, label, *, train, key, t2=None)``, the form :func:`flowjax.losses.make_loss` takes.

    ``t2`` is passed on only when given (two-time models, two-time objectives).
    """
    _require_module(model)

    def apply_fn(
        params: PyTree,
        x: Array,
        t: Array,
        label: Array | None,
        *,
        train: bool = False,
        key: PRNGKeyArray | None = None,
        t2: Array | None = None,
    ) -> Array:
        return apply(model, params, x, t, label, train=train, key=key, t2=t2)

    apply_fn.model = model  # type: ignore[attr-defined]
    return apply_fn


class ModelFn(eqx.Module):
    """``fn(x, t, label=None)``: a model with its parameters, as a pytree (parameters are leaves).

    The Linen module is a static field (Linen modules are frozen dataclasses that hash by value),
    so two ``ModelFn`` of one architecture have the same tree structure and a jitted function
    taking them as arguments is compiled once.
    """

    model: nn.Module = eqx.field(static=True)
    params: PyTree

    def __call__(
        self,
        x: Float[ArrayLike, "B ..."],
        t: BatchTime,
        label: Int[ArrayLike, " B"] | None = None,
        *,
        t2: BatchTime | None = None,
    ) -> Float[Array, "B ..."]:
        """The prediction at ``(x, t)`` in evaluation mode (no dropout); ``t2``: two-time models."""
        t2_kw: dict[str, Any] = {} if t2 is None else {"t2": t2}
        out = self.model.apply({"params": self.params}, x, t, label, train=False, **t2_kw)
        return cast(Array, out)  # no mutable collections: the output alone


def model_fn(model: nn.Module, params: PyTree) -> ModelFn:
    """Bundle ``model`` and ``params`` into a callable pytree ``fn(x, t, label=None)`` for samplers."""
    _require_module(model)
    hash(model)  # a static field must hash; raises TypeError for unhashable fields (e.g. lists)
    return ModelFn(model, params)
