"""Default integration ends: where a solve must keep clear of ``alpha = 0`` or ``beta = 0``.

One rule for sampling and likelihood: start at ``path.t_min`` unless the start needs ``alpha > 0``
there (then ``t_min + NOISE_END_MARGIN``), end at ``path.t_max`` unless the end needs ``beta > 0``
(then ``t_max - data_end_margin``) or the caller asks for a fixed margin from ``t = 1``
(score-based sampling). The data-end margins differ by purpose and live with their users:
``flowjax.sampling.SAMPLING_DATA_END_MARGIN`` (1e-3, score SDE's sampling cut-off) and
``flowjax.likelihood.LIKELIHOOD_DATA_END_MARGIN`` (1e-5, its likelihood cut-off).
"""

from __future__ import annotations

import jax.numpy as jnp

from flowjax import _validation as v
from flowjax.paths import AbstractPath

#: Start offset from ``t_min`` where a solve needs ``alpha > 0`` but ``alpha(t_min) = 0``.
NOISE_END_MARGIN = 1e-3

_CACHE: dict[tuple, tuple[float, float]] = {}


def solve_ends(
    path: AbstractPath,
    *,
    needs_alpha: bool,
    needs_beta: bool,
    data_end_margin: float,
    fixed_end_margin: bool = False,
) -> tuple[float, float]:
    """Default ``(t_start, t_end)`` of a solve from noise to data on ``path``.

    Args:
      needs_alpha: the start needs ``alpha > 0`` (``t_min + NOISE_END_MARGIN`` where
        ``alpha(t_min) = 0`` or cannot be evaluated now).
      needs_beta: the end needs ``beta > 0`` (``t_max - data_end_margin`` where ``beta(t_max) = 0``).
      fixed_end_margin: end at ``min(t_max, 1 - data_end_margin)`` whatever ``beta`` is there.
    """
    args = (path, needs_alpha, needs_beta, float(data_end_margin), fixed_end_margin)
    try:
        return _CACHE[args]
    except TypeError:  # a path holding arrays is not hashable
        return _ends(*args)
    except KeyError:
        ends = _CACHE[args] = _ends(*args)
        return ends


def _ends(
    path: AbstractPath, needs_alpha: bool, needs_beta: bool, margin: float, fixed: bool
) -> tuple[float, float]:
    t_min, t_max = float(path.t_min), float(path.t_max)
    start, end = t_min, t_max
    if needs_alpha:
        alpha0 = v.concrete_float(lambda: path.alpha(jnp.asarray(t_min)))
        if alpha0 is None or alpha0 == 0.0:
            start = t_min + NOISE_END_MARGIN
    if fixed:
        end = min(t_max, 1.0 - margin)
    elif needs_beta:
        beta1 = v.concrete_float(lambda: path.beta(jnp.asarray(t_max)))
        if beta1 is None or beta1 == 0.0:
            end = t_max - margin
    return start, end
