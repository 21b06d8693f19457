"""Few-step sampling of models trained for it (issue 16): MeanFlow, shortcut and consistency models.

Each is a method object of :func:`flowjax.sampling.sample` (``method=MeanFlow()`` or the shortcut
name ``"meanflow"``, ``"shortcut"``, ``"consistency"``) on the same time grid as the other methods
(``num_steps`` intervals from ``t_start`` to ``t_end``, ``time_grid``); one model call per step, so
``nfe == num_steps`` exactly. Time runs from noise ``t = 0`` to data ``t = 1``.

* :class:`MeanFlow`: a two-time model of the average velocity ``u(x_t, t, r)`` (``second_time="r"``,
  called as ``model_fn(x, t, t2=r)``); a step from ``t`` to ``r`` is
  ``x_r = x_t + (r - t) u(x_t, t, r)``, exact for the exact ``u`` (see
  :mod:`flowjax.losses._meanflow`).
* :class:`Shortcut`: a model ``s(x_t, t, d)`` conditioned on the step size ``d``
  (``second_time="d"``, ``model_fn(x, t, t2=d)``); a step is ``x_{t+d} = x_t + d s(x_t, t, d)``.
* :class:`Consistency`: a one-time model ``f(x_t, t)`` of the data point at the end of the
  trajectory through ``x_t`` (the consistency function, ``model_fn(x, t)``). Multistep sampling
  (Song et al. 2023, Algorithm 1): at each grid time ``t_i`` the estimate ``x1 = f(x_{t_i}, t_i)``,
  then, except after the last step, re-noising with fresh noise onto the path at the next grid
  time, ``x_{t_{i+1}} = alpha(t_{i+1}) x1 + beta(t_{i+1}) eps``. The result is the last estimate.

With ``cond``, a conditional model is called ``model_fn(x, t, cond, t2=...)``. These methods take
no ``solver`` (leave the default), no ``adaptive`` steps and no ``denoise_final``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from flowjax import solvers
from flowjax.paths import AbstractPath
from flowjax.sampling._methods import SAMPLING_METHODS, AbstractSamplingMethod

__all__ = ["ONESTEP_KINDS", "Consistency", "MeanFlow", "Shortcut"]


def _bt(t: Array, x: Array) -> Array:
    return jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0],))


def _check_output(out: jax.ShapeDtypeStruct, x: Array, what: str) -> None:
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != x.shape:
        got = getattr(out, "shape", jax.tree_util.tree_structure(out))
        raise ValueError(f"{what} must return one array shaped like x {x.shape}; got {got}")


class AbstractFewStepMethod(AbstractSamplingMethod):
    """A few-step method: ``step(model, path, key)`` gives the grid step of :func:`scan_grid`."""

    two_time: ClassVar[bool] = True
    #: predictions the method accepts (the model's output is fixed by the method)
    predictions: ClassVar[tuple[str, ...]] = ("velocity",)

    def check_model(self, model: Callable[..., Array], x: Array) -> None:
        """Trace the model once (no FLOPs): shape of the output, and ``t2`` for two-time models."""
        xs = jax.ShapeDtypeStruct(x.shape, x.dtype)
        ts = jax.ShapeDtypeStruct((x.shape[0],), x.dtype)
        if self.two_time:
            out = jax.eval_shape(lambda a, b, c: model(a, b, t2=c), xs, ts, ts)
            _check_output(out, x, f"method={self.kind!r}: model_fn(x, t, t2=...)")
        else:
            out = jax.eval_shape(model, xs, ts)
            _check_output(out, x, f"method={self.kind!r}: model_fn(x, t)")

    @abc.abstractmethod
    def step(
        self, model: Callable[..., Array], path: AbstractPath, key: PRNGKeyArray | None, n: int
    ) -> Callable:
        """The grid step ``f(x, carry, i, ta, tb) -> (x, carry)`` of :func:`scan_grid`."""


def _two_time_euler(
    model: Callable[..., Array], second: Callable[[Array, Array], Array]
) -> Callable:
    """``x + (tb - ta) model(x, ta, t2=second(ta, tb))``: the step of a two-time model."""

    def f(x, carry, i, ta, tb):
        del i
        out = model(x, _bt(ta, x), t2=_bt(second(ta, tb), x)).astype(x.dtype)
        return x + (tb - ta).astype(x.dtype) * out, carry

    return f


class MeanFlow(AbstractFewStepMethod):
    """MeanFlow sampling: ``x_r = x_t + (r - t) u(x_t, t, r)`` per grid interval ``[t, r]``."""

    kind: ClassVar[str] = "meanflow"

    def step(self, model, path, key, n):
        del path, key, n
        return _two_time_euler(model, lambda ta, tb: tb)  # t2 = r, the interval's end


class Shortcut(AbstractFewStepMethod):
    """Shortcut-model sampling: ``x_{t+d} = x_t + d s(x_t, t, d)`` with ``d`` the grid interval."""

    kind: ClassVar[str] = "shortcut"

    def step(self, model, path, key, n):
        del path, key, n
        return _two_time_euler(model, lambda ta, tb: tb - ta)  # t2 = d, the step size


class Consistency(AbstractFewStepMethod):
    """Multistep consistency sampling: ``x1 = f(x_t, t)``, re-noised to the next grid time.

    The model's output is the data estimate (``prediction`` ``"velocity"``, the default, or
    ``"x1"``; both mean the consistency function here).
    """

    kind: ClassVar[str] = "consistency"
    two_time: ClassVar[bool] = False
    predictions: ClassVar[tuple[str, ...]] = ("velocity", "x1")

    def step(self, model, path, key, n):
        def f(x, carry, i, ta, tb):
            x1 = model(x, _bt(ta, x)).astype(x.dtype)
            eps = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
            tb_ = tb.astype(x.dtype)
            renoised = path.alpha(tb_).astype(x.dtype) * x1 + path.beta(tb_).astype(x.dtype) * eps
            return jnp.where(i == n - 1, x1, renoised), carry

        return f


ONESTEP_KINDS = ("meanflow", "shortcut", "consistency")

SAMPLING_METHODS.update(
    {"meanflow": MeanFlow(), "shortcut": Shortcut(), "consistency": Consistency()}
)


def run_few_step(
    method: AbstractFewStepMethod,
    model: Callable[..., Array],
    path: AbstractPath,
    x0: Float[Array, "B ..."],
    grid: Float[Array, " N+1"],
    key: PRNGKeyArray | None,
    save_arr: Array | None,
) -> tuple[Array, Array | None, Array]:
    """``(x, trajectory, nfe)`` of ``method`` on ``grid`` (one model call per interval)."""
    n = grid.shape[0] - 1
    x, traj, _ = solvers.scan_grid(method.step(model, path, key, n), x0, grid, save_arr)
    return x, traj, jnp.asarray(n, jnp.int32)
