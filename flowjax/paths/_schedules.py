"""Concrete Gaussian paths: CondOT, VP (linear and cosine), sub-VP, VE, EDM, and user schedules.

Every schedule is written in flowjax's orientation (``t = 0`` noise, ``t = 1`` data). The diffusion
papers' time is ``s = 1 - t``; the formulas below say which they use. Closed-form derivatives are
checked against ``jax.jvp`` in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from flowjax import _validation as v
from flowjax.paths._base import AbstractPath, Time

#: Score SDE's cut-off from the data end for VP paths, whose ``beta_dot`` is infinite at ``t = 1``.
VP_T_MAX = 1.0 - 1e-5


def _t(t: Time) -> Float[Array, "*T"]:
    return v.as_float_array(t, "t")


class CondOT(AbstractPath):
    """Conditional optimal transport (Lipman et al.): ``alpha = t``, ``beta = 1 - (1 - sigma_min) t``.

    Valid on ``[0, 1]``; ``sigma_min > 0`` leaves ``beta(1) = sigma_min``.
    """

    sigma_min: float | Array = 0.0

    def alpha(self, t: Time) -> Float[Array, "*T"]:
        return _t(t)

    def beta(self, t: Time) -> Float[Array, "*T"]:
        return 1.0 - (1.0 - self.sigma_min) * _t(t)

    def alpha_dot(self, t: Time) -> Float[Array, "*T"]:
        return jnp.ones_like(_t(t))

    def beta_dot(self, t: Time) -> Float[Array, "*T"]:
        return jnp.full_like(_t(t), -(1.0 - self.sigma_min))


class _VPIntegral(AbstractPath):
    """Shared by VP and sub-VP: ``B(s) = int_0^s beta(r) dr`` with linear ``beta(r)`` and ``s = 1 - t``."""

    beta_min: float | Array = 0.1
    beta_max: float | Array = 20.0

    def _rate(self, t: jnp.ndarray) -> jnp.ndarray:  # beta(s) of the forward SDE
        return self.beta_min + (self.beta_max - self.beta_min) * (1.0 - t)

    def _integral(self, t: jnp.ndarray) -> jnp.ndarray:  # B(s)
        s = 1.0 - t
        return self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s**2

    def alpha(self, t: Time) -> Float[Array, "*T"]:
        return jnp.exp(-0.5 * self._integral(_t(t)))

    def alpha_dot(self, t: Time) -> Float[Array, "*T"]:
        t = _t(t)
        return 0.5 * self._rate(t) * self.alpha(t)


class VPLinear(_VPIntegral):
    """Variance preserving, linear ``beta(s)`` (DDPM / score SDE VP).

    ``alpha = exp(-B(s)/2)``, ``beta = sqrt(1 - exp(-B(s)))`` with
    ``B(s) = beta_min s + (beta_max - beta_min) s^2 / 2`` and ``s = 1 - t``. ``alpha(0) = 6.6e-3`` for
    the defaults (not exactly 0); ``beta_dot`` is infinite at ``t = 1``, so ``t_max = 1 - 1e-5``.
    """

    def beta(self, t: Time) -> Float[Array, "*T"]:
        return jnp.sqrt(-jnp.expm1(-self._integral(_t(t))))

    def beta_dot(self, t: Time) -> Float[Array, "*T"]:
        t = _t(t)
        return -0.5 * self._rate(t) * self.alpha(t) ** 2 / self.beta(t)

    @property
    def t_max(self) -> float:
        return VP_T_MAX


class SubVP(_VPIntegral):
    """Sub-VP (score SDE): ``alpha = exp(-B(s)/2)``, ``beta = 1 - exp(-B(s))``; valid on ``[0, 1]``."""

    def beta(self, t: Time) -> Float[Array, "*T"]:
        return -jnp.expm1(-self._integral(_t(t)))

    def beta_dot(self, t: Time) -> Float[Array, "*T"]:
        t = _t(t)
        return -self._rate(t) * jnp.exp(-self._integral(t))


class VPCosine(AbstractPath):
    """Variance preserving cosine schedule (Nichol & Dhariwal), continuous time.

    In diffusion time ``alpha^2 = cos^2(theta) / cos^2(theta_0)`` with
    ``theta = (s + c) / (1 + c) * pi / 2`` and ``c = s_offset``. In flowjax time this is
    ``alpha = sin(phi) / cos(theta_0)`` with ``phi = t pi / (2 (1 + c))``, and
    ``beta = sqrt(1 - alpha^2) = sqrt(sin((1 - t) pi / (2 (1 + c))) cos(theta_0 - phi)) / cos(theta_0)``,
    written without cancellation at either end. ``alpha(0) = 0`` exactly; ``beta_dot`` is infinite
    at ``t = 1``, so ``t_max = 1 - 1e-5``.
    """

    s: float | Array = 0.008

    def _rate(self) -> float | jnp.ndarray:
        return 0.5 * math.pi / (1.0 + self.s)

    def _cos_theta0(self) -> jnp.ndarray:
        return jnp.cos(self.s * self._rate())

    def alpha(self, t: Time) -> Float[Array, "*T"]:
        return jnp.sin(_t(t) * self._rate()) / self._cos_theta0()

    def beta(self, t: Time) -> Float[Array, "*T"]:
        t = _t(t)
        w = self._rate()
        prod = jnp.sin((1.0 - t) * w) * jnp.cos((self.s - t) * w)
        return jnp.sqrt(jnp.maximum(prod, 0.0)) / self._cos_theta0()

    def alpha_dot(self, t: Time) -> Float[Array, "*T"]:
        return self._rate() * jnp.cos(_t(t) * self._rate()) / self._cos_theta0()

    def beta_dot(self, t: Time) -> Float[Array, "*T"]:
        t = _t(t)
        return -self.alpha(t) * self.alpha_dot(t) / self.beta(t)

    @property
    def t_max(self) -> float:
        return VP_T_MAX


class VE(AbstractPath):
    """Variance exploding (score SDE / NCSN): ``alpha = 1``, ``beta = sigma_min (sigma_max/sigma_min)^(1-t)``.

    Never reaches the ideal ends: ``alpha(0) = 1`` (the prior ``N(0, sigma_max^2 I)`` ignores the data's
    spread) and ``beta(1) = sigma_min``. Valid on ``[0, 1]``.
    """

    sigma_min: float | Array = 0.01
    sigma_max: float | Array = 50.0

    def alpha(self, t: Time) -> Float[Array, "*T"]:
        return jnp.ones_like(_t(t))

    def beta(self, t: Time) -> Float[Array, "*T"]:
        t = _t(t)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** (1.0 - t)

    def alpha_dot(self, t: Time) -> Float[Array, "*T"]:
        return jnp.zeros_like(_t(t))

    def beta_dot(self, t: Time) -> Float[Array, "*T"]:
        return -jnp.log(self.sigma_max / self.sigma_min) * self.beta(t)


class EDM(AbstractPath):
    """Karras et al.'s ``x = x1 + sigma eps`` with their rho-warped noise levels as time.

    ``alpha = 1``, ``beta = sigma(t) = (sigma_max^(1/rho) + t (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``,
    so a uniform grid in ``t`` is EDM's sampling grid. Valid on ``[0, 1]``; like VE, it reaches
    neither ideal end.
    """

    sigma_min: float | Array = 0.002
    sigma_max: float | Array = 80.0
    rho: float | Array = 7.0

    def _base(self, t: jnp.ndarray) -> jnp.ndarray:
        lo, hi = self.sigma_min ** (1.0 / self.rho), self.sigma_max ** (1.0 / self.rho)
        return hi + t * (lo - hi)

    def alpha(self, t: Time) -> Float[Array, "*T"]:
        return jnp.ones_like(_t(t))

    def beta(self, t: Time) -> Float[Array, "*T"]:
        return self._base(_t(t)) ** self.rho

    def alpha_dot(self, t: Time) -> Float[Array, "*T"]:
        return jnp.zeros_like(_t(t))

    def beta_dot(self, t: Time) -> Float[Array, "*T"]:
        lo, hi = self.sigma_min ** (1.0 / self.rho), self.sigma_max ** (1.0 / self.rho)
        return self.rho * (lo - hi) * self._base(_t(t)) ** (self.rho - 1.0)


class GaussianPath(AbstractPath):
    """A user schedule from two elementwise functions; derivatives by forward-mode autodiff.

    Example::

        path = GaussianPath(lambda t: jnp.sin(t * jnp.pi / 2), lambda t: jnp.cos(t * jnp.pi / 2))
    """

    alpha_fn: Callable[[Array], Array] = eqx.field(static=True)
    beta_fn: Callable[[Array], Array] = eqx.field(static=True)
    time_min: float = eqx.field(static=True, default=0.0)
    time_max: float = eqx.field(static=True, default=1.0)

    def alpha(self, t: Time) -> Float[Array, "*T"]:
        return self.alpha_fn(_t(t))

    def beta(self, t: Time) -> Float[Array, "*T"]:
        return self.beta_fn(_t(t))

    @property
    def t_min(self) -> float:
        return self.time_min

    @property
    def t_max(self) -> float:
        return self.time_max


_REGISTRY: dict[str, type[AbstractPath]] = {
    "condot": CondOT,
    "vp_linear": VPLinear,
    "vp_cosine": VPCosine,
    "subvp": SubVP,
    "ve": VE,
    "edm": EDM,
}


def get_path(name: str, **kwargs) -> AbstractPath:
    """Build a path from its config name (``condot``, ``vp_linear``, ``vp_cosine``, ``subvp``, ``ve``, ``edm``)."""
    v.choice(name, tuple(_REGISTRY), "path")
    return _REGISTRY[name](**kwargs)
