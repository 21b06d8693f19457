"""Exponential integrators in log-SNR time: DPM-Solver++ (2M, 3M, 2S) and UniPC (bh2).

Every solver here integrates the probability-flow ODE of any Gaussian path with the data
prediction ``D(x, t) = E[x1 | x]`` (any model converts to it through
:mod:`flowjax.parameterization`) by the exact step of :mod:`flowjax.solvers._log_snr`, replacing
``D`` over the step by a polynomial in ``lambda`` through past evaluations (multistep) or an
intermediate one (single-step). A multistep step is linear in the past outputs,

    x_{i+1} = (beta_{i+1} / beta_i) x_i + alpha_{i+1} sum_j w_ij D_{i-j},

so the weights of all steps are computed from the grid before the loop.

Effective order of step ``i`` (``t_i -> t_{i+1}``, ``N`` steps): ``min(order, i + 1)`` (the first steps
have fewer past outputs), ``min(., N - i)`` with ``lower_order_final``, and 1 where a past node or
the step's end has infinite log-SNR: a node at ``alpha = 0`` (``lambda = -inf``, the CondOT / VP-cosine
start) is not used for extrapolation (the first step from it is DDIM's, exact in the limit: its
weight ``a_0 = 1``), and the step into ``beta = 0`` (``lambda = +inf``) is first order, the only one with
a finite limit: it returns the last data prediction (as Euler's last step on CondOT does).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar, cast

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from flowjax.paths import AbstractPath
from flowjax.solvers._base import AbstractSolver
from flowjax.solvers._grids import time_of_sigma
from flowjax.solvers._log_snr import exp_weights, log_snr
from flowjax.solvers._loop import record, scan_grid

#: ``denoise(x, t) -> E[x1 | x]`` for a batch ``x`` ``[B, ...]`` at a scalar time ``t``.
Denoiser = Callable[[Array, Array], Array]


class AbstractExponentialSolver(AbstractSolver):
    """An exponential integrator of the probability-flow ODE (fixed grids, noise to data).

    Class attributes:
      finite_ends: needs finite log-SNR at both ends of the grid (``alpha > 0`` at the start,
        ``beta > 0`` at the end).
    """

    finite_ends: ClassVar[bool] = False

    @property
    def min_steps(self) -> int:
        """The fewest grid intervals it accepts."""
        return 1

    @abc.abstractmethod
    def integrate(
        self,
        denoise: Denoiser,
        path: AbstractPath,
        x0: Float[Array, "B ..."],
        grid: Float[Array, " T"],
        save_times: Float[Array, " S"] | None = None,
    ) -> tuple[Float[Array, "B ..."], Float[Array, "S B ..."] | None]:
        """Integrate from ``x0`` at ``grid[0]`` to ``grid[-1]``; returns the end and saved states."""


def _check_order(order: Any, valid: tuple[int, ...], owner: str) -> None:
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or order not in valid:
        raise ValueError(
            f"{owner}.order must be one of {', '.join(map(str, valid))}; got {order!r}"
        )


def _check_flag(value: Any, name: str, owner: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{owner}.{name} must be True or False; got {value!r}")


# --------------------------------------------------------------------------------- weights


def _effective_order(lam: Array, order: int, lower_order_final: bool) -> Array:
    """``[N]`` the order of each step (see the module docstring)."""
    n = lam.shape[0] - 1
    i = jnp.arange(n)
    first_finite = jnp.where(jnp.isneginf(lam[0]), 1, 0)
    k = jnp.minimum(order, i + 1 - first_finite)
    if lower_order_final:
        k = jnp.minimum(k, n - i)
    k = jnp.where(jnp.isposinf(lam[1:]), 1, k)
    return jnp.maximum(k, 1)


def _past_gaps(lam: Array, count: int) -> list[Array]:
    """``[N]`` arrays ``lambda_i - lambda_{i-m}`` for ``m = 1..count`` (``inf`` before the grid)."""
    n = lam.shape[0] - 1
    out = []
    for m in range(1, count + 1):
        prev = jnp.concatenate([jnp.full((m,), -jnp.inf, lam.dtype), lam[: n - m]])
        out.append(lam[:n] - prev)
    return out


def _select(k: Array, options: dict[int, list[Array]], width: int) -> Array:
    """``[N, width]``: row ``i`` is ``options[k_i]`` (zero-padded)."""
    n = k.shape[0]
    out = jnp.zeros((n, width), options[1][0].dtype)
    for order, weights in options.items():
        row = jnp.stack([jnp.broadcast_to(w, (n,)) for w in weights], axis=1)
        row = jnp.pad(row, ((0, 0), (0, width - row.shape[1])))
        out = jnp.where((k == order)[:, None], row, out)
    return out


def dpmpp_weights(lam: Array, order: int, lower_order_final: bool) -> Array:
    """``[N, order]`` DPM-Solver++ multistep weights ``w_ij`` on ``D_i, D_{i-1}, ...``.

    Order 2 is Lu et al.'s Algorithm 2 (``D = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}``, ``r = h_{i-1}/h_i``,
    with weight ``a_0``). Order 3 integrates the quadratic through the last three outputs exactly:
    ``a_0 D + a_1 P'(0) + a_2 P''(0)`` with the interpolant's derivatives from divided differences.
    """
    h = lam[1:] - lam[:-1]
    a = exp_weights(h, 2)
    gaps = _past_gaps(lam, 2)
    h0 = gaps[0]  # lambda_i - lambda_{i-1}
    options = {1: [a[0]]}
    half_inv_r = 0.5 * h / h0
    options[2] = [a[0] * (1.0 + half_inv_r), -a[0] * half_inv_r]
    if order >= 3:
        h1 = gaps[1] - gaps[0]  # lambda_{i-1} - lambda_{i-2}
        g = (a[1] * h0 + 2.0 * a[2]) / (h0 + h1)
        options[3] = [a[0] + (a[1] + g) / h0, -(a[1] + g) / h0 - g / h1, g / h1]
    k = _effective_order(lam, order, lower_order_final)
    return _select(k, {o: w for o, w in options.items() if o <= order}, order)


def unipc_weights(lam: Array, order: int, lower_order_final: bool) -> tuple[Array, Array]:
    """UniPC-bh2 weights: predictor ``[N, order]`` on ``D_i, D_{i-1}, ...``, corrector ``[N, order+1]``
    on ``D_{i+1}, D_i, D_{i-1}, ...`` (Zhao et al. 2023).

    With ``B(h) = e^{-h} - 1`` (bh2), ``r_m = (lambda_{i-m} - lambda_i) / h``, differences
    ``(D_{i-m} - D_i) / r_m`` (and ``D_{i+1} - D_i`` for the corrector, ``r = 1``), the coefficients ``rho``
    solve ``sum_m rho_m r_m^(j-1) = j! a_j / (h^j a_0)`` for ``j = 1..`` (the Taylor conditions; the
    predictor uses ``rho = 1/2`` at order 2 and the corrector ``rho = 1/2`` at order 1, the paper's
    simplified choices).
    """
    h = lam[1:] - lam[:-1]
    a = exp_weights(h, order)
    gaps = _past_gaps(lam, order - 1)
    r = [-g / h for g in gaps]  # r_m < 0
    b = [a[j] * float(np.prod(np.arange(1, j + 1))) / (h**j * a[0]) for j in range(1, order + 1)]
    pred = {1: [a[0]]}
    corr = {1: [0.5 * a[0], 0.5 * a[0]]}  # on D_{i+1}, D_i
    for k in range(2, order + 1):
        nodes = r[: k - 1]
        rho_p = [jnp.full_like(h, 0.5)] if k == 2 else _solve(nodes, b[: k - 1])
        pred[k] = [a[0] * (1.0 - sum(p / q for p, q in zip(rho_p, nodes, strict=True)))] + [
            a[0] * p / q for p, q in zip(rho_p, nodes, strict=True)
        ]
        rho_c = _solve([*nodes, jnp.ones_like(h)], b[:k])
        past = [a[0] * p / q for p, q in zip(rho_c[:-1], nodes, strict=True)]
        corr[k] = [
            a[0] * rho_c[-1],
            a[0] * (1.0 - rho_c[-1] - sum(p / q for p, q in zip(rho_c[:-1], nodes, strict=True))),
            *past,
        ]
    k_eff = _effective_order(lam, order, lower_order_final)
    return _select(k_eff, pred, order), _select(k_eff, corr, order + 1)


def _solve(nodes: list[Array], rhs: list[Array]) -> list[Array]:
    """Per step, ``rho`` with ``sum_m rho_m nodes_m^j = rhs_j`` (``j = 0..len-1``)."""
    mat = jnp.stack([jnp.stack([q**j for q in nodes], -1) for j in range(len(nodes))], -2)
    sol = jnp.linalg.solve(mat, jnp.stack(rhs, -1)[..., None])[..., 0]
    return [sol[..., m] for m in range(len(nodes))]


# --------------------------------------------------------------------------------- the loop


def _multistep(
    denoise: Denoiser,
    path: AbstractPath,
    x0: Array,
    grid: Array,
    save_times: Array | None,
    pred_w: Array,
    corr_w: Array | None,
) -> tuple[Array, Array | None]:
    """The multistep loop: one evaluation per grid time except the last (``N`` in all).

    Iteration ``i`` evaluates ``D_i`` at the predicted state at ``t_i``, corrects that state (UniPC:
    the corrector of step ``i - 1`` reuses ``D_i``), then predicts ``t_{i+1}``. Saved times inside
    ``(t_{i-1}, t_i]`` are written once ``x_i`` is final, the last interval after the loop.
    """
    dtype = x0.dtype
    alpha, beta = path.alpha(grid).astype(dtype), path.beta(grid).astype(dtype)
    ratio = beta[1:] / beta[:-1]
    lam = log_snr(path, grid)
    # no corrector on the step from lambda = -inf (its interpolation interval is infinite)
    use_corr = ~jnp.isneginf(lam[:-1])
    width = pred_w.shape[1]
    n = grid.shape[0] - 1
    hist0 = jnp.zeros((width, *x0.shape), dtype)
    s = None if save_times is None else save_times.astype(dtype)
    traj0 = None if s is None else jnp.broadcast_to(x0, (s.shape[0], *x0.shape))

    def combine(w: Array, vals: Array) -> Array:
        return jnp.tensordot(w.astype(dtype), vals, axes=1)

    def body(state, i):
        x_pred, x_prev, hist, traj = state
        d = denoise(x_pred, grid[i]).astype(dtype)
        x = x_pred
        if corr_w is not None:
            j = jnp.maximum(i - 1, 0)
            corrected = ratio[j] * x_prev + alpha[i] * combine(
                corr_w[j], jnp.concatenate([d[None], hist])
            )
            x = jnp.where((i > 0) & use_corr[j], corrected, x_pred)
        hist = jnp.concatenate([d[None], hist[:-1]])
        if traj is not None:
            j = jnp.maximum(i - 1, 0)
            # traj is set exactly when the save times s are
            traj = jnp.where(i > 0, record(traj, cast(Array, s), grid[j], grid[i], x_prev, x), traj)
        x_next = ratio[i] * x + alpha[i + 1] * combine(pred_w[i], hist)
        return (x_next, x, hist, traj), None

    (x_end, x_last, _, traj), _ = jax.lax.scan(body, (x0, x0, hist0, traj0), jnp.arange(n))
    if traj is not None:
        traj = record(traj, cast(Array, s), grid[n - 1], grid[n], x_last, x_end)
    return x_end, traj


class DPMSolverPP(AbstractExponentialSolver):
    """DPM-Solver++ multistep (Lu et al. 2022): ``order=2`` is 2M (Algorithm 2), ``order=3`` is 3M.

    One model evaluation per step (``N`` on a grid of ``N + 1`` times).

    Attributes:
      order: 2 or 3 (the first steps use lower orders while past outputs accumulate).
      lower_order_final: lower the order over the last steps (``min(order, steps left)``), as the
        reference code does for few steps.
    """

    order: int = 2
    lower_order_final: bool = False

    def __check_init__(self) -> None:
        _check_order(self.order, (2, 3), "DPMSolverPP")
        _check_flag(self.lower_order_final, "lower_order_final", "DPMSolverPP")

    @property
    def min_steps(self) -> int:
        return self.order

    def nfe(self, num_steps: Any) -> Any:
        return num_steps

    def integrate(self, denoise, path, x0, grid, save_times=None):
        lam = log_snr(path, grid)
        w = dpmpp_weights(lam, self.order, self.lower_order_final)
        return _multistep(denoise, path, x0, grid, save_times, w, None)


class UniPC(AbstractExponentialSolver):
    """UniPC (Zhao et al. 2023), B(h) = e^{-h} - 1 (bh2), with the data prediction.

    The predictor UniP-``order`` and the corrector UniC, which reuses the next step's evaluation
    (no extra evaluations: ``N`` on ``N + 1`` grid times); the last step has no corrector.

    Attributes:
      order: 2 or 3 (predictor order; the corrector raises the order by one).
      corrector: apply UniC (default); without it the predictor alone (UniP).
      lower_order_final: lower the order over the last steps.
    """

    order: int = 2
    corrector: bool = True
    lower_order_final: bool = False

    def __check_init__(self) -> None:
        _check_order(self.order, (2, 3), "UniPC")
        _check_flag(self.corrector, "corrector", "UniPC")
        _check_flag(self.lower_order_final, "lower_order_final", "UniPC")

    @property
    def min_steps(self) -> int:
        return self.order

    def nfe(self, num_steps: Any) -> Any:
        return num_steps

    def integrate(self, denoise, path, x0, grid, save_times=None):
        lam = log_snr(path, grid)
        pred, corr = unipc_weights(lam, self.order, self.lower_order_final)
        return _multistep(
            denoise, path, x0, grid, save_times, pred, corr if self.corrector else None
        )


class DPMSolverPP2S(AbstractExponentialSolver):
    """DPM-Solver++(2S) (Lu et al. 2022, Algorithm 1 with ``r = 1/2``): single-step, order 2.

    Two evaluations per step: at ``t_i`` and at the log-SNR midpoint (found by bisection on the
    path's ``sigma = beta / alpha``). Needs finite log-SNR at both ends (``alpha > 0`` at the start,
    ``beta > 0`` at the end).
    """

    finite_ends: ClassVar[bool] = True

    def nfe(self, num_steps: Any) -> Any:
        return 2 * num_steps

    def integrate(self, denoise, path, x0, grid, save_times=None):
        dtype = x0.dtype
        lam = log_snr(path, grid)
        mid = time_of_sigma(path, jnp.exp(-0.5 * (lam[:-1] + lam[1:])), grid[0], grid[-1])

        def step(x, carry, i, ta, tb):
            s = mid[i]
            h = lam[i + 1] - lam[i]
            a_half, a_full = exp_weights(0.5 * h, 0)[0], exp_weights(h, 0)[0]
            d = denoise(x, ta).astype(dtype)
            u = (path.beta(s) / path.beta(ta)) * x + path.alpha(s) * a_half * d
            d_mid = denoise(u.astype(dtype), s).astype(dtype)
            x = (path.beta(tb) / path.beta(ta)) * x + path.alpha(tb) * a_full * d_mid
            return x.astype(dtype), carry

        x, traj, _ = scan_grid(step, x0, grid, save_times)
        return x, traj
