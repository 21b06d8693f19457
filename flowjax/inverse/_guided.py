"""Approximate posterior sampling with a learned prior: DPS and pseudo-inverse guidance (PiGDM).

The posterior score is ``score_t(x | y) = score_t(x) + grad_x log p_t(y | x)``, and only the prior
score is learned. ``p_t(y | x) = int p(y | x1) p(x1 | x_t = x) dx1`` is intractable; both methods
replace ``p(x1 | x)`` by a distribution centred on the model's denoiser ``x1_hat(x) = E[x1 | x]``
(the model's prediction converted to ``x1``) and differentiate *through the denoiser*:

* **DPS** (Chung et al. 2023): a point mass at ``x1_hat``, so
  ``grad_x log p_t(y | x) ~= grad_x log N(y; A x1_hat(x), s^2 I)
  = J^T A^T (y - A x1_hat) / s^2`` with ``J = d x1_hat / dx``. ``normalize=True`` uses the
  paper's step instead, ``-grad_x ||y - A x1_hat(x)||`` (the gradient divided by the residual norm,
  which is what makes their step size ``zeta`` problem-independent); either is multiplied by
  ``scale``.
* **PiGDM** (Song et al. 2023, "Pseudoinverse-guided diffusion models"): a Gaussian
  ``N(x1_hat, r_t^2 I)`` with ``r_t^2 = v beta^2 / (alpha^2 v + beta^2)`` (the posterior variance of
  a ``N(., v I)`` prior), so ``p_t(y | x) ~= N(y; A x1_hat, r_t^2 A A^T + s^2 I)`` and
  ``grad ~= J^T A^T (r_t^2 A A^T + s^2 I)^{-1} (y - A x1_hat)`` (the covariance held fixed;
  ``s = 0`` gives the pseudo-inverse ``A^+`` form of the paper). For a Gaussian prior
  ``N(mu, v I)`` and an exact model this is the exact posterior score.

Near the noise end (``alpha -> 0``) the exact measurement score vanishes like ``alpha`` (``x_t``
says nothing about ``x1``), and an exact denoiser's Jacobian ``J`` vanishes with it. A learned
denoiser's does not exactly (measured: ``|J| ~ 0.4`` at ``t = 0`` for an MLP on the 8-Gaussians
ring, against ``2e-7`` for the oracle), and converting the score term to a velocity multiplies it by
``A(t) = (1 - t) / t`` on CondOT, so the first steps can throw samples far off. ``guidance_start``
switches the term off for ``t < guidance_start`` (the sampler then follows the prior there, which is
exact where the measurement carries no information); the demos measure its effect.

Both are ``model_fn(x, t)`` wrappers of the prior model's prediction kind (the score term is
converted by :func:`flowjax.guidance.add_score_term`), usable with every sampler. Each call costs
one model evaluation and one vector-Jacobian product through it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from flowjax import _validation as v
from flowjax.guidance import add_score_term
from flowjax.inverse._operators import LinearOperator
from flowjax.parameterization import convert
from flowjax.paths import PREDICTIONS, AbstractPath

__all__ = ["METHODS", "MeasurementGuided", "dps", "pigdm"]

#: The approximations of ``grad_x log p_t(y | x)``.
METHODS = ("dps", "dps_normalized", "pigdm")


class MeasurementGuided(eqx.Module):
    """``model_fn(x, t)``: the prior prediction plus the approximate measurement score.

    Build it with :func:`dps` or :func:`pigdm`.
    """

    model_fn: Callable[..., Array]
    operator: LinearOperator
    y: Float[Array, "*B m"]
    noise_std: Float[Array, ""]
    scale: Float[Array, ""]
    data_var: Float[Array, ""]
    guidance_start: Float[Array, ""]
    path: AbstractPath
    prediction: str = eqx.field(static=True)
    method: str = eqx.field(static=True)

    def measurement_score(
        self, x: Float[Array, "B ..."], t: Float[ArrayLike, ""] | Float[ArrayLike, " B"]
    ) -> tuple[Float[Array, "B ..."], Float[Array, "B ..."]]:
        """(the prior prediction, the approximate ``grad_x log p_t(y | x)`` before ``scale``)."""
        x = self.operator.check_x(x)
        n = x.shape[0]
        y = self.y.astype(x.dtype)
        if y.ndim == 1:
            y = y[None, :]
        elif y.shape[0] != n:
            raise ValueError(
                f"y has {y.shape[0]} measurements [B, m] but the sampler's batch x has shape "
                f"{x.shape}; give y of shape [m] (shared) or [{n}, m]"
            )

        def denoise(z: Array) -> tuple[Array, Array]:
            pred = self.model_fn(z, t)
            x1 = convert(pred, source=self.prediction, target="x1", path=self.path, x=z, t=t)
            return x1, pred

        x1_hat, vjp_fn, pred = jax.vjp(denoise, x, has_aux=True)
        resid = y - self.operator.apply(x1_hat)  # [B, m]
        s2 = jnp.square(self.noise_std).astype(x.dtype)
        if self.method == "dps":
            weighted = resid / s2
        elif self.method == "dps_normalized":
            norm = jnp.sqrt(jnp.sum(jnp.square(resid), axis=1, keepdims=True))
            weighted = resid / jnp.maximum(norm, jnp.finfo(x.dtype).tiny)
        else:  # pigdm
            tb = jnp.broadcast_to(v.as_float_array(t, "t").astype(x.dtype), (n,))
            alpha, beta = self.path.alpha(tb), self.path.beta(tb)
            dv = self.data_var.astype(x.dtype)
            r2 = dv * beta**2 / (alpha**2 * dv + beta**2)
            weighted = self.operator.gram_solve(resid, r2, s2)
        (grad,) = vjp_fn(self.operator.adjoint(weighted).astype(x1_hat.dtype))
        return pred, grad

    def __call__(
        self, x: Float[Array, "B ..."], t: Float[ArrayLike, ""] | Float[ArrayLike, " B"]
    ) -> Float[Array, "B ..."]:
        pred, grad = self.measurement_score(x, t)
        tb = v.batch_time(t, grad)
        on = tb >= self.guidance_start.astype(tb.dtype)
        return add_score_term(
            pred,
            jnp.where(on, self.scale.astype(grad.dtype) * grad, 0.0),
            prediction=self.prediction,
            path=self.path,
            t=t,
        )


def _build(
    method: str,
    model_fn: Callable[..., Array],
    operator: LinearOperator,
    y: Any,
    path: AbstractPath,
    prediction: str,
    noise_std: Any,
    scale: Any,
    data_var: Any,
    guidance_start: Any,
) -> MeasurementGuided:
    v.choice(method, METHODS, "posterior method")
    v.choice(prediction, PREDICTIONS, "prediction")
    if not isinstance(path, AbstractPath):
        raise TypeError(f"path must be a flowjax path (AbstractPath); got {type(path).__name__}")
    if not isinstance(operator, LinearOperator):
        raise TypeError(f"operator must be a flowjax.inverse LinearOperator; got {type(operator)}")
    if not callable(model_fn):
        raise TypeError(f"model_fn must be callable; got {type(model_fn).__name__}")
    y = operator.check_y(y)
    noise_std = float(noise_std)
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0; got {noise_std}")
    if method == "dps" and noise_std == 0:
        raise ValueError(
            "dps with noise_std = 0 divides by zero: use normalize=True (the normalised step) or "
            "pigdm, whose noiseless form is the pseudo-inverse"
        )
    scale = v.as_float_array(scale, "scale")
    if scale.ndim != 0:
        raise ValueError(f"scale must be a scalar; got shape {scale.shape}")
    data_var = v.as_float_array(data_var, "data_var")
    if data_var.ndim != 0 or (v.is_concrete(data_var) and not float(data_var) > 0):
        raise ValueError(f"data_var must be a positive scalar; got {data_var}")
    guidance_start = v.as_float_array(guidance_start, "guidance_start")
    if guidance_start.ndim != 0:
        raise ValueError(f"guidance_start must be a scalar time; got shape {guidance_start.shape}")
    return MeasurementGuided(
        model_fn,
        operator,
        y,
        jnp.asarray(noise_std, y.dtype),
        scale,
        data_var,
        guidance_start,
        path,
        prediction,
        method,
    )


def dps(
    model_fn: Callable[..., Array],
    operator: LinearOperator,
    y: Float[ArrayLike, "*B m"],
    *,
    path: AbstractPath,
    prediction: str = "velocity",
    noise_std: float,
    scale: float = 1.0,
    normalize: bool = False,
    guidance_start: float = 0.0,
) -> MeasurementGuided:
    """Diffusion posterior sampling (Chung et al.): ``grad_x log p(y | x1_hat(x))`` through the denoiser.

    Args:
      model_fn: the prior model ``model_fn(x, t)`` predicting ``prediction`` on ``path``.
      operator: ``A`` (its ``in_shape`` is the event shape of ``x``).
      y: ``[m]`` shared by the batch or ``[B, m]`` one per sample; NaN is rejected, naming ``y``.
      noise_std: ``s``, the measurement noise standard deviation (> 0 unless ``normalize``).
      scale: the step-size scale multiplying the measurement score (1: the plain DPS likelihood).
      normalize: use Chung et al.'s normalised gradient ``-grad ||y - A x1_hat||`` (then ``scale``
        plays the role of their step size ``zeta``, per unit of score).
      guidance_start: the measurement term is applied only for ``t >= guidance_start`` (see the
        module docstring: near the noise end the exact term vanishes, but a learned denoiser's
        Jacobian does not, and velocity-type predictions multiply it by ``A(t) ~ 1/alpha``).

    Valid ``t``: where the model's prediction converts to ``x1`` (``beta > 0``; ``alpha > 0`` for
    ``eps``/``score`` models).
    """
    method = "dps_normalized" if normalize else "dps"
    return _build(
        method, model_fn, operator, y, path, prediction, noise_std, scale, 1.0, guidance_start
    )


def pigdm(
    model_fn: Callable[..., Array],
    operator: LinearOperator,
    y: Float[ArrayLike, "*B m"],
    *,
    path: AbstractPath,
    prediction: str = "velocity",
    noise_std: float,
    scale: float = 1.0,
    data_var: Float[ArrayLike, ""] = 1.0,
    guidance_start: float = 0.0,
) -> MeasurementGuided:
    """Pseudo-inverse-guided posterior sampling (PiGDM, Song et al. 2023).

      Args: as :func:`dps`, and ``data_var``: the variance ``v`` of the Gaussian that stands in for
      ``p(x1 | x_t)``'s prior scale (``r_t^2 = v beta^2 / (alpha^2 v + beta^2)``; 1 for data scaled to
      unit variance, as in the paper). ``noise_std = 0`` is allowed (the pseudo-inverse form).
    ``guidance_start``: as in :func:`dps`.
    """
    return _build(
        "pigdm", model_fn, operator, y, path, prediction, noise_std, scale, data_var, guidance_start
    )
