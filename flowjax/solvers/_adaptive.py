"""Adaptive step-size control: :class:`Adaptive` and the batched error norms.

One step size is shared by the batch (one model call per stage serves every example). Its error
norm decides what "accurate enough" means for a batch:

* ``"max"`` (:func:`batch_max_rms_norm`): the largest per-example RMS, so every example meets
  ``rtol``/``atol``;
* ``"rms"`` (:func:`batch_rms_norm`, diffrax's default): the RMS over the whole batch, the
  torchdiffeq / flow_matching convention: fewer steps for a large batch, the worst examples less
  accurate than the tolerance. A solve of one example (the likelihood's) uses it.
"""

from __future__ import annotations

import math
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

ERROR_NORMS = ("max", "rms")


def batch_max_rms_norm(y: Any) -> Float[Array, ""]:
    """The largest per-example RMS of a batched pytree (leading axis ``B`` on every leaf).

    Scalar leaves (no batch axis) fall back to the RMS over all entries.
    """
    leaves = [jnp.asarray(x) for x in jax.tree_util.tree_leaves(y)]
    if not leaves:
        return jnp.zeros(())
    if any(x.ndim == 0 for x in leaves):
        return jnp.sqrt(sum(jnp.mean(jnp.abs(x) ** 2) for x in leaves) / len(leaves))
    per_row = sum(jnp.sum(jnp.abs(x.reshape(x.shape[0], -1)) ** 2, axis=1) for x in leaves)
    size = sum(x[0].size for x in leaves)
    return jnp.sqrt(jnp.max(per_row) / size)


def batch_rms_norm(y: Any) -> Float[Array, ""]:
    """The RMS over every entry of a (batched) pytree (diffrax's default norm)."""
    leaves = [jnp.asarray(x) for x in jax.tree_util.tree_leaves(y)]
    if not leaves:
        return jnp.zeros(())
    total = sum(jnp.sum(jnp.abs(x) ** 2) for x in leaves)
    return jnp.sqrt(total / sum(x.size for x in leaves))


_NORMS = {"max": batch_max_rms_norm, "rms": batch_rms_norm}


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise TypeError(f"Adaptive.{name} must be a positive number; got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"Adaptive.{name} must be a positive finite number; got {value!r}")
    return float(value)


class Adaptive(eqx.Module):
    """Adaptive steps from an embedded error estimate (diffrax's ``PIDController``).

    Attributes:
      rtol, atol: relative and absolute tolerances of each step's error estimate.
      error_norm: ``"max"`` (every example meets the tolerance) or ``"rms"`` (the batch's RMS);
        see the module docstring.
      max_steps: step budget; a solve that needs more fails (sampling raises at run time, the
        likelihood reports ``success=False``).
    """

    rtol: float = 1e-5
    atol: float = 1e-5
    error_norm: str = "max"
    max_steps: int = 4096

    def __check_init__(self) -> None:
        _positive(self.rtol, "rtol")
        _positive(self.atol, "atol")
        if self.error_norm not in ERROR_NORMS:
            raise ValueError(
                f"unknown error_norm {self.error_norm!r}; valid choices are: {', '.join(ERROR_NORMS)}"
            )
        steps = self.max_steps
        if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
            raise ValueError(f"Adaptive.max_steps must be an integer >= 1; got {steps!r}")

    def controller(self, error_norm: str | None = None) -> diffrax.PIDController:
        """The step-size controller; ``error_norm`` overrides the attribute (``"max"``/``"rms"``)."""
        norm = _NORMS[error_norm or self.error_norm]
        return diffrax.PIDController(rtol=self.rtol, atol=self.atol, norm=norm)


def as_adaptive(adaptive: Any) -> Adaptive | None:
    """``False``/``None`` -> ``None`` (fixed steps); ``True`` -> ``Adaptive()``; an ``Adaptive`` as is."""
    if adaptive is None or adaptive is False:
        return None
    if adaptive is True:
        return Adaptive()
    if isinstance(adaptive, Adaptive):
        return adaptive
    raise TypeError(
        "adaptive must be False, True or a flowjax.solvers.Adaptive(rtol, atol, error_norm, "
        f"max_steps); got {adaptive!r}"
    )
