"""The SDE extension ``dX = [u_t + sigma_t^2 / 2 * score_t] dt + sigma_t dW``: noise level and noise.

* :func:`noise_schedule` turns the user's ``sigma`` (a constant, a callable ``t -> sigma_t`` or the
  name ``"reverse"``) into a pytree callable. ``"reverse"`` is ``sigma_t^2 = 2 a_t`` with Proposition
  1's ``a_t`` (``flowjax.paths.prop1_coefficients``): the classic reverse-time SDE of the forward
  noising process (for VP, score SDE's reverse diffusion).
* The noise is additive (``sigma_t`` does not depend on ``X``), so Ito and Stratonovich agree and
  solvers for additive noise (ShARK, SRA1) apply.
* Brownian motion: adaptive steps use ``diffrax.VirtualBrownianTree`` (consistent under step
  rejection, reproducible from the key). Fixed grids use :class:`GridBrownianPath`: step ``i``
  draws ``N(0, I)`` from ``fold_in(key, i)``, the same numbers the plain ``lax.scan``
  Euler-Maruyama loop uses, so the two backends agree on one grid; it costs one normal draw per
  step, against the tree's ~12 bisection levels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax import _validation as v
from flowjax.paths import AbstractPath, prop1_coefficients

SIGMA_NAMES = ("reverse",)


class NoiseSchedule(eqx.Module):
    """``sigma_t`` as a function of a scalar ``t`` (returns a scalar)."""

    kind: str = eqx.field(static=True)  # "constant" | "callable" | "reverse"
    constant: float = eqx.field(static=True, default=0.0)
    fn: Callable[[Array], Array] | None = eqx.field(static=True, default=None)
    path: AbstractPath | None = None

    @property
    def is_zero(self) -> bool:
        """True only for the constant 0 (the ODE)."""
        return self.kind == "constant" and self.constant == 0.0

    def __call__(self, t: Float[Array, ""]) -> Float[Array, ""]:
        t = jnp.asarray(t)
        if self.kind == "constant":
            return jnp.full((), self.constant, t.dtype)
        if self.kind == "reverse":
            assert self.path is not None
            a, _ = prop1_coefficients(self.path, t)
            return jnp.sqrt(jnp.maximum(2.0 * a, 0.0)).astype(t.dtype)
        assert self.fn is not None
        out = jnp.asarray(self.fn(t))
        if out.shape != ():
            raise ValueError(
                f"a callable sigma must map a scalar t to a scalar sigma_t; got shape {out.shape}"
            )
        v.check_value(jnp.all(out >= 0), "sigma_t must be non-negative; got {}", out)
        return out.astype(t.dtype)


def noise_schedule(sigma: Any, path: AbstractPath | None = None) -> NoiseSchedule:
    """Validate ``sigma`` (float >= 0, callable, or ``"reverse"``) into a :class:`NoiseSchedule`.

    ``path`` is needed to evaluate ``"reverse"`` (``None``: validation only).
    """
    if isinstance(sigma, str):
        v.choice(sigma, SIGMA_NAMES, "sigma")
        return NoiseSchedule("reverse", path=path)
    if callable(sigma):
        return NoiseSchedule("callable", fn=sigma)
    if isinstance(sigma, int | float) and not isinstance(sigma, bool):
        if not sigma >= 0 or not math.isfinite(sigma):
            raise ValueError(f"sigma must be a finite non-negative number; got {sigma}")
        return NoiseSchedule("constant", constant=float(sigma))
    arr = np.asarray(sigma) if v.is_concrete(sigma) else None
    if arr is None or arr.shape != () or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(
            "sigma must be a non-negative number, a callable t -> sigma_t, or 'reverse'; got "
            f"{sigma!r}"
        )
    value = float(arr)
    if not value >= 0 or not math.isfinite(value):
        raise ValueError(f"sigma must be a finite non-negative number; got {value}")
    return NoiseSchedule("constant", constant=value)


def grid_increment(
    key: PRNGKeyArray, i: Any, dt: Array, shape: tuple[int, ...], dtype: Any
) -> Array:
    """The Brownian increment of fixed-grid step ``i``: ``sqrt(dt) * N(0, I)`` from ``fold_in(key, i)``."""
    z = jax.random.normal(jax.random.fold_in(key, i), shape, dtype)
    return jnp.sqrt(jnp.abs(dt)).astype(dtype) * z


class GridBrownianPath(diffrax.AbstractBrownianPath):
    """Brownian increments over the intervals of one fixed grid (for fixed-step SDE solves).

    Only increments between consecutive grid points may be requested (what a fixed-step solver
    asks for); values at single times are not defined.
    """

    # mypy reads diffrax's AbstractVar declarations (t0, t1, levy_area) as dataclass fields of
    # the base class, which they are not at run time (equinox): hence the ignores in this class
    grid: Float[Array, " T"]  # type: ignore[misc]  # ascending, T = N + 1 times
    key: PRNGKeyArray  # type: ignore[misc]
    shape: tuple[int, ...] = eqx.field(static=True)  # type: ignore[misc]
    dtype: Any = eqx.field(static=True)  # type: ignore[misc]
    levy_area: type = eqx.field(static=True, default=diffrax.BrownianIncrement)

    @property
    def t0(self) -> Array:  # type: ignore[override]
        return self.grid[0]

    @property
    def t1(self) -> Array:  # type: ignore[override]
        return self.grid[-1]

    def evaluate(self, t0: Any, t1: Any = None, left: bool = True, use_levy: bool = False) -> Any:
        del left
        if t1 is None:
            raise ValueError("GridBrownianPath only provides increments between grid points")
        t0 = jnp.asarray(t0, self.grid.dtype)
        t1 = jnp.asarray(t1, self.grid.dtype)
        i = jnp.searchsorted(self.grid, 0.5 * (t0 + t1)) - 1  # the interval holding the step
        dt = t1 - t0
        w = grid_increment(self.key, i, dt, self.shape, self.dtype)
        if not use_levy:
            return w
        if self.levy_area is diffrax.SpaceTimeLevyArea:
            kh = jax.random.fold_in(jax.random.fold_in(self.key, i), 1)
            h = jnp.sqrt(jnp.abs(dt) / 12.0).astype(self.dtype) * jax.random.normal(
                kh, self.shape, self.dtype
            )
            return diffrax.SpaceTimeLevyArea(dt=dt, W=w, H=h)
        return diffrax.BrownianIncrement(dt=dt, W=w)


class AdditiveNoiseTerm(diffrax.AbstractTerm):
    """``sigma_t dW`` with a scalar ``sigma_t``: the diffusion term of the SDE extension."""

    sigma: NoiseSchedule
    brownian: diffrax.AbstractBrownianPath

    def vf(self, t: Any, y: Array, args: Any) -> Array:
        del args
        return self.sigma(jnp.asarray(t, y.dtype))

    def contr(self, t0: Any, t1: Any, **kwargs: Any) -> Any:
        return self.brownian.evaluate(t0, t1, **kwargs)

    def prod(self, vf: Array, control: Array) -> Array:
        return vf * control


def virtual_brownian_tree(
    key: PRNGKeyArray, t0: Array, t1: Array, shape: tuple[int, ...], dtype: Any, levy_area: type
) -> diffrax.VirtualBrownianTree:
    """A ``VirtualBrownianTree`` on ``[t0, t1]`` resolved to ``2^-12`` of the interval."""
    return diffrax.VirtualBrownianTree(
        t0,
        t1,
        tol=(t1 - t0) * 2.0**-12,
        shape=jax.ShapeDtypeStruct(shape, dtype),
        key=key,
        levy_area=levy_area,
    )
